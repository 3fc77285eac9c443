//! Approvers: who answers a consent request that the policy leaves to a
//! human. The host renders the request from facts ([`ConsentPrompt`]); an
//! approver returns a [`Decision`] (all, a subset, or nothing).

use std::fmt::Write as _;
use std::future::Future;
use std::io::{BufRead, IsTerminal, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::{Capability, SessionId};

/// One item of a request, described by the host from facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptItem {
    /// The target as the tool named it (message id, folder).
    pub target: String,
    /// What the host found it to be (From, Subject, Date of a mail, ...).
    pub description: String,
}

/// A consent request as shown to a human: the host's account of the action,
/// item by item, with the tool's own summary only as its claim.
#[derive(Debug, Clone)]
pub struct ConsentPrompt {
    /// The tool asking.
    pub tool: String,
    /// On whose behalf.
    pub user: String,
    /// The session asking.
    pub session: SessionId,
    /// The capability.
    pub capability: Capability,
    /// The host's one-line description of the action.
    pub action: String,
    /// Each target, described by the host.
    pub items: Vec<PromptItem>,
    /// The exact content, for actions with content.
    pub payload: Option<String>,
    /// What `payload` is when it is not the exact content itself (a diff);
    /// `None`: the exact content.
    pub payload_heading: Option<String>,
    /// The tool's own summary: its claim, not a fact.
    pub tool_claim: String,
    /// The channels that may approve this request (the grant's
    /// `approve_via`); approvers of the operator's own code always may.
    pub approvable_via: Vec<super::ApprovalChannel>,
    /// The journal record of the request (unique): links to this one
    /// request (an MCP URL elicitation) name it.
    pub request_seq: i64,
    /// For content that will be published: the body and the host's label,
    /// so that each channel shows the label exactly as it will read if
    /// that channel approves (the label names the deciding channel).
    pub published: Option<Published>,
}

/// Content that will be published, and the label the host stamps on it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The tool's body, exactly as it will be posted.
    pub body: String,
    /// The policy's label template.
    pub template: String,
    /// The tool.
    pub tool: String,
    /// The user.
    pub user: String,
    /// The time the label states.
    pub at: std::time::SystemTime,
}

impl Published {
    /// The label as it reads when `channel` approves.
    pub fn stamp(&self, channel: &str) -> String {
        label(
            &self.template,
            &self.tool,
            &self.user,
            &format!("{} via {}", self.user, label_channel(channel)),
            self.at,
        )
    }

    /// The body with the label as it reads when `channel` approves.
    pub fn labelled_for(&self, channel: &str) -> String {
        labelled(&self.body, &self.stamp(channel))
    }
}

/// The label for a post, from the operator's template.
pub fn label(
    template: &str,
    tool: &str,
    user: &str,
    approver: &str,
    at: std::time::SystemTime,
) -> String {
    let time = crate::render::time(at);
    template
        .replace("{tool}", tool)
        .replace("{user}", user)
        .replace("{approver}", approver)
        .replace("{time}", &time)
}

/// The body as published: the tool's text, then the host's label.
pub fn labelled(body: &str, stamp: &str) -> String {
    format!("{}\n\n-- \n{stamp}", body.trim_end())
}

/// How much of each prompt field is shown (bytes of the original text).
const SHOWN_LINE_MAX: usize = 600;
/// How much of an exact content (post body, SQL) is shown.
const SHOWN_PAYLOAD_MAX: usize = 64 * 1024;

impl ConsentPrompt {
    /// The prompt as plain text, for logs (see [`ConsentPrompt::render_for`]).
    pub fn render(&self) -> String {
        self.render_for("terminal")
    }

    /// Whether the channel named `channel` may approve this request.
    pub fn approvable_by(&self, channel: &str) -> bool {
        super::ApprovalChannel::of(channel).is_none_or(|c| self.approvable_via.contains(&c))
    }

    /// The host's description of the action, as shown (one line, escaped).
    pub fn shown_action(&self) -> String {
        crate::render::one_line(&self.action, SHOWN_LINE_MAX)
    }

    /// Each item's description, as shown (one line each, escaped).
    pub fn shown_items(&self) -> Vec<String> {
        self.items
            .iter()
            .map(|i| crate::render::one_line(&i.description, SHOWN_LINE_MAX))
            .collect()
    }

    /// The exact content as it will be stored if `channel` approves (for a
    /// post, the body with the label naming that channel).
    pub fn payload_for(&self, channel: &str) -> Option<String> {
        match &self.published {
            Some(published) => Some(published.labelled_for(channel)),
            None => self.payload.clone(),
        }
    }

