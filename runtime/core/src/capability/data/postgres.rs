//! `data.query` over a PostgreSQL server.
//!
//! PostgreSQL itself says what a statement reads: the host asks for the
//! plan (`EXPLAIN (VERBOSE, FORMAT JSON)`, views already expanded) and takes
//! from it every base relation scanned, every column referenced (VERBOSE
//! prints each one qualified by its relation's alias, `c.ssn`; `c.*` is the
//! whole row) and every function called. Relations and columns must be in
//! the grant; functions must be on [`ALLOWED_FUNCTIONS`] and not marked
//! VOLATILE by the server. A plan that writes or locks rows is refused.
//!
//! What is checked is what runs: the host wraps the statement,
//! `SELECT * FROM (SELECT <columns as basic types> FROM (<sql>) AS
//! agentcap_result(c1, ...)) AS agentcap_row WHERE <the row is at most
//! MAX_ROW_LEN bytes, else an error>`, and explains, checks and runs that, in
//! a `READ ONLY` transaction with `statement_timeout`, always rolled back.
//! The server refuses any row over the size limit before sending it, and
//! rows are fetched through a portal in batches that fit the result budget:
//! no statement can make the host buffer more than a bounded amount. (The
//! wrapper also gives every column a relation prefix in the plan; a plan over
//! one table otherwise prints its columns bare.)
//!
//! The client is the synchronous `postgres` crate on a thread of its own
//! per call (host functions run inside the async runtime, where it cannot
//! block); one connection is kept and reused.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use serde::Deserialize;
use serde_json::Value as Json;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Transaction};

use super::pg_sql;
use super::{DataError, Limits, Rows, Scope, Value, value_cost};
use crate::policy::Policy;

/// The policy's `[data] postgres = { ... }` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Database name.
    pub dbname: String,
    /// Login role. Best a dedicated one with `SELECT` on the granted tables
    /// only: the server then enforces the grant a second time.
    pub user: String,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (relative to the policy).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS: `true` requires it (verified against the platform's roots, or
    /// `ca_file`); `false` connects in the clear (loopback only, say).
    #[serde(default = "default_tls")]
    pub tls: bool,
    /// PEM file with the CA that signed the server's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Connect even when `user` is a superuser (refused by default: a
    /// superuser's session can read files and every table, should any
    /// check be missed).
    #[serde(default)]
    pub allow_superuser: bool,
    /// Seconds to wait for a connection.
    #[serde(
        default = "default_connect_timeout_secs",
        deserialize_with = "crate::policy::within::<_, _, 1, 300>"
    )]
    pub connect_timeout_secs: u64,
}

fn default_port() -> u16 {
    5432
}

fn default_tls() -> bool {
    true
}

fn default_connect_timeout_secs() -> u64 {
    10
}

/// Functions a query may call (with the SQL-syntax forms the server prints
/// for `COALESCE`, `EXTRACT`, ...): computations on values, none that reads
/// tables, files, settings or catalog text, or acts on the server. Each must
/// also not be VOLATILE in the server's own catalog.
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    // aggregates and window functions
    "avg",
    "count",
    "max",
    "min",
    "sum",
    "string_agg",
    "array_agg",
    "bool_and",
    "bool_or",
    "every",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    // SQL-syntax forms
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "extract",
    "substring",
    "position",
    "trim",
    "overlay",
    "row",
    "exists",
    // strings
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "lower",
    "upper",
    "initcap",
    "left",
    "right",
    "substr",
    "strpos",
    "replace",
    "translate",
    "concat",
    "concat_ws",
    "format",
    "lpad",
    "rpad",
    "repeat",
    "btrim",
    "ltrim",
    "rtrim",
    "split_part",
    "starts_with",
    "md5",
    "to_char",
    "to_number",
    "to_date",
    "to_timestamp",
    "regexp_replace",
    "regexp_match",
    "regexp_like",
    "like_escape",
    // numbers
    "abs",
    "ceil",
    "ceiling",
    "floor",
    "round",
    "trunc",
    "sign",
    "mod",
    "power",
    "sqrt",
    "exp",
    "ln",
    "log",
    "log10",
    "div",
    "width_bucket",
    // dates and times
    "date_trunc",
    "date_part",
    "age",
    "make_date",
    "make_interval",
    "make_timestamp",
    "justify_days",
    "justify_hours",
    "timezone",
    "now",
    "current_date",
    "current_timestamp",
    // json
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "json_extract_path_text",
    "jsonb_extract_path_text",
    "jsonb_typeof",
    "json_typeof",
    "jsonb_array_length",
    "json_array_length",
    "row_to_json",
    "to_json",
    "to_jsonb",
    // arrays
    "array_length",
    "cardinality",
    "array_to_string",
    "unnest",
];

/// Largest row a PostgreSQL result may hold, checked by the server.
pub const MAX_ROW_LEN: usize = 1 << 20;

/// Largest message the host accepts from the server (a row, a plan, an
/// error): larger ones close the connection unread. A plan can be made large
/// on purpose (the planner folds `lpad('x', 500000000)` into a constant).
pub const MAX_MESSAGE_LEN: usize = 4 << 20;

/// The text of the wrapper's error for a row over [`MAX_ROW_LEN`].
const ROW_GUARD: &str = "agentcap: a row is larger than";

/// Functions of the host's own wrapper.
const WRAPPER_FUNCTIONS: &[&str] = &["pg_column_size"];

/// Plan nodes under which a table scan prints all of its columns whether
/// they are used or not; the parent's own expressions name the used ones.
const PROJECTING_PARENTS: &[&str] = &[
    "Nested Loop",
    "Hash Join",
    "Merge Join",
    "Aggregate",
    "Group",
    "WindowAgg",
    "Result",
    "ProjectSet",
];

