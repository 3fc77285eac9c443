//! Many hosts, one person: stops shared through PostgreSQL.
//!
//! With `[fleet] postgres = "..."` in the policy, every agentcap process
//! (a *host*) joins the fleet: a stop pressed on any host (CLI, signal,
//! approvals page, control socket) is applied there at once, then written
//! durably to the fleet's database and broadcast (`LISTEN`/`NOTIFY`); every
//! other host applies it through its own Gate, exactly as a local stop, and
//! writes an acknowledgement. `agentcap stop --all --policy FILE` reports
//! which hosts acknowledged and how fast.
//!
//! **Fail closed.** A host lets an effect through only while it is in touch
//! with the fleet: its last round trip to the database (made every
//! [`HEARTBEAT`]) is younger than `out_of_reach_after_ms`, and it has
//! applied every stop written before that round trip. When the database is
//! away, a stop pressed elsewhere could be missed, so every effect is
//! refused, naming why, until the host has reconnected and read the stops
//! it missed. A host that joins while everything is stopped starts stopped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio_postgres::{AsyncMessage, Client};

use crate::session::StopHandle;

/// A connection to the fleet's database.
pub use tokio_postgres::Client as DatabaseClient;

/// How often a host checks in with the fleet's database.
pub const HEARTBEAT: Duration = Duration::from_millis(200);
/// The channel stops are announced on.
pub(crate) const CHANNEL: &str = "agentcap_fleet";
/// Serializes the creation of the fleet's tables by hosts starting at once.
const SCHEMA_LOCK: i64 = 0x0061_676e_7463_6170;
/// Serializes the writing of events, so their ids commit in order (anyone
/// writing events by hand takes it too: `SELECT pg_advisory_xact_lock(..)`).
pub const EVENT_LOCK: i64 = SCHEMA_LOCK + 1;

/// The fleet's tables (created when missing).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agentcap_fleet_hosts (
    instance text PRIMARY KEY CHECK (length(instance) <= 300),
    host text NOT NULL CHECK (length(host) <= 200),
    pid integer NOT NULL,
    out_of_reach_after_ms integer NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_seen timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS agentcap_fleet_events (
    id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('stop-all', 'stop-session', 'resume')),
    session text CHECK (length(session) <= 1000),
    by_whom text NOT NULL CHECK (length(by_whom) <= 500),
    origin text NOT NULL CHECK (length(origin) <= 300),
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS agentcap_fleet_acks (
    event_id bigint NOT NULL REFERENCES agentcap_fleet_events,
    instance text NOT NULL,
    host text NOT NULL,
    stopped integer NOT NULL,
    acked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (event_id, instance)
);
";
/// Longest text read back from the fleet's tables (they may be written by
/// anyone holding the database's credentials).
const MAX_TEXT: i32 = 500;
/// Most events applied per query.
const EVENTS_PER_READ: i64 = 500;

/// The policy's `[fleet]` table.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    /// The fleet database, as a libpq connection string (`host=... user=...
    /// dbname=... sslmode=require`) or URL.
    #[serde(default)]
    pub postgres: Option<String>,
    /// The environment variable that holds the connection string instead
    /// (it usually carries a password).
    #[serde(default)]
    pub postgres_env: Option<String>,
    /// This host's name in the fleet (default: the machine's host name and
    /// the process id).
    #[serde(default)]
    pub host: Option<String>,
    /// Trust only this CA (PEM) for the database's TLS certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Milliseconds without a round trip to the database after which this
    /// host refuses every effect.
    #[serde(
        default = "default_out_of_reach_after_ms",
        deserialize_with = "crate::policy::within::<_, _, 500, 60000>"
    )]
    pub out_of_reach_after_ms: u64,
}

/// Without the connection string: it usually carries a password.
impl std::fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSettings")
            .field("postgres", &self.postgres.as_ref().map(|_| "[hidden]"))
            .field("postgres_env", &self.postgres_env)
            .field("host", &self.host)
            .field("ca_file", &self.ca_file)
            .field("out_of_reach_after_ms", &self.out_of_reach_after_ms)
            .finish()
    }
}

fn default_out_of_reach_after_ms() -> u64 {
    2000
}

