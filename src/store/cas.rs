//! The content-addressed file store: temp files and atomic publication into
//! `content/sha256/<2 hex>/<64 hex>`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};

use super::{
    CONTENT_DIR, ContentHash, SHA256_DIR, Store, StoreError, TMP_DIR, now_nanos, sync_dir,
};

/// Creates the content directory with its 256 fan-out directories (once, so a
/// cold fill never waits for a directory to be created and synced) and the
/// tmp directory, and removes whatever a crash left in tmp/ (no fill survives
/// a restart).
pub(crate) fn prepare_dirs(data_dir: &Path) -> Result<(), StoreError> {
    let content = data_dir.join(CONTENT_DIR).join(SHA256_DIR);
    std::fs::create_dir_all(&content).map_err(StoreError::io("create directory", &content))?;
    let mut created = false;
    for byte in 0..=u8::MAX {
        let fan_out = content.join(format!("{byte:02x}"));
        match std::fs::create_dir(&fan_out) {
            Ok(()) => created = true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io("create directory", &fan_out)(e)),
        }
    }
    if created {
        sync_dir(&content)?;
    }
    let tmp = data_dir.join(TMP_DIR);
    std::fs::create_dir_all(&tmp).map_err(StoreError::io("create directory", &tmp))?;

    let mut removed = 0u64;
    for entry in std::fs::read_dir(&tmp).map_err(StoreError::io("read directory", &tmp))? {
        let entry = entry.map_err(StoreError::io("read directory", &tmp))?;
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let result = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("remove", &path)(e)),
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %tmp.display(), "removed temp files left by an earlier run");
    }
    Ok(())
}

/// A directory whose new entry (a published content file) is not yet durable.
#[must_use = "the published name is not durable until `sync` runs"]
pub struct DirSync(Option<PathBuf>);

impl DirSync {
    /// Fsyncs the directory, making the published name durable.
    pub fn sync(self) -> Result<(), StoreError> {
        match &self.0 {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

impl Store {
    /// Creates a new, uniquely named file in tmp/ for a download to stream
    /// into. Publish it with [`Store::publish`] or drop it with
    /// [`Store::discard_temp`].
    pub fn temp_file(&self) -> Result<(PathBuf, File), StoreError> {
        let tmp = self.data_dir.join(TMP_DIR);
        let pid = std::process::id();
        loop {
            let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
            let path = tmp.join(format!("{pid}-{n}-{}.part", now_nanos()));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => return Ok((path, file)),
                // Only possible if another process shares our pid namespace
                // and data dir; try the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::io("create", &path)(e)),
            }
        }
    }

    /// Moves a verified temp file to its content-addressed path and makes
    /// that durable. The caller has checked that the bytes hash to `hash`;
    /// this does not re-hash.
    ///
    /// If the content already exists the temp file is removed and the
    /// existing file kept: same name, same bytes.
    pub fn publish(&self, temp: &Path, hash: &ContentHash) -> Result<PathBuf, StoreError> {
        let (dest, dir) = self.publish_then_sync_dir(temp, hash)?;
        dir.sync()?;
        Ok(dest)
    }

    /// [`Store::publish`] up to the rename: the file's bytes are durable, its name is not
    /// until the returned [`DirSync`] has run. A fill runs it while its journal record is
    /// being synced, so the two waits overlap; it completes only once both are done.
    pub fn publish_then_sync_dir(
        &self,
        temp: &Path,
        hash: &ContentHash,
    ) -> Result<(PathBuf, DirSync), StoreError> {
        File::open(temp)
            .and_then(|f| f.sync_all())
            .map_err(StoreError::io("sync", temp))?;
        let dest = self.place(temp, hash)?;
        // Possibly renamed by a fill whose directory sync is still running: sync it anyway.
        let dir = DirSync(dest.parent().map(Path::to_path_buf));
        Ok((dest, dir))
    }

    /// Renames a verified temp file to its content-addressed path, without any sync: the
    /// callers sync before ([`Store::publish`]) or carry the bytes in a durable record
    /// (`Store::record_groups`).
    pub(crate) fn place(&self, temp: &Path, hash: &ContentHash) -> Result<PathBuf, StoreError> {
        let dest = self.content_path(hash);

        // Same name, same bytes: keep the existing file. A size mismatch can
        // only be damage, and the caller has just verified the new bytes, so
        // then the new file replaces it.
        if let Ok(existing) = std::fs::metadata(&dest) {
            let temp_len = std::fs::metadata(temp)
                .map_err(StoreError::io("stat", temp))?
                .len();
            if existing.is_file() && existing.len() == temp_len {
                self.discard_temp(temp);
                return Ok(dest);
            }
            tracing::warn!(
                path = %dest.display(),
                found = existing.len(),
                expected = temp_len,
                "replacing a damaged content file"
            );
        }
        // Two fills racing on the same content may both rename; the second
        // atomically replaces identical bytes, and open readers keep theirs.
        let fan_out = dest.parent().unwrap_or(&self.data_dir);
        match std::fs::rename(temp, &dest) {
            Ok(()) => {}
            // The fan-out directories are made at open; one removed since is made again.
            Err(e) if e.kind() == io::ErrorKind::NotFound && temp.is_file() => {
                match std::fs::create_dir(fan_out) {
                    Ok(()) => sync_dir(fan_out.parent().unwrap_or(&self.data_dir))?,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(StoreError::io("create directory", fan_out)(e)),
                }
                std::fs::rename(temp, &dest).map_err(StoreError::io("rename", temp))?;
            }
            Err(e) => return Err(StoreError::io("rename", temp)(e)),
        }
        Ok(dest)
    }

    /// Removes a temp file; a missing file is fine.
    pub fn discard_temp(&self, temp: &Path) {
        match std::fs::remove_file(temp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %temp.display(), error = %e, "cannot remove temp file");
            }
        }
    }

