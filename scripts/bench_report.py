"""Write BENCHMARKS.md and docs/benchmarks.png from the last `cargo bench`.

Reads criterion's estimates and samples under target/criterion and the
custom benches' results under target/bench-results. Run through
scripts/bench-report, which runs the benches first.
"""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRITERION = os.path.join(ROOT, "target", "criterion")
RESULTS = os.path.join(ROOT, "target", "bench-results")
PLOT = os.path.join("docs", "benchmarks.png")


def criterion(name):
    """(median ns, per-iteration samples in ns) of a criterion benchmark."""
    base = os.path.join(CRITERION, name, "new")
    try:
        with open(os.path.join(base, "estimates.json")) as f:
            median = json.load(f)["median"]["point_estimate"]
        with open(os.path.join(base, "sample.json")) as f:
            sample = json.load(f)
    except FileNotFoundError:
        sys.exit(f"no criterion results for {name}: run `cargo bench` first")
    per_iter = [t / n for t, n in zip(sample["times"], sample["iters"])]
    return median, per_iter


def results(name):
    path = os.path.join(RESULTS, f"{name}.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        sys.exit(f"no results in {path}: run `cargo bench` first")


def machine():
    model, cores = "unknown CPU", os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except OSError:
        mem_kib = 0
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True, cwd=ROOT)
    return {
        "cpu": model,
        "cores": cores,
        "memory": f"{mem_kib / 1024 / 1024:.0f} GiB",
        "kernel": platform.release(),
        "rustc": rustc.stdout.strip() or "unknown",
    }


def criterion_or_none(name):
    """Like criterion(), but None when the benchmark did not run."""
    if not os.path.exists(os.path.join(CRITERION, name, "new", "estimates.json")):
        return None
    return criterion(name)


def backend_rows():
    """Local backend vs server backend, same call, same run."""
    skipped = results("backends").get("skipped", {})
    rows = []
    for local, server, what in [
        ("mail_read_maildir", "mail_read_imap",
         "one standing token + one `mail.read` of a known message (fresh instance)"),
        ("data_query_sqlite", "data_query_postgres",
         "one standing token + one `data.query`, 50 rows of a 1000-row table (fresh instance)"),
    ]:
        base, _ = criterion(f"backends/{local}")
        label = local.split("_")[-1]
        rows.append((f"{what}: {label}", fmt_time(base), "", ""))
        other = None if server in skipped else criterion_or_none(f"backends/{server}")
        name = server.split("_")[-1]
        if other is None:
            reason = skipped.get(server, "did not run")
            rows.append((f"the same over {name} on loopback", f"skipped: {reason}", "", ""))
        else:
            rows.append((f"the same over {name} on loopback", fmt_time(other[0]),
                         f"{other[0] / base:.1f}× {label}, +{fmt_time(other[0] - base)}", ""))
    return rows


def fleet_rows():
    """Stop propagation across hosts sharing one PostgreSQL."""
    fleet = results("fleet")
    if "skipped" in fleet:
        return [("Stop propagation across a fleet", f"skipped: {fleet['skipped']}", "", "")]
    rows = []
    for run in fleet["runs"]:
        rows.append((
            f"Stop of everything written to the fleet's database → each of {run['hosts']} hosts acknowledged, p50 / p99",
            f"{run['p50_ms']:.1f} / {run['p99_ms']:.1f} ms",
            f"n={run['n']}",
            "p99 ≤ 50 ms: " + status(run["p99_ms"] <= 50),
        ))
        rows.append((
            f"the same, until the last of the {run['hosts']} hosts acknowledged, p50 / p99",
            f"{run['last_host_p50_ms']:.1f} / {run['last_host_p99_ms']:.1f} ms",
            f"n={run['n'] // run['hosts']}",
            "",
        ))
    for shape in fleet.get("journal_shapes", []):
        name = "one chain for the fleet (fleet-wide lock)" if shape["shape"] == "one-chain" else "a chain per host"
        rows.append((
            f"Shared journal shape: {name}, {shape['writers']} host(s) appending at once, durable commits",
            f"{shape['appends_per_s']:.0f} appends/s",
            f"p50 {shape['p50_ms']:.2f} ms, p99 {shape['p99_ms']:.2f} ms per append",
            "",
        ))
    calls = fleet.get("consented_calls_per_s")
    if calls:
        rows.append((
            "Consented `read-first` calls/s of one host (2 consents, 2 reads), alone → in a fleet (journal copied to the database meanwhile)",
            f"{calls['alone']:.0f} → {calls['in_fleet']:.0f} calls/s",
            f"{calls['in_fleet'] / calls['alone']:.2f}×",
            "",
        ))
    return rows


