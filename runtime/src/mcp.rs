//! agentcap as a Model Context Protocol server (`agentcap serve`).
//!
//! Every exported function of every tool in the policy is an MCP tool named
//! `tool.function`. A call runs in its own store, in its own task; the MCP
//! connection is the runtime's session. When a tool asks for consent, the
//! human is asked through the client:
//!
//! - protocol revisions up to 2025-11-25: an `elicitation/create` request to
//!   the client while the call runs;
//! - 2026-07-28 and later (no server-to-client requests): the call answers
//!   with an `InputRequiredResult` carrying the elicitation and an opaque
//!   `requestState` handle; the guest stays suspended in the Gate until the
//!   client retries with the answer.
//!
//! The server's own channels (the approvals page, an operator's terminal)
//! are asked at the same time; the first answer decides. A client without
//! elicitation is served by those alone, and without any, refused: never
//! approved.
//! `notifications/cancelled` interrupts the call's guest; effects already past
//! the Gate finish and are journaled.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ElicitRequest,
    ElicitRequestParams, ElicitResult, ElicitationAction, Implementation, InputRequest,
    InputRequiredResult, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::model::{CancelledNotificationParam, ClientResult, ServerRequest};
use rmcp::service::{Peer, PeerRequestOptions, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::consent::{
    Approver, Capability, ConsentPrompt, Decision, DecisionFuture, DenyApprover, FirstAnswer,
    SessionId, SharedApprover,
};
use crate::policy::ConsentMode;
use crate::runtime::{CallError, CallOptions, CallOutcome, LoadedTool, Runtime};
use crate::secret::{constant_time_eq, random_hex};

/// Longest MCP tool name (the MCP spec's limit).
const MAX_TOOL_NAME: usize = 128;

/// A server-side problem before serving starts.
#[derive(Debug, thiserror::Error)]
pub enum McpSetupError {
    /// Two functions map to the same MCP tool name.
    #[error("two functions are both published as MCP tool `{0}`; rename a tool in the policy")]
    DuplicateName(String),
    /// The server stopped with an error.
    #[error("the MCP connection failed: {0}")]
    Transport(String),
}

/// One published MCP tool: a function of a loaded tool.
struct Published {
    tool: Arc<LoadedTool>,
    function: String,
    listing: Tool,
}

/// A call that waits for the client to answer a consent request it was sent
/// in an `InputRequiredResult` (protocol 2026-07-28+).
struct Parked {
    running: RunningCall,
    answer: oneshot::Sender<Decision>,
    items: usize,
    tool_name: String,
    /// The client the elicitation went to (its declared name): only a
    /// retry from the same client, able to show forms, may answer.
    client: String,
    parked_at: Instant,
}

/// A tool call's future. It runs inside the request's handler (no extra
/// task hop); only a call parked for an `InputRequiredResult` is spawned, so
/// that it keeps running (timeouts, stops) while the client decides.
type CallFuture = Pin<Box<dyn Future<Output = Result<CallOutcome, CallError>> + Send>>;

/// A tool call in progress.
struct RunningCall {
    call: CallFuture,
    asks: mpsc::Receiver<Ask>,
    cancel: CancellationToken,
}

/// A consent request the Gate hands to the MCP layer to put to the client.
struct Ask {
    prompt: ConsentPrompt,
    answer: oneshot::Sender<Decision>,
    /// Send the person to this link (a URL elicitation) instead of a form.
    url: Option<String>,
}

/// The approvals page, for requests a form may not approve: clients that
/// support URL elicitation get a single-use link to the one request.
#[derive(Clone)]
pub struct PageLinks {
    /// The page's board.
    pub board: Arc<crate::approvals::ApprovalsBoard>,
    /// The page's address (no secret), e.g. `http://127.0.0.1:8790/`.
    pub address: String,
}

impl PageLinks {
    /// A fresh single-use link to `prompt`'s request on the page.
    fn link(&self, prompt: &ConsentPrompt) -> String {
        format!(
            "{}{}",
            self.address.trim_end_matches('/'),
            self.board.link_for(prompt.request_seq)
        )
    }
}

/// The MCP server: the tools of one runtime, shared by every connection.
pub struct McpServer {
    runtime: Arc<Runtime>,
    published: Vec<Published>,
    channels: Vec<SharedApprover>,
    parked: Mutex<HashMap<String, Parked>>,
    sessions: AtomicU64,
    page: std::sync::OnceLock<PageLinks>,
}

impl McpServer {
    /// Publish every JSON-callable function of `tools`. `channels` (the
    /// approvals page, an operator's terminal) are asked alongside the
    /// client's elicitation, and alone for clients that cannot elicit; the
    /// first answer decides. With no channel at all, such requests are
    /// refused.
    pub fn new(
        runtime: Arc<Runtime>,
        tools: Vec<LoadedTool>,
        channels: Vec<SharedApprover>,
    ) -> Result<Arc<McpServer>, McpSetupError> {
        let mut published: Vec<Published> = Vec::new();
        for tool in tools {
            let tool = Arc::new(tool);
            let capabilities = effective_capabilities(&tool);
            for function in &tool.info().functions {
                if function.unavailable.is_some() {
                    continue;
                }
                let listing = describe(&tool, function, &capabilities);
                if published.iter().any(|p| p.listing.name == listing.name) {
                    return Err(McpSetupError::DuplicateName(listing.name.to_string()));
                }
                published.push(Published {
                    tool: tool.clone(),
                    function: function.name.clone(),
                    listing,
                });
            }
        }
        Ok(Arc::new(McpServer {
            runtime,
            published,
            channels,
            parked: Mutex::new(HashMap::new()),
            sessions: AtomicU64::new(0),
            page: std::sync::OnceLock::new(),
        }))
    }

    /// Requests a form may not approve are sent, by URL elicitation, to
    /// this page (when the client supports URL mode).
    pub fn link_page(&self, page: PageLinks) {
        let _ = self.page.set(page);
    }

    /// The MCP tools as listed to clients.
    pub fn tools(&self) -> Vec<Tool> {
        self.published.iter().map(|p| p.listing.clone()).collect()
    }

    /// A handler for one connection, with a session of its own.
    pub fn connection(self: &Arc<Self>, transport: &str) -> McpConnection {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let pid = std::process::id();
        McpConnection {
            server: self.clone(),
            session: SessionId(format!("mcp-{transport}-{pid}-{n}")),
            stateless_session: SessionId(format!("mcp-{transport}-{pid}")),
        }
    }

    /// Serve one client over stdin/stdout until it disconnects.
    pub async fn serve_stdio(self: &Arc<Self>) -> Result<(), McpSetupError> {
        let connection = self.connection("stdio");
        let running = connection
            .serve(rmcp::transport::stdio_pipes())
            .await
            .map_err(|e| McpSetupError::Transport(e.to_string()))?;
        running
            .waiting()
            .await
            .map_err(|e| McpSetupError::Transport(e.to_string()))?;
        Ok(())
    }

    /// Serve streamable HTTP on `listener` at `/mcp` until `shutdown`.
    /// `bearer` (required beyond loopback) must be sent as
    /// `Authorization: Bearer ...`; `allowed_hosts` guard against DNS
    /// rebinding and browser Origins are refused.
    pub async fn serve_http(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        allowed_hosts: Vec<String>,
        bearer: Option<String>,
        shutdown: CancellationToken,
    ) -> Result<(), McpSetupError> {
        use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
        use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
        let config = StreamableHttpServerConfig::default()
            .with_allowed_hosts(allowed_hosts)
            .enforce_origin_validation()
            .with_cancellation_token(shutdown.child_token());
        let factory = {
            let server = self.clone();
            move || Ok(server.connection("http"))
        };
        let service =
            StreamableHttpService::new(factory, Arc::new(LocalSessionManager::default()), config);
        let mut router = axum::Router::new().nest_service("/mcp", service);
        if let Some(secret) = bearer {
            let expected = Arc::new(format!("Bearer {secret}"));
            router = router.layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let expected = expected.clone();
                    async move {
                        let given = request
                            .headers()
                            .get(axum::http::header::AUTHORIZATION)
                            .map(|v| v.as_bytes().to_vec())
                            .unwrap_or_default();
                        if constant_time_eq(&given, expected.as_bytes()) {
                            next.run(request).await
                        } else {
                            axum::response::IntoResponse::into_response((
                                axum::http::StatusCode::UNAUTHORIZED,
                                "agentcap: missing or wrong bearer secret\n",
                            ))
                        }
                    }
                },
            ));
        }
        crate::http_serve::serve_bounded(listener, router, shutdown)
            .await
            .map_err(|e| McpSetupError::Transport(e.to_string()))
    }

    fn find(&self, name: &str) -> Option<&Published> {
        self.published.iter().find(|p| p.listing.name == name)
    }

    /// Keep parked calls whose client may still answer; drop the rest (their
    /// consent request has long timed out in the Gate).
    fn sweep_parked(&self) {
        let limit = Duration::from_secs(self.runtime.policy().consent_timeout_secs + 60);
        self.parked
            .lock()
            .unwrap()
            .retain(|_, p| p.parked_at.elapsed() < limit);
    }
}

