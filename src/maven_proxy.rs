//! Maven pull-through: one group of repositories behind `/maven/`.
//!
//! Policy (the facts come from the `maven` crate):
//!
//! - A file under a release version directory, and a timestamped SNAPSHOT file, is immutable:
//!   the members are asked in order, the first that has it wins, its bytes are verified while
//!   they stream against the member's checksum (`X-Checksum-*` header, else its `.sha1`, then
//!   `.sha512`, `.sha256` sidecar), pinned under the artifact's coordinates and served forever.
//!   A member that offers no checksum at all gets the configured `missing_checksum` policy.
//! - `maven-metadata.xml`, legacy `-SNAPSHOT` files and directory listings are mutable: every
//!   member's document is kept as a resolution (history kept) with its validators, revalidated
//!   after the TTL with a conditional request, and served stale when the members fail.
//!   Metadata found in several members is merged, as repository-manager groups do.
//! - Checksum sidecars describe the bytes served: for an immutable file the member's own
//!   sidecar (kept once fetched), or one computed from the pinned bytes when they were
//!   verified against a member's checksum; for a mutable document always computed from the
//!   document served, because a merged document has no upstream sidecar.
//! - A 404 is only ever the answer "no member has it", remembered for `not_found_ttl`; a
//!   member failing is a 502/504, never a 404 (Maven caches a 404 for a day).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use maven::{ChecksumAlgorithm, Kind, MetadataLevel, RepoPath};
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha512};
use tracing::warn;

use crate::body::{self, Body};
use crate::config::{MavenConfig, MavenUpstreamConfig, MissingChecksum};
use crate::error::{Error, Kind as ErrorKind};
use crate::fill::{Fills, Object, SingleFlight, Source};
use crate::metrics::Metrics;
use crate::oci_proxy::CacheOutcome;
use crate::serve::{self, ObjectHeaders};
use crate::store::{ContentHash, Event, Pin, PinEntry, Resolution, Store, Verified as PinVerified};
use crate::upstream;
use crate::verify::{Expect, Expected};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// A checksum sidecar is a line of hex; anything longer is not one.
const MAX_SIDECAR: usize = 4096;
/// Pinned files up to this size (POMs, sidecars, small jars) are kept in memory once read.
const SMALL_FILE: u64 = 256 * 1024;

/// The request as routed.
#[derive(Debug)]
pub struct MavenRequest {
    pub path: RepoPath,
    /// The path relative to the repository root, as sent (escapes kept), `/`-terminated for
    /// directories; empty for the root.
    pub rel: String,
}

impl MavenRequest {
    /// Parses the part of the request path after `/maven`.
    pub fn parse(rest: &str) -> Result<Self, Error> {
        if rest.is_empty() || rest == "/" {
            return Ok(Self {
                path: RepoPath {
                    segments: Vec::new(),
                    kind: Kind::Directory,
                },
                rel: String::new(),
            });
        }
        let path = maven::layout::parse(rest)?;
        let mut rel = path.segments.join("/");
        if path.kind == Kind::Directory {
            rel.push('/');
        }
        Ok(Self { path, rel })
    }
}

/// One member of the group.
struct Member {
    cfg: MavenUpstreamConfig,
    /// Identity encoding: files are hashed exactly as sent.
    client: reqwest::Client,
    /// Whether the member's last file came with `X-Checksum-*` headers: 0 unknown, 1 yes,
    /// 2 no. Of a member that sends none, the `.sha1` is asked for together with the file,
    /// which saves a round trip per cold file (a remote Nexus, a static file server).
    sends_checksums: std::sync::atomic::AtomicU8,
}

impl Member {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn url(&self, rel: &str) -> Result<reqwest::Url, Error> {
        reqwest::Url::parse(&format!("{}{rel}", self.cfg.url))
            .map_err(|e| Error::internal(format!("upstream URL for {rel}: {e}")))
    }

    /// Whether this member may be asked for a path whose groupId is one of `groups`
    /// (several when the path alone cannot say which directory is the groupId).
    fn serves(&self, groups: &[String]) -> bool {
        let any = |patterns: &[String]| {
            groups
                .iter()
                .any(|g| patterns.iter().any(|p| glob_match(p, g)))
        };
        if groups.is_empty() {
            return true;
        }
        !any(&self.cfg.exclude) && (self.cfg.include.is_empty() || any(&self.cfg.include))
    }

    async fn get(
        &self,
        rel: &str,
        headers: HeaderMap,
        metrics: &Metrics,
    ) -> Result<reqwest::Response, Error> {
        let url = self.url(rel)?;
        let mut req = self
            .client
            .get(url)
            .headers(headers)
            .header(header::ACCEPT_ENCODING, "identity");
        // reqwest drops Authorization when a redirect leaves the host.
        if let Some(c) = &self.cfg.credentials {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        upstream::send(self.name(), req, metrics).await
    }
}

/// What a member answered.
enum Answer {
    Found(reqwest::Response),
    /// 404 or 410: the member does not have it.
    Absent,
    Failed(Error),
}

async fn ask(m: &Member, rel: &str, headers: HeaderMap, metrics: &Metrics) -> Answer {
    match m.get(rel, headers, metrics).await {
        Err(e) => Answer::Failed(e),
        Ok(r) if r.status() == StatusCode::NOT_FOUND || r.status() == StatusCode::GONE => {
            Answer::Absent
        }
        Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_MODIFIED => {
            Answer::Found(r)
        }
        Ok(r) => Answer::Failed(member_error(m.name(), r.status(), r.headers())),
    }
}

/// A member's error status as the client sees it: never a 404, and never the member's
/// 401/403 (a client would send credentials meant for pinproxy, or give up on the build).
fn member_error(name: &str, status: StatusCode, headers: &HeaderMap) -> Error {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::upstream(
            ErrorKind::BadGateway,
            format!("{name}: upstream refused access ({status}); check its credentials"),
        ),
        s => upstream::status_error(name, s, headers, oci::ErrorCode::BlobUnknown),
    }
}

fn not_found(rel: &str) -> Error {
    Error::upstream(
        ErrorKind::NotFound(oci::ErrorCode::BlobUnknown),
        format!("{rel}: not found in any Maven upstream"),
    )
}

/// A mutable document as one member sent it.
#[derive(Debug, Clone)]
struct MemberDoc {
    member: String,
    bytes: Bytes,
    sha256: ContentHash,
    etag: Option<String>,
    last_modified: Option<String>,
    content_type: Option<String>,
    /// Kept from an earlier fetch because the member failed this time.
    stale: bool,
}

