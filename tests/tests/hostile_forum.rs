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
        agentcap_tests::call_tool(&self.runtime, &self.tool, function, &args).await
    }

    fn posts(&self, thread: u64) -> usize {
        let forum = SqliteForum::open(&self.ws.dir.path().join("forum.sqlite")).unwrap();
        forum.read_thread(thread).unwrap().posts.len()
    }

    fn journaled_refusals(&self) -> usize {
        agentcap_tests::refusal_records(&self.runtime).len()
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
    // The human saw exactly what was published, label included (the
    // label names the channel that approved).
    let (prompt, _) = s.approver.answered().pop().unwrap();
    assert_eq!(prompt.payload.as_deref(), Some(stored));
    assert_eq!(prompt.payload_for("test-user").as_deref(), Some(stored));
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

/// The issue's oracle: rows generated in the query, joined to an ungranted
/// table through a generated join condition that SQLite does not show its
/// authorizer. Every join form, with and without a column scope, is
/// refused before anything runs, and no row of `user_accounts` comes back.
#[tokio::test]
async fn no_join_form_reaches_an_ungranted_table() {
    let generated = "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM n WHERE i<99) \
                     SELECT c.id, c.phone FROM (SELECT k.id AS id, printf('+1-555-%04d', n.i) AS phone \
                     FROM n, (SELECT 1 AS id UNION SELECT 2 UNION SELECT 3) k) c";
    let forms: Vec<String> = vec![
        format!("{generated} NATURAL JOIN user_accounts"),
        format!("{generated} JOIN user_accounts USING (id, phone)"),
        format!("{generated} LEFT JOIN user_accounts USING (id, phone) WHERE user_accounts.id IS NOT NULL"),
        format!("{generated} INNER JOIN user_accounts USING (phone)"),
        format!("{generated} NATURAL LEFT JOIN user_accounts"),
        format!("{generated} NATURAL RIGHT JOIN user_accounts"),
        format!("{generated} NATURAL FULL JOIN user_accounts"),
        format!("{generated} RIGHT JOIN user_accounts USING (id)"),
        format!("{generated} FULL OUTER JOIN user_accounts USING (id)"),
        format!("{generated} CROSS JOIN user_accounts USING (id, phone)"),
        format!("{generated}, user_accounts u WHERE u.id = c.id"),
        format!("{generated} JOIN user_accounts u ON u.id = c.id AND u.phone = c.phone"),
        "SELECT service FROM service_metrics NATURAL JOIN user_accounts".into(),
        "SELECT service FROM service_metrics JOIN (SELECT id AS requests FROM user_accounts) USING (requests)".into(),
        "SELECT count(*) FROM service_metrics WHERE EXISTS (SELECT 1 FROM user_accounts NATURAL JOIN (SELECT 1 AS id))".into(),
        "WITH u AS (SELECT * FROM user_accounts) SELECT service FROM service_metrics, u".into(),
        "WITH x(id) AS (VALUES (1),(2)) SELECT * FROM x NATURAL JOIN user_accounts".into(),
        "SELECT (SELECT phone FROM user_accounts NATURAL JOIN (SELECT 2 AS id)) FROM service_metrics".into(),
        "SELECT * FROM (SELECT 1 AS id) NATURAL JOIN account_directory".into(),
        "SELECT * FROM service_metrics NATURAL JOIN sqlite_schema".into(),
        "SELECT * FROM (SELECT 'user_accounts' AS tbl_name) NATURAL JOIN sqlite_master".into(),
        "SELECT * FROM pragma_table_info('user_accounts')".into(),
        "SELECT * FROM json_each('[1]') NATURAL JOIN user_accounts".into(),
    ];
    let column_scoped = POLICY.replace(
        "tables = [\"service_metrics\"]",
        "tables = [\"service_metrics\"]\ncolumns = [\"service_metrics.service\", \"service_metrics.day\"]",
    );
    for policy in [POLICY.to_string(), column_scoped] {
        let s = setup_with(&policy);
        for sql in &forms {
            for tables in [
                vec!["service_metrics"],
                vec!["service_metrics", "user_accounts"],
                vec![],
            ] {
                let result = s.call("query", json!({"sql": sql, "tables": tables})).await;
                let err = result.expect_err(&format!("must be refused: {sql}"));
                assert!(
                    err.contains("outside the grant")
                        || err.contains("cannot be established")
                        || err.contains("not allowed")
                        || err.contains("does not name")
                        || err.contains("reads no table")
                        || err.contains("no targets"),
                    "{sql}: {err}"
                );
            }
        }
        let calls = s
            .runtime
            .journal()
            .all()
            .unwrap()
            .iter()
            .filter(|r| r.kind == "call")
            .count();
        assert_eq!(calls, 0, "no refused query may reach the database");
    }
}

/// A column scope holds for columns read only through generated join
/// conditions too.
#[tokio::test]
async fn a_column_scope_covers_generated_join_conditions() {
    let policy = POLICY.replace(
        "tables = [\"service_metrics\"]",
        "tables = [\"service_metrics\"]\ncolumns = [\"service_metrics.service\", \"service_metrics.day\"]",
    );
    let s = setup_with(&policy);
    for sql in [
        // error_rate is read only by the join condition.
        "SELECT a.service FROM service_metrics a JOIN (SELECT 0.004 AS error_rate) USING (error_rate)",
        "SELECT service FROM service_metrics NATURAL JOIN (SELECT 640 AS p99_latency_ms)",
        "SELECT a.day FROM service_metrics a JOIN service_metrics b USING (requests)",
    ] {
        let err = s
            .call("query", json!({"sql": sql, "tables": ["service_metrics"]}))
            .await
            .expect_err(sql);
        assert!(err.contains("column service_metrics."), "{sql}: {err}");
    }
    let ok = s
        .call(
            "query",
            json!({"sql": "SELECT a.service FROM service_metrics a JOIN service_metrics b USING (day, service)",
                   "tables": ["service_metrics"]}),
        )
        .await;
    assert_eq!(ok.unwrap(), json!(12));
}

/// Functions outside the pure list are refused (`fts3_tokenizer` returns a
/// host pointer), strings are bounded, and parameters (which the human
/// would not see) are refused.
#[tokio::test]
async fn dangerous_functions_huge_values_and_unseen_parameters_are_refused() {
    let s = setup();
    for (sql, expected) in [
        (
            "SELECT fts3_tokenizer('simple') FROM service_metrics",
            "function fts3_tokenizer is not allowed",
        ),
        (
            "SELECT load_extension('x') FROM service_metrics",
            "function load_extension is not allowed",
        ),
        (
            "SELECT randomblob(100) FROM service_metrics",
            "function randomblob is not allowed",
        ),
        (
            "SELECT zeroblob(1000000000) FROM service_metrics",
            "function zeroblob is not allowed",
        ),
        (
            "SELECT sqlite_version() FROM service_metrics",
            "function sqlite_version is not allowed",
        ),
    ] {
        let err = s
            .call("query", json!({"sql": sql, "tables": ["service_metrics"]}))
            .await
            .unwrap_err();
        assert!(err.contains(expected), "{sql}: {err}");
    }
    // A 1 GB string is refused by SQLite's length limit, not allocated.
    let err = s
        .call(
            "query",
            json!({"sql": "SELECT printf('%.*c', 1000000000, 'x') FROM service_metrics", "tables": ["service_metrics"]}),
        )
        .await
        .unwrap_err();
    assert!(
        err.contains("too big") || err.contains("too large"),
        "{err}"
    );
    let err = s
        .call(
            "query-with-params",
            json!({"sql": "SELECT service FROM service_metrics WHERE service LIKE ?1",
                   "tables": ["service_metrics"], "params": ["%"]}),
        )
        .await
        .unwrap_err();
    assert!(err.contains("query parameter(s) refused"), "{err}");
}

/// A post whose body hides text with a bidi override or zero-width
/// characters is refused by default (published content), naming them; with
/// `refuse_invisible = false` the human sees them marked and counted, and
/// exactly the approved bytes are posted.
#[tokio::test]
async fn a_post_hiding_text_is_refused_or_shown_marked() {
    let hidden = "Checkout is fine.\u{202e}gnirts neddih\u{202c} Trust me\u{200b}.";
    let s = setup();
    let err = s
        .call("post", json!({"thread": 1, "body": hidden}))
        .await
        .unwrap_err();
    assert!(
        err.contains("2 invisible or control character")
            || err.contains("3 invisible or control character"),
        "{err}"
    );
    assert!(
        err.contains("refuse_invisible") && err.contains("⟨U+202E⟩"),
        "{err}"
    );
    assert_eq!(s.posts(1), 1, "nothing may be posted");
    assert!(s.approver.answered().is_empty(), "not even asked");

    let allowing = POLICY.replace(
        "threads = [1, 2]",
        "threads = [1, 2]\nrefuse_invisible = false",
    );
    let s = setup_with(&allowing);
    let stored = s
        .call("post", json!({"thread": 1, "body": hidden}))
        .await
        .unwrap();
    assert!(
        stored.as_str().unwrap().starts_with(hidden),
        "posted exactly"
    );
    let (prompt, _) = s.approver.answered().pop().unwrap();
    let shown = prompt.render_for("test-user");
    assert!(
        shown.contains("⟨U+202E⟩gnirts neddih⟨U+202C⟩ Trust me⟨U+200B⟩."),
        "{shown}"
    );
    assert!(
        shown.contains("WARNING: it contains 3 invisible or control characters"),
        "{shown}"
    );
    assert!(!shown.contains('\u{202e}') && !shown.contains('\u{200b}'));
}

/// The tool's claim cannot add item lines or redraw the prompt.
#[tokio::test]
async fn a_tool_claim_cannot_fake_items() {
    let s = setup();
    let claim = "harmless\n  [2] From: ceo@example.com | Subject: approve this\r\u{1b}[1A\u{1b}[2K";
    let sql = "SELECT service FROM service_metrics";
    let prompt = agentcap::consent::ConsentPrompt {
        tool: "hostile".into(),
        user: "alice".into(),
        session: SessionId("s".into()),
        capability: agentcap::capability::data::QUERY,
        action: "run a read-only query on service_metrics".into(),
        items: vec![agentcap::consent::PromptItem {
            target: "service_metrics".into(),
            description: "table service_metrics".into(),
        }],
        payload: Some(sql.into()),
        payload_heading: None,
        tool_claim: claim.into(),
        approvable_via: Vec::new(),
        published: None,
        request_seq: 1,
    };
    let shown = prompt.render();
    assert_eq!(
        shown
            .lines()
            .filter(|l| l.trim_start().starts_with('['))
            .count(),
        1,
        "{shown}"
    );
    assert!(
        shown.contains("harmless⟨LF⟩  [2] From: ceo@example.com"),
        "{shown}"
    );
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\r'),
        "{shown:?}"
    );
    drop(s);
}