/// One MCP connection (its own runtime session).
#[derive(Clone)]
pub struct McpConnection {
    server: Arc<McpServer>,
    session: SessionId,
    /// The session of requests that carry their own protocol envelope
    /// (2026-07-28+): they belong to no connection, and over HTTP each gets
    /// a fresh handler, so they share one session per server and transport.
    stateless_session: SessionId,
}

impl McpConnection {
    /// The runtime session of this connection.
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    async fn start_call(
        &self,
        session: SessionId,
        published: &Published,
        arguments: Value,
        approver: SharedApprover,
        asks: mpsc::Receiver<Ask>,
    ) -> RunningCall {
        let cancel = CancellationToken::new();
        let runtime = self.server.runtime.clone();
        let tool = published.tool.clone();
        let function = published.function.clone();
        let options = CallOptions {
            approver: Some(approver),
            cancel: Some(cancel.clone()),
        };
        let call = Box::pin(async move {
            runtime
                .call_with(&tool, &session, &function, &arguments, options)
                .await
        });
        RunningCall { call, asks, cancel }
    }

    /// Wait for `running` to end, or to need the client's answer (then park
    /// it and return the elicitation as an `InputRequiredResult`).
    async fn drive(
        &self,
        mut running: RunningCall,
        tool_name: &str,
        client: &str,
        ct: &CancellationToken,
    ) -> CallToolResponse {
        // A closed `asks` channel (no deferred approver) disables its branch.
        tokio::select! {
            finished = &mut running.call => CallToolResponse::Complete(call_result(finished)),
            Some(ask) = running.asks.recv() => {
                let task = tokio::spawn(running.call);
                let tool = tool_name.to_string();
                running.call = Box::pin(async move {
                    task.await.unwrap_or_else(|e| Err(CallError::Trap {
                        tool,
                        message: format!("the call's task failed: {e}"),
                        logs: String::new(),
                    }))
                });
                let handle = random_hex(16);
                let request = match &ask.url {
                    Some(url) => url_elicitation_request(&ask.prompt, url),
                    None => elicitation_request(&ask.prompt),
                };
                let items = ask.prompt.items.len();
                self.server.sweep_parked();
                self.server.parked.lock().unwrap().insert(handle.clone(), Parked {
                    running,
                    answer: ask.answer,
                    items,
                    tool_name: tool_name.to_string(),
                    client: client.to_string(),
                    parked_at: Instant::now(),
                });
                let mut requests = rmcp::model::InputRequests::new();
                requests.insert(CONSENT_INPUT.to_string(), InputRequest::Elicitation(request));
                CallToolResponse::InputRequired(InputRequiredResult::new(Some(requests), Some(handle)))
            }
            () = ct.cancelled() => {
                running.cancel.cancel();
                let finished = (&mut running.call).await;
                CallToolResponse::Complete(call_result(finished))
            }
        }
    }
}

