//! The host side of a running tool: the store's state, the implementations
//! of the `consent` and capability interfaces, and the linker that links only
//! what the policy grants.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmtime::component::{HasData, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Engine, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capability::{Backends, Request, registry};
use crate::consent::{
    Action, Answer, Capability, ConsentPrompt, Decision, DecisionSource, Gate, Mint, SessionId,
    SessionState, SharedApprover, TokenHandle, TokenId, TokenRecord,
};
use crate::journal::{Entry, Journal, Kind};
use crate::output::CapturedOutput;
use crate::policy::{ConsentMode, ToolPolicy};
use crate::session::SessionStopped;

/// Generated host bindings of `tools-wit`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../../tools-wit/wit",
        world: "agentcap:tools/host",
        imports: {
            "agentcap:tools/consent.request": async | trappable,
            default: trappable,
        },
        with: {
            "agentcap:tools/consent.token": crate::consent::TokenHandle,
        },
    });
}

use bindings::agentcap::tools::consent as wit_consent;

/// Largest number of targets in one intent or call.
pub const MAX_TARGETS: usize = 1000;
/// Longest single target.
pub const MAX_TARGET_LEN: usize = 1024;
/// Longest payload.
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;
/// Longest tool summary.
pub const MAX_SUMMARY_LEN: usize = 4096;
/// Most bytes of guest stdout/stderr kept per call.
pub const MAX_CAPTURED_OUTPUT: usize = 64 * 1024;
/// Most live resource handles (tokens, streams) a guest may hold.
pub const MAX_HANDLES: usize = 10_000;
/// Most tokens one call may obtain.
pub const MAX_TOKENS_PER_CALL: usize = 1000;
/// Most consent requests one call may make, refused ones included; the
/// call ends (trapped, journaled) at the next one.
pub const MAX_REQUESTS_PER_CALL: u32 = 2000;
/// Most consent requests one session may make; past it every request is
/// refused without being journaled again (one record says so).
pub const MAX_REQUESTS_PER_SESSION: u64 = 10_000;
/// Most refused capability calls one call may make; the call ends (trapped,
/// journaled) at the next one.
pub const MAX_REFUSALS_PER_CALL: u32 = 1000;
/// Longest refusal message kept in the journal.
const MAX_JOURNALED_MESSAGE: usize = 2048;

/// What a call runs with: who is asking, for whom, and what backs it.
pub struct CallContext {
    /// The session.
    pub session: SessionId,
    /// The tool's name in the policy.
    pub tool: String,
    /// The tool's grants and limits.
    pub grants: Arc<ToolPolicy>,
    /// On whose behalf.
    pub user: String,
    /// The Gate.
    pub gate: Arc<Gate>,
    /// Who answers `ask` requests.
    pub approver: SharedApprover,
    /// How long a human has to answer.
    pub consent_timeout: Duration,
    /// The configured backends of the capabilities, by interface.
    pub backends: Arc<Backends>,
    /// The audit journal.
    pub journal: Arc<Journal>,
    /// The tool's component digest.
    pub tool_digest: String,
    /// The session's stop state.
    pub session_state: Arc<SessionState>,
    /// Time this call spent waiting for a human, in microseconds: the only
    /// time excused from its wall-time budget.
    pub human_wait_us: std::sync::atomic::AtomicU64,
    /// The call's execution slot of its tool, given back while the call
    /// waits for a human.
    pub slot: ExecutionSlot,
    /// Refusals journaled for this call (bounded by
    /// [`MAX_REFUSALS_PER_CALL`]).
    pub refusals: std::sync::atomic::AtomicU32,
    /// Cancels this call alone (an MCP `notifications/cancelled`): the guest
    /// traps at the next epoch tick and a pending consent request is
    /// answered `stopped`. Effects already past the Gate finish.
    pub cancel: CancellationToken,
}

