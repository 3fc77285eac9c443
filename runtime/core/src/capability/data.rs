//! The `data` capability: read-only SQL over the operator's database, a
//! SQLite file (below) or a PostgreSQL server ([`postgres`]).
//!
//! On SQLite, four layers keep a query inside its grant: the database is opened
//! read-only with `query_only`; an authorizer allows only `SELECT`, reads of
//! the granted tables (and columns) and a named list of pure functions; the
//! compiled program itself (`EXPLAIN`) is checked, so every table and column
//! it opens counts, including those SQLite reads without asking the
//! authorizer (the generated conditions of `NATURAL JOIN` and `USING`); and
//! the Gate binds the exact SQL the human approved. Row, size and time
//! limits end runaway queries.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;
use wasmtime::component::{HasSelf, Linker, Resource};

mod pg_sql;
mod postgres;

pub use postgres::PostgresSettings;

use super::{
    Action, Capability, CapabilityPlugin, Described, Effect, Opaque, PolicyTable, Request,
};
use crate::consent::{PromptItem, TokenHandle};
use crate::host::bindings::agentcap::tools::consent::{Denial, DenialReason};
use crate::host::bindings::agentcap::tools::data as wit_data;
use crate::host::{CallContext, HostState};
use crate::policy::Policy;

/// `data.query`: run exactly the approved read-only SQL. Targets: the
/// tables it reads (found by SQLite, not taken from the tool).
pub const QUERY: Capability = Capability::new(&Action {
    name: "data.query",
    effect: Effect::Reads,
    carries_payload: true,
    scope_keys: &["tables", "columns"],
});

/// The policy's `[data]` table: the database `data.query` reads, either a
/// SQLite file (`database`, opened read-only) or a PostgreSQL server
/// (`postgres = { ... }`), and the limits every query runs under.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSettings {
    /// The SQLite database.
    #[serde(default)]
    pub database: Option<PathBuf>,
    /// The PostgreSQL server, instead of `database`.
    #[serde(default)]
    pub postgres: Option<postgres::PostgresSettings>,
    /// Most rows a query returns.
    #[serde(
        default = "default_max_rows",
        deserialize_with = "crate::policy::within::<_, _, 1, 1000000>"
    )]
    pub max_rows: usize,
    /// Milliseconds a query may run.
    #[serde(
        default = "default_query_timeout_ms",
        deserialize_with = "crate::policy::within::<_, _, 1, 600000>"
    )]
    pub timeout_ms: u64,
    /// Most MiB one result may hold (values and their bookkeeping); the
    /// host's memory for a query stays near this whatever the SQL.
    #[serde(
        default = "default_max_result_mb",
        deserialize_with = "crate::policy::within::<_, _, 1, 1024>"
    )]
    pub max_result_mb: usize,
}

fn default_max_rows() -> usize {
    1000
}

fn default_query_timeout_ms() -> u64 {
    2000
}

fn default_max_result_mb() -> usize {
    16
}

impl DataSettings {
    /// The limits every query runs under.
    pub fn limits(&self) -> Limits {
        Limits {
            max_rows: self.max_rows,
            timeout: Duration::from_millis(self.timeout_ms),
            max_result_bytes: self.max_result_mb << 20,
        }
    }
}

/// What bounds one query, on every backend.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most rows returned; more make the result `truncated`.
    pub max_rows: usize,
    /// Longest run.
    pub timeout: Duration,
    /// Most bytes of values (and per-value bookkeeping) in one result.
    pub max_result_bytes: usize,
}

impl Limits {
    /// The refusal for a result over [`Limits::max_result_bytes`].
    fn result_too_large(&self) -> DataError {
        DataError::Refused(format!(
            "the result is larger than the limit of {} MiB (max_result_mb); ask for fewer rows or columns",
            self.max_result_bytes >> 20
        ))
    }

    /// The refusal for a query over [`Limits::timeout`].
    fn too_slow(&self) -> DataError {
        DataError::Refused(format!(
            "the query ran longer than its limit of {} ms (timeout_ms)",
            self.timeout.as_millis()
        ))
    }
}

/// What one value costs in a result: its bytes, or the size of a
/// [`Value`] for numbers and NULL, so a million narrow rows count too.
fn value_cost(bytes: Option<usize>) -> usize {
    std::mem::size_of::<Value>() + bytes.unwrap_or(0)
}

