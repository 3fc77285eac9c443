//! The approvals page of `agentcap serve`: driven in headless Chromium as a
//! user on a phone would (approve a subset, watch the effect in the feed,
//! press STOP during a purge), and attacked without a browser (no secret,
//! foreign Origin, GET, forged Host). The MCP client here has no
//! elicitation, so the page is the only way to approve.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use agentcap::approvals::KEY_HEADER;
use agentcap::journal::Journal;
use agentcap_tests::{
    PageUser, Workspace, browser_tools, guest, http_request, link_key, login_link, triage_policy,
};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const AGENTCAP: &str = env!("CARGO_BIN_EXE_agentcap-cli");

/// An agent whose client cannot show forms.
#[derive(Clone)]
struct NoForms;

impl ClientHandler for NoForms {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("no-forms-agent", "1.0"),
        )
    }
}

struct Served {
    ws: Workspace,
    client: Arc<RunningService<RoleClient, NoForms>>,
    /// The page's login link (with the secret).
    url: String,
    /// Everything the server wrote on the stream the MCP client owns.
    agent_sees: Arc<std::sync::Mutex<String>>,
    /// `host:port` of the page.
    addr: String,
    _control: tempfile::TempDir,
}

async fn serve() -> Served {
    serve_in(Workspace::new()).await
}

