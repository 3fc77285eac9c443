//! A real PostgreSQL server for one test: `initdb` into a temporary folder,
//! the postmaster started on a free loopback port, stopped (immediate
//! shutdown) when dropped. As root, the server runs as the `postgres`
//! system user, since PostgreSQL refuses to run as root.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The superuser's password (host connections use SCRAM).
pub const ADMIN_PASSWORD: &str = "admin-secret-4711";

/// A running server.
pub struct Postgres {
    dir: tempfile::TempDir,
    child: Child,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The server's TLS and other settings (for a restart).
    tls_settings: Vec<String>,
}

/// The postmaster's command for the cluster in `dir` on `port`, logging to
/// `dir/log` (appended).
fn server_command(bin: &Path, dir: &Path, port: u16, tls_settings: &[String]) -> Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    let mut postgres = Command::new(bin.join("postgres"));
    postgres
        .arg("-D")
        .arg(dir.join("data"))
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-p",
            &port.to_string(),
            "-k",
        ])
        .arg(dir)
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "shared_buffers=16MB",
            "-c",
            "max_connections=40",
            "-c",
            "max_wal_senders=0",
            "-c",
            "wal_level=minimal",
            // Every statement, so tests can prove what ran.
            "-c",
            "log_statement=all",
            "-c",
            "log_line_prefix=@@@ %a: ",
        ])
        .args(tls_settings)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null());
    postgres
}

/// The newest installed server's `bin` folder.
pub fn server_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (apt-get install postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql")
}

/// `(uid, gid)` to run the server as: the `postgres` user when root.
fn server_user() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("the postgres system user exists")
    };
    Some((id("-u"), id("-g")))
}