/// Keys of plan nodes whose values are names or settings, not expressions.
const PLAN_NAME_KEYS: &[&str] = &[
    "Node Type",
    "Relation Name",
    "Schema",
    "Alias",
    "Index Name",
    "Parent Relationship",
    "Subplan Name",
    "CTE Name",
    "Strategy",
    "Join Type",
    "Partial Mode",
    "Scan Direction",
    "Operation",
    "Command",
    "Sort Method",
    "Sort Space Type",
];

/// A PostgreSQL database for `data.query`.
pub struct PostgresSource {
    config: tokio_postgres::Config,
    host: String,
    port: u16,
    connect_timeout: Duration,
    allow_superuser: bool,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    limits: Limits,
    /// `host:port/dbname`, for messages.
    server: String,
    /// The kept connection and the runtime that drives it.
    session: Mutex<Option<Session>>,
    /// Recent answers of [`PostgresSource::tables_read`] by statement text.
    recent_reads: Mutex<Vec<RecentReads>>,
}

/// The tables a statement read when its plan was last checked.
struct RecentReads {
    sql: String,
    tables: Vec<String>,
    at: std::time::Instant,
}

/// How long [`PostgresSource::tables_read`] reuses a plan's answer: long
/// enough for the consent request and the call that follows it. The answer
/// only names the call's targets; the statement's plan is checked again
/// when it runs, against the tables the token covers.
const RECENT_READS_FOR: Duration = Duration::from_secs(10);
/// Most statements remembered.
const RECENT_READS_MAX: usize = 32;

/// A connection and its own single-threaded runtime (the host's calls are
/// synchronous and run inside the host's runtime, where nothing can block
/// on another: each call runs this one on a thread of its own).
struct Session {
    runtime: tokio::runtime::Runtime,
    client: Client,
    /// Why the connection ended, when it ended with an error (the client
    /// itself only reports "connection closed").
    ended: Arc<Mutex<Option<String>>>,
}

/// Drive `connection`, keeping the error it ends with.
fn drive<F>(connection: F, ended: &Arc<Mutex<Option<String>>>)
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    let ended = ended.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            *ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(describe_error(&e));
        }
    });
}

impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSource")
            .field("server", &self.server)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A statement checked and ready to run.
struct Checked {
    /// The host's wrapper, prepared.
    statement: tokio_postgres::Statement,
    /// The tool's column names.
    columns: Vec<String>,
    /// What the wrapper's plan reads.
    reads: PlanReads,
}

impl Drop for PostgresSource {
    fn drop(&mut self) {
        // A runtime cannot be dropped inside another: on a thread of its own.
        if let Some(session) = self.session.get_mut().ok().and_then(Option::take) {
            std::thread::scope(|scope| {
                scope.spawn(move || drop(session));
            });
        }
    }
}

/// What the plan of a statement reads.
#[derive(Debug, Default)]
struct PlanReads {
    /// Relation target names (`name`, or `schema.name` outside `public`).
    tables: BTreeSet<String>,
    /// The same relations as `(schema, name)`.
    relations: BTreeSet<(String, String)>,
    /// `(relation, column)`; column `*` is the whole row.
    columns: BTreeSet<(String, String)>,
    /// Functions called, lowercase, with their schema when qualified.
    functions: BTreeSet<(Option<String>, String)>,
    /// Indexes the plan uses (a partial one stands for its predicate).
    indexes: BTreeSet<String>,
}

