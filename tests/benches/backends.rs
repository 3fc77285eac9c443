//! The same consented calls over the local backends and the server ones,
//! in one run (the journal on tmpfs when there is one, so the backend's own
//! cost shows):
//! - `backends/mail_read_maildir` and `backends/mail_read_imap`: one
//!   standing token and one `mail.read` of a known message (fresh
//!   instance), from the fixture Maildir and from a Dovecot on loopback
//!   serving the same messages (connection kept by the worker);
//! - `backends/data_query_sqlite` and `backends/data_query_postgres`: one
//!   standing token and one `data.query` of 50 rows of a 1000-row table,
//!   from a SQLite file and from a PostgreSQL on loopback (the host checks
//!   the statement's plan with the server before it runs).
//!
//! A backend whose server is not installed is recorded as skipped in
//! `target/bench-results/backends.json`, which the report shows.

use std::sync::Arc;
use std::time::Duration;

use agentcap::consent::{Decision, ScriptedApprover, SessionId};
use agentcap::{AgentEngine, LoadedTool, Runtime};
use agentcap_tests::dovecot::Dovecot;
use agentcap_tests::pg_server::Postgres;
use agentcap_tests::{Workspace, guest};
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

const ROWS: i64 = 1000;
const QUERY: &str = "SELECT name, value FROM metrics WHERE id <= 50";

/// A session for consented calls: a new one every 1000 calls (a session
/// may make at most 10,000 consent requests).
fn consenting_session() -> SessionId {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    SessionId(format!("bench-{}", n / 1000))
}

fn workspace() -> Workspace {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        Workspace::new_in(shm)
    } else {
        Workspace::new()
    }
}

fn runtime(ws: &Workspace, policy: &str, tool: &str) -> (Runtime, LoadedTool) {
    let runtime = Runtime::new(
        AgentEngine::new(None).unwrap(),
        ws.policy(policy),
        Arc::new(ScriptedApprover::new("bench", Decision::approve_all)),
    )
    .unwrap();
    let tool = runtime.load_tool(tool).unwrap();
    (runtime, tool)
}

/// Measure `function(args)` of `tool`, which must succeed.
fn consented(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    (runtime, tool): &(Runtime, LoadedTool),
    function: &'static str,
    args: Value,
) {
    group.bench_function(name, |b| {
        b.to_async(rt).iter(|| async {
            let out = runtime
                .call(tool, &consenting_session(), function, &args)
                .await
                .unwrap();
            assert!(!out.is_error, "{}", out.result);
        })
    });
}

fn mail_policy(mail_table: &str) -> String {
    format!(
        "user = \"alice\"\n{mail_table}\n[tools.sweeper]\ncomponent = {:?}\n\
         [[tools.sweeper.grants]]\ncapability = \"mail.read\"\nmode = \"standing\"\n",
        guest("mail_sweeper")
    )
}

fn data_policy(data: &str) -> String {
    agentcap_tests::hostile_data_policy(
        &format!("max_rows = 1000\ntimeout_ms = 5000\n{data}"),
        "mode = \"standing\"\ntables = [\"metrics\"]",
    )
}

const SCHEMA: &str =
    "CREATE TABLE metrics (id integer PRIMARY KEY, name text NOT NULL, value integer NOT NULL)";

fn fill_sql() -> String {
    let rows: Vec<String> = (1..=ROWS)
        .map(|i| format!("({i}, 'metric-{i}', {})", i * 7 % 101))
        .collect();
    format!("INSERT INTO metrics VALUES {}", rows.join(", "))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut skipped = serde_json::Map::new();
    let mut group = c.benchmark_group("backends");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(8));

    // Mail: one message read, from the Maildir and over IMAP.
    let ws = workspace();
    let maildir = runtime(
        &ws,
        &mail_policy("[mail]\nmaildir = \"Maildir\""),
        "sweeper",
    );
    let id = ws.ids_in("INBOX").into_iter().next().expect("a message");
    consented(
        &mut group,
        &rt,
        "mail_read_maildir",
        &maildir,
        "read-one",
        json!({ "id": id }),
    );
    if agentcap_tests::which("dovecot").is_some() {
        let server = Dovecot::start();
        let mut client = server.client();
        let message = std::fs::read(
            std::fs::read_dir(agentcap_tests::fixture_maildir().join("cur"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap();
        let uid = client.append("INBOX", "\\Seen", &message);
        let id = format!("INBOX/{}.{uid}", client.uid_validity("INBOX"));
        let ws = workspace();
        let imap = runtime(&ws, &mail_policy(&server.mail_table()), "sweeper");
        consented(
            &mut group,
            &rt,
            "mail_read_imap",
            &imap,
            "read-one",
            json!({ "id": id }),
        );
    } else {
        skipped.insert(
            "mail_read_imap".into(),
            json!("dovecot is not installed (apt-get install dovecot-imapd)"),
        );
    }

    // Data: the same statement on the same rows, SQLite and PostgreSQL.
    let ws = workspace();
    let db = ws.dir.path().join("data.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(&format!("{SCHEMA}; {};", fill_sql()))
        .unwrap();
    drop(conn);
    let sqlite = agentcap_tests::load_hostile_data(
        &ws,
        &data_policy("database = \"data.sqlite\""),
        Arc::new(ScriptedApprover::new("bench", Decision::approve_all)),
    );
    let query = json!({ "sql": QUERY, "tables": ["metrics"] });
    consented(
        &mut group,
        &rt,
        "data_query_sqlite",
        &sqlite,
        "query",
        query.clone(),
    );
    let has_postgres = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().any(|v| v.path().join("bin/initdb").is_file()))
        .unwrap_or(false);
    if has_postgres {
        let server = Postgres::start();
        server.execute("postgres", "CREATE DATABASE bench");
        server.execute("bench", SCHEMA);
        server.execute("bench", &fill_sql());
        server.execute("bench", "CREATE ROLE reader LOGIN PASSWORD 'bench-pw'");
        server.execute("bench", "GRANT SELECT ON metrics TO reader");
        let ws = workspace();
        std::fs::write(ws.dir.path().join("pg-password"), "bench-pw").unwrap();
        let postgres = agentcap_tests::load_hostile_data(
            &ws,
            &data_policy(&format!(
                "[data.postgres]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"bench\"\n\
                 user = \"reader\"\npassword_file = \"pg-password\"\ntls = false",
                server.port
            )),
            Arc::new(ScriptedApprover::new("bench", Decision::approve_all)),
        );
        consented(
            &mut group,
            &rt,
            "data_query_postgres",
            &postgres,
            "query",
            query,
        );
    } else {
        skipped.insert(
            "data_query_postgres".into(),
            json!("PostgreSQL is not installed (apt-get install postgresql)"),
        );
    }
    group.finish();
    agentcap_tests::write_bench_results("backends", &json!({ "skipped": skipped }));
}

criterion_group!(benches, bench);
criterion_main!(benches);
