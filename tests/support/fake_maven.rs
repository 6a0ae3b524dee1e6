//! In-process fake Maven repository ("upstream") for integration tests.
//!
//! Serves files from a map `path → bytes` in the Maven layout, with the checksum surfaces a
//! real repository offers: `.sha1`/`.md5` (and `.sha256`/`.sha512`) sidecar files and Maven
//! Central's `X-Checksum-Sha1`/`X-Checksum-Md5` response headers, each switchable per file.
//! `maven-metadata.xml` documents get a strong ETag and a Last-Modified and answer
//! conditional requests with 304; directory paths answer with an HTML listing. Faults
//! (status codes, resets, truncation, corrupted bodies, slow/paused/stalled bodies) can be
//! injected per path or globally, and every request is recorded so tests can assert what the
//! proxy sent upstream.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha512};
use tokio::net::TcpListener;

use super::body_faults::{self, BodyFault, Pause};
use super::http_server::{self, Listening, ServerHandle, bind, lock};

/// Size of body frames for streamed content.
const CHUNK: usize = 64 * 1024;
/// 2024-01-01T00:00:00Z: Last-Modified of the first file put; every later change is a
/// minute later.
const CLOCK_START: u64 = 1_704_067_200;
/// The global fault's key (paths never start with `*`).
const ALL: &str = "*";

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Failure injected into responses via [`FakeMaven::set_fault`] (every request) or
/// [`FakeMaven::set_fault_for`] (one path; wins over the global one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Fault {
    #[default]
    None,
    /// Answer with this status and a text/plain body (429 adds `Retry-After: 1`).
    Status(u16),
    /// Close the connection without any response.
    Reset,
    /// Announce the full `Content-Length`, send only the first n bytes, then abort.
    Truncate(usize),
    /// Same length, every byte inverted; headers and sidecars keep the real checksums.
    Corrupt,
    /// Send `chunk` bytes per frame, waiting `interval` between frames.
    SlowDrip { chunk: usize, interval: Duration },
    /// Send `bytes` bytes, then wait for [`FakeMaven::release_pause`] (only if `bytes < len`).
    PauseAfter { bytes: usize },
    /// Send `after` bytes, then neither send nor close (only if `after < len`).
    Stall { after: usize },
}

impl Fault {
    /// The part of this fault that acts on the body stream.
    fn body_fault(&self) -> BodyFault {
        match *self {
            Self::Truncate(n) => BodyFault::Truncate(n),
            Self::Stall { after } => BodyFault::Stall { after },
            Self::PauseAfter { bytes } => BodyFault::PauseAfter { bytes },
            Self::SlowDrip { chunk, interval } => BodyFault::SlowDrip { chunk, interval },
            _ => BodyFault::None,
        }
    }
}

/// Which checksum surfaces [`FakeMaven::put`] offers for a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Checksums {
    /// `<path>.sha1` and `<path>.md5` sidecar files.
    pub(crate) sidecars: bool,
    /// `<path>.sha256` and `<path>.sha512` sidecar files.
    pub(crate) sha2_sidecars: bool,
    /// `X-Checksum-Sha1` and `X-Checksum-Md5` response headers, as Maven Central sends.
    pub(crate) headers: bool,
    /// Sidecar bodies in the `<hex>  <file name>\n` form (else bare lowercase hex).
    pub(crate) named: bool,
}

impl Checksums {
    /// What Maven Central offers: `.sha1`/`.md5` sidecars and the headers.
    pub(crate) fn central() -> Self {
        Self {
            sidecars: true,
            headers: true,
            ..Self::default()
        }
    }

    /// Every surface: all four sidecars and the headers.
    pub(crate) fn all() -> Self {
        Self {
            sidecars: true,
            sha2_sidecars: true,
            headers: true,
            named: false,
        }
    }

    /// `.sha1`/`.md5` sidecars, no headers (a plain static file server).
    pub(crate) fn sidecars_only() -> Self {
        Self {
            sidecars: true,
            ..Self::default()
        }
    }

    /// Only `.sha256`/`.sha512` sidecars.
    pub(crate) fn sha2_only() -> Self {
        Self {
            sha2_sidecars: true,
            ..Self::default()
        }
    }

    /// Only the `X-Checksum-*` headers, no sidecar files.
    pub(crate) fn headers_only() -> Self {
        Self {
            headers: true,
            ..Self::default()
        }
    }

    /// No checksum anywhere.
    pub(crate) fn none() -> Self {
        Self::default()
    }

    /// The same, with sidecar bodies in the `<hex>  <file name>` form.
    pub(crate) fn named(self) -> Self {
        Self {
            named: true,
            ..self
        }
    }
}

/// Repository paths (no leading `/`) written by [`FakeMaven::add_release`].
#[derive(Clone, Debug)]
pub(crate) struct ReleasePaths {
    /// `org/example/lib/1.0/`
    pub(crate) dir: String,
    /// `org/example/lib/` (where the artifact-level metadata and the listing live)
    pub(crate) artifact_dir: String,
    pub(crate) pom: String,
    pub(crate) jar: String,
    pub(crate) sources: String,
    /// `org/example/lib/maven-metadata.xml` (not written by `add_release`).
    pub(crate) metadata: String,
}

