//! The `mail` capability over an IMAP server.
//!
//! One worker thread per configured server owns a current-thread tokio
//! runtime and one logged-in session, reused across calls and sessions;
//! host functions (synchronous, called from the runtime's executor) hand it
//! a job over a channel and wait for the answer. Every operation (all its
//! commands together) has one deadline, every answer a byte budget (so a
//! hostile server cannot make the host allocate without bound), and a
//! reused connection found broken is reconnected once, only when nothing
//! that changes the mailbox was sent.
//!
//! A stop of the calling session is checked before every command: once it
//! is set, nothing more is sent. A command already sent is waited for
//! (within the deadline) when it may change the mailbox, so a stop is
//! acknowledged only when the server has answered it; a read is abandoned
//! at once.
//!
//! A message id is `<folder>/<UIDVALIDITY>.<UID>`: stable across sessions,
//! and invalid as soon as the folder's UIDVALIDITY changes (the call then
//! fails naming it, and nothing moves). `archive`/`delete` are `UID MOVE`;
//! without MOVE, `UID COPY`, `\Deleted` on exactly those UIDs and `UID
//! EXPUNGE` of exactly those UIDs (UIDPLUS); with neither, they are refused:
//! a plain EXPUNGE could remove messages someone else marked.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::imap_proto::{
    Address, AttributeValue, Envelope, Response, ResponseCode, Status, rfc4315::UidSetMember,
};
use mail_parser::MessageParser;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{MailError, Message, MessageSummary, format_address, parse_id, validate_folder};

/// How the connection to the server is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (port 993).
    #[default]
    Implicit,
    /// A plain connection upgraded with STARTTLS before login (port 143).
    Starttls,
    /// No TLS: allowed only to a loopback address.
    None,
}

/// The policy's `[mail] imap = { ... }` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapSettings {
    /// The server's host name or address.
    pub host: String,
    /// Its port (default 993 with implicit TLS, else 143).
    #[serde(default)]
    pub port: Option<u16>,
    /// `implicit` (default), `starttls`, or `none` (loopback only).
    #[serde(default)]
    pub tls: TlsMode,
    /// The login name.
    pub user: String,
    /// The environment variable that holds the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file that holds the password (relative to the policy file).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA certificates to trust instead of the system's
    /// (a private CA); relative to the policy file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Seconds to connect, set up TLS and read the greeting.
    #[serde(
        default = "default_connect_timeout_secs",
        deserialize_with = "crate::policy::within::<_, _, 1, 300>"
    )]
    pub connect_timeout_secs: u64,
    /// Seconds one operation may take, all its commands together.
    #[serde(
        default = "default_command_timeout_secs",
        deserialize_with = "crate::policy::within::<_, _, 1, 600>"
    )]
    pub command_timeout_secs: u64,
    /// Largest message `read` fetches, in KiB (checked with RFC822.SIZE
    /// before fetching).
    #[serde(
        default = "default_max_message_kb",
        deserialize_with = "crate::policy::within::<_, _, 1, 1048576>"
    )]
    pub max_message_kb: u64,
    /// Most messages `list` returns (the newest ones of the folder).
    #[serde(
        default = "default_max_list",
        deserialize_with = "crate::policy::within::<_, _, 1, 100000>"
    )]
    pub max_list: u32,
}

fn default_connect_timeout_secs() -> u64 {
    10
}
fn default_command_timeout_secs() -> u64 {
    30
}
fn default_max_message_kb() -> u64 {
    10 * 1024
}
fn default_max_list() -> u32 {
    1000
}

impl ImapSettings {
    /// The port in use.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Implicit => 993,
            TlsMode::Starttls | TlsMode::None => 143,
        })
    }

    /// `host:port`, as errors name the server.
    pub fn server(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port()),
            _ => format!("{}:{}", self.host, self.port()),
        }
    }

    /// Checks that need no connection: exactly one password source, and
    /// no plain-text login except to a loopback address.
    pub fn check(&self) -> Result<(), String> {
        if self.host.is_empty() || self.host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!(
                "[mail] imap: host {:?} is not a host name",
                self.host
            ));
        }
        if self.user.is_empty() || self.user.contains(['\r', '\n']) {
            return Err("[mail] imap: user must be a non-empty single line".into());
        }
        if self.password_env.is_some() == self.password_file.is_some() {
            return Err(
                "[mail] imap needs exactly one of `password_env` or `password_file`".into(),
            );
        }
        if self.tls == TlsMode::None && !is_loopback(&self.host) {
            return Err(format!(
                "[mail] imap: tls = \"none\" would send the password in clear to {}; it is allowed only for a loopback address",
                self.host
            ));
        }
        if self.tls == TlsMode::None && self.ca_file.is_some() {
            return Err("[mail] imap: ca_file is set but tls = \"none\"".into());
        }
        Ok(())
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// An IMAP server as the `mail` capability's backend: a handle on its
/// worker thread. Dropping it ends the worker (which logs out).
pub struct ImapMail {
    server: String,
    jobs: std::sync::mpsc::Sender<Job>,
}

impl fmt::Debug for ImapMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImapMail({})", self.server)
    }
}

/// What the worker is asked to do.
#[derive(Debug, Clone)]
enum Op {
    Count(String),
    List(String),
    Summaries(Vec<String>),
    Read(String),
    Move(Vec<String>, String),
}

impl Op {
    /// What it does, for errors.
    fn describe(&self) -> &'static str {
        match self {
            Op::Count(_) => "examine a folder",
            Op::List(_) => "list a folder",
            Op::Summaries(_) => "look up messages",
            Op::Read(_) => "read a message",
            Op::Move(..) => "move messages",
        }
    }
}

enum Reply {
    Count(u32),
    List(Vec<MessageSummary>),
    Summaries(Vec<MessageSummary>),
    Read(Box<Message>),
    Moved(Vec<String>),
}

struct Job {
    op: Op,
    stopped: Option<StopCheck>,
    reply: std::sync::mpsc::SyncSender<Result<Reply, MailError>>,
}

/// Tells whether the calling session has been stopped.
pub type StopCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// How often a waiting read looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(1);

