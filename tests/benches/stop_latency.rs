//! Stop latency: from `stop_session()` to (a) the acknowledgement (no effect
//! in flight, none can start) and (b) the guest trapped and its call
//! returned. For a busy loop (no host calls) and for a capability loop (a
//! tool deleting mail one consent request at a time). Prints p50/p99/max.
//!
//! With 1 and with 64 sessions running the busy loop at once (on 2 tokio
//! workers): stopping one session of them (to its call returned), and
//! stopping everything (`stop_all`, to the last of the calls returned).

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

/// Start `running` busy loops, each on its own session; the calls' tasks.
async fn start_spinning(
    runtime: &Arc<Runtime>,
    tool: &Arc<agentcap::LoadedTool>,
    prefix: &str,
    running: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let calls: Vec<_> = (0..running)
        .map(|k| {
            let (rt, t, s) = (
                runtime.clone(),
                tool.clone(),
                SessionId(format!("{prefix}-{k}")),
            );
            tokio::spawn(async move {
                let _ = rt.call(&t, &s, "spin", &json!({})).await;
            })
        })
        .collect();
    // Let every one of them get into its loop.
    tokio::time::sleep(Duration::from_millis(5 + running as u64 / 4)).await;
    calls
}

/// Stop latency with 1 and with 64 sessions running the busy loop.
async fn concurrent_stops(
    cache: &std::path::Path,
    approver: Arc<ScriptedApprover>,
) -> serde_json::Value {
    let policy = format!(
        "user = \"alice\"\n[mail]\nmaildir = \"Maildir\"\n[tools.spin]\ncomponent = {:?}\n\
         limits = {{ wall_time_ms = 60000, max_concurrent_calls = 64 }}\n",
        guest("hostile_resources")
    );
    let mut rows = Vec::new();
    for running in [1usize, 64] {
        let ws = Workspace::new();
        let engine = AgentEngine::new(Some(cache.to_path_buf())).unwrap();
        let runtime = Arc::new(Runtime::new(engine, ws.policy(&policy), approver.clone()).unwrap());
        let tool = Arc::new(runtime.load_tool("spin").unwrap());
        // One session of `running` stopped: to its call returned.
        let rounds = if running == 1 { 100 } else { 30 };
        let mut one = Vec::new();
        for round in 0..rounds {
            let prefix = format!("one-{running}-{round}");
            let mut calls = start_spinning(&runtime, &tool, &prefix, running).await;
            let first = calls.remove(0);
            let start = Instant::now();
            let stopper = runtime.clone();
            let id = SessionId(format!("{prefix}-0"));
            tokio::task::spawn_blocking(move || stopper.stop_session(&id, "bench"))
                .await
                .unwrap();
            first.await.unwrap();
            one.push(start.elapsed());
            for k in 1..running {
                runtime.stop_session(&SessionId(format!("{prefix}-{k}")), "bench");
            }
            for call in calls {
                call.await.unwrap();
            }
        }
        // Everything stopped: to the last call returned. A runtime of its
        // own each time (a stop of everything lasts until a resume).
        let mut all = Vec::new();
        for round in 0..20 {
            let engine = AgentEngine::new(Some(cache.to_path_buf())).unwrap();
            let runtime =
                Arc::new(Runtime::new(engine, ws.policy(&policy), approver.clone()).unwrap());
            let tool = Arc::new(runtime.load_tool("spin").unwrap());
            let calls = start_spinning(&runtime, &tool, &format!("all-{round}"), running).await;
            let start = Instant::now();
            let stopper = runtime.clone();
            tokio::task::spawn_blocking(move || stopper.stop_handle().stop_all("bench"))
                .await
                .unwrap();
            for call in calls {
                call.await.unwrap();
            }
            all.push(start.elapsed());
        }
        one.sort();
        all.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{running:>2} sessions running: stop one, to its call returned p50 {:.2} ms p99 {:.2} ms (n={}) | stop all, to the last returned p50 {:.2} ms p99 {:.2} ms (n={})",
            ms(percentile(&one, 0.5)),
            ms(percentile(&one, 0.99)),
            one.len(),
            ms(percentile(&all, 0.5)),
            ms(percentile(&all, 0.99)),
            all.len(),
        );
        rows.push(json!({
            "running": running,
            "one": {"n": one.len(), "p50_ms": ms(percentile(&one, 0.5)), "p99_ms": ms(percentile(&one, 0.99))},
            "all": {"n": all.len(), "p50_ms": ms(percentile(&all, 0.5)), "p99_ms": ms(percentile(&all, 0.99))},
        }));
    }
    json!(rows)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("stop_latency: bench");
        return;
    }
    // `cargo test --benches` runs each bench once as a test (no `--bench`):
    // keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("stop_latency: run with `cargo bench` to measure");
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
        let concurrent = concurrent_stops(cache.path(), approver.clone()).await;
        agentcap_tests::write_bench_results(
            "stop_latency",
            &json!({"busy_loop": busy, "capability_loop": capability, "concurrent": concurrent}),
        );
    });
}
