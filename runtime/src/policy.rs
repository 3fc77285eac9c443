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

use crate::consent::{ApprovalChannel, Capability};

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
    /// The mail backend, if any tool may use mail.
    #[serde(default)]
    pub mail: Option<MailBackend>,
    /// Seconds a human has to answer a consent prompt; silence is a refusal.
    #[serde(
        default = "default_consent_timeout_secs",
        deserialize_with = "within::<_, _, 1, 86400>"
    )]
    pub consent_timeout_secs: u64,
    /// The forum backend, if any tool may use the forum.
    #[serde(default)]
    pub forum: Option<ForumBackend>,
    /// The database for `data.query`, if any tool may query.
    #[serde(default)]
    pub data: Option<DataBackend>,
    /// Where and how the audit journal is kept.
    #[serde(default)]
    pub journal: JournalSettings,
    /// Tools by name.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolPolicy>,
    /// Where the file was read from; relative paths resolve against its folder.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Deserialize a whole number within `MIN..=MAX`; the parser's error then
/// names the file, line and column of the value out of range.
fn within<'de, D, T, const MIN: u64, const MAX: u64>(d: D) -> Result<T, D::Error>
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

/// Where the forum is: a local SQLite forum, or a Discourse-style server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForumBackend {
    /// A local forum database (SQLite), created if missing.
    #[serde(default)]
    pub database: Option<PathBuf>,
    /// The base URL of a Discourse-style server (`POST /posts.json`).
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable holding the server's API key (never shown
    /// to tools).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The user the server posts as.
    #[serde(default)]
    pub api_username: Option<String>,
    /// Seconds before a server request is abandoned.
    #[serde(
        default = "default_http_timeout_secs",
        deserialize_with = "within::<_, _, 1, 600>"
    )]
    pub timeout_secs: u64,
    /// The label stamped on every AI-written post. Placeholders: `{tool}`,
    /// `{user}`, `{approver}`, `{time}`. It cannot be turned off.
    #[serde(default = "default_label")]
    pub label: String,
}

fn default_http_timeout_secs() -> u64 {
    10
}

fn default_label() -> String {
    "Posted by an AI agent (tool {tool}) on behalf of {user}; approved by {approver} at {time}."
        .to_string()
}

/// The database `data.query` reads (opened read-only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataBackend {
    /// The SQLite database.
    pub database: PathBuf,
    /// Most rows a query returns.
    #[serde(
        default = "default_max_rows",
        deserialize_with = "within::<_, _, 1, 1000000>"
    )]
    pub max_rows: usize,
    /// Milliseconds a query may run.
    #[serde(
        default = "default_query_timeout_ms",
        deserialize_with = "within::<_, _, 1, 600000>"
    )]
    pub timeout_ms: u64,
}

fn default_max_rows() -> usize {
    1000
}

