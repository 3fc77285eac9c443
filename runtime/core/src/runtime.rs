//! The runtime: loads tools under a policy (deny by default at link time)
//! and runs calls, one fresh store per call, JSON in and JSON out.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmtime::component::{ComponentExportIndex, InstancePre, Val};
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};

use crate::capability::Backends;
use crate::consent::{Gate, SessionId, SharedApprover};
use crate::engine::AgentEngine;
use crate::host::{CallContext, HostState, linker_for};
use crate::journal::{Entry, Journal, Kind};
use crate::policy::{Policy, ToolPolicy};
use crate::schema::{ArgumentError, json_to_val, val_to_json};
use crate::session::{SessionStopped, StopHandle, StopReport};
use crate::tool::{ImportKind, ToolInfo};
use tokio_util::sync::CancellationToken;

/// A tool that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The policy has no such tool.
    #[error("the policy has no tool named `{0}`")]
    NoSuchTool(String),
    /// The component file could not be read.
    #[error("cannot read component {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a valid component.
    #[error("tool `{tool}`: {message}")]
    Invalid {
        /// The tool.
        tool: String,
        /// What is wrong.
        message: String,
    },
    /// The component imports a capability the policy does not grant.
    #[error(
        "tool `{tool}` imports capability `{capability}` ({import}), which the policy does not grant to it; refusing to run it"
    )]
    NotGranted {
        /// The tool.
        tool: String,
        /// The capability interface.
        capability: String,
        /// The import as named in the component.
        import: String,
    },
    /// The component imports something that is never linked.
    #[error("tool `{tool}` imports {import}, which is never available to tools: {reason}")]
    Forbidden {
        /// The tool.
        tool: String,
        /// The import.
        import: String,
        /// Why.
        reason: String,
    },
    /// The component imports something unknown.
    #[error("tool `{tool}` imports {import}, which this runtime does not provide")]
    UnknownImport {
        /// The tool.
        tool: String,
        /// The import.
        import: String,
    },
    /// Linking failed for another reason (e.g. a capability version
    /// mismatch).
    #[error("tool `{tool}` cannot be linked: {message}")]
    Link {
        /// The tool.
        tool: String,
        /// wasmtime's explanation.
        message: String,
    },
    /// The runtime itself is misconfigured.
    #[error("{0}")]
    Setup(String),
}

/// A call that did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The tool has no such function.
    #[error("tool `{tool}` has no function `{function}` (it has: {available})")]
    NoSuchFunction {
        /// The tool.
        tool: String,
        /// What was asked.
        function: String,
        /// What exists.
        available: String,
    },
    /// The function cannot be called with JSON.
    #[error("function `{function}` cannot be called: {reason}")]
    Unavailable {
        /// The function.
        function: String,
        /// Why.
        reason: String,
    },
    /// The arguments are not an object.
    #[error("arguments must be a JSON object keyed by parameter name, got {0}")]
    ArgumentsNotObject(String),
    /// An argument does not match its type.
    #[error(transparent)]
    Argument(#[from] ArgumentError),
    /// An argument name the function does not have.
    #[error("function `{function}` has no parameter `{name}` (parameters: {expected})")]
    UnknownArgument {
        /// The function.
        function: String,
        /// The unknown name.
        name: String,
        /// The real parameters.
        expected: String,
    },
    /// The call ran out of wall time.
    #[error("tool `{tool}` exceeded its wall-time limit of {limit_ms} ms and was stopped")]
    WallTime {
        /// The tool.
        tool: String,
        /// The limit.
        limit_ms: u64,
        /// What the tool printed before.
        logs: String,
    },
    /// The call tried to use more memory than allowed.
    #[error("tool `{tool}` exceeded its memory limit of {limit_mb} MiB and was stopped")]
    Memory {
        /// The tool.
        tool: String,
        /// The limit.
        limit_mb: u64,
        /// What the tool printed before.
        logs: String,
    },
    /// The guest trapped (a bug, a forged handle, ...).
    #[error("tool `{tool}` crashed: {message}")]
    Trap {
        /// The tool.
        tool: String,
        /// What happened.
        message: String,
        /// What the tool printed before.
        logs: String,
    },
    /// The tool already runs as many calls as its limit allows.
    #[error(
        "tool `{tool}` already runs {limit} call(s), its limit (max_concurrent_calls); try again when one ends"
    )]
    TooManyCalls {
        /// The tool.
        tool: String,
        /// The limit.
        limit: u32,
    },
    /// The result is larger than the tool's limit.
    #[error(
        "tool `{tool}` returned {size_mb} MiB, more than its limit of {limit_mb} MiB (max_result_mb)"
    )]
    ResultTooLarge {
        /// The tool.
        tool: String,
        /// The result's size.
        size_mb: u64,
        /// The limit.
        limit_mb: u64,
    },
    /// The session was stopped (before or during the call).
    #[error("tool `{tool}` was stopped: session {session} was stopped")]
    Stopped {
        /// The tool.
        tool: String,
        /// The session.
        session: String,
    },
    /// The caller cancelled this call (for instance an MCP
    /// `notifications/cancelled`); effects already past the Gate finished.
    #[error("tool `{tool}` was interrupted: the call was cancelled by its caller")]
    Cancelled {
        /// The tool.
        tool: String,
    },
    /// Instantiation failed.
    #[error("tool `{tool}` could not start: {message}")]
    Instantiate {
        /// The tool.
        tool: String,
        /// Why.
        message: String,
    },
}

