//! Stop means stop (invariant 5): a stop revokes the session's tokens,
//! answers its pending consent requests with `stopped`, interrupts running
//! guest code, and once acknowledged no further side effect happens.

use std::sync::Arc;
use std::time::Duration;

use agentcap::consent::{Approver, Decision, ScriptedApprover, SessionId};
use agentcap::{AgentEngine, CallError, LoadedTool, Runtime};
use agentcap_tests::{Silent, Workspace, guest, shared};
use serde_json::json;

fn sweeper_policy() -> String {
    format!(
        "user = \"alice\"\n[mail]\nmaildir = \"Maildir\"\n\
         [tools.sweeper]\ncomponent = {:?}\nlimits = {{ wall_time_ms = 60000 }}\n\
         [[tools.sweeper.grants]]\ncapability = \"mail.list\"\nmode = \"standing\"\n\
         [[tools.sweeper.grants]]\ncapability = \"mail.delete\"\nmode = \"standing\"\n",
        guest("mail_sweeper")
    )
}

fn runtime_in(
    ws: &Workspace,
    policy: &str,
    approver: Arc<dyn Approver>,
    cache: Option<&std::path::Path>,
) -> Runtime {
    let engine = AgentEngine::new(cache.map(|c| c.to_path_buf())).unwrap();
    Runtime::new(engine, ws.policy(policy), approver).unwrap()
}