impl PostgresSource {
    /// A source for the server in `settings`; the password is read now,
    /// the connection is made on first use.
    pub fn new(
        settings: &PostgresSettings,
        policy: &Policy,
        limits: Limits,
    ) -> Result<PostgresSource, DataError> {
        let server = format!("{}:{}/{}", settings.host, settings.port, settings.dbname);
        let mut config = tokio_postgres::Config::new();
        config
            .dbname(&settings.dbname)
            .user(&settings.user)
            .application_name("agentcap");
        let password = match (&settings.password_env, &settings.password_file) {
            (Some(var), None) => Some(std::env::var(var).map_err(|_| {
                DataError::Backend(format!(
                    "the password for {server}: variable {var} is not set"
                ))
            })?),
            (None, Some(file)) => Some(
                std::fs::read_to_string(policy.resolve(file))
                    .map_err(|e| {
                        DataError::Backend(format!(
                            "the password for {server}: cannot read {}: {e}",
                            file.display()
                        ))
                    })?
                    .trim_end()
                    .to_string(),
            ),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(DataError::Invalid(format!(
                    "[data] postgres for {server}: give password_env or password_file, not both"
                )));
            }
        };
        if let Some(password) = password {
            config.password(password);
        }
        let tls = if settings.tls {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            Some(tls_connector(
                settings.ca_file.as_ref().map(|f| policy.resolve(f)),
                &server,
            )?)
        } else {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            None
        };
        Ok(PostgresSource {
            config,
            host: settings.host.clone(),
            port: settings.port,
            connect_timeout: Duration::from_secs(settings.connect_timeout_secs),
            allow_superuser: settings.allow_superuser,
            tls,
            limits,
            server,
            session: Mutex::new(None),
            recent_reads: Mutex::new(Vec::new()),
        })
    }

    /// Run `work` with the kept connection (made, or remade once when it
    /// broke), on a thread of its own.
    fn with_client<T: Send>(
        &self,
        work: impl AsyncFn(&mut Client) -> Result<T, DataError> + Sync,
    ) -> Result<T, DataError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut kept = self.session.lock().unwrap_or_else(|p| p.into_inner());
                    for attempt in 0..2 {
                        if kept.as_ref().is_none_or(|s| s.client.is_closed()) {
                            *kept = Some(self.connect()?);
                        }
                        let session = kept.as_mut().expect("connected above");
                        let mut result = session.runtime.block_on(work(&mut session.client));
                        if session.client.is_closed() {
                            let ended = session.ended.lock().ok().and_then(|mut e| e.take());
                            if let (Err(_), Some(why)) = (&result, ended)
                                && why.contains(FRAME_GUARD)
                            {
                                result = Err(DataError::Refused(format!(
                                    "refused: {why} (a result row or the query's plan too large)"
                                )));
                            }
                            *kept = None;
                            // Retry once on a connection found broken, not
                            // after a refusal (a message over the limit).
                            if attempt == 0 && matches!(result, Err(DataError::Backend(_))) {
                                continue;
                            }
                        }
                        return result;
                    }
                    unreachable!("the second attempt returns")
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(DataError::Backend(format!(
                        "the query on {} failed inside the host",
                        self.server
                    )))
                })
        })
    }

    fn connect(&self) -> Result<Session, DataError> {
        let failed = |why: String| {
            DataError::Backend(format!(
                "cannot connect to PostgreSQL at {}: {why}",
                self.server
            ))
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(format!("start its runtime: {e}")))?;
        let ended = Arc::new(Mutex::new(None));
        let client = runtime.block_on(async {
            let tcp = tokio::time::timeout(
                self.connect_timeout,
                tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
            )
            .await
            .map_err(|_| {
                failed(format!(
                    "no connection within {} s",
                    self.connect_timeout.as_secs()
                ))
            })?
            .map_err(|e| failed(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let handshake = async {
                match &self.tls {
                    Some(tls) => {
                        let mut tls = tls.clone();
                        let connector = tokio_postgres::tls::MakeTlsConnect::<
                                tokio::net::TcpStream,
                            >::make_tls_connect(
                                &mut tls, &self.host
                            )
                            .map_err(|e| failed(format!("TLS: {e}")))?;
                        let (client, connection) = self
                            .config
                            .connect_raw(tcp, GuardedTls(connector))
                            .await
                            .map_err(|e| failed(describe_error(&e)))?;
                        drive(connection, &ended);
                        Ok(client)
                    }
                    None => {
                        let (client, connection) = self
                            .config
                            .connect_raw(FrameGuard::new(tcp), NoTls)
                            .await
                            .map_err(|e| failed(describe_error(&e)))?;
                        drive(connection, &ended);
                        Ok(client)
                    }
                }
            };
            tokio::time::timeout(self.connect_timeout, handshake)
                .await
                .map_err(|_| {
                    failed(format!(
                        "no answer within {} s",
                        self.connect_timeout.as_secs()
                    ))
                })?
        })?;
        if !self.allow_superuser {
            let superuser: bool = runtime
                .block_on(client.query_one(
                    "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
                    &[],
                ))
                .and_then(|row| row.try_get(0))
                .map_err(|e| failed(describe_error(&e)))?;
            if superuser {
                return Err(failed(
                    "its role is a superuser, refused: use a role that may only SELECT the granted tables (or set allow_superuser = true)".into(),
                ));
            }
        }
        Ok(Session {
            runtime,
            client,
            ended,
        })
    }

    /// The tables `sql` reads, from the server's plan (checked in full;
    /// the answer is reused for the same text for a few seconds, since a
    /// consent request and its call both ask).
    pub fn tables_read(&self, sql: &str) -> Result<Vec<String>, DataError> {
        let sql = strip_end(sql);
        {
            let mut recent = self.recent_reads.lock().unwrap_or_else(|p| p.into_inner());
            recent.retain(|r| r.at.elapsed() < RECENT_READS_FOR);
            if let Some(hit) = recent.iter().find(|r| r.sql == sql) {
                return Ok(hit.tables.clone());
            }
        }
        let tables: Vec<String> = self.with_client(async |client| {
            let tx = self.begin(client).await?;
            let checked = self.check(&tx, sql).await?;
            Ok(checked.reads.tables.into_iter().collect())
        })?;
        let mut recent = self.recent_reads.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= RECENT_READS_MAX {
            recent.remove(0);
        }
        recent.push(RecentReads {
            sql: sql.to_string(),
            tables: tables.clone(),
            at: std::time::Instant::now(),
        });
        Ok(tables)
    }

    /// Run `sql` within `scope`.
    pub fn query(&self, sql: &str, scope: Scope) -> Result<Rows, DataError> {
        let sql = strip_end(sql);
        let limits = self.limits;
        self.with_client(async |client| {
            let tx = self.begin(client).await?;
            let checked = self.check(&tx, sql).await?;
            check_scope(&checked.reads, &scope)?;
            let portal = tx
                .bind(&checked.statement, &[])
                .await
                .map_err(|e| self.error(e))?;
            let types: Vec<Type> = checked
                .statement
                .columns()
                .iter()
                .map(|c| c.type_().clone())
                .collect();
            let mut rows = Vec::new();
            let mut result_bytes = 0usize;
            let mut truncated = false;
            'fetch: loop {
                // No more rows at once than the budget left could hold at
                // their largest, and one past the row limit.
                let room = (limits.max_result_bytes.saturating_sub(result_bytes) / MAX_ROW_LEN)
                    .clamp(1, 1000)
                    .min(limits.max_rows + 1 - rows.len());
                let batch = tx
                    .query_portal(&portal, i32::try_from(room).unwrap_or(1000))
                    .await
                    .map_err(|e| self.error(e))?;
                let exhausted = batch.len() < room;
                for row in &batch {
                    if rows.len() == limits.max_rows {
                        truncated = true;
                        break 'fetch;
                    }
                    let mut values = Vec::with_capacity(types.len());
                    for (i, ty) in types.iter().enumerate() {
                        let value = read_value(row, i, ty).map_err(|e| {
                            DataError::Backend(format!(
                                "column {}: {e}",
                                crate::render::one_line(&checked.columns[i], 64)
                            ))
                        })?;
                        result_bytes += value_cost(match &value {
                            Value::Text(t) => Some(t.len()),
                            Value::Blob(b) => Some(b.len()),
                            _ => None,
                        });
                        values.push(value);
                    }
                    if result_bytes > limits.max_result_bytes {
                        return Err(limits.result_too_large());
                    }
                    rows.push(values);
                }
                if exhausted {
                    break;
                }
            }
            drop(tx);
            Ok(Rows {
                columns: checked.columns,
                rows,
                truncated,
            })
        })
    }

    /// A read-only transaction bounded in time; dropped, it rolls back.
    async fn begin<'c>(&self, client: &'c mut Client) -> Result<Transaction<'c>, DataError> {
        let tx = client
            .build_transaction()
            .read_only(true)
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .map_err(|e| self.error(e))?;
        self.limit_transaction(&tx).await?;
        Ok(tx)
    }

    /// Prepare `sql`, wrap it, and check the wrapper's plan: what it reads,
    /// and that it neither writes nor calls a function outside the list.
    async fn check(&self, tx: &Transaction<'_>, sql: &str) -> Result<Checked, DataError> {
        let tokens = pg_sql::lex(sql)?;
        let first_word = pg_sql::first_keyword(&tokens);
        if !matches!(
            first_word.as_str(),
            "select" | "with" | "values" | "table" | "("
        ) {
            return Err(DataError::Refused(format!(
                "{} statements are not run: queries are read-only (SELECT, WITH, VALUES, TABLE)",
                crate::render::one_line(&first_word.to_uppercase(), 32)
            )));
        }
        // The planner runs STABLE functions with constant arguments while
        // it plans: every call is held to the list before anything is sent.
        for (schema, name) in pg_sql::calls(&tokens) {
            listed(schema.as_deref(), &name)?;
        }
        if let Some(word) = pg_sql::refused_word(&tokens) {
            return Err(DataError::Refused(format!(
                "{} is not allowed in queries (it reads the server's state or catalog)",
                word.to_uppercase()
            )));
        }
        // The extended protocol: one statement, parsed, not run.
        let statement = tx.prepare(sql).await.map_err(|e| self.plan_error(e))?;
        if !statement.params().is_empty() {
            return Err(DataError::Refused(
                "query parameters ($1, ...) are refused: the human approves the exact SQL, so write the values into it".into(),
            ));
        }
        let columns: Vec<(String, Type)> = statement
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().clone()))
            .collect();
        if columns.is_empty() {
            return Err(DataError::Refused(
                "the statement returns no columns; only queries are run".into(),
            ));
        }
        let wrapped = wrap(sql, &columns);
        let reads = self.plan_reads(tx, &wrapped).await?;
        self.check_functions(tx, &reads).await?;
        if reads.tables.is_empty() {
            return Err(DataError::Invalid(
                "the query reads no table; only queries over granted tables are run".into(),
            ));
        }
        let statement = tx.prepare(&wrapped).await.map_err(|e| self.plan_error(e))?;
        Ok(Checked {
            statement,
            columns: columns.into_iter().map(|(name, _)| name).collect(),
            reads,
        })
    }

    /// Bound the transaction's time on the server.
    async fn limit_transaction(&self, tx: &Transaction<'_>) -> Result<(), DataError> {
        let ms = self.limits.timeout.as_millis().max(1);
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}; \
             SET LOCAL idle_in_transaction_session_timeout = {}; \
             SET LOCAL standard_conforming_strings = on",
            ms.saturating_mul(4).max(1000)
        ))
        .await
        .map_err(|e| self.error(e))
    }

    /// The relations, columns and functions in the plan of `sql`.
    async fn plan_reads(&self, tx: &Transaction<'_>, sql: &str) -> Result<PlanReads, DataError> {
        let explained = tx
            .query_one(&format!("EXPLAIN (VERBOSE, FORMAT JSON) {sql}"), &[])
            .await
            .map_err(|e| self.plan_error(e))?;
        let plan: Json = explained
            .try_get::<_, tokio_postgres::types::Json<Json>>(0)
            .map(|j| j.0)
            .map_err(|e| DataError::Backend(format!("read the plan: {e}")))?;
        let mut reads = PlanReads::default();
        let mut aliases: HashMap<String, String> = HashMap::new();
        let mut expressions = Vec::new();
        walk_plan(&plan, None, &mut reads, &mut aliases, &mut expressions)?;
        self.index_predicates(tx, &mut reads).await?;
        self.map_partitions(tx, &mut reads, &mut aliases).await?;
        for text in &expressions {
            scan_expression(text, &aliases, &mut reads)?;
        }
        Ok(reads)
    }

    /// Every function called must be allowed and not VOLATILE.
    async fn check_functions(
        &self,
        tx: &Transaction<'_>,
        reads: &PlanReads,
    ) -> Result<(), DataError> {
        for (schema, name) in &reads.functions {
            let shown = crate::render::one_line(name, 64);
            if !WRAPPER_FUNCTIONS.contains(&name.as_str()) {
                listed(schema.as_deref(), name)?;
            }
            // The server's own catalog: a VOLATILE function may act, and a
            // same-named one outside pg_catalog may be the one that runs.
            let (volatile, elsewhere): (bool, bool) = tx
                .query_one(
                    "SELECT coalesce(bool_or(p.provolatile = 'v' AND n.nspname = 'pg_catalog'), false), \
                            coalesce(bool_or(n.nspname <> 'pg_catalog'), false) \
                     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                     WHERE p.proname = $1",
                    &[name],
                )
                .await
                .and_then(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .map_err(|e| self.error(e))?;
            if volatile {
                return Err(DataError::Refused(format!(
                    "function {shown} is VOLATILE on this server and not allowed in queries"
                )));
            }
            if elsewhere {
                return Err(DataError::Refused(format!(
                    "function {shown} is also defined outside pg_catalog on this server, so which one runs cannot be established"
                )));
            }
        }
        Ok(())
    }

    /// A partial index used by the plan stands for its predicate: the
    /// planner drops a condition the index implies (`WHERE ssn LIKE ...`
    /// under an index `WHERE ssn LIKE ...`), so its columns count as read.
    async fn index_predicates(
        &self,
        tx: &Transaction<'_>,
        reads: &mut PlanReads,
    ) -> Result<(), DataError> {
        for index in &reads.indexes.clone() {
            let rows = tx
                .query(
                    "SELECT n.nspname::text, t.relname::text, \
                            pg_catalog.pg_get_expr(i.indpred, i.indrelid), \
                            ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a \
                                  WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped) \
                     FROM pg_catalog.pg_class ic \
                     JOIN pg_catalog.pg_index i ON i.indexrelid = ic.oid \
                     JOIN pg_catalog.pg_class t ON t.oid = i.indrelid \
                     JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
                     WHERE ic.relname = $1 AND i.indpred IS NOT NULL",
                    &[index],
                )
                .await
                .map_err(|e| self.error(e))?;
            for row in rows {
                let (schema, table, predicate, columns): (String, String, String, Vec<String>) = (
                    row.try_get(0).map_err(|e| self.error(e))?,
                    row.try_get(1).map_err(|e| self.error(e))?,
                    row.try_get(2).map_err(|e| self.error(e))?,
                    row.try_get(3).map_err(|e| self.error(e))?,
                );
                let target = relation_target(&schema, &table);
                for token in pg_sql::lex(&predicate)? {
                    let named = match token {
                        pg_sql::Lexeme::Word(w) | pg_sql::Lexeme::Quoted(w) => w,
                        _ => continue,
                    };
                    if columns.contains(&named) {
                        reads.columns.insert((target.clone(), named));
                    }
                }
                reads.relations.insert((schema, table));
                reads.tables.insert(target);
            }
        }
        Ok(())
    }

    /// A partition reads as its partitioned table: the grant names that.
    /// Which partition a row is in tells its partition key, so the key's
    /// columns (of every level) count as read.
    async fn map_partitions(
        &self,
        tx: &Transaction<'_>,
        reads: &mut PlanReads,
        aliases: &mut HashMap<String, String>,
    ) -> Result<(), DataError> {
        let mut renamed = HashMap::new();
        for (schema, name) in reads.relations.clone() {
            let root: Option<(String, String)> = tx
                .query_opt(
                    "SELECT rn.nspname::text, r.relname::text \
                     FROM pg_catalog.pg_class c \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     JOIN pg_catalog.pg_class r ON r.oid = pg_catalog.pg_partition_root(c.oid) \
                     JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = $2 AND r.oid <> c.oid",
                    &[&schema, &name],
                )
                .await
                .map_err(|e| self.error(e))?
                .map(|r| Ok::<_, tokio_postgres::Error>((r.try_get(0)?, r.try_get(1)?)))
                .transpose()
                .map_err(|e| self.error(e))?;
            if let Some((root_schema, root_name)) = root {
                let root = relation_target(&root_schema, &root_name);
                let keys = tx
                    .query_one(
                        "SELECT ARRAY(SELECT a.attname::text \
                                FROM pg_catalog.pg_partitioned_table p \
                                CROSS JOIN LATERAL unnest(p.partattrs::int2[]) AS k(attnum) \
                                JOIN pg_catalog.pg_attribute a \
                                  ON a.attrelid = p.partrelid AND a.attnum = k.attnum \
                                WHERE p.partrelid IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(c.oid))), \
                                EXISTS (SELECT 1 FROM pg_catalog.pg_partitioned_table p \
                                WHERE p.partrelid IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(c.oid)) \
                                  AND p.partexprs IS NOT NULL) \
                         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = $1 AND c.relname = $2",
                        &[&schema, &name],
                    )
                    .await
                    .map_err(|e| self.error(e))?;
                let (columns, expressions): (Vec<String>, bool) = (
                    keys.try_get(0).map_err(|e| self.error(e))?,
                    keys.try_get(1).map_err(|e| self.error(e))?,
                );
                for column in columns {
                    reads.columns.insert((root.clone(), column));
                }
                if expressions {
                    reads.columns.insert((root.clone(), "*".into()));
                }
                renamed.insert(relation_target(&schema, &name), root);
            }
        }
        if renamed.is_empty() {
            return Ok(());
        }
        let rename = |t: &String| renamed.get(t).cloned().unwrap_or_else(|| t.clone());
        reads.tables = reads.tables.iter().map(rename).collect();
        reads.columns = reads
            .columns
            .iter()
            .map(|(t, c)| (rename(t), c.clone()))
            .collect();
        for target in aliases.values_mut() {
            *target = rename(target);
        }
        Ok(())
    }

    /// An error from preparing or planning the tool's statement. The planner
    /// evaluates constant parts of a query, so its messages could carry
    /// data: only those about the statement's own text (syntax, names,
    /// types, privileges: class 42; unsupported forms: class 0A) are passed
    /// on.
    fn plan_error(&self, e: tokio_postgres::Error) -> DataError {
        match e.code() {
            Some(c)
                if c.code().starts_with("42")
                    || c.code().starts_with("0A")
                    || c.code() == "57014" =>
            {
                self.error(e)
            }
            Some(c) => DataError::Invalid(format!(
                "the server could not plan the query (SQLSTATE {}); its message is withheld, since planning evaluates constant parts of a query",
                c.code()
            )),
            None => self.error(e),
        }
    }

    /// A server error as a typed refusal or failure, naming the server.
    fn error(&self, e: tokio_postgres::Error) -> DataError {
        use tokio_postgres::error::SqlState;
        match e.code() {
            Some(c) if *c == SqlState::QUERY_CANCELED => self.limits.too_slow(),
            Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => DataError::Refused(format!(
                "refused by the server, queries are read-only: {}",
                describe_error(&e)
            )),
            Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => DataError::Refused(format!(
                "refused by the server's own privileges: {}",
                describe_error(&e)
            )),
            Some(c)
                if *c == SqlState::INVALID_TEXT_REPRESENTATION
                    && describe_error(&e).contains(ROW_GUARD) =>
            {
                DataError::Refused(format!(
                    "a row of the result is larger than the limit of {} KiB",
                    MAX_ROW_LEN >> 10
                ))
            }
            Some(c) if c.code().starts_with("42") || c.code().starts_with("22") => {
                DataError::Invalid(format!(
                    "the query does not compile: {}",
                    describe_error(&e)
                ))
            }
            _ => DataError::Backend(format!(
                "PostgreSQL at {}: {}",
                self.server,
                describe_error(&e)
            )),
        }
    }
}