impl FleetSettings {
    /// The connection string, from the policy or its variable.
    pub fn connection_string(&self) -> Result<String, String> {
        match (&self.postgres, &self.postgres_env) {
            (Some(s), None) => Ok(s.clone()),
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| format!("[fleet] postgres_env: the variable {var} is not set")),
            _ => Err("[fleet] needs exactly one of `postgres` or `postgres_env`".into()),
        }
    }

    /// This host's name.
    pub fn host_name(&self) -> String {
        self.host.clone().unwrap_or_else(|| {
            let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "host".into());
            format!("{machine}/{}", std::process::id())
        })
    }

    /// Check what can be checked without connecting.
    pub fn check(&self) -> Result<(), String> {
        let config: tokio_postgres::Config = self
            .connection_string()?
            .parse()
            .map_err(|e| format!("[fleet] postgres: not a connection string: {e}"))?;
        if config.get_hosts().is_empty() {
            return Err("[fleet] postgres: the connection string names no host".into());
        }
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable
            && !on_this_machine(&config)
        {
            return Err(
                "[fleet] postgres: sslmode=disable is allowed only for a database on this machine (loopback or a Unix socket): elsewhere the password and every stop would cross the network in the clear".into(),
            );
        }
        let name = self.host_name();
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err("[fleet] host: 1 to 200 printable characters".into());
        }
        Ok(())
    }
}

/// A stop (or resume) as the fleet shares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetEvent {
    /// Stop everything (new sessions start stopped until a resume).
    StopAll {
        /// Who pressed it.
        by: String,
    },
    /// Stop one session, on whichever host has it.
    StopSession {
        /// The session.
        session: String,
        /// Who pressed it.
        by: String,
    },
    /// Let new sessions run again.
    Resume {
        /// Who resumed.
        by: String,
    },
}

impl FleetEvent {
    fn kind(&self) -> &'static str {
        match self {
            FleetEvent::StopAll { .. } => "stop-all",
            FleetEvent::StopSession { .. } => "stop-session",
            FleetEvent::Resume { .. } => "resume",
        }
    }

    fn session(&self) -> Option<&str> {
        match self {
            FleetEvent::StopSession { session, .. } => Some(session),
            _ => None,
        }
    }

    fn by(&self) -> &str {
        match self {
            FleetEvent::StopAll { by }
            | FleetEvent::StopSession { by, .. }
            | FleetEvent::Resume { by } => by,
        }
    }

    fn from_row(kind: &str, session: Option<String>, by: String) -> Option<FleetEvent> {
        match kind {
            "stop-all" => Some(FleetEvent::StopAll { by }),
            "stop-session" => Some(FleetEvent::StopSession {
                session: session?,
                by,
            }),
            "resume" => Some(FleetEvent::Resume { by }),
            _ => None,
        }
    }
}

/// What a host's Gate asks before each effect, and where its own stops go
/// to be shared.
#[derive(Debug)]
pub struct FleetLink {
    host: String,
    /// This process in the fleet: the host's name, the process id and a
    /// random part (two processes may share a name).
    instance: String,
    settings: FleetSettings,
    /// The policy file's folder (for `ca_file`).
    base_dir: PathBuf,
    started: Instant,
    /// Milliseconds after `started` of the last round trip after which
    /// every stop written before it had been applied (0: none yet).
    in_touch_at_ms: AtomicU64,
    /// Whether the database was reached at least once.
    ever_reached: AtomicBool,
    /// Why the last attempt failed.
    last_problem: Mutex<Option<String>>,
    /// Stops pressed on this host, not yet written to the database (the
    /// first is written first, and removed once written).
    unsent: Mutex<std::collections::VecDeque<FleetEvent>>,
    /// Wakes the member task when a stop is pressed here.
    queued: tokio::sync::Notify,
    /// Held while unsent stops are written (by the member task, or by
    /// [`FleetLink::share_now`]), so none is written twice.
    writing: tokio::sync::Mutex<()>,
    /// Set when the host leaves the fleet (the process ends).
    leaving: AtomicBool,
    /// Wakes the member task to leave.
    leave_now: tokio::sync::Notify,
    /// Whether the member task was started.
    started_member: AtomicBool,
    /// Consent requests shared with the fleet's pages.
    requests: crate::fleet_requests::FleetRequests,
}

