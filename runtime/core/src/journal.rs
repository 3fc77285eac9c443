//! The append-only, hash-chained audit journal (SQLite, embedded).
//!
//! Every consent request, decision, token mint, capability call, outcome,
//! refusal, revocation and stop is a record. Each record's hash covers its
//! content and the previous record's hash, so an edited, removed or
//! reordered record breaks the chain at a named sequence number.
//!
//! Write-ahead: the `call` record of a side effect is committed and synced
//! to disk before the backend is touched, and an `outcome` record referring
//! to it follows. Records that precede no effect (requests, decisions,
//! outcomes, refusals) are committed without a sync of their own: the WAL is
//! appended in order, so the next durable record's sync carries them, and a
//! crash of the process (not of the machine) loses nothing. A `call` without
//! an outcome is reported by [`Journal::verify`] as "started, outcome
//! unknown". If the journal cannot be written, the effect does not happen.
//!
//! Group commit: commits go to the WAL without waiting for the disk
//! (`synchronous=NORMAL`), and a durable record then waits until the WAL is
//! synced past it. One caller syncs at a time; records committed while that
//! sync runs wait for the next one, which carries them all. So concurrent
//! calls share an fsync, and each one's intent is still on disk before its
//! effect starts. The records of one consent (request, decision, token) are
//! one transaction ([`Journal::append_all`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The hash that precedes the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A journal that cannot be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite failed.
    #[error("journal {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The folder could not be created.
    #[error("journal {path}: {source}")]
    Io {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A tool asked for consent.
    ConsentRequest,
    /// The request was decided (approved, subset, declined, timed out,
    /// not granted, invalid, stopped).
    Decision,
    /// A token was minted from a decision.
    TokenMinted,
    /// A capability call passed the Gate; written before the effect.
    Call,
    /// What the backend did for a `call`.
    Outcome,
    /// The Gate refused a call.
    Refusal,
    /// A token was revoked.
    Revocation,
    /// A session was stopped (or, with session `*`, everything: new
    /// sessions start stopped until a resume).
    Stop,
    /// A person resumed after a stop of everything.
    Resume,
    /// A tool call ended in a trap or limit (forged handle, loop, ...).
    ToolFailure,
}

impl Kind {
    /// Whether the record must be on disk before `append` returns: the
    /// intent of an effect, and the acknowledgement of a stop.
    pub fn is_durability_point(self) -> bool {
        matches!(
            self,
            Kind::Call | Kind::Stop | Kind::Revocation | Kind::Resume
        )
    }
}

impl Kind {
    /// The name stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ConsentRequest => "consent-request",
            Kind::Decision => "decision",
            Kind::TokenMinted => "token-minted",
            Kind::Call => "call",
            Kind::Outcome => "outcome",
            Kind::Refusal => "refusal",
            Kind::Revocation => "revocation",
            Kind::Stop => "stop",
            Kind::Resume => "resume",
            Kind::ToolFailure => "tool-failure",
        }
    }
}

/// A record to append.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What the record is about.
    pub kind: Kind,
    /// The session.
    pub session: String,
    /// The tool's name.
    pub tool: String,
    /// The tool's component digest.
    pub tool_digest: String,
    /// The capability concerned, if any.
    pub capability: Option<String>,
    /// The targets concerned.
    pub targets: Vec<String>,
    /// The payload or arguments, digested (and kept only if the policy says).
    pub payload: Option<String>,
    /// Who decided (`human via terminal`, `standing grant`, `policy`).
    pub decided_by: Option<String>,
    /// What happened.
    pub outcome: Option<String>,
    /// The record this one answers (an outcome's call).
    pub ref_seq: Option<i64>,
    /// Anything else worth keeping (token id, expiry, the tool's claim).
    pub detail: Value,
    /// The entry of the same [`Journal::append_all`] this one answers.
    answers_entry: Option<usize>,
}

