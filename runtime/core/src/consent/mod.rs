//! Consent: capabilities, intents, live tokens and the one [`Gate`] every
//! capability call passes before it touches a backend.
//!
//! A token is minted only from a decision: a human's answer through an
//! [`Approver`], or an operator's standing grant. It is bound to the session
//! and tool that asked, to one capability, to the approved targets (possibly
//! a subset of those requested) and, for actions with content, to the exact
//! payload. It expires, has a use count, and dies on revoke or stop.

mod approver;

pub use approver::{
    Answer, AnswerFuture, Approver, ConsentPrompt, Decision, DecisionFuture, DenyApprover,
    FirstAnswer, PromptItem, Published, ScriptedApprover, SharedApprover, TerminalApprover,
    client_name, label, label_channel, labelled, parse_answer,
};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A way a consent request reaches a person, as named in a grant's
/// `approve_via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalChannel {
    /// The operator's terminal (`agentcap call`, `agentcap serve` on a tty).
    Terminal,
    /// The approvals page (also reached through an MCP URL elicitation).
    Page,
    /// A form the MCP client shows (elicitation): answered by the agent's
    /// own software, which a human may or may not see.
    McpForm,
}

impl ApprovalChannel {
    /// Every channel.
    pub const ALL: &'static [ApprovalChannel] = &[
        ApprovalChannel::Terminal,
        ApprovalChannel::Page,
        ApprovalChannel::McpForm,
    ];

    /// The kind of a deciding channel, from its name; `None` for approvers
    /// the operator's own code installs (scripted users, library callers).
    pub fn of(channel: &str) -> Option<ApprovalChannel> {
        if channel == "terminal" {
            Some(ApprovalChannel::Terminal)
        } else if channel.starts_with("approvals page") {
            Some(ApprovalChannel::Page)
        } else if channel.starts_with("MCP client") {
            Some(ApprovalChannel::McpForm)
        } else {
            None
        }
    }

    /// The name used in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalChannel::Terminal => "terminal",
            ApprovalChannel::Page => "page",
            ApprovalChannel::McpForm => "mcp-form",
        }
    }
}

pub use crate::capability::Capability;

/// Identifies one agent session; tokens belong to exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(pub String);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Host-side identifier of a token.
pub type TokenId = u64;

/// What the guest's `token` resource handle points at in the store's
/// resource table. The authority itself lives in the [`Gate`].
#[derive(Debug)]
pub struct TokenHandle {
    /// The token in the Gate.
    pub id: TokenId,
}

/// Who decided that a token may exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionSource {
    /// A person, through the named channel (`terminal`, `script`, ...).
    Human {
        /// The approver's channel.
        channel: String,
    },
    /// The operator's standing grant in the policy.
    StandingGrant,
}

impl fmt::Display for DecisionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecisionSource::Human { channel } => write!(f, "human via {channel}"),
            DecisionSource::StandingGrant => f.write_str("standing grant"),
        }
    }
}

/// Everything a token covers and its state.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// Its id.
    pub id: TokenId,
    /// The session that asked for it.
    pub session: SessionId,
    /// The tool that asked for it.
    pub tool: String,
    /// The one capability it is for.
    pub capability: Capability,
    /// The approved targets.
    pub targets: Vec<String>,
    /// The approved payload, for actions with content.
    pub payload: Option<String>,
    /// When it dies.
    pub expires_at: SystemTime,
    /// Calls it still allows.
    pub uses_left: u32,
    /// Revoked explicitly (or by a stop).
    pub revoked: bool,
    /// Who allowed it.
    pub decided_by: DecisionSource,
    /// The host's label for content published with this token.
    pub stamp: Option<String>,
}

impl TokenRecord {
    /// Expiry in milliseconds since the Unix epoch.
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// One call a capability wants to make, as the Gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    /// Which capability.
    pub capability: Capability,
    /// What the call touches (every entry must be covered by the token).
    pub targets: &'a [String],
    /// The call's content, if any (must equal the approved payload).
    pub payload: Option<&'a str>,
}

