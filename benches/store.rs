//! The store's hot paths: streaming verification (sha256 over the bytes of a fill), publish
//! (fsync + rename) and journal append (fsync), small objects carried in their record, and
//! opening a store whose journal carries them. Run with `cargo bench --bench store`.

use std::hint::black_box;
use std::io::Write;
use std::time::SystemTime;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pinproxy::store::{Carried, ContentHash, Entry, Event, Pin, Store, Verified};
use pinproxy::verify::{Expect, Expected, Verifier};

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn verify(c: &mut Criterion) {
    let bytes = data(16 << 20);
    let want = ContentHash::of(&bytes);
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.sample_size(10);
    g.bench_function("sha256 16 MiB in 256 KiB chunks", |b| {
        b.iter(|| {
            let mut v = Verifier::new(
                Expect {
                    size: Some(bytes.len() as u64),
                    digest: Some(Expected::Sha256(want.0)),
                    ..Expect::default()
                },
                None,
            );
            for chunk in bytes.chunks(256 * 1024) {
                v.update(chunk).unwrap();
            }
            black_box(v.finish().unwrap())
        })
    });
    g.finish();
}

fn pin_of(n: u64, bytes: &[u8]) -> Event {
    Event::Pin(Pin {
        coordinate: format!("bench:{n}"),
        sha256: ContentHash::of(bytes),
        size: bytes.len() as u64,
        media_type: None,
        upstream: "bench".into(),
        digests: Default::default(),
        verified: Verified::Digest,
    })
}

/// `len` bytes that differ from every other call's.
fn unique(n: u64, len: usize) -> Vec<u8> {
    let mut bytes = data(len);
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    bytes
}

/// Records a pin whose bytes ride in its record, as a fill of a small object does.
fn carry(store: &Store, n: u64, bytes: Vec<u8>) {
    let (temp, mut f) = store.temp_file().unwrap();
    f.write_all(&bytes).unwrap();
    let entry = Entry {
        event: pin_of(n, &bytes),
        time: SystemTime::now(),
        carried: Some(Carried {
            bytes: bytes.into(),
            temp,
        }),
    };
    for result in store.record_groups(vec![vec![entry]]) {
        result.unwrap();
    }
}

fn publish_and_pin(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut n = 0u64;
    let mut g = c.benchmark_group("store");
    g.sample_size(20);
    for kib in [4, 16, 32, 64] {
        g.bench_function(
            format!("publish {kib} KiB + pin (fsync file, directory, journal)"),
            |b| {
                b.iter(|| {
                    n += 1;
                    let bytes = unique(n, kib * 1024);
                    let (path, mut f) = store.temp_file().unwrap();
                    f.write_all(&bytes).unwrap();
                    store.publish(&path, &ContentHash::of(&bytes)).unwrap();
                    black_box(store.record(pin_of(n, &bytes), SystemTime::now()).unwrap())
                })
            },
        );
        g.bench_function(
            format!("carry {kib} KiB in its pin's record (fdatasync journal)"),
            |b| {
                b.iter(|| {
                    n += 1;
                    carry(&store, n, unique(n, kib * 1024));
                })
            },
        );
    }
    g.bench_function("pin lookup", |b| {
        b.iter(|| black_box(store.pin(black_box("bench:1")).unwrap()))
    });
    g.finish();
}

/// Opening a store reads the whole journal: what carried bytes cost at start-up.
fn open(c: &mut Criterion) {
    const RECORDS: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for n in 0..RECORDS {
            carry(&store, n, unique(n, 16 * 1024));
        }
    }
    let mut g = c.benchmark_group("store");
    g.sample_size(10);
    g.bench_function(
        format!("open a store whose journal carries {RECORDS} x 16 KiB"),
        |b| b.iter(|| drop(black_box(Store::open(dir.path()).unwrap()))),
    );
    g.finish();
}

criterion_group!(benches, verify, publish_and_pin, open);
criterion_main!(benches);
