//! The approvals page: a small web page where the user sees what agents are
//! doing, answers pending consent requests, and stops everything with one
//! tap, from a phone if the page is exposed (`agentcap serve --approvals`).
//!
//! The page is one approver among others ([`crate::consent::FirstAnswer`]):
//! whichever channel answers first decides, the journal records which.
//!
//! Access: every API request carries the secret in the `x-agentcap-key`
//! header. A person gets it in a login link (`#key=...` in the fragment)
//! delivered out of the agent's reach: a 0600 file in the user's runtime
//! folder, printed by `agentcap approvals`, and the operator's terminal
//! (`/dev/tty`), never the streams an MCP client owns. The page keeps it in
//! the tab's `sessionStorage` (scoped to this origin, port included) and
//! erases it from the address bar; no cookie is used, since cookies are
//! shared by every port of a host. The `Host` header must be one the server
//! was told about (no DNS rebinding); state changes are `POST`s, and a
//! browser `Origin` other than the page's own is refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::consent::{Approver, ConsentPrompt, Decision, DecisionFuture, SharedApprover};
use crate::journal::Journal;
use crate::render::one_line;
use crate::secret::{constant_time_eq, random_hex};
use crate::session::StopHandle;

/// The page's name as a consent channel (recorded in the journal).
pub const CHANNEL: &str = "approvals page";
/// Journal records shown in the activity feed.
const FEED_LENGTH: usize = 40;

/// Consent requests waiting for an answer on the page.
#[derive(Default)]
pub struct ApprovalsBoard {
    waiting: Mutex<BTreeMap<u64, Waiting>>,
    next_id: AtomicU64,
    /// Unused single-use links: token -> the request's journal record.
    links: Mutex<std::collections::HashMap<String, i64>>,
}

struct Waiting {
    prompt: ConsentPrompt,
    asked_at: SystemTime,
    answer: oneshot::Sender<Decision>,
}

/// A pending request as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PendingView {
    /// Answer with this id.
    pub id: u64,
    /// What is asked, every text through the one rendering path.
    #[serde(flatten)]
    pub request: crate::fleet_requests::SharedRequest,
    /// Seconds since the request was made.
    pub waiting_secs: u64,
    /// The fleet host where the tool waits, for a request of another host
    /// (`id` is then its number in the fleet's database).
    pub host: Option<String>,
    /// For a request of another host: the digest of what is shown, sent
    /// back with the answer (the asking host checks it).
    pub digest: Option<String>,
}

impl PendingView {
    fn of_fleet(pending: crate::fleet_requests::FleetPending) -> PendingView {
        PendingView {
            id: pending.id.max(0) as u64,
            request: pending.request,
            waiting_secs: pending.waiting_secs,
            host: Some(pending.host),
            digest: Some(pending.digest),
        }
    }
}

impl ApprovalsBoard {
    /// An empty board.
    pub fn new() -> Arc<ApprovalsBoard> {
        Arc::new(ApprovalsBoard::default())
    }

    /// The approver that puts requests on this board.
    pub fn approver(self: &Arc<Self>) -> SharedApprover {
        Arc::new(PageApprover {
            board: self.clone(),
        })
    }

    /// What is waiting, oldest first.
    pub fn pending(&self) -> Vec<PendingView> {
        let now = SystemTime::now();
        self.waiting
            .lock()
            .unwrap()
            .iter()
            .map(|(id, w)| PendingView {
                id: *id,
                request: crate::fleet_requests::SharedRequest::of(&w.prompt),
                waiting_secs: now.duration_since(w.asked_at).map_or(0, |d| d.as_secs()),
                host: None,
                digest: None,
            })
            .collect()
    }

    /// Answer request `id`; false if it is no longer waiting (answered
    /// elsewhere, withdrawn, timed out).
    pub fn answer(&self, id: u64, decision: Decision) -> bool {
        let waiting = self.waiting.lock().unwrap().remove(&id);
        waiting.is_some_and(|w| w.answer.send(decision).is_ok())
    }

    /// A single-use link to the request recorded as journal record
    /// `request_seq`, for an MCP URL elicitation: `/r/<random>`. The link is
    /// not a credential: it opens the page (which still needs the secret)
    /// at that request, once; a second use is refused.
    pub fn link_for(&self, request_seq: i64) -> String {
        let token = random_hex(16);
        self.links
            .lock()
            .unwrap()
            .insert(token.clone(), request_seq);
        format!("/r/{token}")
    }

    /// Use a link: the board id of its request, if the link was unused and
    /// the request still waits. Either way the link is spent.
    fn use_link(&self, token: &str) -> Option<Option<u64>> {
        let request_seq = self.links.lock().unwrap().remove(token)?;
        Some(
            self.waiting
                .lock()
                .unwrap()
                .iter()
                .find(|(_, w)| w.prompt.request_seq == request_seq)
                .map(|(id, _)| *id),
        )
    }

