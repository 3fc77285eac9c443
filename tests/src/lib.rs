//! Helpers shared by the integration tests: where the guest components are,
//! a fresh copy of the fixture Maildir, a snapshot of a folder tree, a
//! runtime under a given policy, a real Dovecot IMAP server
//! ([`dovecot`]), and tools built from Python and JavaScript ([`lang`]).

pub mod fleet;
pub mod lang;
pub mod pg_server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentcap::consent::SharedApprover;
use agentcap::{AgentEngine, Policy, Runtime};
use sha2::{Digest, Sha256};

pub mod dovecot;

/// The compiled guest component `stem` (e.g. `hostile_mail`).
pub fn guest(stem: &str) -> PathBuf {
    Path::new(env!("AGENTCAP_GUESTS_DIR")).join(format!("{stem}.wasm"))
}

/// The fixture Maildir shipped with the inbox-triage example.
pub fn fixture_maildir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/inbox-triage/fixtures/Maildir")
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A temporary workspace holding a fresh copy of the fixture mailbox at
/// `<workspace>/Maildir`.
pub struct Workspace {
    /// The folder (deleted on drop).
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// Copy the fixture Maildir into a new temporary folder.
    pub fn new() -> Workspace {
        Workspace::new_in(&std::env::temp_dir())
    }

    /// [`Workspace::new`] under `parent` (e.g. a tmpfs, to take the disk
    /// out of a measurement).
    pub fn new_in(parent: &Path) -> Workspace {
        let dir = tempfile::tempdir_in(parent).expect("temp dir");
        copy_tree(&fixture_maildir(), &dir.path().join("Maildir")).expect("copy fixture");
        Workspace { dir }
    }

    /// The Maildir root.
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("Maildir")
    }

    /// Write `policy` (TOML) next to the Maildir and load it. Use
    /// `maildir = "Maildir"` to point at this workspace's mailbox. Unless the
    /// policy says otherwise, the journal is `<workspace>/journal.sqlite`.
    pub fn policy(&self, policy: &str) -> Policy {
        let path = self.dir.path().join("agentcap.toml");
        let mut policy = policy.to_string();
        if !policy.contains("[journal]") {
            policy.push_str("\n[journal]\npath = \"journal.sqlite\"\n");
        }
        std::fs::write(&path, policy).expect("write policy");
        Policy::load(&path).expect("valid policy")
    }

    /// A runtime over this workspace's mailbox.
    pub fn runtime(&self, policy: &str, approver: SharedApprover) -> Runtime {
        let engine = AgentEngine::new(None).expect("engine");
        Runtime::new(engine, self.policy(policy), approver).expect("runtime")
    }

    /// A runtime under `policy` with the guest component `stem` loaded as the
    /// policy's tool `tool`.
    pub fn load_guest(
        &self,
        policy: &str,
        approver: SharedApprover,
        tool: &str,
        stem: &str,
    ) -> (Runtime, agentcap::LoadedTool) {
        let runtime = self.runtime(policy, approver);
        let grants = runtime.policy().tools[tool].clone();
        let bytes = std::fs::read(guest(stem)).expect("guest component");
        let loaded = runtime
            .load_component(tool, grants, &bytes)
            .expect("load guest");
        (runtime, loaded)
    }

    /// Every file below the Maildir with a digest of its content.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        snapshot(&self.maildir())
    }

    /// The unique names of the fixture messages in a folder's files.
    pub fn ids_in(&self, folder: &str) -> Vec<String> {
        let store = agentcap::capability::mail::Maildir::open(&self.maildir()).expect("maildir");
        store
            .list(folder)
            .map(|l| l.into_iter().map(|m| m.id).collect())
            .unwrap_or_default()
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace::new()
    }
}

/// Relative path -> SHA-256 of every file below `root`.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, hex::encode(Sha256::digest(&bytes)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// An approver shared as the runtime wants it.
pub fn shared<A: agentcap::consent::Approver + 'static>(approver: A) -> SharedApprover {
    Arc::new(approver)
}