fn spawn_call(
    runtime: &Arc<Runtime>,
    tool: &Arc<LoadedTool>,
    session: &str,
    function: &'static str,
    args: serde_json::Value,
) -> tokio::task::JoinHandle<Result<agentcap::CallOutcome, CallError>> {
    let (runtime, tool, session) = (runtime.clone(), tool.clone(), SessionId(session.into()));
    tokio::spawn(async move { runtime.call(&tool, &session, function, &args).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_interrupts_a_busy_loop_and_spares_other_sessions() {
    let ws = Workspace::new();
    let policy = "user = \"alice\"\n[mail]\nmaildir = \"Maildir\"\n[tools.hostile]\ncomponent = \"x.wasm\"\nlimits = { wall_time_ms = 60000 }\n";
    let (runtime, tool) = ws.load_guest(policy, shared(Silent), "hostile", "hostile_resources");
    let (runtime, tool) = (Arc::new(runtime), Arc::new(tool));
    let spinning = spawn_call(&runtime, &tool, "s1", "spin", json!({}));
    let other = spawn_call(&runtime, &tool, "s2", "spin", json!({}));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = runtime.stop_session(&SessionId("s1".into()), "test");
    let err = tokio::time::timeout(Duration::from_secs(5), spinning)
        .await
        .expect("the loop must end")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, CallError::Stopped { .. }), "{err}");
    assert!(err.to_string().contains("session s1 was stopped"), "{err}");
    assert_eq!(report.revoked, 0);
    // s2 is still running and still accepts work until it is stopped too.
    assert!(!other.is_finished(), "another session was stopped");
    let ok = tokio::time::timeout(
        Duration::from_secs(5),
        runtime.call(&tool, &SessionId("s3".into()), "grow", &json!({"mib": 1})),
    )
    .await
    .expect("s3 hung")
    .unwrap();
    assert_eq!(ok.result, json!(1));
    runtime.stop_session(&SessionId("s2".into()), "test");
    assert!(matches!(
        other.await.unwrap(),
        Err(CallError::Stopped { .. })
    ));
    // A stopped session refuses new calls; stopping again is harmless.
    let again = runtime
        .call(&tool, &SessionId("s1".into()), "grow", &json!({"mib": 1}))
        .await;
    assert!(matches!(again, Err(CallError::Stopped { .. })));
    assert_eq!(
        runtime
            .stop_session(&SessionId("s1".into()), "test")
            .revoked,
        0
    );
    let stops = runtime
        .journal()
        .all()
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == "stop")
        .count();
    assert_eq!(stops, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_answers_a_pending_consent_request() {
    let ws = Workspace::new();
    let policy = "user = \"alice\"\nconsent_timeout_secs = 60\n[mail]\nmaildir = \"Maildir\"\n[tools.hostile]\ncomponent = \"x.wasm\"\n\
                  [[tools.hostile.grants]]\ncapability = \"mail.delete\"\nmode = \"ask\"\n";
    let (runtime, tool) = ws.load_guest(policy, shared(Silent), "hostile", "hostile_mail");
    let (runtime, tool) = (Arc::new(runtime), Arc::new(tool));
    let before = ws.snapshot();
    let ids = ws.ids_in("INBOX");
    let waiting = spawn_call(
        &runtime,
        &tool,
        "s",
        "delete-beyond-approval",
        json!({"ids": ids[..3]}),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    runtime.stop_session(&SessionId("s".into()), "test");
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the request must be answered")
        .unwrap();
    match outcome {
        Ok(o) => assert!(
            o.result["err"]
                .as_str()
                .unwrap()
                .contains("consent stopped"),
            "{}",
            o.result
        ),
        Err(e) => assert!(matches!(e, CallError::Stopped { .. }), "{e}"),
    }
    assert_eq!(ws.snapshot(), before);
    let decision = runtime
        .journal()
        .all()
        .unwrap()
        .into_iter()
        .find(|r| r.kind == "decision")
        .unwrap();
    assert!(decision.outcome.unwrap().starts_with("stopped: "));
}

/// Random stop points while a tool deletes mail one message at a time: after
/// the stop is acknowledged, not one more message moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_effect_after_an_acknowledged_stop_at_100_random_points() {
    const TRIALS: u64 = 100;
    let mut rng = agentcap_tests::Rng::from_env("AGENTCAP_STOP_SEED");
    let seed = rng.seed;
    let cache = tempfile::tempdir().unwrap();
    let approver: Arc<dyn Approver> =
        Arc::new(ScriptedApprover::new("unused", Decision::approve_all));
    let (mut stopped_mid_run, mut touched_after_stop) = (0, 0);
    for trial in 0..TRIALS {
        let ws = Workspace::new();
        let runtime = Arc::new(runtime_in(
            &ws,
            &sweeper_policy(),
            approver.clone(),
            Some(cache.path()),
        ));
        let tool = Arc::new(runtime.load_tool("sweeper").unwrap());
        let sweep = spawn_call(
            &runtime,
            &tool,
            "victim",
            "sweep",
            json!({"folder": "INBOX"}),
        );
        // The stop lands at a random point of the sweep's own progress (after
        // its k-th move, or at a random moment for a tenth of the trials),
        // not at a random wall-clock time, which a loaded machine shifts.
        if trial % 10 == 0 {
            tokio::time::sleep(Duration::from_micros(rng.below(30_000))).await;
        } else {
            let k = 1 + rng.below(20) as usize;
            let moved = |ws: &Workspace| {
                std::fs::read_dir(ws.maildir().join(".Trash/cur"))
                    .map(|d| d.count())
                    .unwrap_or(0)
                    + std::fs::read_dir(ws.maildir().join(".Trash/new"))
                        .map(|d| d.count())
                        .unwrap_or(0)
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while moved(&ws) < k && !sweep.is_finished() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        let ack = {
            let runtime = runtime.clone();
            tokio::task::spawn_blocking(move || {
                runtime.stop_session(&SessionId("victim".into()), "test")
            })
            .await
            .unwrap()
        };
        let at_ack = ws.snapshot();
        let result = sweep.await.unwrap();
        let after = ws.snapshot();
        if at_ack != after {
            touched_after_stop += 1;
            eprintln!(
                "trial {trial} (seed {seed}): mail moved after the stop was acknowledged ({ack:?})"
            );
        }
        let trashed = ws.ids_in("Trash").len();
        if trashed > 0 && trashed < 46 {
            stopped_mid_run += 1;
        }
        if let Ok(outcome) = &result {
            assert!(
                outcome.is_error || trashed == 46,
                "trial {trial}: {outcome:?}"
            );
        }
        assert_eq!(
            ws.ids_in("INBOX").len() + trashed,
            46,
            "trial {trial}: mail lost"
        );
    }
    eprintln!(
        "{TRIALS} stops, {stopped_mid_run} in the middle of the sweep, {touched_after_stop} with changes after the acknowledgement"
    );
    assert_eq!(touched_after_stop, 0, "seed {seed}");
    assert!(
        stopped_mid_run >= TRIALS / 4,
        "too few stops landed mid-run ({stopped_mid_run}); the test proves little"
    );
}