    /// Stores a small document held in memory (a metadata file, a checksum sidecar): the
    /// same temp file, fsync and rename as a streamed download, hashed here because the
    /// bytes never passed a verifier.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<(ContentHash, PathBuf), StoreError> {
        use std::io::Write as _;
        let hash = ContentHash::of(bytes);
        let path = self.content_path(&hash);
        if path.is_file() {
            return Ok((hash, path));
        }
        let (temp, mut file) = self.temp_file()?;
        // `publish` fsyncs it.
        let written = file
            .write_all(bytes)
            .map_err(StoreError::io("write", &temp));
        drop(file);
        if let Err(e) = written {
            self.discard_temp(&temp);
            return Err(e);
        }
        Ok((hash, self.publish(&temp, &hash)?))
    }

    /// Where the content with this hash lives (whether or not it exists).
    pub fn content_path(&self, hash: &ContentHash) -> PathBuf {
        content_path(&self.data_dir, hash)
    }

    pub fn has_content(&self, hash: &ContentHash) -> bool {
        self.content_path(hash).is_file()
    }

    /// Re-hashes a content file. `Ok(false)` if it is missing or its bytes
    /// do not hash to its name.
    pub fn verify_content(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        let path = self.content_path(hash);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io("open", &path)(e)),
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io("read", &path)(e)),
            };
            hasher.update(&buf[..n]);
        }
        Ok(ContentHash(hasher.finalize().into()) == *hash)
    }
}

/// The layout, kept pure so tests and tools can compute it.
pub(crate) fn content_path(data_dir: &Path, hash: &ContentHash) -> PathBuf {
    let hex = hash.to_string();
    data_dir
        .join(CONTENT_DIR)
        .join(SHA256_DIR)
        .join(&hex[..2])
        .join(hex)
}

/// For a journal record carrying its object's bytes, replayed after a crash: makes sure the
/// content file holds those bytes, rewriting it (synced) from the record when it is missing
/// or damaged. Returns its path, to be synced at the next checkpoint.
pub(crate) fn repair_carried(
    data_dir: &Path,
    record: &super::Record,
    bytes: &[u8],
) -> Result<PathBuf, StoreError> {
    use std::io::Write as _;
    let (sha256, size) = record.event.content();
    if bytes.len() as u64 != size || ContentHash::of(bytes) != *sha256 {
        return Err(StoreError::RecordData {
            seq: record.seq,
            reason: format!("the bytes it carries are not sha256:{sha256} ({size} bytes)"),
        });
    }
    let path = content_path(data_dir, sha256);
    match std::fs::read(&path) {
        Ok(found) if found == bytes => return Ok(path),
        Ok(_) => tracing::warn!(
            path = %path.display(),
            seq = record.seq,
            "content file damaged by a crash; rewriting it from the journal"
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => tracing::info!(
            path = %path.display(),
            seq = record.seq,
            "content file lost in a crash; rewriting it from the journal"
        ),
        Err(e) => return Err(StoreError::io("read", &path)(e)),
    }
    let fan_out = path.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(fan_out).map_err(StoreError::io("create directory", fan_out))?;
    let temp = data_dir
        .join(TMP_DIR)
        .join(format!("repair-{}-{}.part", record.seq, now_nanos()));
    let written = File::create(&temp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&temp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(StoreError::io("rewrite", &path)(e));
    }
    Ok(path)
}