    /// How many items request `id` has.
    fn items_of(&self, id: u64) -> Option<usize> {
        self.waiting
            .lock()
            .unwrap()
            .get(&id)
            .map(|w| w.prompt.items.len())
    }
}

/// Puts a request on the board and waits; dropping the future withdraws it.
struct PageApprover {
    board: Arc<ApprovalsBoard>,
}

/// Removes a request from the board when its asker stops waiting.
struct Withdraw<'a> {
    board: &'a ApprovalsBoard,
    id: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.board.waiting.lock().unwrap().remove(&self.id);
    }
}

impl Approver for PageApprover {
    fn channel(&self) -> &str {
        CHANNEL
    }

    fn decide<'a>(&'a self, prompt: &'a ConsentPrompt) -> DecisionFuture<'a> {
        Box::pin(async move {
            let (answer, answered) = oneshot::channel();
            let id = self.board.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            self.board.waiting.lock().unwrap().insert(
                id,
                Waiting {
                    prompt: prompt.clone(),
                    asked_at: SystemTime::now(),
                    answer,
                },
            );
            let _withdraw = Withdraw {
                board: &self.board,
                id,
            };
            answered
                .await
                .unwrap_or_else(|_| Decision::Unavailable("the request left the page".into()))
        })
    }
}

/// The page's server state.
pub struct ApprovalsPage {
    board: Arc<ApprovalsBoard>,
    stop: StopHandle,
    journal: Arc<Journal>,
    secret: String,
    allowed_hosts: Vec<String>,
}

impl ApprovalsPage {
    /// A page for `board` on `addr`. `extra_hosts` are further names the
    /// page may be reached by (`name` or `name:port`); the bound address and
    /// localhost always work.
    pub fn new(
        board: Arc<ApprovalsBoard>,
        stop: StopHandle,
        journal: Arc<Journal>,
        addr: SocketAddr,
        extra_hosts: &[String],
    ) -> Arc<ApprovalsPage> {
        let port = addr.port();
        let mut allowed_hosts = vec![
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        if !addr.ip().is_unspecified() {
            allowed_hosts.push(addr.to_string());
        }
        for host in extra_hosts {
            allowed_hosts.push(if host.contains(':') && !host.starts_with('[') {
                host.clone()
            } else {
                format!("{host}:{port}")
            });
        }
        for host in &mut allowed_hosts {
            host.make_ascii_lowercase();
        }
        // In a fleet, the page also lists the other hosts' requests.
        if let Some(fleet) = stop.fleet() {
            fleet.requests().start_listing();
        }
        Arc::new(ApprovalsPage {
            board,
            stop,
            journal,
            secret: random_hex(16),
            allowed_hosts,
        })
    }

    /// The page's address, without the secret (safe to print anywhere).
    pub fn address(&self, addr: SocketAddr) -> String {
        let host = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        format!("http://{host}/")
    }

    /// The login link for a person: the address with the secret in the
    /// fragment (`#key=...`), which browsers never send to a server, keep
    /// out of Referer headers, and the page moves into the tab's own
    /// storage (scoped to this origin, port included) before erasing it.
    /// Deliver it only where the agent's side cannot read it.
    pub fn url(&self, addr: SocketAddr) -> String {
        format!("{}#key={}", self.address(addr), self.secret)
    }

    /// The router (for tests and for embedding).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/api/state", get(state))
            .route("/api/decide", post(decide))
            .route("/api/stop", post(stop))
            .route("/api/reallow", post(reallow))
            .route("/api/resume", post(resume))
            .route("/r/{token}", get(open_link))
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    /// Serve on `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        crate::http_serve::serve_bounded(listener, self.router(), shutdown).await
    }
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("agentcap approvals: {why}\n"),
    )
        .into_response()
}

/// The header that carries the page's secret on every API request. A
/// custom header: a foreign page cannot send it cross-origin without a
/// CORS preflight, which this server never grants, so it doubles as the
/// CSRF defence. No cookie is used: cookies are shared by every port of a
/// host, so another local server would receive one (and could overwrite it).
pub const KEY_HEADER: &str = "x-agentcap-key";

