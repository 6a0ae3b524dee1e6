//! The lookup index, derived from the journal. The only module that knows
//! sled: swapping the backend means rewriting this file.
//!
//! Trees:
//! - `pins`: coordinate → `PinEntry`
//! - `resolutions`: coordinate → latest `ResolutionEntry`
//! - `history`: coordinate ++ 0x00 ++ seq (u64 BE) → `ResolutionEntry`
//! - `meta`: `applied_seq` → u64 BE, `applied_hash` → the payload hash of
//!   that journal record (to tell this journal from another one). Written by
//!   `checkpoint` after a flush: the index holds at least every record up to
//!   it, possibly some after it (replaying those is harmless).
//!
//! Values are versioned: one encoding-version byte, then JSON. The index is
//! never the only copy of anything, so an unknown version means rebuild.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Event, PinEntry, ResolutionEntry, StoreError};

const VALUE_VERSION: u8 = 1;
const APPLIED_SEQ: &[u8] = b"applied_seq";
const APPLIED_HASH: &[u8] = b"applied_hash";
/// sled's default is 1 GiB; the index is small and the page cache helps.
const CACHE_BYTES: u64 = 64 << 20;
/// How long `Index::open` waits for a held lock, and how often it tries.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_RETRY: Duration = Duration::from_millis(20);

pub(crate) enum IndexOpenError {
    /// Another process has the index open.
    Locked,
    /// The database does not open; it can be moved aside and rebuilt.
    Broken(String),
    /// The environment, not the database, is at fault (disk full, no
    /// permission, out of file descriptors): moving the index aside and
    /// rebuilding it would not help.
    Environment(std::io::Error),
}

fn is_environmental(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || matches!(
            e.raw_os_error(),
            Some(
                libc::ENOSPC
                    | libc::EDQUOT
                    | libc::EACCES
                    | libc::EPERM
                    | libc::EROFS
                    | libc::EMFILE
                    | libc::ENFILE
                    | libc::ENOMEM
            )
        )
}

pub(crate) struct Index {
    db: sled::Db,
    pins: sled::Tree,
    resolutions: sled::Tree,
    history: sled::Tree,
    meta: sled::Tree,
}

fn err(e: sled::Error) -> StoreError {
    StoreError::Index(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VALUE_VERSION];
    // Serializing these plain structs to a Vec cannot fail.
    serde_json::to_writer(&mut out, value).expect("index values serialize");
    out
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VALUE_VERSION, json)) => {
            serde_json::from_slice(json).map_err(|e| StoreError::IndexFormat(e.to_string()))
        }
        Some((version, _)) => Err(StoreError::IndexFormat(format!(
            "unknown encoding version {version}"
        ))),
        None => Err(StoreError::IndexFormat("empty value".to_owned())),
    }
}

