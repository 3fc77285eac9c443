//! The `agentcap` command as an operator uses it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn agentcap(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentcap"))
        .args(["--no-cache"])
        .args(args)
        .current_dir(dir)
        .env("AGENTCAP_JOURNAL", dir.join("default-journal.sqlite"))
        .stdin(Stdio::null())
        .output()
        .expect("run agentcap")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A workspace with the demo's Maildir, component and policy.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    agentcap::demo::prepare_workspace(dir.path()).unwrap();
    dir
}

#[test]
fn inspect_json_lists_functions_and_exactly_the_imported_capabilities() {
    let dir = workspace();
    let out = agentcap(&["inspect", "inbox_triage.wasm", "--json"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["capabilities"], serde_json::json!(["consent", "mail"]));
    let names: Vec<&str> = info["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["plan", "triage", "purge"]);
    let schema = &info["functions"][1]["input_schema"];
    assert_eq!(schema["required"], serde_json::json!(["folder"]));
    assert_eq!(schema["properties"]["folder"]["type"], "string");
    assert!(
        info["imports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["kind"] != "forbidden")
    );
}

#[test]
fn inspect_lists_forum_and_data_for_forum_reply() {
    let dir = workspace();
    let out = agentcap(&["inspect", "forum_reply.wasm", "--json"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        info["capabilities"],
        serde_json::json!(["consent", "forum", "data"])
    );
    let out = agentcap(&["inspect", "forum_reply.wasm"], dir.path());
    assert!(text(&out.stdout).contains("Capabilities imported: consent, forum, data"));
}

#[test]
fn call_with_standing_grants_works_without_a_terminal() {
    let dir = workspace();
    let out = agentcap(
        &[
            "call",
            "inbox_triage.wasm",
            "plan",
            "--args",
            r#"{"folder":"INBOX"}"#,
            "--policy",
            "agentcap.toml",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["ok"].as_array().unwrap().len(), 21);
}

#[test]
fn without_a_terminal_ask_grants_are_refused_and_nothing_moves() {
    let dir = workspace();
    let before = std::fs::read_dir(dir.path().join("Maildir/cur"))
        .unwrap()
        .count();
    let out = agentcap(
        &[
            "call",
            "inbox_triage.wasm",
            "triage",
            "--args",
            r#"{"folder":"INBOX"}"#,
            "--policy",
            "agentcap.toml",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let refusals = result["ok"]["refusals"].as_array().unwrap();
    assert_eq!(refusals.len(), 2, "{result}");
    assert!(
        refusals[0]
            .as_str()
            .unwrap()
            .contains("stdin is not a terminal"),
        "{result}"
    );
    assert_eq!(result["ok"]["archived"], serde_json::json!([]));
    assert_eq!(
        std::fs::read_dir(dir.path().join("Maildir/cur"))
            .unwrap()
            .count(),
        before
    );
    assert!(!dir.path().join("Maildir/.Trash").exists());
}

#[test]
fn call_without_policy_refuses_the_tool_naming_the_capability() {
    let dir = workspace();
    let out = agentcap(
        &[
            "call",
            "inbox_triage.wasm",
            "plan",
            "--args",
            r#"{"folder":"INBOX"}"#,
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("imports capability `mail`") && err.contains("does not grant"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_broken_policy_names_file_and_line() {
    let dir = workspace();
    std::fs::write(
        dir.path().join("bad.toml"),
        "user = \"alice\"\n[tools.x]\ncomponent = 3\n",
    )
    .unwrap();
    let out = agentcap(
        &["call", "inbox_triage.wasm", "plan", "--policy", "bad.toml"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("line 3"), "{err}");
}

#[test]
fn a_missing_component_is_a_clear_error() {
    let dir = workspace();
    let out = agentcap(&["inspect", "nope.wasm"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read component nope.wasm"));
}

#[test]
fn demo_runs_unattended_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("demo");
    let out = agentcap(&["demo", "--workspace", ws.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for expected in [
        "move 12 messages to Archive",
        "delete 9 messages (moved to Trash, recoverable)",
        "The tool says (its claim, not checked)",
        "leaves out [1]",
        "still in INBOX, untouched",
        "In the mailbox now: INBOX 26, Archive 12, Trash 8",
        "Alice has seen enough and presses STOP",
        "Deleted before the stop: 3 (each approved by Alice). Changed after the stop: 0.",
        "Scripted user: declines (Alice wants to check the numbers herself first).",
        "the thread has 1 post(s): nothing was posted.",
        "  | Posted by an AI agent (tool forum-reply) on behalf of alice; approved by alice via scripted-user at",
        "Provenance stored with it: generated_by=ai-agent, tool=forum-reply",
        "Refused: consent not granted: data.query: the query reads table user_accounts, outside the grant (tables: service_metrics)",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

/// Run the demo into a fresh folder and return (folder, journal path).
fn demo_journal() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("demo");
    let out = agentcap(&["demo", "--workspace", ws.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("verified intact"));
    (dir, ws.join("journal.sqlite"))
}

#[test]
fn journal_verify_tail_and_export() {
    let (dir, journal) = demo_journal();
    let j = journal.to_str().unwrap();
    let out = agentcap(&["journal", "verify", "--journal", j], dir.path());
    assert!(out.status.success(), "{}", text(&out.stdout));
    let verdict = text(&out.stdout);
    assert!(
        verdict.starts_with("ok: ") && verdict.contains("records, chain intact"),
        "{verdict}"
    );
    let out = agentcap(
        &[
            "journal",
            "tail",
            "-n",
            "3",
            "--session",
            "demo",
            "--journal",
            j,
        ],
        dir.path(),
    );
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[2].starts_with("#15 ")
            && lines[2].contains("outcome mail.delete: ok: moved 8 to Trash"),
        "{lines:?}"
    );
    let out = agentcap(
        &["journal", "export", "--format", "jsonl", "--journal", j],
        dir.path(),
    );
    let records: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.len() > 15, "part 1 writes 15 records, part 2 more");
    assert!(records.iter().any(|r| r["kind"] == "stop"));
    assert_eq!(records[11]["decided_by"], "human via scripted-user");
    assert_eq!(records[11]["outcome"], "approved 8 of 9");
}

#[test]
fn journal_verify_names_the_first_tampered_record() {
    let cases = [
        (
            "UPDATE records SET outcome = 'approved 9 of 9' WHERE seq = 12",
            "#12",
            "altered",
        ),
        (
            "DELETE FROM records WHERE seq = 7",
            "#8",
            "removed or reordered",
        ),
        (
            "UPDATE records SET seq = -1 WHERE seq = 4; UPDATE records SET seq = 4 WHERE seq = 5; UPDATE records SET seq = 5 WHERE seq = -1;",
            "#4",
            "",
        ),
    ];
    for (tamper, first_broken, why) in cases {
        let (dir, journal) = demo_journal();
        rusqlite::Connection::open(&journal)
            .unwrap()
            .execute_batch(tamper)
            .unwrap();
        let out = agentcap(
            &["journal", "verify", "--journal", journal.to_str().unwrap()],
            dir.path(),
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{tamper}: {}",
            text(&out.stdout)
        );
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains(&format!("BROKEN at record {first_broken}")) && stdout.contains(why),
            "{tamper}: {stdout}"
        );
    }
}

/// The chain's head is anchored outside the database: removing the newest
/// records, putting back an older copy of the file, or swapping in another
/// journal is reported by `journal verify`.
#[test]
fn journal_verify_detects_truncation_and_rollback() {
    use agentcap::journal::{Entry, Journal, Kind};
    let verify = |dir: &std::path::Path, journal: &std::path::Path| {
        let out = agentcap(
            &["journal", "verify", "--journal", journal.to_str().unwrap()],
            dir,
        );
        (out.status.code(), text(&out.stdout))
    };
    // Truncation: the newest records are deleted; the rest still chains.
    let (dir, journal) = demo_journal();
    let (code, stdout) = verify(dir.path(), &journal);
    assert_eq!(code, Some(0), "{stdout}");
    let last: i64 = rusqlite::Connection::open(&journal)
        .unwrap()
        .query_row("SELECT max(seq) FROM records", [], |r| r.get(0))
        .unwrap();
    rusqlite::Connection::open(&journal)
        .unwrap()
        .execute("DELETE FROM records WHERE seq > ?1", [last - 3])
        .unwrap();
    let (code, stdout) = verify(dir.path(), &journal);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("TRUNCATED or ROLLED BACK"), "{stdout}");

    // Rollback: an older copy of the file replaces the current one.
    let (dir, journal) = demo_journal();
    let older = dir.path().join("older.sqlite");
    std::fs::copy(&journal, &older).unwrap();
    {
        let j = Journal::open(&journal, false).unwrap();
        j.append(Entry::new(Kind::Stop, "later", "-", "-").outcome("stopped later"))
            .unwrap();
    }
    let _ = std::fs::remove_file(journal.with_extension("sqlite-wal"));
    let _ = std::fs::remove_file(journal.with_extension("sqlite-shm"));
    std::fs::copy(&older, &journal).unwrap();
    let (code, stdout) = verify(dir.path(), &journal);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("ROLLED BACK"), "{stdout}");

    // Another journal of the same length swapped in.
    let (dir, journal) = demo_journal();
    let (_other_dir, other) = demo_journal();
    let _ = std::fs::remove_file(journal.with_extension("sqlite-wal"));
    std::fs::copy(&other, &journal).unwrap();
    let (code, stdout) = verify(dir.path(), &journal);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("REPLACED"), "{stdout}");

    // The export ends with the head, to keep elsewhere.
    let (dir, journal) = demo_journal();
    let out = agentcap(
        &[
            "journal",
            "export",
            "--format",
            "jsonl",
            "--journal",
            journal.to_str().unwrap(),
        ],
        dir.path(),
    );
    let last_line = text(&out.stdout).lines().last().unwrap().to_string();
    let head: Value = serde_json::from_str(&last_line).unwrap();
    assert!(head["head"]["seq"].as_i64().unwrap() > 15, "{head}");
    assert_eq!(head["head"]["hash"].as_str().unwrap().len(), 64, "{head}");
}

#[test]
fn journal_commands_explain_a_missing_journal() {
    let dir = tempfile::tempdir().unwrap();
    let out = agentcap(
        &["journal", "verify", "--journal", "nope.sqlite"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no journal at nope.sqlite"));
}

/// `agentcap call ... purge` running in a real pseudo-terminal (util-linux
/// `script`), so its consent prompt waits for a person.
struct PromptingCall {
    dir: tempfile::TempDir,
    control: std::path::PathBuf,
    child: std::process::Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl PromptingCall {
    /// Start it and wait for the first prompt; returns it with the session id.
    fn start() -> (PromptingCall, String) {
        PromptingCall::start_with(|_| {})
    }

    /// [`PromptingCall::start`], after `prepare` changed the workspace.
    fn start_with(prepare: impl FnOnce(&std::path::Path)) -> (PromptingCall, String) {
        use std::io::Read;
        let dir = workspace();
        prepare(dir.path());
        let control = dir.path().join("control");
        let command = format!(
            "{} --no-cache call inbox_triage.wasm purge --args '{{\"folder\":\"INBOX\"}}' --policy agentcap.toml",
            env!("CARGO_BIN_EXE_agentcap")
        );
        let mut child = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .current_dir(dir.path())
            .env("AGENTCAP_CONTROL_DIR", &control)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script(1)");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let run = PromptingCall {
            dir,
            control,
            child,
            output,
            reader: Some(reader),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let session = loop {
            let text = run.output.lock().unwrap().clone();
            if text.contains("Approve?") {
                let start = text.find("session cli-").expect("session line") + "session ".len();
                break text[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no consent prompt appeared:\n{text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        (run, session)
    }

    fn agentcap(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_agentcap"))
            .args(args)
            .env("AGENTCAP_CONTROL_DIR", &self.control)
            .output()
            .unwrap()
    }

    /// Wait for the call to end; returns whether it succeeded and its output.
    fn finish(mut self) -> (bool, String, tempfile::TempDir) {
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        let all = self.output.lock().unwrap().clone();
        (status.success(), all, self.dir)
    }
}

/// RFC 2047 encoded word (base64) of `text`, as a hostile sender writes it.
fn encoded_word(text: &str) -> String {
    use base64::Engine;
    format!(
        "=?utf-8?b?{}?=",
        base64::engine::general_purpose::STANDARD.encode(text)
    )
}

/// Invariant 2 at a real terminal: a mail from outside whose sender name,
/// subject and the tool's claim carry ESC/CSI/OSC sequences, carriage
/// returns, bidi overrides and zero-width characters reaches the prompt as
/// visible markers; not one ESC byte from that text reaches the terminal,
/// and nothing can add or redraw a line.
#[test]
fn hostile_text_reaches_the_terminal_prompt_as_visible_markers() {
    let subject = "50% off sale \u{1b}[8mHIDDEN\u{1b}[0m\r\u{1b}[2K  [2] From: boss \u{1b}]0;pwned\u{7} \u{202e}fdp.exe\u{200b}";
    let (run, _session) = PromptingCall::start_with(|dir| {
        let mail = format!(
            "From: {} <deals@evil.example>\r\nSubject: {}\r\nDate: Mon, 1 Jan 2001 00:00:00 +0000\r\nList-Unsubscribe: <mailto:x@evil.example>\r\n\r\nbody\u{1b}[2J\r\n",
            encoded_word("Bank\u{1b}[8m of \u{2066}trust"),
            encoded_word(subject),
        );
        std::fs::write(dir.join("Maildir/cur/1000000000.hostile.evil:2,S"), mail).unwrap();
    });
    let prompt = run.output.lock().unwrap().clone();
    let (_, _, _) = {
        let _ = run.agentcap(&["stop", "--all"]);
        run.finish()
    };
    assert!(
        !prompt.contains('\u{1b}'),
        "an ESC byte reached the terminal: {prompt:?}"
    );
    assert!(
        !prompt.contains('\u{202e}')
            && !prompt.contains('\u{200b}')
            && !prompt.contains('\u{2066}')
    );
    assert!(
        prompt.contains("⟨ESC⟩[8mHIDDEN⟨ESC⟩[0m⟨CR⟩⟨ESC⟩[2K"),
        "{prompt}"
    );
    assert!(prompt.contains("⟨ESC⟩]0;pwned⟨BEL⟩"), "{prompt}");
    assert!(prompt.contains("⟨U+202E⟩fdp.exe⟨U+200B⟩"), "{prompt}");
    assert!(prompt.contains("Bank⟨ESC⟩[8m of ⟨U+2066⟩trust"), "{prompt}");
    // The fake item stays inside item 1's line: only one item is listed.
    let item_lines: Vec<&str> = prompt
        .lines()
        .filter(|l| l.trim_start().starts_with("["))
        .collect();
    assert_eq!(item_lines.len(), 1, "{item_lines:#?}");
    assert!(item_lines[0].contains("HIDDEN") && item_lines[0].contains("[2] From: boss"));
}

#[test]
fn agentcap_stop_ends_a_pending_prompt_in_a_terminal() {
    let (run, session) = PromptingCall::start();
    let stop = run.agentcap(&["stop", &session]);
    assert!(
        stop.status.success(),
        "{}{}",
        text(&stop.stdout),
        text(&stop.stderr)
    );
    assert!(
        text(&stop.stdout).starts_with(&format!("stopped session {session} in process")),
        "{}",
        text(&stop.stdout)
    );
    let control = run.control.clone();
    let (ok, all, dir) = run.finish();
    assert!(!ok, "{all}");
    assert!(
        all.contains(&format!("session {session} was stopped")),
        "{all}"
    );
    assert!(
        !dir.path().join("Maildir/.Trash").exists(),
        "nothing may be deleted:\n{all}"
    );
    // A second stop finds nobody: the process is gone and its socket removed.
    let again = Command::new(env!("CARGO_BIN_EXE_agentcap"))
        .args(["stop", "--all"])
        .env("AGENTCAP_CONTROL_DIR", &control)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stdout));
    assert!(text(&again.stdout).contains("no running agentcap found"));
}

#[test]
fn sigint_stops_the_sessions_of_a_running_call() {
    let (run, session) = PromptingCall::start();
    let listed = run.agentcap(&["stop", "--list"]);
    assert!(
        text(&listed.stdout).contains(&format!("session {session} started "))
            && text(&listed.stdout).contains("tools [inbox-triage]"),
        "{}",
        text(&listed.stdout)
    );
    let pid = session.trim_start_matches("cli-");
    let kill = Command::new("kill").args(["-INT", pid]).status().unwrap();
    assert!(kill.success());
    let (ok, all, dir) = run.finish();
    assert!(!ok, "{all}");
    assert!(all.contains("SIGINT: stopped 1 session(s)"), "{all}");
    assert!(
        all.contains(&format!("session {session} was stopped")),
        "{all}"
    );
    assert!(
        !dir.path().join("Maildir/.Trash").exists(),
        "nothing may be deleted:\n{all}"
    );
    let journal =
        agentcap::journal::Journal::open(&dir.path().join("journal.sqlite"), false).unwrap();
    let stop = journal
        .all()
        .unwrap()
        .into_iter()
        .find(|r| r.kind == "stop")
        .expect("the stop is journaled");
    assert_eq!(stop.decided_by.as_deref(), Some("signal SIGINT"));
}