/// A mutable document as served: the member documents it was made of, its bytes and their
/// digests.
#[derive(Debug)]
struct Doc {
    bytes: Bytes,
    sha256: ContentHash,
    sha1: [u8; 20],
    md5: [u8; 16],
    sha512: [u8; 64],
    content_type: String,
    last_modified: Option<String>,
    confirmed: SystemTime,
    members: Vec<MemberDoc>,
}

impl Doc {
    fn new(
        bytes: Bytes,
        content_type: String,
        last_modified: Option<String>,
        confirmed: SystemTime,
        members: Vec<MemberDoc>,
    ) -> Self {
        Self {
            sha256: ContentHash::of(&bytes),
            sha1: Sha1::digest(&bytes).into(),
            md5: md5::Md5::digest(&bytes).into(),
            sha512: Sha512::digest(&bytes).into(),
            bytes,
            content_type,
            last_modified,
            confirmed,
            members,
        }
    }

    fn digest(&self, algorithm: ChecksumAlgorithm) -> Vec<u8> {
        match algorithm {
            ChecksumAlgorithm::Sha1 => self.sha1.to_vec(),
            ChecksumAlgorithm::Md5 => self.md5.to_vec(),
            ChecksumAlgorithm::Sha256 => self.sha256.as_bytes().to_vec(),
            ChecksumAlgorithm::Sha512 => self.sha512.to_vec(),
        }
    }

    fn weight(&self) -> usize {
        self.bytes.len() + self.members.iter().map(|m| m.bytes.len()).sum::<usize>() + 512
    }
}

pub struct MavenService {
    members: Vec<Arc<Member>>,
    cfg: MavenConfig,
    store: Arc<Store>,
    fills: Arc<Fills>,
    metrics: Arc<Metrics>,
    /// Paths no member has, until when.
    missing: moka::sync::Cache<String, Instant>,
    /// Pinned coordinates → their object and pin. Pins never change, so entries never go
    /// stale.
    pins: moka::sync::Cache<String, (Arc<Object>, Arc<PinEntry>)>,
    /// Bytes of small pinned files by content hash (immutable by construction).
    small: moka::sync::Cache<ContentHash, Bytes>,
    docs: moka::sync::Cache<String, Arc<Doc>>,
    refreshes: Arc<SingleFlight<Result<Arc<Doc>, Error>>>,
}

/// Everything a document refresh needs, owned, so it can run detached from the request.
#[derive(Clone)]
struct RefreshCtx {
    members: Vec<Arc<Member>>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    limit: u64,
}

