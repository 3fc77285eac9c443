//! Attacks from the agent's side (its MCP client, the streams it owns, the
//! connections it can open on the machine): stop and consent must hold
//! against them, not only against the tool.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use agentcap_tests::{Workspace, http_request, login_link, triage_policy};
use serde_json::{Value, json};

const AGENTCAP: &str = env!("CARGO_BIN_EXE_agentcap-cli");

/// A raw JSON-RPC client over `agentcap serve`'s stdio: it sends exactly
/// the envelopes a hostile client would.
struct RawClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl RawClient {
    fn start(policy: &Path, control: &Path, extra: &[&str]) -> RawClient {
        RawClient::start_logging(policy, control, extra, None)
    }

    /// [`RawClient::start`] with `AGENTCAP_LOG=debug` and the server's
    /// stderr (the client's stream) written to `log`.
    fn start_logging(
        policy: &Path,
        control: &Path,
        extra: &[&str],
        log: Option<&Path>,
    ) -> RawClient {
        let mut command = Command::new(AGENTCAP);
        command
            .args(["--no-cache", "serve", "--policy"])
            .arg(policy)
            .args(extra)
            .env("AGENTCAP_CONTROL_DIR", control)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(log) = log {
            command
                .env("AGENTCAP_LOG", "debug")
                .stderr(std::fs::File::create(log).unwrap());
        }
        let mut child = command.spawn().expect("start agentcap serve");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut client = RawClient {
            child,
            stdin,
            stdout,
            next_id: 0,
        };
        let init = client.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}}),
        );
        assert!(init.get("result").is_some(), "{init}");
        client.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        client
    }

    fn send(&mut self, message: &Value) {
        writeln!(self.stdin, "{message}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Send a request and wait for its response (skipping notifications).
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the server closed stdout"
            );
            let message: Value = serde_json::from_str(&line).unwrap();
            if message["id"] == json!(id) && message.get("method").is_none() {
                return message;
            }
        }
    }

    /// `tools/call`, optionally with the per-request protocol envelope.
    fn call(&mut self, name: &str, args: Value, envelope: bool) -> Value {
        let mut params = json!({"name": name, "arguments": args});
        if envelope {
            params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2025-11-25"});
        }
        self.request("tools/call", params)
    }
}

impl Drop for RawClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a tools/call response says: `Ok(result)` or `Err(message)`.
fn outcome(response: &Value) -> Result<Value, String> {
    let result = &response["result"];
    if result["isError"] == json!(true) || response.get("error").is_some() {
        return Err(response.to_string());
    }
    Ok(result["structuredContent"]["result"].clone())
}