impl ImapMail {
    /// Start the worker for the server `settings` name. Nothing is
    /// contacted yet: the first call connects and logs in. `resolve` makes
    /// the policy's relative paths absolute.
    pub fn open(
        settings: &ImapSettings,
        resolve: impl Fn(&std::path::Path) -> PathBuf,
    ) -> Result<ImapMail, MailError> {
        settings.check().map_err(MailError::Backend)?;
        let server = settings.server();
        let password = match (&settings.password_env, &settings.password_file) {
            (Some(var), _) => std::env::var(var).map_err(|_| {
                MailError::Backend(format!(
                    "[mail] imap: the password variable {var} for {server} is not set"
                ))
            })?,
            (None, Some(file)) => {
                let path = resolve(file);
                std::fs::read_to_string(&path)
                    .map_err(|e| {
                        MailError::Backend(format!(
                            "[mail] imap: cannot read the password file {}: {e}",
                            path.display()
                        ))
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string()
            }
            (None, None) => {
                return Err(MailError::Backend(
                    "[mail] imap needs `password_env` or `password_file`".into(),
                ));
            }
        };
        if password.is_empty() || password.contains(['\r', '\n']) {
            return Err(MailError::Backend(format!(
                "[mail] imap: the password for {server} is empty or spans several lines"
            )));
        }
        let tls = match settings.tls {
            TlsMode::None => None,
            _ => Some(tls_config(settings.ca_file.as_ref().map(|p| resolve(p)))?),
        };
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let worker = Worker {
            settings: settings.clone(),
            server: server.clone(),
            password,
            tls,
            conn: None,
            deadline: Instant::now(),
            stopped: None,
        };
        std::thread::Builder::new()
            .name(format!("agentcap-imap {server}"))
            .spawn(move || worker.run(queue))
            .map_err(|e| MailError::Backend(format!("cannot start the IMAP worker: {e}")))?;
        Ok(ImapMail { server, jobs })
    }

    /// The server, as `host:port`.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn ask(&self, op: Op, stopped: Option<StopCheck>) -> Result<Reply, MailError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let what = op.describe();
        let changes = matches!(op, Op::Move(..));
        self.jobs
            .send(Job {
                op,
                stopped: stopped.clone(),
                reply,
            })
            .map_err(|_| self.gone(what))?;
        // Every operation of the worker has a deadline, so it answers. A
        // move is waited for: a stop must not be acknowledged while a
        // command that changes the mailbox may still be carried out. A
        // read is abandoned when the session stops (its answer dropped).
        let Some(stopped) = stopped.filter(|_| !changes) else {
            return answer.recv().map_err(|_| self.gone(what))?;
        };
        loop {
            match answer.recv_timeout(STOP_POLL) {
                Ok(result) => return result,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(self.gone(what));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if stopped() => {
                    return Err(MailError::Backend(format!(
                        "IMAP server {}: did not {what}: the session was stopped",
                        self.server
                    )));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn gone(&self, what: &str) -> MailError {
        MailError::Backend(format!(
            "IMAP server {}: cannot {what}: the connection worker has stopped",
            self.server
        ))
    }

    /// How many messages `folder` holds.
    pub fn count(&self, folder: &str) -> Result<u32, MailError> {
        check_folder(folder)?;
        match self.ask(Op::Count(folder.to_string()), None)? {
            Reply::Count(n) => Ok(n),
            _ => Err(self.gone("count")),
        }
    }

    /// List a folder (its newest `max_list` messages), oldest first.
    pub fn list(
        &self,
        folder: &str,
        stopped: Option<StopCheck>,
    ) -> Result<Vec<MessageSummary>, MailError> {
        check_folder(folder)?;
        match self.ask(Op::List(folder.to_string()), stopped)? {
            Reply::List(l) => Ok(l),
            _ => Err(self.gone("list")),
        }
    }

    /// The listings of messages, in the order of `ids`; every id must name
    /// an existing message of the folder's current UIDVALIDITY.
    pub fn summaries(&self, ids: &[String]) -> Result<Vec<MessageSummary>, MailError> {
        for id in ids {
            parse_imap_id(id)?;
        }
        match self.ask(Op::Summaries(ids.to_vec()), None)? {
            Reply::Summaries(l) => Ok(l),
            _ => Err(self.gone("look up")),
        }
    }

    /// Read one message (without setting `\Seen`).
    pub fn read(&self, id: &str, stopped: Option<StopCheck>) -> Result<Message, MailError> {
        parse_imap_id(id)?;
        match self.ask(Op::Read(id.to_string()), stopped)? {
            Reply::Read(m) => Ok(*m),
            _ => Err(self.gone("read")),
        }
    }

    /// Move messages to `dest` (created if missing). Every id is checked
    /// (folder, UIDVALIDITY, existence) before anything moves; the new ids
    /// are returned in order. Once `stopped` tells so, no further command
    /// is sent (what already moved is named in the error).
    pub fn move_to(
        &self,
        ids: &[String],
        dest: &str,
        stopped: Option<StopCheck>,
    ) -> Result<Vec<String>, MailError> {
        check_folder(dest)?;
        for id in ids {
            let (folder, _, _) = parse_imap_id(id)?;
            if folder == dest {
                return Err(MailError::Invalid(format!(
                    "message {id} is already in {dest}"
                )));
            }
        }
        match self.ask(Op::Move(ids.to_vec(), dest.to_string()), stopped)? {
            Reply::Moved(l) => Ok(l),
            _ => Err(self.gone("move")),
        }
    }
}

/// A folder name as the IMAP backend accepts it: the Maildir backend's
/// rule (letters, digits, `-`, `_`, inner dots: no hierarchy separators,
/// wildcards, quotes or modified UTF-7), and the INBOX only as `INBOX`
/// (IMAP matches it in any case; one name per folder keeps scope checks
/// exact).
pub fn check_folder(folder: &str) -> Result<(), MailError> {
    validate_folder(folder)?;
    if folder.eq_ignore_ascii_case(super::INBOX) && folder != super::INBOX {
        return Err(MailError::Invalid(format!(
            "folder name {folder:?} is not allowed: the inbox is spelled INBOX"
        )));
    }
    Ok(())
}

/// The folder each target of a request touches: folder names for
/// `mail.list`, else the folder of each (checked) id.
pub fn target_folders(
    capability: super::Capability,
    targets: &[String],
) -> Result<Vec<String>, MailError> {
    targets
        .iter()
        .map(|t| {
            if capability == super::LIST {
                check_folder(t).map(|_| t.clone())
            } else {
                parse_imap_id(t).map(|(folder, _, _)| folder.to_string())
            }
        })
        .collect()
}

/// Split an IMAP message id `<folder>/<UIDVALIDITY>.<UID>` (both numbers
/// decimal, non-zero, without leading zeros: one id per message).
pub fn parse_imap_id(id: &str) -> Result<(&str, u32, u32), MailError> {
    let (folder, unique) = parse_id(id)?;
    check_folder(folder)?;
    let number = |s: &str| -> Option<u32> {
        if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u32>().ok()
    };
    match unique.split_once('.') {
        Some((v, u)) => match (number(v), number(u)) {
            (Some(v), Some(u)) => Ok((folder, v, u)),
            _ => Err(bad_imap_id(id)),
        },
        None => Err(bad_imap_id(id)),
    }
}

fn bad_imap_id(id: &str) -> MailError {
    MailError::Invalid(format!(
        "message id {:?} is not allowed: an IMAP message id is <folder>/<UIDVALIDITY>.<UID>",
        super::truncate(id, 80)
    ))
}

fn imap_id(folder: &str, uid_validity: u32, uid: u32) -> String {
    format!("{folder}/{uid_validity}.{uid}")
}

fn tls_config(ca_file: Option<PathBuf>) -> Result<Arc<rustls::ClientConfig>, MailError> {
    crate::capability::tls::client_config(ca_file.as_deref())
        .map(Arc::new)
        .map_err(|e| MailError::Backend(format!("[mail] imap: {e}")))
}

// ---- The connection: TCP or TLS, metered. ----

/// TCP, or TLS over TCP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Plain(_) => "Stream::Plain",
            Stream::Tls(_) => "Stream::Tls",
        })
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The error a metered stream gives once its budget is spent.
#[derive(Debug)]
struct OverBudget(usize);

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the server's answer exceeded {} bytes", self.0)
    }
}

impl std::error::Error for OverBudget {}

/// A stream that reads at most a budget of bytes (set before each
/// command): the host's memory stays bounded whatever the server sends.
struct Metered {
    inner: Stream,
    remaining: Arc<AtomicUsize>,
    limit: Arc<AtomicUsize>,
    literals: Literals,
}

/// Follows the server's literals (`{N}` at the end of a line, then N
/// bytes) in what is read, so that a literal announced larger than the
/// budget is refused at its announcement, before the IMAP reader reserves
/// room for it. (A quoted string cannot hold a line break, so `{N}` then
/// CRLF outside a literal is always an announcement.)
#[derive(Debug, Default)]
struct Literals {
    /// The digits of a `{N` seen so far.
    digits: Option<u64>,
    /// `}` seen after the digits.
    closed: bool,
    /// CR seen after `}`.
    cr: bool,
}

impl Literals {
    /// Follow `bytes`; the largest literal announced in them.
    fn feed(&mut self, bytes: &[u8]) -> u64 {
        let mut largest = 0;
        let mut i = 0;
        while i < bytes.len() {
            // Announcements are looked for inside literals too: a `{N}` in
            // a status text would otherwise make this skip past the real one.
            // (A message body with such a line only stops its own reading.)
            let b = bytes[i];
            i += 1;
            match (b, self.digits, self.closed, self.cr) {
                (b'{', ..) => {
                    (self.digits, self.closed, self.cr) = (Some(0), false, false);
                }
                (b'0'..=b'9', Some(d), false, _) => {
                    self.digits = Some(d.saturating_mul(10).saturating_add(u64::from(b - b'0')));
                }
                (b'}', Some(_), false, _) => self.closed = true,
                (b'\r', Some(_), true, false) => self.cr = true,
                (b'\n', Some(d), true, true) => {
                    largest = largest.max(d);
                    (self.digits, self.closed, self.cr) = (None, false, false);
                }
                _ => (self.digits, self.closed, self.cr) = (None, false, false),
            }
        }
        largest
    }
}

impl fmt::Debug for Metered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metered({:?})", self.inner)
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let remaining = this.remaining.load(Ordering::Relaxed);
        if remaining == 0 {
            let limit = this.limit.load(Ordering::Relaxed);
            return Poll::Ready(Err(std::io::Error::other(OverBudget(limit))));
        }
        let before = buf.filled().len();
        if buf.remaining() <= remaining {
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        } else {
            let mut scratch = vec![0u8; remaining];
            let mut limited = ReadBuf::new(&mut scratch);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
            let n = limited.filled().len();
            buf.put_slice(&scratch[..n]);
        }
        let read = &buf.filled()[before..];
        let announced = this.literals.feed(read);
        let left = remaining - read.len();
        this.remaining.store(left, Ordering::Relaxed);
        if announced > left as u64 {
            let limit = this.limit.load(Ordering::Relaxed);
            return Poll::Ready(Err(std::io::Error::other(OverBudget(limit))));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

type Session = async_imap::Session<Metered>;

/// A logged-in session and what the server said it can do.
struct Conn {
    session: Session,
    remaining: Arc<AtomicUsize>,
    limit: Arc<AtomicUsize>,
    can_move: bool,
    uidplus: bool,
}

/// Why a step failed, and what that means for the connection.
struct Failure {
    error: MailError,
    /// The connection is unusable (broken, timed out, out of step).
    drop_connection: bool,
    /// The connection was found broken (worth one reconnect when it was a
    /// reused one and nothing changing was sent).
    broken: bool,
}

impl Failure {
    fn mail(error: MailError) -> Failure {
        Failure {
            error,
            drop_connection: false,
            broken: false,
        }
    }
}

impl From<MailError> for Failure {
    fn from(error: MailError) -> Failure {
        Failure::mail(error)
    }
}

/// The end of a command: its status and the server's words.
struct Done {
    ok: bool,
    text: String,
}

/// The fields of one FETCH response the backend uses.
#[derive(Default)]
struct Fetched {
    uid: Option<u32>,
    size: Option<u32>,
    seen: bool,
    envelope: Option<EnvelopeFacts>,
    /// INTERNALDATE as seconds since 1970 (0 when unreadable).
    internal_date: i64,
    list_header: Option<Vec<u8>>,
    body: Option<Vec<u8>>,
}

/// The envelope, decoded.
#[derive(Default)]
struct EnvelopeFacts {
    from: String,
    subject: String,
    date: String,
}

/// The ids of one folder: (id, UIDVALIDITY, UID) each.
type FolderIds = (String, Vec<(String, u32, u32)>);

/// What a SELECT/EXAMINE told.
struct Selected {
    uid_validity: u32,
    exists: u32,
}

struct Worker {
    settings: ImapSettings,
    server: String,
    password: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: Option<Conn>,
    /// The current operation's deadline (`command_timeout_secs` from its
    /// start, for all its commands together).
    deadline: Instant,
    /// The current operation's session stop flag.
    stopped: Option<StopCheck>,
}

/// The items fetched for a listing.
const SUMMARY_ITEMS: &str = "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY.PEEK[HEADER.FIELDS (LIST-ID LIST-UNSUBSCRIBE)])";

/// Longest text of a server's answer quoted in an error.
const MAX_SERVER_TEXT: usize = 300;
/// Longest error message (in characters).
const MAX_ERROR: usize = 1000;

impl Worker {
    fn run(mut self, queue: std::sync::mpsc::Receiver<Job>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let message = format!("IMAP server {}: cannot start a runtime: {e}", self.server);
                while let Ok(job) = queue.recv() {
                    let _ = job.reply.send(Err(MailError::Backend(message.clone())));
                }
                return;
            }
        };
        while let Ok(job) = queue.recv() {
            self.stopped = job.stopped;
            let result = runtime.block_on(self.handle(&job.op));
            self.stopped = None;
            let _ = job.reply.send(result);
        }
        if let Some(mut conn) = self.conn.take() {
            runtime.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.session.logout()).await;
            });
        }
    }

    fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.command_timeout_secs)
    }

    fn max_message_bytes(&self) -> u64 {
        self.settings.max_message_kb * 1024
    }

    /// The byte budget of one answer: the largest message plus room for
    /// its envelope and the protocol around it.
    fn budget(&self) -> usize {
        usize::try_from(self.max_message_bytes()).unwrap_or(usize::MAX / 2) + 4 * 1024 * 1024
    }

    /// A message naming the server, with the password never in it.
    fn error(&self, what: impl fmt::Display) -> MailError {
        MailError::Backend(self.scrub(&format!("IMAP server {}: {what}", self.server)))
    }

    /// Every error leaves the worker through here: the password scrubbed
    /// from it (a server may echo what it was sent), then clipped.
    fn finish(&self, error: MailError) -> MailError {
        let done = |m: String| super::truncate(&self.scrub(&m), MAX_ERROR);
        match error {
            MailError::NotFound(m) => MailError::NotFound(done(m)),
            MailError::Invalid(m) => MailError::Invalid(done(m)),
            MailError::Backend(m) => MailError::Backend(done(m)),
        }
    }

    fn scrub(&self, text: &str) -> String {
        if self.password.is_empty() {
            return text.to_string();
        }
        // Also as sent (a quoted string escapes `"` and `\`), and either
        // as an error's debug form shows it (escaped once more); longest
        // first.
        let quoted = self.password.replace('\\', "\\\\").replace('"', "\\\"");
        let debug = |s: &str| {
            let d = format!("{s:?}");
            d[1..d.len() - 1].to_string()
        };
        let mut forms = [
            debug(&quoted),
            quoted.clone(),
            debug(&self.password),
            self.password.clone(),
        ];
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms
            .iter()
            .fold(text.to_string(), |t, f| t.replace(f.as_str(), "[password]"))
    }

    async fn handle(&mut self, op: &Op) -> Result<Reply, MailError> {
        let mut retried = false;
        // Connecting has its own deadline; the commands share this one.
        self.deadline = Instant::now() + self.command_timeout();
        loop {
            let reused = self.conn.is_some();
            if !reused {
                let conn = self.connect().await.map_err(|e| self.finish(e))?;
                self.conn = Some(conn);
            }
            let mut changed = false;
            match self.perform(op, &mut changed).await {
                Ok(reply) => return Ok(reply),
                Err(mut failure) => {
                    failure.error = self.finish(failure.error);
                    if failure.drop_connection {
                        self.conn = None;
                    }
                    if failure.broken && reused && !changed && !retried {
                        tracing::info!(server = %self.server, "IMAP connection broken; reconnecting once");
                        retried = true;
                        continue;
                    }
                    return Err(failure.error);
                }
            }
        }
    }

    // ---- Connecting. ----

    async fn connect(&self) -> Result<Conn, MailError> {
        let deadline = Instant::now() + Duration::from_secs(self.settings.connect_timeout_secs);
        let step = |what: &'static str| {
            move |_| {
                self.error(format_args!(
                    "{what} timed out after {} s (connect_timeout_secs)",
                    self.settings.connect_timeout_secs
                ))
            }
        };
        let port = self.settings.port();
        let tcp = tokio::time::timeout_at(
            deadline,
            TcpStream::connect((self.settings.host.as_str(), port)),
        )
        .await
        .map_err(step("connecting"))?
        .map_err(|e| self.error(format_args!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let remaining = Arc::new(AtomicUsize::new(1024 * 1024));
        let limit = Arc::new(AtomicUsize::new(1024 * 1024));
        let stream = match self.settings.tls {
            TlsMode::None => Stream::Plain(tcp),
            TlsMode::Implicit => tokio::time::timeout_at(deadline, self.handshake(tcp))
                .await
                .map_err(step("the TLS handshake"))??,
            TlsMode::Starttls => tokio::time::timeout_at(deadline, self.starttls(tcp))
                .await
                .map_err(step("STARTTLS"))??,
        };
        let metered = Metered {
            inner: stream,
            remaining: remaining.clone(),
            limit: limit.clone(),
            literals: Literals::default(),
        };
        let mut client = async_imap::Client::new(metered);
        if self.settings.tls != TlsMode::Starttls {
            let greeting = tokio::time::timeout_at(deadline, client.read_response())
                .await
                .map_err(step("waiting for the greeting"))?
                .map_err(|e| self.error(format_args!("reading the greeting failed: {e}")))?
                .ok_or_else(|| self.error("the server closed the connection before greeting"))?;
            match greeting.parsed() {
                Response::Data {
                    status: Status::Ok, ..
                } => {}
                other => {
                    return Err(self.error(format_args!(
                        "unexpected greeting: {}",
                        clip(&format!("{other:?}"))
                    )));
                }
            }
        }
        let login_deadline = Instant::now() + self.command_timeout();
        let mut session = match tokio::time::timeout_at(
            login_deadline,
            client.login(&self.settings.user, &self.password),
        )
        .await
        {
            Err(_) => {
                return Err(self.error(format_args!(
                    "login as {} timed out after {} s",
                    self.settings.user, self.settings.command_timeout_secs
                )));
            }
            Ok(Err((e, _))) => {
                let why = match e {
                    async_imap::error::Error::No(text) | async_imap::error::Error::Bad(text) => {
                        clip(&self.scrub(&text))
                    }
                    other => clip(&self.scrub(&other.to_string())),
                };
                return Err(self.error(format_args!(
                    "login as {} failed: {why}",
                    self.settings.user
                )));
            }
            Ok(Ok(session)) => session,
        };
        let capabilities = tokio::time::timeout(self.command_timeout(), session.capabilities())
            .await
            .map_err(|_| self.error("CAPABILITY timed out after login"))?
            .map_err(|e| {
                self.error(format_args!(
                    "the session failed right after login (CAPABILITY): {}",
                    clip(&e.to_string())
                ))
            })?;
        Ok(Conn {
            can_move: capabilities.has_str("MOVE"),
            uidplus: capabilities.has_str("UIDPLUS"),
            session,
            remaining,
            limit,
        })
    }

    async fn handshake(&self, tcp: TcpStream) -> Result<Stream, MailError> {
        let config = self
            .tls
            .clone()
            .ok_or_else(|| self.error("TLS was asked for but is not set up"))?;
        let name =
            rustls::pki_types::ServerName::try_from(self.settings.host.clone()).map_err(|e| {
                self.error(format_args!(
                    "{:?} is not a TLS server name: {e}",
                    self.settings.host
                ))
            })?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| self.error(format_args!("TLS handshake failed: {e}")))?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// Greeting and STARTTLS in plain text, read line by line; bytes the
    /// server sends after its OK and before the handshake are refused (an
    /// injection into the encrypted session).
    async fn starttls(&self, mut tcp: TcpStream) -> Result<Stream, MailError> {
        async fn line(tcp: &mut TcpStream, pending: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
            loop {
                if let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
                    let rest = pending.split_off(end + 2);
                    return Ok(std::mem::replace(pending, rest));
                }
                if pending.len() > 16 * 1024 {
                    return Err(std::io::Error::other("a line longer than 16 KiB"));
                }
                let mut chunk = [0u8; 1024];
                let n = tcp.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                pending.extend_from_slice(&chunk[..n]);
            }
        }
        let mut pending = Vec::new();
        let greeting = line(&mut tcp, &mut pending)
            .await
            .map_err(|e| self.error(format_args!("reading the greeting failed: {e}")))?;
        if !greeting.starts_with(b"* OK") {
            return Err(self.error(format_args!(
                "unexpected greeting: {}",
                clip(&String::from_utf8_lossy(&greeting))
            )));
        }
        tcp.write_all(b"S1 STARTTLS\r\n")
            .await
            .map_err(|e| self.error(format_args!("sending STARTTLS failed: {e}")))?;
        loop {
            let answer = line(&mut tcp, &mut pending)
                .await
                .map_err(|e| self.error(format_args!("STARTTLS failed: {e}")))?;
            if answer.starts_with(b"S1 ") {
                if !answer.starts_with(b"S1 OK") {
                    return Err(self.error(format_args!(
                        "the server refused STARTTLS: {}",
                        clip(&String::from_utf8_lossy(&answer))
                    )));
                }
                break;
            }
        }
        if !pending.is_empty() {
            return Err(self.error(
                "the server sent data after accepting STARTTLS and before the TLS handshake; refused (possible injection)",
            ));
        }
        self.handshake(tcp).await
    }

    // ---- Commands. ----

    /// Run one command: each response (the tagged one last) goes to
    /// `on_data` at once (nothing is kept), within the operation's deadline
    /// and the byte budget. Nothing is sent once the session is stopped.
    async fn command(
        &mut self,
        command: &str,
        what: &str,
        mut on_data: impl FnMut(&Response<'_>),
    ) -> Result<Done, Failure> {
        let budget = self.budget();
        let timeout = self.command_timeout();
        let server = self.server.clone();
        if self.stopped.as_ref().is_some_and(|stopped| stopped()) {
            return Err(Failure::mail(MailError::Backend(format!(
                "IMAP server {server}: {what} not sent: the session was stopped"
            ))));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure {
                error: MailError::Backend(format!("IMAP server {server}: not connected")),
                drop_connection: true,
                broken: true,
            });
        };
        conn.limit.store(budget, Ordering::Relaxed);
        conn.remaining.store(budget, Ordering::Relaxed);
        let deadline = self.deadline;
        let broken = |e: &dyn fmt::Display| Failure {
            error: MailError::Backend(format!("IMAP server {server}: {what} failed: {e}")),
            drop_connection: true,
            broken: true,
        };
        let timed_out = || Failure {
            error: MailError::Backend(format!(
                "IMAP server {server}: {what} timed out: the operation took over {} s (command_timeout_secs)",
                timeout.as_secs()
            )),
            drop_connection: true,
            broken: true,
        };
        let tag = match tokio::time::timeout_at(deadline, conn.session.run_command(command)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(broken(&e)),
            Ok(Ok(tag)) => tag,
        };
        loop {
            let response = match tokio::time::timeout_at(deadline, conn.session.read_response())
                .await
            {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => {
                    if let Some(over) = e.get_ref().and_then(|e| e.downcast_ref::<OverBudget>()) {
                        return Err(Failure {
                            error: MailError::Backend(format!(
                                "IMAP server {server}: {what} refused: {over} (the limit follows max_message_kb)"
                            )),
                            drop_connection: true,
                            broken: false,
                        });
                    }
                    return Err(broken(&e));
                }
                Ok(Ok(None)) => return Err(broken(&"the server closed the connection")),
                Ok(Ok(Some(r))) => r,
            };
            match response.parsed() {
                Response::Done {
                    tag: done,
                    status,
                    outcome,
                } if *done == tag => {
                    // The tagged answer carries codes too (COPYUID of COPY).
                    on_data(response.parsed());
                    return Ok(Done {
                        ok: *status == Status::Ok,
                        // Clipped only after the password is scrubbed.
                        text: outcome
                            .information
                            .as_deref()
                            .unwrap_or("")
                            .trim()
                            .to_string(),
                    });
                }
                Response::Data {
                    status: Status::Bye,
                    outcome,
                } => {
                    return Err(broken(&format_args!(
                        "the server said BYE: {}",
                        outcome.information.as_deref().unwrap_or("").trim()
                    )));
                }
                other => on_data(other),
            }
        }
    }

    /// Run a command that must end OK.
    async fn command_ok(
        &mut self,
        command: &str,
        what: &str,
        on_data: impl FnMut(&Response<'_>),
    ) -> Result<(), Failure> {
        let done = self.command(command, what, on_data).await?;
        if done.ok {
            Ok(())
        } else {
            Err(Failure::mail(
                self.error(format_args!("{what} failed: {}", done.text)),
            ))
        }
    }

    /// SELECT (read-write) or EXAMINE (read-only) `folder`.
    async fn select(&mut self, folder: &str, write: bool) -> Result<Selected, Failure> {
        check_folder(folder)?;
        let verb = if write { "SELECT" } else { "EXAMINE" };
        let mut uid_validity = None;
        let mut exists = 0;
        let done = self
            .command(
                &format!("{verb} \"{folder}\""),
                &format!("{verb} {folder}"),
                |r| match r {
                    Response::MailboxData(async_imap::imap_proto::MailboxDatum::Exists(n)) => {
                        exists = *n
                    }
                    Response::Data {
                        outcome:
                            async_imap::imap_proto::Outcome {
                                code: Some(ResponseCode::UidValidity(v)),
                                ..
                            },
                        ..
                    } => uid_validity = Some(*v),
                    _ => {}
                },
            )
            .await?;
        if !done.ok {
            return Err(Failure::mail(MailError::NotFound(self.scrub(&format!(
                "no mail folder named {folder} on IMAP server {} ({})",
                self.server, done.text
            )))));
        }
        let uid_validity = uid_validity
            .ok_or_else(|| self.error(format_args!("{verb} {folder} gave no UIDVALIDITY")))?;
        Ok(Selected {
            uid_validity,
            exists,
        })
    }

    /// FETCH `set` (UIDs when `by_uid`) with `items`.
    async fn fetch(
        &mut self,
        set: &str,
        items: &str,
        by_uid: bool,
        what: &str,
    ) -> Result<Vec<Fetched>, Failure> {
        let mut out: Vec<Fetched> = Vec::new();
        let command = format!("{}FETCH {set} {items}", if by_uid { "UID " } else { "" });
        // A server may send FETCH lines nobody asked for (flag updates) or
        // many more than asked: keep one per UID, with the items asked for,
        // and no more than a listing may hold.
        let cap = (self.settings.max_list as usize).max(crate::host::MAX_TARGETS);
        let wants_envelope = items.contains("ENVELOPE");
        self.command_ok(&command, what, |r| {
            if let Response::Fetch(_, attributes) = r {
                let f = fetched(attributes);
                let asked = !wants_envelope || f.envelope.is_some();
                let repeated = f.uid.is_some() && out.iter().any(|o| o.uid == f.uid);
                if asked && !repeated && out.len() < cap {
                    out.push(f);
                }
            }
        })
        .await?;
        Ok(out)
    }

    /// The summaries of `uids` in the selected folder, by UID.
    async fn summaries_of(
        &mut self,
        folder: &str,
        uid_validity: u32,
        uids: &[u32],
    ) -> Result<BTreeMap<u32, (MessageSummary, i64)>, Failure> {
        let set = uid_set(uids);
        let fetched = self
            .fetch(&set, SUMMARY_ITEMS, true, &format!("UID FETCH in {folder}"))
            .await?;
        Ok(fetched
            .into_iter()
            .filter_map(|f| {
                let uid = f.uid?;
                uids.contains(&uid)
                    .then(|| (uid, summary(folder, uid_validity, uid, &f)))
            })
            .collect())
    }

    fn check_validity(
        &self,
        id: &str,
        folder: &str,
        expected: u32,
        now: u32,
    ) -> Result<(), Failure> {
        if expected == now {
            return Ok(());
        }
        Err(Failure::mail(MailError::NotFound(format!(
            "message id {id} is no longer valid: folder {folder} on IMAP server {} now has UIDVALIDITY {now}, the id was issued under {expected} (the folder was recreated or renumbered); list the folder again",
            self.server
        ))))
    }

    // ---- Operations. ----

    async fn perform(&mut self, op: &Op, changed: &mut bool) -> Result<Reply, Failure> {
        match op {
            Op::Count(folder) => Ok(Reply::Count(self.select(folder, false).await?.exists)),
            Op::List(folder) => self.list(folder).await.map(Reply::List),
            Op::Summaries(ids) => self.summaries(ids).await.map(Reply::Summaries),
            Op::Read(id) => self.read(id).await.map(|m| Reply::Read(Box::new(m))),
            Op::Move(ids, dest) => self.move_to(ids, dest, changed).await.map(Reply::Moved),
        }
    }

    async fn list(&mut self, folder: &str) -> Result<Vec<MessageSummary>, Failure> {
        let selected = self.select(folder, false).await?;
        if selected.exists == 0 {
            return Ok(Vec::new());
        }
        let first = selected
            .exists
            .saturating_sub(self.settings.max_list)
            .saturating_add(1);
        let fetched = self
            .fetch(
                &format!("{first}:{}", selected.exists),
                SUMMARY_ITEMS,
                false,
                &format!("FETCH in {folder}"),
            )
            .await?;
        let mut out: Vec<(MessageSummary, i64, u32)> = fetched
            .into_iter()
            .filter_map(|f| {
                let uid = f.uid?;
                let (s, internal) = summary(folder, selected.uid_validity, uid, &f);
                Some((s, internal, uid))
            })
            .collect();
        out.sort_by(|a, b| {
            a.0.date
                .cmp(&b.0.date)
                .then_with(|| a.1.cmp(&b.1))
                .then_with(|| a.2.cmp(&b.2))
        });
        let keep = self.settings.max_list as usize;
        let skip = out.len().saturating_sub(keep);
        Ok(out.into_iter().skip(skip).map(|(s, _, _)| s).collect())
    }

    /// Group ids by folder, keeping the first appearance order.
    fn by_folder(ids: &[String]) -> Result<Vec<FolderIds>, MailError> {
        let mut groups: Vec<FolderIds> = Vec::new();
        for id in ids {
            let (folder, validity, uid) = parse_imap_id(id)?;
            match groups.iter_mut().find(|(f, _)| f == folder) {
                Some((_, members)) => members.push((id.clone(), validity, uid)),
                None => groups.push((folder.to_string(), vec![(id.clone(), validity, uid)])),
            }
        }
        Ok(groups)
    }

    async fn summaries(&mut self, ids: &[String]) -> Result<Vec<MessageSummary>, Failure> {
        let mut found: BTreeMap<String, MessageSummary> = BTreeMap::new();
        for (folder, members) in Self::by_folder(ids)? {
            let selected = self.select(&folder, false).await?;
            for (id, validity, _) in &members {
                self.check_validity(id, &folder, *validity, selected.uid_validity)?;
            }
            let uids: Vec<u32> = members.iter().map(|m| m.2).collect();
            let mut summaries = self
                .summaries_of(&folder, selected.uid_validity, &uids)
                .await?;
            for (id, _, uid) in members {
                let (s, _) = summaries
                    .remove(&uid)
                    .ok_or_else(|| MailError::NotFound(format!("no message {id}")))?;
                found.insert(id, s);
            }
        }
        ids.iter()
            .map(|id| {
                found
                    .get(id)
                    .cloned()
                    .ok_or_else(|| Failure::mail(MailError::NotFound(format!("no message {id}"))))
            })
            .collect()
    }

    async fn read(&mut self, id: &str) -> Result<Message, Failure> {
        let (folder, validity, uid) = parse_imap_id(id)?;
        let selected = self.select(folder, false).await?;
        self.check_validity(id, folder, validity, selected.uid_validity)?;
        let (summary, _) = self
            .summaries_of(folder, validity, &[uid])
            .await?
            .remove(&uid)
            .ok_or_else(|| MailError::NotFound(format!("no message {id}")))?;
        let max = self.max_message_bytes();
        if summary.size > max {
            return Err(Failure::mail(MailError::Invalid(format!(
                "message {id} is {} bytes; the policy's max_message_kb allows {} KiB, so it is not read",
                summary.size, self.settings.max_message_kb
            ))));
        }
        let raw = self
            .fetch(
                &uid.to_string(),
                "(UID BODY.PEEK[])",
                true,
                &format!("UID FETCH BODY.PEEK[] in {folder}"),
            )
            .await?
            .into_iter()
            .find(|f| f.uid == Some(uid))
            .and_then(|f| f.body)
            .ok_or_else(|| MailError::NotFound(format!("no message {id} (gone while reading)")))?;
        if raw.len() as u64 > max {
            return Err(Failure::mail(MailError::Invalid(format!(
                "message {id} is {} bytes; the policy's max_message_kb allows {} KiB, so it is not read",
                raw.len(),
                self.settings.max_message_kb
            ))));
        }
        let (to, body) = match MessageParser::default().parse(&raw) {
            Some(m) => (
                format_address(m.to()),
                m.body_text(0).map(|b| b.into_owned()).unwrap_or_default(),
            ),
            None => (String::new(), String::from_utf8_lossy(&raw).into_owned()),
        };
        Ok(Message { summary, to, body })
    }

    async fn move_to(
        &mut self,
        ids: &[String],
        dest: &str,
        changed: &mut bool,
    ) -> Result<Vec<String>, Failure> {
        let groups = Self::by_folder(ids)?;
        let (can_move, uidplus) = match &self.conn {
            Some(c) => (c.can_move, c.uidplus),
            None => (false, false),
        };
        if !can_move && !uidplus {
            return Err(Failure::mail(self.error(
                "the server supports neither MOVE nor UIDPLUS; moving would need an EXPUNGE that could remove other messages, so archive and delete are refused",
            )));
        }
        // Every id is checked before anything moves.
        for (folder, members) in &groups {
            let selected = self.select(folder, false).await?;
            for (id, validity, _) in members {
                self.check_validity(id, folder, *validity, selected.uid_validity)?;
            }
            let uids: Vec<u32> = members.iter().map(|m| m.2).collect();
            let present: Vec<u32> = self
                .fetch(
                    &uid_set(&uids),
                    "(UID)",
                    true,
                    &format!("UID FETCH in {folder}"),
                )
                .await?
                .into_iter()
                .filter_map(|f| f.uid)
                .collect();
            if let Some((id, _, _)) = members.iter().find(|m| !present.contains(&m.2)) {
                return Err(Failure::mail(MailError::NotFound(format!(
                    "no message {id}"
                ))));
            }
        }
        self.ensure_folder(dest, changed).await?;
        let mut moved: BTreeMap<String, String> = BTreeMap::new();
        for (folder, members) in &groups {
            let new = match self
                .move_group(folder, members, dest, can_move, changed)
                .await
            {
                Ok(new) => new,
                // A later folder failed (or the session stopped): say what
                // has already moved, so the outcome on record is true.
                Err(mut failure) if !moved.is_empty() => {
                    let done: Vec<&str> = moved.keys().map(String::as_str).collect();
                    failure.error = failure
                        .error
                        .with_note(&format!("already moved to {dest}: {}", done.join(", ")));
                    return Err(failure);
                }
                Err(failure) => return Err(failure),
            };
            for (id, _, uid) in members {
                let new_id = new.get(uid).cloned().unwrap_or_else(|| dest.to_string());
                moved.insert(id.clone(), new_id);
            }
        }
        Ok(ids
            .iter()
            .map(|id| moved.get(id).cloned().unwrap_or_else(|| dest.to_string()))
            .collect())
    }

    /// Move the ids of one folder (checked against its UIDVALIDITY again).
    async fn move_group(
        &mut self,
        folder: &str,
        members: &[(String, u32, u32)],
        dest: &str,
        can_move: bool,
        changed: &mut bool,
    ) -> Result<BTreeMap<u32, String>, Failure> {
        let selected = self.select(folder, true).await?;
        for (id, validity, _) in members {
            self.check_validity(id, folder, *validity, selected.uid_validity)?;
        }
        let mut uids: Vec<u32> = members.iter().map(|m| m.2).collect();
        uids.sort_unstable();
        uids.dedup();
        if can_move {
            self.uid_move(folder, &uids, dest, changed).await
        } else {
            self.copy_and_expunge(folder, &uids, dest, changed).await
        }
    }

    /// Create `folder` unless it exists.
    async fn ensure_folder(&mut self, folder: &str, changed: &mut bool) -> Result<(), Failure> {
        let done = self
            .command(
                &format!("STATUS \"{folder}\" (UIDVALIDITY)"),
                &format!("STATUS {folder}"),
                |_| {},
            )
            .await?;
        if done.ok {
            return Ok(());
        }
        *changed = true;
        self.command_ok(
            &format!("CREATE \"{folder}\""),
            &format!("CREATE {folder}"),
            |_| {},
        )
        .await
    }

    /// `UID MOVE`; the new ids from COPYUID (or, without UIDPLUS, from the
    /// destination's UIDNEXT when it grew by exactly the number moved).
    async fn uid_move(
        &mut self,
        folder: &str,
        uids: &[u32],
        dest: &str,
        changed: &mut bool,
    ) -> Result<BTreeMap<u32, String>, Failure> {
        let before = if self.conn.as_ref().is_some_and(|c| c.uidplus) {
            None
        } else {
            Some(self.uid_next(dest).await?)
        };
        *changed = true;
        let mut copied = None;
        let done = self
            .command(
                &format!("UID MOVE {} \"{dest}\"", uid_set(uids)),
                &format!("UID MOVE from {folder} to {dest}"),
                |r| {
                    if let Some(c) = copy_uid(r) {
                        copied = Some(c);
                    }
                },
            )
            .await?;
        if !done.ok {
            return Err(Failure::mail(self.error(format_args!(
                "UID MOVE from {folder} to {dest} failed: {}",
                done.text
            ))));
        }
        if let Some((validity, pairs)) = copied {
            return self.new_ids(folder, uids, dest, validity, pairs);
        }
        // No COPYUID: UIDs are assigned in order from UIDNEXT.
        let (validity, next) = before.unwrap_or((0, 0));
        let (after_validity, after) = self.uid_next(dest).await?;
        if after_validity == validity && after.checked_sub(next) == Some(uids.len() as u32) {
            return Ok(uids
                .iter()
                .enumerate()
                .map(|(i, uid)| (*uid, imap_id(dest, validity, next + i as u32)))
                .collect());
        }
        tracing::warn!(server = %self.server, "moved without COPYUID; new ids unknown");
        Ok(BTreeMap::new())
    }

    async fn uid_next(&mut self, folder: &str) -> Result<(u32, u32), Failure> {
        let mut validity = 0;
        let mut next = 0;
        self.command_ok(
            &format!("STATUS \"{folder}\" (UIDVALIDITY UIDNEXT)"),
            &format!("STATUS {folder}"),
            |r| {
                if let Response::MailboxData(async_imap::imap_proto::MailboxDatum::Status {
                    status,
                    ..
                }) = r
                {
                    for s in status {
                        match s {
                            async_imap::imap_proto::StatusAttribute::UidValidity(v) => {
                                validity = *v
                            }
                            async_imap::imap_proto::StatusAttribute::UidNext(n) => next = *n,
                            _ => {}
                        }
                    }
                }
            },
        )
        .await?;
        Ok((validity, next))
    }

    /// Without MOVE (UIDPLUS): copy, mark exactly these UIDs `\Deleted`,
    /// and expunge exactly these UIDs.
    async fn copy_and_expunge(
        &mut self,
        folder: &str,
        uids: &[u32],
        dest: &str,
        changed: &mut bool,
    ) -> Result<BTreeMap<u32, String>, Failure> {
        let set = uid_set(uids);
        *changed = true;
        let mut copied = None;
        let done = self
            .command(
                &format!("UID COPY {set} \"{dest}\""),
                &format!("UID COPY from {folder} to {dest}"),
                |r| {
                    if let Some(c) = copy_uid(r) {
                        copied = Some(c);
                    }
                },
            )
            .await?;
        if !done.ok {
            return Err(Failure::mail(self.error(format_args!(
                "UID COPY from {folder} to {dest} failed: {}",
                done.text
            ))));
        }
        let new = match copied {
            Some((validity, pairs)) => self.new_ids(folder, uids, dest, validity, pairs)?,
            None => BTreeMap::new(),
        };
        self.command_ok(
            &format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"),
            &format!("UID STORE \\Deleted in {folder} (the copies are in {dest})"),
            |_| {},
        )
        .await?;
        self.command_ok(
            &format!("UID EXPUNGE {set}"),
            &format!("UID EXPUNGE in {folder} (the copies are in {dest})"),
            |_| {},
        )
        .await?;
        Ok(new)
    }

    /// The new ids of `uids` from a COPYUID answer; every UID must be in it.
    fn new_ids(
        &self,
        folder: &str,
        uids: &[u32],
        dest: &str,
        validity: u32,
        pairs: Vec<(u32, u32)>,
    ) -> Result<BTreeMap<u32, String>, Failure> {
        let map: BTreeMap<u32, String> = pairs
            .into_iter()
            .map(|(from, to)| (from, imap_id(dest, validity, to)))
            .collect();
        let missing: Vec<String> = uids
            .iter()
            .filter(|u| !map.contains_key(u))
            .map(|u| u.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(Failure::mail(self.error(format_args!(
                "the server did not move UIDs {} of {folder} to {dest} (they vanished meanwhile)",
                missing.join(",")
            ))));
        }
        Ok(map)
    }
}