/// A stored record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Position in the total order, from 1.
    pub seq: i64,
    /// RFC 3339 time of writing.
    pub time: String,
    /// The session.
    pub session: String,
    /// The tool.
    pub tool: String,
    /// Its component digest.
    pub tool_digest: String,
    /// What the record is about.
    pub kind: String,
    /// The capability.
    pub capability: Option<String>,
    /// Targets.
    pub targets: Vec<String>,
    /// SHA-256 of the payload or arguments.
    pub payload_digest: Option<String>,
    /// The payload itself, only when the policy records payloads.
    pub payload: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// What happened.
    pub outcome: Option<String>,
    /// The record this one answers.
    pub ref_seq: Option<i64>,
    /// Extra facts.
    pub detail: Value,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// Feeds what is written into a SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Record {
    /// SHA-256 of the record's fields as one compact JSON array (every
    /// field but the hash), streamed into the digest.
    fn content_hash(&self) -> String {
        let content = (
            self.seq,
            &self.time,
            &self.session,
            &self.tool,
            &self.tool_digest,
            &self.kind,
            &self.capability,
            &self.targets,
            &self.payload_digest,
            &self.payload,
            &self.decided_by,
            &self.outcome,
            self.ref_seq,
            &self.detail,
            &self.prev_hash,
        );
        let mut hasher = HashWriter(Sha256::new());
        // A tuple is written as a JSON array: the bytes the hash has always
        // covered, without building them first.
        let _ = serde_json::to_writer(&mut hasher, &content);
        hex::encode(hasher.0.finalize())
    }

    /// One line for humans.
    pub fn summary_line(&self) -> String {
        // Every field can hold text a tool or an outside sender chose: the
        // line goes through the one rendering path and stays one line.
        use crate::render::one_line;
        let field = |text: &str| one_line(text, 300);
        let mut line = format!(
            "#{} {} [{}] {} {}",
            self.seq,
            field(&self.time),
            field(&self.session),
            field(&self.tool),
            field(&self.kind)
        );
        if let Some(c) = &self.capability {
            line.push_str(&format!(" {}", field(c)));
        }
        if let Some(d) = &self.decided_by {
            line.push_str(&format!(" by {}", field(d)));
        }
        if let Some(o) = &self.outcome {
            line.push_str(&format!(": {}", one_line(o, 1000)));
        }
        if let Some(r) = self.ref_seq {
            line.push_str(&format!(" (re #{r})"));
        }
        match self.targets.as_slice() {
            [] => {}
            [one] => line.push_str(&format!(" [{}]", field(one))),
            [first, rest @ ..] => {
                line.push_str(&format!(" [{} +{} more]", field(first), rest.len()))
            }
        }
        line
    }
}

/// The chain's head as anchored outside the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Head {
    /// The sequence number of the newest anchored record.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
}

/// What `verify` saw of the records, kept while it streams through them,
/// for the anchor check: no record is held in memory.
#[derive(Debug, Default)]
struct ChainSeen {
    /// The sequence number of the last record (0 if none).
    last: i64,
    /// The first durable record (call, stop, revocation, resume).
    first_durable: Option<i64>,
    /// The hash of the record at the anchored head's position, if any.
    hash_at_head: Option<String>,
}

