use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::journal::Journal;
use super::*;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// Writes `bytes` through a temp file and publishes it, as the engine does.
fn put(store: &Store, bytes: &[u8]) -> ContentHash {
    let (path, mut file) = store.temp_file().unwrap();
    file.write_all(bytes).unwrap();
    drop(file);
    let hash = ContentHash::of(bytes);
    store.publish(&path, &hash).unwrap();
    hash
}

fn pin_event(store: &Store, coordinate: &str, bytes: &[u8]) -> Event {
    let sha256 = put(store, bytes);
    Event::Pin(Pin {
        coordinate: coordinate.to_owned(),
        sha256,
        size: bytes.len() as u64,
        media_type: Some("application/vnd.oci.image.manifest.v1+json".to_owned()),
        upstream: "docker.io".to_owned(),
        digests: BTreeMap::from([("sha256".to_owned(), sha256.to_string())]),
        verified: Verified::Digest,
    })
}

fn resolve_event(store: &Store, coordinate: &str, bytes: &[u8]) -> Event {
    let sha256 = put(store, bytes);
    Event::Resolve(Resolution {
        coordinate: coordinate.to_owned(),
        target: format!("sha256:{sha256}"),
        sha256,
        size: bytes.len() as u64,
        media_type: None,
        upstream: "docker.io".to_owned(),
        etag: None,
        last_modified: None,
    })
}

/// A store with three pins and two resolutions of one tag.
fn populated(dir: &Path) -> Store {
    let store = Store::open(dir).unwrap();
    for (i, coordinate) in ["npm:a@1.0.0", "npm:b@2.0.0", "maven:g:a:1:jar"]
        .into_iter()
        .enumerate()
    {
        let event = pin_event(&store, coordinate, coordinate.as_bytes());
        store.record(event, t(i as u64)).unwrap();
    }
    let tag = "oci:docker.io/library/alpine:3.20";
    store
        .record(resolve_event(&store, tag, b"manifest one"), t(10))
        .unwrap();
    store
        .record(resolve_event(&store, tag, b"manifest two"), t(11))
        .unwrap();
    store
}

type Snapshot = (Vec<PinEntry>, Vec<ResolutionEntry>, Vec<ResolutionEntry>);

fn snapshot(store: &Store) -> Snapshot {
    (
        store.pins().unwrap(),
        store.resolutions().unwrap(),
        store
            .resolution_history("oci:docker.io/library/alpine:3.20")
            .unwrap(),
    )
}

#[test]
fn content_hash_text_forms() {
    let hash = ContentHash::of(b"hello");
    let hex = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    assert_eq!(hash.to_string(), hex);
    assert_eq!(hex.parse::<ContentHash>().unwrap(), hash);
    assert_eq!(serde_json::to_string(&hash).unwrap(), format!("\"{hex}\""));
    assert_eq!(
        serde_json::from_str::<ContentHash>(&format!("\"{hex}\"")).unwrap(),
        hash
    );
    assert!(hex.to_uppercase().parse::<ContentHash>().is_err());
    assert!(hex[..63].parse::<ContentHash>().is_err());
    assert!(format!("{hex}0").parse::<ContentHash>().is_err());
}

#[test]
fn event_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let event = pin_event(&store, "npm:left-pad@1.3.0", b"x");
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["type"], "pin");
    assert_eq!(json["verified"], "digest");
    assert_eq!(json["sha256"], ContentHash::of(b"x").to_string());
    let json = serde_json::to_value(resolve_event(&store, "oci:x:1", b"y")).unwrap();
    assert_eq!(json["type"], "resolve");
    assert_eq!(
        serde_json::to_value(Verified::FirstSeen).unwrap(),
        "first_seen"
    );
}

#[test]
fn new_dir_layout() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = Store::open(&data).unwrap();
    assert_eq!(std::fs::read_to_string(data.join("FORMAT")).unwrap(), "1\n");
    assert!(data.join("content/sha256").is_dir());
    assert!(data.join("tmp").is_dir());
    assert!(data.join("index").is_dir());
    assert_eq!(store.journal_path(), data.join("journal"));
    assert_eq!(std::fs::read(data.join("journal")).unwrap(), b"PJ1\n");
    assert_eq!(store.data_dir(), data);
}