impl MavenService {
    pub fn new(
        cfg: &MavenConfig,
        store: Arc<Store>,
        fills: Arc<Fills>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let members = cfg
            .upstreams
            .iter()
            .map(|u| {
                let client = upstream::build_client(&u.http)
                    .map_err(|e| format!("maven upstream {}: {e}", u.url))?;
                Ok(Arc::new(Member {
                    cfg: u.clone(),
                    client,
                    sends_checksums: std::sync::atomic::AtomicU8::new(0),
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            members,
            cfg: cfg.clone(),
            store,
            fills,
            metrics,
            missing: moka::sync::Cache::new(100_000),
            pins: moka::sync::Cache::new(200_000),
            small: moka::sync::Cache::builder()
                .weigher(|_, b: &Bytes| u32::try_from(b.len()).unwrap_or(u32::MAX))
                .max_capacity(64 << 20)
                .build(),
            docs: moka::sync::Cache::builder()
                .weigher(|_, d: &Arc<Doc>| u32::try_from(d.weight()).unwrap_or(u32::MAX))
                .max_capacity(128 << 20)
                .build(),
            refreshes: SingleFlight::new(),
        })
    }

    pub async fn handle(
        &self,
        req: MavenRequest,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, Error> {
        if method != Method::GET && method != Method::HEAD {
            return Err(Error::client(
                ErrorKind::Unsupported,
                "pinproxy is a read-only Maven repository: deploy to the upstream repository",
            ));
        }
        let head = method == Method::HEAD;
        if let Kind::Checksum { of, algorithm } = &req.path.kind {
            return self.sidecar(&req, of, *algorithm, headers, head).await;
        }
        match req.path.cacheability() {
            maven::Cacheability::Immutable => self.file(&req, headers, head).await,
            maven::Cacheability::Mutable => self.document(&req, headers, head).await,
        }
    }

    fn eligible(&self, path: &RepoPath) -> Vec<Arc<Member>> {
        let groups = group_candidates(path);
        self.members
            .iter()
            .filter(|m| m.serves(&groups))
            .cloned()
            .collect()
    }

    fn is_missing(&self, rel: &str) -> bool {
        match self.missing.get(rel) {
            Some(until) if until > Instant::now() => true,
            Some(_) => {
                self.missing.invalidate(rel);
                false
            }
            None => false,
        }
    }

    fn remember_missing(&self, rel: &str, ttl: Duration) {
        if !ttl.is_zero() {
            self.missing.insert(rel.to_owned(), Instant::now() + ttl);
        }
    }

    /// Fails with a 404 when the path is remembered missing, or no member may be asked.
    fn members_for(&self, req: &MavenRequest) -> Result<Vec<Arc<Member>>, Error> {
        if self.is_missing(&req.rel) {
            CacheOutcome::Hit.record();
            return Err(not_found(&req.rel));
        }
        let members = self.eligible(&req.path);
        if members.is_empty() {
            return Err(Error::client(
                ErrorKind::NotFound(oci::ErrorCode::BlobUnknown),
                format!(
                    "{}: no configured Maven upstream serves this groupId (include/exclude)",
                    req.rel
                ),
            ));
        }
        Ok(members)
    }

    // ---- immutable files ---------------------------------------------------------------

    async fn pinned(&self, coord: &str) -> Result<Option<(Arc<Object>, Arc<PinEntry>)>, Error> {
        if let Some(hit) = self.pins.get(coord) {
            return Ok(Some(hit));
        }
        let found = crate::fill::pinned(&self.store, coord)
            .await?
            .map(|(o, e)| (o, Arc::new(e)));
        if let Some(hit) = &found {
            self.pins.insert(coord.to_owned(), hit.clone());
        }
        Ok(found)
    }

    async fn serve_pinned(
        &self,
        obj: Arc<Object>,
        meta: &ObjectHeaders,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        if obj.size > SMALL_FILE {
            return serve::object(obj, meta, headers, head);
        }
        let bytes = match self.small.get(&obj.sha256) {
            Some(b) => b,
            None => {
                let b = read_file(obj.path.clone()).await?;
                if b.len() as u64 != obj.size {
                    return Err(Error::internal(format!(
                        "{}: {} bytes on disk, {} pinned",
                        obj.path.display(),
                        b.len(),
                        obj.size
                    )));
                }
                self.small.insert(obj.sha256, b.clone());
                b
            }
        };
        serve::object_bytes(bytes, meta, headers, head)
    }

    async fn file(
        &self,
        req: &MavenRequest,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        let coord = coordinate(&req.path.kind).ok_or_else(|| {
            Error::internal(format!("{}: immutable without coordinates", req.rel))
        })?;
        let content_type = content_type(&req.path);
        if let Some((obj, entry)) = self.pinned(&coord).await? {
            CacheOutcome::Hit.record();
            return self
                .serve_pinned(obj, &pinned_headers(content_type, &entry), headers, head)
                .await;
        }
        let members = self.members_for(req)?;
        let signature = matches!(req.path.kind, Kind::Signature { .. });
        let (fill, leader) = self.fills.get_or_start(&coord, || {
            fetch_file(FileFetch {
                members,
                rel: req.rel.clone(),
                coord: coord.clone(),
                content_type,
                signature,
                metrics: self.metrics.clone(),
            })
        });
        if leader {
            CacheOutcome::Miss.record();
        } else {
            CacheOutcome::Coalesced.record();
        }
        let meta = ObjectHeaders {
            content_type,
            etag: None,
            cache_control: Some(IMMUTABLE),
            extra: Vec::new(),
        };
        let served = serve::fill(&fill, &meta, headers, head).await;
        if let Err(e) = &served {
            if matches!(e.kind, ErrorKind::NotFound(_)) {
                self.remember_missing(&req.rel, self.cfg.not_found_ttl);
            }
        }
        served
    }

    // ---- checksum sidecars -------------------------------------------------------------

    async fn sidecar(
        &self,
        req: &MavenRequest,
        of: &Kind,
        algorithm: ChecksumAlgorithm,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        let target_rel = req
            .rel
            .strip_suffix(&format!(".{}", algorithm.as_str()))
            .ok_or_else(|| Error::internal("sidecar path without its extension"))?
            .to_owned();
        let target = MavenRequest {
            path: RepoPath {
                segments: req.path.segments.clone(),
                kind: of.clone(),
            },
            rel: target_rel,
        };
        if target.path.cacheability() == maven::Cacheability::Mutable {
            // Describes the document served, which may be a merge no upstream has a sidecar
            // for.
            let ttl = self.ttl(&target.path);
            let (doc, stale) = self.current_doc(&target, ttl).await?;
            let body = maven::checksum::render_sidecar(&doc.digest(algorithm));
            let mut resp = text_response(body, ttl, head);
            mark_stale(&mut resp, stale.as_ref());
            return Ok(resp);
        }
        let coord = coordinate(&req.path.kind)
            .ok_or_else(|| Error::internal(format!("{}: sidecar without coordinates", req.rel)))?;
        let target_coord = coordinate(of)
            .ok_or_else(|| Error::internal(format!("{}: target without coordinates", req.rel)))?;
        let target = self.pinned(&target_coord).await?;
        // The member's own sidecar, kept in the pin when the file was verified against it.
        if let Some(text) = target
            .as_ref()
            .and_then(|(_, e)| e.pin.digests.get(&sidecar_key(algorithm)))
        {
            CacheOutcome::Hit.record();
            let mut meta = sidecar_headers();
            meta.etag = Some(format!("sha256:{}", ContentHash::of(text.as_bytes())));
            return serve::object_bytes(Bytes::from(text.clone()), &meta, headers, head);
        }
        if let Some((obj, entry)) = self.pinned(&coord).await? {
            CacheOutcome::Hit.record();
            return self
                .serve_pinned(obj, &pinned_headers("text/plain", &entry), headers, head)
                .await;
        }
        let target_pin = target.as_ref().map(|(_, e)| e.clone());
        // A computed sidecar is true only for bytes that were verified (or when asked for).
        let computable = target.filter(|(_, e)| {
            e.pin.verified == PinVerified::Digest || self.cfg.synthesize_checksums
        });
        let fetched = self.fetch_sidecar(req, &coord, target_pin.as_deref(), algorithm);
        let served = match fetched {
            Ok(fill) => serve::fill(&fill, &sidecar_headers(), headers, head).await,
            Err(e) => Err(e),
        };
        match (served, computable) {
            (Ok(r), _) => Ok(r),
            (Err(e), Some((obj, entry))) if !matches!(e.origin, crate::error::Origin::Client) => {
                // The member has no sidecar (or cannot be reached): the bytes were verified
                // against one of its checksums, so one computed from them is true. SHA-512 is
                // not kept in the pin: it is hashed from the stored bytes when asked for.
                if matches!(e.kind, ErrorKind::NotFound(_)) {
                    self.remember_missing(&req.rel, self.cfg.not_found_ttl);
                }
                let digest = match pinned_digest(&entry, algorithm) {
                    Some(d) => d,
                    None => hash_file(obj.path.clone(), algorithm).await?,
                };
                CacheOutcome::Hit.record();
                let body = maven::checksum::render_sidecar(&digest);
                Ok(body::response(
                    StatusCode::OK,
                    "text/plain",
                    body.into_bytes(),
                    head,
                ))
            }
            (Err(e), _) => {
                if matches!(e.kind, ErrorKind::NotFound(_)) {
                    self.remember_missing(&req.rel, self.cfg.not_found_ttl);
                }
                Err(e)
            }
        }
    }

    /// Starts (or joins) the fetch of a member's own sidecar. A sidecar that contradicts the
    /// pinned target is refused: what pinproxy serves must describe the bytes it serves.
    fn fetch_sidecar(
        &self,
        req: &MavenRequest,
        coord: &str,
        target: Option<&PinEntry>,
        algorithm: ChecksumAlgorithm,
    ) -> Result<Arc<crate::fill::Fill>, Error> {
        let mut members = self.members_for(req)?;
        // The member the target came from first: its sidecar is the one that matches.
        if let Some(t) = target {
            members.sort_by_key(|m| m.name() != t.pin.upstream);
        }
        let expected = target.and_then(|t| pinned_digest(t, algorithm));
        let rel = req.rel.clone();
        let coord2 = coord.to_owned();
        let metrics = self.metrics.clone();
        let (fill, leader) = self.fills.get_or_start(coord, move || async move {
            let mut failure = None;
            for m in &members {
                let body = match fetch_small(m, &rel, &metrics).await {
                    Ok(Some(b)) => b,
                    Ok(None) => continue,
                    Err(e) => {
                        failure.get_or_insert(e);
                        continue;
                    }
                };
                let digest = maven::checksum::parse_sidecar(&body, algorithm).ok_or_else(|| {
                    Error::upstream(
                        ErrorKind::BadGateway,
                        format!(
                            "{}: {rel} is not a {} sidecar",
                            m.name(),
                            algorithm.as_str()
                        ),
                    )
                })?;
                if let Some(want) = &expected {
                    if &digest != want {
                        return Err(Error::upstream(
                            ErrorKind::BadGateway,
                            format!(
                                "{}: {rel} says {}, the pinned bytes are {}",
                                m.name(),
                                hex::encode(&digest),
                                hex::encode(want)
                            ),
                        ));
                    }
                }
                let checked = expected.is_some();
                return Ok(bytes_source(
                    m.name(),
                    body,
                    "text/plain",
                    coord2,
                    checked,
                    m.cfg.http.idle_timeout,
                ));
            }
            Err(failure.unwrap_or_else(|| not_found(&rel)))
        });
        if leader {
            CacheOutcome::Miss.record();
        } else {
            CacheOutcome::Coalesced.record();
        }
        Ok(fill)
    }

    // ---- mutable documents -------------------------------------------------------------

    fn ttl(&self, path: &RepoPath) -> Duration {
        match &path.kind {
            Kind::Metadata {
                level: MetadataLevel::SnapshotVersion,
            } => self.cfg.snapshot_ttl,
            Kind::Artifact(c) if c.is_snapshot() => self.cfg.snapshot_ttl,
            Kind::Checksum { of, .. } | Kind::Signature { of } => self.ttl(&RepoPath {
                segments: path.segments.clone(),
                kind: (**of).clone(),
            }),
            _ => self.cfg.metadata_ttl,
        }
    }

    async fn document(
        &self,
        req: &MavenRequest,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        let ttl = self.ttl(&req.path);
        let (doc, stale) = self.current_doc(req, ttl).await?;
        let mut resp = serve_doc(&doc, ttl, headers, head)?;
        mark_stale(&mut resp, stale.as_ref());
        Ok(resp)
    }

    /// The document to serve: the stored one while fresh, else revalidated with every
    /// member that may have it; the stored one, with the failure, when they fail.
    async fn current_doc(
        &self,
        req: &MavenRequest,
        ttl: Duration,
    ) -> Result<(Arc<Doc>, Option<Error>), Error> {
        let cached = self.cached_doc(&req.rel).await?;
        if let Some(doc) = &cached {
            if doc.confirmed + ttl > SystemTime::now() {
                CacheOutcome::Hit.record();
                return Ok((doc.clone(), None));
            }
        }
        let members = self.members_for(req)?;
        let ctx = RefreshCtx {
            members,
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            limit: self.cfg.max_metadata_size,
        };
        let merge = matches!(req.path.kind, Kind::Metadata { .. });
        let fut = refresh_doc(
            ctx,
            req.rel.clone(),
            content_type(&req.path),
            merge,
            cached.clone(),
        );
        let fetched = self
            .refreshes
            .run(&req.rel, fut)
            .await
            .unwrap_or_else(|| Err(Error::internal("document refresh failed")));
        match (fetched, cached) {
            (Ok(doc), cached) => {
                if cached.is_some_and(|c| c.sha256 == doc.sha256) {
                    CacheOutcome::Revalidated.record();
                } else {
                    CacheOutcome::Miss.record();
                }
                self.docs.insert(req.rel.clone(), doc.clone());
                Ok((doc, None))
            }
            (Err(e), Some(cached)) if e.allows_stale() => {
                self.metrics
                    .inc("pinproxy_stale_served_total", &[("upstream", "maven")]);
                warn!(path = %req.rel, "Maven upstreams failed, serving the stored document: {e}");
                CacheOutcome::Stale.record();
                Ok((cached, Some(e)))
            }
            (Err(e), _) => {
                if matches!(e.kind, ErrorKind::NotFound(_)) {
                    self.docs.invalidate(&req.rel);
                    self.remember_missing(&req.rel, self.cfg.not_found_ttl.min(ttl));
                }
                Err(e)
            }
        }
    }

    /// The served document from memory, or rebuilt from the store (after a restart).
    async fn cached_doc(&self, rel: &str) -> Result<Option<Arc<Doc>>, Error> {
        if let Some(d) = self.docs.get(rel) {
            return Ok(Some(d));
        }
        let Some((entry, obj)) = crate::fill::resolved(&self.store, &doc_coord(rel)).await? else {
            return Ok(None);
        };
        let mut members = Vec::new();
        for m in &self.members {
            let coord = member_coord(m.name(), rel);
            if let Some((e, o)) = crate::fill::resolved(&self.store, &coord).await? {
                members.push(MemberDoc {
                    member: m.name().to_owned(),
                    bytes: read_file(o.path.clone()).await?,
                    sha256: o.sha256,
                    etag: e.resolution.etag,
                    last_modified: e.resolution.last_modified,
                    content_type: e.resolution.media_type,
                    stale: false,
                });
            }
        }
        let doc = Arc::new(Doc::new(
            read_file(obj.path.clone()).await?,
            entry
                .resolution
                .media_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            entry.resolution.last_modified.clone(),
            UNIX_EPOCH + Duration::from_millis(entry.time_ms),
            members,
        ));
        self.docs.insert(rel.to_owned(), doc.clone());
        Ok(Some(doc))
    }
}

// ---- fetching files -------------------------------------------------------------------

struct FileFetch {
    members: Vec<Arc<Member>>,
    rel: String,
    coord: String,
    content_type: &'static str,
    signature: bool,
    metrics: Arc<Metrics>,
}

/// The checksum a member offers for a file, and where it came from.
struct Offered {
    expected: Expected,
    /// For the pin: `sha1:<hex>`, `sha512:<hex>`, ...
    label: String,
    /// A sidecar fetched to learn it: kept as the file's sidecar.
    sidecar: Option<(ChecksumAlgorithm, Bytes)>,
}

async fn fetch_file(f: FileFetch) -> Result<Source, Error> {
    let mut failure: Option<Error> = None;
    for m in &f.members {
        let learned_none = m.sends_checksums.load(std::sync::atomic::Ordering::Relaxed) == 2;
        let (answer, early_sha1) = if learned_none && !f.signature {
            let sha1 = format!("{}.sha1", f.rel);
            let (a, s) = tokio::join!(
                ask(m, &f.rel, HeaderMap::new(), &f.metrics),
                fetch_small(m, &sha1, &f.metrics)
            );
            (a, Some(s))
        } else {
            (ask(m, &f.rel, HeaderMap::new(), &f.metrics).await, None)
        };
        let resp = match answer {
            Answer::Found(r) if r.status() == StatusCode::OK => r,
            Answer::Found(r) => {
                failure.get_or_insert(Error::upstream(
                    ErrorKind::BadGateway,
                    format!("{}: unexpected {} for {}", m.name(), r.status(), f.rel),
                ));
                continue;
            }
            Answer::Absent => continue,
            Answer::Failed(e) => {
                failure.get_or_insert(e);
                continue;
            }
        };
        return file_source(&f, m, resp, early_sha1).await;
    }
    Err(failure.unwrap_or_else(|| not_found(&f.rel)))
}

/// `early_sha1` is the member's `.sha1`, when it was asked for together with the file.
async fn file_source(
    f: &FileFetch,
    m: &Member,
    resp: reqwest::Response,
    early_sha1: Option<Result<Option<Bytes>, Error>>,
) -> Result<Source, Error> {
    let h = resp.headers().clone();
    let header = |a| maven::checksum::from_headers(&h, a);
    let mut digests = BTreeMap::new();
    for a in [ChecksumAlgorithm::Sha256, ChecksumAlgorithm::Sha512] {
        if let Some(d) = header(a) {
            digests.insert(a.as_str().to_owned(), hex::encode(d));
        }
    }
    let md5_header = header(ChecksumAlgorithm::Md5)
        .and_then(|d| <[u8; 16]>::try_from(d).ok())
        .map(Expected::Md5);
    let from_header = [
        ChecksumAlgorithm::Sha512,
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Sha1,
    ]
    .into_iter()
    .find_map(|a| header(a).and_then(|d| expected(a, &d)))
    .or_else(|| {
        upstream::header_str(&h, "etag")
            .and_then(|e| maven::checksum::parse_nexus_etag(&e))
            .and_then(|d| expected(ChecksumAlgorithm::Sha1, &d))
    });
    let offered = match from_header {
        Some((expected, label)) => Some(Offered {
            expected,
            label,
            sidecar: None,
        }),
        None => offered_by_sidecar(m, &f.rel, &f.metrics, early_sha1).await?,
    };
    m.sends_checksums.store(
        if offered.as_ref().is_some_and(|o| o.sidecar.is_none()) {
            1
        } else {
            2
        },
        std::sync::atomic::Ordering::Relaxed,
    );
    if offered.is_none() && !f.signature {
        match m.cfg.missing_checksum {
            MissingChecksum::Fail => {
                return Err(Error::upstream(
                    ErrorKind::BadGateway,
                    format!(
                        "{}: {} comes with no checksum (no X-Checksum header, no .sha1, .sha512 or .sha256) and missing_checksum = \"fail\"",
                        m.name(),
                        f.rel
                    ),
                ));
            }
            MissingChecksum::PinFirstSeen => {
                f.metrics
                    .inc("pinproxy_maven_first_seen_total", &[("upstream", m.name())]);
                warn!(
                    upstream = m.name(),
                    path = %f.rel,
                    "no checksum offered: pinning the bytes as first seen"
                );
            }
        }
    }
    // Promised headers: what the verified bytes will be (the body aborts otherwise).
    let mut promised: Vec<(HeaderName, HeaderValue)> = Vec::new();
    if let Some(Offered {
        expected: Expected::Sha1(s),
        ..
    }) = &offered
    {
        let hex = hex::encode(s);
        push_header(
            &mut promised,
            header::ETAG,
            &format!("\"{{SHA1{{{hex}}}}}\""),
        );
        push_header(
            &mut promised,
            HeaderName::from_static("x-checksum-sha1"),
            &hex,
        );
    }
    if let (Some(_), Some(Expected::Md5(d))) = (&offered, &md5_header) {
        push_header(
            &mut promised,
            HeaderName::from_static("x-checksum-md5"),
            &hex::encode(d),
        );
    }
    // A fetched sidecar is the member's own statement about the file: kept verbatim in the
    // pin (journalled with it, no content file of its own) and served as the file's sidecar.
    if let Some(Offered {
        sidecar: Some((a, bytes)),
        ..
    }) = &offered
    {
        if let Some(text) = sidecar_text(bytes) {
            digests.insert(sidecar_key(*a), text);
        }
    }
    let total = upstream::content_length(&h);
    let name = m.name().to_owned();
    let coord = f.coord.clone();
    let verified_label = offered.as_ref().map(|o| o.label.clone());
    let expect = Expect {
        size: total,
        digest: offered.map(|o| o.expected),
        also: md5_header.into_iter().collect(),
        legacy_digests: true,
    };
    Ok(Source {
        stream: upstream::body_stream(&name, resp),
        total,
        expect,
        limit: None,
        media_type: Some(f.content_type.to_owned()),
        idle_timeout: m.cfg.http.idle_timeout,
        upstream: name.clone(),
        headers: promised,
        events: Box::new(move |v, mt| {
            if let Some(s) = v.sha1 {
                digests.insert("sha1".to_owned(), hex::encode(s));
            }
            if let Some(d) = v.md5 {
                digests.insert("md5".to_owned(), hex::encode(d));
            }
            if let Some(l) = verified_label {
                digests.insert("verified".to_owned(), l);
            }
            vec![Event::Pin(Pin {
                coordinate: coord,
                sha256: v.sha256,
                size: v.size,
                media_type: mt.map(str::to_owned),
                upstream: name,
                digests,
                verified: if v.checked {
                    PinVerified::Digest
                } else {
                    PinVerified::FirstSeen
                },
            })]
        }),
    })
}

/// The member's checksum from its sidecars: `.sha1` (every Maven repository has it), then
/// `.sha512` and `.sha256`. A sidecar the member fails to serve fails the fetch: a transient
/// error must not turn into "no checksum" and an unverified pin.
async fn offered_by_sidecar(
    m: &Member,
    rel: &str,
    metrics: &Metrics,
    mut early_sha1: Option<Result<Option<Bytes>, Error>>,
) -> Result<Option<Offered>, Error> {
    for a in [
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha512,
        ChecksumAlgorithm::Sha256,
    ] {
        let side = format!("{rel}.{}", a.as_str());
        let fetched = match early_sha1.take() {
            Some(early) if a == ChecksumAlgorithm::Sha1 => early,
            _ => fetch_small(m, &side, metrics).await,
        };
        let Some(body) = fetched? else {
            continue;
        };
        let parsed = maven::checksum::parse_sidecar(&body, a)
            .and_then(|d| expected(a, &d))
            .ok_or_else(|| {
                Error::upstream(
                    ErrorKind::BadGateway,
                    format!("{}: {side} is not a {} checksum", m.name(), a.as_str()),
                )
            })?;
        return Ok(Some(Offered {
            expected: parsed.0,
            label: parsed.1,
            sidecar: Some((a, body)),
        }));
    }
    Ok(None)
}

/// A small file (a sidecar): `None` when the member does not have it.
async fn fetch_small(m: &Member, rel: &str, metrics: &Metrics) -> Result<Option<Bytes>, Error> {
    match ask(m, rel, HeaderMap::new(), metrics).await {
        Answer::Absent => Ok(None),
        Answer::Failed(e) => Err(e),
        Answer::Found(r) if r.status() != StatusCode::OK => Err(Error::upstream(
            ErrorKind::BadGateway,
            format!("{}: unexpected {} for {rel}", m.name(), r.status()),
        )),
        Answer::Found(r) => read_limited(m.name(), r, MAX_SIDECAR as u64)
            .await
            .map(Some),
    }
}

fn expected(a: ChecksumAlgorithm, d: &[u8]) -> Option<(Expected, String)> {
    let e = match a {
        ChecksumAlgorithm::Sha1 => Expected::Sha1(d.try_into().ok()?),
        ChecksumAlgorithm::Sha256 => Expected::Sha256(d.try_into().ok()?),
        ChecksumAlgorithm::Sha512 => Expected::Sha512(d.try_into().ok()?),
        ChecksumAlgorithm::Md5 => return None,
    };
    Some((e, format!("{}:{}", a.as_str(), hex::encode(d))))
}

/// A fill source over bytes already in memory (a sidecar), pinned under `coord`.
fn bytes_source(
    upstream: &str,
    bytes: Bytes,
    content_type: &str,
    coord: String,
    checked: bool,
    idle_timeout: Duration,
) -> Source {
    let name = upstream.to_owned();
    let total = bytes.len() as u64;
    Source {
        stream: Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
        total: Some(total),
        expect: Expect {
            size: Some(total),
            ..Expect::default()
        },
        limit: None,
        media_type: Some(content_type.to_owned()),
        idle_timeout,
        upstream: name.clone(),
        headers: Vec::new(),
        events: Box::new(move |v, mt| {
            vec![Event::Pin(Pin {
                coordinate: coord,
                sha256: v.sha256,
                size: v.size,
                media_type: mt.map(str::to_owned),
                upstream: name,
                digests: BTreeMap::new(),
                verified: if checked {
                    PinVerified::Digest
                } else {
                    PinVerified::FirstSeen
                },
            })]
        }),
    }
}

async fn read_limited(name: &str, resp: reqwest::Response, limit: u64) -> Result<Bytes, Error> {
    if upstream::content_length(resp.headers()).is_some_and(|l| l > limit) {
        return Err(Error::upstream(
            ErrorKind::BadGateway,
            format!("{name}: response larger than {limit} bytes"),
        ));
    }
    let mut out = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| upstream::transport_error(name, &e))?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(Error::upstream(
                ErrorKind::BadGateway,
                format!("{name}: response larger than {limit} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

// ---- refreshing documents -------------------------------------------------------------

async fn refresh_doc(
    ctx: RefreshCtx,
    rel: String,
    content_type: &'static str,
    merge: bool,
    prev: Option<Arc<Doc>>,
) -> Result<Arc<Doc>, Error> {
    let mut found: Vec<MemberDoc> = Vec::new();
    let mut failure: Option<Error> = None;
    for m in &ctx.members {
        let before = prev
            .as_ref()
            .and_then(|p| p.members.iter().find(|d| d.member == m.name()))
            .cloned();
        let mut h = HeaderMap::new();
        if let Some(b) = &before {
            if let Some(v) = b
                .etag
                .as_deref()
                .and_then(|e| HeaderValue::from_str(e).ok())
            {
                h.insert(header::IF_NONE_MATCH, v);
            } else if let Some(v) = b
                .last_modified
                .as_deref()
                .and_then(|e| HeaderValue::from_str(e).ok())
            {
                h.insert(header::IF_MODIFIED_SINCE, v);
            }
        }
        let got = match ask(m, &rel, h, &ctx.metrics).await {
            Answer::Absent => None,
            Answer::Found(r) if r.status() == StatusCode::NOT_MODIFIED => match &before {
                Some(b) => Some(MemberDoc {
                    stale: false,
                    ..b.clone()
                }),
                None => {
                    failure.get_or_insert(Error::upstream(
                        ErrorKind::BadGateway,
                        format!("{}: 304 to an unconditional request", m.name()),
                    ));
                    None
                }
            },
            Answer::Found(r) => match member_doc(&ctx, m, &rel, r, before.as_ref()).await {
                Ok(d) => Some(d),
                Err(e) => {
                    failure.get_or_insert(e);
                    before.map(|b| MemberDoc { stale: true, ..b })
                }
            },
            Answer::Failed(e) => {
                failure.get_or_insert(e);
                before.map(|b| MemberDoc { stale: true, ..b })
            }
        };
        if let Some(d) = got {
            found.push(d);
            if !merge {
                break;
            }
        }
    }
    if found.is_empty() || found.iter().all(|d| d.stale) {
        return Err(failure.unwrap_or_else(|| not_found(&rel)));
    }
    let bytes = if found.len() > 1 {
        let docs: Vec<&[u8]> = found.iter().map(|d| &d.bytes[..]).collect();
        match maven::metadata::merge(&docs) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                // Group-level and SNAPSHOT-version documents are not merged: the first
                // member's is served.
                tracing::debug!(path = %rel, "serving the first member's document unmerged: {e}");
                found[0].bytes.clone()
            }
        }
    } else {
        found[0].bytes.clone()
    };
    let last_modified = found
        .iter()
        .filter_map(|d| d.last_modified.as_deref())
        .filter_map(|l| httpdate::parse_http_date(l).ok().map(|t| (t, l)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, l)| l.to_owned());
    let content_type = if content_type.is_empty() {
        found[0]
            .content_type
            .clone()
            .unwrap_or_else(|| "text/html".to_owned())
    } else {
        content_type.to_owned()
    };
    let doc = Arc::new(Doc::new(
        bytes,
        content_type,
        last_modified,
        SystemTime::now(),
        found,
    ));
    if prev.as_ref().is_none_or(|p| p.sha256 != doc.sha256) {
        let bytes = doc.bytes.clone();
        let res = Resolution {
            coordinate: doc_coord(&rel),
            target: format!("sha256:{}", doc.sha256),
            sha256: doc.sha256,
            size: doc.bytes.len() as u64,
            media_type: Some(doc.content_type.clone()),
            upstream: doc
                .members
                .iter()
                .map(|d| d.member.as_str())
                .collect::<Vec<_>>()
                .join(","),
            etag: None,
            last_modified: doc.last_modified.clone(),
        };
        record(&ctx.store, bytes, res).await?;
    }
    Ok(doc)
}

/// A member's fresh 200: read, checked against its `X-Checksum-Sha1` when it sent one, and
/// recorded when it differs from what it sent before.
async fn member_doc(
    ctx: &RefreshCtx,
    m: &Member,
    rel: &str,
    resp: reqwest::Response,
    before: Option<&MemberDoc>,
) -> Result<MemberDoc, Error> {
    let h = resp.headers().clone();
    let bytes = read_limited(m.name(), resp, ctx.limit).await?;
    if let Some(want) = maven::checksum::from_headers(&h, ChecksumAlgorithm::Sha1) {
        let got: [u8; 20] = Sha1::digest(&bytes).into();
        if got[..] != want[..] {
            ctx.metrics
                .inc("pinproxy_digest_mismatch_total", &[("upstream", m.name())]);
            return Err(Error::upstream(
                ErrorKind::BadGateway,
                format!(
                    "{}: {rel} does not match its X-Checksum-Sha1 {}",
                    m.name(),
                    hex::encode(want)
                ),
            ));
        }
    }
    let doc = MemberDoc {
        member: m.name().to_owned(),
        sha256: ContentHash(Sha256::digest(&bytes).into()),
        bytes,
        etag: upstream::header_str(&h, "etag").filter(|e| !e.starts_with("W/")),
        last_modified: upstream::header_str(&h, "last-modified"),
        content_type: upstream::header_str(&h, "content-type"),
        stale: false,
    };
    let changed = before.is_none_or(|b| {
        b.sha256 != doc.sha256 || b.etag != doc.etag || b.last_modified != doc.last_modified
    });
    if changed {
        let res = Resolution {
            coordinate: member_coord(m.name(), rel),
            target: format!("sha256:{}", doc.sha256),
            sha256: doc.sha256,
            size: doc.bytes.len() as u64,
            media_type: doc.content_type.clone(),
            upstream: m.name().to_owned(),
            etag: doc.etag.clone(),
            last_modified: doc.last_modified.clone(),
        };
        record(&ctx.store, doc.bytes.clone(), res).await?;
    }
    Ok(doc)
}

/// Stores a document and journals its resolution.
async fn record(store: &Arc<Store>, bytes: Bytes, res: Resolution) -> Result<(), Error> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || -> Result<(), crate::store::StoreError> {
        store.put_bytes(&bytes)?;
        store.record(Event::Resolve(res), SystemTime::now())?;
        Ok(())
    })
    .await
    .map_err(|e| Error::internal(e.to_string()))?
    .map_err(|e| Error::store(&e))
}

/// A digest of a stored file, read in 1 MiB chunks on the blocking pool.
async fn hash_file(
    path: std::path::PathBuf,
    algorithm: ChecksumAlgorithm,
) -> Result<Vec<u8>, Error> {
    fn run<D: sha2::Digest>(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut h = D::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(h.finalize().to_vec());
            }
            h.update(&buf[..n]);
        }
    }
    let p = path.clone();
    tokio::task::spawn_blocking(move || match algorithm {
        ChecksumAlgorithm::Sha1 => run::<Sha1>(&p),
        ChecksumAlgorithm::Md5 => run::<md5::Md5>(&p),
        ChecksumAlgorithm::Sha256 => run::<Sha256>(&p),
        ChecksumAlgorithm::Sha512 => run::<Sha512>(&p),
    })
    .await
    .map_err(|e| Error::internal(e.to_string()))?
    .map_err(|e| {
        Error::store(&crate::store::StoreError::Io {
            op: "read",
            path,
            source: e,
        })
    })
}

async fn read_file(path: std::path::PathBuf) -> Result<Bytes, Error> {
    tokio::fs::read(&path).await.map(Bytes::from).map_err(|e| {
        Error::store(&crate::store::StoreError::Io {
            op: "read",
            path,
            source: e,
        })
    })
}

// ---- responses ------------------------------------------------------------------------

fn serve_doc(
    doc: &Doc,
    ttl: Duration,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, Error> {
    let etag = doc.sha256.to_string();
    let mut b = Response::builder()
        .header(header::CONTENT_TYPE, &doc.content_type)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{etag}\""))
        .header(
            header::CACHE_CONTROL,
            format!("public, max-age={}", ttl.as_secs()),
        )
        .header("x-checksum-sha1", hex::encode(doc.sha1))
        .header("x-checksum-md5", hex::encode(doc.md5));
    if let Some(l) = &doc.last_modified {
        b = b.header(header::LAST_MODIFIED, l);
    }
    let not_modified = if headers.contains_key(header::IF_NONE_MATCH) {
        serve::etag_matches(headers, &etag)
    } else {
        modified_since(headers, doc.last_modified.as_deref()) == Some(false)
    };
    if not_modified {
        return b
            .status(StatusCode::NOT_MODIFIED)
            .body(body::empty())
            .map_err(|e| Error::internal(e.to_string()));
    }
    let (b, start, end) = serve::ranged(b, headers, doc.bytes.len() as u64)?;
    let body = if head {
        body::empty()
    } else {
        body::full(doc.bytes.slice(start as usize..end as usize))
    };
    b.body(body).map_err(|e| Error::internal(e.to_string()))
}

