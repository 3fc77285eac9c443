//! Capabilities: one module per WIT capability interface. Each module owns
//! its backend, its scope rules and how its requests are described to a
//! human; none reaches its backend without passing the consent Gate (see
//! `host`).

pub mod mail;

use crate::consent::{Capability, PromptItem};
use crate::host::CallContext;
use crate::host::bindings::agentcap::tools::consent::{Denial, DenialReason};
use crate::policy::Grant;

fn denial(reason: DenialReason, message: String) -> Denial {
    Denial { reason, message }
}

/// Check an intent's targets against the grant's scope and describe the
/// action from the backend's facts: the host's account shown to a human.
pub fn describe_intent(
    call: &CallContext,
    grant: &Grant,
    capability: Capability,
    targets: &[String],
) -> Result<(String, Vec<PromptItem>), Denial> {
    match capability.interface() {
        "mail" => {
            let folders = mail::Maildir::target_folders(capability, targets)
                .map_err(|e| denial(DenialReason::Invalid, format!("{capability}: {e}")))?;
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
            store
                .describe(capability, targets)
                .map_err(|e| denial(DenialReason::Invalid, format!("{capability}: {e}")))
        }
        other => Err(denial(
            DenialReason::Invalid,
            format!("no backend for interface {other}"),
        )),
    }
}
