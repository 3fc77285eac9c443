//! Builds every guest component the tests use (examples, test guests and
//! hostile tools) and tells the tests where they are (`AGENTCAP_GUESTS_DIR`).

use std::path::PathBuf;

const GUESTS: &[&str] = &[
    "inbox-triage",
    "forum-reply",
    "echo-types",
    "mail-sweeper",
    "hostile-mail",
    "hostile-imports",
    "hostile-forum",
    "hostile-resources",
    "hostile-network",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let built = agentcap_guest_build::build_guests(
        root,
        GUESTS,
        &[
            "examples",
            "sdk",
            "tools-wit",
            "tests/hostile",
            "tests/guests",
        ],
    );
    println!("cargo:rustc-env=AGENTCAP_GUESTS_DIR={}", built.display());
}