/// The outcome of a call that ran to completion.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// The result as JSON (`null` for functions without a result).
    pub result: Value,
    /// Whether the tool reported its own error (`{"err": ...}`).
    pub is_error: bool,
    /// What the tool wrote to stdout (never mixed into the host's output).
    pub stdout: String,
    /// What the tool wrote to stderr.
    pub stderr: String,
}

/// Per-call settings of [`Runtime::call_with`].
#[derive(Default, Clone)]
pub struct CallOptions {
    /// Who answers this call's `ask` requests instead of the runtime's
    /// approver (an MCP server asks its client).
    pub approver: Option<SharedApprover>,
    /// Cancels this call alone.
    pub cancel: Option<CancellationToken>,
}

/// The guest was interrupted because its call was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("the call was cancelled")]
pub(crate) struct CallCancelled;

/// A tool ready to run: linked against exactly its grants.
pub struct LoadedTool {
    name: String,
    grants: Arc<ToolPolicy>,
    info: ToolInfo,
    pre: InstancePre<HostState>,
    exports: HashMap<String, ComponentExportIndex>,
    from_cache: bool,
    running: Arc<tokio::sync::Semaphore>,
}

impl LoadedTool {
    /// The tool's name in the policy.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Exports, imports, schemas.
    pub fn info(&self) -> &ToolInfo {
        &self.info
    }

    /// The grants and limits it was loaded with.
    pub fn grants(&self) -> &ToolPolicy {
        &self.grants
    }

    /// Whether the compiled code came from the on-disk cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }
}

/// The host runtime: engine, policy, Gate, approver and backends.
pub struct Runtime {
    engine: AgentEngine,
    policy: Arc<Policy>,
    gate: Arc<Gate>,
    approver: SharedApprover,
    backends: Arc<Backends>,
    journal: Arc<Journal>,
}

impl Runtime {
    /// A runtime for `policy`; opens the journal and the backends the policy
    /// configures.
    pub fn new(
        engine: AgentEngine,
        policy: Policy,
        approver: SharedApprover,
    ) -> Result<Runtime, LoadError> {
        let backends = crate::capability::open_backends(&policy).map_err(LoadError::Setup)?;
        let journal = Journal::open(&policy.journal_path(), policy.journal.record_payloads)
            .map_err(|e| LoadError::Setup(format!("cannot open the audit journal: {e}")))?;
        let gate = Gate::new();
        // In a fleet, effects wait until the host is in touch with it
        // (see `Runtime::start_fleet`).
        if let Some(fleet) = &policy.fleet {
            gate.join_fleet(crate::fleet::FleetLink::new(
                fleet.clone(),
                policy.base_dir.clone(),
            ));
        }
        Ok(Runtime {
            engine,
            policy: Arc::new(policy),
            gate: Arc::new(gate),
            approver,
            backends: Arc::new(backends),
            journal: Arc::new(journal),
        })
    }

