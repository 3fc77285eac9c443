//! The `mail` capability over a Maildir++ store.
//!
//! The INBOX is the Maildir root (`cur/`, `new/`, `tmp/`); other folders are
//! `.Name` directories below it. A message id is `<folder>/<unique-name>`,
//! where the unique name is the file name without its `:2,flags` info part.
//! The store is opened through `cap-std`, so no id or folder name can reach a
//! file outside the root (no `..`, no absolute paths, no symlink escapes).
//! Nothing is ever unlinked: `delete` moves to `Trash`, `archive` to
//! `Archive`.
//!
//! The same capability can be backed by an IMAP server instead
//! ([`imap`]): `[mail] imap = { host, user, password_env, ... }`.

pub mod imap;

use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use mail_parser::{Address, MessageParser};

use serde::Deserialize;

use super::{
    Action, Capability, CapabilityPlugin, Described, Effect, Opaque, PolicyTable, Request,
};
use crate::consent::PromptItem;
use crate::host::MAX_TARGETS;
use crate::policy::Policy;

/// `mail.list`: list folders. Targets: folder names.
pub const LIST: Capability = Capability::new(&Action {
    name: "mail.list",
    effect: Effect::Reads,
    carries_payload: false,
    scope_keys: &["folders"],
});
/// `mail.read`: read messages. Targets: message ids.
pub const READ: Capability = Capability::new(&Action {
    name: "mail.read",
    effect: Effect::Reads,
    carries_payload: false,
    scope_keys: &["folders"],
});
/// `mail.archive`: move messages to Archive. Targets: message ids.
pub const ARCHIVE_ACTION: Capability = Capability::new(&Action {
    name: "mail.archive",
    effect: Effect::Changes,
    carries_payload: false,
    scope_keys: &["folders"],
});
/// `mail.delete`: move messages to Trash. Targets: message ids.
pub const DELETE: Capability = Capability::new(&Action {
    name: "mail.delete",
    effect: Effect::Destroys,
    carries_payload: false,
    scope_keys: &["folders"],
});

/// The policy's `[mail]` table: exactly one of `maildir` or `imap`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    /// The Maildir root (the INBOX); sub-folders are `.Name` below it.
    #[serde(default)]
    pub maildir: Option<PathBuf>,
    /// An IMAP server.
    #[serde(default)]
    pub imap: Option<imap::ImapSettings>,
}

/// The store behind the `mail` capability.
#[derive(Debug)]
pub enum MailStore {
    /// A local Maildir++.
    Maildir(Maildir),
    /// An IMAP server.
    Imap(imap::ImapMail),
}

impl MailStore {
    /// Open the store `settings` name (paths relative to `policy`'s file).
    pub fn open(settings: &MailSettings, policy: &Policy) -> Result<MailStore, MailError> {
        match (&settings.maildir, &settings.imap) {
            (Some(maildir), _) => Ok(MailStore::Maildir(Maildir::open(&policy.resolve(maildir))?)),
            (None, Some(imap)) => Ok(MailStore::Imap(imap::ImapMail::open(imap, |p| {
                policy.resolve(p)
            })?)),
            (None, None) => Err(MailError::Invalid(
                "[mail] has neither `maildir` nor `imap`".into(),
            )),
        }
    }

    /// List a folder, oldest first. A remote store gives up once
    /// `stopped` tells so.
    pub fn list(
        &self,
        folder: &str,
        stopped: Option<imap::StopCheck>,
    ) -> Result<Vec<MessageSummary>, MailError> {
        match self {
            MailStore::Maildir(m) => m.list(folder),
            MailStore::Imap(i) => i.list(folder, stopped),
        }
    }

    /// Read one message. A remote store gives up once `stopped` tells so.
    pub fn read(&self, id: &str, stopped: Option<imap::StopCheck>) -> Result<Message, MailError> {
        match self {
            MailStore::Maildir(m) => m.read(id),
            MailStore::Imap(i) => i.read(id, stopped),
        }
    }