/// `Some(false)` when the client's `If-Modified-Since` shows it has the current document.
fn modified_since(headers: &HeaderMap, last_modified: Option<&str>) -> Option<bool> {
    let since = headers.get(header::IF_MODIFIED_SINCE)?.to_str().ok()?;
    let since = httpdate::parse_http_date(since).ok()?;
    let lm = httpdate::parse_http_date(last_modified?).ok()?;
    Some(lm > since)
}

fn mark_stale(resp: &mut Response<Body>, stale: Option<&Error>) {
    let Some(e) = stale else { return };
    let h = resp.headers_mut();
    h.insert("x-pinproxy-stale", HeaderValue::from_static("1"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "299 - \"pinproxy: upstream unavailable, serving the document as last fetched ({})\"",
        e.message.replace('"', "'")
    )) {
        h.insert(header::WARNING, v);
    }
}

fn text_response(body: String, ttl: Duration, head: bool) -> Response<Body> {
    let mut r = body::response(StatusCode::OK, "text/plain", body.into_bytes(), head);
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", ttl.as_secs())) {
        r.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    r
}

fn push_header(out: &mut Vec<(HeaderName, HeaderValue)>, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        out.push((name, v));
    }
}

fn sidecar_headers() -> ObjectHeaders {
    ObjectHeaders {
        content_type: "text/plain",
        etag: None,
        cache_control: Some(IMMUTABLE),
        extra: Vec::new(),
    }
}