/// One of a tool's `max_concurrent_calls` slots, held by a running call. A
/// call parked on a consent request gives its slot back until the person
/// answers, so calls waiting for people (or abandoned by their client)
/// cannot keep every other call of the tool out.
pub struct ExecutionSlot {
    slots: Arc<tokio::sync::Semaphore>,
    held: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl ExecutionSlot {
    /// A slot of `slots`, already acquired as `held`.
    pub fn new(
        slots: Arc<tokio::sync::Semaphore>,
        held: tokio::sync::OwnedSemaphorePermit,
    ) -> ExecutionSlot {
        ExecutionSlot {
            slots,
            held: std::sync::Mutex::new(Some(held)),
        }
    }

    /// Give the slot back while waiting.
    fn release(&self) {
        self.held.lock().unwrap().take();
    }

    /// Take a slot again (waiting for one if every slot is busy).
    async fn reacquire(&self) {
        if self.held.lock().unwrap().is_some() {
            return;
        }
        if let Ok(permit) = self.slots.clone().acquire_owned().await {
            *self.held.lock().unwrap() = Some(permit);
        }
    }
}

/// The state of one store (one call of one tool).
pub struct HostState {
    pub(crate) call: Arc<CallContext>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    /// When the call's wall-time budget runs out; pushed back by time spent
    /// waiting for a human.
    pub(crate) deadline: Instant,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
    /// Tokens minted during this call; they die with the store.
    minted: Vec<TokenId>,
    /// Consent requests made during this call.
    requests: u32,
    /// Each linked plug-in's own per-call state, by interface.
    plugin_states: Vec<(&'static str, Box<dyn std::any::Any + Send>)>,
}

impl Drop for HostState {
    fn drop(&mut self) {
        // A token's handle cannot outlive its store, so neither does the token.
        for id in self.minted.drain(..) {
            self.call.gate.forget(id);
        }
    }
}

impl HostState {
    /// Fresh state: no env, no args, no preopens, no network (no TCP, UDP
    /// or name lookup, and the default address check refuses every
    /// address), stdin empty, stdout/stderr captured.
    pub fn new(call: Arc<CallContext>, limits: StoreLimits, wall_time: Duration) -> HostState {
        let stdout = CapturedOutput::new(MAX_CAPTURED_OUTPUT);
        let stderr = CapturedOutput::new(MAX_CAPTURED_OUTPUT);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_blocking_current_thread(false)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let mut table = ResourceTable::with_capacity(16);
        table.set_max_capacity(MAX_HANDLES);
        let plugin_states = registry::plugins()
            .iter()
            .filter(|p| call.grants.links_interface(p.interface()))
            .filter_map(|p| Some((p.interface(), p.new_store_state(&call)?)))
            .collect();
        HostState {
            call,
            wasi,
            table,
            limits,
            deadline: Instant::now() + wall_time,
            stdout,
            stderr,
            minted: Vec::new(),
            requests: 0,
            plugin_states,
        }
    }

    /// The resource table and plug-in `interface`'s per-call state (a `T`),
    /// borrowed together (a standard interface's view needs both).
    pub fn plugin_state<T: std::any::Any>(
        &mut self,
        interface: &str,
    ) -> Option<(&mut ResourceTable, &mut T)> {
        let state = self
            .plugin_states
            .iter_mut()
            .find(|(i, _)| *i == interface)?
            .1
            .downcast_mut::<T>()?;
        Some((&mut self.table, state))
    }

    fn token_id(&self, token: &Resource<TokenHandle>) -> wasmtime::Result<TokenId> {
        Ok(self.table.get(token)?.id)
    }

    /// What `token` covers now (`None` once it is gone from the Gate); a
    /// handle the store does not hold traps.
    pub(crate) fn token_record(
        &self,
        token: &Resource<TokenHandle>,
    ) -> wasmtime::Result<Option<TokenRecord>> {
        Ok(self.call.gate.record(self.token_id(token)?))
    }

