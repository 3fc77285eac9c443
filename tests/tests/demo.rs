//! The demo's unattended run, checked against the disk: the plan is
//! proposed, the deselected item is untouched, deletions are in Trash.

use agentcap::demo::{DemoMail, DemoUser, run_demo};

#[tokio::test]
async fn unattended_demo_acts_only_on_the_approved_subset() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run_demo(dir.path(), DemoUser::Scripted, None, DemoMail::Maildir)
        .await
        .unwrap();
    let report = &summary.report;
    assert_eq!(report["scanned"], 46);
    let proposed = report["proposed"].as_array().unwrap();
    let count = |action: &str| proposed.iter().filter(|p| p["action"] == action).count();
    assert_eq!((count("archive"), count("delete")), (12, 9));
    assert_eq!(report["archived"].as_array().unwrap().len(), 12);
    assert_eq!(report["deleted"].as_array().unwrap().len(), 8);
    let not_approved = report["not-approved"].as_array().unwrap();
    assert_eq!(not_approved.len(), 1);
    assert_eq!(
        summary.left_out_untouched.len(),
        1,
        "the deselected mail must stay in INBOX"
    );
    assert_eq!((summary.inbox, summary.archive, summary.trash), (26, 12, 8));
    // Recent promotions and personal mail were never proposed.
    assert!(
        proposed
            .iter()
            .all(|p| !p["subject"].as_str().unwrap().contains("Black Friday"))
    );
    // Nothing was unlinked: every fixture file still exists somewhere.
    let files = agentcap_tests::snapshot(&dir.path().join("Maildir"));
    assert_eq!(files.len(), 46);
    // Part 2: the runaway purge is stopped after three approvals.
    let purge = summary.purge.expect("the scripted demo runs part 2");
    assert_eq!(purge.deleted_before_stop, 3);
    assert_eq!(purge.changed_after_stop, 0);
    assert!(
        purge.call_ended.contains("was stopped"),
        "{}",
        purge.call_ended
    );
    // Part 4: notes. Two done drafts archived, three title-only drafts
    // proposed for deletion, the first left out, one restored afterwards.
    let notes = summary.notes.expect("the scripted demo runs part 4");
    let report = &notes.report;
    assert_eq!(report["scanned"], 6);
    assert_eq!(report["moved"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["trashed"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(notes.left_out_untouched, ["notes:drafts/empty.md"]);
    assert_eq!(report["index-written"], true);
    let (restored, back) = notes.restored.expect("one draft restored");
    assert!(back, "{restored} is not back");
    assert_eq!((notes.drafts, notes.archived), (3, 3));
    let index = std::fs::read_to_string(dir.path().join("notes/index.md")).unwrap();
    assert!(
        index.contains("archive/offsite-2025.md") && !index.contains("drafts/untitled.md"),
        "{index}"
    );
}

/// `agentcap demo --imap`: parts 1 and 2 against a Dovecot the demo starts
/// itself, with the same outcome as over the Maildir, checked on the
/// server through the demo's own second connection.
#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test]
async fn the_demo_runs_over_imap_with_the_same_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run_demo(dir.path(), DemoUser::Scripted, None, DemoMail::Imap)
        .await
        .unwrap();
    assert!(
        summary.mailbox.starts_with("IMAP server 127.0.0.1:"),
        "{}",
        summary.mailbox
    );
    let report = &summary.report;
    assert_eq!(report["scanned"], 46);
    assert_eq!(report["archived"].as_array().unwrap().len(), 12);
    assert_eq!(report["deleted"].as_array().unwrap().len(), 8);
    // The ids the tool saw are the server's: <folder>/<UIDVALIDITY>.<UID>.
    let left_out = &summary.left_out_untouched;
    assert_eq!(left_out.len(), 1, "the deselected mail must stay in INBOX");
    assert!(
        left_out[0].starts_with("INBOX/") && left_out[0].contains('.'),
        "{left_out:?}"
    );
    assert_eq!((summary.inbox, summary.archive, summary.trash), (26, 12, 8));
    let purge = summary.purge.expect("the scripted demo runs part 2");
    assert_eq!(purge.deleted_before_stop, 3);
    assert_eq!(purge.changed_after_stop, 0);
    assert!(
        purge.call_ended.contains("was stopped"),
        "{}",
        purge.call_ended
    );
    // The workspace's own Maildir was only copied for the server.
    let files = agentcap_tests::snapshot(&dir.path().join("Maildir"));
    assert_eq!(files.len(), 46);
    assert!(
        std::fs::read_to_string(dir.path().join("agentcap.toml"))
            .unwrap()
            .contains("imap = {")
    );
}
