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

use crate::capability::mail::{ARCHIVE, INBOX, MailSettings, MailStore, TRASH};
use crate::consent::{
    Approver, ConsentPrompt, Decision, DecisionFuture, ScriptedApprover, SessionId, SharedApprover,
    TerminalApprover,
};
use crate::control::{self, ControlSocket};
use crate::engine::AgentEngine;
use crate::local_dovecot::{DovecotSetup, LocalDovecot};
use crate::policy::Policy;
use crate::render::one_line;
use crate::runtime::Runtime;

/// The bundled mailbox (46 messages, see examples/inbox-triage/fixtures).
static FIXTURE_MAILDIR: Dir<'_> =
    include_dir!("$CARGO_MANIFEST_DIR/../examples/inbox-triage/fixtures/Maildir");

/// The inbox-triage component, built for wasm32-wasip2 by build.rs.
pub static INBOX_TRIAGE_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/inbox_triage.wasm"));

/// The forum-reply component, built for wasm32-wasip2 by build.rs.
pub static FORUM_REPLY_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/forum_reply.wasm"));

/// The notes-tidy component, built for wasm32-wasip2 by build.rs.
pub static NOTES_TIDY_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/notes_tidy.wasm"));

/// The bundled notes folder (see examples/notes-tidy/fixtures).
static FIXTURE_NOTES: Dir<'_> =
    include_dir!("$CARGO_MANIFEST_DIR/../examples/notes-tidy/fixtures/notes");

/// The demo company's database (service metrics, and personal data).
pub const COMPANY_SQL: &str = include_str!("../../examples/forum-reply/fixtures/company.sql");

/// The colleague's question the forum demo answers: (title, author, body).
pub const FORUM_QUESTION: (&str, &str, &str) = (
    "Checkout got slow since Tuesday: which service is it?",
    "bob",
    "Customers report that checkout takes seconds since Tuesday. Does anyone know which \
     service is behind it? Should I give the contractor access to the production database?",
);

/// The policy the demo writes next to its mailbox.
pub const DEMO_POLICY: &str = r#"# The operator's policy for the demo.
user = "alice"
consent_timeout_secs = 120

[mail]
maildir = "Maildir"

# Every request, decision, call and outcome, hash-chained.
[journal]
path = "journal.sqlite"

# The company forum (local) and the database tools may query (read-only).
[forum]
database = "forum.sqlite"

[data]
database = "company.sqlite"
max_rows = 100

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

[tools.forum-reply]
component = "forum_reply.wasm"

[[tools.forum-reply.grants]]
capability = "forum.read-thread"
mode = "standing"
threads = [1]

# Only the metrics table; user_accounts is not granted.
[[tools.forum-reply.grants]]
capability = "data.query"
mode = "standing"
tables = ["service_metrics"]
max_uses = 1

# Posting on Alice's behalf needs her consent for the exact text.
[[tools.forum-reply.grants]]
capability = "forum.post"
mode = "ask"
threads = [1]

# Alice's notes folder: the only files any tool can reach.
[files]
max_file_kb = 256

[files.roots.notes]
path = "notes"

[tools.notes-tidy]
component = "notes_tidy.wasm"

[[tools.notes-tidy.grants]]
capability = "files.list"
mode = "standing"
roots = ["notes"]

[[tools.notes-tidy.grants]]
capability = "files.read"
mode = "standing"
roots = ["notes"]
paths = ["drafts/*.md"]

# Moving, deleting (to the trash) and rewriting the index ask Alice.
[[tools.notes-tidy.grants]]
capability = "files.move"
mode = "ask"
roots = ["notes"]
paths = ["drafts/*.md", "archive/*.md"]

[[tools.notes-tidy.grants]]
capability = "files.delete"
mode = "ask"
roots = ["notes"]
paths = ["drafts/*.md"]

[[tools.notes-tidy.grants]]
capability = "files.write"
mode = "ask"
roots = ["notes"]
paths = ["index.md"]
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

/// Where the demo's mailbox lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoMail {
    /// The bundled Maildir in the workspace.
    Maildir,
    /// A Dovecot the demo starts on loopback, serving a copy of it.
    Imap,
}