#[test]
fn publish_renames_into_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let hash = ContentHash::of(b"blob");
    let expected = dir
        .path()
        .join("content/sha256")
        .join(&hash.to_string()[..2])
        .join(hash.to_string());
    assert_eq!(store.content_path(&hash), expected);
    assert!(!store.has_content(&hash));
    assert!(!store.verify_content(&hash).unwrap());

    let (temp, mut file) = store.temp_file().unwrap();
    assert_eq!(temp.parent().unwrap(), dir.path().join("tmp"));
    file.write_all(b"blob").unwrap();
    drop(file);
    assert_eq!(store.publish(&temp, &hash).unwrap(), expected);
    assert!(!temp.exists());
    assert!(store.has_content(&hash));
    assert!(store.verify_content(&hash).unwrap());
    assert_eq!(std::fs::read(&expected).unwrap(), b"blob");

    // Publishing the same content again keeps the existing file and removes
    // the temp file.
    let (temp2, mut file) = store.temp_file().unwrap();
    assert_ne!(temp, temp2);
    file.write_all(b"blob").unwrap();
    drop(file);
    assert_eq!(store.publish(&temp2, &hash).unwrap(), expected);
    assert!(!temp2.exists());
    assert_eq!(std::fs::read(&expected).unwrap(), b"blob");

    // verify_content notices damaged content.
    std::fs::write(&expected, b"blob!").unwrap();
    assert!(!store.verify_content(&hash).unwrap());

    // Publishing verified bytes over a file of the wrong size repairs it.
    let (temp3, mut file) = store.temp_file().unwrap();
    file.write_all(b"blob").unwrap();
    drop(file);
    store.publish(&temp3, &hash).unwrap();
    assert!(store.verify_content(&hash).unwrap());
}

#[test]
fn fan_out_directories_exist_from_open_and_a_removed_one_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let root = dir.path().join(CONTENT_DIR).join(SHA256_DIR);
    let dirs = std::fs::read_dir(&root).unwrap().count();
    assert_eq!(dirs, 256);

    let hash = ContentHash::of(b"blob");
    let fan_out = store.content_path(&hash).parent().unwrap().to_path_buf();
    std::fs::remove_dir(&fan_out).unwrap();
    assert_eq!(put(&store, b"blob"), hash);
    assert!(store.verify_content(&hash).unwrap());
}

#[test]
fn index_position_is_written_at_a_checkpoint_and_a_reopen_replays_what_came_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    let before = snapshot(&store);
    // The position is written at a checkpoint (every CHECKPOINT_EVERY, or on flush).
    store.flush().unwrap();
    let (seq, hash) = store.index.applied().unwrap();
    assert_eq!(seq, 5);
    assert!(hash.is_some());

    // A record applied after the checkpoint, then the position put back as a crash would
    // leave it: the reopen replays the record again, with the same result.
    let late = pin_event(&store, "npm:late@1", b"late");
    store.record(late, t(9)).unwrap();
    store.flush().unwrap();
    let after = snapshot(&store);
    store.index.set_applied(seq, hash.as_ref()).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.opened.replayed, 1);
    assert!(!store.opened.rebuilt);
    assert_eq!(snapshot(&store), after);
    assert_ne!(before, after);
    assert_eq!(store.index.applied().unwrap().0, 6);
}

/// A temp file holding `bytes`, neither synced nor published, as a fill leaves it.
fn unsynced_temp(store: &Store, bytes: &[u8]) -> PathBuf {
    let (path, mut file) = store.temp_file().unwrap();
    file.write_all(bytes).unwrap();
    path
}

fn carried_pin(store: &Store, coordinate: &str, bytes: &[u8], time: SystemTime) -> Entry {
    let sha256 = ContentHash::of(bytes);
    Entry {
        event: Event::Pin(Pin {
            coordinate: coordinate.to_owned(),
            sha256,
            size: bytes.len() as u64,
            media_type: None,
            upstream: "central".to_owned(),
            digests: BTreeMap::new(),
            verified: Verified::Digest,
        }),
        time,
        carried: Some(Carried {
            bytes: bytes::Bytes::copy_from_slice(bytes),
            temp: unsynced_temp(store, bytes),
        }),
    }
}

