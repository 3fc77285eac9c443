//! `agentcap serve` over stdio, measured from a client in this process that
//! speaks newline-delimited JSON-RPC on the server's pipes (so the figures
//! are the server's, not a client SDK's):
//!
//! - cold start: process start to the `initialize` reply, with a warm
//!   compiled-component cache and with `--no-cache` (compiling every tool);
//! - a trivial tool call (`echo.nothing`), 200 sequential round trips after
//!   20 warm-up calls: median and p95;
//! - `ping` the same way: the protocol path without a tool (the floor);
//! - the server's resident memory (VmRSS, VmHWM) with the demo's two example
//!   tools plus the echo tool loaded, before and after the calls.
//!
//! Writes `target/bench-results/mcp_stdio.json` for `scripts/bench-report`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const AGENTCAP: &str = env!("CARGO_BIN_EXE_agentcap-cli");
const CALLS: usize = 200;
const WARMUP: usize = 20;
const STARTS: usize = 10;

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Server {
    fn spawn(policy: &Path, cache: &Path, no_cache: bool) -> Server {
        let mut command = Command::new(AGENTCAP);
        if no_cache {
            command.arg("--no-cache");
        }
        let mut child = command
            .args(["serve", "--policy"])
            .arg(policy)
            .env("AGENTCAP_CACHE_DIR", cache)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start agentcap serve");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Server {
            child,
            stdin,
            stdout,
            next_id: 0,
        }
    }

    fn send(&mut self, message: &Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the server closed stdout");
            let reply: Value = serde_json::from_str(&line).expect("a JSON-RPC line");
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{reply}");
                return reply;
            }
        }
    }

    fn initialize(&mut self) {
        self.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "bench", "version": "0"}}),
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn cold_starts(policy: &Path, cache: &Path, no_cache: bool) -> Vec<Duration> {
    (0..STARTS)
        .map(|_| {
            let start = Instant::now();
            let mut server = Server::spawn(policy, cache, no_cache);
            server.initialize();
            start.elapsed()
        })
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("mcp_stdio: bench");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("demo");
    let policy = agentcap::demo::prepare_workspace(&workspace).expect("demo workspace");
    let mut text = std::fs::read_to_string(&policy).unwrap();
    text.push_str(&format!(
        "\n[tools.echo]\ncomponent = \"{}\"\n",
        agentcap_tests::guest("echo_types").display()
    ));
    std::fs::write(&policy, text).unwrap();
    let cache = dir.path().join("cache");

    // Fill the cache once, then measure starts with it and without it.
    drop(cold_starts(&policy, &cache, false));
    let mut warm = cold_starts(&policy, &cache, false);
    let mut compiling = cold_starts(&policy, &cache, true);
    warm.sort();
    compiling.sort();

    let mut server = Server::spawn(&policy, &cache, false);
    server.initialize();
    let listed = server.request("tools/list", json!({}));
    let tools = listed["result"]["tools"].as_array().unwrap().len();
    let (rss_loaded, _) = server.memory_kib();
    let call = json!({"name": "echo.nothing", "arguments": {}});
    for _ in 0..WARMUP {
        server.request("tools/call", call.clone());
    }
    let mut calls: Vec<Duration> = (0..CALLS)
        .map(|_| {
            let start = Instant::now();
            let reply = server.request("tools/call", call.clone());
            let elapsed = start.elapsed();
            assert_eq!(reply["result"]["isError"], false, "{reply}");
            elapsed
        })
        .collect();
    // The same path without a tool: `ping` is answered by rmcp itself.
    let mut pings: Vec<Duration> = (0..CALLS)
        .map(|_| {
            let start = Instant::now();
            server.request("ping", json!({}));
            start.elapsed()
        })
        .collect();
    pings.sort();
    let (rss_after, hwm) = server.memory_kib();
    let samples_us: Vec<f64> = calls.iter().map(|d| us(*d)).collect();
    calls.sort();

    println!(
        "MCP stdio trivial call   n={CALLS}  median {:>7.1} µs  p95 {:>7.1} µs  min {:>7.1} µs  max {:>8.1} µs",
        us(percentile(&calls, 0.5)),
        us(percentile(&calls, 0.95)),
        us(calls[0]),
        us(*calls.last().unwrap()),
    );
    println!(
        "MCP stdio ping (floor)   n={CALLS}  median {:>7.1} µs  p95 {:>7.1} µs",
        us(percentile(&pings, 0.5)),
        us(percentile(&pings, 0.95)),
    );
    println!(
        "cold start to initialize reply, n={STARTS}: cached median {:.1} ms (max {:.1}); compiling median {:.1} ms (max {:.1})",
        percentile(&warm, 0.5).as_secs_f64() * 1e3,
        warm.last().unwrap().as_secs_f64() * 1e3,
        percentile(&compiling, 0.5).as_secs_f64() * 1e3,
        compiling.last().unwrap().as_secs_f64() * 1e3,
    );
    println!(
        "server memory with {tools} MCP tools from 3 components: RSS {:.1} MiB after initialize, {:.1} MiB after {CALLS} calls (peak {:.1} MiB)",
        rss_loaded as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        hwm as f64 / 1024.0,
    );

    let results = json!({
        "trivial_call_us": {
            "n": CALLS,
            "median": us(percentile(&calls, 0.5)),
            "p95": us(percentile(&calls, 0.95)),
            "samples": samples_us,
        },
        "ping_us": {
            "n": CALLS,
            "median": us(percentile(&pings, 0.5)),
            "p95": us(percentile(&pings, 0.95)),
        },
        "cold_start_ms": {
            "n": STARTS,
            "cached_median": percentile(&warm, 0.5).as_secs_f64() * 1e3,
            "compiling_median": percentile(&compiling, 0.5).as_secs_f64() * 1e3,
            "cached_samples": warm.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "compiling_samples": compiling.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
        },
        "memory_mib": {
            "tools": tools,
            "rss_after_initialize": rss_loaded as f64 / 1024.0,
            "rss_after_calls": rss_after as f64 / 1024.0,
            "peak": hwm as f64 / 1024.0,
        },
    });
    agentcap_tests::write_bench_results("mcp_stdio", &results);
}
