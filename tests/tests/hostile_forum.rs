//! Hostile components against the forum and data capabilities (the forum
//! incident): every attempt is refused, nothing is posted or read, and every
//! refusal is journaled. Posts always carry the host's label.

use std::sync::Arc;

use agentcap::capability::forum::{Forum, SqliteForum};
use agentcap::consent::{Decision, ScriptedApprover, SessionId};
use agentcap::{LoadedTool, Runtime};
use agentcap_tests::Workspace;
use serde_json::{Value, json};

const POLICY: &str = r#"
user = "alice"
[mail]
maildir = "Maildir"
[forum]
database = "forum.sqlite"
[data]
database = "company.sqlite"
max_rows = 100
[tools.hostile]
component = "x.wasm"
[[tools.hostile.grants]]
capability = "mail.list"
mode = "standing"
[[tools.hostile.grants]]
capability = "forum.post"
mode = "ask"
threads = [1, 2]
[[tools.hostile.grants]]
capability = "data.query"
mode = "standing"
tables = ["service_metrics"]
"#;

struct Setup {
    ws: Workspace,
    runtime: Runtime,
    tool: LoadedTool,
    approver: Arc<ScriptedApprover>,
}

fn setup() -> Setup {
    setup_with(POLICY)
}

fn setup_with(policy: &str) -> Setup {
    let ws = Workspace::new();
    let forum = SqliteForum::open(&ws.dir.path().join("forum.sqlite")).unwrap();
    forum
        .add_thread(
            "Which service is slow?",
            "bob",
            "Checkout is slow. Any idea?",
        )
        .unwrap();
    forum
        .add_thread("Lunch", "carol", "Pizza on Friday?")
        .unwrap();
    rusqlite::Connection::open(ws.dir.path().join("company.sqlite"))
        .unwrap()
        .execute_batch(agentcap::demo::COMPANY_SQL)
        .unwrap();
    let approver = Arc::new(ScriptedApprover::new("test-user", Decision::approve_all));
    let (runtime, tool) = ws.load_guest(policy, approver.clone(), "hostile", "hostile_forum");
    Setup {
        ws,
        runtime,
        tool,
        approver,
    }
}

impl Setup {
    async fn call(&self, function: &str, args: Value) -> Result<Value, String> {
        let outcome = self
            .runtime
            .call(&self.tool, &SessionId("s".into()), function, &args)
            .await
            .unwrap_or_else(|e| panic!("{function}: {e}"));
        match outcome.result.get("ok") {
            Some(v) => Ok(v.clone()),
            None => Err(outcome.result["err"].as_str().unwrap().to_string()),
        }
    }

    fn posts(&self, thread: u64) -> usize {
        let forum = SqliteForum::open(&self.ws.dir.path().join("forum.sqlite")).unwrap();
        forum.read_thread(thread).unwrap().posts.len()
    }

    fn journaled_refusals(&self) -> usize {
        self.runtime
            .journal()
            .all()
            .unwrap()
            .iter()
            .filter(|r| {
                r.kind == "refusal"
                    || (r.kind == "decision"
                        && !r.outcome.as_deref().unwrap_or("").starts_with("approved"))
            })
            .count()
    }
}

#[tokio::test]
async fn posting_with_a_mail_token_is_refused() {
    let s = setup();
    let err = s
        .call("post-with-mail-token", json!({"thread": 1, "body": "hi"}))
        .await
        .unwrap_err();
    assert!(err.contains("is for mail.list, not forum.post"), "{err}");
    assert_eq!(s.posts(1), 1);
    assert_eq!(s.journaled_refusals(), 1);
}

#[tokio::test]
async fn a_token_for_one_thread_cannot_post_in_another() {
    let s = setup();
    let err = s
        .call(
            "post-elsewhere",
            json!({"approved": 1, "other": 2, "body": "hi"}),
        )
        .await
        .unwrap_err();
    assert!(err.contains("forum.post of 2 was not approved"), "{err}");
    assert_eq!((s.posts(1), s.posts(2)), (1, 1));
    let err = s
        .call(
            "post-elsewhere",
            json!({"approved": 3, "other": 3, "body": "hi"}),
        )
        .await
        .unwrap_err();
    assert!(err.contains("thread 3 is outside the grant"), "{err}");
}

#[tokio::test]
async fn a_body_other_than_the_approved_one_is_refused() {
    let s = setup();
    let approved = "Use the read-only replica for the report.";
    for actual in [
        "Use the read-only replica for the report.!",
        "Use the read-only replica for the report",
        "Use the read-only replic\u{0430} for the report.", // Cyrillic a
        "Use the read-only replica for the report. ",
        "Use the read-write primary for the report.",
    ] {
        let err = s
            .call(
                "post-other-body",
                json!({"thread": 1, "approved": approved, "actual": actual}),
            )
            .await
            .unwrap_err();
        assert!(
            err.contains("the content differs from the approved content"),
            "{actual:?}: {err}"
        );
    }
    assert_eq!(s.posts(1), 1, "nothing may be posted");
    assert_eq!(s.journaled_refusals(), 5);
}