/// The `data` capability's plug-in.
pub struct DataPlugin;

impl CapabilityPlugin for DataPlugin {
    fn interface(&self) -> &'static str {
        "data"
    }

    fn actions(&self) -> &'static [Capability] {
        &[QUERY]
    }

    fn parse_backend(&self, table: PolicyTable<'_>) -> Result<Opaque, toml::de::Error> {
        Opaque::parse::<DataSettings>(table)
    }

    fn open(&self, settings: &Opaque, policy: &Policy) -> Result<Opaque, String> {
        let settings = settings.get::<DataSettings>().ok_or("not data settings")?;
        let source = match (&settings.database, &settings.postgres) {
            (Some(path), None) => {
                SqliteSource::new(&policy.resolve(path), settings.limits()).map(DataSource::Sqlite)
            }
            (None, Some(server)) => {
                postgres::PostgresSource::new(server, policy, settings.limits())
                    .map(|source| DataSource::Postgres(Box::new(source)))
            }
            _ => Err(DataError::Invalid(
                "[data] names exactly one database: `database` (a SQLite file) or `postgres`"
                    .into(),
            )),
        }
        .map_err(|e| format!("cannot open the database: {e}"))?;
        Ok(Opaque::new(source))
    }

    fn parse_scope(
        &self,
        _capability: Capability,
        scope: PolicyTable<'_>,
    ) -> Result<Opaque, toml::de::Error> {
        Opaque::parse::<Scope>(scope)
    }

    fn describe(&self, request: &Request<'_>) -> Result<Described, Denial> {
        let scope = request.scope::<Scope>()?;
        let source = request.backend::<DataSource>()?;
        let sql = request.payload.unwrap_or_default();
        match describe(source, scope, request.targets, sql) {
            Ok((tables, action, items)) => Ok(Described {
                action,
                items,
                targets: tables,
                shown: None,
            }),
            Err(DataError::Refused(why)) => Err(super::refusal(
                DenialReason::NotGranted,
                format!("{}: {why}", request.capability),
            )),
            Err(e) => Err(request.invalid(e)),
        }
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit_data::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
    }
}

/// Longest SQL accepted.
pub const MAX_SQL_LEN: usize = 16 * 1024;
/// Longest string or blob a query may build (SQLite's length limit).
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// The SQL functions a query may call: pure, bounded by [`MAX_VALUE_LEN`],
/// none that reaches the host (`fts3_tokenizer`, `load_extension`), reads
/// the schema or state of the connection, or makes large blobs on request.
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    // aggregates and window functions
    "avg",
    "count",
    "group_concat",
    "string_agg",
    "max",
    "min",
    "sum",
    "total",
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
    // scalars
    "abs",
    "char",
    "coalesce",
    "concat",
    "concat_ws",
    "format",
    "glob",
    "hex",
    "ifnull",
    "iif",
    "if",
    "instr",
    "length",
    "like",
    "likelihood",
    "likely",
    "lower",
    "ltrim",
    "nullif",
    "octet_length",
    "printf",
    "quote",
    "replace",
    "round",
    "rtrim",
    "sign",
    "soundex",
    "substr",
    "substring",
    "trim",
    "typeof",
    "unhex",
    "unicode",
    "unlikely",
    "upper",
    // dates and times
    "date",
    "time",
    "datetime",
    "julianday",
    "strftime",
    "unixepoch",
    "timediff",
    // math
    "acos",
    "asin",
    "atan",
    "atan2",
    "ceil",
    "ceiling",
    "cos",
    "degrees",
    "exp",
    "floor",
    "ln",
    "log",
    "log10",
    "log2",
    "mod",
    "pi",
    "pow",
    "power",
    "radians",
    "sin",
    "sqrt",
    "tan",
    "trunc",
];

/// A query that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// Outside the scope, or not read-only; names the table or action.
    #[error("{0}")]
    Refused(String),
    /// Malformed SQL or parameters.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("{0}")]
    Backend(String),
}

/// One value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL.
    Null,
    /// INTEGER.
    Integer(i64),
    /// REAL.
    Real(f64),
    /// TEXT.
    Text(String),
    /// BLOB.
    Blob(Vec<u8>),
}

/// A result.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<Value>>,
    /// Cut short by the row limit.
    pub truncated: bool,
}