/// Repository paths (no leading `/`) written by [`FakeMaven::add_snapshot`].
#[derive(Clone, Debug)]
pub(crate) struct SnapshotPaths {
    /// `org/example/lib/1.0-SNAPSHOT/`
    pub(crate) dir: String,
    /// `1.0-20240101.123456-3`
    pub(crate) unique_version: String,
    /// Timestamped (immutable) files.
    pub(crate) jar: String,
    pub(crate) pom: String,
    /// `lib-1.0-SNAPSHOT.jar` (mutable, same bytes as the timestamped jar at first).
    pub(crate) legacy_jar: String,
    /// `org/example/lib/1.0-SNAPSHOT/maven-metadata.xml`
    pub(crate) metadata: String,
}

#[derive(Clone, Debug)]
pub(crate) struct RecordedRequest {
    pub(crate) method: String,
    /// Raw request path without the leading `/` (still percent-encoded).
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
}

impl RecordedRequest {
    /// First value of a header as text ("" if not UTF-8).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap_or(""))
    }
}

// ---- digests and generators --------------------------------------------------------------

pub(crate) fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

pub(crate) fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) fn sha512_hex(bytes: &[u8]) -> String {
    hex::encode(Sha512::digest(bytes))
}

/// Deterministic, incompressible bytes (xorshift64*).
fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    if x == 0 {
        x = 1;
    }
    let mut out = vec![0u8; len.next_multiple_of(8)];
    for word in out.chunks_exact_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        word.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `org.example` → `org/example`.
pub(crate) fn group_path(group: &str) -> String {
    group.replace('.', "/")
}

/// A jar-looking file of exactly `size` bytes: the zip local-file-header magic, then
/// pseudo-random bytes seeded by the coordinates. Deterministic.
pub(crate) fn jar_bytes(group: &str, artifact: &str, version: &str, size: usize) -> Bytes {
    let seed = u64::from(crc32fast::hash(
        format!("{group}:{artifact}:{version}:{size}").as_bytes(),
    ));
    let mut out = pseudo_random_bytes(size, seed);
    let magic = b"PK\x03\x04";
    let n = magic.len().min(size);
    out[..n].copy_from_slice(&magic[..n]);
    Bytes::from(out)
}

/// A small, valid POM.
pub(crate) fn pom_bytes(group: &str, artifact: &str, version: &str) -> Bytes {
    pom_text(group, artifact, version, "").into()
}

/// A POM carrying the comment that makes Gradle probe the `.module` file (MVN-Q4).
pub(crate) fn gradle_pom_bytes(group: &str, artifact: &str, version: &str) -> Bytes {
    let marker = "  <!-- This module was also published with a richer model, Gradle metadata,  -->\n  \
                  <!-- which should be used instead. Do not delete the following line which  -->\n  \
                  <!-- is to indicate to Gradle or any Gradle module metadata file consumer  -->\n  \
                  <!-- that they should prefer consuming it instead. -->\n  \
                  <!-- do_not_remove: published-with-gradle-metadata -->\n";
    pom_text(group, artifact, version, marker).into()
}

fn pom_text(group: &str, artifact: &str, version: &str, marker: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
{marker}  <modelVersion>4.0.0</modelVersion>
  <groupId>{group}</groupId>
  <artifactId>{artifact}</artifactId>
  <version>{version}</version>
  <packaging>jar</packaging>
  <name>{artifact}</name>
  <description>Fixture artifact {group}:{artifact}:{version}</description>
  <licenses>
    <license>
      <name>Apache-2.0</name>
      <url>https://www.apache.org/licenses/LICENSE-2.0.txt</url>
    </license>
  </licenses>
</project>
"#
    )
}

/// Whether `v` is a SNAPSHOT version (`1.0-SNAPSHOT`).
fn is_snapshot(v: &str) -> bool {
    v.ends_with("-SNAPSHOT")
}

/// A realistic artifact-level `maven-metadata.xml`: `<latest>` is the last of `versions`,
/// `<release>` the last non-SNAPSHOT one (callers list versions in ascending order, as
/// repositories do). `last_updated` is `yyyyMMddHHmmss`.
pub(crate) fn artifact_metadata_xml(
    group: &str,
    artifact: &str,
    versions: &[&str],
    last_updated: &str,
) -> String {
    let latest = versions.last().copied().unwrap_or("");
    let release = versions
        .iter()
        .rev()
        .find(|v| !is_snapshot(v))
        .copied()
        .unwrap_or("");
    let mut list = String::new();
    for v in versions {
        list.push_str(&format!("      <version>{v}</version>\n"));
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata>
  <groupId>{group}</groupId>
  <artifactId>{artifact}</artifactId>
  <versioning>
    <latest>{latest}</latest>
    <release>{release}</release>
    <versions>
{list}    </versions>
    <lastUpdated>{last_updated}</lastUpdated>
  </versioning>
</metadata>
"#
    )
}