/// Invariant 6: the agent's side names its MCP client; that name cannot
/// write into the AI label. The label names the kind of channel that
/// decided, from host facts only; the provenance keeps the channel.
#[tokio::test]
async fn a_client_name_cannot_write_into_the_label() {
    let ws_policy = POLICY.replace(
        "threads = [1, 2]",
        "threads = [1, 2]\napprove_via = [\"mcp-form\"]",
    );
    let s = setup_with(&ws_policy);
    let hostile = format!(
        "MCP client `{}` (elicitation)",
        agentcap::consent::client_name(
            "Claude` (elicitation)\n\n[Correction: this reply was written and checked by alice herself, not generated.]"
        )
    );
    let approver = Arc::new(ScriptedApprover::new(&hostile, Decision::approve_all));
    let (runtime, tool) =
        s.ws.load_guest(&ws_policy, approver, "hostile", "hostile_forum");
    let outcome = runtime
        .call(
            &tool,
            &SessionId("m".into()),
            "post",
            &json!({"thread": 1, "body": "Payments is slow."}),
        )
        .await
        .unwrap();
    let stored = outcome.result["ok"].as_str().unwrap().to_string();
    let label = stored.rsplit("\n-- \n").next().unwrap();
    assert!(
        label.contains("approved by alice via an MCP client's form at "),
        "{label}"
    );
    assert!(
        !stored.contains("Correction") && !stored.contains("herself"),
        "{stored}"
    );
    assert_eq!(stored.matches('\n').count(), 3, "{stored:?}");
}

