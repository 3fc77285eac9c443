//! A real Dovecot IMAP server for tests: [`agentcap::local_dovecot`] (the
//! one `agentcap demo --imap` starts) with a certificate from a test CA
//! made with `openssl`, so IMAPS and STARTTLS are offered too.
//! [`ImapClient`] is the tests' own minimal IMAP client, independent of the
//! code under test, to seed mail and check the server's state.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agentcap::local_dovecot::{DovecotSetup, LocalDovecot};

/// A running Dovecot with one user, and its test CA.
pub struct Dovecot {
    server: LocalDovecot,
    certs: tempfile::TempDir,
    /// The plain IMAP port (STARTTLS offered).
    pub port: u16,
    /// The IMAPS port (TLS from the first byte).
    pub tls_port: u16,
    /// The login name.
    pub user: String,
    /// The password.
    pub password: String,
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
        let certs = tempfile::Builder::new()
            .prefix("dc-ca")
            .tempdir_in("/tmp")
            .expect("temp dir under /tmp");
        {
            use std::os::unix::fs::PermissionsExt;
            // Dovecot reads the certificate as its own users.
            std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        make_ca(certs.path(), "ca");
        make_server_cert(certs.path(), "ca");
        let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("cert.key"));
        let server = LocalDovecot::start(DovecotSetup {
            maildir: None,
            tls: Some((&cert, &key)),
            extra,
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        Dovecot {
            port: server.port,
            tls_port: server.tls_port.expect("an IMAPS port"),
            user: server.user.clone(),
            password: server.password().to_string(),
            server,
            certs,
        }
    }

    /// The server's folder.
    pub fn dir(&self) -> &Path {
        self.server.dir()
    }

    /// The user's Maildir on disk.
    pub fn maildir(&self) -> PathBuf {
        self.server.maildir()
    }

    /// The CA that signed the server's certificate (for `ca_file`).
    pub fn cert(&self) -> PathBuf {
        self.certs.path().join("ca.pem")
    }

    /// A file holding the password, for `password_file`.
    pub fn password_file(&self) -> PathBuf {
        let path = self.certs.path().join("password");
        std::fs::write(&path, format!("{}\n", self.password)).unwrap();
        path
    }

    /// Dovecot's log.
    pub fn log(&self) -> String {
        self.server.log()
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
