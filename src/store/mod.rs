//! The storage layer: a content-addressed file store, the pin journal and a
//! derived lookup index.
//!
//! Layout under `data_dir`:
//!
//! ```text
//! FORMAT                       store format version ("1")
//! content/sha256/ab/<64 hex>   content files, named by their sha256
//! tmp/                         in-flight downloads; emptied at open
//! journal                      the pin journal (append-only, hash-chained)
//! index/                       sled database derived from the journal
//! ```
//!
//! Architecture Invariant: the journal is the source of truth. The index can
//! be deleted at any time and is rebuilt from the journal at the next open.
//!
//! Architecture Invariant: a pinned coordinate never silently changes its
//! bytes. `Store::record` refuses a pin that names different content for an
//! already pinned coordinate, and replay keeps the first pin.
//!
//! Architecture Invariant: the store never hashes a stream. The engine verifies
//! a stream while it is written to a temp file; `publish` only moves verified
//! bytes into place. `put_bytes` hashes small in-memory documents (Maven
//! metadata, sidecars); `verify_content` re-hashes for audits.
//!
//! Everything here is synchronous; the engine calls it from `spawn_blocking`.
//! Only this module knows the on-disk layout, and only `index` knows sled.

mod cas;
mod index;
mod journal;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

pub use self::cas::DirSync;
use self::index::{Index, IndexOpenError};
use self::journal::Journal;
pub use self::journal::{JournalReport, Record, read_records, verify_journal};

/// The store format this binary reads and writes.
pub const FORMAT_VERSION: u32 = 1;

const FORMAT_FILE: &str = "FORMAT";
const JOURNAL_FILE: &str = "journal";
const INDEX_DIR: &str = "index";
const TMP_DIR: &str = "tmp";
const CONTENT_DIR: &str = "content";
const SHA256_DIR: &str = "sha256";

/// A sha256 digest naming a content file.
///
/// Displayed, parsed and serialized as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Hashes a byte slice (convenience for small documents and tests; the
    /// engine hashes streams incrementally).
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

/// The error returned when a string is not 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sha256 hex {0:?}: expected 64 lowercase hex digits")]
pub struct ParseHashError(String);

impl FromStr for ContentHash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical lowercase form is accepted, so that a hash has
        // exactly one spelling in coordinates, paths and the journal.
        let canonical = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let mut out = [0u8; 32];
        if !canonical || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(ParseHashError(s.chars().take(80).collect()));
        }
        Ok(Self(out))
    }
}

impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One journal event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Pin(Pin),
    Resolve(Resolution),
}

impl Event {
    pub fn coordinate(&self) -> &str {
        match self {
            Self::Pin(p) => &p.coordinate,
            Self::Resolve(r) => &r.coordinate,
        }
    }

    /// The content an event is about: its sha256 and size.
    pub fn content(&self) -> (&ContentHash, u64) {
        match self {
            Self::Pin(p) => (&p.sha256, p.size),
            Self::Resolve(r) => (&r.sha256, r.size),
        }
    }
}

/// An immutable coordinate pinned to content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// For example `oci:docker.io/library/alpine@sha256:ab..`,
    /// `npm:left-pad@1.3.0` or `maven:g:a:v:jar`.
    pub coordinate: String,
    /// The content file.
    pub sha256: ContentHash,
    pub size: u64,
    /// The Content-Type to serve (OCI manifests need it byte-exact).
    pub media_type: Option<String>,
    /// The configured upstream name, for example `docker.io`.
    pub upstream: String,
    /// The upstream's own digests, for example `{"sha256": hex}` or
    /// `{"sha512": b64, "sha1": hex}`.
    pub digests: BTreeMap<String, String>,
    pub verified: Verified,
}

/// How the pinned bytes were checked before they were pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verified {
    /// Against a digest the client or upstream named.
    Digest,
    /// Nothing to check against: trust on first use.
    FirstSeen,
}

/// A mutable name observed to point at content, for example an OCI tag
/// resolving to a manifest digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// For example `oci:docker.io/library/alpine:3.20`.
    pub coordinate: String,
    /// What it resolved to, for example `sha256:abc..`.
    pub target: String,
    /// The content file of what it resolved to.
    pub sha256: ContentHash,
    pub size: u64,
    pub media_type: Option<String>,
    pub upstream: String,
    /// The upstream's validator for a conditional revalidation (an HTTP `ETag`), when it
    /// gave one. Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The upstream's `Last-Modified`, served as is and sent back as `If-Modified-Since`
    /// when there is no ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// A pin as stored, with the journal record that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinEntry {
    pub pin: Pin,
    pub seq: u64,
    pub time_ms: u64,
}