/// A call to `name` (in `schema`, when qualified) is on the list.
fn listed(schema: Option<&str>, name: &str) -> Result<(), DataError> {
    if schema.is_some_and(|s| s != "pg_catalog") || !ALLOWED_FUNCTIONS.contains(&name) {
        let shown = match schema {
            Some(s) => format!("{s}.{name}"),
            None => name.to_string(),
        };
        return Err(DataError::Refused(format!(
            "function {} is not allowed in queries",
            crate::render::one_line(&shown, 64)
        )));
    }
    Ok(())
}

/// The guard's error text, recognised in [`PostgresSource::error`].
const FRAME_GUARD: &str = "a message from the server is larger than";

/// A stream from the server that fails as soon as a message's header
/// announces more than [`MAX_MESSAGE_LEN`] bytes, before the client buffers
/// it. (Backend messages are a type byte, a 4-byte big-endian length that
/// counts itself, and the body.)
struct FrameGuard<S> {
    inner: S,
    /// Header bytes seen of the current message.
    header: [u8; 5],
    header_len: usize,
    /// Body bytes of the current message still to come.
    body_left: usize,
}

impl<S> FrameGuard<S> {
    fn new(inner: S) -> FrameGuard<S> {
        FrameGuard {
            inner,
            header: [0; 5],
            header_len: 0,
            body_left: 0,
        }
    }

