//! Crate-wide properties: no parser panics on hostile input, nothing mutable is ever called
//! immutable, and every artifact parsed renders back to a path with the same coordinates. A
//! small deterministic mutator stands in for proptest/cargo-fuzz so the check runs in every
//! `cargo test` with no extra dependency.

use std::cmp::Ordering;

use crate::checksum::{self, ChecksumAlgorithm};
use crate::layout::{self, Coordinates, Kind};
use crate::metadata::{compare_versions, merge};
use crate::{Cacheability, Error};

/// Knuth's MMIX LCG; the high bits are good enough to pick mutations.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).unwrap_or_default()
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Bytes that sit on the grammar boundaries of everything in this crate.
const INTERESTING: &[u8] = b"/%.-_:2eEfF5c0S1\\\0<>/&;#x{}\" \n\tSNAPSHOT\xc3\xbc";

fn mutate(rng: &mut Lcg, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        let pos = rng.below(out.len() + 1);
        let byte = INTERESTING[rng.below(INTERESTING.len())];
        match rng.below(6) {
            0 if pos < out.len() => out[pos] = byte,
            1 => out.insert(pos, byte),
            2 if pos < out.len() => {
                out.remove(pos);
            }
            3 if rng.below(4) == 0 => out.truncate(pos),
            4 if pos < out.len() => {
                // Duplicate a slice: repeated separators, segments and elements.
                let end = (pos + rng.below(16)).min(out.len());
                let slice = out[pos..end].to_vec();
                out.splice(pos..pos, slice);
            }
            _ => out.insert(pos, u8::try_from(rng.below(256)).unwrap_or(b'x')),
        }
    }
    out
}

const PATHS: &[&str] = &[
    "/org/apache/maven/maven-core/3.9.6/maven-core-3.9.6.jar",
    "org/apache/maven/maven-core/3.9.6/maven-core-3.9.6-sources.jar.sha1",
    "org/x/app/1.0/app-1.0-bin.tar.gz",
    "org/x/app/1.0/app-1.0.jar.asc.md5",
    "com/x/lib-core/2.0-rc-1/lib-core-2.0-rc-1-tests.jar",
    "org/x/app/1.0-SNAPSHOT/app-1.0-20240101.123456-3.jar",
    "org/x/app/1.0-SNAPSHOT/app-1.0-20240101.123456-3-tests.jar.sha512",
    "org/x/app/1.0-SNAPSHOT/app-1.0-SNAPSHOT.pom",
    "org/x/app/1.0-SNAPSHOT/maven-metadata.xml.sha256",
    "org/x/app/maven-metadata.xml",
    "org/x/app/",
];

const SIDECARS: &[&str] = &[
    "f572d396fae9206628714fb2ce00f72e94f2258f  app-1.0.jar\n",
    "d41d8cd98f00b204e9800998ecf8427e",
    "\"{SHA1{f572d396fae9206628714fb2ce00f72e94f2258f}}\"",
];

const METADATA: &str = "<?xml version=\"1.0\"?><metadata><groupId>org.x</groupId>\
    <artifactId>app</artifactId><versioning><latest>1.1</latest><release>1.1</release>\
    <versions><version>1.0</version><version>1.1-rc-1</version><version>1.1</version>\
    </versions><lastUpdated>20240101120000</lastUpdated></versioning></metadata>";

/// The path Maven would request for `c`.
fn render(c: &Coordinates) -> String {
    let mut path = format!(
        "{}/{}/{}/{}-{}",
        c.group.replace('.', "/"),
        c.artifact,
        c.version,
        c.artifact,
        c.file_version
    );
    if let Some(classifier) = &c.classifier {
        path.push('-');
        path.push_str(classifier);
    }
    path.push('.');
    path.push_str(&c.extension);
    path
}

/// Checks the properties of one path; returns whether it parsed as an artifact (possibly
/// under sidecars).
fn exercise_path(path: &str) -> bool {
    let Ok(parsed) = layout::parse(path) else {
        return false;
    };
    let mut kind = &parsed.kind;
    while let Kind::Checksum { of, .. } | Kind::Signature { of } = kind {
        kind = of;
    }
    let immutable = parsed.cacheability() == Cacheability::Immutable;
    match kind {
        Kind::Artifact(c) => {
            // The cardinal sin: a SNAPSHOT directory's only immutable files are timestamped.
            if c.version.to_ascii_uppercase().ends_with("SNAPSHOT") {
                assert_eq!(immutable, c.is_timestamped_snapshot(), "{path:?}");
            }
            if immutable {
                assert!(
                    c.file_version
                        .starts_with(c.version.trim_end_matches("SNAPSHOT"))
                );
            }
            let again = layout::parse(&render(c)).map(|p| p.kind);
            assert_eq!(again, Ok(Kind::Artifact(c.clone())), "{path:?}");
            true
        }
        _ => {
            assert!(!immutable, "{path:?}");
            false
        }
    }
}

#[test]
fn never_panics() {
    let mut rng = Lcg(0x5eed);
    for path in PATHS {
        let artifact = exercise_path(path);
        let expected = !path.contains("maven-metadata") && !path.ends_with('/');
        assert_eq!(artifact, expected, "{path:?}");
    }
    let mut artifacts = 0;
    for _ in 0..40_000 {
        let seed = PATHS[rng.below(PATHS.len())].as_bytes();
        let mutated = mutate(&mut rng, seed);
        artifacts += usize::from(exercise_path(&String::from_utf8_lossy(&mutated)));
    }
    // Mutations must not be so destructive that only the error paths are exercised.
    assert!(
        artifacts > 5_000,
        "only {artifacts} mutated paths were artifacts"
    );

    for _ in 0..20_000 {
        let seed = SIDECARS[rng.below(SIDECARS.len())].as_bytes();
        let body = mutate(&mut rng, seed);
        for algorithm in ChecksumAlgorithm::ALL {
            if let Some(d) = checksum::parse_sidecar(&body, algorithm) {
                assert_eq!(d.len(), algorithm.digest_len());
                let rendered = checksum::render_sidecar(&d);
                assert_eq!(
                    checksum::parse_sidecar(rendered.as_bytes(), algorithm),
                    Some(d)
                );
            }
            let text = String::from_utf8_lossy(&body);
            if let Some(d) = checksum::parse_header(&text, algorithm) {
                assert_eq!(d.len(), algorithm.digest_len());
            }
            if let Some(d) = checksum::parse_nexus_etag(&text) {
                assert_eq!(d.len(), 20);
            }
        }
    }

    let mut merged = 0;
    for _ in 0..20_000 {
        let doc = mutate(&mut rng, METADATA.as_bytes());
        match merge(&[METADATA.as_bytes(), &doc]) {
            Ok(out) => {
                merged += 1;
                // What merge writes, merge reads back to itself.
                assert_eq!(merge(&[&out, &out]).as_ref(), Ok(&out));
            }
            Err(e) => assert!(matches!(e, Error::MetadataInvalid(_))),
        }
        let text = String::from_utf8_lossy(&doc);
        let mid = (0..=text.len() / 2)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or_default();
        let (a, b) = text.split_at(mid);
        assert_eq!(compare_versions(a, b), compare_versions(b, a).reverse());
        assert_eq!(compare_versions(a, a), Ordering::Equal);
    }
    assert!(merged > 1_000, "only {merged} mutated documents merged");
}
