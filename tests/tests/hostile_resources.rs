//! Hostile components that attack the host's resources (invariant 8): each
//! attack ends that call with an error naming the limit, and the host keeps
//! serving other calls.

use agentcap::consent::{Decision, ScriptedApprover, SessionId};
use agentcap::{CallError, LoadedTool, Runtime};
use agentcap_tests::{Workspace, shared};
use serde_json::{Value, json};

const POLICY: &str = r#"
user = "alice"
[mail]
maildir = "Maildir"
[tools.hostile]
component = "hostile_resources.wasm"
limits = { memory_mb = 32, wall_time_ms = 400 }
[[tools.hostile.grants]]
capability = "mail.list"
mode = "standing"
folders = ["INBOX"]
"#;

fn load(ws: &Workspace) -> (Runtime, LoadedTool) {
    load_with(ws, POLICY)
}

fn load_with(ws: &Workspace, policy: &str) -> (Runtime, LoadedTool) {
    ws.load_guest(
        policy,
        shared(ScriptedApprover::new("test-user", Decision::approve_all)),
        "hostile",
        "hostile_resources",
    )
}

async fn call(
    runtime: &Runtime,
    tool: &LoadedTool,
    function: &str,
    args: Value,
) -> Result<agentcap::CallOutcome, CallError> {
    runtime
        .call(tool, &SessionId("t".into()), function, &args)
        .await
}

/// The host still works: a small legitimate call succeeds.
async fn assert_host_alive(runtime: &Runtime, tool: &LoadedTool) {
    let outcome = call(runtime, tool, "grow", json!({"mib": 1}))
        .await
        .expect("host still serves calls");
    assert_eq!(outcome.result, json!(1));
}

#[tokio::test]
async fn an_endless_loop_hits_the_wall_time_limit() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws);
    let err = call(&runtime, &tool, "spin", json!({}))
        .await
        .expect_err("must be stopped");
    assert!(
        matches!(err, CallError::WallTime { limit_ms: 400, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("wall-time limit of 400 ms"),
        "{err}"
    );
    assert_host_alive(&runtime, &tool).await;
}

#[tokio::test]
async fn a_memory_bomb_hits_the_memory_limit() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws);
    for function in ["grow", "huge-string"] {
        let err = call(&runtime, &tool, function, json!({"mib": 200}))
            .await
            .expect_err("must be stopped");
        assert!(
            matches!(err, CallError::Memory { limit_mb: 32, .. }),
            "{function}: {err}"
        );
        assert!(err.to_string().contains("memory limit of 32 MiB"), "{err}");
    }
    let ok = call(&runtime, &tool, "huge-string", json!({"mib": 4}))
        .await
        .unwrap();
    assert_eq!(ok.result.as_str().unwrap().len(), 4 << 20);
    assert_host_alive(&runtime, &tool).await;
}

#[tokio::test]
async fn a_stack_overflow_is_a_trap_not_a_crash() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws);
    let err = call(&runtime, &tool, "recurse", json!({"depth": u64::MAX}))
        .await
        .expect_err("must trap");
    assert!(
        matches!(err, CallError::Trap { .. } | CallError::WallTime { .. }),
        "{err}"
    );
    assert_host_alive(&runtime, &tool).await;
}

