//! Builds the example tool components for `wasm32-wasip2` so that
//! `agentcap demo` can embed them. Uses a separate target directory so the
//! nested cargo never waits on the outer build's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Example tools embedded in the binary (package name, file stem).
const EMBEDDED: &[(&str, &str)] = &[
    ("inbox-triage", "inbox_triage"),
    ("forum-reply", "forum_reply"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for watched in ["examples", "sdk", "tools-wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let packages: Vec<&str> = EMBEDDED.iter().map(|(p, _)| *p).collect();
    let built = build_guests(&root, &packages);
    for (_, stem) in EMBEDDED {
        let from = built.join(format!("{stem}.wasm"));
        let to = out_dir.join(format!("{stem}.wasm"));
        std::fs::copy(&from, &to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    }
}

/// Build `packages` for wasm32-wasip2 (release) and return the folder with
/// the `.wasm` files.
fn build_guests(root: &Path, packages: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = root.join("target").join("guests");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    // Settings of the outer build must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build guest components");
    if !status.success() {
        panic!(
            "building the guest components for wasm32-wasip2 failed ({status}). \
             Is the target installed? `rustup target add wasm32-wasip2` \
             (rust-toolchain.toml asks rustup to install it)."
        );
    }
    target_dir.join("wasm32-wasip2").join("release")
}
