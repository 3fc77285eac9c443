//! Hostile components against the mail capability (invariants 1-4 and 8):
//! every attack fails with an error that names what was refused, and the
//! Maildir is unchanged (or changed only by what the user approved).

use agentcap::consent::{Approver, Decision, ScriptedApprover, SessionId};
use agentcap::{CallError, LoadError, LoadedTool, Runtime};
use agentcap_tests::{Silent, Workspace, guest, shared};
use serde_json::{Value, json};

const POLICY: &str = r#"
user = "alice"
consent_timeout_secs = 1
[mail]
maildir = "Maildir"
[tools.hostile]
component = "hostile_mail.wasm"
[[tools.hostile.grants]]
capability = "mail.list"
mode = "standing"
folders = ["INBOX"]
[[tools.hostile.grants]]
capability = "mail.read"
mode = "standing"
folders = ["INBOX"]
max_uses = 5
[[tools.hostile.grants]]
capability = "mail.delete"
mode = "ask"
folders = ["INBOX"]
max_uses = 1
expires_after_secs = 1
"#;

fn approve_all() -> ScriptedApprover {
    ScriptedApprover::new("test-user", Decision::approve_all)
}

fn load(ws: &Workspace, approver: impl Approver + 'static) -> (Runtime, LoadedTool) {
    ws.load_guest(POLICY, shared(approver), "hostile", "hostile_mail")
}

async fn call(
    runtime: &Runtime,
    tool: &LoadedTool,
    function: &str,
    args: Value,
) -> Result<Value, CallError> {
    let outcome = runtime
        .call(tool, &SessionId("test".into()), function, &args)
        .await?;
    Ok(outcome.result)
}

/// The tool's own `err` text (the host's refusal as the guest saw it).
fn refusal(result: Result<Value, CallError>) -> String {
    let value = result.expect("the call itself should complete");
    value["err"]
        .as_str()
        .unwrap_or_else(|| panic!("expected the attack to be refused, got {value}"))
        .to_string()
}

fn inbox_ids(ws: &Workspace, n: usize) -> Vec<String> {
    let ids = ws.ids_in("INBOX");
    assert!(ids.len() >= n);
    ids.into_iter().take(n).collect()
}

#[tokio::test]
async fn forged_token_handles_trap_and_change_nothing() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, approve_all());
    let before = ws.snapshot();
    let id = &inbox_ids(&ws, 1)[0];
    for handle in [0u32, 1, 2, 7, 1000, u32::MAX] {
        let err = call(
            &runtime,
            &tool,
            "forge-token",
            json!({"id": id, "handle": handle}),
        )
        .await
        .expect_err("a forged handle must trap");
        assert!(
            matches!(err, CallError::Trap { .. }),
            "handle {handle}: {err}"
        );
        assert!(
            err.to_string().contains("unknown handle index"),
            "handle {handle}: {err}"
        );
    }
    assert_eq!(ws.snapshot(), before, "a forged token changed the Maildir");
}

#[tokio::test]
async fn a_dropped_token_cannot_be_used_again() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, approve_all());
    let before = ws.snapshot();
    let id = &inbox_ids(&ws, 1)[0];
    let err = call(&runtime, &tool, "use-after-drop", json!({"id": id}))
        .await
        .expect_err("a stale handle must trap");
    assert!(matches!(err, CallError::Trap { .. }), "{err}");
    assert!(err.to_string().contains("unknown handle index"), "{err}");
    assert_eq!(ws.snapshot(), before);
}

#[tokio::test]
async fn a_token_is_not_honoured_past_its_uses() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, approve_all());
    let ids = inbox_ids(&ws, 2);
    let message = refusal(
        call(
            &runtime,
            &tool,
            "reuse-token",
            json!({"first": ids[0], "second": ids[1]}),
        )
        .await,
    );
    assert!(message.contains("no uses left"), "{message}");
    assert!(message.contains("mail.delete"), "{message}");
    // Only the first, approved and within its one use, moved.
    let inbox = ws.ids_in("INBOX");
    assert!(!inbox.contains(&ids[0]) && inbox.contains(&ids[1]));
    let trash = ws.ids_in("Trash");
    assert_eq!(trash.len(), 1);
    assert!(trash[0].ends_with(ids[0].trim_start_matches("INBOX/")));
}

