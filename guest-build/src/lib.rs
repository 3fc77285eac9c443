//! Used by build scripts to compile guest components (tool crates) for
//! `wasm32-wasip2` with a nested cargo. The nested build uses its own target
//! directory (`target/guests`), so it never waits on the outer build's lock,
//! and none of the outer build's compiler settings leak into it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Variables of the outer build that must not reach the guest build.
const OUTER_SETTINGS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_PROFILE_RELEASE_DEBUG",
];

/// Make sure the standard library for `wasm32-wasip2` is installed. The
/// toolchain file lists the target, but rustup installs listed targets only
/// when it installs the toolchain; on a machine that already had the
/// toolchain, add it now.
fn ensure_wasm_target() {
    // The target's standard library in the sysroot is what the build needs.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() {
        let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if Path::new(&sysroot)
            .join("lib/rustlib/wasm32-wasip2")
            .is_dir()
        {
            return;
        }
    }
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    let with_toolchain = |cmd: &mut Command| {
        if let Some(t) = &toolchain {
            cmd.args(["--toolchain", t]);
        }
    };
    let mut list = Command::new("rustup");
    list.args(["target", "list", "--installed"]);
    with_toolchain(&mut list);
    let Ok(installed) = list.output() else {
        return; // no rustup: the toolchain is managed some other way
    };
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        return;
    }
    let mut add = Command::new("rustup");
    add.args(["target", "add", "wasm32-wasip2"]);
    with_toolchain(&mut add);
    match add.status() {
        Ok(status) if status.success() => {
            println!("cargo:warning=installed the wasm32-wasip2 target with rustup");
        }
        _ => println!(
            "cargo:warning=the wasm32-wasip2 target is missing and rustup could not add it"
        ),
    }
}

/// Build `packages` of the workspace at `root` (release, wasm32-wasip2) and
/// return the folder holding their `.wasm` files. Also tells cargo to rerun
/// the calling build script when any of `watched` (relative to `root`)
/// changes. Panics with a clear message when the build fails.
pub fn build_guests(root: &Path, packages: &[&str], watched: &[&str]) -> PathBuf {
    for path in watched {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    ensure_wasm_target();
    let target_dir = root.join("target").join("guests");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for package in packages {
        cmd.args(["-p", package]);
    }
    for var in OUTER_SETTINGS {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build guest components");
    assert!(
        status.success(),
        "building the guest components for wasm32-wasip2 failed ({status}). \
         Is the target installed? `rustup target add wasm32-wasip2` \
         (rust-toolchain.toml asks rustup to install it)."
    );
    target_dir.join("wasm32-wasip2").join("release")
}
