//! The journal (invariant 7): every path through the Gate leaves the
//! expected records, an unwritable journal stops the effect, and a process
//! killed at random moments leaves a verifiable chain in which every effect
//! found on disk has its intent record.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use agentcap::consent::{Decision, ScriptedApprover, SessionId};
use agentcap::journal::{Journal, Record};
use agentcap::{LoadedTool, Runtime};
use agentcap_tests::{Workspace, guest, shared};
use serde_json::{Value, json};

const POLICY: &str = r#"
user = "alice"
consent_timeout_secs = 1
[mail]
maildir = "Maildir"
[tools.hostile]
component = "hostile_mail.wasm"
[[tools.hostile.grants]]
capability = "mail.read"
mode = "standing"
folders = ["INBOX"]
[[tools.hostile.grants]]
capability = "mail.list"
mode = "standing"
folders = ["INBOX"]
[[tools.hostile.grants]]
capability = "mail.delete"
mode = "ask"
folders = ["INBOX"]
expires_after_secs = 1
"#;

fn load(
    ws: &Workspace,
    decide: fn(&agentcap::consent::ConsentPrompt) -> Decision,
) -> (Runtime, LoadedTool) {
    ws.load_guest(
        POLICY,
        shared(ScriptedApprover::new("test-user", decide)),
        "hostile",
        "hostile_mail",
    )
}

async fn call(runtime: &Runtime, tool: &LoadedTool, function: &str, args: Value) {
    // The outcome itself is asserted in hostile_mail.rs; here only the journal.
    let _ = runtime
        .call(tool, &SessionId("s".into()), function, &args)
        .await;
}

/// (kind, capability, decided_by, outcome) of every record, in order.
fn trail(runtime: &Runtime) -> Vec<(String, String, String, String)> {
    let records = runtime.journal().all().unwrap();
    let v = runtime.journal().verify().unwrap();
    assert!(v.broken.is_none(), "{:?}", v.broken);
    records
        .into_iter()
        .map(|r: Record| {
            (
                r.kind,
                r.capability.unwrap_or_default(),
                r.decided_by.unwrap_or_default(),
                r.outcome.unwrap_or_default(),
            )
        })
        .collect()
}

fn kinds(trail: &[(String, String, String, String)]) -> Vec<&str> {
    trail.iter().map(|t| t.0.as_str()).collect()
}

#[tokio::test]
async fn approved_then_used_up() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, Decision::approve_all);
    let ids = ws.ids_in("INBOX");
    call(
        &runtime,
        &tool,
        "reuse-token",
        json!({"first": ids[0], "second": ids[1]}),
    )
    .await;
    let t = trail(&runtime);
    assert_eq!(
        kinds(&t),
        [
            "consent-request",
            "decision",
            "token-minted",
            "call",
            "outcome",
            "refusal"
        ]
    );
    assert_eq!(t[1].2, "human via test-user");
    assert_eq!(t[1].3, "approved 2 of 2");
    assert_eq!(t[4].3, "ok: moved 1 to Trash");
    assert!(t[5].3.contains("no uses left"), "{t:?}");
}

#[tokio::test]
async fn declined_leaves_no_token_and_no_call() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, |_| Decision::Decline("no".into()));
    call(
        &runtime,
        &tool,
        "delete-beyond-approval",
        json!({"ids": ws.ids_in("INBOX")[..2]}),
    )
    .await;
    let t = trail(&runtime);
    assert_eq!(kinds(&t), ["consent-request", "decision"]);
    assert_eq!(t[1].2, "human via test-user");
    assert!(t[1].3.starts_with("declined: "), "{t:?}");
}

#[tokio::test]
async fn timed_out_is_recorded_as_such() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, |_| Decision::TimedOut);
    call(
        &runtime,
        &tool,
        "delete-beyond-approval",
        json!({"ids": ws.ids_in("INBOX")[..1]}),
    )
    .await;
    let t = trail(&runtime);
    assert_eq!(kinds(&t), ["consent-request", "decision"]);
    assert!(t[1].3.starts_with("timed-out: "), "{t:?}");
}

#[tokio::test]
async fn expired_and_out_of_scope_are_refusals() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, |p| {
        Decision::Approve(vec![0; usize::from(!p.items.is_empty())])
    });
    let ids = ws.ids_in("INBOX");
    call(
        &runtime,
        &tool,
        "delete-after-expiry",
        json!({"id": ids[0], "wait-ms": 1200}),
    )
    .await;
    call(
        &runtime,
        &tool,
        "delete-beyond-approval",
        json!({"ids": ids[..3]}),
    )
    .await;
    call(
        &runtime,
        &tool,
        "list-other-folder",
        json!({"granted": "Archive", "other": "Archive"}),
    )
    .await;
    let t = trail(&runtime);
    let refusals: Vec<&str> = t
        .iter()
        .filter(|r| r.0 == "refusal")
        .map(|r| r.3.as_str())
        .collect();
    assert_eq!(refusals.len(), 2, "{t:?}");
    assert!(refusals[0].contains("expired"), "{refusals:?}");
    assert!(refusals[1].contains("was not approved"), "{refusals:?}");
    let last = t.last().unwrap();
    assert_eq!((last.0.as_str(), last.2.as_str()), ("decision", "policy"));
    assert!(
        last.3.starts_with("not-granted: ") && last.3.contains("outside the grant"),
        "{last:?}"
    );
    assert!(
        !t.iter().any(|r| r.0 == "call"),
        "no refused call may be journaled as started"
    );
}

