//! agentcap: a WebAssembly capability runtime for AI-agent tools.
//!
//! Tools are WebAssembly components. Every side effect a tool can cause is a
//! WIT import that works only with a live consent token that a human (or an
//! operator's standing grant) issued for that exact action. See
//! `ARCHITECTURE.md` for the layers.

pub mod approvals;
pub mod capability;
pub mod cli;
pub mod consent;
pub mod control;
pub mod demo;
pub mod engine;
pub mod host;
pub mod http_serve;
pub mod journal;
pub mod mcp;
pub mod output;
pub mod policy;
pub mod render;
pub mod runtime;
pub mod schema;
pub mod secret;
pub mod session;
pub mod tool;

pub use consent::{Gate, SessionId};
pub use engine::AgentEngine;
pub use policy::Policy;
pub use runtime::{CallError, CallOptions, CallOutcome, LoadError, LoadedTool, Runtime};
