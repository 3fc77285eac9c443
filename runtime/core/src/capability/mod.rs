//! Capabilities as plug-ins. A capability is one WIT interface of
//! `agentcap:tools` plus a module that implements [`CapabilityPlugin`]: its
//! actions and what each does, its policy section (backend) and grant scope,
//! how it checks and describes a request from its backend's facts, and its
//! host functions, each of which passes the one Gate path
//! (`HostState::through_gate`). The host core (Gate, journal, approvers,
//! policy, linker, MCP, approvals page, `inspect`) knows capabilities only
//! through this interface and the [`registry`]; no core module names a
//! capability module.

pub mod data;
pub mod files;

pub mod forum;
pub mod http;
pub mod mail;
pub mod tls;

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use wasmtime::component::Linker;

use crate::consent::PromptItem;
use crate::host::bindings::agentcap::tools::consent::{Denial, DenialReason};
use crate::host::{CallContext, HostState};
use crate::policy::Policy;

/// What an action does to the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads only.
    Reads,
    /// Changes something that can be undone (a move, an archive).
    Changes,
    /// Destroys or replaces something (a deletion, an overwrite).
    Destroys,
    /// Publishes something others will read.
    Publishes,
}

/// One action of a capability (`mail.delete`): the unit a grant names, a
/// token covers and the journal records.
#[derive(Debug)]
pub struct Action {
    /// `interface.action`, as in intents and policies.
    pub name: &'static str,
    /// What it does.
    pub effect: Effect,
    /// Whether an intent for it carries the exact content (a post body, a
    /// query, a file's new content) as its payload; the token is bound to it.
    pub carries_payload: bool,
    /// The grant keys that scope it (`folders`); any other key in its grant
    /// is an error.
    pub scope_keys: &'static [&'static str],
}

/// A capability: a handle on one registered [`Action`].
#[derive(Clone, Copy)]
pub struct Capability(&'static Action);

impl Capability {
    /// The capability for `action`.
    pub const fn new(action: &'static Action) -> Capability {
        Capability(action)
    }

    /// The name used in intents and policies (`mail.delete`).
    pub fn as_str(self) -> &'static str {
        self.0.name
    }

    /// Parse a name such as `mail.delete` (registered capabilities only).
    pub fn parse(name: &str) -> Option<Capability> {
        Capability::all().find(|c| c.as_str() == name)
    }

    /// Every registered capability.
    pub fn all() -> impl Iterator<Item = Capability> {
        registry::plugins()
            .iter()
            .flat_map(|p| p.actions().iter().copied())
    }

    /// The WIT interface that carries it (`mail`).
    pub fn interface(self) -> &'static str {
        self.0.name.split('.').next().unwrap_or(self.0.name)
    }

    /// What it does.
    pub fn effect(self) -> Effect {
        self.0.effect
    }

    /// Whether the action changes anything (as opposed to reading).
    pub fn is_side_effecting(self) -> bool {
        self.0.effect != Effect::Reads
    }

    /// Whether the action destroys or publishes something: such requests
    /// are not approvable through an MCP client's form unless the operator
    /// says so (`approve_via`), since the agent's own software answers it.
    pub fn destroys_or_publishes(self) -> bool {
        matches!(self.0.effect, Effect::Destroys | Effect::Publishes)
    }

    /// Whether the action publishes: its content carries the host's label.
    pub fn publishes(self) -> bool {
        self.0.effect == Effect::Publishes
    }

    /// Whether an intent for it must carry the exact content (payload).
    pub fn carries_payload(self) -> bool {
        self.0.carries_payload
    }

    /// The grant keys that scope it.
    pub fn scope_keys(self) -> &'static [&'static str] {
        self.0.scope_keys
    }

    /// The plug-in that implements it.
    pub fn plugin(self) -> &'static dyn CapabilityPlugin {
        registry::plugin(self.interface()).expect("a capability comes from a registered plug-in")
    }
}

