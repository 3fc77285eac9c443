//! Tools written in Python (componentize-py) and JavaScript
//! (componentize-js), built from source by the tests: the inbox-triage
//! ports behave exactly like the Rust tool under the runtime, `agentcap call`
//! and MCP (same result, same journal records, same disk), and hostile tools
//! in each language change nothing: no environment, files, sockets,
//! processes or network; forged and stale tokens trap; a busy loop is
//! stopped, every time (its latency, p99 ≤ 5 ms, is the languages bench's);
//! a memory bomb hits the memory limit.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentcap::consent::{ConsentPrompt, Decision, ScriptedApprover, SessionId};
use agentcap::journal::Journal;
use agentcap::{AgentEngine, CallError, LoadedTool, Runtime};
use agentcap_tests::lang::{
    JS_HOSTILE, JS_INBOX_TRIAGE, PY_HOSTILE, PY_INBOX_TRIAGE, Source, npm_bin,
};
use agentcap_tests::{
    PageUser, Workspace, form_trusted, guest, login_link, python_with_mcp, shared, triage_policy,
};
use serde_json::{Value, json};

const AGENTCAP: &str = env!("CARGO_BIN_EXE_agentcap-cli");

/// The compiled-component cache the CLI runs of these tests share: a
/// Python or JavaScript component takes seconds to compile.
fn cache_dir() -> PathBuf {
    agentcap_tests::lang::repo().join("target/lang-cache")
}

/// The scripted person of these tests: approves items 1 and 3 of the
/// archive batch, declines every deletion.
fn subset_user() -> Arc<ScriptedApprover> {
    Arc::new(ScriptedApprover::new(
        "alice",
        |p: &ConsentPrompt| match p.capability.as_str() {
            "mail.archive" => Decision::Approve(vec![0, 2]),
            "mail.delete" => Decision::Decline("not these".into()),
            _ => Decision::approve_all(p),
        },
    ))
}

/// The triage policy with `component` as inbox-triage.
fn triage_policy_for(component: &Path) -> String {
    triage_policy("").replace(
        &format!("component = \"{}\"", guest("inbox_triage").display()),
        &format!("component = \"{}\"", component.display()),
    )
}

/// A runtime over `ws` under `policy` that compiles through the cache, as
/// an operator runs tools (a Python or JavaScript component takes seconds
/// to compile).
fn runtime_in(
    ws: &Workspace,
    policy: &str,
    approver: agentcap::consent::SharedApprover,
) -> Runtime {
    let engine = AgentEngine::new(Some(cache_dir())).expect("engine");
    Runtime::new(engine, ws.policy(policy), approver).expect("runtime")
}

fn load(
    ws: &Workspace,
    policy: &str,
    approver: Arc<ScriptedApprover>,
    tool: &str,
    component: &Path,
) -> (Runtime, LoadedTool) {
    let runtime = runtime_in(ws, policy, approver);
    let grants = runtime.policy().tools[tool].clone();
    let bytes = std::fs::read(component).expect("component");
    let loaded = runtime
        .load_component(tool, grants, &bytes)
        .unwrap_or_else(|e| panic!("load {}: {e}", component.display()));
    (runtime, loaded)
}

/// What a person and an auditor see of a run: the journal's records
/// without times, digests and sequence numbers.
fn journal_facts(runtime: &Runtime) -> Vec<Value> {
    runtime
        .journal()
        .all()
        .unwrap()
        .into_iter()
        .map(|r| {
            json!([
                r.kind,
                r.tool,
                r.capability,
                r.targets,
                r.decided_by,
                r.outcome,
                r.payload_digest
            ])
        })
        .collect()
}

