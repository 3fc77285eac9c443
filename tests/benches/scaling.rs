//! How costs grow (issue 17):
//!
//! - throughput of trivial calls (`echo.nothing`, a fresh instance each)
//!   with 1, 8 and 64 concurrent sessions, in process: each session is a
//!   task making `Runtime::call`s one after another on its own session id,
//!   on a 2-worker tokio runtime;
//! - the same for consented calls (`sweeper.read-one`), journal on disk,
//!   with the journal's syncs per call (group commit);
//! - the journal at 10^3, 10^5 and 10^6 records: the latency of appending a
//!   record that is not a durability point (a decision) and of one that is
//!   (a `call` intent, fsync'd), and the time and peak memory of
//!   `agentcap journal verify` (a process of its own) on it.
//!
//! The journal is grown on tmpfs (/dev/shm, where there is one), and at each size
//! copied to disk under target/, where the appends and the verify are
//! measured, like a user's journal. `AGENTCAP_BENCH_JOURNAL_MAX` lowers the
//! largest size (for a quick run).
//! Writes `target/bench-results/scaling.json` for `scripts/bench-report`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentcap::consent::{DenyApprover, SessionId};
use agentcap::journal::{Entry, Journal, Kind};
use agentcap::{AgentEngine, Runtime};
use agentcap_tests::{Workspace, guest};
use serde_json::{Value, json};

