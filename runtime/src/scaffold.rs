//! `agentcap new`: a ready tool project in Rust, Python or JavaScript. Each
//! holds the WIT it builds against (its world, and `agentcap:tools` under
//! `wit/deps`), one exported function that asks consent for exactly what it
//! does, a policy snippet granting it, and a README with the build command.
//! Python and JavaScript projects carry a copy of their SDK; a Rust project
//! depends on `agentcap-sdk` by path.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The language of a new tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A `cdylib` built with cargo for `wasm32-wasip2`, with `agentcap-sdk`.
    Rust,
    /// A module built with componentize-py (PyPI).
    Python,
    /// An ES module built with componentize-js (npm).
    Js,
}

/// `tools-wit/wit`, written into every project's `wit/deps/agentcap-tools`.
const TOOLS_WIT: &[(&str, &str)] = &[
    (
        "consent.wit",
        include_str!("../../tools-wit/wit/consent.wit"),
    ),
    ("mail.wit", include_str!("../../tools-wit/wit/mail.wit")),
    ("forum.wit", include_str!("../../tools-wit/wit/forum.wit")),
    ("data.wit", include_str!("../../tools-wit/wit/data.wit")),
    ("files.wit", include_str!("../../tools-wit/wit/files.wit")),
    ("worlds.wit", include_str!("../../tools-wit/wit/worlds.wit")),
];

const PYTHON_SDK: &str = include_str!("../../sdk/python/agentcap/__init__.py");
const JS_SDK: &str = include_str!("../../sdk/js/agentcap.js");
const JS_SDK_TYPES: &str = include_str!("../../sdk/js/agentcap.d.ts");
const JS_PACKAGE: &str = include_str!("../../sdk/js/package.json");
/// `jco types` of tools-wit, which `agentcap.d.ts` refers to.
const JS_TYPES: &[(&str, &str)] = &[
    (
        "host@0.1.0.d.ts",
        include_str!("../../sdk/js/types/host@0.1.0.d.ts"),
    ),
    (
        "interfaces/agentcap-tools-consent.d.ts",
        include_str!("../../sdk/js/types/interfaces/agentcap-tools-consent.d.ts"),
    ),
    (
        "interfaces/agentcap-tools-data.d.ts",
        include_str!("../../sdk/js/types/interfaces/agentcap-tools-data.d.ts"),
    ),
    (
        "interfaces/agentcap-tools-files.d.ts",
        include_str!("../../sdk/js/types/interfaces/agentcap-tools-files.d.ts"),
    ),
    (
        "interfaces/agentcap-tools-forum.d.ts",
        include_str!("../../sdk/js/types/interfaces/agentcap-tools-forum.d.ts"),
    ),
    (
        "interfaces/agentcap-tools-mail.d.ts",
        include_str!("../../sdk/js/types/interfaces/agentcap-tools-mail.d.ts"),
    ),
];

/// The versions of the JavaScript toolchain, as `sdk/js/package.json` pins
/// them (the project's package.json pins the same).
fn js_dev_dependencies() -> anyhow::Result<serde_json::Value> {
    let package: serde_json::Value =
        serde_json::from_str(JS_PACKAGE).context("sdk/js/package.json")?;
    Ok(serde_json::json!({
        "devDependencies": package["devDependencies"],
        "overrides": package["overrides"],
    }))
}

/// Whether `name` can be a WIT package and world name: lowercase words of
/// letters and digits joined by `-`, starting with a letter.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.split('-').all(|word| {
            word.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

fn world(name: &str) -> String {
    format!(
        r#"package local:{name};

/// {name}: an agentcap tool. Add capabilities by including another
/// `agentcap:tools` world (forum-tool, files-tool) or importing an
/// interface, and exports below; the operator's policy grants each import.
world {name} {{
    include agentcap:tools/mail-tool@0.1.0;

    /// Count the messages of `folder`, after asking consent to list it.
    export count-messages: func(folder: string) -> result<u32, string>;
}}
"#
    )
}

fn policy(name: &str, component: &str) -> String {
    format!(
        r#"# A policy granting {name} what it imports. Put a Maildir++ folder at
# ./Maildir (or point `maildir` elsewhere), then:
#   agentcap call {component} count-messages --args '{{"folder":"INBOX"}}' --policy agentcap.toml
user = "me"

[mail]
maildir = "Maildir"

[tools.{name}]
component = "{component}"

[[tools.{name}.grants]]
capability = "mail.list"
mode = "ask"                 # a person decides each time; "standing" pre-approves
folders = ["INBOX"]
"#
    )
}

fn readme(name: &str, lang: Lang, build: &str, component: &str) -> String {
    let language = match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python (componentize-py)",
        Lang::Js => "JavaScript (componentize-js)",
    };
    format!(
        r#"# {name}

An agentcap tool in {language}. Its contract is `wit/world.wit`, which
includes `agentcap:tools` (in `wit/deps/agentcap-tools`). Every side effect
takes a consent token: the tool asks with `request(Intent(...))` and acts
only on what the token covers (maybe a subset of what it asked).

Build and check:

```sh
{build}
agentcap inspect {component}
agentcap call {component} count-messages --args '{{"folder":"INBOX"}}' --policy agentcap.toml
```

`agentcap.toml` is a policy snippet granting exactly what the tool imports.
"#
    )
}