    /// Move messages to `dest`; every id is checked before anything moves.
    /// A remote store sends no further command once `stopped` tells so.
    pub fn move_to(
        &self,
        ids: &[String],
        dest: &str,
        stopped: Option<imap::StopCheck>,
    ) -> Result<Vec<String>, MailError> {
        match self {
            MailStore::Maildir(m) => m.move_to(ids, dest),
            MailStore::Imap(i) => i.move_to(ids, dest, stopped),
        }
    }

    /// The folder each target of a request touches (for scope checks),
    /// checked by the store's own rules for ids and folder names.
    pub fn target_folders(
        &self,
        capability: Capability,
        targets: &[String],
    ) -> Result<Vec<String>, MailError> {
        match self {
            MailStore::Maildir(_) => Maildir::target_folders(capability, targets),
            MailStore::Imap(_) => imap::target_folders(capability, targets),
        }
    }

    /// Describe a request's targets for a human, from the store's facts.
    pub fn describe(
        &self,
        capability: Capability,
        targets: &[String],
    ) -> Result<(String, Vec<PromptItem>), MailError> {
        let imap = match self {
            MailStore::Maildir(m) => return m.describe(capability, targets),
            MailStore::Imap(i) => i,
        };
        let action = action_text(capability, targets.len())?;
        let items = if capability == LIST {
            targets
                .iter()
                .map(|folder| {
                    let count = imap.count(folder)?;
                    Ok(PromptItem {
                        target: folder.clone(),
                        description: format!("folder {folder} ({count} messages)"),
                    })
                })
                .collect::<Result<_, MailError>>()?
        } else {
            imap.summaries(targets)?
                .iter()
                .zip(targets)
                .map(|(s, id)| PromptItem {
                    target: id.clone(),
                    description: message_line(s),
                })
                .collect()
        };
        Ok((action, items))
    }
}

/// The host's one line for a message in a prompt, from the store's facts.
fn message_line(s: &MessageSummary) -> String {
    format!(
        "From: {} | Subject: {} | Date: {}",
        s.from,
        s.subject,
        if s.date.is_empty() {
            "unknown"
        } else {
            &s.date
        }
    )
}

/// What a request does, in one line.
fn action_text(capability: Capability, n: usize) -> Result<String, MailError> {
    let plural = if n == 1 { "" } else { "s" };
    Ok(if capability == LIST {
        format!("list the messages (senders, subjects, dates) of {n} folder{plural}")
    } else if capability == READ {
        format!("read {n} message{plural} in full")
    } else if capability == ARCHIVE_ACTION {
        format!("move {n} message{plural} to {ARCHIVE}")
    } else if capability == DELETE {
        format!("delete {n} message{plural} (moved to {TRASH}, recoverable)")
    } else {
        return Err(MailError::Invalid(format!(
            "{capability} is not a mail capability"
        )));
    })
}

/// A mail grant's scope.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailScope {
    /// Folders the capability may touch (`INBOX`, `Archive`, ...); absent =
    /// all folders.
    #[serde(default)]
    pub folders: Option<Vec<String>>,
}

impl MailScope {
    /// Whether `folder` is within the scope.
    pub fn allows_folder(&self, folder: &str) -> bool {
        self.folders
            .as_ref()
            .is_none_or(|folders| folders.iter().any(|f| f == folder))
    }
}

/// The `mail` capability's plug-in.
pub struct MailPlugin;

