//! In-process fake npm registry ("upstream") for integration tests.
//!
//! Serves full and abbreviated ("corgi") packuments with strong per-representation ETags,
//! real (deterministic) npm tarballs with matching `dist.integrity` / `dist.shasum`, the
//! bulk-audit endpoint, and can inject faults (status codes, resets, truncation, corrupted
//! bodies, slow/paused/stalled bodies). Every request is recorded so tests can assert what
//! the proxy sent upstream. [`universe`] describes a 112-package dependency graph that a
//! real `npm install` resolves deterministically.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha512};
use tokio::net::TcpListener;

use super::body_faults::{self, BodyFault, Pause};
use super::http_server::{self, Listening, ServerHandle, bind, lock};

/// Media type of the abbreviated packument.
pub(crate) const CORGI: &str = "application/vnd.npm.install-v1+json";
/// The Accept header npm/pnpm/yarn v1 send for packuments.
pub(crate) const CORGI_ACCEPT: &str =
    "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
pub(crate) const AUDIT_PATH: &str = "/-/npm/v1/security/advisories/bulk";
/// Size of body frames for streamed content.
const CHUNK: usize = 64 * 1024;
/// mtime of every tar entry (the one `npm pack` uses: 1985-10-26T08:15:00Z).
const TAR_MTIME: u64 = 499_162_500;
/// 2020-01-01T00:00:00Z: `time.created` of every package; version n is published n days later.
const EPOCH: u64 = 1_577_836_800;
const DAY: u64 = 86_400;

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Failure injected into responses: tarballs via [`FakeNpm::set_fault`] /
/// [`FakeNpm::set_fault_for`], packuments via [`FakeNpm::set_packument_fault`] /
/// [`FakeNpm::set_packument_fault_for`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Fault {
    #[default]
    None,
    /// Answer with this status and `{"error": ..}` (429 adds `Retry-After: 1`).
    Status(u16),
    /// Close the connection without any response.
    Reset,
    /// Announce the full `Content-Length`, send only the first n bytes, then abort.
    Truncate(usize),
    /// Same length, every byte inverted; the packument still has the real integrity.
    WrongIntegrity,
    /// Send `chunk` bytes per frame, waiting `interval` between frames.
    SlowDrip { chunk: usize, interval: Duration },
    /// Send `bytes` bytes, then wait for [`FakeNpm::release_pause`] (only if `bytes < len`).
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

#[derive(Clone, Debug)]
pub(crate) struct RecordedRequest {
    pub(crate) method: String,
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

/// One `POST /-/npm/v1/security/advisories/bulk`, body exactly as received.
#[derive(Clone, Debug)]
pub(crate) struct AuditRequest {
    pub(crate) body: Bytes,
    pub(crate) content_encoding: Option<String>,
    pub(crate) headers: HeaderMap,
}

/// One version of a package. Build with [`VersionSpec::new`] and the chained helpers, or
/// with struct-update syntax.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VersionSpec {
    pub(crate) version: String,
    pub(crate) dependencies: Vec<(String, String)>,
    pub(crate) peer_dependencies: Vec<(String, String)>,
    /// Names in `peer_dependencies` marked `peerDependenciesMeta: {name: {optional: true}}`.
    pub(crate) optional_peers: Vec<String>,
    pub(crate) optional_dependencies: Vec<(String, String)>,
    /// (command, path inside the package, e.g. "bin/cli.js")
    pub(crate) bin: Option<(String, String)>,
    /// Legacy: `dist` has only `shasum`, no `integrity`.
    pub(crate) shasum_only: bool,
    /// `dist.tarball` file name is `legacy-<unscoped>-<v>.tgz` instead of `<unscoped>-<v>.tgz`.
    pub(crate) nonconventional_tarball: bool,
    /// Incompressible bytes in `package/data.bin`; the tarball grows by about this much.
    pub(crate) extra_bytes: usize,
}

impl VersionSpec {
    pub(crate) fn new(version: impl Into<String>) -> Self {
        Self {
            version: version.into(),
            ..Self::default()
        }
    }

    pub(crate) fn dep(mut self, name: &str, range: &str) -> Self {
        self.dependencies.push((name.to_owned(), range.to_owned()));
        self
    }

    pub(crate) fn peer(mut self, name: &str, range: &str) -> Self {
        self.peer_dependencies
            .push((name.to_owned(), range.to_owned()));
        self
    }

    /// Peer dependency marked optional in `peerDependenciesMeta`.
    pub(crate) fn optional_peer(mut self, name: &str, range: &str) -> Self {
        self.optional_peers.push(name.to_owned());
        self.peer(name, range)
    }

    pub(crate) fn optional_dep(mut self, name: &str, range: &str) -> Self {
        self.optional_dependencies
            .push((name.to_owned(), range.to_owned()));
        self
    }

    pub(crate) fn with_bin(mut self, command: &str, path: &str) -> Self {
        self.bin = Some((command.to_owned(), path.to_owned()));
        self
    }

    pub(crate) fn legacy_shasum_only(mut self) -> Self {
        self.shasum_only = true;
        self
    }

    pub(crate) fn nonconventional(mut self) -> Self {
        self.nonconventional_tarball = true;
        self
    }

    pub(crate) fn padded(mut self, extra_bytes: usize) -> Self {
        self.extra_bytes = extra_bytes;
        self
    }