/// What the query may touch: a `data.query` grant's scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Tables it may read (required).
    pub tables: Vec<String>,
    /// Columns (`table.column`) it may read; `None` = all of the tables'.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

impl Scope {
    fn allows(&self, table: &str, column: &str) -> Result<(), String> {
        if !self.tables.iter().any(|t| t.eq_ignore_ascii_case(table)) {
            return Err(format!(
                "table {table} is outside the grant (tables: {})",
                self.tables.join(", ")
            ));
        }
        if let Some(columns) = &self.columns
            && !column.is_empty()
            && !columns
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&format!("{table}.{column}")))
        {
            return Err(format!("column {table}.{column} is outside the grant"));
        }
        Ok(())
    }
}

/// Tables an authorizer saw read.
type Seen = Arc<Mutex<Vec<String>>>;
/// The first thing an authorizer refused, and why.
type Refusal = Arc<Mutex<Option<String>>>;

/// The operator's database.
#[derive(Debug)]
pub enum DataSource {
    /// A SQLite file.
    Sqlite(SqliteSource),
    /// A PostgreSQL server.
    Postgres(Box<postgres::PostgresSource>),
}

impl DataSource {
    /// The tables `sql` reads, found by the database itself; anything that
    /// is not a read is refused.
    pub fn tables_read(&self, sql: &str) -> Result<Vec<String>, DataError> {
        check_sql(sql)?;
        match self {
            DataSource::Sqlite(db) => db.tables_read(sql),
            DataSource::Postgres(db) => db.tables_read(sql),
        }
    }

    /// Run `sql` within `scope`. Parameters are refused: the token binds
    /// the exact SQL the human saw, so values belong in it.
    pub fn query(&self, sql: &str, params: &[String], scope: Scope) -> Result<Rows, DataError> {
        check_sql(sql)?;
        if !params.is_empty() {
            return Err(DataError::Refused(format!(
                "{} query parameter(s) refused: the human approves the exact SQL, so write the values into it",
                params.len()
            )));
        }
        match self {
            DataSource::Sqlite(db) => db.query(sql, scope),
            DataSource::Postgres(db) => db.query(sql, scope),
        }
    }
}

fn check_sql(sql: &str) -> Result<(), DataError> {
    if sql.len() > MAX_SQL_LEN {
        return Err(DataError::Invalid(format!(
            "the query is {} bytes; the limit is {MAX_SQL_LEN}",
            sql.len()
        )));
    }
    if sql.trim().is_empty() {
        return Err(DataError::Invalid("the query is empty".into()));
    }
    Ok(())
}

/// A SQLite database file, opened read-only for each query.
#[derive(Debug, Clone)]
pub struct SqliteSource {
    path: PathBuf,
    limits: Limits,
}

fn describe_action(action: &AuthAction<'_>) -> String {
    let text = format!("{action:?}");
    text.split([' ', '{', '('])
        .next()
        .unwrap_or("this action")
        .to_lowercase()
}

impl SqliteSource {
    /// The database at `path` (must exist).
    pub fn new(path: &Path, limits: Limits) -> Result<SqliteSource, DataError> {
        if !path.is_file() {
            return Err(DataError::Backend(format!(
                "no database at {}",
                path.display()
            )));
        }
        Ok(SqliteSource {
            path: path.to_path_buf(),
            limits,
        })
    }

