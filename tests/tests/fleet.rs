//! Many hosts, one fleet (`[fleet] postgres = ...`): a stop pressed on one
//! host reaches every other through a real PostgreSQL started by the test,
//! each host acknowledges it, and nothing moves after the
//! acknowledgements; without the database every host refuses every effect,
//! and once it is back each host reads the stops it missed before it acts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentcap::consent::SessionId;
use agentcap_tests::Workspace;
use agentcap_tests::fleet::{fleet_database, host, host_policy, read_first};
use agentcap_tests::pg_server::Postgres;
use serde_json::json;

const AGENTCAP: &str = env!("CARGO_BIN_EXE_agentcap-cli");
const HOSTS: usize = 4;
/// Copies of the fixture mailbox in each host's INBOX (46 messages each),
/// so that no sweep ends before the stop lands.
const COPIES: usize = 4;

/// Add `copies - 1` more copies of every INBOX message (new unique names).
fn enlarge_inbox(ws: &Workspace, copies: usize) -> usize {
    let mut total = 0;
    for sub in ["cur", "new"] {
        let dir = ws.maildir().join(sub);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        for name in &names {
            for k in 1..copies {
                std::fs::copy(dir.join(name), dir.join(format!("{k}{name}"))).unwrap();
            }
        }
        total += names.len() * copies;
    }
    total
}