#[tokio::test]
async fn a_read_token_cannot_delete() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, approve_all());
    let before = ws.snapshot();
    let id = &inbox_ids(&ws, 1)[0];
    let message = refusal(call(&runtime, &tool, "read-token-deletes", json!({"id": id})).await);
    assert!(
        message.contains("is for mail.read, not mail.delete"),
        "{message}"
    );
    assert_eq!(ws.snapshot(), before);
}

#[tokio::test]
async fn ids_outside_the_approved_subset_are_refused_whole() {
    let ws = Workspace::new();
    // The user approves only the first of three.
    let (runtime, tool) = load(
        &ws,
        ScriptedApprover::new("test-user", |_| Decision::Approve(vec![0])),
    );
    let before = ws.snapshot();
    let ids = inbox_ids(&ws, 3);
    let message = refusal(
        call(
            &runtime,
            &tool,
            "delete-beyond-approval",
            json!({"ids": ids}),
        )
        .await,
    );
    assert!(message.contains("was not approved"), "{message}");
    assert!(
        message.contains(&ids[1]) && message.contains(&ids[2]),
        "{message}"
    );
    assert_eq!(ws.snapshot(), before, "nothing may be half-honoured");
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, approve_all());
    let before = ws.snapshot();
    let id = &inbox_ids(&ws, 1)[0];
    let message = refusal(
        call(
            &runtime,
            &tool,
            "delete-after-expiry",
            json!({"id": id, "wait-ms": 1300}),
        )
        .await,
    );
    assert!(message.contains("expired"), "{message}");
    assert_eq!(ws.snapshot(), before);
}

#[tokio::test]
async fn path_traversal_in_ids_is_refused() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, approve_all());
    let before = ws.snapshot();
    let real = &inbox_ids(&ws, 1)[0];
    for evil in [
        "INBOX/../../../../etc/passwd",
        "../../etc/passwd",
        "/etc/passwd",
        "INBOX/..",
        "..Trash/x",
        "INBOX/cur/x",
        "INBOX/.hidden",
    ] {
        let message = refusal(
            call(
                &runtime,
                &tool,
                "traverse",
                json!({"real-id": real, "evil-id": evil}),
            )
            .await,
        );
        assert!(message.contains("not allowed"), "{evil}: {message}");
        assert!(
            !message.contains("root:"),
            "{evil}: leaked file content: {message}"
        );
    }
    assert_eq!(ws.snapshot(), before);
}

#[tokio::test]
async fn a_list_token_covers_only_its_folder() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, approve_all());
    let message = refusal(
        call(
            &runtime,
            &tool,
            "list-other-folder",
            json!({"granted": "INBOX", "other": "Trash"}),
        )
        .await,
    );
    assert!(
        message.contains("mail.list of Trash was not approved"),
        "{message}"
    );
}

#[tokio::test]
async fn a_declined_request_gives_no_token() {
    let ws = Workspace::new();
    let (runtime, tool) = load(
        &ws,
        ScriptedApprover::new("test-user", |_| Decision::Decline("not today".into())),
    );
    let before = ws.snapshot();
    let ids = inbox_ids(&ws, 2);
    let message = refusal(
        call(
            &runtime,
            &tool,
            "delete-beyond-approval",
            json!({"ids": ids}),
        )
        .await,
    );
    assert!(
        message.contains("declined") && message.contains("not today"),
        "{message}"
    );
    assert_eq!(ws.snapshot(), before);
}