/// Headers of a pinned file: the strong validator and the checksums of its exact bytes.
fn pinned_headers(content_type: &'static str, entry: &PinEntry) -> ObjectHeaders {
    let d = &entry.pin.digests;
    let mut extra = Vec::new();
    if let Some(s) = d.get("sha1") {
        push_header(&mut extra, HeaderName::from_static("x-checksum-sha1"), s);
    }
    if let Some(m) = d.get("md5") {
        push_header(&mut extra, HeaderName::from_static("x-checksum-md5"), m);
    }
    ObjectHeaders {
        content_type,
        etag: Some(match d.get("sha1") {
            Some(s) => format!("{{SHA1{{{s}}}}}"),
            None => format!("sha256:{}", entry.pin.sha256),
        }),
        cache_control: Some(IMMUTABLE),
        extra,
    }
}

/// The pin's `digests` key holding the member's own sidecar body for `algorithm`.
fn sidecar_key(algorithm: ChecksumAlgorithm) -> String {
    format!("{}_sidecar", algorithm.as_str())
}

/// A sidecar body worth keeping verbatim: short printable ASCII (a digest, maybe a file name).
fn sidecar_text(body: &[u8]) -> Option<String> {
    (body.len() <= 512
        && body
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()))
    .then(|| String::from_utf8_lossy(body).into_owned())
}