/// What the anchor says is wrong with the records `seen`, if anything: newest
/// records removed (truncation), or the file replaced by an older or other
/// copy (rollback), or an anchor missing from a journal that has durable
/// records.
fn anchor_problem(head: Option<&Head>, seen: &ChainSeen) -> Option<(i64, String)> {
    let last = seen.last;
    let Some(head) = head else {
        let durable = seen.first_durable?;
        return Some((
            durable,
            "the head anchor (journal.head file) is missing, though durable records exist: it was deleted, or the journal was copied without it".into(),
        ));
    };
    if last < head.seq {
        return Some((
            last + 1,
            format!(
                "TRUNCATED or ROLLED BACK: the journal ends at #{last}, but its head anchor says #{} was written (newest records removed, the file replaced by an older copy, or records lost in a power failure)",
                head.seq
            ),
        ));
    }
    match &seen.hash_at_head {
        Some(hash) if *hash == head.hash => None,
        _ => Some((
            head.seq,
            format!(
                "ROLLED BACK or REPLACED: record #{} is not the one the head anchor names (hash {}); the file was replaced by another copy",
                head.seq,
                head.hash.chars().take(16).collect::<String>()
            ),
        )),
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Records checked.
    pub records: i64,
    /// The first record that breaks the chain, and how.
    pub broken: Option<(i64, String)>,
    /// `call` records with no outcome: started, outcome unknown.
    pub unfinished: Vec<i64>,
}

/// The journal.
pub struct Journal {
    path: PathBuf,
    conn: Mutex<Connection>,
    record_payloads: bool,
    /// The head anchor, kept open and rewritten in place.
    head: Mutex<Option<HeadFile>>,
    /// Whether commits wait for no disk and durable records are synced by
    /// [`Journal::make_durable`] (the WAL could be used); otherwise every
    /// commit is synced by SQLite itself.
    group_commit: bool,
    /// The newest record this process committed.
    committed: AtomicI64,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// The WAL file as SQLite names it (after its own path resolution).
    wal_path: PathBuf,
    /// The WAL file, opened for syncing once it exists.
    wal: Mutex<Option<File>>,
}

/// Where the group sync stands.
#[derive(Debug, Default)]
struct SyncState {
    /// Every record this process committed up to here is on disk.
    durable: i64,
    /// A caller is syncing now.
    syncing: bool,
    /// Syncs done (for the benchmarks' fsyncs-per-call).
    syncs: u64,
    /// Callers waiting for the sync under way.
    waiting: usize,
    /// A sync failed: what was written since may not be on disk, and no
    /// later sync can vouch for it, so every durable append fails.
    failed: Option<String>,
}

/// A file's device and inode.
fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// The open anchor file.
struct HeadFile {
    file: File,
    /// Its device and inode, to see it replaced at the path.
    id: (u64, u64),
    /// Writes since it was opened.
    writes: u64,
}

/// Every how many writes the anchor's path is checked to still be the open
/// file.
const HEAD_CHECK_EVERY: u64 = 16;

/// How long a sync waits at most for more records when calls run side by
/// side.
const GROUP_WINDOW: std::time::Duration = std::time::Duration::from_micros(500);
/// How many callers waiting for one sync end that wait at once.
const GROUP_FULL: usize = 8;

/// The anchor's size on disk: one JSON object padded with spaces, rewritten
/// in place by one write.
const HEAD_LEN: usize = 160;

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Journal {
    /// The default location: `$AGENTCAP_JOURNAL`, else
    /// `$XDG_DATA_HOME/agentcap/journal.sqlite`, else
    /// `~/.local/share/agentcap/journal.sqlite`.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("AGENTCAP_JOURNAL") {
            return PathBuf::from(p);
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        data.join("agentcap").join("journal.sqlite")
    }

    /// Open (creating if needed) the journal at `path`.
    pub fn open(path: &Path, record_payloads: bool) -> Result<Journal, JournalError> {
        let sqlite = |source| JournalError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sqlite)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sqlite)?;
        // With a WAL, commits are appended without waiting for the disk, and
        // durable records are synced by the group sync; without one (a file
        // system without shared memory), SQLite syncs every commit.
        let group_commit = mode.eq_ignore_ascii_case("wal");
        conn.pragma_update(
            None,
            "synchronous",
            if group_commit { "NORMAL" } else { "FULL" },
        )
        .map_err(sqlite)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (
                seq INTEGER PRIMARY KEY,
                time TEXT NOT NULL,
                session TEXT NOT NULL,
                tool TEXT NOT NULL,
                tool_digest TEXT NOT NULL,
                kind TEXT NOT NULL,
                capability TEXT,
                targets TEXT NOT NULL,
                payload_digest TEXT,
                payload TEXT,
                decided_by TEXT,
                outcome TEXT,
                ref_seq INTEGER,
                detail TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS records_session ON records(session, seq);",
        )
        .map_err(sqlite)?;
        // The WAL SQLite writes is named after the database's full path as
        // SQLite resolved it (symbolic links followed).
        let wal_path = conn
            .path()
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(format!("{p}-wal")))
            .unwrap_or_else(|| {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push("-wal");
                path.with_file_name(name)
            });
        Ok(Journal {
            path: path.to_path_buf(),
            wal_path,
            conn: Mutex::new(conn),
            record_payloads,
            head: Mutex::new(None),
            group_commit,
            committed: AtomicI64::new(0),
            sync: Mutex::new(SyncState::default()),
            synced: Condvar::new(),
            wal: Mutex::new(None),
        })
    }

    /// Where the journal is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self, source: rusqlite::Error) -> JournalError {
        JournalError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Append a record; returns its sequence number once it is committed,
    /// and for a [`Kind::is_durability_point`] once it (and every record
    /// before it) is on disk.
    pub fn append(&self, entry: Entry) -> Result<i64, JournalError> {
        let seqs = self.append_all(vec![entry])?;
        Ok(seqs[0])
    }

    /// Append `entries` in one transaction, in order; returns their
    /// sequence numbers once committed, and once on disk if any of them is
    /// a [`Kind::is_durability_point`].
    pub fn append_all(&self, entries: Vec<Entry>) -> Result<Vec<i64>, JournalError> {
        let durable = entries.iter().any(|e| e.kind.is_durability_point());
        let seqs = self.commit(entries)?;
        if durable && let Some(&last) = seqs.last() {
            self.make_durable(last)?;
        }
        Ok(seqs)
    }

    /// Commit `entries` as one transaction (to the WAL, not yet synced) and
    /// move the head anchor.
    fn commit(&self, entries: Vec<Entry>) -> Result<Vec<i64>, JournalError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.sqlite(e))?;
        // Statements are prepared once per connection (cached), not parsed
        // on every append.
        let last: Option<(i64, String)> = tx
            .prepare_cached("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1")
            .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(|e| self.sqlite(e))?;
        let (mut prev_seq, mut prev_hash) = last.unwrap_or((0, GENESIS.to_string()));
        let mut seqs = Vec::with_capacity(entries.len());
        for entry in entries {
            let ref_seq = match entry.answers_entry {
                Some(index) => seqs.get(index).copied(),
                None => entry.ref_seq,
            };
            let mut record = Record {
                seq: prev_seq + 1,
                time: now_rfc3339(),
                session: entry.session,
                tool: entry.tool,
                tool_digest: entry.tool_digest,
                kind: entry.kind.as_str().to_string(),
                capability: entry.capability,
                targets: entry.targets,
                payload_digest: entry
                    .payload
                    .as_ref()
                    .map(|p| hex::encode(Sha256::digest(p.as_bytes()))),
                payload: if self.record_payloads {
                    entry.payload
                } else {
                    None
                },
                decided_by: entry.decided_by,
                outcome: entry.outcome,
                ref_seq,
                detail: entry.detail,
                prev_hash,
                hash: String::new(),
            };
            record.hash = record.content_hash();
            tx.prepare_cached(
                "INSERT INTO records (seq, time, session, tool, tool_digest, kind, capability, targets,
                    payload_digest, payload, decided_by, outcome, ref_seq, detail, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    record.seq,
                    record.time,
                    record.session,
                    record.tool,
                    record.tool_digest,
                    record.kind,
                    record.capability,
                    serde_json::to_string(&record.targets).unwrap_or_default(),
                    record.payload_digest,
                    record.payload,
                    record.decided_by,
                    record.outcome,
                    record.ref_seq,
                    record.detail.to_string(),
                    record.prev_hash,
                    record.hash,
                ])
            })
            .map_err(|e| self.sqlite(e))?;
            seqs.push(record.seq);
            prev_seq = record.seq;
            prev_hash = record.hash;
        }
        tx.commit().map_err(|e| self.sqlite(e))?;
        // In the WAL now: a sync that starts after this covers it.
        self.committed.store(prev_seq, Ordering::SeqCst);
        // Every commit moves the anchor (while the connection is held, so
        // this process's anchors are written in order).
        self.write_head(&Head {
            seq: prev_seq,
            hash: prev_hash,
        })?;
        Ok(seqs)
    }

    /// Return once every record up to `seq` that this process committed is
    /// on disk. One caller syncs the WAL at a time; callers arriving
    /// meanwhile wait (off the async workers when in a multi-threaded tokio
    /// runtime), and the next sync covers all of them.
    fn make_durable(&self, seq: i64) -> Result<(), JournalError> {
        if !self.group_commit {
            return Ok(());
        }
        {
            let state = self.sync.lock().unwrap_or_else(|p| p.into_inner());
            if state.failed.is_none() && state.durable >= seq {
                return Ok(());
            }
        }
        let in_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if in_worker {
            // While this thread waits for the disk, the runtime's other
            // tasks move to another thread: their calls commit meanwhile and
            // ride the next sync.
            tokio::task::block_in_place(|| self.wait_durable(seq))
        } else {
            self.wait_durable(seq)
        }
    }

    fn wait_durable(&self, seq: i64) -> Result<(), JournalError> {
        let mut state = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(why) = &state.failed {
                return Err(JournalError::Io {
                    path: self.wal_path.clone(),
                    source: std::io::Error::other(format!(
                        "an earlier sync of the journal to disk failed ({why}); nothing more is made durable"
                    )),
                });
            }
            if state.durable >= seq {
                return Ok(());
            }
            if state.syncing {
                state.waiting += 1;
                state = self.synced.wait(state).unwrap_or_else(|p| p.into_inner());
                state.waiting -= 1;
                continue;
            }
            state.syncing = true;
            // Others waited for the last sync too: calls are running side
            // by side, so wait a moment (until GROUP_FULL callers wait, at
            // most GROUP_WINDOW) for more of their records to ride this sync,
            // as PostgreSQL's commit_delay. One caller alone never waits.
            if state.waiting > 0 {
                let window = std::time::Instant::now() + GROUP_WINDOW;
                while state.waiting + 1 < GROUP_FULL && std::time::Instant::now() < window {
                    drop(state);
                    std::thread::sleep(GROUP_WINDOW / 10);
                    state = self.sync.lock().unwrap_or_else(|p| p.into_inner());
                }
            }
            drop(state);
            let through = self.committed.load(Ordering::SeqCst);
            let result = self.sync_wal();
            state = self.sync.lock().unwrap_or_else(|p| p.into_inner());
            state.syncing = false;
            match result {
                Ok(()) => {
                    state.durable = state.durable.max(through);
                    state.syncs += 1;
                }
                Err(e) => state.failed = Some(e.to_string()),
            }
            self.synced.notify_all();
        }
    }

    /// Sync the WAL file: every frame appended so far (this process's
    /// commits among them) is on disk once this returns.
    fn sync_wal(&self) -> std::io::Result<()> {
        let mut wal = self.wal.lock().unwrap_or_else(|p| p.into_inner());
        // The WAL stays while this connection is open (SQLite removes it
        // only when the last connection closes), but the file kept open
        // must be the one at the path: never sync another file in its
        // place.
        let at_path = std::fs::metadata(&self.wal_path)?;
        if wal
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .is_none_or(|open| file_id(&open) != file_id(&at_path))
        {
            *wal = Some(File::open(&self.wal_path)?);
        }
        wal.as_ref().map_or(Ok(()), File::sync_data)
    }

    /// How many times this journal synced its WAL to disk (each sync makes
    /// every record committed before it durable).
    pub fn syncs(&self) -> u64 {
        self.sync.lock().unwrap_or_else(|p| p.into_inner()).syncs
    }

    /// Where the chain's head is anchored: beside the database, outside it
    /// (`journal.sqlite.head`), so that removing the newest records or
    /// putting back an older copy of the file is detected by `verify`.
    pub fn head_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".head");
        self.path.with_file_name(name)
    }

    /// The anchored head, if one was written.
    pub fn anchored_head(&self) -> Result<Option<Head>, JournalError> {
        let path = self.head_path();
        // The anchor is rewritten in place while it may be read: a read is
        // taken once two reads in a row agree.
        let mut previous: Option<Vec<u8>> = None;
        for _ in 0..100 {
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(JournalError::Io { path, source }),
            };
            if previous.as_ref() == Some(&bytes) {
                break;
            }
            previous = Some(bytes);
        }
        let bytes = previous.unwrap_or_default();
        // An anchor never written to disk before a power loss reads as
        // nothing (or zeros): no anchor, which `verify` reports.
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |e| e + 1);
        let text = bytes[..end].trim_ascii();
        if text.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(text)
            .map(Some)
            .map_err(|e| JournalError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })
    }

    /// Anchor `head`: one write of [`HEAD_LEN`] bytes in place. It reaches
    /// the disk with the kernel's write-back; an anchor older than the
    /// records after a power failure only anchors fewer of them.
    fn write_head(&self, head: &Head) -> Result<(), JournalError> {
        let path = self.head_path();
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec(head).unwrap_or_default();
        bytes.resize(HEAD_LEN - 1, b' ');
        bytes.push(b'\n');
        let mut head_file = self.head.lock().unwrap_or_else(|p| p.into_inner());
        // The file kept open must still be the anchor at the path (not one
        // replaced by a restore or an older agentcap's rename): checked
        // every few writes, not at each (a system call per record).
        if let Some(open) = head_file.as_mut() {
            open.writes += 1;
            let still_there = open.writes % HEAD_CHECK_EVERY != 0
                || std::fs::metadata(&path).is_ok_and(|at_path| file_id(&at_path) == open.id);
            if still_there {
                return open.file.write_all_at(&bytes, 0).map_err(io);
            }
        }
        let existed = path.exists();
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        opened.write_all_at(&bytes, 0).map_err(io)?;
        // An anchor written by an older agentcap may be longer.
        opened.set_len(HEAD_LEN as u64).map_err(io)?;
        if !existed {
            // A new anchor is made durable once, with its directory entry:
            // after a power loss it is there.
            opened.sync_all().map_err(io)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
        }
        let id = file_id(&opened.metadata().map_err(io)?);
        *head_file = Some(HeadFile {
            file: opened,
            id,
            writes: 0,
        });
        Ok(())
    }

    fn query(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Record>, JournalError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare(sql).map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(args, record_from_row)
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sqlite(e))
    }

    /// Every record, in order.
    pub fn all(&self) -> Result<Vec<Record>, JournalError> {
        self.query(&format!("{SELECT} ORDER BY seq"), &[])
    }

    /// The last `n` records (of `session`, if given), oldest first.
    pub fn tail(&self, n: usize, session: Option<&str>) -> Result<Vec<Record>, JournalError> {
        let n = n as i64;
        let mut records = match session {
            Some(s) => self.query(
                &format!("{SELECT} WHERE session = ?1 ORDER BY seq DESC LIMIT ?2"),
                &[&s, &n],
            )?,
            None => self.query(&format!("{SELECT} ORDER BY seq DESC LIMIT ?1"), &[&n])?,
        };
        records.reverse();
        Ok(records)
    }

    /// Records after `seq` (of `session`, if given), oldest first.
    pub fn after(&self, seq: i64, session: Option<&str>) -> Result<Vec<Record>, JournalError> {
        match session {
            Some(s) => self.query(
                &format!("{SELECT} WHERE seq > ?1 AND session = ?2 ORDER BY seq"),
                &[&seq, &s],
            ),
            None => self.query(&format!("{SELECT} WHERE seq > ?1 ORDER BY seq"), &[&seq]),
        }
    }

    /// Up to `limit` records after `seq`, oldest first.
    pub fn range(&self, seq: i64, limit: usize) -> Result<Vec<Record>, JournalError> {
        let limit = limit as i64;
        self.query(
            &format!("{SELECT} WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
            &[&seq, &limit],
        )
    }

    /// Check the whole chain: sequence numbers contiguous from 1, each
    /// record's `prev_hash` equal to its predecessor's hash, each hash
    /// matching the content. Also lists calls whose outcome is unknown.
    ///
    /// Streams through the records in order, one at a time: memory stays
    /// bounded by the unfinished calls, not by the journal's size.
    pub fn verify(&self) -> Result<Verification, JournalError> {
        // The anchor is read first: records appended while the check runs
        // come after it, and leave the anchored record where it was.
        let head = self.anchored_head()?;
        let head_seq = head.as_ref().map(|h| h.seq);
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn
            .prepare(&format!("{SELECT} ORDER BY seq"))
            .map_err(|e| self.sqlite(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.sqlite(e))?;
        let mut chain = ChainCheck::default();
        let mut seen = ChainSeen::default();
        let mut count: i64 = 0;
        // Calls without an outcome so far, and outcomes naming a call not
        // seen yet (a record out of order is reported as broken, but the
        // unfinished list stays the same as over the whole set).
        let mut open_calls = std::collections::BTreeSet::new();
        let mut early_answers = std::collections::HashSet::new();
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            let r = record_from_row(row).map_err(|e| self.sqlite(e))?;
            count += 1;
            let expected_seq = count;
            chain.next(&r);
            seen.last = r.seq;
            if seen.first_durable.is_none()
                && matches!(r.kind.as_str(), "call" | "stop" | "revocation" | "resume")
            {
                seen.first_durable = Some(r.seq);
            }
            if Some(expected_seq) == head_seq {
                seen.hash_at_head = Some(r.hash.clone());
            }
            if r.kind == Kind::Call.as_str() {
                if !early_answers.remove(&r.seq) {
                    open_calls.insert(r.seq);
                }
            } else if r.kind == Kind::Outcome.as_str()
                && let Some(answered) = r.ref_seq
                && !open_calls.remove(&answered)
            {
                early_answers.insert(answered);
            }
        }
        let mut broken = chain.broken;
        if broken.is_none() {
            broken = anchor_problem(head.as_ref(), &seen);
        }
        Ok(Verification {
            records: count,
            broken,
            unfinished: open_calls.into_iter().collect(),
        })
    }
}