#[tokio::test]
async fn silence_is_a_refusal() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, Silent);
    let before = ws.snapshot();
    let ids = inbox_ids(&ws, 1);
    let message = refusal(
        call(
            &runtime,
            &tool,
            "delete-beyond-approval",
            json!({"ids": ids}),
        )
        .await,
    );
    assert!(
        message.contains("timed out") && message.contains("nobody answered"),
        "{message}"
    );
    assert_eq!(ws.snapshot(), before);
}

#[tokio::test]
async fn consent_outside_the_granted_folders_is_not_granted() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, approve_all());
    let message = refusal(
        call(
            &runtime,
            &tool,
            "list-other-folder",
            json!({"granted": "Archive", "other": "Archive"}),
        )
        .await,
    );
    assert!(
        message.contains("not granted") && message.contains("outside the grant"),
        "{message}"
    );
}

#[tokio::test]
async fn an_ungranted_capability_is_refused_at_link_time() {
    let ws = Workspace::new();
    let bytes = std::fs::read(guest("inbox_triage")).unwrap();
    for grants in [
        "",
        "[[tools.t.grants]]\ncapability = \"mail.delete\"\nmode = \"deny\"\n",
    ] {
        let policy = format!(
            "user = \"alice\"\n[mail]\nmaildir = \"Maildir\"\n[tools.t]\ncomponent = \"x.wasm\"\n{grants}"
        );
        let runtime = ws.runtime(&policy, shared(approve_all()));
        let tool_policy = runtime.policy().tools["t"].clone();
        let err = match runtime.load_component("t", tool_policy, &bytes) {
            Err(e) => e,
            Ok(_) => panic!("a tool importing an ungranted capability was linked"),
        };
        assert!(matches!(err, LoadError::NotGranted { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("capability `mail`") && text.contains("agentcap:tools/mail"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn an_unknown_import_is_refused_by_name() {
    let ws = Workspace::new();
    let runtime = ws.runtime(
        "user = \"alice\"\n[tools.t]\ncomponent = \"x.wasm\"\n",
        shared(approve_all()),
    );
    let bytes = std::fs::read(guest("hostile_imports")).unwrap();
    let tool_policy = runtime.policy().tools["t"].clone();
    let err = match runtime.load_component("t", tool_policy, &bytes) {
        Err(e) => e,
        Ok(_) => panic!("an exfiltration import was linked"),
    };
    assert!(err.to_string().contains("hostile:imports/exfil"), "{err}");
}

#[tokio::test]
async fn malformed_components_are_reported_not_fatal() {
    let ws = Workspace::new();
    let runtime = ws.runtime(
        "user = \"alice\"\n[tools.t]\ncomponent = \"x.wasm\"\n",
        shared(approve_all()),
    );
    let tool_policy = runtime.policy().tools["t"].clone();
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let mut truncated = std::fs::read(guest("inbox_triage")).unwrap();
    truncated.truncate(truncated.len() / 2);
    for bytes in [
        b"not wasm at all".to_vec(),
        Vec::new(),
        core_module,
        truncated,
    ] {
        let err = match runtime.load_component("t", tool_policy.clone(), &bytes) {
            Err(e) => e,
            Ok(_) => panic!("a malformed component loaded"),
        };
        assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("not a valid WebAssembly component"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn bad_arguments_get_clear_errors() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, approve_all());
    let cases = [
        (
            "forge-token",
            json!({"id": 5, "handle": 1}),
            "argument id: expected string, got number 5",
        ),
        ("forge-token", json!({"id": "x"}), "argument handle"),
        (
            "forge-token",
            json!({"id": "x", "handle": -1}),
            "expected integer (u32)",
        ),
        (
            "forge-token",
            json!({"id": "x", "handle": 1, "extra": true}),
            "no parameter `extra`",
        ),
        (
            "delete-beyond-approval",
            json!({"ids": ["a", 2]}),
            "argument ids[1]",
        ),
        (
            "no-such-function",
            json!({}),
            "has no function `no-such-function`",
        ),
        ("forge-token", json!([1, 2]), "must be a JSON object"),
    ];
    for (function, args, expected) in cases {
        let err = call(&runtime, &tool, function, args.clone())
            .await
            .expect_err("bad arguments must be refused");
        assert!(
            err.to_string().contains(expected),
            "{function} {args}: {err}"
        );
    }
}

/// Invariant 7: an approved delete of a message whose file name is already
/// taken in Trash (by another message) keeps both: a move never replaces a
/// file. The same holds for archive (same path) and for `new/` mail.
#[tokio::test]
async fn delete_never_overwrites_a_message_already_in_trash() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, approve_all());
    let maildir = ws.maildir();
    let id = inbox_ids(&ws, 1).remove(0);
    let unique = id.strip_prefix("INBOX/").unwrap().to_string();
    let (sub, file) = ["cur", "new"]
        .iter()
        .find_map(|sub| {
            std::fs::read_dir(maildir.join(sub))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with(&format!("{unique}:")) || *n == unique)
                .map(|n| (*sub, n))
        })
        .expect("the message file is in cur/ or new/");
    // A different message already lives in Trash under the same file name.
    for dir in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(".Trash").join(dir)).unwrap();
    }
    let squatter =
        b"From: someone@example.org\r\nSubject: the one already in Trash\r\n\r\nkeep me\r\n";
    std::fs::write(maildir.join(".Trash").join(sub).join(&file), squatter).unwrap();
    let original = std::fs::read(maildir.join(sub).join(&file)).unwrap();
    let result = call(
        &runtime,
        &tool,
        "delete-beyond-approval",
        json!({"ids": [id]}),
    )
    .await
    .unwrap();
    assert!(result.get("ok").is_some(), "{result}");
    let trash: Vec<Vec<u8>> = std::fs::read_dir(maildir.join(".Trash").join(sub))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert_eq!(trash.len(), 2, "both messages must be in Trash");
    assert!(
        trash.contains(&squatter.to_vec()),
        "the earlier Trash message survives"
    );
    assert!(trash.contains(&original), "the deleted message is in Trash");
    assert!(!maildir.join(sub).join(&file).exists());
    // The moved message got a new, listed id.
    let in_trash = ws.ids_in("Trash");
    assert_eq!(in_trash.len(), 2, "{in_trash:?}");
}

/// An id names exactly one file: with `cur/X:2,S` and `new/X` present, a
/// request naming `INBOX/X` is refused as ambiguous and nothing moves.
#[tokio::test]
async fn an_ambiguous_id_is_refused_and_nothing_moves() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws, approve_all());
    let maildir = ws.maildir();
    let unique = "1700000000.M1P1.ambiguous";
    std::fs::write(
        maildir.join("cur").join(format!("{unique}:2,S")),
        b"From: promo@example.com\r\nSubject: 50% off everything\r\n\r\nsale\r\n",
    )
    .unwrap();
    std::fs::write(
        maildir.join("new").join(unique),
        b"From: lawyer@example.com\r\nSubject: Your contract, signed\r\n\r\nimportant\r\n",
    )
    .unwrap();
    let before = ws.snapshot();
    for _ in 0..2 {
        let message = refusal(
            call(
                &runtime,
                &tool,
                "delete-beyond-approval",
                json!({"ids": [format!("INBOX/{unique}")]}),
            )
            .await,
        );
        assert!(message.contains("ambiguous"), "{message}");
    }
    assert_eq!(ws.snapshot(), before, "neither file may move");
}

