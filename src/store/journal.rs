//! The pin journal: the store's source of truth.
//!
//! File format: the magic `PJ1\n`, then records framed as
//!
//! ```text
//! u32 LE payload length | u32 LE crc32(payload) | payload
//! ```
//!
//! where the payload is the compact JSON of a [`Record`], followed, when the
//! record carries a small object's bytes (`carried: <length>`), by exactly
//! those raw bytes. Each record carries the sha256 of the previous record's
//! payload bytes (`prev`), so editing any record but the last (or the bytes it
//! carries) breaks the chain at the record after it.
//!
//! A crash can leave a torn last record; it is cut off at open (and saved to
//! `journal.torn-<nanos>` for inspection). Damage anywhere else is corruption
//! and the store refuses to open: silently dropping acknowledged pins would
//! break the promise that a pinned coordinate keeps its bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Event, StoreError, now_nanos, sync_dir};

const MAGIC: &[u8; 4] = b"PJ1\n";
const MAGIC_LEN: u64 = MAGIC.len() as u64;
const FRAME_HEADER_LEN: u64 = 8;
/// Records are a few hundred bytes; anything near this is damage, not data.
const MAX_PAYLOAD: u32 = 16 << 20;
const ZERO_HASH: [u8; 32] = [0; 32];

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// 1 for the first record, then increasing by exactly 1.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Hex sha256 of the previous record's payload bytes (64 zeros for the
    /// first record).
    pub prev: String,
    pub event: Event,
    /// The length of the small object's bytes this record carries after its JSON: one sync
    /// makes the pin and the bytes durable together, and the content file is synced later,
    /// at a checkpoint (see `Store::record_groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried: Option<u64>,
    /// Those bytes.
    #[serde(skip)]
    pub data: Option<Vec<u8>>,
}

impl Record {
    /// Decodes a payload: the JSON, then exactly `carried` bytes, if any.
    fn decode(payload: &[u8]) -> Result<Self, String> {
        let mut values = serde_json::Deserializer::from_slice(payload).into_iter::<Self>();
        let mut record = match values.next() {
            Some(Ok(record)) => record,
            Some(Err(e)) => return Err(format!("undecodable record: {e}")),
            None => return Err("empty record".to_owned()),
        };
        let tail = &payload[values.byte_offset()..];
        match record.carried {
            Some(n) if n == tail.len() as u64 => record.data = Some(tail.to_vec()),
            None if tail.is_empty() => {}
            _ => {
                return Err(format!(
                    "record {} says it carries {:?} bytes, {} follow its JSON",
                    record.seq,
                    record.carried,
                    tail.len()
                ));
            }
        }
        Ok(record)
    }
}

/// The result of [`verify_journal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalReport {
    /// Records with a valid checksum.
    pub records: u64,
    pub last_seq: u64,
    /// Hex sha256 of the last valid record's payload (64 zeros if none).
    pub last_hash: String,
    /// Empty when the journal is intact.
    pub problems: Vec<String>,
}

impl JournalReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The append side, owned by the store behind its mutex.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    /// Length of the valid prefix; the next record is written here.
    len: u64,
    last_seq: u64,
    last_hash: [u8; 32],
    /// Set when a failed write or sync leaves the file's state unknown.
    poisoned: bool,
}

impl Journal {
    /// Opens or creates the journal, checking every record and its chain.
    /// `visit` sees each record's seq and payload hash.
    pub(crate) fn open(
        path: &Path,
        mut visit: impl FnMut(u64, &[u8; 32]),
    ) -> Result<Self, StoreError> {
        let mut file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(path)?,
            Err(e) => return Err(StoreError::io("open", path)(e)),
        };
        let file_len = file.metadata().map_err(StoreError::io("stat", path))?.len();

        if file_len < MAGIC_LEN {
            // A crash while creating the file: nothing was ever appended.
            let mut head = Vec::new();
            file.read_to_end(&mut head)
                .map_err(StoreError::io("read", path))?;
            if !MAGIC.starts_with(&head) && head.iter().any(|&b| b != 0) {
                return Err(StoreError::JournalCorrupt {
                    offset: 0,
                    reason: "not a pinproxy journal (bad magic)".to_owned(),
                });
            }
            tracing::warn!(path = %path.display(), "journal header incomplete; rewriting it");
            file.set_len(0)
                .and_then(|()| file.seek(SeekFrom::Start(0)))
                .and_then(|_| file.write_all(MAGIC))
                .and_then(|()| file.sync_all())
                .map_err(StoreError::io("write", path))?;
        }