impl PartialEq for Capability {
    fn eq(&self, other: &Capability) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Capability {}

impl PartialOrd for Capability {
    fn partial_cmp(&self, other: &Capability) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Capability {
    fn cmp(&self, other: &Capability) -> std::cmp::Ordering {
        self.0.name.cmp(other.0.name)
    }
}

impl std::hash::Hash for Capability {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl fmt::Debug for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

/// A plug-in's own value kept by the core without knowing its type: a
/// backend's settings, an opened backend, a grant's scope.
#[derive(Clone)]
pub struct Opaque(Arc<dyn Any + Send + Sync>);

impl Opaque {
    /// Wrap a plug-in's value.
    pub fn new<T: Any + Send + Sync>(value: T) -> Opaque {
        Opaque(Arc::new(value))
    }

    /// Wrap a shared plug-in value.
    pub fn from_arc<T: Any + Send + Sync>(value: Arc<T>) -> Opaque {
        Opaque(value)
    }

    /// The value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }

    /// The shared value, if it is a `T`.
    pub fn get_arc<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.0.clone().downcast::<T>().ok()
    }

    /// Deserialize a plug-in's `T` from its policy table.
    pub fn parse<T>(table: PolicyTable<'_>) -> Result<Opaque, toml::de::Error>
    where
        T: serde::de::DeserializeOwned + Any + Send + Sync,
    {
        Ok(Opaque::new(T::deserialize(table)?))
    }
}

impl Default for Opaque {
    /// No value (a capability without scope keys).
    fn default() -> Opaque {
        Opaque::new(())
    }
}

impl fmt::Debug for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(plug-in value)")
    }
}

/// A configured backend: its settings from the policy and the opened
/// backend the plug-in's host functions use.
pub struct Backend {
    /// The settings (the plug-in's type).
    pub settings: Opaque,
    /// The opened backend (the plug-in's type).
    pub opened: Opaque,
}

/// The configured backends, by interface.
pub type Backends = std::collections::BTreeMap<&'static str, Backend>;

/// Open every backend the policy configures.
pub fn open_backends(policy: &Policy) -> Result<Backends, String> {
    let mut backends = Backends::new();
    for (interface, settings) in &policy.backends {
        let plugin = registry::plugin(interface)
            .ok_or_else(|| format!("no capability plug-in for [{interface}]"))?;
        let opened = plugin
            .open(settings, policy)
            .map_err(|e| format!("cannot open the [{interface}] backend: {e}"))?;
        backends.insert(
            plugin.interface(),
            Backend {
                settings: settings.clone(),
                opened,
            },
        );
    }
    Ok(backends)
}

/// The TOML of one policy table handed to a plug-in: deserialize your type
/// from it (with `deny_unknown_fields`); errors keep their line numbers.
pub type PolicyTable<'a> = toml::de::ValueDeserializer<'a>;

/// A request the host checks and describes before anyone decides it.
pub struct Request<'a> {
    /// The call asking.
    pub call: &'a CallContext,
    /// The action.
    pub capability: Capability,
    /// The grant's scope, as the plug-in parsed it.
    pub scope: &'a Opaque,
    /// The targets the tool named (deduplicated).
    pub targets: &'a [String],
    /// The exact content, for actions that carry one.
    pub payload: Option<&'a str>,
    /// Facts the capability's own host code gathered when the host, not the
    /// tool, asks (an http request as sent); `None` for a tool's request.
    pub context: Option<&'a (dyn Any + Sync)>,
}

impl Request<'_> {
    /// The grant's scope as the plug-in parsed it (a `T`).
    pub fn scope<T: Any>(&self) -> Result<&T, Denial> {
        self.scope
            .get::<T>()
            .ok_or_else(|| self.invalid("the grant's scope is not this capability's"))
    }

    /// The plug-in's opened backend, or a refusal naming the missing one.
    pub fn backend<T: Any>(&self) -> Result<&T, Denial> {
        self.call
            .backend::<T>(self.capability.interface())
            .ok_or_else(|| {
                refusal(
                    DenialReason::NotGranted,
                    format!("no [{}] backend is configured", self.capability.interface()),
                )
            })
    }

    /// A refusal: the request is outside the grant's scope (`why` says
    /// how, after the capability's name).
    pub fn outside_scope(&self, why: impl fmt::Display) -> Denial {
        refusal(
            DenialReason::NotGranted,
            format!("{} {why}", self.capability),
        )
    }

    /// A refusal: the request is malformed or names what does not exist.
    pub fn invalid(&self, why: impl fmt::Display) -> Denial {
        refusal(DenialReason::Invalid, format!("{}: {why}", self.capability))
    }
}

