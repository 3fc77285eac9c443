//! Capabilities: one module per WIT capability interface. Each module owns
//! its backend, its scope rules and how its requests are described to a
//! human; none reaches its backend without passing the consent Gate (see
//! `host`).

pub mod data;
pub mod forum;
pub mod mail;

use crate::consent::{Capability, PromptItem};
use crate::host::CallContext;
use crate::host::bindings::agentcap::tools::consent::{Denial, DenialReason};
use crate::policy::Grant;

fn denial(reason: DenialReason, message: String) -> Denial {
    Denial { reason, message }
}

/// The host's account of a request, after its scope was checked.
pub struct Described {
    /// One line: what would happen.
    pub action: String,
    /// Each target, from the backend's facts.
    pub items: Vec<PromptItem>,
    /// The targets a token would cover (for `data.query`, the tables SQLite
    /// found in the statement rather than those the tool named).
    pub targets: Vec<String>,
}

/// Check an intent's targets against the grant's scope and describe the
/// action from the backend's facts: the host's account shown to a human.
pub fn describe_intent(
    call: &CallContext,
    grant: &Grant,
    capability: Capability,
    targets: &[String],
    payload: Option<&str>,
) -> Result<Described, Denial> {
    let invalid =
        |e: &dyn std::fmt::Display| denial(DenialReason::Invalid, format!("{capability}: {e}"));
    match capability.interface() {
        "mail" => {
            let folders =
                mail::Maildir::target_folders(capability, targets).map_err(|e| invalid(&e))?;
            if let Some(outside) = folders.iter().find(|f| !grant.allows_folder(f)) {
                return Err(denial(
                    DenialReason::NotGranted,
                    format!(
                        "{capability} in folder {outside} is outside the grant of tool `{}` (folders: {})",
                        call.tool,
                        grant.folders.as_deref().unwrap_or_default().join(", ")
                    ),
                ));
            }
            let store = call.mail.as_deref().ok_or_else(|| {
                denial(
                    DenialReason::NotGranted,
                    "no mail store is configured".into(),
                )
            })?;
            let (action, items) = store
                .describe(capability, targets)
                .map_err(|e| invalid(&e))?;
            Ok(Described {
                action,
                items,
                targets: targets.to_vec(),
            })
        }
        "forum" => {
            if capability != Capability::ForumListThreads {
                for t in targets {
                    let id = forum::parse_thread(t).map_err(|e| invalid(&e))?;
                    if let Some(threads) = &grant.threads
                        && !threads.contains(&id)
                    {
                        return Err(denial(
                            DenialReason::NotGranted,
                            format!(
                                "{capability} on thread {id} is outside the grant of tool `{}`",
                                call.tool
                            ),
                        ));
                    }
                }
            }
            if payload.is_some_and(|p| p.len() > forum::MAX_BODY_LEN || p.trim().is_empty()) {
                return Err(invalid(&format!(
                    "a post body must be 1 to {} bytes",
                    forum::MAX_BODY_LEN
                )));
            }
            let forum = call
                .forum
                .as_deref()
                .ok_or_else(|| denial(DenialReason::NotGranted, "no forum is configured".into()))?;
            let (action, items) =
                forum::describe(forum, capability, targets).map_err(|e| invalid(&e))?;
            Ok(Described {
                action,
                items,
                targets: targets.to_vec(),
            })
        }
        "data" => {
            let source = call.data.as_deref().ok_or_else(|| {
                denial(DenialReason::NotGranted, "no database is configured".into())
            })?;
            let sql = payload.unwrap_or_default();
            match data::describe(source, grant, targets, sql) {
                Ok((tables, action, items)) => Ok(Described {
                    action,
                    items,
                    targets: tables,
                }),
                Err(data::DataError::Refused(why)) => Err(denial(
                    DenialReason::NotGranted,
                    format!("{capability}: {why}"),
                )),
                Err(e) => Err(invalid(&e)),
            }
        }
        other => Err(denial(
            DenialReason::Invalid,
            format!("no backend for interface {other}"),
        )),
    }
}