#[test]
fn a_small_object_rides_in_its_record_and_a_crash_is_repaired_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.flush().unwrap();
    let checkpointed = store.index.applied().unwrap();
    let pom = b"<project>a pom</project>";
    let jar = b"PK\x03\x04 a small jar";
    let results = store.record_groups(vec![
        vec![carried_pin(&store, "maven:g:a:1:pom", pom, t(1))],
        vec![carried_pin(&store, "maven:g:a:1:jar", jar, t(1))],
        // The same bytes again under another coordinate, in the same batch.
        vec![carried_pin(&store, "maven:g:b:1:pom", pom, t(1))],
    ]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let pom_hash = ContentHash::of(pom);
    let jar_hash = ContentHash::of(jar);
    assert!(store.verify_content(&pom_hash).unwrap());
    assert!(store.verify_content(&jar_hash).unwrap());
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    let records = read_records(&store.journal_path()).unwrap();
    assert_eq!(records[0].data.as_deref(), Some(&pom[..]));
    assert_eq!(records[1].data.as_deref(), Some(&jar[..]));
    assert_eq!(records[1].carried, Some(jar.len() as u64));
    let after = snapshot(&store);

    // A crash before the next checkpoint: the position is still the old one, one content
    // file never reached the disk and the other holds garbage of the right length. (The
    // checkpoint runs first only so that closing the store has nothing left to write.)
    store.checkpoint().unwrap();
    store
        .index
        .set_applied(checkpointed.0, checkpointed.1.as_ref())
        .unwrap();
    std::fs::remove_file(store.content_path(&pom_hash)).unwrap();
    std::fs::write(store.content_path(&jar_hash), vec![0u8; jar.len()]).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.opened.replayed, 3);
    assert!(store.verify_content(&pom_hash).unwrap());
    assert!(store.verify_content(&jar_hash).unwrap());
    assert_eq!(snapshot(&store), after);
    assert_eq!(store.index.applied().unwrap().0, 3);
}

#[test]
fn a_record_whose_carried_length_disagrees_with_its_tail_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.record_groups(vec![vec![carried_pin(
        &store,
        "maven:g:a:1:pom",
        b"a pom",
        t(1),
    )]]);
    let path = store.journal_path();
    drop(store);
    // A checksummed frame whose JSON promises 5 carried bytes but holds 3: not a torn
    // append, a record that was written wrong.
    let prev = hex::encode(verify_journal(&path).unwrap().last_hash);
    let mut payload = format!(
        r#"{{"seq":2,"time_ms":0,"prev":"{prev}","event":{{"type":"pin","coordinate":"maven:g:b:1:pom","sha256":"{}","size":5,"media_type":null,"upstream":"central","digests":{{}},"verified":"digest"}},"carried":5}}"#,
        ContentHash::of(b"b pom")
    )
    .into_bytes();
    payload.extend_from_slice(b"b p");
    let mut frame = Vec::new();
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&frame)
        .unwrap();
    let report = verify_journal(&path).unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(
        report.problems[0].contains("carries Some(5) bytes, 3 follow"),
        "{report:?}"
    );
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::JournalCorrupt { .. })
    ));
}

#[test]
fn carried_bytes_that_are_not_the_pinned_content_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut entry = carried_pin(&store, "maven:g:a:1:pom", b"the real pom", t(1));
    let temp = entry.carried.as_ref().unwrap().temp.clone();
    entry.carried.as_mut().unwrap().bytes = bytes::Bytes::from_static(b"not the real pom");
    let results = store.record_groups(vec![vec![entry]]);
    assert!(
        matches!(results[0], Err(StoreError::DataMismatch { .. })),
        "{results:?}"
    );
    assert!(store.pin("maven:g:a:1:pom").unwrap().is_none());
    assert!(read_records(&store.journal_path()).unwrap().is_empty());
    // The temp file is the caller's to discard, as after any failed record.
    assert!(temp.exists());
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}

#[test]
fn foreign_directory_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tmp")).unwrap();
    std::fs::write(dir.path().join("tmp/precious"), b"x").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    assert!(dir.path().join("tmp/precious").exists());
    assert!(!dir.path().join("FORMAT").exists());

    // An empty mount point is fine.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lost+found")).unwrap();
    Store::open(dir.path()).unwrap();
}

#[test]
fn discard_temp_ignores_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (temp, file) = store.temp_file().unwrap();
    drop(file);
    store.discard_temp(&temp);
    assert!(!temp.exists());
    store.discard_temp(&temp);
}

