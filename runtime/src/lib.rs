//! agentcap: a WebAssembly capability runtime for AI-agent tools.
//!
//! Tools are WebAssembly components. Every side effect a tool can cause is a
//! WIT import that works only with a live consent token that a human (or an
//! operator's standing grant) issued for that exact action. See
//! `ARCHITECTURE.md` for the layers.
//!
//! This crate holds the front-ends: the command line with the demo, the MCP
//! server and the approvals page. Everything they share (Gate, journal,
//! policy, host, capabilities, runtime) is `agentcap-core`, re-exported here
//! under the same paths.

pub use agentcap_core::{
    capability, consent, control, engine, fleet, fleet_journal, fleet_requests, host, journal,
    output, policy, render, runtime, schema, secret, session, tool,
};

pub mod approvals;
pub mod cli;
pub mod demo;
pub mod http_serve;
pub mod local_dovecot;
pub mod mcp;
pub mod scaffold;

pub use agentcap_core::{
    AgentEngine, CallError, CallOptions, CallOutcome, Gate, LoadError, LoadedTool, Policy, Runtime,
    SessionId,
};