    fn is_prerelease(&self) -> bool {
        self.version.split('+').next().unwrap_or("").contains('-')
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PackageSpec {
    /// "@scope/x" or "x"
    pub(crate) name: String,
    /// In publish order (publish times increase along the list).
    pub(crate) versions: Vec<VersionSpec>,
    /// Defaults to `latest` = the last non-prerelease version (else the last version).
    pub(crate) dist_tags: Vec<(String, String)>,
}

impl PackageSpec {
    pub(crate) fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    pub(crate) fn version(mut self, v: VersionSpec) -> Self {
        self.versions.push(v);
        self
    }

    pub(crate) fn tag(mut self, tag: &str, version: &str) -> Self {
        self.dist_tags.push((tag.to_owned(), version.to_owned()));
        self
    }
}

/// Result of [`FakeNpm::add_big_package`].
#[derive(Clone, Debug)]
pub(crate) struct BigPackage {
    pub(crate) versions: Vec<String>,
    /// Exact size of the full (pretty) document.
    pub(crate) full_bytes: usize,
    pub(crate) abbreviated_bytes: usize,
}

// ---- tarballs ----------------------------------------------------------------------------

/// The scope-less part of a package name: `@acme/core` → `core`.
pub(crate) fn unscoped(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// File name (after `/-/`) of a version's tarball.
pub(crate) fn tarball_file(name: &str, v: &VersionSpec) -> String {
    if v.nonconventional_tarball {
        format!("legacy-{}-{}.tgz", unscoped(name), v.version)
    } else {
        format!("{}-{}.tgz", unscoped(name), v.version)
    }
}

/// `dist.integrity` form of a byte string: `sha512-<base64>`.
pub(crate) fn sri_sha512(bytes: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(Sha512::digest(bytes));
    format!("sha512-{b64}")
}

/// `dist.shasum` form: hex sha1.
pub(crate) fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
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

fn deps_object(deps: &[(String, String)]) -> Value {
    Value::Object(
        deps.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The `package.json` inside the tarball (as an author would write it).
fn package_json(name: &str, v: &VersionSpec) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert("version".into(), json!(v.version));
    m.insert(
        "description".into(),
        json!(format!("Fixture package {name}")),
    );
    m.insert("main".into(), json!("index.js"));
    m.insert("license".into(), json!("MIT"));
    m.insert("dependencies".into(), deps_object(&v.dependencies));
    insert_relations(&mut m, v);
    m.insert("engines".into(), json!({ "node": ">=14" }));
    Value::Object(m)
}

/// peer/optional dependencies and bin, each only when present.
fn insert_relations(m: &mut Map<String, Value>, v: &VersionSpec) {
    if !v.optional_dependencies.is_empty() {
        let deps = deps_object(&v.optional_dependencies);
        m.insert("optionalDependencies".into(), deps);
    }
    if !v.peer_dependencies.is_empty() {
        m.insert("peerDependencies".into(), deps_object(&v.peer_dependencies));
    }
    if !v.optional_peers.is_empty() {
        let meta: Map<String, Value> = v
            .optional_peers
            .iter()
            .map(|p| (p.clone(), json!({ "optional": true })))
            .collect();
        m.insert("peerDependenciesMeta".into(), Value::Object(meta));
    }
    if let Some((cmd, path)) = &v.bin {
        m.insert("bin".into(), json!({ cmd: path }));
    }
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert!(text.len() == digits, "tar field overflow");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// One ustar entry (header + data padded to 512).
fn tar_entry(out: &mut Vec<u8>, path: &str, mode: u64, data: &[u8]) {
    let mut h = [0u8; 512];
    let (prefix, name) = if path.len() <= 100 {
        ("", path)
    } else {
        let cut = path[..path.len().min(155)]
            .rfind('/')
            .expect("tar path split");
        (&path[..cut], &path[cut + 1..])
    };
    assert!(
        name.len() <= 100 && prefix.len() <= 155,
        "tar path too long"
    );
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], mode);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], data.len() as u64);
    octal(&mut h[136..148], TAR_MTIME);
    h[148..156].fill(b' ');
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

/// gzip with "stored" deflate blocks, header mtime 0: byte-for-byte deterministic.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let blocks = data.len().div_ceil(0xFFFF).max(1);
    let mut out = Vec::with_capacity(data.len() + blocks * 5 + 18);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    let mut chunks = data.chunks(0xFFFF).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// The `.tgz` of one version: `package/package.json`, `package/index.js`, the bin file
/// (mode 0755) and `package/data.bin` when padded. Deterministic bytes.
pub(crate) fn npm_tarball(name: &str, v: &VersionSpec) -> Vec<u8> {
    let mut tar = Vec::with_capacity(4096 + v.extra_bytes);
    let manifest = serde_json::to_vec_pretty(&package_json(name, v)).expect("json");
    tar_entry(&mut tar, "package/package.json", 0o644, &manifest);
    let index = format!(
        "'use strict';\nmodule.exports = {{ name: {}, version: {} }};\n",
        json!(name),
        json!(v.version)
    );
    tar_entry(&mut tar, "package/index.js", 0o644, index.as_bytes());
    if let Some((_, path)) = &v.bin {
        let script = format!(
            "#!/usr/bin/env node\n'use strict';\nconsole.log({});\n",
            json!(format!("{name}@{}", v.version))
        );
        let path = format!("package/{}", path.trim_start_matches("./"));
        tar_entry(&mut tar, &path, 0o755, script.as_bytes());
    }
    if v.extra_bytes > 0 {
        let seed = u64::from(crc32fast::hash(format!("{name}@{}", v.version).as_bytes()));
        let data = pseudo_random_bytes(v.extra_bytes, seed);
        tar_entry(&mut tar, "package/data.bin", 0o644, &data);
    }
    tar.resize(tar.len() + 1024, 0);
    gzip_stored(&tar)
}

// ---- content model -----------------------------------------------------------------------

struct VersionEntry {
    spec: VersionSpec,
    tarball: Bytes,
    integrity: String,
    shasum: String,
    file: String,
    time: u64,
}

impl VersionEntry {
    fn build(name: &str, spec: VersionSpec, time: u64) -> Self {
        let tarball = npm_tarball(name, &spec);
        Self {
            integrity: sri_sha512(&tarball),
            shasum: sha1_hex(&tarball),
            file: tarball_file(name, &spec),
            tarball: Bytes::from(tarball),
            spec,
            time,
        }
    }
}

struct Rendered {
    full: Bytes,
    full_etag: String,
    abbreviated: Bytes,
    abbreviated_etag: String,
}

/// Filler text in the full document of a big package: spliced in after serialisation, as
/// serde_json escapes long strings slowly in debug builds.
#[derive(Clone, Copy)]
struct BigPadding {
    readme: usize,
    per_version: usize,
}

/// Placeholders (JSON strings without escapes) for the filler of big packages.
const README_MARK: &str = "@@fake-npm-readme@@";
const PAD_MARK: &str = "@@fake-npm-version-readme@@";

struct Package {
    name: String,
    versions: Vec<VersionEntry>,
    dist_tags: BTreeMap<String, String>,
    created: u64,
    modified: u64,
    revision: u64,
    readme: String,
    /// Filler sizes of a big package (see [`FakeNpm::add_big_package`]).
    big: Option<BigPadding>,
    rendered: Option<Arc<Rendered>>,
}

impl Package {
    fn from_spec(spec: PackageSpec) -> Self {
        let name = spec.name;
        let versions: Vec<VersionEntry> = spec
            .versions
            .into_iter()
            .enumerate()
            .map(|(i, v)| VersionEntry::build(&name, v, EPOCH + (i as u64 + 1) * DAY))
            .collect();
        let mut dist_tags: BTreeMap<String, String> = spec.dist_tags.into_iter().collect();
        if !dist_tags.contains_key("latest")
            && let Some(latest) = versions
                .iter()
                .rev()
                .find(|v| !v.spec.is_prerelease())
                .or(versions.last())
        {
            dist_tags.insert("latest".into(), latest.spec.version.clone());
        }
        let modified = versions.last().map_or(EPOCH, |v| v.time);
        let readme = format!(
            "# {name}\n\nFixture package served by the fake npm registry.\n\n```js\nrequire('{name}')\n```\n"
        );
        Self {
            name,
            versions,
            dist_tags,
            created: EPOCH,
            modified,
            revision: 1,
            readme,
            big: None,
            rendered: None,
        }
    }

    fn changed(&mut self, modified: u64) {
        self.modified = self.modified.max(modified);
        self.revision += 1;
        self.rendered = None;
    }

    fn version(&self, version: &str) -> Option<&VersionEntry> {
        self.versions.iter().find(|v| v.spec.version == version)
    }

    fn dist(&self, v: &VersionEntry, base: &str, full: bool) -> Value {
        let mut dist = Map::new();
        if !v.spec.shasum_only {
            dist.insert("integrity".into(), json!(v.integrity));
        }
        dist.insert("shasum".into(), json!(v.shasum));
        dist.insert(
            "tarball".into(),
            json!(format!("{base}{}/-/{}", self.name, v.file)),
        );
        if full {
            let files = 2 + usize::from(v.spec.bin.is_some()) + usize::from(v.spec.extra_bytes > 0);
            dist.insert("fileCount".into(), json!(files));
            dist.insert("unpackedSize".into(), json!(v.tarball.len()));
        }
        Value::Object(dist)
    }

    /// Registry view of a version: optional deps are listed in `dependencies` too.
    fn version_doc(&self, v: &VersionEntry, base: &str, full: bool) -> Value {
        let name = &self.name;
        let spec = &v.spec;
        let mut m = Map::new();
        m.insert("name".into(), json!(name));
        m.insert("version".into(), json!(spec.version));
        let mut deps = spec.dependencies.clone();
        deps.extend(spec.optional_dependencies.iter().cloned());
        m.insert("dependencies".into(), deps_object(&deps));
        insert_relations(&mut m, spec);
        m.insert("engines".into(), json!({ "node": ">=14" }));
        m.insert("dist".into(), self.dist(v, base, full));
        m.insert("_hasShrinkwrap".into(), json!(false));
        if full {
            m.insert(
                "description".into(),
                json!(format!("Fixture package {name}")),
            );
            m.insert("main".into(), json!("index.js"));
            m.insert("license".into(), json!("MIT"));
            m.insert("_id".into(), json!(format!("{name}@{}", spec.version)));
            let git_head = hex::encode(&Sha256::digest(format!("{name}@{}", spec.version))[..20]);
            m.insert("gitHead".into(), json!(git_head));
            m.insert("_nodeVersion".into(), json!("20.11.1"));
            m.insert("_npmVersion".into(), json!("10.2.4"));
            let user = json!({ "name": "fixture", "email": "fixture@example.com" });
            m.insert("_npmUser".into(), user.clone());
            m.insert("maintainers".into(), json!([user]));
            m.insert("directories".into(), json!({}));
            if self.big.is_some() {
                m.insert("readme".into(), json!(PAD_MARK));
            }
        }
        Value::Object(m)
    }

    fn render(&self, base: &str) -> Rendered {
        let (full, abbreviated) = self.render_parts(base);
        let full = match self.big {
            Some(big) => {
                let text = String::from_utf8(full).expect("utf-8");
                let pad = format!("\"{}\"", filler_text(big.per_version));
                let readme = format!("\"{}\"", filler_text(big.readme));
                let text = text.replace(&format!("\"{PAD_MARK}\""), &pad);
                text.replacen(&format!("\"{README_MARK}\""), &readme, 1)
                    .into_bytes()
            }
            None => full,
        };
        Rendered {
            full_etag: etag_of(&full),
            abbreviated_etag: etag_of(&abbreviated),
            full: Bytes::from(full),
            abbreviated: Bytes::from(abbreviated),
        }
    }

    /// (full document with filler placeholders, abbreviated document).
    fn render_parts(&self, base: &str) -> (Vec<u8>, Vec<u8>) {
        let mut full_versions = Map::new();
        let mut abbreviated_versions = Map::new();
        let mut time = Map::new();
        time.insert("created".into(), json!(iso8601(self.created)));
        time.insert("modified".into(), json!(iso8601(self.modified)));
        for v in &self.versions {
            let key = v.spec.version.clone();
            full_versions.insert(key.clone(), self.version_doc(v, base, true));
            abbreviated_versions.insert(key.clone(), self.version_doc(v, base, false));
            time.insert(key, json!(iso8601(v.time)));
        }
        let rev = &hex::encode(Sha256::digest(format!("{}:{}", self.name, self.revision)))[..32];
        let full = json!({
            "_id": self.name,
            "_rev": format!("{}-{rev}", self.revision),
            "name": self.name,
            "description": format!("Fixture package {}", self.name),
            "dist-tags": self.dist_tags,
            "versions": full_versions,
            "time": time,
            "maintainers": [{ "name": "fixture", "email": "fixture@example.com" }],
            "readme": if self.big.is_some() { README_MARK } else { &self.readme },
            "readmeFilename": "README.md",
            "license": "MIT",
            "keywords": ["fixture"],
            "users": {},
        });
        let abbreviated = json!({
            "name": self.name,
            "modified": iso8601(self.modified),
            "dist-tags": self.dist_tags,
            "versions": abbreviated_versions,
        });
        let full = serde_json::to_vec_pretty(&full).expect("json");
        let abbreviated = serde_json::to_vec(&abbreviated).expect("json");
        (full, abbreviated)
    }
}

fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Sha256::digest(body)))
}