impl FleetLink {
    /// A link for `settings` (checked), out of touch until its member task
    /// has reached the database.
    pub fn new(settings: FleetSettings, base_dir: PathBuf) -> Arc<FleetLink> {
        let host = settings.host_name();
        Arc::new(FleetLink {
            instance: format!(
                "{host}#{}-{}",
                std::process::id(),
                crate::secret::random_hex(3)
            ),
            host,
            settings,
            base_dir,
            started: Instant::now(),
            in_touch_at_ms: AtomicU64::new(0),
            ever_reached: AtomicBool::new(false),
            last_problem: Mutex::new(None),
            unsent: Mutex::new(std::collections::VecDeque::new()),
            queued: tokio::sync::Notify::new(),
            writing: tokio::sync::Mutex::new(()),
            leaving: AtomicBool::new(false),
            leave_now: tokio::sync::Notify::new(),
            started_member: AtomicBool::new(false),
            requests: Default::default(),
        })
    }

    /// This host's name in the fleet.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The consent requests shared with the fleet's approvals pages.
    pub fn requests(&self) -> &crate::fleet_requests::FleetRequests {
        &self.requests
    }

    /// The settings the link was made with.
    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    /// The policy file's folder (for `ca_file`).
    pub fn base_dir(&self) -> &std::path::Path {
        &self.base_dir
    }

    /// This process in the fleet (`name#pid-random`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether the fleet's database was reached at least once.
    pub fn has_reached_database(&self) -> bool {
        self.ever_reached.load(Ordering::SeqCst)
    }

    /// How many stops pressed here are not written to the fleet yet.
    pub fn unshared(&self) -> usize {
        self.unsent.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Write every stop pressed here to the fleet now, over a connection of
    /// its own (at most `timeout`), for a process about to exit; false when
    /// some are not written.
    pub async fn share_now(&self, timeout: Duration) -> bool {
        if self.unshared() == 0 {
            return true;
        }
        let writing = async {
            let (mut client, _connection) = connect(&self.settings, &self.base_dir).await?;
            self.write_unsent(&mut client).await
        };
        match tokio::time::timeout(timeout, writing).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!("writing a stop to the fleet: {e}");
                false
            }
            Err(_) => false,
        }
    }

    fn now_ms(&self) -> u64 {
        // At least 1, so that 0 means "never".
        (self.started.elapsed().as_millis() as u64).max(1)
    }

    /// Whether an effect may run now: the host is in touch with the fleet.
    /// The error says why not.
    pub fn check(&self) -> Result<(), String> {
        let at = self.in_touch_at_ms.load(Ordering::SeqCst);
        let limit = self.settings.out_of_reach_after_ms;
        if at != 0 && self.now_ms().saturating_sub(at) < limit {
            return Ok(());
        }
        let problem = self
            .last_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let why = match (self.ever_reached.load(Ordering::SeqCst), problem) {
            (false, Some(p)) => format!(
                "host {} has not reached the fleet's database ({p})",
                self.host
            ),
            (false, None) => format!(
                "host {} has not reached the fleet's database yet",
                self.host
            ),
            (true, Some(p)) => format!(
                "host {} lost the fleet's database {} ms ago ({p})",
                self.host,
                self.now_ms().saturating_sub(at)
            ),
            (true, None) => format!(
                "host {} has not heard from the fleet's database for {} ms",
                self.host,
                self.now_ms().saturating_sub(at)
            ),
        };
        Err(format!(
            "{why}; a stop pressed on another host could be missed, so every effect is refused until it is back and its stops are read (the fleet fails closed)"
        ))
    }

    /// Share a stop pressed on this host with the fleet (written by the
    /// member task, at once or as soon as the database is back).
    pub fn publish(&self, event: FleetEvent) {
        self.unsent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(event);
        self.queued.notify_one();
    }

    fn first_unsent(&self) -> Option<FleetEvent> {
        self.unsent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .cloned()
    }

    fn sent_first(&self) {
        self.unsent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
    }

    /// Write every unsent stop over `client`.
    async fn write_unsent(&self, client: &mut Client) -> Result<(), String> {
        let _writing = self.writing.lock().await;
        while let Some(event) = self.first_unsent() {
            let id = write_event(client, &event, &self.instance).await?;
            self.sent_first();
            // Applied here before it was written: acknowledged at once (a
            // process that ends now would not read it back).
            client
                .execute(
                    "INSERT INTO agentcap_fleet_acks (event_id, instance, host, stopped) \
                     VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
                    &[&id, &self.instance, &self.host],
                )
                .await
                .map_err(|e| describe(&e))?;
        }
        Ok(())
    }

    fn in_touch(&self, since: Instant) {
        let at = (since.duration_since(self.started).as_millis() as u64).max(1);
        self.in_touch_at_ms.fetch_max(at, Ordering::SeqCst);
        self.ever_reached.store(true, Ordering::SeqCst);
        *self.last_problem.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn lost(&self, problem: String) {
        tracing::warn!(host = %self.host, "fleet database out of reach: {problem}");
        *self.last_problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(problem);
    }
}

