//! A hostile component against the `files` capability: each attack fails,
//! the files (inside the root and outside it) are unchanged, and the
//! journal holds the refusal. Approved work does exactly what was approved.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use agentcap::consent::{ConsentPrompt, Decision, ScriptedApprover, SessionId};
use agentcap::{LoadedTool, Runtime};
use agentcap_tests::{Workspace, snapshot};
use serde_json::{Value, json};

const POLICY: &str = r#"
user = "alice"
[files]
max_file_kb = 64
[files.roots.notes]
path = "notes"
[files.roots.shared]
path = "shared"
read_only = true
[tools.hostile]
component = "x.wasm"
[[tools.hostile.grants]]
capability = "files.list"
mode = "standing"
[[tools.hostile.grants]]
capability = "files.read"
mode = "standing"
roots = ["notes", "shared"]
paths = ["**/*.md", "*.txt"]
[[tools.hostile.grants]]
capability = "files.write"
mode = "ask"
roots = ["notes", "shared"]
paths = ["drafts/*.md", "*.md"]
max_refusals = 1000
[[tools.hostile.grants]]
capability = "files.move"
mode = "ask"
roots = ["notes"]
paths = ["drafts/*.md", "archive/*.md"]
[[tools.hostile.grants]]
capability = "files.delete"
mode = "ask"
roots = ["notes"]
paths = ["drafts/*.md"]
max_uses = 1
"#;

struct Setup {
    ws: Workspace,
    runtime: Runtime,
    tool: LoadedTool,
    approver: Arc<ScriptedApprover>,
}

fn setup(script: impl Fn(&ConsentPrompt) -> Decision + Send + Sync + 'static) -> Setup {
    let ws = Workspace::new();
    let root = ws.dir.path();
    for (path, content) in [
        ("notes/drafts/old.md", "# Old draft\nstale\n"),
        ("notes/drafts/keep.md", "# Keep\n"),
        ("notes/todo.md", "- one\n- two\n"),
        ("notes/plain.txt", "plain\n"),
        ("shared/policy.md", "# Shared, read-only\n"),
        ("outside/secret.md", "the neighbour's secret\n"),
    ] {
        std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        std::fs::write(root.join(path), content).unwrap();
    }
    // Links inside the root that lead out of it.
    std::os::unix::fs::symlink(root.join("outside/secret.md"), root.join("notes/leak.md")).unwrap();
    std::os::unix::fs::symlink(root.join("outside"), root.join("notes/drafts/out")).unwrap();
    std::os::unix::fs::symlink("../../outside", root.join("notes/up")).unwrap();
    load(ws, POLICY, script)
}

/// The hostile tool loaded under `policy` in `ws`.
fn load(
    ws: Workspace,
    policy: &str,
    script: impl Fn(&ConsentPrompt) -> Decision + Send + Sync + 'static,
) -> Setup {
    let approver = Arc::new(ScriptedApprover::new("test-user", script));
    let (runtime, tool) = ws.load_guest(policy, approver.clone(), "hostile", "hostile_files");
    Setup {
        ws,
        runtime,
        tool,
        approver,
    }
}

impl Setup {
    async fn call(&self, function: &str, args: Value) -> Result<Value, String> {
        agentcap_tests::call_tool(&self.runtime, &self.tool, function, &args).await
    }

    /// Every file of the workspace but the journal, with digests.
    fn tree(&self) -> BTreeMap<String, String> {
        let mut tree = snapshot(self.ws.dir.path());
        tree.retain(|k, _| !k.starts_with("journal") && !k.starts_with("Maildir"));
        tree
    }

    fn file(&self, path: &str) -> String {
        std::fs::read_to_string(self.ws.dir.path().join(path)).unwrap()
    }

    /// The outcomes of journal records that refused something.
    fn refusals(&self) -> Vec<String> {
        agentcap_tests::refusal_records(&self.runtime)
            .into_iter()
            .map(|r| r.outcome.unwrap_or_default())
            .collect()
    }

