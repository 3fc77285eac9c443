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
//!   tools plus the echo tool loaded, before and after the calls;
//! - floor and peers, same client, same run: the no-op server
//!   `tests/src/bin/mcp-floor.rs`, `agentcap serve` and ACT (`act run --mcp`
//!   of `act-cli` from PyPI, with a `greet` tool built from source with the
//!   `act-sdk` crate), the calls interleaved in blocks (A B C A B C ...) so
//!   that noise hits all alike; where ACT cannot be installed or built, the
//!   results say why instead of giving a number;
//! - how start and memory grow with 1, 10 and 100 tools in the policy (the
//!   echo component under each name, compiled-component cache warm).
//!
//! Writes `target/bench-results/mcp_stdio.json` for `scripts/bench-report`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const AGENTCAP: &str = env!("CARGO_BIN_EXE_agentcap-cli");
const CALLS: usize = 200;
const WARMUP: usize = 20;
const STARTS: usize = 10;
const FLOOR: &str = env!("CARGO_BIN_EXE_mcp-floor");
/// The act-cli release the comparison installs from PyPI.
const ACT_CLI_VERSION: &str = "0.14.6";
/// The act-sdk release the `greet` tool is built with (crates.io).
const ACT_SDK_VERSION: &str = "0.14.2";
/// Interleaved rounds for the peers: each round makes `BLOCK` calls on each
/// server in turn.
const ROUNDS: usize = 20;
const BLOCK: usize = 10;

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Server {
    fn spawn(policy: &Path, cache: &Path, no_cache: bool) -> Server {
        Server::start(&agentcap_command(policy, cache, no_cache))
    }

    fn start(command: &Peer) -> Server {
        let mut command = command.command();
        let mut child = command
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

/// How to start one server.
#[derive(Clone)]
struct Peer {
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(String, PathBuf)>,
}

impl Peer {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for (k, v) in &self.envs {
            command.env(k, v);
        }
        command
    }
}

fn agentcap_command(policy: &Path, cache: &Path, no_cache: bool) -> Peer {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if no_cache {
        args.push("--no-cache".into());
    }
    args.extend(["serve".into(), "--policy".into(), policy.into()]);
    Peer {
        program: AGENTCAP.into(),
        args,
        envs: vec![("AGENTCAP_CACHE_DIR".into(), cache.to_path_buf())],
    }
}

/// Where the ACT comparison keeps what it installs and builds.
fn act_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/act")
}

fn run_logged(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("{what}: cannot run it: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(format!("{what} failed ({}): {}", out.status, last.trim()))
}

/// `act` from PyPI's `act-cli`, installed into a virtualenv under target/.
fn act_cli() -> Result<PathBuf, String> {
    let venv = act_dir().join("venv");
    let act = venv.join("bin/act");
    let works = |act: &Path| {
        Command::new(act).arg("--version").output().is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(ACT_CLI_VERSION)
        })
    };
    if works(&act) {
        return Ok(act);
    }
    eprintln!(
        "installing act-cli=={ACT_CLI_VERSION} into {}",
        venv.display()
    );
    run_logged(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    )?;
    run_logged(
        Command::new(venv.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            &format!("act-cli=={ACT_CLI_VERSION}"),
        ]),
        "pip install act-cli",
    )?;
    if works(&act) {
        Ok(act)
    } else {
        Err("act-cli installed, but `act --version` does not run".into())
    }
}