/// The key of the consent elicitation in `inputRequests`.
const CONSENT_INPUT: &str = "consent";

impl ServerHandler for McpConnection {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new("agentcap", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Sandboxed tools. Every side effect needs the user's consent, which agentcap asks \
             for itself (through elicitation when the client supports it); a refusal is final \
             for that action."
                .into(),
        );
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.server.tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.server.find(name).map(|p| p.listing.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let client =
            crate::consent::client_name(&context.client_info().map(|c| c.name).unwrap_or_default());
        if let Some(handle) = &request.request_state {
            // A retry carrying the answer to a parked consent request. Only
            // the client that was asked, declaring forms, may answer; any
            // other is refused and the parked call is left untouched.
            let answerable = {
                let parked = self.server.parked.lock().unwrap();
                parked.get(handle).map(|p| p.client == client)
            };
            if answerable == Some(false)
                || (answerable == Some(true)
                    && !matches!(consent_route(&context), ConsentRoute::InputRequired))
            {
                return Err(McpError::invalid_params(
                    "requestState belongs to another client's consent request (or this request declares no forms)",
                    None,
                ));
            }
            let parked = self.server.parked.lock().unwrap().remove(handle);
            let Some(parked) = parked else {
                return Err(McpError::invalid_params(
                    "requestState names no waiting call (unknown, already answered, or expired)",
                    None,
                ));
            };
            if parked.tool_name != request.name {
                parked.running.cancel.cancel();
                return Err(McpError::invalid_params(
                    format!(
                        "requestState belongs to a call of `{}`, not `{}`; that call was cancelled",
                        parked.tool_name, request.name
                    ),
                    None,
                ));
            }
            let answer = request
                .input_responses
                .as_ref()
                .and_then(|r| r.get(CONSENT_INPUT))
                .map_or(
                    Decision::Decline("the client sent no answer to the consent request".into()),
                    |v| decision_from_json(v, parked.items),
                );
            // The Gate may have given up already (timeout, stop): then the
            // call has ended or will, and its result is what the client gets.
            let _ = parked.answer.send(answer);
            return Ok(self
                .drive(parked.running, &parked.tool_name, &client, &context.ct)
                .await);
        }
        let Some(published) = self.server.find(&request.name) else {
            return Err(McpError::invalid_params(
                format!(
                    "unknown tool `{}` (tools/list shows what this server offers)",
                    request.name
                ),
                None,
            ));
        };
        let arguments = Value::Object(request.arguments.clone().unwrap_or_default());
        let (asks_tx, asks_rx) = mpsc::channel(1);
        let page = context
            .client_capabilities()
            .and_then(|c| c.elicitation)
            .is_some_and(|e| e.url.is_some())
            .then(|| self.server.page.get().cloned())
            .flatten();
        let client_channel: Option<SharedApprover> = match consent_route(&context) {
            ConsentRoute::ElicitNow => Some(Arc::new(ElicitingApprover {
                peer: context.peer.clone(),
                channel: format!("MCP client `{client}` (elicitation)"),
                page,
            })),
            ConsentRoute::InputRequired => Some(Arc::new(DeferredApprover {
                asks: asks_tx,
                channel: format!("MCP client `{client}` (elicitation)"),
                page,
            })),
            ConsentRoute::CannotElicit => None,
        };
        let mut channels: Vec<SharedApprover> = client_channel.into_iter().collect();
        channels.extend(self.server.channels.iter().cloned());
        let approver: SharedApprover = match channels.len() {
            0 => Arc::new(DenyApprover::new(
                "the MCP client cannot show consent requests (no elicitation) and neither an \
                 approvals page nor an operator terminal is available",
            )),
            1 => channels.remove(0),
            _ => Arc::new(FirstAnswer::new(channels)),
        };
        // A stop reaches everything this connection does: once its own
        // session or the server's envelope session is stopped, a call in
        // either is run in the stopped one, and so refused, whichever
        // protocol era or envelope it uses.
        let gate = self.server.runtime.gate();
        let session = if gate.is_stopped(&self.session) {
            self.session.clone()
        } else if gate.is_stopped(&self.stateless_session)
            || context.meta.protocol_version().is_some()
        {
            self.stateless_session.clone()
        } else {
            self.session.clone()
        };
        let running = self
            .start_call(session, published, arguments, approver, asks_rx)
            .await;
        Ok(self
            .drive(running, &request.name, &client, &context.ct)
            .await)
    }
}

