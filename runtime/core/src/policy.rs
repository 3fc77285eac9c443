//! The operator's policy file (`agentcap.toml`): on whose behalf tools act,
//! which tools exist, what each may do (capability, consent mode, scope,
//! token expiry and uses), their resource limits, and where the backends are.
//!
//! ```toml
//! user = "alice"
//!
//! [mail]
//! maildir = "mail/alice"          # relative to this file
//!
//! [tools.inbox-triage]
//! component = "inbox_triage.wasm"
//! limits = { memory_mb = 64, wall_time_ms = 30000 }
//!
//! [[tools.inbox-triage.grants]]
//! capability = "mail.list"
//! mode = "standing"               # pre-approved within scope, no prompt
//! folders = ["INBOX"]
//!
//! [[tools.inbox-triage.grants]]
//! capability = "mail.delete"
//! mode = "ask"                    # a human decides each time
//! folders = ["INBOX"]
//! expires_after_secs = 120
//! max_uses = 1
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::capability::{Capability, Opaque, registry};
use crate::consent::ApprovalChannel;

/// A policy file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (the message
    /// carries the line and column).
    #[error("invalid policy file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parses but says something impossible.
    #[error("invalid policy file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The whole policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The person on whose behalf tools act.
    pub user: String,
    /// Seconds a human has to answer a consent prompt; silence is a refusal.
    #[serde(
        default = "default_consent_timeout_secs",
        deserialize_with = "within::<_, _, 1, 86400>"
    )]
    pub consent_timeout_secs: u64,
    /// Where and how the audit journal is kept.
    #[serde(default)]
    pub journal: JournalSettings,
    /// Tools by name.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolPolicy>,
    /// The fleet this host belongs to (shared stops), if any.
    #[serde(default)]
    pub fleet: Option<crate::fleet::FleetSettings>,
    /// Each configured capability's backend settings (its table, `[mail]`),
    /// as its plug-in parsed them, by interface.
    #[serde(skip)]
    pub backends: BTreeMap<&'static str, Opaque>,
    /// Where the file was read from; relative paths resolve against its folder.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The policy's own top-level keys; every other table belongs to a
/// capability plug-in (`[mail]`).
const POLICY_KEYS: &[&str] = &["user", "consent_timeout_secs", "journal", "tools", "fleet"];

/// The keys every grant has; the others are its capability's scope.
const GRANT_KEYS: &[&str] = &[
    "capability",
    "mode",
    "expires_after_secs",
    "max_uses",
    "approve_via",
    "refuse_invisible",
    "max_refusals",
];

/// Deserialize a whole number within `MIN..=MAX`; the parser's error then
/// names the file, line and column of the value out of range.
pub fn within<'de, D, T, const MIN: u64, const MAX: u64>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    let value = u64::deserialize(d)?;
    if !(MIN..=MAX).contains(&value) {
        return Err(serde::de::Error::custom(format!(
            "{value} is out of range: it must be from {MIN} to {MAX}"
        )));
    }
    T::try_from(value).map_err(|_| serde::de::Error::custom(format!("{value} is too large")))
}

fn default_consent_timeout_secs() -> u64 {
    120
}

/// The audit journal's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSettings {
    /// The SQLite file (default: see `Journal::default_path`).
    pub path: Option<PathBuf>,
    /// Keep full payloads in the journal, not only their digests (off by
    /// default, for privacy).
    #[serde(default)]
    pub record_payloads: bool,
}

/// What one tool is and may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPolicy {
    /// The component file.
    pub component: PathBuf,
    /// Capabilities granted to the tool; anything not listed is denied.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Resource limits for each call.
    #[serde(default)]
    pub limits: Limits,
}

/// How consent for a granted capability is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentMode {
    /// A human decides each request.
    Ask,
    /// The operator pre-approved requests within the grant's scope.
    Standing,
    /// Never: requests are refused (same as no grant, but explicit).
    Deny,
}

