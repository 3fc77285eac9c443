//! The host's memory stays bounded whatever SQL a tool runs with a standing
//! `data.query` grant, on SQLite and on PostgreSQL: huge values and huge
//! results are refused with an error naming the limit, and the process's
//! peak resident size grows by at most [`BOUND_MB`] while four such
//! queries run at once. (Peak RSS is per process, so the tests here take
//! turns.)

use std::sync::Arc;

use agentcap::consent::{Decision, ScriptedApprover};
use agentcap::{LoadedTool, Runtime};
use agentcap_tests::Workspace;
use agentcap_tests::pg_server::{ADMIN_PASSWORD, Postgres};
use serde_json::json;

/// `max_result_mb` in the policies below.
const MAX_RESULT_MB: u64 = 16;
/// Concurrent queries.
const CONCURRENT: u64 = 4;
/// The stated bound on the host's growth: per concurrent query its result
/// budget (the rows held and the batch in flight fit in it), plus 64 MiB.
/// Measured on the 2-core CI machine: 24 MiB (SQLite), 39 MiB (PostgreSQL).
const BOUND_MB: u64 = CONCURRENT * MAX_RESULT_MB + 64;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// Reset the peak resident size to the current one.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
}

fn load(ws: &Workspace, data: &str) -> (Runtime, LoadedTool) {
    let policy = agentcap_tests::hostile_data_policy(
        &format!("max_rows = 1000\ntimeout_ms = 2000\nmax_result_mb = {MAX_RESULT_MB}\n{data}"),
        "mode = \"standing\"\ntables = [\"service_metrics\", \"customers\"]",
    );
    let approver = Arc::new(ScriptedApprover::new("test-user", Decision::approve_all));
    agentcap_tests::load_hostile_data(ws, &policy, approver)
}

async fn query(
    runtime: &Runtime,
    tool: &LoadedTool,
    sql: &str,
    table: &str,
) -> Result<serde_json::Value, String> {
    agentcap_tests::call_tool(
        runtime,
        tool,
        "query",
        &json!({"sql": sql, "tables": [table]}),
    )
    .await
}

/// Run each attack `CONCURRENT` times at once; each must fail naming its
/// limit (one of the ` | `-separated texts); the peak resident size must stay within [`BOUND_MB`].
async fn attack(runtime: &Runtime, tool: &LoadedTool, table: &str, attacks: &[(&str, &str)]) {
    // Warm up: the component compiled, a connection open.
    let warm = format!("SELECT count(*) FROM {table}");
    query(runtime, tool, &warm, table).await.unwrap();
    let before_kb = status_kb("VmRSS:");
    reset_peak();
    for (sql, expected) in attacks {
        let calls = (0..CONCURRENT).map(|_| query(runtime, tool, sql, table));
        for result in futures_util::future::join_all(calls).await {
            let err = result.expect_err(sql);
            assert!(
                expected.split(" | ").any(|e| err.contains(e)),
                "{sql}\n  expected: {expected}\n  got: {err}"
            );
        }
    }
    let grown_mb = status_kb("VmHWM:").saturating_sub(before_kb) / 1024;
    eprintln!("{table}: peak RSS grew {grown_mb} MiB (bound {BOUND_MB} MiB)");
    assert!(
        grown_mb <= BOUND_MB,
        "peak RSS grew {grown_mb} MiB, over the bound of {BOUND_MB} MiB"
    );
    // Still answers.
    query(runtime, tool, &warm, table).await.unwrap();
}

#[tokio::test]
async fn sqlite_results_are_bounded_whatever_the_sql() {
    let _turn = TURN.lock().await;
    let ws = Workspace::new();
    rusqlite::Connection::open(ws.dir.path().join("company.sqlite"))
        .unwrap()
        .execute_batch(agentcap::demo::COMPANY_SQL)
        .unwrap();
    let (runtime, tool) = load(&ws, "database = \"company.sqlite\"");
    // 15 rows, cubed.
    let rows = "service_metrics a, service_metrics b, service_metrics c";
    attack(
        &runtime,
        &tool,
        "service_metrics",
        &[
            // The three: refused, not allocated.
            (
                "SELECT zeroblob(1000000000) FROM service_metrics LIMIT 1",
                "function zeroblob is not allowed",
            ),
            (
                "SELECT length(randomblob(900000000)) FROM service_metrics LIMIT 1",
                "function randomblob is not allowed",
            ),
            (
                "SELECT printf('%.*c', 1000000000, 'x') FROM service_metrics LIMIT 1",
                "too big",
            ),
            // 1,000 rows of 1 MB each: over the result budget.
            (
                &format!("SELECT printf('%.*c', 1000000, 'x') FROM {rows}"),
                "larger than the limit of 16 MiB",
            ),
            // Sorted first: the sort spills to a temporary file.
            (
                &format!(
                    "SELECT printf('%.*c', 100000, 'x') || a.day || b.day FROM {rows} ORDER BY 1 DESC"
                ),
                "larger than the limit of 16 MiB",
            ),
            // One value built from many: SQLite's length limit.
            (
                &format!("SELECT group_concat(printf('%.*c', 100000, 'x')) FROM {rows}"),
                "too big",
            ),
        ],
    )
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
async fn postgres_results_are_bounded_whatever_the_sql() {
    let _turn = TURN.lock().await;
    let server = Postgres::start();
    server.execute("postgres", "CREATE DATABASE company");
    server.execute(
        "company",
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO customers SELECT i, 'name ' || i FROM generate_series(1, 2000) i;",
    );
    let ws = Workspace::new();
    std::fs::write(ws.dir.path().join("pg-password"), ADMIN_PASSWORD).unwrap();
    let (runtime, tool) = load(
        &ws,
        &format!(
            "[data.postgres]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"company\"\n\
             user = \"postgres\"\npassword_file = \"pg-password\"\ntls = false\nallow_superuser = true",
            server.port
        ),
    );
    attack(
        &runtime,
        &tool,
        "customers",
        &[
            // One value of 200 MB: the server refuses the row unsent.
            (
                "SELECT lpad(name, 200000000, '-') FROM customers LIMIT 1",
                "a row of the result is larger than the limit of 1024 KiB",
            ),
            // The planner folds constants: this plan (EXPLAIN) itself would
            // hold the 500 MB value; the host reads no message over 4 MiB
            // (or the server runs out of time writing it).
            (
                "SELECT repeat('x', 500000000) FROM customers LIMIT 1",
                "a message from the server is larger than 4096 KiB | ran longer than its limit",
            ),
            (
                "SELECT lpad('x', 30000000, 'y') AS a FROM customers WHERE id = 1",
                "a message from the server is larger than 4096 KiB | ran longer than its limit",
            ),
            // One aggregate over a cross join, 400 MB: the same (or out of
            // time first).
            (
                "SELECT string_agg(lpad(a.name, 100, '-'), ',') FROM customers a, customers b \
                 WHERE b.id <= 2000",
                "a row of the result is larger than the limit of 1024 KiB | ran longer than its limit",
            ),
            // 1,000 rows of 1 MB: over the result budget.
            (
                "SELECT lpad(name, 1000000, '-') FROM customers",
                "larger than the limit of 16 MiB",
            ),
            // Many narrow rows count too.
            (
                "SELECT a.id, b.id, lpad(a.name, 20000, '-') FROM customers a, customers b",
                "larger than the limit of 16 MiB",
            ),
        ],
    )
    .await;
    drop(runtime);
}
