//! issue-triage: an example agentcap tool over the `http` capability.
//!
//! It reads the open issues of an issue tracker's JSON API with an ordinary
//! guest HTTP client (`wstd` over `wasi:http`), proposes a label for each
//! unlabelled issue from its text (deterministically, no LLM), and posts
//! each label. The tool never asks for consent itself: agentcap decides
//! every request as it is sent, reading with a standing grant and asking
//! the person before each POST, bound to its exact body.

wit_bindgen::generate!({
    inline: r#"
        package example:issue-triage;

        world issue-triage {
            /// A proposed label.
            record proposal {
                issue: u64,
                title: string,
                label: string,
            }

            /// What a triage did.
            record triage-report {
                scanned: u32,
                proposed: list<proposal>,
                /// Issues whose label was posted.
                labelled: list<u64>,
                /// Requests the host (or the person) refused, as worded by the host.
                refusals: list<string>,
            }

            /// Read the issues at `api` (e.g. `http://127.0.0.1:8080`) and say
            /// which label each unlabelled one should get; changes nothing.
            export plan: func(api: string) -> result<list<proposal>, string>;
            /// Plan, then post each label (each POST is decided by the person).
            export triage: func(api: string) -> result<triage-report, string>;
        }
    "#,
});

use serde::Deserialize;
use wstd::http::{Body, Client, Request};

#[derive(Deserialize)]
struct Issue {
    id: u64,
    title: String,
    body: String,
    labels: Vec<String>,
}

struct IssueTriage;

fn get_issues(api: &str) -> Result<Vec<Issue>, String> {
    wstd::runtime::block_on(async {
        let request = Request::get(format!("{api}/issues"))
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        let response = Client::new()
            .send(request)
            .await
            .map_err(|e| format!("GET /issues: {e:?}"))?;
        if !response.status().is_success() {
            return Err(format!("GET /issues: status {}", response.status()));
        }
        response
            .into_body()
            .json::<Vec<Issue>>()
            .await
            .map_err(|e| format!("GET /issues: {e:?}"))
    })
}

fn post_label(api: &str, issue: u64, label: &str) -> Result<(), String> {
    wstd::runtime::block_on(async {
        let body = serde_json::json!({ "labels": [label] }).to_string();
        let request = Request::post(format!("{api}/issues/{issue}/labels"))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .map_err(|e| e.to_string())?;
        let response = Client::new()
            .send(request)
            .await
            .map_err(|e| format!("POST label on #{issue}: {e:?}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "POST label on #{issue}: status {}",
                response.status()
            ))
        }
    })
}

/// The label an issue's text calls for, if any.
fn label_for(issue: &Issue) -> Option<&'static str> {
    let text = format!("{} {}", issue.title, issue.body).to_lowercase();
    if ["crash", "panic", "error", "broken", "fails"]
        .iter()
        .any(|w| text.contains(w))
    {
        Some("bug")
    } else if ["how do i", "how to", "question"]
        .iter()
        .any(|w| text.contains(w))
    {
        Some("question")
    } else if ["please add", "feature", "would be nice", "support for"]
        .iter()
        .any(|w| text.contains(w))
    {
        Some("enhancement")
    } else {
        None
    }
}

fn plan(api: &str) -> Result<(u32, Vec<Proposal>), String> {
    let issues = get_issues(api)?;
    let proposed = issues
        .iter()
        .filter(|i| i.labels.is_empty())
        .filter_map(|i| {
            label_for(i).map(|label| Proposal {
                issue: i.id,
                title: i.title.clone(),
                label: label.to_string(),
            })
        })
        .collect();
    Ok((issues.len() as u32, proposed))
}

impl Guest for IssueTriage {
    fn plan(api: String) -> Result<Vec<Proposal>, String> {
        Ok(plan(&api)?.1)
    }

    fn triage(api: String) -> Result<TriageReport, String> {
        let (scanned, proposed) = plan(&api)?;
        let mut report = TriageReport {
            scanned,
            proposed: proposed.clone(),
            labelled: Vec::new(),
            refusals: Vec::new(),
        };
        for p in &proposed {
            match post_label(&api, p.issue, &p.label) {
                Ok(()) => report.labelled.push(p.issue),
                Err(e) => report.refusals.push(e),
            }
        }
        Ok(report)
    }
}

export!(IssueTriage);
