//! agentcap's core: a WebAssembly capability runtime for AI-agent tools.
//!
//! Tools are WebAssembly components. Every side effect a tool can cause is a
//! WIT import that works only with a live consent token that a human (or an
//! operator's standing grant) issued for that exact action. This crate holds
//! the layers every front-end shares: the consent Gate and approvers, the
//! journal, the policy, the host with its capability plug-ins, stop, and the
//! runtime that loads and calls tools. The front-ends (CLI and demo, MCP
//! server, approvals page) are the `agentcap` crate, which depends on this
//! one and never the other way round. See `ARCHITECTURE.md`.

pub mod capability;
pub mod consent;
pub mod control;
pub mod engine;
pub mod fleet;
pub mod fleet_journal;
pub mod fleet_requests;
pub mod host;
pub mod journal;
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
