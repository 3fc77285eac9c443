//! `agentcap demo`: the "confirm before acting" incident replayed offline on
//! bundled data. A triage tool proposes to archive and delete mail; nothing
//! happens without consent, and only the approved subset is touched.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use include_dir::{Dir, include_dir};
use serde_json::{Value, json};

use crate::capability::mail::{ARCHIVE, INBOX, Maildir, TRASH};
use crate::consent::{
    Capability, ConsentPrompt, Decision, ScriptedApprover, SessionId, SharedApprover,
    TerminalApprover,
};
use crate::engine::AgentEngine;
use crate::policy::Policy;
use crate::runtime::Runtime;

/// The bundled mailbox (46 messages, see examples/inbox-triage/fixtures).
static FIXTURE_MAILDIR: Dir<'_> =
    include_dir!("$CARGO_MANIFEST_DIR/../examples/inbox-triage/fixtures/Maildir");

/// The inbox-triage component, built for wasm32-wasip2 by build.rs.
pub static INBOX_TRIAGE_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/inbox_triage.wasm"));

/// The policy the demo writes next to its mailbox.
pub const DEMO_POLICY: &str = r#"# The operator's policy for the demo.
user = "alice"
consent_timeout_secs = 120

[mail]
maildir = "Maildir"

# Every request, decision, call and outcome, hash-chained.
[journal]
path = "journal.sqlite"

[tools.inbox-triage]
component = "inbox_triage.wasm"
limits = { memory_mb = 64, wall_time_ms = 20000 }

# Looking at the inbox is pre-approved by the operator.
[[tools.inbox-triage.grants]]
capability = "mail.list"
mode = "standing"
folders = ["INBOX"]

# Moving mail needs Alice's consent, every time, for the exact messages.
[[tools.inbox-triage.grants]]
capability = "mail.archive"
mode = "ask"
folders = ["INBOX"]
expires_after_secs = 60

[[tools.inbox-triage.grants]]
capability = "mail.delete"
mode = "ask"
folders = ["INBOX"]
expires_after_secs = 60
"#;

/// Who answers the demo's consent prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoUser {
    /// A person at the terminal.
    Terminal,
    /// The documented scripted user: approves every request, but leaves out
    /// the first item of every deletion batch.
    Scripted,
}

/// What the demo run did, checked against the disk.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    /// The workspace (mailbox, policy, component).
    pub workspace: PathBuf,
    /// The tool's report.
    pub report: Value,
    /// Messages per folder afterwards.
    pub inbox: usize,
    /// Messages in Archive afterwards.
    pub archive: usize,
    /// Messages in Trash afterwards.
    pub trash: usize,
    /// Proposed items the user left out that are still in the INBOX.
    pub left_out_untouched: Vec<String>,
}

/// The scripted user's rule.
pub fn scripted_decision(prompt: &ConsentPrompt) -> Decision {
    if prompt.capability == Capability::MailDelete && prompt.items.len() > 1 {
        Decision::Approve((1..prompt.items.len()).collect())
    } else {
        Decision::approve_all(prompt)
    }
}

fn extract(dir: &Dir<'_>, to: &Path) -> anyhow::Result<()> {
    for entry in dir.entries() {
        let path = to.join(
            entry
                .path()
                .file_name()
                .context("fixture entry without a name")?,
        );
        match entry {
            include_dir::DirEntry::Dir(sub) => {
                std::fs::create_dir_all(&path)?;
                extract(sub, &path)?;
            }
            include_dir::DirEntry::File(file) => std::fs::write(&path, file.contents())?,
        }
    }
    Ok(())
}

/// Lay out a fresh workspace: the fixture Maildir, the component and the
/// policy. Returns the policy file's path.
pub fn prepare_workspace(workspace: &Path) -> anyhow::Result<PathBuf> {
    let maildir = workspace.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub))?;
    }
    extract(&FIXTURE_MAILDIR, &maildir).context("copy the fixture Maildir")?;
    std::fs::write(workspace.join("inbox_triage.wasm"), INBOX_TRIAGE_WASM)?;
    let policy = workspace.join("agentcap.toml");
    std::fs::write(&policy, DEMO_POLICY)?;
    Ok(policy)
}

fn show_prompt_and_decide(prompt: &ConsentPrompt) -> Decision {
    let decision = scripted_decision(prompt);
    println!("\n--- consent request ---------------------------------------------");
    print!("{}", prompt.render());
    match &decision {
        Decision::Approve(items) if items.len() == prompt.items.len() => {
            println!("Scripted user: approves all {} item(s).", items.len());
        }
        Decision::Approve(items) => {
            let left_out: Vec<String> = (0..prompt.items.len())
                .filter(|i| !items.contains(i))
                .map(|i| format!("[{}]", i + 1))
                .collect();
            println!(
                "Scripted user: approves {} of {}, leaves out {}.",
                items.len(),
                prompt.items.len(),
                left_out.join(" ")
            );
        }
        other => println!("Scripted user: {other:?}"),
    }
    decision
}

