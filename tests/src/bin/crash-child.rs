//! A child process for the crash test: runs the mail-sweeper tool on the
//! workspace given as the first argument until it finishes or is killed.
//! Prints `started` once the tool is loaded.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use agentcap::consent::{DenyApprover, SessionId};
use agentcap::{AgentEngine, Policy, Runtime};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let workspace = PathBuf::from(args.next().expect("workspace argument"));
    let cache = args.next().map(PathBuf::from);
    let policy = Policy::load(&workspace.join("agentcap.toml"))?;
    let engine = AgentEngine::new(cache)?;
    let runtime = Runtime::new(engine, policy, Arc::new(DenyApprover::new("no human")))?;
    let tool = runtime.load_tool("sweeper")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!("started");
    std::io::stdout().flush()?;
    let outcome = rt.block_on(runtime.call(
        &tool,
        &SessionId("crash".into()),
        "sweep",
        &json!({"folder": "INBOX"}),
    ))?;
    println!("{}", outcome.result);
    Ok(())
}