/// Write a new tool project `name` in `dir` (created; it must not exist or
/// be empty). `sdk` is the `agentcap-sdk` crate a Rust project depends on.
/// Returns what was written, relative to `dir`.
pub fn new_tool(
    name: &str,
    lang: Lang,
    dir: &Path,
    sdk: Option<&Path>,
) -> anyhow::Result<Vec<PathBuf>> {
    if !valid_name(name) {
        bail!(
            "tool name {} is not a WIT name: use lowercase words of letters and digits joined by '-', e.g. mail-counter",
            crate::render::one_line(name, 80)
        );
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty; nothing was written",
            dir.display()
        );
    }
    let snake = name.replace('-', "_");
    let mut files: Vec<(PathBuf, String)> = vec![("wit/world.wit".into(), world(name))];
    for (file, text) in TOOLS_WIT {
        files.push((
            Path::new("wit/deps/agentcap-tools").join(file),
            text.to_string(),
        ));
    }
    let (build, component) = match lang {
        Lang::Rust => {
            let sdk = sdk.context(
                "a Rust tool depends on agentcap-sdk by path: pass --sdk PATH/TO/agentcap/sdk",
            )?;
            let sdk = std::fs::canonicalize(sdk)
                .with_context(|| format!("agentcap-sdk at {}", sdk.display()))?;
            files.push(("Cargo.toml".into(), rust_manifest(name, &sdk)));
            files.push(("src/lib.rs".into(), rust_lib(name)));
            (
                "cargo build --release --target wasm32-wasip2".to_string(),
                format!("target/wasm32-wasip2/release/{snake}.wasm"),
            )
        }
        Lang::Python => {
            files.push(("app.py".into(), python_app(name)));
            files.push(("agentcap/__init__.py".into(), PYTHON_SDK.to_string()));
            files.push(("agentcap/py.typed".into(), String::new()));
            (
                format!(
                    "python3 -m venv .venv && .venv/bin/pip install componentize-py==0.25.1\n.venv/bin/componentize-py -d wit -w local:{name}/{name} componentize app -o {snake}.wasm"
                ),
                format!("{snake}.wasm"),
            )
        }
        Lang::Js => {
            files.push(("app.js".into(), js_app(name)));
            files.push(("agentcap.js".into(), JS_SDK.to_string()));
            files.push(("agentcap.d.ts".into(), JS_SDK_TYPES.to_string()));
            for (file, text) in JS_TYPES {
                files.push((Path::new("types").join(file), text.to_string()));
            }
            files.push(("package.json".into(), js_package(name, &snake)?));
            (
                "npm install && npm run build".to_string(),
                format!("{snake}.wasm"),
            )
        }
    };
    files.push(("agentcap.toml".into(), policy(name, &component)));
    files.push(("README.md".into(), readme(name, lang, &build, &component)));
    for (path, text) in &files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        std::fs::write(&full, text).with_context(|| format!("write {}", full.display()))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

fn rust_manifest(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
agentcap-sdk = {{ path = {sdk:?} }}
wit-bindgen = {{ version = "0.61.1", default-features = false, features = ["macros", "realloc"] }}

# Not part of any other workspace.
[workspace]
"#,
        sdk = sdk.display().to_string()
    )
}

fn rust_lib(name: &str) -> String {
    format!(
        r#"//! {name}: an agentcap tool.

wit_bindgen::generate!({{
    path: "wit",
    world: "local:{name}/{name}",
    with: {{
        "agentcap:tools/consent@0.1.0": agentcap_sdk::consent,
        "agentcap:tools/mail@0.1.0": agentcap_sdk::mail,
    }},
}});

use agentcap_sdk::{{Explain, Intent, mail, request}};

struct Tool;

impl Guest for Tool {{
    fn count_messages(folder: String) -> Result<u32, String> {{
        let token = request(Intent::new("mail.list").target(&folder).summary("count the messages"))
            .map_err(|d| d.explain())?;
        let messages = mail::list(&token, &folder).map_err(|e| e.explain())?;
        Ok(messages.len() as u32)
    }}
}}

export!(Tool);
"#
    )
}

fn python_app(name: &str) -> String {
    format!(
        r#""""{name}: an agentcap tool."""

import wit_world
from wit_world.imports import mail

from agentcap import Intent, request, tool_function


class WitWorld(wit_world.WitWorld):
    @tool_function
    def count_messages(self, folder: str) -> int:
        token = request(Intent("mail.list").target(folder).summary("count the messages"))
        return len(mail.list(token, folder))
"#
    )
}

fn js_app(name: &str) -> String {
    format!(
        r#"// {name}: an agentcap tool.

import * as mail from 'agentcap:tools/mail@0.1.0';
import {{ Intent, request, toolFunction }} from './agentcap.js';

export const countMessages = toolFunction((folder) => {{
  const token = request(new Intent('mail.list').target(folder).summary('count the messages'));
  return mail.list(token, folder).length;
}});
"#
    )
}

fn js_package(name: &str, snake: &str) -> anyhow::Result<String> {
    let pins = js_dev_dependencies()?;
    let package = serde_json::json!({
        "name": name,
        "version": "0.1.0",
        "private": true,
        "type": "module",
        "scripts": {
            "build": format!(
                "componentize-js --wit wit --world-name local:{name}/{name} -d http fetch-event -o {snake}.wasm app.js"
            ),
        },
        "devDependencies": pins["devDependencies"],
        "overrides": pins["overrides"],
    });
    Ok(serde_json::to_string_pretty(&package)? + "\n")
}

/// The `agentcap-sdk` crate next to the sources this binary was built
/// from, if it is still there.
pub fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    sdk.join("Cargo.toml").is_file().then_some(sdk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_wit_names() {
        assert!(valid_name("mail-counter"));
        assert!(valid_name("t2"));
        for bad in ["", "Mail", "a--b", "-a", "2a", "a_b", "a b", "a\u{202e}b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_project_is_refused_over_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let err = new_tool("t", Lang::Python, dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
            "mine"
        );
    }
}
