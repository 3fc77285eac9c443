//! Builds the example tool components for `wasm32-wasip2` so that
//! `agentcap demo` can embed them.

use std::path::PathBuf;

/// Example tools embedded in the binary (package name, file stem).
const EMBEDDED: &[(&str, &str)] = &[
    ("inbox-triage", "inbox_triage"),
    ("forum-reply", "forum_reply"),
    ("notes-tidy", "notes_tidy"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let packages: Vec<&str> = EMBEDDED.iter().map(|(p, _)| *p).collect();
    let built =
        agentcap_guest_build::build_guests(root, &packages, &["examples", "sdk", "tools-wit"]);
    for (_, stem) in EMBEDDED {
        let from = built.join(format!("{stem}.wasm"));
        let to = out_dir.join(format!("{stem}.wasm"));
        std::fs::copy(&from, &to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    }
}
