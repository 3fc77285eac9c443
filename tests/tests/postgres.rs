//! `data.query` against a real PostgreSQL server started by each test: the
//! reads are found in the server's own plan and held to the grant, no
//! statement writes, calls a function off the list or runs what was not
//! approved, and every result is bounded. The server's statement log proves
//! what ran.

use std::sync::Arc;

use agentcap::consent::{Decision, ScriptedApprover};
use agentcap::{LoadedTool, Runtime};
use agentcap_tests::Workspace;
use agentcap_tests::pg_server::{ADMIN_PASSWORD, Postgres};
use serde_json::json;

const SCHEMA: &str = r#"
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text, ssn text);
CREATE INDEX customers_ssn_idx ON customers (ssn);
CREATE TABLE secrets (secret text);
INSERT INTO secrets VALUES ('topsecret-value');
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2), note text);
CREATE VIEW v_orders AS SELECT c.name, o.total FROM orders o JOIN customers c ON c.id = o.customer_id;
CREATE VIEW v_contacts AS SELECT name, email FROM customers;
CREATE SEQUENCE seq;
CREATE TABLE events (id int, kind text, at date) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE FUNCTION public.upper(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS 'BEGIN RETURN $1; END';
INSERT INTO customers SELECT i, 'name ' || i, 'c' || i || '@example.com', lpad(i::text, 9, '0')
    FROM generate_series(1, 2000) i;
INSERT INTO orders SELECT i, 1 + i % 2000, i * 1.5, 'note ' || i FROM generate_series(1, 5000) i;
CREATE INDEX orders_one ON orders (id) WHERE note = 'note 4711';
ANALYZE;
INSERT INTO events VALUES (1, 'login', '2025-05-01'), (2, 'logout', '2026-02-01');
CREATE ROLE agent_narrow LOGIN PASSWORD 'narrow-secret';
GRANT SELECT (id, name) ON customers TO agent_narrow;
"#;

struct Setup {
    /// Declared first: the runtime and its connection go before the server.
    runtime: Runtime,
    tool: LoadedTool,
    approver: Arc<ScriptedApprover>,
    _ws: Workspace,
    server: Postgres,
}

/// A server with the company schema, and the hostile data tool under a
/// policy with `grant` (TOML lines of one `data.query` grant) connecting as
/// `user` with the password in `password`.
fn setup(
    grant: &str,
    user: &str,
    password: &str,
    script: fn(&agentcap::consent::ConsentPrompt) -> Decision,
) -> Setup {
    let server = Postgres::start();
    server.execute("postgres", "CREATE DATABASE company");
    server.execute("company", SCHEMA);
    let ws = Workspace::new();
    std::fs::write(ws.dir.path().join("pg-password"), password).unwrap();
    let policy = agentcap_tests::hostile_data_policy(
        &format!(
            "max_rows = 100\ntimeout_ms = 2000\n[data.postgres]\nhost = \"127.0.0.1\"\n\
             port = {}\ndbname = \"company\"\nuser = \"{user}\"\n\
             password_file = \"pg-password\"\ntls = false\nallow_superuser = true",
            server.port
        ),
        grant,
    );
    let approver = Arc::new(ScriptedApprover::new("test-user", script));
    let (runtime, tool) = agentcap_tests::load_hostile_data(&ws, &policy, approver.clone());
    Setup {
        runtime,
        tool,
        approver,
        _ws: ws,
        server,
    }
}

fn standing(grant: &str) -> Setup {
    setup(
        &format!("mode = \"standing\"\n{grant}"),
        "postgres",
        ADMIN_PASSWORD,
        Decision::approve_all,
    )
}

impl Setup {
    async fn query(&self, sql: &str, tables: &[&str]) -> Result<u64, String> {
        agentcap_tests::call_tool(
            &self.runtime,
            &self.tool,
            "query",
            &json!({"sql": sql, "tables": tables}),
        )
        .await
        .map(|v| v.as_u64().expect("a row count"))
    }

    fn count(&self, sql: &str) -> i64 {
        self.server.value("company", sql)
    }

    /// How many statements containing `needle` the server ran (its
    /// statement log), not counting the host's EXPLAIN of them.
    fn ran(&self, needle: &str) -> usize {
        self.server
            .agentcap_statements()
            .iter()
            .filter(|st| st.contains(needle) && !st.contains("EXPLAIN"))
            .count()
    }
}

fn expect_refusal(result: Result<u64, String>, sql: &str, expected: &str) {
    match result {
        Err(e) => assert!(
            e.contains(expected),
            "{sql}\n  expected: {expected}\n  got: {e}"
        ),
        Ok(n) => panic!("{sql} ran and returned {n} rows; expected a refusal ({expected})"),
    }
}

#[tokio::test]
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
async fn granted_queries_run_with_reads_found_by_the_server() {
    let s = standing(r#"tables = ["customers", "orders", "events"]"#);
    for (sql, tables, rows) in [
        (
            "SELECT name FROM customers WHERE id <= 10",
            &["customers"][..],
            10,
        ),
        (
            "SELECT c.name, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id \
             WHERE c.id <= 5 GROUP BY c.name ORDER BY 2 DESC",
            &["customers", "orders"][..],
            5,
        ),
        // A view reads its base tables; partitions read as their table.
        (
            "SELECT name, total FROM v_orders WHERE total < 10",
            &["customers", "orders"][..],
            6,
        ),
        ("SELECT kind FROM events", &["events"][..], 2),
        // The row limit cuts the result short (the tool sees `truncated`).
        ("SELECT id, note FROM orders;", &["orders"][..], 100),
        (
            "SELECT count(*) FROM customers -- a trailing comment",
            &["customers"][..],
            1,
        ),
    ] {
        assert_eq!(s.query(sql, tables).await, Ok(rows), "{sql}");
    }
    // The tool names fewer tables than the statement reads: refused.
    expect_refusal(
        s.query("SELECT name FROM v_orders", &["orders"]).await,
        "v_orders",
        "reads table customers, which the intent does not name",
    );
}

#[tokio::test]
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
async fn every_column_and_table_read_is_held_to_the_grant() {
    let s = standing(
        r#"tables = ["customers", "orders", "events"]
columns = ["customers.id", "customers.name", "orders.id", "orders.customer_id", "orders.total",
           "events.id", "events.kind"]"#,
    );
    let ssn = "column customers.ssn is outside the grant";
    let c = &["customers"][..];
    for (sql, tables, expected) in [
        ("SELECT ssn FROM customers", c, ssn),
        ("SELECT name FROM customers WHERE ssn = '000000001'", c, ssn),
        ("SELECT name FROM customers ORDER BY ssn LIMIT 3", c, ssn),
        ("SELECT count(ssn) FROM customers", c, ssn),
        (
            "SELECT name, row_number() OVER (ORDER BY ssn) FROM customers",
            c,
            ssn,
        ),
        ("SELECT min(ssn) FROM customers", c, ssn),
        (
            "SELECT name FROM customers GROUP BY name HAVING max(ssn) > '0'",
            c,
            ssn,
        ),
        (
            "SELECT name FROM customers c WHERE EXISTS \
             (SELECT 1 FROM customers d WHERE d.id = c.id AND d.ssn LIKE '1%')",
            c,
            ssn,
        ),
        (
            "WITH x AS MATERIALIZED (SELECT ssn FROM customers) SELECT count(*) FROM x",
            c,
            ssn,
        ),
        (
            "SELECT name FROM customers UNION SELECT ssn FROM customers",
            c,
            ssn,
        ),
        (
            "SELECT row_to_json(c) FROM customers c",
            c,
            "whole rows of customers",
        ),
        ("TABLE customers", c, "outside the grant"),
        (
            "SELECT name, email FROM v_contacts",
            c,
            "column customers.email",
        ),
        (
            "SELECT note FROM orders",
            &["orders"][..],
            "column orders.note",
        ),
        ("SELECT ctid FROM customers", c, "column customers.ctid"),
        (
            "SELECT rolname FROM pg_catalog.pg_authid",
            &["pg_catalog.pg_authid"][..],
            "reads table pg_catalog.pg_authid, outside the grant",
        ),
        // The planner drops a condition a partial index implies.
        (
            "SELECT id FROM orders WHERE note = 'note 4711'",
            &["orders"][..],
            "column orders.note is outside the grant",
        ),
        // Which partition a row is in tells its partition key.
        (
            "SELECT id FROM events_2026",
            &["events"][..],
            "column events.at is outside the grant",
        ),
        (
            "SELECT id FROM events",
            &["events"][..],
            "column events.at is outside the grant",
        ),
        (
            "SELECT name, setting FROM pg_settings",
            &["customers"][..],
            "function pg_show_all_settings is not allowed",
        ),
    ] {
        expect_refusal(s.query(sql, tables).await, sql, expected);
    }
    // Within the columns, joins and aggregates run.
    assert_eq!(
        s.query(
            "SELECT c.name, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id \
             GROUP BY c.name ORDER BY c.name LIMIT 7",
            &["customers", "orders"],
        )
        .await,
        Ok(7)
    );
    assert_eq!(s.query("SELECT count(*) FROM customers", c).await, Ok(1));
    // Refused queries never ran: the log has their EXPLAIN at most.
    assert_eq!(s.ran("agentcap_row"), 2);
}

#[tokio::test]
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
async fn an_ungranted_table_is_unreachable_in_every_form() {
    let s = standing(r#"tables = ["customers"]"#);
    let both = &["customers", "orders"][..];
    for sql in [
        "SELECT c.name FROM customers c JOIN orders o ON o.customer_id = c.id",
        "SELECT name FROM customers WHERE id IN (SELECT customer_id FROM orders)",
        "SELECT name FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id)",
        "SELECT name, (SELECT max(total) FROM orders) FROM customers",
        "SELECT name FROM customers ORDER BY (SELECT count(*) FROM orders)",
        "SELECT name FROM v_orders",
        "WITH o AS (SELECT * FROM orders) SELECT c.name FROM customers c, o WHERE o.id = c.id",
        "SELECT name FROM customers UNION ALL SELECT note FROM orders",
        "SELECT c.name, x.total FROM customers c, \
         LATERAL (SELECT total FROM orders WHERE customer_id = c.id LIMIT 1) x",
        "WITH RECURSIVE r(n) AS (SELECT count(*) FROM orders UNION ALL SELECT n - 1 FROM r WHERE n > 0) \
         SELECT c.name FROM customers c, r LIMIT 1",
        "SELECT name FROM customers LIMIT (SELECT count(*) FROM orders)",
    ] {
        expect_refusal(
            s.query(sql, both).await,
            sql,
            "reads table orders, outside the grant",
        );
    }
    // A recursive query that never ends runs into statement_timeout.
    expect_refusal(
        s.query(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) \
             SELECT count(*) FROM r, customers",
            &["customers"],
        )
        .await,
        "recursive",
        "ran longer than its limit of 2000 ms",
    );
    assert_eq!(s.ran("orders"), 0);
}

#[tokio::test]
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
async fn no_function_or_statement_can_act_on_the_server() {
    let s = standing(r#"tables = ["customers", "orders"]"#);
    let before = s.server.dump("company");
    // The planner evaluates STABLE functions with constant arguments while
    // it plans; none off the list reaches the server, so no error can carry
    // data back, whichever way the condition goes.
    for sql in [
        "SELECT id FROM customers WHERE id = ('x' || table_to_xml('secrets', true, false, '')::text)::int",
        "SELECT id FROM customers LIMIT ('x' || current_setting('data_directory'))::int",
        "SELECT id FROM customers WHERE id = 1 / (CASE WHEN strpos(table_to_xml('secrets', true, false, '')::text, 'top') > 0 THEN 0 ELSE 1 END)",
        "SELECT id FROM customers WHERE id = 1 / (CASE WHEN strpos(table_to_xml('secrets', true, false, '')::text, 'zzz') > 0 THEN 0 ELSE 1 END)",
        "SELECT id FROM customers WHERE id = (\"table_to_xml\" /* */ ('secrets', true, false, '')::text)::int",
        "SELECT id FROM customers WHERE id = pg_catalog.length(pg_catalog.current_setting('data_directory'))",
        // Found by a second attack: a call in CAST(... AS t), a name that
        // PostgreSQL reads as one identifier, a comment ended by CR, words
        // that call without parentheses, catalog casts.
        "SELECT id FROM customers WHERE id = CAST('x' || CAST(table_to_xml('secrets', true, false, '') AS text) AS int)",
        "SELECT id FROM customers €$a$ WHERE id = ('x' || table_to_xml('secrets', true, false, '')::text)::int OR €$a$.id = 0",
        "SELECT id FROM customers x\u{a0}$a$ WHERE id = ('x' || table_to_xml('secrets', true, false, '')::text)::int OR x\u{a0}$a$.id = 0",
        "SELECT id FROM customers WHERE id = ('x' || --\r table_to_xml('secrets', true, false, '')::text)::int",
        "SELECT id FROM customers WHERE id = (current_user || '/' || current_catalog)::text::int",
        "SELECT id FROM customers WHERE id = 'secrets'::regclass::oid::int",
    ] {
        let err = s.query(sql, &["customers"]).await.unwrap_err();
        assert!(err.contains("is not allowed in queries"), "{sql}: {err}");
        assert!(
            !err.contains("topsecret") && !err.contains("/var/lib"),
            "{sql}: {err}"
        );
    }
    let c = &["customers"][..];
    let not_allowed = "is not allowed in queries";
    for (sql, expected) in [
        (
            "SELECT pg_read_file('/etc/passwd') FROM customers",
            not_allowed,
        ),
        (
            "SELECT set_config('statement_timeout', '0', false) FROM customers",
            not_allowed,
        ),
        (
            "SELECT current_setting('data_directory') FROM customers",
            not_allowed,
        ),
        ("SELECT nextval('seq') FROM customers", not_allowed),
        (
            "SELECT lo_import('/etc/passwd') FROM customers",
            not_allowed,
        ),
        (
            "SELECT query_to_xml('select ssn from customers', true, false, '') FROM customers",
            not_allowed,
        ),
        (
            "SELECT table_to_xml('customers', true, false, '') FROM customers",
            not_allowed,
        ),
        ("SELECT pg_sleep(5) FROM customers", not_allowed),
        ("SELECT pg_advisory_lock(1) FROM customers", not_allowed),
        ("SELECT txid_current() FROM customers", not_allowed),
        ("SELECT pg_terminate_backend(1) FROM customers", not_allowed),
        (
            "SELECT upper(id) FROM customers",
            "also defined outside pg_catalog",
        ),
        ("SELECT * INTO stolen FROM customers", "returns no columns"),
        (
            "SELECT name FROM customers FOR UPDATE",
            "writes or locks rows",
        ),
        (
            "WITH d AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM d",
            "data-modifying",
        ),
        ("COPY customers TO STDOUT", "COPY statements are not run"),
        (
            "DO $$BEGIN DELETE FROM orders; END$$",
            "DO statements are not run",
        ),
        (
            "SELECT 1 FROM customers; DELETE FROM orders",
            "multiple commands",
        ),
        ("SELECT name FROM customers WHERE id = $1", "parameters"),
        ("SET statement_timeout = 0", "SET statements are not run"),
        (
            "EXPLAIN ANALYZE SELECT name FROM customers",
            "EXPLAIN statements are not run",
        ),
        (
            "SELECT name FROM customers) AS x, pg_sleep(5) AS y FROM customers --",
            "function pg_sleep is not allowed",
        ),
        (
            "INSERT INTO orders VALUES (9999, 1, 1, 'x')",
            "INSERT statements are not run",
        ),
        (
            "UPDATE orders SET total = 0",
            "UPDATE statements are not run",
        ),
        ("DELETE FROM orders", "DELETE statements are not run"),
        ("TRUNCATE orders", "TRUNCATE statements are not run"),
        ("CALL do_something()", "CALL statements are not run"),
        (
            "CREATE TABLE x AS SELECT * FROM customers",
            "CREATE statements are not run",
        ),
        (
            "GRANT SELECT ON customers TO PUBLIC",
            "GRANT statements are not run",
        ),
        ("LOCK TABLE orders", "LOCK statements are not run"),
        (
            "/* hidden */ VACUUM orders",
            "VACUUM statements are not run",
        ),
        (
            "SELECT name FROM customers WHERE id IN (SELECT customer_id FROM orders FOR UPDATE)",
            "writes or locks rows",
        ),
    ] {
        expect_refusal(s.query(sql, c).await, sql, expected);
    }
    // Nothing changed on the server.
    assert!(s.server.dump("company") == before, "the database changed");
    assert_eq!(s.count("SELECT count(*) FROM orders"), 5000);
    assert_eq!(
        s.count("SELECT count(*) FROM pg_class WHERE relname = 'stolen'"),
        0
    );
    assert_eq!(s.count("SELECT count(*) FROM pg_largeobject_metadata"), 0);
    assert_eq!(
        s.count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
        0
    );
    assert_eq!(s.count("SELECT last_value FROM seq"), 1);
    assert_eq!(s.ran("agentcap_row"), 0);
}

#[tokio::test]
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
async fn time_value_and_result_limits_hold() {
    let s = standing(r#"tables = ["customers"]"#);
    let c = &["customers"][..];
    for (sql, expected) in [
        (
            "SELECT count(*) FROM customers a, customers b, customers c",
            "ran longer than its limit of 2000 ms",
        ),
        // One value of 200 MB: the server refuses the row before sending.
        (
            "SELECT lpad(name, 200000000) FROM customers",
            "a row of the result is larger than the limit of 1024 KiB",
        ),
        // 100 rows of 500 KB: over the 16 MiB result budget.
        (
            "SELECT lpad(name, 500000, '-') FROM customers",
            "larger than the limit of 16 MiB",
        ),
    ] {
        expect_refusal(s.query(sql, c).await, sql, expected);
    }
    // Still usable afterwards.
    assert_eq!(
        s.query("SELECT name FROM customers LIMIT 3", c).await,
        Ok(3)
    );
}

#[tokio::test]
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
async fn the_human_sees_the_tables_and_a_decline_runs_nothing() {
    let s = setup(
        "mode = \"ask\"\ntables = [\"customers\", \"orders\"]",
        "postgres",
        ADMIN_PASSWORD,
        |prompt| {
            if prompt
                .payload
                .as_deref()
                .is_some_and(|p| p.contains("total"))
            {
                Decision::Decline("not the totals".into())
            } else {
                Decision::approve_all(prompt)
            }
        },
    );
    let sql = "SELECT c.name FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.id < 4";
    assert_eq!(s.query(sql, &["customers", "orders"]).await, Ok(3));
    let declined = "SELECT sum(total) FROM orders";
    let err = s.query(declined, &["orders"]).await.unwrap_err();
    assert!(err.contains("not the totals"), "{err}");
    let answered = s.approver.answered();
    assert_eq!(answered.len(), 2);
    let targets: Vec<&str> = answered[0]
        .0
        .items
        .iter()
        .map(|i| i.target.as_str())
        .collect();
    assert_eq!(targets, ["customers", "orders"]);
    assert_eq!(answered[0].0.payload.as_deref(), Some(sql));
    // The approved statement ran once; the declined one never did.
    assert_eq!(s.ran("o.id < 4"), 1);
    assert_eq!(s.ran("sum(total)"), 0);
    // A token for one statement does not run another.
    let err = agentcap_tests::call_tool(
        &s.runtime,
        &s.tool,
        "query-other-sql",
        &json!({"tables": ["customers"], "approved": "SELECT name FROM customers WHERE id = 1",
                "actual": "SELECT name FROM customers WHERE id > 1"}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("refused"), "{err}");
    assert_eq!(s.ran("id > 1"), 0);
}

#[tokio::test]
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
async fn the_servers_own_privileges_and_credentials_apply() {
    // A dedicated role that may read customers(id, name) only: a grant
    // wider than the role is still held by the server.
    let s = setup(
        "mode = \"standing\"\ntables = [\"customers\"]",
        "agent_narrow",
        "narrow-secret",
        Decision::approve_all,
    );
    assert_eq!(
        s.query("SELECT name FROM customers WHERE id < 3", &["customers"])
            .await,
        Ok(2)
    );
    let err = s
        .query("SELECT email FROM customers", &["customers"])
        .await
        .unwrap_err();
    assert!(err.contains("permission denied"), "{err}");
    // A wrong password: a clear error naming the server, never the password.
    let s = setup(
        "mode = \"standing\"\ntables = [\"customers\"]",
        "agent_narrow",
        "wrong-password-1234",
        Decision::approve_all,
    );
    let err = s
        .query("SELECT name FROM customers", &["customers"])
        .await
        .unwrap_err();
    let server = format!("127.0.0.1:{}/company", s.server.port);
    assert!(err.contains(&server), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("wrong-password-1234"), "{err}");
    assert!(!agentcap_tests::refusal_records(&s.runtime).is_empty());
}

#[tokio::test]
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
async fn tls_is_verified_against_the_given_ca_or_the_system_roots() {
    let server = Postgres::start_with_tls(true);
    server.execute(
        "postgres",
        "CREATE TABLE customers (id int, name text); INSERT INTO customers VALUES (1, 'a');",
    );
    let ws = Workspace::new();
    std::fs::write(ws.dir.path().join("pg-password"), ADMIN_PASSWORD).unwrap();
    std::fs::copy(server.ca_file(), ws.dir.path().join("ca.pem")).unwrap();
    let load = |tls: &str| {
        let policy = agentcap_tests::hostile_data_policy(
            &format!(
                "[data.postgres]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"postgres\"\n\
                 user = \"postgres\"\npassword_file = \"pg-password\"\n{tls}",
                server.port
            ),
            "mode = \"standing\"\ntables = [\"customers\"]",
        );
        let approver = Arc::new(ScriptedApprover::new("test-user", Decision::approve_all));
        agentcap_tests::load_hostile_data(&ws, &policy, approver)
    };
    let args = json!({"sql": "SELECT name FROM customers", "tables": ["customers"]});
    // A superuser role is refused unless the operator allows it.
    let (runtime, tool) = load("tls = true\nca_file = \"ca.pem\"");
    let err = agentcap_tests::call_tool(&runtime, &tool, "query", &args)
        .await
        .unwrap_err();
    assert!(err.contains("its role is a superuser, refused"), "{err}");
    drop((runtime, tool));
    // Verified against the test CA: runs, over TLS.
    let (runtime, tool) = load("tls = true\nca_file = \"ca.pem\"\nallow_superuser = true");
    assert_eq!(
        agentcap_tests::call_tool(&runtime, &tool, "query", &args).await,
        Ok(json!(1))
    );
    let over_tls = server.value(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.application_name = 'agentcap'",
    );
    assert_eq!(over_tls, 1);
    drop((runtime, tool));
    // The default, the system's roots, does not know the test CA: refused.
    let (runtime, tool) = load("allow_superuser = true");
    let err = agentcap_tests::call_tool(&runtime, &tool, "query", &args)
        .await
        .unwrap_err();
    let server_name = format!("127.0.0.1:{}/postgres", server.port);
    assert!(err.contains(&server_name), "{err}");
    assert!(err.contains("certificate"), "{err}");
}

/// The port of the server whose view the approver below redefines.
static REDEFINE_ON: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

#[tokio::test]
#[cfg_attr(
    not(agentcap_has_postgres),
    ignore = "PostgreSQL is not installed: apt-get install postgresql"
)]
async fn a_view_redefined_while_the_human_decides_reads_nothing_more() {
    // The human approves a query of v_contacts (it reads customers); while
    // they decide, the view is made to read secrets, which the grant holds
    // but the token does not cover. The plan is checked again when the
    // statement runs: refused, and the statement never runs.
    let s = setup(
        "mode = \"ask\"\ntables = [\"customers\", \"secrets\"]",
        "postgres",
        ADMIN_PASSWORD,
        |prompt| {
            let port = REDEFINE_ON.load(std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut admin = postgres::Config::new()
                    .host("127.0.0.1")
                    .port(port)
                    .dbname("company")
                    .user("postgres")
                    .password(ADMIN_PASSWORD)
                    .connect(postgres::NoTls)
                    .unwrap();
                admin
                    .batch_execute(
                        "CREATE OR REPLACE VIEW v_contacts AS SELECT secret AS name, secret AS email FROM secrets",
                    )
                    .unwrap();
            })
            .join()
            .unwrap();
            Decision::approve_all(prompt)
        },
    );
    REDEFINE_ON.store(s.server.port, std::sync::atomic::Ordering::SeqCst);
    let sql = "SELECT name, email FROM v_contacts WHERE name IS NOT NULL";
    let err = s.query(sql, &["customers"]).await.unwrap_err();
    assert!(err.contains("secrets"), "{err}");
    assert!(!err.contains("topsecret"), "{err}");
    assert_eq!(s.approver.answered().len(), 1);
    assert_eq!(s.ran("name IS NOT NULL"), 0);
}
