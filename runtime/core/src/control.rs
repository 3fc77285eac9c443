//! The local control socket: how `agentcap stop` reaches running agentcap
//! processes. Each process that runs tools listens on a Unix socket
//! `<control dir>/agentcap-<pid>-<n>.sock` (folder 0700, socket 0600, so only the
//! same user can stop, or see, its sessions). Requests and replies are one
//! JSON line each.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::consent::{SessionId, SessionInfo};

/// Stops being carried out and reported (from a signal or the control
/// socket); the process must not exit before they are reported.
static STOPS_IN_PROGRESS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Set (by the signal handler itself, at delivery) when SIGINT or SIGTERM
/// reaches a server, which then exits from the signal's task.
static EXITING_ON_SIGNAL: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
    std::sync::OnceLock::new();

fn exiting_on_signal() -> bool {
    EXITING_ON_SIGNAL
        .get()
        .is_some_and(|flag| flag.load(std::sync::atomic::Ordering::SeqCst))
}
/// Woken when one ends.
static STOP_REPORTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Marks a stop in progress until dropped.
struct StopInProgress;

impl StopInProgress {
    fn begin() -> StopInProgress {
        STOPS_IN_PROGRESS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        StopInProgress
    }
}

impl Drop for StopInProgress {
    fn drop(&mut self) {
        STOPS_IN_PROGRESS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        STOP_REPORTED.notify_waiters();
    }
}

/// Wait (a few seconds at most) until every stop in progress has been
/// reported: a stopped call may return before `agentcap stop` got its
/// acknowledgement or the signal's report was printed, and the process must
/// not exit in between.
pub async fn settle() {
    for _ in 0..50 {
        let reported = STOP_REPORTED.notified();
        if exiting_on_signal() {
            exit_with_the_signal().await;
        }
        if STOPS_IN_PROGRESS.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            return;
        }
        let _ = tokio::time::timeout(std::time::Duration::from_millis(100), reported).await;
    }
}

/// A server stopped by a signal exits from the signal's task (code 130)
/// once its stop reached the fleet. Its serving may end first (Ctrl-C in a
/// terminal also ends the MCP client, which closes the pipe), and the
/// process must not exit with the serving's own code before that.
async fn exit_with_the_signal() -> ! {
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    std::process::exit(130)
}

use crate::session::{StopHandle, StopReport};

/// Something asked of a running agentcap.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "request")]
pub enum Request {
    /// Stop one session.
    Stop {
        /// The session id.
        session: String,
    },
    /// Stop every session.
    StopAll,
    /// List sessions.
    Sessions,
    /// Let new sessions run again after a stop of everything.
    Resume,
}

/// A running agentcap's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// The process that answered.
    pub pid: u32,
    /// Sessions stopped by this request (acknowledged: nothing in flight).
    pub stopped: Vec<StopReport>,
    /// Sessions the process knows.
    pub sessions: Vec<SessionInfo>,
    /// Whether everything is stopped there (new sessions start stopped)
    /// until `agentcap resume`.
    #[serde(default)]
    pub halted: bool,
}

/// The folder holding control sockets: `$AGENTCAP_CONTROL_DIR`, else
/// `$XDG_RUNTIME_DIR/agentcap`, else `<tmp>/agentcap-<uid>`.
pub fn control_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AGENTCAP_CONTROL_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("agentcap");
    }
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("agentcap-{uid}"))
}

/// How long one control request may take to arrive and be answered.
const CONTROL_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A listening control socket; removed when dropped.
pub struct ControlSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ControlSocket {
    /// Listen in `dir` and answer requests with `stop`. Must be called inside
    /// a tokio runtime.
    pub fn start(dir: &Path, stop: StopHandle) -> std::io::Result<ControlSocket> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("agentcap-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let task = tokio::spawn(async move {
            // The way a STOP arrives must outlive resource exhaustion: a
            // failed accept (out of file descriptors, say) is retried with
            // a short backoff, never the end of the loop.
            let mut backoff = std::time::Duration::from_millis(5);
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        backoff = std::time::Duration::from_millis(5);
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            let answered =
                                tokio::time::timeout(CONTROL_REQUEST_TIMEOUT, answer(stream, stop));
                            match answered.await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => tracing::warn!("control socket request failed: {e}"),
                                Err(_) => tracing::warn!("control socket request timed out"),
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!("control socket accept failed, retrying: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_millis(200));
                    }
                }
            }
        });
        Ok(ControlSocket { path, task })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(stream: UnixStream, stop: StopHandle) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read)
        .take(64 * 1024)
        .read_line(&mut line)
        .await?;
    let request: Request = serde_json::from_str(&line).map_err(std::io::Error::other)?;
    let _reporting = StopInProgress::begin();
    let stopped = tokio::task::spawn_blocking(move || {
        let stopped = match request {
            Request::Stop { session } => {
                let session = SessionId(session);
                if stop.knows(&session) {
                    vec![stop.stop_session(&session, "agentcap stop (control socket)")]
                } else {
                    Vec::new()
                }
            }
            Request::StopAll => stop.stop_all("agentcap stop --all (control socket)"),
            Request::Sessions => Vec::new(),
            Request::Resume => {
                stop.resume("agentcap resume (control socket)");
                Vec::new()
            }
        };
        (stopped, stop.sessions(), stop.is_halted())
    })
    .await
    .map_err(std::io::Error::other)?;
    let reply = Reply {
        pid: std::process::id(),
        stopped: stopped.0,
        sessions: stopped.1,
        halted: stopped.2,
    };
    let mut text = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