    /// The exact content, as `channel` shows it: line breaks kept, every
    /// other control or invisible character a visible marker.
    pub fn shown_payload(&self, channel: &str) -> Option<String> {
        self.payload_for(channel)
            .map(|p| crate::render::block(&p, SHOWN_PAYLOAD_MAX))
    }

    /// How many invisible or control characters the content hides, said in
    /// words for the prompt; `None` when it hides none.
    pub fn payload_warning(&self) -> Option<String> {
        self.payload.as_deref().and_then(crate::render::hidden_note)
    }

    /// What the shown content is (`exact content`, or the plug-in's
    /// heading such as a diff's), one line, escaped.
    pub fn shown_payload_heading(&self) -> String {
        match &self.payload_heading {
            Some(h) => crate::render::one_line(h, SHOWN_LINE_MAX),
            None => "exact content".into(),
        }
    }

    /// The tool's claim, as shown (one line, escaped).
    pub fn shown_claim(&self) -> String {
        crate::render::one_line(&self.tool_claim, SHOWN_LINE_MAX)
    }

    /// The prompt as plain text for `channel` (terminal, MCP messages):
    /// every field goes through the one rendering path, so nothing in it
    /// can redraw, hide or add a line.
    pub fn render_for(&self, channel: &str) -> String {
        use crate::render::one_line;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Tool `{}` asks to act on behalf of {}: {}",
            one_line(&self.tool, 200),
            one_line(&self.user, 200),
            self.shown_action()
        );
        for (n, item) in self.shown_items().iter().enumerate() {
            let _ = writeln!(out, "  [{}] {item}", n + 1);
        }
        if let Some(payload) = self.shown_payload(channel) {
            let _ = writeln!(out, "  {}:", self.shown_payload_heading());
            for line in payload.split('\n') {
                let _ = writeln!(out, "  | {line}");
            }
            if let Some(warning) = self.payload_warning() {
                let _ = writeln!(out, "  WARNING: {warning}");
            }
        }
        if !self.tool_claim.is_empty() {
            let _ = writeln!(
                out,
                "  The tool says (its claim, not checked): \"{}\"",
                self.shown_claim()
            );
        }
        out
    }
}

/// A human's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Approve these items (indices into [`ConsentPrompt::items`]); all of
    /// them for a full approval. An empty list is a refusal.
    Approve(Vec<usize>),
    /// Refused, with the reason to report.
    Decline(String),
    /// Nobody answered in time.
    TimedOut,
    /// This channel could not put the request to a human (a client without
    /// forms, a dropped connection). A refusal unless another channel
    /// answers (see [`FirstAnswer`]).
    Unavailable(String),
}

/// A decision and the channel that made it (`terminal`, `approvals page`,
/// `MCP client ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What was decided.
    pub decision: Decision,
    /// Who decided.
    pub channel: String,
}

/// The future [`Approver::answer`] returns.
pub type AnswerFuture<'a> = Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

impl Decision {
    /// Approve every item of `prompt`.
    pub fn approve_all(prompt: &ConsentPrompt) -> Decision {
        Decision::Approve((0..prompt.items.len()).collect())
    }
}

/// The future an approver returns.
pub type DecisionFuture<'a> = Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;

/// Something that can put a consent request in front of a human.
pub trait Approver: Send + Sync {
    /// The channel's name, recorded with every decision (`terminal`, ...).
    fn channel(&self) -> &str;
    /// Ask; resolve when the human answers or the approver gives up.
    fn decide<'a>(&'a self, prompt: &'a ConsentPrompt) -> DecisionFuture<'a>;
    /// Whether this channel enforces the grant's `approve_via` itself (it
    /// may then still be asked, to send the person elsewhere, as an MCP
    /// client's URL elicitation does); otherwise a channel that may not
    /// approve a request is not asked at all.
    fn restricts_itself(&self) -> bool {
        false
    }
    /// Ask, and name the channel that answered (approvers that combine
    /// channels override this).
    fn answer<'a>(&'a self, prompt: &'a ConsentPrompt) -> AnswerFuture<'a> {
        Box::pin(async move {
            Answer {
                decision: self.decide(prompt).await,
                channel: self.channel().to_string(),
            }
        })
    }
}

/// Puts a request to several channels at once (terminal, MCP elicitation,
/// approvals page): the first answer decides and the other requests are
/// withdrawn (their futures dropped). A channel that cannot ask
/// ([`Decision::Unavailable`]) does not decide; if none can, it is a refusal.
pub struct FirstAnswer {
    channels: Vec<SharedApprover>,
    name: String,
}