/// A denial with its reason and message.
pub fn refusal(reason: DenialReason, message: String) -> Denial {
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
    /// What a human sees of the content, when it is not the payload itself
    /// (a diff against the file a write replaces); `None` shows the payload.
    pub shown: Option<ShownContent>,
}

/// Content shown to a human in place of the exact payload.
#[derive(Debug, Clone)]
pub struct ShownContent {
    /// What it is (`the change, as a diff against the current file`).
    pub heading: String,
    /// The text (rendered by each channel, like every other field).
    pub text: String,
}

/// What a capability plugs into the host. Implement it in the capability's
/// module and add one line to [`registry`].
pub trait CapabilityPlugin: Send + Sync {
    /// The WIT interface in `agentcap:tools` (`mail`); also the name of its
    /// policy table (`[mail]`) and the prefix of its actions.
    fn interface(&self) -> &'static str;

    /// Its actions.
    fn actions(&self) -> &'static [Capability];

    /// Parse its policy table (`[mail]`): the backend's settings. Reject
    /// unknown keys; check what can be checked without opening anything.
    fn parse_backend(&self, table: PolicyTable<'_>) -> Result<Opaque, toml::de::Error>;

    /// Open the backend the settings name (paths resolve with `policy`).
    fn open(&self, settings: &Opaque, policy: &Policy) -> Result<Opaque, String>;

    /// Parse a grant's scope for `capability` from the grant's keys in
    /// [`Action::scope_keys`] (an empty table when it has none).
    fn parse_scope(
        &self,
        capability: Capability,
        scope: PolicyTable<'_>,
    ) -> Result<Opaque, toml::de::Error>;

    /// Check a request's targets (and content) against the scope, and
    /// describe it from the backend's facts: the host's account a human
    /// sees. Strings from the backend or the tool are rendered by the
    /// approvers, never here.
    fn describe(&self, request: &Request<'_>) -> Result<Described, Denial>;

    /// The label template stamped on what `capability` publishes, from the
    /// backend's settings (only for actions whose effect is
    /// [`Effect::Publishes`]).
    fn label_template(&self, _settings: &Opaque) -> Option<String> {
        None
    }

    /// Link its host functions (each passing `HostState::through_gate`).
    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()>;

    /// Imports outside `agentcap:tools` this capability provides (a
    /// standard interface such as `wasi:http/outgoing-handler`), as
    /// `package/interface` without version. Without the grant they are
    /// never linked.
    fn standard_imports(&self) -> &'static [&'static str] {
        &[]
    }

    /// Per-call state the plug-in keeps in the store (created for tools the
    /// capability is linked for), reached again with
    /// `HostState::plugin_state`.
    fn new_store_state(&self, _call: &Arc<CallContext>) -> Option<Box<dyn Any + Send>> {
        None
    }
}

/// The registry: every capability the runtime has, one line each.
pub mod registry {
    use super::CapabilityPlugin;

    static PLUGINS: &[&dyn CapabilityPlugin] = &[
        &super::mail::MailPlugin,
        &super::forum::ForumPlugin,
        &super::data::DataPlugin,
        &super::files::FilesPlugin,
        &super::http::HttpPlugin,
    ];

    /// Every registered capability plug-in.
    pub fn plugins() -> &'static [&'static dyn CapabilityPlugin] {
        PLUGINS
    }

    /// The plug-in of WIT interface `interface`.
    pub fn plugin(interface: &str) -> Option<&'static dyn CapabilityPlugin> {
        PLUGINS.iter().copied().find(|p| p.interface() == interface)
    }

    /// The interfaces of every plug-in (`mail`, `forum`, ...).
    pub fn interfaces() -> impl Iterator<Item = &'static str> {
        PLUGINS.iter().map(|p| p.interface())
    }

    /// The plug-in that provides the standard import `name`
    /// (`wasi:http/outgoing-handler@0.2.6`), if any.
    pub fn providing(name: &str) -> Option<&'static dyn CapabilityPlugin> {
        let unversioned = name.split('@').next().unwrap_or(name);
        PLUGINS
            .iter()
            .copied()
            .find(|p| p.standard_imports().contains(&unversioned))
    }
}