    /// The one path of every capability call: pass the Gate with `token`,
    /// journal the call (durably, before the effect), run `effect`, journal
    /// its outcome. A refusal, or a journal that cannot be written, means the
    /// effect never runs; `refused` turns the reason into the capability's
    /// error.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn through_gate<T, E>(
        &self,
        token: &Resource<TokenHandle>,
        capability: Capability,
        targets: &[String],
        payload: Option<&str>,
        refused: impl FnOnce(String) -> E,
        effect: impl FnOnce(&CallContext, &TokenRecord) -> Result<T, E>,
        describe: impl FnOnce(&Result<T, E>) -> String,
    ) -> wasmtime::Result<Result<T, E>> {
        let id = self.token_id(token)?;
        let call = &self.call;
        // What a call names is bounded like what an intent names, before
        // anything is journaled.
        if targets.len() > MAX_TARGETS || targets.iter().any(|t| t.len() > MAX_TARGET_LEN) {
            let message = format!(
                "{capability}: a call names at most {MAX_TARGETS} targets of at most {MAX_TARGET_LEN} bytes"
            );
            call.journal_refusal(capability, targets, None, Some(id), &message);
            call.end_if_over_refusal_budget()?;
            return Ok(Err(refused(message)));
        }
        // Held until the outcome is journaled: a stop waits for it, and once
        // a stop has set the flag, the Gate below refuses.
        let _in_flight = call.session_state.effect_guard();
        let (record, call_seq) = match call.authorize_and_journal(id, capability, targets, payload)
        {
            Ok(passed) => passed,
            Err(message) => {
                // A stopped session's guest gets no further control: the
                // refusal is journaled, and the call ends here.
                call.trap_if_ended()?;
                call.end_if_over_refusal_budget()?;
                return Ok(Err(refused(message)));
            }
        };
        let result = effect(call, &record);
        call.record_outcome(call_seq, capability, targets, describe(&result));
        Ok(result)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A consent request's record, written with its decision unless a human
/// must see its number first.
struct UnjournaledRequest {
    entry: Option<Entry>,
    seq: Option<i64>,
}

impl UnjournaledRequest {
    /// Journal the request now (once); its number.
    fn journal(&mut self, journal: &crate::journal::Journal) -> Result<i64, Refused> {
        if let Some(seq) = self.seq {
            return Ok(seq);
        }
        let Some(entry) = self.entry.take() else {
            return Err(denial(
                wit_consent::DenialReason::NotGranted,
                "the consent request was not journaled, so nothing can be approved",
            )
            .into());
        };
        let seq = journal
            .append(entry)
            .map_err(|e| Refused::from(unjournaled(e)))?;
        self.seq = Some(seq);
        Ok(seq)
    }
}

/// The refusal when a consent's records cannot be journaled.
fn unjournaled(e: crate::journal::JournalError) -> wit_consent::Denial {
    denial(
        wit_consent::DenialReason::NotGranted,
        format!("the journal cannot be written, so nothing can be approved: {e}"),
    )
}

/// How a decision and a token refer to their request.
#[derive(Clone, Copy)]
enum Answering {
    /// The request is journaled already.
    Seq(i64),
    /// The request is the batch's entry at this index.
    Entry(usize),
}

impl Answering {
    fn apply(self, entry: Entry) -> Entry {
        match self {
            Answering::Seq(seq) => entry.answers(seq),
            Answering::Entry(index) => entry.answers_entry(index),
        }
    }
}

fn denial(reason: wit_consent::DenialReason, message: impl Into<String>) -> wit_consent::Denial {
    wit_consent::Denial {
        reason,
        message: message.into(),
    }
}

fn check_intent_size(intent: &wit_consent::Intent) -> Result<(), wit_consent::Denial> {
    use wit_consent::DenialReason::Invalid;
    if intent.targets.len() > MAX_TARGETS {
        return Err(denial(
            Invalid,
            format!(
                "an intent may name at most {MAX_TARGETS} targets, this one names {}",
                intent.targets.len()
            ),
        ));
    }
    if let Some(t) = intent.targets.iter().find(|t| t.len() > MAX_TARGET_LEN) {
        return Err(denial(
            Invalid,
            format!(
                "a target is {} bytes long; the limit is {MAX_TARGET_LEN}",
                t.len()
            ),
        ));
    }
    if intent
        .payload
        .as_ref()
        .is_some_and(|p| p.len() > MAX_PAYLOAD_LEN)
    {
        return Err(denial(
            Invalid,
            format!("the payload exceeds {MAX_PAYLOAD_LEN} bytes"),
        ));
    }
    if intent.summary.len() > MAX_SUMMARY_LEN {
        return Err(denial(
            Invalid,
            format!("the summary exceeds {MAX_SUMMARY_LEN} bytes"),
        ));
    }
    if intent.targets.is_empty() {
        return Err(denial(
            Invalid,
            "an intent must name what it touches (no targets given)",
        ));
    }
    Ok(())
}

/// `text` cut to at most `max` bytes (on a character boundary).
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// At most 20 targets of at most 200 bytes each, for the journal (the
/// record also says how many there were): what a guest can make the
/// journal hold per request stays small.
fn bounded(targets: &[String]) -> Vec<String> {
    targets.iter().take(20).map(|t| clip(t, 200)).collect()
}

/// A decided, approved request, before its token is minted.
/// A refused consent request, and who refused it when a human did.
struct Refused {
    denial: wit_consent::Denial,
    decided_by: Option<String>,
}

impl From<wit_consent::Denial> for Refused {
    fn from(denial: wit_consent::Denial) -> Refused {
        Refused {
            denial,
            decided_by: None,
        }
    }
}

/// Adds the time since `since` to `total_us` when dropped: the time a
/// consent request spent in front of a human, however the wait ended.
struct WaitClock<'a> {
    since: Instant,
    total_us: &'a std::sync::atomic::AtomicU64,
}

impl Drop for WaitClock<'_> {
    fn drop(&mut self) {
        let us = u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.total_us
            .fetch_add(us, std::sync::atomic::Ordering::SeqCst);
    }
}

struct Decided {
    capability: Capability,
    requested: usize,
    approved: Vec<String>,
    decided_by: DecisionSource,
    ttl: Duration,
    uses: u32,
    payload: Option<String>,
    stamp: Option<String>,
}

/// The capability field of a journal record: a known capability's name, or
/// `unknown` with the tool's text escaped and bounded (it is the tool's
/// choice, so it never reaches the journal as written).
fn journaled_capability(requested: &str) -> String {
    match Capability::parse(requested) {
        Some(c) => c.as_str().to_string(),
        None => format!("unknown({})", crate::render::one_line(requested, 60)),
    }
}

fn reason_name(reason: wit_consent::DenialReason) -> &'static str {
    use wit_consent::DenialReason::*;
    match reason {
        Declined => "declined",
        TimedOut => "timed-out",
        Stopped => "stopped",
        NotGranted => "not-granted",
        Invalid => "invalid",
    }
}

impl CallContext {
    /// The opened backend of capability interface `interface`, if the
    /// policy configures it and it is a `T`.
    pub fn backend<T: std::any::Any>(&self, interface: &str) -> Option<&T> {
        self.backends.get(interface)?.opened.get::<T>()
    }