fn trashed(ws: &Workspace) -> usize {
    ["cur", "new"]
        .iter()
        .map(|sub| {
            std::fs::read_dir(ws.maildir().join(".Trash").join(sub))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

/// One host: an `agentcap call` process sweeping its own INBOX, with its
/// own control socket folder (so only the fleet can reach it).
struct Host {
    ws: Workspace,
    policy: PathBuf,
    child: Child,
    total: usize,
    control: tempfile::TempDir,
}

impl Host {
    fn start(connection: &str, name: &str, cache: &Path) -> Host {
        let ws = Workspace::new();
        let total = enlarge_inbox(&ws, COPIES);
        let policy = ws.dir.path().join("agentcap.toml");
        // What these hosts test does not depend on how soon a host
        // without the database refuses: a wide margin for a loaded machine.
        std::fs::write(&policy, host_policy(connection, name, 5000)).unwrap();
        let control = tempfile::tempdir().unwrap();
        let out = std::fs::File::create(ws.dir.path().join("out.log")).unwrap();
        let child = Command::new(AGENTCAP)
            .arg("call")
            .arg(agentcap_tests::guest("mail_sweeper"))
            .args([
                "sweep",
                "--args",
                r#"{"folder": "INBOX"}"#,
                "--name",
                "sweeper",
            ])
            .arg("--policy")
            .arg(&policy)
            .args(["--approvals", "127.0.0.1:0"])
            .env("AGENTCAP_CONTROL_DIR", control.path())
            .env("AGENTCAP_CACHE_DIR", cache)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start agentcap call");
        Host {
            ws,
            policy,
            child,
            total,
            control,
        }
    }

    /// The host's name in its policy.
    fn policy_host(&self) -> String {
        let policy = std::fs::read_to_string(&self.policy).unwrap();
        policy
            .split("host = \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_string()
    }

    /// Press STOP EVERYTHING on this host's approvals page.
    fn press_stop_on_page(&self) {
        let page = agentcap_tests::PageUser::open(&agentcap_tests::login_link(self.control.path()));
        let origin = format!("http://{}", page.addr);
        let (status, body) = agentcap_tests::http_request_within(
            &page.addr,
            "POST",
            "/api/stop",
            &[
                (agentcap::approvals::KEY_HEADER, &page.key),
                ("Origin", &origin),
                ("Content-Type", "application/json"),
            ],
            "{}",
            10,
        );
        assert_eq!(status, 200, "{body}");
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.ws.dir.path().join("out.log")).unwrap_or_default()
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "host did not end:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn agentcap(args: &[&str], policy: &Path) -> (bool, String) {
    let out = Command::new(AGENTCAP)
        .args(args)
        .arg("--policy")
        .arg(policy)
        .output()
        .expect("run agentcap");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Wait until every host acknowledged the first stop of everything written
/// after event `after` (in the fleet's database); each host with its
/// milliseconds from the stop.
fn acknowledgements_in_database(server: &Postgres, trial: u64, after: i64) -> Vec<(String, f64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let event = format!(
        "(SELECT min(id) FROM agentcap_fleet_events WHERE kind = 'stop-all' AND id > {after})"
    );
    while server.value(
        "fleet",
        &format!("SELECT count(DISTINCT host) FROM agentcap_fleet_acks WHERE event_id = {event}"),
    ) < HOSTS as i64
    {
        assert!(
            Instant::now() < deadline,
            "trial {trial}: not every host acknowledged the page's stop"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    (0..HOSTS)
        .map(|i| {
            let ms = server.value(
                "fleet",
                &format!(
                    "SELECT (extract(epoch FROM a.acked_at - e.at) * 1000)::bigint FROM agentcap_fleet_acks a \
                     JOIN agentcap_fleet_events e ON e.id = a.event_id \
                     WHERE a.event_id = {event} AND a.host = 'host-{i}'"
                ),
            );
            (format!("host-{i}"), ms as f64)
        })
        .collect()
}

/// Milliseconds of each `host NAME: acknowledged after X ms` line.
fn acknowledgements(report: &str) -> Vec<(String, f64)> {
    report
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("host ")?;
            let (host, after) = rest.split_once(": acknowledged after ")?;
            let ms = after.split(" ms").next()?.parse().ok()?;
            Some((host.to_string(), ms))
        })
        .collect()
}

#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[test]
fn a_stop_reaches_every_host_and_nothing_moves_after_the_acknowledgements() {
    let trials: u64 = std::env::var("AGENTCAP_FLEET_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(25);
    let server = Postgres::start();
    let connection = fleet_database(&server);
    let cache = tempfile::tempdir().unwrap();
    let mut rng = agentcap_tests::Rng::from_env("AGENTCAP_STOP_SEED");
    let seed = rng.seed;
    let (mut changed_after_ack, mut stopped_mid_run, mut latencies) = (0, 0, Vec::new());
    for trial in 0..trials {
        let mut hosts: Vec<Host> = (0..HOSTS)
            .map(|i| Host::start(&connection, &format!("host-{i}"), cache.path()))
            .collect();
        // The stop lands after the k-th move of a random host, pressed on
        // another host's policy (any host's would do: it is one fleet).
        let watched = rng.below(HOSTS as u64) as usize;
        let k = 1 + rng.below(40) as usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        // Every host has joined and is sweeping (one that joins after the
        // stop starts stopped, and has nothing to acknowledge).
        while hosts.iter().any(|h| trashed(&h.ws) == 0) || trashed(&hosts[watched].ws) < k {
            for (i, host) in hosts.iter_mut().enumerate() {
                assert!(
                    host.child.try_wait().unwrap().is_none(),
                    "trial {trial}: host-{i} ended early:\n{}",
                    host.output()
                );
            }
            assert!(Instant::now() < deadline, "trial {trial}: no progress");
            std::thread::sleep(Duration::from_micros(500));
        }
        let presser = (watched + 1) % HOSTS;
        // Half the trials press STOP on a host's approvals page, half use
        // `agentcap stop --all` (which also reports the acknowledgements).
        let acked = if trial % 2 == 0 {
            let (ok, report) = agentcap(&["stop", "--all"], &hosts[presser].policy);
            assert!(ok, "trial {trial}: {report}");
            acknowledgements(&report)
        } else {
            let after = server.value(
                "fleet",
                "SELECT coalesce(max(id), 0) FROM agentcap_fleet_events",
            );
            hosts[presser].press_stop_on_page();
            acknowledgements_in_database(&server, trial, after)
        };
        let at_ack: Vec<_> = hosts.iter().map(|h| h.ws.snapshot()).collect();
        for (i, host) in hosts.iter_mut().enumerate() {
            let status = host.wait();
            let output = host.output();
            assert!(
                !status.success() && output.contains("was stopped"),
                "trial {trial}: host-{i} was not stopped:\n{output}"
            );
            assert!(
                acked.iter().any(|(h, _)| h == &format!("host-{i}")),
                "trial {trial}: host-{i} did not acknowledge: {acked:?}\nhost-{i}:\n{output}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        for (i, host) in hosts.iter().enumerate() {
            if host.ws.snapshot() != at_ack[i] {
                changed_after_ack += 1;
                eprintln!("trial {trial} (seed {seed}): host-{i} moved mail after acknowledging");
            }
            let (inbox, trash) = (host.ws.ids_in("INBOX").len(), trashed(&host.ws));
            assert_eq!(
                inbox + trash,
                host.total,
                "trial {trial}: host-{i} lost mail"
            );
            if trash > 0 && inbox > 0 {
                stopped_mid_run += 1;
            }
        }
        latencies.extend(acked.iter().map(|(_, ms)| *ms));
        // Everything is stopped in the fleet: new hosts would start
        // stopped. Resume it for the next trial.
        let (ok, report) = agentcap(&["resume"], &hosts[presser].policy);
        assert!(ok, "resume: {report}");
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "{trials} fleet stops over {HOSTS} hosts: {stopped_mid_run} host runs stopped mid-sweep, {changed_after_ack} with changes after acknowledging; acknowledgement p50 {:.1} ms, p99 {:.1} ms (n={})",
        at(0.5),
        at(0.99),
        latencies.len()
    );
    assert_eq!(changed_after_ack, 0, "seed {seed}");
    assert!(
        stopped_mid_run as u64 >= trials * HOSTS as u64 / 2,
        "too few hosts were stopped mid-run ({stopped_mid_run})"
    );
}

#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_fleet_database_no_host_acts_and_it_reads_missed_stops_first() {
    let mut server = Postgres::start();
    let connection = fleet_database(&server);
    let hosts: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| host(&connection, name, 500))
        .collect();
    // Before a host has reached the database, nothing runs.
    let err = read_first(&hosts[0].1, &hosts[0].2, "early")
        .await
        .unwrap_err();
    assert!(
        err.contains("has not reached the fleet's database"),
        "{err}"
    );
    let members: Vec<_> = hosts
        .iter()
        .map(|(_, runtime, _)| runtime.start_fleet().expect("a fleet"))
        .collect();
    for member in &members {
        assert!(member.wait_in_touch(Duration::from_secs(10)).await);
    }
    for (_, runtime, tool) in &hosts {
        read_first(runtime, tool, "s1").await.unwrap();
    }

    // The database goes away: within out_of_reach_after_ms every effect on
    // every host is refused, naming why; nothing changes.
    let before: Vec<_> = hosts.iter().map(|(ws, _, _)| ws.snapshot()).collect();
    server.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    for (_, runtime, tool) in &hosts {
        let err = read_first(runtime, tool, "s2").await.unwrap_err();
        assert!(err.contains("lost the fleet's database"), "{err}");
        assert!(err.contains("fails closed"), "{err}");
        // The sweep stops at its first refused call: nothing moved.
        let outcome = runtime
            .call(
                tool,
                &SessionId("s3".into()),
                "sweep",
                &json!({"folder": "INBOX"}),
            )
            .await;
        assert!(outcome.is_err() || outcome.unwrap().is_error);
    }
    let during: Vec<_> = hosts.iter().map(|(ws, _, _)| ws.snapshot()).collect();
    assert_eq!(before, during);

    // Back, with a stop of everything written (elsewhere) before the hosts
    // reconnect: each host applies it before anything may run again.
    server.restart();
    server.execute(
        "fleet",
        "INSERT INTO agentcap_fleet_events (kind, by_whom, origin) VALUES ('stop-all', 'a person', 'host-c'); NOTIFY agentcap_fleet",
    );
    for member in &members {
        assert!(member.wait_in_touch(Duration::from_secs(10)).await);
    }
    // In touch means every stop written before the round trip began was
    // applied; the stop above may have been written during the first one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.value(
        "fleet",
        "SELECT count(*) FROM agentcap_fleet_acks a JOIN agentcap_fleet_events e ON e.id = a.event_id WHERE e.origin = 'host-c'",
    ) != 2
    {
        assert!(Instant::now() < deadline, "the hosts did not acknowledge");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (_, runtime, tool) in &hosts {
        assert!(runtime.stop_handle().is_halted());
        let err = read_first(runtime, tool, "s4").await.unwrap_err();
        assert!(err.contains("stopped"), "{err}");
    }
    let stopped: Vec<_> = hosts.iter().map(|(ws, _, _)| ws.snapshot()).collect();
    assert_eq!(before, stopped);

    // Resumed from the fleet: work goes on.
    server.execute(
        "fleet",
        "INSERT INTO agentcap_fleet_events (kind, by_whom, origin) VALUES ('resume', 'a person', 'host-c'); NOTIFY agentcap_fleet",
    );
    for (_, runtime, tool) in &hosts {
        let deadline = Instant::now() + Duration::from_secs(10);
        while runtime.stop_handle().is_halted() {
            assert!(Instant::now() < deadline, "not resumed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        read_first(runtime, tool, "s5").await.unwrap();
    }
    // Both hosts acknowledged both events.
    let acks = server.value("fleet", "SELECT count(*) FROM agentcap_fleet_acks");
    assert_eq!(acks, 4);

    // STOP pressed on host a (its approvals page, a signal or its control
    // socket all use the stop handle): host b stops too, and acknowledges.
    hosts[0]
        .1
        .stop_handle()
        .stop_all("the approvals page of host a");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !hosts[1].1.stop_handle().is_halted() {
        assert!(Instant::now() < deadline, "host b was not stopped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = read_first(&hosts[1].1, &hosts[1].2, "s6")
        .await
        .unwrap_err();
    assert!(err.contains("stopped"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let acknowledged_by_b = || {
        server.value(
            "fleet",
            "SELECT count(*) FROM agentcap_fleet_acks a JOIN agentcap_fleet_events e ON a.event_id = e.id \
             WHERE e.origin LIKE 'a#%' AND e.by_whom = 'the approvals page of host a' AND a.host = 'b'",
        )
    };
    while acknowledged_by_b() != 1 {
        assert!(Instant::now() < deadline, "host b did not acknowledge");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The fleet's journal: every host's chain is copied into the database;
/// one host is SIGKILLed mid-sweep; `journal --fleet verify` passes, the
/// killed host's chain in the database is a prefix of its own journal and
/// `journal export --to-fleet` completes it; a row altered in the database
/// is named; `tail --follow` shows every host's records, rendered.
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[test]
fn the_fleet_journal_verifies_after_a_host_is_killed() {
    let server = Postgres::start();
    let connection = fleet_database(&server);
    let cache = tempfile::tempdir().unwrap();
    let mut hosts: Vec<Host> = (0..3)
        .map(|i| Host::start(&connection, &format!("j{i}"), cache.path()))
        .collect();
    let follow_out = tempfile::NamedTempFile::new().unwrap();
    let mut follow = Command::new(AGENTCAP)
        .args(["journal", "--fleet", "--policy"])
        .arg(&hosts[0].policy)
        .args(["tail", "-n", "0", "--follow"])
        .stdout(follow_out.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while hosts.iter().any(|h| trashed(&h.ws) < 5) {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Killed with its records partly copied (the copy runs every 200 ms).
    hosts[0].child.kill().unwrap();
    hosts[0].child.wait().unwrap();
    let (ok, report) = agentcap(&["stop", "--all"], &hosts[1].policy);
    assert!(ok, "{report}");
    for host in &mut hosts[1..] {
        host.wait();
    }
    let (ok, report) = agentcap(&["journal", "--fleet", "verify"], &hosts[1].policy);
    assert!(ok, "{report}");
    for name in ["j0", "j1", "j2"] {
        assert!(
            report.contains(&format!("ok: host {name} ")),
            "{name}: {report}"
        );
    }
    assert!(!report.contains("BROKEN"), "{report}");
    let copied = |name: &str| {
        server.value(
            "fleet",
            &format!("SELECT count(*) FROM agentcap_fleet_journal WHERE host = '{name}'"),
        )
    };
    let local_records = |host: &Host| {
        let (ok, report) = agentcap(&["journal", "verify"], &host.policy);
        assert!(ok, "{report}");
        report
            .split("ok: ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("{report}"))
    };
    let killed_local = local_records(&hosts[0]);
    assert!(copied("j0") > 0 && copied("j0") <= killed_local);
    // The hosts that ended copied their journal to its end.
    for host in &hosts[1..] {
        let name = host.policy_host();
        let local = local_records(host);
        let deadline = Instant::now() + Duration::from_secs(10);
        while copied(&name) < local {
            assert!(
                Instant::now() < deadline,
                "{name}: {} of {local}",
                copied(&name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (ok, report) = agentcap(&["journal", "export", "--to-fleet"], &hosts[0].policy);
    assert!(ok, "{report}");
    assert_eq!(copied("j0"), killed_local, "{report}");
    let (ok, report) = agentcap(&["journal", "--fleet", "verify"], &hosts[2].policy);
    assert!(ok, "{report}");
    assert!(
        report.contains("ok: host j0 ") && report.contains(&format!("{killed_local} records")),
        "{report}"
    );

    // What the follower printed: every host's records, one line each.
    std::thread::sleep(Duration::from_millis(700));
    follow.kill().unwrap();
    follow.wait().unwrap();
    let followed = std::fs::read_to_string(follow_out.path()).unwrap();
    for name in ["j0", "j1", "j2"] {
        assert!(
            followed.contains(&format!("[{name}] ")),
            "{name}: {followed}"
        );
    }

    // Hostile rows: an altered record, and a planted chain with escapes.
    server.execute(
        "fleet",
        "UPDATE agentcap_fleet_journal SET record = replace(record, 'sweep', 'swept') \
         WHERE host = 'j1' AND seq = (SELECT min(seq) FROM agentcap_fleet_journal WHERE host = 'j1' AND record LIKE '%sweep%')",
    );
    server.execute(
        "fleet",
        "INSERT INTO agentcap_fleet_journal (chain, seq, host, record) VALUES \
         ('planted', 1, E'evil\\x1b[2J\\u202e', E'{\"seq\":1,\"time\":\"t\",\"session\":\"s\\\\u001b[31m\",\"tool\":\"x\",\"tool_digest\":\"d\",\"kind\":\"call\",\"capability\":null,\"targets\":[],\"payload_digest\":null,\"payload\":null,\"decided_by\":null,\"outcome\":\"\\\\u0007bell\",\"ref_seq\":null,\"detail\":null,\"prev_hash\":\"p\",\"hash\":\"h\"}')",
    );
    let (ok, report) = agentcap(&["journal", "--fleet", "verify"], &hosts[0].policy);
    assert!(!ok, "{report}");
    assert!(
        report.contains("BROKEN: host j1") && report.contains("altered"),
        "{report}"
    );
    assert!(
        report.contains("ok: host j0") && report.contains("ok: host j2"),
        "{report}"
    );
    let (_, tail) = agentcap(&["journal", "--fleet", "tail", "-n", "5"], &hosts[0].policy);
    assert!(tail.contains("evil"), "{tail}");
    for text in [&report, &tail] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}') && !text.contains('\u{7}'),
            "{text}"
        );
    }
}
