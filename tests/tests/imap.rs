//! The `mail` capability over a real Dovecot IMAP server that each test
//! starts itself: the same tools as over a Maildir, ids stable across
//! sessions and bound to UIDVALIDITY, only approved UIDs moved, the host's
//! prompt escaped, clear errors for login and TLS failures, and the
//! attacks a hostile mailbox or tool would try.

use std::sync::Arc;

use agentcap::consent::{ConsentPrompt, Decision, ScriptedApprover, SessionId};
use agentcap::{LoadedTool, Runtime};
use agentcap_tests::dovecot::{Dovecot, ImapClient, make_ca};
use agentcap_tests::{Workspace, call_tool, fixture_maildir, refusal_records, triage_policy};
use serde_json::{Value, json};

/// The hostile-mail and mail-sweeper tools, granted INBOX (and Receipts).
fn tools_policy(mail_table: &str) -> String {
    format!(
        r#"
user = "alice"
consent_timeout_secs = 5
{mail_table}
[tools.hostile]
component = "{hostile}"
[[tools.hostile.grants]]
capability = "mail.read"
mode = "ask"
folders = ["INBOX", "Receipts"]
[[tools.hostile.grants]]
capability = "mail.list"
mode = "standing"
folders = ["INBOX", "Receipts"]
[[tools.hostile.grants]]
capability = "mail.delete"
mode = "ask"
folders = ["INBOX", "Receipts"]

[tools.sweeper]
component = "{sweeper}"
[[tools.sweeper.grants]]
capability = "mail.list"
mode = "standing"
folders = ["INBOX"]
[[tools.sweeper.grants]]
capability = "mail.read"
mode = "standing"
folders = ["INBOX"]
"#,
        hostile = agentcap_tests::guest("hostile_mail").display(),
        sweeper = agentcap_tests::guest("mail_sweeper").display(),
    )
}

/// A runtime over `policy` with `tool` loaded from component `stem`.
fn load(
    ws: &Workspace,
    policy: &str,
    approver: Arc<ScriptedApprover>,
    tool: &str,
    stem: &str,
) -> (Runtime, LoadedTool) {
    ws.load_guest(policy, approver, tool, stem)
}

fn scripted(
    script: impl Fn(&ConsentPrompt) -> Decision + Send + Sync + 'static,
) -> Arc<ScriptedApprover> {
    Arc::new(ScriptedApprover::new("test-user", script))
}

/// Append every fixture message to INBOX (read ones `\Seen`), oldest
/// first; returns how many.
fn seed_fixture(client: &mut ImapClient) -> usize {
    let mut files: Vec<(String, std::path::PathBuf, &str)> = Vec::new();
    for (sub, flags) in [("cur", "\\Seen"), ("new", "")] {
        for entry in std::fs::read_dir(fixture_maildir().join(sub)).unwrap() {
            let entry = entry.unwrap();
            files.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
                flags,
            ));
        }
    }
    files.sort();
    for (_, path, flags) in &files {
        client.append("INBOX", flags, &std::fs::read(path).unwrap());
    }
    files.len()
}

fn mail_message(from: &str, subject: &str, date: &str, body: &str) -> Vec<u8> {
    format!("From: {from}\r\nTo: alice@example.org\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{}@test>\r\n\r\n{body}\r\n", subject.len() + body.len())
        .into_bytes()
}

