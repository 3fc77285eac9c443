//! The `http` capability: the standard `wasi:http/outgoing-handler`, with
//! every request decided by the policy and, where it changes something, by
//! a person.
//!
//! Tools use any guest HTTP library; they never ask for consent themselves.
//! The host's request hook takes each request as the tool sends it: it
//! reads the whole body (bounded), checks the origin (scheme, host, port),
//! method and path against the tool's grants, resolves the host once and
//! refuses loopback, private, link-local and other non-public addresses
//! unless the grant names them, then asks consent like any capability:
//! `http.get` (GET and HEAD) can be a standing grant, `http.send` (every
//! other method) is bound to the method, the URL and the body's digest, and
//! the person sees the method, URL, header names, body size and a preview.
//! The request then passes the one Gate path (effect guard, token check,
//! write-ahead journal record) and goes to the checked address: no DNS
//! rebinding between check and connect. Redirects are never followed by the
//! host; a tool that follows one makes a new request, checked anew.
//! Credentials are the host's: per-origin headers added after consent, which
//! the tool never sees; a tool cannot set `Authorization`, `Cookie` or
//! `Proxy-Authorization` (the header is refused when it sets it).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasmtime::component::Linker;
use wasmtime_wasi_http::{
    Error as HttpError, WasiHttp, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
};

use super::{
    Action, Capability, CapabilityPlugin, Described, Effect, Opaque, PolicyTable, Request,
    ShownContent,
};
use crate::consent::{PromptItem, SessionState};
use crate::host::bindings::agentcap::tools::consent::{Denial, Intent};
use crate::host::{CallContext, HostState};
use crate::policy::Policy;

/// `http.get`: GET and HEAD requests. Target: `GET <url>`.
pub const GET: Capability = Capability::new(&Action {
    name: "http.get",
    effect: Effect::Reads,
    carries_payload: false,
    scope_keys: &["origins", "paths", "allow_ips"],
});
/// `http.send`: every other method. Target: `<METHOD> <url>`; payload: the
/// body's digest, `sha256:<hex> (<n> bytes)`.
pub const SEND: Capability = Capability::new(&Action {
    name: "http.send",
    effect: Effect::Destroys,
    carries_payload: true,
    scope_keys: &["origins", "methods", "paths", "allow_ips"],
});

/// Headers a tool may not set: credentials and the provenance stamp belong
/// to the host.
const HOST_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "proxy-authorization",
    PROVENANCE_HEADER,
];
/// The host's stamp on every request: AI-generated, which tool, for whom,
/// approved by whom (invariant 6 for content that leaves over HTTP).
pub const PROVENANCE_HEADER: &str = "ai-generated-by";
/// How much of a body the person sees.
const PREVIEW_BYTES: usize = 4096;

/// The policy's `[http]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Milliseconds a request may take in all (connect, send, response
    /// headers and body), not counting the wait for a person.
    #[serde(
        default = "default_timeout_ms",
        deserialize_with = "crate::policy::within::<_, _, 1, 600000>"
    )]
    pub timeout_ms: u64,
    /// Largest response body, in MiB.
    #[serde(
        default = "default_max_response_mb",
        deserialize_with = "crate::policy::within::<_, _, 1, 1024>"
    )]
    pub max_response_mb: u64,
    /// Largest request body, in KiB.
    #[serde(
        default = "default_max_request_kb",
        deserialize_with = "crate::policy::within::<_, _, 1, 65536>"
    )]
    pub max_request_kb: u64,
    /// Requests one tool may have in flight at once; more are refused.
    #[serde(
        default = "default_max_concurrent",
        deserialize_with = "crate::policy::within::<_, _, 1, 1024>"
    )]
    pub max_concurrent: usize,
    /// Credentials the host adds, per origin.
    #[serde(default)]
    pub credentials: Vec<Credential>,
}

fn default_timeout_ms() -> u64 {
    30_000
}
fn default_max_response_mb() -> u64 {
    16
}
fn default_max_request_kb() -> u64 {
    1024
}
fn default_max_concurrent() -> usize {
    4
}