/// A hash chain checked one record at a time, from record #1: sequence
/// numbers contiguous, each `prev_hash` its predecessor's hash, each hash
/// matching the content.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    /// Records that held.
    pub records: i64,
    prev_hash: String,
    /// The first record that breaks the chain, and how.
    pub broken: Option<(i64, String)>,
}

impl Default for ChainCheck {
    fn default() -> ChainCheck {
        ChainCheck {
            records: 0,
            prev_hash: GENESIS.to_string(),
            broken: None,
        }
    }
}

impl ChainCheck {
    /// Check the next record; false once the chain is broken.
    pub fn next(&mut self, r: &Record) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let expected_seq = self.records + 1;
        let problem = if r.seq != expected_seq {
            Some(format!(
                "expected record #{expected_seq} here, found #{} (records removed or reordered)",
                r.seq
            ))
        } else if r.prev_hash != self.prev_hash {
            Some("its previous-hash does not match the record before it (a record was removed or reordered)".to_string())
        } else if r.content_hash() != r.hash {
            Some("its content does not match its hash (the record was altered)".to_string())
        } else {
            None
        };
        match problem {
            Some(problem) => {
                self.broken = Some((r.seq, problem));
                false
            }
            None => {
                self.records += 1;
                self.prev_hash = r.hash.clone();
                true
            }
        }
    }
}