    /// Run `attack`, check it failed with `expected` in its message, the
    /// tree did not change and the journal gained a refusal naming it.
    async fn refused(&self, function: &str, args: Value, expected: &str) -> String {
        let before = self.tree();
        let refusals = self.refusals().len();
        let err = self
            .call(function, args.clone())
            .await
            .expect_err(&format!("{function}({args}) must fail"));
        assert!(err.contains(expected), "{function}({args}): {err}");
        assert_eq!(self.tree(), before, "{function}({args}) changed files");
        let journaled = self.refusals();
        assert!(
            journaled.len() > refusals,
            "{function}({args}) was not journaled as refused: {journaled:?}"
        );
        err
    }
}

#[tokio::test]
async fn paths_out_of_the_root_are_refused() {
    let s = setup(Decision::approve_all);
    for (path, expected) in [
        ("notes:../outside/secret.md", "`.` and `..` are refused"),
        (
            "notes:drafts/../../outside/secret.md",
            "`.` and `..` are refused",
        ),
        ("notes:/etc/passwd", "absolute paths are refused"),
        ("/etc/passwd", "a path is `root:relative/path`"),
        ("outside:secret.md", "root outside is not granted"),
        ("notes:.agentcap-trash/1/file", "the trash is not reachable"),
    ] {
        let args = json!({"approved": path, "actual": path, "length": 100});
        s.refused("read-other", args, expected).await;
    }
    // Links created in the root that point out of it (or anywhere).
    for path in [
        "notes:leak.md",
        "notes:drafts/out/secret.md",
        "notes:up/secret.md",
    ] {
        let args = json!({"approved": path, "actual": path, "length": 100});
        s.refused("read-other", args, "symbolic link").await;
    }
    // A token for an allowed file does not read another one.
    let args =
        json!({"approved": "notes:todo.md", "actual": "notes:drafts/keep.md", "length": 100});
    s.refused(
        "read-other",
        args,
        "files.read of notes:drafts/keep.md was not approved",
    )
    .await;
    // The glob scope: `*.txt` is only at the top, `**/*.md` anywhere.
    let args =
        json!({"approved": "notes:drafts/x.txt", "actual": "notes:drafts/x.txt", "length": 10});
    s.refused("read-other", args, "matches none of the granted paths")
        .await;
    assert_eq!(
        s.call(
            "read-other",
            json!({"approved": "notes:plain.txt", "actual": "notes:plain.txt", "length": 100})
        )
        .await
        .unwrap(),
        json!("plain\n")
    );
    // Nothing of the outside file reached the guest.
    assert!(
        s.approver
            .answered()
            .iter()
            .all(|(p, _)| !p.render().contains("neighbour")),
    );
}

