//! A tool as the runtime sees it before it runs: the functions it exports
//! (with JSON Schemas derived from their WIT types) and the interfaces it
//! imports, read from the component itself.

use serde::Serialize;
use serde_json::{Value, json};
use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentInstance, ComponentItem};
use wasmtime::component::{Component, Type};

use crate::schema::{Unsupported, schema_of};

/// The WIT package of agentcap's own interfaces.
pub const TOOLS_PACKAGE: &str = "agentcap:tools";

/// What an import is, and whether it can ever be linked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ImportKind {
    /// `agentcap:tools/consent`: always available, it is how a tool asks.
    Consent,
    /// An agentcap capability interface; linked only when granted.
    Capability {
        /// `mail`, ...
        interface: String,
    },
    /// A WASI interface that is harmless here: no env, args, preopened
    /// directories or terminal; stdout and stderr are captured.
    Wasi,
    /// `wasi:sockets`: linked so that toolchains that always import it
    /// (CPython) load, but every operation fails with `access-denied`: no
    /// socket is created, no name resolved.
    NoNetwork,
    /// Never linked, whatever the policy says.
    Forbidden {
        /// Why.
        reason: String,
    },
    /// Unknown to this runtime.
    Unknown,
}

/// One import of a component.
#[derive(Debug, Clone, Serialize)]
pub struct ToolImport {
    /// The full name, e.g. `agentcap:tools/mail@0.1.0`.
    pub name: String,
    /// What it is.
    #[serde(flatten)]
    pub kind: ImportKind,
}

