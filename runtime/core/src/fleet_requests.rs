//! One approvals page for the fleet: consent requests shared through the
//! fleet's database.
//!
//! A host of a fleet puts each consent request it asks a human about in
//! `agentcap_fleet_requests` (as it is shown: every text already through
//! the one rendering path) and waits there as one more channel
//! ([`FleetApprover`], next to its terminal, MCP client and own page). Any
//! host's approvals page lists the requests of the other hosts, with the
//! host's name; an answer given there is written to the row (the first
//! answer wins: only a waiting row can be answered) and announced, and the
//! asking host applies it through its own [`crate::consent::FirstAnswer`],
//! where a channel that answered first still wins; it writes back whether
//! the answer was applied, which the answering page reports.
//!
//! The rows may be written by anyone holding the database's credentials,
//! so the asking host trusts nothing in an answer but the choice: item
//! numbers are checked against its own request, and the answer carries a
//! digest of the request as the answering page showed it, which must match
//! what the asking host wrote (a row rewritten in between is refused).
//! Texts read back are clipped and rendered again before they are shown.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::oneshot;
use tokio_postgres::Client;

use crate::consent::{Answer, AnswerFuture, Approver, ConsentPrompt, Decision, DecisionFuture};
use crate::render::{block, one_line};

/// The fleet's requests table (created with the fleet's other tables).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agentcap_fleet_requests (
    id bigserial PRIMARY KEY,
    instance text NOT NULL CHECK (length(instance) <= 300),
    host text NOT NULL CHECK (length(host) <= 200),
    local_id bigint NOT NULL,
    shown text NOT NULL CHECK (length(shown) <= 300000),
    asked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    state text NOT NULL DEFAULT 'waiting' CHECK (state IN ('waiting', 'answered', 'withdrawn')),
    answer text CHECK (length(answer) <= 100000),
    answered_digest text CHECK (length(answered_digest) <= 100),
    answered_by text CHECK (length(answered_by) <= 300),
    answered_at timestamptz,
    applied boolean,
    applied_note text CHECK (length(applied_note) <= 1000),
    UNIQUE (instance, local_id)
);
CREATE INDEX IF NOT EXISTS agentcap_fleet_requests_waiting
    ON agentcap_fleet_requests (state, instance);
CREATE INDEX IF NOT EXISTS agentcap_fleet_requests_waiting_by_process
    ON agentcap_fleet_requests (instance, id) WHERE state = 'waiting';
CREATE TABLE IF NOT EXISTS agentcap_fleet_sessions (
    instance text NOT NULL CHECK (length(instance) <= 300),
    host text NOT NULL CHECK (length(host) <= 200),
    session text NOT NULL CHECK (length(session) <= 1000),
    started text NOT NULL CHECK (length(started) <= 100),
    tools text NOT NULL CHECK (length(tools) <= 20000),
    stopped boolean NOT NULL,
    PRIMARY KEY (instance, session)
);
";

/// Most sessions of one host shared with the pages.
const SESSIONS_SHARED_MAX: usize = 500;

/// The channel's name (a kind of approvals page for `approve_via`).
pub const CHANNEL: &str = "approvals page of the fleet";
/// Longest line shown, as on the local page.
const LINE_MAX: usize = 600;
/// Longest content shown, as on the local page.
const PAYLOAD_MAX: usize = 64 * 1024;
/// Most items shown of one request.
const ITEMS_MAX: usize = 500;
/// Most requests of other hosts listed on a page.
const LISTED_MAX: i64 = 100;
/// Most requests of one asking process listed on a page: one process that
/// asks without end cannot push the others' requests off the page.
const LISTED_PER_PROCESS: i64 = 10;
/// Most characters of a shared request (the table's own bound).
const SHOWN_MAX: usize = 300_000;
/// How long a page waits for the asking host to confirm an answer.
const CONFIRM_WITHIN: Duration = Duration::from_secs(5);