/// The running member task of a host; stops it when dropped.
pub struct FleetMember {
    task: tokio::task::JoinHandle<()>,
    /// Copies the host's journal into the fleet's, on a connection of its
    /// own (it never delays the round trips that keep effects allowed).
    copier: tokio::task::JoinHandle<()>,
    journal: Arc<crate::journal::Journal>,
    link: Arc<FleetLink>,
}

impl FleetMember {
    /// Wait (at most `timeout`) until the host is in touch with the fleet;
    /// false when it is not by then (effects stay refused until it is).
    pub async fn wait_in_touch(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.link.check().is_ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Why effects are refused now, if they are.
    pub fn out_of_touch(&self) -> Option<String> {
        self.link.check().err()
    }

    /// Leave the fleet: the task finishes its round (stops pressed here
    /// are written, stops it applied are acknowledged), removes this host
    /// from the list of live hosts (so a stop does not wait for it) and
    /// ends; 2 s at most, then over a new connection (3 s more). A stop
    /// pressed here that could not be written is an error naming it: the
    /// rest of the fleet did not get it.
    pub async fn leave(mut self) -> Result<(), String> {
        let link = self.link.clone();
        // The journal's last records (this process's end), 2 s at most.
        self.copier.abort();
        crate::fleet_journal::copy_rest(&link, &self.journal, Duration::from_secs(2)).await;
        link.leaving.store(true, Ordering::SeqCst);
        link.leave_now.notify_one();
        let ended = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        drop(self);
        if matches!(ended, Ok(Ok(()))) && link.unshared() == 0 {
            return Ok(());
        }
        let leaving = async {
            let (mut client, _connection) = connect(&link.settings, &link.base_dir).await?;
            link.write_unsent(&mut client).await?;
            client
                .execute(
                    "DELETE FROM agentcap_fleet_hosts WHERE instance = $1",
                    &[&link.instance],
                )
                .await
                .map_err(|e| describe(&e))
        };
        let problem = match tokio::time::timeout(Duration::from_secs(3), leaving).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => "the fleet's database did not answer within 3 s".to_string(),
        };
        let unshared: Vec<String> = link
            .unsent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|e| match e.session() {
                Some(s) => format!("{} of session {s}", e.kind()),
                None => e.kind().to_string(),
            })
            .collect();
        if unshared.is_empty() {
            tracing::warn!("leaving the fleet: {problem}");
            Ok(())
        } else {
            Err(format!(
                "the stop(s) pressed here were NOT shared with the rest of the fleet ({}): {problem}; stop the other hosts with `agentcap stop --all --policy ...` once the database is back",
                unshared.join(", ")
            ))
        }
    }
}

impl Drop for FleetMember {
    fn drop(&mut self) {
        self.task.abort();
        self.copier.abort();
    }
}

/// Start `link`'s member task (inside a tokio runtime): it keeps a
/// connection to the fleet's database, applies the fleet's stops through
/// `stop`, acknowledges them, and writes this host's own stops. `None`
/// when the task was already started.
pub fn start_member(link: &Arc<FleetLink>, stop: StopHandle) -> Option<FleetMember> {
    if link.started_member.swap(true, Ordering::SeqCst) {
        return None;
    }
    let journal = stop.journal().clone();
    let copier = tokio::spawn(crate::fleet_journal::keep_copying(
        link.clone(),
        journal.clone(),
    ));
    let member_link = link.clone();
    let task = tokio::spawn(async move {
        let mut member = Member {
            link: member_link,
            stop,
            last_applied: None,
            applied_out_of_sequence: Default::default(),
        };
        member.run().await;
    });
    Some(FleetMember {
        task,
        copier,
        journal,
        link: link.clone(),
    })
}

/// A connection to the fleet's database, for the CLI.
pub async fn connect(
    settings: &FleetSettings,
    base_dir: &std::path::Path,
) -> Result<(Client, tokio::task::JoinHandle<()>), String> {
    let (client, connection, _) = open(settings, base_dir, None).await?;
    Ok((client, connection))
}

type Opened = (
    Client,
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
);

