//! OCI pull-through: manifests, blobs, tags/list and referrers.
//!
//! Policy (the facts come from the `oci` crate): anything addressed by digest is immutable and
//! is served from the store forever once pinned; a tag is a mutable resolution (tag → digest),
//! recorded in the journal each time it is first seen or moves, revalidated with an upstream
//! HEAD after the upstream's TTL (or never, with `tag_policy = "pin"`), and served stale when
//! the upstream fails or rate-limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use tracing::{Span, warn};

use crate::body::{self, Body};
use crate::config::{OciConfig, TagPolicy};
use crate::error::{Error, Kind, Origin};
use crate::fill::{Fill, Fills, Object, SingleFlight, Source};
use crate::metrics::Metrics;
use crate::route::OciRequest;
use crate::serve::ObjectHeaders;
use crate::store::{
    ContentHash, Event, Pin, Resolution, ResolutionEntry, Store, Verified as PinVerified,
};
use crate::upstream::{self, OciUpstream};
use crate::verify::{Expect, Expected};

const API_VERSION: &str = "registry/2.0";

/// Everything the OCI routes need.
pub struct OciService {
    pub upstreams: Vec<Arc<OciUpstream>>,
    pub default_upstream: Option<usize>,
    max_manifest_size: u64,
    store: Arc<Store>,
    fills: Arc<Fills>,
    metrics: Arc<Metrics>,
    /// Last time each tag resolution was confirmed upstream (in addition to the journal's
    /// record of when it was first seen or moved).
    confirmed: Mutex<HashMap<String, SystemTime>>,
    revalidations: Arc<SingleFlight<Result<Option<oci::Digest>, Error>>>,
    /// Pinned coordinates → objects. Pins never change, so entries never go stale.
    pinned_objects: moka::sync::Cache<String, Arc<Object>>,
    /// Tag coordinates → their latest resolution; this service is the only writer.
    tag_cache: moka::sync::Cache<String, (Arc<ResolutionEntry>, Arc<Object>)>,
    /// Manifest bytes by content hash (immutable by construction), so warm manifest
    /// requests never touch the disk.
    manifest_bytes: moka::sync::Cache<ContentHash, Bytes>,
}

/// What the request span records about how a request was served.
#[derive(Debug, Clone, Copy)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Coalesced,
    Revalidated,
    Stale,
    Pass,
}

impl CacheOutcome {
    /// Notes how the current request was served, on its span and for the request counter.
    pub fn record(self) {
        Span::current().record("cache", self.as_str());
        let _ = OUTCOME.try_with(|c| c.set(Some(self)));
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
            Self::Revalidated => "revalidated",
            Self::Stale => "stale",
            Self::Pass => "pass",
        }
    }
}

