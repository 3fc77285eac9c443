//! One approvals page for the fleet: a consent request of host B (no
//! human there) shows on host A's page (an `agentcap serve` process) with
//! B's name, is answered there, and decides the call on B; the first
//! answer wins; an answer for a request rewritten in the database is not
//! applied; hostile text in the shared rows reaches the page rendered.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use agentcap::consent::{DenyApprover, SessionId};
use agentcap::{AgentEngine, Runtime};
use agentcap_tests::fleet::{fleet_database, host_policy};
use agentcap_tests::pg_server::Postgres;
use agentcap_tests::{PageUser, Workspace, login_link};
use serde_json::json;

const AGENTCAP: &str = env!("CARGO_BIN_EXE_agentcap-cli");

/// Host A: `agentcap serve` with its approvals page, in the fleet.
struct PageHost {
    child: Child,
    page: PageUser,
    _ws: Workspace,
    _control: tempfile::TempDir,
}

impl Drop for PageHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn page_host(connection: &str) -> PageHost {
    let ws = Workspace::new();
    let policy = ws.dir.path().join("agentcap.toml");
    std::fs::write(&policy, host_policy(connection, "a", 2000)).unwrap();
    let control = tempfile::tempdir().unwrap();
    let child = Command::new(AGENTCAP)
        .args(["serve", "--policy"])
        .arg(&policy)
        .env("AGENTCAP_CONTROL_DIR", control.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let page = PageUser::open(&login_link(control.path()));
    PageHost {
        child,
        page,
        _ws: ws,
        _control: control,
    }
}

/// Host B: in this process, no human (every request waits for a page),
/// reading mail needs a person's consent each time.
type AskingHost = (Workspace, Arc<Runtime>, Arc<agentcap::LoadedTool>);

fn asking_host(connection: &str) -> AskingHost {
    let ws = Workspace::new();
    let policy = host_policy(connection, "b", 2000).replace(
        "capability = \"mail.read\"\nmode = \"standing\"",
        "capability = \"mail.read\"\nmode = \"ask\"",
    );
    let runtime = Runtime::new(
        AgentEngine::new(None).unwrap(),
        ws.policy(&policy),
        Arc::new(DenyApprover::new("no person at host b")),
    )
    .unwrap();
    let tool = runtime.load_tool("sweeper").unwrap();
    (ws, Arc::new(runtime), Arc::new(tool))
}

/// B's call `read-first` in `session`, started now: the subject or the
/// refusal.
fn read_first_on(b: &AskingHost, session: &str) -> tokio::task::JoinHandle<Result<String, String>> {
    let runtime = b.1.clone();
    let tool = b.2.clone();
    let session = session.to_string();
    tokio::spawn(async move { agentcap_tests::fleet::read_first(&runtime, &tool, &session).await })
}

/// A fleet database, host B (in touch) and host A with its page.
async fn two_hosts() -> (Postgres, AskingHost, agentcap::fleet::FleetMember, PageHost) {
    let server = Postgres::start();
    let c = fleet_database(&server);
    let b = asking_host(&c);
    let member = b.1.start_fleet().unwrap();
    assert!(member.wait_in_touch(Duration::from_secs(10)).await);
    let a = page_host(&c);
    (server, b, member, a)
}

/// Answer `request` on `page` (`answer`: `{"approve": [...]}` or
/// `{"decline": true}`) with the digest the page showed.
async fn answer_on(
    page: &PageUser,
    request: &serde_json::Value,
    mut answer: serde_json::Value,
) -> (u16, String) {
    answer["id"] = request["id"].clone();
    answer["digest"] = request["digest"].clone();
    decide(page, answer).await
}

async fn pending_of_b(page: &PageUser) -> serde_json::Value {
    pending_of_b_unlike(page, "", &serde_json::Value::Null).await
}

/// The first request of host b on `page` whose `field` is not `unlike`.
async fn pending_of_b_unlike(
    page: &PageUser,
    field: &str,
    unlike: &serde_json::Value,
) -> serde_json::Value {
    let page = PageUser {
        addr: page.addr.clone(),
        key: page.key.clone(),
    };
    let (field, unlike) = (field.to_string(), unlike.clone());
    tokio::task::spawn_blocking(move || {
        page.pending_where("from host b", |r| {
            r["host"].as_str() == Some("b") && (field.is_empty() || r[field.as_str()] != unlike)
        })
    })
    .await
    .unwrap()
}

/// POST `body` to `/api/stop` on `page` (STOP, of a session or of
/// everything).
async fn stop_on(page: &PageUser, body: &str) -> (u16, String) {
    let (addr, key, body) = (page.addr.clone(), page.key.clone(), body.to_string());
    tokio::task::spawn_blocking(move || {
        let origin = format!("http://{addr}");
        agentcap_tests::http_request(
            &addr,
            "POST",
            "/api/stop",
            &[
                (agentcap::approvals::KEY_HEADER, &key),
                ("Origin", &origin),
                ("Content-Type", "application/json"),
            ],
            &body,
        )
    })
    .await
    .unwrap()
}

async fn decide(page: &PageUser, answer: serde_json::Value) -> (u16, String) {
    let page = PageUser {
        addr: page.addr.clone(),
        key: page.key.clone(),
    };
    tokio::task::spawn_blocking(move || page.decide(answer))
        .await
        .unwrap()
}

#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_one_host_is_answered_on_another_hosts_page() {
    let (_server, b, member, a) = two_hosts().await;

