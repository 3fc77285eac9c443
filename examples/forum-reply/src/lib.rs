//! forum-reply: an example agentcap tool (the forum incident).
//!
//! It reads a colleague's forum question, looks up the service metrics it is
//! allowed to read, drafts an answer (deterministically, no LLM), and posts
//! it only with consent for the exact body. The host labels the post as
//! AI-generated. A variant also tries to look up the asker's account in
//! `user_accounts`, which the grant does not cover.

wit_bindgen::generate!({
    inline: r#"
        package example:forum-reply;

        world forum-reply {
            include agentcap:tools/forum-tool@0.1.0;

            /// What a reply attempt did.
            record reply-report {
                thread: u64,
                /// The body the tool drafted (without the host's label).
                draft: string,
                /// The published post's id, if it was posted.
                posted: option<u64>,
                /// The post as published (label included), if posted.
                published: option<string>,
                /// The host's refusal, if any.
                refusal: option<string>,
            }

            /// Draft an answer to `thread` from the thread and the metrics;
            /// posts nothing.
            export draft-reply: func(thread: u64) -> result<string, string>;
            /// Draft, ask consent for the exact body, and post it.
            export reply: func(thread: u64) -> result<reply-report, string>;
            /// Draft, and also look up the asker's account in `user_accounts`
            /// (outside any sane grant).
            export draft-with-account-lookup: func(thread: u64) -> result<string, string>;
        }
    "#,
    path: "../../tools-wit/wit",
    with: {
        "agentcap:tools/consent@0.1.0": agentcap_sdk::consent,
        "agentcap:tools/forum@0.1.0": agentcap_sdk::forum,
        "agentcap:tools/data@0.1.0": agentcap_sdk::data,
    },
});

use agentcap_sdk::data::{self, Value};
use agentcap_sdk::{Explain, Intent, forum, request};

const METRICS_SQL: &str = "SELECT service, p50_latency_ms, p99_latency_ms, error_rate, day FROM service_metrics \
     WHERE day >= (SELECT max(day) FROM service_metrics) ORDER BY p50_latency_ms DESC";
const BASELINE_SQL: &str = "SELECT service, p50_latency_ms FROM service_metrics \
     WHERE day = (SELECT min(day) FROM service_metrics) ORDER BY service";

struct ForumReply;

fn read_thread(thread: u64) -> Result<forum::Thread, String> {
    let token = request(
        Intent::new("forum.read-thread")
            .target(&thread.to_string())
            .summary("read the question to answer it"),
    )
    .map_err(|d| d.explain())?;
    forum::read_thread(&token, thread).map_err(|e| e.explain())
}

fn query(sql: &str, tables: &[&str], why: &str) -> Result<data::Rows, String> {
    let token = request(
        Intent::new("data.query")
            .targets(tables)
            .payload(sql)
            .summary(why),
    )
    .map_err(|d| d.explain())?;
    data::query(&token, sql, &[]).map_err(|e| e.explain())
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Integer(n) => n.to_string(),
        Value::Real(f) => format!("{:.1}%", f * 100.0),
        Value::Text(t) => t.clone(),
        Value::Blob(b) => format!("<{} bytes>", b.len()),
    }
}

fn draft(thread: u64) -> Result<String, String> {
    let question = read_thread(thread)?;
    let asker = question.author.clone();
    let latest = query(
        METRICS_SQL,
        &["service_metrics"],
        "find which service got slower",
    )?;
    let baseline = query(
        BASELINE_SQL,
        &["service_metrics"],
        "compare with the start of the week",
    )?;
    let worst = latest.rows.first().ok_or("no metrics found")?;
    let (service, p50, p99, errors, day) = (
        text(&worst[0]),
        text(&worst[1]),
        text(&worst[2]),
        text(&worst[3]),
        text(&worst[4]),
    );
    let before = baseline
        .rows
        .iter()
        .find(|r| text(&r[0]) == service)
        .map(|r| text(&r[1]))
        .unwrap_or_else(|| "?".into());
    Ok(format!(
        "Hi {asker}, looking at service_metrics for {day}: {service} is the slowest service, \
         p50 {p50} ms (it was {before} ms at the start of the week), p99 {p99} ms, error rate {errors}. \
         That matches the checkout slowdown you describe. I would look at the {service} deploys \
         since then before anything else; no access changes are needed to investigate."
    ))
}

impl Guest for ForumReply {
    fn draft_reply(thread: u64) -> Result<String, String> {
        draft(thread)
    }

    fn reply(thread: u64) -> Result<ReplyReport, String> {
        let body = draft(thread)?;
        let mut report = ReplyReport {
            thread,
            draft: body.clone(),
            posted: None,
            published: None,
            refusal: None,
        };
        let token = match request(
            Intent::new("forum.post")
                .target(&thread.to_string())
                .payload(&body)
                .summary("answer the colleague's question with the metrics"),
        ) {
            Ok(t) => t,
            Err(d) => {
                report.refusal = Some(d.explain());
                return Ok(report);
            }
        };
        match forum::post(&token, thread, &body) {
            Ok(post) => {
                report.posted = Some(post.id);
                report.published = Some(post.body);
            }
            Err(e) => report.refusal = Some(e.explain()),
        }
        Ok(report)
    }

    fn draft_with_account_lookup(thread: u64) -> Result<String, String> {
        let body = draft(thread)?;
        let account = query(
            "SELECT email, phone FROM user_accounts WHERE name LIKE 'Bob%'",
            &["user_accounts"],
            "add the asker's contact details",
        )?;
        Ok(format!("{body} (contact: {})", account.rows.len()))
    }
}

export!(ForumReply);
