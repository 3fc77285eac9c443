//! A throwaway Dovecot IMAP server on loopback, for `agentcap demo --imap`
//! and the tests: its configuration in a short temporary folder under
//! /tmp (Dovecot's unix sockets live there, and their paths are limited to
//! ~108 bytes), a free loopback port (and one for IMAPS when given a
//! certificate), one user with a generated password, started with
//! `dovecot -F` and ready once the greeting arrives; stopped with SIGTERM
//! (which ends its children too) when dropped.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The user (and group) Dovecot runs mail processes as when started by
/// root: Dovecot refuses mail access as root.
const MAIL_ID: u32 = 65534;

/// What to start.
#[derive(Debug, Default, Clone, Copy)]
pub struct DovecotSetup<'a> {
    /// A Maildir++ to serve (copied; the original is not touched). Without
    /// one, the user starts with empty INBOX, Archive and Trash.
    pub maildir: Option<&'a Path>,
    /// A certificate and key (PEM) for an IMAPS port and STARTTLS; without
    /// them the server speaks plain IMAP only.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// Lines appended to the configuration.
    pub extra: &'a str,
}

/// A running Dovecot with one user, `alice`.
pub struct LocalDovecot {
    dir: tempfile::TempDir,
    child: Child,
    /// The plain IMAP port (STARTTLS offered when there is a certificate).
    pub port: u16,
    /// The IMAPS port, when there is a certificate.
    pub tls_port: Option<u16>,
    /// The login name.
    pub user: String,
    password: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("find a free loopback port")?
        .local_addr()?
        .port())
}

fn id(flag: &str) -> anyhow::Result<String> {
    let out = Command::new("id").arg(flag).output().context("run `id`")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
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

impl LocalDovecot {
    /// Whether the `dovecot` program can be run.
    pub fn installed() -> bool {
        Command::new("dovecot")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Start a server as `setup` says; fails with Dovecot's log when it
    /// does not come up within 20 s.
    pub fn start(setup: DovecotSetup<'_>) -> anyhow::Result<LocalDovecot> {
        let dir = tempfile::Builder::new()
            .prefix("dc")
            .tempdir_in("/tmp")
            .context("create a folder for Dovecot under /tmp")?;
        let d = dir.path().to_path_buf();
        {
            use std::os::unix::fs::PermissionsExt;
            // Dovecot's auth and mail processes run as other users.
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        }
        let port = free_port()?;
        let user = "alice".to_string();
        let password = crate::secret::random_hex(16);
        let users = d.join("users");
        std::fs::write(&users, format!("{user}:{{PLAIN}}{password}::::::\n"))?;
        let root = id("-u")? == "0";
        let maildir = d.join("mail").join(&user).join("Maildir");
        if let Some(source) = setup.maildir {
            copy_tree(source, &maildir)
                .with_context(|| format!("copy {} for Dovecot", source.display()))?;
        }
        for sub in ["", ".Archive", ".Trash"] {
            for x in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(maildir.join(sub).join(x))?;
            }
        }
        let who = if root {
            let status = Command::new("chown")
                .args(["-R", &format!("{MAIL_ID}:{MAIL_ID}")])
                .arg(d.join("mail"))
                .status()
                .context("run chown")?;
            if !status.success() {
                bail!("chown of Dovecot's mail folder failed");
            }
            format!("mail_uid = {MAIL_ID}\nmail_gid = {MAIL_ID}\n")
        } else {
            format!(
                "default_internal_user = {u}\ndefault_internal_group = {g}\ndefault_login_user = {u}\nservice anvil {{\n  chroot =\n}}\n",
                u = id("-un")?,
                g = id("-gn")?
            )
        };
        let login_chroot = if root { "" } else { "  chroot =\n" };
        let d_s = d.display();
        let (ssl, tls_port, tls_listener) = match setup.tls {
            Some((cert, key)) => {
                let tls_port = free_port()?;
                (
                    format!(
                        "ssl = required\nssl_cert = <{}\nssl_key = <{}\n",
                        cert.display(),
                        key.display()
                    ),
                    Some(tls_port),
                    format!(
                        "  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}\n"
                    ),
                )
            }
            None => ("ssl = no\n".to_string(), None, String::new()),
        };
        let config = format!(
            r#"base_dir = {d_s}/run
state_dir = {d_s}/state
log_path = {d_s}/dovecot.log
protocols = imap
listen = 127.0.0.1
{who}
{ssl}
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
{tls_listener}}}
{extra}
"#,
            extra = setup.extra
        );
        std::fs::write(d.join("dovecot.conf"), config)?;
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(d.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start dovecot (apt-get install dovecot-imapd)")?;
        let mut server = LocalDovecot {
            dir,
            child,
            port,
            tls_port,
            user,
            password,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("dovecot exited early ({status}):\n{}", self.log());
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 64];
                if s.read(&mut buf)
                    .is_ok_and(|n| buf[..n].starts_with(b"* OK"))
                {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("dovecot not ready after 20 s:\n{}", self.log())
    }

    /// The server's folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The user's Maildir as the server keeps it.
    pub fn maildir(&self) -> PathBuf {
        self.dir().join("mail").join(&self.user).join("Maildir")
    }

    /// The user's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Dovecot's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for LocalDovecot {
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