/// A record from a row of [`SELECT`].
fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    let targets: String = r.get(7)?;
    let detail: String = r.get(13)?;
    Ok(Record {
        seq: r.get(0)?,
        time: r.get(1)?,
        session: r.get(2)?,
        tool: r.get(3)?,
        tool_digest: r.get(4)?,
        kind: r.get(5)?,
        capability: r.get(6)?,
        targets: serde_json::from_str(&targets)
            .unwrap_or_else(|_| vec![format!("<unreadable: {targets}>")]),
        payload_digest: r.get(8)?,
        payload: r.get(9)?,
        decided_by: r.get(10)?,
        outcome: r.get(11)?,
        ref_seq: r.get(12)?,
        detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
        prev_hash: r.get(14)?,
        hash: r.get(15)?,
    })
}

const SELECT: &str = "SELECT seq, time, session, tool, tool_digest, kind, capability, targets,
    payload_digest, payload, decided_by, outcome, ref_seq, detail, prev_hash, hash FROM records";

impl Entry {
    /// An entry of `kind` for `session`/`tool`.
    pub fn new(kind: Kind, session: &str, tool: &str, tool_digest: &str) -> Entry {
        Entry {
            kind,
            session: session.to_string(),
            tool: tool.to_string(),
            tool_digest: tool_digest.to_string(),
            capability: None,
            targets: Vec::new(),
            payload: None,
            decided_by: None,
            outcome: None,
            ref_seq: None,
            detail: json!({}),
            answers_entry: None,
        }
    }