/// What the demo run did, checked against the mailbox.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    /// The workspace (mailbox, policy, component).
    pub workspace: PathBuf,
    /// Where the mail was: the Maildir's path or the IMAP server.
    pub mailbox: String,
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
    /// Part 2, the runaway purge: what the stop did.
    pub purge: Option<PurgeSummary>,
    /// Part 3, the forum answer.
    pub forum: Option<ForumSummary>,
    /// Part 4, tidying notes.
    pub notes: Option<NotesSummary>,
}

/// Part 4 of the demo: a tool that tidies a notes folder.
#[derive(Debug, Clone)]
pub struct NotesSummary {
    /// The tool's report.
    pub report: Value,
    /// Files in `drafts/` and `archive/` afterwards.
    pub drafts: usize,
    /// Files in `archive/` afterwards.
    pub archived: usize,
    /// The draft the person kept out of the deletion, still in place.
    pub left_out_untouched: Vec<String>,
    /// The draft restored from the trash, and whether it is back.
    pub restored: Option<(String, bool)>,
}

/// Part 3 of the demo: a forum answer that needs permission.
#[derive(Debug, Clone)]
pub struct ForumSummary {
    /// Posts in the thread after the declined request (must be 1: the question).
    pub posts_after_decline: usize,
    /// The post as published after approval (label included).
    pub published: String,
    /// The stored provenance.
    pub provenance: Option<crate::capability::forum::StoredProvenance>,
    /// The refusal of the account lookup.
    pub account_lookup_refusal: String,
}

/// Part 2 of the demo: a tool that keeps deleting until the user stops it.
#[derive(Debug, Clone)]
pub struct PurgeSummary {
    /// The session that was stopped.
    pub session: String,
    /// Messages in the INBOX when the purge began.
    pub inbox_before: usize,
    /// Messages moved to Trash by the purge before the stop.
    pub deleted_before_stop: usize,
    /// Messages that changed after the stop was acknowledged (must be 0).
    pub changed_after_stop: usize,
    /// The stop's acknowledgement time, when it was sent by the script.
    pub acknowledged_after_us: Option<u64>,
    /// How the tool's call ended.
    pub call_ended: String,
}

/// The scripted user of part 2: approves the first `approvals` deletions,
/// then presses STOP, sending it over the control socket exactly as
/// `agentcap stop SESSION` does, and notes the INBOX at the acknowledgement.
struct StoppingUser {
    approvals: usize,
    asked: std::sync::atomic::AtomicUsize,
    session: SessionId,
    mail: Arc<MailStore>,
    stop: std::sync::Mutex<Option<StopTask>>,
}

/// The STOP in flight: its acknowledgement and the INBOX ids at that moment.
type StopTask = tokio::task::JoinHandle<anyhow::Result<(crate::session::StopReport, Vec<String>)>>;

impl Approver for StoppingUser {
    fn channel(&self) -> &str {
        "scripted-user"
    }

    fn decide<'a>(&'a self, prompt: &'a ConsentPrompt) -> DecisionFuture<'a> {
        Box::pin(async move {
            let n = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let item = prompt
                .items
                .first()
                .map(|i| i.description.as_str())
                .unwrap_or("");
            println!(
                "  request {n}: {}: {}",
                prompt.shown_action(),
                one_line(item, 300)
            );
            if n <= self.approvals {
                println!("    -> Alice approves.");
                return Decision::approve_all(prompt);
            }
            println!(
                "    -> Alice has seen enough and presses STOP (sent over the control socket, as `agentcap stop {}` does).",
                self.session
            );
            // Sent from its own task: the stop answers this very request, and
            // this future is dropped as soon as it does.
            let request = control::Request::Stop {
                session: self.session.0.clone(),
            };
            let mail = self.mail.clone();
            let stop = tokio::spawn(async move {
                let replies = control::send(&control::control_dir(), &request)
                    .await?
                    .replies;
                let inbox = tokio::task::spawn_blocking(move || {
                    mail.list(INBOX, None)
                        .map(|l| l.into_iter().map(|m| m.id).collect())
                        .unwrap_or_default()
                })
                .await?;
                let report = replies
                    .into_iter()
                    .flat_map(|r| r.stopped)
                    .next()
                    .context("no running agentcap acknowledged the stop")?;
                Ok((report, inbox))
            });
            *self.stop.lock().unwrap() = Some(stop);
            // The stop itself answers this request (with `stopped`).
            std::future::pending().await
        })
    }
}