    // Approved on A's page: the read happens on B.
    let call = read_first_on(&b, "s1");
    let request = pending_of_b(&a.page).await;
    assert_eq!(request["capability"], "mail.read", "{request}");
    assert_eq!(request["tool"], "sweeper");
    let (status, body) = answer_on(&a.page, &request, json!({"approve": [0]})).await;
    assert_eq!(status, 200, "{body}");
    let subject = call.await.unwrap().expect("approved on A's page");
    assert!(!subject.is_empty());
    // First answer wins: the same request cannot be answered again.
    let (status, body) = answer_on(&a.page, &request, json!({"approve": [0]})).await;
    assert_eq!(status, 410, "{body}");
    // B's journal names the page and the host that decided.
    let decisions: Vec<_> =
        b.1.journal()
            .all()
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == "decision")
            .collect();
    assert!(
        decisions.iter().any(|r| r
            .decided_by
            .as_deref()
            .is_some_and(|d| d.contains("approvals page on fleet host a"))),
        "{decisions:?}"
    );

    // Declined on A's page: nothing is read on B.
    let call = read_first_on(&b, "s2");
    // (The page may still list the answered request for a moment.)
    let request = pending_of_b_unlike(&a.page, "id", &request["id"]).await;
    let (status, body) = answer_on(&a.page, &request, json!({"decline": true})).await;
    assert_eq!(status, 200, "{body}");
    let refused = call.await.unwrap().expect_err("declined on A's page");
    assert!(refused.contains("declined"), "{refused}");
    drop(a);
    member.leave().await.unwrap();
}

/// Someone with the database's credentials rewrites a waiting request (so
/// the page shows something else than what B asked): an answer to the
/// rewritten request is not applied, and B keeps waiting for one that is.
/// Text planted in the row reaches the page rendered.
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_to_a_rewritten_request_is_not_applied() {
    let (server, b, member, a) = two_hosts().await;
    let before = b.0.snapshot();

    let call = read_first_on(&b, "s1");
    let request = pending_of_b(&a.page).await;
    let planted = "{\"tool\":\"sweeper\",\"user\":\"alice\",\"session\":\"s1\",\"capability\":\"mail.read\",\
        \"action\":\"read nothing at all\\u001b[2J\\u202e\",\"items\":[\"harmless\\u0007\"],\"payload\":null,\
        \"payload_heading\":\"exact content\",\"payload_warning\":null,\"tool_claim\":\"\"}";
    server.execute(
        "fleet",
        &format!(
            "UPDATE agentcap_fleet_requests SET shown = '{}' WHERE id = {}",
            planted.replace('\'', "''"),
            request["id"]
        ),
    );
    let rewritten = pending_of_b_unlike(&a.page, "digest", &request["digest"]).await;
    let text = rewritten.to_string();
    let parsed = format!("{}{}", rewritten["action"], rewritten["items"]);
    assert!(
        rewritten["action"]
            .as_str()
            .unwrap()
            .starts_with("read nothing at all")
    );
    for hidden in ['\u{1b}', '\u{202e}', '\u{7}'] {
        assert!(
            !rewritten["action"].as_str().unwrap().contains(hidden)
                && !rewritten["items"][0].as_str().unwrap().contains(hidden),
            "{text} {parsed}"
        );
    }
    let (status, body) = answer_on(&a.page, &rewritten, json!({"approve": [0]})).await;
    assert_eq!(status, 410, "{body}");
    assert!(body.contains("differs from the one asked"), "{body}");
    assert!(
        !call.is_finished(),
        "B still waits for an answer that holds"
    );
    // B asks again, as it asked: declined, nothing read.
    let again = pending_of_b_unlike(&a.page, "id", &rewritten["id"]).await;
    assert_eq!(again["capability"], "mail.read");
    assert_eq!(again["action"], request["action"]);
    let (status, body) = answer_on(&a.page, &again, json!({"decline": true})).await;
    assert_eq!(status, 200, "{body}");
    assert!(call.await.unwrap().is_err());
    assert_eq!(b.0.snapshot(), before);
    let reads =
        b.1.journal()
            .all()
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == "call" && r.capability.as_deref() == Some("mail.read"))
            .count();
    assert_eq!(reads, 0);
    drop(a);
    member.leave().await.unwrap();
}