/// How a consent request of this call reaches a human.
enum ConsentRoute {
    /// Send `elicitation/create` to the client now (handshake-era revisions).
    ElicitNow,
    /// Answer with an `InputRequiredResult` (2026-07-28+).
    InputRequired,
    /// The client cannot elicit: only the server's own channels.
    CannotElicit,
}

fn consent_route(context: &RequestContext<RoleServer>) -> ConsentRoute {
    let elicits = context
        .client_capabilities()
        .and_then(|c| c.elicitation)
        // An empty `elicitation: {}` means form mode (backwards compatible).
        .is_some_and(|e| e.form.is_some() || e.url.is_none());
    if !elicits {
        return ConsentRoute::CannotElicit;
    }
    let modern = context
        .protocol_version()
        .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
    if modern {
        ConsentRoute::InputRequired
    } else {
        ConsentRoute::ElicitNow
    }
}

/// Asks through `elicitation/create` while the call waits.
struct ElicitingApprover {
    peer: Peer<RoleServer>,
    channel: String,
    page: Option<PageLinks>,
}

impl Approver for ElicitingApprover {
    fn channel(&self) -> &str {
        &self.channel
    }

    fn restricts_itself(&self) -> bool {
        true
    }

    fn decide<'a>(&'a self, prompt: &'a ConsentPrompt) -> DecisionFuture<'a> {
        Box::pin(async move {
            let request = match form_may_not_approve(prompt, &self.channel) {
                None => elicitation_request(prompt),
                Some(refused) => match &self.page {
                    // Send the person to the page; the page decides.
                    Some(page) => url_elicitation_request(prompt, &page.link(prompt)),
                    None => return refused,
                },
            };
            let url_mode = !prompt.approvable_by(&self.channel);
            let request = ServerRequest::ElicitRequest(request);
            let handle = match self
                .peer
                .send_request_with_option(request, PeerRequestOptions::no_options())
                .await
            {
                Ok(handle) => handle,
                Err(e) => {
                    return Decision::Unavailable(format!("the MCP client could not ask: {e}"));
                }
            };
            // If another channel answers first, this future is dropped: tell
            // the client to take its form down.
            let mut withdraw = WithdrawElicitation {
                peer: self.peer.clone(),
                id: Some(handle.id.clone()),
            };
            let response = handle.await_response().await;
            withdraw.id = None;
            if url_mode {
                // Accepting a link means only "I opened it".
                return sent_to_page();
            }
            match response {
                Ok(ClientResult::ElicitResult(result)) => {
                    decision_from_result(&result, prompt.items.len())
                }
                Ok(_) => Decision::Unavailable("the MCP client answered something else".into()),
                Err(e) => Decision::Unavailable(format!("the MCP client could not ask: {e}")),
            }
        })
    }
}