#[tokio::test]
async fn writes_are_bound_to_the_approved_content_path_and_version() {
    let s = setup(Decision::approve_all);
    // One byte off, in either direction.
    for actual in ["# Todo\n- one!\n", "# Todo\n- one\n\n", "# Todo\n- one"] {
        let args =
            json!({"path": "notes:todo.md", "approved": "# Todo\n- one\n", "actual": actual});
        s.refused("write-other", args, "differs from the approved content")
            .await;
    }
    // Approved for one path, written to another.
    let args = json!({"approved-path": "notes:todo.md", "actual-path": "notes:drafts/keep.md", "content": "x\n"});
    s.refused("write-elsewhere", args, "was not approved").await;
    // Outside the glob scope, or a read-only root.
    let args = json!({"approved-path": "notes:deep/x/new.md", "actual-path": "notes:deep/x/new.md", "content": "x\n"});
    s.refused("write-elsewhere", args, "matches none of the granted paths")
        .await;
    let args = json!({"approved-path": "shared:policy.md", "actual-path": "shared:policy.md", "content": "x\n"});
    s.refused("write-elsewhere", args, "root shared is read-only")
        .await;
    // A read token does not write.
    let args = json!({"path": "notes:todo.md", "content": "x\n"});
    s.refused(
        "write-with-read-token",
        args,
        "is for files.read, not files.write",
    )
    .await;
    // Over the size limit (64 KiB here; the consent payload limit is 1 MiB).
    let args = json!({"path": "notes:big.md", "size": 65 * 1024 + 1});
    s.refused("write-size", args, "max_file_kb").await;
    let args = json!({"path": "notes:big.md", "size": 2 * 1024 * 1024});
    s.refused("write-size", args, "payload exceeds").await;
    // A read asking for a GiB is refused by the limit, before any byte.
    let args =
        json!({"approved": "notes:todo.md", "actual": "notes:todo.md", "length": 1u64 << 30});
    s.refused("read-other", args, "a read is at most 64.0 KiB")
        .await;
    // The approved write happens, once; replaying the token is refused.
    let before = s.tree();
    let err = s
        .call(
            "write-again",
            json!({"path": "notes:todo.md", "content": "- done\n", "times": 2}),
        )
        .await
        .unwrap_err();
    // (The replay is refused twice over: the file is no longer the approved
    // version, and the token has no uses left.)
    assert!(
        err.contains("changed since the write was approved"),
        "{err}"
    );
    assert_eq!(s.file("notes/todo.md"), "- done\n");
    assert_ne!(s.tree(), before);
    // The human saw a diff against the current file.
    let (prompt, _) = s.approver.answered().pop().unwrap();
    let shown = prompt.shown_payload("terminal").unwrap();
    assert!(
        shown.contains("-- one") && shown.contains("+- done"),
        "{shown}"
    );
    assert!(
        prompt.items[0].target.starts_with("notes:todo.md@"),
        "{:?}",
        prompt.items[0].target
    );
}

#[tokio::test]
async fn a_file_changed_after_approval_is_not_overwritten() {
    let workspace: Arc<std::sync::Mutex<Option<std::path::PathBuf>>> = Default::default();
    let seen = workspace.clone();
    let s = setup(move |prompt| {
        // Someone edits the file while the human reads the prompt.
        if let Some(root) = seen.lock().unwrap().as_ref() {
            std::fs::write(root.join("notes/todo.md"), "edited meanwhile\n").unwrap();
        }
        Decision::approve_all(prompt)
    });
    *workspace.lock().unwrap() = Some(s.ws.dir.path().to_path_buf());
    let err = s
        .call(
            "write-again",
            json!({"path": "notes:todo.md", "content": "- mine\n", "times": 1}),
        )
        .await
        .unwrap_err();
    assert!(
        err.contains("changed since the write was approved"),
        "{err}"
    );
    assert_eq!(s.file("notes/todo.md"), "edited meanwhile\n");
}

#[tokio::test]
async fn deletes_and_moves_only_the_approved_subset_and_deletes_can_be_undone() {
    // The human approves only the first item of every request.
    let s = setup(|_| Decision::Approve(vec![0]));
    std::fs::write(s.ws.dir.path().join("notes/drafts/older.md"), "older\n").unwrap();
    let args = json!({"asked": ["notes:drafts/old.md", "notes:drafts/older.md"],
                      "deleted": ["notes:drafts/old.md", "notes:drafts/older.md"]});
    s.refused(
        "delete-beyond",
        args,
        "files.delete of notes:drafts/older.md was not approved",
    )
    .await;
    // Outside the delete grant's paths, or a root it does not cover.
    let args = json!({"asked": ["notes:todo.md"], "deleted": ["notes:todo.md"]});
    s.refused("delete-beyond", args, "matches none of the granted paths")
        .await;
    let args = json!({"asked": ["shared:policy.md"], "deleted": ["shared:policy.md"]});
    s.refused("delete-beyond", args, "root shared is not granted")
        .await;
    // The approved one goes to the trash, and comes back.
    let handles = s
        .call(
            "delete-beyond",
            json!({"asked": ["notes:drafts/old.md"], "deleted": ["notes:drafts/old.md"]}),
        )
        .await
        .unwrap();
    assert!(!s.ws.dir.path().join("notes/drafts/old.md").exists());
    let handle = handles[0].as_str().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentcap-cli"))
        .args(["files", "--policy"])
        .arg(s.ws.dir.path().join("agentcap.toml"))
        .args(["restore", &handle])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.file("notes/drafts/old.md"), "# Old draft\nstale\n");
    // Moves: only approved pairs, never over an existing file, never out
    // of the grant's paths.
    let pair = "notes:drafts/old.md -> archive/old.md";
    let other = "notes:drafts/keep.md -> archive/keep.md";
    let args = json!({"asked": [pair, other], "moved": [pair, other]});
    s.refused("move-beyond", args, "was not approved").await;
    let args = json!({"asked": ["notes:drafts/old.md -> drafts/keep.md"], "moved": ["notes:drafts/old.md -> drafts/keep.md"]});
    s.refused("move-beyond", args, "exists; a move does not replace")
        .await;
    let args = json!({"asked": ["notes:drafts/old.md -> ../outside/x.md"], "moved": []});
    s.refused("move-beyond", args, "`.` and `..` are refused")
        .await;
    let moved = s
        .call("move-beyond", json!({"asked": [pair], "moved": [pair]}))
        .await
        .unwrap();
    assert_eq!(moved, json!([pair]));
    assert_eq!(s.file("notes/archive/old.md"), "# Old draft\nstale\n");
}