fn history_key(coordinate: &str, seq: u64) -> Vec<u8> {
    let mut key = history_prefix(coordinate);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn history_prefix(coordinate: &str) -> Vec<u8> {
    // Coordinates never contain NUL (the store rejects them), so the prefix
    // of "a" does not match the entries of "a:b".
    let mut key = Vec::with_capacity(coordinate.len() + 9);
    key.extend_from_slice(coordinate.as_bytes());
    key.push(0);
    key
}

impl Index {
    pub(crate) fn open(dir: &Path) -> Result<Self, IndexOpenError> {
        let config = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES);
        // sled finishes some log writes on its own background threads, which keep the
        // database's lock file open a moment after the last handle is dropped: a reopen
        // in the same process (tests, tools) can find it still locked. So a lock is
        // waited for briefly before it is reported as another process holding the store.
        let mut waited = Duration::ZERO;
        let opened = loop {
            // sled 0.34 can panic rather than return an error on a damaged
            // database; either way the index is rebuildable.
            match catch_unwind(AssertUnwindSafe(|| config.open())) {
                Ok(Err(sled::Error::Io(e)))
                    if e.to_string().contains("could not acquire lock") && waited < LOCK_WAIT =>
                {
                    std::thread::sleep(LOCK_RETRY);
                    waited += LOCK_RETRY;
                }
                other => break other,
            }
        };
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => {
                return Err(IndexOpenError::Locked);
            }
            Ok(Err(sled::Error::Io(e))) if is_environmental(&e) => {
                return Err(IndexOpenError::Environment(e));
            }
            Ok(Err(e)) => return Err(IndexOpenError::Broken(e.to_string())),
            Err(_) => {
                return Err(IndexOpenError::Broken(
                    "sled panicked while opening".to_owned(),
                ));
            }
        };
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| IndexOpenError::Broken(e.to_string()))
        };
        Ok(Self {
            pins: tree("pins")?,
            resolutions: tree("resolutions")?,
            history: tree("history")?,
            meta: tree("meta")?,
            db,
        })
    }

    /// The last journal record applied, and its payload hash.
    pub(crate) fn applied(&self) -> Result<(u64, Option<[u8; 32]>), StoreError> {
        let seq = match self.meta.get(APPLIED_SEQ).map_err(err)? {
            None => 0,
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::IndexFormat("bad applied_seq".to_owned()))?,
            ),
        };
        let hash = match self.meta.get(APPLIED_HASH).map_err(err)? {
            None => None,
            Some(v) => Some(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::IndexFormat("bad applied_hash".to_owned()))?,
            ),
        };
        Ok((seq, hash))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pins.is_empty() && self.resolutions.is_empty() && self.history.is_empty()
    }

    /// Decodes every value, so an index written by an unknown encoding is
    /// rebuilt at open rather than failing lookups later.
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        for item in self.pins.iter() {
            decode::<PinEntry>(&item.map_err(err)?.1)?;
        }
        for tree in [&self.resolutions, &self.history] {
            for item in tree.iter() {
                decode::<ResolutionEntry>(&item.map_err(err)?.1)?;
            }
        }
        Ok(())
    }

    pub(crate) fn clear(&self) -> Result<(), StoreError> {
        for tree in [&self.pins, &self.resolutions, &self.history, &self.meta] {
            tree.clear().map_err(err)?;
        }
        Ok(())
    }

    /// Applies one journal record. Idempotent, so replaying a record already applied is
    /// harmless. A pin never replaces an existing pin: the first one wins.
    ///
    /// Plain writes, no sled transaction: a transaction seals sled's write buffer and waits
    /// for it to reach the disk, on the path of every fill. `applied_seq` is not advanced
    /// here but by [`Index::checkpoint`], after a flush, so whatever a crash loses of these
    /// writes lies after the recorded position and is replayed from the journal at open.
    /// Only the journal's recorder writes (or replay, before the store is shared).
    pub(crate) fn apply(&self, seq: u64, time_ms: u64, event: Event) -> Result<(), StoreError> {
        match event {
            Event::Pin(pin) => {
                let key = pin.coordinate.clone();
                let entry = PinEntry { pin, seq, time_ms };
                let value = encode(&entry);
                let swapped = self
                    .pins
                    .compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(value))
                    .map_err(err)?;
                if let Err(current) = swapped {
                    let existing = current
                        .current
                        .map(|v| decode::<PinEntry>(&v))
                        .transpose()?;
                    if let Some(existing) = existing
                        && existing.pin.sha256 != entry.pin.sha256
                    {
                        tracing::warn!(
                            coordinate = %key,
                            seq,
                            pinned_seq = existing.seq,
                            "journal holds a conflicting re-pin; keeping the first pin"
                        );
                    }
                }
                Ok(())
            }
            Event::Resolve(resolution) => {
                let key = resolution.coordinate.clone();
                let history_key = history_key(&key, seq);
                let value = encode(&ResolutionEntry {
                    resolution,
                    seq,
                    time_ms,
                });
                self.history
                    .insert(history_key.as_slice(), value.as_slice())
                    .map_err(err)?;
                self.resolutions
                    .insert(key.as_bytes(), value)
                    .map_err(err)?;
                Ok(())
            }
        }
    }

    /// Makes every write so far durable, then records `seq` (with its journal record's
    /// payload hash) as applied. The position is written after the flush, so whenever it is
    /// found at open, everything up to it is in the index.
    pub(crate) fn checkpoint(&self, seq: u64, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.db.flush().map_err(err)?;
        self.meta
            .insert(APPLIED_SEQ, &seq.to_be_bytes())
            .map_err(err)?;
        self.meta.insert(APPLIED_HASH, hash).map_err(err)?;
        Ok(())
    }

    pub(crate) fn pin(&self, coordinate: &str) -> Result<Option<PinEntry>, StoreError> {
        self.pins
            .get(coordinate)
            .map_err(err)?
            .map(|v| decode(&v))
            .transpose()
    }

    pub(crate) fn pins(&self) -> Result<Vec<PinEntry>, StoreError> {
        self.pins
            .iter()
            .values()
            .map(|v| decode(&v.map_err(err)?))
            .collect()
    }

    pub(crate) fn resolution(
        &self,
        coordinate: &str,
    ) -> Result<Option<ResolutionEntry>, StoreError> {
        self.resolutions
            .get(coordinate)
            .map_err(err)?
            .map(|v| decode(&v))
            .transpose()
    }

    pub(crate) fn resolutions(&self) -> Result<Vec<ResolutionEntry>, StoreError> {
        self.resolutions
            .iter()
            .values()
            .map(|v| decode(&v.map_err(err)?))
            .collect()
    }

    pub(crate) fn resolution_history(
        &self,
        coordinate: &str,
    ) -> Result<Vec<ResolutionEntry>, StoreError> {
        self.history
            .scan_prefix(history_prefix(coordinate))
            .values()
            .map(|v| decode(&v.map_err(err)?))
            .collect()
    }

    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(err)
    }

    #[cfg(test)]
    pub(crate) fn set_applied(&self, seq: u64, hash: Option<&[u8; 32]>) -> Result<(), StoreError> {
        self.meta
            .insert(APPLIED_SEQ, &seq.to_be_bytes())
            .map_err(err)?;
        match hash {
            Some(hash) => self.meta.insert(APPLIED_HASH, hash).map_err(err)?,
            None => self.meta.remove(APPLIED_HASH).map_err(err)?,
        };
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn raw_insert_pin(&self, coordinate: &str, value: &[u8]) -> Result<(), StoreError> {
        self.pins.insert(coordinate, value).map_err(err)?;
        Ok(())
    }
}