/// A form is not even shown for a request the grant does not let an MCP
/// client approve: the client's software, not a human, answers forms.
fn form_may_not_approve(prompt: &ConsentPrompt, channel: &str) -> Option<Decision> {
    (!prompt.approvable_by(channel)).then(|| {
        Decision::Unavailable(format!(
            "{} may not be approved through the MCP client's form (the policy's approve_via); it waits for the approvals page or the operator's terminal",
            prompt.capability
        ))
    })
}

/// Cancels an unanswered `elicitation/create` when its asker stops waiting.
struct WithdrawElicitation {
    peer: Peer<RoleServer>,
    id: Option<rmcp::model::RequestId>,
}

impl Drop for WithdrawElicitation {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let peer = self.peer.clone();
            tokio::spawn(async move {
                let _ = peer
                    .notify_cancelled(CancelledNotificationParam::new(
                        Some(id),
                        Some("answered on another channel, stopped or timed out".into()),
                    ))
                    .await;
            });
        }
    }
}

/// Hands the request to the call's driver, which parks the call and returns
/// the elicitation to the client as an `InputRequiredResult`.
struct DeferredApprover {
    asks: mpsc::Sender<Ask>,
    channel: String,
    page: Option<PageLinks>,
}

impl Approver for DeferredApprover {
    fn channel(&self) -> &str {
        &self.channel
    }

    fn decide<'a>(&'a self, prompt: &'a ConsentPrompt) -> DecisionFuture<'a> {
        Box::pin(async move {
            let url = match form_may_not_approve(prompt, &self.channel) {
                None => None,
                Some(refused) => match &self.page {
                    Some(page) => Some(page.link(prompt)),
                    None => return refused,
                },
            };
            let url_mode = url.is_some();
            let (answer, answered) = oneshot::channel();
            let ask = Ask {
                prompt: prompt.clone(),
                answer,
                url,
            };
            if self.asks.send(ask).await.is_err() {
                return Decision::Unavailable("the MCP request that asked has ended".into());
            }
            let answer = answered.await.unwrap_or_else(|_| {
                Decision::Decline("the MCP client never answered the consent request".into())
            });
            if url_mode {
                // Accepting a link means only "I opened it".
                return sent_to_page();
            }
            answer
        })
    }

    fn restricts_itself(&self) -> bool {
        true
    }
}

/// What an MCP channel answers after a URL elicitation: it did not decide;
/// the page will.
fn sent_to_page() -> Decision {
    Decision::Unavailable(
        "the client was sent a link to the approvals page; the decision is made there".into(),
    )
}