/// An approver that never answers: a request stays pending until a timeout
/// or a stop ends it.
pub struct Silent;

impl agentcap::consent::Approver for Silent {
    fn channel(&self) -> &str {
        "silent"
    }

    fn decide<'a>(
        &'a self,
        _prompt: &'a agentcap::consent::ConsentPrompt,
    ) -> agentcap::consent::DecisionFuture<'a> {
        Box::pin(std::future::pending())
    }
}

/// A small xorshift generator for randomized tests. The seed comes from
/// `env_var` when set, else from the clock, and is printed so that a failing
/// run can be repeated.
pub struct Rng {
    state: u64,
    /// The seed this generator started from.
    pub seed: u64,
}

impl Rng {
    /// A generator seeded from `$env_var` or the clock.
    pub fn from_env(env_var: &str) -> Rng {
        let seed = std::env::var(env_var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        eprintln!("random seed: {seed} (set {env_var} to repeat)");
        Rng { state: seed, seed }
    }

    /// A number below `below`.
    pub fn below(&mut self, below: u64) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % below
    }
}

/// Write `results` as `target/bench-results/<name>.json` for
/// `scripts/bench-report`.
pub fn write_bench_results(name: &str, results: &serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
    std::fs::create_dir_all(&dir).expect("create target/bench-results");
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(results).expect("JSON"),
    )
    .expect("write bench results");
}

/// The version of the Python MCP SDK the MCP tests drive agentcap with.
pub const PYTHON_MCP_VERSION: &str = "2.3.0";

/// A Python interpreter that can `import mcp` (the official MCP SDK), for
/// tests that drive `agentcap serve` with a client not written by us.
///
/// Uses `$AGENTCAP_TEST_PYTHON` if set, else a virtualenv under `target/`
/// that it creates (`pip install mcp==PYTHON_MCP_VERSION`) on first use.
/// Tests that call it are ignored by `cfg(agentcap_has_python)` when
/// `python3` is missing (see `build.rs`); a failed install panics with pip's
/// output, since then the test could not prove anything.
pub fn python_with_mcp() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Ok(python) = std::env::var("AGENTCAP_TEST_PYTHON") {
                return PathBuf::from(python);
            }
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/mcp-venv");
            let python = venv.join("bin/python");
            let has_mcp = |python: &Path| {
                std::process::Command::new(python)
                    .args(["-c", "import mcp, mcp_types"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            if has_mcp(&python) {
                return python;
            }
            eprintln!(
                "installing the Python MCP SDK (mcp=={PYTHON_MCP_VERSION}) into {}",
                venv.display()
            );
            let run = |program: &Path, args: &[&str]| {
                let out = std::process::Command::new(program)
                    .args(args)
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
                assert!(
                    out.status.success(),
                    "{} {args:?} failed:\n{}{}",
                    program.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run(
                Path::new("python3"),
                &["-m", "venv", venv.to_str().expect("utf-8 path")],
            );
            run(
                &python,
                &[
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    &format!("mcp=={PYTHON_MCP_VERSION}"),
                ],
            );
            assert!(has_mcp(&python), "mcp installed but cannot be imported");
            python
        })
        .clone()
}

/// One HTTP/1.1 request over a plain TCP connection, so that tests control
/// every header (Host, Origin, Cookie) exactly; the status code and as much
/// of the response as arrives before `Connection: close` or a 2 s pause.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    http_request_within(addr, method, path, headers, body, 2)
}

/// [`http_request`], waiting up to `seconds` for each read of the answer.
pub fn http_request_within(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    seconds: u64,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(seconds)))
        .unwrap();
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    (status, text)
}

