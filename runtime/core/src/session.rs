//! Sessions and stopping them. A session is one agent interaction; its
//! tokens, pending consent requests and running calls all end when it is
//! stopped. [`StopHandle`] is the one way to stop (CLI over the control
//! socket, signals, and the library all use it); every stop is journaled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::consent::{Gate, SessionId, SessionInfo};
use crate::fleet::FleetEvent;
use crate::journal::{Entry, Journal, Kind};

/// The error a stopped call traps with (distinguishes a stop from a bug).
#[derive(Debug, Clone, thiserror::Error)]
#[error("session {0} was stopped")]
pub struct SessionStopped(pub SessionId);

/// What one stop did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopReport {
    /// The session.
    pub session: String,
    /// Live tokens revoked.
    pub revoked: usize,
    /// Time from the request to the acknowledgement (no effect in flight).
    pub acknowledged_after_us: u64,
}

/// Stops sessions; cheap to clone and share with signal handlers, control
/// sockets and web pages.
#[derive(Clone)]
pub struct StopHandle {
    gate: Arc<Gate>,
    journal: Arc<Journal>,
}

impl StopHandle {
    /// The fleet this host belongs to, if any.
    pub fn fleet(&self) -> Option<Arc<crate::fleet::FleetLink>> {
        self.gate.fleet().cloned()
    }

    /// The journal stops are written to.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// A handle over `gate`, journaling to `journal`.
    pub fn new(gate: Arc<Gate>, journal: Arc<Journal>) -> StopHandle {
        StopHandle { gate, journal }
    }

    /// Stop `session`; returns once the stop is acknowledged: its tokens are
    /// revoked, its pending consent requests answered `stopped`, running
    /// guest code traps at the next epoch tick, and no effect of it is
    /// inside a backend. `by` names who stopped it (recorded).
    pub fn stop_session(&self, session: &SessionId, by: &str) -> StopReport {
        let report = self.stop_session_here(session, by);
        if let Some(fleet) = self.gate.fleet() {
            fleet.publish(FleetEvent::StopSession {
                session: session.0.clone(),
                by: by.to_string(),
            });
        }
        report
    }

    /// Stop `session` on this host only.
    fn stop_session_here(&self, session: &SessionId, by: &str) -> StopReport {
        let (report, record) = self.stop_session_unjournaled(session, by);
        if let Err(e) = self.journal.append(record) {
            tracing::error!(
                "session {session} was stopped but the stop could not be journaled: {e}"
            );
        }
        report
    }

    /// Stop `session` on this host; its report, and the record to journal.
    fn stop_session_unjournaled(&self, session: &SessionId, by: &str) -> (StopReport, Entry) {
        let started = Instant::now();
        let revoked = self.gate.stop_session(session);
        let took = started.elapsed();
        let record = Entry::new(Kind::Stop, &session.0, "-", "-")
            .decided_by(by)
            .outcome(format!(
                "stopped: {revoked} live token(s) revoked, acknowledged after {} µs",
                took.as_micros()
            ));
        let report = StopReport {
            session: session.0.clone(),
            revoked,
            acknowledged_after_us: duration_us(took),
        };
        (report, record)
    }

    /// Stop everything: every session that is not stopped yet, and every
    /// session created later (a new connection, a new protocol envelope)
    /// starts stopped, until a person resumes ([`StopHandle::resume`]).
    pub fn stop_all(&self, by: &str) -> Vec<StopReport> {
        let reports = self.stop_all_here(by);
        if let Some(fleet) = self.gate.fleet() {
            fleet.publish(FleetEvent::StopAll { by: by.to_string() });
        }
        reports
    }