/// A SNAPSHOT-version-level `maven-metadata.xml` for `base_version` (`1.0-SNAPSHOT`) whose
/// latest build is `timestamp` (`yyyyMMdd.HHmmss`) / `build_number`, listing a jar, a
/// sources jar and a pom.
pub(crate) fn snapshot_metadata_xml(
    group: &str,
    artifact: &str,
    base_version: &str,
    timestamp: &str,
    build_number: u32,
) -> String {
    let unique = format!(
        "{}-{timestamp}-{build_number}",
        base_version.trim_end_matches("-SNAPSHOT")
    );
    let updated = timestamp.replace('.', "");
    let mut versions = String::new();
    for (classifier, ext) in [("", "jar"), ("sources", "jar"), ("", "pom")] {
        let classifier = if classifier.is_empty() {
            String::new()
        } else {
            format!("        <classifier>{classifier}</classifier>\n")
        };
        versions.push_str(&format!(
            "      <snapshotVersion>\n{classifier}        <extension>{ext}</extension>\n        <value>{unique}</value>\n        <updated>{updated}</updated>\n      </snapshotVersion>\n"
        ));
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata modelVersion="1.1.0">
  <groupId>{group}</groupId>
  <artifactId>{artifact}</artifactId>
  <version>{base_version}</version>
  <versioning>
    <snapshot>
      <timestamp>{timestamp}</timestamp>
      <buildNumber>{build_number}</buildNumber>
    </snapshot>
    <lastUpdated>{updated}</lastUpdated>
    <snapshotVersions>
{versions}    </snapshotVersions>
  </versioning>
</metadata>
"#
    )
}

/// `yyyyMMddHHmmss` of a unix time (the `lastUpdated` form).
pub(crate) fn maven_timestamp(secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(secs);
    format!("{y:04}{m:02}{d:02}{hh:02}{mm:02}{ss:02}")
}