    /// Follow the framing over `bytes` just read.
    fn track(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(bytes.len());
                self.body_left -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (5 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            bytes = &bytes[take..];
            if self.header_len == 5 {
                self.header_len = 0;
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                if len > MAX_MESSAGE_LEN {
                    return Err(std::io::Error::other(format!(
                        "{FRAME_GUARD} {} KiB ({len} bytes), so the connection was closed unread",
                        MAX_MESSAGE_LEN >> 10
                    )));
                }
                self.body_left = len.saturating_sub(4);
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = buf.filled()[before..].to_vec();
                Poll::Ready(self.track(&fresh))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tokio_postgres::tls::TlsStream + Unpin> tokio_postgres::tls::TlsStream for FrameGuard<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        self.inner.channel_binding()
    }
}

/// A TLS connector whose decrypted stream is held by a [`FrameGuard`].
struct GuardedTls<T>(T);

impl<S, T> tokio_postgres::tls::TlsConnect<S> for GuardedTls<T>
where
    T: tokio_postgres::tls::TlsConnect<S>,
    T::Future: Send + 'static,
{
    type Stream = FrameGuard<T::Stream>;
    type Error = T::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, T::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let handshake = self.0.connect(stream);
        Box::pin(async move { handshake.await.map(FrameGuard::new) })
    }
}

/// The message of a client or server error, one line.
fn describe_error(e: &tokio_postgres::Error) -> String {
    let text = match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    };
    crate::render::one_line(&text, 512)
}