/// A resolution as stored, with the journal record that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolutionEntry {
    pub resolution: Resolution,
    pub seq: u64,
    pub time_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the data directory uses store format {found}, but this pinproxy ({}) supports format {supported} at most: it was written by a newer pinproxy, so run a release that supports store format {found}",
        env!("CARGO_PKG_VERSION")
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error("unreadable store format file {}: {content:?} (expected a version number)", path.display())]
    BadFormat { path: PathBuf, content: String },
    #[error(
        "data directory {} is not empty and has no FORMAT file, so it is not a pinproxy store; refusing to use it",
        path.display()
    )]
    NotAStore { path: PathBuf },
    #[error("data directory {} is in use by another pinproxy process", path.display())]
    Locked { path: PathBuf },
    #[error(
        "pin journal corrupt at byte {offset}: {reason}; refusing to start, run `pinproxy journal verify` to inspect it"
    )]
    JournalCorrupt { offset: u64, reason: String },
    #[error("pin journal is unusable after a failed write; restart pinproxy")]
    JournalPoisoned,
    #[error("{coordinate} is pinned to sha256:{existing}, refusing to re-pin it to sha256:{new}")]
    PinConflict {
        coordinate: String,
        existing: ContentHash,
        new: ContentHash,
    },
    #[error("invalid coordinate {0:?}: must be non-empty and contain no NUL byte")]
    InvalidCoordinate(String),
    #[error("content sha256:{sha256} is not published: {reason}")]
    ContentMissing { sha256: ContentHash, reason: String },
    #[error("index: {0}")]
    Index(String),
    #[error("index value: {0}")]
    IndexFormat(String),
    #[error("cannot encode journal record")]
    Encode(#[source] serde_json::Error),
    #[error("journal record {seq}: {reason}")]
    RecordData { seq: u64, reason: String },
    #[error("the bytes given for sha256:{sha256} ({size} bytes) do not hash to it")]
    DataMismatch { sha256: ContentHash, size: u64 },
}

impl StoreError {
    /// True when the failure was running out of space or quota, which the
    /// engine reports differently from other store failures.
    pub fn is_disk_full(&self) -> bool {
        let Self::Io { source, .. } = self else {
            return false;
        };
        source.kind() == io::ErrorKind::StorageFull
            || matches!(source.raw_os_error(), Some(code) if code == libc::ENOSPC || code == libc::EDQUOT)
    }

    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The store. `Send + Sync`; share it through an `Arc`.
pub struct Store {
    data_dir: PathBuf,
    /// Serializes appends and index updates, so the index is applied in
    /// journal order and conflict checks see every earlier pin.
    journal: Mutex<Journal>,
    index: Index,
    /// Set when applying a journaled event to the index failed; the next
    /// caller holding the journal lock catches the index up from the journal.
    index_behind: AtomicBool,
    /// What the next checkpoint makes durable: the last record applied to the index, and
    /// content files published without a sync (their bytes are in their records).
    checkpoint: Mutex<Checkpoint>,
    /// Held while a checkpoint runs, so two never interleave.
    checkpointing: Mutex<()>,
    temp_counter: AtomicU64,
    #[cfg(test)]
    opened: OpenStats,
}

/// How often the engine checkpoints the store ([`Store::checkpoint`]) while records keep
/// coming; the store itself also checkpoints on flush and close. Off the path of each fill;
/// a crash replays (and re-checks the carried bytes of) at most about this much journal.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Objects up to this size are carried in the record that pins them: one journal sync makes
/// the pin and its bytes durable, instead of a sync of the content file, of its directory
/// and of the journal, one after the other. The content file is synced at the next
/// checkpoint; until then a crash is repaired from the record at open. (`cargo bench --bench
/// store`: carrying 4 KiB costs half of publishing it, 16 KiB 60%, 32 KiB about 90%; the
/// journal keeps the bytes for good, so larger objects are not worth it.)
pub const CARRY_MAX: u64 = 32 * 1024;

/// A journal record applied to the index: its seq and payload hash.
type Applied = (u64, [u8; 32]);

struct Checkpoint {
    /// Applied to the index but not yet checkpointed.
    pending: Option<Applied>,
    /// Content files renamed into place without a sync, their bytes carried by records.
    unsynced: Vec<PathBuf>,
}

/// One event to record, with the time it happened.
pub struct Entry {
    pub event: Event,
    pub time: SystemTime,
    /// For an event about a small object (at most [`CARRY_MAX`] bytes): the verified bytes
    /// to carry in its record, and the temp file holding them (neither synced nor
    /// published). The store publishes the temp file once the record is durable.
    pub carried: Option<Carried>,
}

/// See [`Entry::carried`].
pub struct Carried {
    pub bytes: bytes::Bytes,
    pub temp: PathBuf,
}

impl Entry {
    pub fn new(event: Event, time: SystemTime) -> Self {
        Self {
            event,
            time,
            carried: None,
        }
    }
}

/// What `Store::open` had to do to the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenStats {
    pub(crate) journal_records: u64,
    pub(crate) replayed: u64,
    pub(crate) rebuilt: bool,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store under `data_dir`.
    ///
    /// Checks the format, empties `tmp/`, scans the journal (truncating a
    /// torn tail, refusing corruption) and brings the index up to date with
    /// the journal, rebuilding it if it is unreadable or does not match.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(StoreError::io("create directory", data_dir))?;
        check_format(data_dir)?;