/// A URL elicitation: the host's message and a single-use link to the one
/// request on the approvals page. The link is not a credential.
fn url_elicitation_request(prompt: &ConsentPrompt, url: &str) -> ElicitRequest {
    serde_json::from_value(json!({
        "method": "elicitation/create",
        "params": {
            "mode": "url",
            "message": format!(
                "{} needs a decision on the approvals page (a form here may not approve it). Open the link; the page asks you to log in if this browser is not logged in.\n\n{}",
                prompt.capability,
                prompt.render_for(crate::approvals::CHANNEL)
            ),
            "url": url,
            "elicitationId": random_hex(16),
        },
    }))
    .expect("a valid URL elicitation request")
}

/// The form shown to the human: the host's rendering of the action, and
/// either one yes/no field or, for several items, a multi-select of them
/// (all selected by default; unselect what must not happen).
fn elicitation_schema(prompt: &ConsentPrompt) -> Value {
    if prompt.items.len() > 1 {
        let choices: Vec<Value> = prompt
            .shown_items()
            .into_iter()
            .enumerate()
            .map(|(i, item)| json!({"const": (i + 1).to_string(), "title": item}))
            .collect();
        let all: Vec<String> = (1..=prompt.items.len()).map(|i| i.to_string()).collect();
        json!({
            "type": "object",
            "properties": {
                "approve": {
                    "type": "array",
                    "title": format!("Approve {} for these items", prompt.capability),
                    "description": "Only the selected items are approved; nothing else happens.",
                    "items": {"anyOf": choices},
                    "default": all,
                }
            },
            "required": ["approve"],
        })
    } else {
        json!({
            "type": "object",
            "properties": {
                "approve": {
                    "type": "boolean",
                    "title": format!("Approve {}", prompt.capability),
                    "description": "Exactly the action described above, nothing else.",
                    "default": false,
                }
            },
            "required": ["approve"],
        })
    }
}

fn elicitation_params(prompt: &ConsentPrompt) -> ElicitRequestParams {
    serde_json::from_value(json!({
        "mode": "form",
        "message": prompt.render_for("MCP client"),
        "requestedSchema": elicitation_schema(prompt),
    }))
    .expect("the consent form is a valid elicitation")
}

fn elicitation_request(prompt: &ConsentPrompt) -> ElicitRequest {
    serde_json::from_value(json!({
        "method": "elicitation/create",
        "params": elicitation_params(prompt),
    }))
    .expect("the consent form is a valid elicitation request")
}

fn decision_from_json(value: &Value, items: usize) -> Decision {
    match serde_json::from_value::<ElicitResult>(value.clone()) {
        Ok(result) => decision_from_result(&result, items),
        Err(e) => Decision::Decline(format!(
            "the client's answer is not an elicitation result: {e}"
        )),
    }
}

/// Read the human's answer. Anything but a clear approval is a refusal.
fn decision_from_result(result: &ElicitResult, items: usize) -> Decision {
    match result.action {
        ElicitationAction::Decline => {
            return Decision::Decline("declined in the MCP client".into());
        }
        ElicitationAction::Accept => {}
        _ => return Decision::Decline("dismissed in the MCP client".into()),
    }
    let approve = result.content.as_ref().and_then(|c| c.get("approve"));
    match approve {
        // A yes/no form is shown only for a single item; a multi-item form
        // needs the selection itself.
        Some(Value::Bool(true)) if items <= 1 => Decision::Approve((0..items).collect()),
        Some(Value::Array(selected)) => {
            let mut chosen: Vec<usize> = selected
                .iter()
                .filter_map(|v| v.as_str()?.parse::<usize>().ok())
                .filter(|n| (1..=items).contains(n))
                .map(|n| n - 1)
                .collect();
            chosen.sort_unstable();
            chosen.dedup();
            if chosen.is_empty() {
                Decision::Decline("no item was selected in the MCP client".into())
            } else {
                Decision::Approve(chosen)
            }
        }
        _ => Decision::Decline("not approved in the MCP client".into()),
    }
}

/// The capabilities a tool can actually use: granted (not `deny`) and
/// imported by the component.
fn effective_capabilities(tool: &LoadedTool) -> Vec<(Capability, ConsentMode)> {
    let imported = tool.info().capabilities();
    tool.grants()
        .grants
        .iter()
        .filter(|g| g.mode != ConsentMode::Deny)
        .map(|g| (g.parsed_capability(), g.mode))
        .filter(|(c, _)| imported.iter().any(|i| i == c.interface()))
        .collect()
}