/// A rustls connector with the platform's roots, or only `ca_file`'s.
fn tls_connector(
    ca_file: Option<PathBuf>,
    server: &str,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, DataError> {
    let config = crate::capability::tls::client_config(ca_file.as_deref())
        .map_err(|e| DataError::Backend(format!("TLS for {server}: {e}")))?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `sql` without trailing semicolons and white space.
fn strip_end(sql: &str) -> &str {
    sql.trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

/// Whether the client reads values of type `ty` as they are (numbers,
/// booleans, bytea); any other type is sent as text.
fn read_as_is(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::BOOL
            | Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::OID
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::BYTEA
            | Type::TEXT
            | Type::VARCHAR
    )
}

/// The host's wrapper: the statement as a subquery, its columns as basic
/// types, each row checked by the server against [`MAX_ROW_LEN`] (in the
/// size it is sent at) before it is sent.
fn wrap(sql: &str, columns: &[(String, Type)]) -> String {
    let names: Vec<String> = (1..=columns.len()).map(|i| format!("c{i}")).collect();
    let select: Vec<String> = columns
        .iter()
        .zip(&names)
        .map(|((_, ty), name)| {
            if read_as_is(ty) {
                format!("agentcap_result.{name}")
            } else {
                format!("agentcap_result.{name}::text AS {name}")
            }
        })
        .collect();
    // The newline ends a trailing `--` comment inside the statement.
    format!(
        "SELECT * FROM (SELECT {} FROM (\n{sql}\n) AS agentcap_result({})) AS agentcap_row \
         WHERE CASE WHEN pg_column_size(agentcap_row.*) > {MAX_ROW_LEN} \
         THEN ('{ROW_GUARD} {MAX_ROW_LEN} bytes: ' || pg_column_size(agentcap_row.*))::integer = 0 \
         ELSE true END",
        select.join(", "),
        names.join(", ")
    )
}

/// One value of a wrapped row.
fn read_value(
    row: &tokio_postgres::Row,
    i: usize,
    ty: &Type,
) -> Result<Value, tokio_postgres::Error> {
    Ok(match *ty {
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, |b| Value::Integer(b.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map_or(Value::Null, |n| Value::Integer(n.into())),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map_or(Value::Null, |n| Value::Integer(n.into())),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Integer),
        Type::OID => row
            .try_get::<_, Option<u32>>(i)?
            .map_or(Value::Null, |n| Value::Integer(n.into())),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)?
            .map_or(Value::Null, |f| Value::Real(f.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)?
            .map_or(Value::Null, Value::Real),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Value::Null, Value::Blob),
        _ => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::Text),
    })
}