        // sled holds an exclusive lock on its files while open, so opening
        // the index first also keeps a second process from cleaning tmp/ or
        // truncating the journal under a running one.
        let index_dir = data_dir.join(INDEX_DIR);
        let (index, mut rebuild) = match Index::open(&index_dir) {
            Ok(index) => (index, false),
            Err(IndexOpenError::Locked) => {
                return Err(StoreError::Locked {
                    path: data_dir.to_path_buf(),
                });
            }
            Err(IndexOpenError::Environment(source)) => {
                return Err(StoreError::Io {
                    op: "open index",
                    path: index_dir,
                    source,
                });
            }
            Err(IndexOpenError::Broken(reason)) => {
                let aside = data_dir.join(format!("{INDEX_DIR}.broken-{}", now_nanos()));
                tracing::warn!(
                    index = %index_dir.display(),
                    moved_to = %aside.display(),
                    %reason,
                    "index does not open; moving it aside and rebuilding it from the journal"
                );
                std::fs::rename(&index_dir, &aside)
                    .map_err(StoreError::io("move aside", &index_dir))?;
                let index = Index::open(&index_dir).map_err(|e| match e {
                    IndexOpenError::Locked => StoreError::Locked {
                        path: data_dir.to_path_buf(),
                    },
                    IndexOpenError::Environment(source) => StoreError::Io {
                        op: "create index",
                        path: index_dir.clone(),
                        source,
                    },
                    IndexOpenError::Broken(reason) => {
                        StoreError::Index(format!("cannot create a new index: {reason}"))
                    }
                })?;
                (index, true)
            }
        };

        cas::prepare_dirs(data_dir)?;

        let (applied_seq, applied_hash) = match index.applied() {
            Ok(applied) => applied,
            Err(e) => {
                tracing::warn!(error = %e, "index metadata unreadable; rebuilding the index");
                rebuild = true;
                (0, None)
            }
        };

        let journal_path = data_dir.join(JOURNAL_FILE);
        let mut hash_at_applied = None;
        let journal = Journal::open(&journal_path, |seq, hash| {
            if seq == applied_seq {
                hash_at_applied = Some(*hash);
            }
        })?;
        let last_seq = journal.last_seq();

        if !rebuild {
            if applied_seq > last_seq {
                tracing::warn!(
                    applied_seq,
                    last_seq,
                    "index is ahead of the journal (from another journal?); rebuilding it"
                );
                rebuild = true;
            } else if applied_seq > 0 && hash_at_applied != applied_hash {
                tracing::warn!(
                    applied_seq,
                    "index does not match the journal record it claims to have applied; rebuilding it"
                );
                rebuild = true;
            } else if applied_seq == 0 && !index.is_empty() {
                tracing::warn!("index has entries but no applied journal position; rebuilding it");
                rebuild = true;
            } else if let Err(e) = index.validate() {
                tracing::warn!(error = %e, "index holds undecodable values; rebuilding it");
                rebuild = true;
            }
        }

