//! The `data` capability: read-only SQL over the operator's SQLite database.
//!
//! Three layers keep a query inside its grant: the database is opened
//! read-only with `query_only`, an authorizer allows only `SELECT`, reads of
//! the granted tables (and columns) and functions, and the Gate binds the
//! exact SQL the human approved. Row and time limits end runaway queries.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use wasmtime::component::Resource;

use crate::consent::{Capability, PromptItem, TokenHandle};
use crate::host::bindings::agentcap::tools::data as wit_data;
use crate::host::{CallContext, HostState};
use crate::policy::Grant;

/// Longest SQL accepted.
pub const MAX_SQL_LEN: usize = 16 * 1024;
/// Most parameters.
pub const MAX_PARAMS: usize = 64;

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

/// What the query may touch.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Tables it may read.
    pub tables: Vec<String>,
    /// Columns (`table.column`) it may read; `None` = all of the tables'.
    pub columns: Option<Vec<String>>,
}

impl Scope {
    /// The scope of a grant.
    pub fn of(grant: &Grant) -> Scope {
        Scope {
            tables: grant.tables.clone().unwrap_or_default(),
            columns: grant.columns.clone(),
        }
    }

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
#[derive(Debug, Clone)]
pub struct DataSource {
    path: PathBuf,
    max_rows: usize,
    timeout: Duration,
}

fn describe_action(action: &AuthAction<'_>) -> String {
    let text = format!("{action:?}");
    text.split([' ', '{', '('])
        .next()
        .unwrap_or("this action")
        .to_lowercase()
}

impl DataSource {
    /// The database at `path` (must exist).
    pub fn new(path: &Path, max_rows: usize, timeout: Duration) -> Result<DataSource, DataError> {
        if !path.is_file() {
            return Err(DataError::Backend(format!(
                "no database at {}",
                path.display()
            )));
        }
        Ok(DataSource {
            path: path.to_path_buf(),
            max_rows,
            timeout,
        })
    }

    /// A read-only connection whose authorizer applies `scope` (or, with
    /// `None`, only records the tables read) and collects the refusal.
    fn connect(&self, scope: Option<Scope>) -> Result<(Connection, Seen, Refusal), DataError> {
        let mut conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| DataError::Backend(format!("open database: {e}")))?;
        conn.pragma_update(None, "query_only", true)
            .map_err(|e| DataError::Backend(format!("set query_only: {e}")))?;
        let tables = Arc::new(Mutex::new(Vec::<String>::new()));
        let refusal = Arc::new(Mutex::new(None::<String>));
        let (seen, refused) = (tables.clone(), refusal.clone());
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            let deny = |why: String| {
                refused.lock().unwrap().get_or_insert(why);
                Authorization::Deny
            };
            match ctx.action {
                AuthAction::Select | AuthAction::Function { .. } | AuthAction::Recursive => {
                    Authorization::Allow
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
        Ok((conn, tables, refusal))
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

    /// The tables `sql` reads, found by SQLite itself while preparing it.
    /// Anything that is not a read is refused here already.
    pub fn tables_read(&self, sql: &str) -> Result<Vec<String>, DataError> {
        Self::check_sql(sql)?;
        let (conn, tables, refusal) = self.connect(None)?;
        let prepared = conn.prepare(sql);
        if let Some(why) = refusal.lock().unwrap().take() {
            return Err(DataError::Refused(why));
        }
        prepared.map_err(|e| DataError::Invalid(format!("the query does not compile: {e}")))?;
        let mut tables = tables.lock().unwrap().clone();
        tables.sort_by_key(|t| t.to_lowercase());
        Ok(tables)
    }

    /// Run `sql` within `scope`.
    pub fn query(&self, sql: &str, params: &[String], scope: Scope) -> Result<Rows, DataError> {
        Self::check_sql(sql)?;
        if params.len() > MAX_PARAMS {
            return Err(DataError::Invalid(format!(
                "at most {MAX_PARAMS} parameters"
            )));
        }
        let (mut conn, _, refusal) = self.connect(Some(scope))?;
        let deadline = Instant::now() + self.timeout;
        conn.progress_handler(1000, Some(move || Instant::now() > deadline))
            .map_err(|e| DataError::Backend(format!("install progress handler: {e}")))?;
        let refused = || refusal.lock().unwrap().take().map(DataError::Refused);
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
        let timeout = self.timeout;
        let map_err = |e: rusqlite::Error| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::OperationInterrupted =>
            {
                DataError::Refused(format!(
                    "the query ran longer than its limit of {} ms",
                    timeout.as_millis()
                ))
            }
            other => DataError::Backend(other.to_string()),
        };
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(map_err)?;
        while let Some(row) = rows.next().map_err(map_err)? {
            if rows_out.len() == self.max_rows {
                truncated = true;
                break;
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

/// Check a query intent against the grant and describe it: the tables come
/// from SQLite, not from the tool; the tool must have named all of them.
pub fn describe(
    source: &DataSource,
    grant: &Grant,
    targets: &[String],
    sql: &str,
) -> Result<(Vec<String>, String, Vec<PromptItem>), DataError> {
    let tables = source.tables_read(sql)?;
    let scope = Scope::of(grant);
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
        self.data
            .as_deref()
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
                self.call.journal_refusal(
                    Capability::DataQuery,
                    &[],
                    Some(&sql),
                    None,
                    &format!("{e:?}"),
                );
                return Ok(Err(e));
            }
        };
        let grant_scope = self
            .call
            .grants
            .grant_for(Capability::DataQuery)
            .map(Scope::of);
        self.through_gate(
            &token,
            Capability::DataQuery,
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