    /// A read-only connection whose authorizer applies `scope` (or, with
    /// `None`, only records the tables read) and collects the refusal, with
    /// the map of the database's objects by root page.
    fn connect(&self, scope: Option<Scope>) -> Result<Connected, DataError> {
        let mut conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| DataError::Backend(format!("open database: {e}")))?;
        // Read-only; sorts, groups and recursive queries keep at most a few
        // MiB of pages in memory and spill the rest to temporary files.
        for (pragma, value) in [
            ("query_only", "1"),
            ("cache_size", "-4096"),
            ("temp_store", "FILE"),
        ] {
            conn.pragma_update(None, pragma, value)
                .map_err(|e| DataError::Backend(format!("set {pragma}: {e}")))?;
        }
        // The host's memory stays bounded whatever the query builds.
        let limits = [
            (Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_LEN),
            (Limit::SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_LEN * 2),
            (Limit::SQLITE_LIMIT_ATTACHED, 0),
        ];
        for (limit, value) in limits {
            conn.set_limit(limit, i32::try_from(value).unwrap_or(i32::MAX))
                .map_err(|e| DataError::Backend(format!("set {limit:?}: {e}")))?;
        }
        // Read before the authorizer is installed: the host's own lookup.
        let schema = Schema::read(&conn)?;
        let tables = Arc::new(Mutex::new(Vec::<String>::new()));
        let refusal = Arc::new(Mutex::new(None::<String>));
        let (seen, refused) = (tables.clone(), refusal.clone());
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            let deny = |why: String| {
                refused.lock().unwrap().get_or_insert(why);
                Authorization::Deny
            };
            match ctx.action {
                AuthAction::Select | AuthAction::Recursive => Authorization::Allow,
                AuthAction::Function { function_name } => {
                    if ALLOWED_FUNCTIONS
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case(function_name))
                    {
                        Authorization::Allow
                    } else {
                        deny(format!(
                            "function {} is not allowed in queries",
                            clip_name(function_name)
                        ))
                    }
                }
                AuthAction::Read {
                    table_name,
                    column_name,
                } => {
                    let mut seen = seen.lock().unwrap();
                    if !seen.iter().any(|t| t.eq_ignore_ascii_case(table_name)) {
                        seen.push(table_name.to_string());
                    }
                    match &scope {
                        None => Authorization::Allow,
                        Some(scope) => match scope.allows(table_name, column_name) {
                            Ok(()) => Authorization::Allow,
                            Err(why) => deny(why),
                        },
                    }
                }
                other => deny(format!(
                    "{} is not allowed: queries are read-only",
                    describe_action(&other)
                )),
            }
        }))
        .map_err(|e| DataError::Backend(format!("install authorizer: {e}")))?;
        Ok(Connected {
            conn,
            seen: tables,
            refusal,
            schema,
        })
    }

    /// The tables `sql` reads, found by SQLite itself: those its authorizer
    /// reports while preparing it, and every table (or index of a table)
    /// the compiled program opens. Anything that is not a read, and a
    /// statement whose read set cannot be established, is refused here.
    pub fn tables_read(&self, sql: &str) -> Result<Vec<String>, DataError> {
        let connected = self.connect(None)?;
        let prepared = connected.conn.prepare(sql);
        if let Some(why) = connected.refusal.lock().unwrap().take() {
            return Err(DataError::Refused(why));
        }
        prepared.map_err(|e| DataError::Invalid(format!("the query does not compile: {e}")))?;
        let program = connected.program_reads(sql)?;
        let mut tables = connected.seen.lock().unwrap().clone();
        for table in program.tables {
            if !tables.iter().any(|t| t.eq_ignore_ascii_case(&table)) {
                tables.push(table);
            }
        }
        tables.sort_by_key(|t| t.to_lowercase());
        if tables.is_empty() {
            return Err(DataError::Invalid(
                "the query reads no table; only queries over granted tables are run".into(),
            ));
        }
        Ok(tables)
    }

    /// Run `sql` within `scope`.
    pub fn query(&self, sql: &str, scope: Scope) -> Result<Rows, DataError> {
        let mut connected = self.connect(Some(scope.clone()))?;
        let limits = self.limits;
        let deadline = Instant::now() + limits.timeout;
        connected
            .conn
            .progress_handler(1000, Some(move || Instant::now() > deadline))
            .map_err(|e| DataError::Backend(format!("install progress handler: {e}")))?;
        let refusal = connected.refusal.clone();
        let refused = || refusal.lock().unwrap().take().map(DataError::Refused);
        // The compiled program must stay inside the scope too: SQLite does
        // not ask the authorizer about every column it reads.
        let program = match connected.program_reads(sql) {
            Ok(p) => p,
            Err(e) => return Err(refused().unwrap_or(e)),
        };
        program.check(&scope)?;
        let conn = &connected.conn;
        let mut stmt = match conn.prepare(sql) {
            Ok(s) => s,
            Err(e) => {
                return Err(refused().unwrap_or_else(|| {
                    DataError::Invalid(format!("the query does not compile: {e}"))
                }));
            }
        };
        let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
        let mut rows_out = Vec::new();
        let mut truncated = false;
        let map_err = |e: rusqlite::Error| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::OperationInterrupted =>
            {
                limits.too_slow()
            }
            other => DataError::Backend(other.to_string()),
        };
        let mut rows = stmt.query([]).map_err(map_err)?;
        let mut result_bytes = 0usize;
        while let Some(row) = rows.next().map_err(map_err)? {
            if rows_out.len() == limits.max_rows {
                truncated = true;
                break;
            }
            for i in 0..columns.len() {
                result_bytes += value_cost(match row.get_ref(i) {
                    Ok(ValueRef::Text(b) | ValueRef::Blob(b)) => Some(b.len()),
                    _ => None,
                });
            }
            if result_bytes > limits.max_result_bytes {
                return Err(limits.result_too_large());
            }
            let values = (0..columns.len())
                .map(|i| match row.get_ref(i) {
                    Ok(ValueRef::Null) | Err(_) => Value::Null,
                    Ok(ValueRef::Integer(n)) => Value::Integer(n),
                    Ok(ValueRef::Real(f)) => Value::Real(f),
                    Ok(ValueRef::Text(t)) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    Ok(ValueRef::Blob(b)) => Value::Blob(b.to_vec()),
                })
                .collect();
            rows_out.push(values);
        }
        Ok(Rows {
            columns,
            rows: rows_out,
            truncated,
        })
    }
}