impl CapabilityPlugin for MailPlugin {
    fn interface(&self) -> &'static str {
        "mail"
    }

    fn actions(&self) -> &'static [Capability] {
        &[LIST, READ, ARCHIVE_ACTION, DELETE]
    }

    fn parse_backend(&self, table: PolicyTable<'_>) -> Result<Opaque, toml::de::Error> {
        use serde::de::Error as _;
        let settings = MailSettings::deserialize(table)?;
        match (&settings.maildir, &settings.imap) {
            (Some(_), None) => {}
            (None, Some(imap)) => imap.check().map_err(toml::de::Error::custom)?,
            _ => {
                return Err(toml::de::Error::custom(
                    "[mail] needs exactly one of `maildir` or `imap`",
                ));
            }
        }
        Ok(Opaque::new(settings))
    }

    fn open(&self, settings: &Opaque, policy: &Policy) -> Result<Opaque, String> {
        let settings = settings.get::<MailSettings>().ok_or("not mail settings")?;
        let store = MailStore::open(settings, policy).map_err(|e| e.to_string())?;
        Ok(Opaque::new(store))
    }

    fn parse_scope(
        &self,
        _capability: Capability,
        scope: PolicyTable<'_>,
    ) -> Result<Opaque, toml::de::Error> {
        Opaque::parse::<MailScope>(scope)
    }

    fn describe(&self, request: &Request<'_>) -> Result<Described, Denial> {
        let capability = request.capability;
        let scope = request.scope::<MailScope>()?;
        let store = request.backend::<MailStore>()?;
        let folders = store
            .target_folders(capability, request.targets)
            .map_err(|e| request.invalid(e))?;
        if let Some(outside) = folders.iter().find(|f| !scope.allows_folder(f)) {
            return Err(request.outside_scope(format_args!(
                "in folder {outside} is outside the grant of tool `{}` (folders: {})",
                request.call.tool,
                scope.folders.as_deref().unwrap_or_default().join(", ")
            )));
        }
        let (action, items) = store
            .describe(capability, request.targets)
            .map_err(|e| request.invalid(e))?;
        Ok(Described {
            action,
            items,
            targets: request.targets.to_vec(),
            shown: None,
        })
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit_mail::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
    }
}

/// The folder that holds the Maildir root.
pub const INBOX: &str = "INBOX";
/// Where `delete` moves messages.
pub const TRASH: &str = "Trash";
/// Where `archive` moves messages.
pub const ARCHIVE: &str = "Archive";

/// Longest message id or folder name accepted.
const MAX_NAME_LEN: usize = 255;

/// A mail operation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// No such folder or message.
    #[error("{0}")]
    NotFound(String),
    /// A malformed id or folder name.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("{0}")]
    Backend(String),
}

impl MailError {
    /// The same error with `note` added to its message.
    pub fn with_note(self, note: &str) -> MailError {
        match self {
            MailError::NotFound(m) => MailError::NotFound(format!("{m}; {note}")),
            MailError::Invalid(m) => MailError::Invalid(format!("{m}; {note}")),
            MailError::Backend(m) => MailError::Backend(format!("{m}; {note}")),
        }
    }
}

/// One message as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSummary {
    /// `<folder>/<unique-name>`.
    pub id: String,
    /// The folder.
    pub folder: String,
    /// `Name <address>`.
    pub from: String,
    /// Decoded subject.
    pub subject: String,
    /// RFC 3339 date, or "".
    pub date: String,
    /// Has List-Unsubscribe or List-Id.
    pub is_list_mail: bool,
    /// Maildir `S` flag.
    pub seen: bool,
    /// Size in bytes.
    pub size: u64,
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its listing.
    pub summary: MessageSummary,
    /// `To` addresses.
    pub to: String,
    /// Text body.
    pub body: String,
}

/// A Maildir++ store, confined to its root.
#[derive(Debug)]
pub struct Maildir {
    root: Dir,
    path: PathBuf,
}

/// A located message file.
struct Located {
    folder: String,
    subdir: &'static str,
    file_name: String,
}

fn backend(context: &str, e: std::io::Error) -> MailError {
    MailError::Backend(format!("{context}: {e}"))
}

/// Check a folder name: letters, digits, `-`, `_`, and single inner dots.
pub fn validate_folder(folder: &str) -> Result<(), MailError> {
    let ok = !folder.is_empty()
        && folder.len() <= MAX_NAME_LEN
        && !folder.starts_with('.')
        && !folder.ends_with('.')
        && !folder.contains("..")
        && folder
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(MailError::Invalid(format!(
            "folder name {:?} is not allowed (letters, digits, '-', '_' and inner dots only)",
            truncate(folder, 80)
        )))
    }
}