/// A credential the host adds to every request to one origin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// `https://api.example.com` (scheme, host, port).
    pub origin: String,
    /// The header (default `authorization`).
    #[serde(default = "default_credential_header")]
    pub header: String,
    /// The environment variable holding the header's value.
    #[serde(default)]
    pub value_env: Option<String>,
    /// The file holding the header's value (relative to the policy).
    #[serde(default)]
    pub value_file: Option<PathBuf>,
}

fn default_credential_header() -> String {
    "authorization".into()
}

/// Scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// The host, lower case (an IPv6 address without brackets).
    pub host: String,
    /// The port (the scheme's default when not written).
    pub port: u16,
}

impl Origin {
    /// Parse `https://host[:port]` (nothing after the authority).
    pub fn parse(text: &str) -> Result<Origin, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("`{text}` is not an origin: {e}"))?;
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(format!("`{text}` is not an origin: it has a path"));
        }
        Origin::of(&uri).ok_or_else(|| format!("`{text}` is not an origin (http or https, a host)"))
    }

    /// The origin of a request's URI.
    pub fn of(uri: &Uri) -> Option<Origin> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Origin {
            scheme,
            host,
            port: authority.port_u16().unwrap_or(default_port),
        })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// An http grant's scope.
#[derive(Debug, Clone)]
pub struct HttpScope {
    /// Origins requests may go to.
    pub origins: Vec<Origin>,
    /// Methods (upper case) for `http.send`; `None`: any but GET and HEAD.
    pub methods: Option<Vec<String>>,
    /// Path prefixes; `None`: any path.
    pub paths: Option<Vec<String>>,
    /// Non-public addresses the grant names (loopback, private, ...).
    pub allow_ips: Vec<IpAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeTable {
    origins: Vec<String>,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    paths: Option<Vec<String>>,
    #[serde(default)]
    allow_ips: Vec<IpAddr>,
}

/// Why an address is not public, or `None` when it is.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_unspecified() {
                Some("unspecified")
            } else if v4.is_link_local() {
                Some("link-local (cloud metadata lives here)")
            } else if v4.is_private() {
                Some("private")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (carrier-grade NAT)")
            } else if v4.is_broadcast() || v4.is_multicast() || a == 0 || a >= 240 {
                Some("reserved, broadcast or multicast")
            } else if v4.is_documentation() || (a == 198 && (b == 18 || b == 19)) {
                Some("documentation or benchmarking")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if v6.to_ipv4().is_some() || first == 0x64 || first == 0x2002 {
                // IPv4-compatible, NAT64 and 6to4 forms can reach IPv4
                // addresses this check would not see.
                Some("an IPv4 address in IPv6 form")
            } else {
                None
            }
        }
    }
}

/// What the host knows of a request before anyone decides it.
pub struct HttpFacts {
    /// The method.
    pub method: Method,
    /// The full URL.
    pub uri: Uri,
    /// The origin.
    pub origin: Origin,
    /// The header names the tool set.
    pub header_names: Vec<String>,
    /// The body.
    pub body: Bytes,
    /// The addresses the host resolved (and will connect to).
    pub addresses: Vec<SocketAddr>,
}

/// The provenance stamp: visible ASCII only (anything else becomes `?`).
fn provenance(tool: &str, user: &str, approved_by: &str) -> HeaderValue {
    let text =
        format!("AI agent via agentcap; tool={tool}; user={user}; approved-by={approved_by}");
    let ascii: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    HeaderValue::from_str(&ascii)
        .unwrap_or_else(|_| HeaderValue::from_static("AI agent via agentcap"))
}

fn digest(body: &[u8]) -> String {
    format!(
        "sha256:{} ({} bytes)",
        hex::encode(Sha256::digest(body)),
        body.len()
    )
}