/// A connection with its authorizer's findings and the schema map.
struct Connected {
    conn: Connection,
    seen: Seen,
    refusal: Refusal,
    schema: Schema,
}

/// What a compiled program reads: tables, and `(table, column)` pairs.
#[derive(Debug, Default)]
struct ProgramReads {
    tables: Vec<String>,
    columns: Vec<(String, String)>,
}

impl ProgramReads {
    /// Every table and column the program reads must be in `scope`.
    fn check(&self, scope: &Scope) -> Result<(), DataError> {
        for table in &self.tables {
            scope.allows(table, "").map_err(DataError::Refused)?;
        }
        for (table, column) in &self.columns {
            scope.allows(table, column).map_err(DataError::Refused)?;
        }
        Ok(())
    }
}

/// One b-tree of the database: a table, or an index of `table`.
#[derive(Debug, Clone)]
struct SchemaObject {
    table: String,
    /// The index's name; `None` for the table itself.
    index: Option<String>,
}

/// What the read-set check needs to know of one table.
#[derive(Debug, Default)]
struct TableFacts {
    without_rowid: bool,
    /// Columns in declaration order with their `hidden` flag (generated
    /// columns are not 0).
    columns: Vec<(String, i64)>,
    /// The INTEGER PRIMARY KEY column, which aliases the rowid.
    rowid_alias: Option<String>,
}

/// The database's b-trees by root page, and facts about their columns, read
/// by the host before any authorizer is installed.
#[derive(Debug, Default)]
struct Schema {
    by_root: std::collections::HashMap<i64, SchemaObject>,
    /// By lowercase table name.
    tables: std::collections::HashMap<String, TableFacts>,
    /// By lowercase index name: each key column's table column number
    /// (-1 the rowid, -2 an expression) and name.
    indexes: std::collections::HashMap<String, Vec<(i64, Option<String>)>>,
}