#[tokio::test]
async fn the_label_cannot_be_stripped_or_forged_through_the_body() {
    let s = setup();
    let body = "Totally written by a human.\n\n-- \nPosted by bob himself; no AI involved.";
    let stored = s
        .call("post", json!({"thread": 1, "body": body}))
        .await
        .unwrap();
    let stored = stored.as_str().unwrap();
    assert!(stored.starts_with(body), "{stored}");
    let label = stored.rsplit("\n-- \n").next().unwrap();
    assert!(
        label.starts_with("Posted by an AI agent (tool hostile) on behalf of alice; approved by alice via test-user at "),
        "{stored}"
    );
    // The human saw exactly what was published, label included.
    let (prompt, _) = s.approver.answered().pop().unwrap();
    assert_eq!(prompt.payload.as_deref(), Some(stored));
    let forum = SqliteForum::open(&s.ws.dir.path().join("forum.sqlite")).unwrap();
    let post = forum.read_thread(1).unwrap().posts.pop().unwrap();
    assert!(post.ai_generated);
    let provenance = forum.provenance(post.id).unwrap().unwrap();
    assert_eq!(provenance.generated_by, "ai-agent");
    assert_eq!(provenance.tool, "hostile");
    assert_eq!(provenance.approver, "human via test-user");
}

#[tokio::test]
async fn queries_outside_the_scope_are_refused_naming_the_table() {
    let s = setup();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "SELECT * FROM user_accounts",
            &["user_accounts"],
            "table user_accounts",
        ),
        (
            "SELECT m.service, u.email FROM service_metrics m JOIN user_accounts u ON 1 = 1",
            &["service_metrics"],
            "table user_accounts",
        ),
        (
            "SELECT service FROM service_metrics WHERE service IN (SELECT email FROM user_accounts)",
            &["service_metrics"],
            "table user_accounts",
        ),
        (
            "SELECT * FROM account_directory",
            &["account_directory"],
            "table account_directory",
        ),
        (
            "SELECT sql FROM sqlite_master",
            &["sqlite_master"],
            "table sqlite_master",
        ),
        (
            "SELECT name FROM sqlite_schema",
            &["sqlite_schema"],
            "sqlite_",
        ),
        (
            "ATTACH DATABASE 'other.db' AS other",
            &["other"],
            "attach is not allowed",
        ),
        (
            "PRAGMA table_info(user_accounts)",
            &["user_accounts"],
            "pragma is not allowed",
        ),
        (
            "DELETE FROM service_metrics",
            &["service_metrics"],
            "delete is not allowed",
        ),
        (
            "SELECT service FROM service_metrics -- harmless\nUNION SELECT email FROM user_accounts",
            &["service_metrics"],
            "table user_accounts",
        ),
        (
            "SELECT service FROM service_metrics /* */ UNION SELECT /* */ password_hash FROM/**/user_accounts",
            &["service_metrics"],
            "table user_accounts",
        ),
        (
            "SELECT service FROM service_metrics; SELECT * FROM user_accounts",
            &["service_metrics"],
            "does not compile",
        ),
        ("SELECT * FROM service_metrics", &[], "no targets given"),
        (
            "SELECT * FROM service_metrics JOIN service_metrics AS b",
            &["other"],
            "which the intent does not name",
        ),
    ];
    for (sql, tables, expected) in cases {
        let err = s
            .call("query", json!({"sql": sql, "tables": tables}))
            .await
            .unwrap_err();
        assert!(err.contains(expected), "{sql}: {err}");
    }
    let long = format!(
        "SELECT service FROM service_metrics WHERE service = '{}'",
        "x".repeat(20_000)
    );
    let err = s
        .call("query", json!({"sql": long, "tables": ["service_metrics"]}))
        .await
        .unwrap_err();
    assert!(err.contains("the limit is"), "{err}");
    assert_eq!(
        s.journaled_refusals(),
        cases.len() + 1,
        "every refusal is journaled"
    );
    assert!(
        !s.runtime
            .journal()
            .all()
            .unwrap()
            .iter()
            .any(|r| r.kind == "call"),
        "no refused query may reach the database"
    );
}

#[tokio::test]
async fn only_the_approved_sql_runs() {
    let s = setup();
    let ok = s
        .call(
            "query",
            json!({"sql": "SELECT service FROM service_metrics", "tables": ["service_metrics"]}),
        )
        .await;
    assert_eq!(ok.unwrap(), json!(12));
    let err = s
        .call(
            "query-other-sql",
            json!({"tables": ["service_metrics"], "approved": "SELECT service FROM service_metrics", "actual": "SELECT * FROM service_metrics"}),
        )
        .await
        .unwrap_err();
    assert!(err.contains("content differs"), "{err}");
}

#[tokio::test]
async fn a_column_scope_is_enforced_by_the_authorizer() {
    let policy = POLICY.replace(
        "tables = [\"service_metrics\"]",
        "tables = [\"service_metrics\"]\ncolumns = [\"service_metrics.service\", \"service_metrics.day\"]",
    );
    let s = setup_with(&policy);
    let ok = s.call("query", json!({"sql": "SELECT service, day FROM service_metrics", "tables": ["service_metrics"]})).await;
    assert_eq!(ok.unwrap(), json!(12));
    for sql in [
        "SELECT p99_latency_ms FROM service_metrics",
        "SELECT * FROM service_metrics",
        "SELECT service FROM service_metrics WHERE error_rate > 0.01",
    ] {
        let err = s
            .call("query", json!({"sql": sql, "tables": ["service_metrics"]}))
            .await
            .unwrap_err();
        assert!(
            err.contains("is outside the grant") && err.contains("column service_metrics."),
            "{sql}: {err}"
        );
    }
}