/// The `greet` tool of act-sdk's quick start, built from source for
/// wasm32-wasip2 under target/act/greet. The SDK's macro generates its
/// bindings from a `wit/` folder in the component's own crate (world
/// `component-world`), so the ACT WIT package has to come with the SDK's
/// sources as fetched from crates.io; it is copied into target/, never into
/// the repository.
fn act_greet_component() -> Result<PathBuf, String> {
    let dir = act_dir().join("greet");
    let wasm = dir.join("target/wasm32-wasip2/release/act_greet.wasm");
    if wasm.exists() {
        return Ok(wasm);
    }
    std::fs::create_dir_all(dir.join("src")).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"act-greet\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nact-sdk = \"={ACT_SDK_VERSION}\"\nserde = {{ version = \"1\", features = [\"derive\"] }}\nschemars = \"1\"\n\n\
             # Not a member of agentcap's workspace.\n[workspace]\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("src/lib.rs"),
        "use act_sdk::prelude::*;\n\n\
         #[derive(Deserialize, JsonSchema)]\nstruct GreetArgs {\n    name: String,\n}\n\n\
         #[act_component(name = \"greeter\", version = \"0.1.0\", description = \"A greeter\")]\n\
         mod component {\n    use super::*;\n\n\
         \x20   #[act_tool(description = \"Say hello\", read_only)]\n\
         \x20   fn greet(args: GreetArgs) -> ActResult<String> {\n        Ok(format!(\"Hello, {}!\", args.name))\n    }\n}\n",
    )
    .map_err(|e| e.to_string())?;
    // Fetch the SDK from crates.io and find where cargo unpacked it.
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot fetch act-sdk {ACT_SDK_VERSION} from crates.io: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let metadata: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let sdk_dirs: Vec<PathBuf> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("act-")))
        .filter_map(|p| p["manifest_path"].as_str())
        .filter_map(|m| Path::new(m).parent().map(Path::to_path_buf))
        .collect();
    let wit = sdk_dirs
        .iter()
        .flat_map(|d| [d.join("wit"), d.join("examples/hello-sdk/wit")])
        .find(|w| {
            std::fs::read_dir(w).is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("world component-world"))
                })
            })
        })
        .ok_or_else(|| {
            format!(
                "act-sdk {ACT_SDK_VERSION} from crates.io (and act-sdk-macros, act-types) ships no ACT WIT package: \
                 its macro reads the component crate's own wit/ (world component-world), which the SDK's repository \
                 fetches with wkg from an OCI registry this machine cannot reach, so the greet tool cannot be built"
            )
        })?;
    let copy = Command::new("cp")
        .arg("-r")
        .arg(&wit)
        .arg(dir.join("wit"))
        .status()
        .map_err(|e| e.to_string())?;
    if !copy.success() {
        return Err("copying the ACT WIT into target/ failed".into());
    }
    run_logged(
        Command::new("cargo")
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(dir.join("Cargo.toml"))
            .env_remove("CARGO_TARGET_DIR"),
        "building the act-sdk greet tool",
    )?;
    if wasm.exists() {
        Ok(wasm)
    } else {
        Err(format!(
            "the greet tool built, but {} is missing",
            wasm.display()
        ))
    }
}

/// How to start ACT serving the greet tool over MCP stdio, or why not.
fn act_peer() -> Result<Peer, String> {
    let act = act_cli()?;
    let wasm = act_greet_component()?;
    Ok(Peer {
        program: act,
        args: vec![
            "run".into(),
            "--mcp".into(),
            "--no-audit".into(),
            wasm.into(),
        ],
        envs: vec![],
    })
}

/// One server of the comparison: how to start it and its trivial call.
struct Contender {
    name: &'static str,
    peer: Peer,
    call: Value,
}