fn all_flags(client: &mut ImapClient, folder: &str) -> String {
    client.ok(&format!("EXAMINE \"{folder}\""));
    let answer = client.ok("FETCH 1:* (UID FLAGS)");
    // Without the tagged line (its tag differs from one call to the next).
    answer
        .lines()
        .filter(|l| l.starts_with('*'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_triage_runs_unchanged_against_dovecot() {
    let server = Dovecot::start();
    let mut client = server.client();
    let total = seed_fixture(&mut client);
    let ws = Workspace::new();

    // The same plan as over the Maildir with the same messages.
    let maildir_policy = triage_policy("");
    let imap_policy =
        maildir_policy.replace("[mail]\nmaildir = \"Maildir\"\n", &server.mail_table());
    assert_ne!(imap_policy, maildir_policy);
    let keep_first_archive = scripted(|p| {
        if p.capability.as_str() == "mail.archive" {
            Decision::Approve((1..p.items.len()).collect())
        } else {
            Decision::approve_all(p)
        }
    });
    let plan_of = |v: &Value| {
        let mut plan: Vec<(String, String, String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["action"].as_str().unwrap().to_string(),
                    p["subject"].as_str().unwrap().to_string(),
                    p["from"].as_str().unwrap().to_string(),
                    p["date"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        plan.sort();
        plan
    };
    let (local, local_tool) = load(
        &ws,
        &maildir_policy,
        keep_first_archive.clone(),
        "inbox-triage",
        "inbox_triage",
    );
    let local_plan = call_tool(&local, &local_tool, "plan", &json!({"folder": "INBOX"}))
        .await
        .unwrap();
    drop(local);
    let (runtime, tool) = load(
        &ws,
        &imap_policy,
        keep_first_archive.clone(),
        "inbox-triage",
        "inbox_triage",
    );
    let plan = call_tool(&runtime, &tool, "plan", &json!({"folder": "INBOX"}))
        .await
        .unwrap();
    assert!(!plan_of(&plan).is_empty());
    assert_eq!(
        plan_of(&plan),
        plan_of(&local_plan),
        "the IMAP plan differs from the Maildir one"
    );
    let uid_validity = client.uid_validity("INBOX");
    for p in plan.as_array().unwrap() {
        let id = p["id"].as_str().unwrap();
        assert!(id.starts_with(&format!("INBOX/{uid_validity}.")), "{id}");
    }

    // Triage: the user keeps the first newsletter, approves the rest.
    let report = call_tool(&runtime, &tool, "triage", &json!({"folder": "INBOX"}))
        .await
        .unwrap();
    let archived = report["archived"].as_array().unwrap().len();
    let deleted = report["deleted"].as_array().unwrap().len();
    assert!(archived > 0 && deleted > 0, "{report}");
    assert_eq!(
        report["not-approved"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert!(
        report["refusals"].as_array().unwrap().is_empty(),
        "{report}"
    );
    // The server's own state, through the tests' own client.
    assert_eq!(client.uids("Archive").len(), archived);
    assert_eq!(client.uids("Trash").len(), deleted);
    let inbox = client.uids("INBOX");
    assert_eq!(inbox.len(), total - archived - deleted);
    let kept = report["not-approved"][0].as_str().unwrap();
    let kept_uid: u32 = kept.rsplit('.').next().unwrap().parse().unwrap();
    assert!(inbox.contains(&kept_uid), "the declined message moved");
    for id in report["archived"]
        .as_array()
        .unwrap()
        .iter()
        .chain(report["deleted"].as_array().unwrap())
    {
        let uid: u32 = id
            .as_str()
            .unwrap()
            .rsplit('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(!inbox.contains(&uid), "{id} is still in INBOX");
    }
    // The prompts showed the server's facts.
    let asked = keep_first_archive.answered();
    let archive_prompt = asked
        .iter()
        .find(|(p, _)| p.capability.as_str() == "mail.archive")
        .unwrap();
    assert!(archive_prompt.0.items[0].description.starts_with("From: "));
    assert!(archive_prompt.0.action.contains("to Archive"));

    // Reading does not set \Seen (as over a Maildir); the same subject.
    let (sweeper_rt, sweeper) = load(
        &ws,
        &tools_policy(&server.mail_table()),
        scripted(Decision::approve_all),
        "sweeper",
        "mail_sweeper",
    );
    let flags_before = all_flags(&mut client, "INBOX");
    let subject = call_tool(
        &sweeper_rt,
        &sweeper,
        "read-first",
        &json!({"folder": "INBOX"}),
    )
    .await
    .unwrap();
    assert!(subject.as_str().is_some_and(|s| !s.is_empty()), "{subject}");
    assert_eq!(
        all_flags(&mut client, "INBOX"),
        flags_before,
        "reading changed flags"
    );
}

#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_delete_moves_nothing_and_is_journaled() {
    let server = Dovecot::start();
    let mut client = server.client();
    let total = seed_fixture(&mut client);
    let ws = Workspace::new();
    let policy = triage_policy("").replace("[mail]\nmaildir = \"Maildir\"\n", &server.mail_table());
    let approver = scripted(|p| {
        if p.capability.as_str() == "mail.delete" {
            Decision::Decline("keep my promotions".into())
        } else {
            Decision::Decline("not now".into())
        }
    });
    let (runtime, tool) = load(&ws, &policy, approver, "inbox-triage", "inbox_triage");
    let report = call_tool(&runtime, &tool, "triage", &json!({"folder": "INBOX"}))
        .await
        .unwrap();
    assert!(report["deleted"].as_array().unwrap().is_empty(), "{report}");
    assert!(
        report["archived"].as_array().unwrap().is_empty(),
        "{report}"
    );
    assert_eq!(client.uids("INBOX").len(), total);
    assert!(client.uids("Trash").is_empty());
    assert!(client.uids("Archive").is_empty());
    let refusals = refusal_records(&runtime);
    assert!(
        refusals
            .iter()
            .any(|r| r.capability.as_deref() == Some("mail.delete")
                && r.outcome
                    .as_deref()
                    .unwrap_or("")
                    .contains("keep my promotions")),
        "{refusals:?}"
    );
    let calls = runtime
        .journal()
        .all()
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == "call" && r.capability.as_deref() == Some("mail.delete"))
        .count();
    assert_eq!(calls, 0, "no delete call was made");
}

#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_subjects_and_senders_are_shown_escaped_and_clipped() {
    let server = Dovecot::start();
    let mut client = server.client();
    let long = "A".repeat(3000);
    let hostile = format!(
        "From: \"\u{202e}evil\u{1b}[2J\" <x@evil.example>\r\nTo: alice@example.org\r\nSubject: Invoice \u{1b}[31mPAID\u{1b}[0m \u{202e}fdp.exe =?utf-8?q?line1=0Aline2?= {long}\r\nDate: Tue, 01 Sep 2026 10:00:00 +0000\r\n\r\nbody\r\n"
    );
    let uid = client.append("INBOX", "", hostile.as_bytes());
    let id = format!("INBOX/{}.{uid}", client.uid_validity("INBOX"));
    let ws = Workspace::new();
    let approver = scripted(|_| Decision::Decline("no".into()));
    let (runtime, tool) = load(
        &ws,
        &tools_policy(&server.mail_table()),
        approver.clone(),
        "hostile",
        "hostile_mail",
    );
    let outcome = call_tool(
        &runtime,
        &tool,
        "delete-beyond-approval",
        &json!({"ids": [id]}),
    )
    .await;
    assert!(outcome.is_err(), "{outcome:?}");
    let (prompt, _) = approver.answered().pop().expect("the user was asked");
    // The host's facts, from the server, decoded.
    let description = &prompt.items[0].description;
    assert!(description.contains("\u{1b}[31mPAID"), "{description:?}");
    assert!(description.contains("line1\nline2"), "{description:?}");
    // What the person sees: every hidden character a visible marker.
    let shown = prompt.render();
    for raw in ['\u{1b}', '\u{202e}'] {
        assert!(!shown.contains(raw), "raw {raw:?} in the prompt: {shown}");
    }
    assert!(shown.contains("⟨ESC⟩[31mPAID"), "{shown}");
    assert!(shown.contains("⟨U+202E⟩"), "{shown}");
    assert!(shown.contains("line1⟨LF⟩line2"), "{shown}");
    assert!(
        shown.contains("more bytes"),
        "the long subject is clipped: {shown}"
    );
    assert!(shown.len() < 8000, "{}", shown.len());
    assert_eq!(client.uids("INBOX"), vec![uid]);
    assert!(client.uids("Trash").is_empty());
}

#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uidvalidity_change_between_consent_and_call_is_refused() {
    let server = Dovecot::start();
    let mut client = server.client();
    client.ok("CREATE Receipts");
    let receipt = mail_message(
        "shop@example.com",
        "Your receipt",
        "Tue, 01 Sep 2026 10:00:00 +0000",
        "12 EUR",
    );
    let uid = client.append("Receipts", "", &receipt);
    let old_validity = client.uid_validity("Receipts");
    let id = format!("Receipts/{old_validity}.{uid}");
    // While the person looks at the prompt, the folder is recreated: the
    // same UID now names another message.
    let (port, user, password) = (server.port, server.user.clone(), server.password.clone());
    let approver = scripted(move |p| {
        let mut other = ImapClient::login(port, &user, &password);
        other.ok("DELETE Receipts");
        other.ok("CREATE Receipts");
        let reused = other.append(
            "Receipts",
            "",
            &mail_message(
                "boss@example.com",
                "Board minutes",
                "Wed, 02 Sep 2026 10:00:00 +0000",
                "secret",
            ),
        );
        assert_eq!(reused, 1, "the UID is reused under the new UIDVALIDITY");
        Decision::approve_all(p)
    });
    let ws = Workspace::new();
    let (runtime, tool) = load(
        &ws,
        &tools_policy(&server.mail_table()),
        approver,
        "hostile",
        "hostile_mail",
    );
    let message = call_tool(
        &runtime,
        &tool,
        "delete-beyond-approval",
        &json!({"ids": [id]}),
    )
    .await
    .unwrap_err();
    let new_validity = client.uid_validity("Receipts");
    assert_ne!(new_validity, old_validity);
    assert!(message.contains("UIDVALIDITY"), "{message}");
    assert!(
        message.contains(&new_validity.to_string()) && message.contains(&id),
        "{message}"
    );
    assert_eq!(client.uids("Receipts"), vec![1], "the new message stayed");
    assert!(client.uids("Trash").is_empty(), "nothing moved");

    // A forged UIDVALIDITY is refused before anyone is asked.
    let forged = format!("Receipts/{}.1", new_validity.wrapping_add(7));
    let asked = scripted(Decision::approve_all);
    let (runtime, tool) = load(
        &ws,
        &tools_policy(&server.mail_table()),
        asked.clone(),
        "hostile",
        "hostile_mail",
    );
    let message = call_tool(
        &runtime,
        &tool,
        "delete-beyond-approval",
        &json!({"ids": [forged]}),
    )
    .await
    .unwrap_err();
    assert!(message.contains("UIDVALIDITY"), "{message}");
    assert!(
        asked.answered().is_empty(),
        "nobody is asked about a stale id"
    );
    assert!(client.uids("Trash").is_empty());
}

/// Deletes `victim` from INBOX through the tool; another message marked
/// `\Deleted` by someone else beforehand stays.
async fn only_the_approved_uid_moves(server: &Dovecot) {
    let mut client = server.client();
    let date = "Tue, 01 Sep 2026 10:00:00 +0000";
    let victim = client.append(
        "INBOX",
        "",
        &mail_message("a@example.com", "victim", date, "1"),
    );
    let marked = client.append(
        "INBOX",
        "\\Deleted",
        &mail_message("b@example.com", "marked by another client", date, "2"),
    );
    let bystander = client.append(
        "INBOX",
        "",
        &mail_message("c@example.com", "bystander", date, "3"),
    );
    let id = format!("INBOX/{}.{victim}", client.uid_validity("INBOX"));
    let ws = Workspace::new();
    let (runtime, tool) = load(
        &ws,
        &tools_policy(&server.mail_table()),
        scripted(Decision::approve_all),
        "hostile",
        "hostile_mail",
    );
    let answer = call_tool(
        &runtime,
        &tool,
        "delete-beyond-approval",
        &json!({"ids": [id]}),
    )
    .await
    .unwrap();
    let trash_validity = client.uid_validity("Trash");
    assert!(
        answer
            .as_str()
            .unwrap()
            .contains(&format!("Trash/{trash_validity}.")),
        "the new id names Trash: {answer}"
    );
    assert_eq!(client.uids("INBOX"), vec![marked, bystander]);
    assert!(client.flags("INBOX", marked).contains("\\Deleted"));
    assert_eq!(client.uids("Trash").len(), 1);
}

#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_approved_uid_moves_with_move() {
    only_the_approved_uid_moves(&Dovecot::start()).await;
}

#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_approved_uid_moves_without_move_through_uidplus() {
    let server = Dovecot::start_with(
        "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ UIDPLUS\n",
    );
    only_the_approved_uid_moves(&server).await;
}

#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_approved_uid_moves_with_move_but_without_uidplus() {
    only_the_approved_uid_moves(&Dovecot::start_with(
        "imap_capability = IMAP4rev1 LITERAL+ MOVE\n",
    ))
    .await;
}

#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_move_or_uidplus_moving_is_refused() {
    let server = Dovecot::start_with("imap_capability = IMAP4rev1 LITERAL+\n");
    let mut client = server.client();
    let date = "Tue, 01 Sep 2026 10:00:00 +0000";
    let uid = client.append("INBOX", "", &mail_message("a@example.com", "x", date, "1"));
    let marked = client.append(
        "INBOX",
        "\\Deleted",
        &mail_message("b@example.com", "y", date, "2"),
    );
    let id = format!("INBOX/{}.{uid}", client.uid_validity("INBOX"));
    let ws = Workspace::new();
    let (runtime, tool) = load(
        &ws,
        &tools_policy(&server.mail_table()),
        scripted(Decision::approve_all),
        "hostile",
        "hostile_mail",
    );
    let message = call_tool(
        &runtime,
        &tool,
        "delete-beyond-approval",
        &json!({"ids": [id]}),
    )
    .await
    .unwrap_err();
    assert!(message.contains("neither MOVE nor UIDPLUS"), "{message}");
    assert_eq!(client.uids("INBOX"), vec![uid, marked]);
    assert!(client.uids("Trash").is_empty());
}