/// ASCII text of exactly `len` bytes that JSON-encodes without escapes.
fn filler_text(len: usize) -> String {
    const WORDS: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
        tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud \
        exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. ";
    let mut text = WORDS.repeat(len / WORDS.len() + 1);
    text.truncate(len);
    text
}

/// `2020-01-01T00:00:00.000Z` for seconds since the epoch.
fn iso8601(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.000Z")
}

// ---- server ------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct FaultRule {
    fault: Fault,
    remaining: Option<usize>,
}

/// `faults` keys for the global switches and the per-packument prefix.
const ALL_TARBALLS: &str = "*tarballs";
const ALL_PACKUMENTS: &str = "*packuments";
const PACKUMENT_KEY: &str = "packument:";

struct State {
    packages: HashMap<String, Package>,
    /// `"name@version"`, request path, `packument:<name>`, or a global key -> fault
    faults: HashMap<String, FaultRule>,
    cache_control: Option<String>,
    // counters
    requests: Vec<RecordedRequest>,
    hits: HashMap<(String, String), usize>,
    /// (name, "full" | "abbreviated") -> GETs
    packument_gets: HashMap<(String, &'static str), usize>,
    tarball_gets: HashMap<(String, String), usize>,
    audits: Vec<AuditRequest>,
}

impl State {
    /// First fault registered under one of `keys`, consuming one use of a counted fault.
    fn take_fault(&mut self, keys: &[&str]) -> Fault {
        let Some(key) = keys.iter().find(|k| self.faults.contains_key(**k)) else {
            return Fault::None;
        };
        let key = (*key).to_owned();
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

    fn package_mut(&mut self, name: &str) -> &mut Package {
        self.packages
            .get_mut(name)
            .unwrap_or_else(|| panic!("fake_npm: unknown package {name}"))
    }

    fn rendered(&mut self, name: &str, base: &str) -> Option<Arc<Rendered>> {
        let pkg = self.packages.get_mut(name)?;
        if pkg.rendered.is_none() {
            pkg.rendered = Some(Arc::new(pkg.render(base)));
        }
        pkg.rendered.clone()
    }
}

struct Inner {
    state: Mutex<State>,
    /// `http://127.0.0.1:PORT/`
    base_url: String,
    bytes_sent: Arc<AtomicU64>,
    pause: Arc<Pause>,
}

pub(crate) struct FakeNpm {
    inner: Arc<Inner>,
    listening: Listening,
}

impl Drop for FakeNpm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_server(listener: TcpListener, inner: Arc<Inner>) -> ServerHandle {
    http_server::spawn(listener, move |req| Arc::clone(&inner).handle(req))
}

impl FakeNpm {
    /// Start on `127.0.0.1:<ephemeral>`.
    pub(crate) async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Start with empty state on `addr` (e.g. the address of a stopped instance).
    pub(crate) async fn start_on(addr: SocketAddr) -> Self {
        let listener = bind("fake_npm", addr).await;
        let addr = listener.local_addr().expect("local_addr");
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                packages: HashMap::new(),
                faults: HashMap::new(),
                cache_control: Some("public, max-age=300".into()),
                requests: Vec::new(),
                hits: HashMap::new(),
                packument_gets: HashMap::new(),
                tarball_gets: HashMap::new(),
                audits: Vec::new(),
            }),
            base_url: format!("http://{addr}/"),
            bytes_sent: Arc::new(AtomicU64::new(0)),
            pause: Arc::default(),
        });
        let served = Arc::clone(&inner);
        let listening = Listening::serve("fake_npm", listener, move |l| {
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

    /// Registry base URL `http://127.0.0.1:PORT/` (with the trailing slash).
    pub(crate) fn url(&self) -> String {
        self.inner.base_url.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    // ---- content -------------------------------------------------------------------------

    /// Add (or replace) a package; builds every version's tarball.
    pub(crate) fn add_package(&self, spec: PackageSpec) {
        let pkg = Package::from_spec(spec);
        self.state().packages.insert(pkg.name.clone(), pkg);
    }

    pub(crate) fn add_universe(&self, u: &Universe) {
        for p in &u.packages {
            self.add_package(p.clone());
        }
    }

    pub(crate) fn remove_package(&self, name: &str) {
        self.state().packages.remove(name);
    }

    /// Publish a new version one day after the last change: `latest` moves to it (as
    /// `npm publish` does), `time.modified` and both ETags change.
    pub(crate) fn publish_version(&self, name: &str, v: VersionSpec) {
        let mut st = self.state();
        let pkg = st.package_mut(name);
        assert!(
            pkg.version(&v.version).is_none(),
            "fake_npm: {name}@{} already published",
            v.version
        );
        let time = pkg.modified + DAY;
        let entry = VersionEntry::build(name, v, time);
        pkg.dist_tags
            .insert("latest".into(), entry.spec.version.clone());
        pkg.versions.push(entry);
        pkg.changed(time);
    }

    /// Point a dist-tag at a version (`time.modified` moves by a minute).
    pub(crate) fn set_dist_tag(&self, name: &str, tag: &str, version: &str) {
        let mut st = self.state();
        let pkg = st.package_mut(name);
        pkg.dist_tags.insert(tag.to_owned(), version.to_owned());
        let t = pkg.modified + 60;
        pkg.changed(t);
    }

    /// A package whose FULL document is exactly `target_bytes` long (if that exceeds its
    /// skeleton): one version per 20 kB of target (≤ 1000), each with a per-version `readme`,
    /// plus a long top-level `readme` (about half the target). Tarballs are tiny.
    pub(crate) fn add_big_package(&self, name: &str, target_bytes: usize) -> BigPackage {
        let n = (target_bytes / 20_000).clamp(1, 1000);
        let versions: Vec<String> = (0..n)
            .map(|i| format!("1.{}.{}", i / 100, i % 100))
            .collect();
        let spec = PackageSpec {
            name: name.to_owned(),
            versions: versions.iter().map(VersionSpec::new).collect(),
            dist_tags: Vec::new(),
        };
        let mut pkg = Package::from_spec(spec);
        pkg.big = Some(BigPadding {
            readme: 0,
            per_version: 0,
        });
        let base = self.url();
        let (skeleton, _) = pkg.render_parts(&base);
        let skeleton = skeleton.len() - n * PAD_MARK.len() - README_MARK.len();
        let rest = target_bytes.saturating_sub(skeleton);
        let per_version = rest / 2 / n;
        pkg.big = Some(BigPadding {
            readme: rest - per_version * n,
            per_version,
        });
        let rendered = pkg.render(&base);
        let info = BigPackage {
            versions,
            full_bytes: rendered.full.len(),
            abbreviated_bytes: rendered.abbreviated.len(),
        };
        pkg.rendered = Some(Arc::new(rendered));
        self.state().packages.insert(name.to_owned(), pkg);
        info
    }

    /// Current packument body (full = pretty JSON, else abbreviated) and its ETag.
    pub(crate) fn packument(&self, name: &str, full: bool) -> Option<(Bytes, String)> {
        let r = self.state().rendered(name, &self.inner.base_url)?;
        Some(if full {
            (r.full.clone(), r.full_etag.clone())
        } else {
            (r.abbreviated.clone(), r.abbreviated_etag.clone())
        })
    }

    pub(crate) fn versions(&self, name: &str) -> Vec<String> {
        let st = self.state();
        let pkg = st.packages.get(name);
        pkg.map(|p| p.versions.iter().map(|v| v.spec.version.clone()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn package_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.state().packages.keys().cloned().collect();
        names.sort();
        names
    }

    pub(crate) fn tarball(&self, name: &str, version: &str) -> Option<Bytes> {
        let st = self.state();
        let v = st.packages.get(name)?.version(version)?;
        Some(v.tarball.clone())
    }

    /// `sha512-…` of the tarball (also for `shasum_only` versions, whose packument lacks it).
    pub(crate) fn integrity(&self, name: &str, version: &str) -> Option<String> {
        let st = self.state();
        Some(st.packages.get(name)?.version(version)?.integrity.clone())
    }

    pub(crate) fn shasum(&self, name: &str, version: &str) -> Option<String> {
        let st = self.state();
        Some(st.packages.get(name)?.version(version)?.shasum.clone())
    }

    /// Request path of the tarball as advertised in `dist.tarball` (`/@s/n/-/n-1.0.0.tgz`).
    pub(crate) fn tarball_path(&self, name: &str, version: &str) -> Option<String> {
        let st = self.state();
        let v = st.packages.get(name)?.version(version)?;
        Some(format!("/{name}/-/{}", v.file))
    }

    /// Absolute `dist.tarball` URL.
    pub(crate) fn tarball_url(&self, name: &str, version: &str) -> Option<String> {
        let path = self.tarball_path(name, version)?;
        Some(format!("{}{}", self.inner.base_url, &path[1..]))
    }

    // ---- behaviour switches --------------------------------------------------------------

    /// Fault for every tarball request without a keyed fault; `None` clears.
    pub(crate) fn set_fault(&self, fault: Fault) {
        self.put_fault(ALL_TARBALLS, fault, None);
    }

    /// Fault for every packument request without a keyed fault; `None` clears.
    pub(crate) fn set_packument_fault(&self, fault: Fault) {
        self.put_fault(ALL_PACKUMENTS, fault, None);
    }

    /// Fault keyed by `"name@version"` (that tarball) or an exact request path (tarball,
    /// packument spelling or the audit endpoint). Keyed faults win over global ones.
    pub(crate) fn set_fault_for(&self, key: &str, fault: Fault) {
        self.put_fault(key, fault, None);
    }

    /// Like [`Self::set_fault_for`] but only for the next `times` matching requests.
    pub(crate) fn set_fault_for_n(&self, key: &str, fault: Fault, times: usize) {
        self.put_fault(key, fault, Some(times));
    }

    /// Fault for every packument request of `name` (any spelling/representation).
    pub(crate) fn set_packument_fault_for(&self, name: &str, fault: Fault) {
        self.put_fault(&format!("{PACKUMENT_KEY}{name}"), fault, None);
    }

    pub(crate) fn set_packument_fault_for_n(&self, name: &str, fault: Fault, times: usize) {
        self.put_fault(&format!("{PACKUMENT_KEY}{name}"), fault, Some(times));
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

    /// `Cache-Control` of packument responses (default `public, max-age=300`); `None` omits it.
    pub(crate) fn set_packument_cache_control(&self, value: Option<&str>) {
        self.state().cache_control = value.map(str::to_owned);
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

    /// Requests for `method` + raw `path` (without query), any outcome.
    pub(crate) fn hits(&self, method: &str, path: &str) -> usize {
        let key = (method.to_owned(), path.to_owned());
        self.state().hits.get(&key).copied().unwrap_or(0)
    }

    /// Packument GETs of `name` (any spelling, representation and outcome).
    pub(crate) fn packument_gets(&self, name: &str) -> usize {
        self.packument_gets_repr(name, "full") + self.packument_gets_repr(name, "abbreviated")
    }

    /// Packument GETs of `name` that asked for `"full"` or `"abbreviated"`.
    pub(crate) fn packument_gets_repr(&self, name: &str, repr: &str) -> usize {
        let st = self.state();
        let found = st
            .packument_gets
            .iter()
            .find(|((n, r), _)| n == name && *r == repr);
        found.map_or(0, |(_, count)| *count)
    }

    /// Tarball GETs of `name@version` (any spelling and outcome, faulted ones included).
    pub(crate) fn tarball_gets(&self, name: &str, version: &str) -> usize {
        let key = (name.to_owned(), version.to_owned());
        self.state().tarball_gets.get(&key).copied().unwrap_or(0)
    }

    /// Tarball GETs of all versions of all packages.
    pub(crate) fn total_tarball_gets(&self) -> usize {
        self.state().tarball_gets.values().sum()
    }

    pub(crate) fn total_requests(&self) -> usize {
        self.state().requests.len()
    }

    /// Body bytes (packuments and tarballs) handed to connections.
    pub(crate) fn bytes_sent(&self) -> u64 {
        self.inner.bytes_sent.load(Ordering::Relaxed)
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    pub(crate) fn audit_requests(&self) -> Vec<AuditRequest> {
        self.state().audits.clone()
    }

    pub(crate) fn reset_counters(&self) {
        let mut st = self.state();
        st.requests.clear();
        st.hits.clear();
        st.packument_gets.clear();
        st.tarball_gets.clear();
        st.audits.clear();
        self.inner.bytes_sent.store(0, Ordering::Relaxed);
    }
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

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(full(serde_json::to_vec(body).expect("json")));
    *resp.status_mut() = status;
    set(&mut resp, header::CONTENT_TYPE, "application/json");
    resp
}

fn not_found() -> Response<Body> {
    json_response(StatusCode::NOT_FOUND, &json!({ "error": "Not found" }))
}

fn status_response(status: u16) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("injected fault");
    let mut resp = json_response(status, &json!({ "error": reason }));
    if status == StatusCode::TOO_MANY_REQUESTS {
        set(&mut resp, header::RETRY_AFTER, "1");
    }
    resp
}

fn set(resp: &mut Response<Body>, name: impl header::IntoHeaderName, value: &str) {
    let value = HeaderValue::from_str(value).expect("header value");
    resp.headers_mut().insert(name, value);
}

/// Percent-decoding for paths (`+` stays `+`: versions carry build metadata).
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

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Packument(String),
    Version(String, String),
    Tarball(String, String),
    Ping,
    Audit,
    NotFound,
}

/// `/<name>`, `/@scope%2fname`, `/@scope%2Fname`, `/@scope/name` (+ `/-/<file>` or
/// `/<version>`).
fn route(path: &str) -> Route {
    if path == AUDIT_PATH {
        return Route::Audit;
    }
    if path == "/-/ping" {
        return Route::Ping;
    }
    let decoded = percent_decode_path(path);
    let segs: Vec<&str> = decoded.trim_start_matches('/').split('/').collect();
    let (name, rest) = match segs.as_slice() {
        [scope, name, rest @ ..] if scope.starts_with('@') && scope.len() > 1 => {
            (format!("{scope}/{name}"), rest)
        }
        [name, rest @ ..] if !name.starts_with('@') => ((*name).to_owned(), rest),
        _ => return Route::NotFound,
    };
    if name.is_empty() || name.starts_with('-') || name.ends_with('/') {
        return Route::NotFound;
    }
    match rest {
        [] | [""] => Route::Packument(name),
        ["-", file] if !file.is_empty() => Route::Tarball(name, (*file).to_owned()),
        [version] => Route::Version(name, (*version).to_owned()),
        _ => Route::NotFound,
    }
}

/// Whether `Accept` prefers the abbreviated document.
fn wants_abbreviated(headers: &HeaderMap) -> bool {
    let mut corgi: Option<f32> = None;
    let mut other = 0.0_f32;
    for value in headers.get_all(header::ACCEPT) {
        for item in value.to_str().unwrap_or("").split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                CORGI => corgi = Some(corgi.unwrap_or(0.0).max(q)),
                "application/json" | "application/*" | "*/*" => other = other.max(q),
                _ => {}
            }
        }
    }
    corgi.is_some_and(|c| c > 0.0 && c >= other)
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().any(|v| {
        v.to_str().unwrap_or("").split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
    })
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
        let path = req.uri().path().to_owned();
        {
            let mut st = self.state();
            let method = req.method().as_str().to_owned();
            *st.hits.entry((method.clone(), path.clone())).or_default() += 1;
            st.requests.push(RecordedRequest {
                method,
                path: path.clone(),
                query: req.uri().query().map(str::to_owned),
                headers: req.headers().clone(),
            });
        }
        let route = route(&path);
        if route == Route::Audit {
            return self.audit(req).await;
        }
        let (get, head) = (req.method() == Method::GET, req.method() == Method::HEAD);
        if !get && !head {
            let body = json!({ "error": "method not allowed (read-only fake)" });
            return Ok(json_response(StatusCode::METHOD_NOT_ALLOWED, &body));
        }
        match route {
            Route::Packument(name) => self.packument(&req, &name),
            Route::Tarball(name, file) => self.tarball(&req, &name, &file),
            Route::Version(name, version) => Ok(self.version_manifest(&name, &version)),
            Route::Ping => Ok(json_response(StatusCode::OK, &json!({}))),
            Route::Audit | Route::NotFound => Ok(not_found()),
        }
    }

    async fn audit(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, io::Error> {
        let fault = self.state().take_fault(&[AUDIT_PATH]);
        let headers = req.headers().clone();
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_bytes();
        let content_encoding = headers
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("").to_owned());
        self.state().audits.push(AuditRequest {
            body,
            content_encoding,
            headers,
        });
        match fault {
            Fault::Status(code) => Ok(status_response(code)),
            Fault::Reset => Err(io::Error::other("fake_npm: injected reset")),
            _ => Ok(json_response(StatusCode::OK, &json!({}))),
        }
    }

    fn version_manifest(&self, name: &str, version: &str) -> Response<Body> {
        let mut st = self.state();
        let Some(pkg) = st.packages.get_mut(name) else {
            return not_found();
        };
        let version = pkg.dist_tags.get(version).map_or(version, String::as_str);
        match pkg.version(version) {
            Some(v) => json_response(StatusCode::OK, &pkg.version_doc(v, &self.base_url, true)),
            None => not_found(),
        }
    }

    fn packument(
        self: &Arc<Self>,
        req: &Request<Incoming>,
        name: &str,
    ) -> Result<Response<Body>, io::Error> {
        let abbreviated = wants_abbreviated(req.headers());
        let mut st = self.state();
        if req.method() == Method::GET {
            let repr = if abbreviated { "abbreviated" } else { "full" };
            *st.packument_gets
                .entry((name.to_owned(), repr))
                .or_default() += 1;
        }
        let key = format!("{PACKUMENT_KEY}{name}");
        let fault = st.take_fault(&[req.uri().path(), &key, ALL_PACKUMENTS]);
        let rendered = st.rendered(name, &self.base_url);
        let cache_control = st.cache_control.clone();
        drop(st);
        match fault {
            Fault::Status(code) => return Ok(status_response(code)),
            Fault::Reset => return Err(io::Error::other("fake_npm: injected reset")),
            _ => {}
        }
        let Some(rendered) = rendered else {
            return Ok(not_found());
        };
        let (body, etag, content_type) = if abbreviated {
            (&rendered.abbreviated, &rendered.abbreviated_etag, CORGI)
        } else {
            (&rendered.full, &rendered.full_etag, "application/json")
        };
        let mut resp = if fault == Fault::None && etag_matches(req.headers(), etag) {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            let mut r = self.content(req, body.clone(), fault, false);
            set(&mut r, header::CONTENT_TYPE, content_type);
            r
        };
        set(&mut resp, header::ETAG, etag);
        set(&mut resp, header::VARY, "Accept");
        if let Some(cc) = cache_control {
            set(&mut resp, header::CACHE_CONTROL, &cc);
        }
        Ok(resp)
    }

    fn tarball(
        self: &Arc<Self>,
        req: &Request<Incoming>,
        name: &str,
        file: &str,
    ) -> Result<Response<Body>, io::Error> {
        let mut st = self.state();
        let found = st.packages.get(name).and_then(|p| {
            let v = p.versions.iter().find(|v| v.file == file)?;
            Some((v.spec.version.clone(), v.tarball.clone(), v.shasum.clone()))
        });
        let id = found
            .as_ref()
            .map_or(String::new(), |(v, _, _)| format!("{name}@{v}"));
        let fault = st.take_fault(&[req.uri().path(), &id, ALL_TARBALLS]);
        if let (Some((version, _, _)), &Method::GET) = (&found, req.method()) {
            *st.tarball_gets
                .entry((name.to_owned(), version.clone()))
                .or_default() += 1;
        }
        drop(st);
        match fault {
            Fault::Status(code) => return Ok(status_response(code)),
            Fault::Reset => return Err(io::Error::other("fake_npm: injected reset")),
            _ => {}
        }
        let Some((_, bytes, shasum)) = found else {
            return Ok(not_found());
        };
        let mut resp = self.content(req, bytes, fault, true);
        if resp.status().is_success() {
            set(&mut resp, header::CONTENT_TYPE, "application/octet-stream");
            set(&mut resp, header::ETAG, &format!("\"{shasum}\""));
            set(
                &mut resp,
                header::CACHE_CONTROL,
                "public, immutable, max-age=31557600",
            );
        }
        Ok(resp)
    }

    /// Range, HEAD and body faults for a 200/206 response (no Content-Type).
    fn content(
        self: &Arc<Self>,
        req: &Request<Incoming>,
        data: Bytes,
        fault: Fault,
        ranges: bool,
    ) -> Response<Body> {
        let total = data.len();
        let range = req
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok());
        let range = if ranges {
            parse_range(range, total)
        } else {
            RangeSpec::Full
        };
        let (status, mut data) = match range {
            RangeSpec::Full => (StatusCode::OK, data),
            RangeSpec::Partial(a, b) => (StatusCode::PARTIAL_CONTENT, data.slice(a..=b)),
            RangeSpec::Unsatisfiable => {
                let mut resp = Response::new(empty());
                *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                set(
                    &mut resp,
                    header::CONTENT_RANGE,
                    &format!("bytes */{total}"),
                );
                return resp;
            }
        };
        if fault == Fault::WrongIntegrity {
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
        if ranges {
            set(&mut resp, header::ACCEPT_RANGES, "bytes");
        }
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
            "fake_npm",
            Arc::clone(&self.pause),
            Arc::clone(&self.bytes_sent),
        )
    }
}

// ---- the test-project universe -----------------------------------------------------------

/// A deterministic npm world plus the root project that installs it.
#[derive(Clone, Debug)]
pub(crate) struct Universe {
    pub(crate) packages: Vec<PackageSpec>,
    pub(crate) root_dependencies: Vec<(String, String)>,
    /// Every `(name, version)` a correct `npm install` of [`Self::package_json`] puts into
    /// `node_modules` (some names twice: nested copies), sorted.
    pub(crate) expected_installed: Vec<(String, String)>,
    /// Commands linked into `node_modules/.bin`.
    pub(crate) bins: Vec<String>,
}

impl Universe {
    /// `package.json` of the root project.
    pub(crate) fn package_json(&self) -> String {
        let doc = json!({
            "name": "fixture-app",
            "version": "1.0.0",
            "private": true,
            "dependencies": deps_object(&self.root_dependencies),
        });
        let mut text = serde_json::to_string_pretty(&doc).expect("json");
        text.push('\n');
        text
    }

    pub(crate) fn package(&self, name: &str) -> Option<&PackageSpec> {
        self.packages.iter().find(|p| p.name == name)
    }

    /// Number of distinct tarballs a cold install downloads.
    pub(crate) fn expected_tarballs(&self) -> usize {
        self.expected_installed.len()
    }
}

#[derive(Default)]
struct UniverseBuilder {
    packages: Vec<PackageSpec>,
    root: Vec<(String, String)>,
    expected: Vec<(String, String)>,
}

impl UniverseBuilder {
    /// Add a package; `installed` lists the versions npm ends up installing.
    fn add(&mut self, spec: PackageSpec, installed: &[&str]) {
        for v in installed {
            assert!(
                spec.versions.iter().any(|s| s.version == *v),
                "{}@{v} not in universe",
                spec.name
            );
            self.expected.push((spec.name.clone(), (*v).to_owned()));
        }
        self.packages.push(spec);
    }

    /// Single-version package, installed.
    fn single(&mut self, name: &str, v: VersionSpec) {
        let version = v.version.clone();
        self.add(PackageSpec::new(name).version(v), &[&version]);
    }

    fn root(&mut self, name: &str, range: &str) {
        self.root.push((name.to_owned(), range.to_owned()));
    }
}

fn util_name(i: usize) -> String {
    format!("util-{i:02}")
}

/// The test-project universe: 112 packages (47 scoped under `@acme`, `@data`, `@ui`,
/// `@tools`), chains of depth 7 (`chain*`) and 11 (`@data/schema-*`), prereleases selected
/// by exact specs (`2.0.0-rc.1`, `1.0.0-beta.2`), build metadata (`build-meta@1.2.3+build.7`,
/// selected by the range `~1.2.3`: npm cannot match build metadata exactly), ranges that pick non-latest versions (`@acme/core`,
/// `util-05`, `util-11`, `shared-dep`, `@tools/lint-core`, `@tools/fmt`), a nested copy
/// (`shared-dep@2.0.0` under `util-20`), satisfied peers (one optional), a satisfiable
/// optional dependency, a bin (`fixture-cli`), a sha1-only legacy package, a
/// non-conventional tarball name and a multi-frame (300 kB) tarball.
pub(crate) fn universe() -> Universe {
    let mut u = UniverseBuilder::default();

    // util-00..util-39: leaves (util-30.. depend on util-00..), "^1.0.0" everywhere.
    for i in 0..40 {
        let name = util_name(i);
        let mut v = VersionSpec::new(format!("1.{}.{}", i % 5, i % 3));
        if i >= 30 {
            v = v.dep(&util_name(i - 30), "^1.0.0");
        }
        match i {
            5 => {
                let spec = PackageSpec::new(&name)
                    .version(VersionSpec::new("1.0.0"))
                    .version(VersionSpec::new("1.1.0"))
                    .version(VersionSpec::new("2.0.0"));
                u.add(spec, &["1.1.0"]);
            }
            11 => {
                let spec = PackageSpec::new(&name)
                    .version(VersionSpec::new("0.9.0"))
                    .version(VersionSpec::new("1.0.0"))
                    .version(VersionSpec::new("1.0.1-beta.0"))
                    .tag("latest", "1.0.0")
                    .tag("next", "1.0.1-beta.0");
                u.add(spec, &["1.0.0"]);
            }
            20 => u.single(&name, v.dep("shared-dep", "~2.0.0")),
            _ => u.single(&name, v),
        }
    }
    u.root(&util_name(38), "^1.0.0");
    u.root(&util_name(39), "^1.0.0");

    // Five chains of six levels (+ a leaf): root -> l0 -> l1 -> ... -> l5 -> leaf-k.
    let scopes = [Some("acme"), None, Some("data"), None, Some("ui")];
    let chain_name = |k: usize, l: usize| match scopes[k] {
        Some(scope) => format!("@{scope}/chain{k}-l{l}"),
        None => format!("chain{k}-l{l}"),
    };
    for (k, _) in scopes.iter().enumerate() {
        for l in 0..6 {
            let mut v =
                VersionSpec::new(format!("1.{l}.0")).dep(&util_name((k * 6 + l) % 30), "^1.0.0");
            v = if l < 5 {
                v.dep(&chain_name(k, l + 1), &format!("^1.{}.0", l + 1))
            } else {
                v.dep(&format!("leaf-{k}"), "^1.0.0")
            };
            if (k, l) == (1, 2) {
                v = v.dep("beta-lib", "^1.0.0-beta.1");
            }
            u.single(&chain_name(k, l), v);
        }
        u.single(&format!("leaf-{k}"), VersionSpec::new("1.0.0"));
        u.root(&chain_name(k, 0), "^1.0.0");
    }

    // @acme core + plugins with peers.
    let core = PackageSpec::new("@acme/core")
        .version(VersionSpec::new("1.0.0"))
        .version(VersionSpec::new("1.1.0"))
        .version(VersionSpec::new("1.2.0").dep("@acme/logger", "^0.2.0"))
        .version(VersionSpec::new("2.0.0"));
    u.add(core, &["1.2.0"]);
    u.root("@acme/core", "^1.0.0");
    u.single("@acme/logger", VersionSpec::new("0.2.1"));
    let utils = PackageSpec::new("@acme/utils")
        .version(VersionSpec::new("1.0.0"))
        .version(VersionSpec::new("1.0.1"));
    u.add(utils, &["1.0.1"]);
    let plugin_a = VersionSpec::new("1.0.0")
        .dep("@acme/utils", "^1.0.0")
        .peer("@acme/core", "^1.0.0");
    u.single("@acme/plugin-a", plugin_a);
    u.root("@acme/plugin-a", "^1.0.0");
    let plugin_b = VersionSpec::new("1.0.0")
        .peer("@acme/core", ">=1.1.0 <2.0.0")
        .optional_peer("@acme/utils", "^1.0.0");
    u.single("@acme/plugin-b", plugin_b);
    u.root("@acme/plugin-b", "^1.0.0");

    // @ui widgets.
    for i in 0..8 {
        let mut v = VersionSpec::new(format!("3.{i}.0"))
            .dep(&util_name(30 + i), "^1.0.0")
            .dep("@acme/utils", "^1.0.0");
        if i == 3 {
            v = v.dep("beta-lib", "1.0.0-beta.2");
        }
        let name = format!("@ui/widget-{i}");
        u.single(&name, v);
        u.root(&name, "^3.0.0");
    }

    // @data/schema-0 -> ... -> schema-9 -> @data/io.
    for i in 0..10 {
        let next = if i < 9 {
            (format!("@data/schema-{}", i + 1), "^2.0.0")
        } else {
            ("@data/io".to_owned(), "^0.1.0")
        };
        let v = VersionSpec::new(format!("2.{i}.0")).dep(&next.0, next.1);
        u.single(&format!("@data/schema-{i}"), v);
    }
    u.single(
        "@data/io",
        VersionSpec::new("0.1.3").dep(&util_name(0), "^1.0.0"),
    );
    u.root("@data/schema-0", "^2.0.0");

    // @tools: a CLI with a bin, and ranges that pick non-latest versions.
    let cli = VersionSpec::new("4.2.0")
        .with_bin("fixture-cli", "bin/cli.js")
        .dep("@tools/lint-core", "^0.3.0")
        .dep("@tools/fmt", "~1.1.0")
        .dep("@tools/config", "^3.0.0");
    u.single("@tools/cli", cli);
    u.root("@tools/cli", "^4.0.0");
    let lint = PackageSpec::new("@tools/lint-core")
        .version(VersionSpec::new("0.3.0"))
        .version(VersionSpec::new("0.3.4"))
        .version(VersionSpec::new("0.4.0"));
    u.add(lint, &["0.3.4"]);
    let fmt = PackageSpec::new("@tools/fmt")
        .version(VersionSpec::new("1.1.0"))
        .version(VersionSpec::new("1.1.2"))
        .version(VersionSpec::new("1.2.0"));
    u.add(fmt, &["1.1.2"]);
    u.single("@tools/config", VersionSpec::new("3.0.1"));
    let next_gen = PackageSpec::new("@tools/next-gen")
        .version(VersionSpec::new("1.0.0"))
        .version(VersionSpec::new("2.0.0-rc.1").dep(&util_name(1), "^1.0.0"))
        .tag("next", "2.0.0-rc.1");
    u.add(next_gen, &["2.0.0-rc.1"]);
    u.root("@tools/next-gen", "2.0.0-rc.1");

    // Prereleases only: latest defaults to the last one.
    let beta = PackageSpec::new("beta-lib")
        .version(VersionSpec::new("1.0.0-beta.1"))
        .version(VersionSpec::new("1.0.0-beta.2"));
    u.add(beta, &["1.0.0-beta.2"]);

    // Build metadata. npm cannot select it by an exact spec (npm-pick-manifest looks up
    // `semver.clean(wanted)`, which drops `+build.7`); a range that only it satisfies works.
    let build = PackageSpec::new("build-meta")
        .version(VersionSpec::new("1.2.2"))
        .version(VersionSpec::new("1.2.3+build.7"));
    u.add(build, &["1.2.3+build.7"]);
    u.root("build-meta", "~1.2.3");

    // shared-dep: ^1 -> 1.5.0 at the top, ~2.0.0 -> 2.0.0 nested under util-20.
    let shared = PackageSpec::new("shared-dep")
        .version(VersionSpec::new("1.0.0"))
        .version(VersionSpec::new("1.5.0"))
        .version(VersionSpec::new("2.0.0"))
        .version(VersionSpec::new("2.1.0"));
    u.add(shared, &["1.5.0", "2.0.0"]);
    u.root("shared-dep", "^1.0.0");

    // Optional dependency (satisfiable, no os/cpu constraints).
    u.single(
        "opt-host",
        VersionSpec::new("1.0.0").optional_dep("opt-native", "^1.0.0"),
    );
    u.single("opt-native", VersionSpec::new("1.3.0"));
    u.root("opt-host", "^1.0.0");

    // Legacy shapes and a tarball bigger than one frame.
    u.single(
        "legacy-sha1",
        VersionSpec::new("0.1.0").legacy_shasum_only(),
    );
    u.root("legacy-sha1", "^0.1.0");
    u.single("odd-tarball", VersionSpec::new("1.0.0").nonconventional());
    u.root("odd-tarball", "^1.0.0");
    u.single("big-asset", VersionSpec::new("1.0.0").padded(300_000));
    u.root("big-asset", "^1.0.0");

    u.expected.sort();
    Universe {
        packages: u.packages,
        root_dependencies: u.root,
        expected_installed: u.expected,
        bins: vec!["fixture-cli".to_owned()],
    }
}