/// Why the Gate refused a call. Each message names the token, its state
/// and what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The handle does not name a token this Gate minted.
    #[error("token {0} is unknown to this runtime")]
    UnknownToken(TokenId),
    /// The token belongs to another session.
    #[error("token {token} belongs to another session, not {caller}")]
    ForeignSession {
        /// The token.
        token: TokenId,
        /// The calling session.
        caller: SessionId,
    },
    /// The token was issued to another tool.
    #[error("token {token} was issued to tool `{owner}`, not `{caller}`")]
    ForeignTool {
        /// The token.
        token: TokenId,
        /// The tool it was issued to.
        owner: String,
        /// The calling tool.
        caller: String,
    },
    /// The token is for another capability.
    #[error("token {token} is for {token_for}, not {wanted}")]
    WrongCapability {
        /// The token.
        token: TokenId,
        /// What it allows.
        token_for: Capability,
        /// What the call needs.
        wanted: Capability,
    },
    /// The token's lifetime is over.
    #[error("token {token} for {capability} expired {ago_ms} ms ago")]
    Expired {
        /// The token.
        token: TokenId,
        /// Its capability.
        capability: Capability,
        /// How long ago.
        ago_ms: u64,
    },
    /// No uses left.
    #[error("token {token} for {capability} has no uses left")]
    UsedUp {
        /// The token.
        token: TokenId,
        /// Its capability.
        capability: Capability,
    },
    /// Revoked, or its session was stopped.
    #[error("token {token} for {capability} was revoked")]
    Revoked {
        /// The token.
        token: TokenId,
        /// Its capability.
        capability: Capability,
    },
    /// The session was stopped.
    #[error("session {0} was stopped")]
    Stopped(SessionId),
    /// This host is part of a fleet and cannot currently learn of stops
    /// pressed elsewhere: no effect may run (fail closed).
    #[error("no effect runs on this host now: {0}")]
    FleetOutOfReach(String),
    /// The call reaches beyond the approved targets.
    #[error("{capability} of {} was not approved: token {token} covers only {}", .outside.join(", "), if .covered.is_empty() { "nothing".to_string() } else { .covered.join(", ") })]
    OutsideApproval {
        /// The token.
        token: TokenId,
        /// Its capability.
        capability: Capability,
        /// Targets of the call the token does not cover.
        outside: Vec<String>,
        /// What the token covers.
        covered: Vec<String>,
    },
    /// The call's content differs from what the human approved.
    #[error("{capability}: the content differs from the approved content of token {token}")]
    PayloadMismatch {
        /// The token.
        token: TokenId,
        /// Its capability.
        capability: Capability,
    },
}

/// What all calls of one session share: the stop flag, a wake-up for
/// consent requests that are waiting, and the guard that lets a stop wait
/// for effects already inside a backend.
#[derive(Debug)]
pub struct SessionState {
    stopped: AtomicBool,
    stop_signal: tokio::sync::Notify,
    effects: RwLock<()>,
    started: SystemTime,
    tools: Mutex<std::collections::BTreeSet<String>>,
    /// Consent requests made in this session (all calls).
    requests: AtomicU64,
    /// Refusals by a human (declined, timed out) per tool and capability.
    refusals: Mutex<HashMap<(String, Capability), u32>>,
    /// Tool and capability pairs no longer put to a human, until re-allowed.
    muted: Mutex<std::collections::BTreeSet<(String, Capability)>>,
    /// Tools with a consent request in front of a human right now.
    asking: Mutex<std::collections::HashSet<String>>,
}

/// A tool's capability that is refused without asking, after too many
/// refusals in one session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MutedRequests {
    /// The session.
    pub session: String,
    /// The tool.
    pub tool: String,
    /// The capability.
    pub capability: String,
}

/// Held while a tool's consent request is in front of a human: a session has
/// at most one such request per tool at a time.
pub struct AskingGuard<'a> {
    state: &'a SessionState,
    tool: String,
}

impl Drop for AskingGuard<'_> {
    fn drop(&mut self) {
        self.state.asking.lock().unwrap().remove(&self.tool);
    }
}

impl Default for SessionState {
    fn default() -> Self {
        SessionState {
            stopped: AtomicBool::new(false),
            stop_signal: tokio::sync::Notify::new(),
            effects: RwLock::new(()),
            started: SystemTime::now(),
            tools: Mutex::default(),
            requests: AtomicU64::new(0),
            refusals: Mutex::default(),
            muted: Mutex::default(),
            asking: Mutex::default(),
        }
    }
}