fn agentcap(args: &[&str], control: &Path) -> (i32, String) {
    let out = Command::new(AGENTCAP)
        .args(args)
        .env("AGENTCAP_CONTROL_DIR", control)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `agentcap serve --http` on a free loopback port, without the page.
fn http_server(policy: &Path, control: &Path) -> Command {
    let mut command = Command::new(AGENTCAP);
    command
        .args([
            "--no-cache",
            "serve",
            "--no-approvals",
            "--http",
            "127.0.0.1:0",
            "--policy",
        ])
        .arg(policy)
        .env("AGENTCAP_CONTROL_DIR", control);
    command
}

fn served() -> (Workspace, std::path::PathBuf, tempfile::TempDir) {
    let ws = Workspace::new();
    ws.policy(&triage_policy(""));
    let policy = ws.dir.path().join("agentcap.toml");
    (ws, policy, tempfile::tempdir().unwrap())
}

/// After `agentcap stop --all`, nothing the stopped connection does has an
/// effect, whichever envelope it uses; `agentcap resume` lets new sessions
/// (a new connection) run again, while the stopped ones stay stopped.
#[test]
fn a_stopped_client_cannot_go_on_through_another_envelope_or_a_new_session() {
    let (ws, policy, control) = served();
    let mut client = RawClient::start(&policy, control.path(), &["--no-approvals"]);
    let plan = |client: &mut RawClient, envelope: bool| {
        outcome(&client.call("inbox-triage.plan", json!({"folder": "INBOX"}), envelope))
    };
    assert!(plan(&mut client, false).is_ok(), "works before the stop");
    let (code, said) = agentcap(&["stop", "--all"], control.path());
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("stopped session"), "{said}");
    for envelope in [false, true, false, true] {
        let refused = plan(&mut client, envelope).expect_err("stopped");
        assert!(
            refused.contains("was stopped"),
            "envelope {envelope}: {refused}"
        );
    }
    // A second connection made after the stop starts stopped.
    let mut later = RawClient::start(&policy, control.path(), &["--no-approvals"]);
    let (code, said) = agentcap(&["stop", "--all"], control.path());
    assert_eq!(code, 0, "{said}");
    let refused = plan(&mut later, true).expect_err("stopped");
    assert!(refused.contains("was stopped"), "{refused}");
    // The person resumes: a new session runs, the stopped ones do not.
    let (code, said) = agentcap(&["resume"], control.path());
    assert_eq!(code, 0, "{said}");
    let mut fresh = RawClient::start(&policy, control.path(), &["--no-approvals"]);
    assert!(
        plan(&mut fresh, false).is_ok(),
        "a new session after resume"
    );
    assert!(
        plan(&mut client, true).is_err(),
        "a stopped session stays stopped"
    );
    let journal = agentcap::journal::Journal::open(&ws.dir.path().join("journal.sqlite"), false)
        .unwrap()
        .all()
        .unwrap();
    assert!(journal.iter().any(|r| r.kind == "stop" && r.session == "*"));
    assert!(journal.iter().any(|r| r.kind == "resume"));
}

/// More idle connections to the approvals page than the process has file
/// descriptors cannot take STOP away: the control socket keeps accepting,
/// and `agentcap stop --all` stops the waiting call. Afterwards the page
/// serves again.
#[test]
fn a_connection_flood_cannot_take_stop_away() {
    let (ws, policy, control) = served();
    // The server gets 256 file descriptors; the flood opens 600 connections.
    let mut server = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec {AGENTCAP} --no-cache serve --approvals 127.0.0.1:0 --policy {}",
            policy.display()
        ))
        .env("AGENTCAP_CONTROL_DIR", control.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = server.stdin.take().unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let url = login_link(control.path());
    let addr = url["http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut line = String::new();
    let mut rpc = |message: Value, wait: bool, line: &mut String| {
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
        if wait {
            line.clear();
            stdout.read_line(line).unwrap();
        }
    };
    rpc(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}}),
        true,
        &mut line,
    );
    rpc(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        false,
        &mut line,
    );
    // A triage that waits on the page for a person.
    rpc(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "inbox-triage.triage", "arguments": {"folder": "INBOX"}}}),
        false,
        &mut line,
    );
    std::thread::sleep(Duration::from_millis(500));
    let target: std::net::SocketAddr = addr.parse().unwrap();
    let flood: Vec<std::net::TcpStream> = (0..600)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).ok()
        })
        .collect();
    assert!(
        flood.len() > 300,
        "the flood opened {} connections",
        flood.len()
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = ws.snapshot();
    let (code, said) = agentcap(&["stop", "--all"], control.path());
    assert_eq!(code, 0, "STOP must get through the flood: {said}");
    assert!(said.contains("stopped session"), "{said}");
    // The waiting call ends as stopped.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the stopped call answers");
    assert!(line.contains("was stopped"), "{line}");
    assert_eq!(ws.snapshot(), before, "nothing changed");
    drop(flood);
    std::thread::sleep(Duration::from_millis(300));
    let key = agentcap_tests::link_key(&url).to_string();
    let (status, _) = http_request(
        &addr,
        "GET",
        "/api/state",
        &[(agentcap::approvals::KEY_HEADER, &key)],
        "",
    );
    assert_eq!(status, 200, "the page serves again after the flood");
    let _ = server.kill();
    let _ = server.wait();
}

