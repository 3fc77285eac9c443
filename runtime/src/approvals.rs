//! The approvals page: a small web page where the user sees what agents are
//! doing, answers pending consent requests, and stops everything with one
//! tap, from a phone if the page is exposed (`agentcap serve --approvals`).
//!
//! The page is one approver among others ([`crate::consent::FirstAnswer`]):
//! whichever channel answers first decides, the journal records which.
//!
//! Access: every request needs the secret (in the URL printed at start,
//! then an `HttpOnly`, `SameSite=Strict` cookie); the `Host` header must be
//! one the server was told about (no DNS rebinding); state-changing requests
//! are `POST`s carrying the page's CSRF token in a header, and a browser
//! `Origin` other than the page's own is refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
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
/// The cookie that carries the secret after the first visit.
const COOKIE: &str = "agentcap_key";
/// The header that carries the CSRF token.
const CSRF_HEADER: &str = "x-agentcap-csrf";
/// Journal records shown in the activity feed.
const FEED_LENGTH: usize = 40;

/// Consent requests waiting for an answer on the page.
#[derive(Default)]
pub struct ApprovalsBoard {
    waiting: Mutex<BTreeMap<u64, Waiting>>,
    next_id: AtomicU64,
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
    /// The exact content (a post with its label, the SQL).
    pub payload: Option<String>,
    /// How many invisible characters the content hides, in words.
    pub payload_warning: Option<String>,
    /// The tool's own claim.
    pub tool_claim: String,
    /// Seconds since the request was made.
    pub waiting_secs: u64,
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
                tool: one_line(&w.prompt.tool, 200),
                user: one_line(&w.prompt.user, 200),
                session: one_line(&w.prompt.session.0, 200),
                capability: w.prompt.capability.to_string(),
                action: w.prompt.shown_action(),
                items: w.prompt.shown_items(),
                payload: w.prompt.shown_payload(CHANNEL),
                payload_warning: w.prompt.payload_warning(),
                tool_claim: w.prompt.shown_claim(),
                waiting_secs: now.duration_since(w.asked_at).map_or(0, |d| d.as_secs()),
            })
            .collect()
    }

    /// Answer request `id`; false if it is no longer waiting (answered
    /// elsewhere, withdrawn, timed out).
    pub fn answer(&self, id: u64, decision: Decision) -> bool {
        let waiting = self.waiting.lock().unwrap().remove(&id);
        waiting.is_some_and(|w| w.answer.send(decision).is_ok())
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
    csrf: String,
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
        Arc::new(ApprovalsPage {
            board,
            stop,
            journal,
            secret: random_hex(16),
            csrf: random_hex(16),
            allowed_hosts,
        })
    }

    /// The URL to open (it carries the secret).
    pub fn url(&self, addr: SocketAddr) -> String {
        let host = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        format!("http://{host}/?key={}", self.secret)
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
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    /// Serve on `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
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

fn cookie_secret(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Host, secret, and for POSTs Origin and CSRF token; before any handler.
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
    let from_url = request.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "key")
            .map(|(_, v)| v.to_string())
    });
    let presented = cookie_secret(headers)
        .map(str::to_string)
        .or(from_url.clone());
    if !presented.is_some_and(|s| constant_time_eq(s.as_bytes(), page.secret.as_bytes())) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "open the URL agentcap printed at start (it carries the secret)",
        );
    }
    if request.method() != Method::GET {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let expected = format!("http://{host}");
            if origin.to_str().ok() != Some(expected.as_str()) {
                return refuse(StatusCode::FORBIDDEN, "cross-origin request refused");
            }
        }
        let token = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !constant_time_eq(token.as_bytes(), page.csrf.as_bytes()) {
            return refuse(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
        }
    }
    next.run(request).await
}

#[derive(Deserialize)]
struct PageQuery {
    key: Option<String>,
}

async fn page(State(page): State<Arc<ApprovalsPage>>, Query(query): Query<PageQuery>) -> Response {
    if query.key.is_some() {
        // First visit: keep the secret in a cookie and drop it from the URL.
        let cookie = format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            page.secret
        );
        let mut response = Redirect::to("/").into_response();
        response
            .headers_mut()
            .insert(header::SET_COOKIE, cookie.parse().expect("valid cookie"));
        return response;
    }
    let html = include_str!("approvals.html").replace("{{CSRF}}", &page.csrf);
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        Html(html),
    )
        .into_response()
}

async fn state(State(page): State<Arc<ApprovalsPage>>) -> Response {
    let sessions: Vec<Value> = page
        .stop
        .sessions()
        .into_iter()
        .map(|s| json!({"id": one_line(&s.id, 200), "started": s.started, "tools": s.tools, "stopped": s.stopped}))
        .collect();
    let muted: Vec<Value> = page
        .stop
        .muted_requests()
        .into_iter()
        .map(|m| json!({"session": one_line(&m.session, 200), "tool": m.tool, "capability": m.capability}))
        .collect();
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
            "pending": page.board.pending(),
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
}

async fn decide(
    State(page): State<Arc<ApprovalsPage>>,
    Json(request): Json<DecideRequest>,
) -> Response {
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
