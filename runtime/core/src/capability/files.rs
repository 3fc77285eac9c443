//! The `files` capability: files under roots the operator names.
//!
//! Each root is a folder opened through `cap-std`, so no path can reach a
//! file outside it (no `..`, no absolute paths), and symbolic links are not
//! followed at all: a path through a link is refused. Paths are
//! `root:relative/path`. A write is bound to its exact content (the payload)
//! and to the file's version when approved; the human sees the size, the
//! first lines and, when replacing, a unified diff. Nothing is ever
//! unlinked: `delete` and the old version of a replaced file move to the
//! root's trash (`.agentcap-trash/`, invisible to tools) with what is needed
//! to restore them (`agentcap files restore`).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata};
use globset::{GlobSet, GlobSetBuilder};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker, Resource};

use super::{
    Action, Capability, CapabilityPlugin, Described, Effect, Opaque, PolicyTable, Request,
    ShownContent,
};
use crate::consent::{PromptItem, TokenHandle};
use crate::host::bindings::agentcap::tools::consent::Denial;
use crate::host::bindings::agentcap::tools::files as wit_files;
use crate::host::{CallContext, HostState, MAX_TARGETS};
use crate::policy::Policy;

/// `files.list`: list folders. Targets: folders (`notes:`, `notes:drafts`).
pub const LIST: Capability = Capability::new(&Action {
    name: "files.list",
    effect: Effect::Reads,
    carries_payload: false,
    scope_keys: &["roots", "paths"],
});
/// `files.read`: read files. Targets: files.
pub const READ: Capability = Capability::new(&Action {
    name: "files.read",
    effect: Effect::Reads,
    carries_payload: false,
    scope_keys: &["roots", "paths"],
});
/// `files.write`: create or replace one file with exactly the approved
/// content. Target: the file (the token holds it with its version).
pub const WRITE: Capability = Capability::new(&Action {
    name: "files.write",
    effect: Effect::Destroys,
    carries_payload: true,
    scope_keys: &["roots", "paths"],
});
/// `files.move`: move files within a root. Targets: `from -> to` pairs.
pub const MOVE: Capability = Capability::new(&Action {
    name: "files.move",
    effect: Effect::Changes,
    carries_payload: false,
    scope_keys: &["roots", "paths"],
});
/// `files.delete`: move files to the root's trash. Targets: files.
pub const DELETE: Capability = Capability::new(&Action {
    name: "files.delete",
    effect: Effect::Destroys,
    carries_payload: false,
    scope_keys: &["roots", "paths"],
});

/// The folder, in each root, that holds deleted and replaced files.
pub const TRASH_DIR: &str = ".agentcap-trash";
/// What separates the two paths of a move target.
pub const MOVE_ARROW: &str = " -> ";
/// Most entries one `list` returns.
pub const MAX_LIST_ENTRIES: usize = 10_000;

/// The policy's `[files]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSettings {
    /// Largest file, in KiB, that may be read in one call or written.
    #[serde(
        default = "default_max_file_kb",
        deserialize_with = "crate::policy::within::<_, _, 1, 1024>"
    )]
    pub max_file_kb: u64,
    /// The most a root's trash may hold, in MiB; a delete or replace that
    /// would go over it is refused (nothing is ever dropped from the trash
    /// to make room).
    #[serde(
        default = "default_max_trash_mb",
        deserialize_with = "crate::policy::within::<_, _, 1, 1048576>"
    )]
    pub max_trash_mb: u64,
    /// The roots by name (`[files.roots.notes]`).
    pub roots: BTreeMap<String, RootSettings>,
}

fn default_max_trash_mb() -> u64 {
    1024
}

fn default_max_file_kb() -> u64 {
    1024
}

/// One root of the `files` capability.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootSettings {
    /// The folder (relative to the policy file).
    pub path: PathBuf,
    /// Only `files.list` and `files.read` may use it.
    #[serde(default)]
    pub read_only: bool,
}

/// A files grant's scope.
#[derive(Debug, Clone, Default)]
pub struct FilesScope {
    /// Roots the grant covers; absent = every root.
    pub roots: Option<Vec<String>>,
    /// Glob patterns inside a root (`docs/**/*.md`); absent = every path.
    pub paths: Option<Vec<String>>,
    globs: Option<GlobSet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeTable {
    #[serde(default)]
    roots: Option<Vec<String>>,
    #[serde(default)]
    paths: Option<Vec<String>>,
}

impl FilesScope {
    /// Whether `path` is inside the scope's roots and patterns; `Err` says
    /// why not.
    pub fn check(&self, path: &FilePath) -> Result<(), String> {
        if let Some(roots) = &self.roots
            && !roots.contains(&path.root)
        {
            return Err(format!(
                "root {} is not granted (roots: {})",
                path.root,
                roots.join(", ")
            ));
        }
        if let (Some(globs), Some(paths)) = (&self.globs, &self.paths)
            && !globs.is_match(path.relative())
        {
            return Err(format!(
                "{path} matches none of the granted paths ({})",
                paths.join(", ")
            ));
        }
        Ok(())
    }

    /// Whether a folder may be listed (and is shown in a listing): the
    /// root, or a folder on the way to what the patterns can match.
    pub fn shows_folder(&self, folder: &FilePath) -> bool {
        let Some(paths) = &self.paths else {
            return true;
        };
        let folder = match folder.relative() {
            r if r.is_empty() => String::new(),
            r => format!("{r}/"),
        };
        paths.iter().any(|pattern| {
            // The literal folders a pattern starts with (`docs/` of
            // `docs/**/*.md`); a folder is on the way if either contains
            // the other.
            let literal = pattern
                .find(['*', '?', '[', '{', '\\'])
                .map_or(pattern.as_str(), |i| &pattern[..i]);
            let literal = literal.rfind('/').map_or("", |i| &literal[..=i]);
            literal.starts_with(&folder) || folder.starts_with(literal)
        })
    }

    /// Whether a listed file is shown.
    fn shows(&self, path: &FilePath) -> bool {
        self.globs
            .as_ref()
            .is_none_or(|g| g.is_match(path.relative()))
    }
}

/// A file operation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilesError {
    /// Outside the grant, or not allowed (read-only root, a link).
    #[error("{0}")]
    Refused(String),
    /// No such file or folder.
    #[error("{0}")]
    NotFound(String),
    /// A malformed path or request.
    #[error("{0}")]
    Invalid(String),
    /// Over the size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The file system failed.
    #[error("{0}")]
    Backend(String),
}

