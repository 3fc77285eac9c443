//! The Discourse-style HTTP forum backend against a local test server that
//! records requests: the post carries the host's label and the operator's
//! API key (which the tool never sees); error statuses and timeouts become
//! clear errors and nothing is retried behind the user's back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentcap::capability::forum::{DiscourseForum, Forum, ForumError};
use agentcap::consent::{Decision, ScriptedApprover, SessionId};
use agentcap_tests::Workspace;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Default)]
struct Server {
    /// (Api-Key, Api-Username, JSON body) of every POST.
    posts: Vec<(String, String, Value)>,
    fail_with: Option<u16>,
    delay: Option<Duration>,
}

type Shared = Arc<Mutex<Server>>;

async fn create_post(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let (fail, delay) = {
        let s = s.lock().unwrap();
        (s.fail_with, s.delay)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if let Some(code) = fail {
        return (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({"errors": ["rate limited"]})),
        );
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let topic = body["topic_id"].as_u64().unwrap_or(0);
    s.lock()
        .unwrap()
        .posts
        .push((header("Api-Key"), header("Api-Username"), body));
    (
        StatusCode::OK,
        Json(
            json!({"id": 501, "topic_id": topic, "username": "agent-bot", "created_at": "2026-11-27T20:00:00Z"}),
        ),
    )
}

async fn topic(Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    if id != "7.json" {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"errors": ["not found"]})),
        );
    }
    (
        StatusCode::OK,
        Json(
            json!({"id": 7, "title": "Which service is slow?", "post_stream": {"posts": [
                {"id": 70, "username": "bob", "cooked": "<p>Checkout is slow.</p>", "created_at": "2026-11-27T19:00:00Z"}
            ]}}),
        ),
    )
}

async fn latest() -> Json<Value> {
    Json(
        json!({"topic_list": {"topics": [{"id": 7, "title": "Which service is slow?", "posts_count": 1, "last_poster_username": "bob"}]}}),
    )
}

async fn start() -> (String, Shared) {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/posts.json", post(create_post))
        .route("/t/{id}", get(topic))
        .route("/latest.json", get(latest))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

/// Runs the hostile-forum tool's honest `post` through the runtime against
/// the server.
async fn post_through_runtime(
    url: &str,
    timeout_secs: u64,
) -> (Workspace, Value, agentcap::Runtime) {
    let ws = Workspace::new();
    // SAFETY: only this test binary reads this variable name.
    unsafe { std::env::set_var("AGENTCAP_TEST_FORUM_KEY", "s3cret-operator-key") };
    rusqlite::Connection::open(ws.dir.path().join("company.sqlite"))
        .unwrap()
        .execute_batch(agentcap::demo::COMPANY_SQL)
        .unwrap();
    // The tool also imports mail and data; it must be granted them to load.
    let policy = format!(
        "user = \"alice\"\n[mail]\nmaildir = \"Maildir\"\n[data]\ndatabase = \"company.sqlite\"\n\
         [forum]\nurl = \"{url}\"\napi_key_env = \"AGENTCAP_TEST_FORUM_KEY\"\napi_username = \"agent-bot\"\ntimeout_secs = {timeout_secs}\n\
         [tools.hostile]\ncomponent = \"x.wasm\"\n[[tools.hostile.grants]]\ncapability = \"forum.post\"\nmode = \"ask\"\n\
         [[tools.hostile.grants]]\ncapability = \"mail.list\"\nmode = \"standing\"\n\
         [[tools.hostile.grants]]\ncapability = \"data.query\"\nmode = \"standing\"\ntables = [\"service_metrics\"]\n"
    );
    let approver = Arc::new(ScriptedApprover::new("test-user", Decision::approve_all));
    let (runtime, tool) = ws.load_guest(&policy, approver, "hostile", "hostile_forum");
    let outcome = runtime
        .call(
            &tool,
            &SessionId("s".into()),
            "post",
            &json!({"thread": 7, "body": "It is the payments service."}),
        )
        .await
        .unwrap();
    (ws, outcome.result, runtime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_carries_the_label_and_the_operators_key() {
    let (url, state) = start().await;
    let (_ws, result, _runtime) = post_through_runtime(&url, 5).await;
    let published = result["ok"].as_str().unwrap_or_else(|| panic!("{result}"));
    assert!(
        !published.contains("s3cret"),
        "the key must never reach the tool"
    );
    let posts = state.lock().unwrap().posts.clone();
    assert_eq!(posts.len(), 1);
    let (key, user, body) = &posts[0];
    assert_eq!(
        (key.as_str(), user.as_str()),
        ("s3cret-operator-key", "agent-bot")
    );
    assert_eq!(body["topic_id"], 7);
    let raw = body["raw"].as_str().unwrap();
    assert!(raw.starts_with("It is the payments service.\n\n-- \nPosted by an AI agent (tool hostile) on behalf of alice"), "{raw}");
    assert_eq!(raw, published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_error_status_is_reported_and_journaled() {
    let (url, state) = start().await;
    state.lock().unwrap().fail_with = Some(429);
    let (_ws, result, runtime) = post_through_runtime(&url, 5).await;
    let err = result["err"].as_str().unwrap();
    assert!(
        err.contains("the forum server answered 429") && err.contains("rate limited"),
        "{err}"
    );
    let outcome = runtime
        .journal()
        .all()
        .unwrap()
        .into_iter()
        .find(|r| r.kind == "outcome")
        .unwrap();
    assert!(outcome.outcome.unwrap().starts_with("error: "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_server_times_out() {
    let (url, state) = start().await;
    state.lock().unwrap().delay = Some(Duration::from_secs(3));
    let (_ws, result, _runtime) = post_through_runtime(&url, 1).await;
    let err = result["err"].as_str().unwrap();
    assert!(err.contains("did not answer within 1 s"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn threads_are_read_and_missing_ones_named() {
    let (url, _state) = start().await;
    let forum = DiscourseForum::new(&url, "k", "agent-bot", Duration::from_secs(5));
    let (list, thread, missing) = tokio::task::spawn_blocking(move || {
        (
            forum.list_threads(),
            forum.read_thread(7),
            forum.read_thread(8),
        )
    })
    .await
    .unwrap();
    assert_eq!(list.unwrap()[0].title, "Which service is slow?");
    let thread = thread.unwrap();
    assert_eq!((thread.author.as_str(), thread.posts.len()), ("bob", 1));
    assert!(matches!(missing, Err(ForumError::NotFound(_))));
}