impl FirstAnswer {
    /// Ask through all of `channels`.
    pub fn new(channels: Vec<SharedApprover>) -> FirstAnswer {
        let name = channels
            .iter()
            .map(|c| c.channel().to_string())
            .collect::<Vec<_>>()
            .join(" or ");
        FirstAnswer { channels, name }
    }
}

impl Approver for FirstAnswer {
    fn channel(&self) -> &str {
        &self.name
    }

    fn decide<'a>(&'a self, prompt: &'a ConsentPrompt) -> DecisionFuture<'a> {
        Box::pin(async move { self.answer(prompt).await.decision })
    }

    fn answer<'a>(&'a self, prompt: &'a ConsentPrompt) -> AnswerFuture<'a> {
        Box::pin(async move {
            // A channel the grant does not allow to approve is not asked:
            // the request waits for one that is (the page, the terminal).
            let mut unavailable = Vec::new();
            let mut asking: Vec<AnswerFuture<'a>> = Vec::new();
            for channel in &self.channels {
                if prompt.approvable_by(channel.channel()) || channel.restricts_itself() {
                    asking.push(channel.answer(prompt));
                } else {
                    unavailable.push(format!(
                        "{}: may not approve {} (the policy's approve_via)",
                        channel.channel(),
                        prompt.capability
                    ));
                }
            }
            while !asking.is_empty() {
                let (answer, _, rest) = futures_util::future::select_all(asking).await;
                match answer.decision {
                    Decision::Unavailable(why) => {
                        unavailable.push(format!("{}: {why}", answer.channel));
                        asking = rest;
                    }
                    // Dropping `rest` withdraws the request everywhere else.
                    _ => return answer,
                }
            }
            Answer {
                decision: Decision::Unavailable(unavailable.join("; ")),
                channel: self.name.clone(),
            }
        })
    }
}

/// Refuses everything: used when no human can be reached (for instance stdin
/// is not a terminal). Standing grants still apply, they need no approver.
#[derive(Debug, Clone)]
pub struct DenyApprover {
    reason: String,
}

impl DenyApprover {
    /// Refuse with `reason`.
    pub fn new(reason: &str) -> DenyApprover {
        DenyApprover {
            reason: reason.to_string(),
        }
    }
}

impl Approver for DenyApprover {
    fn channel(&self) -> &str {
        "none"
    }

    fn decide<'a>(&'a self, _prompt: &'a ConsentPrompt) -> DecisionFuture<'a> {
        let reason = self.reason.clone();
        Box::pin(async move { Decision::Unavailable(reason) })
    }
}

type Script = dyn Fn(&ConsentPrompt) -> Decision + Send + Sync;

/// A pre-programmed user, for unattended demos and tests. Every prompt it
/// answers is kept so the caller can show or check what was asked.
pub struct ScriptedApprover {
    name: String,
    script: Box<Script>,
    seen: Mutex<Vec<(ConsentPrompt, Decision)>>,
}

impl ScriptedApprover {
    /// A user named `name` that answers with `script`.
    pub fn new(
        name: &str,
        script: impl Fn(&ConsentPrompt) -> Decision + Send + Sync + 'static,
    ) -> ScriptedApprover {
        ScriptedApprover {
            name: name.to_string(),
            script: Box::new(script),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// The prompts answered so far, with the answers.
    pub fn answered(&self) -> Vec<(ConsentPrompt, Decision)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Approver for ScriptedApprover {
    fn channel(&self) -> &str {
        &self.name
    }

    fn decide<'a>(&'a self, prompt: &'a ConsentPrompt) -> DecisionFuture<'a> {
        let decision = (self.script)(prompt);
        self.seen
            .lock()
            .unwrap()
            .push((prompt.clone(), decision.clone()));
        Box::pin(async move { decision })
    }
}

/// Asks on the terminal: the prompt goes to stderr (stdout carries results),
/// the answer is read from stdin. No answer within the timeout is a refusal.
pub struct TerminalApprover {
    timeout: Duration,
    ask_lock: tokio::sync::Mutex<()>,
}

impl TerminalApprover {
    /// A terminal approver, or `None` when stdin is not a terminal.
    pub fn for_stdin(timeout: Duration) -> Option<TerminalApprover> {
        std::io::stdin().is_terminal().then(|| TerminalApprover {
            timeout,
            ask_lock: tokio::sync::Mutex::new(()),
        })
    }
}

/// Lines typed on stdin, read by one background thread for the whole process
/// so that a timed-out prompt never leaves a reader behind.
fn stdin_lines() -> &'static Mutex<tokio::sync::mpsc::UnboundedReceiver<String>> {
    static LINES: OnceLock<Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("agentcap-stdin".into())
            .spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn stdin reader");
        Mutex::new(rx)
    })
}

