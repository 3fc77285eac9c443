//! Builds every guest component the tests use (examples and hostile tools)
//! for wasm32-wasip2, in a separate target directory, and tells the tests
//! where they are (`AGENTCAP_GUESTS_DIR`).

use std::path::PathBuf;
use std::process::Command;

const GUESTS: &[&str] = &[
    "inbox-triage",
    "echo-types",
    "mail-sweeper",
    "hostile-mail",
    "hostile-imports",
    "hostile-forum",
    "forum-reply",
    "hostile-resources",
];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    for watched in [
        "examples",
        "sdk",
        "tools-wit",
        "tests/hostile",
        "tests/guests",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = root.join("target").join("guests");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for guest in GUESTS {
        cmd.args(["-p", guest]);
    }
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build guest components");
    assert!(
        status.success(),
        "building the guest components for wasm32-wasip2 failed ({status}); \
         is the target installed? `rustup target add wasm32-wasip2`"
    );
    println!(
        "cargo:rustc-env=AGENTCAP_GUESTS_DIR={}",
        target_dir.join("wasm32-wasip2").join("release").display()
    );
}