const AGENTCAP: &str = env!("CARGO_BIN_EXE_agentcap-cli");
/// Calls per throughput measurement, spread over the sessions.
const CALLS: usize = 1920;
const REPEATS: usize = 3;
/// Consented calls per measurement, spread over the sessions.
const CONSENTED_CALLS: usize = 640;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn throughput() -> Value {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ws = Workspace::new();
    let policy = format!(
        "user = \"alice\"\n[tools.echo]\ncomponent = {:?}\nlimits = {{ max_concurrent_calls = 64 }}\n",
        guest("echo_types")
    );
    let runtime = Arc::new(
        Runtime::new(
            AgentEngine::new(None).unwrap(),
            ws.policy(&policy),
            Arc::new(DenyApprover::new("bench")),
        )
        .unwrap(),
    );
    let echo = Arc::new(runtime.load_tool("echo").unwrap());
    let mut rows = Vec::new();
    for sessions in [1usize, 8, 64] {
        let per_session = CALLS / sessions;
        let mut rates = Vec::new();
        for _ in 0..REPEATS {
            let elapsed = rt.block_on(async {
                let start = Instant::now();
                let tasks: Vec<_> = (0..sessions)
                    .map(|s| {
                        let (runtime, echo) = (runtime.clone(), echo.clone());
                        tokio::spawn(async move {
                            let session = SessionId(format!("s{sessions}-{s}"));
                            for _ in 0..per_session {
                                let out = runtime
                                    .call(&echo, &session, "nothing", &json!({}))
                                    .await
                                    .unwrap();
                                assert!(!out.is_error, "{}", out.result);
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                start.elapsed()
            });
            rates.push((per_session * sessions) as f64 / elapsed.as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!(
            "throughput: {sessions:>2} concurrent sessions: {median:>8.0} calls/s (median of {REPEATS})"
        );
        rows.push(
            json!({"sessions": sessions, "calls": per_session * sessions, "calls_per_s": median}),
        );
    }
    json!({
        "how": "in process: Runtime::call of echo.nothing, one task per session id, each call after the previous one of its session; tokio multi-thread runtime, 2 workers",
        "rows": rows,
    })
}

/// Consented calls by concurrent sessions, journal and Maildir on disk
/// (under target/): `sweeper.read-one`, a standing grant, so each call is a
/// consent (request, decision, token: one transaction), an intent synced
/// to disk before the read, the read and its outcome. Counts the journal's
/// syncs: concurrent calls share them (group commit).
fn consented_throughput() -> Value {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let ws = Workspace::new_in(target);
    let policy = format!(
        "user = \"alice\"\n[mail]\nmaildir = \"Maildir\"\n\
         [tools.sweeper]\ncomponent = {:?}\nlimits = {{ max_concurrent_calls = 64 }}\n\
         [[tools.sweeper.grants]]\ncapability = \"mail.read\"\nmode = \"standing\"\n",
        guest("mail_sweeper")
    );
    let runtime = Arc::new(
        Runtime::new(
            AgentEngine::new(None).unwrap(),
            ws.policy(&policy),
            Arc::new(DenyApprover::new("bench")),
        )
        .unwrap(),
    );
    let sweeper = Arc::new(runtime.load_tool("sweeper").unwrap());
    let id = ws.ids_in("INBOX").into_iter().next().expect("a message");
    let mut rows = Vec::new();
    for sessions in [1usize, 8, 64] {
        let per_session = (CONSENTED_CALLS / sessions).max(1);
        let calls = per_session * sessions;
        let mut measured = Vec::new();
        for repeat in 0..REPEATS {
            let syncs_before = runtime.journal().syncs();
            let elapsed = rt.block_on(async {
                let start = Instant::now();
                let tasks: Vec<_> = (0..sessions)
                    .map(|s| {
                        let (runtime, sweeper, id) = (runtime.clone(), sweeper.clone(), id.clone());
                        tokio::spawn(async move {
                            let session = SessionId(format!("c{sessions}-{repeat}-{s}"));
                            for _ in 0..per_session {
                                let out = runtime
                                    .call(&sweeper, &session, "read-one", &json!({"id": id}))
                                    .await
                                    .unwrap();
                                assert!(!out.is_error, "{}", out.result);
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                start.elapsed()
            });
            let syncs = runtime.journal().syncs() - syncs_before;
            measured.push((calls as f64 / elapsed.as_secs_f64(), syncs));
        }
        measured.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (calls_per_s, syncs) = measured[measured.len() / 2];
        let calls_per_sync = calls as f64 / syncs.max(1) as f64;
        println!(
            "consented: {sessions:>2} concurrent sessions: {calls_per_s:>6.0} calls/s, {syncs} syncs for {calls} calls ({calls_per_sync:.1} calls per sync; median of {REPEATS})"
        );
        rows.push(json!({
            "sessions": sessions,
            "calls": calls,
            "calls_per_s": calls_per_s,
            "syncs": syncs,
            "calls_per_sync": calls_per_sync,
        }));
    }
    json!({
        "how": "in process, journal and Maildir on disk under target/: Runtime::call of sweeper.read-one (standing grant: consent, intent synced, read, outcome), one task per session id, each call after the previous one of its session; tokio multi-thread runtime, 2 workers",
        "rows": rows,
    })
}

/// Time `n` appends of `kind`; the latencies sorted.
fn appends(journal: &Journal, kind: Kind, n: usize) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let entry = Entry::new(kind, "bench", "echo", "digest")
                .capability("mail.delete")
                .targets(&[format!("INBOX/{i}")])
                .outcome("ok");
            let start = Instant::now();
            journal.append(entry).unwrap();
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

/// Append filler records (a decision, then a call and its outcome) until the
/// journal holds `target` records.
fn fill(journal: &Journal, from: usize, target: usize) {
    for i in from..target {
        let entry = match i % 3 {
            0 => Entry::new(Kind::Decision, "fill", "echo", "digest").decided_by("standing grant"),
            1 => Entry::new(Kind::Outcome, "fill", "echo", "digest").outcome("ok"),
            _ => Entry::new(Kind::Refusal, "fill", "echo", "digest").outcome("expired"),
        };
        journal
            .append(entry.targets(&[format!("INBOX/{i}")]))
            .unwrap();
    }
}

/// Run `agentcap journal verify` on `path`: wall time and the peak resident
/// memory (VmHWM, read from /proc while it runs).
fn verify_cli(path: &Path) -> (Duration, u64, String) {
    let start = Instant::now();
    let mut child = Command::new(AGENTCAP)
        .args(["journal", "verify", "--journal"])
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start agentcap journal verify");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let elapsed = start.elapsed();
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert!(
                status.success(),
                "verify failed: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return (elapsed, peak_kib, text);
        }
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kib) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn journal_growth() -> Value {
    let max: usize = std::env::var("AGENTCAP_BENCH_JOURNAL_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let shm = Path::new("/dev/shm");
    let grow_dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir_in(&target).unwrap()
    };
    let grown = grow_dir.path().join("journal.sqlite");
    let journal = Journal::open(&grown, false).unwrap();
    let mut rows = Vec::new();
    let mut have = 0;
    let fill_start = Instant::now();
    for size in [1_000usize, 100_000, 1_000_000] {
        if size > max {
            rows.push(
                json!({"records": size, "skipped": format!("AGENTCAP_BENCH_JOURNAL_MAX={max}")}),
            );
            continue;
        }
        // The measured appends count towards the size.
        let measured = 200 + 50;
        fill(&journal, have, size - measured);
        have = size - measured;
        // A copy on disk: the database (its WAL checkpointed by a fresh
        // connection's close) and the head anchor.
        let disk = tempfile::tempdir_in(&target).unwrap();
        let path = disk.path().join("journal.sqlite");
        for suffix in ["", "-wal", ".head"] {
            let from = grow_dir.path().join(format!("journal.sqlite{suffix}"));
            if from.exists() {
                let to = disk.path().join(format!("journal.sqlite{suffix}"));
                std::fs::copy(&from, &to).unwrap();
                // On disk before the measured appends, so that writing back
                // the copy does not land in them.
                std::fs::File::open(&to).unwrap().sync_all().unwrap();
            }
        }
        let copy = Journal::open(&path, false).unwrap();
        let plain = appends(&copy, Kind::Decision, 200);
        let durable = appends(&copy, Kind::Call, 50);
        drop(copy);
        let (verify, peak_kib, said) = verify_cli(&path);
        assert!(
            said.lines()
                .last()
                .unwrap_or("")
                .starts_with(&format!("ok: {size} records")),
            "verify says: {said}"
        );
        let file_mib = std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / 1048576.0;
        println!(
            "journal {size:>9} records ({file_mib:.0} MiB): append p50 {:.1} µs (durable {:.0} µs) | verify {:.2} s, peak RSS {:.1} MiB  [{}]",
            us(percentile(&plain, 0.5)),
            us(percentile(&durable, 0.5)),
            verify.as_secs_f64(),
            peak_kib as f64 / 1024.0,
            said.lines().last().unwrap_or("")
        );
        rows.push(json!({
            "records": size,
            "file_mib": file_mib,
            "append_us": {"n": plain.len(), "median": us(percentile(&plain, 0.5)), "p95": us(percentile(&plain, 0.95))},
            "durable_append_us": {"n": durable.len(), "median": us(percentile(&durable, 0.5)), "p95": us(percentile(&durable, 0.95))},
            "verify_s": verify.as_secs_f64(),
            "verify_peak_rss_mib": peak_kib as f64 / 1024.0,
        }));
    }
    println!(
        "journal: filled in {:.0} s",
        fill_start.elapsed().as_secs_f64()
    );
    json!({
        "how": "grown by Journal::append on tmpfs, copied to disk under target/ at each size; there 200 decision appends (not a durability point) and 50 call appends (fsync'd), then `agentcap journal verify` as its own process",
        "rows": rows,
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("scaling: bench");
        return;
    }
    // `cargo test --benches` runs each bench once as a test: keep that quick.
    if std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench") {
        println!("scaling: run with `cargo bench` to measure");
        return;
    }
    let throughput = throughput();
    let consented = consented_throughput();
    let journal = journal_growth();
    agentcap_tests::write_bench_results(
        "scaling",
        &json!({"throughput": throughput, "consented": consented, "journal": journal}),
    );
}
