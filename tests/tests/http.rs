//! The `http` capability against a real local HTTP server that logs every
//! request it receives: tools use an ordinary guest HTTP library (`wstd`
//! over `wasi:http`), standing GETs need no prompt, a POST is asked for
//! with its exact body and journaled, and every attack leaves the server's
//! log without the request and the journal with the refusal.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentcap::consent::{ConsentPrompt, Decision, ScriptedApprover, SessionId};
use agentcap::{LoadedTool, Runtime};
use agentcap_tests::Workspace;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

/// What the server received: method, path, headers, body.
type Log = Arc<Mutex<Vec<(String, String, HeaderMap, String)>>>;

/// Set when the server's handler of `/silent` is dropped: the client went
/// away.
static SILENT_ABANDONED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct Abandoned;

impl Drop for Abandoned {
    fn drop(&mut self) {
        SILENT_ABANDONED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn handle(
    State((log, port)): State<(Log, u16)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    log.lock().unwrap().push((
        method.to_string(),
        uri.path().to_string(),
        headers.clone(),
        String::from_utf8_lossy(&body).into_owned(),
    ));
    match (method.as_str(), uri.path()) {
        ("GET", "/issues") => axum::Json(json!([
            {"id": 1, "title": "Crash when saving", "body": "It panics on save.", "labels": []},
            {"id": 2, "title": "How do I export?", "body": "Where is the button?", "labels": []},
            {"id": 3, "title": "Dark mode", "body": "Please add a dark theme.", "labels": []},
            {"id": 4, "title": "Typo in docs", "body": "Fixed already.", "labels": ["docs"]},
        ]))
        .into_response(),
        ("POST", path) if path.starts_with("/issues/") => {
            (StatusCode::CREATED, "{\"ok\":true}").into_response()
        }
        ("GET", "/redirect") => Response::builder()
            .status(StatusCode::FOUND)
            .header("location", format!("http://127.0.0.2:{port}/issues"))
            .body(Body::empty())
            .unwrap(),
        ("GET", "/huge") => {
            // A gigabyte, made as it is sent.
            let chunk = Bytes::from(vec![b'x'; 1 << 20]);
            let stream = futures_util::stream::iter(
                (0..1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            Body::from_stream(stream).into_response()
        }
        ("GET", "/silent") => {
            // Never answers; notes when the client gives up.
            let _watch = Abandoned;
            std::future::pending::<()>().await;
            unreachable!()
        }
        ("GET", "/slow") => {
            // Headers at once, then a byte every second, forever.
            let stream = futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b".")), ()))
            });
            Body::from_stream(stream).into_response()
        }
        _ => (StatusCode::OK, "fine").into_response(),
    }
}

async fn serve() -> (u16, Log) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Log = Default::default();
    let app = Router::new()
        .fallback(any(handle))
        .with_state((log.clone(), port));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, log)
}

fn policy(port: u16) -> String {
    format!(
        r#"
user = "alice"
[http]
timeout_ms = 3000
max_response_mb = 1
[[http.credentials]]
origin = "http://127.0.0.1:{port}"
value_file = "tracker-token"

[tools.tracker]
component = "x.wasm"
limits = {{ max_concurrent_calls = 8 }}
[[tools.tracker.grants]]
capability = "http.get"
mode = "standing"
origins = ["http://127.0.0.1:{port}"]
allow_ips = ["127.0.0.1"]
[[tools.tracker.grants]]
capability = "http.send"
mode = "ask"
origins = ["http://127.0.0.1:{port}"]
methods = ["POST"]
paths = ["/issues/"]
allow_ips = ["127.0.0.1"]
max_refusals = 1000

# Granted names that lead to non-public addresses it does not name.
[tools.prober]
component = "x.wasm"
[[tools.prober.grants]]
capability = "http.get"
mode = "standing"
origins = ["http://localhost:{port}", "http://169.254.169.254", "http://[::ffff:127.0.0.1]:{port}", "http://127.0.0.1:{port}"]
"#
    )
}

struct Setup {
    /// Kept for its folder (policy, journal, token file).
    _workspace: Workspace,
    runtime: Runtime,
    tool: LoadedTool,
    approver: Arc<ScriptedApprover>,
    port: u16,
    log: Log,
}

async fn setup(
    tool: &str,
    stem: &str,
    script: impl Fn(&ConsentPrompt) -> Decision + Send + Sync + 'static,
) -> Setup {
    let (port, log) = serve().await;
    let ws = Workspace::new();
    std::fs::write(ws.dir.path().join("tracker-token"), "Bearer s3cret-token\n").unwrap();
    let approver = Arc::new(ScriptedApprover::new("test-user", script));
    let (runtime, tool) = ws.load_guest(&policy(port), approver.clone(), tool, stem);
    Setup {
        _workspace: ws,
        runtime,
        tool,
        approver,
        port,
        log,
    }
}

impl Setup {
    async fn call(&self, function: &str, args: Value) -> Result<Value, String> {
        agentcap_tests::call_tool(&self.runtime, &self.tool, function, &args).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn logged(&self) -> Vec<(String, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(m, p, _, _)| (m.clone(), p.clone()))
            .collect()
    }