/// One exported function a caller can invoke.
#[derive(Debug, Clone, Serialize)]
pub struct ToolFunction {
    /// The name callers use: `func` for a world-level export,
    /// `interface.func` for one inside an exported interface.
    pub name: String,
    /// The exported interface, if any (full name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The function's name inside it.
    #[serde(skip)]
    pub func: String,
    /// Parameter names and WIT types.
    #[serde(skip)]
    pub params: Vec<(String, Type)>,
    /// The result type, if any.
    #[serde(skip)]
    pub result: Option<Type>,
    /// JSON Schema of the arguments object.
    pub input_schema: Value,
    /// JSON Schema of the result (absent if the function returns nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Why it cannot be called over JSON, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

impl ToolFunction {
    /// Whether the function returns `result<_, _>` (its `err` is the tool's
    /// own error).
    pub fn returns_result(&self) -> bool {
        matches!(self.result, Some(Type::Result(_)))
    }
}

/// Exports and imports of a component.
#[derive(Debug, Clone, Serialize)]
pub struct ToolInfo {
    /// SHA-256 of the component file.
    pub digest: String,
    /// Callable functions.
    pub functions: Vec<ToolFunction>,
    /// Every import.
    pub imports: Vec<ToolImport>,
}

impl ToolInfo {
    /// Read exports and imports from a compiled component.
    pub fn describe(engine: &Engine, component: &Component, digest: &str) -> ToolInfo {
        let ty = component.component_type();
        let mut functions = Vec::new();
        for (name, item) in ty.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(f) => {
                    functions.push(describe_function(name, None, name, &f))
                }
                ComponentItem::ComponentInstance(instance)
                    if is_build_hook(name, &instance, engine) => {}
                ComponentItem::ComponentInstance(instance) => {
                    let short = short_interface_name(name);
                    for (fname, item) in instance.exports(engine) {
                        if let ComponentItem::ComponentFunc(f) = item.ty {
                            functions.push(describe_function(
                                &format!("{short}.{fname}"),
                                Some(name),
                                fname,
                                &f,
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        let imports = ty
            .imports(engine)
            .map(|(name, _)| ToolImport {
                name: name.to_string(),
                kind: classify_import(name),
            })
            .collect();
        ToolInfo {
            digest: digest.to_string(),
            functions,
            imports,
        }
    }

    /// The capability interfaces the component imports (`mail`, ...), plus
    /// `consent` if it imports it.
    pub fn capabilities(&self) -> Vec<String> {
        self.imports
            .iter()
            .filter_map(|i| match &i.kind {
                ImportKind::Consent => Some("consent".to_string()),
                ImportKind::Capability { interface } => Some(interface.clone()),
                _ => None,
            })
            .collect()
    }

    /// A function by name.
    pub fn function(&self, name: &str) -> Option<&ToolFunction> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// The description as JSON (what `agentcap inspect --json` prints).
    pub fn to_json(&self) -> Value {
        json!({
            "digest": self.digest,
            "functions": self.functions,
            "capabilities": self.capabilities(),
            "imports": self.imports,
        })
    }
}

/// Whether an exported instance is a guest toolchain's build-time hook
/// rather than the tool's own functions: componentize-py leaves its
/// pre-initialization entry point, a plain-named interface `exports` with
/// the single function `init`, in every component. It is not offered to
/// callers (calling it would only re-run the interpreter's setup in the
/// call's fresh instance).
fn is_build_hook(name: &str, instance: &ComponentInstance, engine: &Engine) -> bool {
    let functions: Vec<&str> = instance
        .exports(engine)
        .filter(|(_, i)| matches!(i.ty, ComponentItem::ComponentFunc(_)))
        .map(|(n, _)| n)
        .collect();
    name == "exports" && functions == ["init"]
}

/// `example:pkg/api@1.0.0` -> `api`.
fn short_interface_name(name: &str) -> &str {
    let without_version = name.split('@').next().unwrap_or(name);
    without_version
        .rsplit('/')
        .next()
        .unwrap_or(without_version)
}

/// Split `ns:pkg/iface@ver` into (`ns:pkg`, `iface`).
fn split_interface(name: &str) -> Option<(&str, &str)> {
    let without_version = name.split('@').next()?;
    without_version.split_once('/')
}

/// Decide what an import is.
pub fn classify_import(name: &str) -> ImportKind {
    let Some((package, interface)) = split_interface(name) else {
        return ImportKind::Unknown;
    };
    match package {
        TOOLS_PACKAGE if interface == "consent" => ImportKind::Consent,
        TOOLS_PACKAGE if crate::capability::registry::plugin(interface).is_some() => {
            ImportKind::Capability {
                interface: interface.to_string(),
            }
        }
        "wasi:cli" | "wasi:io" | "wasi:clocks" | "wasi:random" | "wasi:filesystem" => {
            ImportKind::Wasi
        }
        _ if crate::capability::registry::providing(name).is_some() => ImportKind::Capability {
            interface: crate::capability::registry::providing(name)
                .map(|p| p.interface().to_string())
                .unwrap_or_default(),
        },
        "wasi:sockets" => ImportKind::NoNetwork,
        "wasi:http" => ImportKind::Forbidden {
            reason: "only wasi:http's outgoing handler is granted to tools (capability http.*); \
                     a tool never serves requests"
                .into(),
        },
        _ => ImportKind::Unknown,
    }
}

fn describe_function(
    name: &str,
    interface: Option<&str>,
    func: &str,
    f: &ComponentFunc,
) -> ToolFunction {
    let params: Vec<(String, Type)> = f.params().map(|(n, t)| (n.to_string(), t)).collect();
    let result = f.results().next();
    let mut unavailable = None;
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for (pname, ty) in &params {
        match schema_of(ty) {
            Ok(schema) => {
                properties.insert(pname.clone(), schema);
            }
            Err(Unsupported(what)) => {
                unavailable = Some(format!("parameter `{pname}` is a {what}"))
            }
        }
        if !matches!(ty, Type::Option(_)) {
            required.push(Value::String(pname.clone()));
        }
    }
    let output_schema = match result.as_ref().map(schema_of) {
        None => None,
        Some(Ok(schema)) => Some(schema),
        Some(Err(Unsupported(what))) => {
            unavailable = Some(format!("the result is a {what}"));
            None
        }
    };
    if f.async_() {
        unavailable = Some("async component functions are not supported yet".into());
    }
    ToolFunction {
        name: name.to_string(),
        interface: interface.map(str::to_string),
        func: func.to_string(),
        params,
        result,
        input_schema: json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        }),
        output_schema,
        unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_imports() {
        assert_eq!(
            classify_import("agentcap:tools/consent@0.1.0"),
            ImportKind::Consent
        );
        assert_eq!(
            classify_import("agentcap:tools/mail@0.1.0"),
            ImportKind::Capability {
                interface: "mail".into()
            }
        );
        assert_eq!(
            classify_import("agentcap:tools/teleport@0.1.0"),
            ImportKind::Unknown
        );
        assert_eq!(classify_import("wasi:cli/stdout@0.2.6"), ImportKind::Wasi);
        assert_eq!(
            classify_import("wasi:sockets/tcp@0.2.6"),
            ImportKind::NoNetwork
        );
        assert_eq!(
            classify_import("wasi:http/types@0.2.6"),
            ImportKind::Capability {
                interface: "http".into()
            }
        );
        assert!(matches!(
            classify_import("wasi:http/incoming-handler@0.2.6"),
            ImportKind::Forbidden { .. }
        ));
        assert_eq!(classify_import("evil:corp/exfiltrate"), ImportKind::Unknown);
        assert_eq!(short_interface_name("example:pkg/api@1.0.0"), "api");
    }
}
