//! `agentcap serve` driven by rmcp's own client (the official Rust SDK):
//! consent answered in a `ClientHandler`, a stuck tool that does not block
//! other calls, cancellation, and `agentcap stop` reaching a call that waits
//! for the human.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentcap::journal::Journal;
use agentcap_tests::{Workspace, form_trusted, guest, triage_policy};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult,
    CancelledNotificationParam, ClientCapabilities, ClientConfig, ClientRequest,
    ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationCapability, Implementation,
    InputResponses, ProtocolVersion,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, NotificationContext, PeerRequestOptions, RequestContext,
    RunningService,
};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, ErrorData, RoleClient};
use serde_json::{Value, json};

const AGENTCAP: &str = env!("CARGO_BIN_EXE_agentcap-cli");

/// How the test's human answers consent forms.
#[derive(Clone, Copy)]
enum Human {
    /// Approve everything offered.
    ApproveAll,
    /// Never answer (the request stays pending until a stop).
    Away,
}

#[derive(Clone)]
struct TestClient {
    human: Human,
    asked: Arc<Mutex<Vec<String>>>,
    /// Reasons of `notifications/cancelled` the server sent.
    withdrawn: Arc<Mutex<Vec<String>>>,
}

impl ClientHandler for TestClient {
    async fn on_cancelled(
        &self,
        params: CancelledNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.withdrawn
            .lock()
            .unwrap()
            .push(params.reason.unwrap_or_default());
    }

    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        capabilities.elicitation = Some(ElicitationCapability::default());
        ClientConfig::new(capabilities, Implementation::new("rmcp-test-client", "1.0"))
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let ElicitRequestParams::FormElicitationParams {
            message,
            requested_schema,
            ..
        } = request
        else {
            return Ok(ElicitResult::new(ElicitationAction::Decline));
        };
        self.asked.lock().unwrap().push(message);
        match self.human {
            Human::Away => std::future::pending().await,
            Human::ApproveAll => {
                // Select every item offered (or say yes to a single one).
                let schema = serde_json::to_value(&requested_schema).unwrap();
                let approve = &schema["properties"]["approve"];
                let answer = match approve["items"]["anyOf"].as_array() {
                    Some(items) => {
                        json!(items.iter().map(|i| i["const"].clone()).collect::<Vec<_>>())
                    }
                    None => json!(true),
                };
                Ok(ElicitResult::new(ElicitationAction::Accept)
                    .with_content(json!({"approve": answer})))
            }
        }
    }
}

fn policy(ws: &Workspace) -> std::path::PathBuf {
    ws.policy(&form_trusted(&triage_policy(&format!(
        "\n[tools.echo]\ncomponent = \"{}\"\n\n[tools.hostile]\ncomponent = \"{}\"\nlimits = {{ wall_time_ms = 60000 }}\n",
        guest("echo_types").display(),
        guest("hostile_resources").display(),
    ))));
    ws.dir.path().join("agentcap.toml")
}

async fn connect(
    policy: &Path,
    control_dir: &Path,
    human: Human,
    lifecycle: ClientLifecycleMode,
) -> (
    RunningService<RoleClient, TestClient>,
    Arc<Mutex<Vec<String>>>,
) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let client = TestClient {
        human,
        asked: asked.clone(),
        withdrawn: Arc::new(Mutex::new(Vec::new())),
    };
    let command = tokio::process::Command::new(AGENTCAP).configure(|c| {
        c.args(["--no-cache", "serve", "--policy"])
            .arg(policy)
            .env("AGENTCAP_CONTROL_DIR", control_dir);
    });
    let transport = TokioChildProcess::new(command).expect("start agentcap serve");
    let running = client
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .expect("MCP handshake");
    let version = running.peer_info().map(|i| i.protocol_version.to_string());
    eprintln!("rmcp client negotiated protocol {version:?}");
    (running, asked)
}

fn params(name: &str, args: Value) -> CallToolRequestParams {
    let Value::Object(args) = args else {
        panic!("arguments are an object")
    };
    CallToolRequestParams::new(name.to_string()).with_arguments(args)
}

fn structured(result: &CallToolResult) -> Value {
    serde_json::to_value(result).unwrap()["structuredContent"]["result"].clone()
}

