//! A fleet for tests: a PostgreSQL database for the fleet's tables and
//! hosts (runtimes in this process) that sweep their own mailboxes.

use std::sync::Arc;

use agentcap::consent::{Decision, ScriptedApprover, SessionId};
use agentcap::{AgentEngine, LoadedTool, Runtime};
use serde_json::json;

use crate::Workspace;
use crate::pg_server::{ADMIN_PASSWORD, Postgres};

/// Create the fleet's database on `server`; returns its connection string.
/// The test server trades durability for speed; the fleet's database
/// keeps what it acknowledged across a crash, as a real one does.
pub fn fleet_database(server: &Postgres) -> String {
    server.execute("postgres", "CREATE DATABASE fleet");
    server.execute(
        "postgres",
        "ALTER DATABASE fleet SET synchronous_commit = on",
    );
    format!(
        "host=127.0.0.1 port={} user=postgres password={ADMIN_PASSWORD} dbname=fleet sslmode=disable",
        server.port
    )
}

/// The sweeper with standing grants, in fleet `connection` as `host`.
pub fn host_policy(connection: &str, host: &str, out_of_reach_ms: u64) -> String {
    format!(
        "user = \"alice\"\n[journal]\npath = \"journal.sqlite\"\n[mail]\nmaildir = \"Maildir\"\n\
         [fleet]\npostgres = \"{connection}\"\nhost = \"{host}\"\nout_of_reach_after_ms = {out_of_reach_ms}\n\
         [tools.sweeper]\ncomponent = {:?}\nlimits = {{ wall_time_ms = 60000 }}\n\
         [[tools.sweeper.grants]]\ncapability = \"mail.list\"\nmode = \"standing\"\n\
         [[tools.sweeper.grants]]\ncapability = \"mail.read\"\nmode = \"standing\"\n\
         [[tools.sweeper.grants]]\ncapability = \"mail.delete\"\nmode = \"standing\"\n",
        crate::guest("mail_sweeper")
    )
}

/// A host of the fleet in this process: its workspace, runtime and the
/// sweeper (its fleet member not started).
pub fn host(connection: &str, name: &str, limit_ms: u64) -> (Workspace, Arc<Runtime>, LoadedTool) {
    let ws = Workspace::new();
    let runtime = Runtime::new(
        AgentEngine::new(None).unwrap(),
        ws.policy(&host_policy(connection, name, limit_ms)),
        Arc::new(ScriptedApprover::new("unused", Decision::approve_all)),
    )
    .unwrap();
    let tool = runtime.load_tool("sweeper").unwrap();
    (ws, Arc::new(runtime), tool)
}

/// The sweeper's `read-first` of INBOX in `session`: its subject, or the
/// error (a refusal, a stop).
pub async fn read_first(
    runtime: &Runtime,
    tool: &LoadedTool,
    session: &str,
) -> Result<String, String> {
    let outcome = runtime
        .call(
            tool,
            &SessionId(session.into()),
            "read-first",
            &json!({"folder": "INBOX"}),
        )
        .await
        .map_err(|e| e.to_string())?;
    match outcome.result.get("ok") {
        Some(v) => Ok(v.to_string()),
        None => Err(outcome.result.to_string()),
    }
}
