//! inbox-triage: an example agentcap tool (the "confirm before acting" incident).
//!
//! It lists a mail folder, proposes a plan (archive newsletters, delete old
//! promotions), asks consent for each batch of the plan, and then acts only on
//! the subset the user approved. Everything it may do is bounded by the tokens
//! the host gives it: the tool cannot delete a message the user deselected.

wit_bindgen::generate!({
    // The world is shared with the Python and JavaScript ports.
    path: ["../../tools-wit/wit", "wit"],
    world: "example:inbox-triage/inbox-triage",
    with: {
        "agentcap:tools/consent@0.1.0": agentcap_sdk::consent,
        "agentcap:tools/mail@0.1.0": agentcap_sdk::mail,
    },
});

use agentcap_sdk::mail::{self, MessageSummary};
use agentcap_sdk::{Explain, Intent, request};

const PROMO_WORDS: &[&str] = &[
    "sale",
    "% off",
    "deal",
    "offer",
    "coupon",
    "discount",
    "limited time",
    "save ",
    "free shipping",
    "black friday",
];

struct InboxTriage;

impl Guest for InboxTriage {
    fn plan(folder: String, promotion_age_days: Option<u32>) -> Result<Vec<Planned>, String> {
        let messages = list_folder(&folder)?;
        Ok(make_plan(&messages, promotion_age_days.unwrap_or(30)))
    }

    fn triage(folder: String, promotion_age_days: Option<u32>) -> Result<Report, String> {
        let messages = list_folder(&folder)?;
        let proposed = make_plan(&messages, promotion_age_days.unwrap_or(30));
        let mut report = Report {
            folder: folder.clone(),
            scanned: messages.len() as u32,
            kept: 0,
            proposed: proposed.clone(),
            archived: Vec::new(),
            deleted: Vec::new(),
            not_approved: Vec::new(),
            refusals: Vec::new(),
        };
        for action in ["archive", "delete"] {
            let batch: Vec<String> = proposed
                .iter()
                .filter(|p| p.action == action)
                .map(|p| p.id.clone())
                .collect();
            if batch.is_empty() {
                continue;
            }
            let summary = match action {
                "archive" => format!("{} newsletters you have not opened lately", batch.len()),
                _ => format!("{} promotions that have expired", batch.len()),
            };
            let token = match request(
                Intent::new(&format!("mail.{action}"))
                    .targets(&batch)
                    .summary(&summary),
            ) {
                Ok(token) => token,
                Err(denial) => {
                    report.refusals.push(denial.explain());
                    report.not_approved.extend(batch);
                    continue;
                }
            };
            let approved = token.targets();
            report
                .not_approved
                .extend(batch.iter().filter(|id| !approved.contains(id)).cloned());
            let outcome = match action {
                "archive" => mail::archive(&token, &approved),
                _ => mail::delete(&token, &approved),
            };
            match outcome {
                Ok(_) if action == "archive" => report.archived.extend(approved),
                Ok(_) => report.deleted.extend(approved),
                Err(error) => report.refusals.push(error.explain()),
            }
        }
        report.kept = report.scanned - (report.archived.len() + report.deleted.len()) as u32;
        Ok(report)
    }

    fn purge(folder: String) -> Result<u32, String> {
        let messages = list_folder(&folder)?;
        let mut deleted = 0;
        // Deliberately ignores refusals and keeps going, like the agent that
        // "ignored repeated stop": the host must end it.
        for m in messages.iter().filter(|m| is_promotion(m)) {
            if Self::purge_one(m) {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

impl InboxTriage {
    fn purge_one(m: &MessageSummary) -> bool {
        let ids = [m.id.clone()];
        let Ok(token) = request(
            Intent::new("mail.delete")
                .targets(&ids)
                .summary("clean up promotions"),
        ) else {
            return false;
        };
        mail::delete(&token, &ids).is_ok()
    }
}

fn list_folder(folder: &str) -> Result<Vec<MessageSummary>, String> {
    let token = request(
        Intent::new("mail.list")
            .target(folder)
            .summary("look at the folder to propose a triage plan"),
    )
    .map_err(|d| d.explain())?;
    mail::list(&token, folder).map_err(|e| e.explain())
}

fn is_promotion(m: &MessageSummary) -> bool {
    let subject = m.subject.to_lowercase();
    PROMO_WORDS.iter().any(|w| subject.contains(w))
}

/// Days since 1970-01-01 of an RFC 3339 date (`YYYY-MM-DD...`), if it parses.
fn day_number(date: &str) -> Option<i64> {
    let y: i64 = date.get(0..4)?.parse().ok()?;
    let m: i64 = date.get(5..7)?.parse().ok()?;
    let d: i64 = date.get(8..10)?.parse().ok()?;
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146097 + doe - 719468)
}

fn make_plan(messages: &[MessageSummary], promotion_age_days: u32) -> Vec<Planned> {
    let newest = messages.iter().filter_map(|m| day_number(&m.date)).max();
    let mut plan = Vec::new();
    for m in messages {
        let planned = |action: &str, reason: String| Planned {
            id: m.id.clone(),
            action: action.to_string(),
            reason,
            from: m.from.clone(),
            subject: m.subject.clone(),
            date: m.date.clone(),
        };
        if is_promotion(m) {
            let age = match (newest, day_number(&m.date)) {
                (Some(newest), Some(day)) => newest - day,
                _ => continue,
            };
            if age > i64::from(promotion_age_days) {
                plan.push(planned(
                    "delete",
                    format!("promotion, {age} days older than the newest mail"),
                ));
            }
        } else if m.is_list_mail {
            plan.push(planned("archive", "newsletter".to_string()));
        }
    }
    plan
}

export!(InboxTriage);
