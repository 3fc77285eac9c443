//! Stop propagation in a fleet: one PostgreSQL on loopback and 4, then 8,
//! hosts (each a `Runtime` with its own fleet member, in this process);
//! from a stop of everything written to the fleet's database to each
//! host's acknowledgement (its local stop done, nothing in flight), by the
//! database's clock. Each stop is followed by a resume. Prints p50/p99 and
//! writes `target/bench-results/fleet.json`; without PostgreSQL the
//! result says skipped.

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
    agentcap_tests::write_bench_results("fleet", &json!({ "runs": results }));
}