/// Split and check a message id `<folder>/<unique-name>`.
pub fn parse_id(id: &str) -> Result<(&str, &str), MailError> {
    let invalid = |why: &str| {
        MailError::Invalid(format!(
            "message id {:?} is not allowed: {why}",
            truncate(id, 80)
        ))
    };
    if id.len() > MAX_NAME_LEN {
        return Err(invalid("too long"));
    }
    let (folder, unique) = id
        .split_once('/')
        .ok_or_else(|| invalid("expected <folder>/<name>"))?;
    validate_folder(folder).map_err(|_| invalid("bad folder part"))?;
    let ok = !unique.is_empty()
        && !unique.starts_with('.')
        && unique
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ',' | '='));
    if !ok {
        return Err(invalid(
            "the name part may hold letters, digits and . _ - , = only, and may not start with '.'",
        ));
    }
    Ok((folder, unique))
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn format_address(address: Option<&Address<'_>>) -> String {
    let Some(address) = address else {
        return String::new();
    };
    let parts: Vec<String> = address
        .iter()
        .map(|a| match (a.name(), a.address()) {
            (Some(name), Some(addr)) => format!("{name} <{addr}>"),
            (None, Some(addr)) => addr.to_string(),
            (Some(name), None) => name.to_string(),
            (None, None) => String::new(),
        })
        .collect();
    parts.join(", ")
}

impl Maildir {
    /// Open the Maildir rooted at `path` (it must exist).
    pub fn open(path: &Path) -> Result<Maildir, MailError> {
        let root = Dir::open_ambient_dir(path, ambient_authority())
            .map_err(|e| backend(&format!("cannot open Maildir {}", path.display()), e))?;
        Ok(Maildir {
            root,
            path: path.to_path_buf(),
        })
    }

