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
    "hostile-files",
    "hostile-http",
    "issue-triage",
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
    detect_outside_programs();
}

/// A group of tests that needs programs from outside the Rust toolchain.
struct Needs {
    /// The `cfg` set when everything is there (tests use
    /// `#[cfg_attr(not(CFG), ignore = "...")]`).
    cfg: &'static str,
    /// Each program, and the check that it works.
    programs: &'static [(&'static str, &'static [&'static str])],
    /// How to install what is missing.
    install: &'static str,
}

const OUTSIDE_PROGRAMS: &[Needs] = &[
    Needs {
        cfg: "agentcap_has_browser",
        programs: &[
            ("node", &["--version"]),
            ("npm", &["--version"]),
            ("chromium", &["--version"]),
        ],
        install: "apt-get install chromium nodejs npm",
    },
    Needs {
        cfg: "agentcap_has_node",
        programs: &[("node", &["--version"]), ("npm", &["--version"])],
        install: "apt-get install nodejs npm",
    },
    Needs {
        cfg: "agentcap_has_python",
        programs: &[("python3", &["-c", "import venv, ensurepip"])],
        install: "apt-get install python3 python3-venv",
    },
    Needs {
        cfg: "agentcap_has_dovecot",
        programs: &[("dovecot", &["--version"])],
        install: "apt-get install dovecot-imapd",
    },
    Needs {
        cfg: "agentcap_has_postgres",
        programs: &[(
            "sh",
            &["-c", "ls /usr/lib/postgresql/*/bin/initdb >/dev/null"],
        )],
        install: "apt-get install postgresql",
    },
];

/// Decide, once per build, which test groups can run. Missing programs make
/// their tests show as ignored (with the reason) in the summary, never as
/// passed; under `CI=true` a missing program fails the build instead.
fn detect_outside_programs() {
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=CI");
    // Installing a program changes its directory: rerun then.
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path).filter(|d| d.is_dir()) {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    for needs in OUTSIDE_PROGRAMS {
        println!("cargo::rustc-check-cfg=cfg({})", needs.cfg);
        let missing: Vec<&str> = needs
            .programs
            .iter()
            .filter(|(program, check)| {
                !std::process::Command::new(program)
                    .args(*check)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .map(|(program, _)| *program)
            .collect();
        if missing.is_empty() {
            println!("cargo:rustc-cfg={}", needs.cfg);
        } else if in_ci {
            panic!(
                "CI=true and {} missing, so tests would be skipped: {}",
                missing.join(", "),
                needs.install
            );
        } else {
            println!(
                "cargo:warning=tests needing {} will show as ignored: {}",
                missing.join(", "),
                needs.install
            );
        }
    }
}
