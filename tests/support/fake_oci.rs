//! In-process fake OCI registry ("upstream") for integration tests.
//!
//! Serves `/v2/`, manifests, blobs (with `Range`), tag lists and an optional Bearer-token
//! realm; can redirect blob GETs to a second "object storage" listener that rejects
//! `Authorization` like S3 does, and can inject faults (status codes, resets, truncation,
//! corrupted bodies, slow/paused/stalled bodies). Every request is recorded so tests can
//! assert what the proxy sent upstream.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;

use super::body_faults::{self, BodyFault, Pause};
use super::http_server::{self, Listening, ServerHandle, bind, lock};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const TOKEN_SERVICE: &str = "fake-registry";
/// Size of body frames for streamed content.
const CHUNK: usize = 64 * 1024;

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Failure injected into content responses (blob GET/HEAD; manifests via
/// [`FakeOci::set_fault_for`] / [`FakeOci::set_manifest_fault`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Fault {
    #[default]
    None,
    /// Answer with this status (429 adds `Retry-After: 7` and a `TOOMANYREQUESTS` body).
    Status(u16),
    /// Close the connection without any response.
    Reset,
    /// Announce the full `Content-Length`, send only the first n bytes, then abort.
    Truncate(usize),
    /// Same length, every byte inverted; `Docker-Content-Digest` still claims the real digest.
    WrongDigest,
    /// Send `chunk` bytes per frame, waiting `interval` between frames.
    SlowDrip { chunk: usize, interval: Duration },
    /// Send `bytes` bytes, then wait for [`FakeOci::release_pause`] (only if `bytes < len`).
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ImageRefs {
    pub(crate) manifest_digest: String,
    pub(crate) manifest_size: u64,
    pub(crate) config_digest: String,
    pub(crate) layer_digests: Vec<String>,
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Deterministic, incompressible bytes (xorshift64*); 64 MiB take well under a second.
pub(crate) fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
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

#[derive(Clone, Debug)]
struct FaultRule {
    fault: Fault,
    remaining: Option<usize>,
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, Bytes>,
    /// digest -> (media type, bytes)
    manifests: HashMap<String, (String, Bytes)>,
    /// repo -> manifest digests pushed to it
    repo_manifests: HashMap<String, BTreeSet<String>>,
    /// repo -> tag -> digest
    tags: HashMap<String, BTreeMap<String, String>>,
    /// digest, request path, `ALL_BLOBS` or `ALL_MANIFESTS` -> fault
    faults: HashMap<String, FaultRule>,
    ratelimit_headers: bool,
    /// `Some(credentials)` when token auth is on.
    token_auth: Option<Option<(String, String)>>,
    token_ttl: u64,
    /// token -> (repositories with pull scope, expiry)
    tokens: HashMap<String, (Vec<String>, Instant)>,
    storage_port: Option<u16>,
    // counters
    requests: Vec<RecordedRequest>,
    hits: HashMap<(String, String), usize>,
    blob_gets: HashMap<String, usize>,
    manifest_gets: HashMap<(String, String), usize>,
    manifest_heads: HashMap<(String, String), usize>,
    token_requests: usize,
    redirect_saw_auth: bool,
}

/// `faults` keys for the global switches.
const ALL_BLOBS: &str = "*blobs";
const ALL_MANIFESTS: &str = "*manifests";

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
}

struct Inner {
    state: Mutex<State>,
    base_url: String,
    bytes_sent: Arc<AtomicU64>,
    pause: Arc<Pause>,
}

#[derive(Clone, Copy)]
enum Role {
    Registry,
    Storage,
}

pub(crate) struct FakeOci {
    inner: Arc<Inner>,
    registry: Listening,
    /// 127.0.0.1 and (if available) [::1] listeners of the redirect target.
    storage: Mutex<Vec<ServerHandle>>,
}

impl Drop for FakeOci {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_server(listener: TcpListener, inner: Arc<Inner>, role: Role) -> ServerHandle {
    http_server::spawn(listener, move |req| {
        let inner = Arc::clone(&inner);
        async move { inner.handle(role, req) }
    })
}

impl FakeOci {
    /// Start on `127.0.0.1:<ephemeral>`.
    pub(crate) async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Start with empty state on `addr` (e.g. the address of a stopped instance).
    pub(crate) async fn start_on(addr: SocketAddr) -> Self {
        let listener = bind("fake_oci", addr).await;
        let addr = listener.local_addr().expect("local_addr");
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                token_ttl: 300,
                ..State::default()
            }),
            base_url: format!("http://{addr}"),
            bytes_sent: Arc::new(AtomicU64::new(0)),
            pause: Arc::default(),
        });
        let served = Arc::clone(&inner);
        let registry = Listening::serve("fake_oci", listener, move |l| {
            spawn_server(l, Arc::clone(&served), Role::Registry)
        });
        Self {
            inner,
            registry,
            storage: Mutex::new(Vec::new()),
        }
    }

    /// Close the listener(s) and abort all live connections. Content and counters survive.
    pub(crate) fn stop(&self) {
        self.registry.stop();
        lock(&self.storage).clear();
    }

    /// Listen again on the same address(es) after [`Self::stop`], keeping content and counters.
    pub(crate) async fn restart(&self) {
        self.stop();
        self.registry.restart().await;
        let storage_port = self.state().storage_port;
        if let Some(port) = storage_port {
            self.start_storage(port).await;
        }
    }

    async fn start_storage(&self, port: u16) -> u16 {
        let listener = bind("fake_oci", SocketAddr::from(([127, 0, 0, 1], port))).await;
        let port = listener.local_addr().expect("local_addr").port();
        let mut servers = vec![spawn_server(
            listener,
            Arc::clone(&self.inner),
            Role::Storage,
        )];
        // `localhost` may resolve to ::1 first on some hosts: listen there too if possible.
        if let Ok(v6) = TcpListener::bind((Ipv6Addr::LOCALHOST, port)).await {
            servers.push(spawn_server(v6, Arc::clone(&self.inner), Role::Storage));
        }
        *lock(&self.storage) = servers;
        self.state().storage_port = Some(port);
        port
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.registry.addr()
    }

    /// `http://127.0.0.1:PORT`
    pub(crate) fn url(&self) -> String {
        self.inner.base_url.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    // ---- content -------------------------------------------------------------------------

    pub(crate) fn add_blob(&self, bytes: Vec<u8>) -> String {
        let digest = sha256_digest(&bytes);
        self.state()
            .blobs
            .insert(digest.clone(), Bytes::from(bytes));
        digest
    }

    /// Store manifest bytes verbatim in `repo` (optionally tagged); returns its digest.
    pub(crate) fn add_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> String {
        let digest = sha256_digest(&bytes);
        let mut st = self.state();
        st.manifests
            .insert(digest.clone(), (media_type.to_owned(), Bytes::from(bytes)));
        st.repo_manifests
            .entry(repo.to_owned())
            .or_default()
            .insert(digest.clone());
        if let Some(tag) = tag {
            st.tags
                .entry(repo.to_owned())
                .or_default()
                .insert(tag.to_owned(), digest.clone());
        }
        digest
    }

    /// Point `repo:tag` at an already stored manifest.
    pub(crate) fn set_tag(&self, repo: &str, tag: &str, digest: &str) {
        let mut st = self.state();
        assert!(
            st.manifests.contains_key(digest),
            "unknown manifest {digest}"
        );
        st.repo_manifests
            .entry(repo.to_owned())
            .or_default()
            .insert(digest.to_owned());
        st.tags
            .entry(repo.to_owned())
            .or_default()
            .insert(tag.to_owned(), digest.to_owned());
    }

    pub(crate) fn remove_tag(&self, repo: &str, tag: &str) {
        if let Some(tags) = self.state().tags.get_mut(repo) {
            tags.remove(tag);
        }
    }

    /// linux/amd64 OCI image: config blob + layer blobs + manifest.
    pub(crate) fn image(&self, repo: &str, tag: Option<&str>, layers: &[Vec<u8>]) -> ImageRefs {
        self.image_for_platform(repo, tag, "linux/amd64", layers)
    }

    /// OCI image for `platform` ("os/arch" or "os/arch/variant").
    pub(crate) fn image_for_platform(
        &self,
        repo: &str,
        tag: Option<&str>,
        platform: &str,
        layers: &[Vec<u8>],
    ) -> ImageRefs {
        let (os, arch, _) = split_platform(platform);
        let layer_digests: Vec<String> = layers.iter().map(|l| self.add_blob(l.clone())).collect();
        let config = json!({
            "architecture": arch,
            "os": os,
            "config": { "Labels": { "fake.ref": format!("{repo}:{}", tag.unwrap_or("")) } },
            "rootfs": { "type": "layers", "diff_ids": layer_digests },
        });
        let config = serde_json::to_vec(&config).expect("json");
        let config_size = config.len();
        let config_digest = self.add_blob(config);
        let layer_descs: Vec<_> = layers
            .iter()
            .zip(&layer_digests)
            .map(|(l, d)| json!({ "mediaType": OCI_LAYER, "digest": d, "size": l.len() }))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size },
            "layers": layer_descs,
        });
        let manifest = serde_json::to_vec_pretty(&manifest).expect("json");
        let manifest_size = manifest.len() as u64;
        let manifest_digest = self.add_manifest(repo, tag, OCI_MANIFEST, manifest);
        ImageRefs {
            manifest_digest,
            manifest_size,
            config_digest,
            layer_digests,
        }
    }

    /// OCI index over `(digest, size, "os/arch[/variant]")` manifests; returns its digest.
    pub(crate) fn index(
        &self,
        repo: &str,
        tag: Option<&str>,
        manifests: &[(&str, u64, &str)],
    ) -> String {
        let descs: Vec<_> = manifests
            .iter()
            .map(|(digest, size, platform)| {
                let (os, arch, variant) = split_platform(platform);
                let mut p = json!({ "os": os, "architecture": arch });
                if let Some(v) = variant {
                    p["variant"] = json!(v);
                }
                json!({ "mediaType": OCI_MANIFEST, "digest": digest, "size": size, "platform": p })
            })
            .collect();
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs });
        let bytes = serde_json::to_vec_pretty(&index).expect("json");
        self.add_manifest(repo, tag, OCI_INDEX, bytes)
    }

    /// Two platform images (linux/amd64, linux/arm64) plus a tagged index over them.
    /// Returns (index digest, [amd64, arm64]).
    pub(crate) fn multi_arch_image(
        &self,
        repo: &str,
        tag: &str,
        layers: &[Vec<u8>],
    ) -> (String, [ImageRefs; 2]) {
        let amd = self.image_for_platform(repo, None, "linux/amd64", layers);
        let arm = self.image_for_platform(repo, None, "linux/arm64", layers);
        let index = self.index(
            repo,
            Some(tag),
            &[
                (&amd.manifest_digest, amd.manifest_size, "linux/amd64"),
                (&arm.manifest_digest, arm.manifest_size, "linux/arm64"),
            ],
        );
        (index, [amd, arm])
    }

    // ---- behaviour switches ----------------------------------------------------------------

    /// Fault for every blob request (not manifests) without a keyed fault; `None` clears.
    pub(crate) fn set_fault(&self, fault: Fault) {
        self.put_fault(ALL_BLOBS, fault, None);
    }

    /// Fault for every manifest request without a keyed fault; `None` clears.
    pub(crate) fn set_manifest_fault(&self, fault: Fault) {
        self.put_fault(ALL_MANIFESTS, fault, None);
    }

    /// Fault keyed by a digest (blob or manifest) or a request path (`/v2/r/manifests/tag`,
    /// `/v2/r/blobs/sha256:..`, `/data/sha256:..`). Keyed faults win over global ones.
    pub(crate) fn set_fault_for(&self, digest_or_path: &str, fault: Fault) {
        self.put_fault(digest_or_path, fault, None);
    }

    /// Like [`Self::set_fault_for`] but only for the next `times` matching requests.
    pub(crate) fn set_fault_for_n(&self, digest_or_path: &str, fault: Fault, times: usize) {
        self.put_fault(digest_or_path, fault, Some(times));
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

    pub(crate) fn set_ratelimit_headers(&self, on: bool) {
        self.state().ratelimit_headers = on;
    }

    /// Require Bearer tokens from `<url>/token`; with `Some((user, pass))` the token
    /// endpoint requires those Basic credentials.
    pub(crate) fn enable_token_auth(&self, user_pass: Option<(String, String)>) {
        self.state().token_auth = Some(user_pass);
    }

    pub(crate) fn disable_token_auth(&self) {
        self.state().token_auth = None;
    }

    /// `expires_in` of tokens issued from now on (default 300); expired tokens get 401
    /// `error="invalid_token"`.
    pub(crate) fn set_token_ttl(&self, secs: u64) {
        self.state().token_ttl = secs;
    }

    /// Invalidate every token issued so far (as if they had expired).
    pub(crate) fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    /// Start the "blob storage" listener; blob GETs then answer 307 to
    /// `http://localhost:PORT2/data/<digest>?sig=..`. Returns `http://localhost:PORT2`.
    pub(crate) async fn enable_blob_redirect(&self) -> String {
        let port = self.state().storage_port;
        let port = match port {
            Some(port) => port,
            None => self.start_storage(0).await,
        };
        format!("http://localhost:{port}")
    }

    // ---- observations ----------------------------------------------------------------------

    /// Requests for `method` + `path` (path without query), any outcome.
    pub(crate) fn hits(&self, method: &str, path: &str) -> usize {
        let key = (method.to_owned(), path.to_owned());
        self.state().hits.get(&key).copied().unwrap_or(0)
    }

    /// GETs of this blob that started a body (any repo, including redirected storage GETs).
    pub(crate) fn blob_gets(&self, digest: &str) -> usize {
        self.state().blob_gets.get(digest).copied().unwrap_or(0)
    }

    /// Authorized manifest GETs for `repo` + reference (tag or digest, as requested).
    pub(crate) fn manifest_gets(&self, repo: &str, reference: &str) -> usize {
        let key = (repo.to_owned(), reference.to_owned());
        self.state().manifest_gets.get(&key).copied().unwrap_or(0)
    }

    pub(crate) fn manifest_heads(&self, repo: &str, reference: &str) -> usize {
        let key = (repo.to_owned(), reference.to_owned());
        self.state().manifest_heads.get(&key).copied().unwrap_or(0)
    }

    pub(crate) fn total_requests(&self) -> usize {
        self.state().requests.len()
    }

    /// Content bytes (blob and manifest bodies) handed to the connection.
    pub(crate) fn bytes_sent(&self) -> u64 {
        self.inner.bytes_sent.load(Ordering::Relaxed)
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// All `Accept` header lines of the most recent request to `path` (empty if none).
    pub(crate) fn last_accept(&self, path: &str) -> Vec<String> {
        let st = self.state();
        let Some(req) = st.requests.iter().rev().find(|r| r.path == path) else {
            return Vec::new();
        };
        req.headers
            .get_all(header::ACCEPT)
            .iter()
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .collect()
    }

    pub(crate) fn token_requests(&self) -> usize {
        self.state().token_requests
    }

    /// Whether any request to the redirect target carried `Authorization`.
    pub(crate) fn redirect_target_saw_authorization(&self) -> bool {
        self.state().redirect_saw_auth
    }

    pub(crate) fn reset_counters(&self) {
        let mut st = self.state();
        st.requests.clear();
        st.hits.clear();
        st.blob_gets.clear();
        st.manifest_gets.clear();
        st.manifest_heads.clear();
        st.token_requests = 0;
        st.redirect_saw_auth = false;
        self.inner.bytes_sent.store(0, Ordering::Relaxed);
    }
}

fn split_platform(p: &str) -> (&str, &str, Option<&str>) {
    let mut it = p.splitn(3, '/');
    let os = it.next().unwrap_or("linux");
    (os, it.next().unwrap_or("amd64"), it.next())
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

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(serde_json::to_vec(body).expect("json")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn oci_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
    json_response(status, &body)
}

fn status_response(status: u16) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = match status.as_u16() {
        429 => "TOOMANYREQUESTS",
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => "NAME_UNKNOWN",
        _ => "UNAVAILABLE",
    };
    let mut resp = oci_error(status, code, "injected fault");
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
    }
    resp
}