    /// The opened backend, shared (for effects that outlive the call).
    pub fn backend_arc<T: std::any::Any + Send + Sync>(&self, interface: &str) -> Option<Arc<T>> {
        self.backends.get(interface)?.opened.get_arc::<T>()
    }

    /// The Gate step of the one capability path, for effects that do not run
    /// inside the store (an http exchange): under the session's effect
    /// guard, check token `id` for exactly this action, then journal the
    /// call durably. Returns the call record's number for the outcome; a
    /// refusal is journaled and returned as its message.
    pub(crate) fn pass_gate(
        &self,
        id: TokenId,
        capability: Capability,
        targets: &[String],
        payload: Option<&str>,
    ) -> Result<i64, String> {
        let _in_flight = self.session_state.effect_guard();
        self.authorize_and_journal(id, capability, targets, payload)
            .map(|(_, call_seq)| call_seq)
    }

    /// Check token `id` for exactly this action and journal the call
    /// durably (the caller holds the effect guard). A refusal is journaled
    /// and returned as its message.
    fn authorize_and_journal(
        &self,
        id: TokenId,
        capability: Capability,
        targets: &[String],
        payload: Option<&str>,
    ) -> Result<(TokenRecord, i64), String> {
        let action = Action {
            capability,
            targets,
            payload,
        };
        let record = match self.gate.authorize(id, &self.session, &self.tool, action) {
            Ok(record) => record,
            Err(refusal) => {
                let message = refusal.to_string();
                self.journal_refusal(capability, targets, payload, Some(id), &message);
                return Err(message);
            }
        };
        let entry = self
            .entry(Kind::Call)
            .capability(capability.as_str())
            .targets(targets)
            .payload(payload)
            .detail("token", id);
        let call_seq = self.journal.append(entry).map_err(|e| {
            format!("the journal cannot be written, so {capability} was not performed: {e}")
        })?;
        Ok((record, call_seq))
    }

    /// Journal what an effect came to.
    pub(crate) fn record_outcome(
        &self,
        call_seq: i64,
        capability: Capability,
        targets: &[String],
        outcome: String,
    ) {
        let record = self
            .entry(Kind::Outcome)
            .capability(capability.as_str())
            .targets(targets)
            .answers(call_seq)
            .outcome(outcome);
        if let Err(e) = self.journal.append(record) {
            tracing::error!(
                "{capability} (journal #{call_seq}) happened but its outcome could not be journaled: {e}"
            );
        }
    }

    /// Trap the running guest if its session was stopped or its call
    /// cancelled: after a stop, no host function returns to the guest.
    pub(crate) fn trap_if_ended(&self) -> wasmtime::Result<()> {
        if self.session_state.is_stopped() {
            return Err(wasmtime::Error::new(SessionStopped(self.session.clone())));
        }
        if self.cancel.is_cancelled() {
            return Err(wasmtime::Error::new(crate::runtime::CallCancelled));
        }
        Ok(())
    }