/// The comparison: the floor, agentcap and ACT, interleaved.
fn peers(policy: &Path, cache: &Path) -> Value {
    let mut contenders = vec![
        Contender {
            name: "floor",
            peer: Peer {
                program: FLOOR.into(),
                args: vec![],
                envs: vec![],
            },
            call: json!({"name": "nothing", "arguments": {}}),
        },
        Contender {
            name: "agentcap",
            peer: agentcap_command(policy, cache, false),
            call: json!({"name": "echo.nothing", "arguments": {}}),
        },
    ];
    let act_skipped = match act_peer() {
        Ok(peer) => {
            contenders.push(Contender {
                name: "act",
                peer,
                call: json!({"name": "greet", "arguments": {"name": "bench"}}),
            });
            None
        }
        Err(why) => {
            println!("ACT skipped: {why}");
            Some(why)
        }
    };
    // Time to first reply, interleaved.
    let mut starts: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
    for _ in 0..STARTS {
        for (i, c) in contenders.iter().enumerate() {
            let start = Instant::now();
            let mut server = Server::start(&c.peer);
            server.initialize();
            starts[i].push(start.elapsed());
        }
    }
    let mut servers: Vec<Server> = contenders
        .iter()
        .map(|c| {
            let mut server = Server::start(&c.peer);
            server.initialize();
            server.request("tools/list", json!({}));
            for _ in 0..WARMUP {
                server.request("tools/call", c.call.clone());
            }
            server
        })
        .collect();
    let mut calls: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
    for _ in 0..ROUNDS {
        for (i, (c, server)) in contenders.iter().zip(servers.iter_mut()).enumerate() {
            for _ in 0..BLOCK {
                let start = Instant::now();
                let reply = server.request("tools/call", c.call.clone());
                calls[i].push(start.elapsed());
                assert_ne!(reply["result"]["isError"], true, "{}: {reply}", c.name);
            }
        }
    }
    let mut out = serde_json::Map::new();
    for (i, c) in contenders.iter().enumerate() {
        let (rss, hwm) = servers[i].memory_kib();
        let samples: Vec<f64> = calls[i].iter().map(|d| us(*d)).collect();
        calls[i].sort();
        starts[i].sort();
        let median = us(percentile(&calls[i], 0.5));
        println!(
            "peers: {:<9} call median {:>7.1} µs  p95 {:>7.1} µs | first reply {:>6.1} ms | RSS {:>5.1} MiB (peak {:.1})",
            c.name,
            median,
            us(percentile(&calls[i], 0.95)),
            percentile(&starts[i], 0.5).as_secs_f64() * 1e3,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        out.insert(
            c.name.into(),
            json!({
                "n": calls[i].len(),
                "median_us": median,
                "p95_us": us(percentile(&calls[i], 0.95)),
                "samples_us": samples,
                "first_reply_ms": percentile(&starts[i], 0.5).as_secs_f64() * 1e3,
                "first_reply_samples_ms": starts[i].iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
                "rss_mib": rss as f64 / 1024.0,
                "peak_mib": hwm as f64 / 1024.0,
            }),
        );
    }
    if let Some(why) = act_skipped {
        out.insert("act".into(), json!({"skipped": why}));
    }
    out.insert(
        "how".into(),
        json!(format!("{ROUNDS} rounds of {BLOCK} calls on each server in turn after {WARMUP} warm-up calls each; {STARTS} interleaved starts")),
    );
    Value::Object(out)
}

/// Start and memory of `agentcap serve` with `n` tools: the echo component
/// under `n` names (the cache holds it compiled once).
fn tool_scaling(dir: &Path, cache: &Path) -> Value {
    let counts = [1usize, 10, 100];
    let policies: Vec<PathBuf> = counts
        .iter()
        .map(|&n| {
            let mut text = String::from("user = \"bench\"\n");
            text.push_str(&format!(
                "[journal]\npath = {:?}\n",
                dir.join(format!("journal-{n}.sqlite"))
            ));
            for i in 0..n {
                text.push_str(&format!(
                    "[tools.echo{i}]\ncomponent = {:?}\n",
                    agentcap_tests::guest("echo_types")
                ));
            }
            let path = dir.join(format!("tools-{n}.toml"));
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let peers: Vec<Peer> = policies
        .iter()
        .map(|p| agentcap_command(p, cache, false))
        .collect();
    // Fill the cache.
    Server::start(&peers[0]).initialize();
    let mut starts: Vec<Vec<Duration>> = vec![Vec::new(); counts.len()];
    for _ in 0..STARTS {
        for (i, peer) in peers.iter().enumerate() {
            let start = Instant::now();
            let mut server = Server::start(peer);
            server.initialize();
            starts[i].push(start.elapsed());
        }
    }
    let mut rows = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let mut server = Server::start(peer);
        server.initialize();
        let listed = server.request("tools/list", json!({}));
        let mcp_tools = listed["result"]["tools"].as_array().map_or(0, Vec::len);
        let first = server.request(
            "tools/call",
            json!({"name": "echo0.nothing", "arguments": {}}),
        );
        assert_eq!(first["result"]["isError"], false, "{first}");
        let (rss, hwm) = server.memory_kib();
        starts[i].sort();
        let start_ms = percentile(&starts[i], 0.5).as_secs_f64() * 1e3;
        println!(
            "tools: {:>3} in the policy ({mcp_tools} MCP tools): first reply {start_ms:.1} ms, RSS {:.1} MiB (peak {:.1})",
            counts[i],
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        rows.push(json!({
            "tools": counts[i],
            "mcp_tools": mcp_tools,
            "first_reply_ms": start_ms,
            "first_reply_max_ms": starts[i].last().unwrap().as_secs_f64() * 1e3,
            "rss_mib": rss as f64 / 1024.0,
            "peak_mib": hwm as f64 / 1024.0,
        }));
    }
    json!(rows)
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
    // `cargo test --benches` runs each bench once as a test (no `--bench`):
    // keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("mcp_stdio: run with `cargo bench` to measure");
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
    drop(server);
    let peers = peers(&policy, &cache);
    let scaling = tool_scaling(dir.path(), &cache);
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
        "peers": peers,
        "tool_scaling": scaling,
    });
    agentcap_tests::write_bench_results("mcp_stdio", &results);
}