/// One capability granted to a tool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The capability, e.g. `mail.delete`.
    pub capability: String,
    /// How consent is obtained.
    pub mode: ConsentMode,
    /// Lifetime of each token minted under this grant.
    #[serde(
        default = "default_expires_after_secs",
        deserialize_with = "within::<_, _, 1, 2592000>"
    )]
    pub expires_after_secs: u64,
    /// Calls each token minted under this grant allows.
    #[serde(
        default = "default_max_uses",
        deserialize_with = "within::<_, _, 1, 100000>"
    )]
    pub max_uses: u32,
    /// The channels that may approve this grant's `ask` requests
    /// (`terminal`, `page`, `mcp-form`). Absent: every channel, except that
    /// an MCP client's form cannot approve what destroys or publishes
    /// (`mail.delete`, `forum.post`).
    #[serde(default)]
    pub approve_via: Option<Vec<ApprovalChannel>>,
    /// Refuse content (a post body, SQL) that holds invisible or control
    /// characters, rather than showing them marked. Absent: refused for
    /// content that is published (`forum.post`), shown marked otherwise.
    #[serde(default)]
    pub refuse_invisible: Option<bool>,
    /// After this many refusals of the capability in one session (declined,
    /// timed out), further requests are refused without asking until the
    /// approvals page allows asking again.
    #[serde(
        default = "default_max_refusals",
        deserialize_with = "within::<_, _, 1, 1000>"
    )]
    pub max_refusals: u32,
    /// The capability's scope (its keys, such as `folders`), as its plug-in
    /// parsed them.
    #[serde(skip)]
    pub scope: Opaque,
    /// The capability, resolved once when the policy is loaded.
    #[serde(skip)]
    pub resolved: Option<Capability>,
}

fn default_max_refusals() -> u32 {
    3
}

fn default_expires_after_secs() -> u64 {
    300
}

fn default_max_uses() -> u32 {
    1
}

impl Grant {
    /// Whether a decision from `channel` (a kind; `None` for the operator's
    /// own in-process approvers) may approve this grant's requests.
    pub fn approvable_via(&self, channel: Option<ApprovalChannel>) -> bool {
        let Some(channel) = channel else {
            return true;
        };
        match &self.approve_via {
            Some(list) => list.contains(&channel),
            None => {
                channel != ApprovalChannel::McpForm
                    || !self.parsed_capability().destroys_or_publishes()
            }
        }
    }

    /// Whether content with invisible or control characters is refused.
    pub fn refuses_invisible(&self) -> bool {
        self.refuse_invisible
            .unwrap_or(self.parsed_capability().publishes())
    }

    /// The parsed capability (validated when the policy is loaded).
    pub fn parsed_capability(&self) -> Capability {
        self.resolved
            .or_else(|| Capability::parse(&self.capability))
            .expect("validated at load")
    }

    /// Token lifetime.
    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.expires_after_secs)
    }
}

/// Per-call resource limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory cap in MiB.
    #[serde(
        default = "default_memory_mb",
        deserialize_with = "within::<_, _, 1, 4096>"
    )]
    pub memory_mb: u64,
    /// Wall-clock budget of a call in milliseconds, not counting time spent
    /// waiting for a human's consent.
    #[serde(
        default = "default_wall_time_ms",
        deserialize_with = "within::<_, _, 1, 86400000>"
    )]
    pub wall_time_ms: u64,
    /// Calls of this tool that may run at once; more are refused.
    #[serde(
        default = "default_max_concurrent_calls",
        deserialize_with = "within::<_, _, 1, 1024>"
    )]
    pub max_concurrent_calls: u32,
    /// Largest result (as JSON) a call may return, in MiB.
    #[serde(
        default = "default_max_result_mb",
        deserialize_with = "within::<_, _, 1, 1024>"
    )]
    pub max_result_mb: u64,
}

fn default_max_concurrent_calls() -> u32 {
    4
}

fn default_max_result_mb() -> u64 {
    16
}

fn default_memory_mb() -> u64 {
    64
}

fn default_wall_time_ms() -> u64 {
    30_000
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: default_memory_mb(),
            wall_time_ms: default_wall_time_ms(),
            max_concurrent_calls: default_max_concurrent_calls(),
            max_result_mb: default_max_result_mb(),
        }
    }
}

