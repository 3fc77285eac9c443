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
PEERS_PLOT = os.path.join("docs", "benchmarks-peers.png")


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


PEERS = [("floor", "no-op stdio server (`tests/src/bin/mcp-floor.rs`)"),
         ("agentcap", "`agentcap serve`, `echo.nothing`"),
         ("act", "ACT `act run --mcp` (act-cli), `greet`")]


def peers_section(mcp):
    """Floor, agentcap and ACT measured by the same client in one run."""
    peers = mcp.get("peers")
    if peers is None:
        return ["", "## MCP servers side by side", "", "skipped: the mcp_stdio bench wrote no peers results", ""]
    out = [
        "",
        "## MCP servers side by side",
        "",
        "The same client (`tests/benches/mcp_stdio.rs`, newline-delimited JSON-RPC on the",
        "server's pipes) drives each server with `tools/call` of a trivial tool; "
        + peers.get("how", "") + ".",
        "Time to first reply: process start to the `initialize` reply (agentcap with its",
        "compiled-component cache warm). RSS: VmRSS after the calls.",
        "",
        "| Server | Median | p95 | First reply | RSS (peak) |",
        "|---|---|---|---|---|",
    ]
    for key, title in PEERS:
        r = peers.get(key, {"skipped": "did not run"})
        if "skipped" in r:
            out.append(f"| {title} | skipped: {r['skipped']} | | | |")
            continue
        out.append(f"| {title} | {r['median_us']:.1f} µs | {r['p95_us']:.1f} µs | "
                   f"{r['first_reply_ms']:.1f} ms | {r['rss_mib']:.1f} MiB ({r['peak_mib']:.1f}) |")
    floor, ours, act = (peers.get(k, {}) for k in ("floor", "agentcap", "act"))
    out += ["", "| Ratio | Median | First reply | RSS |", "|---|---|---|---|"]
    if "median_us" in floor and "median_us" in ours:
        out.append(
            f"| agentcap / floor | {ours['median_us'] / floor['median_us']:.2f}× "
            f"(+{ours['median_us'] - floor['median_us']:.1f} µs; target ≤ floor + 20 µs: "
            f"{status(ours['median_us'] <= floor['median_us'] + 20)}) | "
            f"{ours['first_reply_ms'] / floor['first_reply_ms']:.1f}× | {ours['rss_mib'] / floor['rss_mib']:.1f}× |")
    if "median_us" in act and "median_us" in ours:
        out.append(
            f"| ACT / agentcap | {act['median_us'] / ours['median_us']:.2f}× | "
            f"{act['first_reply_ms'] / ours['first_reply_ms']:.2f}× | {act['rss_mib'] / ours['rss_mib']:.2f}× |")
    else:
        out.append("| ACT / agentcap | skipped: " + ("see above" if "skipped" in act else "did not run") + " | | |")
    out += ["", f"![MCP servers side by side]({PEERS_PLOT})", ""]
    return out


def growth_section(mcp, stop):
    """How the costs grow: tools, sessions, journal size, running sessions."""
    out = ["", "## How cost grows", ""]
    scaling = mcp.get("tool_scaling")
    out += ["`agentcap serve` with 1, 10 and 100 tools in the policy (the echo component",
            "under each name; compiled-component cache warm; `tests/benches/mcp_stdio.rs`):", "",
            "| Tools in the policy | MCP tools listed | First reply (median / max) | RSS after a call (peak) |",
            "|---|---|---|---|"]
    if scaling is None:
        out.append("| skipped: the mcp_stdio bench wrote no tool scaling | | | |")
    else:
        for r in scaling:
            out.append(f"| {r['tools']} | {r['mcp_tools']} | {r['first_reply_ms']:.1f} / {r['first_reply_max_ms']:.1f} ms"
                       f" | {r['rss_mib']:.1f} MiB ({r['peak_mib']:.1f}) |")
    grow = results_or_none("scaling")
    out += [""]
    if grow is None:
        out += ["Throughput and journal size: skipped: `tests/benches/scaling.rs` did not run.", ""]
    else:
        t = grow["throughput"]
        out += [f"Throughput of trivial calls by concurrent sessions (`tests/benches/scaling.rs`; {t['how']}):", "",
                "| Concurrent sessions | Calls | Calls/s (median of 3) |", "|---|---|---|"]
        for r in t["rows"]:
            out.append(f"| {r['sessions']} | {r['calls']} | {r['calls_per_s']:,.0f} |")
        c = grow.get("consented")
        if c is None:
            out += ["", "Consented calls by sessions: skipped: the scaling bench wrote no consented results.", ""]
        else:
            out += ["", f"Consented calls by concurrent sessions, group commit ({c['how']}; target: 64 sessions",
                    "use at most one sync per 8 calls):", "",
                    "| Concurrent sessions | Calls | Calls/s (median of 3) | Journal syncs | Calls per sync |",
                    "|---|---|---|---|---|"]
            for r in c["rows"]:
                target = ""
                if r["sessions"] == 64:
                    target = ": " + status(r["calls_per_sync"] >= 8)
                out.append(f"| {r['sessions']} | {r['calls']} | {r['calls_per_s']:,.0f} | {r['syncs']}"
                           f" | {r['calls_per_sync']:.1f}{target} |")
        j = grow["journal"]
        out += ["", "The journal by size (grown by `Journal::append` on tmpfs, then at each size copied to disk",
                "under target/ and synced; there 200 decision appends (not a durability point; each rewrites",
                "the head anchor in place) and 50 `call` appends (synced), then `agentcap journal verify`",
                "as its own process, which streams the records; peak RSS read from /proc while it runs):", "",
                "| Records | File | Append, median / p95 | Durable append (fsync), median / p95 | `journal verify` | verify peak RSS |",
                "|---|---|---|---|---|---|"]
        for r in j["rows"]:
            if "skipped" in r:
                out.append(f"| {r['records']:,} | skipped: {r['skipped']} | | | | |")
                continue
            a, d = r["append_us"], r["durable_append_us"]
            out.append(f"| {r['records']:,} | {r['file_mib']:.0f} MiB | {a['median']:.0f} / {a['p95']:.0f} µs"
                       f" | {fmt_time(d['median'] * 1e3)} / {fmt_time(d['p95'] * 1e3)}"
                       f" | {r['verify_s']:.2f} s | {r['verify_peak_rss_mib']:.1f} MiB |")
        out.append("")
    conc = stop.get("concurrent")
    out += ["Stop with 1 and 64 sessions running a busy loop at once (`tests/benches/stop_latency.rs`;",
            "in process, 2 tokio workers; stop() to the call(s) returned):", "",
            "| Sessions running | Stop one of them, p50 / p99 | Stop everything, to the last call returned, p50 / p99 |",
            "|---|---|---|"]
    if conc is None:
        out.append("| skipped: the stop_latency bench wrote no concurrent results | | |")
    else:
        for r in conc:
            out.append(f"| {r['running']} | {r['one']['p50_ms']:.2f} / {r['one']['p99_ms']:.2f} ms (n={r['one']['n']})"
                       f" | {r['all']['p50_ms']:.2f} / {r['all']['p99_ms']:.2f} ms (n={r['all']['n']}) |")
        out += ["",
                "A stop is acknowledged (tokens revoked, no effect can start) before the guest traps; the",
                "guest traps at its next epoch check, when the executor polls it again: with 64 busy guests",
                "yielding at each 1 ms tick on 2 workers, its turn comes tens of milliseconds later. A stop",
                "of everything writes its own record (synced), then every session's stop record in one",
                "transaction and one sync (it was one sync per session, one after another)."]
    out.append("")
    return out