/// Parse a terminal answer: `y`/`yes`/`a`/`all`, `n`/`no`, item numbers to
/// approve (`1 3 5-7`), or `-` followed by numbers to approve all but those.
pub fn parse_answer(answer: &str, items: usize) -> Result<Decision, String> {
    let answer = answer.trim().to_lowercase();
    match answer.as_str() {
        "y" | "yes" | "a" | "all" => return Ok(Decision::Approve((0..items).collect())),
        "n" | "no" | "" => return Ok(Decision::Decline("declined on the terminal".into())),
        _ => {}
    }
    let (except, list) = match answer.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, answer.as_str()),
    };
    let mut picked = Vec::new();
    for part in list.split(|c: char| c == ',' || c.is_whitespace()) {
        if part.is_empty() {
            continue;
        }
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo, hi),
            None => (part, part),
        };
        let parse = |s: &str| {
            s.parse::<usize>()
                .ok()
                .filter(|n| (1..=items).contains(n))
                .ok_or_else(|| format!("`{s}` is not an item number between 1 and {items}"))
        };
        for n in parse(lo)?..=parse(hi)? {
            picked.push(n - 1);
        }
    }
    let chosen: Vec<usize> = if except {
        (0..items).filter(|i| !picked.contains(i)).collect()
    } else {
        let mut p = picked;
        p.sort_unstable();
        p.dedup();
        p
    };
    Ok(Decision::Approve(chosen))
}

impl Approver for TerminalApprover {
    fn channel(&self) -> &str {
        "terminal"
    }

    fn decide<'a>(&'a self, prompt: &'a ConsentPrompt) -> DecisionFuture<'a> {
        Box::pin(async move {
            let _one_prompt_at_a_time = self.ask_lock.lock().await;
            let lines = stdin_lines();
            // Drop anything typed before this prompt was shown.
            while lines.lock().unwrap().try_recv().is_ok() {}
            let deadline = tokio::time::Instant::now() + self.timeout;
            let mut stderr = std::io::stderr();
            let _ = write!(stderr, "\n{}", prompt.render_for("terminal"));
            loop {
                let _ = write!(
                    stderr,
                    "Approve? [y]es all / [n]o / numbers to approve (1 3 5-7) / -numbers to leave out ({}s): ",
                    deadline
                        .saturating_duration_since(tokio::time::Instant::now())
                        .as_secs()
                );
                let _ = stderr.flush();
                let line = tokio::time::timeout_at(deadline, poll_line(lines)).await;
                let Ok(Some(line)) = line else {
                    let _ = writeln!(stderr, "\nNo answer in time: refused.");
                    return Decision::TimedOut;
                };
                match parse_answer(&line, prompt.items.len()) {
                    Ok(decision) => return decision,
                    Err(problem) => {
                        let _ = writeln!(stderr, "{problem}");
                    }
                }
            }
        })
    }
}

async fn poll_line(
    lines: &'static Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>,
) -> Option<String> {
    loop {
        match lines.lock().unwrap().try_recv() {
            Ok(line) => return Some(line),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return None,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Shared handle to an approver.
pub type SharedApprover = Arc<dyn Approver>;

/// How a deciding channel is named in a published label: a kind of channel
/// the host knows, never text an MCP client chose (its name is the agent
/// side's claim and stays in the journal, escaped).
pub fn label_channel(channel: &str) -> String {
    if channel.starts_with("MCP client") {
        "an MCP client's form".into()
    } else if channel.starts_with("approvals page") {
        "the approvals page".into()
    } else if channel == "terminal" {
        "the operator's terminal".into()
    } else {
        crate::render::one_line(channel, 40)
    }
}

/// An MCP client's self-chosen name, as the host shows it: letters, digits
/// and `.-_/@+` only (anything else becomes `_`), at most 40 characters.
pub fn client_name(claimed: &str) -> String {
    let name: String = claimed
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_/@+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "unnamed".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        assert_eq!(
            parse_answer("y", 3).unwrap(),
            Decision::Approve(vec![0, 1, 2])
        );
        assert!(matches!(
            parse_answer("n", 3).unwrap(),
            Decision::Decline(_)
        ));
        assert_eq!(
            parse_answer("1 3", 3).unwrap(),
            Decision::Approve(vec![0, 2])
        );
        assert_eq!(
            parse_answer("2-3,1", 3).unwrap(),
            Decision::Approve(vec![0, 1, 2])
        );
        assert_eq!(
            parse_answer("-2", 3).unwrap(),
            Decision::Approve(vec![0, 2])
        );
        assert!(parse_answer("4", 3).is_err());
        assert!(parse_answer("maybe", 3).is_err());
    }
}