fn journal(ws: &Workspace) -> Vec<String> {
    Journal::open(&ws.dir.path().join("journal.sqlite"), false)
        .unwrap()
        .all()
        .unwrap()
        .iter()
        .map(|r| r.summary_line())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_in_the_handshake_era() {
    consents_runs_concurrently_and_cancels(ClientLifecycleMode::Initialize).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_in_the_2026_07_28_era() {
    consents_runs_concurrently_and_cancels(ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    })
    .await;
}

async fn consents_runs_concurrently_and_cancels(lifecycle: ClientLifecycleMode) {
    let ws = Workspace::new();
    let policy = policy(&ws);
    let control = tempfile::tempdir().unwrap();
    let (client, asked) = connect(&policy, control.path(), Human::ApproveAll, lifecycle).await;

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"inbox-triage.purge"), "{names:?}");
    let purge = tools
        .iter()
        .find(|t| t.name == "inbox-triage.purge")
        .unwrap();
    let hints = purge.annotations.as_ref().unwrap();
    assert_eq!(hints.destructive_hint, Some(true));
    assert_eq!(hints.read_only_hint, Some(false));

    // A runaway tool is running...
    let spin = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(params("hostile.spin", json!({})))),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...and does not hold up other calls.
    let hello = tokio::time::timeout(
        Duration::from_secs(10),
        client.call_tool(params("echo.api.greet", json!({"name": "rmcp"}))),
    )
    .await
    .expect("a stuck tool blocks nothing else")
    .unwrap();
    assert_eq!(structured(&hello), json!("hello, rmcp"));
    spin.cancel(Some("test cancels the runaway".into()))
        .await
        .unwrap();

    // Consent through rmcp's elicitation handler: each delete is asked for
    // and approved, one message at a time. On 2026-07-28 each consent is one
    // InputRequired round; the purge needs more than the SDK's default of 10.
    let purged = client
        .call_tool_with_mrtr_max_rounds(
            params("inbox-triage.purge", json!({"folder": "INBOX"})),
            100,
        )
        .await
        .unwrap();
    let deleted = structured(&purged)["ok"].as_u64().unwrap();
    assert!(deleted > 0);
    assert_eq!(asked.lock().unwrap().len() as u64, deleted);
    assert_eq!(ws.ids_in("Trash").len() as u64, deleted);
    assert!(
        asked.lock().unwrap()[0].contains("delete 1 message"),
        "{:?}",
        asked.lock().unwrap()
    );
    client.cancel().await.unwrap();

    let lines = journal(&ws);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("hostile tool-failure") && l.contains("cancelled")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("by human via MCP client `rmcp-test-client`")),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentcap_stop_ends_a_call_waiting_for_the_human() {
    let ws = Workspace::new();
    let policy = policy(&ws);
    let control = tempfile::tempdir().unwrap();
    let before = ws.snapshot();
    let (client, asked) = connect(
        &policy,
        control.path(),
        Human::Away,
        ClientLifecycleMode::Initialize,
    )
    .await;
    let client = Arc::new(client);
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call_tool(params("inbox-triage.purge", json!({"folder": "INBOX"})))
                .await
        })
    };
    // Wait until the first consent form is in front of the (absent) human.
    for _ in 0..200 {
        if !asked.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(asked.lock().unwrap().len(), 1);
    let stop = tokio::process::Command::new(AGENTCAP)
        .args(["stop", "--all"])
        .env("AGENTCAP_CONTROL_DIR", control.path())
        .output()
        .await
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(String::from_utf8_lossy(&stop.stdout).contains("stopped session mcp-stdio-"));
    let result = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the stopped call returns")
        .unwrap()
        .unwrap();
    let text = serde_json::to_string(&result).unwrap();
    assert_eq!(result.is_error, Some(true), "{text}");
    assert!(text.contains("was stopped"), "{text}");
    // Nothing was deleted: the one request was pending when the stop came,
    // and the purge loop's later requests were refused.
    assert_eq!(ws.snapshot(), before);
    // The form the human never answered was withdrawn from the client.
    let withdrawn = client.service().withdrawn.clone();
    for _ in 0..100 {
        if !withdrawn.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        withdrawn.lock().unwrap().as_slice(),
        ["answered on another channel, stopped or timed out"]
    );
}

/// On 2026-07-28 a waiting consent is reachable only through its
/// `requestState` handle: a forged handle, a handle sent with another tool's
/// name, and a replayed handle are all refused, and none approves anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_misdirected_and_replayed_request_states_approve_nothing() {
    let ws = Workspace::new();
    let policy = policy(&ws);
    let control = tempfile::tempdir().unwrap();
    let before = ws.snapshot();
    let (client, _) = connect(
        &policy,
        control.path(),
        Human::ApproveAll,
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    )
    .await;
    let triage = || params("inbox-triage.triage", json!({"folder": "INBOX"}));
    let CallToolResponse::InputRequired(waiting) = client.call_tool_once(triage()).await.unwrap()
    else {
        panic!("the triage must wait for consent");
    };
    let state = waiting.request_state.expect("a requestState handle");
    let approve_all = InputResponses::from([(
        "consent".to_string(),
        json!({"action": "accept", "content": {"approve": (1..=12).map(|i| i.to_string()).collect::<Vec<_>>()}}),
    )]);
    let forged = client
        .call_tool_once(
            triage()
                .with_request_state("00000000000000000000000000000000")
                .with_input_responses(approve_all.clone()),
        )
        .await;
    assert!(forged.is_err(), "a forged handle: {forged:?}");
    let misdirected = client
        .call_tool_once(
            params("echo.api.greet", json!({"name": "x"}))
                .with_request_state(state.clone())
                .with_input_responses(approve_all.clone()),
        )
        .await;
    assert!(misdirected.is_err(), "another tool's name: {misdirected:?}");
    let replayed = client
        .call_tool_once(
            triage()
                .with_request_state(state)
                .with_input_responses(approve_all),
        )
        .await;
    assert!(replayed.is_err(), "a spent handle: {replayed:?}");
    // The misdirected answer cancelled the waiting call; nothing moved.
    for _ in 0..100 {
        if journal(&ws).iter().any(|l| l.contains("tool-failure")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = journal(&ws);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("inbox-triage tool-failure") && l.contains("cancelled")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(" call mail.archive")),
        "{lines:#?}"
    );
    assert_eq!(ws.snapshot(), before);
}