/// An MCP tool name: `tool.function`, limited to the characters MCP allows.
pub fn mcp_tool_name(tool: &str, function: &str) -> String {
    format!("{tool}.{function}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_TOOL_NAME)
        .collect()
}

fn describe(
    tool: &LoadedTool,
    function: &crate::tool::ToolFunction,
    capabilities: &[(Capability, ConsentMode)],
) -> Tool {
    let side_effects: Vec<Capability> = capabilities
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| c.is_side_effecting())
        .collect();
    let granted = if capabilities.is_empty() {
        "no capabilities: it cannot read or change anything outside itself".to_string()
    } else {
        capabilities
            .iter()
            .map(|(c, mode)| match mode {
                ConsentMode::Standing => format!("{c} (standing grant)"),
                _ => format!("{c} (asks the user each time)"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let description = format!(
        "`{}` of the sandboxed tool `{}`. Capabilities: {granted}. The user's consent is \
         requested by agentcap itself; a refused action simply does not happen.",
        function.name,
        tool.name()
    );
    let mut annotations = json!({
        "title": format!("{} ({})", function.name, tool.name()),
        "readOnlyHint": side_effects.is_empty(),
        "openWorldHint": capabilities.iter().any(|(c, _)| c.publishes()),
    });
    if !side_effects.is_empty() {
        annotations["destructiveHint"] = json!(
            side_effects
                .iter()
                .any(|c| c.effect() == crate::capability::Effect::Destroys)
        );
    }
    let mut listing = json!({
        "name": mcp_tool_name(tool.name(), &function.name),
        "title": format!("{} ({})", function.name, tool.name()),
        "description": description,
        "inputSchema": function.input_schema,
        "annotations": annotations,
    });
    if let Some(output) = &function.output_schema {
        listing["outputSchema"] = json!({
            "type": "object",
            "properties": {"result": output},
            "required": ["result"],
        });
    }
    serde_json::from_value(listing).expect("a tool listing is a valid MCP Tool")
}

/// A finished call as an MCP result. The tool's own error and every
/// refusal or limit are `isError` results the model can read; guest
/// stdout/stderr are never included.
fn call_result(finished: Result<CallOutcome, CallError>) -> CallToolResult {
    match finished {
        Ok(outcome) => {
            let text = vec![ContentBlock::text(
                serde_json::to_string(&outcome.result).unwrap_or_default(),
            )];
            let mut result = if outcome.is_error {
                CallToolResult::error(text)
            } else {
                CallToolResult::success(text)
            };
            result.structured_content = Some(json!({"result": outcome.result}));
            result
        }
        Err(error) => CallToolResult::error(vec![ContentBlock::text(format!("agentcap: {error}"))]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_mcp_names() {
        assert_eq!(mcp_tool_name("inbox-triage", "plan"), "inbox-triage.plan");
        assert_eq!(mcp_tool_name("my tool", "api.get/x"), "my_tool.api.get_x");
        assert_eq!(mcp_tool_name(&"x".repeat(200), "f").len(), MAX_TOOL_NAME);
    }

    fn answer(action: &str, content: Value) -> ElicitResult {
        serde_json::from_value(json!({"action": action, "content": content})).unwrap()
    }

    #[test]
    fn only_a_clear_approval_approves() {
        let yes = answer("accept", json!({"approve": true}));
        assert_eq!(decision_from_result(&yes, 1), Decision::Approve(vec![0]));
        for refusal in [
            answer("accept", json!({"approve": false})),
            answer("accept", json!({})),
            answer("accept", json!({"approve": "yes"})),
            answer("decline", json!({"approve": true})),
            answer("cancel", json!({"approve": true})),
            answer("accept", json!({"approve": []})),
            answer("accept", json!({"approve": ["0", "9", "x"]})),
            answer("accept", json!({"approve": true})),
        ] {
            assert!(
                matches!(decision_from_result(&refusal, 3), Decision::Decline(_)),
                "{refusal:?}"
            );
        }
        let subset = answer("accept", json!({"approve": ["3", "1", "1", "7"]}));
        assert_eq!(
            decision_from_result(&subset, 3),
            Decision::Approve(vec![0, 2])
        );
    }
}