#[tokio::test]
async fn names_with_controls_and_bidi_overrides_are_shown_escaped() {
    let s = setup(|_| Decision::Decline("no".into()));
    let evil = "drafts/invoice\u{202e}dm.exe\u{1b}[2J.md";
    std::fs::write(s.ws.dir.path().join("notes").join(evil), "x\n").unwrap();
    let target = format!("notes:{evil}");
    let args = json!({"asked": [target], "deleted": [target]});
    s.refused("delete-beyond", args, "declined").await;
    let (prompt, _) = s.approver.answered().pop().unwrap();
    for channel in ["terminal", "page", "mcp-form"] {
        let shown = prompt.render_for(channel);
        assert!(
            !shown.contains('\u{202e}') && !shown.contains('\u{1b}'),
            "{channel}: {shown:?}"
        );
        assert!(
            shown.contains("⟨U+202E⟩") && shown.contains("⟨ESC⟩"),
            "{shown}"
        );
    }
    // The listing returns the real name to the tool (it is data), and the
    // journal's view of the request is escaped.
    let listed = Setup::list(&s).await;
    assert!(listed.iter().any(|p| p.contains('\u{202e}')));
    let tail = std::process::Command::new(env!("CARGO_BIN_EXE_agentcap-cli"))
        .args(["journal", "--policy"])
        .arg(s.ws.dir.path().join("agentcap.toml"))
        .args(["tail", "-n", "50"])
        .output()
        .unwrap();
    let tail = String::from_utf8_lossy(&tail.stdout);
    assert!(
        !tail.contains('\u{202e}') && !tail.contains('\u{1b}'),
        "{tail}"
    );
}