/// A consent request as every page shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SharedRequest {
    /// The tool asking.
    pub tool: String,
    /// On whose behalf.
    pub user: String,
    /// The session.
    pub session: String,
    /// The capability.
    pub capability: String,
    /// The host's one-line description.
    pub action: String,
    /// Each item as the host describes it.
    pub items: Vec<String>,
    /// The exact content, or what stands for it.
    pub payload: Option<String>,
    /// What `payload` is.
    pub payload_heading: String,
    /// How many invisible characters the content hides, in words.
    pub payload_warning: Option<String>,
    /// The tool's own claim.
    pub tool_claim: String,
}

impl SharedRequest {
    /// `prompt` as the approvals page shows it.
    pub fn of(prompt: &ConsentPrompt) -> SharedRequest {
        SharedRequest {
            tool: one_line(&prompt.tool, 200),
            user: one_line(&prompt.user, 200),
            session: one_line(&prompt.session.0, 200),
            capability: prompt.capability.to_string(),
            action: prompt.shown_action(),
            items: prompt.shown_items(),
            payload: prompt.shown_payload(PAGE),
            payload_heading: prompt.shown_payload_heading(),
            payload_warning: prompt.payload_warning(),
            tool_claim: prompt.shown_claim(),
        }
    }

    /// Every text rendered again and clipped (it was read from the
    /// database, which others can write).
    fn rendered_again(self) -> SharedRequest {
        let line = |s: &str| one_line(s, LINE_MAX);
        SharedRequest {
            tool: one_line(&self.tool, 200),
            user: one_line(&self.user, 200),
            session: one_line(&self.session, 200),
            capability: one_line(&self.capability, 100),
            action: line(&self.action),
            items: self.items.iter().take(ITEMS_MAX).map(|i| line(i)).collect(),
            payload: self.payload.map(|p| block(&p, PAYLOAD_MAX)),
            payload_heading: line(&self.payload_heading),
            payload_warning: self.payload_warning.map(|w| line(&w)),
            tool_claim: line(&self.tool_claim),
        }
    }
}

/// `request` as JSON within [`SHOWN_MAX`] characters, and how many items
/// it shows: items are left off from the end (and the action says how many
/// are shown) until it fits.
fn bounded_json(mut request: SharedRequest) -> (String, usize) {
    let total = request.items.len();
    let action = one_line(&request.action, LINE_MAX - 120);
    loop {
        let json = serde_json::to_string(&request).unwrap_or_else(|_| "{}".to_string());
        let fits = json.chars().count() <= SHOWN_MAX;
        if fits || (request.items.is_empty() && request.payload.is_none()) {
            return (json, request.items.len());
        }
        if request.items.is_empty() {
            request.payload = None;
            request.action = format!(
                "{action} (the content is too long for other hosts' pages: answer on the asking host)"
            );
            continue;
        }
        let keep = request.items.len() / 2;
        request.items.truncate(keep);
        request.action = format!(
            "{action} (only the first {keep} of {total} items are shown here: answer on the asking host to see them all)"
        );
    }
}

/// The local page's channel name: the content is shown as it would be
/// there (a post with its label).
const PAGE: &str = "approvals page";

/// A request of another host, waiting for an answer.
#[derive(Debug, Clone)]
pub struct FleetPending {
    /// Its row in the fleet's database.
    pub id: i64,
    /// The host where the tool waits (rendered).
    pub host: String,
    /// What it asks (rendered again here).
    pub request: SharedRequest,
    /// The digest of the row's request, to send back with an answer.
    pub digest: String,
    /// Seconds since it was asked.
    pub waiting_secs: u64,
}

/// A session of another host, as the pages show it (rendered).
#[derive(Debug, Clone, Serialize)]
pub struct FleetSession {
    /// The host it runs on.
    pub host: String,
    /// The session's id.
    pub id: String,
    /// When it began.
    pub started: String,
    /// Tools it has called.
    pub tools: Vec<String>,
    /// Whether it was stopped.
    pub stopped: bool,
}