#[test]
fn tmp_cleaned_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (temp, mut file) = store.temp_file().unwrap();
    file.write_all(b"partial download").unwrap();
    drop(file);
    std::fs::create_dir(dir.path().join("tmp/leftover-dir")).unwrap();
    std::fs::write(dir.path().join("tmp/leftover-dir/x"), b"x").unwrap();
    drop(store);

    let _store = Store::open(dir.path()).unwrap();
    assert!(!temp.exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn record_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    let pin = store.pin("npm:b@2.0.0").unwrap().unwrap();
    assert_eq!(pin.seq, 2);
    assert_eq!(pin.time_ms, 1_700_000_001_000);
    assert_eq!(pin.pin.sha256, ContentHash::of(b"npm:b@2.0.0"));
    assert!(store.pin("npm:zzz@1").unwrap().is_none());

    let tag = "oci:docker.io/library/alpine:3.20";
    let latest = store.resolution(tag).unwrap().unwrap();
    assert_eq!(latest.seq, 5);
    assert_eq!(latest.resolution.sha256, ContentHash::of(b"manifest two"));
    let history = store.resolution_history(tag).unwrap();
    assert_eq!(
        history.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![4, 5]
    );
    // A coordinate that is a prefix of another sees only its own history.
    assert!(
        store
            .resolution_history("oci:docker.io/library/alpine:3.2")
            .unwrap()
            .is_empty()
    );

    let pins: Vec<_> = store
        .pins()
        .unwrap()
        .into_iter()
        .map(|e| e.pin.coordinate)
        .collect();
    assert_eq!(pins, ["maven:g:a:1:jar", "npm:a@1.0.0", "npm:b@2.0.0"]);
    let before = snapshot(&store);
    store.flush().unwrap();
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.opened.replayed, 0);
    assert!(!store.opened.rebuilt);
    assert_eq!(snapshot(&store), before);
    let records = read_records(&store.journal_path()).unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(records[0].prev, "0".repeat(64));
    let next = store
        .record(pin_event(&store, "npm:c@1.0.0", b"c"), t(20))
        .unwrap();
    assert_eq!(next, 6);
    assert!(verify_journal(&store.journal_path()).unwrap().is_ok());
}

#[test]
fn record_requires_published_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let Event::Pin(mut pin) = pin_event(&store, "npm:a@1.0.0", b"abc") else {
        unreachable!()
    };
    pin.size = 4;
    let err = store.record(Event::Pin(pin.clone()), t(0)).unwrap_err();
    assert!(matches!(err, StoreError::ContentMissing { .. }), "{err}");
    pin.size = 3;
    pin.sha256 = ContentHash::of(b"never published");
    let err = store.record(Event::Pin(pin), t(0)).unwrap_err();
    assert!(matches!(err, StoreError::ContentMissing { .. }), "{err}");

    let Event::Pin(mut pin) = pin_event(&store, "x", b"abc") else {
        unreachable!()
    };
    pin.coordinate = "a\0b".to_owned();
    let err = store.record(Event::Pin(pin), t(0)).unwrap_err();
    assert!(matches!(err, StoreError::InvalidCoordinate(_)), "{err}");
    assert_eq!(verify_journal(&store.journal_path()).unwrap().records, 0);
}

#[test]
fn pin_conflict_refused_and_repin_is_noop() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let coordinate = "npm:left-pad@1.3.0";
    let seq = store
        .record(pin_event(&store, coordinate, b"original"), t(0))
        .unwrap();
    assert_eq!(seq, 1);
    let journal_len = std::fs::metadata(store.journal_path()).unwrap().len();

    let same = store
        .record(pin_event(&store, coordinate, b"original"), t(5))
        .unwrap();
    assert_eq!(same, 1);

    let err = store
        .record(pin_event(&store, coordinate, b"tampered"), t(6))
        .unwrap_err();
    match &err {
        StoreError::PinConflict {
            coordinate: c,
            existing,
            new,
        } => {
            assert_eq!(c, coordinate);
            assert_eq!(*existing, ContentHash::of(b"original"));
            assert_eq!(*new, ContentHash::of(b"tampered"));
        }
        other => panic!("expected PinConflict, got {other}"),
    }
    assert!(err.to_string().contains(coordinate));
    assert_eq!(
        std::fs::metadata(store.journal_path()).unwrap().len(),
        journal_len
    );
    let entry = store.pin(coordinate).unwrap().unwrap();
    assert_eq!(entry.pin.sha256, ContentHash::of(b"original"));
    assert_eq!(entry.time_ms, 1_700_000_000_000);

    // Resolutions may change.
    let tag = "oci:docker.io/library/alpine:3.20";
    store
        .record(resolve_event(&store, tag, b"a"), t(1))
        .unwrap();
    store
        .record(resolve_event(&store, tag, b"b"), t(2))
        .unwrap();
    store
        .record(resolve_event(&store, tag, b"a"), t(3))
        .unwrap();
    assert_eq!(store.resolution_history(tag).unwrap().len(), 3);
    assert_eq!(
        store.resolution(tag).unwrap().unwrap().resolution.sha256,
        ContentHash::of(b"a")
    );
}