/// Host on every request; the secret, and for POSTs the Origin, on every
/// API request; before any handler. The page's shell (`GET /`) holds no
/// data and needs no secret.
async fn guard(State(page): State<Arc<ApprovalsPage>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !page.allowed_hosts.contains(&host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this Host is not allowed (start with --approvals-host to add a name)",
        );
    }
    // The shell and single-use request links hold no data: no secret.
    let path = request.uri().path();
    if request.method() == Method::GET && (path == "/" || path.starts_with("/r/")) {
        return next.run(request).await;
    }
    let presented = headers.get(KEY_HEADER).and_then(|v| v.to_str().ok());
    if !presented.is_some_and(|s| constant_time_eq(s.as_bytes(), page.secret.as_bytes())) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "open the login link (run `agentcap approvals` on the machine agentcap runs on)",
        );
    }
    if request.method() != Method::GET
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let expected = format!("http://{host}");
        if origin.to_str().ok() != Some(expected.as_str()) {
            return refuse(StatusCode::FORBIDDEN, "cross-origin request refused");
        }
    }
    next.run(request).await
}

async fn page() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        Html(include_str!("approvals.html")),
    )
        .into_response()
}

async fn state(State(page): State<Arc<ApprovalsPage>>) -> Response {
    let mut sessions: Vec<Value> = page
        .stop
        .sessions()
        .into_iter()
        .map(|s| json!({"id": one_line(&s.id, 200), "started": s.started, "tools": s.tools, "stopped": s.stopped}))
        .collect();
    // In a fleet, the other hosts' sessions too (a stop reaches them
    // through the fleet).
    if let Some(fleet) = page.stop.fleet() {
        sessions.extend(
            fleet
                .requests()
                .listed_sessions()
                .into_iter()
                .map(|s| json!(s)),
        );
    }
    let muted: Vec<Value> = page
        .stop
        .muted_requests()
        .into_iter()
        .map(|m| json!({"session": one_line(&m.session, 200), "tool": m.tool, "capability": m.capability}))
        .collect();
    let mut pending = page.board.pending();
    if let Some(fleet) = page.stop.fleet() {
        pending.extend(
            fleet
                .requests()
                .listed()
                .into_iter()
                .map(PendingView::of_fleet),
        );
    }
    let feed: Vec<Value> = match page.journal.tail(FEED_LENGTH, None) {
        Ok(records) => records
            .iter()
            .rev()
            .map(|r| json!({"seq": r.seq, "kind": r.kind, "line": r.summary_line()}))
            .collect(),
        Err(e) => vec![json!({"seq": 0, "kind": "error", "line": format!("journal: {e}")})],
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "pending": pending,
            "sessions": sessions,
            "muted": muted,
            "halted": page.stop.is_halted(),
            "feed": feed,
        })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct DecideRequest {
    id: u64,
    /// Item numbers (from 0) to approve; absent or empty with `decline`.
    #[serde(default)]
    approve: Vec<usize>,
    #[serde(default)]
    decline: bool,
    /// For a request of another fleet host: the digest the page showed.
    #[serde(default)]
    digest: Option<String>,
}

async fn decide(
    State(page): State<Arc<ApprovalsPage>>,
    Json(request): Json<DecideRequest>,
) -> Response {
    if let Some(digest) = &request.digest {
        return decide_in_fleet(&page, &request, digest).await;
    }
    let Some(items) = page.board.items_of(request.id) else {
        return refuse(
            StatusCode::GONE,
            "that request is no longer waiting (answered elsewhere, withdrawn or timed out)",
        );
    };
    let decision = if request.decline {
        Decision::Decline("declined on the approvals page".into())
    } else {
        let mut chosen: Vec<usize> = request.approve.into_iter().filter(|i| *i < items).collect();
        chosen.sort_unstable();
        chosen.dedup();
        if chosen.is_empty() {
            Decision::Decline("nothing was selected on the approvals page".into())
        } else {
            Decision::Approve(chosen)
        }
    };
    if page.board.answer(request.id, decision) {
        Json(json!({"ok": true})).into_response()
    } else {
        refuse(StatusCode::GONE, "that request is no longer waiting")
    }
}

/// Answer a request of another fleet host: written to the fleet's
/// database (the first answer wins), applied by the asking host, which
/// confirms.
async fn decide_in_fleet(page: &ApprovalsPage, request: &DecideRequest, digest: &str) -> Response {
    use crate::fleet_requests::{AnswerOutcome, FleetAnswer};
    let Some(fleet) = page.stop.fleet() else {
        return refuse(StatusCode::BAD_REQUEST, "this host is not in a fleet");
    };
    let Ok(id) = i64::try_from(request.id) else {
        return refuse(StatusCode::BAD_REQUEST, "no such request");
    };
    let answer = if request.decline {
        FleetAnswer::Decline(format!(
            "declined on the approvals page of fleet host {}",
            fleet.host()
        ))
    } else {
        FleetAnswer::Approve(request.approve.clone())
    };
    let outcome = crate::fleet_requests::answer(
        fleet.settings(),
        fleet.base_dir(),
        id,
        digest,
        &answer,
        fleet.host(),
    )
    .await;
    match outcome {
        Ok(AnswerOutcome::Applied) => Json(json!({"ok": true})).into_response(),
        Ok(AnswerOutcome::NotApplied(why)) => refuse(StatusCode::GONE, &one_line(&why, 1000)),
        Ok(AnswerOutcome::Unconfirmed) => refuse(
            StatusCode::GATEWAY_TIMEOUT,
            "the answer was written, but the host where the tool waits did not confirm it in time; it applies it when it can, unless it was answered there first",
        ),
        Err(e) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "the fleet's database cannot be reached: {}",
                one_line(&e, 500)
            ),
        ),
    }
}