/// A test CA (`ca.pem`) and a server certificate it signed for 127.0.0.1
/// (`server.pem`, `server.key`) in `dir`, made with the openssl command.
fn make_certificates(dir: &Path) {
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=agentcap test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Run blocking client code on a thread of its own: the `postgres` client
/// cannot block inside the tests' async runtime.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(work).join().expect("client thread"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Postgres {
    /// initdb and start a server; panics with the server's log on failure.
    pub fn start() -> Postgres {
        Postgres::start_with_tls(false)
    }

    /// [`Postgres::start`], with TLS on (`tls`): a test CA signs the
    /// server's certificate for 127.0.0.1; see [`Postgres::ca_file`].
    pub fn start_with_tls(tls: bool) -> Postgres {
        Postgres::start_with(tls, &[])
    }

    /// [`Postgres::start`] with durable commits (fsync, synchronous
    /// commit, full pages, no statement log), as a production server
    /// runs: for benchmarks of what the database can carry.
    pub fn start_durable() -> Postgres {
        Postgres::start_with(
            false,
            &[
                "fsync=on",
                "synchronous_commit=on",
                "full_page_writes=on",
                "log_statement=none",
            ],
        )
    }

    /// Start with TLS on or off, and `settings` (`name=value`) over the
    /// test defaults.
    fn start_with(tls: bool, settings: &[&str]) -> Postgres {
        let bin = server_bin();
        let mut dir = tempfile::Builder::new()
            .prefix("agentcap-pg")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let user = server_user();
        let run_as = |command: &mut Command| {
            if let Some((uid, gid)) = user {
                command.uid(uid).gid(gid);
            }
        };
        if let Some((uid, gid)) = user {
            rustix::fs::chown(
                dir.path(),
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .expect("chown the server's folder");
        }
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, ADMIN_PASSWORD).unwrap();
        if let Some((uid, gid)) = user {
            rustix::fs::chown(
                &pwfile,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .unwrap();
        }
        let data = dir.path().join("data");
        let mut tls_settings = Vec::new();
        if tls {
            make_certificates(dir.path());
            for file in ["server.key", "server.pem"] {
                let path = dir.path().join(file);
                if let Some((uid, gid)) = user {
                    rustix::fs::chown(
                        &path,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                    )
                    .unwrap();
                }
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .unwrap();
            }
            tls_settings = vec![
                "-c".to_string(),
                "ssl=on".to_string(),
                "-c".to_string(),
                format!("ssl_cert_file={}", dir.path().join("server.pem").display()),
                "-c".to_string(),
                format!("ssl_key_file={}", dir.path().join("server.key").display()),
            ];
        }
        for setting in settings {
            tls_settings.push("-c".to_string());
            tls_settings.push(setting.to_string());
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--locale=C.UTF-8", "-N"]);
        run_as(&mut initdb);
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for _ in 0..5 {
            let port = free_port();
            let mut postgres = server_command(&bin, dir.path(), port, &tls_settings);
            run_as(&mut postgres);
            let child = postgres.spawn().expect("start postgres");
            let mut server = Postgres {
                dir,
                child,
                port,
                tls_settings: tls_settings.clone(),
            };
            match server.wait_ready(&bin) {
                Ok(()) => return server,
                Err(log) if log.contains("already in use") => {
                    dir = server.take_dir();
                    continue;
                }
                Err(log) => panic!("postgres did not start:\n{log}"),
            }
        }
        panic!("no free port for postgres after 5 tries");
    }

    /// Stop and hand back the folder (to retry on another port).
    fn take_dir(mut self) -> tempfile::TempDir {
        self.stop();
        let dir = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    fn wait_ready(&mut self, bin: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self.log());
            }
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("not ready after 30 s\n{}", self.log()))
    }

    /// Kill the server as a crash would (immediate shutdown, no checkpoint).
    pub fn kill(&mut self) {
        self.stop();
    }

    /// Start the server again on the same port and data after [`Postgres::kill`].
    pub fn restart(&mut self) {
        let mut postgres = server_command(
            &server_bin(),
            self.dir.path(),
            self.port,
            &self.tls_settings,
        );
        if let Some((uid, gid)) = server_user() {
            postgres.uid(uid).gid(gid);
        }
        self.child = postgres.spawn().expect("start postgres again");
        if let Err(log) = self.wait_ready(&server_bin()) {
            panic!("postgres did not start again:\n{log}");
        }
    }

    /// `pg_dump` of `dbname` (schema and data), to compare before and after.
    pub fn dump(&self, dbname: &str) -> String {
        let mut dump = Command::new(server_bin().join("pg_dump"));
        dump.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            dbname,
        ])
        .env("PGPASSWORD", ADMIN_PASSWORD);
        let out = dump.output().expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `\restrict` lines carry a random key per run.
        String::from_utf8(out.stdout)
            .expect("a UTF-8 dump")
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The PEM file of the CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The statements the server ran for agentcap's client (application
    /// name `agentcap`): extended protocol `execute` and simple `statement`
    /// entries of its log, each with its continuation lines.
    pub fn agentcap_statements(&self) -> Vec<String> {
        self.log()
            .split("@@@ ")
            .filter_map(|entry| {
                let entry = entry.strip_prefix("agentcap: ")?;
                entry
                    .strip_prefix("LOG:  execute ")
                    .or_else(|| entry.strip_prefix("LOG:  statement: "))
                    .map(str::to_string)
            })
            .collect()
    }

    /// Run `sql` (one or more statements) as the superuser in `dbname`.
    pub fn execute(&self, dbname: &str, sql: &str) {
        off_runtime(|| {
            self.connect(dbname, "postgres", ADMIN_PASSWORD)
                .and_then(|mut c| c.batch_execute(sql))
                .unwrap_or_else(|e| {
                    panic!("{sql}: {e}: {:?}", e.as_db_error().map(|d| d.message()))
                })
        })
    }

    /// The first column of the first row of `sql` (an integer), as the
    /// superuser in `dbname`.
    pub fn value(&self, dbname: &str, sql: &str) -> i64 {
        off_runtime(|| {
            self.connect(dbname, "postgres", ADMIN_PASSWORD)
                .and_then(|mut c| c.query_one(sql, &[]))
                .and_then(|row| row.try_get(0))
                .unwrap_or_else(|e| {
                    panic!("{sql}: {e}: {:?}", e.as_db_error().map(|d| d.message()))
                })
        })
    }

    /// A connection as `user` (a blocking client: not from async code;
    /// see [`Postgres::execute`]).
    pub fn connect(
        &self,
        dbname: &str,
        user: &str,
        password: &str,
    ) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .dbname(dbname)
            .user(user)
            .password(password)
            .connect(postgres::NoTls)
    }

    fn stop(&mut self) {
        // SIGQUIT: immediate shutdown of the postmaster and its children.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::QUIT,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