impl Schema {
    fn read(conn: &Connection) -> Result<Schema, DataError> {
        let backend = |e: rusqlite::Error| DataError::Backend(format!("read the schema: {e}"));
        let mut schema = Schema::default();
        // The schema table itself lives at page 1.
        schema.by_root.insert(
            1,
            SchemaObject {
                table: "sqlite_schema".into(),
                index: None,
            },
        );
        schema.tables.insert(
            "sqlite_schema".into(),
            TableFacts {
                without_rowid: false,
                columns: ["type", "name", "tbl_name", "rootpage", "sql"]
                    .iter()
                    .map(|c| (c.to_string(), 0))
                    .collect(),
                rowid_alias: None,
            },
        );
        let objects: Vec<(String, String, String, i64)> = conn
            .prepare(
                "SELECT type, name, tbl_name, rootpage FROM main.sqlite_schema WHERE rootpage > 0",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .map_err(backend)?;
        for (kind, name, table, root) in objects {
            if kind == "index" {
                let keys = conn
                    .prepare("SELECT cid, name FROM pragma_index_xinfo(?1) ORDER BY seqno")
                    .and_then(|mut stmt| {
                        stmt.query_map([&name], |r| Ok((r.get(0)?, r.get(1)?)))?
                            .collect()
                    })
                    .map_err(backend)?;
                schema.indexes.insert(name.to_lowercase(), keys);
                schema.by_root.insert(
                    root,
                    SchemaObject {
                        table,
                        index: Some(name),
                    },
                );
            } else {
                let without_rowid: bool = conn
                    .query_row(
                        "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
                        [&name],
                        |r| r.get(0),
                    )
                    .map_err(backend)?;
                let described: Vec<(String, String, i64, i64)> = conn
                    .prepare(
                        "SELECT name, type, pk, hidden FROM pragma_table_xinfo(?1) ORDER BY cid",
                    )
                    .and_then(|mut stmt| {
                        stmt.query_map([&name], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                        })?
                        .collect()
                    })
                    .map_err(backend)?;
                let keys: Vec<_> = described.iter().filter(|(_, _, pk, _)| *pk > 0).collect();
                let rowid_alias = match keys.as_slice() {
                    [(name, ty, _, _)] if !without_rowid && ty.eq_ignore_ascii_case("INTEGER") => {
                        Some(name.clone())
                    }
                    _ => None,
                };
                schema.tables.insert(
                    name.to_lowercase(),
                    TableFacts {
                        without_rowid,
                        columns: described.into_iter().map(|(n, _, _, h)| (n, h)).collect(),
                        rowid_alias,
                    },
                );
                schema.by_root.insert(
                    root,
                    SchemaObject {
                        table: name,
                        index: None,
                    },
                );
            }
        }
        Ok(schema)
    }

    fn table(&self, name: &str) -> Option<&TableFacts> {
        self.tables.get(&name.to_lowercase())
    }
}

/// A cursor of the compiled program that reads a b-tree of the schema.
#[derive(Debug, Clone)]
struct Cursor {
    object: SchemaObject,
}