fn preview(body: &[u8], content_type: Option<&str>) -> String {
    if body.is_empty() {
        return "(empty body)".into();
    }
    let json = content_type.is_some_and(|t| t.contains("json"))
        || body.first().is_some_and(|b| *b == b'{' || *b == b'[');
    if json && let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
        return crate::host::clip(&pretty, PREVIEW_BYTES);
    }
    match std::str::from_utf8(body) {
        Ok(text) => crate::host::clip(text, PREVIEW_BYTES),
        Err(_) => format!("(binary, {} bytes)", body.len()),
    }
}

impl HttpScope {
    fn check(&self, capability: Capability, facts: &HttpFacts) -> Result<(), String> {
        if !self.origins.contains(&facts.origin) {
            return Err(format!(
                "to {} is outside the grant (origins: {})",
                facts.origin,
                self.origins
                    .iter()
                    .map(|o| o.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let method = facts.method.as_str();
        if capability == SEND
            && let Some(methods) = &self.methods
            && !methods.iter().any(|m| m == method)
        {
            return Err(format!(
                "with method {method} is outside the grant (methods: {})",
                methods.join(", ")
            ));
        }
        let path = facts.uri.path();
        if let Some(prefixes) = &self.paths
            && !prefixes.iter().any(|p| path.starts_with(p.as_str()))
        {
            return Err(format!(
                "of path {} is outside the grant (paths: {})",
                crate::render::one_line(path, 200),
                prefixes.join(", ")
            ));
        }
        for address in &facts.addresses {
            if let Some(kind) = non_public(address.ip())
                && !self.allow_ips.contains(&address.ip())
            {
                return Err(format!(
                    "to {} resolves to {} ({kind}), which the grant does not name (allow_ips)",
                    facts.origin.host,
                    address.ip()
                ));
            }
        }
        Ok(())
    }
}

/// The opened `http` backend: settings, credentials and the TLS roots.
pub struct HttpClient {
    settings: HttpSettings,
    credentials: HashMap<Origin, (HeaderName, HeaderValue)>,
    tls: Arc<rustls::ClientConfig>,
    in_flight: Mutex<HashMap<String, usize>>,
}

impl HttpClient {
    /// Open: read the credentials and the platform's TLS roots.
    pub fn open(
        settings: &HttpSettings,
        resolve: impl Fn(&std::path::Path) -> PathBuf,
    ) -> Result<HttpClient, String> {
        let mut credentials = HashMap::new();
        for c in &settings.credentials {
            let origin = Origin::parse(&c.origin)?;
            let value = match (&c.value_env, &c.value_file) {
                (Some(var), None) => std::env::var(var).map_err(|_| {
                    format!("the credential for {origin}: variable {var} is not set")
                })?,
                (None, Some(file)) => std::fs::read_to_string(resolve(file))
                    .map_err(|e| {
                        format!(
                            "the credential for {origin}: cannot read {}: {e}",
                            file.display()
                        )
                    })?
                    .trim_end()
                    .to_string(),
                _ => {
                    return Err(format!(
                        "the credential for {origin} needs exactly one of value_env or value_file"
                    ));
                }
            };
            let name = HeaderName::from_bytes(c.header.to_ascii_lowercase().as_bytes())
                .map_err(|e| format!("credential header `{}`: {e}", c.header))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| format!("the credential for {origin} is not a valid header value"))?;
            value.set_sensitive(true);
            credentials.insert(origin, (name, value));
        }
        let tls = super::tls::client_config(None)?;
        Ok(HttpClient {
            settings: settings.clone(),
            credentials,
            tls: Arc::new(tls),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    fn max_request_bytes(&self) -> usize {
        (self.settings.max_request_kb * 1024) as usize
    }

    fn max_response_bytes(&self) -> u64 {
        self.settings.max_response_mb * 1024 * 1024
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.timeout_ms)
    }
}

/// The `http` capability's plug-in.
pub struct HttpPlugin;

impl CapabilityPlugin for HttpPlugin {
    fn interface(&self) -> &'static str {
        "http"
    }

    fn actions(&self) -> &'static [Capability] {
        &[GET, SEND]
    }

    fn parse_backend(&self, table: PolicyTable<'_>) -> Result<Opaque, toml::de::Error> {
        use serde::de::Error as _;
        let settings = HttpSettings::deserialize(table)?;
        for c in &settings.credentials {
            Origin::parse(&c.origin).map_err(toml::de::Error::custom)?;
            if c.value_env.is_some() == c.value_file.is_some() {
                return Err(toml::de::Error::custom(format!(
                    "[http] credential for {} needs exactly one of value_env or value_file",
                    c.origin
                )));
            }
        }
        Ok(Opaque::new(settings))
    }

    fn open(&self, settings: &Opaque, policy: &Policy) -> Result<Opaque, String> {
        let settings = settings.get::<HttpSettings>().ok_or("not http settings")?;
        Ok(Opaque::new(HttpClient::open(settings, |p| {
            policy.resolve(p)
        })?))
    }

    fn parse_scope(
        &self,
        capability: Capability,
        scope: PolicyTable<'_>,
    ) -> Result<Opaque, toml::de::Error> {
        use serde::de::Error as _;
        let table = ScopeTable::deserialize(scope)?;
        let origins = table
            .origins
            .iter()
            .map(|o| Origin::parse(o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(toml::de::Error::custom)?;
        let methods = table.methods.map(|m| {
            m.into_iter()
                .map(|m| m.to_ascii_uppercase())
                .collect::<Vec<_>>()
        });
        if let Some(methods) = &methods {
            if capability == GET {
                return Err(toml::de::Error::custom(
                    "http.get covers GET and HEAD; `methods` belongs to http.send",
                ));
            }
            if let Some(safe) = methods.iter().find(|m| *m == "GET" || *m == "HEAD") {
                return Err(toml::de::Error::custom(format!(
                    "{safe} is http.get's, not http.send's"
                )));
            }
        }
        if let Some(paths) = &table.paths
            && let Some(bad) = paths.iter().find(|p| !p.starts_with('/'))
        {
            return Err(toml::de::Error::custom(format!(
                "path prefix `{bad}` must start with /"
            )));
        }
        Ok(Opaque::new(HttpScope {
            origins,
            methods,
            paths: table.paths,
            allow_ips: table.allow_ips,
        }))
    }

    fn describe(&self, request: &Request<'_>) -> Result<Described, Denial> {
        let facts = request
            .context
            .and_then(|c| {
                let any: &dyn std::any::Any = c;
                any.downcast_ref::<HttpFacts>()
            })
            .ok_or_else(|| {
                request.invalid(
                    "a tool does not ask for http consent itself: agentcap asks when the tool sends the request through wasi:http",
                )
            })?;
        let scope = request.scope::<HttpScope>()?;
        scope
            .check(request.capability, facts)
            .map_err(|why| request.outside_scope(format_args!("{} {why}", facts.method)))?;
        let target = format!("{} {}", facts.method, facts.uri);
        let content_type = None::<&str>;
        let headers = if facts.header_names.is_empty() {
            "no headers".to_string()
        } else {
            format!("headers: {}", facts.header_names.join(", "))
        };
        let credential = request
            .backend::<HttpClient>()?
            .credentials
            .get(&facts.origin)
            .map(|(name, _)| format!("; agentcap adds its {name} credential"))
            .unwrap_or_default();
        let description = format!(
            "{target} ({headers}; body {} bytes{credential}; agentcap stamps it `{PROVENANCE_HEADER}`)",
            facts.body.len()
        );
        let (action, shown) = if request.capability == SEND {
            (
                format!(
                    "send {} {} to {}",
                    facts.method,
                    facts.uri.path(),
                    facts.origin
                ),
                Some(ShownContent {
                    heading: format!(
                        "the body, {} bytes (bound to its digest; pretty-printed when JSON)",
                        facts.body.len()
                    ),
                    text: preview(&facts.body, content_type),
                }),
            )
        } else {
            (
                format!("read {} from {}", facts.uri.path(), facts.origin),
                None,
            )
        };
        Ok(Described {
            action,
            items: vec![PromptItem {
                target: target.clone(),
                description,
            }],
            targets: vec![target],
            shown,
        })
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        use wasmtime_wasi_http::p2::bindings::http::{outgoing_handler, types};
        fn view(state: &mut HostState) -> WasiHttpCtxView<'_> {
            let (table, http) = state
                .plugin_state::<HttpStoreState>("http")
                .expect("http state exists where http is linked");
            WasiHttpCtxView {
                ctx: &mut http.ctx,
                table,
                hooks: &mut http.hooks,
            }
        }
        outgoing_handler::add_to_linker::<HostState, WasiHttp>(linker, view)?;
        types::add_to_linker::<HostState, WasiHttp>(linker, &Default::default(), view)?;
        Ok(())
    }

    fn standard_imports(&self) -> &'static [&'static str] {
        &["wasi:http/outgoing-handler", "wasi:http/types"]
    }

    fn new_store_state(&self, call: &Arc<CallContext>) -> Option<Box<dyn std::any::Any + Send>> {
        Some(Box::new(HttpStoreState {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks { call: call.clone() },
        }))
    }
}

/// What a store keeps for `wasi:http`.
struct HttpStoreState {
    ctx: WasiHttpCtx,
    hooks: Hooks,
}

/// The host's request hook.
struct Hooks {
    call: Arc<CallContext>,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

fn denied(message: impl Into<String>) -> HttpError {
    HttpError::InternalError(Some(message.into()))
}

impl WasiHttpHooks for Hooks {
    fn forbidden_header_filter(&mut self) -> wasmtime_wasi_http::ForbiddenHeaderFilter {
        Arc::new(|name: &HeaderName| {
            wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
                || HOST_HEADERS.contains(&name.as_str())
        })
    }

    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let call = self.call.clone();
        Box::new(async move { send(call, request).await })
    }
}

/// Counts a tool's requests in flight; gives the slot back when dropped.
struct InFlight {
    client: Arc<HttpClient>,
    tool: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self.client.in_flight.lock().unwrap();
        if let Some(n) = map.get_mut(&self.tool) {
            *n = n.saturating_sub(1);
        }
    }
}

async fn send(
    call: Arc<CallContext>,
    request: http::Request<wasmtime_wasi_http::WasiBody>,
) -> Result<
    (
        http::Response<wasmtime_wasi_http::WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
> {
    let client: Arc<HttpClient> = call
        .backend_arc::<HttpClient>("http")
        .ok_or_else(|| denied("no [http] backend is configured"))?;
    let (mut parts, body) = request.into_parts();
    let target_text = format!("{} {}", parts.method, parts.uri);
    // Refused before anything happens, journaled like every refusal.
    let refuse = |capability: Capability, message: String| {
        call.journal_refusal(
            capability,
            std::slice::from_ref(&target_text),
            None,
            None,
            &message,
        );
        denied(message)
    };
    let capability = if parts.method == Method::GET || parts.method == Method::HEAD {
        GET
    } else {
        SEND
    };
    let Some(origin) = Origin::of(&parts.uri) else {
        return Err(refuse(
            capability,
            format!(
                "{capability}: {} is not an http or https URL with a host",
                crate::render::one_line(&parts.uri.to_string(), 200)
            ),
        ));
    };
    {
        let mut map = client.in_flight.lock().unwrap();
        let n = map.entry(call.tool.clone()).or_insert(0);
        if *n >= client.settings.max_concurrent {
            drop(map);
            return Err(refuse(
                capability,
                format!(
                    "{capability}: tool `{}` already has {} requests in flight (max_concurrent)",
                    call.tool, client.settings.max_concurrent
                ),
            ));
        }
        *n += 1;
    }
    let _slot = InFlight {
        client: client.clone(),
        tool: call.tool.clone(),
    };
    let started = Instant::now();
    // The whole body, bounded, before anyone decides.
    let limit = client.max_request_bytes();
    let body = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Err(refuse(
                capability,
                format!(
                    "{capability}: the request body could not be read within {} KiB (max_request_kb): {e}",
                    client.settings.max_request_kb
                ),
            ));
        }
    };
    // Resolve once; the checked addresses are the ones connected to.
    let lookup = tokio::time::timeout(
        client.timeout(),
        tokio::net::lookup_host((origin.host.clone(), origin.port)),
    )
    .await;
    let addresses: Vec<SocketAddr> = match lookup {
        Ok(Ok(found)) => found.collect(),
        Ok(Err(e)) => {
            return Err(refuse(
                capability,
                format!("{capability}: cannot resolve {}: {e}", origin.host),
            ));
        }
        Err(_) => {
            return Err(refuse(
                capability,
                format!("{capability}: resolving {} timed out", origin.host),
            ));
        }
    };
    if addresses.is_empty() {
        return Err(refuse(
            capability,
            format!("{capability}: {} has no address", origin.host),
        ));
    }
    let header_names: Vec<String> = parts
        .headers
        .keys()
        .map(|k| k.as_str().to_string())
        .collect();
    let payload = (capability == SEND).then(|| digest(&body));
    let facts = HttpFacts {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        origin: origin.clone(),
        header_names,
        body: body.clone(),
        addresses: addresses.clone(),
    };
    let intent = Intent {
        capability: capability.as_str().to_string(),
        targets: vec![target_text.clone()],
        payload: payload.clone(),
        summary: String::new(),
    };
    let token = call
        .request_consent(intent, Some(&facts))
        .await
        .map_err(|d| denied(format!("{}: {}", capability, d.message)))?;
    let waited_for_human = started.elapsed();
    let targets = [target_text.clone()];
    let passed = call.pass_gate(token, capability, &targets, payload.as_deref());
    let approved_by = call
        .gate
        .record(token)
        .map(|r| r.decided_by.to_string())
        .unwrap_or_else(|| "unknown".into());
    call.gate.forget(token);
    let call_seq = passed.map_err(denied)?;
    // The host's credential, never seen by the tool.
    if let Some((name, value)) = client.credentials.get(&origin) {
        parts.headers.insert(name.clone(), value.clone());
    }
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    parts.headers.insert(
        HeaderName::from_static(PROVENANCE_HEADER),
        provenance(&call.tool, &call.user, &approved_by),
    );
    let deadline = tokio::time::Instant::now() + client.timeout();
    let state = call.session_state.clone();
    let exchange = exchange(
        client.clone(),
        addresses,
        origin,
        http::Request::from_parts(parts, body),
        deadline,
    );
    let result = Guarded::new(state.clone(), call.cancel.clone(), exchange).await;
    let elapsed = started.elapsed().saturating_sub(waited_for_human);
    let outcome = match &result {
        Ok((response, _)) => format!(
            "ok: status {}{} in {} ms",
            response.status().as_u16(),
            response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .map(|n| format!(", {n} bytes declared"))
                .unwrap_or_default(),
            elapsed.as_millis()
        ),
        Err(e) => format!("error: {e} after {} ms", elapsed.as_millis()),
    };
    call.record_outcome(call_seq, capability, &targets, outcome);
    let (response, connection) = result?;
    let max = client.max_response_bytes();
    let response = response.map(|body| {
        Bounded {
            inner: body,
            remaining: max,
            limit: max,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
        .boxed_unsync()
    });
    let connection = Guarded::new(state, call.cancel.clone(), connection);
    Ok((response, Box::new(connection)))
}

type Connection = Pin<Box<dyn Future<Output = Result<(), HttpError>> + Send>>;

/// Connect to the first checked address that answers, speak TLS for
/// https, send, and wait for the response headers, all before `deadline`.
async fn exchange(
    client: Arc<HttpClient>,
    addresses: Vec<SocketAddr>,
    origin: Origin,
    request: http::Request<Bytes>,
    deadline: tokio::time::Instant,
) -> Result<(http::Response<hyper::body::Incoming>, Connection), HttpError> {
    let work = async {
        let mut last = None;
        let mut stream = None;
        for address in &addresses {
            match tokio::net::TcpStream::connect(address).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| match last {
            Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                HttpError::ConnectionRefused
            }
            Some(e) => HttpError::Connect(e),
            None => HttpError::DestinationUnavailable,
        })?;
        let _ = stream.set_nodelay(true);
        let request = request.map(http_body_util::Full::new);
        if origin.scheme == "https" {
            let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
                .map_err(|_| HttpError::TlsCertificateError)?;
            let tls = tokio_rustls::TlsConnector::from(client.tls.clone())
                .connect(name, stream)
                .await
                .map_err(HttpError::Tls)?;
            handshake(hyper_util::rt::TokioIo::new(tls), request).await
        } else {
            handshake(hyper_util::rt::TokioIo::new(stream), request).await
        }
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::ConnectionTimeout),
    }
}