/// Run the demo in `workspace` (created if missing).
pub async fn run_demo(
    workspace: &Path,
    user: DemoUser,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<DemoSummary> {
    std::fs::create_dir_all(workspace)?;
    let policy_path = prepare_workspace(workspace)?;
    let policy = Policy::load(&policy_path)?;
    let approver: SharedApprover = match user {
        DemoUser::Terminal => Arc::new(
            TerminalApprover::for_stdin(Duration::from_secs(policy.consent_timeout_secs))
                .context("stdin is not a terminal")?,
        ),
        DemoUser::Scripted => Arc::new(ScriptedApprover::new(
            "scripted-user",
            show_prompt_and_decide,
        )),
    };
    println!("agentcap demo: an agent triages Alice's inbox; it must ask before it acts.");
    println!("Workspace: {}", workspace.display());
    println!("  Maildir:   {}", workspace.join("Maildir").display());
    println!("  policy:    {}", policy_path.display());
    println!(
        "  Policy: mail.list is a standing grant (INBOX); mail.archive and mail.delete ask Alice every time."
    );
    match user {
        DemoUser::Terminal => println!("  Alice is you: answer the prompts below."),
        DemoUser::Scripted => println!(
            "  Alice is scripted (stdin is not a terminal): she approves every request but leaves out the first item of each deletion batch."
        ),
    }
    let engine = AgentEngine::new(cache_dir)?;
    let runtime = Runtime::new(engine, policy, approver)?;
    let tool = runtime.load_tool("inbox-triage")?;
    println!(
        "Loaded tool inbox-triage (sha256 {}…), imports: {}",
        &tool.info().digest[..12],
        tool.info().capabilities().join(", ")
    );
    let session = SessionId("demo".into());
    let outcome = runtime
        .call(&tool, &session, "triage", &json!({"folder": INBOX}))
        .await?;
    if outcome.is_error {
        anyhow::bail!("the tool reported an error: {}", outcome.result);
    }
    let report = outcome.result["ok"].clone();
    let store = Maildir::open(&workspace.join("Maildir"))?;
    let count = |folder: &str| store.list(folder).map(|l| l.len()).unwrap_or(0);
    let inbox_ids: Vec<String> = store.list(INBOX)?.into_iter().map(|m| m.id).collect();
    let not_approved: Vec<String> = report["not-approved"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let left_out_untouched: Vec<String> = not_approved
        .iter()
        .filter(|id| inbox_ids.contains(id))
        .cloned()
        .collect();
    let summary = DemoSummary {
        workspace: workspace.to_path_buf(),
        inbox: count(INBOX),
        archive: count(ARCHIVE),
        trash: count(TRASH),
        left_out_untouched,
        report,
    };
    print_summary(&summary);
    print_journal(&runtime);
    Ok(summary)
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn print_summary(s: &DemoSummary) {
    let r = &s.report;
    let proposed = r["proposed"].as_array().cloned().unwrap_or_default();
    let count_action = |a: &str| proposed.iter().filter(|p| p["action"] == a).count();
    let subject_of = |id: &str| {
        proposed
            .iter()
            .find(|p| p["id"] == id)
            .and_then(|p| p["subject"].as_str())
            .unwrap_or("")
            .to_string()
    };
    println!("\n=== Summary =====================================================");
    println!(
        "Scanned:      {} messages in {}",
        r["scanned"],
        r["folder"].as_str().unwrap_or("")
    );
    println!(
        "Proposed:     {} to archive (newsletters), {} to delete (old promotions)",
        count_action("archive"),
        count_action("delete")
    );
    let archived = ids(&r["archived"]);
    let deleted = ids(&r["deleted"]);
    println!(
        "Approved and done: {} archived, {} moved to Trash (recoverable)",
        archived.len(),
        deleted.len()
    );
    let not_approved = ids(&r["not-approved"]);
    if not_approved.is_empty() {
        println!("Not approved: none");
    } else {
        println!("Not approved (left alone):");
        for id in &not_approved {
            let state = if s.left_out_untouched.contains(id) {
                "still in INBOX, untouched"
            } else {
                "NOT in INBOX"
            };
            println!("  - {} \"{}\" — {}", id, subject_of(id), state);
        }
    }
    let refusals = ids(&r["refusals"]);
    if refusals.is_empty() {
        println!("Refused:      none");
    } else {
        println!("Refused:");
        for line in refusals {
            println!("  - {line}");
        }
    }
    println!(
        "On disk now:  INBOX {}, Archive {}, Trash {}",
        s.inbox, s.archive, s.trash
    );
    println!(
        "Nothing was unlinked: restore any message by moving it back from {}.",
        s.workspace.join("Maildir/.Trash").display()
    );
}

fn print_journal(runtime: &Runtime) {
    let journal = runtime.journal();
    println!("\n=== Journal: {} =====", journal.path().display());
    match (journal.tail(8, None), journal.verify()) {
        (Ok(records), Ok(check)) => {
            for r in records {
                println!("  {}", truncate_line(&r.summary_line(), 150));
            }
            match check.broken {
                None => println!(
                    "  Chain of {} records verified intact; `agentcap journal tail --journal {}` shows more.",
                    check.records,
                    journal.path().display()
                ),
                Some((seq, why)) => println!("  CHAIN BROKEN at #{seq}: {why}"),
            }
        }
        (Err(e), _) | (_, Err(e)) => println!("  cannot read the journal: {e}"),
    }
}

fn truncate_line(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// Whether the demo can ask a person (stdin is a terminal).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
}