/// Triage INBOX with the subset user, then ask for a plan of a folder
/// outside the grant; the results, the journal's facts and the Maildir
/// afterwards.
async fn triage_with(component: &Path) -> (Value, Vec<Value>, Vec<String>) {
    let ws = Workspace::new();
    let user = subset_user();
    let policy = triage_policy_for(component);
    let (runtime, tool) = load(&ws, &policy, user.clone(), "inbox-triage", component);
    let outcome = runtime
        .call(
            &tool,
            &SessionId("s".into()),
            "triage",
            &json!({"folder": "INBOX"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", component.display()));
    let mut files: Vec<String> = ws.snapshot().into_keys().collect();
    files.sort();
    let prompts: Vec<String> = user.answered().iter().map(|(p, _)| p.render()).collect();
    assert_eq!(prompts.len(), 2, "{prompts:?}");
    // A folder outside the grant: the export's err, in the host's words.
    let refused = runtime
        .call(
            &tool,
            &SessionId("s".into()),
            "plan",
            &json!({"folder": "Archive"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", component.display()));
    assert!(refused.is_error, "{}", refused.result);
    let results = json!({"triage": outcome.result, "plan-archive": refused.result});
    (results, journal_facts(&runtime), files)
}

async fn same_as_rust(source: &Source) {
    let component = source.component();
    let (rust_result, rust_journal, rust_files) = triage_with(&guest("inbox_triage")).await;
    let (result, journal, files) = triage_with(&component).await;
    assert_eq!(result, rust_result, "{}: the report differs", source.dir);
    assert_eq!(
        rust_result["triage"]["ok"]["archived"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(rust_result["triage"]["ok"]["deleted"], json!([]));
    assert!(
        rust_result["plan-archive"]["err"]
            .as_str()
            .unwrap()
            .starts_with("consent not granted: "),
        "{rust_result}"
    );
    assert_eq!(journal, rust_journal, "{}: the journal differs", source.dir);
    assert_eq!(files, rust_files, "{}: the Maildir differs", source.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
async fn the_python_port_triages_exactly_like_the_rust_tool() {
    same_as_rust(&PY_INBOX_TRIAGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(agentcap_has_node),
    ignore = "needs node and npm: apt-get install nodejs npm"
)]
async fn the_javascript_port_triages_exactly_like_the_rust_tool() {
    same_as_rust(&JS_INBOX_TRIAGE).await;
}

/// `agentcap call` of a port, answered on the approvals page (no terminal):
/// items 1 and 3 of the archive batch approved, the deletions declined.
fn cli_call_with_subset(source: &Source) {
    let component = source.component();
    let ws = Workspace::new();
    ws.policy(&triage_policy_for(&component));
    let control = tempfile::tempdir().unwrap();
    let child = Command::new(AGENTCAP)
        .arg("call")
        .arg(&component)
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
        .env("AGENTCAP_CACHE_DIR", cache_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agentcap call");
    let user = PageUser::open(&login_link(control.path()));
    let archive = user.next_pending_action("move");
    assert_eq!(archive["items"].as_array().unwrap().len(), 12, "{archive}");
    assert_eq!(
        user.decide(json!({"id": archive["id"], "approve": [0, 2]}))
            .0,
        200
    );
    let delete = user.next_pending_action("delete");
    assert_eq!(
        user.decide(json!({"id": delete["id"], "decline": true})).0,
        200
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        source.dir,
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result["ok"]["archived"].as_array().unwrap().len(),
        2,
        "{result}"
    );
    assert_eq!(result["ok"]["deleted"], json!([]));
    assert_eq!(
        result["ok"]["not-approved"].as_array().unwrap().len(),
        19,
        "{result}"
    );
    assert_eq!(ws.ids_in("Archive").len(), 2);
    assert!(ws.ids_in("Trash").is_empty());
    let journal = Journal::open(&ws.dir.path().join("journal.sqlite"), false).unwrap();
    let records = journal.all().unwrap();
    assert!(records.iter().any(|r| {
        r.decided_by.as_deref() == Some("human via approvals page")
            && r.outcome.as_deref() == Some("approved 2 of 12")
    }));
    assert!(records.iter().any(|r| {
        r.kind == "decision"
            && r.capability.as_deref() == Some("mail.delete")
            && r.outcome
                .as_deref()
                .is_some_and(|o| o.starts_with("declined"))
    }));
}

#[test]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
fn agentcap_call_runs_the_python_port_with_consent() {
    cli_call_with_subset(&PY_INBOX_TRIAGE);
}

#[test]
#[cfg_attr(
    not(agentcap_has_node),
    ignore = "needs node and npm: apt-get install nodejs npm"
)]
fn agentcap_call_runs_the_javascript_port_with_consent() {
    cli_call_with_subset(&JS_INBOX_TRIAGE);
}

/// An MCP agent (the official Python SDK) calls the port: consent by
/// elicitation, items 1 and 3 approved, the deletions declined.
fn over_mcp(source: &Source) {
    let component = source.component();
    let python = python_with_mcp();
    let ws = Workspace::new();
    ws.policy(&form_trusted(&triage_policy_for(&component)));
    let policy = ws.dir.path().join("agentcap.toml");
    let plan = json!({
        "server": {
            "command": AGENTCAP,
            "args": ["serve", "--no-approvals", "--policy", policy],
            "env": {
                "AGENTCAP_CACHE_DIR": cache_dir(),
                "HOME": std::env::var("HOME").unwrap_or_default(),
                "PATH": std::env::var("PATH").unwrap_or_default(),
            },
        },
        "mode": "legacy",
        "steps": [
            {"op": "list"},
            {"op": "call", "name": "inbox-triage.triage", "args": {"folder": "INBOX"},
             "answers": [{"action": "accept", "approve": ["1", "3"]}, {"action": "decline"}]},
        ]
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp/agent.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(plan.to_string())
        .output()
        .expect("run the Python agent");
    assert!(
        out.status.success(),
        "{}: the MCP client failed:\n{}",
        source.dir,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = report["steps"].as_array().unwrap();
    let listed: Vec<&str> = steps[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "inbox-triage.plan",
            "inbox-triage.triage",
            "inbox-triage.purge"
        ]
    );
    let asked = steps[1]["elicitations"].as_array().unwrap();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked[0]["message"]
            .as_str()
            .unwrap()
            .contains("move 12 messages to Archive")
    );
    let outcome = &steps[1]["result"]["structuredContent"]["result"]["ok"];
    assert_eq!(
        outcome["archived"].as_array().unwrap().len(),
        2,
        "{outcome}"
    );
    assert_eq!(outcome["deleted"], json!([]));
    assert_eq!(ws.ids_in("Archive").len(), 2);
    assert!(ws.ids_in("Trash").is_empty());
    let journal = Journal::open(&ws.dir.path().join("journal.sqlite"), false).unwrap();
    let lines: Vec<String> = journal
        .all()
        .unwrap()
        .iter()
        .map(|r| r.summary_line())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("by human via MCP client `mcp` (elicitation): approved 2 of 12")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("mail.delete was declined: declined in the MCP client"))
    );
}

#[test]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
fn an_mcp_agent_runs_the_python_port_with_consent() {
    over_mcp(&PY_INBOX_TRIAGE);
}

#[test]
#[cfg_attr(
    not(all(agentcap_has_python, agentcap_has_node)),
    ignore = "needs python3 with venv, node and npm: apt-get install python3 python3-venv nodejs npm"
)]
fn an_mcp_agent_runs_the_javascript_port_with_consent() {
    over_mcp(&JS_INBOX_TRIAGE);
}

const HOSTILE_POLICY: &str = "user = \"alice\"\n[mail]\nmaildir = \"Maildir\"\n\
    [tools.hostile]\ncomponent = \"x.wasm\"\nlimits = { wall_time_ms = 60000, memory_mb = 128 }\n\
    [[tools.hostile.grants]]\ncapability = \"mail.delete\"\nmode = \"standing\"\nfolders = [\"INBOX\"]\n";

/// The hostile tool of `source` under [`HOSTILE_POLICY`] (plus, for a tool
/// that imports `wasi:http`, [`js_http_policy`]'s grant).
fn load_hostile(ws: &Workspace, source: &Source) -> (Arc<Runtime>, Arc<LoadedTool>) {
    let approver = Arc::new(ScriptedApprover::new("alice", Decision::approve_all));
    let policy = if source.http {
        js_http_policy()
    } else {
        HOSTILE_POLICY.to_string()
    };
    let (runtime, tool) = load(ws, &policy, approver, "hostile", &source.component());
    (Arc::new(runtime), Arc::new(tool))
}

async fn hostile_call(
    runtime: &Runtime,
    tool: &LoadedTool,
    function: &str,
    args: Value,
) -> Result<Value, CallError> {
    runtime
        .call(tool, &SessionId("h".into()), function, &args)
        .await
        .map(|o| o.result)
}

/// No capability call was journaled: nothing got past the Gate.
fn assert_no_capability_call(runtime: &Runtime) {
    let records = runtime.journal().all().unwrap();
    let calls: Vec<_> = records.iter().filter(|r| r.kind == "call").collect();
    assert!(
        calls.is_empty(),
        "a capability call was journaled: {calls:?}"
    );
}

/// A forged and a stale token: the guest traps on the handle (the host
/// never sees it), the trap is journaled, and no mail moves.
async fn tokens_cannot_be_forged_or_reused(source: &Source) {
    let ws = Workspace::new();
    let (runtime, tool) = load_hostile(&ws, source);
    let before = ws.snapshot();
    let id = ws.ids_in("INBOX")[0].clone();
    for function in ["forged-token", "stale-token"] {
        let err = hostile_call(&runtime, &tool, function, json!({"id": id}))
            .await
            .expect_err(function);
        assert!(matches!(err, CallError::Trap { .. }), "{function}: {err}");
    }
    assert_eq!(ws.snapshot(), before, "a forged or stale token moved mail");
    assert_no_capability_call(&runtime);
    let records = runtime.journal().all().unwrap();
    assert_eq!(
        records.iter().filter(|r| r.kind == "tool-failure").count(),
        2
    );
}

/// A runtime with `component` loaded as `hostile` under `policy`, its
/// workspace (and journal) on tmpfs when there is one, so that the stop
/// record's fsync does not dominate a stop's latency.
fn spinner(component: &Path, policy: &str) -> (Workspace, Arc<Runtime>, Arc<LoadedTool>) {
    let shm = Path::new("/dev/shm");
    let ws = if shm.is_dir() {
        Workspace::new_in(shm)
    } else {
        Workspace::new()
    };
    let approver = Arc::new(ScriptedApprover::new("alice", Decision::approve_all));
    let (runtime, tool) = load(&ws, policy, approver, "hostile", component);
    (ws, Arc::new(runtime), Arc::new(tool))
}

/// One stop of `spin`: from `stop_session()` to the call's end.
async fn stop_latency(runtime: &Arc<Runtime>, tool: &Arc<LoadedTool>, session: &str) -> Duration {
    let session = SessionId(session.into());
    let (r, t, s) = (runtime.clone(), tool.clone(), session.clone());
    let call = tokio::spawn(async move { r.call(&t, &s, "spin", &json!({})).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!call.is_finished(), "the loop ended by itself");
    let started = Instant::now();
    runtime.stop_session(&session, "test");
    let ended = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the loop must end")
        .unwrap();
    let latency = started.elapsed();
    assert!(matches!(ended, Err(CallError::Stopped { .. })), "{ended:?}");
    latency
}

/// A busy loop in `source` is stopped every time, as the Rust hostile
/// tool's is: stops of the two alternate (40 each) and the latencies are
/// printed beside each other.
async fn a_busy_loop_is_stopped(source: &Source) {
    let policy = if source.http {
        js_http_policy()
    } else {
        HOSTILE_POLICY.to_string()
    };
    let (_rust_ws, rust_runtime, rust_tool) = spinner(&guest("hostile_resources"), &policy);
    let (_ws, runtime, tool) = spinner(&source.component(), &policy);
    let (mut rust, mut lang) = (Vec::new(), Vec::new());
    for i in 0..40 {
        rust.push(stop_latency(&rust_runtime, &rust_tool, &format!("rust-{i}")).await);
        lang.push(stop_latency(&runtime, &tool, &format!("lang-{i}")).await);
    }
    rust.sort();
    lang.sort();
    let p99 = |l: &[Duration]| l[l.len() - 2];
    eprintln!(
        "stop latency, p50 / p99: rust {:?} / {:?}, {} {:?} / {:?}",
        rust[rust.len() / 2],
        p99(&rust),
        source.dir,
        lang[lang.len() / 2],
        p99(&lang)
    );
    // Every stop ended the loop, promptly. How promptly (p99 ≤ 5 ms, as
    // for a Rust tool) is measured by the languages bench on a quiet
    // machine (BENCHMARKS.md), not asserted here: on a loaded CI machine
    // one late sample decides a p99 of 40.
    let slowest = lang[lang.len() - 1].max(rust[rust.len() - 1]);
    assert!(
        slowest < Duration::from_secs(1),
        "{}: {lang:?}, rust {rust:?}",
        source.dir
    );
}

/// Allocating 300 MiB under a 128 MiB limit ends the call with the memory
/// error; the host then serves the next call.
async fn a_memory_bomb_hits_the_limit(source: &Source) {
    let ws = Workspace::new();
    let (runtime, tool) = load_hostile(&ws, source);
    let err = hostile_call(&runtime, &tool, "grow", json!({"mib": 300}))
        .await
        .expect_err("must be stopped");
    assert!(
        matches!(err, CallError::Memory { limit_mb: 128, .. }),
        "{}: {err}",
        source.dir
    );
    let ok = hostile_call(&runtime, &tool, "grow", json!({"mib": 4}))
        .await
        .unwrap();
    assert_eq!(ok, json!(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
async fn hostile_python_sees_no_environment_files_network_or_processes() {
    // SAFETY: a variable only this test sets; the guest must not see it.
    unsafe { std::env::set_var("AGENTCAP_TEST_SECRET", "hunter2") };
    let ws = Workspace::new();
    let (runtime, tool) = load_hostile(&ws, &PY_HOSTILE);
    let before = ws.snapshot();
    let env = hostile_call(&runtime, &tool, "read-env", json!({}))
        .await
        .unwrap();
    assert!(!env.to_string().contains("hunter2"), "{env}");
    assert_eq!(env, json!(""), "CPython saw an environment");

    let file = hostile_call(&runtime, &tool, "read-file", json!({"path": "/etc/passwd"}))
        .await
        .unwrap();
    assert!(file.as_str().unwrap().starts_with("blocked:"), "{file}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let connect = hostile_call(&runtime, &tool, "open-socket", json!({"addr": addr}))
        .await
        .unwrap();
    let said = connect.as_str().unwrap();
    assert!(said.starts_with("blocked:"), "{said}");
    assert!(
        listener.accept().is_err(),
        "a connection reached the listener"
    );

    let marker = ws.dir.path().join("spawned");
    let spawn = hostile_call(&runtime, &tool, "spawn", json!({"path": marker}))
        .await
        .unwrap();
    assert!(spawn.as_str().unwrap().starts_with("blocked:"), "{spawn}");
    assert!(!marker.exists(), "a process ran");
    assert_eq!(ws.snapshot(), before);
    assert_no_capability_call(&runtime);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
async fn hostile_python_cannot_forge_or_reuse_a_token() {
    tokens_cannot_be_forged_or_reused(&PY_HOSTILE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
async fn a_python_busy_loop_is_stopped() {
    a_busy_loop_is_stopped(&PY_HOSTILE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
async fn a_python_memory_bomb_hits_the_memory_limit() {
    a_memory_bomb_hits_the_limit(&PY_HOSTILE).await;
}

/// A policy for the hostile JavaScript tool with an `http.send` grant for
/// one origin that is not where the tool sends.
fn js_http_policy() -> String {
    format!(
        "{HOSTILE_POLICY}[[tools.hostile.grants]]\ncapability = \"http.send\"\nmode = \"standing\"\n\
         origins = [\"https://tracker.example.com\"]\n[http]\ntimeout_ms = 3000\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(agentcap_has_node),
    ignore = "needs node and npm: apt-get install nodejs npm"
)]
async fn hostile_javascript_sees_no_environment_and_fetch_needs_a_grant() {
    // Without an http grant the component, which imports wasi:http for
    // fetch, is refused before it runs, naming the capability.
    let ws = Workspace::new();
    let runtime = runtime_in(&ws, HOSTILE_POLICY, shared(agentcap_tests::Silent));
    let grants = runtime.policy().tools["hostile"].clone();
    let bytes = std::fs::read(JS_HOSTILE.component()).unwrap();
    let err = match runtime.load_component("hostile", grants, &bytes) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a component importing wasi:http was linked without a grant"),
    };
    assert!(err.contains("wasi:http") && err.contains("http"), "{err}");

    // With a grant for another origin: the environment is empty, and a
    // fetch to a listening loopback port is refused by the host.
    // SAFETY: a variable only this test sets; the guest must not see it.
    unsafe { std::env::set_var("AGENTCAP_TEST_SECRET", "hunter2") };
    let (runtime, tool) = load_hostile(&ws, &JS_HOSTILE);
    let env = hostile_call(&runtime, &tool, "read-env", json!({}))
        .await
        .unwrap();
    assert!(!env.to_string().contains("hunter2"), "{env}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/steal", listener.local_addr().unwrap());
    let fetched = hostile_call(&runtime, &tool, "fetch-url", json!({"url": url}))
        .await
        .unwrap();
    assert!(
        fetched.as_str().unwrap().starts_with("blocked:"),
        "{fetched}"
    );
    assert!(
        listener.accept().is_err(),
        "a connection reached the listener"
    );
    let refusals = agentcap_tests::refusal_records(&runtime);
    assert!(
        refusals
            .iter()
            .any(|r| r.capability.as_deref() == Some("http.send")),
        "{refusals:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(agentcap_has_node),
    ignore = "needs node and npm: apt-get install nodejs npm"
)]
async fn hostile_javascript_cannot_forge_or_reuse_a_token() {
    let ws = Workspace::new();
    let (runtime, tool) = load_hostile(&ws, &JS_HOSTILE);
    let before = ws.snapshot();
    let id = ws.ids_in("INBOX")[0].clone();
    for function in ["forged-token", "stale-token"] {
        let outcome = hostile_call(&runtime, &tool, function, json!({"id": id})).await;
        // componentize-js checks the handle before calling the host: an
        // error in the guest, or a trap; never a deletion.
        match &outcome {
            Err(CallError::Trap { .. }) => {}
            Ok(v) => assert!(v.get("err").is_some(), "{function}: {v}"),
            Err(e) => panic!("{function}: {e}"),
        }
    }
    assert_eq!(ws.snapshot(), before, "a forged or stale token moved mail");
    assert_no_capability_call(&runtime);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(agentcap_has_node),
    ignore = "needs node and npm: apt-get install nodejs npm"
)]
async fn a_javascript_busy_loop_is_stopped() {
    a_busy_loop_is_stopped(&JS_HOSTILE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(agentcap_has_node),
    ignore = "needs node and npm: apt-get install nodejs npm"
)]
async fn a_javascript_memory_bomb_hits_the_memory_limit() {
    a_memory_bomb_hits_the_limit(&JS_HOSTILE).await;
}

/// The TypeScript types in sdk/js/types are what `jco types` makes of
/// tools-wit today.
#[test]
#[cfg_attr(
    not(agentcap_has_node),
    ignore = "needs node and npm: apt-get install nodejs npm"
)]
fn the_javascript_sdk_types_match_the_wit() {
    let out = tempfile::tempdir().unwrap();
    agentcap_tests::lang::run(
        Command::new(npm_bin("jco"))
            .args([
                "types",
                "tools-wit/wit",
                "--world-name",
                "agentcap:tools/host@0.1.0",
                "--quiet",
                "-o",
            ])
            .arg(out.path())
            .current_dir(agentcap_tests::lang::repo()),
    );
    let committed = agentcap_tests::snapshot(&agentcap_tests::lang::repo().join("sdk/js/types"));
    let fresh = agentcap_tests::snapshot(out.path());
    assert_eq!(
        committed, fresh,
        "sdk/js/types is stale: run `npm run types` in sdk/js"
    );
}

/// `agentcap new NAME --lang LANG` writes a project; built with the README's
/// toolchain it passes `agentcap inspect`: the one function, and exactly
/// the capabilities its world imports.
fn new_tool_builds_and_inspects(lang: &str) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("mail-counter");
    let out = Command::new(AGENTCAP)
        .args(["new", "mail-counter", "--lang", lang, "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "wit/world.wit",
        "wit/deps/agentcap-tools/consent.wit",
        "agentcap.toml",
        "README.md",
    ] {
        assert!(dir.join(file).is_file(), "{lang}: no {file}");
    }
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let component = match lang {
        "rust" => {
            assert!(readme.contains("cargo build --release --target wasm32-wasip2"));
            agentcap_tests::lang::run(
                Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                    .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
                    .current_dir(&dir)
                    .env(
                        "CARGO_TARGET_DIR",
                        agentcap_tests::lang::repo().join("target/scaffold"),
                    ),
            );
            agentcap_tests::lang::repo()
                .join("target/scaffold/wasm32-wasip2/release/mail_counter.wasm")
        }
        "python" => {
            assert!(readme.contains("componentize-py -d wit -w local:mail-counter/mail-counter"));
            agentcap_tests::lang::run(
                Command::new(agentcap_tests::lang::componentize_py())
                    .args([
                        "-d",
                        "wit",
                        "-w",
                        "local:mail-counter/mail-counter",
                        "componentize",
                        "app",
                    ])
                    .args(["-o", "mail_counter.wasm"])
                    .current_dir(&dir)
                    .env_remove("VIRTUAL_ENV"),
            );
            dir.join("mail_counter.wasm")
        }
        _ => {
            assert!(readme.contains("npm install && npm run build"));
            // The toolchain the tests installed, pinned like the project's
            // package.json pins it.
            std::os::unix::fs::symlink(
                agentcap_tests::lang::js_toolchain().join("node_modules"),
                dir.join("node_modules"),
            )
            .unwrap();
            agentcap_tests::lang::run(
                Command::new("npm")
                    .args(["run", "build", "--silent"])
                    .current_dir(&dir),
            );
            dir.join("mail_counter.wasm")
        }
    };
    let out = Command::new(AGENTCAP)
        .args(["inspect", "--json"])
        .arg(&component)
        .env("AGENTCAP_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{lang}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        info["capabilities"],
        json!(["consent", "mail"]),
        "{lang}: {info}"
    );
    let functions: Vec<&str> = info["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(functions, ["count-messages"], "{lang}");
    assert!(
        info["imports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["kind"] != "forbidden" && i["kind"] != "unknown"),
        "{lang}: {info}"
    );

    // And it runs under its own policy snippet, on a mailbox.
    let ws = Workspace::new();
    // The snippet as the README says, with the component where this test
    // built it and the grant standing (nobody is at a terminal here).
    let policy: String = std::fs::read_to_string(dir.join("agentcap.toml"))
        .unwrap()
        .lines()
        .map(|line| match line {
            l if l.starts_with("component = ") => {
                format!("component = {:?}", component.display().to_string())
            }
            l if l.starts_with("mode = \"ask\"") => "mode = \"standing\"".to_string(),
            l => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let policy = format!("{policy}\n[journal]\npath = \"journal.sqlite\"\n");
    std::fs::write(ws.dir.path().join("agentcap.toml"), policy).unwrap();
    let out = Command::new(AGENTCAP)
        .arg("call")
        .arg(&component)
        .args([
            "count-messages",
            "--args",
            r#"{"folder":"INBOX"}"#,
            "--name",
            "mail-counter",
            "--policy",
        ])
        .arg(ws.dir.path().join("agentcap.toml"))
        .env("AGENTCAP_CACHE_DIR", cache_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{lang}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result, json!({"ok": ws.ids_in("INBOX").len()}), "{lang}");
}

#[test]
fn agentcap_new_makes_a_rust_tool_that_builds_and_inspects() {
    new_tool_builds_and_inspects("rust");
}

#[test]
#[cfg_attr(
    not(agentcap_has_python),
    ignore = "needs python3 with venv: apt-get install python3 python3-venv"
)]
fn agentcap_new_makes_a_python_tool_that_builds_and_inspects() {
    new_tool_builds_and_inspects("python");
}

#[test]
#[cfg_attr(
    not(agentcap_has_node),
    ignore = "needs node and npm: apt-get install nodejs npm"
)]
fn agentcap_new_makes_a_javascript_tool_that_builds_and_inspects() {
    new_tool_builds_and_inspects("js");
}
