//! Stop propagation in a fleet: one PostgreSQL on loopback and 4, then 8,
//! hosts (each a `Runtime` with its own fleet member, in this process);
//! from a stop of everything written to the fleet's database to each
//! host's acknowledgement (its local stop done, nothing in flight), by the
//! database's clock. Each stop is followed by a resume. Prints p50/p99.
//!
//! On a second server with durable commits (fsync on, as in production):
//! the two shapes of a shared journal, measured as durable appends from 1,
//! 4 and 8 writers (hosts) at once: one chain for the fleet (each append
//! takes a fleet-wide lock, reads the last hash, inserts, commits) and a
//! chain per host (each host inserts its own next record); and consented
//! calls per second of one host (`read-first`: two consents, two reads)
//! alone and in a fleet (its journal copied to the database meanwhile).
//!
//! Writes `target/bench-results/fleet.json`; without PostgreSQL the result
//! says skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentcap::consent::DenyApprover;
use agentcap::fleet::{self, FleetEvent};
use agentcap::{AgentEngine, Runtime};
use agentcap_tests::Workspace;
use agentcap_tests::pg_server::{ADMIN_PASSWORD, Postgres};
use serde_json::json;

const STOPS: usize = 100;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Write `event` and wait for `hosts` acknowledgements; returns each
/// host's time to acknowledge, in ms.
async fn propagate(
    client: &mut tokio_postgres::Client,
    event: FleetEvent,
    hosts: usize,
) -> Vec<f64> {
    let id = fleet::write_event(client, &event, "bench").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (acks, _) = fleet::acknowledgements(client, id).await.unwrap();
        if acks.len() == hosts {
            return acks.iter().map(|a| a.after_us as f64 / 1000.0).collect();
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {hosts} acknowledged",
            acks.len()
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

async fn run(connection: &str, hosts: usize) -> serde_json::Value {
    let workspaces: Vec<Workspace> = (0..hosts).map(|_| Workspace::new()).collect();
    let runtimes: Vec<Runtime> = workspaces
        .iter()
        .enumerate()
        .map(|(i, ws)| {
            let policy = format!(
                "user = \"alice\"\n[fleet]\npostgres = \"{connection}\"\nhost = \"bench-{hosts}-{i}\"\n"
            );
            Runtime::new(
                AgentEngine::new(None).unwrap(),
                ws.policy(&policy),
                Arc::new(DenyApprover::new("bench")),
            )
            .unwrap()
        })
        .collect();
    let members: Vec<_> = runtimes.iter().map(|r| r.start_fleet().unwrap()).collect();
    for member in &members {
        assert!(member.wait_in_touch(Duration::from_secs(10)).await);
    }
    let settings = runtimes[0].policy().fleet.clone().unwrap();
    let (mut client, _connection) = fleet::connect(&settings, std::path::Path::new("."))
        .await
        .unwrap();
    let mut all = Vec::new();
    let mut slowest = Vec::new();
    for _ in 0..STOPS {
        let stop = propagate(
            &mut client,
            FleetEvent::StopAll { by: "bench".into() },
            hosts,
        )
        .await;
        slowest.push(stop.iter().cloned().fold(0.0, f64::max));
        all.extend(stop);
        propagate(
            &mut client,
            FleetEvent::Resume { by: "bench".into() },
            hosts,
        )
        .await;
    }
    for member in members {
        member.leave().await.unwrap();
    }
    all.sort_by(f64::total_cmp);
    slowest.sort_by(f64::total_cmp);
    println!(
        "fleet of {hosts}: acknowledgement p50 {:.1} ms, p99 {:.1} ms; last host p50 {:.1} ms, p99 {:.1} ms (n={})",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&slowest, 0.5),
        percentile(&slowest, 0.99),
        all.len()
    );
    json!({
        "hosts": hosts,
        "n": all.len(),
        "p50_ms": percentile(&all, 0.5),
        "p99_ms": percentile(&all, 0.99),
        "last_host_p50_ms": percentile(&slowest, 0.5),
        "last_host_p99_ms": percentile(&slowest, 0.99),
    })
}

/// Durable appends for `seconds` from `writers` connections at once, in
/// `shape` (`one-chain` or `chain-per-host`): appends per second (all
/// writers) and each append's latency p50/p99 in ms.
async fn journal_shape(
    connection: &str,
    shape: &str,
    writers: usize,
    seconds: f64,
) -> serde_json::Value {
    use sha2::Digest;
    let table = format!("shape_{}_{writers}", shape.replace('-', "_"));
    let (setup, _c) = tokio_postgres::connect(connection, tokio_postgres::NoTls)
        .await
        .map(|(c, conn)| (c, tokio::spawn(conn)))
        .unwrap();
    setup
        .batch_execute(&format!(
            "CREATE TABLE {table} (chain text NOT NULL, seq bigint NOT NULL, record text NOT NULL, hash text NOT NULL, PRIMARY KEY (chain, seq))"
        ))
        .await
        .unwrap();
    let record = "x".repeat(400);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (client, conn) = tokio_postgres::connect(connection, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let (table, record, shape) = (table.clone(), record.clone(), shape.to_string());
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            let chain = if shape == "one-chain" {
                "fleet".to_string()
            } else {
                format!("host-{w}")
            };
            let (mut seq, mut prev) = (0_i64, String::new());
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let started = Instant::now();
                if shape == "one-chain" {
                    let tx = client.transaction().await.unwrap();
                    tx.execute("SELECT pg_advisory_xact_lock(42)", &[])
                        .await
                        .unwrap();
                    let last = tx
                        .query_opt(
                            &format!("SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1"),
                            &[],
                        )
                        .await
                        .unwrap();
                    (seq, prev) = last
                        .map(|r| (r.get(0), r.get(1)))
                        .unwrap_or((0, String::new()));
                    seq += 1;
                    let hash = hex::encode(sha2::Sha256::digest(format!("{prev}{seq}{record}")));
                    tx.execute(
                        &format!("INSERT INTO {table} VALUES ($1, $2, $3, $4)"),
                        &[&chain, &seq, &record, &hash],
                    )
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                } else {
                    seq += 1;
                    let hash = hex::encode(sha2::Sha256::digest(format!("{prev}{seq}{record}")));
                    client
                        .execute(
                            &format!("INSERT INTO {table} VALUES ($1, $2, $3, $4)"),
                            &[&chain, &seq, &record, &hash],
                        )
                        .await
                        .unwrap();
                    prev = hash;
                }
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_by(f64::total_cmp);
    let per_second = all.len() as f64 / seconds;
    println!(
        "journal shape {shape}, {writers} writer(s): {per_second:.0} durable appends/s, p50 {:.2} ms, p99 {:.2} ms",
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
    json!({
        "shape": shape,
        "writers": writers,
        "appends_per_s": per_second,
        "p50_ms": percentile(&all, 0.5),
        "p99_ms": percentile(&all, 0.99),
    })
}

/// Consented `read-first` calls per second of one host for `seconds`,
/// alone (`connection` None) or in a fleet (its journal copied meanwhile).
async fn consented_calls(connection: Option<&str>, seconds: f64) -> f64 {
    let ws = Workspace::new();
    let policy =
        agentcap_tests::fleet::host_policy(connection.unwrap_or("unused"), "throughput", 2000);
    let policy = match connection {
        Some(_) => policy,
        None => {
            let start = policy.find("[fleet]").unwrap();
            let end = policy.find("[tools.sweeper]").unwrap();
            format!("{}{}", &policy[..start], &policy[end..])
        }
    };
    let runtime = Runtime::new(
        AgentEngine::new(None).unwrap(),
        ws.policy(&policy),
        Arc::new(DenyApprover::new("bench")),
    )
    .unwrap();
    let tool = runtime.load_tool("sweeper").unwrap();
    let member = runtime.start_fleet();
    if let Some(member) = &member {
        assert!(member.wait_in_touch(Duration::from_secs(10)).await);
    }
    let session = agentcap::consent::SessionId("bench".into());
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed().as_secs_f64() < seconds {
        let outcome = runtime
            .call(&tool, &session, "read-first", &json!({"folder": "INBOX"}))
            .await
            .unwrap();
        assert!(outcome.result.get("ok").is_some(), "{}", outcome.result);
        calls += 1;
    }
    let per_second = calls as f64 / started.elapsed().as_secs_f64();
    if let Some(member) = member {
        member.leave().await.unwrap();
    }
    per_second
}

fn main() {
    let has_postgres = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().any(|v| v.path().join("bin/initdb").is_file()))
        .unwrap_or(false);
    if !has_postgres {
        println!("fleet: skipped (PostgreSQL is not installed)");
        agentcap_tests::write_bench_results(
            "fleet",
            &json!({ "skipped": "PostgreSQL is not installed (apt-get install postgresql)" }),
        );
        return;
    }
    let server = Postgres::start();
    server.execute("postgres", "CREATE DATABASE fleet");
    server.execute(
        "postgres",
        "ALTER DATABASE fleet SET synchronous_commit = on",
    );
    let connection = format!(
        "host=127.0.0.1 port={} user=postgres password={ADMIN_PASSWORD} dbname=fleet sslmode=disable",
        server.port
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let results: Vec<_> = [4, 8]
        .iter()
        .map(|n| rt.block_on(run(&connection, *n)))
        .collect();
    drop(server);
    // Durable commits from here on.
    let durable = Postgres::start_durable();
    durable.execute("postgres", "CREATE DATABASE fleet");
    let connection = format!(
        "host=127.0.0.1 port={} user=postgres password={ADMIN_PASSWORD} dbname=fleet sslmode=disable",
        durable.port
    );
    let mut shapes = Vec::new();
    for writers in [1, 4, 8] {
        for shape in ["one-chain", "chain-per-host"] {
            shapes.push(rt.block_on(journal_shape(&connection, shape, writers, 3.0)));
        }
    }
    // Alternate, so that noise hits both alike.
    let (mut alone, mut in_fleet) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        alone.push(rt.block_on(consented_calls(None, 2.0)));
        in_fleet.push(rt.block_on(consented_calls(Some(&connection), 2.0)));
    }
    alone.sort_by(f64::total_cmp);
    in_fleet.sort_by(f64::total_cmp);
    println!(
        "consented read-first calls/s (median of 3): alone {:.0}, in a fleet {:.0}",
        alone[1], in_fleet[1]
    );
    agentcap_tests::write_bench_results(
        "fleet",
        &json!({
            "runs": results,
            "journal_shapes": shapes,
            "consented_calls_per_s": {"alone": alone[1], "in_fleet": in_fleet[1]},
        }),
    );
}