#[test]
fn replay_keeps_first_of_conflicting_pins() {
    // A journal can only hold a conflicting re-pin if it was written by
    // something other than Store::record; replay must still keep the first.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = pin_event(&store, "npm:a@1", b"first");
    let second = pin_event(&store, "npm:a@1", b"second");
    store.record(first, t(0)).unwrap();
    drop(store);
    {
        let mut journal = Journal::open(&dir.path().join("journal"), |_, _| {}).unwrap();
        journal.append(0, &second).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.opened.replayed, 1);
    let entry = store.pin("npm:a@1").unwrap().unwrap();
    assert_eq!(entry.seq, 1);
    assert_eq!(entry.pin.sha256, ContentHash::of(b"first"));
}

#[test]
fn torn_tail_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    let before = snapshot(&store);
    let path = store.journal_path();
    drop(store);
    let good_len = std::fs::metadata(&path).unwrap().len();

    // Half of a real record: a crash mid-append.
    let mut frame = Vec::new();
    let payload = br#"{"seq":6,"time_ms":0,"prev":"00","event":{"type":"pin"}}"#;
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    let half = &frame[..frame.len() / 2];
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(half)
        .unwrap();
    let report = verify_journal(&path).unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(report.problems[0].contains("torn tail"));

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
    assert_eq!(snapshot(&store), before);
    // The dropped bytes are kept for inspection.
    let saved: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("journal.torn-"))
        .collect();
    assert_eq!(saved.len(), 1);
    assert_eq!(std::fs::read(dir.path().join(&saved[0])).unwrap(), half);

    let seq = store
        .record(pin_event(&store, "npm:after@1", b"after"), t(30))
        .unwrap();
    assert_eq!(seq, 6);
    let report = verify_journal(&path).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.records, report.last_seq), (6, 6));
}

#[test]
fn torn_tail_variants() {
    // A complete last frame whose checksum fails: its payload did not reach
    // the disk before the crash.
    let payload = br#"{"seq":6,"time_ms":0}"#;
    let mut bad_crc = (payload.len() as u32).to_le_bytes().to_vec();
    bad_crc.extend_from_slice(&(crc32fast::hash(payload) ^ 1).to_le_bytes());
    bad_crc.extend_from_slice(payload);
    let cases = [
        ("incomplete header", vec![7, 0, 0]),
        ("zero-filled tail", vec![0; 4096]),
        ("bad checksum at end", bad_crc.clone()),
        ("bad checksum then zeros", [bad_crc, vec![0; 512]].concat()),
        (
            "length past end",
            vec![0xff, 0x00, 0x00, 0x00, 1, 2, 3, 4, b'{'],
        ),
    ];
    for (name, tail) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = populated(dir.path());
        let path = store.journal_path();
        drop(store);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, [bytes.as_slice(), &tail].concat()).unwrap();

        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}");
        store
            .record(pin_event(&store, "npm:after@1", b"after"), t(30))
            .unwrap();
        assert!(verify_journal(&path).unwrap().is_ok(), "{name}");
    }
}

/// Byte offsets of every frame in a journal file.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut pos = 4;
    while pos < bytes.len() {
        offsets.push(pos);
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 8 + len;
    }
    offsets
}

#[test]
fn mid_file_corruption_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    let path = store.journal_path();
    drop(store);
    let mut bytes = std::fs::read(&path).unwrap();
    let offsets = frame_offsets(&bytes);
    let target = offsets[1];
    bytes[target + 8 + 5] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let err = Store::open(dir.path()).unwrap_err();
    match &err {
        StoreError::JournalCorrupt { offset, .. } => assert_eq!(*offset, target as u64),
        other => panic!("expected JournalCorrupt, got {other}"),
    }
    assert!(err.to_string().contains("pinproxy journal verify"), "{err}");
    // Nothing was truncated.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    let report = verify_journal(&path).unwrap();
    assert_eq!(report.records, 4);
    assert!(
        report.problems.iter().any(|p| p.contains("checksum")),
        "{report:?}"
    );
}