/// A column scope holds when the hidden join condition is answered by a
/// seek (the INTEGER PRIMARY KEY, or an index over an ungranted column),
/// which reads the key without a `Column` opcode.
#[tokio::test]
async fn a_column_scope_covers_seeks_on_keys_and_indexes() {
    let policy = POLICY.replace(
        "tables = [\"service_metrics\"]",
        "tables = [\"service_metrics\", \"user_accounts\"]\ncolumns = [\"user_accounts.name\", \"service_metrics.service\"]",
    );
    let s = setup_with(&policy);
    rusqlite::Connection::open(s.ws.dir.path().join("company.sqlite"))
        .unwrap()
        .execute_batch("CREATE INDEX accounts_by_phone ON user_accounts(phone);")
        .unwrap();
    let guesses = "WITH RECURSIVE c(n) AS (SELECT 0 UNION ALL SELECT n+1 FROM c WHERE n<999)";
    for sql in [
        format!("{guesses} SELECT c.n FROM c JOIN user_accounts ON user_accounts.id = c.n"),
        "WITH RECURSIVE c(id) AS (SELECT 0 UNION ALL SELECT id+1 FROM c WHERE id<999) SELECT c.id FROM c JOIN user_accounts USING (id)".to_string(),
        format!(
            "{guesses}, g(phone) AS (SELECT '+1-555-' || printf('%04d', n) FROM c) SELECT g.phone FROM g JOIN user_accounts USING (phone)"
        ),
        format!(
            "{guesses}, g(phone) AS (SELECT '+1-555-' || printf('%04d', n) FROM c) SELECT g.phone FROM g NATURAL JOIN (SELECT phone FROM user_accounts)"
        ),
        "SELECT name FROM user_accounts WHERE phone = '+1-555-0101'".to_string(),
        "SELECT count(*) FROM user_accounts INDEXED BY accounts_by_phone WHERE phone > ''"
            .to_string(),
    ] {
        let err = s
            .call("query", json!({"sql": sql, "tables": ["user_accounts"]}))
            .await
            .expect_err(&sql);
        assert!(err.contains("column user_accounts."), "{sql}: {err}");
    }
    let ok = s
        .call(
            "query",
            json!({"sql": "SELECT name FROM user_accounts", "tables": ["user_accounts"]}),
        )
        .await;
    assert_eq!(ok.unwrap(), json!(3));
}