/// A request that ends on its own host (its session stopped there) is
/// withdrawn from the fleet: a page's late answer is refused.
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_ends_on_its_host_leaves_the_other_pages() {
    let (server, b, member, a) = two_hosts().await;
    let call = read_first_on(&b, "s1");
    let request = pending_of_b(&a.page).await;
    // B's call ends (stopped on B): its request is withdrawn everywhere.
    b.1.stop_session(&SessionId("s1".into()), "test");
    assert!(call.await.unwrap().is_err());
    for _ in 0..100 {
        if server.value(
            "fleet",
            &format!(
                "SELECT count(*) FROM agentcap_fleet_requests WHERE id = {} AND state = 'withdrawn'",
                request["id"]
            ),
        ) == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = answer_on(&a.page, &request, json!({"approve": [0]})).await;
    assert_eq!(status, 410, "{body}");
    drop(a);
    member.leave().await.unwrap();
}

/// STOP EVERYTHING on host A's page reaches host B: B stops, acknowledges
/// in the fleet's database, and its next effect is refused.
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_everything_on_one_page_stops_the_other_hosts() {
    let (server, b, member, a) = two_hosts().await;
    let (status, body) = stop_on(&a.page, "{}").await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..200 {
        if b.1.stop_handle().is_halted() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(b.1.stop_handle().is_halted());
    let refused = read_first_on(&b, "after").await.unwrap();
    assert!(refused.is_err(), "{refused:?}");
    for _ in 0..200 {
        if server.value(
            "fleet",
            "SELECT count(*) FROM agentcap_fleet_acks WHERE host = 'b'",
        ) >= 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        server.value(
            "fleet",
            "SELECT count(*) FROM agentcap_fleet_acks WHERE host = 'b'"
        ) >= 1
    );
    drop(a);
    member.leave().await.unwrap();
}

/// Host B's sessions show on host A's page with B's name; Stop there stops
/// the session on B (its call waiting for consent ends, refused).
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_another_host_is_shown_and_stopped_on_a_page() {
    let (_server, b, member, a) = two_hosts().await;
    let call = read_first_on(&b, "remote-1");
    let (addr, key) = (a.page.addr.clone(), a.page.key.clone());
    let state = tokio::task::spawn_blocking(move || {
        for _ in 0..200 {
            let (_, response) = agentcap_tests::http_request(
                &addr,
                "GET",
                "/api/state",
                &[(agentcap::approvals::KEY_HEADER, &key)],
                "",
            );
            let state: serde_json::Value =
                serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            if state["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == "remote-1" && s["host"] == "b")
            {
                return state;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("host b's session did not show on host a's page");
    })
    .await
    .unwrap();
    let shown = state["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "remote-1")
        .unwrap()
        .clone();
    assert_eq!(shown["tools"], json!(["sweeper"]), "{shown}");
    assert_eq!(shown["stopped"], false);
    let (status, body) = stop_on(&a.page, "{\"session\": \"remote-1\"}").await;
    assert_eq!(status, 200, "{body}");
    let ended = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call on b ends once stopped from a's page")
        .unwrap();
    assert!(ended.is_err(), "{ended:?}");
    assert!(b.1.gate().is_stopped(&SessionId("remote-1".into())));
    // Other sessions of b still run.
    assert!(!b.1.stop_handle().is_halted());
    drop(a);
    member.leave().await.unwrap();
}

/// One asking process floods the fleet with waiting requests (here planted
/// rows; an agent can open a waiting request per MCP session): the page
/// lists at most 10 per process, so another host's request still shows
/// and is answered (the oldest 100 were listed, and it was not).
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_from_one_process_does_not_hide_another_hosts() {
    let (server, b, member, a) = two_hosts().await;
    server.execute(
        "fleet",
        "INSERT INTO agentcap_fleet_hosts (instance, host, pid, out_of_reach_after_ms, last_seen) \
         VALUES ('flood', 'x', 1, 3600000, clock_timestamp() + interval '1 hour'); \
         INSERT INTO agentcap_fleet_requests (instance, host, local_id, shown) \
         SELECT 'flood', 'x', n, '{\"tool\":\"junk\",\"user\":\"u\",\"session\":\"s\",\"capability\":\"mail.read\",\"action\":\"junk\",\"items\":[\"junk\"],\"payload\":null,\"payload_heading\":\"h\",\"payload_warning\":null,\"tool_claim\":\"\"}' \
         FROM generate_series(1, 150) n",
    );
    let call = read_first_on(&b, "s1");
    let request = pending_of_b(&a.page).await;
    let (status, body) = answer_on(&a.page, &request, json!({"approve": [0]})).await;
    assert_eq!(status, 200, "{body}");
    call.await.unwrap().expect("approved on A's page");
    drop(a);
    member.leave().await.unwrap();
}