    /// Where the store is on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn folder_dir_name(folder: &str) -> Option<String> {
        (folder != INBOX).then(|| format!(".{folder}"))
    }

    fn open_folder(&self, folder: &str) -> Result<Dir, MailError> {
        validate_folder(folder)?;
        match Self::folder_dir_name(folder) {
            None => self.root.try_clone().map_err(|e| backend("open INBOX", e)),
            Some(name) => self.root.open_dir(&name).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    MailError::NotFound(format!("no mail folder named {folder}"))
                }
                _ => backend(&format!("open folder {folder}"), e),
            }),
        }
    }

    fn create_folder(&self, folder: &str) -> Result<Dir, MailError> {
        validate_folder(folder)?;
        let dir = match Self::folder_dir_name(folder) {
            None => self
                .root
                .try_clone()
                .map_err(|e| backend("open INBOX", e))?,
            Some(name) => {
                self.root
                    .create_dir_all(&name)
                    .map_err(|e| backend(&format!("create folder {folder}"), e))?;
                self.root
                    .open_dir(&name)
                    .map_err(|e| backend(&format!("open folder {folder}"), e))?
            }
        };
        for sub in ["cur", "new", "tmp"] {
            dir.create_dir_all(sub)
                .map_err(|e| backend(&format!("create {folder}/{sub}"), e))?;
        }
        Ok(dir)
    }

    /// Message files of a folder: (subdir, file name).
    fn files(&self, folder: &str) -> Result<Vec<(&'static str, String)>, MailError> {
        let dir = self.open_folder(folder)?;
        let mut files = Vec::new();
        for sub in ["cur", "new"] {
            let entries = match dir.read_dir(sub) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(backend(&format!("read {folder}/{sub}"), e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| backend(&format!("read {folder}/{sub}"), e))?;
                let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_file && !name.starts_with('.') {
                    files.push((sub, name));
                }
            }
        }
        files.sort();
        Ok(files)
    }

    fn locate(&self, id: &str) -> Result<Located, MailError> {
        let (folder, unique) = parse_id(id)?;
        let with_info = format!("{unique}:");
        let mut matching = self
            .files(folder)?
            .into_iter()
            .filter(|(_, name)| name == unique || name.starts_with(&with_info));
        let (subdir, file_name) = matching
            .next()
            .ok_or_else(|| MailError::NotFound(format!("no message {id}")))?;
        // An id names exactly one file: a second file with the same unique
        // name (say `cur/X:2,S` and `new/X`) makes the id ambiguous, and an
        // ambiguous id is refused rather than acting on a file nobody saw.
        if let Some((other_subdir, other_name)) = matching.next() {
            return Err(MailError::Invalid(format!(
                "message id {id} is ambiguous: it names both {subdir}/{file_name} and {other_subdir}/{other_name}"
            )));
        }
        Ok(Located {
            folder: folder.to_string(),
            subdir,
            file_name,
        })
    }

    fn load(&self, located: &Located) -> Result<Vec<u8>, MailError> {
        let dir = self.open_folder(&located.folder)?;
        dir.read(format!("{}/{}", located.subdir, located.file_name))
            .map_err(|e| backend(&format!("read message {}", located.file_name), e))
    }

    fn summarize<'a>(
        located: &Located,
        raw: &'a [u8],
    ) -> (MessageSummary, Option<mail_parser::Message<'a>>) {
        let unique = located
            .file_name
            .split_once(':')
            .map(|(u, _)| u)
            .unwrap_or(&located.file_name);
        let flags = located
            .file_name
            .split_once(":2,")
            .map(|(_, f)| f)
            .unwrap_or("");
        let parsed = MessageParser::default().parse(raw);
        let mut summary = MessageSummary {
            id: format!("{}/{unique}", located.folder),
            folder: located.folder.clone(),
            from: String::new(),
            subject: String::new(),
            date: String::new(),
            is_list_mail: false,
            seen: flags.contains('S'),
            size: raw.len() as u64,
        };
        if let Some(m) = &parsed {
            summary.from = format_address(m.from());
            summary.subject = m.subject().unwrap_or("").to_string();
            summary.date = m.date().map(|d| d.to_rfc3339()).unwrap_or_default();
            summary.is_list_mail = !m.list_unsubscribe().is_empty() || !m.list_id().is_empty();
        }
        (summary, parsed)
    }

    /// List a folder, oldest first.
    pub fn list(&self, folder: &str) -> Result<Vec<MessageSummary>, MailError> {
        let mut out = Vec::new();
        for (subdir, file_name) in self.files(folder)? {
            let located = Located {
                folder: folder.to_string(),
                subdir,
                file_name,
            };
            let raw = self.load(&located)?;
            out.push(Self::summarize(&located, &raw).0);
        }
        out.sort_by(|a, b| a.date.cmp(&b.date).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The listing of one message.
    pub fn summary(&self, id: &str) -> Result<MessageSummary, MailError> {
        let located = self.locate(id)?;
        let raw = self.load(&located)?;
        Ok(Self::summarize(&located, &raw).0)
    }

    /// Read one message.
    pub fn read(&self, id: &str) -> Result<Message, MailError> {
        let located = self.locate(id)?;
        let raw = self.load(&located)?;
        let (summary, parsed) = Self::summarize(&located, &raw);
        let (to, body) = match &parsed {
            Some(m) => (
                format_address(m.to()),
                m.body_text(0).map(|b| b.into_owned()).unwrap_or_default(),
            ),
            None => (String::new(), String::from_utf8_lossy(&raw).into_owned()),
        };
        Ok(Message { summary, to, body })
    }

    /// Move messages to `dest` (created if missing). Every id is located
    /// before anything moves; the new ids are returned in order.
    pub fn move_to(&self, ids: &[String], dest: &str) -> Result<Vec<String>, MailError> {
        let located: Vec<Located> = ids
            .iter()
            .map(|id| self.locate(id))
            .collect::<Result<_, _>>()?;
        if let Some(already) = located.iter().find(|l| l.folder == dest) {
            return Err(MailError::Invalid(format!(
                "message {}/{} is already in {dest}",
                already.folder, already.file_name
            )));
        }
        let dest_dir = self.create_folder(dest)?;
        let mut moved = Vec::with_capacity(located.len());
        for l in &located {
            let src_dir = self.open_folder(&l.folder)?;
            let unique = Self::move_without_replacing(&src_dir, l, &dest_dir, dest)?;
            moved.push(format!("{dest}/{unique}"));
        }
        Ok(moved)
    }

    /// Move one message file into `dest_dir` without ever replacing a file
    /// there: an atomic rename that refuses to replace (`RENAME_NOREPLACE`),
    /// under the same name or, when another message already has it, the
    /// unique part with `-N` appended. Where the filesystem cannot rename
    /// without replacing, a hard link and an unlink do it (a crash in
    /// between leaves two copies, never none). Returns the new unique part.
    fn move_without_replacing(
        src_dir: &Dir,
        l: &Located,
        dest_dir: &Dir,
        dest: &str,
    ) -> Result<String, MailError> {
        use rustix::fs::{RenameFlags, renameat_with};
        let moving = |e: std::io::Error| backend(&format!("move {} to {dest}", l.file_name), e);
        // Single-component names below directories opened through cap-std
        // (no symlink can lead outside the store); new/ mail stays in new/.
        let from_dir = src_dir.open_dir(l.subdir).map_err(moving)?;
        let to_dir = dest_dir.open_dir(l.subdir).map_err(moving)?;
        let (unique, info) = match l.file_name.split_once(':') {
            Some((u, info)) => (u, format!(":{info}")),
            None => (l.file_name.as_str(), String::new()),
        };
        let taken: Vec<String> = ["cur", "new"]
            .iter()
            .filter_map(|sub| dest_dir.read_dir(sub).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let in_use = |candidate: &str| {
            let prefix = format!("{candidate}:");
            taken
                .iter()
                .any(|name| name == candidate || name.starts_with(&prefix))
        };
        for n in 0..1000u32 {
            let candidate = if n == 0 {
                unique.to_string()
            } else {
                format!("{unique}-{n}")
            };
            if in_use(&candidate) {
                continue;
            }
            let to = format!("{candidate}{info}");
            match renameat_with(
                &from_dir,
                l.file_name.as_str(),
                &to_dir,
                to.as_str(),
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => return Ok(candidate),
                // Taken meanwhile: try the next name.
                Err(rustix::io::Errno::EXIST) => continue,
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                    match from_dir.hard_link(&l.file_name, &to_dir, &to) {
                        Ok(()) => {
                            from_dir.remove_file(&l.file_name).map_err(|e| {
                                backend(
                                    &format!("remove {} after copying it to {dest}", l.file_name),
                                    e,
                                )
                            })?;
                            return Ok(candidate);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(moving(e)),
                    }
                }
                Err(e) => return Err(moving(e.into())),
            }
        }
        Err(MailError::Backend(format!(
            "no free name for {} in {dest}",
            l.file_name
        )))
    }

    /// Describe the targets of a request for a human, from the store's facts.
    /// Ids and folders are validated and must exist.
    pub fn describe(
        &self,
        capability: Capability,
        targets: &[String],
    ) -> Result<(String, Vec<PromptItem>), MailError> {
        let items: Vec<PromptItem> = if capability == LIST {
            targets
                .iter()
                .map(|folder| {
                    let count = self.files(folder)?.len();
                    Ok(PromptItem {
                        target: folder.clone(),
                        description: format!("folder {folder} ({count} messages)"),
                    })
                })
                .collect::<Result<_, MailError>>()?
        } else {
            targets
                .iter()
                .map(|id| {
                    let s = self.summary(id)?;
                    Ok(PromptItem {
                        target: id.clone(),
                        description: message_line(&s),
                    })
                })
                .collect::<Result<_, MailError>>()?
        };
        let action = action_text(capability, items.len())?;
        Ok((action, items))
    }

    /// The folder each target of a request touches (for scope checks).
    pub fn target_folders(
        capability: Capability,
        targets: &[String],
    ) -> Result<Vec<String>, MailError> {
        targets
            .iter()
            .map(|t| {
                if capability == LIST {
                    validate_folder(t).map(|_| t.clone())
                } else {
                    parse_id(t).map(|(folder, _)| folder.to_string())
                }
            })
            .collect()
    }
}

// ---- The WIT interface: every function passes the Gate first. ----

use wasmtime::component::{HasSelf, Linker, Resource};

use crate::consent::TokenHandle;
use crate::host::bindings::agentcap::tools::consent::Denial;
use crate::host::bindings::agentcap::tools::mail as wit_mail;
use crate::host::{CallContext, HostState};

fn to_wit_summary(s: MessageSummary) -> wit_mail::MessageSummary {
    wit_mail::MessageSummary {
        id: s.id,
        folder: s.folder,
        from: s.from,
        subject: s.subject,
        date: s.date,
        is_list_mail: s.is_list_mail,
        seen: s.seen,
        size: s.size,
    }
}

fn to_wit_error(e: MailError) -> wit_mail::MailError {
    match e {
        MailError::NotFound(m) => wit_mail::MailError::NotFound(m),
        MailError::Invalid(m) => wit_mail::MailError::Invalid(m),
        MailError::Backend(m) => wit_mail::MailError::Backend(m),
    }
}

fn check_ids(ids: &[String]) -> Result<(), wit_mail::MailError> {
    if ids.len() > MAX_TARGETS {
        return Err(wit_mail::MailError::Invalid(format!(
            "at most {MAX_TARGETS} messages per call, got {}",
            ids.len()
        )));
    }
    Ok(())
}

impl CallContext {
    fn mail_store(&self) -> Result<&MailStore, wit_mail::MailError> {
        self.backend::<MailStore>("mail")
            .ok_or_else(|| wit_mail::MailError::Backend("no mail store is configured".into()))
    }

    /// Whether this call's session has been stopped, for a store that
    /// talks to a server.
    fn stop_check(&self) -> Option<imap::StopCheck> {
        let state = self.session_state.clone();
        Some(std::sync::Arc::new(move || state.is_stopped()))
    }
}

fn describe_outcome<T>(
    result: &Result<T, wit_mail::MailError>,
    ok: impl FnOnce(&T) -> String,
) -> String {
    match result {
        Ok(v) => format!("ok: {}", ok(v)),
        Err(e) => format!("error: {e:?}"),
    }
}

impl HostState {
    fn move_messages(
        &mut self,
        token: Resource<TokenHandle>,
        ids: Vec<String>,
        capability: Capability,
        dest: &str,
    ) -> wasmtime::Result<Result<Vec<String>, wit_mail::MailError>> {
        if let Err(e) = check_ids(&ids) {
            return Ok(Err(e));
        }
        self.through_gate(
            &token,
            capability,
            &ids,
            None,
            wit_mail::MailError::Refused,
            |call, _| {
                call.mail_store()?
                    .move_to(&ids, dest, call.stop_check())
                    .map_err(to_wit_error)
            },
            |r| describe_outcome(r, |moved| format!("moved {} to {dest}", moved.len())),
        )
    }
}

impl wit_mail::Host for HostState {
    fn list(
        &mut self,
        token: Resource<TokenHandle>,
        folder: String,
    ) -> wasmtime::Result<Result<Vec<wit_mail::MessageSummary>, wit_mail::MailError>> {
        self.through_gate(
            &token,
            LIST,
            std::slice::from_ref(&folder),
            None,
            wit_mail::MailError::Refused,
            |call, _| {
                let list = call
                    .mail_store()?
                    .list(&folder, call.stop_check())
                    .map_err(to_wit_error)?;
                Ok(list.into_iter().map(to_wit_summary).collect())
            },
            |r| describe_outcome(r, |l: &Vec<_>| format!("listed {} messages", l.len())),
        )
    }

    fn read(
        &mut self,
        token: Resource<TokenHandle>,
        id: String,
    ) -> wasmtime::Result<Result<wit_mail::Message, wit_mail::MailError>> {
        self.through_gate(
            &token,
            READ,
            std::slice::from_ref(&id),
            None,
            wit_mail::MailError::Refused,
            |call, _| {
                let m = call
                    .mail_store()?
                    .read(&id, call.stop_check())
                    .map_err(to_wit_error)?;
                Ok(wit_mail::Message {
                    summary: to_wit_summary(m.summary),
                    to: m.to,
                    body: m.body,
                })
            },
            |r| describe_outcome(r, |m| format!("read {} bytes", m.summary.size)),
        )
    }

    fn archive(
        &mut self,
        token: Resource<TokenHandle>,
        ids: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<String>, wit_mail::MailError>> {
        self.move_messages(token, ids, ARCHIVE_ACTION, ARCHIVE)
    }

    fn delete(
        &mut self,
        token: Resource<TokenHandle>,
        ids: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<String>, wit_mail::MailError>> {
        self.move_messages(token, ids, DELETE, TRASH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Maildir) {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(
            dir.path().join("cur/100.M1P1.test:2,S"),
            "From: Shop <deals@shop.example>\nTo: a@b.c\nSubject: 50% off\nDate: Tue, 01 Sep 2026 10:00:00 +0000\nList-Unsubscribe: <mailto:u@shop.example>\n\nBuy now.\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("new/200.M2P1.test"),
            "From: Bob <bob@example.org>\nTo: a@b.c\nSubject: Lunch?\nDate: Wed, 02 Sep 2026 10:00:00 +0000\n\nNoon?\n",
        )
        .unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        (dir, md)
    }

    #[test]
    fn lists_reads_and_moves() {
        let (dir, md) = store();
        let list = md.list(INBOX).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].id, "INBOX/100.M1P1.test");
        assert!(list[0].is_list_mail && list[0].seen);
        assert_eq!(list[1].from, "Bob <bob@example.org>");
        assert!(!list[1].seen);
        let msg = md.read("INBOX/200.M2P1.test").unwrap();
        assert!(msg.body.contains("Noon?"));
        let moved = md.move_to(&["INBOX/100.M1P1.test".into()], TRASH).unwrap();
        assert_eq!(moved, vec!["Trash/100.M1P1.test"]);
        assert!(dir.path().join(".Trash/cur/100.M1P1.test:2,S").exists());
        assert_eq!(md.list(INBOX).unwrap().len(), 1);
        assert_eq!(md.list(TRASH).unwrap().len(), 1);
        assert!(md.move_to(&["Trash/100.M1P1.test".into()], TRASH).is_err());
    }

    #[test]
    fn refuses_escapes() {
        let (_dir, md) = store();
        for bad in [
            "../etc/passwd",
            "INBOX/../../etc/passwd",
            "INBOX/..",
            "/etc/passwd",
            "INBOX/a/b",
            "..Trash/x",
            "INBOX/.hidden",
            "INBOX\\x",
            "",
        ] {
            assert!(
                matches!(md.read(bad), Err(MailError::Invalid(_))),
                "{bad} should be invalid"
            );
        }
        assert!(matches!(md.list("../x"), Err(MailError::Invalid(_))));
        assert!(matches!(md.list("Nope"), Err(MailError::NotFound(_))));
        assert!(matches!(
            md.read("INBOX/999.none"),
            Err(MailError::NotFound(_))
        ));
    }

    #[test]
    fn a_failed_batch_moves_nothing() {
        let (_dir, md) = store();
        let err = md
            .move_to(
                &["INBOX/100.M1P1.test".into(), "INBOX/missing".into()],
                TRASH,
            )
            .unwrap_err();
        assert!(matches!(err, MailError::NotFound(_)));
        assert_eq!(md.list(INBOX).unwrap().len(), 2);
    }
}