#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_tls_failures_are_clear_and_never_show_the_password() {
    let server = Dovecot::start();
    let mut client = server.client();
    client.append(
        "INBOX",
        "",
        &mail_message(
            "a@example.com",
            "hello",
            "Tue, 01 Sep 2026 10:00:00 +0000",
            "1",
        ),
    );
    let ws = Workspace::new();
    let sweep = |table: String| {
        let ws = &ws;
        async move {
            let (runtime, tool) = load(
                ws,
                &tools_policy(&table),
                scripted(Decision::approve_all),
                "sweeper",
                "mail_sweeper",
            );
            let outcome =
                call_tool(&runtime, &tool, "read-first", &json!({"folder": "INBOX"})).await;
            let journal: Vec<String> = runtime
                .journal()
                .all()
                .unwrap()
                .iter()
                .map(|r| format!("{r:?}"))
                .collect();
            (outcome, journal.join("\n"))
        }
    };

    // A wrong password: the server and the failed login are named, the
    // password (the right one, or the wrong one tried) never.
    let wrong = format!("{}-wrong", server.password);
    let wrong_file = server.dir().join("wrong-password");
    std::fs::write(&wrong_file, &wrong).unwrap();
    let table = server.mail_table().replace(
        &server.password_file().display().to_string(),
        &wrong_file.display().to_string(),
    );
    let (outcome, journal) = sweep(table).await;
    let message = outcome.unwrap_err();
    assert!(
        message.contains(&format!("127.0.0.1:{}", server.port)),
        "{message}"
    );
    assert!(message.contains("login as alice failed"), "{message}");
    for secret in [&wrong, &server.password] {
        assert!(!message.contains(secret.as_str()), "{message}");
        assert!(
            !journal.contains(secret.as_str()),
            "the journal holds the password"
        );
    }

    // TLS on the IMAPS port, trusting the test's CA.
    let tls_table = format!(
        "[mail]\nimap = {{ host = \"127.0.0.1\", port = {}, tls = \"implicit\", ca_file = \"{}\", user = \"alice\", password_file = \"{}\" }}\n",
        server.tls_port,
        server.cert().display(),
        server.password_file().display()
    );
    let (outcome, _) = sweep(tls_table.clone()).await;
    assert_eq!(outcome.unwrap(), json!("hello"));

    // STARTTLS on the plain port.
    let starttls = tls_table
        .replace(&server.tls_port.to_string(), &server.port.to_string())
        .replace("\"implicit\"", "\"starttls\"");
    let (outcome, _) = sweep(starttls).await;
    assert_eq!(outcome.unwrap(), json!("hello"));

    // A certificate nobody trusts: refused, naming the handshake.
    let other_ca = make_ca(server.dir(), "other-ca");
    let untrusted = tls_table.replace(
        &server.cert().display().to_string(),
        &other_ca.display().to_string(),
    );
    let (outcome, _) = sweep(untrusted).await;
    let message = outcome.unwrap_err();
    assert!(message.contains("TLS handshake failed"), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{}", server.tls_port)),
        "{message}"
    );
    // Nor does the system's store trust a self-signed certificate.
    let system_roots =
        tls_table.replace(&format!("ca_file = \"{}\", ", server.cert().display()), "");
    assert!(!system_roots.contains("ca_file"));
    let (outcome, _) = sweep(system_roots).await;
    assert!(outcome.unwrap_err().contains("TLS handshake failed"));
}