    /// The Gate (for revocation and inspection).
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Join the fleet the policy names (inside a tokio runtime): a task
    /// keeps this host in touch with the fleet's stops for as long as the
    /// returned member lives. Without a `[fleet]`, `None`. Until it has
    /// reached the fleet's database, every effect is refused.
    pub fn start_fleet(&self) -> Option<crate::fleet::FleetMember> {
        crate::fleet::start_member(self.gate.fleet()?, self.stop_handle())
    }

    /// `approver`, and in a fleet also every host's approvals page: the
    /// request waits in the fleet's database too.
    fn with_fleet_pages(&self, approver: SharedApprover) -> SharedApprover {
        match self.gate.fleet() {
            None => approver,
            Some(link) => Arc::new(crate::consent::FirstAnswer::new(vec![
                approver,
                Arc::new(crate::fleet_requests::FleetApprover::new(link.clone())),
            ])),
        }
    }

    /// A handle that stops sessions of this runtime.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle::new(self.gate.clone(), self.journal.clone())
    }

    /// Stop `session` (see [`StopHandle::stop_session`]).
    pub fn stop_session(&self, session: &SessionId, by: &str) -> StopReport {
        self.stop_handle().stop_session(session, by)
    }

    /// The audit journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The engine.
    pub fn engine(&self) -> &AgentEngine {
        &self.engine
    }

    /// Load the policy's tool `name` from its component file.
    pub fn load_tool(&self, name: &str) -> Result<LoadedTool, LoadError> {
        let tool = self
            .policy
            .tools
            .get(name)
            .ok_or_else(|| LoadError::NoSuchTool(name.to_string()))?;
        let path = self.policy.resolve(&tool.component);
        let bytes = read_component(&path)?;
        self.load_component(name, tool.clone(), &bytes)
    }

    /// Load component bytes as tool `name` with the given grants. Refused
    /// before anything runs if the component imports anything not granted.
    pub fn load_component(
        &self,
        name: &str,
        grants: ToolPolicy,
        bytes: &[u8],
    ) -> Result<LoadedTool, LoadError> {
        let compiled = self.engine.compile(bytes).map_err(|e| LoadError::Invalid {
            tool: name.to_string(),
            message: format!("{e:#}"),
        })?;
        let info = ToolInfo::describe(self.engine.engine(), &compiled.component, &compiled.digest);
        for import in &info.imports {
            match &import.kind {
                ImportKind::Consent | ImportKind::Wasi | ImportKind::NoNetwork => {}
                ImportKind::Capability { interface } => {
                    if !grants.links_interface(interface) {
                        return Err(LoadError::NotGranted {
                            tool: name.to_string(),
                            capability: interface.clone(),
                            import: import.name.clone(),
                        });
                    }
                }
                ImportKind::Forbidden { reason } => {
                    return Err(LoadError::Forbidden {
                        tool: name.to_string(),
                        import: import.name.clone(),
                        reason: reason.clone(),
                    });
                }
                ImportKind::Unknown => {
                    return Err(LoadError::UnknownImport {
                        tool: name.to_string(),
                        import: import.name.clone(),
                    });
                }
            }
        }
        let linker = linker_for(self.engine.engine(), &grants)
            .map_err(|e| LoadError::Setup(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&compiled.component)
            .map_err(|e| LoadError::Link {
                tool: name.to_string(),
                message: format!("{e:#}"),
            })?;
        let mut exports = HashMap::new();
        for function in &info.functions {
            let parent = match &function.interface {
                Some(interface) => compiled.component.get_export_index(None, interface),
                None => None,
            };
            if let Some(index) = compiled
                .component
                .get_export_index(parent.as_ref(), &function.func)
            {
                exports.insert(function.name.clone(), index);
            }
        }
        Ok(LoadedTool {
            name: name.to_string(),
            info,
            pre,
            exports,
            from_cache: compiled.from_cache,
            running: Arc::new(tokio::sync::Semaphore::new(
                grants.limits.max_concurrent_calls as usize,
            )),
            grants: Arc::new(grants),
        })
    }

    /// Call `function` of `tool` in `session` with JSON `args` (an object
    /// keyed by parameter name). Each call gets a fresh store: a trapped
    /// instance is never reused.
    pub async fn call(
        &self,
        tool: &LoadedTool,
        session: &SessionId,
        function: &str,
        args: &Value,
    ) -> Result<CallOutcome, CallError> {
        self.call_with(tool, session, function, args, CallOptions::default())
            .await
    }

    /// [`Runtime::call`] with a per-call approver and cancellation.
    pub async fn call_with(
        &self,
        tool: &LoadedTool,
        session: &SessionId,
        function: &str,
        args: &Value,
        options: CallOptions,
    ) -> Result<CallOutcome, CallError> {
        let spec = tool
            .info
            .function(function)
            .ok_or_else(|| CallError::NoSuchFunction {
                tool: tool.name.clone(),
                function: function.to_string(),
                available: tool
                    .info
                    .functions
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if let Some(reason) = &spec.unavailable {
            return Err(CallError::Unavailable {
                function: function.to_string(),
                reason: reason.clone(),
            });
        }
        let params = convert_arguments(function, &spec.params, args)?;
        let slot =
            tool.running
                .clone()
                .try_acquire_owned()
                .map_err(|_| CallError::TooManyCalls {
                    tool: tool.name.clone(),
                    limit: tool.grants.limits.max_concurrent_calls,
                })?;
        let session_state = self.gate.session(session);
        session_state.note_tool(&tool.name);
        if session_state.is_stopped() {
            return Err(CallError::Stopped {
                tool: tool.name.clone(),
                session: session.0.clone(),
            });
        }
        let limits = &tool.grants.limits;
        let memory_bytes = (limits.memory_mb as usize).saturating_mul(1 << 20);
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(memory_bytes)
            .table_elements(100_000)
            .instances(32)
            .tables(32)
            .memories(8)
            .trap_on_grow_failure(true)
            .build();
        let call = Arc::new(CallContext {
            session: session.clone(),
            tool: tool.name.clone(),
            grants: tool.grants.clone(),
            user: self.policy.user.clone(),
            gate: self.gate.clone(),
            approver: self
                .with_fleet_pages(options.approver.unwrap_or_else(|| self.approver.clone())),
            consent_timeout: Duration::from_secs(self.policy.consent_timeout_secs),
            backends: self.backends.clone(),
            journal: self.journal.clone(),
            tool_digest: tool.info.digest.clone(),
            session_state,
            human_wait_us: Default::default(),
            slot: crate::host::ExecutionSlot::new(tool.running.clone(), slot),
            refusals: Default::default(),
            cancel: options.cancel.unwrap_or_default(),
        });
        let wall_time = Duration::from_millis(limits.wall_time_ms);
        let state = HostState::new(call, store_limits, wall_time);
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let call = &ctx.data().call;
            if call.session_state.is_stopped() {
                return Err(wasmtime::Error::new(SessionStopped(call.session.clone())));
            }
            if call.cancel.is_cancelled() {
                return Err(wasmtime::Error::new(CallCancelled));
            }
            if Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // Yield so that a busy guest never holds an executor thread.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let instance =
            tool.pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| CallError::Instantiate {
                    tool: tool.name.clone(),
                    message: format!("{e:#}"),
                })?;
        let index = tool
            .exports
            .get(function)
            .ok_or_else(|| CallError::Unavailable {
                function: function.to_string(),
                reason: "export not found in the instance".into(),
            })?;
        let func = instance
            .get_func(&mut store, index)
            .ok_or_else(|| CallError::Unavailable {
                function: function.to_string(),
                reason: "export is not a function".into(),
            })?;
        let mut results = vec![Val::Bool(false); usize::from(spec.result.is_some())];
        let outcome = func.call_async(&mut store, &params, &mut results).await;
        let stdout = store.data().stdout.text();
        let stderr = store.data().stderr.text();
        let failed = match outcome {
            Err(error) => {
                let logs = tail(&format!("{stdout}{stderr}"), MAX_LOG_TAIL);
                Some(classify_trap(&tool.name, session, limits, error, logs))
            }
            // A call that a stop overlapped ends as stopped, even when the
            // guest got to return before an epoch tick: the stop answered it.
            Ok(()) if store.data().call.session_state.is_stopped() => Some(CallError::Stopped {
                tool: tool.name.clone(),
                session: session.0.clone(),
            }),
            Ok(()) => None,
        };
        if let Some(failure) = failed {
            let record = Entry::new(Kind::ToolFailure, &session.0, &tool.name, &tool.info.digest)
                .detail("function", function)
                .outcome(failure.to_string());
            if let Err(e) = self.journal.append(record) {
                tracing::error!("could not journal a tool failure: {e}");
            }
            return Err(failure);
        }
        let result = results.first().map_or(Value::Null, val_to_json);
        let size = serde_json::to_vec(&result).map_or(0, |v| v.len() as u64);
        if size > limits.max_result_mb << 20 {
            return Err(CallError::ResultTooLarge {
                tool: tool.name.clone(),
                size_mb: size.div_ceil(1 << 20),
                limit_mb: limits.max_result_mb,
            });
        }
        let is_error = matches!(results.first(), Some(Val::Result(Err(_))));
        Ok(CallOutcome {
            result,
            is_error,
            stdout,
            stderr,
        })
    }
}

/// How much of a failed call's output an error carries.
const MAX_LOG_TAIL: usize = 4096;

/// The last `max` bytes of `text` (on a character boundary).
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[...]{}", &text[start..])
}