/// Every local user can reach a loopback port: MCP over HTTP needs the
/// bearer secret there too.
#[test]
fn loopback_http_needs_the_bearer() {
    let (_ws, policy, control) = served();
    let mut server = http_server(&policy, control.path())
        .env_remove("AGENTCAP_MCP_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut addr = None;
    let mut bearer = None;
    for line in stderr.by_ref().map_while(Result::ok) {
        if let Some(rest) = line.split("http://").nth(1)
            && rest.ends_with("/mcp")
        {
            addr = Some(rest.trim_end_matches("/mcp").to_string());
        }
        if let Some(rest) = line.split("Authorization: Bearer ").nth(1) {
            bearer = Some(rest.split('`').next().unwrap().to_string());
            break;
        }
    }
    // Keep reading the server's stderr, so that it never writes to a
    // closed pipe.
    std::thread::spawn(move || stderr.for_each(drop));
    let (addr, bearer) = (addr.expect("address"), bearer.expect("bearer"));
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "stranger", "version": "0"}}})
    .to_string();
    let headers = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    let (status, _) = http_request(&addr, "POST", "/mcp", &headers, &body);
    assert_eq!(status, 401, "an unauthenticated local request is refused");
    let auth = format!("Bearer {bearer}");
    let mut with_auth = headers.to_vec();
    with_auth.push(("Authorization", &auth));
    let (status, _) = http_request(&addr, "POST", "/mcp", &with_auth, &body);
    assert_eq!(status, 200);
    let _ = server.kill();
    let _ = server.wait();
}

/// A parked consent request (2026-07-28 `requestState`) can be answered
/// only by the client it was sent to, declaring forms: another client that
/// learned the handle, or one that declares no forms, is refused and the
/// parked request is left as it was.
#[test]
fn a_request_state_is_answered_only_by_its_own_client() {
    let (ws, policy, control) = served();
    // Debug logging on: the server's stderr is the client's stream, and
    // must not carry the handle either.
    let log = control.path().join("server.log");
    let mut client =
        RawClient::start_logging(&policy, control.path(), &["--no-approvals"], Some(&log));
    let before = ws.snapshot();
    let envelope = |name: &str, forms: bool| {
        let capabilities = if forms {
            json!({"elicitation": {"form": {}}})
        } else {
            json!({})
        };
        json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": name, "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": capabilities,
        })
    };
    let first = client.request(
        "tools/call",
        json!({"name": "inbox-triage.triage", "arguments": {"folder": "INBOX"},
               "_meta": envelope("alice-client", true)}),
    );
    let state = first["result"]["requestState"]
        .as_str()
        .unwrap_or_else(|| panic!("the triage must wait for consent: {first}"))
        .to_string();
    let retry = |client: &mut RawClient, name: &str, forms: bool, answer: Value| {
        client.request(
            "tools/call",
            json!({"name": "inbox-triage.triage", "arguments": {"folder": "INBOX"},
                   "requestState": state, "inputResponses": {"consent": answer},
                   "_meta": envelope(name, forms)}),
        )
    };
    let approve_all = json!({"action": "accept", "content": {"approve": (1..=12).map(|i| i.to_string()).collect::<Vec<_>>()}});
    let stranger = retry(&mut client, "mallory", true, approve_all.clone());
    assert!(
        stranger["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("another client"),
        "{stranger}"
    );
    let formless = retry(&mut client, "alice-client", false, approve_all);
    assert!(formless.get("error").is_some(), "{formless}");
    assert_eq!(ws.snapshot(), before, "nothing approved");
    // The request still waits for its own client, which declines.
    let own = retry(
        &mut client,
        "alice-client",
        true,
        json!({"action": "decline"}),
    );
    assert!(own.get("error").is_none(), "{own}");
    assert_eq!(ws.snapshot(), before);
}