impl Setup {
    async fn list(&self) -> Vec<String> {
        self.call("list-folder", json!({"folder": "notes:drafts"}))
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

#[tokio::test]
async fn listing_shows_only_the_grant_and_never_the_trash() {
    let s = setup(Decision::approve_all);
    s.call(
        "delete-beyond",
        json!({"asked": ["notes:drafts/old.md"], "deleted": ["notes:drafts/old.md"]}),
    )
    .await
    .unwrap();
    assert!(s.ws.dir.path().join("notes/.agentcap-trash").is_dir());
    let listed: Vec<String> = s
        .call("list-folder", json!({"folder": "notes:"}))
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(listed.contains(&"notes:todo.md".to_string()), "{listed:?}");
    assert!(
        listed.iter().all(|p| !p.contains(".agentcap-trash")),
        "{listed:?}"
    );
    // The trash is not listable by name either.
    s.refused(
        "list-folder",
        json!({"folder": "notes:.agentcap-trash"}),
        "the trash is not reachable",
    )
    .await;
    assert!(Path::new(&s.ws.dir.path().join("notes/.agentcap-trash")).is_dir());
}

#[tokio::test]
async fn a_write_token_reveals_nothing_about_other_files() {
    let s = setup(Decision::approve_all);
    std::fs::write(s.ws.dir.path().join("notes/pin.md"), "4821\n").unwrap();
    for probe in [
        "notes:pin.md",
        "notes:drafts/keep.md",
        "notes:absent.md",
        "shared:policy.md",
    ] {
        let args =
            json!({"approved-path": "notes:todo.md", "actual-path": probe, "content": "x\n"});
        let err = s.refused("write-elsewhere", args, "").await;
        assert!(
            !err.contains('@') && (err.contains("does not cover it") || err.contains("read-only")),
            "{probe}: {err}"
        );
    }
    // Nor does the journal hold a digest of the probed files.
    let journal = s.runtime.journal().all().unwrap();
    assert!(
        journal
            .iter()
            .all(|r| r.targets.iter().all(|t| !t.starts_with("notes:pin.md@"))),
    );
}

#[tokio::test]
async fn refused_calls_cannot_flood_the_journal() {
    let s = setup(|_| Decision::Approve(vec![0]));
    let journal = s.ws.dir.path().join("journal.sqlite");
    let huge: Vec<String> = (0..100)
        .map(|i| format!("notes:drafts/{i}{}.md", "x".repeat(100_000)))
        .collect();
    let err = s
        .call(
            "delete-repeatedly",
            json!({"asked": ["notes:drafts/old.md"], "deleted": huge, "times": 50}),
        )
        .await
        .unwrap();
    assert_eq!(err, json!(50));
    // Each refusal keeps at most 20 targets of 200 bytes and a bounded message.
    let size = std::fs::metadata(&journal).unwrap().len()
        + std::fs::metadata(journal.with_extension("sqlite-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    assert!(size < 8 << 20, "the journal grew to {size} bytes");
    // A loop of refused calls ends the call.
    let ended = s
        .runtime
        .call(
            &s.tool,
            &SessionId("s".into()),
            "delete-repeatedly",
            &json!({"asked": ["notes:drafts/old.md"], "deleted": ["notes:drafts/keep.md"], "times": 5000}),
        )
        .await
        .expect_err("the call is ended");
    assert!(
        ended
            .to_string()
            .contains("more than 1000 refused capability calls"),
        "{ended}"
    );
    let records = s.runtime.journal().all().unwrap();
    let refusals = records.iter().filter(|r| r.kind == "refusal").count();
    assert!(refusals <= 1000 + 60, "{refusals} refusals journaled");
    assert!(records.iter().any(|r| {
        r.outcome
            .as_deref()
            .unwrap_or("")
            .contains("more than 1000 refused capability calls")
    }),);
    assert!(s.ws.dir.path().join("notes/drafts/keep.md").exists());
}

#[tokio::test]
async fn listing_follows_the_patterns_and_hides_links_and_devices() {
    let policy = POLICY.replace(
        "capability = \"files.list\"\nmode = \"standing\"\n",
        "capability = \"files.list\"\nmode = \"standing\"\npaths = [\"drafts/*.md\"]\n",
    );
    let ws = Workspace::new();
    let root = ws.dir.path();
    std::fs::create_dir_all(root.join("notes/drafts")).unwrap();
    std::fs::create_dir_all(root.join("notes/private")).unwrap();
    std::fs::create_dir_all(root.join("shared")).unwrap();
    std::fs::write(root.join("notes/drafts/a.md"), "a\n").unwrap();
    std::fs::write(root.join("notes/private/pin.txt"), "4821\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("notes/drafts/link.md")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("notes/drafts/fifo.md"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let s = load(ws, &policy, Decision::approve_all);
    let top = s
        .call("list-folder", json!({"folder": "notes:"}))
        .await
        .unwrap();
    assert_eq!(
        top,
        json!(["notes:drafts"]),
        "private is not on the way to drafts/*.md"
    );
    let drafts = s
        .call("list-folder", json!({"folder": "notes:drafts"}))
        .await
        .unwrap();
    assert_eq!(drafts, json!(["notes:drafts/a.md"]));
    // (The FIFO goes before the tree is read, which would block on it.)
    std::fs::remove_file(s.ws.dir.path().join("notes/drafts/fifo.md")).unwrap();
    s.refused(
        "list-folder",
        json!({"folder": "notes:private"}),
        "leads to none of the granted paths",
    )
    .await;
}

#[tokio::test]
async fn overlapping_roots_and_hard_links_are_refused() {
    let ws = Workspace::new();
    let root = ws.dir.path();
    std::fs::create_dir_all(root.join("notes/drafts")).unwrap();
    std::fs::create_dir_all(root.join("outside")).unwrap();
    std::fs::write(root.join("outside/secret.md"), "secret\n").unwrap();
    std::fs::hard_link(
        root.join("outside/secret.md"),
        root.join("notes/drafts/hard.md"),
    )
    .unwrap();
    let nested = "user = \"a\"\n[files]\n[files.roots.notes]\npath = \"notes\"\n[files.roots.inner]\npath = \"notes/drafts\"\n";
    let engine = agentcap::AgentEngine::new(None).unwrap();
    let err = match agentcap::Runtime::new(
        engine,
        ws.policy(nested),
        agentcap_tests::shared(agentcap_tests::Silent),
    ) {
        Ok(_) => panic!("overlapping roots must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("overlap"), "{err}");
    std::fs::create_dir_all(root.join("shared")).unwrap();
    let s = load(ws, POLICY, Decision::approve_all);
    let args = json!({"approved": "notes:drafts/hard.md", "actual": "notes:drafts/hard.md", "length": 100});
    s.refused("read-other", args, "hard links").await;
}

#[tokio::test]
async fn what_a_write_will_do_is_shown_whole_and_unambiguous() {
    let s = setup(|_| Decision::Decline("just looking".into()));
    let root = s.ws.dir.path();
    // A new file longer than any preview: all of it is shown.
    let mut long: String = (0..40).map(|i| format!("harmless line {i}\n")).collect();
    long.push_str("rm -rf ~  # the line a preview would hide\n");
    let args = json!({"path": "notes:drafts/new.md", "approved": long, "actual": long});
    s.refused("write-other", args, "declined").await;
    let (prompt, _) = s.approver.answered().pop().unwrap();
    assert!(prompt.render().contains("rm -rf ~"), "{}", prompt.render());
    // A binary file is not diffed against a lossy copy of itself.
    std::fs::write(
        root.join("notes/drafts/bin.md"),
        b"config: safe\xff\xfe\nline2\n",
    )
    .unwrap();
    let lossy = "config: safe\u{fffd}\u{fffd}\nline2\n";
    let args = json!({"path": "notes:drafts/bin.md", "approved": lossy, "actual": lossy});
    s.refused("write-other", args, "declined").await;
    let shown = s.approver.answered().pop().unwrap().0.render();
    assert!(
        shown.contains("is not text") && shown.contains("config: safe"),
        "{shown}"
    );
    // A line-end change is marked, and a name cannot add diff lines.
    std::fs::write(root.join("notes/drafts/crlf.md"), "keep\nlast line\n").unwrap();
    let args = json!({"path": "notes:drafts/crlf.md", "approved": "keep\r\nlast line\r\n", "actual": "keep\r\nlast line\r\n"});
    s.refused("write-other", args, "declined").await;
    let shown = s.approver.answered().pop().unwrap().0.render();
    assert!(shown.contains("+keep⟨CR⟩"), "{shown}");
    let evil = "x\n| (fake) nothing else changes.md";
    std::fs::write(root.join("notes/drafts").join(evil), "old\n").unwrap();
    let target = format!("notes:drafts/{evil}");
    let args = json!({"path": target, "approved": "new\n", "actual": "new\n"});
    s.refused("write-other", args, "declined").await;
    let shown = s.approver.answered().pop().unwrap().0.render();
    assert!(
        !shown
            .lines()
            .any(|l| l.trim_start().starts_with("| | (fake)")),
        "{shown}"
    );
}