#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_for_inbox_cannot_move_mail_of_other_folders() {
    let server = Dovecot::start();
    let mut client = server.client();
    let date = "Tue, 01 Sep 2026 10:00:00 +0000";
    let archived = client.append(
        "Archive",
        "",
        &mail_message("a@example.com", "old", date, "1"),
    );
    let id = format!("Archive/{}.{archived}", client.uid_validity("Archive"));
    let ws = Workspace::new();
    let asked = scripted(Decision::approve_all);
    let (runtime, tool) = load(
        &ws,
        &tools_policy(&server.mail_table()),
        asked.clone(),
        "hostile",
        "hostile_mail",
    );
    let message = call_tool(
        &runtime,
        &tool,
        "delete-beyond-approval",
        &json!({"ids": [id]}),
    )
    .await
    .unwrap_err();
    assert!(message.contains("outside the grant"), "{message}");
    assert!(asked.answered().is_empty());
    // A token for an INBOX message does not cover the Archive one.
    let inbox = client.append(
        "INBOX",
        "",
        &mail_message("b@example.com", "new", date, "2"),
    );
    let inbox_id = format!("INBOX/{}.{inbox}", client.uid_validity("INBOX"));
    let message = call_tool(
        &runtime,
        &tool,
        "reuse-token",
        &json!({"first": inbox_id, "second": id}),
    )
    .await
    .unwrap_err();
    assert!(message.contains("outside the grant"), "{message}");
    assert_eq!(client.uids("Archive"), vec![archived]);
    assert_eq!(client.uids("INBOX"), vec![inbox]);
    assert!(client.uids("Trash").is_empty());
}