        let from_seq = if rebuild {
            index.clear()?;
            0
        } else {
            applied_seq
        };
        // Skipping the second pass when there is nothing to replay keeps a normal start at
        // one read of the journal.
        let mut replay_stats = Replayed::default();
        if from_seq < last_seq {
            replay_stats = replay(data_dir, &journal_path, &index, from_seq)?;
        }
        let replayed = replay_stats.records;
        let opened = OpenStats {
            journal_records: last_seq,
            replayed,
            rebuilt: rebuild,
        };
        if opened.rebuilt || opened.replayed > 0 {
            tracing::info!(
                replayed = opened.replayed,
                journal_records = opened.journal_records,
                rebuilt = opened.rebuilt,
                "index brought up to date from the pin journal"
            );
        }
        tracing::info!(
            data_dir = %data_dir.display(),
            journal_records = opened.journal_records,
            "store opened"
        );

        let store = Self {
            data_dir: data_dir.to_path_buf(),
            journal: Mutex::new(journal),
            index,
            index_behind: AtomicBool::new(false),
            checkpoint: Mutex::new(Checkpoint {
                pending: replay_stats.last,
                unsynced: replay_stats.content,
            }),
            checkpointing: Mutex::new(()),
            temp_counter: AtomicU64::new(0),
            #[cfg(test)]
            opened,
        };
        store.checkpoint()?;
        Ok(store)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn journal_path(&self) -> PathBuf {
        self.data_dir.join(JOURNAL_FILE)
    }

    /// Records an event: appends it to the journal, waits for it to be
    /// durable, then updates the index. Returns the journal sequence number.
    ///
    /// A pin for a coordinate already pinned to other content fails with
    /// `PinConflict` and writes nothing; a pin repeating the existing content
    /// is a no-op returning the existing record's seq. The content file must
    /// already be published.
    pub fn record(&self, event: Event, time: SystemTime) -> Result<u64, StoreError> {
        self.record_groups(vec![vec![Entry::new(event, time)]])
            .pop()
            .unwrap_or(Err(StoreError::JournalPoisoned))
            .map(|seqs| seqs.first().copied().unwrap_or(0))
    }