/// What is known about a session, for listings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    /// The id.
    pub id: String,
    /// Whether it was stopped.
    pub stopped: bool,
    /// When it began (RFC 3339).
    pub started: String,
    /// Tools it has called.
    pub tools: Vec<String>,
}

impl SessionState {
    /// Note that `tool` ran in this session.
    pub fn note_tool(&self, tool: &str) {
        self.tools.lock().unwrap().insert(tool.to_string());
    }

    /// Whether the session was stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Start asking a human on behalf of `tool`; `None` while another of
    /// its requests in this session is still waiting.
    pub fn begin_asking(&self, tool: &str) -> Option<AskingGuard<'_>> {
        self.asking
            .lock()
            .unwrap()
            .insert(tool.to_string())
            .then(|| AskingGuard {
                state: self,
                tool: tool.to_string(),
            })
    }

    /// Note a human's refusal of `capability` for `tool`; returns how many
    /// there have been in this session.
    pub fn note_refusal(&self, tool: &str, capability: Capability) -> u32 {
        let mut refusals = self.refusals.lock().unwrap();
        let n = refusals.entry((tool.to_string(), capability)).or_insert(0);
        *n += 1;
        *n
    }

    /// Whether `tool`'s requests for `capability` are refused without
    /// asking, marking them so once `limit` refusals were reached.
    pub fn is_muted(&self, tool: &str, capability: Capability, limit: u32) -> bool {
        let key = (tool.to_string(), capability);
        let reached = self
            .refusals
            .lock()
            .unwrap()
            .get(&key)
            .is_some_and(|n| *n >= limit);
        if reached {
            self.muted.lock().unwrap().insert(key);
        }
        reached
    }

    /// Let `tool` ask for `capability` again; false if it was not muted.
    pub fn reallow(&self, tool: &str, capability: Capability) -> bool {
        let key = (tool.to_string(), capability);
        self.refusals.lock().unwrap().remove(&key);
        self.muted.lock().unwrap().remove(&key)
    }

    /// Count one more consent request; returns how many there have been.
    pub fn count_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Resolves once the session is stopped.
    pub async fn stopped(&self) {
        loop {
            let signal = self.stop_signal.notified();
            if self.is_stopped() {
                return;
            }
            signal.await;
        }
    }

    /// Held by a capability call from its Gate check until its outcome is
    /// journaled; a stop waits for every holder before it is acknowledged.
    pub fn effect_guard(&self) -> RwLockReadGuard<'_, ()> {
        self.effects.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// The single check every capability call passes before acting, the owner
/// of all tokens, and the register of sessions and their stop state.
#[derive(Debug, Default)]
pub struct Gate {
    tokens: Mutex<HashMap<TokenId, TokenRecord>>,
    sessions: Mutex<HashMap<SessionId, Arc<SessionState>>>,
    /// Set by a stop of everything: new sessions start stopped.
    halted: AtomicBool,
    next_id: AtomicU64,
    /// With a fleet: whether this host is in touch with the fleet's stops.
    fleet: std::sync::OnceLock<Arc<crate::fleet::FleetLink>>,
}

/// What a new token should cover.
#[derive(Debug, Clone)]
pub struct Mint {
    /// The session asking.
    pub session: SessionId,
    /// The tool asking.
    pub tool: String,
    /// The capability.
    pub capability: Capability,
    /// Approved targets.
    pub targets: Vec<String>,
    /// Approved payload.
    pub payload: Option<String>,
    /// Lifetime.
    pub ttl: Duration,
    /// Calls allowed.
    pub uses: u32,
    /// Who decided.
    pub decided_by: DecisionSource,
    /// The host's label for content published with it.
    pub stamp: Option<String>,
}

impl Gate {
    /// An empty Gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Make this Gate part of a fleet: from now on it lets effects through
    /// only while `link` says the host is in touch with the fleet's stops.
    /// Set once.
    pub fn join_fleet(&self, link: Arc<crate::fleet::FleetLink>) {
        let _ = self.fleet.set(link);
    }

    /// The fleet this Gate is part of.
    pub fn fleet(&self) -> Option<&Arc<crate::fleet::FleetLink>> {
        self.fleet.get()
    }

