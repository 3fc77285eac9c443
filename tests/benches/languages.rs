//! Tools in Rust, Python (componentize-py) and JavaScript (componentize-js)
//! side by side, each the hostile tool of its language (`grow(0)` is the
//! trivial function, `spin` the busy loop):
//! - component size;
//! - compile time without the cache (`Component::new`, cranelift);
//! - cold start with the cache: a new engine, the compiled component read
//!   from the cache, the tool loaded (linked) and its first call;
//! - per-call time of a trivial function (a fresh instance each call, as
//!   agentcap does: copy-on-write memory image from the pooling allocator);
//! - memory per instance: resident memory grown with 8 instances alive
//!   (each spinning in its own session), divided by 8;
//! - stop latency of a busy loop, p50/p99, with the journal on tmpfs.
//!
//! Writes `target/bench-results/languages.json` for `scripts/bench-report`.
//! Needs python3 and node (the tools are built from source as the tests
//! build them).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentcap::consent::{Decision, ScriptedApprover, SessionId};
use agentcap::{AgentEngine, LoadedTool, Runtime};
use agentcap_tests::lang::{JS_HOSTILE, PY_HOSTILE};
use agentcap_tests::{Workspace, guest};
use serde_json::{Value, json};

const POLICY: &str = "user = \"alice\"\n[mail]\nmaildir = \"Maildir\"\n\
    [tools.t]\ncomponent = \"x.wasm\"\nlimits = { wall_time_ms = 60000, memory_mb = 256 }\n\
    [[tools.t.grants]]\ncapability = \"mail.delete\"\nmode = \"standing\"\n\
    [[tools.t.grants]]\ncapability = \"http.send\"\nmode = \"standing\"\norigins = [\"https://tracker.example.com\"]\n[http]\ntimeout_ms = 3000\n";

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn load(ws: &Workspace, cache: Option<PathBuf>, bytes: &[u8]) -> (Arc<Runtime>, Arc<LoadedTool>) {
    let approver = Arc::new(ScriptedApprover::new("bench", Decision::approve_all));
    let engine = AgentEngine::new(cache).unwrap();
    let runtime = Runtime::new(engine, ws.policy(POLICY), approver).unwrap();
    let grants = runtime.policy().tools["t"].clone();
    let tool = runtime.load_component("t", grants, bytes).unwrap();
    (Arc::new(runtime), Arc::new(tool))
}

async fn measure(lang: &str, component: PathBuf) -> Value {
    let bytes = std::fs::read(&component).unwrap();
    // On tmpfs when there is one: the stop record's fsync is the disk's
    // cost, the same for every language (tests/benches/stop_latency.rs
    // measures it on disk).
    let shm = std::path::Path::new("/dev/shm");
    let ws = if shm.is_dir() {
        Workspace::new_in(shm)
    } else {
        Workspace::new()
    };

    // Compile without the cache, 3 times.
    let mut compile_ms = Vec::new();
    for _ in 0..3 {
        let engine = AgentEngine::new(None).unwrap();
        let start = Instant::now();
        engine.compile(&bytes).unwrap();
        compile_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    compile_ms.sort_by(f64::total_cmp);

    // Cold start with the cache warm: new engine, load, first call.
    let cache = tempfile::tempdir().unwrap();
    load(&ws, Some(cache.path().to_path_buf()), &bytes);
    let mut cold_ms = Vec::new();
    for i in 0..5 {
        let start = Instant::now();
        let (runtime, tool) = load(&ws, Some(cache.path().to_path_buf()), &bytes);
        runtime
            .call(
                &tool,
                &SessionId(format!("cold-{i}")),
                "grow",
                &json!({"mib": 0}),
            )
            .await
            .unwrap();
        cold_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    cold_ms.sort_by(f64::total_cmp);

    // Per call, a fresh instance each time.
    let (runtime, tool) = load(&ws, Some(cache.path().to_path_buf()), &bytes);
    let session = SessionId("calls".into());
    for _ in 0..20 {
        runtime
            .call(&tool, &session, "grow", &json!({"mib": 0}))
            .await
            .unwrap();
    }
    let mut call_us = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        runtime
            .call(&tool, &session, "grow", &json!({"mib": 0}))
            .await
            .unwrap();
        call_us.push(start.elapsed().as_secs_f64() * 1e6);
    }
    call_us.sort_by(f64::total_cmp);

    // Memory per instance: 8 spinning at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = rss_kib();
    let mut spinning = Vec::new();
    for i in 0..8 {
        let (r, t, s) = (runtime.clone(), tool.clone(), SessionId(format!("mem-{i}")));
        spinning.push((
            s.clone(),
            tokio::spawn(async move { r.call(&t, &s, "spin", &json!({})).await }),
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = rss_kib();
    for (session, call) in spinning {
        runtime.stop_session(&session, "bench");
        let _ = call.await;
    }
    let per_instance_mib = during.saturating_sub(before) as f64 / 8.0 / 1024.0;

    // Stop latency of a busy loop.
    let mut stop_ms = Vec::new();
    for i in 0..100 {
        let s = SessionId(format!("stop-{i}"));
        let (r, t, s2) = (runtime.clone(), tool.clone(), s.clone());
        let call = tokio::spawn(async move { r.call(&t, &s2, "spin", &json!({})).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let start = Instant::now();
        runtime.stop_session(&s, "bench");
        let _ = call.await;
        stop_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    stop_ms.sort_by(f64::total_cmp);

    let result = json!({
        "size_mib": bytes.len() as f64 / (1 << 20) as f64,
        "compile_ms": percentile(&compile_ms, 0.5),
        "cold_start_cached_ms": percentile(&cold_ms, 0.5),
        "call_us": {"median": percentile(&call_us, 0.5), "p95": percentile(&call_us, 0.95), "n": call_us.len()},
        "instance_mib": per_instance_mib,
        "stop_ms": {"p50": percentile(&stop_ms, 0.5), "p99": percentile(&stop_ms, 0.99), "n": stop_ms.len()},
    });
    println!("{lang:<11} {result}");
    result
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("languages: bench");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let rust = measure("rust", guest("hostile_resources")).await;
        let python = measure("python", PY_HOSTILE.component()).await;
        let js = measure("javascript", JS_HOSTILE.component()).await;
        agentcap_tests::write_bench_results(
            "languages",
            &json!({"rust": rust, "python": python, "javascript": js}),
        );
    });
}