def results_or_none(name):
    path = os.path.join(RESULTS, f"{name}.json")
    if not os.path.exists(path):
        return None
    return results(name)


def peers_plot(mcp, plt, title):
    peers = mcp.get("peers") or {}
    shown = [(k, t) for k, t in PEERS if "samples_us" in peers.get(k, {})]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    ax = axes[0]
    ax.boxplot([peers[k]["samples_us"] for k, _ in shown],
               tick_labels=[k for k, _ in shown], showfliers=False)
    ax.set_title("MCP stdio tools/call round trip, same client, interleaved")
    ax.set_ylabel("µs")
    ax = axes[1]
    ax.boxplot([peers[k]["first_reply_samples_ms"] for k, _ in shown],
               tick_labels=[k for k, _ in shown])
    ax.set_title("Process start to first initialize reply")
    ax.set_ylabel("ms")
    missing = [f"{k}: skipped" for k, _ in PEERS if "samples_us" not in peers.get(k, {})]
    fig.suptitle(title + (" (" + "; ".join(missing) + ")" if missing else ""))
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, PEERS_PLOT), dpi=90)


def main():
    floor, floor_samples = criterion("floor")
    trivial, trivial_samples = criterion("agentcap_trivial")
    mail_disk, _ = criterion("capability/agentcap_mail_read")
    mail_tmpfs, _ = criterion("capability/agentcap_mail_read_tmpfs")
    read_one, _ = criterion("capability/agentcap_mail_read_one_tmpfs")
    gate_off, _ = criterion("gate_authorize_journal_off")
    append, _ = criterion("journal/append_durable")
    gate_on, _ = criterion("journal/gate_authorize_journal_on")
    batched, _ = criterion("consent_records_tmpfs/batched")
    one_by_one, _ = criterion("consent_records_tmpfs/one_by_one")
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
         "≤ 1.5× (1): " + status(read_one / floor <= 1.5) + "; ≤ 50 µs: " + status(read_one <= 50e3)),
        ("its journal records alone (consent in one transaction, intent synced, outcome), tmpfs",
         fmt_time(batched), f"{one_by_one / batched:.2f}× faster than one transaction per record ({fmt_time(one_by_one)})", ""),
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
        "process writes newline-delimited JSON-RPC to `agentcap serve` over pipes), `tests/benches/scaling.rs`.",
        "",
        "| Benchmark | Figure | Ratio / n | Target |",
        "|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    out += language_table(langs)
    out += peers_section(mcp)
    out += growth_section(mcp, stop)
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
        "  journals an intent and an outcome in a hash-chained SQLite journal (three",
        "  transactions: the consent's three records in one, the intent, the outcome),",
        "  besides the Maildir read itself, which lists the folder to find the message",
        "  (twice: to describe it for the token, and to read it). On disk the synced",
        "  intent dominates; durability of intents is an invariant, so the sync stays, but",
        "  concurrent calls share it (group commit: one sync carries every intent",
        "  committed while the one before ran). The bare call (no capability) is within",
        "  the target.",
        "- Calls per sync with 64 sessions misses its target of 8 on this machine: its disk",
        "  syncs in about 0.3 ms, while a consented call costs about 1 ms of CPU on 2",
        "  cores, so few calls commit while a sync runs (the sync waits up to 500 µs for",
        "  more when calls run side by side). Where syncs are slower than calls, groups",
        "  grow; the number of syncs is what the table shows, not a model.",
        "- Each bench writes its own results; `--report-only` assembles the newest of each.",
        "  A report may so hold runs of different times: the date of each run is in",
        "  target/criterion and target/bench-results.",
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
    peers_plot(mcp, plt, f"MCP servers side by side, {m['cpu']}, {m['cores']} cores, {today}")
    print(f"wrote BENCHMARKS.md, {PLOT} and {PEERS_PLOT}")


if __name__ == "__main__":
    main()
