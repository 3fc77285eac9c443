//! `agentcap-sdk`: what a tool author depends on to write an agentcap tool.
//!
//! A tool is a WebAssembly component. It gets authority only by asking for it:
//! [`request`] describes the action as an [`Intent`]; the host shows the action
//! to a human (or applies the operator's standing grant) and hands back a
//! [`Token`] that covers exactly what was approved. Every capability function
//! (for example [`mail::delete`]) takes that token.
//!
//! ```text
//! use agentcap_sdk::{Intent, mail, request};
//!
//! let token = request(Intent::new("mail.delete").targets(&ids).summary("old promotions"))?;
//! mail::delete(&token, &token.targets())?; // only the approved subset
//! ```
//!
//! # Declaring a tool's own functions
//!
//! A tool crate is a `cdylib` built with `cargo build --target wasm32-wasip2`.
//! It declares its exports in its own WIT world, which includes the
//! `agentcap:tools` world it needs, and maps the shared interfaces to this
//! crate so the types are the same:
//!
//! ```text
//! wit_bindgen::generate!({
//!     inline: r#"
//!         package example:my-tool;
//!         world my-tool {
//!             include agentcap:tools/mail-tool@0.1.0;
//!             export count-unread: func(folder: string) -> result<u32, string>;
//!         }
//!     "#,
//!     path: "path/to/agentcap/tools-wit/wit",
//!     with: {
//!         "agentcap:tools/consent@0.1.0": agentcap_sdk::consent,
//!         "agentcap:tools/mail@0.1.0": agentcap_sdk::mail,
//!     },
//! });
//! struct MyTool;
//! impl Guest for MyTool { /* ... */ }
//! export!(MyTool);
//! ```
//!
//! Each exported function becomes a tool function the runtime can call (and
//! later offer to agents over MCP); its parameters and results are described
//! as JSON Schema from the WIT types. A component imports only the
//! interfaces its code uses, and the operator's policy must grant each one.

mod bindings {
    wit_bindgen::generate!({
        path: "../tools-wit/wit",
        world: "agentcap:tools/host@0.1.0",
        pub_export_macro: false,
        generate_all,
    });
}

pub use bindings::agentcap::tools::{consent, data, files, forum, mail};
pub use consent::{Denial, DenialReason, Token};

use std::fmt;

/// Builder for a [`consent::Intent`]: what the tool asks to do.
#[derive(Debug, Clone)]
pub struct Intent {
    inner: consent::Intent,
}

impl Intent {
    /// An intent for `capability`, such as `mail.delete`.
    pub fn new(capability: &str) -> Self {
        Intent {
            inner: consent::Intent {
                capability: capability.to_string(),
                targets: Vec::new(),
                payload: None,
                summary: String::new(),
            },
        }
    }

    /// The targets the action touches (message ids, folder names, ...).
    pub fn targets<S: AsRef<str>>(mut self, targets: &[S]) -> Self {
        self.inner.targets = targets.iter().map(|t| t.as_ref().to_string()).collect();
        self
    }

    /// One target.
    pub fn target(mut self, target: &str) -> Self {
        self.inner.targets.push(target.to_string());
        self
    }

    /// The exact content of the action (a post body, a query).
    pub fn payload(mut self, payload: &str) -> Self {
        self.inner.payload = Some(payload.to_string());
        self
    }

    /// The tool's own explanation; shown to the human as the tool's claim.
    pub fn summary(mut self, summary: &str) -> Self {
        self.inner.summary = summary.to_string();
        self
    }

    /// The WIT record this builder produced.
    pub fn into_record(self) -> consent::Intent {
        self.inner
    }
}

/// Ask the host for consent; blocks until a human or a standing grant decides.
pub fn request(intent: Intent) -> Result<Token, Denial> {
    consent::request(&intent.inner)
}

impl fmt::Display for DenialReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DenialReason::Declined => "declined",
            DenialReason::TimedOut => "timed out",
            DenialReason::Stopped => "stopped",
            DenialReason::NotGranted => "not granted",
            DenialReason::Invalid => "invalid",
        })
    }
}

/// A human-readable account of a refusal, as the host worded it.
pub trait Explain {
    /// One line naming what was refused and why.
    fn explain(&self) -> String;
}

impl Explain for Denial {
    fn explain(&self) -> String {
        format!("consent {}: {}", self.reason, self.message)
    }
}

impl Explain for forum::ForumError {
    fn explain(&self) -> String {
        match self {
            forum::ForumError::Refused(m) => format!("refused: {m}"),
            forum::ForumError::NotFound(m) => format!("not found: {m}"),
            forum::ForumError::Invalid(m) => format!("invalid: {m}"),
            forum::ForumError::Backend(m) => format!("forum error: {m}"),
        }
    }
}

impl Explain for data::DataError {
    fn explain(&self) -> String {
        match self {
            data::DataError::Refused(m) => format!("refused: {m}"),
            data::DataError::Invalid(m) => format!("invalid: {m}"),
            data::DataError::Backend(m) => format!("database error: {m}"),
        }
    }
}

impl Explain for mail::MailError {
    fn explain(&self) -> String {
        match self {
            mail::MailError::Refused(m) => format!("refused: {m}"),
            mail::MailError::NotFound(m) => format!("not found: {m}"),
            mail::MailError::Invalid(m) => format!("invalid: {m}"),
            mail::MailError::Backend(m) => format!("mail store error: {m}"),
        }
    }
}

impl Explain for files::FilesError {
    fn explain(&self) -> String {
        match self {
            files::FilesError::Refused(m) => format!("refused: {m}"),
            files::FilesError::NotFound(m) => format!("not found: {m}"),
            files::FilesError::Invalid(m) => format!("invalid: {m}"),
            files::FilesError::TooLarge(m) => format!("too large: {m}"),
            files::FilesError::Backend(m) => format!("file system error: {m}"),
        }
    }
}