fn io_error(context: &str, e: std::io::Error) -> FilesError {
    match e.kind() {
        std::io::ErrorKind::NotFound => FilesError::NotFound(format!("{context}: not found")),
        _ => FilesError::Backend(format!("{context}: {e}")),
    }
}

/// A path inside a root: `root:a/b/c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePath {
    /// The root's name.
    pub root: String,
    /// The components below the root (empty: the root itself).
    pub components: Vec<String>,
}

impl FilePath {
    /// Parse `root:relative/path`. Refused: no root, `..`, `.`, empty
    /// components, absolute paths, NUL, and the trash folder.
    pub fn parse(text: &str) -> Result<FilePath, FilesError> {
        let invalid = |why: &str| {
            FilesError::Invalid(format!(
                "{}: {why}",
                crate::render::one_line(&format!("{text:?}"), 120)
            ))
        };
        let (root, relative) = text
            .split_once(':')
            .ok_or_else(|| invalid("a path is `root:relative/path`"))?;
        if root.is_empty()
            || !root
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid("the root must be a root's name from the policy"));
        }
        if relative.starts_with('/') {
            return Err(invalid("absolute paths are refused"));
        }
        if relative.contains('\0') {
            return Err(invalid("a path cannot hold NUL"));
        }
        let components: Vec<String> = if relative.is_empty() {
            Vec::new()
        } else {
            relative.split('/').map(str::to_string).collect()
        };
        for c in &components {
            match c.as_str() {
                "" => return Err(invalid("empty path components are refused")),
                "." | ".." => return Err(invalid("`.` and `..` are refused")),
                _ if c.len() > 255 => return Err(invalid("a name is longer than 255 bytes")),
                _ => {}
            }
        }
        // The trash folder's name is reserved at every depth (a root may
        // hold another root's folders).
        if components.iter().any(|c| c == TRASH_DIR) {
            return Err(invalid("the trash is not reachable by tools"));
        }
        Ok(FilePath {
            root: root.to_string(),
            components,
        })
    }

    /// The path below the root (`a/b/c`).
    pub fn relative(&self) -> String {
        self.components.join("/")
    }

    fn name(&self) -> Option<&str> {
        self.components.last().map(String::as_str)
    }

    fn parent_components(&self) -> &[String] {
        &self.components[..self.components.len().saturating_sub(1)]
    }

    fn child(&self, name: &str) -> FilePath {
        let mut components = self.components.clone();
        components.push(name.to_string());
        FilePath {
            root: self.root.clone(),
            components,
        }
    }
}

impl std::fmt::Display for FilePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.root, self.relative())
    }
}

/// Parse a move target `root:from -> to` (the destination is in the same
/// root; it may repeat the root: `root:from -> root:to`).
pub fn parse_move(target: &str) -> Result<(FilePath, FilePath), FilesError> {
    let (from, to) = target.split_once(MOVE_ARROW).ok_or_else(|| {
        FilesError::Invalid(format!(
            "a move is `root:from{MOVE_ARROW}to`, not {}",
            crate::render::one_line(&format!("{target:?}"), 120)
        ))
    })?;
    if to.contains(MOVE_ARROW) {
        return Err(FilesError::Invalid(format!(
            "a move names one source and one destination; {} holds more than one `{}`",
            crate::render::one_line(&format!("{target:?}"), 120),
            MOVE_ARROW.trim()
        )));
    }
    let from = FilePath::parse(from)?;
    let to = if to.contains(':') {
        FilePath::parse(to)?
    } else {
        FilePath::parse(&format!("{}:{to}", from.root))?
    };
    if to.root != from.root {
        return Err(FilesError::Invalid(format!(
            "{from} and {to} are in different roots; a move stays in its root"
        )));
    }
    if from.components.is_empty() || to.components.is_empty() {
        return Err(FilesError::Invalid("a root itself cannot be moved".into()));
    }
    Ok((from, to))
}

struct Root {
    dir: Dir,
    read_only: bool,
}

/// The opened roots of the `files` capability.
pub struct FileStore {
    roots: BTreeMap<String, Root>,
    max_file_bytes: u64,
    max_trash_bytes: u64,
}

/// What a file is now: its size, time and version.
#[derive(Debug, Clone)]
pub struct FileFacts {
    /// Size in bytes.
    pub size: u64,
    /// Last modification.
    pub modified: Option<SystemTime>,
}