    /// Set the capability.
    pub fn capability(mut self, capability: &str) -> Entry {
        self.capability = Some(capability.to_string());
        self
    }

    /// Set the targets.
    pub fn targets(mut self, targets: &[String]) -> Entry {
        self.targets = targets.to_vec();
        self
    }

    /// Set the payload (digested; kept only if the policy says so).
    pub fn payload(mut self, payload: Option<&str>) -> Entry {
        self.payload = payload.map(str::to_string);
        self
    }

    /// Set who decided.
    pub fn decided_by(mut self, by: impl Into<String>) -> Entry {
        self.decided_by = Some(by.into());
        self
    }

    /// Set what happened.
    pub fn outcome(mut self, outcome: impl Into<String>) -> Entry {
        self.outcome = Some(outcome.into());
        self
    }

    /// Refer to an earlier record.
    pub fn answers(mut self, seq: i64) -> Entry {
        self.ref_seq = Some(seq);
        self
    }

    /// Refer to the entry at `index` of the same [`Journal::append_all`]
    /// (whose number is known only once the batch is written).
    pub fn answers_entry(mut self, index: usize) -> Entry {
        self.answers_entry = Some(index);
        self
    }

    /// Add a fact to `detail`.
    pub fn detail(mut self, key: &str, value: impl Serialize) -> Entry {
        if let Value::Object(map) = &mut self.detail {
            map.insert(
                key.to_string(),
                serde_json::to_value(value).unwrap_or(Value::Null),
            );
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite"), false).unwrap();
        (dir, j)
    }

    fn fill(j: &Journal, n: usize) {
        for i in 0..n {
            j.append(
                Entry::new(Kind::Call, "s", "t", "d")
                    .capability("mail.delete")
                    .targets(&[format!("INBOX/{i}")])
                    .payload(Some("secret body")),
            )
            .unwrap();
        }
    }

    #[test]
    fn chain_verifies_and_payloads_are_digested_only() {
        let (_d, j) = journal();
        fill(&j, 5);
        let v = j.verify().unwrap();
        assert_eq!(v.records, 5);
        assert!(v.broken.is_none());
        assert_eq!(v.unfinished, vec![1, 2, 3, 4, 5]);
        let r = &j.all().unwrap()[0];
        assert_eq!(r.kind, "call");
        assert!(r.payload.is_none());
        assert_eq!(r.payload_digest.as_deref().unwrap().len(), 64);
        let out = j
            .append(
                Entry::new(Kind::Outcome, "s", "t", "d")
                    .answers(1)
                    .outcome("ok"),
            )
            .unwrap();
        assert_eq!(out, 6);
        assert_eq!(j.verify().unwrap().unfinished, vec![2, 3, 4, 5]);
    }

    fn tamper(j: &Journal, sql: &str) {
        j.conn.lock().unwrap().execute_batch(sql).unwrap();
    }

    #[test]
    fn an_edited_field_is_found() {
        let (_d, j) = journal();
        fill(&j, 5);
        tamper(
            &j,
            "UPDATE records SET targets = '[\"INBOX/other\"]' WHERE seq = 3",
        );
        let (seq, why) = j.verify().unwrap().broken.unwrap();
        assert_eq!(seq, 3);
        assert!(why.contains("altered"), "{why}");
    }

    #[test]
    fn a_removed_record_is_found() {
        let (_d, j) = journal();
        fill(&j, 5);
        tamper(&j, "DELETE FROM records WHERE seq = 2");
        let (seq, why) = j.verify().unwrap().broken.unwrap();
        assert_eq!(seq, 3);
        assert!(why.contains("removed or reordered"), "{why}");
    }

    #[test]
    fn swapped_records_are_found() {
        let (_d, j) = journal();
        fill(&j, 5);
        tamper(
            &j,
            "UPDATE records SET seq = -1 WHERE seq = 2;
             UPDATE records SET seq = 2 WHERE seq = 4;
             UPDATE records SET seq = 4 WHERE seq = -1;",
        );
        let (seq, _) = j.verify().unwrap().broken.unwrap();
        assert_eq!(seq, 2);
    }

    #[test]
    fn streaming_verify_finds_unfinished_calls_and_truncation() {
        let (_d, j) = journal();
        fill(&j, 3);
        j.append(
            Entry::new(Kind::Outcome, "s", "t", "d")
                .answers(2)
                .outcome("ok"),
        )
        .unwrap();
        for i in 0..200 {
            j.append(Entry::new(Kind::Decision, "s", "t", "d").outcome(format!("{i}")))
                .unwrap();
        }
        let v = j.verify().unwrap();
        assert_eq!(v.records, 204);
        assert!(v.broken.is_none(), "{:?}", v.broken);
        assert_eq!(v.unfinished, vec![1, 3]);
        // The newest records removed: the anchor still names #204.
        tamper(&j, "DELETE FROM records WHERE seq > 150");
        let v = j.verify().unwrap();
        assert_eq!(v.records, 150);
        let (seq, why) = v.broken.unwrap();
        assert_eq!(seq, 151);
        assert!(why.contains("TRUNCATED"), "{why}");
    }

    #[test]
    fn concurrent_writers_keep_one_chain() {
        let (_d, j) = journal();
        let j = std::sync::Arc::new(j);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let j = j.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        j.append(
                            Entry::new(Kind::Decision, &format!("s{t}"), "t", "d")
                                .outcome(format!("{i}")),
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let v = j.verify().unwrap();
        assert_eq!(v.records, 100);
        assert!(v.broken.is_none());
        assert_eq!(j.tail(3, Some("s1")).unwrap().len(), 3);
    }

    #[test]
    fn a_batch_is_one_chain_and_its_entries_answer_each_other() {
        let (_d, j) = journal();
        j.append(Entry::new(Kind::Refusal, "s", "t", "d")).unwrap();
        let seqs = j
            .append_all(vec![
                Entry::new(Kind::ConsentRequest, "s", "t", "d"),
                Entry::new(Kind::Decision, "s", "t", "d").answers_entry(0),
                Entry::new(Kind::TokenMinted, "s", "t", "d").answers_entry(0),
            ])
            .unwrap();
        assert_eq!(seqs, vec![2, 3, 4]);
        let records = j.all().unwrap();
        assert_eq!(records[2].ref_seq, Some(2));
        assert_eq!(records[3].ref_seq, Some(2));
        let v = j.verify().unwrap();
        assert_eq!(v.records, 4);
        assert!(v.broken.is_none(), "{:?}", v.broken);
        assert_eq!(j.anchored_head().unwrap().unwrap().seq, 4);
    }

    #[test]
    fn concurrent_durable_appends_share_syncs() {
        let (_d, j) = journal();
        let j = std::sync::Arc::new(j);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (j, barrier) = (j.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..20 {
                        let seq = j
                            .append(
                                Entry::new(Kind::Call, &format!("s{t}"), "t", "d")
                                    .outcome(format!("{i}")),
                            )
                            .unwrap();
                        // Returned only once synced past it.
                        assert!(j.sync.lock().unwrap().durable >= seq);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let v = j.verify().unwrap();
        assert_eq!(v.records, 320);
        assert!(v.broken.is_none());
        let syncs = j.syncs();
        assert!(
            (1..320).contains(&syncs),
            "320 durable appends from 16 threads took {syncs} syncs"
        );
    }

    #[test]
    fn a_failed_sync_refuses_every_later_durable_append() {
        let (_d, j) = journal();
        j.append(Entry::new(Kind::Call, "s", "t", "d")).unwrap();
        j.sync.lock().unwrap().failed = Some("EIO".into());
        let err = j.append(Entry::new(Kind::Call, "s", "t", "d")).unwrap_err();
        assert!(err.to_string().contains("EIO"), "{err}");
        // Records that precede no effect are still written.
        j.append(Entry::new(Kind::Refusal, "s", "t", "d")).unwrap();
    }

    #[test]
    fn an_anchor_of_an_older_format_is_rewritten_in_place() {
        let (d, j) = journal();
        std::fs::write(
            d.path().join("j.sqlite.head"),
            format!(
                "{{\"seq\":1,\"hash\":\"{}\"}}{}",
                "a".repeat(64),
                " ".repeat(300)
            ),
        )
        .unwrap();
        j.append(Entry::new(Kind::Call, "s", "t", "d")).unwrap();
        assert_eq!(
            std::fs::metadata(j.head_path()).unwrap().len(),
            HEAD_LEN as u64
        );
        assert!(j.verify().unwrap().broken.is_none());
    }

    #[test]
    fn a_journal_opened_through_a_symbolic_link_syncs_its_own_wal() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(real.join("j.sqlite"), dir.path().join("j.sqlite")).unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite"), false).unwrap();
        // SQLite writes real/j.sqlite-wal; a stale file beside the link is
        // not synced in its place.
        std::fs::write(dir.path().join("j.sqlite-wal"), b"stale").unwrap();
        j.append(Entry::new(Kind::Call, "s", "t", "d")).unwrap();
        j.append(Entry::new(Kind::Call, "s", "t", "d")).unwrap();
        assert_eq!(j.syncs(), 2);
        assert_eq!(
            j.wal_path.canonicalize().unwrap(),
            real.join("j.sqlite-wal").canonicalize().unwrap()
        );
        assert!(j.verify().unwrap().broken.is_none());
    }

    #[test]
    fn an_anchor_lost_to_a_power_failure_is_reported_not_an_error() {
        let (d, j) = journal();
        j.append(Entry::new(Kind::Call, "s", "t", "d")).unwrap();
        // What a file never written back reads as after a power loss.
        std::fs::write(d.path().join("j.sqlite.head"), [0u8; HEAD_LEN]).unwrap();
        let v = j.verify().unwrap();
        let (_, why) = v.broken.expect("reported");
        assert!(why.contains("missing"), "{why}");
    }

    #[test]
    fn the_hash_covers_the_same_bytes_as_ever() {
        let (_d, j) = journal();
        j.append(
            Entry::new(Kind::Outcome, "s\u{1b}\"q", "t", "d")
                .capability("mail.read")
                .targets(&["INBOX/1".to_string(), "ünï".to_string()])
                .payload(Some("body"))
                .answers(7)
                .outcome("ok")
                .detail("token", 3)
                .detail("nested", json!({"b": [1, null], "a": "x"})),
        )
        .unwrap();
        let r = &j.all().unwrap()[0];
        // How the hash was computed before it was streamed.
        let built = json!([
            r.seq,
            r.time,
            r.session,
            r.tool,
            r.tool_digest,
            r.kind,
            r.capability,
            r.targets,
            r.payload_digest,
            r.payload,
            r.decided_by,
            r.outcome,
            r.ref_seq,
            r.detail,
            r.prev_hash,
        ]);
        assert_eq!(
            r.hash,
            hex::encode(Sha256::digest(built.to_string().as_bytes()))
        );
    }

    #[test]
    fn an_anchor_replaced_at_its_path_is_written_again() {
        let (d, j) = journal();
        j.append(Entry::new(Kind::Call, "s", "t", "d")).unwrap();
        // Replaced by another file (a restore, an older agentcap's rename).
        let other = d.path().join("other");
        std::fs::write(&other, "{\"seq\":1,\"hash\":\"x\"}").unwrap();
        std::fs::rename(&other, j.head_path()).unwrap();
        for _ in 0..HEAD_CHECK_EVERY {
            j.append(Entry::new(Kind::Refusal, "s", "t", "d")).unwrap();
        }
        let head = j.anchored_head().unwrap().unwrap();
        assert_eq!(head.seq, 1 + HEAD_CHECK_EVERY as i64);
        assert!(j.verify().unwrap().broken.is_none());
    }
}