/// A page's answer to a request of another host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FleetAnswer {
    /// Approve these items (numbers from 0).
    Approve(Vec<usize>),
    /// Decline, saying why.
    Decline(String),
}

/// What became of an answer given on a page.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerOutcome {
    /// The asking host applied it.
    Applied,
    /// Not applied: answered elsewhere first, withdrawn, or refused by the
    /// asking host (the reason).
    NotApplied(String),
    /// The asking host did not confirm within the wait (it may still).
    Unconfirmed,
}

#[derive(Clone)]
enum Op {
    Publish { local_id: i64, shown: String },
    Withdraw { local_id: i64 },
}

/// Writes not yet made, in order, and the one being made.
#[derive(Default)]
struct Queue {
    ops: std::collections::VecDeque<Op>,
    /// The front op is being written (it stays queued until written).
    writing: bool,
}

struct Asking {
    shown: String,
    items: usize,
    answer: oneshot::Sender<(Decision, String)>,
}

/// A host's side of the shared requests (part of its fleet link).
#[derive(Default)]
pub struct FleetRequests {
    next_id: AtomicI64,
    /// Writes not yet made, in order.
    queue: Mutex<Queue>,
    /// This host's requests waiting for an answer, by local id.
    asking: Mutex<HashMap<i64, Asking>>,
    /// Whether a page here lists the other hosts' requests.
    listing: AtomicBool,
    /// The other hosts' waiting requests, as last read.
    listed: Mutex<Vec<FleetPending>>,
    /// Wakes the member task when there is something to write.
    pub(crate) queued: tokio::sync::Notify,
    /// The other hosts' sessions, as last read.
    listed_sessions: Mutex<Vec<FleetSession>>,
    /// What this host's sessions were when last shared.
    shared_sessions: Mutex<Option<String>>,
}

impl std::fmt::Debug for FleetRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetRequests")
            .field("asking", &lock(&self.asking).len())
            .field("listed", &lock(&self.listed).len())
            .finish()
    }
}

