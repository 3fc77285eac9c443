//! `agentcap serve` driven by MCP clients we did not write: the official
//! Python SDK (both protocol eras, stdio and streamable HTTP) and rmcp's own
//! client. Every consent is answered through the client's elicitation, and
//! the Maildir on disk shows exactly what was approved.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use agentcap::journal::Journal;
use agentcap_tests::{
    PageUser, Workspace, form_trusted, guest, http_request, login_link, python_with_mcp,
    triage_policy,
};
use serde_json::{Value, json};

const AGENTCAP: &str = env!("CARGO_BIN_EXE_agentcap-cli");

/// A workspace with a policy serving inbox-triage (asks for every move),
/// the type-echo tool (no capabilities) and the hostile resource tool.
fn served_workspace() -> (Workspace, PathBuf) {
    let ws = Workspace::new();
    let policy = form_trusted(&triage_policy(&format!(
        "\n[tools.echo]\ncomponent = \"{}\"\n\n[tools.hostile]\ncomponent = \"{}\"\nlimits = {{ wall_time_ms = 60000 }}\n",
        guest("echo_types").display(),
        guest("hostile_resources").display(),
    )));
    ws.policy(&policy);
    let path = ws.dir.path().join("agentcap.toml");
    (ws, path)
}

/// Run tests/mcp/agent.py with `plan`; its JSON report.
fn run_agent(python: &Path, plan: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp/agent.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(plan.to_string())
        .output()
        .expect("run the Python agent");
    assert!(
        out.status.success(),
        "the Python MCP client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "agent output is not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stdio_server(policy: &Path) -> Value {
    json!({"command": AGENTCAP, "args": ["--no-cache", "serve", "--no-approvals", "--policy", policy]})
}

fn tool<'a>(listing: &'a Value, name: &str) -> &'a Value {
    listing["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("tools/list lacks {name}: {listing}"))
}

fn journal_lines(ws: &Workspace) -> Vec<String> {
    let journal = Journal::open(&ws.dir.path().join("journal.sqlite"), false).unwrap();
    journal
        .all()
        .unwrap()
        .iter()
        .map(|r| r.summary_line())
        .collect()
}

fn count(ws: &Workspace, folder: &str) -> usize {
    ws.ids_in(folder).len()
}

/// The whole agent session, in the handshake era (server-to-client
/// `elicitation/create`) and in 2026-07-28 (InputRequired round trips).
#[test]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
fn python_sdk_over_stdio_in_both_protocol_eras() {
    let python = python_with_mcp();
    for (mode, expected_protocol) in [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")] {
        let (ws, policy) = served_workspace();
        let before = ws.snapshot();
        let plan = json!({
            "server": stdio_server(&policy),
            "mode": mode,
            "steps": [
                {"op": "list"},
                {"op": "call", "name": "echo.api.greet", "args": {"name": "bob"}},
                {"op": "call", "name": "inbox-triage.triage", "args": {"folder": "INBOX"},
                 "answers": [{"action": "accept", "approve": ["1", "3"]}, {"action": "decline"}]},
                {"op": "cancel", "name": "hostile.spin", "after_ms": 300},
                {"op": "call", "name": "echo.api.greet", "args": {"name": "again"}},
                {"op": "call", "name": "hostile.chatty"},
                {"op": "call", "name": "inbox-triage.plan", "args": {"folder": "Archive"}},
            ]
        });
        let report = run_agent(&python, &plan);
        assert_eq!(report["protocol"], expected_protocol, "{mode}");
        let steps = report["steps"].as_array().unwrap();

        // tools/list: names, schemas from WIT, annotations from the grants.
        let listing = &steps[0];
        let triage = tool(listing, "inbox-triage.triage");
        assert_eq!(triage["annotations"]["readOnlyHint"], false);
        assert_eq!(triage["annotations"]["destructiveHint"], true);
        assert_eq!(triage["inputSchema"]["required"], json!(["folder"]));
        assert_eq!(triage["outputSchema"]["type"], "object");
        let greet = tool(listing, "echo.api.greet");
        assert_eq!(greet["annotations"]["readOnlyHint"], true);
        assert!(
            greet["description"]
                .as_str()
                .unwrap()
                .contains("no capabilities")
        );

        // A read-only tool answers with structured content.
        let hello = &steps[1]["result"];
        assert_eq!(hello["structuredContent"], json!({"result": "hello, bob"}));
        assert_eq!(hello["isError"], false);

        // Consent through elicitation: items 1 and 3 of 12 archives, deletes
        // declined. The host's rendering names the mail, item by item.
        let asked = steps[2]["elicitations"].as_array().unwrap();
        assert_eq!(asked.len(), 2, "{mode}: {asked:?}");
        let archive_form = &asked[0];
        assert!(
            archive_form["message"]
                .as_str()
                .unwrap()
                .contains("move 12 messages to Archive")
        );
        let choices = archive_form["schema"]["properties"]["approve"]["items"]["anyOf"]
            .as_array()
            .unwrap();
        assert_eq!(choices.len(), 12);
        assert!(
            asked[1]["message"]
                .as_str()
                .unwrap()
                .contains("delete 9 messages")
        );
        let outcome = &steps[2]["result"]["structuredContent"]["result"]["ok"];
        assert_eq!(
            outcome["archived"].as_array().unwrap().len(),
            2,
            "{outcome}"
        );
        assert_eq!(outcome["deleted"], json!([]));
        assert_eq!(
            count(&ws, "Archive"),
            2,
            "{mode}: exactly the approved subset"
        );
        assert_eq!(
            count(&ws, "Trash"),
            0,
            "{mode}: the declined deletes never happened"
        );
        let after = ws.snapshot();
        let moved = before.keys().filter(|k| !after.contains_key(*k)).count();
        assert_eq!(moved, 2, "{mode}: nothing else changed on disk");

        // Cancelling a runaway call interrupts its guest and leaves the
        // connection usable.
        assert_eq!(steps[3]["finished_before_cancel"], Value::Null);
        assert_eq!(
            steps[4]["result"]["structuredContent"],
            json!({"result": "hello, again"})
        );

        // 4000 lines of JSON-RPC-looking output on the guest's stdout and
        // stderr never reach the protocol stream.
        let chatty = &steps[5]["result"];
        assert_eq!(chatty["structuredContent"], json!({"result": "done"}));
        assert!(!chatty.to_string().contains("pwned"));
        // Folders outside the grant are refused, and the refusal is readable.
        let refused = &steps[6]["result"];
        assert_eq!(refused["isError"], true, "{refused}");
        assert!(refused.to_string().contains("Archive"), "{refused}");

        let journal = journal_lines(&ws);
        let decided = |needle: &str| journal.iter().any(|l| l.contains(needle));
        assert!(
            decided("by human via MCP client `mcp` (elicitation): approved 2 of 12"),
            "{journal:#?}"
        );
        assert!(decided(
            "mail.delete was declined: declined in the MCP client"
        ));
        assert!(
            decided("hostile tool-failure: tool `hostile` was interrupted: the call was cancelled"),
            "{journal:#?}"
        );
    }
}

/// A client that cannot show a form gets refusals, never approvals.
#[test]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
fn a_client_without_elicitation_is_refused() {
    let python = python_with_mcp();
    let (ws, policy) = served_workspace();
    let before = ws.snapshot();
    let plan = json!({
        "server": stdio_server(&policy),
        "mode": "legacy",
        "elicitation": false,
        "steps": [{"op": "call", "name": "inbox-triage.triage", "args": {"folder": "INBOX"}}],
    });
    let report = run_agent(&python, &plan);
    let outcome = &report["steps"][0]["result"]["structuredContent"]["result"]["ok"];
    assert_eq!(outcome["archived"], json!([]), "{outcome}");
    assert_eq!(outcome["deleted"], json!([]));
    assert!(
        outcome["refusals"]
            .to_string()
            .contains("neither an approvals page nor an operator terminal"),
        "{outcome}"
    );
    assert_eq!(ws.snapshot(), before);
}

/// `agentcap serve --http`: a server process on a free loopback port.
struct HttpServer {
    child: std::process::Child,
    addr: String,
}

impl HttpServer {
    fn start(policy: &Path, secret: Option<&str>) -> HttpServer {
        let mut command = Command::new(AGENTCAP);
        command
            .args(["--no-cache", "serve", "--http", "127.0.0.1:0", "--policy"])
            .arg(policy)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match secret {
            Some(s) => command.env("AGENTCAP_MCP_SECRET", s),
            None => command.env_remove("AGENTCAP_MCP_SECRET"),
        };
        let mut child = command.spawn().expect("start agentcap serve --http");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("http://").nth(1)
                    && rest.ends_with("/mcp")
                {
                    let _ = tx.send(rest.trim_end_matches("/mcp").to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server prints its address");
        HttpServer { child, addr }
    }

    /// POST an `initialize` to /mcp with extra headers; the status code.
    fn status(&self, headers: &[(&str, &str)]) -> u16 {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}})
        .to_string();
        let mut all = vec![
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
        ];
        all.extend_from_slice(headers);
        http_request(&self.addr, "POST", "/mcp", &all, &body).0
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Streamable HTTP with the Python SDK (2026-07-28), and the guards in front
/// of it: DNS rebinding (Host), browsers (Origin), the bearer secret.
#[test]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
fn python_sdk_over_streamable_http_and_its_guards() {
    let python = python_with_mcp();
    let (ws, policy) = served_workspace();
    let server = HttpServer::start(&policy, Some("s3cret"));
    let auth = [("Authorization", "Bearer s3cret")];
    assert_eq!(server.status(&auth), 200, "a proper request passes");
    assert_eq!(server.status(&[]), 401, "no secret");
    assert_eq!(
        server.status(&[("Authorization", "Bearer guess")]),
        401,
        "wrong secret"
    );
    let forged_host = server.status(&[auth[0], ("Host", "evil.example")]);
    assert!(
        (400..500).contains(&forged_host),
        "forged Host: {forged_host}"
    );
    let origin = server.status(&[auth[0], ("Origin", "http://evil.example")]);
    assert!((400..500).contains(&origin), "browser Origin: {origin}");

    let plan = json!({
        "server": {"url": format!("http://{}/mcp", server.addr),
                   "headers": {"Authorization": "Bearer s3cret"}},
        "mode": "2026-07-28",
        "steps": [
            {"op": "list"},
            {"op": "call", "name": "inbox-triage.triage", "args": {"folder": "INBOX"},
             "answers": [{"action": "accept", "approve": ["2"]},
                         {"action": "accept", "approve": true}]},
        ]
    });
    let report = run_agent(&python, &plan);
    assert_eq!(report["protocol"], "2026-07-28");
    assert!(report["steps"][0]["tools"].as_array().unwrap().len() >= 3);
    let outcome = &report["steps"][1]["result"]["structuredContent"]["result"]["ok"];
    assert_eq!(
        outcome["archived"].as_array().unwrap().len(),
        1,
        "{outcome}"
    );
    // `true` on a multi-item form is not a selection: nothing is deleted.
    assert_eq!(outcome["deleted"], json!([]), "{outcome}");
    assert_eq!(count(&ws, "Archive"), 1);
    assert_eq!(count(&ws, "Trash"), 0);
    // Stateless requests (a fresh handler each over HTTP) share one runtime
    // session per server, which `agentcap stop` and the page can reach.
    let journal = Journal::open(&ws.dir.path().join("journal.sqlite"), false).unwrap();
    let mut sessions: Vec<String> = journal
        .all()
        .unwrap()
        .into_iter()
        .map(|r| r.session)
        .collect();
    sessions.dedup();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let pid = sessions[0]
        .strip_prefix("mcp-http-")
        .expect("an HTTP session");
    assert!(pid.parse::<u32>().is_ok(), "{sessions:?}");
}

/// An agent (the Python SDK, `mode`, with `options` merged into its plan)
/// running a triage against `agentcap serve` with the approvals page and
/// the default policy, in a thread; and the person on the page.
struct TriageWithPage {
    ws: Workspace,
    agent: std::thread::JoinHandle<Value>,
    page: PageUser,
    /// The deletion waiting on the page.
    pending: Value,
    _control: tempfile::TempDir,
}

impl TriageWithPage {
    fn start(python: &Path, mode: &str, options: Value) -> TriageWithPage {
        let ws = Workspace::new();
        ws.policy(&triage_policy(""));
        let policy = ws.dir.path().join("agentcap.toml");
        let control = tempfile::tempdir().unwrap();
        let mut plan = json!({
            "server": {"command": AGENTCAP,
                       "args": ["--no-cache", "serve", "--approvals", "127.0.0.1:0", "--policy", policy],
                       "env": {"AGENTCAP_CONTROL_DIR": control.path(),
                               "PATH": std::env::var("PATH").unwrap()}},
            "mode": mode,
            "steps": [{"op": "call", "name": "inbox-triage.triage", "args": {"folder": "INBOX"},
                       "answers": [{"action": "decline"}]}]
        });
        for (key, value) in options.as_object().unwrap() {
            plan[key] = value.clone();
        }
        let agent = {
            let python = python.to_path_buf();
            std::thread::spawn(move || run_agent(&python, &plan))
        };
        let page = PageUser::open(&login_link(control.path()));
        // The archive may show on the page too until the client's form
        // answers it; the deletion waits there for the person.
        let pending = page.next_pending_action("delete 9 messages");
        TriageWithPage {
            ws,
            agent,
            page,
            pending,
            _control: control,
        }
    }
}

/// Invariant 9: a harness that accepts every form (no human sees it) cannot
/// approve `mail.delete` under the default policy, in either protocol era:
/// no form is even sent for it, the request waits on the approvals page,
/// and a person approves it there; the journal names the page. Archiving,
/// which destroys nothing, may still be approved by the form.
#[test]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
fn a_client_that_accepts_every_form_cannot_approve_a_delete() {
    let python = python_with_mcp();
    for mode in ["legacy", "2026-07-28"] {
        let TriageWithPage {
            ws,
            agent,
            page,
            pending,
            _control,
        } = TriageWithPage::start(&python, mode, json!({"auto_accept": true}));
        let all: Vec<usize> = (0..9).collect();
        assert_eq!(
            page.decide(json!({"id": pending["id"], "approve": all})).0,
            200
        );
        let report = agent.join().unwrap();
        let step = &report["steps"][0];
        let outcome = &step["result"]["structuredContent"]["result"]["ok"];
        assert_eq!(
            outcome["archived"].as_array().unwrap().len(),
            12,
            "{outcome}"
        );
        assert_eq!(outcome["deleted"].as_array().unwrap().len(), 9, "{outcome}");
        // The client got a form for the archive only; for the deletion it
        // got a link to the page, and accepting the link decided nothing.
        let asked = step["elicitations"].as_array().unwrap();
        let forms: Vec<&Value> = asked.iter().filter(|e| e["mode"] != "url").collect();
        assert_eq!(forms.len(), 1, "{mode}: {asked:?}");
        assert!(
            forms[0]["message"]
                .as_str()
                .unwrap()
                .contains("move 12 messages")
        );
        assert!(
            asked
                .iter()
                .any(|e| e["mode"] == "url" && e["message"].as_str().unwrap().contains("delete 9")),
            "{mode}: {asked:?}"
        );
        let lines = journal_lines(&ws);
        assert!(
            lines
                .iter()
                .any(|l| l
                    .contains("decision mail.delete by human via approvals page: approved 9 of 9")),
            "{mode}: {lines:#?}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("decision mail.delete by human via MCP client")),
            "{lines:#?}"
        );
    }
}

/// Invariant 2 through MCP: a hostile sender's subject reaches the client's
/// form (message and item titles) as visible markers, never as escape
/// sequences or bidi overrides, and cannot add a line to the form.
#[test]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
fn hostile_mail_text_reaches_the_form_as_markers() {
    let python = python_with_mcp();
    let (ws, policy) = served_workspace();
    let subject = "Flash sale \u{1b}[8mHIDDEN\u{1b}[0m\r\n  [2] From: ceo \u{202e}fdp.exe\u{200b}";
    std::fs::write(
        ws.maildir().join("cur/1000000000.hostile.mcp:2,S"),
        format!(
            "From: deals@evil.example\r\nSubject: =?utf-8?b?{}?=\r\nDate: Mon, 1 Jan 2001 00:00:00 +0000\r\nList-Unsubscribe: <mailto:x@evil.example>\r\n\r\nsale\r\n",
            base64(subject)
        ),
    )
    .unwrap();
    let before = ws.snapshot();
    let plan = json!({
        "server": stdio_server(&policy),
        "mode": "legacy",
        "steps": [{"op": "call", "name": "inbox-triage.triage", "args": {"folder": "INBOX"},
                   "answers": [{"action": "decline"}, {"action": "decline"}]}]
    });
    let report = run_agent(&python, &plan);
    let forms = report["steps"][0]["elicitations"].as_array().unwrap();
    let form = forms
        .iter()
        .find(|f| f["message"].as_str().unwrap().contains("HIDDEN"))
        .unwrap_or_else(|| panic!("no form showed the hostile mail: {forms:#?}"));
    let text = form.to_string();
    let message = form["message"].as_str().unwrap();
    for raw in ['\u{1b}', '\u{202e}', '\u{200b}', '\r'] {
        assert!(
            !message.contains(raw),
            "{raw:?} reached the form: {message:?}"
        );
        assert!(!text.contains(raw), "{raw:?} reached the form: {text}");
    }
    assert!(
        message.contains("⟨ESC⟩[8mHIDDEN⟨ESC⟩[0m⟨CR⟩⟨LF⟩  [2] From: ceo ⟨U+202E⟩fdp.exe⟨U+200B⟩"),
        "{message}"
    );
    let titles: Vec<&str> = form["schema"]["properties"]["approve"]["items"]["anyOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap())
        .collect();
    assert!(
        titles.iter().any(|t| t.contains("⟨U+202E⟩fdp.exe")),
        "{titles:?}"
    );
    assert_eq!(ws.snapshot(), before, "declined: nothing changed");
}

/// Standard base64 of `text` (for an RFC 2047 encoded word).
fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// URL-mode elicitation (both eras): for a request a form may not approve,
/// a client that supports URL mode gets a single-use link to that one
/// request on the approvals page. Opening it is not a credential and does
/// not decide: the page still needs its secret, a second use of the link is
/// refused, and the person decides on the page.
#[test]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
fn a_url_elicitation_sends_the_person_to_the_page_once() {
    let python = python_with_mcp();
    for mode in ["legacy", "2026-07-28"] {
        let TriageWithPage {
            ws,
            agent,
            page,
            pending,
            _control,
        } = TriageWithPage::start(&python, mode, json!({"open_links": true}));
        // Give the client time to open its link before the page decides.
        std::thread::sleep(Duration::from_millis(1500));
        let mut keep: Vec<usize> = (0..9).collect();
        keep.remove(0);
        assert_eq!(
            page.decide(json!({"id": pending["id"], "approve": keep})).0,
            200
        );
        let report = agent.join().unwrap();
        let step = &report["steps"][0];
        let outcome = &step["result"]["structuredContent"]["result"]["ok"];
        assert_eq!(
            outcome["deleted"].as_array().unwrap().len(),
            8,
            "{mode}: {outcome}"
        );
        let link = step["elicitations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["mode"] == "url")
            .unwrap_or_else(|| panic!("{mode}: no URL elicitation: {step}"));
        let url = link["url"].as_str().unwrap();
        assert!(url.contains("/r/") && !url.contains(&page.key), "{url}");
        assert!(
            link["message"]
                .as_str()
                .unwrap()
                .contains("delete 9 messages"),
            "{link}"
        );
        let opened = link["opened"].as_array().unwrap();
        assert_eq!(
            opened[0]["status"], 200,
            "{mode}: first use opens the page: {opened:?}"
        );
        assert!(
            opened[0]["final_url"]
                .as_str()
                .unwrap()
                .contains("/?request="),
            "{opened:?}"
        );
        assert_eq!(opened[1]["status"], 410, "{mode}: a second use is refused");
        let lines = journal_lines(&ws);
        assert!(
            lines
                .iter()
                .any(|l| l
                    .contains("decision mail.delete by human via approvals page: approved 8 of 9")),
            "{mode}: {lines:#?}"
        );
    }
}