/// Connect; notifications are signalled on the returned receiver (and the
/// receiver ends when the connection does).
async fn open(
    settings: &FleetSettings,
    base_dir: &std::path::Path,
    timeout: Option<Duration>,
) -> Result<Opened, String> {
    let mut config: tokio_postgres::Config = settings
        .connection_string()?
        .parse()
        .map_err(|e| format!("not a connection string: {e}"))?;
    if !on_this_machine(&config) {
        // Off this machine, TLS or nothing: `prefer` (the default) would
        // fall back to the clear when the other end (or someone on the way)
        // declines TLS, and send the password.
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
            return Err("sslmode=disable is allowed only for a database on this machine".into());
        }
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    let timeout = timeout.unwrap_or(Duration::from_secs(10));
    let (notified, notifications) = tokio::sync::mpsc::unbounded_channel();
    let tls = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
        None
    } else {
        let ca_file = settings.ca_file.as_ref().map(|f| base_dir.join(f));
        let tls = crate::capability::tls::client_config(ca_file.as_deref())
            .map_err(|e| format!("TLS: {e}"))?;
        Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
    };
    let connecting = async {
        match tls {
            None => {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                Ok::<_, tokio_postgres::Error>((client, drive(connection, notified)))
            }
            Some(tls) => {
                let (client, connection) = config.connect(tls).await?;
                Ok((client, drive(connection, notified)))
            }
        }
    };
    match tokio::time::timeout(timeout, connecting).await {
        Err(_) => Err(format!("connecting took over {} ms", timeout.as_millis())),
        Ok(Err(e)) => Err(describe(&e)),
        Ok(Ok((client, task))) => Ok((client, task, notifications)),
    }
}

/// Whether every address `config` connects to is on this machine: a Unix
/// socket, `localhost`, or a loopback address.
fn on_this_machine(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let loopback = |name: &str| {
        name.eq_ignore_ascii_case("localhost")
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    config.get_hostaddrs().iter().all(|ip| ip.is_loopback())
        && config.get_hosts().iter().all(|host| match host {
            Host::Tcp(name) => loopback(name),
            Host::Unix(_) => true,
        })
}

/// Drive `connection`, signalling each notification on `notified`.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notified: tokio::sync::mpsc::UnboundedSender<()>,
) -> tokio::task::JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    let _ = notified.send(());
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    })
}

pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// Create the fleet's tables unless they exist (one host at a time).
pub async fn ensure_schema(client: &mut Client) -> Result<(), String> {
    let tx = client.transaction().await.map_err(|e| describe(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(|e| describe(&e))?;
    tx.batch_execute(SCHEMA).await.map_err(|e| describe(&e))?;
    tx.batch_execute(crate::fleet_requests::SCHEMA)
        .await
        .map_err(|e| describe(&e))?;
    tx.batch_execute(crate::fleet_journal::SCHEMA)
        .await
        .map_err(|e| describe(&e))?;
    tx.commit().await.map_err(|e| describe(&e))
}

/// Write `event` (from host `origin`) and announce it; returns its id.
/// Writers take turns (a transaction-scoped lock), so ids commit in their
/// order: a host that has read event N has seen every event before N.
pub async fn write_event(
    client: &mut Client,
    event: &FleetEvent,
    origin: &str,
) -> Result<i64, String> {
    let tx = client.transaction().await.map_err(|e| describe(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENT_LOCK])
        .await
        .map_err(|e| describe(&e))?;
    let row = tx
        .query_one(
            "WITH e AS (INSERT INTO agentcap_fleet_events (kind, session, by_whom, origin) \
             VALUES ($1, $2, $3, $4) RETURNING id) \
             SELECT id, pg_notify($5, id::text) FROM e",
            &[
                &event.kind(),
                &event.session().map(|s| clip(s, 1000)),
                &clip(event.by(), 500),
                &clip(origin, 300),
                &CHANNEL,
            ],
        )
        .await
        .map_err(|e| describe(&e))?;
    tx.commit().await.map_err(|e| describe(&e))?;
    Ok(row.get(0))
}

/// At most `chars` characters of `text` (the fleet's columns are bounded).
fn clip(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// One host's acknowledgement of a fleet event.
#[derive(Debug, Clone)]
pub struct Acknowledgement {
    /// The host.
    pub host: String,
    /// Its process in the fleet (`name#pid-random`).
    pub instance: String,
    /// Sessions it stopped.
    pub stopped: i32,
    /// From the event's writing to the acknowledgement, by the database's
    /// clock, in microseconds.
    pub after_us: i64,
}

/// The acknowledgements of event `id`, and the live hosts (`instance`)
/// that have not acknowledged it: live is seen within the host's own
/// `out_of_reach_after_ms`, since until then it may still act.
pub async fn acknowledgements(
    client: &Client,
    id: i64,
) -> Result<(Vec<Acknowledgement>, Vec<String>), String> {
    // The hosts still waited for first: an acknowledgement written
    // between the two reads then shows as both, never as neither.
    let waiting = client
        .query(
            "SELECT left(h.instance, $2) FROM agentcap_fleet_hosts h \
             WHERE h.last_seen > clock_timestamp() - make_interval(secs => h.out_of_reach_after_ms / 1000.0) \
             AND NOT EXISTS (SELECT 1 FROM agentcap_fleet_acks a WHERE a.event_id = $1 AND a.instance = h.instance) \
             ORDER BY h.instance",
            &[&id, &MAX_TEXT],
        )
        .await
        .map_err(|e| describe(&e))?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let acks = client
        .query(
            "SELECT left(a.host, $2), a.stopped, \
             (extract(epoch FROM a.acked_at - e.at) * 1000000)::bigint, left(a.instance, $2) \
             FROM agentcap_fleet_acks a JOIN agentcap_fleet_events e ON e.id = a.event_id \
             WHERE a.event_id = $1 ORDER BY a.host, a.instance",
            &[&id, &MAX_TEXT],
        )
        .await
        .map_err(|e| describe(&e))?
        .into_iter()
        .map(|r| Acknowledgement {
            host: r.get(0),
            stopped: r.get(1),
            after_us: r.get(2),
            instance: r.get(3),
        })
        .collect();
    Ok((acks, waiting))
}

struct Member {
    link: Arc<FleetLink>,
    stop: StopHandle,
    /// The last event applied (None before the first connection).
    last_applied: Option<i64>,
    /// Stops applied whose ids the events' sequence had not issued (rows
    /// written by hand): not applied again while they stay above it.
    applied_out_of_sequence: std::collections::HashSet<SeenEvent>,
}

/// An event row as read, to know it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeenEvent {
    id: i64,
    kind: String,
    session: Option<String>,
    by: String,
    origin: String,
    at: String,
}

/// Most hand-written stops remembered as applied; beyond, the host is out
/// of touch (fails closed) until they are removed.
const MAX_OUT_OF_SEQUENCE: usize = 10_000;

/// The last id the events' sequence issued (0 before the first). Needs
/// USAGE or SELECT on the sequence.
const ISSUED: &str = "coalesce(pg_sequence_last_value(pg_get_serial_sequence('agentcap_fleet_events', 'id')::regclass), 0)";

impl Member {
    async fn run(&mut self) {
        loop {
            let result = self.connected().await;
            if let Err(problem) = result {
                self.link.lost(problem);
            }
            if self.link.leaving.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    }

    /// One connection's life: returns why it ended.
    async fn connected(&mut self) -> Result<(), String> {
        let limit = Duration::from_millis(self.link.settings.out_of_reach_after_ms);
        let (mut client, _driver, mut notifications) =
            open(&self.link.settings, &self.link.base_dir, Some(limit)).await?;
        let bounded = |what: &'static str| {
            move |r: Result<Result<(), String>, tokio::time::error::Elapsed>| match r {
                Err(_) => Err(format!("{what} took over {} ms", limit.as_millis())),
                Ok(r) => r,
            }
        };
        tokio::time::timeout(limit * 5, ensure_schema(&mut client))
            .await
            .map_err(|_| "creating the fleet's tables timed out".to_string())??;
        bounded("LISTEN")(
            tokio::time::timeout(limit, async {
                client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .map_err(|e| describe(&e))
            })
            .await,
        )?;
        if self.last_applied.is_none() {
            bounded("joining the fleet")(tokio::time::timeout(limit, self.join(&client)).await)?;
        }
        let mut ticker = tokio::time::interval(HEARTBEAT);
        loop {
            let round_trip = Instant::now();
            // Own stops first, then what the fleet wrote since the last look.
            let step = async {
                self.link.write_unsent(&mut client).await?;
                self.catch_up(&client).await?;
                self.link
                    .requests
                    .sync(&client, &self.link.instance, &self.link.host)
                    .await?;
                self.link
                    .requests
                    .share_sessions(
                        &mut client,
                        &self.link.instance,
                        &self.link.host,
                        self.stop.sessions(),
                    )
                    .await?;
                let limit_ms = self.link.settings.out_of_reach_after_ms as i32;
                client
                    .execute(
                        "INSERT INTO agentcap_fleet_hosts (instance, host, pid, out_of_reach_after_ms) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (instance) DO UPDATE \
                         SET last_seen = clock_timestamp(), out_of_reach_after_ms = $4",
                        &[
                            &self.link.instance,
                            &self.link.host,
                            &(std::process::id() as i32),
                            &limit_ms,
                        ],
                    )
                    .await
                    .map_err(|e| describe(&e))?;
                Ok::<_, String>(())
            };
            bounded("a round trip to the fleet's database")(
                tokio::time::timeout(limit, step).await,
            )?;
            self.link.in_touch(round_trip);

            tokio::select! {
                _ = ticker.tick() => {}
                n = notifications.recv() => {
                    if n.is_none() {
                        return Err("the connection closed".into());
                    }
                }
                _ = self.link.queued.notified() => {}
                _ = self.link.requests.queued.notified() => {}
                _ = self.link.leave_now.notified() => {
                    // Own stops pressed meanwhile are written first.
                    let leaving = async {
                        self.link.write_unsent(&mut client).await?;

                        client
                            .execute(
                                "DELETE FROM agentcap_fleet_sessions WHERE instance = $1",
                                &[&self.link.instance],
                            )
                            .await
                            .map_err(|e| describe(&e))?;
                        client
                            .execute(
                                "DELETE FROM agentcap_fleet_hosts WHERE instance = $1",
                                &[&self.link.instance],
                            )
                            .await
                            .map_err(|e| describe(&e))
                    };
                    bounded("leaving the fleet")(
                        tokio::time::timeout(limit, async { leaving.await.map(|_| ()) }).await,
                    )?;
                    return Ok(());
                }
            }
        }
    }

    /// First contact: start after the last event written, stopped if
    /// everything is stopped in the fleet.
    async fn join(&mut self, client: &Client) -> Result<(), String> {
        // Never past what the events' sequence issued (see `catch_up`).
        let last: i64 = client
            .query_one(
                &format!(
                    "SELECT least(coalesce((SELECT max(id) FROM agentcap_fleet_events), 0), {ISSUED})"
                ),
                &[],
            )
            .await
            .map_err(|e| describe(&e))?
            .get(0);
        // Whether everything is stopped, by the events the sequence issued
        // (a stop written by hand above them is applied by `catch_up`).
        let halt = client
            .query_opt(
                "SELECT kind, left(by_whom, $1), left(origin, $1) FROM agentcap_fleet_events \
                 WHERE kind IN ('stop-all', 'resume') AND id <= $2 ORDER BY id DESC LIMIT 1",
                &[&MAX_TEXT, &last],
            )
            .await
            .map_err(|e| describe(&e))?;
        self.applied_out_of_sequence.clear();
        if let Some(row) = halt
            && row.get::<_, &str>(0) == "stop-all"
        {
            let by = format!(
                "fleet: everything was stopped by {} on host {}, not resumed since",
                row.get::<_, &str>(1),
                row.get::<_, &str>(2)
            );
            let stop = self.stop.clone();
            let _ = tokio::task::spawn_blocking(move || stop.apply_fleet_stop_all(&by)).await;
        }
        self.last_applied = Some(last);
        Ok(())
    }

    /// Apply the events written since the last one applied, and
    /// acknowledge each.
    async fn catch_up(&mut self, client: &Client) -> Result<(), String> {
        let after = self.last_applied.unwrap_or(0);
        // Ids only grow. Fewer means the database was restored from a
        // backup or replaced by a replica behind it: stops written since
        // could hide below what was applied. Out of touch, and join again.
        let row = client
            .query_one(
                &format!(
                    "SELECT coalesce((SELECT max(id) FROM agentcap_fleet_events), 0), {ISSUED}"
                ),
                &[],
            )
            .await
            .map_err(|e| describe(&e))?;
        let (newest, issued): (i64, i64) = (row.get(0), row.get(1));
        if newest < after {
            self.last_applied = None;
            return Err(format!(
                "the fleet's events went back from #{after} to #{newest} (restored from a backup, or a replica behind?); joining the fleet again"
            ));
        }
        // Ids come from the events' sequence. A row above what it issued was
        // written by hand with an id of its own: a stop there is applied
        // (once: remembered with its content and time, so a later event that
        // gets the same id is not taken for it), a resume is not, and what
        // was applied is never taken to reach past the sequence, so a row
        // planted with a huge id cannot hide the stops written after it.
        let mut cursor = after;
        loop {
            let rows = client
                .query(
                    "SELECT id, kind, left(session, $2), left(by_whom, $2), left(origin, $2), at::text \
                     FROM agentcap_fleet_events WHERE id > $1 ORDER BY id LIMIT $3",
                    &[&cursor, &MAX_TEXT, &EVENTS_PER_READ],
                )
                .await
                .map_err(|e| describe(&e))?;
            let complete = (rows.len() as i64) < EVENTS_PER_READ;
            for row in rows {
                let id: i64 = row.get(0);
                cursor = id;
                let seen = SeenEvent {
                    id,
                    kind: row.get(1),
                    session: row.get(2),
                    by: row.get(3),
                    origin: row.get(4),
                    at: row.get(5),
                };
                if id <= issued {
                    if !self.applied_out_of_sequence.remove(&seen) {
                        self.apply(client, &row).await?;
                    }
                    self.last_applied = Some(id);
                } else if seen.kind != "resume" && !self.applied_out_of_sequence.contains(&seen) {
                    if self.applied_out_of_sequence.len() >= MAX_OUT_OF_SEQUENCE {
                        return Err(format!(
                            "over {MAX_OUT_OF_SEQUENCE} fleet events were written by hand with ids the events' sequence did not issue; out of touch until they are removed"
                        ));
                    }
                    self.apply(client, &row).await?;
                    self.applied_out_of_sequence.insert(seen);
                }
            }
            if complete {
                return Ok(());
            }
        }
    }

    /// Apply one event row and acknowledge it.
    async fn apply(&mut self, client: &Client, row: &tokio_postgres::Row) -> Result<(), String> {
        let id: i64 = row.get(0);
        let origin: String = row.get(4);
        // An event this host cannot read is taken as a stop of everything:
        // failing closed.
        let event = FleetEvent::from_row(row.get(1), row.get(2), row.get(3)).unwrap_or(
            FleetEvent::StopAll {
                by: format!("an unreadable fleet event #{id}"),
            },
        );
        let stopped = if origin == self.link.instance {
            // This host's own stops were applied when they were pressed.
            0
        } else {
            let stop = self.stop.clone();
            let from = origin.clone();
            tokio::task::spawn_blocking(move || stop.apply_fleet_event(&event, &from))
                .await
                .map_err(|e| format!("applying a fleet stop failed: {e}"))?
        };
        client
            .execute(
                "INSERT INTO agentcap_fleet_acks (event_id, instance, host, stopped) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&id, &self.link.instance, &self.link.host, &(stopped as i32)],
            )
            .await
            .map_err(|e| describe(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_connection_string_is_never_in_debug_output() {
        let settings: super::FleetSettings = toml::from_str(
            "postgres = \"host=db user=fleet password=hunter2-secret\"\nhost = \"laptop\"",
        )
        .unwrap();
        let link = super::FleetLink::new(settings, std::path::PathBuf::from("."));
        let shown = format!("{link:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("laptop"), "{shown}");
    }

    #[test]
    fn plaintext_is_allowed_only_to_this_machine() {
        let settings = |postgres: &str| -> super::FleetSettings {
            toml::from_str(&format!("postgres = \"{postgres}\"\nhost = \"h\"")).unwrap()
        };
        for local in [
            "host=127.0.0.1 user=f sslmode=disable",
            "host=localhost user=f sslmode=disable",
            "host=::1 user=f sslmode=disable",
            "host=/run/postgresql user=f sslmode=disable",
        ] {
            assert!(settings(local).check().is_ok(), "{local}");
        }
        for remote in [
            "host=192.0.2.2 user=f sslmode=disable",
            "host=db.example user=f sslmode=disable",
            "host=127.0.0.1 hostaddr=192.0.2.2 user=f sslmode=disable",
        ] {
            let err = settings(remote).check().unwrap_err();
            assert!(err.contains("sslmode=disable"), "{remote}: {err}");
        }
        let config: tokio_postgres::Config = "host=192.0.2.2 user=f".parse().unwrap();
        assert!(!super::on_this_machine(&config));
    }
}
