//! A real Dovecot IMAP server for tests: a configuration in a short
//! temporary folder under /tmp (Dovecot's unix sockets live there and their
//! paths are limited to ~108 bytes), free loopback ports for IMAP and IMAPS
//! (a certificate from a test CA made with `openssl`), one user, started with
//! `dovecot -F` and ready once the greeting arrives; stopped with SIGTERM
//! (which ends Dovecot's children too) on drop. [`ImapClient`] is the
//! tests' own minimal IMAP client, independent of the code under test, to
//! seed mail and check the server's state.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The mail user (and group) Dovecot runs mail processes as when the tests
/// run as root: Dovecot refuses mail access as root.
const MAIL_ID: u32 = 65534;

/// A running Dovecot with one user.
pub struct Dovecot {
    dir: tempfile::TempDir,
    child: Child,
    /// The plain IMAP port (STARTTLS offered).
    pub port: u16,
    /// The IMAPS port (TLS from the first byte).
    pub tls_port: u16,
    /// The login name.
    pub user: String,
    /// The password.
    pub password: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chown_tree(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", &format!("{MAIL_ID}:{MAIL_ID}")])
        .arg(path)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown {}", path.display());
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Make a certificate authority at `<dir>/<stem>.pem` (key
/// `<dir>/<stem>.key`); returns the certificate's path.
pub fn make_ca(dir: &Path, stem: &str) -> PathBuf {
    let (cert, key) = (format!("{stem}.pem"), format!("{stem}.key"));
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=agentcap test CA {stem}"),
            "-keyout",
            &key,
            "-out",
            &cert,
        ],
        dir,
    );
    dir.join(cert)
}

/// Make the server's certificate for `localhost` and 127.0.0.1
/// (`<dir>/cert.pem`, key `<dir>/cert.key`), signed by the CA `ca`.
fn make_server_cert(dir: &Path, ca: &str) {
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "cert.key",
            "-out",
            "cert.csr",
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "cert.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "cert.pem",
        ],
        dir,
    );
}

impl Dovecot {
    /// Start a server with the default configuration.
    pub fn start() -> Dovecot {
        Dovecot::start_with("")
    }

    /// Start a server with `extra` appended to its configuration (say an
    /// `imap_capability` that hides MOVE).
    pub fn start_with(extra: &str) -> Dovecot {
        let dir = tempfile::Builder::new()
            .prefix("dc")
            .tempdir_in("/tmp")
            .expect("temp dir under /tmp");
        let d = dir.path().to_path_buf();
        {
            use std::os::unix::fs::PermissionsExt;
            // Dovecot's auth and mail processes run as other users.
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let (port, tls_port) = (free_port(), free_port());
        let user = "alice".to_string();
        let password = format!("pw-{}-{}", std::process::id(), port);
        std::fs::write(
            d.join("users"),
            format!("{user}:{{PLAIN}}{password}::::::\n"),
        )
        .unwrap();
        make_ca(&d, "ca");
        make_server_cert(&d, "ca");
        let root = is_root();
        let maildir = d.join("mail").join(&user).join("Maildir");
        for sub in ["", ".Archive", ".Trash"] {
            for x in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(maildir.join(sub).join(x)).unwrap();
            }
        }
        let who = if root {
            chown_tree(&d.join("mail"));
            format!("mail_uid = {MAIL_ID}\nmail_gid = {MAIL_ID}\n")
        } else {
            let name = |flag: &str| {
                let out = Command::new("id").arg(flag).output().expect("id");
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            };
            format!(
                "default_internal_user = {u}\ndefault_internal_group = {g}\ndefault_login_user = {u}\nservice anvil {{\n  chroot =\n}}\n",
                u = name("-un"),
                g = name("-gn")
            )
        };
        let login_chroot = if root { "" } else { "  chroot =\n" };
        let d_s = d.display();
        let config = format!(
            r#"base_dir = {d_s}/run
state_dir = {d_s}/state
log_path = {d_s}/dovecot.log
protocols = imap
listen = 127.0.0.1
{who}
ssl = required
ssl_cert = <{d_s}/cert.pem
ssl_key = <{d_s}/cert.key
disable_plaintext_auth = no
auth_mechanisms = plain login

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {d_s}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {d_s}/users
  default_fields = home={d_s}/mail/%n
}}
mail_location = maildir:~/Maildir

namespace inbox {{
  inbox = yes
  separator = /
  mailbox Archive {{
    auto = subscribe
    special_use = \Archive
  }}
  mailbox Trash {{
    auto = subscribe
    special_use = \Trash
  }}
}}

service imap-login {{
{login_chroot}  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
{extra}
"#
        );
        std::fs::write(d.join("dovecot.conf"), config).unwrap();
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(d.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dovecot (apt-get install dovecot-imapd)");
        let mut server = Dovecot {
            dir,
            child,
            port,
            tls_port,
            user,
            password,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dovecot exited early ({status}):\n{}", self.log());
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 64];
                if s.read(&mut buf)
                    .is_ok_and(|n| buf[..n].starts_with(b"* OK"))
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("dovecot not ready after 20 s:\n{}", self.log());
    }

    /// The server's folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The user's Maildir on disk.
    pub fn maildir(&self) -> PathBuf {
        self.dir().join("mail").join(&self.user).join("Maildir")
    }

    /// The CA that signed the server's certificate (for `ca_file`).
    pub fn cert(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    /// A file holding the password, for `password_file`.
    pub fn password_file(&self) -> PathBuf {
        let path = self.dir().join("password");
        std::fs::write(&path, format!("{}\n", self.password)).unwrap();
        path
    }

    /// Dovecot's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("dovecot.log")).unwrap_or_default()
    }

    /// The `[mail]` table for a plain connection on loopback.
    pub fn mail_table(&self) -> String {
        format!(
            "[mail]\nimap = {{ host = \"127.0.0.1\", port = {}, tls = \"none\", user = \"{}\", password_file = \"{}\", command_timeout_secs = 10 }}\n",
            self.port,
            self.user,
            self.password_file().display()
        )
    }

    /// A logged-in client of the tests' own.
    pub fn client(&self) -> ImapClient {
        ImapClient::login(self.port, &self.user, &self.password)
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal synchronous IMAP client over plain TCP: commands, literals,
/// nothing more.
pub struct ImapClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_tag: u32,
}

impl ImapClient {
    /// Connect to 127.0.0.1:`port` and log in.
    pub fn login(port: u16, user: &str, password: &str) -> ImapClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to dovecot");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut client = ImapClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            next_tag: 1,
        };
        let mut greeting = String::new();
        client.reader.read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        client.ok(&format!("LOGIN \"{user}\" \"{password}\""));
        client
    }