def fmt_time(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def status(met):
    return "met" if met else "**missed**"


LANGUAGES = [("rust", "Rust"), ("python", "Python (componentize-py)"),
             ("javascript", "JavaScript (componentize-js)")]


def language_table(langs):
    """The tools-by-language table and its note (tests/benches/languages.rs)."""
    def row(name, cell):
        return "| " + name + " | " + " | ".join(cell(langs[key]) for key, _ in LANGUAGES) + " |"

    return [
        "",
        "Tools by language (`tests/benches/languages.rs`; each language's hostile tool,",
        "built from source; `grow(0)` is the trivial function, `spin` the busy loop):",
        "",
        "| | " + " | ".join(title for _, title in LANGUAGES) + " |",
        "|---|" + "---|" * len(LANGUAGES),
        row("Component size", lambda r: f"{r['size_mib']:.1f} MiB"),
        row("Compile, no cache (cranelift)", lambda r: f"{r['compile_ms']:.0f} ms"),
        row("Cold start, cache warm: engine, cached component, link, first call",
            lambda r: f"{r['cold_start_cached_ms']:.1f} ms"),
        row("Trivial call, fresh instance, median / p95",
            lambda r: f"{fmt_time(r['call_us']['median'] * 1e3)} / {fmt_time(r['call_us']['p95'] * 1e3)}"),
        row("Resident memory per live instance (8 at once)", lambda r: f"{r['instance_mib']:.1f} MiB"),
        row("Stop a busy loop, journal on tmpfs, p50 / p99 (target p99 ≤ 5 ms)",
            lambda r: f"{r['stop_ms']['p50']:.2f} / {r['stop_ms']['p99']:.2f} ms: "
                      + status(r['stop_ms']['p99'] <= 5)),
        "",
        "The Python and JavaScript components carry an interpreter with its heap",
        "initialized at build time (a data segment of the component). They are compiled",
        "once and kept in the on-disk cache; each call gets a fresh instance whose linear",
        "memory is a copy-on-write mapping of that image from the pooling allocator, so a",
        "call pays for the pages it touches, not for the interpreter's start.",
    ]


def main():
    floor, floor_samples = criterion("floor")
    trivial, trivial_samples = criterion("agentcap_trivial")
    mail_disk, _ = criterion("capability/agentcap_mail_read")
    mail_tmpfs, _ = criterion("capability/agentcap_mail_read_tmpfs")
    read_one, _ = criterion("capability/agentcap_mail_read_one_tmpfs")
    gate_off, _ = criterion("gate_authorize_journal_off")
    append, _ = criterion("journal/append_durable")
    gate_on, _ = criterion("journal/gate_authorize_journal_on")
    burst, _ = criterion("throughput/64_concurrent_trivial_calls")
    native_get, _ = criterion("http/native_get")
    agentcap_get, _ = criterion("http/agentcap_get")
    stop = results("stop_latency")
    mcp = results("mcp_stdio")
    langs = results("languages")
    m = machine()
    calls_per_s = 64 / (burst / 1e9)
    mcp_call = mcp["trivial_call_us"]
    cold = mcp["cold_start_ms"]
    memory = mcp["memory_mib"]

    rows = [
        ("Bare wasmtime floor: fresh instance + trivial export (pooling, same engine)",
         fmt_time(floor), "", "(1)"),
        ("agentcap trivial call (`Runtime::call`: JSON in/out, limits, epochs, capture)",
         fmt_time(trivial), f"{trivial / floor:.2f}× (1)", "≤ 1.5× (1): " + status(trivial / floor <= 1.5)),
        ("agentcap: instantiate + 1 standing token + one consented `mail.read`, Maildir and journal on tmpfs",
         fmt_time(read_one), f"{read_one / floor:.1f}× (1)",
         "≤ 1.5× (1): " + status(read_one / floor <= 1.5)),
        ("agentcap: 2 standing tokens, `mail.list` (parses 46 messages) + `mail.read`, on tmpfs",
         fmt_time(mail_tmpfs), f"{mail_tmpfs / floor:.1f}× (1)", ""),
        ("the same on disk (2 fsync'd intents)",
         fmt_time(mail_disk), f"{mail_disk / floor:.0f}× (1)", "durability cost"),
        ("Gate check (token lookup, expiry, scope), journal off",
         fmt_time(gate_off), "", "≤ 1 µs: " + status(gate_off <= 1000)),
        ("Journal append of an intent (WAL, fsync)", fmt_time(append), "", ""),
        ("Gate check + intent (fsync) + outcome records", fmt_time(gate_on), "", ""),
        ("HTTP GET to a loopback server, native client (`ureq`, new connection): the floor",
         fmt_time(native_get), "", "(2)"),
        ("The same GET from a tool (`wstd` over `wasi:http`), standing grant, journaled on tmpfs, fresh instance",
         fmt_time(agentcap_get), f"{agentcap_get / native_get:.1f}× (2), +{fmt_time(agentcap_get - native_get)}", ""),
        ("Throughput: 64 concurrent trivial calls, 2 workers",
         fmt_time(burst), f"{calls_per_s:,.0f} calls/s", ""),
        ("Stop, busy guest: stop() to guest trapped, p50 / p99",
         f"{stop['busy_loop']['trapped_p50_us'] / 1e3:.2f} / {stop['busy_loop']['trapped_p99_us'] / 1e3:.2f} ms",
         f"n={stop['busy_loop']['n']}", "p99 ≤ 5 ms: " + status(stop['busy_loop']['trapped_p99_us'] <= 5000)),
        ("Stop, guest deleting mail in a loop: p50 / p99",
         f"{stop['capability_loop']['trapped_p50_us'] / 1e3:.2f} / {stop['capability_loop']['trapped_p99_us'] / 1e3:.2f} ms",
         f"n={stop['capability_loop']['n']}", "p99 ≤ 5 ms: " + status(stop['capability_loop']['trapped_p99_us'] <= 5000)),
        ("MCP stdio round trip, trivial tool, median / p95",
         f"{mcp_call['median']:.1f} / {mcp_call['p95']:.1f} µs", f"n={mcp_call['n']}",
         "median ≤ 70 µs: " + status(mcp_call["median"] <= 70)),
        ("MCP stdio `ping` (protocol floor, no tool), median / p95",
         f"{mcp['ping_us']['median']:.1f} / {mcp['ping_us']['p95']:.1f} µs", "", ""),
        ("Cold start to first `initialize` reply, compiled-component cache warm",
         f"{cold['cached_median']:.1f} ms", f"n={cold['n']}", "≤ 50 ms: " + status(cold["cached_median"] <= 50)),
        ("Cold start without the cache (compiles 3 components)",
         f"{cold['compiling_median']:.1f} ms", f"n={cold['n']}", ""),
        (f"Server RSS with the examples loaded ({memory['tools']} MCP tools, 3 components)",
         f"{memory['rss_after_calls']:.1f} MiB", f"peak {memory['peak']:.1f} MiB",
         "≤ 30 MB: " + status(memory["peak"] * 1.048576 <= 30)),
    ]

    today = datetime.date.today().isoformat()
    out = [
        "# Benchmarks",
        "",
        f"Generated by `scripts/bench-report` on {today}; do not edit by hand.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, Linux {m['kernel']}, {m['rustc']}.",
        "Medians unless noted. Criterion benches: `runtime/benches/gate.rs`, `tests/benches/overhead.rs`;",
        "custom: `tests/benches/stop_latency.rs`, `tests/benches/mcp_stdio.rs` (a client in the bench",
        "process writes newline-delimited JSON-RPC to `agentcap serve` over pipes).",
        "",
        "| Benchmark | Figure | Ratio / n | Target |",
        "|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    out += language_table(langs)
    out += [
        "",
        "## Server backends",
        "",
        "The same consented calls over the local backends and the server ones, in one run",
        "(`tests/benches/backends.rs`; the journal on tmpfs; Dovecot and PostgreSQL started",
        "by the bench on loopback, the connection kept between calls).",
        "",
        "| Call | Median | Ratio | |",
        "|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in backend_rows()]
    out += [
        "",
        "## Fleet",
        "",
        "Hosts sharing stops through one PostgreSQL on loopback (`tests/benches/fleet.rs`: each",
        "host a runtime with its own fleet connection, in one process; times by the database's clock,",
        "from the stop's row to each host's acknowledgement, written once its local stop is done).",
        "",
        "| Measure | Figure | n | Target |",
        "|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in fleet_rows()]
    out += [
        "",
        "Notes:",
        "",
        "- A consented capability call is far above 1.5× the floor, and this target is",
        "  missed by design: the token is requested, decided and minted, and the effect",
        "  journals an intent and an outcome in a hash-chained SQLite journal (five",
        "  transactions, each hashing its record), besides the Maildir read itself. On",
        "  tmpfs that bookkeeping is what remains; on disk the fsync'd intent dominates.",
        "  Durability of intents is an invariant, so the fsync stays; records that precede",
        "  no effect share the next intent's fsync. The bare call (no capability) is",
        "  within the target.",
        "- The MCP round trip includes a fresh instance per call; `ping` shows what the",
        "  protocol path alone costs.",
        "- Server backends: an IMAP read is a FETCH of the message after an EXAMINE of",
        "  its folder (and one to describe it for the token); a PostgreSQL query is",
        "  lexed, planned (EXPLAIN, to find what it reads) and run in a read-only",
        "  transaction that is rolled back: several round trips per call.",
        "- (2) The agentcap GET includes a fresh instance of the tool, its consent",
        "  request, decision and token (standing grant), the Gate, the intent and",
        "  outcome records, and the connection to the checked address.",
        "",
        f"![latency distributions]({PLOT})",
        "",
    ]
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(out))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0][0]
    ax.boxplot([[s / 1e3 for s in floor_samples], [s / 1e3 for s in trivial_samples]],
               tick_labels=["bare wasmtime", "agentcap"], showfliers=False)
    ax.set_title("Trivial call, fresh instance (criterion samples)")
    ax.set_ylabel("µs per call")
    ax = axes[0][1]
    ax.hist(mcp_call["samples"], bins=40, color="tab:blue")
    ax.axvline(statistics.median(mcp_call["samples"]), color="k", linestyle="--", label="median")
    ax.set_title(f"MCP stdio round trip, trivial tool (n={mcp_call['n']})")
    ax.set_xlabel("µs")
    ax.legend()
    ax = axes[1][0]
    ax.boxplot([[s / 1e3 for s in stop["busy_loop"]["trapped_samples_us"]],
                [s / 1e3 for s in stop["capability_loop"]["trapped_samples_us"]]],
               tick_labels=["busy loop", "capability loop"])
    ax.axhline(5, color="tab:red", linestyle=":", label="target p99")
    ax.set_title("Stop: stop() to guest trapped")
    ax.set_ylabel("ms")
    ax.legend()
    ax = axes[1][1]
    ax.boxplot([cold["cached_samples"], cold["compiling_samples"]],
               tick_labels=["cache warm", "no cache"])
    ax.axhline(50, color="tab:red", linestyle=":", label="target (cached)")
    ax.set_title("Process start to first initialize reply")
    ax.set_ylabel("ms")
    ax.legend()
    fig.suptitle(f"agentcap benchmarks, {m['cpu']}, {m['cores']} cores, {today}")
    fig.tight_layout()
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    fig.savefig(os.path.join(ROOT, PLOT), dpi=90)
    print(f"wrote BENCHMARKS.md and {PLOT}")


if __name__ == "__main__":
    main()