fn digest(shown: &str) -> String {
    hex::encode(sha2::Sha256::digest(shown.as_bytes()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FleetRequests {
    /// List the other hosts' requests from now on (a page is shown here).
    pub fn start_listing(&self) {
        self.listing.store(true, Ordering::SeqCst);
        self.queued.notify_one();
    }

    /// The other hosts' waiting requests, oldest first (empty until a page
    /// asked for them with [`FleetRequests::start_listing`]).
    pub fn listed(&self) -> Vec<FleetPending> {
        lock(&self.listed).clone()
    }

    /// The other hosts' sessions (empty until a page asked for them).
    pub fn listed_sessions(&self) -> Vec<FleetSession> {
        lock(&self.listed_sessions).clone()
    }

    /// Share this host's sessions with the pages when they changed.
    pub(crate) async fn share_sessions(
        &self,
        client: &mut Client,
        instance: &str,
        host: &str,
        sessions: Vec<crate::consent::SessionInfo>,
    ) -> Result<(), String> {
        let shown: Vec<(String, String, String, bool)> = sessions
            .into_iter()
            .take(SESSIONS_SHARED_MAX)
            .map(|s| {
                let tools = serde_json::to_string(&s.tools).unwrap_or_default();
                (
                    s.id.chars().take(1000).collect(),
                    s.started.chars().take(100).collect(),
                    tools.chars().take(20000).collect(),
                    s.stopped,
                )
            })
            .collect();
        let now = serde_json::to_string(&shown).unwrap_or_default();
        if lock(&self.shared_sessions).as_deref() == Some(now.as_str()) {
            return Ok(());
        }
        let describe = crate::fleet::describe;
        let tx = client.transaction().await.map_err(|e| describe(&e))?;
        tx.execute(
            "DELETE FROM agentcap_fleet_sessions WHERE instance = $1",
            &[&instance],
        )
        .await
        .map_err(|e| describe(&e))?;
        let insert = tx
            .prepare(
                "INSERT INTO agentcap_fleet_sessions (instance, host, session, started, tools, stopped) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await
            .map_err(|e| describe(&e))?;
        for (id, started, tools, stopped) in &shown {
            tx.execute(&insert, &[&instance, &host, id, started, tools, stopped])
                .await
                .map_err(|e| describe(&e))?;
        }
        tx.commit().await.map_err(|e| describe(&e))?;
        *lock(&self.shared_sessions) = Some(now);
        Ok(())
    }

    fn ask(&self, prompt: &ConsentPrompt) -> (i64, oneshot::Receiver<(Decision, String)>) {
        let local_id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        let (shown, items_shown) = bounded_json(SharedRequest::of(prompt).rendered_again());
        let (answer, answered) = oneshot::channel();
        lock(&self.asking).insert(
            local_id,
            Asking {
                shown: shown.clone(),
                // An answer may approve only items the pages were shown.
                items: items_shown.min(prompt.items.len()),
                answer,
            },
        );
        lock(&self.queue)
            .ops
            .push_back(Op::Publish { local_id, shown });
        self.queued.notify_one();
        (local_id, answered)
    }

    fn withdraw(&self, local_id: i64) {
        if lock(&self.asking).remove(&local_id).is_none() {
            return;
        }
        let mut queue = lock(&self.queue);
        // Not written, nor being written: nothing to withdraw.
        let queued = queue
            .ops
            .iter()
            .position(|op| matches!(op, Op::Publish { local_id: id, .. } if *id == local_id));
        match queued {
            Some(at) if at > 0 || !queue.writing => {
                queue.ops.remove(at);
            }
            _ => queue.ops.push_back(Op::Withdraw { local_id }),
        }
        drop(queue);
        self.queued.notify_one();
    }

    /// One round with the database (by the member task): write what is
    /// queued, apply answers to this host's requests, and read the other
    /// hosts' requests if a page lists them.
    pub(crate) async fn sync(
        &self,
        client: &Client,
        instance: &str,
        host: &str,
    ) -> Result<(), String> {
        self.write_queued(client, instance, host).await?;
        if !lock(&self.asking).is_empty() {
            self.apply_answers(client, instance).await?;
        }
        if self.listing.load(Ordering::SeqCst) {
            self.read_listed(client, instance).await?;
        }
        Ok(())
    }

    async fn write_queued(
        &self,
        client: &Client,
        instance: &str,
        host: &str,
    ) -> Result<(), String> {
        let mut wrote = false;
        loop {
            let op = {
                let mut queue = lock(&self.queue);
                let Some(op) = queue.ops.front().cloned() else {
                    break;
                };
                queue.writing = true;
                op
            };
            let written =
                match &op {
                    Op::Publish { local_id, shown } => client
                        .execute(
                            "INSERT INTO agentcap_fleet_requests (instance, host, local_id, shown) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (instance, local_id) DO NOTHING",
                            &[&instance, &host, local_id, shown],
                        )
                        .await,
                    Op::Withdraw { local_id } => {
                        client
                            .execute(
                                "UPDATE agentcap_fleet_requests SET state = 'withdrawn' \
                             WHERE instance = $1 AND local_id = $2 AND state = 'waiting'",
                                &[&instance, local_id],
                            )
                            .await
                    }
                };
            if let Err(e) = written {
                let mut queue = lock(&self.queue);
                queue.writing = false;
                // Refused for what the row holds: a data exception (class
                // 22), a constraint (23), a trigger's exception (P0001).
                // Anything else (the database away, restarting, read-only
                // after a failover, a deadlock) is written on a later round.
                let refused_row = e.as_db_error().is_some_and(|d| {
                    let code = d.code().code();
                    code.starts_with("22") || code.starts_with("23") || code == "P0001"
                });
                if !refused_row {
                    return Err(crate::fleet::describe(&e));
                }
                // The database refused this row (a constraint, a trigger):
                // the request stays with this host's own channels, and the
                // rounds that keep effects allowed go on.
                queue.ops.pop_front();
                drop(queue);
                if let Op::Publish { local_id, .. } = &op {
                    tracing::warn!(
                        "consent request {local_id} could not be shared with the fleet's pages: {}",
                        crate::fleet::describe(&e)
                    );
                }
                continue;
            }
            let mut queue = lock(&self.queue);
            queue.ops.pop_front();
            queue.writing = false;
            drop(queue);
            wrote = true;
        }
        if wrote {
            client
                .execute(
                    "SELECT pg_notify($1, 'requests')",
                    &[&crate::fleet::CHANNEL],
                )
                .await
                .map_err(|e| crate::fleet::describe(&e))?;
        }
        Ok(())
    }

    async fn apply_answers(&self, client: &Client, instance: &str) -> Result<(), String> {
        let rows = client
            .query(
                "SELECT id, local_id, left(answer, 100000), left(answered_digest, 100), \
                 left(answered_by, 300) FROM agentcap_fleet_requests \
                 WHERE instance = $1 AND state = 'answered' AND applied IS NULL",
                &[&instance],
            )
            .await
            .map_err(|e| crate::fleet::describe(&e))?;
        for row in rows {
            let id: i64 = row.get(0);
            let local_id: i64 = row.get(1);
            let answer: Option<String> = row.get(2);
            let answered_digest: Option<String> = row.get(3);
            let by = one_line(row.get::<_, Option<&str>>(4).unwrap_or("?"), 200);
            let asking = lock(&self.asking).remove(&local_id);
            let (applied, note) = match asking {
                None => (
                    false,
                    "no longer waiting there (answered on another channel first, or withdrawn)"
                        .to_string(),
                ),
                Some(asking) => {
                    match checked(&asking, answer.as_deref(), answered_digest.as_deref(), &by) {
                        Err(why) => {
                            // The request stays open for an answer that holds.
                            let _ = asking.answer.send((Decision::Unavailable(why.clone()), by));
                            (false, why)
                        }
                        Ok(decision) => {
                            let sent = asking
                                .answer
                                .send((decision, format!("approvals page on fleet host {by}")))
                                .is_ok();
                            if sent {
                                (true, String::new())
                            } else {
                                (false, "answered on another channel first".to_string())
                            }
                        }
                    }
                }
            };
            client
                .execute(
                    "UPDATE agentcap_fleet_requests SET applied = $2, applied_note = $3 WHERE id = $1",
                    &[&id, &applied, &note],
                )
                .await
                .map_err(|e| crate::fleet::describe(&e))?;
        }
        Ok(())
    }

    async fn read_listed(&self, client: &Client, instance: &str) -> Result<(), String> {
        // Requests of hosts still in touch with the fleet: a host that
        // ended or died takes its requests with it.
        let rows = client
            .query(
                "SELECT r.id, left(r.host, 200), left(r.shown, 300000), \
                 extract(epoch FROM clock_timestamp() - r.asked_at)::float8 \
                 FROM agentcap_fleet_hosts h CROSS JOIN LATERAL \
                 (SELECT id, host, shown, asked_at FROM agentcap_fleet_requests \
                  WHERE instance = h.instance AND state = 'waiting' ORDER BY id LIMIT $3) r \
                 WHERE h.instance <> $1 \
                 AND h.last_seen > clock_timestamp() - make_interval(secs => h.out_of_reach_after_ms / 1000.0) \
                 ORDER BY r.id LIMIT $2",
                &[&instance, &LISTED_MAX, &LISTED_PER_PROCESS],
            )
            .await
            .map_err(|e| crate::fleet::describe(&e))?;
        let listed = rows
            .iter()
            .map(|row| {
                let shown: &str = row.get(2);
                let request = serde_json::from_str::<SharedRequest>(shown)
                    .map(SharedRequest::rendered_again)
                    .unwrap_or_else(|_| SharedRequest {
                        tool: "?".into(),
                        user: "?".into(),
                        session: "?".into(),
                        capability: "?".into(),
                        action: "an unreadable request (it cannot be approved)".into(),
                        items: Vec::new(),
                        payload: None,
                        payload_heading: "exact content".into(),
                        payload_warning: None,
                        tool_claim: String::new(),
                    });
                FleetPending {
                    id: row.get(0),
                    host: one_line(row.get(1), 200),
                    request,
                    digest: digest(shown),
                    waiting_secs: row.get::<_, f64>(3).max(0.0) as u64,
                }
            })
            .collect();
        *lock(&self.listed) = listed;
        let rows = client
            .query(
                "SELECT left(s.host, 200), left(s.session, 1000), left(s.started, 100), left(s.tools, 20000), s.stopped \
                 FROM agentcap_fleet_sessions s JOIN agentcap_fleet_hosts h ON h.instance = s.instance \
                 WHERE s.instance <> $1 \
                 AND h.last_seen > clock_timestamp() - make_interval(secs => h.out_of_reach_after_ms / 1000.0) \
                 ORDER BY s.host, s.session LIMIT 1000",
                &[&instance],
            )
            .await
            .map_err(|e| crate::fleet::describe(&e))?;
        *lock(&self.listed_sessions) = rows
            .iter()
            .map(|row| FleetSession {
                host: one_line(row.get(0), 200),
                id: one_line(row.get(1), 200),
                started: one_line(row.get(2), 100),
                tools: serde_json::from_str::<Vec<String>>(row.get(3))
                    .unwrap_or_default()
                    .iter()
                    .take(50)
                    .map(|t| one_line(t, 200))
                    .collect(),
                stopped: row.get(4),
            })
            .collect();
        Ok(())
    }
}

/// The decision an answer holds, if it holds for `asking`.
fn checked(
    asking: &Asking,
    answer: Option<&str>,
    answered_digest: Option<&str>,
    by: &str,
) -> Result<Decision, String> {
    if answered_digest != Some(digest(&asking.shown).as_str()) {
        return Err(format!(
            "an answer from fleet host {by} was for a request that differs from the one asked here (rewritten in the fleet's database?); it was not applied"
        ));
    }
    match answer.and_then(|a| serde_json::from_str::<FleetAnswer>(a).ok()) {
        None => Err(format!(
            "an unreadable answer from fleet host {by} was not applied"
        )),
        Some(FleetAnswer::Decline(why)) => Ok(Decision::Decline(format!(
            "{} (on fleet host {by})",
            one_line(&why, 300)
        ))),
        Some(FleetAnswer::Approve(mut items)) => {
            items.retain(|i| *i < asking.items);
            items.sort_unstable();
            items.dedup();
            if items.is_empty() {
                Ok(Decision::Decline(format!(
                    "nothing was selected on the approvals page of fleet host {by}"
                )))
            } else {
                Ok(Decision::Approve(items))
            }
        }
    }
}

/// Answer request `id` (of another host) as `by`, for what the page showed
/// (`shown_digest`), over a connection of its own; waits a few seconds for
/// the asking host to confirm.
pub async fn answer(
    settings: &crate::fleet::FleetSettings,
    base_dir: &std::path::Path,
    id: i64,
    shown_digest: &str,
    answer: &FleetAnswer,
    by: &str,
) -> Result<AnswerOutcome, String> {
    let (client, _connection) = crate::fleet::connect(settings, base_dir).await?;
    let describe = crate::fleet::describe;
    let text = serde_json::to_string(answer).map_err(|e| e.to_string())?;
    let written = client
        .execute(
            "UPDATE agentcap_fleet_requests SET state = 'answered', answer = $2, \
             answered_digest = $3, answered_by = $4, answered_at = clock_timestamp() \
             WHERE id = $1 AND state = 'waiting'",
            &[
                &id,
                &text,
                &shown_digest,
                &by.chars().take(300).collect::<String>(),
            ],
        )
        .await
        .map_err(|e| describe(&e))?;
    if written == 0 {
        return Ok(AnswerOutcome::NotApplied(
            "that request is no longer waiting (answered elsewhere, withdrawn, or its host left)"
                .into(),
        ));
    }
    client
        .execute("SELECT pg_notify($1, 'answer')", &[&crate::fleet::CHANNEL])
        .await
        .map_err(|e| describe(&e))?;
    let deadline = tokio::time::Instant::now() + CONFIRM_WITHIN;
    loop {
        let row = client
            .query_one(
                "SELECT applied, left(applied_note, 1000) FROM agentcap_fleet_requests WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(|e| describe(&e))?;
        match row.get::<_, Option<bool>>(0) {
            Some(true) => return Ok(AnswerOutcome::Applied),
            Some(false) => {
                return Ok(AnswerOutcome::NotApplied(one_line(
                    row.get::<_, Option<&str>>(1).unwrap_or(""),
                    1000,
                )));
            }
            None if tokio::time::Instant::now() >= deadline => {
                return Ok(AnswerOutcome::Unconfirmed);
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The fleet as a consent channel: the request waits on every host's
/// approvals page.
pub struct FleetApprover {
    link: std::sync::Arc<crate::fleet::FleetLink>,
}

impl FleetApprover {
    /// The channel for the fleet of `link`.
    pub fn new(link: std::sync::Arc<crate::fleet::FleetLink>) -> FleetApprover {
        FleetApprover { link }
    }
}

/// Withdraws a request from the fleet when its asker stops waiting.
struct Withdraw<'a> {
    requests: &'a FleetRequests,
    local_id: i64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.requests.withdraw(self.local_id);
    }
}

impl Approver for FleetApprover {
    fn channel(&self) -> &str {
        CHANNEL
    }

    fn decide<'a>(&'a self, prompt: &'a ConsentPrompt) -> DecisionFuture<'a> {
        Box::pin(async move { self.answer(prompt).await.decision })
    }

    fn answer<'a>(&'a self, prompt: &'a ConsentPrompt) -> AnswerFuture<'a> {
        Box::pin(async move {
            let requests = self.link.requests();
            loop {
                let (local_id, answered) = requests.ask(prompt);
                let _withdraw = Withdraw { requests, local_id };
                match answered.await {
                    Ok((Decision::Unavailable(why), _)) => {
                        // An answer that did not hold: ask again.
                        tracing::warn!("{why}");
                        continue;
                    }
                    Ok((decision, channel)) => return Answer { decision, channel },
                    Err(_) => {
                        return Answer {
                            decision: Decision::Unavailable("the fleet's request ended".into()),
                            channel: CHANNEL.into(),
                        };
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_too_large_for_the_table_is_shared_with_fewer_items() {
        // Hostile mail: 1000 long subjects (500 items of 600 characters
        // after clipping: over the table's bound).
        let request = SharedRequest {
            tool: "triage".into(),
            user: "alice".into(),
            session: "s".into(),
            capability: "mail.delete".into(),
            action: "delete 250 messages".into(),
            items: (0..1000)
                .map(|i| format!("{i}: {}", "x".repeat(2000)))
                .collect(),
            payload: None,
            payload_heading: "exact content".into(),
            payload_warning: None,
            tool_claim: String::new(),
        }
        .rendered_again();
        let (json, shown) = bounded_json(request);
        assert!(json.chars().count() <= SHOWN_MAX, "{}", json.len());
        let shared: SharedRequest = serde_json::from_str(&json).unwrap();
        assert!(!shared.items.is_empty() && shared.items.len() < 500);
        assert_eq!(shown, shared.items.len());
        assert!(shared.items[0].starts_with("0: "));
        assert!(
            shared.action.contains(&format!(
                "only the first {} of 500 items",
                shared.items.len()
            )),
            "{}",
            shared.action
        );
    }
}