/// Relation target name: `name` in `public`, else `schema.name`.
fn relation_target(schema: &str, name: &str) -> String {
    if schema == "public" {
        name.to_string()
    } else {
        format!("{schema}.{name}")
    }
}

/// Walk the plan: note scanned relations by alias, refuse writing or
/// locking nodes, collect every expression string.
fn walk_plan(
    node: &Json,
    parent: Option<&str>,
    reads: &mut PlanReads,
    aliases: &mut HashMap<String, String>,
    expressions: &mut Vec<String>,
) -> Result<(), DataError> {
    match node {
        Json::Array(items) => {
            for item in items {
                walk_plan(item, parent, reads, aliases, expressions)?;
            }
        }
        Json::Object(map) => {
            let kind = map.get("Node Type").and_then(Json::as_str);
            if let Some(kind) = kind {
                match kind {
                    "ModifyTable" | "LockRows" => {
                        let kind = kind.to_string();
                        return Err(DataError::Refused(format!(
                            "the statement writes or locks rows ({kind}); queries are read-only"
                        )));
                    }
                    "Custom Scan" | "Foreign Scan" => {
                        let kind = kind.to_string();
                        return Err(DataError::Refused(format!(
                            "the query's reads cannot be established (a {kind}), so it is not run"
                        )));
                    }
                    _ => {}
                }
            }
            if let Some(Json::String(index)) = map.get("Index Name") {
                reads.indexes.insert(index.clone());
            }
            if let Some(Json::String(relation)) = map.get("Relation Name") {
                let schema = match map.get("Schema") {
                    Some(Json::String(s)) => s.as_str(),
                    _ => {
                        return Err(DataError::Refused(format!(
                            "the query's reads cannot be established (relation {} without a schema), so it is not run",
                            crate::render::one_line(relation, 64)
                        )));
                    }
                };
                let target = relation_target(schema, relation);
                let alias = match map.get("Alias") {
                    Some(Json::String(a)) => a.clone(),
                    _ => relation.clone(),
                };
                if let Some(other) = aliases.get(&alias)
                    && other != &target
                {
                    return Err(DataError::Refused(format!(
                        "the query's reads cannot be established (alias {} names two relations), so it is not run",
                        crate::render::one_line(&alias, 64)
                    )));
                }
                aliases.insert(alias, target.clone());
                reads.tables.insert(target);
                reads
                    .relations
                    .insert((schema.to_string(), relation.clone()));
            }
            // A scan feeding a join or aggregate lists every column of its
            // table; the parent's own expressions name those it uses. (Not
            // an InitPlan or SubPlan below it: their output is what they
            // read.)
            let physical_output = map.contains_key("Relation Name")
                && parent.is_some_and(|p| PROJECTING_PARENTS.contains(&p))
                && matches!(
                    map.get("Parent Relationship").and_then(Json::as_str),
                    Some("Outer" | "Inner")
                );
            for (key, value) in map {
                if PLAN_NAME_KEYS.contains(&key.as_str()) || (physical_output && key == "Output") {
                    continue;
                }
                match value {
                    Json::String(text) => expressions.push(text.clone()),
                    Json::Array(items) if items.iter().all(Json::is_string) => expressions
                        .extend(items.iter().filter_map(|i| i.as_str().map(String::from))),
                    other => walk_plan(other, kind.or(parent), reads, aliases, expressions)?,
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// One token of a deparsed expression.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// An identifier, lowercase when it was not quoted.
    Name(String),
    /// A quoted string, number or operator: nothing to check.
    Other(char),
    Dot,
    Open,
    DoubleColon,
}

/// Split a deparsed expression into tokens, skipping string literals.
fn tokens(text: &str) -> Result<Vec<Token>, DataError> {
    let unreadable = || {
        DataError::Refused(
            "the query's reads cannot be established (an expression the host cannot read), so it is not run"
                .into(),
        )
    };
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' => {
                // A literal: '' is a quote inside it.
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(unreadable()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => i += 2,
                        Some('\'') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                out.push(Token::Other('\''));
            }
            '"' => {
                let mut name = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(unreadable()),
                        Some('"') if chars.get(i + 1) == Some(&'"') => {
                            name.push('"');
                            i += 2;
                        }
                        Some('"') => break,
                        Some(ch) => {
                            name.push(*ch);
                            i += 1;
                        }
                    }
                }
                i += 1;
                out.push(Token::Name(name));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push(Token::Name(word.to_lowercase()));
            }
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                out.push(Token::Other('0'));
            }
            '.' => {
                out.push(Token::Dot);
                i += 1;
            }
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&':') => {
                out.push(Token::DoubleColon);
                i += 2;
            }
            c => {
                out.push(Token::Other(c));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Words that continue a type name after a space (`character varying`,
/// `double precision`, `timestamp with time zone`).
const TYPE_NAME_WORDS: &[&str] = &["varying", "precision", "with", "without", "time", "zone"];

/// The index past the type name starting at `i` (after `::`): words and
/// dots, the continuation words above, `[]`, and modifiers that are only
/// numbers (`numeric(10,2)`). Anything else ends it, so no call is skipped.
fn skip_type_name(tokens: &[Token], mut i: usize) -> usize {
    let numbers_only = |from: usize| -> Option<usize> {
        let mut j = from + 1;
        loop {
            match tokens.get(j)? {
                Token::Other(')') => return Some(j + 1),
                Token::Other('0' | ',' | ' ') => j += 1,
                _ => return None,
            }
        }
    };
    let mut first = true;
    loop {
        match tokens.get(i) {
            Some(Token::Name(_)) if first => {
                first = false;
                i += 1;
            }
            Some(Token::Dot) if matches!(tokens.get(i + 1), Some(Token::Name(_))) => i += 2,
            Some(Token::Other('[' | ']')) => i += 1,
            Some(Token::Open) => match numbers_only(i) {
                Some(next) => i = next,
                None => break,
            },
            Some(Token::Other(' ')) if matches!(tokens.get(i + 1), Some(Token::Name(w)) if TYPE_NAME_WORDS.contains(&w.as_str())) => {
                i += 2
            }
            _ => break,
        }
    }
    i
}

/// Note the columns and functions one expression references.
fn scan_expression(
    text: &str,
    aliases: &HashMap<String, String>,
    reads: &mut PlanReads,
) -> Result<(), DataError> {
    let tokens = tokens(text)?;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::DoubleColon => i = skip_type_name(&tokens, i + 1),
            Token::Name(first) => {
                let (qualifier, name, next) = match (tokens.get(i + 1), tokens.get(i + 2)) {
                    (Some(Token::Dot), Some(Token::Name(second))) => {
                        (Some(first.clone()), second.clone(), i + 3)
                    }
                    (Some(Token::Dot), Some(Token::Other('*'))) => {
                        (Some(first.clone()), "*".to_string(), i + 3)
                    }
                    _ => (None, first.clone(), i + 1),
                };
                if tokens.get(next) == Some(&Token::Open) {
                    reads.functions.insert((qualifier, name));
                } else if let Some(alias) = qualifier
                    && let Some(table) = aliases.get(&alias)
                {
                    reads.columns.insert((table.clone(), name));
                }
                i = next;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Every relation and column in `reads` must be in `scope`.
fn check_scope(reads: &PlanReads, scope: &Scope) -> Result<(), DataError> {
    for table in &reads.tables {
        scope.allows(table, "").map_err(DataError::Refused)?;
    }
    for (table, column) in &reads.columns {
        if column == "*" {
            if scope.columns.is_some() {
                return Err(DataError::Refused(format!(
                    "the query reads whole rows of {table} ({table}.*), but the grant names columns"
                )));
            }
            continue;
        }
        scope.allows(table, column).map_err(DataError::Refused)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_guard_follows_messages_across_reads_and_stops_a_large_one() {
        let mut guard = FrameGuard::new(());
        let mut small = vec![b'D'];
        small.extend_from_slice(&(4u32 + 3).to_be_bytes());
        small.extend_from_slice(b"abc");
        let mut stream = small.repeat(3);
        let mut large = vec![b'D'];
        large.extend_from_slice(&(u32::try_from(MAX_MESSAGE_LEN).unwrap() + 5).to_be_bytes());
        stream.extend_from_slice(&large);
        // Fed one byte at a time, the three small messages pass.
        for byte in &stream[..small.len() * 3] {
            guard.track(std::slice::from_ref(byte)).unwrap();
        }
        let err = guard.track(&stream[small.len() * 3..]).unwrap_err();
        assert!(err.to_string().contains(FRAME_GUARD), "{err}");
    }

    #[test]
    fn expressions_yield_columns_and_functions_not_literals_or_types() {
        let aliases: HashMap<String, String> = [
            ("c".to_string(), "customers".to_string()),
            ("o".to_string(), "orders".to_string()),
        ]
        .into();
        let mut reads = PlanReads::default();
        for text in [
            "(lower(c.name) = 'c.ssn(x)'::text)",
            "((c.email)::character varying(20))::text",
            "row_to_json(c.*)",
            "\"C\".x",
            "public.f(o.total)",
            "((c.name)::text OR pg_read_file('x'::text))",
            "('2020-01-01'::timestamp(3) with time zone < now())",
        ] {
            scan_expression(text, &aliases, &mut reads).unwrap();
        }
        let columns: Vec<_> = reads
            .columns
            .iter()
            .map(|(t, c)| format!("{t}.{c}"))
            .collect();
        assert_eq!(
            columns,
            [
                "customers.*",
                "customers.email",
                "customers.name",
                "orders.total"
            ]
        );
        let functions: Vec<_> = reads
            .functions
            .iter()
            .map(|(s, n)| {
                format!(
                    "{}{n}",
                    s.as_ref().map_or(String::new(), |s| format!("{s}."))
                )
            })
            .collect();
        assert_eq!(
            functions,
            ["lower", "now", "pg_read_file", "row_to_json", "public.f"]
        );
    }

    #[test]
    fn an_unterminated_literal_is_unreadable() {
        assert!(tokens("'abc").is_err());
    }
}