        let mut scanner = Scanner::new(path)?;
        loop {
            match scanner.next_frame()? {
                Frame::End => break,
                Frame::Record { offset, payload } => {
                    let record = scanner.check_strict(offset, &payload)?;
                    visit(record.seq, &scanner.last_hash);
                }
                Frame::Torn { offset, reason } => {
                    let dropped = scanner.file_len - offset;
                    let saved = save_torn_tail(path, offset)?;
                    tracing::warn!(
                        path = %path.display(),
                        offset,
                        bytes_dropped = dropped,
                        saved_to = %saved.display(),
                        %reason,
                        "truncating a torn record at the end of the pin journal"
                    );
                    file.set_len(offset)
                        .and_then(|()| file.sync_all())
                        .map_err(StoreError::io("truncate", path))?;
                    break;
                }
                Frame::Damaged { offset, reason, .. } => {
                    return Err(StoreError::JournalCorrupt { offset, reason });
                }
            }
        }

        Ok(Self {
            path: path.to_path_buf(),
            file,
            len: scanner.valid_len,
            last_seq: scanner.last_seq,
            last_hash: scanner.last_hash,
            poisoned: false,
        })
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Appends one record and syncs it to disk before returning its seq and
    /// payload hash.
    #[cfg(test)]
    pub(crate) fn append(
        &mut self,
        time_ms: u64,
        event: &Event,
    ) -> Result<(u64, [u8; 32]), StoreError> {
        let appended = self.append_unsynced(time_ms, event, None)?;
        self.sync_appended()?;
        Ok(appended)
    }

    /// Writes one record without waiting for the disk; [`Journal::sync_appended`]
    /// makes every record written so far durable (one fsync for a batch).
    /// `data`: the bytes of the object the event pins, to carry in the record.
    pub(crate) fn append_unsynced(
        &mut self,
        time_ms: u64,
        event: &Event,
        data: Option<&[u8]>,
    ) -> Result<(u64, [u8; 32]), StoreError> {
        if self.poisoned {
            return Err(StoreError::JournalPoisoned);
        }
        #[derive(Serialize)]
        struct RecordRef<'a> {
            seq: u64,
            time_ms: u64,
            prev: String,
            event: &'a Event,
            #[serde(skip_serializing_if = "Option::is_none")]
            carried: Option<u64>,
        }
        let seq = self.last_seq + 1;
        let mut payload = serde_json::to_vec(&RecordRef {
            seq,
            time_ms,
            prev: hex::encode(self.last_hash),
            event,
            carried: data.map(|d| d.len() as u64),
        })
        .map_err(StoreError::Encode)?;
        payload.extend_from_slice(data.unwrap_or_default());
        let payload_len = u32::try_from(payload.len())
            .ok()
            .filter(|&n| n <= MAX_PAYLOAD)
            .ok_or_else(|| {
                StoreError::Encode(serde::ser::Error::custom(format!(
                    "record of {} bytes exceeds the journal's limit",
                    payload.len()
                )))
            })?;
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&payload_len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);

        let written = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(&frame));
        if let Err(e) = written {
            // Cut off the partial record so later appends don't land after
            // garbage (which would read as mid-file corruption). If even that
            // fails, stop appending until a reopen rescans the file.
            if self.file.set_len(self.len).is_err() {
                self.poisoned = true;
            }
            return Err(StoreError::io("append to", &self.path)(e));
        }
        self.len += frame.len() as u64;
        self.last_seq = seq;
        self.last_hash = Sha256::digest(&payload).into();
        Ok((seq, self.last_hash))
    }

    /// Makes every appended record durable.
    pub(crate) fn sync_appended(&mut self) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::JournalPoisoned);
        }
        if let Err(e) = self.file.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty
            // pages and a retry can falsely succeed: don't trust this file.
            self.poisoned = true;
            return Err(StoreError::io("sync", &self.path)(e));
        }
        Ok(())
    }

    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::JournalPoisoned);
        }
        self.file
            .sync_data()
            .map_err(StoreError::io("sync", &self.path))
    }
}