fn default_query_timeout_ms() -> u64 {
    2000
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

/// Where the user's Maildir++ store is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailBackend {
    /// The Maildir root (the INBOX); sub-folders are `.Name` below it.
    pub maildir: PathBuf,
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
    /// Mail folders the capability may touch (`INBOX`, `Archive`, ...);
    /// absent = all folders.
    #[serde(default)]
    pub folders: Option<Vec<String>>,
    /// Forum threads the capability may touch; absent = all threads.
    #[serde(default)]
    pub threads: Option<Vec<u64>>,
    /// Tables a `data.query` may read; required for `data.query`.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Columns (`table.column`) a `data.query` may read; absent = every
    /// column of the granted tables.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
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
            .unwrap_or(self.parsed_capability() == Capability::ForumPost)
    }

    /// The parsed capability (validated when the policy is loaded).
    pub fn parsed_capability(&self) -> Capability {
        Capability::parse(&self.capability).expect("validated at load")
    }

    /// Token lifetime.
    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.expires_after_secs)
    }

    /// Whether `folder` is within this grant's folder scope.
    pub fn allows_folder(&self, folder: &str) -> bool {
        match &self.folders {
            None => true,
            Some(folders) => folders.iter().any(|f| f == folder),
        }
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
    /// relative paths.
    pub fn parse(text: &str, origin: &Path, base_dir: &Path) -> Result<Policy, PolicyError> {
        let mut policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        policy.base_dir = base_dir.to_path_buf();
        let invalid = |message: String| PolicyError::Invalid {
            path: origin.to_path_buf(),
            message,
        };
        if let Some(forum) = &policy.forum {
            if forum.database.is_some() == forum.url.is_some() {
                return Err(invalid(
                    "[forum] needs exactly one of `database` or `url`".into(),
                ));
            }
            if !forum.label.contains("{tool}") || !forum.label.contains("{user}") {
                return Err(invalid(
                    "[forum] label must name the tool and the user ({tool}, {user}); AI posts are always labelled".into(),
                ));
            }
        }
        if policy.user.trim().is_empty() {
            return Err(invalid("`user` must name the person tools act for".into()));
        }
        for (name, tool) in &policy.tools {
            if !is_tool_name(name) {
                return Err(invalid(format!(
                    "tool name `{name}` must be letters, digits, `-` or `_`"
                )));
            }
            for grant in &tool.grants {
                let Some(capability) = Capability::parse(&grant.capability) else {
                    return Err(invalid(format!(
                        "tools.{name}: unknown capability `{}` (known: {})",
                        grant.capability,
                        Capability::ALL
                            .iter()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                if grant.max_uses == 0 {
                    return Err(invalid(format!(
                        "tools.{name}: grant for {capability}: max_uses must be at least 1"
                    )));
                }
                if grant.expires_after_secs == 0 {
                    return Err(invalid(format!(
                        "tools.{name}: grant for {capability}: expires_after_secs must be at least 1"
                    )));
                }
                let missing = match capability.interface() {
                    "mail" => policy.mail.is_none(),
                    "forum" => policy.forum.is_none(),
                    _ => policy.data.is_none(),
                };
                if missing {
                    return Err(invalid(format!(
                        "tools.{name} is granted {capability}, but the policy has no [{}] backend",
                        capability.interface()
                    )));
                }
                // A scope the capability cannot apply is an error, never
                // silently ignored.
                let scopes = [
                    (
                        "folders",
                        grant.folders.is_some(),
                        capability.interface() == "mail",
                    ),
                    (
                        "threads",
                        grant.threads.is_some(),
                        matches!(
                            capability,
                            Capability::ForumReadThread | Capability::ForumPost
                        ),
                    ),
                    (
                        "tables",
                        grant.tables.is_some(),
                        capability == Capability::DataQuery,
                    ),
                    (
                        "columns",
                        grant.columns.is_some(),
                        capability == Capability::DataQuery,
                    ),
                ];
                if let Some((scope, _, _)) =
                    scopes.iter().find(|(_, set, applies)| *set && !applies)
                {
                    return Err(invalid(format!(
                        "tools.{name}: grant for {capability}: a `{scope}` scope does not apply to {capability}, so it would be ignored; remove it"
                    )));
                }
                if capability == Capability::DataQuery && grant.tables.is_none() {
                    return Err(invalid(format!(
                        "tools.{name}: a grant for data.query must list its `tables`"
                    )));
                }
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

    /// A policy that grants nothing: tools that import any capability are
    /// refused at link time.
    pub fn deny_all(user: &str) -> Policy {
        Policy {
            user: user.to_string(),
            mail: None,
            forum: None,
            data: None,
            consent_timeout_secs: default_consent_timeout_secs(),
            journal: JournalSettings::default(),
            tools: BTreeMap::new(),
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
        let grant = tool.grant_for(Capability::MailDelete).unwrap();
        assert_eq!(grant.mode, ConsentMode::Ask);
        assert!(grant.allows_folder("INBOX") && !grant.allows_folder("Archive"));
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
        let delete = tool.grant_for(Capability::MailDelete).unwrap();
        let archive = tool.grant_for(Capability::MailArchive).unwrap();
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
            .grant_for(Capability::MailDelete)
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
}