    /// Records groups of events with one fsync for all of them (group commit).
    /// Each group is recorded as consecutive [`Store::record`] calls would be:
    /// in order, a later pin seeing the earlier ones, stopping at the group's
    /// first failure. Then the journal is synced once and the index updated.
    /// One result per group (the seqs of its events); no group is reported
    /// recorded before its records are durable.
    ///
    /// An entry's carried bytes go into its record, and its temp file is renamed into place
    /// (without a sync) once the records are durable, before the index learns of them.
    pub fn record_groups(&self, groups: Vec<Vec<Entry>>) -> Vec<Result<Vec<u64>, StoreError>> {
        let Ok(mut journal) = self.lock_journal() else {
            return groups
                .iter()
                .map(|_| Err(StoreError::JournalPoisoned))
                .collect();
        };
        if self.index_behind.load(Ordering::Acquire) {
            // Conflicts are checked against the index: never append past a stale one.
            if let Err(e) = self.catch_up(&journal) {
                let reason = e.to_string();
                let mut first = Some(e);
                return groups
                    .iter()
                    .map(|_| {
                        Err(first
                            .take()
                            .unwrap_or_else(|| StoreError::Index(reason.clone())))
                    })
                    .collect();
            }
        }
        // Pins appended in this batch, not yet in the index.
        let mut pending: std::collections::HashMap<String, (ContentHash, u64)> =
            std::collections::HashMap::new();
        // Content carried by records of this batch, published only once they are durable.
        let mut carrying = std::collections::HashSet::new();
        let mut appended = Vec::new();
        let mut results: Vec<Result<Vec<u64>, StoreError>> = Vec::with_capacity(groups.len());
        for (g, group) in groups.into_iter().enumerate() {
            let mut seqs = Vec::with_capacity(group.len());
            let mut failed = None;
            for Entry {
                event,
                time,
                carried,
            } in group
            {
                let checked = match &carried {
                    Some(c) => check_carried(&event, &c.bytes),
                    None => Ok(()),
                }
                .and_then(|()| {
                    let in_batch = carried.is_some() || carrying.contains(event.content().0);
                    self.check_event(&event, &pending, in_batch)
                });
                match checked {
                    Err(e) => failed = Some(e),
                    Ok(Some(existing_seq)) => {
                        // Already recorded: the bytes are not carried again, so their file
                        // is published the long way (synced) if it is not there yet.
                        if let Some(c) = carried {
                            if let Err(e) = self.publish(&c.temp, event.content().0) {
                                failed = Some(e);
                            }
                        }
                        seqs.push(existing_seq);
                    }
                    Ok(None) => {
                        let time_ms = time
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                        let data = carried.as_ref().map(|c| &c.bytes[..]);
                        match journal.append_unsynced(time_ms, &event, data) {
                            Err(e) => failed = Some(e),
                            Ok((seq, hash)) => {
                                if let Event::Pin(pin) = &event {
                                    pending.insert(pin.coordinate.clone(), (pin.sha256, seq));
                                }
                                if carried.is_some() {
                                    carrying.insert(*event.content().0);
                                }
                                appended.push((g, seq, hash, time_ms, event, carried));
                                seqs.push(seq);
                            }
                        }
                    }
                }
                if failed.is_some() {
                    break;
                }
            }
            results.push(match failed {
                Some(e) => Err(e),
                None => Ok(seqs),
            });
        }
        if appended.is_empty() {
            return results;
        }
        if let Err(e) = journal.sync_appended() {
            // Not durable: no group with an append in this batch may be reported done.
            let mut first = Some(e);
            for (g, ..) in &appended {
                if results[*g].is_ok() || first.is_some() {
                    results[*g] = Err(first.take().unwrap_or(StoreError::JournalPoisoned));
                }
            }
            return results;
        }
        // The records are durable: carried bytes now go to their content files (synced at
        // the next checkpoint; a crash before it is repaired from the records at open).
        let mut placed = Vec::new();
        for (g, _, _, _, event, carried) in &mut appended {
            let Some(c) = carried.take() else { continue };
            match self.place(&c.temp, event.content().0) {
                Ok(path) => placed.push(path),
                Err(e) => {
                    self.discard_temp(&c.temp);
                    if results[*g].is_ok() {
                        results[*g] = Err(e);
                    }
                }
            }
        }
        // The events have happened whatever the index does; a failed index update is
        // caught up from the journal later.
        let mut applied = None;
        for (_, seq, hash, time_ms, event, _) in appended {
            if self.index_behind.load(Ordering::Acquire) {
                // Past a failed apply: `catch_up` replays from the last checkpoint.
                break;
            }
            match self.index.apply(seq, time_ms, event) {
                Ok(()) => applied = Some((seq, hash)),
                Err(e) => {
                    tracing::error!(seq, error = %e, "cannot apply a journaled event to the index; will catch up");
                    self.index_behind.store(true, Ordering::Release);
                }
            }
        }
        self.note_applied(applied, placed);
        results
    }

    /// Notes what the next checkpoint makes durable: `applied`, the last record now in the
    /// index, and content files `placed` without a sync.
    fn note_applied(&self, applied: Option<Applied>, placed: Vec<PathBuf>) {
        // A poisoned lock only means a panic elsewhere; the data is still consistent.
        let mut cp = self
            .checkpoint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cp.unsynced.extend(placed);
        if applied.is_some() {
            cp.pending = applied;
        }
    }