fn classify_trap(
    tool: &str,
    session: &SessionId,
    limits: &crate::policy::Limits,
    error: wasmtime::Error,
    logs: String,
) -> CallError {
    if error.downcast_ref::<SessionStopped>().is_some() {
        return CallError::Stopped {
            tool: tool.to_string(),
            session: session.0.clone(),
        };
    }
    if error.downcast_ref::<CallCancelled>().is_some() {
        return CallError::Cancelled {
            tool: tool.to_string(),
        };
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return CallError::WallTime {
            tool: tool.to_string(),
            limit_ms: limits.wall_time_ms,
            logs,
        };
    }
    let message = error.root_cause().to_string();
    tracing::debug!("tool `{tool}` trapped: {error:?}");
    if message.contains("forcing trap when growing memory") {
        return CallError::Memory {
            tool: tool.to_string(),
            limit_mb: limits.memory_mb,
            logs,
        };
    }
    CallError::Trap {
        tool: tool.to_string(),
        message,
        logs,
    }
}

fn convert_arguments(
    function: &str,
    params: &[(String, wasmtime::component::Type)],
    args: &Value,
) -> Result<Vec<Val>, CallError> {
    let empty = serde_json::Map::new();
    let object = match args {
        Value::Object(o) => o,
        Value::Null => &empty,
        other => {
            return Err(CallError::ArgumentsNotObject(
                other.to_string().chars().take(60).collect(),
            ));
        }
    };
    if let Some(unknown) = object.keys().find(|k| !params.iter().any(|(p, _)| p == *k)) {
        return Err(CallError::UnknownArgument {
            function: function.to_string(),
            name: unknown.clone(),
            expected: params
                .iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    params
        .iter()
        .map(|(name, ty)| {
            let value = object.get(name).unwrap_or(&Value::Null);
            if value.is_null() && !matches!(ty, wasmtime::component::Type::Option(_)) {
                return Err(CallError::Argument(ArgumentError {
                    path: name.clone(),
                    expected: "a value (required)".into(),
                    got: "nothing".into(),
                }));
            }
            Ok(json_to_val(ty, value, name)?)
        })
        .collect()
}

/// Read a component file with a clear error.
pub fn read_component(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })
}