#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_folders_and_huge_messages_are_refused() {
    let server = Dovecot::start();
    let mut client = server.client();
    let date = "Tue, 01 Sep 2026 10:00:00 +0000";
    let small = client.append(
        "INBOX",
        "",
        &mail_message("a@example.com", "small", date, "1"),
    );
    let huge_body = "x".repeat(200 * 1024);
    let huge = client.append(
        "INBOX",
        "",
        &mail_message("a@example.com", "huge", date, &huge_body),
    );
    // Folders whose names a tool might forge or a server might hold.
    client.ok("CREATE \"Odd*Name\"");
    let validity = client.uid_validity("INBOX");
    let real = format!("INBOX/{validity}.{small}");
    let ws = Workspace::new();
    let table = server.mail_table().replace(
        "command_timeout_secs = 10",
        "command_timeout_secs = 10, max_message_kb = 64",
    );
    let (runtime, tool) = load(
        &ws,
        &tools_policy(&table),
        scripted(Decision::approve_all),
        "hostile",
        "hostile_mail",
    );
    for evil in [
        "INBOX/../Trash/1.1".to_string(),
        format!("../INBOX/{validity}.{small}"),
        format!("IN*/{validity}.{small}"),
        format!("%/{validity}.{small}"),
        format!("Odd*Name/{validity}.1"),
        format!("inbox/{validity}.{small}"),
        format!("INBOX/{validity}.{small} (FLAGS)"),
        format!("INBOX/{validity}.1:*"),
        format!("INBOX/{validity}.0{small}"),
        format!("INBOX/{validity}"),
        format!("\"INBOX\"/{validity}.{small}"),
    ] {
        let message = call_tool(
            &runtime,
            &tool,
            "traverse",
            &json!({"real-id": real, "evil-id": evil}),
        )
        .await
        .unwrap_err();
        assert!(message.contains("not allowed"), "{evil}: {message}");
    }
    // Folder names with wildcards, separators or another spelling of the
    // inbox are refused before the server sees them.
    let (lister_rt, lister) = load(
        &ws,
        &tools_policy(&table),
        scripted(Decision::approve_all),
        "sweeper",
        "mail_sweeper",
    );
    for folder in [
        "*",
        "%",
        "INBOX/*",
        "..",
        "Odd*Name",
        "inbox",
        "INBOX\" (FLAGS)",
    ] {
        let message = call_tool(
            &lister_rt,
            &lister,
            "read-first",
            &json!({"folder": folder}),
        )
        .await
        .unwrap_err();
        assert!(message.contains("not allowed"), "{folder}: {message}");
    }
    // A message over max_message_kb is not fetched.
    let (sweeper_rt, sweeper) = load(
        &ws,
        &tools_policy(&table),
        scripted(Decision::approve_all),
        "sweeper",
        "mail_sweeper",
    );
    let message = call_tool(
        &sweeper_rt,
        &sweeper,
        "read-one",
        &json!({"id": format!("INBOX/{validity}.{huge}")}),
    )
    .await
    .unwrap_err();
    assert!(message.contains("max_message_kb"), "{message}");
    let subject = call_tool(&sweeper_rt, &sweeper, "read-one", &json!({"id": real}))
        .await
        .unwrap();
    assert_eq!(subject, json!("small"));
    assert_eq!(client.uids("INBOX"), vec![small, huge]);
    assert!(client.uids("Trash").is_empty());
}