/// Over streamable HTTP too: after `agentcap stop --all`, a client that
/// initializes again (a new MCP session) gets no effect, until a person
/// resumes.
#[test]
fn a_new_http_session_after_stop_all_starts_stopped() {
    let (_ws, policy, control) = served();
    let mut server = http_server(&policy, control.path())
        .env("AGENTCAP_MCP_SECRET", "s3cret")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(server.stderr.take().unwrap()).lines();
    let addr = stderr
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split("http://")
                .nth(1)
                .filter(|rest| rest.ends_with("/mcp"))
                .map(|rest| rest.trim_end_matches("/mcp").to_string())
        })
        .expect("the server prints its address");
    std::thread::spawn(move || stderr.for_each(drop));
    let post = |session: Option<&str>, body: Value| {
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("Authorization", "Bearer s3cret"),
            ("MCP-Protocol-Version", "2025-11-25"),
        ];
        if let Some(id) = session {
            headers.push(("Mcp-Session-Id", id));
        }
        http_request(&addr, "POST", "/mcp", &headers, &body.to_string()).1
    };
    let session = || {
        let response = post(
            None,
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"}}}),
        );
        let id = response
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("mcp-session-id")
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no session id: {response}"));
        post(
            Some(&id),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        );
        id
    };
    let plan = |id: &str| {
        post(
            Some(id),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "inbox-triage.plan", "arguments": {"folder": "INBOX"}}}),
        )
    };
    let first = session();
    let before = plan(&first);
    assert!(
        before.contains("structuredContent") && !before.contains("was stopped"),
        "{before}"
    );
    let (code, said) = agentcap(&["stop", "--all"], control.path());
    assert_eq!(code, 0, "{said}");
    assert!(plan(&first).contains("was stopped"));
    let again = session();
    let after = plan(&again);
    assert!(
        after.contains("was stopped"),
        "a new session after the stop ran: {after}"
    );
    let (code, said) = agentcap(&["resume"], control.path());
    assert_eq!(code, 0, "{said}");
    let fresh = session();
    assert!(!plan(&fresh).contains("was stopped"), "resumed");
    let _ = server.kill();
    let _ = server.wait();
}

/// A tool has at most one request in front of a person per session: a
/// second one, from a concurrent call of the same tool in the same
/// session, is refused at once instead of stacking up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_per_tool_waits_for_a_person_at_a_time() {
    use agentcap::consent::{Approver, Decision, DecisionFuture, SessionId};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    /// A person who answers (no) only when told to; counts the questions.
    struct Person {
        asked: Arc<AtomicUsize>,
        answer: Arc<tokio::sync::Notify>,
    }
    impl Approver for Person {
        fn channel(&self) -> &str {
            "test-user"
        }
        fn decide<'a>(&'a self, _: &'a agentcap::consent::ConsentPrompt) -> DecisionFuture<'a> {
            Box::pin(async {
                self.asked.fetch_add(1, Ordering::SeqCst);
                self.answer.notified().await;
                Decision::Decline("no".into())
            })
        }
    }
    let (asked, answer) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(tokio::sync::Notify::new()),
    );
    let ws = Workspace::new();
    let (runtime, tool) = ws.load_guest(
        &triage_policy(""),
        agentcap_tests::shared(Person {
            asked: asked.clone(),
            answer: answer.clone(),
        }),
        "inbox-triage",
        "inbox_triage",
    );
    let (runtime, tool) = (Arc::new(runtime), Arc::new(tool));
    let call = |runtime: Arc<agentcap::Runtime>, tool: Arc<agentcap::LoadedTool>| {
        tokio::spawn(async move {
            runtime
                .call(
                    &tool,
                    &SessionId("s".into()),
                    "triage",
                    &json!({"folder": "INBOX"}),
                )
                .await
                .unwrap()
                .result
        })
    };
    let first = call(runtime.clone(), tool.clone());
    for _ in 0..600 {
        if asked.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "the first request is in front of the person"
    );
    // The person has not answered: the second call's requests are refused
    // at once (the person is not asked), so it ends on its own.
    let second = tokio::time::timeout(Duration::from_secs(60), call(runtime.clone(), tool.clone()))
        .await
        .expect("the second request is refused, not queued behind the first")
        .unwrap();
    assert!(
        second
            .to_string()
            .contains("a tool asks one question at a time"),
        "{second}"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1, "the person was asked once");
    // The person answers the first call's questions; it ends.
    let first = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            answer.notify_waiters();
            if first.is_finished() {
                break first.await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert!(first.to_string().contains("declined"), "{first}");
}