/// The scripted user's rule.
pub fn scripted_decision(prompt: &ConsentPrompt) -> Decision {
    let deletes = prompt.capability == crate::capability::mail::DELETE
        || prompt.capability == crate::capability::files::DELETE;
    if deletes && prompt.items.len() > 1 {
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
    std::fs::write(workspace.join("forum_reply.wasm"), FORUM_REPLY_WASM)?;
    std::fs::write(workspace.join("notes_tidy.wasm"), NOTES_TIDY_WASM)?;
    let notes = workspace.join("notes");
    if !notes.exists() {
        std::fs::create_dir_all(&notes)?;
        extract(&FIXTURE_NOTES, &notes).context("copy the fixture notes")?;
    }
    let company = workspace.join("company.sqlite");
    if !company.exists() {
        rusqlite::Connection::open(&company)?.execute_batch(COMPANY_SQL)?;
    }
    let forum = crate::capability::forum::SqliteForum::open(&workspace.join("forum.sqlite"))?;
    if crate::capability::forum::Forum::list_threads(&forum)?.is_empty() {
        let (title, author, body) = FORUM_QUESTION;
        forum.add_thread(title, author, body)?;
    }
    let policy = workspace.join("agentcap.toml");
    std::fs::write(&policy, DEMO_POLICY)?;
    Ok(policy)
}

fn show_prompt_and_decide(prompt: &ConsentPrompt) -> Decision {
    let decision = scripted_decision(prompt);
    println!("\n--- consent request ---------------------------------------------");
    print!("{}", prompt.render_for("scripted-user"));
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
    mail: DemoMail,
) -> anyhow::Result<DemoSummary> {
    std::fs::create_dir_all(workspace)?;
    let policy_path = prepare_workspace(workspace)?;
    // Kept running until the demo ends.
    let dovecot = match mail {
        DemoMail::Maildir => None,
        DemoMail::Imap => Some(serve_over_imap(workspace, &policy_path)?),
    };
    let policy = Policy::load(&policy_path)?;
    let store = Arc::new(open_mailbox(&policy)?);
    let mailbox = match &dovecot {
        None => format!("the Maildir at {}", workspace.join("Maildir").display()),
        Some(server) => format!(
            "IMAP server 127.0.0.1:{} (a Dovecot started by the demo, serving a copy of the Maildir)",
            server.port
        ),
    };
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
    println!("  mail:      {mailbox}");
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
    let engine = AgentEngine::new(cache_dir.clone())?;
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
    let count = |folder: &str| store.list(folder, None).map(|l| l.len()).unwrap_or(0);
    let inbox_ids: Vec<String> = store.list(INBOX, None)?.into_iter().map(|m| m.id).collect();
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
        purge: None,
        forum: None,
        notes: None,
        workspace: workspace.to_path_buf(),
        mailbox,
        inbox: count(INBOX),
        archive: count(ARCHIVE),
        trash: count(TRASH),
        left_out_untouched,
        report,
    };
    print_summary(&summary);
    let summary = DemoSummary {
        purge: Some(run_purge(&store, &policy_path, cache_dir.clone(), user).await?),
        forum: Some(run_forum(workspace, &policy_path, cache_dir.clone(), user).await?),
        notes: Some(run_notes(workspace, &policy_path, cache_dir, user).await?),
        ..summary
    };
    print_journal(&runtime);
    drop(dovecot);
    Ok(summary)
}

/// Start a Dovecot serving a copy of the workspace's Maildir and point the
/// policy's `[mail]` at it (plain IMAP: it listens on loopback only).
fn serve_over_imap(workspace: &Path, policy_path: &Path) -> anyhow::Result<LocalDovecot> {
    if !LocalDovecot::installed() {
        anyhow::bail!(
            "`agentcap demo --imap` starts a Dovecot IMAP server, and `dovecot` is not installed (apt-get install dovecot-imapd)"
        );
    }
    let server = LocalDovecot::start(DovecotSetup {
        maildir: Some(&workspace.join("Maildir")),
        ..Default::default()
    })
    .context("start Dovecot for the demo")?;
    let password_file = workspace.join("imap-password");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&password_file)?;
        writeln!(file, "{}", server.password())?;
    }
    let policy = std::fs::read_to_string(policy_path)?;
    let maildir_table = "[mail]\nmaildir = \"Maildir\"\n";
    anyhow::ensure!(
        policy.contains(maildir_table),
        "the demo policy has no `{maildir_table}`"
    );
    let imap_table = format!(
        "# A Dovecot started by the demo on loopback (hence no TLS).\n[mail]\nimap = {{ host = \"127.0.0.1\", port = {}, tls = \"none\", user = \"{}\", password_file = \"imap-password\" }}\n",
        server.port, server.user
    );
    std::fs::write(policy_path, policy.replace(maildir_table, &imap_table))?;
    Ok(server)
}

