//! Tools written in Python and JavaScript, built from source with the
//! toolchains their authors use: `componentize-py` (PyPI) in a virtualenv
//! under `target/lang-venv`, `componentize-js` and `jco` (npm, pinned by
//! `sdk/js/package.json`) under `target/lang-npm`. Each component is built
//! once and cached under `target/lang-guests`, keyed by a digest of its
//! sources, the SDK, the WIT and the toolchain versions; a build is written
//! to a temporary file and renamed into place, so concurrent tests and test
//! binaries never see half a component.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

/// The version of `componentize-py` the tests build Python tools with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn target() -> PathBuf {
    repo().join("target")
}

/// Run `cmd`, panicking with its output when it fails (a test that cannot
/// build its tool proves nothing).
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `componentize-py`, installed into `target/lang-venv` on first use.
pub fn componentize_py() -> PathBuf {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let venv = target().join("lang-venv");
        let tool = venv.join("bin/componentize-py");
        let works = |tool: &Path| {
            Command::new(tool).arg("--version").output().is_ok_and(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout).contains(COMPONENTIZE_PY_VERSION)
            })
        };
        if works(&tool) {
            return tool;
        }
        eprintln!(
            "installing componentize-py=={COMPONENTIZE_PY_VERSION} into {}",
            venv.display()
        );
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(venv.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            &format!("componentize-py=={COMPONENTIZE_PY_VERSION}"),
        ]));
        assert!(works(&tool), "componentize-py installed but does not run");
        tool
    })
    .clone()
}

/// The folder holding `node_modules` with `componentize-js` and `jco`, as
/// pinned by `sdk/js/package.json`, installed on first use.
pub fn js_toolchain() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target().join("lang-npm");
        let manifest =
            std::fs::read(repo().join("sdk/js/package.json")).expect("sdk/js/package.json");
        let installed = dir.join("package.json");
        let bin = dir.join("node_modules/.bin");
        if std::fs::read(&installed).ok().as_deref() == Some(&manifest[..])
            && bin.join("componentize-js").exists()
            && bin.join("jco").exists()
        {
            return dir;
        }
        std::fs::create_dir_all(&dir).expect("create target/lang-npm");
        std::fs::write(&installed, &manifest).expect("write package.json");
        eprintln!("installing componentize-js and jco into {}", dir.display());
        run(Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund"])
            .current_dir(&dir));
        dir
    })
    .clone()
}

/// A `node_modules/.bin` program of [`js_toolchain`].
pub fn npm_bin(name: &str) -> PathBuf {
    js_toolchain().join("node_modules/.bin").join(name)
}

/// One build per source folder, shared by the tests of a process.
type Builds = Mutex<HashMap<&'static str, Arc<OnceLock<PathBuf>>>>;

/// The language a tool is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// CPython, built with componentize-py.
    Python,
    /// SpiderMonkey (StarlingMonkey), built with componentize-js.
    Js,
}

/// A tool's sources: a module (`app.py` / `app.js`) in `dir`, the world in
/// `wit` (which includes `agentcap:tools`).
#[derive(Debug, Clone)]
pub struct Source {
    /// Python or JavaScript.
    pub lang: Lang,
    /// Folder of the module, relative to the repository.
    pub dir: &'static str,
    /// Folder of the tool's world, relative to the repository.
    pub wit: &'static str,
    /// `namespace:package/world`.
    pub world: &'static str,
    /// JavaScript only: keep `fetch` (imports `wasi:http`).
    pub http: bool,
}

/// The Python port of inbox-triage.
pub const PY_INBOX_TRIAGE: Source = Source {
    lang: Lang::Python,
    dir: "examples/py-inbox-triage",
    wit: "examples/inbox-triage/wit",
    world: "example:inbox-triage/inbox-triage",
    http: false,
};

/// The JavaScript port of inbox-triage.
pub const JS_INBOX_TRIAGE: Source = Source {
    lang: Lang::Js,
    dir: "examples/js-inbox-triage",
    wit: "examples/inbox-triage/wit",
    world: "example:inbox-triage/inbox-triage",
    http: false,
};

/// The hostile Python tool.
pub const PY_HOSTILE: Source = Source {
    lang: Lang::Python,
    dir: "tests/hostile-lang/py-hostile",
    wit: "tests/hostile-lang/py-hostile/wit",
    world: "hostile:py/py-hostile",
    http: false,
};