    /// Handle a consent request: journal it, decide it, journal the
    /// decision, and mint a token for what was approved.
    /// `context` carries facts the capability's own host code gathered when
    /// the host asks on a tool's behalf (an http request); `None` for a
    /// tool's own request.
    pub async fn request_consent(
        &self,
        intent: wit_consent::Intent,
        context: Option<&(dyn std::any::Any + Sync)>,
    ) -> Result<TokenId, wit_consent::Denial> {
        // A session that has asked too often is refused without another
        // journal record each time (one says when the bound was reached).
        let asked = self.session_state.count_request();
        if asked > MAX_REQUESTS_PER_SESSION {
            let message = format!(
                "session {} made more than {MAX_REQUESTS_PER_SESSION} consent requests; further requests are refused",
                self.session
            );
            if asked == MAX_REQUESTS_PER_SESSION + 1 {
                self.journal_budget_refusal(&intent.capability, &message);
            }
            return Err(denial(wit_consent::DenialReason::NotGranted, message));
        }
        // What a guest sends is bounded before it is journaled: an oversized
        // intent is refused below, but it must not bloat the journal first.
        let request = self
            .entry(Kind::ConsentRequest)
            .capability(&journaled_capability(&intent.capability))
            .targets(&bounded(&intent.targets))
            .payload(intent.payload.as_deref())
            .detail("targets_total", intent.targets.len())
            .detail("tool_claim", clip(&intent.summary, MAX_SUMMARY_LEN));
        // Journaled with the decision and the token in one transaction,
        // unless a human is asked: then before the question is shown.
        let mut request = UnjournaledRequest {
            entry: Some(request),
            seq: None,
        };
        let decided = self.decide(&intent, &mut request, context).await;
        // The decision answers the request, whether journaled already or
        // first in this batch.
        let (mut batch, answering) = match (request.entry.take(), request.seq) {
            (Some(entry), _) => (vec![entry], Answering::Entry(0)),
            (None, Some(seq)) => (Vec::new(), Answering::Seq(seq)),
            // Journaling the request failed: the refusal says why.
            (None, None) => {
                return Err(match decided {
                    Err(refused) => refused.denial,
                    Ok(_) => denial(
                        wit_consent::DenialReason::NotGranted,
                        "the consent request was not journaled, so nothing can be approved",
                    ),
                });
            }
        };
        let record = answering.apply(self.entry(Kind::Decision));
        let record = match &decided {
            Ok(d) => record
                .capability(d.capability.as_str())
                .targets(&d.approved)
                .decided_by(d.decided_by.to_string())
                .outcome(format!("approved {} of {}", d.approved.len(), d.requested)),
            Err(Refused { denial, decided_by }) => record
                .capability(&journaled_capability(&intent.capability))
                .decided_by(decided_by.clone().unwrap_or_else(|| {
                    match denial.reason {
                        wit_consent::DenialReason::Stopped => "stop",
                        _ => "policy",
                    }
                    .to_string()
                }))
                .outcome(format!(
                    "{}: {}",
                    reason_name(denial.reason),
                    denial.message
                )),
        };
        batch.push(record);
        let d = match decided {
            Ok(d) => d,
            Err(refused) => {
                self.journal.append_all(batch).map_err(unjournaled)?;
                return Err(refused.denial);
            }
        };
        let id = match self.gate.mint(Mint {
            session: self.session.clone(),
            tool: self.tool.clone(),
            capability: d.capability,
            targets: d.approved.clone(),
            payload: d.payload.clone(),
            ttl: d.ttl,
            uses: d.uses,
            decided_by: d.decided_by,
            stamp: d.stamp.clone(),
        }) {
            Ok(id) => id,
            Err(refusal) => {
                self.journal.append_all(batch).map_err(unjournaled)?;
                return Err(denial(
                    wit_consent::DenialReason::Stopped,
                    refusal.to_string(),
                ));
            }
        };
        let minted = answering
            .apply(self.entry(Kind::TokenMinted))
            .capability(d.capability.as_str())
            .targets(&d.approved)
            .detail("token", id)
            .detail("expires_in_secs", d.ttl.as_secs())
            .detail("uses", d.uses);
        batch.push(minted);
        if let Err(e) = self.journal.append_all(batch) {
            self.gate.revoke(id);
            return Err(denial(
                wit_consent::DenialReason::NotGranted,
                format!("the journal cannot be written, so the token was revoked: {e}"),
            ));
        }
        Ok(id)
    }

    /// Journal a refused capability call (the Gate's, or a capability's own
    /// check before the Gate). Refused either way; a journal failure is
    /// logged, not fatal, since nothing happened.
    pub(crate) fn journal_refusal(
        &self,
        capability: Capability,
        targets: &[String],
        payload: Option<&str>,
        token: Option<TokenId>,
        message: &str,
    ) {
        let n = self
            .refusals
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if n > MAX_REFUSALS_PER_CALL {
            return;
        }
        // A guest chooses what a refusal quotes: the record stays small.
        let payload = payload.filter(|p| p.len() <= MAX_PAYLOAD_LEN);
        let mut record = self
            .entry(Kind::Refusal)
            .capability(capability.as_str())
            .targets(&bounded(targets))
            .payload(payload)
            .detail("targets_total", targets.len())
            .outcome(clip(message, MAX_JOURNALED_MESSAGE));
        if let Some(id) = token {
            record = record.detail("token", id);
        }
        if let Err(e) = self.journal.append(record) {
            tracing::error!("could not journal a refusal of {capability}: {e}");
        }
    }

    /// End the call (journaled once) when it made more refused calls than
    /// [`MAX_REFUSALS_PER_CALL`].
    pub(crate) fn end_if_over_refusal_budget(&self) -> wasmtime::Result<()> {
        if self.refusals.load(std::sync::atomic::Ordering::SeqCst) <= MAX_REFUSALS_PER_CALL {
            return Ok(());
        }
        let message = format!(
            "the call made more than {MAX_REFUSALS_PER_CALL} refused capability calls and was ended"
        );
        let record = self.entry(Kind::Refusal).outcome(&message);
        if let Err(e) = self.journal.append(record) {
            tracing::error!("could not journal an exhausted refusal budget: {e}");
        }
        Err(wasmtime::Error::msg(message))
    }

    /// Journal that a request budget was exhausted.
    fn journal_budget_refusal(&self, requested: &str, message: &str) {
        let record = self
            .entry(Kind::Refusal)
            .capability(&journaled_capability(requested))
            .outcome(message);
        if let Err(e) = self.journal.append(record) {
            tracing::error!("could not journal an exhausted request budget: {e}");
        }
    }

    /// A journal entry for this call's session and tool.
    pub(crate) fn entry(&self, kind: Kind) -> Entry {
        Entry::new(kind, &self.session.0, &self.tool, &self.tool_digest)
    }