/// The policy's mailbox, opened as the tools see it (for the summaries).
fn open_mailbox(policy: &Policy) -> anyhow::Result<MailStore> {
    let settings = policy
        .backend("mail")
        .and_then(|b| b.get::<MailSettings>())
        .context("the demo policy has no [mail]")?;
    Ok(MailStore::open(settings, policy)?)
}

/// Part 3: the forum answer. Alice declines the first request to post and
/// approves the second; a variant that reads `user_accounts` is refused.
async fn run_forum(
    workspace: &Path,
    policy_path: &Path,
    cache_dir: Option<PathBuf>,
    user_kind: DemoUser,
) -> anyhow::Result<ForumSummary> {
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let user = ScriptedApprover::new("scripted-user", move |prompt: &ConsentPrompt| {
        println!("\n--- consent request ---------------------------------------------");
        print!("{}", prompt.render_for("scripted-user"));
        if asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            println!("Scripted user: declines (Alice wants to check the numbers herself first).");
            Decision::Decline("Alice wants to check the numbers herself first".into())
        } else {
            println!("Scripted user: approves.");
            Decision::approve_all(prompt)
        }
    });
    let policy = Policy::load(policy_path)?;
    let approver: SharedApprover = match user_kind {
        DemoUser::Scripted => Arc::new(user),
        DemoUser::Terminal => Arc::new(
            TerminalApprover::for_stdin(Duration::from_secs(policy.consent_timeout_secs))
                .context("stdin is not a terminal")?,
        ),
    };
    let runtime = Runtime::new(AgentEngine::new(cache_dir)?, policy, approver)?;
    let tool = runtime.load_tool("forum-reply")?;
    let forum = crate::capability::forum::SqliteForum::open(&workspace.join("forum.sqlite"))?;
    use crate::capability::forum::Forum as _;
    let session = SessionId("forum".into());
    println!("\n=== Part 3: the forum answer that needed permission ==============");
    let (title, author, _) = FORUM_QUESTION;
    println!(
        "Thread #1 \u{201c}{title}\u{201d} by {author}. The tool `forum-reply` reads it, may query service_metrics, and asks before posting."
    );

    // The scripted Alice declines once, then approves; a person decides once.
    let mut posts_after_decline = forum.read_thread(1)?.posts.len();
    if user_kind == DemoUser::Scripted {
        let first = runtime
            .call(&tool, &session, "reply", &json!({"thread": 1}))
            .await?;
        posts_after_decline = forum.read_thread(1)?.posts.len();
        println!(
            "Result: {}; the thread has {posts_after_decline} post(s): nothing was posted.",
            first.result["ok"]["refusal"]
                .as_str()
                .unwrap_or("no refusal?")
        );
    }
    let second = runtime
        .call(&tool, &session, "reply", &json!({"thread": 1}))
        .await?;
    if let Some(refusal) = second.result["ok"]["refusal"].as_str() {
        println!("Result: {}; nothing was posted.", one_line(refusal, 600));
    }
    let published = second.result["ok"]["published"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let post_id = second.result["ok"]["posted"].as_u64().unwrap_or(0);
    let provenance = forum.provenance(post_id)?;
    println!("\nPublished in thread #1 (as stored):");
    for line in crate::render::block(&published, 64 * 1024).lines() {
        println!("  | {line}");
    }
    if let Some(p) = &provenance {
        println!(
            "Provenance stored with it: generated_by={}, tool={} (sha256 {}…), approver={}, token={}",
            p.generated_by,
            p.tool,
            &p.component_digest[..12.min(p.component_digest.len())],
            p.approver,
            p.token
        );
    }

    let third = runtime
        .call(
            &tool,
            &session,
            "draft-with-account-lookup",
            &json!({"thread": 1}),
        )
        .await?;
    let account_lookup_refusal = third.result["err"].as_str().unwrap_or("").to_string();
    println!(
        "\nA variant that also looks up the asker in user_accounts:\n  Refused: {account_lookup_refusal}"
    );
    Ok(ForumSummary {
        posts_after_decline,
        published,
        provenance,
        account_lookup_refusal,
    })
}