/// The hostile JavaScript tool, with `fetch` (so it imports `wasi:http`).
pub const JS_HOSTILE: Source = Source {
    lang: Lang::Js,
    dir: "tests/hostile-lang/js-hostile",
    wit: "tests/hostile-lang/js-hostile/wit",
    world: "hostile:js/js-hostile",
    http: true,
};

fn digest_tree(hasher: &mut Sha256, root: &Path) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("read {}: {e}", root.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name != "__pycache__" && name != "node_modules"
        })
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            digest_tree(hasher, &path);
        } else {
            hasher.update(
                path.strip_prefix(repo())
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .as_bytes(),
            );
            hasher.update(std::fs::read(&path).expect("read source"));
        }
    }
}

impl Source {
    /// A short name for file names: the module folder's last part.
    pub fn name(&self) -> &'static str {
        self.dir.rsplit('/').next().unwrap_or(self.dir)
    }

    fn cache_key(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(format!("{self:?} py={COMPONENTIZE_PY_VERSION}\n"));
        hasher.update(std::fs::read(repo().join("sdk/js/package.json")).unwrap_or_default());
        for dir in [self.dir, self.wit, "tools-wit/wit"] {
            digest_tree(&mut hasher, &repo().join(dir));
        }
        let sdk = match self.lang {
            Lang::Python => "sdk/python",
            Lang::Js => "sdk/js/agentcap.js",
        };
        let sdk = repo().join(sdk);
        if sdk.is_dir() {
            digest_tree(&mut hasher, &sdk);
        } else {
            hasher.update(std::fs::read(&sdk).expect("read the SDK"));
        }
        hex::encode(&hasher.finalize()[..8])
    }

    /// The built component: from the cache, or built now (once per process
    /// and source; other tests wait for it).
    pub fn component(&self) -> PathBuf {
        static BUILDS: OnceLock<Builds> = OnceLock::new();
        let cell = BUILDS
            .get_or_init(Default::default)
            .lock()
            .unwrap()
            .entry(self.dir)
            .or_default()
            .clone();
        cell.get_or_init(|| self.build()).clone()
    }

    fn build(&self) -> PathBuf {
        let out_dir = target().join("lang-guests");
        std::fs::create_dir_all(&out_dir).expect("create target/lang-guests");
        let out = out_dir.join(format!("{}-{}.wasm", self.name(), self.cache_key()));
        if out.exists() {
            return out;
        }
        let work = tempfile::tempdir_in(&out_dir).expect("temporary build folder");
        let tmp = work.path().join("component.wasm");
        let started = std::time::Instant::now();
        match self.lang {
            Lang::Python => {
                run(Command::new(componentize_py())
                    .arg("-d")
                    .arg(repo().join("tools-wit/wit"))
                    .arg("-d")
                    .arg(repo().join(self.wit))
                    .args(["-w", self.world, "componentize", "app"])
                    .arg("-p")
                    .arg(repo().join("sdk/python"))
                    .arg("-p")
                    .arg(repo().join(self.dir))
                    .arg("-o")
                    .arg(&tmp)
                    // The tool's own folders, not the caller's virtualenv.
                    .env_remove("VIRTUAL_ENV"));
            }
            Lang::Js => {
                // componentize-js reads the world and its deps from one
                // folder, and the module with its relative imports from
                // below the folder it runs in: the repository.
                let wit = work.path().join("wit");
                copy_wit(&repo().join(self.wit), &wit);
                copy_wit(
                    &repo().join("tools-wit/wit"),
                    &wit.join("deps/agentcap-tools"),
                );
                let mut cmd = Command::new(npm_bin("componentize-js"));
                cmd.arg("--wit")
                    .arg(&wit)
                    .args(["--world-name", self.world]);
                if !self.http {
                    cmd.args(["-d", "http", "fetch-event"]);
                }
                run(cmd
                    .arg("-o")
                    .arg(&tmp)
                    .arg(format!("{}/app.js", self.dir))
                    .current_dir(repo()));
            }
        }
        eprintln!(
            "built {} in {:.1} s",
            self.dir,
            started.elapsed().as_secs_f64()
        );
        std::fs::rename(&tmp, &out).expect("move the component into place");
        out
    }
}

fn copy_wit(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a WIT folder");
    for entry in std::fs::read_dir(from)
        .expect("read a WIT folder")
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "wit") {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy WIT");
        }
    }
}
