//! The `agentcap` command line: inspect tools, call them under a policy,
//! serve them over MCP, stop sessions, read the journal, run the demo. Thin
//! over the library; `main.rs` only calls [`main`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::consent::{DenyApprover, SessionId, SharedApprover, TerminalApprover};
use crate::control;
use crate::demo::{DemoMail, DemoUser, run_demo};
use crate::journal::Journal;
use crate::policy::ToolPolicy;
use crate::render::one_line;
use crate::runtime::read_component;
use crate::tool::ToolInfo;
use crate::{AgentEngine, Policy, Runtime};
use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

/// A WebAssembly capability runtime for AI-agent tools: every side effect
/// needs a live consent token.
#[derive(Parser)]
#[command(name = "agentcap", version, about)]
struct Cli {
    /// Do not use the on-disk cache of compiled components.
    #[arg(long, global = true)]
    no_cache: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a tool's functions (with JSON Schemas) and the capabilities it
    /// imports, without running it.
    Inspect {
        /// The component file.
        tool: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Call one function of a tool; consent is asked on the terminal or
    /// given by the policy's standing grants.
    Call {
        /// The component file.
        tool: PathBuf,
        /// The function to call (see `inspect`).
        function: String,
        /// Arguments: a JSON object keyed by parameter name.
        #[arg(long, default_value = "{}")]
        args: String,
        /// The operator's policy file. Without one, nothing is granted.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The tool's name in the policy (default: the entry whose component
        /// is TOOL, else the file name).
        #[arg(long)]
        name: Option<String>,
        /// Also serve the approvals page at this address (e.g.
        /// 127.0.0.1:0); the terminal and the page both ask, the first
        /// answer decides.
        #[arg(long, value_name = "ADDR")]
        approvals: Option<std::net::SocketAddr>,
        /// A name (or name:port) the approvals page may be reached by.
        #[arg(long, value_name = "HOST", requires = "approvals")]
        approvals_host: Vec<String>,
    },
    /// Stop a session of a running agentcap (or all of them): its tokens are
    /// revoked, pending consent requests answered `stopped`, running tools
    /// interrupted. Returns once every process acknowledged.
    Stop {
        /// The session to stop.
        #[arg(required_unless_present_any = ["all", "list"], conflicts_with_all = ["all", "list"])]
        session: Option<String>,
        /// Stop every session of every running agentcap.
        #[arg(long)]
        all: bool,
        /// Only list the sessions of running agentcaps.
        #[arg(long)]
        list: bool,
        /// A policy with a `[fleet]`: stop on every host of the fleet and
        /// report which hosts acknowledged, and how fast.
        #[arg(long, conflicts_with = "list")]
        policy: Option<PathBuf>,
    },
    /// Print the login links of the running approvals pages (they carry
    /// the page's secret), with a QR code to open one on a phone. Only the
    /// same OS user can read them.
    Approvals {
        /// Print only the links, without QR codes.
        #[arg(long)]
        no_qr: bool,
    },
    /// After `agentcap stop --all` (or STOP EVERYTHING on the page), let
    /// new sessions of every running agentcap run again. Stopped sessions
    /// stay stopped; agents start new ones.
    Resume {
        /// A policy with a `[fleet]`: resume every host of the fleet.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Serve the policy's tools to AI agents over the Model Context Protocol
    /// (stdio by default). Consent is asked through the client's
    /// elicitation; a client that cannot ask gets refusals, never approvals.
    Serve {
        /// The operator's policy file: its tools are served.
        #[arg(long)]
        policy: PathBuf,
        /// Serve streamable HTTP at this address (path `/mcp`) instead of
        /// stdio, e.g. 127.0.0.1:8765.
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// With --http: a Host name clients use besides localhost (checked
        /// against DNS rebinding). Repeatable.
        #[arg(long, value_name = "HOST", requires = "http")]
        allow_host: Vec<String>,
        /// Where the approvals page listens (its URL, with a secret, is
        /// printed at start). To reach it from a phone use e.g.
        /// 0.0.0.0:8790 with --approvals-host.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        approvals: std::net::SocketAddr,
        /// A name (or name:port) the phone uses to reach the approvals page,
        /// e.g. the machine's LAN address. Repeatable.
        #[arg(long, value_name = "HOST")]
        approvals_host: Vec<String>,
        /// Do not serve the approvals page.
        #[arg(long, conflicts_with_all = ["approvals", "approvals_host"])]
        no_approvals: bool,
    },
    /// Read and check the audit journal.
    Journal {
        /// The journal file (default: the policy's, else the user's default).
        #[arg(long, global = true)]
        journal: Option<PathBuf>,
        /// Take the journal location from this policy file.
        #[arg(long, global = true)]
        policy: Option<PathBuf>,
        /// The fleet's journal (every host's chain, in the database the
        /// policy's `[fleet]` names) instead of a local one: `tail` and
        /// `verify`.
        #[arg(long, global = true)]
        fleet: bool,
        #[command(subcommand)]
        action: JournalAction,
    },
    /// The `files` capability's trash: what tools deleted or replaced, and
    /// putting it back.
    Files {
        /// The operator's policy file (its `[files]` roots).
        #[arg(long)]
        policy: PathBuf,
        #[command(subcommand)]
        action: FilesAction,
    },
    /// Write a new tool project: its WIT (world + agentcap:tools), one
    /// exported function, a policy snippet and a README with the build
    /// command.
    New {
        /// The tool's name, a WIT name such as `mail-counter`.
        name: String,
        /// The language of the tool.
        #[arg(long, value_enum)]
        lang: crate::scaffold::Lang,
        /// Where to write it (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust only: the agentcap-sdk crate to depend on (default: the one
        /// next to the sources agentcap was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Replay the "confirm before acting" incident on bundled data, offline.
    Demo {
        /// Where to lay out the demo (default: a new temporary folder).
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Use the scripted user even on a terminal.
        #[arg(long)]
        scripted: bool,
        /// Only lay out the workspace (tools, mail, forum, database, policy)
        /// and print the policy's path, e.g. for `agentcap serve`.
        #[arg(long, requires = "workspace")]
        prepare_only: bool,
        /// Serve the mailbox over IMAP from a Dovecot the demo starts on
        /// loopback (needs `dovecot`; also `AGENTCAP_DEMO_IMAP=1`).
        #[arg(long, conflicts_with = "prepare_only")]
        imap: bool,
    },
}

#[derive(Subcommand)]
enum JournalAction {
    /// Show the last records.
    Tail {
        /// How many.
        #[arg(short = 'n', default_value_t = 20)]
        count: usize,
        /// Keep printing new records as they are written (Ctrl-C to end).
        #[arg(long)]
        follow: bool,
        /// Only this session's records.
        #[arg(long)]
        session: Option<String>,
    },
    /// Check the hash chain; exits 1 and names the first broken record.
    Verify,
    /// Write every record to stdout, or copy them into the fleet's journal.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Copy the records the fleet's journal lacks into it (the
        /// policy's `[fleet]`), as this host, instead of printing them.
        #[arg(long)]
        to_fleet: bool,
    },
}

#[derive(Subcommand)]
enum FilesAction {
    /// List the trash of every root: restore handles, original paths, sizes.
    Trash,
    /// Put a deleted or replaced file back where it was (nothing existing
    /// is replaced).
    Restore {
        /// The restore handle (`root#id`, from `trash` or the journal).
        handle: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
}

fn cache_dir(no_cache: bool) -> Option<PathBuf> {
    if no_cache {
        None
    } else {
        AgentEngine::default_cache_dir()
    }
}

/// Run the command line (parses `std::env::args`).
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGENTCAP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
                // The MCP library's debug logs carry whole messages:
                // `requestState` handles and consent prompts. Logs go to
                // stderr, which an MCP client owns, so they stay out.
                .add_directive("rmcp=info".parse().expect("a valid directive")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(async {
        let outcome = run(cli).await;
        control::settle().await;
        outcome
    }) {
        Ok(code) => code,
        Err(e) => {
            // Errors can quote a tool's output (a trap's log tail).
            eprintln!(
                "error: {}",
                crate::render::block(&format!("{e:#}"), 64 * 1024)
            );
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect { tool, json } => inspect(&tool, json, cache_dir(cli.no_cache)),
        Command::Call {
            tool,
            function,
            args,
            policy,
            name,
            approvals,
            approvals_host,
        } => {
            call(
                &tool,
                &function,
                &args,
                policy.as_deref(),
                name,
                approvals.map(|addr| (addr, approvals_host)),
                cache_dir(cli.no_cache),
            )
            .await
        }
        Command::Stop {
            session,
            all,
            list,
            policy: Some(policy),
        } if !list => {
            let event = match session {
                Some(session) if !all => crate::fleet::FleetEvent::StopSession {
                    session,
                    by: "agentcap stop (fleet)".into(),
                },
                _ => crate::fleet::FleetEvent::StopAll {
                    by: "agentcap stop --all (fleet)".into(),
                },
            };
            fleet_command(&policy, event).await
        }
        Command::Stop {
            session, all, list, ..
        } => stop_command(session, all, list).await,
        Command::Resume {
            policy: Some(policy),
        } => {
            let event = crate::fleet::FleetEvent::Resume {
                by: "agentcap resume (fleet)".into(),
            };
            fleet_command(&policy, event).await
        }
        Command::Resume { policy: None } => resume_command().await,
        Command::Approvals { no_qr } => approvals_command(!no_qr),
        Command::Serve {
            policy,
            http,
            allow_host,
            approvals,
            approvals_host,
            no_approvals,
        } => {
            let page = (!no_approvals).then_some((approvals, approvals_host));
            serve(&policy, http, allow_host, page, cache_dir(cli.no_cache)).await
        }
        Command::Journal {
            journal,
            policy,
            fleet: true,
            action,
        } => fleet_journal_command(journal, policy, action).await,
        Command::Journal {
            journal,
            policy,
            fleet: false,
            action,
        } => journal_command(journal, policy, action).await,
        Command::Files { policy, action } => files_command(&policy, action),
        Command::New {
            name,
            lang,
            dir,
            sdk,
        } => new_tool(&name, lang, dir, sdk),
        Command::Demo {
            workspace,
            scripted,
            prepare_only,
            imap,
        } => {
            let workspace = match workspace {
                Some(w) => w,
                None => tempfile::Builder::new()
                    .prefix("agentcap-demo-")
                    .tempdir()
                    .context("create a temporary folder for the demo")?
                    .keep(),
            };
            if prepare_only {
                let policy = crate::demo::prepare_workspace(&workspace)
                    .with_context(|| format!("cannot lay out {}", workspace.display()))?;
                println!("{}", policy.display());
                return Ok(ExitCode::SUCCESS);
            }
            let user = if scripted || !crate::demo::interactive() {
                DemoUser::Scripted
            } else {
                DemoUser::Terminal
            };
            let imap = imap || std::env::var_os("AGENTCAP_DEMO_IMAP").is_some_and(|v| v == "1");
            let mail = if imap {
                DemoMail::Imap
            } else {
                DemoMail::Maildir
            };
            run_demo(&workspace, user, cache_dir(cli.no_cache), mail).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Write a stop (or resume) to the fleet the policy names, wait for every
/// live host to acknowledge it (10 s at most), and report each.
async fn fleet_command(
    policy_path: &std::path::Path,
    event: crate::fleet::FleetEvent,
) -> anyhow::Result<ExitCode> {
    use crate::fleet;
    let policy = Policy::load(policy_path)?;
    let settings = policy
        .fleet
        .as_ref()
        .with_context(|| format!("{} has no [fleet]", policy_path.display()))?;
    let (mut client, _connection) = fleet::connect(settings, &policy.base_dir)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the fleet's database: {e}"))?;
    fleet::ensure_schema(&mut client)
        .await
        .map_err(|e| anyhow::anyhow!("the fleet's database: {e}"))?;
    let origin = format!("cli on {}#{}", settings.host_name(), std::process::id());
    let id = fleet::write_event(&mut client, &event, &origin)
        .await
        .map_err(|e| anyhow::anyhow!("cannot write the stop to the fleet's database: {e}"))?;
    println!("written to the fleet's database as event #{id}; waiting for the hosts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (acks, waiting) = loop {
        let (acks, waiting) = fleet::acknowledgements(&client, id)
            .await
            .map_err(|e| anyhow::anyhow!("reading acknowledgements: {e}"))?;
        if waiting.is_empty() || std::time::Instant::now() >= deadline {
            break (acks, waiting);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    for ack in &acks {
        println!(
            "host {}: acknowledged after {:.1} ms ({} session(s) stopped; process {})",
            one_line(&ack.host, 200),
            ack.after_us as f64 / 1000.0,
            ack.stopped,
            one_line(&ack.instance, 300)
        );
    }
    for host in &waiting {
        eprintln!(
            "error: host process {} did not acknowledge within 10 s; while it cannot reach the fleet's database it refuses every effect, but check it",
            one_line(host, 200)
        );
    }
    if acks.is_empty() && waiting.is_empty() {
        println!("no host of the fleet is running");
    }
    if let crate::fleet::FleetEvent::StopAll { .. } = event {
        let on = if waiting.is_empty() {
            "every host"
        } else {
            "every host that acknowledged (not yet on those named above)"
        };
        println!(
            "everything is stopped on {on}: new sessions start stopped until someone runs `agentcap resume --policy {}`",
            one_line(&policy_path.display().to_string(), 300)
        );
    }
    Ok(if waiting.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// Join the policy's fleet, if it names one, and wait until this host is in
/// touch with it (effects are refused until then); says so on stderr.
async fn join_fleet(runtime: &Runtime) -> Option<crate::fleet::FleetMember> {
    let member = runtime.start_fleet()?;
    let host = runtime.gate().fleet().map(|f| f.host().to_string());
    let host = one_line(host.as_deref().unwrap_or(""), 200);
    let wait = runtime
        .policy()
        .fleet
        .as_ref()
        .map(|f| Duration::from_millis(f.out_of_reach_after_ms))
        .unwrap_or(Duration::from_secs(2));
    if member.wait_in_touch(wait).await {
        eprintln!("joined the fleet as host {host}");
    } else if let Some(why) = member.out_of_touch() {
        eprintln!("warning: {}", one_line(&why, 1000));
    }
    Some(member)
}

async fn resume_command() -> anyhow::Result<ExitCode> {
    let dir = control::control_dir();
    let delivery = control::send(&dir, &control::Request::Resume)
        .await
        .with_context(|| {
            format!(
                "cannot reach running agentcap processes in {}",
                dir.display()
            )
        })?;
    for (socket, why) in &delivery.undelivered {
        eprintln!("error: could not deliver to {} ({why})", socket.display());
    }
    if delivery.replies.is_empty() {
        println!(
            "no running agentcap found (control sockets in {})",
            dir.display()
        );
        return Ok(ExitCode::from(1));
    }
    for reply in &delivery.replies {
        println!(
            "process {}: new sessions may run again{}",
            reply.pid,
            if reply.halted { " (still halted?)" } else { "" }
        );
    }
    Ok(if delivery.undelivered.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

async fn stop_command(session: Option<String>, all: bool, list: bool) -> anyhow::Result<ExitCode> {
    let dir = control::control_dir();
    let request = match (session, all, list) {
        (_, _, true) => control::Request::Sessions,
        (_, true, _) => control::Request::StopAll,
        (Some(session), _, _) => control::Request::Stop { session },
        (None, false, false) => bail!("name a session, or use --all or --list"),
    };
    let delivery = control::send(&dir, &request).await.with_context(|| {
        format!(
            "cannot reach running agentcap processes in {}",
            dir.display()
        )
    })?;
    // A process that did not answer may still be running tools: say so,
    // loudly, and never report it as "nothing running".
    for (socket, why) in &delivery.undelivered {
        eprintln!(
            "error: could not deliver to {} ({why}); that process may still be running: stop it with SIGTERM or kill it",
            socket.display()
        );
    }
    let replies = delivery.replies;
    let undelivered = !delivery.undelivered.is_empty();
    if replies.is_empty() && undelivered {
        return Ok(ExitCode::from(3));
    }
    if replies.is_empty() {
        println!(
            "no running agentcap found (control sockets in {})",
            dir.display()
        );
        return Ok(ExitCode::from(1));
    }
    let mut stopped_any = false;
    for reply in &replies {
        for s in &reply.stopped {
            stopped_any = true;
            println!(
                "stopped session {} in process {}: {} live token(s) revoked, acknowledged after {} µs",
                one_line(&s.session, 200),
                reply.pid,
                s.revoked,
                s.acknowledged_after_us
            );
        }
        if matches!(request, control::Request::Sessions) {
            for s in &reply.sessions {
                println!(
                    "process {} session {} started {} tools [{}]{}",
                    reply.pid,
                    one_line(&s.id, 200),
                    one_line(&s.started, 64),
                    one_line(&s.tools.join(", "), 400),
                    if s.stopped { " (stopped)" } else { "" }
                );
            }
        }
    }
    if let control::Request::Stop { session } = &request {
        let known = replies
            .iter()
            .any(|r| r.sessions.iter().any(|s| &s.id == session));
        if !known {
            println!("no running agentcap has a session named {session}");
            return Ok(ExitCode::from(1));
        }
    }
    if matches!(request, control::Request::StopAll) {
        if !stopped_any && !undelivered {
            println!("no running session to stop");
        }
        println!(
            "everything is stopped: new sessions start stopped until someone runs `agentcap resume` (or presses Resume on the approvals page)"
        );
    }
    Ok(if undelivered {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

async fn journal_command(
    journal: Option<PathBuf>,
    policy: Option<PathBuf>,
    action: JournalAction,
) -> anyhow::Result<ExitCode> {
    let path = match (journal, &policy) {
        (Some(j), _) => j,
        (None, Some(p)) => Policy::load(p)?.journal_path(),
        (None, None) => Journal::default_path(),
    };
    if !path.exists() {
        bail!(
            "no journal at {} (use --journal or --policy)",
            path.display()
        );
    }
    let journal = Journal::open(&path, false)?;
    match action {
        JournalAction::Tail {
            count,
            follow,
            session,
        } => {
            let mut last = 0;
            for r in journal.tail(count, session.as_deref())? {
                println!("{}", r.summary_line());
                last = r.seq;
            }
            if follow {
                loop {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    for r in journal.after(last, session.as_deref())? {
                        println!("{}", r.summary_line());
                        last = r.seq;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JournalAction::Verify => {
            let check = journal.verify()?;
            if !check.unfinished.is_empty() {
                let list: Vec<String> = check.unfinished.iter().map(|s| format!("#{s}")).collect();
                println!(
                    "started, outcome unknown (the process ended during the effect): {}",
                    list.join(", ")
                );
            }
            match check.broken {
                None => {
                    println!(
                        "ok: {} records, chain intact ({})",
                        check.records,
                        path.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Some((seq, why)) => {
                    println!("BROKEN at record #{seq}: {why} ({})", path.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
        JournalAction::Export { to_fleet: true, .. } => {
            let policy = policy.context("--to-fleet needs --policy")?;
            let (client, settings) = fleet_client(&policy).await?;
            let journal = Arc::new(journal);
            let mut copying = crate::fleet_journal::Copying::default();
            let host = settings.host_name();
            let mut total = 0;
            loop {
                let copied =
                    crate::fleet_journal::copy_new(&client, &journal, &host, &mut copying, 1000)
                        .await
                        .map_err(|e| anyhow::anyhow!(e))
                        .context("cannot copy the journal into the fleet's")?;
                total += copied;
                if copied < 1000 {
                    break;
                }
                eprintln!("copied {total} records...");
            }
            println!(
                "copied {total} record(s) of {} into the fleet's journal as host {}",
                one_line(&path.display().to_string(), 300),
                one_line(&host, 200)
            );
            Ok(ExitCode::SUCCESS)
        }
        JournalAction::Export {
            format: ExportFormat::Jsonl,
            to_fleet: false,
        } => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for r in journal.all()? {
                match writeln!(out, "{}", serde_json::to_string(&r)?) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        return Ok(ExitCode::SUCCESS);
                    }
                    other => other?,
                }
            }
            // The anchored head last, so a copy kept elsewhere can later
            // prove that records were removed.
            let head = journal.anchored_head()?;
            match writeln!(out, "{}", serde_json::json!({ "head": head })) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A connection to the fleet's database of `policy`.
async fn fleet_client(
    policy: &Path,
) -> anyhow::Result<(crate::fleet::DatabaseClient, crate::fleet::FleetSettings)> {
    let loaded = Policy::load(policy)?;
    let settings = loaded.fleet.clone().with_context(|| {
        format!(
            "{} has no [fleet] table",
            one_line(&policy.display().to_string(), 300)
        )
    })?;
    let (mut client, _connection) = crate::fleet::connect(&settings, &loaded.base_dir)
        .await
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot reach the fleet's database")?;
    crate::fleet::ensure_schema(&mut client)
        .await
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot create the fleet's tables")?;
    Ok((client, settings))
}

/// `agentcap journal --fleet ...`: the fleet's journal in its database.
async fn fleet_journal_command(
    journal: Option<PathBuf>,
    policy: Option<PathBuf>,
    action: JournalAction,
) -> anyhow::Result<ExitCode> {
    let policy = policy.context("--fleet needs --policy")?;
    if journal.is_some() {
        bail!("--fleet reads the fleet's journal; --journal names a local one");
    }
    let (client, _) = fleet_client(&policy).await?;
    match action {
        JournalAction::Verify => {
            let chains = crate::fleet_journal::verify(&client)
                .await
                .map_err(|e| anyhow::anyhow!(e))
                .context("cannot read the fleet's journal")?;
            let mut broken = false;
            let mut chains_of_host = std::collections::BTreeMap::<&str, usize>::new();
            for c in &chains {
                *chains_of_host.entry(c.host.as_str()).or_default() += 1;
                // Read from the database: any text, rendered.
                let id: String = c.chain.chars().take(12).collect();
                let mut unfinished = if c.unfinished > 0 {
                    format!(", {} started with outcome unknown", c.unfinished)
                } else {
                    String::new()
                };
                if c.hosts.len() > 1 {
                    unfinished.push_str(&format!(
                        "; its rows name hosts {} (a host named by its process copies under each start's name; otherwise rows were relabelled)",
                        c.hosts.join(", ")
                    ));
                }
                match &c.broken {
                    None => println!(
                        "ok: host {} (chain {}): {} records, chain intact{unfinished}",
                        c.host,
                        one_line(&id, 20),
                        c.records
                    ),
                    Some((seq, why)) => {
                        broken = true;
                        println!(
                            "BROKEN: host {} (chain {}) at record #{seq}: {}",
                            c.host,
                            one_line(&id, 20),
                            one_line(why, 500)
                        );
                    }
                }
            }
            for (host, n) in chains_of_host.iter().filter(|(_, n)| **n > 1) {
                println!(
                    "note: host {host} has {n} chains (its journal was started anew, or a chain was planted in the database)"
                );
            }
            if chains.is_empty() {
                println!("the fleet's journal is empty");
            } else {
                println!(
                    "the database's copy shows each chain intact, not complete: records removed from a chain's end, or a whole chain, are found by `agentcap journal verify` on that host (against its head anchor)"
                );
            }
            Ok(if broken {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        JournalAction::Tail {
            count,
            follow,
            session,
        } => {
            if session.is_some() {
                bail!("--session is not supported with --fleet yet");
            }
            let read = |after: Option<i64>, n: i64| {
                let client = &client;
                async move {
                    crate::fleet_journal::tail(client, n, after)
                        .await
                        .map_err(|e| anyhow::anyhow!(e))
                        .context("cannot read the fleet's journal")
                }
            };
            // Ids are taken when rows are written but become visible when
            // they commit, not always in order: each look reaches back a
            // little and skips what was shown.
            let mut shown = std::collections::BTreeSet::new();
            for r in read(None, count as i64).await? {
                println!("{}", r.summary_line());
                shown.insert(r.id);
            }
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            // What is already there counts as shown.
            if let Some(newest) = read(None, 1).await?.last() {
                shown.extend(
                    read(Some(newest.id - 1000), 1000)
                        .await?
                        .iter()
                        .map(|r| r.id),
                );
            }
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let newest = shown.last().copied().unwrap_or(0);
                for r in read(Some(newest - 1000), 100_000).await? {
                    if shown.insert(r.id) {
                        println!("{}", r.summary_line());
                    }
                }
                while shown.len() > 10_000 {
                    shown.pop_first();
                }
            }
        }
        JournalAction::Export { .. } => {
            bail!("export reads a local journal: use --policy without --fleet, with --to-fleet")
        }
    }
}

fn new_tool(
    name: &str,
    lang: crate::scaffold::Lang,
    dir: Option<PathBuf>,
    sdk: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let sdk = sdk.or_else(crate::scaffold::default_sdk);
    let written = crate::scaffold::new_tool(name, lang, &dir, sdk.as_deref())?;
    println!(
        "created {} ({} files); its README.md says how to build it",
        one_line(&dir.display().to_string(), 200),
        written.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect(path: &Path, json: bool, cache: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let bytes = read_component(path)?;
    let engine = AgentEngine::new(cache)?;
    let compiled = engine
        .compile(&bytes)
        .with_context(|| format!("cannot load {}", path.display()))?;
    let info = ToolInfo::describe(engine.engine(), &compiled.component, &compiled.digest);
    if json {
        println!("{}", serde_json::to_string_pretty(&info.to_json())?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} (sha256 {})", path.display(), info.digest);
    println!("Capabilities imported: {}", {
        let caps = info.capabilities();
        if caps.is_empty() {
            "none".to_string()
        } else {
            caps.join(", ")
        }
    });
    println!("Functions:");
    for f in &info.functions {
        println!("  {}", f.name);
        println!("    arguments: {}", serde_json::to_string(&f.input_schema)?);
        if let Some(out) = &f.output_schema {
            println!("    result:    {}", serde_json::to_string(out)?);
        }
        if let Some(why) = &f.unavailable {
            println!("    unavailable: {why}");
        }
    }
    println!("Imports:");
    for i in &info.imports {
        println!(
            "  {} ({})",
            i.name,
            serde_json::to_value(&i.kind)?["kind"]
                .as_str()
                .unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn call(
    path: &Path,
    function: &str,
    args: &str,
    policy_path: Option<&Path>,
    name: Option<String>,
    page: Option<(std::net::SocketAddr, Vec<String>)>,
    cache: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let args: serde_json::Value =
        serde_json::from_str(args).with_context(|| format!("--args is not valid JSON: {args}"))?;
    let policy = match policy_path {
        Some(p) => Policy::load(p)?,
        None => Policy::deny_all(&std::env::var("USER").unwrap_or_else(|_| "user".into())),
    };
    let (name, grants) = match name {
        Some(n) => {
            let grants = policy.tools.get(&n).cloned();
            let Some(grants) = grants else {
                bail!("the policy has no tool named `{n}`");
            };
            (n, grants)
        }
        None => match policy.tool_by_component(path) {
            Some((n, t)) => (n.to_string(), t.clone()),
            None => {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "tool".into());
                eprintln!(
                    "note: the policy does not list {}; running it as `{stem}` with no capabilities granted",
                    path.display()
                );
                (
                    stem,
                    ToolPolicy {
                        component: path.to_path_buf(),
                        grants: Vec::new(),
                        limits: Default::default(),
                    },
                )
            }
        },
    };
    let mut channels: Vec<SharedApprover> = Vec::new();
    if let Some(t) = TerminalApprover::for_stdin(Duration::from_secs(policy.consent_timeout_secs)) {
        channels.push(Arc::new(t));
    }
    let board = crate::approvals::ApprovalsBoard::new();
    if page.is_some() {
        channels.push(board.approver());
    }
    let approver: SharedApprover = match channels.len() {
        0 => Arc::new(DenyApprover::new(
            "stdin is not a terminal, so no human can be asked; only standing grants apply",
        )),
        1 => channels.remove(0),
        _ => Arc::new(crate::consent::FirstAnswer::new(channels)),
    };
    let bytes = read_component(path)?;
    let engine = AgentEngine::new(cache)?;
    let runtime = Runtime::new(engine, policy, approver)?;
    let tool = runtime.load_component(&name, grants, &bytes)?;
    let session = SessionId(format!("cli-{}", std::process::id()));
    let _control = control::stoppable(runtime.stop_handle());
    let fleet = join_fleet(&runtime).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _page_stops = shutdown.clone().drop_guard();
    let mut login = None;
    let mut page_task = None;
    if let Some((addr, hosts)) = page {
        let (link, _, task) =
            start_approvals_page(&runtime, board, addr, &hosts, shutdown.clone()).await?;
        login = Some(link);
        page_task = Some(task);
    }
    eprintln!("session {session} (stop it with: agentcap stop {session})");
    let outcome = runtime.call(&tool, &session, function, &args).await;
    // A STOP pressed on the page ends the call: its answer is sent before
    // the page closes.
    if let Some(task) = page_task {
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
    }
    if let Some(fleet) = fleet
        && let Err(unshared) = fleet.leave().await
    {
        eprintln!("error: {}", one_line(&unshared, 2000));
    }
    let outcome = outcome?;
    drop(login);
    for (stream, text) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        for line in text.lines() {
            // The tool's own output: through the rendering path, never raw.
            eprintln!("[{name} {stream}] {}", one_line(line, 2000));
        }
    }
    println!("{}", serde_json::to_string_pretty(&outcome.result)?);
    Ok(if outcome.is_error {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn serve(
    policy_path: &Path,
    http: Option<std::net::SocketAddr>,
    allow_host: Vec<String>,
    page: Option<(std::net::SocketAddr, Vec<String>)>,
    cache: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let timeout = Duration::from_secs(policy.consent_timeout_secs);
    // Channels asked alongside the client: the approvals page, and over HTTP
    // an operator's terminal (over stdio the terminal carries the protocol).
    let mut channels: Vec<SharedApprover> = Vec::new();
    if http.is_some()
        && let Some(terminal) = TerminalApprover::for_stdin(timeout)
    {
        channels.push(Arc::new(terminal));
    }
    let board = crate::approvals::ApprovalsBoard::new();
    if page.is_some() {
        channels.push(board.approver());
    }
    let fallback: SharedApprover =
        Arc::new(DenyApprover::new("no approver is attached to this runtime"));
    let engine = AgentEngine::new(cache)?;
    let names: Vec<String> = policy.tools.keys().cloned().collect();
    if names.is_empty() {
        bail!("{} lists no tools to serve", policy_path.display());
    }
    let runtime = Arc::new(Runtime::new(engine, policy, fallback)?);
    let mut tools = Vec::new();
    for name in &names {
        tools.push(
            runtime
                .load_tool(name)
                .with_context(|| format!("cannot load tool `{name}`"))?,
        );
    }
    let server = crate::mcp::McpServer::new(runtime.clone(), tools, channels)?;
    let _control = control::stoppable_with(runtime.stop_handle(), true);
    let fleet = join_fleet(&runtime).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _login = match page {
        Some((addr, hosts)) => {
            let (login, address, _) =
                start_approvals_page(&runtime, board.clone(), addr, &hosts, shutdown.clone())
                    .await?;
            server.link_page(crate::mcp::PageLinks { board, address });
            Some(login)
        }
        None => None,
    };
    eprintln!(
        "agentcap serve: {} MCP tool(s) from {} ({}); journal {}; stop with `agentcap stop --all`",
        server.tools().len(),
        policy_path.display(),
        names.join(", "),
        runtime.policy().journal_path().display()
    );
    // The fleet membership outlives the serving (however it ends): stops
    // pressed here are written to the fleet before the process ends.
    let served: anyhow::Result<()> = async {
        match http {
            None => server.serve_stdio().await?,
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                let bound = listener.local_addr()?;
                let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
                hosts.extend(allow_host);
                // A bearer secret is required on loopback too: every local
                // user (and every local process) can reach a loopback port.
                let from_env = std::env::var("AGENTCAP_MCP_SECRET")
                    .ok()
                    .filter(|s| !s.is_empty());
                let bearer = from_env
                    .clone()
                    .unwrap_or_else(|| crate::secret::random_hex(24));
                eprintln!("agentcap serve: MCP over streamable HTTP at http://{bound}/mcp");
                match from_env {
                    Some(_) => eprintln!(
                        "agentcap serve: clients must send `Authorization: Bearer <AGENTCAP_MCP_SECRET>`"
                    ),
                    None => eprintln!(
                        "agentcap serve: clients must send `Authorization: Bearer {bearer}` (set AGENTCAP_MCP_SECRET to choose it)"
                    ),
                }
                server
                    .serve_http(listener, hosts, Some(bearer), shutdown.clone())
                    .await?;
            }
        }
        Ok(())
    }
    .await;
    if let Some(fleet) = fleet
        && let Err(unshared) = fleet.leave().await
    {
        eprintln!("error: {}", one_line(&unshared, 2000));
    }
    served?;
    shutdown.cancel();
    Ok(ExitCode::SUCCESS)
}

/// Serve the approvals page for `runtime` on `addr` until `shutdown`. The
/// login link (it carries the secret) goes only where the agent's side
/// cannot read it: a 0600 file in the control folder (what `agentcap
/// approvals` prints) and the operator's terminal, never stdout or stderr,
/// which an MCP client owns. The returned guard removes the file; the
/// returned task ends after `shutdown` once the requests being answered are.
async fn start_approvals_page(
    runtime: &Runtime,
    board: Arc<crate::approvals::ApprovalsBoard>,
    addr: std::net::SocketAddr,
    hosts: &[String],
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<(
    crate::approvals::LoginLink,
    String,
    tokio::task::JoinHandle<()>,
)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the approvals page"))?;
    let bound = listener.local_addr()?;
    let page = crate::approvals::ApprovalsPage::new(
        board,
        runtime.stop_handle(),
        runtime.journal().clone(),
        bound,
        hosts,
    );
    let link = crate::approvals::LoginLink::write(&control::control_dir(), &page.url(bound))
        .context("cannot write the approvals page's login link")?;
    eprintln!(
        "agentcap: approvals page (pending requests, activity, STOP) at {}; for the login link run `agentcap approvals` as this user",
        page.address(bound)
    );
    crate::approvals::show_on_terminal(&page.url(bound));
    let address = page.address(bound);
    let task = tokio::spawn(async move {
        if let Err(e) = page.serve(listener, shutdown).await {
            eprintln!("agentcap: the approvals page stopped: {e}");
        }
    });
    Ok((link, address, task))
}

/// `agentcap approvals`: the login links of the running approvals pages,
/// each with a QR code for a phone.
fn approvals_command(qr: bool) -> anyhow::Result<ExitCode> {
    let dir = control::control_dir();
    let links = crate::approvals::LoginLink::find(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?;
    if links.is_empty() {
        println!(
            "no approvals page is running (login links are kept in {})",
            dir.display()
        );
        return Ok(ExitCode::from(1));
    }
    for (pid, url) in links {
        println!("approvals page of process {pid}: {url}");
        if qr {
            println!("{}", crate::approvals::qr_code(&url));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn files_command(policy_path: &Path, action: FilesAction) -> anyhow::Result<ExitCode> {
    use crate::capability::files::{FileStore, FilesSettings};
    let policy = Policy::load(policy_path)?;
    let settings = policy
        .backend("files")
        .and_then(|s| s.get::<FilesSettings>())
        .with_context(|| format!("{} has no [files] table", policy_path.display()))?;
    let store = FileStore::open(settings, |p| policy.resolve(p))
        .context("cannot open the [files] roots")?;
    match action {
        FilesAction::Trash => {
            let entries = store.trash_entries().context("cannot read the trash")?;
            if entries.is_empty() {
                println!("The trash is empty.");
            }
            for e in entries {
                println!(
                    "{}  {}  {} bytes",
                    one_line(&e.handle, 80),
                    one_line(&e.origin, 200),
                    e.size
                );
            }
        }
        FilesAction::Restore { handle } => {
            let path = store
                .restore(&handle)
                .with_context(|| format!("cannot restore {}", one_line(&handle, 80)))?;
            println!("Restored {}.", one_line(&path.to_string(), 200));
        }
    }
    Ok(ExitCode::SUCCESS)
}