    /// Decide a consent request: policy first (grant, mode, scope), then the
    /// host's own description of the action, then a human if the grant says
    /// `ask`.
    async fn decide(
        &self,
        intent: &wit_consent::Intent,
        request: &mut UnjournaledRequest,
        context: Option<&(dyn std::any::Any + Sync)>,
    ) -> Result<Decided, Refused> {
        use wit_consent::DenialReason::*;
        check_intent_size(intent)?;
        let capability = Capability::parse(&intent.capability).ok_or_else(|| {
            denial(
                Invalid,
                format!(
                    "unknown capability `{}`",
                    crate::render::one_line(&intent.capability, 80)
                ),
            )
        })?;
        let grant = match self.grants.grant_for(capability) {
            None => {
                return Err(denial(
                    NotGranted,
                    format!("tool `{}` has no grant for {capability}", self.tool),
                )
                .into());
            }
            Some(g) if g.mode == ConsentMode::Deny => {
                return Err(denial(
                    NotGranted,
                    format!("the policy denies {capability} to tool `{}`", self.tool),
                )
                .into());
            }
            Some(g) => g,
        };
        match (&intent.payload, capability.carries_payload()) {
            (Some(_), false) => {
                return Err(denial(
                    Invalid,
                    format!("{capability} carries no content; the intent's payload must be empty"),
                )
                .into());
            }
            (None, true) => {
                return Err(denial(
                    Invalid,
                    format!("{capability} needs the exact content as the intent's payload"),
                )
                .into());
            }
            _ => {}
        }
        if let Some(payload) = &intent.payload {
            let hidden = crate::render::count_hidden(payload);
            if hidden > 0 && grant.refuses_invisible() {
                return Err(denial(
                    NotGranted,
                    format!(
                        "{capability}: the content holds {hidden} invisible or control character(s) (for example {}); the grant refuses such content (refuse_invisible)",
                        crate::render::one_line(
                            &crate::render::hidden_chars(payload)
                                .take(3)
                                .collect::<String>(),
                            64
                        )
                    ),
                )
                .into());
            }
        }
        let mut targets = intent.targets.clone();
        let mut seen = std::collections::HashSet::new();
        targets.retain(|t| seen.insert(t.clone()));
        let targets_requested = targets.len();
        let described = capability.plugin().describe(&Request {
            call: self,
            capability,
            scope: &grant.scope,
            targets: &targets,
            payload: intent.payload.as_deref(),
            context,
        })?;
        let (action, items, shown) = (described.action, described.items, described.shown);
        let targets = described.targets;
        if self.session_state.is_stopped() {
            return Err(denial(Stopped, format!("session {} was stopped", self.session)).into());
        }
        // Content that will be published carries the host's label, which
        // holds host facts only. Each channel shows the label exactly as it
        // will read if that channel approves: it names the deciding channel.
        let template = self
            .backends
            .get(capability.interface())
            .filter(|_| capability.publishes())
            .and_then(|b| capability.plugin().label_template(&b.settings));
        if capability.publishes() && template.is_none() {
            // What is published is always labelled: no label, no approval.
            return Err(denial(
                NotGranted,
                format!("{capability} publishes, but its backend gives no label to stamp"),
            )
            .into());
        }
        let published = match (&intent.payload, template) {
            (Some(body), Some(template)) => Some(crate::consent::Published {
                body: body.clone(),
                template,
                tool: self.tool.clone(),
                user: self.user.clone(),
                at: std::time::SystemTime::now(),
            }),
            _ => None,
        };
        let standing_stamp = published.as_ref().map(|p| {
            crate::consent::label(
                &p.template,
                &p.tool,
                &p.user,
                "a standing grant of the operator",
                p.at,
            )
        });
        // What the prompt holds as the content: for a post, as it reads if
        // this call's approver decides (each channel renders its own).
        let (shown_payload, payload_heading) = match (&published, shown) {
            (Some(p), _) => (Some(p.labelled_for(self.approver.channel())), None),
            (None, Some(shown)) => (Some(shown.text), Some(shown.heading)),
            (None, None) => (intent.payload.clone(), None),
        };
        let (approved, decided_by, stamp) = match grant.mode {
            ConsentMode::Standing => (targets, DecisionSource::StandingGrant, standing_stamp),
            ConsentMode::Ask => {
                // A tool cannot wear the human down: after the grant's
                // number of refusals in this session, it is not asked again
                // until someone re-allows it on the approvals page.
                if self
                    .session_state
                    .is_muted(&self.tool, capability, grant.max_refusals)
                {
                    return Err(denial(
                        NotGranted,
                        format!(
                            "{capability} was refused {} time(s) in session {}; further requests are refused without asking until asking is allowed again on the approvals page",
                            grant.max_refusals, self.session
                        ),
                    )
                    .into());
                }
                // One request per tool in front of a human at a time.
                let Some(_asking) = self.session_state.begin_asking(&self.tool) else {
                    return Err(denial(
                        NotGranted,
                        format!(
                            "another consent request of tool `{}` is waiting for an answer in session {}; a tool asks one question at a time",
                            self.tool, self.session
                        ),
                    )
                    .into());
                };
                let prompt = ConsentPrompt {
                    tool: self.tool.clone(),
                    user: self.user.clone(),
                    session: self.session.clone(),
                    capability,
                    action,
                    items,
                    payload: shown_payload,
                    payload_heading,
                    tool_claim: intent.summary.clone(),
                    published: published.clone(),
                    request_seq: request.journal(&self.journal)?,
                    approvable_via: crate::consent::ApprovalChannel::ALL
                        .iter()
                        .copied()
                        .filter(|c| grant.approvable_via(Some(*c)))
                        .collect(),
                };
                let waiting = Instant::now();
                let _count_wait = WaitClock {
                    since: waiting,
                    total_us: &self.human_wait_us,
                };
                let asked = tokio::time::timeout(self.consent_timeout, async {
                    self.slot.release();
                    let answer = self.approver.answer(&prompt).await;
                    self.slot.reacquire().await;
                    answer
                });
                let answer = tokio::select! {
                    answer = asked => answer.unwrap_or_else(|_| Answer {
                        decision: Decision::TimedOut,
                        channel: self.approver.channel().to_string(),
                    }),
                    () = self.session_state.stopped() => {
                        return Err(denial(
                            Stopped,
                            format!("session {} was stopped while {capability} awaited a decision", self.session),
                        ).into());
                    }
                    () = self.cancel.cancelled() => {
                        return Err(denial(
                            Stopped,
                            format!("the call was cancelled while {capability} awaited a decision"),
                        ).into());
                    }
                };
                // Back to running: the slot given up while waiting (also
                // when the wait timed out).
                self.slot.reacquire().await;
                let channel = answer.channel;
                let by_human = |denial: wit_consent::Denial| Refused {
                    denial,
                    decided_by: Some(format!("human via {channel}")),
                };
                match answer.decision {
                    Decision::TimedOut => {
                        self.session_state.note_refusal(&self.tool, capability);
                        return Err(by_human(denial(
                            TimedOut,
                            format!(
                                "nobody answered the request for {capability} within {}s",
                                self.consent_timeout.as_secs()
                            ),
                        )));
                    }
                    Decision::Decline(reason) => {
                        self.session_state.note_refusal(&self.tool, capability);
                        return Err(by_human(denial(
                            Declined,
                            format!("{capability} was declined: {reason}"),
                        )));
                    }
                    Decision::Unavailable(why) => {
                        return Err(Refused {
                            denial: denial(
                                Declined,
                                format!(
                                    "{capability} cannot be approved: no human could be asked ({why})"
                                ),
                            ),
                            decided_by: Some(format!("policy (no approver: {channel})")),
                        });
                    }
                    Decision::Approve(_) if !prompt.approvable_by(&channel) => {
                        return Err(by_human(denial(
                            NotGranted,
                            format!(
                                "{capability} cannot be approved through {}: the operator's policy (approve_via) does not accept that channel for it",
                                crate::render::one_line(&channel, 100)
                            ),
                        )));
                    }
                    Decision::Approve(indices) => {
                        let approved: Vec<String> = prompt
                            .items
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| indices.contains(i))
                            .map(|(_, item)| item.target.clone())
                            .collect();
                        if approved.is_empty() {
                            return Err(by_human(denial(
                                Declined,
                                format!("{capability} was declined: no item was approved"),
                            )));
                        }
                        let stamp = prompt.published.as_ref().map(|p| p.stamp(&channel));
                        (approved, DecisionSource::Human { channel }, stamp)
                    }
                }
            }
            ConsentMode::Deny => unreachable!("handled above"),
        };
        Ok(Decided {
            capability,
            requested: targets_requested,
            approved,
            decided_by,
            ttl: grant.token_ttl(),
            uses: grant.max_uses,
            payload: intent.payload.clone(),
            stamp,
        })
    }
}