impl Connected {
    /// The tables and columns the compiled program of `sql` reads, from its
    /// `EXPLAIN` listing: every `OpenRead` names a root page, every `Column`
    /// a cursor and a column number. Anything whose reads cannot be mapped
    /// (virtual tables, other schemas, unknown pages) is refused.
    fn program_reads(&self, sql: &str) -> Result<ProgramReads, DataError> {
        let invalid =
            |e: rusqlite::Error| DataError::Invalid(format!("the query does not compile: {e}"));
        let unknown = |what: String| {
            DataError::Refused(format!(
                "the query's reads cannot be established ({what}), so it is not run"
            ))
        };
        let mut stmt = self.conn.prepare(&format!("EXPLAIN {sql}")).map_err(|e| {
            self.refusal
                .lock()
                .unwrap()
                .take()
                .map_or_else(|| invalid(e), DataError::Refused)
        })?;
        // Listing the program needs its parameters bound; their values do
        // not change which tables and columns it opens.
        let unbound = vec![rusqlite::types::Null; stmt.parameter_count()];
        let ops: Vec<(String, i64, i64, i64)> = stmt
            .query_map(rusqlite::params_from_iter(unbound), |r| {
                Ok((r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| DataError::Backend(format!("inspect the query: {e}")))?;
        let mut cursors: std::collections::HashMap<i64, Cursor> = Default::default();
        let mut reads = ProgramReads::default();
        let note_table = |reads: &mut ProgramReads, table: &str| {
            if !reads.tables.iter().any(|t| t.eq_ignore_ascii_case(table)) {
                reads.tables.push(table.to_string());
            }
        };
        // Cursors first (an `OpenRead` may follow its `Column`s in address
        // order when the program jumps back), then columns.
        for (opcode, p1, p2, p3) in &ops {
            match opcode.as_str() {
                "OpenRead" | "ReopenIdx" | "OpenWrite" => {
                    if *p3 != 0 {
                        return Err(unknown(format!("it opens a table of schema #{p3}")));
                    }
                    let object = self
                        .schema
                        .by_root
                        .get(p2)
                        .cloned()
                        .ok_or_else(|| unknown(format!("it opens b-tree page {p2}")))?;
                    note_table(&mut reads, &object.table);
                    cursors.insert(*p1, Cursor { object });
                }
                "VOpen" | "VFilter" | "VColumn" => {
                    return Err(unknown("it reads a virtual table".into()));
                }
                _ => {}
            }
        }
        for (opcode, p1, p2, _) in &ops {
            if opcode == "OpenDup"
                && let Some(c) = cursors.get(p2).cloned()
            {
                cursors.insert(*p1, c);
            }
        }
        let note_column = |reads: &mut ProgramReads, table: &str, column: String| {
            if !reads
                .columns
                .iter()
                .any(|(t, c)| t.eq_ignore_ascii_case(table) && c.eq_ignore_ascii_case(&column))
            {
                reads.columns.push((table.to_string(), column));
            }
        };
        // Every key column of an index the program opens counts as read:
        // a seek or a comparison on the index (the hidden condition of
        // `JOIN ... USING`, say) reads its keys without a `Column` opcode.
        for cursor in cursors.values() {
            let Some(index) = &cursor.object.index else {
                continue;
            };
            let keys = self
                .schema
                .indexes
                .get(&index.to_lowercase())
                .cloned()
                .unwrap_or_default();
            for (position, (cid, name)) in keys.iter().enumerate() {
                match (cid, name) {
                    (cid, Some(name)) if *cid >= 0 => {
                        note_column(&mut reads, &cursor.object.table, name.clone())
                    }
                    (-1, _) => {
                        if let Some(alias) = self
                            .schema
                            .table(&cursor.object.table)
                            .and_then(|t| t.rowid_alias.clone())
                        {
                            note_column(&mut reads, &cursor.object.table, alias);
                        }
                    }
                    // An expression: which columns it reads is not known
                    // here, so it counts as a column no column scope grants.
                    (-2, _) => note_column(
                        &mut reads,
                        &cursor.object.table,
                        format!("(expression key #{position} of index {index})"),
                    ),
                    _ => return Err(unknown(format!("key #{position} of index {index}"))),
                }
            }
        }
        for (opcode, p1, p2, _) in &ops {
            let Some(cursor) = cursors.get(p1) else {
                continue;
            };
            let column = match opcode.as_str() {
                "Column" => match self.column_name(&cursor.object, *p2)? {
                    Some(name) => name,
                    None => continue,
                },
                // The rowid of a table whose INTEGER PRIMARY KEY aliases it,
                // read or compared (a seek by rowid compares it).
                "Rowid" | "SeekRowid" | "NotExists" | "DeferredSeek" | "SeekGE" | "SeekGT"
                | "SeekLE" | "SeekLT" | "Found" | "NotFound" | "NoConflict"
                    if cursor.object.index.is_none() =>
                {
                    match self
                        .schema
                        .table(&cursor.object.table)
                        .and_then(|t| t.rowid_alias.clone())
                    {
                        Some(alias) => alias,
                        None => continue,
                    }
                }
                _ => continue,
            };
            let table = cursor.object.table.clone();
            note_column(&mut reads, &table, column);
        }
        Ok(reads)
    }

    /// The name of column `n` of a cursor over `object` (a table's storage
    /// column, or an index's key column).
    /// `None` for the rowid of a table that has no column aliasing it.
    fn column_name(&self, object: &SchemaObject, n: i64) -> Result<Option<String>, DataError> {
        let unknown = |what: String| {
            DataError::Refused(format!(
                "the query's reads cannot be established ({what}), so it is not run"
            ))
        };
        let position = usize::try_from(n).ok();
        match &object.index {
            None => {
                let facts = self
                    .schema
                    .table(&object.table)
                    .ok_or_else(|| unknown(format!("table {}", object.table)))?;
                if facts.without_rowid || facts.columns.iter().any(|(_, hidden)| *hidden != 0) {
                    return Err(unknown(format!(
                        "table {} is WITHOUT ROWID or has generated columns",
                        object.table
                    )));
                }
                position
                    .and_then(|i| facts.columns.get(i))
                    .map(|(name, _)| Some(name.clone()))
                    .ok_or_else(|| unknown(format!("column #{n} of {}", object.table)))
            }
            Some(index) => {
                let key = self
                    .schema
                    .indexes
                    .get(&index.to_lowercase())
                    .and_then(|keys| position.and_then(|i| keys.get(i)));
                match key {
                    Some((cid, Some(name))) if *cid >= 0 => Ok(Some(name.clone())),
                    // The rowid stored in every index entry.
                    Some((-1, _)) => Ok(self
                        .schema
                        .table(&object.table)
                        .and_then(|t| t.rowid_alias.clone())),
                    _ => Err(unknown(format!("key #{n} of index {index}"))),
                }
            }
        }
    }
}

/// A name from SQL, bounded for an error message.
fn clip_name(name: &str) -> String {
    crate::render::one_line(name, 64)
}

/// Check a query intent against the grant and describe it: the tables come
/// from SQLite, not from the tool; the tool must have named all of them.
pub fn describe(
    source: &DataSource,
    scope: &Scope,
    targets: &[String],
    sql: &str,
) -> Result<(Vec<String>, String, Vec<PromptItem>), DataError> {
    let tables = source.tables_read(sql)?;
    if let Some(outside) = tables.iter().find(|t| scope.allows(t, "").is_err()) {
        return Err(DataError::Refused(format!(
            "the query reads table {outside}, outside the grant (tables: {})",
            scope.tables.join(", ")
        )));
    }
    if let Some(unnamed) = tables
        .iter()
        .find(|t| !targets.iter().any(|n| n.eq_ignore_ascii_case(t)))
    {
        return Err(DataError::Invalid(format!(
            "the query reads table {unnamed}, which the intent does not name"
        )));
    }
    let items = tables
        .iter()
        .map(|t| PromptItem {
            target: t.clone(),
            description: format!("table {t}"),
        })
        .collect();
    Ok((
        tables.clone(),
        format!("run a read-only query on {}", tables.join(", ")),
        items,
    ))
}

// ---- The WIT interface: every function passes the Gate first. ----

impl CallContext {
    fn data(&self) -> Result<&DataSource, wit_data::DataError> {
        self.backend::<DataSource>("data")
            .ok_or_else(|| wit_data::DataError::Backend("no database is configured".into()))
    }
}

fn to_wit_error(e: DataError) -> wit_data::DataError {
    match e {
        DataError::Refused(m) => wit_data::DataError::Refused(m),
        DataError::Invalid(m) => wit_data::DataError::Invalid(m),
        DataError::Backend(m) => wit_data::DataError::Backend(m),
    }
}

impl wit_data::Host for HostState {
    fn query(
        &mut self,
        token: Resource<TokenHandle>,
        sql: String,
        params: Vec<String>,
    ) -> wasmtime::Result<Result<wit_data::Rows, wit_data::DataError>> {
        // The tables the statement reads, as SQLite sees them, are the call's
        // targets: the token must cover every one.
        let tables = match self
            .call
            .data()
            .and_then(|d| d.tables_read(&sql).map_err(to_wit_error))
        {
            Ok(t) => t,
            Err(e) => {
                self.call
                    .journal_refusal(QUERY, &[], Some(&sql), None, &format!("{e:?}"));
                return Ok(Err(e));
            }
        };
        let grant_scope = self
            .call
            .grants
            .grant_for(QUERY)
            .and_then(|g| g.scope.get::<Scope>().cloned());
        self.through_gate(
            &token,
            QUERY,
            &tables,
            Some(&sql),
            wit_data::DataError::Refused,
            |call, record| {
                let granted = grant_scope.ok_or_else(|| {
                    wit_data::DataError::Refused("no grant for data.query".into())
                })?;
                let scope = Scope {
                    tables: granted
                        .tables
                        .into_iter()
                        .filter(|t| record.targets.contains(t))
                        .collect(),
                    columns: granted.columns,
                };
                let rows = call
                    .data()?
                    .query(&sql, &params, scope)
                    .map_err(to_wit_error)?;
                Ok(wit_data::Rows {
                    columns: rows.columns,
                    truncated: rows.truncated,
                    rows: rows
                        .rows
                        .into_iter()
                        .map(|r| {
                            r.into_iter()
                                .map(|v| match v {
                                    Value::Null => wit_data::Value::Null,
                                    Value::Integer(n) => wit_data::Value::Integer(n),
                                    Value::Real(f) => wit_data::Value::Real(f),
                                    Value::Text(t) => wit_data::Value::Text(t),
                                    Value::Blob(b) => wit_data::Value::Blob(b),
                                })
                                .collect()
                        })
                        .collect(),
                })
            },
            |r| match r {
                Ok(rows) => format!(
                    "ok: {} rows{}",
                    rows.rows.len(),
                    if rows.truncated { " (truncated)" } else { "" }
                ),
                Err(e) => format!("error: {e:?}"),
            },
        )
    }
}