    /// Makes durable what was recorded since the last checkpoint and was not synced then:
    /// the content files placed without a sync (and their directories), then the index,
    /// then the index's position in the journal. Run every [`CHECKPOINT_EVERY`] by the
    /// engine, and on flush and close. On failure nothing is lost: the next checkpoint
    /// tries again, and the next open replays from the last position written.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let _one = self
            .checkpointing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (target, files) = {
            let mut cp = self
                .checkpoint
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (cp.pending.take(), std::mem::take(&mut cp.unsynced))
        };
        if target.is_none() && files.is_empty() {
            return Ok(());
        }
        let result = (|| {
            let mut dirs = std::collections::BTreeSet::new();
            for file in &files {
                match std::fs::File::open(file).and_then(|f| f.sync_all()) {
                    Ok(()) => {}
                    // Removed since (by an operator): nothing left to make durable; its
                    // pin fetches it again when asked for.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io("sync", file)(e)),
                }
                if let Some(dir) = file.parent() {
                    dirs.insert(dir);
                }
            }
            for dir in dirs {
                sync_dir(dir)?;
            }
            match target {
                Some((seq, hash)) => self.index.checkpoint(seq, &hash),
                None => Ok(()),
            }
        })();
        if result.is_err() {
            let mut cp = self
                .checkpoint
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            cp.unsynced.extend(files);
            if cp.pending.is_none() {
                cp.pending = target;
            }
        }
        result
    }

    /// Whether `event` may be appended: `Ok(Some(seq))` when it repeats an
    /// existing pin (nothing to write), `Ok(None)` when it is new.
    /// `carried`: the content comes with a record of this batch, so its file is published
    /// only after the batch is durable.
    fn check_event(
        &self,
        event: &Event,
        pending: &std::collections::HashMap<String, (ContentHash, u64)>,
        carried: bool,
    ) -> Result<Option<u64>, StoreError> {
        let coordinate = event.coordinate();
        if coordinate.is_empty() || coordinate.contains('\0') {
            return Err(StoreError::InvalidCoordinate(coordinate.to_owned()));
        }
        let (sha256, size) = event.content();
        if !carried {
            self.check_published(sha256, size)?;
        }
        let Event::Pin(pin) = event else {
            return Ok(None);
        };
        let existing = match pending.get(&pin.coordinate) {
            Some((hash, seq)) => Some((*hash, *seq)),
            None => self
                .index
                .pin(&pin.coordinate)?
                .map(|e| (e.pin.sha256, e.seq)),
        };
        match existing {
            Some((hash, seq)) if hash == pin.sha256 => Ok(Some(seq)),
            Some((hash, _)) => Err(StoreError::PinConflict {
                coordinate: pin.coordinate.clone(),
                existing: hash,
                new: pin.sha256,
            }),
            None => Ok(None),
        }
    }

    pub fn pin(&self, coordinate: &str) -> Result<Option<PinEntry>, StoreError> {
        self.read_current()?;
        self.index.pin(coordinate)
    }

    /// The latest resolution of a coordinate.
    pub fn resolution(&self, coordinate: &str) -> Result<Option<ResolutionEntry>, StoreError> {
        self.read_current()?;
        self.index.resolution(coordinate)
    }

    /// Every recorded resolution of a coordinate, oldest first.
    pub fn resolution_history(&self, coordinate: &str) -> Result<Vec<ResolutionEntry>, StoreError> {
        self.read_current()?;
        self.index.resolution_history(coordinate)
    }

    /// All pins, sorted by coordinate.
    pub fn pins(&self) -> Result<Vec<PinEntry>, StoreError> {
        self.read_current()?;
        self.index.pins()
    }

    /// The latest resolution of every coordinate, sorted by coordinate.
    pub fn resolutions(&self) -> Result<Vec<ResolutionEntry>, StoreError> {
        self.read_current()?;
        self.index.resolutions()
    }

    /// Syncs the journal and checkpoints and flushes the index. Call on shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.lock_journal()?.sync()?;
        self.checkpoint()?;
        self.index.flush()
    }

    fn lock_journal(&self) -> Result<MutexGuard<'_, Journal>, StoreError> {
        // A panic while appending may have left the in-memory journal state
        // out of step with the file; only a reopen rescans it.
        self.journal.lock().map_err(|_| StoreError::JournalPoisoned)
    }

    /// Brings the index up to date if an earlier apply failed. Lookups stay
    /// available (possibly stale) if catching up fails again.
    fn read_current(&self) -> Result<(), StoreError> {
        if self.index_behind.load(Ordering::Acquire) {
            let journal = self.lock_journal()?;
            if let Err(e) = self.catch_up(&journal) {
                tracing::warn!(error = %e, "index is behind the journal and cannot catch up");
            }
        }
        Ok(())
    }

    fn catch_up(&self, _journal: &MutexGuard<'_, Journal>) -> Result<(), StoreError> {
        if !self.index_behind.load(Ordering::Acquire) {
            return Ok(());
        }
        let (applied, _) = self.index.applied()?;
        let replayed = replay(&self.data_dir, &self.journal_path(), &self.index, applied)?;
        tracing::info!(
            replayed = replayed.records,
            "index caught up with the journal"
        );
        self.index_behind.store(false, Ordering::Release);
        self.note_applied(replayed.last, replayed.content);
        Ok(())
    }

    fn check_published(&self, sha256: &ContentHash, size: u64) -> Result<(), StoreError> {
        let path = self.content_path(sha256);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() == size => Ok(()),
            Ok(meta) => Err(StoreError::ContentMissing {
                sha256: *sha256,
                reason: format!(
                    "the content file holds {} bytes, the event says {size}",
                    meta.len()
                ),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::ContentMissing {
                sha256: *sha256,
                reason: "no content file; publish it before recording".to_owned(),
            }),
            Err(e) => Err(StoreError::io("stat", &path)(e)),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.checkpoint() {
            tracing::warn!(error = %e, "cannot checkpoint the store on close");
        }
        if let Err(e) = self.index.flush() {
            tracing::warn!(error = %e, "cannot flush the index on close");
        }
    }
}