#[test]
fn chain_tamper_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    let path = store.journal_path();
    drop(store);
    assert!(verify_journal(&path).unwrap().is_ok());

    // Rewrite record 2 to pin other content and fix its checksum: only the
    // hash chain can tell.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = frame_offsets(&bytes)[1];
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let payload = &mut bytes[at + 8..at + 8 + len];
    let text = String::from_utf8(payload.to_vec()).unwrap();
    let tampered = text.replace("npm:b@2.0.0", "npm:b@6.6.6");
    assert_eq!(tampered.len(), text.len());
    payload.copy_from_slice(tampered.as_bytes());
    let crc = crc32fast::hash(tampered.as_bytes());
    bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let report = verify_journal(&path).unwrap();
    assert_eq!(report.records, 5);
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(report.problems[0].contains("hash chain break at seq 3"));

    // The store refuses to start on a broken chain.
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::JournalCorrupt { .. }), "{err}");
}

#[test]
fn sequence_gap_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    let path = store.journal_path();
    drop(store);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = frame_offsets(&bytes)[2];
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let text = String::from_utf8(bytes[at + 8..at + 8 + len].to_vec()).unwrap();
    let tampered = text.replace("\"seq\":3", "\"seq\":9");
    bytes[at + 8..at + 8 + len].copy_from_slice(tampered.as_bytes());
    let crc = crc32fast::hash(tampered.as_bytes());
    bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let report = verify_journal(&path).unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("sequence break")),
        "{report:?}"
    );
}

#[test]
fn not_a_journal_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("FORMAT"), b"1\n").unwrap();
    std::fs::write(dir.path().join("journal"), b"hello world").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::JournalCorrupt { offset: 0, .. }),
        "{err}"
    );
    assert!(!verify_journal(&dir.path().join("journal")).unwrap().is_ok());
}

#[test]
fn index_deleted_is_rebuilt_identical() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    let before = snapshot(&store);
    drop(store);
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.opened.replayed, 5);
    assert_eq!(snapshot(&store), before);
}

#[test]
fn index_behind_is_replayed() {
    // A crash after the journal sync but before the index update.
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    let extra = pin_event(&store, "npm:late@1", b"late");
    drop(store);
    {
        let mut journal = Journal::open(&dir.path().join("journal"), |_, _| {}).unwrap();
        journal.append(123, &extra).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.opened.replayed, 1);
    assert!(!store.opened.rebuilt);
    assert_eq!(store.pin("npm:late@1").unwrap().unwrap().seq, 6);
    let before = snapshot(&store);

    // applied_seq set lower (with the matching record hash): replays the rest.
    let records = {
        let mut hashes = Vec::new();
        journal::for_each_record(&store.journal_path(), |_, hash| {
            hashes.push(*hash);
            Ok(())
        })
        .unwrap();
        hashes
    };
    store.index.set_applied(2, Some(&records[1])).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.opened.replayed, 4);
    assert!(!store.opened.rebuilt);
    assert_eq!(snapshot(&store), before);

    // applied_seq lower but the hash missing: cannot tell, rebuild.
    store.index.set_applied(2, None).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.opened.rebuilt);
    assert_eq!(snapshot(&store), before);
}

#[test]
fn index_ahead_or_undecodable_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    let before = snapshot(&store);
    // Checkpoint first, or closing the store would write its own position over this one.
    store.flush().unwrap();
    store.index.set_applied(99, None).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.opened.rebuilt);
    assert_eq!(store.opened.replayed, 5);
    assert_eq!(snapshot(&store), before);

    store
        .index
        .raw_insert_pin("npm:a@1.0.0", b"\x09{\"future\":true}")
        .unwrap();
    assert!(matches!(
        store.pin("npm:a@1.0.0").unwrap_err(),
        StoreError::IndexFormat(_)
    ));
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.opened.rebuilt);
    assert_eq!(snapshot(&store), before);
}

#[test]
fn garbage_index_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    let before = snapshot(&store);
    drop(store);
    let index = dir.path().join("index");
    std::fs::remove_dir_all(&index).unwrap();
    std::fs::create_dir(&index).unwrap();
    std::fs::write(index.join("conf"), b"\xff\xfe garbage \x00\x01").unwrap();
    std::fs::write(index.join("db"), vec![0xa5; 10_000]).unwrap();

    let store = Store::open(dir.path()).unwrap();
    assert!(store.opened.rebuilt);
    assert_eq!(snapshot(&store), before);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("index.broken-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(dir.path().join(&aside[0]).join("conf").exists());
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    // The running store's files were not touched.
    assert!(!dir.path().join("index.broken").exists());
    assert_eq!(store.pins().unwrap().len(), 3);
}