/// A tool cannot wear the human down: after three refusals of mail.delete
/// in a session, it is refused without asking (journaled) until the page
/// (the same call the page's button makes) allows asking again.
#[tokio::test]
async fn a_tool_that_asks_in_a_loop_is_not_asked_again_until_reallowed() {
    let ws = Workspace::new();
    let policy = agentcap_tests::triage_policy("");
    let approver = std::sync::Arc::new(ScriptedApprover::new("test-user", |_| {
        Decision::Decline("no".into())
    }));
    let (runtime, tool) = ws.load_guest(&policy, approver.clone(), "inbox-triage", "inbox_triage");
    let before = ws.snapshot();
    let session = SessionId("loop".into());
    let args = json!({"folder": "INBOX"});
    let run = || runtime.call(&tool, &session, "purge", &args);
    let outcome = run().await.unwrap();
    assert_eq!(outcome.result, json!({"ok": 0}));
    assert_eq!(
        approver.answered().len(),
        3,
        "asked three times, then not again"
    );
    let records = runtime.journal().all().unwrap();
    let silenced = records
        .iter()
        .filter(|r| {
            r.outcome
                .as_deref()
                .unwrap_or("")
                .contains("further requests are refused without asking")
        })
        .count();
    assert!(silenced >= 1, "the silenced requests are journaled");
    let muted = runtime.stop_handle().muted_requests();
    assert_eq!(muted.len(), 1, "{muted:?}");
    assert_eq!(muted[0].capability, "mail.delete");
    // Another call in the session is not asked either.
    run().await.unwrap();
    assert_eq!(approver.answered().len(), 3);
    // Re-allowed (as the page's button does): asked again.
    assert!(runtime.stop_handle().reallow(
        &session,
        "inbox-triage",
        agentcap::capability::mail::DELETE,
        "approvals page"
    ));
    run().await.unwrap();
    assert_eq!(approver.answered().len(), 6);
    assert_eq!(ws.snapshot(), before, "nothing was deleted");
}