impl wit_consent::Host for HostState {
    async fn request(
        &mut self,
        intent: wit_consent::Intent,
    ) -> wasmtime::Result<Result<Resource<TokenHandle>, wit_consent::Denial>> {
        if self.minted.len() >= MAX_TOKENS_PER_CALL {
            return Ok(Err(denial(
                wit_consent::DenialReason::Invalid,
                format!("a call may obtain at most {MAX_TOKENS_PER_CALL} tokens"),
            )));
        }
        self.requests += 1;
        if self.requests > MAX_REQUESTS_PER_CALL {
            let message = format!(
                "the call made more than {MAX_REQUESTS_PER_CALL} consent requests and was ended"
            );
            self.call
                .journal_budget_refusal(&intent.capability, &message);
            return Err(wasmtime::Error::msg(message));
        }
        use std::sync::atomic::Ordering::SeqCst;
        let waited_before = self.call.human_wait_us.load(SeqCst);
        let outcome = self.call.request_consent(intent, None).await;
        // Only time spent waiting for a human is excused from the call's
        // wall-time budget; a refusal without asking costs the guest.
        let waited = self.call.human_wait_us.load(SeqCst) - waited_before;
        self.deadline += Duration::from_micros(waited);
        // A request answered `stopped` (or cancelled) is journaled as such;
        // the guest does not get control back to carry on.
        self.call.trap_if_ended()?;
        match outcome {
            Ok(id) => {
                self.minted.push(id);
                Ok(Ok(self.table.push(TokenHandle { id })?))
            }
            Err(denial) => Ok(Err(denial)),
        }
    }
}