/// A digest of a pinned file's bytes, when it is known.
fn pinned_digest(entry: &PinEntry, algorithm: ChecksumAlgorithm) -> Option<Vec<u8>> {
    if algorithm == ChecksumAlgorithm::Sha256 {
        return Some(entry.pin.sha256.as_bytes().to_vec());
    }
    hex::decode(entry.pin.digests.get(algorithm.as_str())?).ok()
}

// ---- protocol helpers -----------------------------------------------------------------

/// The pin coordinate of an immutable file: `maven:g:a:v[:classifier]:ext`, with `.asc` and
/// checksum extensions appended for signatures and sidecars.
fn coordinate(kind: &Kind) -> Option<String> {
    match kind {
        Kind::Artifact(c) => Some(format!("maven:{c}")),
        Kind::Signature { of } => coordinate(of).map(|c| format!("{c}.asc")),
        Kind::Checksum { of, algorithm } => {
            coordinate(of).map(|c| format!("{c}.{}", algorithm.as_str()))
        }
        _ => None,
    }
}

/// The coordinate a served mutable document is recorded under.
fn doc_coord(rel: &str) -> String {
    format!("maven:{rel}")
}

/// The coordinate of one member's copy of a mutable document.
fn member_coord(member: &str, rel: &str) -> String {
    format!("maven:{member}/{rel}")
}