    /// Mint a token from a decision. Refused if the session was stopped.
    pub fn mint(&self, mint: Mint) -> Result<TokenId, Refusal> {
        if self.is_stopped(&mint.session) {
            return Err(Refusal::Stopped(mint.session));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let record = TokenRecord {
            id,
            session: mint.session,
            tool: mint.tool,
            capability: mint.capability,
            targets: mint.targets,
            payload: mint.payload,
            expires_at: SystemTime::now() + mint.ttl,
            uses_left: mint.uses,
            revoked: false,
            decided_by: mint.decided_by,
            stamp: mint.stamp,
        };
        self.tokens.lock().unwrap().insert(id, record);
        Ok(id)
    }

    /// A snapshot of a token.
    pub fn record(&self, id: TokenId) -> Option<TokenRecord> {
        self.tokens.lock().unwrap().get(&id).cloned()
    }

    /// Check that `token` allows `action` for `session`/`tool` right now, and
    /// consume one use. Nothing is consumed when the call is refused.
    pub fn authorize(
        &self,
        token: TokenId,
        session: &SessionId,
        tool: &str,
        action: Action<'_>,
    ) -> Result<TokenRecord, Refusal> {
        if self.is_stopped(session) {
            return Err(Refusal::Stopped(session.clone()));
        }
        if let Some(fleet) = self.fleet.get() {
            fleet.check().map_err(Refusal::FleetOutOfReach)?;
        }
        let mut tokens = self.tokens.lock().unwrap();
        let record = tokens.get_mut(&token).ok_or(Refusal::UnknownToken(token))?;
        if &record.session != session {
            return Err(Refusal::ForeignSession {
                token,
                caller: session.clone(),
            });
        }
        if record.tool != tool {
            return Err(Refusal::ForeignTool {
                token,
                owner: record.tool.clone(),
                caller: tool.to_string(),
            });
        }
        let capability = record.capability;
        if capability != action.capability {
            return Err(Refusal::WrongCapability {
                token,
                token_for: capability,
                wanted: action.capability,
            });
        }
        if record.revoked {
            return Err(Refusal::Revoked { token, capability });
        }
        let now = SystemTime::now();
        if now >= record.expires_at {
            let ago_ms = now
                .duration_since(record.expires_at)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            return Err(Refusal::Expired {
                token,
                capability,
                ago_ms,
            });
        }
        if record.uses_left == 0 {
            return Err(Refusal::UsedUp { token, capability });
        }
        let outside: Vec<String> = action
            .targets
            .iter()
            .filter(|t| !record.targets.contains(t))
            .cloned()
            .collect();
        if !outside.is_empty() {
            return Err(Refusal::OutsideApproval {
                token,
                capability,
                outside,
                covered: record.targets.clone(),
            });
        }
        if record.payload.as_deref() != action.payload {
            return Err(Refusal::PayloadMismatch { token, capability });
        }
        record.uses_left -= 1;
        Ok(record.clone())
    }

    /// Revoke one token; later calls with it are refused.
    pub fn revoke(&self, token: TokenId) {
        if let Some(record) = self.tokens.lock().unwrap().get_mut(&token) {
            record.revoked = true;
        }
    }

    /// The shared state of `session` (created on first use).
    pub fn session(&self, session: &SessionId) -> Arc<SessionState> {
        let mut sessions = self.sessions.lock().unwrap();
        sessions
            .entry(session.clone())
            .or_insert_with(|| {
                // After a stop of everything, a session created later (a new
                // MCP connection, a new envelope) starts stopped.
                let state = SessionState::default();
                if self.halted.load(Ordering::SeqCst) {
                    state.stopped.store(true, Ordering::SeqCst);
                }
                Arc::new(state)
            })
            .clone()
    }

    /// Stop everything from now on: sessions created later start stopped,
    /// until [`Gate::resume`]. Existing sessions are stopped by the caller.
    pub fn halt(&self) {
        // Under the sessions lock, so no session is created half before.
        let _sessions = self.sessions.lock().unwrap();
        self.halted.store(true, Ordering::SeqCst);
    }

    /// Let new sessions run again after [`Gate::halt`]; sessions that were
    /// stopped stay stopped. Returns whether the Gate was halted.
    pub fn resume(&self) -> bool {
        self.halted.swap(false, Ordering::SeqCst)
    }

    /// Whether everything was stopped and not resumed.
    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    /// Every session the Gate knows.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let sessions = self.sessions.lock().unwrap();
        let mut list: Vec<_> = sessions
            .iter()
            .map(|(id, s)| SessionInfo {
                id: id.0.clone(),
                stopped: s.is_stopped(),
                started: humantime::format_rfc3339_seconds(s.started).to_string(),
                tools: s.tools.lock().unwrap().iter().cloned().collect(),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Stop a session: refuse any new token or call, wake its pending consent
    /// requests, revoke its tokens, and wait until no effect of it is still
    /// inside a backend. When this returns, the stop is acknowledged: no
    /// further side effect of the session can happen. Returns how many live
    /// tokens were revoked. Stopping twice is harmless.
    pub fn stop_session(&self, session: &SessionId) -> usize {
        let state = self.session(session);
        state.stopped.store(true, Ordering::SeqCst);
        state.stop_signal.notify_waiters();
        let mut revoked = 0;
        for record in self.tokens.lock().unwrap().values_mut() {
            if &record.session == session && !record.revoked {
                record.revoked = true;
                revoked += 1;
            }
        }
        drop(state.effects.write().unwrap_or_else(|p| p.into_inner()));
        revoked
    }

    /// Requests refused without asking after too many refusals, per session.
    pub fn muted_requests(&self) -> Vec<MutedRequests> {
        let sessions = self.sessions.lock().unwrap();
        let mut out = Vec::new();
        for (id, state) in sessions.iter() {
            for (tool, capability) in state.muted.lock().unwrap().iter() {
                out.push(MutedRequests {
                    session: id.0.clone(),
                    tool: tool.clone(),
                    capability: capability.as_str().to_string(),
                });
            }
        }
        out.sort_by(|a, b| (&a.session, &a.tool).cmp(&(&b.session, &b.tool)));
        out
    }

    /// Let `tool` of `session` ask for `capability` again.
    pub fn reallow(&self, session: &SessionId, tool: &str, capability: Capability) -> bool {
        let state = self.sessions.lock().unwrap().get(session).cloned();
        state.is_some_and(|s| s.reallow(tool, capability))
    }

    /// Whether the Gate has seen `session` (a call or a stop named it).
    pub fn knows(&self, session: &SessionId) -> bool {
        self.sessions.lock().unwrap().contains_key(session)
    }

    /// Whether `session` was stopped.
    pub fn is_stopped(&self, session: &SessionId) -> bool {
        self.sessions
            .lock()
            .unwrap()
            .get(session)
            .is_some_and(|s| s.is_stopped())
    }

    /// How many tokens the Gate holds (live or not yet forgotten).
    pub fn token_count(&self) -> usize {
        self.tokens.lock().unwrap().len()
    }

    /// Forget a token whose guest handle was dropped.
    pub fn forget(&self, token: TokenId) {
        self.tokens.lock().unwrap().remove(&token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionId {
        SessionId("s1".into())
    }

    fn mint(
        gate: &Gate,
        capability: Capability,
        targets: &[&str],
        uses: u32,
        ttl_ms: u64,
    ) -> TokenId {
        gate.mint(Mint {
            session: session(),
            tool: "t".into(),
            capability,
            targets: targets.iter().map(|s| s.to_string()).collect(),
            payload: None,
            ttl: Duration::from_millis(ttl_ms),
            uses,
            decided_by: DecisionSource::StandingGrant,
            stamp: None,
        })
        .unwrap()
    }

    fn action<'a>(capability: Capability, targets: &'a [String]) -> Action<'a> {
        Action {
            capability,
            targets,
            payload: None,
        }
    }

    #[test]
    fn allows_within_approval_and_counts_uses() {
        let gate = Gate::new();
        let t = mint(
            &gate,
            crate::capability::mail::DELETE,
            &["INBOX/a", "INBOX/b"],
            2,
            60_000,
        );
        let a = vec!["INBOX/a".to_string()];
        assert!(
            gate.authorize(
                t,
                &session(),
                "t",
                action(crate::capability::mail::DELETE, &a)
            )
            .is_ok()
        );
        assert_eq!(gate.record(t).unwrap().uses_left, 1);
        assert!(
            gate.authorize(
                t,
                &session(),
                "t",
                action(crate::capability::mail::DELETE, &a)
            )
            .is_ok()
        );
        let err = gate
            .authorize(
                t,
                &session(),
                "t",
                action(crate::capability::mail::DELETE, &a),
            )
            .unwrap_err();
        assert!(matches!(err, Refusal::UsedUp { .. }), "{err}");
    }

    #[test]
    fn refusals_name_what_and_why() {
        let gate = Gate::new();
        let t = mint(
            &gate,
            crate::capability::mail::READ,
            &["INBOX/a"],
            5,
            60_000,
        );
        let ids = vec!["INBOX/a".to_string()];
        let err = gate
            .authorize(
                t,
                &session(),
                "t",
                action(crate::capability::mail::DELETE, &ids),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("token {t} is for mail.read, not mail.delete")
        );
        let other = vec!["INBOX/a".to_string(), "INBOX/z".to_string()];
        let err = gate
            .authorize(
                t,
                &session(),
                "t",
                action(crate::capability::mail::READ, &other),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("INBOX/z was not approved"),
            "{err}"
        );
        let err = gate
            .authorize(
                t,
                &SessionId("s2".into()),
                "t",
                action(crate::capability::mail::READ, &ids),
            )
            .unwrap_err();
        assert!(matches!(err, Refusal::ForeignSession { .. }));
        let err = gate
            .authorize(
                t,
                &session(),
                "u",
                action(crate::capability::mail::READ, &ids),
            )
            .unwrap_err();
        assert!(matches!(err, Refusal::ForeignTool { .. }));
        assert_eq!(
            gate.record(t).unwrap().uses_left,
            5,
            "refusals consume nothing"
        );
        gate.revoke(t);
        let err = gate
            .authorize(
                t,
                &session(),
                "t",
                action(crate::capability::mail::READ, &ids),
            )
            .unwrap_err();
        assert!(matches!(err, Refusal::Revoked { .. }));
    }

    #[test]
    fn expiry_and_stop() {
        let gate = Gate::new();
        let t = mint(&gate, crate::capability::mail::READ, &["INBOX/a"], 5, 1);
        std::thread::sleep(Duration::from_millis(5));
        let ids = vec!["INBOX/a".to_string()];
        let err = gate
            .authorize(
                t,
                &session(),
                "t",
                action(crate::capability::mail::READ, &ids),
            )
            .unwrap_err();
        assert!(matches!(err, Refusal::Expired { .. }), "{err}");
        let live = mint(
            &gate,
            crate::capability::mail::READ,
            &["INBOX/a"],
            5,
            60_000,
        );
        gate.stop_session(&session());
        assert!(
            gate.authorize(
                live,
                &session(),
                "t",
                action(crate::capability::mail::READ, &ids)
            )
            .is_err()
        );
        assert!(gate.record(live).unwrap().revoked);
        assert!(matches!(
            gate.mint(Mint {
                session: session(),
                tool: "t".into(),
                capability: crate::capability::mail::READ,
                targets: vec![],
                payload: None,
                ttl: Duration::from_secs(1),
                uses: 1,
                decided_by: DecisionSource::StandingGrant,
                stamp: None,
            }),
            Err(Refusal::Stopped(_))
        ));
    }

    #[test]
    fn payload_must_match_exactly() {
        let gate = Gate::new();
        let t = gate
            .mint(Mint {
                session: session(),
                tool: "t".into(),
                capability: crate::capability::mail::READ,
                targets: vec!["x".into()],
                payload: Some("hello".into()),
                ttl: Duration::from_secs(60),
                uses: 3,
                decided_by: DecisionSource::StandingGrant,
                stamp: None,
            })
            .unwrap();
        let ids = vec!["x".to_string()];
        let with = |p| Action {
            capability: crate::capability::mail::READ,
            targets: &ids,
            payload: Some(p),
        };
        assert!(gate.authorize(t, &session(), "t", with("hello ")).is_err());
        assert!(gate.authorize(t, &session(), "t", with("hello")).is_ok());
    }
}