/// Node and Chromium for browser tests, with `playwright-core` installed
/// under `target/web-e2e` on first use: `(node, chromium, node_modules
/// parent)`. Tests that call it are ignored by `cfg(agentcap_has_browser)`
/// when these programs are missing (see `build.rs`), so here they are there.
pub fn browser_tools() -> (PathBuf, PathBuf, PathBuf) {
    static TOOLS: std::sync::OnceLock<(PathBuf, PathBuf, PathBuf)> = std::sync::OnceLock::new();
    TOOLS
        .get_or_init(|| {
            let node = which("node").expect("node is on PATH (checked by build.rs)");
            let chromium = std::env::var_os("AGENTCAP_TEST_CHROMIUM")
                .map(PathBuf::from)
                .or_else(|| which("chromium"))
                .expect("chromium is on PATH (checked by build.rs)");
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web-e2e");
            if !dir.join("node_modules/playwright-core").is_dir() {
                std::fs::create_dir_all(&dir).expect("create target/web-e2e");
                eprintln!("installing playwright-core into {}", dir.display());
                let out = std::process::Command::new("npm")
                    .args([
                        "install",
                        "--silent",
                        "--no-audit",
                        "--no-fund",
                        "playwright-core@1.65.1",
                    ])
                    .current_dir(&dir)
                    .output()
                    .expect("run npm");
                assert!(
                    out.status.success(),
                    "npm install playwright-core failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            (node, chromium, dir)
        })
        .clone()
}

/// The first `program` on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `policy` with the operator's opt-in that an MCP client's form may approve
/// `mail.delete` too (by default only the page and the terminal may).
pub fn form_trusted(policy: &str) -> String {
    let grant = "capability = \"mail.delete\"\nmode = \"ask\"\n";
    assert!(
        policy.contains(grant),
        "no mail.delete ask grant in {policy}"
    );
    policy.replace(
        grant,
        &format!("{grant}approve_via = [\"terminal\", \"page\", \"mcp-form\"]\n"),
    )
}

/// A policy for this workspace serving `inbox-triage`: listing INBOX is a
/// standing grant, archiving and deleting ask every time. `extra` (TOML)
/// is appended, e.g. more tools.
pub fn triage_policy(extra: &str) -> String {
    format!(
        r#"
user = "alice"
consent_timeout_secs = 60

[mail]
maildir = "Maildir"

[tools.inbox-triage]
component = "{triage}"

[[tools.inbox-triage.grants]]
capability = "mail.list"
mode = "standing"
folders = ["INBOX"]

[[tools.inbox-triage.grants]]
capability = "mail.archive"
mode = "ask"
folders = ["INBOX"]

[[tools.inbox-triage.grants]]
capability = "mail.delete"
mode = "ask"
folders = ["INBOX"]
{extra}"#,
        triage = guest("inbox_triage").display(),
    )
}

/// The approvals page's login link kept in `control_dir` by a running
/// agentcap (what `agentcap approvals` prints), waiting up to 60 s for it.
pub fn login_link(control_dir: &Path) -> String {
    for _ in 0..600 {
        if let Some((_, url)) = agentcap::approvals::LoginLink::find(control_dir)
            .unwrap_or_default()
            .into_iter()
            .next()
        {
            return url;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no login link appeared in {}", control_dir.display());
}

/// The secret of a login link (`...#key=SECRET`).
pub fn link_key(url: &str) -> &str {
    url.split("#key=").nth(1).expect("a key in the login link")
}

/// A logged-in page user without a browser: the secret from the login
/// link, sent in the header the page's own script sends.
pub struct PageUser {
    /// `host:port` of the page.
    pub addr: String,
    /// The secret.
    pub key: String,
}

impl PageUser {
    /// Open the page from its login link.
    pub fn open(url: &str) -> PageUser {
        let addr = url["http://".len()..]
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let key = link_key(url).to_string();
        let (status, page) = http_request(&addr, "GET", "/", &[], "");
        assert_eq!(status, 200, "{page}");
        assert!(
            !page.to_ascii_lowercase().contains("set-cookie"),
            "the page sets no cookie: {page}"
        );
        PageUser { addr, key }
    }

    /// The first pending request, waiting up to 10 s for one.
    pub fn next_pending(&self) -> serde_json::Value {
        self.pending_where("", |_| true)
    }

    /// The first pending request whose action starts with `action`,
    /// waiting up to 10 s for one (others may come and go meanwhile).
    pub fn next_pending_action(&self, action: &str) -> serde_json::Value {
        self.pending_where(action, |r| {
            r["action"].as_str().is_some_and(|a| a.starts_with(action))
        })
    }

    /// The first pending request `wanted` accepts, waiting up to 10 s for
    /// one (`what` names it in the failure).
    pub fn pending_where(
        &self,
        what: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        for _ in 0..200 {
            let (_, response) = http_request(
                &self.addr,
                "GET",
                "/api/state",
                &[(agentcap::approvals::KEY_HEADER, &self.key)],
                "",
            );
            let state: serde_json::Value =
                serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            if let Some(found) = state["pending"]
                .as_array()
                .and_then(|p| p.iter().find(|r| wanted(r)))
            {
                return found.clone();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("no request {what} appeared on the page");
    }

    /// Answer a request (`{"id", "approve": [...]}` or `{"id", "decline": true}`).
    /// A request of another fleet host is answered once that host
    /// confirms (up to 5 s).
    pub fn decide(&self, answer: serde_json::Value) -> (u16, String) {
        let origin = format!("http://{}", self.addr);
        http_request_within(
            &self.addr,
            "POST",
            "/api/decide",
            &[
                (agentcap::approvals::KEY_HEADER, &self.key),
                ("Origin", &origin),
                ("Content-Type", "application/json"),
            ],
            &answer.to_string(),
            10,
        )
    }
}

/// Call `function` of `tool` in session `s`: the tool's own `ok` value or
/// its `err` text (a runtime error panics, naming the function).
pub async fn call_tool(
    runtime: &agentcap::Runtime,
    tool: &agentcap::LoadedTool,
    function: &str,
    args: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let outcome = runtime
        .call(tool, &agentcap::SessionId("s".into()), function, args)
        .await
        .unwrap_or_else(|e| panic!("{function}: {e}"));
    match outcome.result.get("ok") {
        Some(v) => Ok(v.clone()),
        None => Err(outcome.result["err"]
            .as_str()
            .unwrap_or_default()
            .to_string()),
    }
}

/// Journal records that refused something: a refused call, or a consent
/// request that was not approved.
pub fn refusal_records(runtime: &agentcap::Runtime) -> Vec<agentcap::journal::Record> {
    runtime
        .journal()
        .all()
        .expect("journal")
        .into_iter()
        .filter(|r| {
            r.kind == "refusal"
                || (r.kind == "decision"
                    && !r.outcome.as_deref().unwrap_or("").starts_with("approved"))
        })
        .collect()
}

/// A policy for the hostile data guest (`hostile_forum`, tool `hostile`):
/// the mail and forum grants it imports, `[data]` with the lines `data`,
/// and one `data.query` grant with the lines `grant`.
pub fn hostile_data_policy(data: &str, grant: &str) -> String {
    format!(
        r#"
user = "alice"
[mail]
maildir = "Maildir"
[forum]
database = "forum.sqlite"
[data]
{data}
[tools.hostile]
component = "x.wasm"
[[tools.hostile.grants]]
capability = "mail.list"
mode = "standing"
[[tools.hostile.grants]]
capability = "forum.post"
mode = "ask"
threads = [1]
[[tools.hostile.grants]]
capability = "data.query"
{grant}
"#
    )
}

/// Load the hostile data guest in `ws` under `policy` (from
/// [`hostile_data_policy`]), with an empty forum.
pub fn load_hostile_data(
    ws: &Workspace,
    policy: &str,
    approver: Arc<agentcap::consent::ScriptedApprover>,
) -> (Runtime, agentcap::LoadedTool) {
    agentcap::capability::forum::SqliteForum::open(&ws.dir.path().join("forum.sqlite"))
        .expect("forum database");
    ws.load_guest(policy, approver, "hostile", "hostile_forum")
}