/// The Content-Type of a path; empty for directory listings (the member's is passed on).
fn content_type(path: &RepoPath) -> &'static str {
    match &path.kind {
        Kind::Metadata { .. } => "text/xml",
        Kind::Checksum { .. } => "text/plain",
        Kind::Signature { .. } => "application/pgp-signature",
        Kind::Directory => "",
        Kind::Artifact(c) => match c.extension.as_str() {
            "pom" | "xml" => "text/xml",
            "jar" | "war" | "ear" | "aar" | "rar" | "ejb" | "maven-plugin" => {
                "application/java-archive"
            }
            "module" | "json" => "application/json",
            "zip" => "application/zip",
            "tar.gz" | "tgz" => "application/gzip",
            _ => "application/octet-stream",
        },
        Kind::Other => "application/octet-stream",
    }
}

/// The groupIds a path may belong to, for include/exclude. An artifact knows its own; for
/// metadata, listings and unrecognised files every leading run of directories is a candidate
/// (group-level metadata sits where an artifact directory would).
fn group_candidates(path: &RepoPath) -> Vec<String> {
    fn of_kind(kind: &Kind, segments: &[String]) -> Vec<String> {
        match kind {
            Kind::Artifact(c) => vec![c.group.clone()],
            Kind::Checksum { of, .. } | Kind::Signature { of } => of_kind(of, segments),
            Kind::Metadata {
                level: MetadataLevel::SnapshotVersion,
            } if segments.len() > 3 => vec![segments[..segments.len() - 3].join(".")],
            Kind::Directory => prefixes(segments),
            _ => prefixes(&segments[..segments.len().saturating_sub(1)]),
        }
    }
    fn prefixes(dirs: &[String]) -> Vec<String> {
        (1..=dirs.len()).map(|n| dirs[..n].join(".")).collect()
    }
    of_kind(&path.kind, &path.segments)
}