    fn journal(&self) -> Vec<agentcap::journal::Record> {
        self.runtime.journal().all().unwrap()
    }

    /// `function(args)` fails with `expected` in its message, the server
    /// received nothing, and the journal holds a refusal.
    async fn refused(&self, function: &str, args: Value, expected: &str) -> String {
        let before = self.logged().len();
        let refusals = self.refusals();
        let err = self
            .call(function, args.clone())
            .await
            .expect_err(&format!("{function}({args}) must fail"));
        assert!(err.contains(expected), "{function}({args}): {err}");
        assert_eq!(
            self.logged().len(),
            before,
            "{function}({args}) reached the server"
        );
        assert!(
            self.refusals() > refusals,
            "{function}({args}) was not journaled as refused"
        );
        err
    }

    fn refusals(&self) -> usize {
        agentcap_tests::refusal_records(&self.runtime).len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_get_needs_no_prompt_and_a_post_sends_exactly_what_was_approved() {
    let s = setup("tracker", "issue_triage", Decision::approve_all).await;
    let api = s.url("");
    let report = s.call("triage", json!({"api": api})).await.unwrap();
    assert_eq!(report["scanned"], 4, "{report}");
    assert_eq!(report["labelled"], json!([1, 2, 3]), "{report}");
    // One prompt per POST, none for the GET; each shows the exact body.
    let prompts = s.approver.answered();
    assert_eq!(prompts.len(), 3);
    let shown = prompts[0].0.render();
    assert!(
        shown.contains(&format!("POST {api}/issues/1/labels"))
            && shown.contains("\"labels\"")
            && shown.contains("content-type")
            && shown.contains("agentcap adds its authorization credential")
            && shown.contains("stamps it `ai-generated-by`"),
        "{shown}"
    );
    // The server got exactly the approved bodies, with the host's credential.
    let log = s.log.lock().unwrap().clone();
    let posts: Vec<_> = log.iter().filter(|(m, ..)| m == "POST").collect();
    assert_eq!(posts.len(), 3);
    assert_eq!(posts[0].1, "/issues/1/labels");
    assert_eq!(posts[0].3, r#"{"labels":["bug"]}"#);
    assert_eq!(posts[0].2["authorization"], "Bearer s3cret-token");
    // Every request carries the host's provenance stamp (invariant 6).
    assert_eq!(
        posts[0].2["ai-generated-by"],
        "AI agent via agentcap; tool=tracker; user=alice; approved-by=human via test-user"
    );
    assert!(
        log.iter()
            .all(|(.., headers, _)| headers.contains_key("ai-generated-by"))
    );
    // Journaled through the one Gate path; the secret is nowhere in it.
    let journal = s.journal();
    let sends: Vec<_> = journal
        .iter()
        .filter(|r| r.capability.as_deref() == Some("http.send"))
        .map(|r| r.kind.as_str())
        .collect();
    assert_eq!(
        &sends[..5],
        [
            "consent-request",
            "decision",
            "token-minted",
            "call",
            "outcome"
        ]
    );
    let outcome = journal
        .iter()
        .find(|r| r.kind == "outcome" && r.capability.as_deref() == Some("http.send"))
        .unwrap();
    assert!(
        outcome
            .outcome
            .as_deref()
            .unwrap()
            .starts_with("ok: status 201"),
        "{outcome:?}"
    );
    let dump = format!("{journal:?}");
    assert!(!dump.contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_post_sends_nothing() {
    let s = setup("tracker", "issue_triage", |_| {
        Decision::Decline("not now".into())
    })
    .await;
    let report = s.call("triage", json!({"api": s.url("")})).await.unwrap();
    assert_eq!(report["labelled"], json!([]), "{report}");
    assert_eq!(report["refusals"].as_array().unwrap().len(), 3);
    assert!(
        report["refusals"][0].as_str().unwrap().contains("declined"),
        "{report}"
    );
    assert_eq!(s.logged(), [("GET".to_string(), "/issues".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_grant_never_leave() {
    let s = setup("tracker", "hostile_http", Decision::approve_all).await;
    let port = s.port;
    let send = |method: &str, url: String, headers: Value| json!({"method": method, "url": url, "body": "{\"labels\":[\"x\"]}", "headers": headers});
    // An origin not granted, the granted host on another port or scheme.
    for url in [
        format!("http://127.0.0.1:{}/issues", port + 1),
        format!("https://127.0.0.1:{port}/issues"),
        format!("http://localhost:{port}/issues"),
    ] {
        s.refused(
            "send-request",
            send("GET", url, json!([])),
            "outside the grant",
        )
        .await;
    }
    // A method or a path outside the send grant.
    s.refused(
        "send-request",
        send("DELETE", s.url("/issues/1/labels"), json!([])),
        "method DELETE is outside the grant",
    )
    .await;
    s.refused(
        "send-request",
        send("POST", s.url("/admin/users"), json!([])),
        "path /admin/users is outside the grant",
    )
    .await;
    // Credentials and Host are the host's: the library cannot even set them.
    for header in [
        "authorization",
        "Cookie",
        "host",
        "proxy-authorization",
        "ai-generated-by",
    ] {
        let before = s.logged().len();
        let err = s
            .call(
                "send-request",
                send(
                    "POST",
                    s.url("/issues/1/labels"),
                    json!([[header, "Bearer stolen"]]),
                ),
            )
            .await
            .unwrap_err();
        assert!(err.to_lowercase().contains("forbidden"), "{header}: {err}");
        assert_eq!(s.logged().len(), before);
    }
    // A redirect is not followed by the host; following it by hand is a
    // new request, checked like any other.
    let err = s
        .call("follow", json!({"url": s.url("/redirect")}))
        .await
        .unwrap_err();
    assert!(err.contains("outside the grant"), "{err}");
    assert_eq!(s.logged(), [("GET".to_string(), "/redirect".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_forms_of_non_public_addresses_are_refused() {
    let s = setup("prober", "hostile_http", Decision::approve_all).await;
    let port = s.port;
    for (url, kind) in [
        (format!("http://localhost:{port}/x"), "loopback"),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "link-local",
        ),
        (format!("http://[::ffff:127.0.0.1]:{port}/x"), "loopback"),
        (format!("http://127.0.0.1:{port}/x"), "loopback"),
    ] {
        let args = json!({"method": "GET", "url": url, "body": "", "headers": []});
        s.refused("send-request", args, kind).await;
    }
    assert!(s.logged().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_huge_responses_hit_the_limits() {
    let s = setup("tracker", "hostile_http", Decision::approve_all).await;
    let started = Instant::now();
    let err = s
        .call("count", json!({"url": s.url("/slow")}))
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("timeout"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let err = s
        .call("count", json!({"url": s.url("/huge")}))
        .await
        .unwrap_err();
    assert!(
        err.contains("BodySize") || err.to_lowercase().contains("body size"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_without_the_grant_cannot_load_wasi_http() {
    let ws = Workspace::new();
    let runtime = ws.runtime(
        "user = \"a\"\n[tools.plain]\ncomponent = \"x.wasm\"\n",
        agentcap_tests::shared(agentcap_tests::Silent),
    );
    let grants = runtime.policy().tools["plain"].clone();
    let bytes = std::fs::read(agentcap_tests::guest("hostile_http")).unwrap();
    let err = match runtime.load_component("plain", grants, &bytes) {
        Ok(_) => panic!("loaded without an http grant"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("http") && err.contains("wasi:http"), "{err}");
    let _ = ws;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_a_request_in_flight() {
    let s = Arc::new(setup("tracker", "hostile_http", Decision::approve_all).await);
    let running = {
        let s = s.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = s
                .runtime
                .call(
                    &s.tool,
                    &SessionId("stopped".into()),
                    "count",
                    &json!({"url": s.url("/slow")}),
                )
                .await;
            (outcome.map(|o| o.result), started.elapsed())
        })
    };
    // Wait until the server has the request, then stop the session.
    while s.logged().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped_at = Instant::now();
    s.runtime.stop_session(&SessionId("stopped".into()), "test");
    let (outcome, _) = running.await.unwrap();
    assert!(
        stopped_at.elapsed() < Duration::from_secs(2),
        "the call ran {:?} after the stop",
        stopped_at.elapsed()
    );
    let err = outcome.expect_err("a stopped call is an error").to_string();
    assert!(err.contains("stopped"), "{err}");
    let journal = s.journal();
    assert!(journal.iter().any(|r| r.kind == "stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_has_at_most_max_concurrent_requests_in_flight() {
    let s = Arc::new(setup("tracker", "hostile_http", Decision::approve_all).await);
    // Five slow downloads at once; [http] allows four per tool.
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.call("count", json!({"url": s.url("/slow")})).await })
        })
        .collect();
    let mut errors = Vec::new();
    for call in calls {
        errors.push(call.await.unwrap().unwrap_err());
    }
    let over = errors
        .iter()
        .filter(|e| e.contains("requests in flight (max_concurrent)"))
        .count();
    assert_eq!(over, 1, "{errors:?}");
    assert_eq!(s.logged().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_abandons_a_request_to_a_silent_server_at_once() {
    let s = Arc::new(setup("tracker", "hostile_http", Decision::approve_all).await);
    let running = {
        let s = s.clone();
        tokio::spawn(async move {
            s.runtime
                .call(
                    &s.tool,
                    &SessionId("silent".into()),
                    "count",
                    &json!({"url": s.url("/silent")}),
                )
                .await
                .map(|o| o.result)
        })
    };
    while s.logged().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.runtime.stop_session(&SessionId("silent".into()), "test");
    let err = running.await.unwrap().expect_err("stopped").to_string();
    assert!(err.contains("stopped"), "{err}");
    // The host dropped the connection at once, not at the 3 s deadline.
    let stopped_at = Instant::now();
    while !SILENT_ABANDONED.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            stopped_at.elapsed() < Duration::from_millis(1500),
            "the request was still open {:?} after the stop",
            stopped_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