#[test]
fn newer_format_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("FORMAT"), "7\n").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerFormat {
                found: 7,
                supported: 1
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("format 7"), "{message}");
    assert!(message.contains("newer pinproxy"), "{message}");
    // Nothing was created next to it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    std::fs::write(dir.path().join("FORMAT"), "one\n").unwrap();
    assert!(matches!(
        Store::open(dir.path()).unwrap_err(),
        StoreError::BadFormat { .. }
    ));
}

#[test]
fn disk_full_classification() {
    let full = StoreError::Io {
        op: "write",
        path: "x".into(),
        source: io::Error::from_raw_os_error(libc::ENOSPC),
    };
    assert!(full.is_disk_full());
    let quota = StoreError::Io {
        op: "write",
        path: "x".into(),
        source: io::Error::from_raw_os_error(libc::EDQUOT),
    };
    assert!(quota.is_disk_full());
    let other = StoreError::Io {
        op: "write",
        path: "x".into(),
        source: io::Error::from_raw_os_error(libc::EACCES),
    };
    assert!(!other.is_disk_full());
    assert!(!StoreError::Index("x".into()).is_disk_full());
}

#[test]
fn concurrent_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                for i in 0..25 {
                    let coordinate = format!("npm:t{thread}@{i}");
                    let event = if i % 5 == 0 {
                        resolve_event(&store, "oci:shared:latest", coordinate.as_bytes())
                    } else {
                        pin_event(&store, &coordinate, coordinate.as_bytes())
                    };
                    seqs.push(store.record(event, SystemTime::now()).unwrap());
                    // Everyone also races on one shared coordinate.
                    let shared = pin_event(&store, "npm:shared@1", b"shared");
                    seqs.push(store.record(shared, SystemTime::now()).unwrap());
                }
                seqs
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let shared_seq = store.pin("npm:shared@1").unwrap().unwrap().seq;
    all.retain(|&s| s != shared_seq);
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "duplicate seqs");
    assert_eq!(all.len(), 8 * 25);

    let report = verify_journal(&store.journal_path()).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.records, 8 * 25 + 1);
    assert_eq!(store.pins().unwrap().len(), 8 * 20 + 1);
    assert_eq!(
        store.resolution_history("oci:shared:latest").unwrap().len(),
        40
    );
}

#[test]
fn record_groups_share_one_sync_and_keep_each_groups_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = pin_event(&store, "oci:x/a@1", b"a-bytes");
    let a_other = pin_event(&store, "oci:x/a@1", b"other-bytes");
    let b = pin_event(&store, "oci:x/b@1", b"b-bytes");
    let tag = resolve_event(&store, "oci:x/b:latest", b"b-bytes");
    let c = pin_event(&store, "oci:x/c@1", b"c-bytes");
    let results = store.record_groups(vec![
        vec![Entry::new(a.clone(), t(1))],
        // Conflicts with a pin appended earlier in the same batch (not yet in the index):
        // refused, and the rest of this group is not recorded.
        vec![Entry::new(a_other, t(2)), Entry::new(c, t(2))],
        vec![Entry::new(b, t(3)), Entry::new(tag, t(3))],
        // Repeating a pin of this batch is a no-op that returns its seq.
        vec![Entry::new(a, t(4))],
    ]);
    assert_eq!(results[0].as_ref().unwrap(), &vec![1]);
    assert!(
        matches!(results[1], Err(StoreError::PinConflict { .. })),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2].as_ref().unwrap(), &vec![2, 3]);
    assert_eq!(results[3].as_ref().unwrap(), &vec![1]);
    assert!(store.pin("oci:x/c@1").unwrap().is_none());
    drop(store);
    // Durable and chained: a reopen (and a full journal check) sees exactly those records.
    let report = verify_journal(&dir.path().join("journal")).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(report.records, 3);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.pin("oci:x/a@1").unwrap().unwrap().pin.sha256,
        ContentHash::of(b"a-bytes")
    );
    assert_eq!(store.resolution("oci:x/b:latest").unwrap().unwrap().seq, 3);
}