async fn serve_in(ws: Workspace) -> Served {
    ws.policy(&triage_policy(""));
    let control = tempfile::tempdir().unwrap();
    let policy = ws.dir.path().join("agentcap.toml");
    let command = tokio::process::Command::new(AGENTCAP).configure(|c| {
        c.args(["--no-cache", "serve", "--policy"])
            .arg(&policy)
            .env("AGENTCAP_CONTROL_DIR", control.path());
    });
    let (transport, stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agentcap serve");
    // The client's stderr is the agent's side: keep all of it, to show
    // that the page's secret never appears there.
    let mut lines = BufReader::new(stderr.expect("stderr")).lines();
    let agent_sees = Arc::new(std::sync::Mutex::new(String::new()));
    let seen = agent_sees.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.lock().unwrap().push_str(&line);
            seen.lock().unwrap().push('\n');
        }
    });
    let dir = control.path().to_path_buf();
    let url = tokio::task::spawn_blocking(move || login_link(&dir))
        .await
        .unwrap();
    let addr = url["http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // The server says where the page is, without its secret.
    for _ in 0..100 {
        if agent_sees.lock().unwrap().contains(&addr) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stderr_text = agent_sees.lock().unwrap().clone();
    assert!(
        stderr_text.contains(&format!("http://{addr}/")),
        "{stderr_text}"
    );
    assert!(
        !stderr_text.contains(link_key(&url)),
        "the page's secret reached a stream the MCP client reads: {stderr_text}"
    );
    let client = NoForms
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .expect("MCP handshake");
    Served {
        ws,
        client: Arc::new(client),
        url,
        agent_sees,
        addr,
        _control: control,
    }
}

fn start_call(served: &Served, function: &str) -> tokio::task::JoinHandle<CallToolResult> {
    let client = served.client.clone();
    let params = CallToolRequestParams::new(format!("inbox-triage.{function}"))
        .with_arguments(json!({"folder": "INBOX"}).as_object().unwrap().clone());
    tokio::spawn(async move { client.call_tool(params).await.expect("tools/call") })
}

/// One headless browser at a time: two on two cores starve the servers
/// they talk to.
static BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_browser(node: &Path, modules: &Path, plan: Value) -> Value {
    let _one_at_a_time = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/approvals-e2e.mjs");
    // Node resolves `playwright-core` from the script's folder upwards, so
    // run a copy placed next to the installed module.
    let copy = modules.join("approvals-e2e.mjs");
    std::fs::copy(&script, &copy).unwrap();
    let out = std::process::Command::new(node)
        .arg(&copy)
        .arg(plan.to_string())
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn journal(ws: &Workspace) -> Vec<agentcap::journal::Record> {
    Journal::open(&ws.dir.path().join("journal.sqlite"), false)
        .unwrap()
        .all()
        .unwrap()
}

fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/approvals-phone.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(agentcap_has_browser),
    ignore = "needs node, npm and chromium: apt-get install chromium nodejs npm"
)]
async fn a_phone_approves_a_subset_and_stops_a_purge() {
    let (node, chromium, modules) = browser_tools();
    let served = serve().await;
    let before = served.ws.snapshot();

    // A triage waits for consent; the user approves 10 of the 12 archives
    // on the page and denies the deletions.
    let triage = start_call(&served, "triage");
    let report = run_browser(
        &node,
        &modules,
        json!({"url": served.url, "chromium": chromium, "phase": "approve",
               "screenshot": screenshot_path()}),
    );
    assert!(
        !report["url_after_login"].as_str().unwrap().contains("key="),
        "{report}"
    );
    assert_eq!(report["first_items"], 12, "{report}");
    assert!(
        report["first_action"]
            .as_str()
            .unwrap()
            .contains("move 12 messages to Archive")
    );
    assert!(
        report["second_action"]
            .as_str()
            .unwrap()
            .contains("delete 9 messages")
    );
    assert!(
        report["feed_outcome"]
            .as_str()
            .unwrap()
            .contains("moved 10 to Archive"),
        "{report}"
    );
    let result = match tokio::time::timeout(Duration::from_secs(90), triage).await {
        Ok(done) => done.unwrap(),
        Err(_) => panic!(
            "the triage did not end after the page's answers; browser: {report}; journal:\n{}",
            journal(&served.ws)
                .iter()
                .map(|r| r.summary_line())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    };
    let outcome = &serde_json::to_value(&result).unwrap()["structuredContent"]["result"]["ok"];
    assert_eq!(
        outcome["archived"].as_array().unwrap().len(),
        10,
        "{outcome}"
    );
    assert_eq!(outcome["deleted"], json!([]));
    assert_eq!(served.ws.ids_in("Archive").len(), 10);
    assert_eq!(served.ws.ids_in("Trash").len(), 0);
    let moved = before
        .keys()
        .filter(|k| !served.ws.snapshot().contains_key(*k))
        .count();
    assert_eq!(moved, 10);
    let records = journal(&served.ws);
    assert!(
        records.iter().any(
            |r| r.decided_by.as_deref() == Some("human via approvals page")
                && r.outcome.as_deref() == Some("approved 10 of 12")
        ),
        "the journal names the page as the channel that decided"
    );
    assert!(
        records
            .iter()
            .any(|r| r.capability.as_deref() == Some("mail.delete")
                && r.decided_by.as_deref() == Some("human via approvals page")
                && r.outcome.as_deref().unwrap_or("").starts_with("declined")),
        "the deletion was declined on the page, not left to time out"
    );
    assert!(screenshot_path().is_file());

    // A purge asks for each promotion; the user approves three, then
    // presses STOP while the fourth waits.
    let purge = start_call(&served, "purge");
    let report = run_browser(
        &node,
        &modules,
        json!({"url": served.url, "chromium": chromium, "phase": "stop"}),
    );
    assert_eq!(report["approved"].as_array().unwrap().len(), 3, "{report}");
    assert!(
        report["status"]
            .as_str()
            .unwrap()
            .contains("Stopped 1 session"),
        "{report}"
    );
    let after_stop = served.ws.snapshot();
    let result = tokio::time::timeout(Duration::from_secs(30), purge)
        .await
        .unwrap()
        .unwrap();
    let text = serde_json::to_string(&result).unwrap();
    assert_eq!(result.is_error, Some(true), "{text}");
    assert!(text.contains("was stopped"), "{text}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        served.ws.snapshot(),
        after_stop,
        "mail changed after the STOP"
    );
    assert_eq!(served.ws.ids_in("Trash").len(), 3);
    // On disk and in the journal: no effect started after the stop record.
    let records = journal(&served.ws);
    let stop = records
        .iter()
        .find(|r| r.kind == "stop")
        .expect("a stop record");
    assert!(
        !records.iter().any(|r| r.seq > stop.seq && r.kind == "call"),
        "a capability call started after the STOP"
    );
    // Through the whole session, the page's secret never reached the
    // stream the MCP client reads.
    let agent_saw = served.agent_sees.lock().unwrap().clone();
    assert!(!agent_saw.contains(link_key(&served.url)), "{agent_saw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_refuses_strangers_forgeries_and_gets() {
    let served = serve().await;
    let triage = start_call(&served, "triage");
    let addr = served.addr.clone();
    let key = link_key(&served.url).to_string();
    let state = |headers: &[(&str, &str)]| http_request(&addr, "GET", "/api/state", headers, "");
    // Wait until the triage's first request is on the page.
    let mut waited = 0;
    loop {
        let (status, body) = state(&[(KEY_HEADER, &key)]);
        assert_eq!(status, 200, "{body}");
        if body.contains("move 12 messages") {
            break;
        }
        waited += 1;
        assert!(waited < 200, "no pending request appeared: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = state(&[]);
    assert_eq!(status, 401, "no secret");
    assert!(
        !body.contains("Archive") && !body.contains("Subject"),
        "leaked: {body}"
    );
    // The page's shell holds no data and no secret.
    let (status, body) = http_request(&addr, "GET", "/", &[], "");
    assert_eq!(status, 200);
    assert!(
        !body.contains("Archive") && !body.contains(&key) && !body.contains("Subject"),
        "leaked: {body}"
    );
    assert_eq!(state(&[(KEY_HEADER, "guess")]).0, 401, "wrong secret");
    // The secret is not accepted from a cookie (another port of this host
    // would receive it) nor from the query string (logs, Referer).
    assert_eq!(state(&[("Cookie", &format!("agentcap_key={key}"))]).0, 401);
    assert_eq!(
        http_request(&addr, "GET", &format!("/api/state?key={key}"), &[], "").0,
        401
    );
    let forged = state(&[(KEY_HEADER, &key), ("Host", "evil.example")]).0;
    assert_eq!(forged, 421, "forged Host (DNS rebinding)");
    // A foreign cookie planted by another local server changes nothing.
    let planted = [
        ("Cookie", "agentcap_key=junk; agentcap=junk"),
        (KEY_HEADER, key.as_str()),
    ];
    assert_eq!(
        state(&planted).0,
        200,
        "a planted cookie cannot lock the page out"
    );

    let user = PageUser::open(&served.url);
    let id = user.next_pending()["id"].clone();
    let approve = json!({"id": id, "approve": [0, 1, 2]}).to_string();
    let post = |headers: &[(&str, &str)]| {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        http_request(&addr, "POST", "/api/decide", &all, &approve).0
    };
    assert_eq!(
        http_request(
            &addr,
            "GET",
            &format!("/api/decide?id={id}"),
            &[(KEY_HEADER, &key)],
            ""
        )
        .0,
        405,
        "GET cannot approve"
    );
    assert_eq!(post(&[]), 401, "no secret");
    assert_eq!(
        post(&[(KEY_HEADER, &key), ("Origin", "http://evil.example")]),
        403,
        "foreign Origin"
    );
    assert_eq!(
        post(&[("Cookie", &format!("agentcap_key={key}"))]),
        401,
        "a cookie is no credential"
    );
    let stop = http_request(
        &addr,
        "POST",
        "/api/stop",
        &[(KEY_HEADER, &key), ("Origin", "http://evil.example")],
        "{}",
    );
    assert_eq!(stop.0, 403, "a foreign page cannot press STOP either");
    // STOP still works with a foreign cookie planted on the host.
    let origin = format!("http://{addr}");
    let stop = http_request(
        &addr,
        "POST",
        "/api/stop",
        &[
            (KEY_HEADER, &key),
            ("Origin", &origin),
            ("Cookie", "agentcap_key=junk"),
            ("Content-Type", "application/json"),
        ],
        &json!({"session": "no-such-session"}).to_string(),
    );
    assert_eq!(stop.0, 200, "{}", stop.1);
    // None of that approved anything: the request still waits, untouched.
    let (_, still) = state(&[(KEY_HEADER, &key)]);
    assert!(still.contains("move 12 messages"), "{still}");
    assert_eq!(served.ws.ids_in("Archive").len(), 0);
    // The real page can decline it (and the deletions after it).
    for _ in 0..2 {
        let id = user.next_pending()["id"].clone();
        let (status, body) = user.decide(json!({"id": id, "decline": true}));
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result = tokio::time::timeout(Duration::from_secs(30), triage)
        .await
        .unwrap()
        .unwrap();
    let outcome = &serde_json::to_value(&result).unwrap()["structuredContent"]["result"]["ok"];
    assert_eq!(outcome["archived"], json!([]), "{outcome}");
    assert_eq!(served.ws.ids_in("Archive").len(), 0);
}

/// `agentcap call --approvals`: with no terminal, the page is where the
/// human answers.
#[test]
fn agentcap_call_is_answered_on_the_page_without_a_terminal() {
    let ws = Workspace::new();
    ws.policy(&triage_policy(""));
    let control = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(AGENTCAP)
        .args(["--no-cache", "call"])
        .arg(guest("inbox_triage"))
        .args([
            "triage",
            "--args",
            r#"{"folder":"INBOX"}"#,
            "--name",
            "inbox-triage",
        ])
        .args(["--approvals", "127.0.0.1:0", "--policy"])
        .arg(ws.dir.path().join("agentcap.toml"))
        .env("AGENTCAP_CONTROL_DIR", control.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agentcap call");
    let stderr = child.stderr.take().unwrap();
    let drained = std::thread::spawn(move || {
        let mut text = String::new();
        use std::io::Read;
        let _ = std::io::BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let url = login_link(control.path());
    let user = PageUser::open(&url);
    let archive = user.next_pending();
    assert_eq!(archive["items"].as_array().unwrap().len(), 12, "{archive}");
    let all: Vec<usize> = (0..12).collect();
    assert_eq!(
        user.decide(json!({"id": archive["id"], "approve": all})).0,
        200
    );
    let delete = user.next_pending();
    assert_ne!(delete["id"], archive["id"]);
    assert_eq!(
        user.decide(json!({"id": delete["id"], "decline": true})).0,
        200
    );
    let out = child.wait_with_output().unwrap();
    let stderr_text = drained.join().unwrap();
    assert!(
        !stderr_text.contains(link_key(&url)),
        "the secret was printed: {stderr_text}"
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result["ok"]["archived"].as_array().unwrap().len(),
        12,
        "{result}"
    );
    assert_eq!(result["ok"]["deleted"], json!([]));
    assert_eq!(ws.ids_in("Archive").len(), 12);
    assert!(journal(&ws).iter().any(|r| {
        r.decided_by.as_deref() == Some("human via approvals page")
            && r.outcome.as_deref() == Some("approved 12 of 12")
    }));
}

/// Invariant 2 in a real browser: a hostile sender's subject (escape
/// sequences, a bidi override, zero-width characters, a fake item line) is
/// shown on the page as visible markers; the visible text holds none of
/// the raw characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(agentcap_has_browser),
    ignore = "needs node, npm and chromium: apt-get install chromium nodejs npm"
)]
async fn the_page_shows_hostile_text_as_markers() {
    let (node, chromium, modules) = browser_tools();
    let ws = Workspace::new();
    std::fs::write(
        ws.maildir().join("cur/1000000000.hostile.page:2,S"),
        "From: deals@evil.example\r\nSubject: =?utf-8?b?Rmxhc2ggc2FsZSAbWzhtSElEREVOG1swbQ0KICBbMl0gRnJvbTogY2VvIOKArmZkcC5leGXigIs=?=\r\nDate: Mon, 1 Jan 2001 00:00:00 +0000\r\nList-Unsubscribe: <mailto:x@evil.example>\r\n\r\nsale\r\n",
    )
    .unwrap();
    let served = serve_in(ws).await;
    let purge = start_call(&served, "purge");
    let report = run_browser(
        &node,
        &modules,
        json!({"url": served.url, "chromium": chromium, "phase": "read"}),
    );
    let text = report["visible_text"].as_str().unwrap();
    assert!(
        text.contains(
            "Flash sale ⟨ESC⟩[8mHIDDEN⟨ESC⟩[0m⟨CR⟩⟨LF⟩ [2] From: ceo ⟨U+202E⟩fdp.exe⟨U+200B⟩"
        ),
        "{text}"
    );
    for raw in ['\u{1b}', '\u{202e}', '\u{200b}', '\r'] {
        assert!(!text.contains(raw), "{raw:?} is on the page: {text:?}");
    }
    // Stop the purge (it ignores refusals and would keep asking).
    let (code, _) = {
        let out = std::process::Command::new(AGENTCAP)
            .args(["stop", "--all"])
            .env("AGENTCAP_CONTROL_DIR", served._control.path())
            .output()
            .unwrap();
        (out.status.code(), ())
    };
    assert_eq!(code, Some(0));
    let _ = tokio::time::timeout(Duration::from_secs(30), purge).await;
}