/// What [`replay`] did, for the caller to checkpoint.
#[derive(Default)]
struct Replayed {
    records: u64,
    /// The last record applied.
    last: Option<Applied>,
    /// Content files of records carrying their bytes: checked, repaired if need be, not yet
    /// synced.
    content: Vec<PathBuf>,
}

/// Applies every journal record after `after_seq` to the index, in order. A record carrying
/// its object's bytes has them checked against its content file first, and the file
/// rewritten from the record if a crash left it missing or damaged: after the last
/// checkpoint nothing says the file reached the disk.
fn replay(
    data_dir: &Path,
    journal_path: &Path,
    index: &Index,
    after_seq: u64,
) -> Result<Replayed, StoreError> {
    let mut replayed = Replayed::default();
    journal::for_each_record(journal_path, |mut record, hash| {
        if record.seq > after_seq {
            if let Some(bytes) = record.data.take() {
                replayed
                    .content
                    .push(cas::repair_carried(data_dir, &record, &bytes)?);
            }
            index.apply(record.seq, record.time_ms, record.event)?;
            replayed.records += 1;
            replayed.last = Some((record.seq, *hash));
        }
        Ok(())
    })?;
    Ok(replayed)
}

/// Checks that carried bytes are the content the event names.
fn check_carried(event: &Event, bytes: &[u8]) -> Result<(), StoreError> {
    let (sha256, size) = event.content();
    if bytes.len() as u64 != size || ContentHash::of(bytes) != *sha256 {
        return Err(StoreError::DataMismatch {
            sha256: *sha256,
            size,
        });
    }
    Ok(())
}

fn check_format(data_dir: &Path) -> Result<(), StoreError> {
    let path = data_dir.join(FORMAT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(content) => {
            let found: u32 = content.trim().parse().map_err(|_| StoreError::BadFormat {
                path: path.clone(),
                content: content.chars().take(40).collect(),
            })?;
            if found > FORMAT_VERSION {
                return Err(StoreError::NewerFormat {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            if found == 0 {
                return Err(StoreError::BadFormat { path, content });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Only a new directory becomes a store: opening a store empties
            // its tmp/, so a mistyped data_dir must not adopt an existing
            // directory. (FORMAT is the first file a store writes.)
            let entries =
                std::fs::read_dir(data_dir).map_err(StoreError::io("read directory", data_dir))?;
            for entry in entries {
                let entry = entry.map_err(StoreError::io("read directory", data_dir))?;
                let name = entry.file_name();
                if name != "lost+found" && name != *format!("{FORMAT_FILE}.tmp") {
                    return Err(StoreError::NotAStore {
                        path: data_dir.to_path_buf(),
                    });
                }
            }
            // Written through a temp file and a rename, so a crash never
            // leaves an empty FORMAT behind.
            let temp = data_dir.join(format!("{FORMAT_FILE}.tmp"));
            std::fs::write(&temp, format!("{FORMAT_VERSION}\n"))
                .map_err(StoreError::io("write", &temp))?;
            std::fs::File::open(&temp)
                .and_then(|f| f.sync_all())
                .map_err(StoreError::io("sync", &temp))?;
            std::fs::rename(&temp, &path).map_err(StoreError::io("rename", &temp))?;
            sync_dir(data_dir)
        }
        Err(e) => Err(StoreError::io("read", &path)(e)),
    }
}

/// Makes a directory entry change (create, rename) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(StoreError::io("sync directory", dir))
}

pub(crate) fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
