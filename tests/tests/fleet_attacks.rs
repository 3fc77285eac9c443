//! Attacks on the fleet, found by a reviewer with no view of the tests
//! (each once broke a promise; each test now shows the attack fails):
//! same host names, events committed out of order, an acknowledgement
//! racing an effect in flight, Ctrl-C on a serving host, a host with a
//! longer limit than the CLI's, a restored database, hostile rows, a stop
//! pressed while the database was away, an event planted with a huge id, a
//! request the database refuses, and a fleet journal relabelled or planted.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentcap::consent::SessionId;
use agentcap_tests::Workspace;
use agentcap_tests::fleet::{fleet_database, host, host_policy, read_first};
use agentcap_tests::pg_server::Postgres;

const AGENTCAP: &str = env!("CARGO_BIN_EXE_agentcap-cli");

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn raw_client(connection: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(connection, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

fn never_runs(result: &Result<String, String>) -> bool {
    result
        .as_ref()
        .is_err_and(|e| e.contains("stopped") || e.contains("fails closed"))
}

/// Two processes with one host name (one policy for `serve` and `call`):
/// a stop pressed on one reaches the other.
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_reaches_a_second_process_with_the_same_host_name() {
    let server = Postgres::start();
    let c = fleet_database(&server);
    let a = host(&c, "laptop", 2000);
    let b = host(&c, "laptop", 2000);
    let ma = a.1.start_fleet().unwrap();
    let mb = b.1.start_fleet().unwrap();
    assert!(ma.wait_in_touch(Duration::from_secs(10)).await);
    assert!(mb.wait_in_touch(Duration::from_secs(10)).await);
    read_first(&b.1, &b.2, "s1").await.unwrap();
    a.1.stop_handle().stop_all("STOP on laptop (serve)");
    wait_for("the other laptop to stop", 10, || {
        b.1.stop_handle().is_halted()
    })
    .await;
    assert!(never_runs(&read_first(&b.1, &b.2, "s2").await));
    // The other process acknowledges, having stopped its session.
    wait_for("its acknowledgement", 10, || {
        server.value(
            "fleet",
            "SELECT count(*) FROM agentcap_fleet_acks WHERE host = 'laptop' AND stopped = 1",
        ) == 1
    })
    .await;
}

/// A stop written while another writer holds an earlier id uncommitted:
/// writers take turns, so the later one waits and no host skips the
/// earlier event.
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_commit_in_the_order_of_their_ids() {
    let server = Postgres::start();
    let c = fleet_database(&server);
    let b = host(&c, "b", 2000);
    let mb = b.1.start_fleet().unwrap();
    assert!(mb.wait_in_touch(Duration::from_secs(10)).await);
    read_first(&b.1, &b.2, "s1").await.unwrap();
    // Writer 1 (host a pressing STOP) holds its id, uncommitted.
    let slow = raw_client(&c).await;
    slow.batch_execute(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock({}); INSERT INTO agentcap_fleet_events (kind, by_whom, origin) VALUES ('stop-all', 'alice', 'a')",
        agentcap::fleet::EVENT_LOCK
    ))
    .await
    .unwrap();
    // Writer 2 (host c stopping a session) must wait for it.
    let settings = b.1.policy().fleet.clone().unwrap();
    let second = tokio::spawn(async move {
        let (mut client, _c) = agentcap::fleet::connect(&settings, Path::new("."))
            .await
            .unwrap();
        let event = agentcap::fleet::FleetEvent::StopSession {
            session: "cli-9".into(),
            by: "bob".into(),
        };
        agentcap::fleet::write_event(&mut client, &event, "c")
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "the second writer did not wait for the first"
    );
    slow.batch_execute("COMMIT; NOTIFY agentcap_fleet")
        .await
        .unwrap();
    let second_id = second.await.unwrap();
    wait_for("b's acknowledgements of both", 10, || {
        server.value("fleet", &format!("SELECT count(*) FROM agentcap_fleet_acks WHERE host = 'b' AND event_id <= {second_id}")) == 2
    })
    .await;
    assert!(b.1.stop_handle().is_halted());
    assert!(never_runs(&read_first(&b.1, &b.2, "s2").await));
}

/// A stop whose application waits for a long effect in flight (longer
/// than out_of_reach_after_ms): the acknowledgement comes after the
/// effect's end, even when the host reconnects and applies it again.
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acknowledgement_waits_for_an_effect_in_flight() {
    let server = Postgres::start();
    let c = fleet_database(&server);
    let b = host(&c, "b", 500);
    let mb = b.1.start_fleet().unwrap();
    assert!(mb.wait_in_touch(Duration::from_secs(10)).await);
    // An effect in flight holds the session's effect guard from its Gate
    // check to its journaled outcome; here 3 s (a slow server).
    let state = b.1.gate().session(&SessionId("long".into()));
    let (tx, rx) = std::sync::mpsc::channel();
    let effect = std::thread::spawn(move || {
        let guard = state.effect_guard();
        tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(guard);
        Instant::now()
    });
    rx.recv().unwrap();
    server.execute("fleet", "SELECT pg_advisory_xact_lock(0); INSERT INTO agentcap_fleet_events (kind, by_whom, origin) VALUES ('stop-all', 'alice', 'a'); NOTIFY agentcap_fleet");
    wait_for("b's acknowledgement", 20, || {
        server.value(
            "fleet",
            "SELECT count(*) FROM agentcap_fleet_acks WHERE host = 'b'",
        ) == 1
    })
    .await;
    let acked = Instant::now();
    let done = effect.join().unwrap();
    assert!(
        acked >= done,
        "acknowledged {:?} before the effect ended",
        done - acked
    );
}

/// Ctrl-C on `agentcap serve` stops it and exits: the stop reaches the
/// rest of the fleet first.
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_a_serving_host_reaches_the_fleet() {
    let server = Postgres::start();
    let c = fleet_database(&server);
    let b = host(&c, "b", 2000);
    let mb = b.1.start_fleet().unwrap();
    assert!(mb.wait_in_touch(Duration::from_secs(10)).await);
    let ws = Workspace::new();
    let policy = ws.dir.path().join("agentcap.toml");
    std::fs::write(&policy, host_policy(&c, "srv", 2000)).unwrap();
    let control = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = std::fs::File::create(ws.dir.path().join("err.log")).unwrap();
    let mut child = Command::new(AGENTCAP)
        .args(["serve", "--no-approvals", "--policy"])
        .arg(&policy)
        .env("AGENTCAP_CONTROL_DIR", control.path())
        .env("AGENTCAP_CACHE_DIR", cache.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    wait_for("srv joined", 60, || {
        server.value(
            "fleet",
            "SELECT count(*) FROM agentcap_fleet_hosts WHERE host = 'srv'",
        ) == 1
    })
    .await;
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(ws.dir.path().join("err.log")).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(!log.contains("could NOT be written"), "{log}");
    assert_eq!(
        server.value("fleet", "SELECT count(*) FROM agentcap_fleet_events WHERE origin LIKE 'srv#%' AND kind = 'stop-all'"),
        1,
        "{log}"
    );
    wait_for("b to stop", 10, || b.1.stop_handle().is_halted()).await;
    assert!(never_runs(&read_first(&b.1, &b.2, "s1").await));
}

/// A host with a longer limit than the CLI's, whose round trips hang: the
/// CLI waits for it by the host's own limit and does not report success.
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_waits_for_each_host_by_its_own_limit() {
    let server = Postgres::start();
    let c = fleet_database(&server);
    let b = host(&c, "b", 60000);
    let mb = b.1.start_fleet().unwrap();
    assert!(mb.wait_in_touch(Duration::from_secs(10)).await);
    // b's round trips hang (the database answers everyone else).
    let locker = raw_client(&c).await;
    locker
        .batch_execute("BEGIN; SELECT 1 FROM agentcap_fleet_hosts WHERE host = 'b' FOR UPDATE")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let ws = Workspace::new();
    let policy = ws.dir.path().join("agentcap.toml");
    std::fs::write(&policy, host_policy(&c, "operator", 500)).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(AGENTCAP)
            .args(["stop", "--all", "--policy"])
            .arg(&policy)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{report}");
    assert!(
        report.contains("host process b#") && report.contains("did not acknowledge"),
        "{report}"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
}

/// The fleet's database restored from a backup: ids start again below
/// what the host applied. The host notices, joins again, and a stop of
/// everything written since holds.
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_database_does_not_hide_new_stops() {
    let server = Postgres::start();
    let c = fleet_database(&server);
    let b = host(&c, "b", 2000);
    let mb = b.1.start_fleet().unwrap();
    assert!(mb.wait_in_touch(Duration::from_secs(10)).await);
    for i in 0..3 {
        server.execute("fleet", &format!("INSERT INTO agentcap_fleet_events (kind, session, by_whom, origin) VALUES ('stop-session', 'x{i}', 'bob', 'c'); NOTIFY agentcap_fleet"));
    }
    wait_for("acks", 10, || {
        server.value(
            "fleet",
            "SELECT count(*) FROM agentcap_fleet_acks WHERE host = 'b'",
        ) == 3
    })
    .await;
    server.execute("fleet", "DELETE FROM agentcap_fleet_acks; DELETE FROM agentcap_fleet_events; SELECT setval('agentcap_fleet_events_id_seq', 1, false)");
    server.execute("fleet", "INSERT INTO agentcap_fleet_events (kind, by_whom, origin) VALUES ('stop-all', 'alice', 'a'); NOTIFY agentcap_fleet");
    wait_for("b to stop", 10, || b.1.stop_handle().is_halted()).await;
    assert!(never_runs(&read_first(&b.1, &b.2, "s1").await));
}

/// Hostile rows: a 20 MB `by_whom` with terminal escapes is read clipped,
/// and shown escaped; an unknown kind stops everything (fails closed).
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rows_are_clipped_escaped_and_fail_closed() {
    let server = Postgres::start();
    let c = fleet_database(&server);
    let b = host(&c, "b", 2000);
    let mb = b.1.start_fleet().unwrap();
    assert!(mb.wait_in_touch(Duration::from_secs(10)).await);
    read_first(&b.1, &b.2, "s1").await.unwrap();
    let journal = b.1.policy().journal_path();
    let size = |p: &Path| {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
            + std::fs::metadata(p.with_extension("sqlite-wal"))
                .map(|m| m.len())
                .unwrap_or(0)
    };
    let before = size(&journal);
    // Written as a hostile database user would: without the length checks.
    server.execute("fleet", "ALTER TABLE agentcap_fleet_events DROP CONSTRAINT agentcap_fleet_events_by_whom_check, DROP CONSTRAINT agentcap_fleet_events_kind_check");
    server.execute("fleet", "INSERT INTO agentcap_fleet_events (kind, by_whom, origin) VALUES ('resume', repeat(E'\\x1b[2J', 5000000), 'a'); NOTIFY agentcap_fleet");
    wait_for("ack", 20, || {
        server.value(
            "fleet",
            "SELECT count(*) FROM agentcap_fleet_acks WHERE host = 'b'",
        ) == 1
    })
    .await;
    assert!(
        size(&journal) - before < 1 << 20,
        "the journal grew {} bytes",
        size(&journal) - before
    );
    server.execute("fleet", "INSERT INTO agentcap_fleet_events (kind, by_whom, origin) VALUES ('reboot-everything', E'eve\\x1b[31mRED\\u202e', E'a\\x07'); NOTIFY agentcap_fleet");
    wait_for("b's acknowledgement", 10, || {
        server.value(
            "fleet",
            "SELECT count(*) FROM agentcap_fleet_acks WHERE host = 'b'",
        ) == 2
    })
    .await;
    assert!(b.1.stop_handle().is_halted());
    let out = Command::new(AGENTCAP)
        .args(["journal", "--journal"])
        .arg(&journal)
        .args(["tail"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("unreadable fleet event"), "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{202e}') && !text.contains('\u{7}'),
        "{text}"
    );
}

/// A stop pressed while the database is away, then the host leaves: the
/// stop is written when it can be, and when it cannot, leaving says so.
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_pressed_while_away_is_shared_or_reported() {
    let mut server = Postgres::start();
    let c = fleet_database(&server);
    let a = host(&c, "a", 500);
    let b = host(&c, "b", 500);
    let ma = a.1.start_fleet().unwrap();
    let mb = b.1.start_fleet().unwrap();
    assert!(ma.wait_in_touch(Duration::from_secs(10)).await);
    assert!(mb.wait_in_touch(Duration::from_secs(10)).await);
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.1.stop_handle().stop_all("Ctrl-C on host a");
    let err = ma.leave().await.unwrap_err();
    assert!(
        err.contains("NOT shared") && err.contains("stop-all"),
        "{err}"
    );
    // A host that stays writes it once the database is back.
    let a2 = host(&c, "a2", 500);
    let ma2 = a2.1.start_fleet().unwrap();
    a2.1.stop_handle()
        .stop_all("STOP on host a2 while the database is away");
    server.restart();
    assert!(ma2.wait_in_touch(Duration::from_secs(10)).await);
    wait_for("b to stop", 10, || b.1.stop_handle().is_halted()).await;
    assert!(never_runs(&read_first(&b.1, &b.2, "s1").await));
    ma2.leave().await.unwrap();
}

/// An event written by hand with a huge id (not from the events' sequence)
/// once made every host skip the stops written after it: a later STOP
/// EVERYTHING still halts the host, and `stop --all` says so; a resume
/// written that way is not applied, by the host or by one joining later.
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_planted_with_a_huge_id_does_not_hide_later_stops() {
    let server = Postgres::start();
    let c = fleet_database(&server);
    let b = host(&c, "b", 2000);
    let mb = b.1.start_fleet().unwrap();
    assert!(mb.wait_in_touch(Duration::from_secs(10)).await);
    server.execute("fleet", "INSERT INTO agentcap_fleet_events (id, kind, session, by_whom, origin) VALUES (1000000000, 'stop-session', 'no-such-session', 'eve', 'eve'); NOTIFY agentcap_fleet");
    wait_for("b's acknowledgement of the planted event", 10, || {
        server.value(
            "fleet",
            "SELECT count(*) FROM agentcap_fleet_acks WHERE event_id = 1000000000",
        ) == 1
    })
    .await;
    read_first(&b.1, &b.2, "s1").await.unwrap();
    let out = Command::new(AGENTCAP)
        .args(["stop", "--all", "--policy"])
        .arg(b.0.dir.path().join("agentcap.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("host b: acknowledged"), "{text}");
    assert!(b.1.stop_handle().is_halted());
    assert!(never_runs(&read_first(&b.1, &b.2, "s2").await));
    // A resume planted with a huge id is not applied: not by b, not by a
    // host that joins now.
    server.execute("fleet", "INSERT INTO agentcap_fleet_events (id, kind, by_whom, origin) VALUES (2000000000, 'resume', 'eve', 'eve'); NOTIFY agentcap_fleet");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        b.1.stop_handle().is_halted(),
        "a planted resume undid the stop"
    );
    let c2 = host(&c, "c", 2000);
    let mc = c2.1.start_fleet().unwrap();
    assert!(mc.wait_in_touch(Duration::from_secs(10)).await);
    assert!(
        c2.1.stop_handle().is_halted(),
        "a joining host took the planted resume"
    );
    assert!(never_runs(&read_first(&c2.1, &c2.2, "s3").await));
    // Applied once, not again each round.
    assert_eq!(
        server.value(
            "fleet",
            "SELECT count(*) FROM agentcap_fleet_acks WHERE event_id = 1000000000 AND host = 'b'"
        ),
        1
    );
}

/// A consent request the database refuses to store (here a trigger; before,
/// a request over the table's size bound, from hostile mail) once failed
/// every round trip, and the host refused every effect as out of reach: it
/// stays in touch, and the request stays with the host's own channels.
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_database_refuses_leaves_the_host_in_touch() {
    let server = Postgres::start();
    let c = fleet_database(&server);
    let ws = Workspace::new();
    let policy = host_policy(&c, "b", 1000).replace(
        "capability = \"mail.read\"\nmode = \"standing\"",
        "capability = \"mail.read\"\nmode = \"ask\"",
    );
    let runtime = std::sync::Arc::new(
        agentcap::Runtime::new(
            agentcap::AgentEngine::new(None).unwrap(),
            ws.policy(&policy),
            std::sync::Arc::new(agentcap::consent::DenyApprover::new("no person at host b")),
        )
        .unwrap(),
    );
    let tool = std::sync::Arc::new(runtime.load_tool("sweeper").unwrap());
    let member = runtime.start_fleet().unwrap();
    assert!(member.wait_in_touch(Duration::from_secs(10)).await);
    server.execute(
        "fleet",
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by a trigger'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON agentcap_fleet_requests FOR EACH ROW EXECUTE FUNCTION refuse()",
    );
    let asking = {
        let (runtime, tool) = (runtime.clone(), tool.clone());
        tokio::spawn(async move { read_first(&runtime, &tool, "s1").await })
    };
    // Three out-of-reach limits later, the host is still in touch.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(
        member.wait_in_touch(Duration::from_millis(100)).await,
        "host b lost the fleet over a request the database refused"
    );
    assert_eq!(
        server.value("fleet", "SELECT count(*) FROM agentcap_fleet_requests"),
        0
    );
    assert!(
        !asking.is_finished(),
        "the request still waits for its own channels"
    );
    asking.abort();
    // And a stop still reaches it.
    server.execute("fleet", "INSERT INTO agentcap_fleet_events (kind, by_whom, origin) VALUES ('stop-all', 'alice', 'a'); NOTIFY agentcap_fleet");
    wait_for("b to stop", 10, || runtime.stop_handle().is_halted()).await;
}

/// The fleet's copy of a journal partly relabelled to another host (shown),
/// renamed or planted under an id of multi-byte and control characters:
/// `journal --fleet verify` says BROKEN (it said ok), and renders what it
/// prints (it panicked on the id, printing it raw).
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relabelled_or_planted_fleet_journal_is_reported() {
    let server = Postgres::start();
    let c = fleet_database(&server);
    let b = host(&c, "b", 2000);
    let mb = b.1.start_fleet().unwrap();
    assert!(mb.wait_in_touch(Duration::from_secs(10)).await);
    read_first(&b.1, &b.2, "s1").await.unwrap();
    read_first(&b.1, &b.2, "s2").await.unwrap();
    mb.leave().await.unwrap();
    let policy = b.0.dir.path().join("agentcap.toml");
    let agentcap = |args: &[&str]| {
        let out = Command::new(AGENTCAP)
            .args(["journal", "--policy"])
            .arg(&policy)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, text) = agentcap(&["export", "--to-fleet"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = agentcap(&["--fleet", "verify"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("ok: host b") && text.contains("not complete"),
        "{text}"
    );

    server.execute(
        "fleet",
        "UPDATE agentcap_fleet_journal SET host = 'prod' WHERE seq > 3",
    );
    let (code, text) = agentcap(&["--fleet", "verify"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("rows name hosts b, prod"), "{text}");
    server.execute("fleet", "UPDATE agentcap_fleet_journal SET host = 'b'");

    server.execute(
        "fleet",
        "UPDATE agentcap_fleet_journal SET chain = repeat('f', 64)",
    );
    let (code, text) = agentcap(&["--fleet", "verify"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not the hash of its record #1"), "{text}");

    server.execute("fleet", "INSERT INTO agentcap_fleet_journal (chain, seq, host, record) VALUES (E'00000000000\\u20ac\\x1b]0;PWNED\\x07\\x1b[2J\\u202e', 1, E'x\\x1b[31m', '{}')");
    let (code, text) = agentcap(&["--fleet", "verify"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{202e}'),
        "{text}"
    );
}