fn set(resp: &mut Response<Body>, name: impl header::IntoHeaderName, value: &str) {
    let value = HeaderValue::from_str(value).expect("header value");
    resp.headers_mut().insert(name, value);
}

fn percent_decode(s: &str) -> String {
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
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// RFC 3339 UTC timestamp for seconds since the epoch.
fn rfc3339(secs: u64) -> String {
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
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
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

/// What a content response counts as in the hit counters.
enum Counted<'a> {
    Blob(&'a str),
    Manifest,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn handle(
        self: Arc<Self>,
        role: Role,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, io::Error> {
        {
            let mut st = self.state();
            let path = req.uri().path().to_owned();
            *st.hits
                .entry((req.method().as_str().to_owned(), path.clone()))
                .or_default() += 1;
            st.requests.push(RecordedRequest {
                method: req.method().as_str().to_owned(),
                path,
                query: req.uri().query().map(str::to_owned),
                headers: req.headers().clone(),
            });
        }
        let mut resp = match role {
            Role::Registry => self.registry(&req)?,
            Role::Storage => self.storage(&req)?,
        };
        if let Role::Registry = role {
            set(&mut resp, "docker-distribution-api-version", "registry/2.0");
        }
        Ok(resp)
    }

    fn registry(self: &Arc<Self>, req: &Request<Incoming>) -> Result<Response<Body>, io::Error> {
        let path = req.uri().path();
        if path == "/token" {
            return Ok(self.token(req));
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Ok(oci_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "read-only fake",
            ));
        }
        if path == "/v2/" || path == "/v2" {
            if let Some(resp) = self.deny(req, None) {
                return Ok(resp);
            }
            return Ok(json_response(StatusCode::OK, &json!({})));
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Ok(oci_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no route"));
        };
        let (name, kind, reference) = if let Some(name) = rest.strip_suffix("/tags/list") {
            (name, "tags", "")
        } else if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
            (name, "manifests", reference)
        } else if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
            (name, "blobs", digest)
        } else {
            return Ok(oci_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no route"));
        };
        if let Some(resp) = self.deny(req, Some(name)) {
            return Ok(resp);
        }
        match kind {
            "tags" => Ok(self.tags_list(req, name)),
            "manifests" => self.manifest(req, name, reference),
            _ => self.blob(req, reference),
        }
    }

    fn challenge(&self, repo: Option<&str>, error: Option<&str>) -> Response<Body> {
        let mut value = format!(
            "Bearer realm=\"{}/token\",service=\"{TOKEN_SERVICE}\"",
            self.base_url
        );
        if let Some(repo) = repo {
            value.push_str(&format!(",scope=\"repository:{repo}:pull\""));
        }
        if let Some(error) = error {
            value.push_str(&format!(",error=\"{error}\""));
        }
        let mut resp = oci_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        );
        set(&mut resp, header::WWW_AUTHENTICATE, &value);
        resp
    }

    /// Rejection response if token auth is on and the request lacks a valid token for
    /// `repo` (`None` = ping: any valid token will do).
    fn deny(&self, req: &Request<Incoming>, repo: Option<&str>) -> Option<Response<Body>> {
        let st = self.state();
        st.token_auth.as_ref()?;
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(token) = token else {
            return Some(self.challenge(repo, None));
        };
        match (st.tokens.get(token.trim()), repo) {
            (Some((_, expiry)), _) if Instant::now() >= *expiry => {
                Some(self.challenge(repo, Some("invalid_token")))
            }
            (None, _) => Some(self.challenge(repo, Some("invalid_token"))),
            (Some((repos, _)), Some(r)) if !repos.iter().any(|x| x == r) => {
                Some(self.challenge(repo, Some("insufficient_scope")))
            }
            _ => None,
        }
    }

    fn token(&self, req: &Request<Incoming>) -> Response<Body> {
        let mut st = self.state();
        st.token_requests += 1;
        if req.method() != Method::GET {
            return oci_error(StatusCode::NOT_FOUND, "UNSUPPORTED", "use GET");
        }
        if let Some(Some((user, pass))) = &st.token_auth {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            );
            let sent = req.headers().get(header::AUTHORIZATION);
            if sent.and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
                let mut resp =
                    oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "bad credentials");
                set(&mut resp, header::WWW_AUTHENTICATE, "Basic realm=\"fake\"");
                return resp;
            }
        }
        let repos: Vec<String> = query_pairs(req.uri().query())
            .into_iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| {
                v.split(' ')
                    .filter_map(|s| {
                        let (name, actions) = s.strip_prefix("repository:")?.rsplit_once(':')?;
                        actions
                            .split(',')
                            .any(|a| a == "pull")
                            .then(|| name.to_owned())
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let token = format!("fake-token-{}-{}", st.tokens.len() + 1, repos.join("+"));
        let expiry = Instant::now() + Duration::from_secs(st.token_ttl);
        st.tokens.insert(token.clone(), (repos, expiry));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let body = json!({
            "token": token,
            "access_token": token,
            "expires_in": st.token_ttl,
            "issued_at": rfc3339(now),
        });
        json_response(StatusCode::OK, &body)
    }

    fn tags_list(&self, req: &Request<Incoming>, name: &str) -> Response<Body> {
        let st = self.state();
        let Some(tags) = st.tags.get(name) else {
            return oci_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository unknown");
        };
        let q = query_pairs(req.uri().query());
        let param = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let n = param("n").and_then(|n| n.parse::<usize>().ok());
        let last = param("last").unwrap_or("");
        let after: Vec<&String> = tags.keys().filter(|t| t.as_str() > last).collect();
        let page: Vec<&String> = after
            .iter()
            .copied()
            .take(n.unwrap_or(usize::MAX))
            .collect();
        let mut resp = json_response(StatusCode::OK, &json!({ "name": name, "tags": page }));
        if let (Some(n), Some(last)) = (n, page.last())
            && page.len() < after.len()
        {
            let link = format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\"");
            set(&mut resp, header::LINK, &link);
        }
        resp
    }

    fn manifest(
        self: &Arc<Self>,
        req: &Request<Incoming>,
        name: &str,
        reference: &str,
    ) -> Result<Response<Body>, io::Error> {
        let mut st = self.state();
        let key = (name.to_owned(), reference.to_owned());
        if req.method() == Method::HEAD {
            *st.manifest_heads.entry(key).or_default() += 1;
        } else {
            *st.manifest_gets.entry(key).or_default() += 1;
        }
        let digest = if reference.contains(':') {
            let known = st.repo_manifests.get(name);
            known.and_then(|d| d.get(reference)).cloned()
        } else {
            st.tags.get(name).and_then(|t| t.get(reference)).cloned()
        };
        let found = digest.and_then(|d| st.manifests.get(&d).map(|m| (d, m.clone())));
        let fault_keys = [
            req.uri().path(),
            found.as_ref().map_or("", |f| f.0.as_str()),
            ALL_MANIFESTS,
        ];
        let fault = st.take_fault(&fault_keys);
        let ratelimit = st.ratelimit_headers;
        drop(st);
        let Some((digest, (media_type, bytes))) = found else {
            if let Fault::Status(_) | Fault::Reset = fault {
                return self.content(req, Bytes::new(), fault, Counted::Manifest, false);
            }
            let msg = "manifest unknown to fake registry";
            return Ok(oci_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", msg));
        };
        let etag = format!("\"{digest}\"");
        let inm = req.headers().get(header::IF_NONE_MATCH);
        let inm = inm.and_then(|v| v.to_str().ok()).unwrap_or("");
        let mut resp = if fault == Fault::None && (inm.contains(&digest)) {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            self.content(req, bytes, fault, Counted::Manifest, false)?
        };
        if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
            set(&mut resp, header::CONTENT_TYPE, &media_type);
            set(&mut resp, "docker-content-digest", &digest);
            set(&mut resp, header::ETAG, &etag);
        }
        if ratelimit {
            set(&mut resp, "ratelimit-limit", "100;w=21600");
            set(&mut resp, "ratelimit-remaining", "99;w=21600");
            set(&mut resp, "docker-ratelimit-source", "127.0.0.1");
        }
        Ok(resp)
    }

    fn lookup_blob(&self, digest: &str) -> Option<Bytes> {
        let st = self.state();
        let manifest = || st.manifests.get(digest).map(|(_, b)| b.clone());
        st.blobs.get(digest).cloned().or_else(manifest)
    }

    fn blob(
        self: &Arc<Self>,
        req: &Request<Incoming>,
        digest: &str,
    ) -> Result<Response<Body>, io::Error> {
        let Some(bytes) = self.lookup_blob(digest) else {
            let fault = self
                .state()
                .take_fault(&[req.uri().path(), digest, ALL_BLOBS]);
            if let Fault::Status(_) | Fault::Reset = fault {
                return self.content(req, Bytes::new(), fault, Counted::Blob(digest), true);
            }
            return Ok(oci_error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown",
            ));
        };
        let storage = self.state().storage_port;
        if let (Some(port), &Method::GET) = (storage, req.method()) {
            // Faults are applied by the storage host in redirect mode.
            let sig = &sha256_digest(format!("{digest}:secret").as_bytes())[7..23];
            let location =
                format!("http://localhost:{port}/data/{digest}?sig={sig}&expires=9999999999");
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            set(&mut resp, header::LOCATION, &location);
            return Ok(resp);
        }
        let fault = self
            .state()
            .take_fault(&[req.uri().path(), digest, ALL_BLOBS]);
        let mut resp = self.content(req, bytes, fault, Counted::Blob(digest), true)?;
        if resp.status().is_success() {
            set(&mut resp, header::CONTENT_TYPE, "application/octet-stream");
            set(&mut resp, "docker-content-digest", digest);
            set(&mut resp, header::ETAG, &format!("\"{digest}\""));
        }
        Ok(resp)
    }

    /// The redirect target: serves `/data/<digest>?sig=..`, rejects any `Authorization`.
    fn storage(self: &Arc<Self>, req: &Request<Incoming>) -> Result<Response<Body>, io::Error> {
        if req.headers().contains_key(header::AUTHORIZATION) {
            self.state().redirect_saw_auth = true;
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidArgument</Code>\
                <Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
                Signature query string parameter or the Authorization header should be specified\
                </Message></Error>";
            let mut resp = Response::new(full(body));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            set(&mut resp, header::CONTENT_TYPE, "application/xml");
            return Ok(resp);
        }
        let digest = req.uri().path().strip_prefix("/data/").unwrap_or("");
        let signed = query_pairs(req.uri().query())
            .iter()
            .any(|(k, _)| k == "sig");
        let bytes = self.lookup_blob(digest).filter(|_| signed);
        let Some(bytes) = bytes else {
            let mut resp = Response::new(full("<Error><Code>AccessDenied</Code></Error>"));
            *resp.status_mut() = StatusCode::FORBIDDEN;
            return Ok(resp);
        };
        let fault = self
            .state()
            .take_fault(&[req.uri().path(), digest, ALL_BLOBS]);
        let mut resp = self.content(req, bytes, fault, Counted::Blob(digest), true)?;
        if resp.status().is_success() {
            set(&mut resp, header::CONTENT_TYPE, "application/octet-stream");
            set(&mut resp, header::ETAG, &format!("\"{}\"", &digest[7..]));
        }
        Ok(resp)
    }

    /// Status/Reset faults, Range, HEAD, body faults and counting for a content response.
    fn content(
        self: &Arc<Self>,
        req: &Request<Incoming>,
        data: Bytes,
        fault: Fault,
        counted: Counted<'_>,
        ranges: bool,
    ) -> Result<Response<Body>, io::Error> {
        match fault {
            Fault::Status(code) => return Ok(status_response(code)),
            Fault::Reset => return Err(io::Error::other("fake_oci: injected reset")),
            _ => {}
        }
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
                return Ok(resp);
            }
        };
        if fault == Fault::WrongDigest {
            data = data.iter().map(|b| !b).collect::<Vec<u8>>().into();
        }
        let len = data.len();
        let body = if req.method() == Method::HEAD {
            empty()
        } else {
            if let Counted::Blob(digest) = counted {
                *self.state().blob_gets.entry(digest.to_owned()).or_default() += 1;
            }
            self.drip(data, fault)
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        set(&mut resp, header::CONTENT_LENGTH, &len.to_string());
        if ranges {
            set(&mut resp, header::ACCEPT_RANGES, "bytes");
        }
        if let RangeSpec::Partial(a, b) = range {
            set(
                &mut resp,
                header::CONTENT_RANGE,
                &format!("bytes {a}-{b}/{total}"),
            );
        }
        Ok(resp)
    }

    /// Streamed body in `CHUNK` frames, applying the body faults.
    fn drip(self: &Arc<Self>, data: Bytes, fault: Fault) -> Body {
        body_faults::drip(
            data,
            fault.body_fault(),
            CHUNK,
            "fake_oci",
            Arc::clone(&self.pause),
            Arc::clone(&self.bytes_sent),
        )
    }
}