/// A person who has not answered yet.
struct Waiting(std::sync::Arc<tokio::sync::Notify>);

impl Approver for Waiting {
    fn channel(&self) -> &str {
        "test-user"
    }

    fn decide<'a>(
        &'a self,
        prompt: &'a agentcap::consent::ConsentPrompt,
    ) -> agentcap::consent::DecisionFuture<'a> {
        Box::pin(async move {
            self.0.notified().await;
            Decision::approve_all(prompt)
        })
    }
}

/// A call parked on a consent request gives its execution slot back: with
/// one slot, a call waiting for a person (or abandoned by its client) does
/// not keep the tool's other calls out, and it still finishes when the
/// person answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_a_person_does_not_hold_the_tool() {
    let ws = Workspace::new();
    let policy = agentcap_tests::triage_policy("").replace(
        "[tools.inbox-triage]\ncomponent",
        "[tools.inbox-triage]\nlimits = { max_concurrent_calls = 1 }\ncomponent",
    );
    assert!(policy.contains("max_concurrent_calls = 1"), "{policy}");
    let answer = std::sync::Arc::new(tokio::sync::Notify::new());
    let (runtime, tool) = ws.load_guest(
        &policy,
        shared(Waiting(answer.clone())),
        "inbox-triage",
        "inbox_triage",
    );
    let (runtime, tool) = (std::sync::Arc::new(runtime), std::sync::Arc::new(tool));
    let parked = {
        let (runtime, tool) = (runtime.clone(), tool.clone());
        tokio::spawn(async move {
            runtime
                .call(
                    &tool,
                    &SessionId("a".into()),
                    "triage",
                    &json!({"folder": "INBOX"}),
                )
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!parked.is_finished(), "the triage waits for the person");
    for session in ["b", "c"] {
        let other = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            runtime.call(
                &tool,
                &SessionId(session.into()),
                "plan",
                &json!({"folder": "INBOX"}),
            ),
        )
        .await
        .expect("the other call is not blocked")
        .expect("the other call runs in the free slot");
        assert!(other.result.get("ok").is_some(), "{}", other.result);
    }
    // The person answers both of the triage's requests; it completes.
    for _ in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        answer.notify_one();
    }
    let done = tokio::time::timeout(std::time::Duration::from_secs(20), parked)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(done.result["ok"]["archived"].as_array().unwrap().len(), 12);
}
