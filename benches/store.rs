//! The store's hot paths: streaming verification (sha256 over the bytes of a fill), publish
//! (fsync + rename) and journal append (fsync). Run with `cargo bench --bench store`.

use std::hint::black_box;
use std::io::Write;
use std::time::SystemTime;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pinproxy::store::{ContentHash, Event, Pin, Store, Verified};
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

fn publish_and_pin(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut n = 0u64;
    let mut g = c.benchmark_group("store");
    g.sample_size(20);
    g.bench_function("publish 64 KiB + journal pin (2 fsyncs + rename)", |b| {
        b.iter(|| {
            n += 1;
            let mut bytes = data(64 * 1024);
            bytes[..8].copy_from_slice(&n.to_le_bytes());
            let hash = ContentHash::of(&bytes);
            let (path, mut f) = store.temp_file().unwrap();
            f.write_all(&bytes).unwrap();
            store.publish(&path, &hash).unwrap();
            let pin = Pin {
                coordinate: format!("bench:{n}"),
                sha256: hash,
                size: bytes.len() as u64,
                media_type: None,
                upstream: "bench".into(),
                digests: Default::default(),
                verified: Verified::Digest,
            };
            black_box(store.record(Event::Pin(pin), SystemTime::now()).unwrap())
        })
    });
    g.bench_function("pin lookup", |b| {
        b.iter(|| black_box(store.pin(black_box("bench:1")).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, verify, publish_and_pin);
criterion_main!(benches);