    /// Run a command; `Ok(answer)` when it ends OK, else `Err(answer)`
    /// (all lines, literals inline).
    pub fn run(&mut self, command: &str) -> Result<String, String> {
        self.run_with(command, None)
    }

    /// Run a command, panicking unless it ends OK.
    pub fn ok(&mut self, command: &str) -> String {
        self.run(command)
            .unwrap_or_else(|e| panic!("{command}: {e}"))
    }

    fn run_with(&mut self, command: &str, literal: Option<&[u8]>) -> Result<String, String> {
        let tag = format!("T{}", self.next_tag);
        self.next_tag += 1;
        match literal {
            None => write!(self.writer, "{tag} {command}\r\n").unwrap(),
            Some(data) => {
                write!(self.writer, "{tag} {command} {{{}}}\r\n", data.len()).unwrap();
                let mut line = String::new();
                self.reader.read_line(&mut line).unwrap();
                assert!(line.starts_with('+'), "no continuation: {line}");
                self.writer.write_all(data).unwrap();
                self.writer.write_all(b"\r\n").unwrap();
            }
        }
        let mut answer = String::new();
        loop {
            let mut line = Vec::new();
            self.reader.read_until(b'\n', &mut line).unwrap();
            assert!(!line.is_empty(), "dovecot closed the connection");
            let text = String::from_utf8_lossy(&line).into_owned();
            answer.push_str(&text);
            // A literal follows `{N}\r\n`.
            if let Some(n) = text
                .trim_end()
                .strip_suffix('}')
                .and_then(|t| t.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok())
            {
                let mut data = vec![0u8; n];
                self.reader.read_exact(&mut data).unwrap();
                answer.push_str(&String::from_utf8_lossy(&data));
                continue;
            }
            if let Some(rest) = text.strip_prefix(&format!("{tag} ")) {
                return if rest.starts_with("OK") {
                    Ok(answer)
                } else {
                    Err(answer)
                };
            }
        }
    }

    /// APPEND `message` to `folder` with `flags` (say `\Seen`); its UID.
    pub fn append(&mut self, folder: &str, flags: &str, message: &[u8]) -> u32 {
        let answer = self
            .run_with(&format!("APPEND \"{folder}\" ({flags})"), Some(message))
            .unwrap_or_else(|e| panic!("APPEND: {e}"));
        let after = answer.split("APPENDUID ").nth(1).expect("APPENDUID");
        after
            .split([' ', ']'])
            .nth(1)
            .and_then(|u| u.parse().ok())
            .expect("a UID in APPENDUID")
    }

    /// UIDVALIDITY of `folder`.
    pub fn uid_validity(&mut self, folder: &str) -> u32 {
        let answer = self.ok(&format!("STATUS \"{folder}\" (UIDVALIDITY)"));
        answer
            .split("UIDVALIDITY ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
            .expect("UIDVALIDITY")
    }

    /// The UIDs in `folder` (EXAMINE, so nothing changes).
    pub fn uids(&mut self, folder: &str) -> Vec<u32> {
        self.ok(&format!("EXAMINE \"{folder}\""));
        let answer = self.ok("UID SEARCH ALL");
        let mut uids: Vec<u32> = answer
            .lines()
            .find(|l| l.starts_with("* SEARCH"))
            .unwrap_or("")
            .split_whitespace()
            .skip(2)
            .filter_map(|u| u.parse().ok())
            .collect();
        uids.sort_unstable();
        uids
    }

    /// The FLAGS of message `uid` in `folder`.
    pub fn flags(&mut self, folder: &str, uid: u32) -> String {
        self.ok(&format!("EXAMINE \"{folder}\""));
        let answer = self.ok(&format!("UID FETCH {uid} (FLAGS)"));
        answer
            .split("FLAGS (")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .unwrap_or_else(|| panic!("no message {uid} in {folder}: {answer}"))
            .to_string()
    }
}

impl Drop for ImapClient {
    fn drop(&mut self) {
        let _ = self.writer.write_all(b"Z LOGOUT\r\n");
    }
}