async fn handshake<IO>(
    io: IO,
    request: http::Request<http_body_util::Full<Bytes>>,
) -> Result<(http::Response<hyper::body::Incoming>, Connection), HttpError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let mut connection: Connection = Box::pin(async move { Ok(connection.await?) });
    // Drive the connection while waiting for the response headers.
    let response = {
        let send = sender.send_request(request);
        tokio::pin!(send);
        tokio::select! {
            response = &mut send => response?,
            done = &mut connection => {
                done?;
                return Err(HttpError::ConnectionTerminated);
            }
        }
    };
    Ok((response, connection))
}

/// A future that does nothing once its session is stopped or its call
/// cancelled: each poll holds the session's effect guard and checks the
/// stop first, so after a stop is acknowledged no byte is sent; a stop or a
/// cancellation also wakes it, and it ends at once.
struct Guarded<F> {
    state: Arc<SessionState>,
    ended: Pin<Box<dyn Future<Output = ()> + Send>>,
    inner: Pin<Box<F>>,
}

impl<F> Guarded<F> {
    fn new(
        state: Arc<SessionState>,
        cancel: tokio_util::sync::CancellationToken,
        inner: F,
    ) -> Self {
        let watched = state.clone();
        Guarded {
            state,
            ended: Box::pin(async move {
                tokio::select! {
                    () = watched.stopped() => {}
                    () = cancel.cancelled_owned() => {}
                }
            }),
            inner: Box::pin(inner),
        }
    }
}