#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_stable_across_sessions_and_a_dropped_connection_is_reopened() {
    let server = Dovecot::start();
    let mut client = server.client();
    let date = "Tue, 01 Sep 2026 10:00:00 +0000";
    let uid = client.append(
        "INBOX",
        "",
        &mail_message("a@example.com", "stable", date, "1"),
    );
    let ws = Workspace::new();
    let (runtime, tool) = load(
        &ws,
        &tools_policy(&server.mail_table()),
        scripted(Decision::approve_all),
        "sweeper",
        "mail_sweeper",
    );
    let id = format!("INBOX/{}.{uid}", client.uid_validity("INBOX"));
    let logins = |server: &Dovecot, wanted: usize| {
        // Dovecot's log process writes a moment later.
        for _ in 0..100 {
            if server.log().matches("Login: user=<alice>").count() == wanted {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("expected {wanted} logins:\n{}", server.log());
    };
    for session in ["one", "two"] {
        let outcome = runtime
            .call(
                &tool,
                &SessionId(session.into()),
                "read-one",
                &json!({"id": id}),
            )
            .await
            .unwrap();
        assert_eq!(outcome.result, json!({"ok": "stable"}));
    }
    // The tests' own client and one session of the backend, reused.
    logins(&server, 2);
    // The server drops every session of the user: the next call reconnects.
    let kicked = std::process::Command::new("doveadm")
        .arg("-c")
        .arg(server.dir().join("dovecot.conf"))
        .args(["kick", "alice"])
        .output()
        .expect("doveadm");
    assert!(
        kicked.status.success(),
        "{}",
        String::from_utf8_lossy(&kicked.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let outcome = call_tool(&runtime, &tool, "read-one", &json!({"id": id})).await;
    assert_eq!(outcome.unwrap(), json!("stable"));
    logins(&server, 3);
}

#[test]
fn policy_errors_name_the_line() {
    let ws = Workspace::new();
    let path = ws.dir.path().join("bad.toml");
    let head = "user = \"alice\"\n\n[mail]\n";
    // Unknown keys and bad values point at their line (4); the table's
    // own checks at its header (3).
    for (body, wanted, line) in [
        (
            "imap = { host = \"h\", user = \"a\", password_env = \"P\", prot = 1 }\n",
            "unknown field `prot`",
            4,
        ),
        (
            "imap = { host = \"h\", user = \"a\", password_env = \"P\", tls = \"maybe\" }\n",
            "maybe",
            4,
        ),
        (
            "imap = { host = \"h\", user = \"a\", password_env = \"P\", max_list = 0 }\n",
            "out of range",
            4,
        ),
        (
            "maildir = \"M\"\nimap = { host = \"h\", user = \"a\", password_env = \"P\" }\n",
            "exactly one of `maildir` or `imap`",
            3,
        ),
        (
            "imap = { host = \"h\", user = \"a\" }\n",
            "exactly one of `password_env` or `password_file`",
            3,
        ),
        (
            "imap = { host = \"mail.example.org\", user = \"a\", password_env = \"P\", tls = \"none\" }\n",
            "in clear",
            3,
        ),
    ] {
        std::fs::write(&path, format!("{head}{body}")).unwrap();
        let err = agentcap::Policy::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(wanted) && err.contains(&format!("line {line}")),
            "{body}: {err}"
        );
    }
}

/// A scripted IMAP server on loopback that answers each command with
/// `answer(tag, command)` (greeting, LOGIN and CAPABILITY handled), for
/// what no honest server does. Returns its port.
fn fake_server(answer: impl Fn(&str, &str) -> Option<Vec<u8>> + Send + Sync + 'static) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let _ = writer.write_all(b"* OK fake server ready\r\n");
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let (tag, command) = line.trim_end().split_once(' ').unwrap_or(("*", ""));
                    let reply = match answer(tag, command) {
                        Some(reply) => reply,
                        None if command.starts_with("LOGIN") => {
                            format!("{tag} OK logged in\r\n").into_bytes()
                        }
                        None if command.starts_with("CAPABILITY") => {
                            format!("* CAPABILITY IMAP4rev1 MOVE UIDPLUS\r\n{tag} OK\r\n")
                                .into_bytes()
                        }
                        None if command.starts_with("EXAMINE") || command.starts_with("SELECT") => {
                            format!("* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n{tag} OK done\r\n")
                                .into_bytes()
                        }
                        None if command.starts_with("LOGOUT") => return,
                        None => format!("{tag} BAD unexpected\r\n").into_bytes(),
                    };
                    if writer.write_all(&reply).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    port
}

fn fake_backend(
    port: u16,
    password: &str,
    extra: serde_json::Value,
) -> agentcap::capability::mail::imap::ImapMail {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, password).unwrap();
    let mut settings = json!({
        "host": "127.0.0.1", "port": port, "tls": "none", "user": "alice",
        "password_file": file, "command_timeout_secs": 2, "max_message_kb": 64,
    });
    settings
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let settings = serde_json::from_value(settings).unwrap();
    // The password is read when the backend opens.
    agentcap::capability::mail::imap::ImapMail::open(&settings, |p| p.to_path_buf()).unwrap()
}

#[test]
fn a_server_that_floods_is_cut_off_at_the_byte_budget() {
    // A FETCH answered with a literal announced at 100 MiB (refused at the
    // announcement, before anything reserves room for it), or with one
    // endless quoted string (cut off at the budget, max_message_kb + 4 MiB,
    // or by the command timeout).
    for announced in [true, false] {
        let port = fake_server(move |_, command| {
            command.starts_with("FETCH").then(|| {
                let mut flood = if announced {
                    b"* 1 FETCH (UID 1 RFC822.SIZE 10 ENVELOPE (NIL {104857600}\r\n".to_vec()
                } else {
                    b"* 1 FETCH (UID 1 RFC822.SIZE 10 ENVELOPE (NIL \"".to_vec()
                };
                flood.extend(std::iter::repeat_n(b'A', 24 * 1024 * 1024));
                flood
            })
        });
        let mail = fake_backend(port, "pw", json!({}));
        let err = mail.list("INBOX", None).unwrap_err().to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        let budget = 64 * 1024 + 4 * 1024 * 1024;
        let cut_off =
            err.contains(&format!("exceeded {budget} bytes")) && err.contains("max_message_kb");
        // A string without a size is parsed again as it grows, which may
        // take longer than the command timeout: then that ends it.
        let timed_out = !announced && err.contains("timed out: the operation took over 2 s");
        assert!(cut_off || timed_out, "{err}");
    }
}

#[test]
fn a_server_that_stalls_times_out() {
    let port = fake_server(|_, command| {
        command.starts_with("FETCH").then(|| {
            std::thread::sleep(std::time::Duration::from_secs(5));
            Vec::new()
        })
    });
    let mail = fake_backend(port, "pw", json!({}));
    let started = std::time::Instant::now();
    let err = mail.list("INBOX", None).unwrap_err().to_string();
    assert!(
        err.contains("timed out: the operation took over 2 s"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_server_that_echoes_the_password_does_not_leak_it() {
    // Also a password the login command escapes (`"` and `\`): the echo
    // holds it in its escaped form.
    for secret in ["correct horse battery staple", r#"horse "battery" \staple"#] {
        let port = fake_server(move |tag, command| {
            command.starts_with("LOGIN").then(|| {
                format!("{tag} NO [AUTHENTICATIONFAILED] you sent {command}\r\n").into_bytes()
            })
        });
        let mail = fake_backend(port, secret, json!({}));
        let err = mail.list("INBOX", None).unwrap_err().to_string();
        assert!(err.contains("login as alice failed"), "{err}");
        assert!(!err.contains("battery"), "{err}");
        assert!(err.contains("[password]"), "{err}");
    }
}

#[test]
fn a_server_that_never_greets_hits_the_connect_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts, then says nothing.
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(2).flatten().collect();
        std::thread::sleep(std::time::Duration::from_secs(10));
        drop(held);
    });
    let mail = fake_backend(port, "pw", json!({"connect_timeout_secs": 1}));
    let started = std::time::Instant::now();
    let err = mail.list("INBOX", None).unwrap_err().to_string();
    assert!(
        err.contains(&format!("IMAP server 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        err.contains("waiting for the greeting timed out after 1 s (connect_timeout_secs)"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

/// A fake server that records every command after login, answers a
/// one-message folder (UID 5) and a move of it, and lets `on_command`
/// act (set a stop, sleep) before each answer.
fn recording_server(
    on_command: impl Fn(&str) + Send + Sync + 'static,
) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let port = fake_server(move |tag, command| {
        if command.starts_with("LOGIN") || command.starts_with("CAPABILITY") {
            return None;
        }
        record.lock().unwrap().push(command.to_string());
        on_command(command);
        let reply = if command.starts_with("UID FETCH") {
            format!("* 1 FETCH (UID 5)\r\n{tag} OK\r\n")
        } else if command.starts_with("UID MOVE") {
            format!("{tag} OK [COPYUID 9 5 1] moved\r\n")
        } else if command.starts_with("STATUS") {
            format!("{tag} OK\r\n")
        } else {
            return None;
        };
        Some(reply.into_bytes())
    });
    (port, seen)
}

fn stop_flag() -> (
    Arc<std::sync::atomic::AtomicBool>,
    agentcap::capability::mail::imap::StopCheck,
) {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let check = flag.clone();
    (
        flag,
        Arc::new(move || check.load(std::sync::atomic::Ordering::SeqCst)),
    )
}

#[test]
fn a_stop_sends_no_further_command_and_abandons_a_stalled_read() {
    use std::sync::atomic::Ordering;
    // Stopped while the ids are being checked: the move is never sent.
    let (flag, stopped) = stop_flag();
    let set = flag.clone();
    let (port, seen) = recording_server(move |command| {
        if command.starts_with("UID FETCH") {
            set.store(true, Ordering::SeqCst);
        }
    });
    let mail = fake_backend(port, "pw", json!({}));
    let err = mail
        .move_to(&["INBOX/7.5".into()], "Trash", Some(stopped))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not sent: the session was stopped"), "{err}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen
            .iter()
            .any(|c| c.starts_with("SELECT") || c.contains("MOVE")),
        "{seen:?}"
    );

    // A read stalled at the server ends as soon as the session stops,
    // long before the operation's deadline (30 s here).
    let port = fake_server(|_, command| {
        command.starts_with("FETCH").then(|| {
            std::thread::sleep(std::time::Duration::from_secs(3));
            Vec::new()
        })
    });
    let mail = fake_backend(port, "pw", json!({"command_timeout_secs": 30}));
    let (flag, stopped) = stop_flag();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        flag.store(true, Ordering::SeqCst);
        std::time::Instant::now()
    });
    let err = mail.list("INBOX", Some(stopped)).unwrap_err().to_string();
    let after_stop = stopper.join().unwrap().elapsed();
    assert!(
        err.contains("did not list a folder: the session was stopped"),
        "{err}"
    );
    assert!(
        after_stop < std::time::Duration::from_millis(100),
        "{after_stop:?}"
    );
}

#[test]
fn a_move_already_sent_is_waited_for_when_the_session_stops() {
    use std::sync::atomic::Ordering;
    // The server carries out a move that was sent: abandoning it would let
    // a stop be acknowledged while the mailbox may still change.
    let (flag, stopped) = stop_flag();
    let set = flag.clone();
    let (port, _) = recording_server(move |command| {
        if command.starts_with("UID MOVE") {
            set.store(true, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    });
    let mail = fake_backend(port, "pw", json!({}));
    let moved = mail
        .move_to(&["INBOX/7.5".into()], "Trash", Some(stopped))
        .unwrap();
    assert_eq!(moved, vec!["Trash/9.1".to_string()]);
    assert!(flag.load(Ordering::SeqCst));
}

#[test]
fn an_operation_has_one_deadline_for_all_its_commands() {
    // Each command answered in 0.7 s: the checks of a move (EXAMINE, UID
    // FETCH, STATUS) already take over the 2 s an operation has, so the
    // move itself is never sent.
    let (port, seen) =
        recording_server(|_| std::thread::sleep(std::time::Duration::from_millis(700)));
    let mail = fake_backend(port, "pw", json!({}));
    let started = std::time::Instant::now();
    let err = mail
        .move_to(&["INBOX/7.5".into()], "Trash", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("timed out: the operation took over 2 s"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.iter().any(|c| c.contains("MOVE")), "{seen:?}");
}

/// Stop mid-sweep over IMAP, at random points of the sweep's progress:
/// once the stop is acknowledged, a second IMAP connection sees not one
/// more message move, and no message is lost.
#[cfg_attr(
    not(agentcap_has_dovecot),
    ignore = "dovecot is not installed: apt-get install dovecot-imapd"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_effect_over_imap_after_an_acknowledged_stop() {
    const TRIALS: u64 = 20;
    let server = Dovecot::start();
    let mut watcher = server.client();
    let total = seed_fixture(&mut watcher);
    let mut rng = agentcap_tests::Rng::from_env("AGENTCAP_STOP_SEED");
    let seed = rng.seed;
    let policy = format!(
        "user = \"alice\"\n{}\n[tools.sweeper]\ncomponent = {:?}\nlimits = {{ wall_time_ms = 60000 }}\n\
         [[tools.sweeper.grants]]\ncapability = \"mail.list\"\nmode = \"standing\"\n\
         [[tools.sweeper.grants]]\ncapability = \"mail.delete\"\nmode = \"standing\"\n",
        server.mail_table(),
        agentcap_tests::guest("mail_sweeper")
    );
    let (mut stopped_mid_run, mut changed_after_ack) = (0, 0);
    for trial in 0..TRIALS {
        // Every message back in INBOX (new UIDs, same messages).
        if !watcher.uids("Trash").is_empty() {
            watcher.ok("SELECT \"Trash\"");
            watcher.ok("UID MOVE 1:* \"INBOX\"");
        }
        assert_eq!(watcher.uids("INBOX").len(), total);
        let ws = Workspace::new();
        let (runtime, tool) = load(
            &ws,
            &policy,
            scripted(Decision::approve_all),
            "sweeper",
            "mail_sweeper",
        );
        let (runtime, tool) = (Arc::new(runtime), Arc::new(tool));
        let sweep = {
            let (runtime, tool) = (runtime.clone(), tool.clone());
            tokio::spawn(async move {
                runtime
                    .call(
                        &tool,
                        &SessionId("victim".into()),
                        "sweep",
                        &json!({"folder": "INBOX"}),
                    )
                    .await
            })
        };
        // After the sweep's k-th move, as the server sees it.
        let k = 1 + rng.below(30) as usize;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while watcher.uids("Trash").len() < k
            && !sweep.is_finished()
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_micros(500)).await;
        }
        let ack = {
            let runtime = runtime.clone();
            tokio::task::spawn_blocking(move || {
                runtime.stop_session(&SessionId("victim".into()), "test")
            })
            .await
            .unwrap()
        };
        let at_ack = (watcher.uids("INBOX"), watcher.uids("Trash"));
        let result = sweep.await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let after = (watcher.uids("INBOX"), watcher.uids("Trash"));
        if at_ack != after {
            changed_after_ack += 1;
            eprintln!(
                "trial {trial} (seed {seed}): mail moved after the stop was acknowledged ({ack:?})"
            );
        }
        let trashed = after.1.len();
        assert_eq!(after.0.len() + trashed, total, "trial {trial}: mail lost");
        if trashed > 0 && trashed < total {
            stopped_mid_run += 1;
        }
        if let Ok(outcome) = &result {
            assert!(
                outcome.is_error || trashed == total,
                "trial {trial}: {outcome:?}"
            );
        }
        // The journal's successful deletes are exactly what moved.
        let deleted_ok = runtime
            .journal()
            .all()
            .unwrap()
            .iter()
            .filter(|r| r.kind == "outcome" && r.capability.as_deref() == Some("mail.delete"))
            .filter(|r| r.outcome.as_deref().unwrap_or("").starts_with("ok:"))
            .count();
        assert_eq!(
            deleted_ok, trashed,
            "trial {trial}: the journal disagrees with the server"
        );
    }
    eprintln!(
        "{TRIALS} stops over IMAP, {stopped_mid_run} in the middle of the sweep, {changed_after_ack} with changes after the acknowledgement"
    );
    assert_eq!(changed_after_ack, 0, "seed {seed}");
    assert!(
        stopped_mid_run >= TRIALS / 2,
        "too few stops landed mid-run ({stopped_mid_run})"
    );
}