    /// Stop everything on this host only.
    fn stop_all_here(&self, by: &str) -> Vec<StopReport> {
        self.gate.halt();
        let record = Entry::new(Kind::Stop, "*", "-", "-")
            .decided_by(by)
            .outcome("stopped everything: sessions created from now on start stopped until a person resumes");
        if let Err(e) = self.journal.append(record) {
            tracing::error!("everything was stopped but the stop could not be journaled: {e}");
        }
        let sessions = self.gate.sessions();
        // A session stopped before may still have an effect in flight (a
        // stop pressed here a moment ago): wait for it too, so that this
        // stop's acknowledgement never comes before its end.
        for s in sessions.iter().filter(|s| s.stopped) {
            self.gate.stop_session(&SessionId(s.id.clone()));
        }
        // Each session's stop record is written with the others, in one
        // transaction and one sync (the stop of everything above is on
        // disk already).
        let (reports, records): (Vec<StopReport>, Vec<Entry>) = sessions
            .into_iter()
            .filter(|s| !s.stopped)
            .map(|s| self.stop_session_unjournaled(&SessionId(s.id), by))
            .unzip();
        if !records.is_empty()
            && let Err(e) = self.journal.append_all(records)
        {
            tracing::error!(
                "the sessions were stopped but their stops could not be journaled: {e}"
            );
        }
        reports
    }

    /// Write the stops pressed here to the fleet now (at most `timeout`),
    /// for a process about to exit; false when some are not written
    /// (always true without a fleet).
    pub async fn share_with_fleet(&self, timeout: Duration) -> bool {
        match self.gate.fleet() {
            Some(fleet) => fleet.share_now(timeout).await,
            None => true,
        }
    }

    /// Apply a stop of everything that the fleet says is still in force
    /// (on joining it).
    pub fn apply_fleet_stop_all(&self, by: &str) -> usize {
        self.stop_all_here(by).len()
    }

    /// Apply a stop (or resume) pressed on fleet host `origin`, here only;
    /// returns how many sessions it stopped.
    pub fn apply_fleet_event(&self, event: &FleetEvent, origin: &str) -> usize {
        match event {
            FleetEvent::StopAll { by } => self
                .stop_all_here(&format!("{by} (on fleet host {origin})"))
                .len(),
            FleetEvent::StopSession { session, by } => {
                let session = SessionId(session.clone());
                if self.gate.knows(&session) {
                    self.stop_session_here(&session, &format!("{by} (on fleet host {origin})"));
                    1
                } else {
                    0
                }
            }
            FleetEvent::Resume { by } => {
                self.resume_here(&format!("{by} (on fleet host {origin})"));
                0
            }
        }
    }

    /// Let new sessions run again after a stop of everything (journaled;
    /// `by` names who). Sessions that were stopped stay stopped: an agent
    /// starts a new session. Returns whether everything had been stopped.
    pub fn resume(&self, by: &str) -> bool {
        let resumed = self.resume_here(by);
        if let Some(fleet) = self.gate.fleet() {
            fleet.publish(FleetEvent::Resume { by: by.to_string() });
        }
        resumed
    }

    /// Resume on this host only.
    fn resume_here(&self, by: &str) -> bool {
        let resumed = self.gate.resume();
        if resumed {
            let record = Entry::new(Kind::Resume, "*", "-", "-")
                .decided_by(by)
                .outcome("resumed: new sessions may run again");
            if let Err(e) = self.journal.append(record) {
                tracing::error!("could not journal a resume: {e}");
            }
        }
        resumed
    }

    /// Whether everything is stopped (until a resume).
    pub fn is_halted(&self) -> bool {
        self.gate.is_halted()
    }

    /// Whether this runtime has a session named `session`.
    pub fn knows(&self, session: &SessionId) -> bool {
        self.gate.knows(session)
    }

    /// Sessions known to this runtime.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.gate.sessions()
    }

    /// Requests refused without asking after too many refusals.
    pub fn muted_requests(&self) -> Vec<crate::consent::MutedRequests> {
        self.gate.muted_requests()
    }

    /// Let a muted tool ask a human again (journaled, `by` names who).
    pub fn reallow(
        &self,
        session: &SessionId,
        tool: &str,
        capability: crate::consent::Capability,
        by: &str,
    ) -> bool {
        let done = self.gate.reallow(session, tool, capability);
        if done {
            let record = Entry::new(Kind::Decision, &session.0, tool, "-")
                .capability(capability.as_str())
                .decided_by(by)
                .outcome(format!("{capability} may be asked again"));
            if let Err(e) = self.journal.append(record) {
                tracing::error!("could not journal a re-allow: {e}");
            }
        }
        done
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