/// What sending a request to every running agentcap found.
#[derive(Debug, Default)]
pub struct Delivery {
    /// One reply per process that answered.
    pub replies: Vec<Reply>,
    /// Sockets of processes that may be running but did not answer, with
    /// why: a stop is not known to have reached them.
    pub undelivered: Vec<(PathBuf, String)>,
}

/// Send `request` to every agentcap listening in `dir`. Stale sockets of
/// dead processes (connection refused) are removed; a socket that vanished
/// meanwhile is skipped; any other failure is reported per socket in
/// [`Delivery::undelivered`] and does not keep the request from the others.
pub async fn send(dir: &Path, request: &Request) -> std::io::Result<Delivery> {
    let mut delivery = Delivery::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(delivery),
        Err(e) => return Err(e),
    };
    let mut text = serde_json::to_string(request).map_err(std::io::Error::other)?;
    text.push('\n');
    let sockets: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("sock"))
        .collect();
    // Every process at once: one slow process does not delay the others.
    let asks = sockets.into_iter().map(|path| {
        let text = text.clone();
        async move {
            let outcome =
                tokio::time::timeout(CONTROL_REQUEST_TIMEOUT, ask_one(&path, &text)).await;
            (path, outcome)
        }
    });
    for (path, outcome) in futures_util::future::join_all(asks).await {
        match outcome {
            Ok(Ok(Some(reply))) => delivery.replies.push(reply),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => delivery.undelivered.push((path, e.to_string())),
            Err(_) => delivery.undelivered.push((
                path,
                format!("no answer within {} s", CONTROL_REQUEST_TIMEOUT.as_secs()),
            )),
        }
    }
    Ok(delivery)
}

/// One process's reply; `None` when its socket is stale or gone.
async fn ask_one(path: &Path, text: &str) -> std::io::Result<Option<Reply>> {
    let mut stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            let _ = std::fs::remove_file(path);
            return Ok(None);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    stream.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await?;
    if line.is_empty() {
        return Err(std::io::Error::other(
            "the process closed the connection without answering",
        ));
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(std::io::Error::other)
}

/// Make a running runtime stoppable (inside a tokio runtime): a control socket for `agentcap stop`,
/// and SIGINT/SIGTERM (first: stop every session; second: exit).
pub fn stoppable(stop: StopHandle) -> Option<ControlSocket> {
    stoppable_with(stop, false)
}

/// [`stoppable`]; with `exit_after_stop` the first signal stops every
/// session and then exits the process (a server has nothing to show after).
pub fn stoppable_with(stop: StopHandle, exit_after_stop: bool) -> Option<ControlSocket> {
    let socket = match ControlSocket::start(&control_dir(), stop.clone()) {
        Ok(socket) => Some(socket),
        Err(e) => {
            eprintln!("warning: no control socket, `agentcap stop` cannot reach this process: {e}");
            None
        }
    };
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!(
            "warning: cannot watch SIGINT/SIGTERM: Ctrl-C will end the process without a stop"
        );
        return socket;
    };
    if exit_after_stop {
        // Flagged in the handler itself: the serving can end (its client
        // gone with the same Ctrl-C) before the task below runs.
        let flag = EXITING_ON_SIGNAL.get_or_init(Default::default);
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            if let Err(e) = signal_hook::flag::register(signal, flag.clone()) {
                tracing::warn!("cannot watch signal {signal}: {e}");
            }
        }
    }
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            if !first {
                eprintln!("\n{name} again: exiting now");
                std::process::exit(130);
            }
            first = false;
            let reporting = StopInProgress::begin();
            let stopping = stop.clone();
            let reports =
                tokio::task::spawn_blocking(move || stopping.stop_all(&format!("signal {name}")))
                    .await
                    .unwrap_or_default();
            if exit_after_stop {
                eprintln!(
                    "{name}: stopped {} session(s); no further side effect will happen. Exiting.",
                    reports.len()
                );
                // In a fleet, the stop must reach the other hosts first.
                if !stop
                    .share_with_fleet(std::time::Duration::from_secs(3))
                    .await
                {
                    eprintln!(
                        "error: the stop could NOT be written to the fleet's database: the other hosts did not get it; stop them with `agentcap stop --all --policy ...`"
                    );
                }
                std::process::exit(130);
            }
            eprintln!(
                "\n{name}: stopped {} session(s); no further side effect will happen. Press Ctrl-C again to exit.",
                reports.len()
            );
            drop(reporting);
        }
    });
    socket
}