#[tokio::test]
async fn guest_output_is_captured_and_capped() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws);
    let outcome = call(&runtime, &tool, "chatty", json!({})).await.unwrap();
    assert_eq!(outcome.result, json!("done"));
    assert!(outcome.stdout.starts_with(r#"{"jsonrpc":"2.0","id":0"#));
    assert!(outcome.stdout.len() <= agentcap::host::MAX_CAPTURED_OUTPUT + 100);
    assert!(
        outcome.stdout.ends_with("more bytes of output dropped]\n"),
        "the drop must be reported"
    );
    assert!(outcome.stderr.contains("notifications/cancelled"));
}

#[tokio::test]
async fn a_token_flood_is_capped_and_leaves_nothing_behind() {
    let ws = Workspace::new();
    // Standing grants are not time spent waiting for a human: the flood's
    // requests count against the wall time, so give it room.
    let (runtime, tool) = load_with(
        &ws,
        &POLICY.replace("wall_time_ms = 400", "wall_time_ms = 60000"),
    );
    let outcome = call(&runtime, &tool, "request-flood", json!({"n": 5000}))
        .await
        .unwrap();
    let err = outcome.result["err"]
        .as_str()
        .expect("the flood must be refused");
    assert!(
        err.starts_with("after 1000 tokens") && err.contains("at most 1000 tokens"),
        "{err}"
    );
    assert_eq!(
        runtime.gate().token_count(),
        0,
        "tokens must die with their call"
    );
    let ok = call(&runtime, &tool, "request-flood", json!({"n": 10}))
        .await
        .unwrap();
    assert_eq!(ok.result, json!({"ok": 10}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_and_result_size_are_capped() {
    let ws = Workspace::new();
    let policy = "user = \"alice\"\n[mail]\nmaildir = \"Maildir\"\n[tools.hostile]\ncomponent = \"x.wasm\"\n\
                  limits = { memory_mb = 64, wall_time_ms = 2000, max_concurrent_calls = 1, max_result_mb = 8 }\n";
    let (runtime, tool) = ws.load_guest(
        policy,
        shared(ScriptedApprover::new("test-user", Decision::approve_all)),
        "hostile",
        "hostile_resources",
    );
    let (runtime, tool) = (std::sync::Arc::new(runtime), std::sync::Arc::new(tool));
    let busy = {
        let (runtime, tool) = (runtime.clone(), tool.clone());
        tokio::spawn(async move {
            runtime
                .call(&tool, &SessionId("a".into()), "spin", &json!({}))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let err = call(&runtime, &tool, "grow", json!({"mib": 1}))
        .await
        .expect_err("over the limit");
    assert!(
        matches!(err, CallError::TooManyCalls { limit: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("max_concurrent_calls"), "{err}");
    assert!(matches!(
        busy.await.unwrap(),
        Err(CallError::WallTime { .. })
    ));
    let err = call(&runtime, &tool, "huge-string", json!({"mib": 20}))
        .await
        .expect_err("too large");
    assert!(
        matches!(err, CallError::ResultTooLarge { limit_mb: 8, .. }),
        "{err}"
    );
    assert_host_alive(&runtime, &tool).await;
}

#[tokio::test]
async fn no_ambient_authority_env_args_or_files() {
    // SAFETY: a variable only this test sets; the guest must not see it.
    unsafe { std::env::set_var("AGENTCAP_TEST_SECRET", "hunter2") };
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws);
    let outcome = call(&runtime, &tool, "ambient", json!({})).await.unwrap();
    assert_eq!(
        outcome.result,
        json!([]),
        "the guest saw something of the host"
    );
}

/// `wasi:sockets` is linked (CPython imports it whatever a tool does) with
/// every operation refused: a connection to a listening loopback port fails
/// in the guest and the listener sees nothing.
#[tokio::test]
async fn a_tool_that_opens_a_socket_gets_access_denied_and_sends_nothing() {
    let ws = Workspace::new();
    let policy = "user = \"alice\"\n[tools.t]\ncomponent = \"x.wasm\"\n";
    let (runtime, tool) = ws.load_guest(
        policy,
        shared(agentcap_tests::Silent),
        "t",
        "hostile_network",
    );
    assert!(
        tool.info()
            .imports
            .iter()
            .any(|i| i.name.starts_with("wasi:sockets/tcp")
                && i.kind == agentcap::tool::ImportKind::NoNetwork),
        "the guest should import wasi:sockets/tcp"
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let outcome = call(
        &runtime,
        &tool,
        "exfiltrate",
        json!({"addr": addr, "data": "the user's secrets"}),
    )
    .await
    .unwrap();
    let said = outcome.result.as_str().unwrap_or_default().to_string();
    assert!(said.starts_with("blocked:"), "{said}");
    assert!(
        listener.accept().is_err(),
        "a connection reached the listener"
    );
}

/// Every call gets a fresh instance whose memory the pooling allocator
/// resets (in place, since the slot is reused): nothing one call left in its
/// globals or heap is visible to the next, whichever session makes it.
#[tokio::test]
async fn a_call_cannot_see_what_an_earlier_call_left_in_memory() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws);
    let secret = "alice-private-4242";
    let first = call(&runtime, &tool, "remember", json!({"secret": secret}))
        .await
        .unwrap();
    // Nothing was there before, and the scan sees what this call stored.
    assert_eq!(first.result, json!(["", true]));
    for session in ["t", "another-session"] {
        let seen = runtime
            .call(
                &tool,
                &SessionId(session.into()),
                "find",
                &json!({"needle": secret}),
            )
            .await
            .unwrap();
        assert_eq!(
            seen.result,
            json!(false),
            "the secret survived in reused memory"
        );
        let again = call(&runtime, &tool, "remember", json!({"secret": "x"}))
            .await
            .unwrap();
        assert_eq!(
            again.result[0],
            json!(""),
            "a global survived into the next call"
        );
    }
}

/// Invariant 8: refused requests cost the guest its own wall time (only
/// waiting for a human is excused), a call's requests are counted, and what
/// a loop of refusals can make the journal hold is bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_of_refused_requests_cannot_outlive_its_budget_or_flood_the_journal() {
    let ws = Workspace::new();
    let policy = POLICY.replace("wall_time_ms = 400", "wall_time_ms = 1000");
    let (runtime, tool) = load_with(&ws, &policy);
    let targets: Vec<String> = (0..100)
        .map(|i| format!("{i:03}{}", "x".repeat(287)))
        .collect();
    let started = std::time::Instant::now();
    let err = call(
        &runtime,
        &tool,
        "refused-loop",
        json!({"capability": "no.such-capability", "targets": targets, "n": 1_000_000}),
    )
    .await
    .expect_err("a million refusals cannot fit in the call's budget");
    let took = started.elapsed();
    assert!(
        matches!(err, CallError::WallTime { limit_ms: 1000, .. })
            || err.to_string().contains("consent requests"),
        "{err}"
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "the refusal loop ran {took:?} under a 1000 ms wall-time limit"
    );
    let records = runtime.journal().all().unwrap();
    assert!(
        records.len() <= 2 * agentcap::host::MAX_REQUESTS_PER_CALL as usize + 10,
        "{} journal records for one call",
        records.len()
    );
    let bytes: usize = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap().len())
        .sum();
    assert!(bytes < 16 << 20, "the journal grew by {bytes} bytes");
    // Each request record holds a bounded part of the targets, and says
    // how many there were.
    let request = records
        .iter()
        .find(|r| r.kind == "consent-request")
        .unwrap();
    assert!(request.targets.len() <= 20, "{:?}", request.targets.len());
    assert_eq!(request.detail["targets_total"], 100);
    // The host still serves the next call.
    let ok = call(&runtime, &tool, "request-flood", json!({"n": 2}))
        .await
        .unwrap();
    assert_eq!(ok.result, json!({"ok": 2}));
}

/// Past the per-call request budget the call ends, journaled, whatever the
/// wall time allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_asks_too_often_is_ended() {
    let ws = Workspace::new();
    let policy = POLICY.replace("wall_time_ms = 400", "wall_time_ms = 600000");
    let (runtime, tool) = load_with(&ws, &policy);
    let err = call(
        &runtime,
        &tool,
        "refused-loop",
        json!({"capability": "no.such-capability", "targets": ["a"], "n": 1_000_000}),
    )
    .await
    .expect_err("the request budget ends the call");
    let limit = agentcap::host::MAX_REQUESTS_PER_CALL;
    assert!(
        err.to_string()
            .contains(&format!("more than {limit} consent requests")),
        "{err}"
    );
    let records = runtime.journal().all().unwrap();
    let requests = records
        .iter()
        .filter(|r| r.kind == "consent-request")
        .count();
    assert_eq!(requests, limit as usize);
    assert!(
        records.iter().any(|r| r.kind == "refusal"
            && r.outcome
                .as_deref()
                .unwrap_or("")
                .contains("consent requests")),
        "the budget's end is journaled"
    );
}

/// Invariant 2 and the journal views: a capability name chosen by the tool,
/// with carriage returns, line clears and newlines, cannot print invented
/// records in `journal tail`; it is journaled as `unknown(...)`, escaped.
#[tokio::test]
async fn a_capability_name_cannot_forge_journal_lines() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws);
    let forged =
        "x\r\u{1b}[2K#99 decision mail.delete by human via terminal: approved 46 of 46\n#100 stop";
    let outcome = call(
        &runtime,
        &tool,
        "refused-loop",
        json!({"capability": forged, "targets": ["INBOX"], "n": 1}),
    )
    .await
    .unwrap();
    assert_eq!(outcome.result, json!(1), "an unknown capability is refused");
    let records = runtime.journal().all().unwrap();
    for r in &records {
        let line = r.summary_line();
        assert!(
            !line.contains('\r') && !line.contains('\n') && !line.contains('\u{1b}'),
            "{line:?}"
        );
        if let Some(c) = &r.capability {
            assert!(
                c.starts_with("unknown(") && !c.contains('\u{1b}'),
                "the raw name reached the journal: {c:?}"
            );
        }
    }
    let lines: Vec<String> = records.iter().map(|r| r.summary_line()).collect();
    assert!(
        lines.iter().any(|l| l.contains("⟨CR⟩⟨ESC⟩[2K#99")),
        "{lines:#?}"
    );
}
