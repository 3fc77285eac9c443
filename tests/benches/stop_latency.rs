//! Stop latency: from `stop_session()` to (a) the acknowledgement (no effect
//! in flight, none can start) and (b) the guest trapped and its call
//! returned. For a busy loop (no host calls) and for a capability loop (a
//! tool deleting mail one consent request at a time). Prints p50/p99/max.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentcap::consent::{Decision, ScriptedApprover, SessionId};
use agentcap::{AgentEngine, Runtime};
use agentcap_tests::{Workspace, guest};
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut ack: Vec<Duration>, mut trapped: Vec<Duration>) -> serde_json::Value {
    ack.sort();
    trapped.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let summary = json!({
        "n": ack.len(),
        "ack_p50_us": us(percentile(&ack, 0.5)),
        "ack_p99_us": us(percentile(&ack, 0.99)),
        "trapped_p50_us": us(percentile(&trapped, 0.5)),
        "trapped_p99_us": us(percentile(&trapped, 0.99)),
        "trapped_max_us": us(*trapped.last().unwrap()),
        "trapped_samples_us": trapped.iter().map(|d| us(*d)).collect::<Vec<_>>(),
    });
    println!(
        "{name:<18} n={:<4} ack p50 {:>8.1} µs  p99 {:>8.1} µs | trapped p50 {:>8.1} µs  p99 {:>8.1} µs  max {:>8.1} µs",
        ack.len(),
        us(percentile(&ack, 0.5)),
        us(percentile(&ack, 0.99)),
        us(percentile(&trapped, 0.5)),
        us(percentile(&trapped, 0.99)),
        us(*trapped.last().unwrap()),
    );
    summary
}

async fn measure(
    runtime: &Arc<Runtime>,
    tool: &Arc<agentcap::LoadedTool>,
    session: &str,
    function: &'static str,
    args: serde_json::Value,
    warmup: Duration,
) -> (Duration, Duration) {
    let (rt, t, s) = (runtime.clone(), tool.clone(), SessionId(session.into()));
    let call = tokio::spawn(async move { rt.call(&t, &s, function, &args).await });
    tokio::time::sleep(warmup).await;
    let start = Instant::now();
    let stopper = runtime.clone();
    let id = SessionId(session.into());
    tokio::task::spawn_blocking(move || stopper.stop_session(&id, "bench"))
        .await
        .unwrap();
    let ack = start.elapsed();
    let _ = call.await.unwrap();
    (ack, start.elapsed())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("stop_latency: bench");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = tempfile::tempdir().unwrap();
        let approver = Arc::new(ScriptedApprover::new("bench", Decision::approve_all));

        // Busy loop: no host calls, only epoch interruption can end it.
        let ws = Workspace::new();
        let policy = "user = \"alice\"\n[mail]\nmaildir = \"Maildir\"\n[tools.spin]\ncomponent = \"x.wasm\"\nlimits = { wall_time_ms = 60000 }\n";
        let (runtime, tool) = ws.load_guest(policy, approver.clone(), "spin", "hostile_resources");
        let (runtime, tool) = (Arc::new(runtime), Arc::new(tool));
        let (mut ack, mut trapped) = (Vec::new(), Vec::new());
        for i in 0..200 {
            let (a, t) = measure(&runtime, &tool, &format!("busy-{i}"), "spin", json!({}), Duration::from_millis(5)).await;
            ack.push(a);
            trapped.push(t);
        }
        let busy = report("busy loop", ack, trapped);

        // Capability loop: one consent request and one delete per message.
        let (mut ack, mut trapped) = (Vec::new(), Vec::new());
        for i in 0..100 {
            let ws = Workspace::new();
            let policy = format!(
                "user = \"alice\"\n[mail]\nmaildir = \"Maildir\"\n[tools.sweeper]\ncomponent = {:?}\nlimits = {{ wall_time_ms = 60000 }}\n\
                 [[tools.sweeper.grants]]\ncapability = \"mail.list\"\nmode = \"standing\"\n\
                 [[tools.sweeper.grants]]\ncapability = \"mail.delete\"\nmode = \"standing\"\n",
                guest("mail_sweeper")
            );
            let engine = AgentEngine::new(Some(cache.path().to_path_buf())).unwrap();
            let runtime = Arc::new(Runtime::new(engine, ws.policy(&policy), approver.clone()).unwrap());
            let tool = Arc::new(runtime.load_tool("sweeper").unwrap());
            let (a, t) = measure(&runtime, &tool, &format!("loop-{i}"), "sweep", json!({"folder": "INBOX"}), Duration::from_millis(3 + i % 10)).await;
            ack.push(a);
            trapped.push(t);
        }
        let capability = report("capability loop", ack, trapped);
        agentcap_tests::write_bench_results(
            "stop_latency",
            &json!({"busy_loop": busy, "capability_loop": capability}),
        );
    });
}