impl OciService {
    pub fn new(
        cfg: &OciConfig,
        store: Arc<Store>,
        fills: Arc<Fills>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let upstreams = cfg
            .upstreams
            .iter()
            .map(|u| OciUpstream::new(u.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let default_upstream = upstreams
            .iter()
            .position(|u| u.name() == cfg.default_upstream);
        Ok(Self {
            upstreams,
            default_upstream,
            max_manifest_size: cfg.max_manifest_size,
            store,
            fills,
            metrics,
            confirmed: Mutex::new(HashMap::new()),
            revalidations: SingleFlight::new(),
            pinned_objects: moka::sync::Cache::new(100_000),
            tag_cache: moka::sync::Cache::new(100_000),
            manifest_bytes: moka::sync::Cache::builder()
                .weigher(|_, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
                .max_capacity(64 << 20)
                .build(),
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.upstreams.iter().map(|u| u.name().to_owned()).collect()
    }

    pub async fn handle(
        &self,
        req: OciRequest,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, Error> {
        let head = method == Method::HEAD;
        if method != Method::GET && !head {
            return Err(Error::client(
                Kind::Unsupported,
                "pinproxy is a read-only pull-through cache",
            ));
        }
        let mut resp = match &req.endpoint {
            oci::Endpoint::Ping => {
                body::response(StatusCode::OK, "application/json", &b"{}"[..], head)
            }
            oci::Endpoint::Catalog => {
                return Err(Error::client(
                    Kind::NotFound(oci::ErrorCode::Unsupported),
                    "the catalog is not served by a pull-through cache",
                ));
            }
            oci::Endpoint::Upload { .. } => {
                return Err(Error::client(
                    Kind::Unsupported,
                    "pushes are not accepted by a pull-through cache",
                ));
            }
            oci::Endpoint::Blob { name, digest } => {
                let up = self.upstream(&req)?;
                self.blob(&up, &up.canonical(name), digest, headers, head)
                    .await?
            }
            oci::Endpoint::Manifest { name, reference } => {
                let up = self.upstream(&req)?;
                let repo = up.canonical(name);
                let accept = oci::media::AcceptSet::parse(
                    headers
                        .get_all(header::ACCEPT)
                        .iter()
                        .filter_map(|v| v.to_str().ok()),
                );
                match reference {
                    oci::Reference::Digest(d) => {
                        self.manifest_by_digest(&up, &repo, d, &accept, headers, head)
                            .await?
                    }
                    oci::Reference::Tag(t) => {
                        self.manifest_by_tag(&up, &repo, t, &accept, headers, head)
                            .await?
                    }
                }
            }
            oci::Endpoint::TagsList { name } => {
                let up = self.upstream(&req)?;
                self.pass_through(&up, &up.canonical(name), name, "tags/list", &req, head)
                    .await?
            }
            oci::Endpoint::Referrers { name, digest } => {
                let up = self.upstream(&req)?;
                let suffix = format!("referrers/{digest}");
                self.pass_through(&up, &up.canonical(name), name, &suffix, &req, head)
                    .await?
            }
        };
        let h = resp.headers_mut();
        h.insert(
            "docker-distribution-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        if let Some(ns) = req
            .ns
            .as_deref()
            .and_then(|n| HeaderValue::from_str(n).ok())
        {
            h.insert("oci-namespace", ns);
        }
        Ok(resp)
    }

    fn upstream(&self, req: &OciRequest) -> Result<Arc<OciUpstream>, Error> {
        req.upstream
            .and_then(|i| self.upstreams.get(i).cloned())
            .ok_or_else(|| {
                Error::client(
                    Kind::NotFound(oci::ErrorCode::NameUnknown),
                    "no upstream for this name",
                )
            })
    }

    // ---- blobs -------------------------------------------------------------------------

    async fn blob(
        &self,
        up: &Arc<OciUpstream>,
        repo: &oci::RepoName,
        digest: &oci::Digest,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        let coord = format!("oci:{}/{repo}@{digest}", up.name());
        if let Some(obj) = self.pinned(&coord).await? {
            record(CacheOutcome::Hit);
            return serve_object(obj, digest, headers, head);
        }
        // The same bytes pinned under another repository: the content is addressed by its
        // digest, so pin it for this repository too without fetching the bytes again. With
        // upstream credentials the upstream must first confirm (HEAD) that this repository
        // may see the blob (OCI-B2): a private repository's blob is never served to a name
        // the upstream would refuse.
        if digest.algorithm() == oci::Algorithm::Sha256 {
            if let Ok(hash) = digest.hex().parse::<ContentHash>() {
                if self.store.has_content(&hash) {
                    if up.cfg.credentials.is_some() {
                        let resp = up
                            .send(
                                Method::HEAD,
                                repo,
                                &format!("blobs/{digest}"),
                                HeaderMap::new(),
                                &self.metrics,
                            )
                            .await?;
                        if !resp.status().is_success() {
                            return Err(upstream::status_error(
                                up.name(),
                                resp.status(),
                                resp.headers(),
                                oci::ErrorCode::BlobUnknown,
                            ));
                        }
                    }
                    let obj = self.pin_existing(up, &coord, hash, None, digest).await?;
                    record(CacheOutcome::Hit);
                    return serve_object(obj, digest, headers, head);
                }
            }
        }
        let (fill, leader) = self.fills.get_or_start(&coord, || {
            let up = up.clone();
            let repo = repo.clone();
            let digest = digest.clone();
            let metrics = self.metrics.clone();
            let coord = coord.clone();
            async move { blob_source(up, repo, digest, coord, metrics).await }
        });
        record(if leader {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Coalesced
        });
        serve_fill(&fill, digest, headers, head).await
    }

    async fn pinned(&self, coord: &str) -> Result<Option<Arc<Object>>, Error> {
        if let Some(obj) = self.pinned_objects.get(coord) {
            return Ok(Some(obj));
        }
        let found = crate::fill::pinned(&self.store, coord)
            .await?
            .map(|(obj, _)| obj);
        if let Some(obj) = &found {
            self.pinned_objects.insert(coord.to_owned(), obj.clone());
        }
        Ok(found)
    }

    /// The latest resolution of a tag and its object, from memory or the index.
    async fn tag_resolution(
        &self,
        coord: &str,
    ) -> Result<Option<(Arc<ResolutionEntry>, Arc<Object>)>, Error> {
        if let Some(hit) = self.tag_cache.get(coord) {
            return Ok(Some(hit));
        }
        let found = crate::fill::resolved(&self.store, coord)
            .await?
            .map(|(r, o)| (Arc::new(r), o));
        if let Some(hit) = &found {
            self.tag_cache.insert(coord.to_owned(), hit.clone());
        }
        Ok(found)
    }

    /// Serves a manifest; its bytes come from memory after the first read.
    async fn serve_manifest(
        &self,
        obj: &Arc<Object>,
        digest: &oci::Digest,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        let mt = obj
            .media_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        let b = Response::builder()
            .header(header::CONTENT_TYPE, mt)
            .header("docker-content-digest", digest.to_string())
            .header(header::ETAG, format!("\"{digest}\""));
        if crate::serve::etag_matches(headers, &digest.to_string()) {
            return b
                .status(StatusCode::NOT_MODIFIED)
                .body(body::empty())
                .map_err(|e| Error::internal(e.to_string()));
        }
        let b = b
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, obj.size);
        if head {
            return b
                .body(body::empty())
                .map_err(|e| Error::internal(e.to_string()));
        }
        let bytes = match self.manifest_bytes.get(&obj.sha256) {
            Some(bytes) => bytes,
            None => {
                let path = obj.path.clone();
                let bytes = tokio::task::spawn_blocking(move || std::fs::read(&path))
                    .await
                    .map_err(|e| Error::internal(e.to_string()))?
                    .map_err(|e| {
                        Error::new(
                            Origin::Store,
                            Kind::Internal,
                            format!("{}: {e}", obj.path.display()),
                        )
                    })?;
                if bytes.len() as u64 != obj.size {
                    return Err(Error::new(
                        Origin::Store,
                        Kind::Internal,
                        format!("{} has the wrong length", obj.path.display()),
                    ));
                }
                let bytes = Bytes::from(bytes);
                self.manifest_bytes.insert(obj.sha256, bytes.clone());
                bytes
            }
        };
        b.body(body::full(bytes))
            .map_err(|e| Error::internal(e.to_string()))
    }

    async fn pin_existing(
        &self,
        up: &OciUpstream,
        coord: &str,
        hash: ContentHash,
        media_type: Option<String>,
        digest: &oci::Digest,
    ) -> Result<Arc<Object>, Error> {
        let path = self.store.content_path(&hash);
        let size = std::fs::metadata(&path)
            .map_err(|e| {
                Error::new(
                    Origin::Store,
                    Kind::Internal,
                    format!("{}: {e}", path.display()),
                )
            })?
            .len();
        let pin = Pin {
            coordinate: coord.to_owned(),
            sha256: hash,
            size,
            media_type: media_type.clone(),
            upstream: up.name().to_owned(),
            digests: digests_of(digest),
            verified: PinVerified::Digest,
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.record(Event::Pin(pin), SystemTime::now()))
            .await
            .map_err(|e| Error::internal(e.to_string()))?
            .map_err(|e| Error::store(&e))?;
        Ok(Arc::new(Object {
            sha256: hash,
            size,
            media_type,
            path,
        }))
    }

    // ---- manifests ---------------------------------------------------------------------

    async fn manifest_by_digest(
        &self,
        up: &Arc<OciUpstream>,
        repo: &oci::RepoName,
        digest: &oci::Digest,
        accept: &oci::media::AcceptSet,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        let coord = format!("oci:{}/{repo}@{digest}", up.name());
        if let Some(obj) = self.pinned(&coord).await? {
            record(CacheOutcome::Hit);
            return self.serve_manifest(&obj, digest, headers, head).await;
        }
        // Bytes are fixed by the digest, so the client's Accept only matters to registries
        // that refuse types the request did not list: ask with everything.
        let mut accept_line = oci::media::UPSTREAM_MANIFEST_ACCEPT.to_owned();
        for t in [
            oci::media::DOCKER_SCHEMA1_SIGNED,
            oci::media::DOCKER_SCHEMA1,
        ] {
            if accept.accepts(t) {
                accept_line.push_str(", ");
                accept_line.push_str(t);
            }
        }
        let (fill, leader) = self.fills.get_or_start(&coord, || {
            let up = up.clone();
            let repo = repo.clone();
            let reference = digest.to_string();
            let metrics = self.metrics.clone();
            let limit = self.max_manifest_size;
            let expected = Some(digest.clone());
            async move {
                manifest_source(
                    up,
                    repo,
                    reference,
                    accept_line,
                    expected,
                    None,
                    limit,
                    metrics,
                )
                .await
            }
        });
        record(if leader {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Coalesced
        });
        let obj = fill.finished().await?;
        self.serve_manifest(&obj, digest, headers, head).await
    }

    async fn manifest_by_tag(
        &self,
        up: &Arc<OciUpstream>,
        repo: &oci::RepoName,
        tag: &oci::Tag,
        accept: &oci::media::AcceptSet,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        let coord = format!("oci:{}/{repo}:{tag}", up.name());
        let cached = self.tag_resolution(&coord).await?;

        if let Some((entry, obj)) = cached {
            let fresh = match up.cfg.tag_policy {
                TagPolicy::Pin => true,
                TagPolicy::Revalidate(ttl) => {
                    self.last_confirmed(&coord, &entry) + ttl > SystemTime::now()
                }
            };
            if fresh {
                record(CacheOutcome::Hit);
                return self
                    .serve_tag(up, repo, tag, &entry, &obj, accept, headers, head, None)
                    .await;
            }
            match self.revalidate(up, repo, tag, &coord).await {
                Ok(Some(d)) if d.to_string() == entry.resolution.target => {
                    self.confirm(&coord);
                    record(CacheOutcome::Revalidated);
                    return self
                        .serve_tag(up, repo, tag, &entry, &obj, accept, headers, head, None)
                        .await;
                }
                // Moved, or the upstream's HEAD carried no digest: fetch the tag again.
                Ok(_) => {}
                Err(e) if e.allows_stale() => {
                    self.metrics
                        .inc("pinproxy_stale_served_total", &[("upstream", up.name())]);
                    warn!(upstream = up.name(), coordinate = %coord, "upstream failed, serving the last resolution: {e}");
                    record(CacheOutcome::Stale);
                    return self
                        .serve_tag(up, repo, tag, &entry, &obj, accept, headers, head, Some(&e))
                        .await;
                }
                Err(e) => return Err(e),
            }
        }
        let obj = self.fetch_tag(up, repo, tag, &coord).await?;
        let digest = obj_digest(&obj);
        if let Some(mt) = &obj.media_type {
            if !accept.accepts(mt) {
                return self
                    .fetch_for_accept(up, repo, tag, accept, headers, head)
                    .await;
            }
        }
        self.serve_manifest(&obj, &digest, headers, head).await
    }

    async fn fetch_tag(
        &self,
        up: &Arc<OciUpstream>,
        repo: &oci::RepoName,
        tag: &oci::Tag,
        coord: &str,
    ) -> Result<Arc<Object>, Error> {
        let (fill, leader) = self.fills.get_or_start(coord, || {
            let up = up.clone();
            let repo = repo.clone();
            let reference = tag.to_string();
            let metrics = self.metrics.clone();
            let limit = self.max_manifest_size;
            let tag_coord = Some(coord.to_owned());
            async move {
                manifest_source(
                    up,
                    repo,
                    reference,
                    oci::media::UPSTREAM_MANIFEST_ACCEPT.to_owned(),
                    None,
                    tag_coord,
                    limit,
                    metrics,
                )
                .await
            }
        });
        record(if leader {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Coalesced
        });
        let obj = fill.finished().await?;
        // The fill recorded a (maybe new) resolution: forget the remembered one.
        self.tag_cache.invalidate(coord);
        self.confirm(coord);
        Ok(obj)
    }

    /// The cached type is not one the client accepts (e.g. an index for a client that asked for
    /// single-platform manifests only): ask upstream with the client's own Accept; the answer
    /// is pinned by digest but does not become the tag's resolution.
    async fn fetch_for_accept(
        &self,
        up: &Arc<OciUpstream>,
        repo: &oci::RepoName,
        tag: &oci::Tag,
        accept: &oci::media::AcceptSet,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        let accept_line: String = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let key = format!("oci:{}/{repo}:{tag}#accept={accept_line}", up.name());
        let (fill, _) = self.fills.get_or_start(&key, || {
            let up = up.clone();
            let repo = repo.clone();
            let reference = tag.to_string();
            let metrics = self.metrics.clone();
            let limit = self.max_manifest_size;
            let accept_line = accept_line.clone();
            async move {
                manifest_source(up, repo, reference, accept_line, None, None, limit, metrics).await
            }
        });
        let obj = fill.finished().await?;
        match &obj.media_type {
            Some(mt) if !accept.accepts(mt) => Err(Error::upstream(
                Kind::NotFound(oci::ErrorCode::ManifestUnknown),
                format!(
                    "the manifest for this tag is a {mt}, which the request's Accept does not allow"
                ),
            )),
            _ => {
                self.serve_manifest(&obj, &obj_digest(&obj), headers, head)
                    .await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn serve_tag(
        &self,
        up: &Arc<OciUpstream>,
        repo: &oci::RepoName,
        tag: &oci::Tag,
        entry: &ResolutionEntry,
        obj: &Arc<Object>,
        accept: &oci::media::AcceptSet,
        headers: &HeaderMap,
        head: bool,
        stale: Option<&Error>,
    ) -> Result<Response<Body>, Error> {
        if let Some(mt) = &obj.media_type {
            if !accept.accepts(mt) {
                return self
                    .fetch_for_accept(up, repo, tag, accept, headers, head)
                    .await;
            }
        }
        let digest: oci::Digest = entry.resolution.target.parse().map_err(|_| {
            Error::internal(format!(
                "journal holds a bad digest for {}",
                entry.resolution.coordinate
            ))
        })?;
        let mut resp = self.serve_manifest(obj, &digest, headers, head).await?;
        if let Some(e) = stale {
            let h = resp.headers_mut();
            h.insert("x-pinproxy-stale", HeaderValue::from_static("1"));
            let warning = format!(
                "299 - \"pinproxy: upstream unavailable, serving the tag as last resolved ({})\"",
                e.kind_str()
            );
            if let Ok(v) = HeaderValue::from_str(&warning) {
                h.insert(header::WARNING, v);
            }
        }
        Ok(resp)
    }

    fn last_confirmed(&self, coord: &str, entry: &ResolutionEntry) -> SystemTime {
        let recorded = UNIX_EPOCH + Duration::from_millis(entry.time_ms);
        let confirmed = self
            .confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(coord)
            .copied();
        confirmed.map_or(recorded, |c| c.max(recorded))
    }

    fn confirm(&self, coord: &str) {
        self.confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(coord.to_owned(), SystemTime::now());
    }

    /// HEADs the tag upstream (Docker Hub does not count HEADs as pulls); concurrent
    /// revalidations of one tag share one request.
    async fn revalidate(
        &self,
        up: &Arc<OciUpstream>,
        repo: &oci::RepoName,
        tag: &oci::Tag,
        coord: &str,
    ) -> Result<Option<oci::Digest>, Error> {
        let up2 = up.clone();
        let repo = repo.clone();
        let suffix = format!("manifests/{tag}");
        let metrics = self.metrics.clone();
        let fut = async move {
            let resp = up2
                .send(
                    Method::HEAD,
                    &repo,
                    &suffix,
                    upstream::accept_header(oci::media::UPSTREAM_MANIFEST_ACCEPT),
                    &metrics,
                )
                .await?;
            record_ratelimit(&metrics, up2.name(), resp.headers());
            if !resp.status().is_success() {
                return Err(upstream::status_error(
                    up2.name(),
                    resp.status(),
                    resp.headers(),
                    oci::ErrorCode::ManifestUnknown,
                ));
            }
            Ok(
                upstream::header_str(resp.headers(), "docker-content-digest")
                    .and_then(|d| d.parse().ok()),
            )
        };
        self.revalidations
            .run(coord, fut)
            .await
            .unwrap_or_else(|| Err(Error::internal("revalidation task failed")))
    }

    // ---- pass-through ------------------------------------------------------------------

    async fn pass_through(
        &self,
        up: &Arc<OciUpstream>,
        repo: &oci::RepoName,
        client_name: &oci::RepoName,
        suffix: &str,
        req: &OciRequest,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        // Only pagination parameters travel upstream; `ns` is ours.
        let query: Vec<String> = req
            .query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|p| {
                p.starts_with("n=") || p.starts_with("last=") || p.starts_with("artifactType=")
            })
            .map(str::to_owned)
            .collect();
        let suffix = if query.is_empty() {
            suffix.to_owned()
        } else {
            format!("{suffix}?{}", query.join("&"))
        };
        let method = if head { Method::HEAD } else { Method::GET };
        let resp = up
            .send(method, repo, &suffix, HeaderMap::new(), &self.metrics)
            .await?;
        record(CacheOutcome::Pass);
        let status = resp.status();
        if !status.is_success() {
            return Err(upstream::status_error(
                up.name(),
                status,
                resp.headers(),
                oci::ErrorCode::NameUnknown,
            ));
        }
        let mut out = Response::builder().status(status);
        for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
            if let Some(v) = resp.headers().get(&name) {
                out = out.header(name, v);
            }
        }
        if let Some(v) = resp.headers().get("oci-filters-applied") {
            out = out.header("oci-filters-applied", v);
        }
        if let Some(link) = resp
            .headers()
            .get(header::LINK)
            .and_then(|v| v.to_str().ok())
        {
            // The upstream's link names the upstream's path; point it at ours.
            if let Some(q) = link
                .split_once('?')
                .map(|(_, q)| q.split('>').next().unwrap_or(""))
            {
                let mut target = format!("{}/{client_name}/tags/list?{q}", req.client_prefix);
                if let Some(ns) = &req.ns {
                    target.push_str(&format!("&ns={ns}"));
                }
                if let Ok(v) = HeaderValue::from_str(&format!("<{target}>; rel=\"next\"")) {
                    out = out.header(header::LINK, v);
                }
            }
        }
        let body = if head {
            body::empty()
        } else {
            let name = up.name().to_owned();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| upstream::transport_error(&name, &e))?;
            body::full(bytes)
        };
        out.body(body).map_err(|e| Error::internal(e.to_string()))
    }
}

impl Error {
    fn kind_str(&self) -> &'static str {
        match self.kind {
            Kind::RateLimited { .. } => "rate limited",
            Kind::Timeout => "timed out",
            Kind::Unreachable => "unreachable",
            _ => "error",
        }
    }
}

tokio::task_local! {
    /// How the current request was served, for the request counter.
    pub static OUTCOME: std::cell::Cell<Option<CacheOutcome>>;
}

fn record(outcome: CacheOutcome) {
    outcome.record();
}

fn digests_of(d: &oci::Digest) -> std::collections::BTreeMap<String, String> {
    let alg = match d.algorithm() {
        oci::Algorithm::Sha256 => "sha256",
        oci::Algorithm::Sha512 => "sha512",
    };
    [(alg.to_owned(), d.hex().to_owned())].into_iter().collect()
}

fn obj_digest(obj: &Object) -> oci::Digest {
    format!("sha256:{}", obj.sha256)
        .parse()
        .unwrap_or_else(|_| unreachable!("a sha256 is a digest"))
}

fn record_ratelimit(metrics: &Metrics, upstream: &str, h: &HeaderMap) {
    for (header_name, metric) in [
        ("ratelimit-limit", "pinproxy_upstream_ratelimit_limit"),
        (
            "ratelimit-remaining",
            "pinproxy_upstream_ratelimit_remaining",
        ),
    ] {
        if let Some((n, _)) = h
            .get(header_name)
            .and_then(|v| v.to_str().ok())
            .and_then(oci::auth::ratelimit)
        {
            metrics.gauge_set(
                metric,
                &[("upstream", upstream)],
                i64::try_from(n).unwrap_or(i64::MAX),
            );
        }
    }
}

async fn blob_source(
    up: Arc<OciUpstream>,
    repo: oci::RepoName,
    digest: oci::Digest,
    coord: String,
    metrics: Arc<Metrics>,
) -> Result<Source, Error> {
    let resp = up
        .send(
            Method::GET,
            &repo,
            &format!("blobs/{digest}"),
            HeaderMap::new(),
            &metrics,
        )
        .await?;
    if !resp.status().is_success() {
        return Err(upstream::status_error(
            up.name(),
            resp.status(),
            resp.headers(),
            oci::ErrorCode::BlobUnknown,
        ));
    }
    let total = upstream::content_length(resp.headers());
    let name = up.name().to_owned();
    let stream = upstream::body_stream(&name, resp);
    let digests = digests_of(&digest);
    Ok(Source {
        stream,
        total,
        expect: Expect {
            size: total,
            digest: Expected::from_oci(&digest),
            ..Expect::default()
        },
        limit: None,
        media_type: None,
        idle_timeout: up.cfg.http.idle_timeout,
        upstream: name.clone(),
        headers: Vec::new(),
        events: Box::new(move |v, _| {
            vec![Event::Pin(Pin {
                coordinate: coord,
                sha256: v.sha256,
                size: v.size,
                media_type: None,
                upstream: name,
                digests,
                verified: PinVerified::Digest,
            })]
        }),
    })
}

/// Fetches a manifest (by tag or digest). `expected` is the digest a by-digest request
/// promised; for tags the upstream's `Docker-Content-Digest` is the promise. `tag_coord` makes
/// the fill also record the tag's resolution.
#[allow(clippy::too_many_arguments)]
async fn manifest_source(
    up: Arc<OciUpstream>,
    repo: oci::RepoName,
    reference: String,
    accept: String,
    expected: Option<oci::Digest>,
    tag_coord: Option<String>,
    limit: u64,
    metrics: Arc<Metrics>,
) -> Result<Source, Error> {
    let resp = up
        .send(
            Method::GET,
            &repo,
            &format!("manifests/{reference}"),
            upstream::accept_header(&accept),
            &metrics,
        )
        .await?;
    record_ratelimit(&metrics, up.name(), resp.headers());
    if !resp.status().is_success() {
        return Err(upstream::status_error(
            up.name(),
            resp.status(),
            resp.headers(),
            oci::ErrorCode::ManifestUnknown,
        ));
    }
    let total = upstream::content_length(resp.headers());
    if total.is_some_and(|t| t > limit) {
        return Err(Error::upstream(
            Kind::BadGateway,
            format!("{}: manifest larger than {limit} bytes", up.name()),
        ));
    }
    let header_digest: Option<oci::Digest> =
        upstream::header_str(resp.headers(), "docker-content-digest").and_then(|d| d.parse().ok());
    if let (Some(e), Some(h)) = (&expected, &header_digest) {
        if e != h {
            return Err(Error::upstream(
                Kind::BadGateway,
                format!("{}: asked for {e}, upstream says it sent {h}", up.name()),
            ));
        }
    }
    let promised = expected.or(header_digest);
    let media_type = upstream::header_str(resp.headers(), "content-type")
        .map(|c| oci::media::essence(&c).to_owned());
    let name = up.name().to_owned();
    let stream = upstream::body_stream(&name, resp);
    let promised2 = promised.clone();
    Ok(Source {
        stream,
        total,
        expect: Expect {
            size: total,
            digest: promised.as_ref().and_then(Expected::from_oci),
            ..Expect::default()
        },
        limit: Some(limit),
        media_type,
        idle_timeout: up.cfg.http.idle_timeout,
        upstream: name.clone(),
        headers: Vec::new(),
        events: Box::new(move |v, mt| {
            let digest = promised2.unwrap_or_else(|| {
                format!("sha256:{}", v.sha256)
                    .parse()
                    .unwrap_or_else(|_| unreachable!())
            });
            let mut evs = vec![Event::Pin(Pin {
                coordinate: format!("oci:{name}/{repo}@{digest}"),
                sha256: v.sha256,
                size: v.size,
                media_type: mt.map(str::to_owned),
                upstream: name.clone(),
                digests: digests_of(&digest),
                verified: if v.checked {
                    PinVerified::Digest
                } else {
                    PinVerified::FirstSeen
                },
            })];
            if let Some(tag) = tag_coord {
                evs.push(Event::Resolve(Resolution {
                    coordinate: tag,
                    target: digest.to_string(),
                    sha256: v.sha256,
                    size: v.size,
                    media_type: mt.map(str::to_owned),
                    upstream: name,
                    etag: None,
                    last_modified: None,
                }));
            }
            evs
        }),
    })
}

// ---- responses -----------------------------------------------------------------------

fn blob_headers(digest: &oci::Digest) -> ObjectHeaders {
    ObjectHeaders {
        content_type: "application/octet-stream",
        etag: Some(digest.to_string()),
        cache_control: None,
        extra: vec![(
            http::HeaderName::from_static("docker-content-digest"),
            HeaderValue::from_str(&digest.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("")),
        )],
    }
}

fn serve_object(
    obj: Arc<Object>,
    digest: &oci::Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, Error> {
    crate::serve::object(obj, &blob_headers(digest), headers, head)
}

async fn serve_fill(
    fill: &Arc<Fill>,
    digest: &oci::Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, Error> {
    crate::serve::fill(fill, &blob_headers(digest), headers, head).await
}