impl wit_consent::HostToken for HostState {
    fn capability(&mut self, token: Resource<TokenHandle>) -> wasmtime::Result<String> {
        let id = self.token_id(&token)?;
        Ok(self
            .call
            .gate
            .record(id)
            .map(|r| r.capability.as_str().to_string())
            .unwrap_or_default())
    }

    fn targets(&mut self, token: Resource<TokenHandle>) -> wasmtime::Result<Vec<String>> {
        let id = self.token_id(&token)?;
        Ok(self
            .call
            .gate
            .record(id)
            .map(|r| r.targets)
            .unwrap_or_default())
    }

    fn payload(&mut self, token: Resource<TokenHandle>) -> wasmtime::Result<Option<String>> {
        let id = self.token_id(&token)?;
        Ok(self.call.gate.record(id).and_then(|r| r.payload))
    }

    fn expires_at_ms(&mut self, token: Resource<TokenHandle>) -> wasmtime::Result<u64> {
        let id = self.token_id(&token)?;
        Ok(self
            .call
            .gate
            .record(id)
            .map(|r| r.expires_at_ms())
            .unwrap_or(0))
    }

    fn uses_left(&mut self, token: Resource<TokenHandle>) -> wasmtime::Result<u32> {
        let id = self.token_id(&token)?;
        Ok(self.call.gate.record(id).map(|r| r.uses_left).unwrap_or(0))
    }

    fn drop(&mut self, token: Resource<TokenHandle>) -> wasmtime::Result<()> {
        let handle = self.table.delete(token)?;
        self.call.gate.forget(handle.id);
        Ok(())
    }
}

fn cli_view(t: &mut HostState) -> wasmtime_wasi::cli::WasiCliCtxView<'_> {
    wasmtime_wasi::cli::WasiCliView::cli(t)
}

/// `wasi:sockets` over the store's `WasiCtx`, which allows nothing.
fn no_network(t: &mut HostState) -> wasmtime_wasi::sockets::WasiSocketsCtxView<'_> {
    wasmtime_wasi::sockets::WasiSocketsView::sockets(t)
}

/// `HasData` for WASI I/O, whose host state is the resource table.
struct IoTable;

impl HasData for IoTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// Link the harmless WASI interfaces guest toolchains pull in (cli, io,
/// clocks, random, filesystem with nothing preopened), and `wasi:sockets`
/// with every operation refused: CPython imports it whatever the tool does,
/// and the store's `WasiCtx` allows no TCP, no UDP and no name lookup, with
/// the default address check refusing every address (see [`HostState::new`]).
fn add_harmless_wasi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sockets};
    use wasmtime_wasi::{
        cli::WasiCli, clocks::WasiClocks, filesystem::WasiFilesystem, random::WasiRandom,
        sockets::WasiSockets,
    };
    use wasmtime_wasi_io::bindings::wasi::io;
    let l = linker;
    io::error::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    io::poll::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    io::streams::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, |t| {
        wasmtime_wasi::clocks::WasiClocksView::clocks(t)
    })?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, |t| {
        wasmtime_wasi::clocks::WasiClocksView::clocks(t)
    })?;
    filesystem::types::add_to_linker::<HostState, WasiFilesystem>(l, |t| {
        wasmtime_wasi::filesystem::WasiFilesystemView::filesystem(t)
    })?;
    filesystem::preopens::add_to_linker::<HostState, WasiFilesystem>(l, |t| {
        wasmtime_wasi::filesystem::WasiFilesystemView::filesystem(t)
    })?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |t| t.wasi.random())?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, cli_view)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, cli_view)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, cli_view)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, cli_view)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, cli_view)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, cli_view)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, cli_view)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, cli_view)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, cli_view)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, cli_view)?;
    sockets::network::add_to_linker::<HostState, WasiSockets>(l, &Default::default(), no_network)?;
    sockets::instance_network::add_to_linker::<HostState, WasiSockets>(l, no_network)?;
    sockets::tcp_create_socket::add_to_linker::<HostState, WasiSockets>(l, no_network)?;
    sockets::tcp::add_to_linker::<HostState, WasiSockets>(l, no_network)?;
    sockets::udp_create_socket::add_to_linker::<HostState, WasiSockets>(l, no_network)?;
    sockets::udp::add_to_linker::<HostState, WasiSockets>(l, no_network)?;
    sockets::ip_name_lookup::add_to_linker::<HostState, WasiSockets>(l, no_network)?;
    Ok(())
}

/// A linker holding exactly what `grants` allows: harmless WASI, `consent`,
/// and each capability interface the policy grants (deny by default).
pub fn linker_for(engine: &Engine, grants: &ToolPolicy) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    add_harmless_wasi(&mut linker)?;
    wit_consent::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    for plugin in registry::plugins() {
        if grants.links_interface(plugin.interface()) {
            plugin.add_to_linker(&mut linker)?;
        }
    }
    Ok(linker)
}