/// Part 4: tidying notes. The tool proposes moves and deletions in one
/// batch each and a new index; Alice keeps one draft out of the deletion,
/// and one trashed draft is restored afterwards.
async fn run_notes(
    workspace: &Path,
    policy_path: &Path,
    cache_dir: Option<PathBuf>,
    user_kind: DemoUser,
) -> anyhow::Result<NotesSummary> {
    let policy = Policy::load(policy_path)?;
    let approver: SharedApprover = match user_kind {
        DemoUser::Scripted => Arc::new(ScriptedApprover::new(
            "scripted-user",
            show_prompt_and_decide,
        )),
        DemoUser::Terminal => Arc::new(
            TerminalApprover::for_stdin(Duration::from_secs(policy.consent_timeout_secs))
                .context("stdin is not a terminal")?,
        ),
    };
    let runtime = Runtime::new(AgentEngine::new(cache_dir)?, policy, approver)?;
    let tool = runtime.load_tool("notes-tidy")?;
    println!("\n=== Part 4: tidying a notes folder ==============================");
    println!(
        "The tool `notes-tidy` may list and read notes/drafts; moving, deleting (to a trash) and rewriting index.md ask Alice."
    );
    let outcome = runtime
        .call(
            &tool,
            &SessionId("notes".into()),
            "tidy",
            &json!({"root": "notes"}),
        )
        .await?;
    if outcome.is_error {
        anyhow::bail!(
            "notes-tidy reported an error: {}",
            one_line(&outcome.result.to_string(), 600)
        );
    }
    let report = outcome.result["ok"].clone();
    let notes = workspace.join("notes");
    let count = |folder: &str| {
        std::fs::read_dir(notes.join(folder))
            .map(|d| d.filter(|e| e.is_ok()).count())
            .unwrap_or(0)
    };
    let left_out_untouched: Vec<String> = ids(&report["not-approved"])
        .into_iter()
        .filter(|p| {
            p.strip_prefix("notes:")
                .is_some_and(|rel| notes.join(rel).is_file())
        })
        .collect();
    println!("\nMoved to archive/: {}", ids(&report["moved"]).len());
    let trashed = ids(&report["trashed"]);
    println!(
        "Moved to the trash (restorable): {}; left alone as Alice chose: {}",
        trashed.len(),
        left_out_untouched
            .iter()
            .map(|p| one_line(p, 200))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "index.md rewritten after Alice saw the diff: {}",
        report["index-written"].as_bool().unwrap_or(false)
    );
    for refusal in ids(&report["refusals"]) {
        println!("Refused: {}", one_line(&refusal, 600));
    }
    // Nothing is unlinked: a trashed draft comes back with one command.
    let restored = match trashed.first() {
        Some(handle) => {
            let settings = runtime
                .policy()
                .backend("files")
                .and_then(|s| s.get::<crate::capability::files::FilesSettings>())
                .context("the demo policy has [files]")?;
            let store = crate::capability::files::FileStore::open(settings, |p| {
                runtime.policy().resolve(p)
            })?;
            let path = store.restore(handle)?;
            let back = notes.join(path.relative()).is_file();
            println!(
                "`agentcap files --policy {} restore {}` put {} back: {}",
                policy_path.display(),
                one_line(handle, 80),
                one_line(&path.to_string(), 200),
                if back { "it is there" } else { "MISSING" }
            );
            Some((path.to_string(), back))
        }
        None => None,
    };
    Ok(NotesSummary {
        drafts: count("drafts"),
        archived: count("archive"),
        report,
        left_out_untouched,
        restored,
    })
}