/// A COPYUID code in a response: the destination's UIDVALIDITY and the
/// (source, destination) UID pairs.
fn copy_uid(r: &Response<'_>) -> Option<(u32, Vec<(u32, u32)>)> {
    let outcome = match r {
        Response::Data { outcome, .. } | Response::Done { outcome, .. } => outcome,
        _ => return None,
    };
    let Some(ResponseCode::CopyUid(validity, from, to)) = &outcome.code else {
        return None;
    };
    let expand = |set: &[UidSetMember]| -> Option<Vec<u32>> {
        let mut out = Vec::new();
        for member in set {
            match member {
                UidSetMember::Uid(u) => out.push(*u),
                UidSetMember::UidRange(r) => {
                    let (a, b) = (*r.start().min(r.end()), *r.start().max(r.end()));
                    if b - a > 10_000 {
                        return None;
                    }
                    out.extend(a..=b);
                }
            }
        }
        Some(out)
    };
    let (from, to) = (expand(from)?, expand(to)?);
    (from.len() == to.len()).then(|| (*validity, from.into_iter().zip(to).collect()))
}

/// `1,5,7` (ascending).
fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
        .iter()
        .map(|u| u.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn fetched(attributes: &[AttributeValue<'_>]) -> Fetched {
    let mut f = Fetched::default();
    for a in attributes {
        match a {
            AttributeValue::Uid(u) => f.uid = Some(*u),
            AttributeValue::Rfc822Size(n) => f.size = Some(*n),
            AttributeValue::Flags(flags) => {
                f.seen = flags.iter().any(|fl| fl.eq_ignore_ascii_case("\\Seen"))
            }
            AttributeValue::InternalDate(d) => f.internal_date = internal_date(d),
            AttributeValue::Envelope(e) => f.envelope = Some(envelope_facts(e)),
            AttributeValue::BodySection {
                section: Some(_),
                data,
                ..
            } => f.list_header = Some(data.as_deref().unwrap_or_default().to_vec()),
            AttributeValue::BodySection {
                section: None,
                data: Some(data),
                ..
            }
            | AttributeValue::Rfc822(Some(data)) => f.body = Some(data.to_vec()),
            _ => {}
        }
    }
    f
}

/// The listing of a fetched message, and its INTERNALDATE (a sort key).
fn summary(folder: &str, uid_validity: u32, uid: u32, f: &Fetched) -> (MessageSummary, i64) {
    let envelope = f.envelope.as_ref();
    let is_list_mail = f.list_header.as_ref().is_some_and(|h| {
        MessageParser::default()
            .parse_headers(h)
            .is_some_and(|m| !m.list_unsubscribe().is_empty() || !m.list_id().is_empty())
    });
    (
        MessageSummary {
            id: imap_id(folder, uid_validity, uid),
            folder: folder.to_string(),
            from: envelope.map(|e| e.from.clone()).unwrap_or_default(),
            subject: envelope.map(|e| e.subject.clone()).unwrap_or_default(),
            date: envelope.map(|e| e.date.clone()).unwrap_or_default(),
            is_list_mail,
            seen: f.seen,
            size: u64::from(f.size.unwrap_or(0)),
        },
        f.internal_date,
    )
}

/// INTERNALDATE (`01-Sep-2026 10:00:00 +0000`) as seconds since 1970.
fn internal_date(d: &str) -> i64 {
    mail_parser::DateTime::parse_rfc822(&d.trim().replacen('-', " ", 2))
        .map(|t| t.to_timestamp())
        .unwrap_or(0)
}

/// Decode an envelope field the way the Maildir backend decodes the
/// header (mail-parser): RFC 2047 words, charsets; line breaks unfolded.
fn header_value(name: &str, raw: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(name.len() + raw.len() + 8);
    header.extend_from_slice(name.as_bytes());
    header.extend_from_slice(b": ");
    header.extend(
        raw.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    header.extend_from_slice(b"\r\n\r\n");
    header
}

fn decode_text(raw: &[u8]) -> String {
    let header = header_value("Subject", raw);
    MessageParser::default()
        .parse_headers(&header)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(raw).trim().to_string())
}

fn decode_date(raw: &[u8]) -> String {
    let header = header_value("Date", raw);
    MessageParser::default()
        .parse_headers(&header)
        .and_then(|m| m.date().map(|d| d.to_rfc3339()))
        .unwrap_or_default()
}

fn envelope_addresses(addresses: &[Address<'_>]) -> String {
    let parts: Vec<String> = addresses
        .iter()
        // Group markers have no host.
        .filter(|a| a.host.is_some())
        .map(|a| {
            let name = a.name.as_deref().map(decode_text).filter(|n| !n.is_empty());
            let address = match (&a.mailbox, &a.host) {
                (Some(m), Some(h)) => Some(format!(
                    "{}@{}",
                    String::from_utf8_lossy(m),
                    String::from_utf8_lossy(h)
                )),
                _ => None,
            };
            match (name, address) {
                (Some(name), Some(addr)) => format!("{name} <{addr}>"),
                (None, Some(addr)) => addr,
                (Some(name), None) => name,
                (None, None) => String::new(),
            }
        })
        .collect();
    parts.join(", ")
}

fn envelope_facts(e: &Envelope<'_>) -> EnvelopeFacts {
    EnvelopeFacts {
        from: e
            .from
            .as_deref()
            .map(envelope_addresses)
            .unwrap_or_default(),
        subject: e.subject.as_deref().map(decode_text).unwrap_or_default(),
        date: e.date.as_deref().map(decode_date).unwrap_or_default(),
    }
}

fn clip(text: &str) -> String {
    super::truncate(text.trim(), MAX_SERVER_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_canonical() {
        assert_eq!(
            parse_imap_id("INBOX/1796000278.42").unwrap(),
            ("INBOX", 1796000278, 42)
        );
        for bad in [
            "INBOX/42",
            "INBOX/0.42",
            "INBOX/1.0",
            "INBOX/01.42",
            "INBOX/1.042",
            "INBOX/1.42.3",
            "INBOX/+1.42",
            "INBOX/1.4294967296",
            "inbox/1.2",
            "Inbox/1.2",
            "IN*/1.2",
            "IN%/1.2",
            "a/b/1.2",
            "../1.2",
            "\"INBOX\"/1.2",
        ] {
            assert!(parse_imap_id(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn settings_are_checked() {
        let parse = |text: &str| -> ImapSettings { toml::from_str(text).unwrap() };
        let base = "host = \"imap.example.org\"\nuser = \"alice\"\n";
        assert!(
            parse(&format!("{base}password_env = \"P\"\n"))
                .check()
                .is_ok()
        );
        let s = parse(&format!("{base}password_env = \"P\"\n"));
        assert_eq!((s.port(), s.tls), (993, TlsMode::Implicit));
        assert!(parse(base).check().unwrap_err().contains("exactly one"));
        let clear = parse(&format!("{base}password_env = \"P\"\ntls = \"none\"\n"));
        assert!(clear.check().unwrap_err().contains("in clear"));
        let local =
            parse("host = \"127.0.0.1\"\nuser = \"a\"\npassword_env = \"P\"\ntls = \"none\"\n");
        assert!(local.check().is_ok());
        assert_eq!(local.port(), 143);
        assert!(toml::from_str::<ImapSettings>(&format!("{base}pasword_env = \"P\"\n")).is_err());
    }

    #[test]
    fn envelope_fields_decode_like_the_maildir_backend() {
        assert_eq!(decode_text(b"=?utf-8?q?caf=C3=A9?="), "café");
        assert_eq!(
            decode_date(b"Tue, 01 Sep 2026 10:00:00 +0000"),
            "2026-09-01T10:00:00Z"
        );
        assert_eq!(decode_date(b"not a date"), "");
        assert!(
            internal_date("02-Sep-2026 00:00:00 +0000")
                > internal_date("01-Oct-2025 00:00:00 +0000")
        );
        assert_eq!(internal_date(" 1-Jan-1970 00:00:10 +0000"), 10);
    }

    #[test]
    fn literal_announcements_are_found_across_reads_and_inside_literals() {
        let mut l = Literals::default();
        assert_eq!(l.feed(b"* 1 FETCH (BODY[] {5}\r\nab"), 5);
        // A quoted `{9}` is no announcement; one split across reads is.
        assert_eq!(l.feed(b"c \"{9}\" {12"), 0);
        assert_eq!(l.feed(b"}\r"), 0);
        assert_eq!(l.feed(b"\n"), 12);
        // A `{26}` in a status text does not hide the announcement after it.
        assert_eq!(
            l.feed(b"* OK hello {26}\r\n* 1 FETCH (UID 1 BODY[] {400000000}\r\n"),
            400_000_000
        );
    }

    #[test]
    fn copyuid_pairs_expand() {
        assert_eq!(uid_set(&[5, 1, 3, 1]), "1,3,5");
        let (_, tagged) = Response::parse(b"A3 OK [COPYUID 9 1:2,5 10:12] Done\r\n").unwrap();
        assert_eq!(
            copy_uid(&tagged),
            Some((9, vec![(1, 10), (2, 11), (5, 12)]))
        );
        // Sets of different sizes, or ranges too large to expand, are no answer.
        let (_, odd) = Response::parse(b"* OK [COPYUID 9 1:3 10:11] Done\r\n").unwrap();
        assert_eq!(copy_uid(&odd), None);
        let (_, huge) =
            Response::parse(b"* OK [COPYUID 9 1:4000000000 1:4000000000] x\r\n").unwrap();
        assert_eq!(copy_uid(&huge), None);
    }
}