impl<F, T> Future for Guarded<F>
where
    F: Future<Output = Result<T, HttpError>>,
{
    type Output = Result<T, HttpError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = self.state.clone();
        let _guard = state.effect_guard();
        if state.is_stopped() || self.ended.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(denied(
                "the session was stopped (or the call cancelled); the request was abandoned",
            )));
        }
        self.inner.as_mut().poll(cx)
    }
}

/// A response body cut at the size limit and the deadline.
struct Bounded {
    inner: hyper::body::Incoming,
    remaining: u64,
    limit: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Bounded {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(HttpError::HttpResponseTimeout)));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.remaining {
                        let limit = self.limit;
                        return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(
                            limit,
                        )))));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HttpError::Hyper(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_named() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("10.1.2.3", "private"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("fd00::1", "private"),
            ("100.64.0.1", "shared"),
            ("64:ff9b::7f00:1", "IPv4 address in IPv6"),
        ] {
            let found = non_public(ip.parse().unwrap());
            assert!(found.is_some_and(|k| k.contains(kind)), "{ip}: {found:?}");
        }
        assert_eq!(non_public("93.184.216.34".parse().unwrap()), None);
        assert_eq!(non_public("2606:4700::1111".parse().unwrap()), None);
    }

    #[test]
    fn origins_parse_with_default_ports() {
        let o = Origin::parse("https://API.example.com").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("api.example.com", 443));
        assert_eq!(Origin::parse("http://[::1]:8080").unwrap().host, "::1");
        assert!(Origin::parse("https://example.com/path").is_err());
        assert!(Origin::parse("ftp://example.com").is_err());
        let uri: Uri = "http://user@evil.example@127.0.0.1/"
            .parse()
            .unwrap_or_default();
        assert!(Origin::of(&uri).is_none());
    }
}