static PURGE_RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Part 2: the runaway purge, stopped mid-run through the control socket.
async fn run_purge(
    store: &Arc<MailStore>,
    policy_path: &Path,
    cache_dir: Option<PathBuf>,
    user_kind: DemoUser,
) -> anyhow::Result<PurgeSummary> {
    let n = PURGE_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let session = SessionId(format!("purge-{}-{n}", std::process::id()));
    let user = Arc::new(StoppingUser {
        approvals: 3,
        asked: Default::default(),
        session: session.clone(),
        mail: store.clone(),
        stop: Default::default(),
    });
    let policy = Policy::load(policy_path)?;
    let approver: SharedApprover = match user_kind {
        DemoUser::Scripted => user.clone(),
        DemoUser::Terminal => Arc::new(
            TerminalApprover::for_stdin(Duration::from_secs(policy.consent_timeout_secs))
                .context("stdin is not a terminal")?,
        ),
    };
    let runtime = Runtime::new(AgentEngine::new(cache_dir)?, policy, approver)?;
    let _control = match user_kind {
        DemoUser::Scripted => Some(
            ControlSocket::start(&control::control_dir(), runtime.stop_handle())
                .context("start the control socket for the STOP")?,
        ),
        // A person stops with Ctrl-C or `agentcap stop` from another terminal.
        DemoUser::Terminal => control::stoppable(runtime.stop_handle()),
    };
    let tool = runtime.load_tool("inbox-triage")?;
    let inbox_before = store.list(INBOX, None)?.len();
    let trash_before = store.list(TRASH, None).map(|l| l.len()).unwrap_or(0);
    println!("\n=== Part 2: the agent that would not stop ======================");
    println!(
        "Session {session}: tool `purge` deletes promotions one request at a time and ignores refusals."
    );
    if user_kind == DemoUser::Terminal {
        println!(
            "Approve a few deletions, then press Ctrl-C (or run `agentcap stop {session}` in another terminal) to STOP it."
        );
    }
    let ended = match runtime
        .call(&tool, &session, "purge", &json!({"folder": INBOX}))
        .await
    {
        Ok(outcome) => format!("returned {}", outcome.result),
        Err(e) => e.to_string(),
    };
    let inbox_after: Vec<String> = store.list(INBOX, None)?.into_iter().map(|m| m.id).collect();
    let deleted = store.list(TRASH, None).map(|l| l.len()).unwrap_or(0) - trash_before;
    // The stop's acknowledgement comes after its journal record: wait for
    // it before reading the journal, so the summary never races the stop.
    let pending_stop = user.stop.lock().unwrap().take();
    let acknowledged = match pending_stop {
        Some(stop) => Some(stop.await?.context("the STOP was not acknowledged")?),
        None => None,
    };
    // The journal says when the stop was acknowledged and whether any call
    // of the session started after it.
    let records: Vec<_> = runtime
        .journal()
        .all()?
        .into_iter()
        .filter(|r| r.session == session.0)
        .collect();
    let stop_seq = records.iter().find(|r| r.kind == "stop").map(|r| r.seq);
    let calls_after_stop = match stop_seq {
        Some(stop) => records
            .iter()
            .filter(|r| r.kind == "call" && r.seq > stop)
            .count(),
        None => 0,
    };
    let (acknowledged_after_us, changed_after_stop) = match acknowledged {
        Some((report, inbox_at_ack)) => {
            let changed = inbox_at_ack
                .iter()
                .filter(|id| !inbox_after.contains(id))
                .count()
                + inbox_after
                    .iter()
                    .filter(|id| !inbox_at_ack.contains(id))
                    .count();
            (
                Some(report.acknowledged_after_us),
                changed + calls_after_stop,
            )
        }
        None => (None, calls_after_stop),
    };
    let ended = one_line(&ended, 600);
    match (stop_seq, acknowledged_after_us) {
        (Some(seq), Some(us)) => {
            println!("STOP acknowledged after {us} µs (journal #{seq}). The tool's call: {ended}.")
        }
        (Some(seq), None) => {
            println!("STOP acknowledged (journal #{seq}). The tool's call: {ended}.")
        }
        (None, _) => println!("No STOP was pressed; the tool's call: {ended}."),
    }
    println!(
        "Deleted before the stop: {deleted} (each approved by Alice). Changed after the stop: {changed_after_stop}. Still in INBOX: {}.",
        inbox_after.len()
    );
    Ok(PurgeSummary {
        session: session.0,
        inbox_before,
        deleted_before_stop: deleted,
        changed_after_stop,
        acknowledged_after_us,
        call_ended: ended,
    })
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
            println!(
                "  - {} \"{}\" — {}",
                one_line(id, 200),
                one_line(&subject_of(id), 200),
                state
            );
        }
    }
    let refusals = ids(&r["refusals"]);
    if refusals.is_empty() {
        println!("Refused:      none");
    } else {
        println!("Refused:");
        for line in refusals {
            println!("  - {}", one_line(&line, 600));
        }
    }
    println!(
        "In the mailbox now: INBOX {}, Archive {}, Trash {}",
        s.inbox, s.archive, s.trash
    );
    println!("Nothing was unlinked: restore any message by moving it back from Trash.");
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