/// `*` matches any run of characters (dots included); everything else matches itself.
fn glob_match(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_group_ids() {
        assert!(glob_match("org.example", "org.example"));
        assert!(!glob_match("org.example", "org.example.sub"));
        assert!(glob_match("org.example.*", "org.example.sub.deep"));
        assert!(!glob_match("org.example.*", "org.example"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("com.*.internal", "com.corp.internal"));
        assert!(!glob_match("com.*.internal", "com.corp.public"));
    }

    #[test]
    fn coordinates_of_files_sidecars_and_signatures() {
        let c = |p: &str| coordinate(&maven::layout::parse(p).unwrap().kind);
        assert_eq!(
            c("org/example/lib/1.0/lib-1.0-sources.jar").as_deref(),
            Some("maven:org.example:lib:1.0:sources:jar")
        );
        assert_eq!(
            c("org/example/lib/1.0/lib-1.0.jar.sha1").as_deref(),
            Some("maven:org.example:lib:1.0:jar.sha1")
        );
        assert_eq!(
            c("org/example/lib/1.0/lib-1.0.pom.asc").as_deref(),
            Some("maven:org.example:lib:1.0:pom.asc")
        );
        assert_eq!(c("org/example/lib/maven-metadata.xml"), None);
    }

    #[test]
    fn group_candidates_follow_the_layout() {
        let g = |p: &str| group_candidates(&maven::layout::parse(p).unwrap());
        assert_eq!(g("org/example/lib/1.0/lib-1.0.jar"), vec!["org.example"]);
        assert_eq!(
            g("org/example/lib/maven-metadata.xml"),
            vec!["org", "org.example", "org.example.lib"]
        );
        assert_eq!(
            g("org/example/lib/1.0-SNAPSHOT/maven-metadata.xml"),
            vec!["org.example"]
        );
    }
}