#[tokio::test]
async fn forged_handles_are_recorded_as_tool_failures() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, Decision::approve_all);
    call(
        &runtime,
        &tool,
        "forge-token",
        json!({"id": ws.ids_in("INBOX")[0], "handle": 3}),
    )
    .await;
    let t = trail(&runtime);
    assert_eq!(kinds(&t), ["tool-failure"]);
    assert!(t[0].3.contains("unknown handle index 3"), "{t:?}");
}

#[tokio::test]
async fn an_unwritable_journal_stops_the_effect() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, Decision::approve_all);
    let before = ws.snapshot();
    let db = rusqlite::Connection::open(runtime.journal().path()).unwrap();
    db.execute_batch("DROP TABLE records").unwrap();
    let outcome = runtime
        .call(
            &tool,
            &SessionId("s".into()),
            "delete-beyond-approval",
            &json!({"ids": ws.ids_in("INBOX")[..2]}),
        )
        .await
        .unwrap();
    let err = outcome.result["err"].as_str().unwrap();
    assert!(err.contains("journal cannot be written"), "{err}");
    assert_eq!(ws.snapshot(), before, "no journal, no effect");
}

#[test]
fn sigkill_at_random_moments_never_loses_an_intent() {
    const TRIALS: usize = 50;
    let mut rng = agentcap_tests::Rng::from_env("AGENTCAP_CRASH_SEED");
    let seed = rng.seed;
    let cache = tempfile::tempdir().unwrap();
    let mut killed_mid_effect = 0;
    let mut deleted_total = 0;
    for trial in 0..TRIALS {
        let ws = Workspace::new();
        let policy = format!(
            "user = \"alice\"\n[mail]\nmaildir = \"Maildir\"\n[journal]\npath = \"journal.sqlite\"\n\
             [tools.sweeper]\ncomponent = {:?}\n\
             [[tools.sweeper.grants]]\ncapability = \"mail.list\"\nmode = \"standing\"\n\
             [[tools.sweeper.grants]]\ncapability = \"mail.delete\"\nmode = \"standing\"\n",
            guest("mail_sweeper")
        );
        std::fs::write(ws.dir.path().join("agentcap.toml"), policy).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-child"))
            .arg(ws.dir.path())
            .arg(cache.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "started", "trial {trial}: child did not start");
        std::thread::sleep(Duration::from_micros(rng.below(80_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let journal = Journal::open(&ws.dir.path().join("journal.sqlite"), false).unwrap();
        let check = journal.verify().unwrap();
        assert!(
            check.broken.is_none(),
            "trial {trial} (seed {seed}): chain broken: {:?}",
            check.broken
        );
        killed_mid_effect += check.unfinished.len();
        let records = journal.all().unwrap();
        let in_trash: Vec<String> = ws.ids_in("Trash");
        deleted_total += in_trash.len();
        for moved in &in_trash {
            let original = moved.replacen("Trash/", "INBOX/", 1);
            let intent = records.iter().any(|r| {
                r.kind == "call"
                    && r.capability.as_deref() == Some("mail.delete")
                    && r.targets.contains(&original)
            });
            assert!(
                intent,
                "trial {trial} (seed {seed}): {moved} is in Trash but no intent record names it"
            );
        }
        // Nothing was lost: every message is in INBOX or Trash.
        assert_eq!(
            ws.ids_in("INBOX").len() + in_trash.len(),
            46,
            "trial {trial}"
        );
    }
    eprintln!(
        "{TRIALS} kills: {deleted_total} messages moved in all, {killed_mid_effect} effects started with outcome unknown"
    );
    assert!(
        deleted_total > 0,
        "the kills all landed before any effect; the test proved nothing"
    );
}

#[tokio::test]
async fn an_oversized_intent_is_refused_without_bloating_the_journal() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, Decision::approve_all);
    let huge: Vec<String> = (0..2000)
        .map(|i| format!("INBOX/{i}.{}", "x".repeat(2000)))
        .collect();
    let outcome = runtime
        .call(
            &tool,
            &SessionId("s".into()),
            "delete-beyond-approval",
            &json!({"ids": huge}),
        )
        .await
        .unwrap();
    let err = outcome.result["err"].as_str().unwrap();
    assert!(err.contains("at most 1000 targets"), "{err}");
    let records = runtime.journal().all().unwrap();
    assert_eq!(records.len(), 2, "request and decision");
    assert_eq!(records[0].targets.len(), 20);
    assert!(records[0].targets.iter().all(|t| t.len() <= 204));
    assert_eq!(records[0].detail["targets_total"], 2000);
    assert!(
        records[1]
            .outcome
            .as_deref()
            .unwrap()
            .starts_with("invalid: ")
    );
}