/// Calls `f` with every record in order, with its payload hash. Fails on any
/// damage or chain break; stops quietly at a torn tail (the store cuts it off
/// at open).
pub(crate) fn for_each_record(
    path: &Path,
    mut f: impl FnMut(Record, &[u8; 32]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut scanner = Scanner::new(path)?;
    loop {
        match scanner.next_frame()? {
            Frame::End | Frame::Torn { .. } => return Ok(()),
            Frame::Damaged { offset, reason, .. } => {
                return Err(StoreError::JournalCorrupt { offset, reason });
            }
            Frame::Record { offset, payload } => {
                let record = scanner.check_strict(offset, &payload)?;
                f(record, &scanner.last_hash)?;
            }
        }
    }
}

/// Reads every record of a journal (for rebuilding and tooling).
pub fn read_records(path: &Path) -> Result<Vec<Record>, StoreError> {
    let mut records = Vec::new();
    for_each_record(path, |record, _| {
        records.push(record);
        Ok(())
    })?;
    Ok(records)
}

/// Walks the whole journal and reports every checksum failure, sequence gap
/// and chain break instead of stopping at the first. Read-only. Returns an
/// error only when the file cannot be read.
///
/// Run against a live store, a record being appended at that moment can
/// show up as a torn tail.
pub fn verify_journal(path: &Path) -> Result<JournalReport, StoreError> {
    let mut problems = Vec::new();
    let mut records = 0;
    let mut scanner = match Scanner::new(path) {
        Ok(scanner) => scanner,
        Err(StoreError::JournalCorrupt { offset, reason }) => {
            return Ok(JournalReport {
                records: 0,
                last_seq: 0,
                last_hash: hex::encode(ZERO_HASH),
                problems: vec![format!("offset {offset}: {reason}")],
            });
        }
        Err(e) => return Err(e),
    };
    loop {
        match scanner.next_frame()? {
            Frame::End => break,
            Frame::Torn { offset, reason } => {
                problems.push(format!(
                    "offset {offset}: torn tail ({reason}); {} bytes will be cut off at the next open",
                    scanner.file_len - offset
                ));
                break;
            }
            Frame::Damaged {
                offset,
                reason,
                resume,
            } => {
                problems.push(format!("offset {offset}: {reason}"));
                match resume {
                    // The length looked sane, so keep walking; the chain
                    // check on the next record is relative to this one.
                    Some((next, payload)) => {
                        scanner.last_hash = Sha256::digest(&payload).into();
                        scanner.last_seq =
                            Record::decode(&payload).map_or(scanner.last_seq + 1, |r| r.seq);
                        scanner.seek(next)?;
                    }
                    None => {
                        problems.push(format!(
                            "offset {offset}: cannot find the next record; {} bytes after it were not checked",
                            scanner.file_len - offset
                        ));
                        break;
                    }
                }
            }
            Frame::Record { offset, payload } => {
                records += 1;
                if let Err(reason) = scanner.check_chain(&payload) {
                    problems.push(format!("offset {offset}: {reason}"));
                }
            }
        }
    }
    Ok(JournalReport {
        records,
        last_seq: scanner.last_seq,
        last_hash: hex::encode(scanner.last_hash),
        problems,
    })
}

fn create(path: &Path) -> Result<File, StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(StoreError::io("create", path))?;
    file.write_all(MAGIC)
        .and_then(|()| file.sync_all())
        .map_err(StoreError::io("write", path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(file)
}

/// Copies the bytes about to be truncated next to the journal, so that a
/// misjudged tail can still be recovered by hand.
fn save_torn_tail(path: &Path, offset: u64) -> Result<PathBuf, StoreError> {
    let mut file = File::open(path).map_err(StoreError::io("open", path))?;
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_to_end(&mut tail))
        .map_err(StoreError::io("read", path))?;
    let mut saved = path.as_os_str().to_owned();
    saved.push(format!(".torn-{}", now_nanos()));
    let saved = PathBuf::from(saved);
    std::fs::write(&saved, &tail).map_err(StoreError::io("write", &saved))?;
    Ok(saved)
}

enum Frame {
    End,
    Record {
        offset: u64,
        payload: Vec<u8>,
    },
    /// An incomplete last record, safe to cut off.
    Torn {
        offset: u64,
        reason: String,
    },
    /// Damage with data after it. `resume` is where the next frame would
    /// start, and the damaged payload, when the length looked sane.
    Damaged {
        offset: u64,
        reason: String,
        resume: Option<(u64, Vec<u8>)>,
    },
}

/// Reads frames and tracks the chain (last seq and payload hash).
struct Scanner {
    path: PathBuf,
    reader: BufReader<File>,
    pos: u64,
    file_len: u64,
    /// End of the last good frame.
    valid_len: u64,
    last_seq: u64,
    last_hash: [u8; 32],
}

impl Scanner {
    fn new(path: &Path) -> Result<Self, StoreError> {
        let file = File::open(path).map_err(StoreError::io("open", path))?;
        let file_len = file.metadata().map_err(StoreError::io("stat", path))?.len();
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut magic = [0u8; 4];
        if file_len < MAGIC_LEN || reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
            return Err(StoreError::JournalCorrupt {
                offset: 0,
                reason: "not a pinproxy journal (bad magic)".to_owned(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            pos: MAGIC_LEN,
            file_len,
            valid_len: MAGIC_LEN,
            last_seq: 0,
            last_hash: ZERO_HASH,
        })
    }

    fn read_err(&self) -> impl FnOnce(io::Error) -> StoreError {
        StoreError::io("read", &self.path)
    }

    fn seek(&mut self, pos: u64) -> Result<(), StoreError> {
        self.reader
            .seek(SeekFrom::Start(pos))
            .map_err(StoreError::io("read", &self.path))?;
        self.pos = pos;
        Ok(())
    }

    /// True when every byte from `from` to the end of the file is zero, as
    /// a crash can leave after the file was extended but before its data
    /// reached the disk. We never write a zero-length record, so nothing
    /// valid can follow.
    fn zeros_from(&mut self, from: u64) -> Result<bool, StoreError> {
        let here = self.pos;
        self.seek(from)?;
        let mut buf = [0u8; 8192];
        let all_zero = loop {
            let n = self.reader.read(&mut buf).map_err(self.read_err())?;
            if n == 0 {
                break true;
            }
            if buf[..n].iter().any(|&b| b != 0) {
                break false;
            }
        };
        self.seek(here)?;
        Ok(all_zero)
    }

    fn next_frame(&mut self) -> Result<Frame, StoreError> {
        let offset = self.pos;
        let remaining = self.file_len - offset;
        if remaining == 0 {
            return Ok(Frame::End);
        }
        if remaining < FRAME_HEADER_LEN {
            return Ok(Frame::Torn {
                offset,
                reason: format!("incomplete record header ({remaining} bytes)"),
            });
        }
        let mut header = [0u8; 8];
        self.reader
            .read_exact(&mut header)
            .map_err(self.read_err())?;
        let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);

        if len == 0 || len > MAX_PAYLOAD {
            if self.zeros_from(offset)? {
                return Ok(Frame::Torn {
                    offset,
                    reason: "zero-filled tail".to_owned(),
                });
            }
            return Ok(Frame::Damaged {
                offset,
                reason: format!("implausible record length {len}"),
                resume: None,
            });
        }
        let end = offset + FRAME_HEADER_LEN + u64::from(len);
        if end > self.file_len {
            return Ok(Frame::Torn {
                offset,
                reason: format!(
                    "record declares {len} bytes but only {} remain",
                    remaining - FRAME_HEADER_LEN
                ),
            });
        }
        let mut payload = vec![0u8; len as usize];
        self.reader
            .read_exact(&mut payload)
            .map_err(self.read_err())?;
        self.pos = end;
        if crc32fast::hash(&payload) != crc {
            if end == self.file_len || self.zeros_from(end)? {
                return Ok(Frame::Torn {
                    offset,
                    reason: "checksum mismatch in the last record".to_owned(),
                });
            }
            return Ok(Frame::Damaged {
                offset,
                reason: "checksum mismatch with more records after it".to_owned(),
                resume: Some((end, payload)),
            });
        }
        Ok(Frame::Record { offset, payload })
    }

    /// Checks a checksummed payload against the chain and advances it; the
    /// problem is described in the error.
    fn check_chain(&mut self, payload: &[u8]) -> Result<Record, String> {
        let hash: [u8; 32] = Sha256::digest(payload).into();
        let expected_seq = self.last_seq + 1;
        let expected_prev = hex::encode(self.last_hash);
        self.last_hash = hash;
        self.valid_len = self.pos;
        let record = match Record::decode(payload) {
            Ok(record) => record,
            Err(e) => {
                self.last_seq = expected_seq;
                return Err(e);
            }
        };
        self.last_seq = record.seq;
        if record.seq != expected_seq {
            return Err(format!(
                "sequence break: expected seq {expected_seq}, found {}",
                record.seq
            ));
        }
        if record.prev != expected_prev {
            return Err(format!(
                "hash chain break at seq {}: prev is {}, but the previous record hashes to {expected_prev}",
                record.seq, record.prev
            ));
        }
        Ok(record)
    }

    fn check_strict(&mut self, offset: u64, payload: &[u8]) -> Result<Record, StoreError> {
        self.check_chain(payload)
            .map_err(|reason| StoreError::JournalCorrupt { offset, reason })
    }
}
