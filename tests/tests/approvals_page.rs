//! The approvals page of `agentcap serve`: driven in headless Chromium as a
//! user on a phone would (approve a subset, watch the effect in the feed,
//! press STOP during a purge), and attacked without a browser (no secret,
//! foreign Origin, GET, forged Host). The MCP client here has no
//! elicitation, so the page is the only way to approve.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use agentcap::journal::Journal;
use agentcap_tests::{Workspace, browser_tools, guest, http_request, triage_policy};
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
    /// The page's URL (with the secret).
    url: String,
    /// `host:port` of the page.
    addr: String,
    _control: tempfile::TempDir,
}

async fn serve() -> Served {
    let ws = Workspace::new();
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
    let mut lines = BufReader::new(stderr.expect("stderr")).lines();
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the server prints the page's URL")
            .unwrap()
            .expect("stderr open");
        if let Some(at) = line.find("http://") {
            break line[at..].trim().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let addr = url["http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let client = NoForms
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .expect("MCP handshake");
    Served {
        ws,
        client: Arc::new(client),
        url,
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

fn run_browser(node: &Path, modules: &Path, plan: Value) -> Value {
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

/// A logged-in page user without a browser: the secret cookie and the
/// page's CSRF token, talking to the JSON API.
struct PageUser {
    addr: String,
    cookie: String,
    csrf: String,
}

impl PageUser {
    fn open(url: &str) -> PageUser {
        let addr = url["http://".len()..]
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let key = url.split("key=").nth(1).expect("a key in the URL");
        let cookie = format!("agentcap_key={key}");
        let (_, page) = http_request(&addr, "GET", "/", &[("Cookie", &cookie)], "");
        let csrf = page
            .split("name=\"csrf\" content=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the page carries a CSRF token")
            .to_string();
        PageUser { addr, cookie, csrf }
    }

    /// The first pending request, waiting up to 10 s for one.
    fn next_pending(&self) -> Value {
        for _ in 0..200 {
            let (_, response) = http_request(
                &self.addr,
                "GET",
                "/api/state",
                &[("Cookie", &self.cookie)],
                "",
            );
            let state: Value =
                serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            if let Some(first) = state["pending"].get(0) {
                return first.clone();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no request appeared on the page");
    }

    fn decide(&self, answer: Value) -> (u16, String) {
        let origin = format!("http://{}", self.addr);
        http_request(
            &self.addr,
            "POST",
            "/api/decide",
            &[
                ("Cookie", &self.cookie),
                ("Origin", &origin),
                ("x-agentcap-csrf", &self.csrf),
                ("Content-Type", "application/json"),
            ],
            &answer.to_string(),
        )
    }
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
    let result = tokio::time::timeout(Duration::from_secs(30), triage)
        .await
        .unwrap()
        .unwrap();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_refuses_strangers_forgeries_and_gets() {
    let served = serve().await;
    let triage = start_call(&served, "triage");
    let addr = served.addr.clone();
    let key = served.url.split("key=").nth(1).unwrap().to_string();
    let cookie = format!("agentcap_key={key}");
    let state = |headers: &[(&str, &str)]| http_request(&addr, "GET", "/api/state", headers, "");
    // Wait until the triage's first request is on the page.
    let mut waited = 0;
    loop {
        let (status, body) = state(&[("Cookie", &cookie)]);
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
    let (status, body) = http_request(&addr, "GET", "/", &[], "");
    assert_eq!(status, 401, "the page itself needs the secret");
    assert!(!body.contains("csrf"), "leaked: {body}");
    assert_eq!(
        state(&[("Cookie", "agentcap_key=guess")]).0,
        401,
        "wrong secret"
    );
    let forged = state(&[("Cookie", &cookie), ("Host", "evil.example")]).0;
    assert_eq!(forged, 421, "forged Host (DNS rebinding)");

    // The page's CSRF token, as a legitimate page load gets it.
    let user = PageUser::open(&served.url);
    let csrf = user.csrf.clone();
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
            &[("Cookie", &cookie)],
            ""
        )
        .0,
        405,
        "GET cannot approve"
    );
    assert_eq!(post(&[("Cookie", &cookie)]), 403, "no CSRF token");
    assert_eq!(
        post(&[
            ("Cookie", &cookie),
            ("x-agentcap-csrf", &csrf),
            ("Origin", "http://evil.example")
        ]),
        403,
        "foreign Origin"
    );
    assert_eq!(
        post(&[("x-agentcap-csrf", &csrf)]),
        401,
        "CSRF token without the secret"
    );
    let stop = http_request(
        &addr,
        "POST",
        "/api/stop",
        &[
            ("Cookie", &cookie),
            ("Origin", "http://evil.example"),
            ("x-agentcap-csrf", &csrf),
        ],
        "{}",
    );
    assert_eq!(stop.0, 403, "a foreign page cannot press STOP either");
    // None of that approved anything: the request still waits, untouched.
    let (_, still) = state(&[("Cookie", &cookie)]);
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
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(at) = line.find("http://") {
                let _ = tx.send(line[at..].trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the page's URL is printed");
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