impl ToolPolicy {
    /// The grant for `capability`, if any (the first one listed wins).
    pub fn grant_for(&self, capability: Capability) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|g| g.parsed_capability() == capability)
    }

    /// Whether any non-deny grant uses the WIT interface `interface`
    /// (e.g. `mail`): only then is the interface linked.
    pub fn links_interface(&self, interface: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.mode != ConsentMode::Deny && g.parsed_capability().interface() == interface)
    }
}

impl Policy {
    /// Read and validate a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Policy::parse(&text, path, &base_dir)
    }

    /// Parse policy text; `origin` names it in errors, `base_dir` anchors
    /// relative paths. The policy's own keys are parsed here; each
    /// capability's table and grant scope by its plug-in. Every error names
    /// the line.
    pub fn parse(text: &str, origin: &Path, base_dir: &Path) -> Result<Policy, PolicyError> {
        let parse_error = |mut e: toml::de::Error| {
            e.set_input(Some(text));
            PolicyError::Parse {
                path: origin.to_path_buf(),
                message: e.to_string().trim_end().to_string(),
            }
        };
        let mut document = toml::de::DeTable::parse(text).map_err(parse_error)?;
        let (backend_tables, scope_tables) = split_plugged(document.get_mut());
        let mut policy: Policy =
            Policy::deserialize(toml::de::Deserializer::from(document)).map_err(parse_error)?;
        policy.base_dir = base_dir.to_path_buf();
        let invalid = |message: String| PolicyError::Invalid {
            path: origin.to_path_buf(),
            message,
        };
        let at_line = |span: std::ops::Range<usize>, message: String| PolicyError::Parse {
            path: origin.to_path_buf(),
            message: format!("{message} (line {})", line_of(text, span.start)),
        };
        for (key, table) in backend_tables {
            let Some(plugin) = registry::plugin(key.get_ref()) else {
                let known = registry::interfaces().collect::<Vec<_>>().join("], [");
                return Err(at_line(
                    key.span(),
                    format!(
                        "unknown table `[{}]` (the capabilities are [{known}])",
                        key.get_ref()
                    ),
                ));
            };
            // A plug-in's own check has no position: it is the table's.
            let settings = plugin
                .parse_backend(toml::de::ValueDeserializer::from(table))
                .map_err(|e| match e.span() {
                    Some(_) => parse_error(e),
                    None => at_line(key.span(), e.message().to_string()),
                })?;
            policy.backends.insert(plugin.interface(), settings);
        }
        if policy.user.trim().is_empty() {
            return Err(invalid("`user` must name the person tools act for".into()));
        }
        if let Some(fleet) = &policy.fleet {
            fleet.check().map_err(invalid)?;
        }
        for (name, tool) in &mut policy.tools {
            if !is_tool_name(name) {
                return Err(invalid(format!(
                    "tool name `{name}` must be letters, digits, `-` or `_`"
                )));
            }
            for (index, grant) in tool.grants.iter_mut().enumerate() {
                let Some(capability) = Capability::parse(&grant.capability) else {
                    return Err(invalid(format!(
                        "tools.{name}: unknown capability `{}` (known: {})",
                        grant.capability,
                        Capability::all()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                grant.resolved = Some(capability);
                if !policy.backends.contains_key(capability.interface()) {
                    return Err(invalid(format!(
                        "tools.{name} is granted {capability}, but the policy has no [{}] backend",
                        capability.interface()
                    )));
                }
                let scope = scope_tables
                    .get(&(name.clone(), index))
                    .cloned()
                    .unwrap_or_else(|| Spanned::new(0..0, toml::de::DeTable::new()));
                // A scope the capability cannot apply is an error, never
                // silently ignored.
                if let Some((key, _)) = scope
                    .get_ref()
                    .iter()
                    .find(|(key, _)| !capability.scope_keys().contains(&key.get_ref().as_ref()))
                {
                    let takes = match capability.scope_keys() {
                        [] => "no scope".to_string(),
                        keys => keys.join(", "),
                    };
                    return Err(at_line(
                        key.span(),
                        format!(
                            "tools.{name}: grant for {capability}: a `{}` scope does not apply to {capability}, so it would be ignored; remove it ({capability} takes: {takes})",
                            key.get_ref()
                        ),
                    ));
                }
                let span = scope.span();
                let table =
                    Spanned::new(span.clone(), toml::de::DeValue::Table(scope.into_inner()));
                grant.scope = capability
                    .plugin()
                    .parse_scope(capability, toml::de::ValueDeserializer::from(table))
                    .map_err(|mut e| {
                        let context = format!("tools.{name}: grant for {capability}");
                        if e.span().is_none() {
                            return at_line(span.clone(), format!("{context}: {}", e.message()));
                        }
                        e.set_input(Some(text));
                        PolicyError::Parse {
                            path: origin.to_path_buf(),
                            message: format!("{context}: {}", e.to_string().trim_end()),
                        }
                    })?;
            }
            let l = &tool.limits;
            if l.memory_mb == 0
                || l.wall_time_ms == 0
                || l.max_concurrent_calls == 0
                || l.max_result_mb == 0
            {
                return Err(invalid(format!(
                    "tools.{name}: limits must be greater than zero"
                )));
            }
        }
        Ok(policy)
    }

    /// The settings of capability interface `interface`'s backend, if the
    /// policy configures it.
    pub fn backend(&self, interface: &str) -> Option<&Opaque> {
        self.backends.get(interface)
    }

    /// A policy that grants nothing: tools that import any capability are
    /// refused at link time.
    pub fn deny_all(user: &str) -> Policy {
        Policy {
            user: user.to_string(),
            backends: BTreeMap::new(),
            consent_timeout_secs: default_consent_timeout_secs(),
            journal: JournalSettings::default(),
            tools: BTreeMap::new(),
            fleet: None,
            base_dir: PathBuf::from("."),
        }
    }

    /// Resolve a path from the policy against the policy file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The journal file this policy names, or the default location.
    pub fn journal_path(&self) -> PathBuf {
        match &self.journal.path {
            Some(p) => self.resolve(p),
            None => crate::journal::Journal::default_path(),
        }
    }

    /// The tool whose component path is `component`, if the policy has one.
    pub fn tool_by_component(&self, component: &Path) -> Option<(&str, &ToolPolicy)> {
        let wanted = std::fs::canonicalize(component).ok()?;
        self.tools.iter().find_map(|(name, tool)| {
            let path = std::fs::canonicalize(self.resolve(&tool.component)).ok()?;
            (path == wanted).then_some((name.as_str(), tool))
        })
    }
}

/// The tables a policy document hands to plug-ins: top-level tables that
/// are not the policy's own keys (backends, by key), and each grant's keys
/// beyond the common ones (scopes, by tool and grant index). They are taken
/// out of `document`, which then holds only what [`Policy`] parses itself.
#[allow(clippy::type_complexity)]
fn split_plugged<'i>(
    document: &mut toml::de::DeTable<'i>,
) -> (
    Vec<(
        Spanned<toml::de::DeString<'i>>,
        Spanned<toml::de::DeValue<'i>>,
    )>,
    BTreeMap<(String, usize), Spanned<toml::de::DeTable<'i>>>,
) {
    let plugged: Vec<_> = document
        .keys()
        .filter(|k| !POLICY_KEYS.contains(&k.get_ref().as_ref()))
        .cloned()
        .collect();
    let backends = plugged
        .into_iter()
        .filter_map(|key| document.remove_entry(key.get_ref().as_ref()))
        .collect();
    let mut scopes = BTreeMap::new();
    let Some(toml::de::DeValue::Table(tools)) = document.get_mut("tools").map(Spanned::get_mut)
    else {
        return (backends, scopes);
    };
    for (tool, value) in tools.iter_mut() {
        let toml::de::DeValue::Table(tool_table) = value.get_mut() else {
            continue;
        };
        let Some(toml::de::DeValue::Array(grants)) =
            tool_table.get_mut("grants").map(Spanned::get_mut)
        else {
            continue;
        };
        for (index, grant) in grants.iter_mut().enumerate() {
            let span = grant.span();
            let toml::de::DeValue::Table(grant) = grant.get_mut() else {
                continue;
            };
            let keys: Vec<_> = grant
                .keys()
                .filter(|k| !GRANT_KEYS.contains(&k.get_ref().as_ref()))
                .cloned()
                .collect();
            let mut scope = toml::de::DeTable::new();
            let mut scope_span = span.clone();
            for key in keys {
                if let Some((key, value)) = grant.remove_entry(key.get_ref().as_ref()) {
                    scope_span = key.span();
                    scope.insert(key, value);
                }
            }
            scopes.insert(
                (tool.get_ref().to_string(), index),
                Spanned::new(scope_span, scope),
            );
        }
    }
    (backends, scopes)
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn is_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, Path::new("agentcap.toml"), Path::new("/etc/agentcap"))
    }

    #[test]
    fn parses_a_full_policy() {
        let p = parse(
            r#"
user = "alice"
[mail]
maildir = "mail"
[tools.triage]
component = "t.wasm"
limits = { memory_mb = 32 }
[[tools.triage.grants]]
capability = "mail.delete"
mode = "ask"
folders = ["INBOX"]
"#,
        )
        .unwrap();
        let tool = &p.tools["triage"];
        assert_eq!(tool.limits.memory_mb, 32);
        assert_eq!(tool.limits.wall_time_ms, 30_000);
        let grant = tool.grant_for(crate::capability::mail::DELETE).unwrap();
        assert_eq!(grant.mode, ConsentMode::Ask);
        let scope = grant
            .scope
            .get::<crate::capability::mail::MailScope>()
            .unwrap();
        assert!(scope.allows_folder("INBOX") && !scope.allows_folder("Archive"));
        assert!(tool.links_interface("mail"));
        assert_eq!(
            p.resolve(Path::new("mail")),
            Path::new("/etc/agentcap/mail")
        );
    }

    #[test]
    fn numbers_out_of_range_are_refused_naming_the_line() {
        let grant = "user = \"a\"\n[mail]\nmaildir = \"m\"\n[tools.t]\ncomponent = \"t\"\n[[tools.t.grants]]\ncapability = \"mail.delete\"\nmode = \"ask\"\n";
        for (line, value) in [
            ("expires_after_secs", "9223372036854775807"),
            ("expires_after_secs", "0"),
            ("max_uses", "4294967295"),
            ("max_refusals", "0"),
        ] {
            let err = parse(&format!("{grant}{line} = {value}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("agentcap.toml")
                    && err.contains("line 9")
                    && err.contains("out of range"),
                "{line} = {value}: {err}"
            );
        }
        let err = parse("user = \"a\"\nconsent_timeout_secs = 18446744073709551615\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        let err = parse(&format!(
            "{grant}[tools.t.limits]\nwall_time_ms = 99999999999999\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 10") && err.contains("out of range"),
            "{err}"
        );
    }

    #[test]
    fn a_scope_the_capability_cannot_apply_is_an_error() {
        for (capability, scope) in [
            ("forum.list-threads", "threads = [1]"),
            ("forum.post", "folders = [\"INBOX\"]"),
            ("mail.delete", "tables = [\"t\"]"),
            ("mail.list", "threads = [2]"),
            ("forum.read-thread", "columns = [\"t.c\"]"),
        ] {
            let text = format!(
                "user = \"a\"\n[mail]\nmaildir = \"m\"\n[forum]\ndatabase = \"f\"\n[tools.t]\ncomponent = \"t\"\n[[tools.t.grants]]\ncapability = \"{capability}\"\nmode = \"ask\"\n{scope}\n"
            );
            let err = parse(&text).unwrap_err().to_string();
            assert!(
                err.contains("does not apply") && err.contains(capability),
                "{capability} with {scope}: {err}"
            );
        }
    }

    #[test]
    fn forms_cannot_approve_destroying_or_publishing_by_default() {
        let text = "user = \"a\"\n[mail]\nmaildir = \"m\"\n[tools.t]\ncomponent = \"t\"\n\
                    [[tools.t.grants]]\ncapability = \"mail.delete\"\nmode = \"ask\"\n\
                    [[tools.t.grants]]\ncapability = \"mail.archive\"\nmode = \"ask\"\n";
        let p = parse(text).unwrap();
        let tool = &p.tools["t"];
        let delete = tool.grant_for(crate::capability::mail::DELETE).unwrap();
        let archive = tool
            .grant_for(crate::capability::mail::ARCHIVE_ACTION)
            .unwrap();
        assert!(!delete.approvable_via(Some(ApprovalChannel::McpForm)));
        assert!(delete.approvable_via(Some(ApprovalChannel::Page)));
        assert!(delete.approvable_via(Some(ApprovalChannel::Terminal)));
        assert!(archive.approvable_via(Some(ApprovalChannel::McpForm)));
        let opted_in = parse(&text.replace(
            "capability = \"mail.delete\"\nmode = \"ask\"\n",
            "capability = \"mail.delete\"\nmode = \"ask\"\napprove_via = [\"page\", \"mcp-form\"]\n",
        ))
        .unwrap();
        let delete = opted_in.tools["t"]
            .grant_for(crate::capability::mail::DELETE)
            .unwrap();
        assert!(delete.approvable_via(Some(ApprovalChannel::McpForm)));
        assert!(!delete.approvable_via(Some(ApprovalChannel::Terminal)));
        let err = parse(&text.replace(
            "mode = \"ask\"\n",
            "mode = \"ask\"\napprove_via = [\"carrier-pigeon\"]\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("carrier-pigeon") && err.contains("line"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_names_line() {
        let err = parse("user = \"a\"\nsurprise = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("agentcap.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("surprise"), "{err}");
    }

    #[test]
    fn bad_mode_and_capability_are_named() {
        let err = parse(
            "user = \"a\"\n[mail]\nmaildir = \"m\"\n[tools.t]\ncomponent = \"t\"\n[[tools.t.grants]]\ncapability = \"mail.delete\"\nmode = \"sometimes\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sometimes") && err.contains("line 8"), "{err}");
        let err = parse(
            "user = \"a\"\n[tools.t]\ncomponent = \"t\"\n[[tools.t.grants]]\ncapability = \"mail.nuke\"\nmode = \"ask\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("mail.nuke"), "{err}");
    }

    #[test]
    fn mail_grant_needs_backend() {
        let err = parse(
            "user = \"a\"\n[tools.t]\ncomponent = \"t\"\n[[tools.t.grants]]\ncapability = \"mail.read\"\nmode = \"standing\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no [mail] backend"), "{err}");
    }

    #[test]
    fn plug_in_tables_and_scopes_are_checked_where_parsed() {
        // A table no capability owns.
        let err = parse("user = \"a\"\n\n[mial]\nmaildir = \"m\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown table `[mial]`") && err.contains("line 3"),
            "{err}"
        );
        // A backend's unknown key and its own check name the line.
        let err = parse("user = \"a\"\n[mail]\nmaildir = \"m\"\nmaildri = \"n\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("maildri") && err.contains("line 4"), "{err}");
        let err = parse("user = \"a\"\n[forum]\ndatabase = \"f\"\nlabel = \"AI\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("label must name") && err.contains("line"),
            "{err}"
        );
        // A scope of the wrong type, and a required scope left out.
        let head = "user = \"a\"\n[data]\ndatabase = \"d\"\n[tools.t]\ncomponent = \"t\"\n[[tools.t.grants]]\ncapability = \"data.query\"\nmode = \"ask\"\n";
        let err = parse(&format!("{head}tables = \"metrics\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.query") && err.contains("line 9") && err.contains("invalid type"),
            "{err}"
        );
        let err = parse(head).unwrap_err().to_string();
        assert!(
            err.contains("data.query") && err.contains("tables"),
            "{err}"
        );
        // Every registered capability parses with its scope.
        let p = parse(&format!(
            "{head}tables = [\"metrics\"]\ncolumns = [\"metrics.day\"]\n"
        ))
        .unwrap();
        let scope = p.tools["t"].grants[0]
            .scope
            .get::<crate::capability::data::Scope>()
            .unwrap();
        assert_eq!(scope.tables, ["metrics"]);
    }
}