/// A single-use link to one request (sent to an MCP client as a URL
/// elicitation): opens the page at that request, once.
async fn open_link(
    State(page): State<Arc<ApprovalsPage>>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    match page.board.use_link(&token) {
        None => refuse(
            StatusCode::GONE,
            "this link was already used, or it never existed; open the approvals page itself",
        ),
        Some(waiting) => {
            let target = match waiting {
                Some(id) => format!("/?request={id}"),
                None => "/?request=answered".to_string(),
            };
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, target.as_str()),
                    (header::CACHE_CONTROL, "no-store"),
                ],
            )
                .into_response()
        }
    }
}

/// After STOP EVERYTHING: let new sessions run again.
async fn resume(State(page): State<Arc<ApprovalsPage>>) -> Response {
    let stop = page.stop.clone();
    let resumed = tokio::task::spawn_blocking(move || stop.resume(CHANNEL))
        .await
        .unwrap_or(false);
    Json(json!({"resumed": resumed})).into_response()
}

#[derive(Deserialize)]
struct ReallowRequest {
    session: String,
    tool: String,
    capability: String,
}

/// Let a tool that was refused too often ask again.
async fn reallow(
    State(page): State<Arc<ApprovalsPage>>,
    Json(request): Json<ReallowRequest>,
) -> Response {
    let Some(capability) = crate::consent::Capability::parse(&request.capability) else {
        return refuse(StatusCode::BAD_REQUEST, "unknown capability");
    };
    let session = crate::consent::SessionId(request.session);
    if page
        .stop
        .reallow(&session, &request.tool, capability, CHANNEL)
    {
        Json(json!({"ok": true})).into_response()
    } else {
        refuse(StatusCode::GONE, "that tool was not silenced")
    }
}

#[derive(Deserialize)]
struct StopRequest {
    /// One session, or every session when absent.
    session: Option<String>,
}

async fn stop(
    State(page): State<Arc<ApprovalsPage>>,
    Json(request): Json<StopRequest>,
) -> Response {
    let stop = page.stop.clone();
    let reports = tokio::task::spawn_blocking(move || match request.session {
        Some(s) => vec![stop.stop_session(&crate::consent::SessionId(s), CHANNEL)],
        None => stop.stop_all(CHANNEL),
    })
    .await
    .unwrap_or_default();
    let stopped: Vec<Value> = reports
        .iter()
        .map(|r| json!({"session": r.session, "revoked": r.revoked}))
        .collect();
    Json(json!({"stopped": stopped})).into_response()
}

/// A login link kept for the person, in a 0600 file of the control folder
/// (0700); removed when dropped.
pub struct LoginLink {
    path: std::path::PathBuf,
}

impl LoginLink {
    /// Keep `url` in `dir` for `agentcap approvals`.
    pub fn write(dir: &std::path::Path, url: &str) -> std::io::Result<LoginLink> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("approvals-{}-{n}.url", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(url.as_bytes())?;
        Ok(LoginLink { path })
    }

    /// The links kept in `dir` by running processes, as (pid, url); files
    /// of processes that are gone are removed.
    pub fn find(dir: &std::path::Path) -> std::io::Result<Vec<(u32, String)>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut links = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("approvals-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !name.ends_with(".url") {
                continue;
            }
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            links.push((pid, std::fs::read_to_string(entry.path())?));
        }
        links.sort();
        Ok(links)
    }
}

impl Drop for LoginLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `text` as a QR code drawn with block characters (dark on light).
pub fn qr_code(text: &str) -> String {
    use qrcode::render::unicode::Dense1x2;
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(e) => format!("(no QR code: {e})"),
    }
}

/// Show the login link on the operator's terminal (`/dev/tty`) when the
/// operator started this process there (stdin is that terminal): the
/// person's screen, not a stream an MCP client reads. Otherwise (a client
/// started `agentcap serve` over pipes) nothing is shown: `agentcap
/// approvals` shows it.
pub fn show_on_terminal(url: &str) {
    use std::io::{IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return;
    }
    if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
        let _ = writeln!(
            tty,
            "agentcap: approvals page login link (for you, not for the agent): {url}\n{}",
            qr_code(url)
        );
    }
}