static TRASH_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Rename without replacing anything at the destination (single-component
/// names below directories opened through cap-std).
fn rename_no_replace(from_dir: &Dir, from: &str, to_dir: &Dir, to: &str) -> std::io::Result<()> {
    use rustix::fs::{RenameFlags, renameat_with};
    match renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            // A file system without RENAME_NOREPLACE: a hard link fails if
            // the name is taken, then the old name goes.
            from_dir.hard_link(from, to_dir, to)?;
            from_dir.remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

fn format_time(t: Option<SystemTime>) -> String {
    t.map(crate::render::time)
        .unwrap_or_else(|| "unknown time".into())
}

fn millis(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn size_text(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} bytes"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// The version of content a write token is bound to.
pub fn version_of(content: &[u8]) -> String {
    hex::encode(&Sha256::digest(content)[..8])
}

/// A versioned write target: `root:path@new` or `root:path@<digest>`.
pub fn versioned(path: &FilePath, version: &str) -> String {
    format!("{path}@{version}")
}

impl FileStore {
    /// Open the roots of `settings`; `resolve` anchors relative paths.
    pub fn open(
        settings: &FilesSettings,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<FileStore, FilesError> {
        let mut roots = BTreeMap::new();
        let mut real_paths: Vec<(String, PathBuf)> = Vec::new();
        for (name, root) in &settings.roots {
            let path = resolve(&root.path);
            let real = std::fs::canonicalize(&path)
                .map_err(|e| io_error(&format!("open root {name} ({})", path.display()), e))?;
            // One root inside another would reach the other's trash and
            // widen one grant by another root's name.
            if let Some((other, _)) = real_paths
                .iter()
                .find(|(_, p)| p.starts_with(&real) || real.starts_with(p))
            {
                return Err(FilesError::Invalid(format!(
                    "roots {other} and {name} overlap (one holds the other); give each root its own folder"
                )));
            }
            real_paths.push((name.clone(), real));
            let dir = Dir::open_ambient_dir(&path, ambient_authority())
                .map_err(|e| io_error(&format!("open root {name} ({})", path.display()), e))?;
            roots.insert(
                name.clone(),
                Root {
                    dir,
                    read_only: root.read_only,
                },
            );
        }
        Ok(FileStore {
            roots,
            max_file_bytes: settings.max_file_kb * 1024,
            max_trash_bytes: settings.max_trash_mb * 1024 * 1024,
        })
    }

    /// The size limit of one read or write, in bytes.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    fn root(&self, path: &FilePath) -> Result<&Root, FilesError> {
        self.roots.get(&path.root).ok_or_else(|| {
            FilesError::NotFound(format!(
                "no root named {} (roots: {})",
                path.root,
                self.roots.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    fn writable(&self, path: &FilePath) -> Result<&Root, FilesError> {
        let root = self.root(path)?;
        if root.read_only {
            return Err(FilesError::Refused(format!(
                "root {} is read-only",
                path.root
            )));
        }
        Ok(root)
    }

    /// Refuse a path that passes through a symbolic link; `Ok(None)` when
    /// (a component of) it does not exist.
    fn facts(&self, path: &FilePath) -> Result<Option<Metadata>, FilesError> {
        let root = self.root(path)?;
        let mut so_far = PathBuf::new();
        let mut last = None;
        for c in &path.components {
            so_far.push(c);
            match root.dir.symlink_metadata(&so_far) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(FilesError::Refused(format!(
                        "{}:{} is a symbolic link; links are not followed",
                        path.root,
                        so_far.display()
                    )));
                }
                Ok(m) => last = Some(m),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_error(&path.to_string(), e)),
            }
        }
        match last {
            Some(m) => Ok(Some(m)),
            // The root itself.
            None => root
                .dir
                .dir_metadata()
                .map(Some)
                .map_err(|e| io_error(&path.to_string(), e)),
        }
    }

    fn file_facts(&self, path: &FilePath) -> Result<FileFacts, FilesError> {
        use cap_std::fs::MetadataExt as _;
        match self.facts(path)? {
            // A hard link may share its content with a file outside the root.
            Some(m) if m.is_file() && m.nlink() > 1 => Err(FilesError::Refused(format!(
                "{path} has {} hard links (one may be outside the root); such files are not used",
                m.nlink()
            ))),
            Some(m) if m.is_file() => Ok(FileFacts {
                size: m.len(),
                modified: m.modified().ok().map(|t| t.into_std()),
            }),
            Some(_) => Err(FilesError::Invalid(format!("{path} is not a file"))),
            None => Err(FilesError::NotFound(format!("{path} does not exist"))),
        }
    }

    fn folder(&self, path: &FilePath) -> Result<Dir, FilesError> {
        match self.facts(path)? {
            Some(m) if m.is_dir() => {}
            Some(_) => return Err(FilesError::Invalid(format!("{path} is not a folder"))),
            None => return Err(FilesError::NotFound(format!("{path} does not exist"))),
        }
        let root = self.root(path)?;
        if path.components.is_empty() {
            return root
                .dir
                .try_clone()
                .map_err(|e| io_error(&path.to_string(), e));
        }
        root.dir
            .open_dir(path.relative())
            .map_err(|e| io_error(&path.to_string(), e))
    }

    /// The folder holding `path`, created if missing (through no link).
    fn parent_dir(&self, path: &FilePath, create: bool) -> Result<Dir, FilesError> {
        let parent = FilePath {
            root: path.root.clone(),
            components: path.parent_components().to_vec(),
        };
        if create && self.facts(&parent)?.is_none() {
            self.writable(&parent)?
                .dir
                .create_dir_all(parent.relative())
                .map_err(|e| io_error(&format!("create {parent}"), e))?;
        }
        self.folder(&parent)
    }

    /// The entries of a folder (not the trash); files outside `scope` are
    /// left out.
    pub fn list(&self, folder: &FilePath, scope: &FilesScope) -> Result<Vec<Entry>, FilesError> {
        let dir = self.folder(folder)?;
        let mut entries = Vec::new();
        for entry in dir
            .entries()
            .map_err(|e| io_error(&folder.to_string(), e))?
        {
            let entry = entry.map_err(|e| io_error(&folder.to_string(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if folder.components.is_empty() && name == TRASH_DIR {
                continue;
            }
            // Links, sockets and devices are not listed; folders and files
            // only as far as the grant's patterns reach.
            let Ok(meta) = entry.metadata() else { continue };
            let path = folder.child(&name);
            let shown = if meta.is_dir() {
                scope.shows_folder(&path)
            } else {
                meta.is_file() && scope.shows(&path)
            };
            if !shown {
                continue;
            }
            if entries.len() == MAX_LIST_ENTRIES {
                return Err(FilesError::TooLarge(format!(
                    "{folder} has more than {MAX_LIST_ENTRIES} entries"
                )));
            }
            entries.push(Entry {
                path: path.to_string(),
                is_dir: meta.is_dir(),
                size: if meta.is_file() { meta.len() } else { 0 },
                modified: meta.modified().ok().map(|t| t.into_std()),
            });
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// Up to `length` bytes of a file from `offset`.
    pub fn read(&self, path: &FilePath, offset: u64, length: u64) -> Result<Vec<u8>, FilesError> {
        if length > self.max_file_bytes {
            return Err(FilesError::TooLarge(format!(
                "a read is at most {} (max_file_kb); {} were asked for",
                size_text(self.max_file_bytes),
                size_text(length)
            )));
        }
        let facts = self.file_facts(path)?;
        let dir = self.parent_dir(path, false)?;
        let name = path.name().unwrap_or_default();
        let mut file = dir.open(name).map_err(|e| io_error(&path.to_string(), e))?;
        let length = length.min(facts.size.saturating_sub(offset));
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io_error(&path.to_string(), e))?;
        let mut bytes = Vec::with_capacity(length as usize);
        file.take(length)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(&path.to_string(), e))?;
        Ok(bytes)
    }

    /// The whole content of a file within the size limit.
    fn content(&self, path: &FilePath) -> Result<Vec<u8>, FilesError> {
        let facts = self.file_facts(path)?;
        if facts.size > self.max_file_bytes {
            return Err(FilesError::TooLarge(format!(
                "{path} is {}, over the limit of {} (max_file_kb)",
                size_text(facts.size),
                size_text(self.max_file_bytes)
            )));
        }
        self.read(path, 0, facts.size)
    }

    /// The version a write to `path` is bound to: `new` if it does not
    /// exist, else the digest of its content.
    pub fn version(&self, path: &FilePath) -> Result<String, FilesError> {
        match self.facts(path)? {
            None => Ok("new".into()),
            Some(_) => Ok(version_of(&self.content(path)?)),
        }
    }

    /// Write `content` to `path` if it is still at `version`; a replaced
    /// file goes to the trash first. Returns the bytes written.
    pub fn write(&self, path: &FilePath, version: &str, content: &[u8]) -> Result<u64, FilesError> {
        if content.len() as u64 > self.max_file_bytes {
            return Err(FilesError::TooLarge(format!(
                "a write is at most {} (max_file_kb); this one is {}",
                size_text(self.max_file_bytes),
                size_text(content.len() as u64)
            )));
        }
        self.writable(path)?;
        let now = self.version(path)?;
        if now != version {
            return Err(FilesError::Refused(format!(
                "{path} changed since the write was approved (approved version {version}, now {now}); nothing was written"
            )));
        }
        let name = path
            .name()
            .ok_or_else(|| FilesError::Invalid("a root itself cannot be written".into()))?;
        let dir = self.parent_dir(path, true)?;
        let temp = format!(".agentcap-write-{}", crate::secret::random_hex(8));
        let written = (|| {
            let mut file = dir.create(&temp)?;
            file.write_all(content)?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = dir.remove_file(&temp);
            return Err(io_error(&format!("write {path}"), e));
        }
        if now != "new" {
            self.to_trash(path, &dir, name)?;
        }
        rename_no_replace(&dir, &temp, &dir, name).map_err(|e| {
            let _ = dir.remove_file(&temp);
            io_error(&format!("put the new {path} in place"), e)
        })?;
        Ok(content.len() as u64)
    }

    /// Move `from` to `to` (same root); nothing at `to` is replaced.
    pub fn move_file(&self, from: &FilePath, to: &FilePath) -> Result<(), FilesError> {
        self.writable(from)?;
        self.file_facts(from)?;
        if self.facts(to)?.is_some() {
            return Err(FilesError::Refused(format!(
                "{to} exists; a move does not replace anything"
            )));
        }
        let from_dir = self.parent_dir(from, false)?;
        let to_dir = self.parent_dir(to, true)?;
        rename_no_replace(
            &from_dir,
            from.name().unwrap_or_default(),
            &to_dir,
            to.name().unwrap_or_default(),
        )
        .map_err(|e| io_error(&format!("move {from} to {to}"), e))
    }

    /// Move a file to its root's trash; returns its restore handle.
    pub fn delete(&self, path: &FilePath) -> Result<String, FilesError> {
        self.writable(path)?;
        self.file_facts(path)?;
        let dir = self.parent_dir(path, false)?;
        self.to_trash(path, &dir, path.name().unwrap_or_default())
    }

    /// Move `name` in `dir` (which is `path`'s folder) into the trash with
    /// its origin; returns `root#id`.
    fn to_trash(&self, path: &FilePath, dir: &Dir, name: &str) -> Result<String, FilesError> {
        let root = self.writable(path)?;
        let trashing = |e: std::io::Error| io_error(&format!("move {path} to the trash"), e);
        let adding = dir
            .symlink_metadata(name)
            .map(|m| m.len())
            .map_err(trashing)?;
        let held = trash_size(&root.dir);
        if held.saturating_add(adding) > self.max_trash_bytes {
            return Err(FilesError::TooLarge(format!(
                "the trash of root {} holds {} and {path} would take it over {} (max_trash_mb); nothing was changed. Empty it with `agentcap files trash` and by removing entries from {}/",
                path.root,
                size_text(held),
                size_text(self.max_trash_bytes),
                TRASH_DIR
            )));
        }
        root.dir.create_dir_all(TRASH_DIR).map_err(trashing)?;
        let trash = root.dir.open_dir(TRASH_DIR).map_err(trashing)?;
        let id = format!(
            "{}-{}-{}",
            millis(Some(SystemTime::now())),
            std::process::id(),
            TRASH_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        trash.create_dir(&id).map_err(trashing)?;
        let slot = trash.open_dir(&id).map_err(trashing)?;
        slot.write("origin", path.relative()).map_err(trashing)?;
        rename_no_replace(dir, name, &slot, "file").map_err(trashing)?;
        Ok(format!("{}#{id}", path.root))
    }

    /// Put a trashed file back where it was; returns its path. Refused if
    /// something is there now.
    pub fn restore(&self, handle: &str) -> Result<FilePath, FilesError> {
        let (root_name, id) = handle.split_once('#').ok_or_else(|| {
            FilesError::Invalid(format!("{handle:?} is not a restore handle (root#id)"))
        })?;
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '-') {
            return Err(FilesError::Invalid(format!(
                "{handle:?} is not a restore handle"
            )));
        }
        let root = self.writable(&FilePath {
            root: root_name.to_string(),
            components: Vec::new(),
        })?;
        let slot = root
            .dir
            .open_dir(format!("{TRASH_DIR}/{id}"))
            .map_err(|e| io_error(&format!("trash entry {handle}"), e))?;
        let origin = slot
            .read_to_string("origin")
            .map_err(|e| io_error(&format!("trash entry {handle}"), e))?;
        let path = FilePath::parse(&format!("{root_name}:{origin}"))?;
        if self.facts(&path)?.is_some() {
            return Err(FilesError::Refused(format!(
                "{path} exists; move it away first, restoring replaces nothing"
            )));
        }
        let dir = self.parent_dir(&path, true)?;
        rename_no_replace(&slot, "file", &dir, path.name().unwrap_or_default())
            .map_err(|e| io_error(&format!("restore {path}"), e))?;
        // The slot's own record (ours, not the user's data) goes with it.
        let _ = slot.remove_file("origin");
        let _ = root.dir.remove_dir(format!("{TRASH_DIR}/{id}"));
        Ok(path)
    }

    /// What the trash of every writable root holds, oldest first.
    pub fn trash_entries(&self) -> Result<Vec<TrashEntry>, FilesError> {
        let mut entries = Vec::new();
        for (name, root) in &self.roots {
            let Ok(trash) = root.dir.open_dir(TRASH_DIR) else {
                continue;
            };
            for slot in trash.entries().map_err(|e| io_error("read the trash", e))? {
                let slot = slot.map_err(|e| io_error("read the trash", e))?;
                let id = slot.file_name().to_string_lossy().into_owned();
                let Ok(dir) = trash.open_dir(&id) else {
                    continue;
                };
                let Ok(origin) = dir.read_to_string("origin") else {
                    continue;
                };
                let size = dir.metadata("file").map(|m| m.len()).unwrap_or(0);
                entries.push(TrashEntry {
                    handle: format!("{name}#{id}"),
                    origin: format!("{name}:{origin}"),
                    size,
                });
            }
        }
        entries.sort_by(|a, b| a.handle.cmp(&b.handle));
        Ok(entries)
    }

    fn describe_file(&self, path: &FilePath) -> Result<String, FilesError> {
        let f = self.file_facts(path)?;
        Ok(format!(
            "file {path} ({}, modified {})",
            size_text(f.size),
            format_time(f.modified)
        ))
    }
}

/// Bytes held in a root's trash (its files; unreadable entries count 0).
fn trash_size(root: &Dir) -> u64 {
    let Ok(trash) = root.open_dir(TRASH_DIR) else {
        return 0;
    };
    let Ok(slots) = trash.entries() else { return 0 };
    slots
        .filter_map(|s| s.ok())
        .filter_map(|s| {
            trash
                .metadata(format!("{}/file", s.file_name().to_string_lossy()))
                .ok()
        })
        .map(|m| m.len())
        .sum()
}

/// A file in a root's trash.
#[derive(Debug, Clone)]
pub struct TrashEntry {
    /// What `restore` takes (`root#id`).
    pub handle: String,
    /// Where it was (`root:path`).
    pub origin: String,
    /// Its size.
    pub size: u64,
}

/// One listed entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `root:path`.
    pub path: String,
    /// A folder.
    pub is_dir: bool,
    /// Size of a file.
    pub size: u64,
    /// Last modification.
    pub modified: Option<SystemTime>,
}

/// How much of a new file a prompt can show (the renderer's limit).
const SHOWN_MAX: usize = 64 * 1024;

/// What a human sees of a write: the whole new file, or a unified diff
/// against the current text (line ends marked, names escaped); a current
/// file that is not text is not diffed.
fn write_preview(path: &FilePath, old: Option<&[u8]>, new: &str) -> ShownContent {
    let whole = |what: String| ShownContent {
        heading: if new.len() > SHOWN_MAX {
            format!(
                "{what}: {} bytes, of which only the first 64 KiB can be shown",
                new.len()
            )
        } else {
            format!("{what}: all {} bytes, exactly as written", new.len())
        },
        text: new.to_string(),
    };
    match old {
        None => whole("the new file".into()),
        Some(old) => match std::str::from_utf8(old) {
            Err(_) => whole(format!(
                "the current file is not text ({} bytes) and is not compared; the new file",
                old.len()
            )),
            Ok(old) if old == new => ShownContent {
                heading: "the change".into(),
                text: "(no change: the content is the same)".into(),
            },
            Ok(old) => {
                let name = crate::render::one_line(&path.to_string(), 300);
                let diff = similar::TextDiff::from_lines(old, new)
                    .unified_diff()
                    .context_radius(3)
                    .header(&format!("{name} (now)"), &format!("{name} (after)"))
                    .to_string();
                ShownContent {
                    heading: "the change, as a unified diff against the current file (⟨CR⟩ marks a carriage return)".into(),
                    text: diff.replace('\r', "⟨CR⟩"),
                }
            }
        },
    }
}

fn files_error(e: FilesError, request: &Request<'_>) -> Denial {
    match e {
        FilesError::Refused(why) => request.outside_scope(format_args!("refused: {why}")),
        other => request.invalid(other),
    }
}

/// The `files` capability's plug-in.
pub struct FilesPlugin;

impl CapabilityPlugin for FilesPlugin {
    fn interface(&self) -> &'static str {
        "files"
    }

    fn actions(&self) -> &'static [Capability] {
        &[LIST, READ, WRITE, MOVE, DELETE]
    }

    fn parse_backend(&self, table: PolicyTable<'_>) -> Result<Opaque, toml::de::Error> {
        use serde::de::Error as _;
        let settings = FilesSettings::deserialize(table)?;
        if let Some(bad) = settings.roots.keys().find(|name| {
            name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }) {
            return Err(toml::de::Error::custom(format!(
                "[files] root name `{bad}` must be letters, digits, `-` or `_`"
            )));
        }
        Ok(Opaque::new(settings))
    }

    fn open(&self, settings: &Opaque, policy: &Policy) -> Result<Opaque, String> {
        let settings = settings
            .get::<FilesSettings>()
            .ok_or("not files settings")?;
        let store = FileStore::open(settings, |p| policy.resolve(p)).map_err(|e| e.to_string())?;
        Ok(Opaque::new(store))
    }

    fn parse_scope(
        &self,
        _capability: Capability,
        scope: PolicyTable<'_>,
    ) -> Result<Opaque, toml::de::Error> {
        use serde::de::Error as _;
        let table = ScopeTable::deserialize(scope)?;
        let globs = match &table.paths {
            None => None,
            Some(patterns) => {
                let mut set = GlobSetBuilder::new();
                for p in patterns {
                    let glob = globset::GlobBuilder::new(p)
                        .literal_separator(true)
                        .backslash_escape(true)
                        .build()
                        .map_err(|e| toml::de::Error::custom(format!("path pattern `{p}`: {e}")))?;
                    set.add(glob);
                }
                Some(
                    set.build()
                        .map_err(|e| toml::de::Error::custom(format!("path patterns: {e}")))?,
                )
            }
        };
        Ok(Opaque::new(FilesScope {
            roots: table.roots,
            paths: table.paths,
            globs,
        }))
    }

    fn describe(&self, request: &Request<'_>) -> Result<Described, Denial> {
        let capability = request.capability;
        let scope = request.scope::<FilesScope>()?;
        let store = request.backend::<FileStore>()?;
        let in_scope = |path: &FilePath| {
            scope
                .check(path)
                .map_err(|why| request.outside_scope(format_args!("on {path}: {why}")))
        };
        let parse = |t: &str| FilePath::parse(t).map_err(|e| request.invalid(e));
        let mut items = Vec::new();
        let mut shown = None;
        let action;
        if capability == LIST {
            for t in request.targets {
                let folder = parse(t)?;
                if let Some(roots) = &scope.roots
                    && !roots.contains(&folder.root)
                {
                    return Err(request.outside_scope(format_args!(
                        "on {folder}: root {} is not granted",
                        folder.root
                    )));
                }
                if !scope.shows_folder(&folder) {
                    return Err(request.outside_scope(format_args!(
                        "on {folder}: the folder leads to none of the granted paths ({})",
                        scope.paths.as_deref().unwrap_or_default().join(", ")
                    )));
                }
                let entries = store
                    .list(&folder, scope)
                    .map_err(|e| files_error(e, request))?;
                items.push(PromptItem {
                    target: t.clone(),
                    description: format!("folder {folder} ({} entries)", entries.len()),
                });
            }
            action = format!("list {} folder(s): names, sizes and dates", items.len());
        } else if capability == READ {
            for t in request.targets {
                let path = parse(t)?;
                in_scope(&path)?;
                items.push(PromptItem {
                    target: t.clone(),
                    description: store
                        .describe_file(&path)
                        .map_err(|e| files_error(e, request))?,
                });
            }
            action = format!("read {} file(s)", items.len());
        } else if capability == WRITE {
            let [target] = request.targets else {
                return Err(request.invalid("a write names exactly one file"));
            };
            // The tool may name the file with or without a version.
            let path = parse(target.rsplit_once('@').map_or(target.as_str(), |(p, v)| {
                if v == "new" || (v.len() == 16 && v.chars().all(|c| c.is_ascii_hexdigit())) {
                    p
                } else {
                    target
                }
            }))?;
            in_scope(&path)?;
            store.writable(&path).map_err(|e| files_error(e, request))?;
            let content = request.payload.unwrap_or_default();
            if content.len() as u64 > store.max_file_bytes() {
                return Err(request.invalid(format_args!(
                    "the content is {}, over the limit of {} (max_file_kb)",
                    size_text(content.len() as u64),
                    size_text(store.max_file_bytes())
                )));
            }
            let version = store.version(&path).map_err(|e| files_error(e, request))?;
            let old = if version == "new" {
                None
            } else {
                Some(store.content(&path).map_err(|e| files_error(e, request))?)
            };
            let lines = content.lines().count();
            let description = match &old {
                None => format!(
                    "create file {path}: {} in {lines} line(s)",
                    size_text(content.len() as u64)
                ),
                Some(old) => format!(
                    "replace file {path}: {} → {} in {lines} line(s); the current version goes to the trash",
                    size_text(old.len() as u64),
                    size_text(content.len() as u64)
                ),
            };
            shown = Some(write_preview(&path, old.as_deref(), content));
            items.push(PromptItem {
                target: versioned(&path, &version),
                description,
            });
            action = if old.is_some() {
                format!("replace {path} with exactly the content below (diff shown)")
            } else {
                format!("create {path} with exactly the content below")
            };
        } else if capability == MOVE {
            for t in request.targets {
                let (from, to) = parse_move(t).map_err(|e| request.invalid(e))?;
                in_scope(&from)?;
                in_scope(&to)?;
                store.writable(&from).map_err(|e| files_error(e, request))?;
                let facts = store
                    .file_facts(&from)
                    .map_err(|e| files_error(e, request))?;
                if store
                    .facts(&to)
                    .map_err(|e| files_error(e, request))?
                    .is_some()
                {
                    return Err(request.invalid(format_args!(
                        "{to} exists; a move does not replace anything"
                    )));
                }
                items.push(PromptItem {
                    target: t.clone(),
                    description: format!("{from} ({}) → {to}", size_text(facts.size)),
                });
            }
            action = format!("move {} file(s) within their root", items.len());
        } else if capability == DELETE {
            for t in request.targets {
                let path = parse(t)?;
                in_scope(&path)?;
                store.writable(&path).map_err(|e| files_error(e, request))?;
                items.push(PromptItem {
                    target: t.clone(),
                    description: format!(
                        "{} → trash (restorable)",
                        store
                            .describe_file(&path)
                            .map_err(|e| files_error(e, request))?
                    ),
                });
            }
            action = format!(
                "delete {} file(s) (moved to the root's trash, restorable)",
                items.len()
            );
        } else {
            return Err(request.invalid("not a files capability"));
        }
        Ok(Described {
            action,
            targets: items.iter().map(|i| i.target.clone()).collect(),
            items,
            shown,
        })
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit_files::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
    }
}

// ---- The WIT interface: every function passes the Gate first. ----

fn to_wit_error(e: FilesError) -> wit_files::FilesError {
    match e {
        FilesError::Refused(m) => wit_files::FilesError::Refused(m),
        FilesError::NotFound(m) => wit_files::FilesError::NotFound(m),
        FilesError::Invalid(m) => wit_files::FilesError::Invalid(m),
        FilesError::TooLarge(m) => wit_files::FilesError::TooLarge(m),
        FilesError::Backend(m) => wit_files::FilesError::Backend(m),
    }
}

impl CallContext {
    fn file_store(&self) -> Result<&FileStore, wit_files::FilesError> {
        self.backend::<FileStore>("files")
            .ok_or_else(|| wit_files::FilesError::Backend("no [files] roots are configured".into()))
    }

    fn files_scope(&self, capability: Capability) -> FilesScope {
        self.grants
            .grant_for(capability)
            .and_then(|g| g.scope.get::<FilesScope>().cloned())
            .unwrap_or_default()
    }
}

fn outcome<T>(r: &Result<T, wit_files::FilesError>, ok: impl FnOnce(&T) -> String) -> String {
    match r {
        Ok(v) => format!("ok: {}", ok(v)),
        Err(e) => format!("error: {e:?}"),
    }
}

impl HostState {
    /// Refuse a malformed path before the Gate, journaled like any refusal.
    fn file_path(
        &self,
        capability: Capability,
        text: &str,
    ) -> Result<FilePath, wit_files::FilesError> {
        FilePath::parse(text).map_err(|e| {
            self.call
                .journal_refusal(capability, &[text.to_string()], None, None, &e.to_string());
            to_wit_error(e)
        })
    }

    fn check_count(&self, n: usize) -> Result<(), wit_files::FilesError> {
        if n > MAX_TARGETS {
            return Err(wit_files::FilesError::Invalid(format!(
                "at most {MAX_TARGETS} files per call, got {n}"
            )));
        }
        Ok(())
    }
}

impl wit_files::Host for HostState {
    fn list(
        &mut self,
        token: Resource<TokenHandle>,
        folder: String,
    ) -> wasmtime::Result<Result<Vec<wit_files::Entry>, wit_files::FilesError>> {
        let path = match self.file_path(LIST, &folder) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let scope = self.call.files_scope(LIST);
        self.through_gate(
            &token,
            LIST,
            &[folder],
            None,
            wit_files::FilesError::Refused,
            |call, _| {
                let entries = call
                    .file_store()?
                    .list(&path, &scope)
                    .map_err(to_wit_error)?;
                Ok(entries
                    .into_iter()
                    .map(|e| wit_files::Entry {
                        path: e.path,
                        is_dir: e.is_dir,
                        size: e.size,
                        modified_ms: millis(e.modified),
                    })
                    .collect())
            },
            |r| {
                outcome(r, |e: &Vec<wit_files::Entry>| {
                    format!("{} entries", e.len())
                })
            },
        )
    }

    fn read(
        &mut self,
        token: Resource<TokenHandle>,
        path: String,
        offset: u64,
        length: u64,
    ) -> wasmtime::Result<Result<Vec<u8>, wit_files::FilesError>> {
        let parsed = match self.file_path(READ, &path) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        // Over the limit is refused before the Gate: no byte is read.
        if let Ok(store) = self.call.file_store()
            && length > store.max_file_bytes()
        {
            let message = format!(
                "a read is at most {} (max_file_kb); {} were asked for",
                size_text(store.max_file_bytes()),
                size_text(length)
            );
            self.call
                .journal_refusal(READ, std::slice::from_ref(&path), None, None, &message);
            return Ok(Err(wit_files::FilesError::TooLarge(message)));
        }
        self.through_gate(
            &token,
            READ,
            &[path],
            None,
            wit_files::FilesError::Refused,
            |call, _| {
                call.file_store()?
                    .read(&parsed, offset, length)
                    .map_err(to_wit_error)
            },
            |r| outcome(r, |b: &Vec<u8>| format!("read {} bytes", b.len())),
        )
    }

    fn write(
        &mut self,
        token: Resource<TokenHandle>,
        path: String,
        content: String,
    ) -> wasmtime::Result<Result<u64, wit_files::FilesError>> {
        let parsed = match self.file_path(WRITE, &path) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        // Nothing about the file (not even whether it exists, nor its
        // digest) is looked at unless the grant's scope and the token cover
        // this path.
        let path_text = parsed.to_string();
        let record = self.token_record(&token)?;
        if record.as_ref().is_none_or(|r| r.capability != WRITE) {
            // Not a live write token: the Gate refuses it and says why.
            return self.through_gate(
                &token,
                WRITE,
                std::slice::from_ref(&path_text),
                Some(&content),
                wit_files::FilesError::Refused,
                |_, _| Err(wit_files::FilesError::Refused("not reached".into())),
                |r| outcome(r, |n| format!("wrote {n} bytes")),
            );
        }
        let approved_version = record.and_then(|r| {
            r.targets.iter().find_map(|t| {
                t.rsplit_once('@')
                    .filter(|(p, _)| *p == path_text)
                    .map(|(_, v)| v.to_string())
            })
        });
        let refuse = |call: &CallContext, message: String| {
            call.journal_refusal(WRITE, std::slice::from_ref(&path), None, None, &message);
            Ok(Err(wit_files::FilesError::Refused(message)))
        };
        if let Err(why) = self.call.files_scope(WRITE).check(&parsed) {
            return refuse(&self.call, format!("files.write on {path_text}: {why}"));
        }
        let Some(approved_version) = approved_version else {
            return refuse(
                &self.call,
                format!("files.write of {path_text} was not approved: the token does not cover it"),
            );
        };
        // The token covers the file at the version the human saw.
        let version = match self.call.file_store().and_then(|s| {
            if content.len() as u64 > s.max_file_bytes() {
                return Err(wit_files::FilesError::TooLarge(format!(
                    "a write is at most {} (max_file_kb); this one is {}",
                    size_text(s.max_file_bytes()),
                    size_text(content.len() as u64)
                )));
            }
            s.version(&parsed).map_err(to_wit_error)
        }) {
            Ok(v) => v,
            Err(e) => {
                self.call
                    .journal_refusal(WRITE, &[path], None, None, &format!("{e:?}"));
                return Ok(Err(e));
            }
        };
        if version != approved_version {
            return refuse(
                &self.call,
                format!(
                    "{path_text} changed since the write was approved (it was {}); nothing was written",
                    if approved_version == "new" {
                        "absent"
                    } else {
                        "another version"
                    }
                ),
            );
        }
        let target = versioned(&parsed, &version);
        self.through_gate(
            &token,
            WRITE,
            std::slice::from_ref(&target),
            Some(&content),
            wit_files::FilesError::Refused,
            |call, _| {
                call.file_store()?
                    .write(&parsed, &version, content.as_bytes())
                    .map_err(to_wit_error)
            },
            |r| outcome(r, |n| format!("wrote {n} bytes to {target}")),
        )
    }

    fn move_(
        &mut self,
        token: Resource<TokenHandle>,
        moves: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<String>, wit_files::FilesError>> {
        if let Err(e) = self.check_count(moves.len()) {
            return Ok(Err(e));
        }
        let mut pairs = Vec::with_capacity(moves.len());
        for m in &moves {
            match parse_move(m) {
                Ok(pair) => pairs.push(pair),
                Err(e) => {
                    self.call.journal_refusal(
                        MOVE,
                        std::slice::from_ref(m),
                        None,
                        None,
                        &e.to_string(),
                    );
                    return Ok(Err(to_wit_error(e)));
                }
            }
        }
        self.through_gate(
            &token,
            MOVE,
            &moves,
            None,
            wit_files::FilesError::Refused,
            |call, _| {
                let store = call.file_store()?;
                let mut moved = Vec::new();
                for ((from, to), text) in pairs.iter().zip(&moves) {
                    if let Err(e) = store.move_file(from, to) {
                        return Err(wit_files::FilesError::Backend(format!(
                            "{e} (moved before the failure: {})",
                            if moved.is_empty() {
                                "none".to_string()
                            } else {
                                moved.join(", ")
                            }
                        )));
                    }
                    moved.push(text.clone());
                }
                Ok(moved)
            },
            |r| outcome(r, |m: &Vec<String>| format!("moved {}", m.len())),
        )
    }

    fn delete(
        &mut self,
        token: Resource<TokenHandle>,
        paths: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<String>, wit_files::FilesError>> {
        if let Err(e) = self.check_count(paths.len()) {
            return Ok(Err(e));
        }
        let mut parsed = Vec::with_capacity(paths.len());
        for p in &paths {
            match self.file_path(DELETE, p) {
                Ok(path) => parsed.push(path),
                Err(e) => return Ok(Err(e)),
            }
        }
        self.through_gate(
            &token,
            DELETE,
            &paths,
            None,
            wit_files::FilesError::Refused,
            |call, _| {
                let store = call.file_store()?;
                let mut handles = Vec::new();
                for path in &parsed {
                    match store.delete(path) {
                        Ok(handle) => handles.push(handle),
                        Err(e) => {
                            return Err(wit_files::FilesError::Backend(format!(
                                "{e} (trashed before the failure: {})",
                                if handles.is_empty() {
                                    "none".to_string()
                                } else {
                                    handles.join(", ")
                                }
                            )));
                        }
                    }
                }
                Ok(handles)
            },
            |r| {
                outcome(r, |h: &Vec<String>| {
                    format!("moved {} to the trash: {}", h.len(), h.join(", "))
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("notes/drafts")).unwrap();
        std::fs::write(dir.path().join("notes/drafts/a.md"), "one\ntwo\n").unwrap();
        let settings = FilesSettings {
            max_file_kb: 1,
            max_trash_mb: 1,
            roots: BTreeMap::from([(
                "notes".to_string(),
                RootSettings {
                    path: "notes".into(),
                    read_only: false,
                },
            )]),
        };
        let store = FileStore::open(&settings, |p| dir.path().join(p)).unwrap();
        (dir, store)
    }

    #[test]
    fn paths_refuse_escapes() {
        for bad in [
            "notes",
            ":a",
            "notes:/etc/passwd",
            "notes:../x",
            "notes:a/../../x",
            "notes:a//b",
            "notes:./a",
            "notes:.agentcap-trash/1/file",
            "../notes:a",
        ] {
            assert!(FilePath::parse(bad).is_err(), "{bad}");
        }
        let p = FilePath::parse("notes:drafts/a.md").unwrap();
        assert_eq!(p.relative(), "drafts/a.md");
        assert_eq!(p.to_string(), "notes:drafts/a.md");
        assert!(parse_move("notes:a -> other:b").is_err());
        let (from, to) = parse_move("notes:a.md -> archive/a.md").unwrap();
        assert_eq!(
            (from.relative(), to.to_string()),
            ("a.md".into(), "notes:archive/a.md".into())
        );
    }

    #[test]
    fn write_replace_delete_and_restore() {
        let (dir, store) = store();
        let a = FilePath::parse("notes:drafts/a.md").unwrap();
        let old = store.version(&a).unwrap();
        assert_eq!(old, version_of(b"one\ntwo\n"));
        assert!(
            store.write(&a, "new", b"x").is_err(),
            "a stale version is refused"
        );
        store.write(&a, &old, b"three\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("notes/drafts/a.md")).unwrap(),
            "three\n"
        );
        let handle = store.delete(&a).unwrap();
        assert!(!dir.path().join("notes/drafts/a.md").exists());
        assert_eq!(store.restore(&handle).unwrap(), a);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("notes/drafts/a.md")).unwrap(),
            "three\n"
        );
        // The replaced version is in the trash too, and cannot overwrite.
        assert!(
            store
                .list(&FilePath::parse("notes:").unwrap(), &FilesScope::default())
                .unwrap()
                .iter()
                .all(|e| !e.path.contains(TRASH_DIR))
        );
        assert!(
            store
                .write(&FilePath::parse("notes:big").unwrap(), "new", &[b'x'; 2048])
                .is_err()
        );
        assert!(store.read(&a, 0, 4096).is_err());
    }

    #[test]
    fn the_trash_has_a_quota_and_nothing_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("notes")).unwrap();
        let settings = FilesSettings {
            max_file_kb: 1024,
            max_trash_mb: 1,
            roots: BTreeMap::from([(
                "notes".to_string(),
                RootSettings {
                    path: "notes".into(),
                    read_only: false,
                },
            )]),
        };
        let store = FileStore::open(&settings, |p| dir.path().join(p)).unwrap();
        let a = FilePath::parse("notes:a.md").unwrap();
        let big = vec![b'x'; 600 * 1024];
        store.write(&a, "new", &big).unwrap();
        let v = store.version(&a).unwrap();
        store.write(&a, &v, &big[..599 * 1024]).unwrap(); // 600 KiB to the trash
        let v = store.version(&a).unwrap();
        let err = store.write(&a, &v, b"small").unwrap_err();
        assert!(err.to_string().contains("max_trash_mb"), "{err}");
        // Refused before anything changed.
        assert_eq!(store.version(&a).unwrap(), v);
        assert_eq!(store.trash_entries().unwrap().len(), 1);
    }
}