// ---- HTTP dates --------------------------------------------------------------------------

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// (year, month, day, hour, minute, second) of a unix time (civil_from_days, H. Hinnant).
fn civil(secs: u64) -> (i64, u64, u64, u64, u64, u64) {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// days_from_civil (H. Hinnant).
fn days_from_civil(y: i64, m: u64, d: u64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// IMF-fixdate: `Mon, 01 Jan 2024 00:00:00 GMT`.
pub(crate) fn http_date(secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(secs);
    let weekday = WEEKDAYS[(secs / 86_400 % 7) as usize];
    let month = MONTHS[(m - 1) as usize];
    format!("{weekday}, {d:02} {month} {y:04} {hh:02}:{mm:02}:{ss:02} GMT")
}

/// Parses an IMF-fixdate into unix seconds.
pub(crate) fn parse_http_date(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, d, mon, y, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let m = MONTHS.iter().position(|x| x == mon)? as u64 + 1;
    let (d, y): (u64, i64) = (d.parse().ok()?, y.parse().ok()?);
    let hms: Vec<u64> = time
        .split(':')
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let [hh, mm, ss] = hms.as_slice() else {
        return None;
    };
    let days = u64::try_from(days_from_civil(y, m, d)).ok()?;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The current unix time in seconds.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

// ---- content model -----------------------------------------------------------------------

/// The checksums of one byte string, computed once.
#[derive(Clone, Debug)]
struct Sums {
    sha1: String,
    md5: String,
}

impl Sums {
    fn of(bytes: &[u8]) -> Self {
        Self {
            sha1: sha1_hex(bytes),
            md5: md5_hex(bytes),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    bytes: Bytes,
    content_type: String,
    etag: String,
    last_modified: u64,
    /// `X-Checksum-*` values, when the file offers the headers.
    headers: Option<Sums>,
}

fn content_type_for(path: &str) -> &'static str {
    let ext = path.rsplit('/').next().unwrap_or("");
    let ext = ext.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "pom" | "xml" => "text/xml",
        "jar" | "war" | "ear" | "aar" => "application/java-archive",
        "module" | "json" => "application/json",
        "asc" => "application/pgp-signature",
        "sha1" | "md5" | "sha256" | "sha512" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// One cached 'big' artifact: generated and hashed once per process.
struct BigBlob {
    bytes: Bytes,
    sums: Sums,
}

fn big_blob(group: &str, artifact: &str, version: &str, size: usize) -> Arc<BigBlob> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<BigBlob>>>> = OnceLock::new();
    let key = format!("{group}:{artifact}:{version}:{size}");
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // Held while generating, so two tests asking for the same blob build it once.
    let mut map = lock(cache);
    let blob = map.entry(key).or_insert_with(|| {
        let bytes = jar_bytes(group, artifact, version, size);
        let sums = Sums::of(&bytes);
        Arc::new(BigBlob { sums, bytes })
    });
    Arc::clone(blob)
}

// ---- server ------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct FaultRule {
    fault: Fault,
    remaining: Option<usize>,
}

struct State {
    files: HashMap<String, Entry>,
    /// Last-Modified for the next change.
    clock: u64,
    /// Request path (no leading `/`) or [`ALL`] → fault.
    faults: HashMap<String, FaultRule>,
    requests: Vec<RecordedRequest>,
    hits: HashMap<(String, String), usize>,
}

impl State {
    /// The fault for `path` (keyed first, then global), consuming one use of a counted one.
    fn take_fault(&mut self, path: &str) -> Fault {
        let Some(key) = [path, ALL]
            .into_iter()
            .find(|k| self.faults.contains_key(*k))
        else {
            return Fault::None;
        };
        let key = key.to_owned();
        let rule = self.faults.get_mut(&key).expect("present");
        let fault = rule.fault.clone();
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.faults.remove(&key);
            }
        }
        fault
    }

    fn tick(&mut self) -> u64 {
        self.clock += 60;
        self.clock
    }

    fn insert(&mut self, path: &str, bytes: Bytes, headers: Option<Sums>) {
        let last_modified = self.tick();
        let entry = Entry {
            etag: format!("\"{}\"", md5_hex(&bytes)),
            content_type: content_type_for(path).to_owned(),
            bytes,
            last_modified,
            headers,
        };
        self.files.insert(path.to_owned(), entry);
    }

    /// Stores `path` and the sidecars `checksums` asks for.
    fn put_with(&mut self, path: &str, bytes: Bytes, c: Checksums, sums: &Sums, sha2: &[String]) {
        let file = path.rsplit('/').next().unwrap_or(path).to_owned();
        let body = |hex: &str| -> Bytes {
            if c.named {
                format!("{hex}  {file}\n").into()
            } else {
                hex.to_owned().into()
            }
        };
        self.insert(path, bytes, c.headers.then(|| sums.clone()));
        if c.sidecars {
            self.insert(&format!("{path}.sha1"), body(&sums.sha1), None);
            self.insert(&format!("{path}.md5"), body(&sums.md5), None);
        }
        if c.sha2_sidecars {
            self.insert(&format!("{path}.sha256"), body(&sha2[0]), None);
            self.insert(&format!("{path}.sha512"), body(&sha2[1]), None);
        }
    }
}

struct Inner {
    state: Mutex<State>,
    /// `http://127.0.0.1:PORT/`
    base_url: String,
    bytes_sent: Arc<AtomicU64>,
    pause: Arc<Pause>,
}

pub(crate) struct FakeMaven {
    inner: Arc<Inner>,
    listening: Listening,
}

impl Drop for FakeMaven {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_server(listener: TcpListener, inner: Arc<Inner>) -> ServerHandle {
    http_server::spawn(listener, move |req| Arc::clone(&inner).handle(req))
}

/// `/org/x` and `org/x` name the same file.
fn norm(path: &str) -> &str {
    path.strip_prefix('/').unwrap_or(path)
}

impl FakeMaven {
    /// Start on `127.0.0.1:<ephemeral>`.
    pub(crate) async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Start with empty state on `addr` (e.g. the address of a stopped instance).
    pub(crate) async fn start_on(addr: SocketAddr) -> Self {
        let listener = bind("fake_maven", addr).await;
        let addr = listener.local_addr().expect("local_addr");
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                files: HashMap::new(),
                clock: CLOCK_START,
                faults: HashMap::new(),
                requests: Vec::new(),
                hits: HashMap::new(),
            }),
            base_url: format!("http://{addr}/"),
            bytes_sent: Arc::new(AtomicU64::new(0)),
            pause: Arc::default(),
        });
        let served = Arc::clone(&inner);
        let listening = Listening::serve("fake_maven", listener, move |l| {
            spawn_server(l, Arc::clone(&served))
        });
        Self { inner, listening }
    }

    /// Close the listener and abort all live connections. Content and counters survive.
    pub(crate) fn stop(&self) {
        self.listening.stop();
    }

    /// Listen again on the same address after [`Self::stop`], keeping content and counters.
    pub(crate) async fn restart(&self) {
        self.listening.restart().await;
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.listening.addr()
    }

    /// Repository base URL `http://127.0.0.1:PORT/` (with the trailing slash).
    pub(crate) fn url(&self) -> String {
        self.inner.base_url.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    // ---- content -------------------------------------------------------------------------

    /// Store (or replace) `path` with the checksum surfaces `checksums` asks for. Sidecars
    /// not asked for are left as they are (use [`Self::remove`]).
    pub(crate) fn put(&self, path: &str, bytes: impl Into<Bytes>, checksums: Checksums) {
        let bytes = bytes.into();
        let sums = Sums::of(&bytes);
        let sha2 = if checksums.sha2_sidecars {
            vec![sha256_hex(&bytes), sha512_hex(&bytes)]
        } else {
            Vec::new()
        };
        self.state()
            .put_with(norm(path), bytes, checksums, &sums, &sha2);
    }

    /// Store `path` as is, with no checksum surface (also for writing a wrong sidecar).
    pub(crate) fn put_raw(&self, path: &str, bytes: impl Into<Bytes>) {
        self.state().insert(norm(path), bytes.into(), None);
    }

    /// Remove exactly `path` (not its sidecars).
    pub(crate) fn remove(&self, path: &str) {
        self.state().files.remove(norm(path));
    }

    /// Remove `path` and its four checksum sidecars.
    pub(crate) fn remove_with_sidecars(&self, path: &str) {
        let mut st = self.state();
        let path = norm(path);
        st.files.remove(path);
        for ext in ["sha1", "md5", "sha256", "sha512"] {
            st.files.remove(&format!("{path}.{ext}"));
        }
    }

    /// Current bytes of `path`.
    pub(crate) fn file(&self, path: &str) -> Option<Bytes> {
        self.state().files.get(norm(path)).map(|e| e.bytes.clone())
    }

    /// The ETag `path` is served with.
    pub(crate) fn etag(&self, path: &str) -> Option<String> {
        self.state().files.get(norm(path)).map(|e| e.etag.clone())
    }

    /// The Last-Modified of `path`, unix seconds.
    pub(crate) fn last_modified(&self, path: &str) -> Option<u64> {
        self.state().files.get(norm(path)).map(|e| e.last_modified)
    }

    pub(crate) fn set_last_modified(&self, path: &str, secs: u64) {
        if let Some(e) = self.state().files.get_mut(norm(path)) {
            e.last_modified = secs;
        }
    }

    /// Send these `X-Checksum-Sha1`/`X-Checksum-Md5` values for `path` (e.g. wrong ones).
    pub(crate) fn set_checksum_headers(&self, path: &str, sha1: &str, md5: &str) {
        if let Some(e) = self.state().files.get_mut(norm(path)) {
            e.headers = Some(Sums {
                sha1: sha1.to_owned(),
                md5: md5.to_owned(),
            });
        }
    }

    /// A release `group:artifact:version`: pom, jar (24 kB) and sources jar (8 kB) at their
    /// layout paths, each with `checksums`.
    pub(crate) fn add_release(
        &self,
        group: &str,
        artifact: &str,
        version: &str,
        checksums: Checksums,
    ) -> ReleasePaths {
        let paths = release_paths(group, artifact, version);
        self.put(&paths.pom, pom_bytes(group, artifact, version), checksums);
        self.put(
            &paths.jar,
            jar_bytes(group, artifact, version, 24 * 1024),
            checksums,
        );
        let sources = jar_bytes(group, artifact, &format!("{version}-sources"), 8 * 1024);
        self.put(&paths.sources, sources, checksums);
        paths
    }

    /// Like [`Self::add_release`] with a jar of exactly `jar_size` bytes.
    pub(crate) fn add_release_sized(
        &self,
        group: &str,
        artifact: &str,
        version: &str,
        jar_size: usize,
        checksums: Checksums,
    ) -> ReleasePaths {
        let paths = self.add_release(group, artifact, version, checksums);
        self.put(
            &paths.jar,
            jar_bytes(group, artifact, version, jar_size),
            checksums,
        );
        paths
    }

    /// A jar of `size` bytes at its release path with Maven Central's checksums (headers and
    /// `.sha1`/`.md5`), plus a pom. The bytes and digests are generated once per process, so
    /// 100 MB costs little after the first test that asks. Returns the jar's path.
    pub(crate) fn add_big(
        &self,
        group: &str,
        artifact: &str,
        version: &str,
        size: usize,
    ) -> String {
        let paths = release_paths(group, artifact, version);
        let blob = big_blob(group, artifact, version, size);
        let mut st = self.state();
        st.put_with(
            &paths.jar,
            blob.bytes.clone(),
            Checksums::central(),
            &blob.sums,
            &[],
        );
        let pom = pom_bytes(group, artifact, version);
        let sums = Sums::of(&pom);
        st.put_with(&paths.pom, pom, Checksums::central(), &sums, &[]);
        paths.jar
    }

    /// A `base`-SNAPSHOT (base like `1.0`) deployed as build `timestamp`-`build`: timestamped
    /// jar and pom (with `checksums`), the legacy `-SNAPSHOT.jar` with the same bytes, and the
    /// version-level metadata.
    pub(crate) fn add_snapshot(
        &self,
        group: &str,
        artifact: &str,
        base: &str,
        timestamp: &str,
        build: u32,
        checksums: Checksums,
    ) -> SnapshotPaths {
        let version = format!("{base}-SNAPSHOT");
        let unique = format!("{base}-{timestamp}-{build}");
        let dir = format!("{}/{artifact}/{version}/", group_path(group));
        let jar = jar_bytes(group, artifact, &unique, 16 * 1024);
        let paths = SnapshotPaths {
            jar: format!("{dir}{artifact}-{unique}.jar"),
            pom: format!("{dir}{artifact}-{unique}.pom"),
            legacy_jar: format!("{dir}{artifact}-{version}.jar"),
            metadata: format!("{dir}maven-metadata.xml"),
            unique_version: unique,
            dir,
        };
        self.put(&paths.jar, jar.clone(), checksums);
        self.put(&paths.pom, pom_bytes(group, artifact, &version), checksums);
        self.put(&paths.legacy_jar, jar, checksums);
        let xml = snapshot_metadata_xml(group, artifact, &version, timestamp, build);
        self.set_metadata(&paths.metadata, &xml);
        paths
    }

    /// Serve `xml` at `path` as text/xml. A change of content moves the ETag and the
    /// Last-Modified (a minute later than anything before); the `.sha1`/`.md5` sidecars are
    /// recomputed.
    pub(crate) fn set_metadata(&self, path: &str, xml: &str) {
        let path = norm(path);
        let bytes = Bytes::from(xml.to_owned());
        let mut st = self.state();
        if st.files.get(path).is_some_and(|e| e.bytes == bytes) {
            return;
        }
        let last_modified = st.tick();
        let entry = Entry {
            etag: format!("\"{}\"", &sha256_hex(&bytes)[..32]),
            content_type: "text/xml".to_owned(),
            last_modified,
            headers: None,
            bytes: bytes.clone(),
        };
        st.files.insert(path.to_owned(), entry);
        st.insert(&format!("{path}.sha1"), sha1_hex(&bytes).into(), None);
        st.insert(&format!("{path}.md5"), md5_hex(&bytes).into(), None);
    }

    /// The directory listing a GET of `dir` (ending in `/`) answers with, if any.
    pub(crate) fn listing(&self, dir: &str) -> Option<Bytes> {
        listing_html(&self.state(), norm(dir))
    }

    // ---- behaviour switches --------------------------------------------------------------

    /// Fault for every request without a path fault; `Fault::None` clears.
    pub(crate) fn set_fault(&self, fault: Fault) {
        self.put_fault(ALL, fault, None);
    }

    /// Fault for requests of exactly `path` (a path fault wins over the global one).
    pub(crate) fn set_fault_for(&self, path: &str, fault: Fault) {
        self.put_fault(norm(path), fault, None);
    }

    /// Like [`Self::set_fault_for`] but only for the next `times` requests of `path`.
    pub(crate) fn set_fault_for_n(&self, path: &str, fault: Fault, times: usize) {
        self.put_fault(norm(path), fault, Some(times));
    }

    fn put_fault(&self, key: &str, fault: Fault, remaining: Option<usize>) {
        let mut st = self.state();
        if fault == Fault::None || remaining == Some(0) {
            st.faults.remove(key);
        } else {
            st.faults
                .insert(key.to_owned(), FaultRule { fault, remaining });
        }
    }

    pub(crate) fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Let every body currently waiting in [`Fault::PauseAfter`] continue.
    pub(crate) fn release_pause(&self) {
        self.inner.pause.release();
    }

    /// Number of bodies currently waiting in [`Fault::PauseAfter`].
    pub(crate) fn paused_waiters(&self) -> usize {
        self.inner.pause.waiters()
    }

    /// Wait until at least one body is waiting at its pause point.
    pub(crate) async fn wait_paused(&self) {
        self.inner.pause.wait_paused().await;
    }

    // ---- observations --------------------------------------------------------------------

    /// Requests for `method` + raw `path` (leading `/` optional, no query), any outcome.
    pub(crate) fn hits(&self, method: &str, path: &str) -> usize {
        let key = (method.to_owned(), norm(path).to_owned());
        self.state().hits.get(&key).copied().unwrap_or(0)
    }

    /// GETs of `path`, any outcome.
    pub(crate) fn gets(&self, path: &str) -> usize {
        self.hits("GET", path)
    }

    /// Requests of `path` with any method.
    pub(crate) fn hits_any(&self, path: &str) -> usize {
        let path = norm(path);
        let st = self.state();
        st.hits
            .iter()
            .filter(|((_, p), _)| p == path)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests whose path starts with `prefix` (leading `/` optional), any method.
    pub(crate) fn hits_under(&self, prefix: &str) -> usize {
        let prefix = norm(prefix);
        let st = self.state();
        st.requests
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .count()
    }

    /// Every request so far.
    pub(crate) fn total_hits(&self) -> usize {
        self.state().requests.len()
    }

    /// Body bytes handed to connections.
    pub(crate) fn bytes_sent(&self) -> u64 {
        self.inner.bytes_sent.load(Ordering::Relaxed)
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// Requests of `path` (leading `/` optional), in order.
    pub(crate) fn requests_for(&self, path: &str) -> Vec<RecordedRequest> {
        let path = norm(path);
        let st = self.state();
        st.requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub(crate) fn reset_counters(&self) {
        let mut st = self.state();
        st.requests.clear();
        st.hits.clear();
        self.inner.bytes_sent.store(0, Ordering::Relaxed);
    }
}

/// Paths of the files of a release.
pub(crate) fn release_paths(group: &str, artifact: &str, version: &str) -> ReleasePaths {
    let artifact_dir = format!("{}/{artifact}/", group_path(group));
    let dir = format!("{artifact_dir}{version}/");
    ReleasePaths {
        pom: format!("{dir}{artifact}-{version}.pom"),
        jar: format!("{dir}{artifact}-{version}.jar"),
        sources: format!("{dir}{artifact}-{version}-sources.jar"),
        metadata: format!("{artifact_dir}maven-metadata.xml"),
        artifact_dir,
        dir,
    }
}

/// An HTML listing of the children of `dir` (`""` is the root), if it has any.
fn listing_html(st: &State, dir: &str) -> Option<Bytes> {
    let children: BTreeSet<String> = st
        .files
        .keys()
        .filter_map(|k| k.strip_prefix(dir))
        .map(|rest| match rest.split_once('/') {
            Some((d, _)) => format!("{d}/"),
            None => rest.to_owned(),
        })
        .collect();
    if children.is_empty() {
        return None;
    }
    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<title>Central Repository: {dir}</title>\n</head>\n<body>\n<header><h1>{dir}</h1></header>\n<hr/>\n<main>\n<pre id=\"contents\">\n<a href=\"../\">../</a>\n"
    );
    for child in children {
        html.push_str(&format!(
            "<a href=\"{child}\" title=\"{child}\">{child}</a>\n"
        ));
    }
    html.push_str("</pre>\n</main>\n<hr/>\n</body>\n</html>\n");
    Some(html.into())
}

// ---- request handling --------------------------------------------------------------------

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn empty() -> Body {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn set(resp: &mut Response<Body>, name: impl header::IntoHeaderName, value: &str) {
    let value = HeaderValue::from_str(value).expect("header value");
    resp.headers_mut().insert(name, value);
}

/// A text/plain response; HEAD gets the headers only.
fn text_response(status: StatusCode, text: &str, head: bool) -> Response<Body> {
    let body = if head { empty() } else { full(text.to_owned()) };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    set(&mut resp, header::CONTENT_TYPE, "text/plain");
    set(&mut resp, header::CONTENT_LENGTH, &text.len().to_string());
    resp
}

fn status_response(status: u16, head: bool) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("injected fault");
    let mut resp = text_response(status, &format!("{reason}\n"), head);
    if status == StatusCode::TOO_MANY_REQUESTS {
        set(&mut resp, header::RETRY_AFTER, "1");
    }
    resp
}

/// Percent-decoding for lookups (`%2B` → `+` and the like).
fn percent_decode_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().any(|v| {
        v.to_str().unwrap_or("").split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
    })
}

/// RFC 9110 §13.2.2: If-None-Match decides when present, else If-Modified-Since.
fn not_modified(headers: &HeaderMap, entry: &Entry) -> bool {
    if headers.contains_key(header::IF_NONE_MATCH) {
        return etag_matches(headers, &entry.etag);
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    since.is_some_and(|since| entry.last_modified <= since)
}

enum RangeSpec {
    Full,
    Partial(usize, usize),
    Unsatisfiable,
}

/// Single `bytes=` range (inclusive end); multi-range or malformed → full body.
fn parse_range(value: Option<&str>, len: usize) -> RangeSpec {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeSpec::Full;
    };
    let Some((a, b)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return RangeSpec::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.parse::<usize>(), b.parse::<usize>()) {
        (Ok(start), Ok(end)) if start <= end => Some((start, end.min(len.saturating_sub(1)))),
        (Ok(start), Err(_)) if b.is_empty() => Some((start, len.saturating_sub(1))),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => {
            Some((len.saturating_sub(n), len.wrapping_sub(1)))
        }
        _ => return RangeSpec::Full,
    };
    match parsed {
        Some((start, end)) if start < len => RangeSpec::Partial(start, end),
        _ => RangeSpec::Unsatisfiable,
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, io::Error> {
        let raw = norm(req.uri().path()).to_owned();
        let method = req.method().clone();
        let head = method == Method::HEAD;
        let (fault, found, listing) = {
            let mut st = self.state();
            *st.hits
                .entry((method.as_str().to_owned(), raw.clone()))
                .or_default() += 1;
            st.requests.push(RecordedRequest {
                method: method.as_str().to_owned(),
                path: raw.clone(),
                query: req.uri().query().map(str::to_owned),
                headers: req.headers().clone(),
            });
            if method != Method::GET && !head {
                drop(st);
                let mut resp = text_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed (read-only fake)\n",
                    false,
                );
                set(&mut resp, header::ALLOW, "GET, HEAD");
                return Ok(resp);
            }
            let fault = st.take_fault(&raw);
            let path = percent_decode_path(&raw);
            if path.is_empty() || path.ends_with('/') {
                (fault, None, Some(listing_html(&st, &path)))
            } else {
                (fault, st.files.get(&path).cloned(), None)
            }
        };
        match fault {
            Fault::Status(code) => return Ok(status_response(code, head)),
            Fault::Reset => return Err(io::Error::other("fake_maven: injected reset")),
            _ => {}
        }
        if let Some(listing) = listing {
            let Some(html) = listing else {
                return Ok(text_response(StatusCode::NOT_FOUND, "Not Found\n", head));
            };
            let mut resp = self.content(&req, html, fault);
            set(&mut resp, header::CONTENT_TYPE, "text/html");
            return Ok(resp);
        }
        let Some(entry) = found else {
            return Ok(text_response(StatusCode::NOT_FOUND, "Not Found\n", head));
        };
        let mut resp = if fault == Fault::None && not_modified(req.headers(), &entry) {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            let mut r = self.content(&req, entry.bytes.clone(), fault);
            if r.status() != StatusCode::RANGE_NOT_SATISFIABLE {
                set(&mut r, header::CONTENT_TYPE, &entry.content_type);
            }
            r
        };
        set(&mut resp, header::ETAG, &entry.etag);
        set(
            &mut resp,
            header::LAST_MODIFIED,
            &http_date(entry.last_modified),
        );
        if let Some(sums) = &entry.headers {
            set(&mut resp, "x-checksum-sha1", &sums.sha1);
            set(&mut resp, "x-checksum-md5", &sums.md5);
        }
        Ok(resp)
    }

    /// Range, HEAD and body faults for a 200/206 response (no Content-Type).
    fn content(
        self: &Arc<Self>,
        req: &Request<Incoming>,
        data: Bytes,
        fault: Fault,
    ) -> Response<Body> {
        let total = data.len();
        let range = req
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok());
        let range = parse_range(range, total);
        let (status, mut data) = match range {
            RangeSpec::Full => (StatusCode::OK, data),
            RangeSpec::Partial(a, b) => (StatusCode::PARTIAL_CONTENT, data.slice(a..=b)),
            RangeSpec::Unsatisfiable => {
                let mut resp = Response::new(empty());
                *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                set(&mut resp, header::CONTENT_LENGTH, "0");
                set(
                    &mut resp,
                    header::CONTENT_RANGE,
                    &format!("bytes */{total}"),
                );
                return resp;
            }
        };
        if fault == Fault::Corrupt {
            data = data.iter().map(|b| !b).collect::<Vec<u8>>().into();
        }
        let len = data.len();
        let body = if req.method() == Method::HEAD {
            empty()
        } else {
            self.drip(data, fault)
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        set(&mut resp, header::CONTENT_LENGTH, &len.to_string());
        set(&mut resp, header::ACCEPT_RANGES, "bytes");
        if let RangeSpec::Partial(a, b) = range {
            let value = format!("bytes {a}-{b}/{total}");
            set(&mut resp, header::CONTENT_RANGE, &value);
        }
        resp
    }

    /// Streamed body in `CHUNK` frames, applying the body faults.
    fn drip(self: &Arc<Self>, data: Bytes, fault: Fault) -> Body {
        body_faults::drip(
            data,
            fault.body_fault(),
            CHUNK,
            "fake_maven",
            Arc::clone(&self.pause),
            Arc::clone(&self.bytes_sent),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_vectors() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn http_dates_round_trip() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(http_date(CLOCK_START), "Mon, 01 Jan 2024 00:00:00 GMT");
        assert_eq!(maven_timestamp(CLOCK_START), "20240101000000");
        for t in [0, CLOCK_START, CLOCK_START + 86_399, 4_102_444_800] {
            assert_eq!(parse_http_date(&http_date(t)), Some(t));
        }
    }

    #[test]
    fn layout_paths_and_generators() {
        let p = release_paths("org.example", "lib", "1.0");
        assert_eq!(p.jar, "org/example/lib/1.0/lib-1.0.jar");
        assert_eq!(p.sources, "org/example/lib/1.0/lib-1.0-sources.jar");
        assert_eq!(p.metadata, "org/example/lib/maven-metadata.xml");
        let j = jar_bytes("g", "a", "1", 100);
        assert_eq!(j.len(), 100);
        assert_eq!(&j[..4], b"PK\x03\x04");
        assert_eq!(j, jar_bytes("g", "a", "1", 100));
        let xml =
            artifact_metadata_xml("g", "a", &["1.0", "1.1", "2.0-SNAPSHOT"], "20240101000000");
        assert!(xml.contains("<latest>2.0-SNAPSHOT</latest>"));
        assert!(xml.contains("<release>1.1</release>"));
        let snap = snapshot_metadata_xml("g", "a", "1.0-SNAPSHOT", "20240101.123456", 3);
        assert!(snap.contains("<value>1.0-20240101.123456-3</value>"));
    }
}
