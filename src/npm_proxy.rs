//! npm pull-through: packuments, tarballs and the few other endpoints clients call.
//!
//! Policy (the facts come from the `npm` crate): a tarball `name@version` is immutable; it is
//! fetched once, verified against the packument's `dist.integrity` (sha512, or the legacy
//! `shasum`) while it streams, pinned, and served forever. A packument is mutable: each fetched
//! document is stored as content with the time it was observed (a resolution, history kept),
//! revalidated upstream with `If-None-Match` after the TTL, and served stale when the upstream
//! fails. Documents are stored exactly as the upstream sent them; `dist.tarball` is rewritten
//! when served, for the base URL of that request, so no client can plant a host in a document
//! another client receives.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use sha2::{Digest as _, Sha256};
use tracing::warn;

use crate::body::{self, Body};
use crate::config::{NpmConfig, NpmUpstreamConfig};
use crate::error::{Error, Kind, Origin};
use crate::fill::{Fills, Object, SingleFlight, Source};
use crate::metrics::Metrics;
use crate::oci_proxy::CacheOutcome;
use crate::serve::{self, ObjectHeaders};
use crate::store::{ContentHash, Event, Pin, Resolution, Store, Verified as PinVerified};
use crate::upstream;
use crate::verify::{Expect, Expected};

/// Documents up to this size are rendered once per base URL and kept in memory; larger ones
/// are spliced while streaming from the store.
const RENDER_IN_MEMORY: u64 = 4 << 20;

/// One configured npm registry.
pub struct NpmUpstream {
    pub cfg: NpmUpstreamConfig,
    /// Identity encoding: tarballs are hashed exactly as sent.
    client: reqwest::Client,
    /// gzip, decoded: packuments are documents, not verified bytes.
    doc_client: reqwest::Client,
}

impl NpmUpstream {
    fn new(cfg: NpmUpstreamConfig) -> Result<Self, String> {
        let client = upstream::build_client(&cfg.http)
            .map_err(|e| format!("npm upstream {}: {e}", cfg.url))?;
        let doc_client = upstream::build_decoding_client(&cfg.http)
            .map_err(|e| format!("npm upstream {}: {e}", cfg.url))?;
        Ok(Self {
            cfg,
            client,
            doc_client,
        })
    }

    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn same_origin(&self, url: &reqwest::Url) -> bool {
        url.scheme() == self.cfg.url.scheme()
            && url.host_str() == self.cfg.url.host_str()
            && url.port_or_known_default() == self.cfg.url.port_or_known_default()
    }

    async fn get(
        &self,
        url: reqwest::Url,
        headers: HeaderMap,
        metrics: &Metrics,
    ) -> Result<reqwest::Response, Error> {
        let req = self
            .client
            .get(url.clone())
            .headers(headers)
            .header(header::ACCEPT_ENCODING, "identity");
        self.send(req, &url, metrics).await
    }

    /// A document request: gzip on the wire, decoded before it reaches the store.
    async fn get_doc(
        &self,
        url: reqwest::Url,
        headers: HeaderMap,
        metrics: &Metrics,
    ) -> Result<reqwest::Response, Error> {
        let req = self.doc_client.get(url.clone()).headers(headers);
        self.send(req, &url, metrics).await
    }

    async fn send(
        &self,
        mut req: reqwest::RequestBuilder,
        url: &reqwest::Url,
        metrics: &Metrics,
    ) -> Result<reqwest::Response, Error> {
        // The token only ever goes to the registry's own origin.
        if let Some(t) = &self.cfg.token {
            if self.same_origin(url) {
                req = req.bearer_auth(t);
            }
        }
        upstream::send(self.name(), req, metrics).await
    }
}

/// A packument as stored: the upstream's bytes, when they were last confirmed, its validator.
#[derive(Debug)]
struct Doc {
    sha256: ContentHash,
    size: u64,
    path: std::path::PathBuf,
    etag: Option<String>,
    confirmed: SystemTime,
}

/// The request as routed: the npm endpoint plus what the base URL is derived from.
#[derive(Debug)]
pub struct NpmRequest {
    pub endpoint: npm::Endpoint,
}

pub struct NpmService {
    default: Option<Arc<NpmUpstream>>,
    scopes: Vec<(String, Arc<NpmUpstream>)>,
    cfg: NpmConfig,
    public_url: Option<reqwest::Url>,
    trusted_proxies: Vec<IpAddr>,
    tls: bool,
    client_tokens: bool,
    store: Arc<Store>,
    fills: Arc<Fills>,
    metrics: Arc<Metrics>,
    docs: moka::sync::Cache<String, Arc<Doc>>,
    scans: moka::sync::Cache<ContentHash, Arc<npm::packument::Scan>>,
    /// Rendered small documents by (document, base URL, gzip'd).
    rendered: moka::sync::Cache<(ContentHash, String, bool), Bytes>,
    refreshes: Arc<SingleFlight<Result<Arc<Doc>, Error>>>,
    confirmed: Mutex<HashMap<String, SystemTime>>,
}

/// Everything a packument fetch needs, owned, so it can run detached from the request.
#[derive(Clone)]
struct FetchCtx {
    up: Arc<NpmUpstream>,
    fills: Arc<Fills>,
    metrics: Arc<Metrics>,
    limit: u64,
}

impl NpmService {
    pub fn new(
        cfg: &crate::config::Config,
        store: Arc<Store>,
        fills: Arc<Fills>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let default = cfg
            .npm
            .upstream
            .clone()
            .map(NpmUpstream::new)
            .transpose()?
            .map(Arc::new);
        let scopes = cfg
            .npm
            .scopes
            .iter()
            .map(|(s, u)| NpmUpstream::new(u.clone()).map(|u| (s.clone(), Arc::new(u))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            default,
            scopes,
            cfg: cfg.npm.clone(),
            public_url: cfg.server.public_url.clone(),
            trusted_proxies: cfg.server.trusted_proxies.clone(),
            tls: cfg.server.tls.is_some(),
            client_tokens: !cfg.server.client_tokens.is_empty(),
            store,
            fills,
            metrics,
            docs: moka::sync::Cache::new(50_000),
            scans: moka::sync::Cache::builder()
                .weigher(|_, s: &Arc<npm::packument::Scan>| {
                    u32::try_from(s.spans.len() * 64 + s.dists.len() * 256).unwrap_or(u32::MAX)
                })
                .max_capacity(64 << 20)
                .build(),
            rendered: moka::sync::Cache::builder()
                .weigher(|_, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
                .max_capacity(128 << 20)
                .build(),
            refreshes: SingleFlight::new(),
            confirmed: Mutex::new(HashMap::new()),
        })
    }

    fn upstream_for(&self, name: &npm::PackageName) -> Result<Arc<NpmUpstream>, Error> {
        if let Some(scope) = name.scope() {
            if let Some((_, up)) = self
                .scopes
                .iter()
                .find(|(s, _)| s.trim_start_matches('@') == scope.trim_start_matches('@'))
            {
                return Ok(up.clone());
            }
        }
        self.default.clone().ok_or_else(|| {
            Error::new(
                Origin::Internal,
                Kind::Unavailable,
                "no npm upstream is configured: set `upstream` in the [npm] section of the config, \
                 pass --npm-upstream URL, or set PINPROXY_NPM_UPSTREAM (for example to the output of \
                 `npm config get registry`)",
            )
        })
    }

    pub async fn handle(
        &self,
        req: NpmRequest,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        peer: IpAddr,
        body: Option<hyper::body::Incoming>,
    ) -> Result<Response<Body>, Error> {
        let head = method == Method::HEAD;
        match req.endpoint {
            npm::Endpoint::Ping => Ok(body::response(
                StatusCode::OK,
                "application/json",
                b"{}".to_vec(),
                head,
            )),
            npm::Endpoint::Whoami => {
                if self.client_tokens {
                    // Only reached with a valid read token (the server checked it).
                    Ok(body::response(
                        StatusCode::OK,
                        "application/json",
                        br#"{"username":"pinproxy"}"#.to_vec(),
                        head,
                    ))
                } else {
                    Err(Error::client(
                        Kind::Unauthorized,
                        "pinproxy has no users: it is a read-only proxy",
                    ))
                }
            }
            npm::Endpoint::Unsupported { what } => Err(Error::client(
                Kind::Unsupported,
                format!("{what} is not possible through pinproxy, a read-only pull-through cache"),
            )),
            npm::Endpoint::AuditBulk | npm::Endpoint::AuditQuick => {
                let up = self
                    .default
                    .clone()
                    .ok_or_else(|| self.upstream_for_none())?;
                self.audit(&up, uri, headers, body).await
            }
            npm::Endpoint::Packument { name } => {
                let up = self.upstream_for(&name)?;
                let repr = npm::packument::negotiate(
                    headers
                        .get_all(header::ACCEPT)
                        .iter()
                        .filter_map(|v| v.to_str().ok()),
                );
                let base = self.base_url(uri, headers, peer)?;
                self.packument(&up, &name, repr, &base, headers, head).await
            }
            npm::Endpoint::Version { name, spec } => {
                let up = self.upstream_for(&name)?;
                self.version(&up, &name, &spec, head).await
            }
            npm::Endpoint::Tarball {
                name,
                file,
                version,
            } => {
                let up = self.upstream_for(&name)?;
                self.tarball(&up, &name, &file, version, headers, head)
                    .await
            }
        }
    }

    fn upstream_for_none(&self) -> Error {
        self.upstream_for(&"x".parse().unwrap_or_else(|_| unreachable!()))
            .err()
            .unwrap_or_else(|| Error::internal("unreachable"))
    }

    /// The registry URL this client uses, for `dist.tarball`: the configured public URL, or
    /// the request's own scheme and host (forwarded ones only from trusted proxies).
    fn base_url(&self, uri: &Uri, headers: &HeaderMap, peer: IpAddr) -> Result<String, Error> {
        if let Some(u) = &self.public_url {
            return Ok(format!("{u}npm/"));
        }
        let mut scheme = if self.tls { "https" } else { "http" };
        let mut host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| uri.authority().map(|a| a.as_str().to_owned()));
        if self.trusted_proxies.contains(&peer) {
            if let Some(p) = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
            {
                match p.split(',').next().map(str::trim) {
                    Some("https") => scheme = "https",
                    Some("http") => scheme = "http",
                    _ => {}
                }
            }
            if let Some(h) = headers
                .get("x-forwarded-host")
                .and_then(|v| v.to_str().ok())
            {
                host = h.split(',').next().map(|h| h.trim().to_owned());
            }
        }
        let host = host.filter(|h| valid_authority(h)).ok_or_else(|| {
            Error::client(
                Kind::Invalid(oci::ErrorCode::NameInvalid),
                "the request has no usable Host header",
            )
        })?;
        Ok(format!("{scheme}://{host}/npm/"))
    }

    // ---- packuments --------------------------------------------------------------------

    async fn packument(
        &self,
        up: &Arc<NpmUpstream>,
        name: &npm::PackageName,
        repr: npm::packument::Representation,
        base: &str,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        let (doc, stale) = self.current_doc(up, name, repr, false).await?;
        let mut resp = self
            .serve_doc(&doc, name, repr, base, headers, head)
            .await?;
        if let Some(e) = stale {
            let h = resp.headers_mut();
            h.insert("x-pinproxy-stale", HeaderValue::from_static("1"));
            if let Ok(v) = HeaderValue::from_str(&format!(
                "299 - \"pinproxy: upstream unavailable, serving the packument as last fetched ({})\"",
                e.message.replace('"', "'")
            )) {
                h.insert(header::WARNING, v);
            }
        }
        Ok(resp)
    }

    fn coord(
        up: &NpmUpstream,
        name: &npm::PackageName,
        repr: npm::packument::Representation,
    ) -> String {
        format!("npm:{}/{}#{}", up.name(), name, repr.as_str())
    }

    /// The packument to serve: the stored one while fresh, else revalidated or fetched; the
    /// stored one, with the failure, when the upstream fails.
    async fn current_doc(
        &self,
        up: &Arc<NpmUpstream>,
        name: &npm::PackageName,
        repr: npm::packument::Representation,
        force: bool,
    ) -> Result<(Arc<Doc>, Option<Error>), Error> {
        let coord = Self::coord(up, name, repr);
        let cached = self.cached_doc(&coord).await?;
        if let Some(doc) = &cached {
            let confirmed = self.last_confirmed(&coord, doc);
            if !force && confirmed + self.cfg.packument_ttl > SystemTime::now() {
                record(CacheOutcome::Hit);
                return Ok((doc.clone(), None));
            }
        }
        let ctx = FetchCtx {
            up: up.clone(),
            fills: self.fills.clone(),
            metrics: self.metrics.clone(),
            limit: self.cfg.max_packument_size,
        };
        let fut = fetch_doc(ctx, name.clone(), repr, coord.clone(), cached.clone());
        let fetched = self
            .refreshes
            .run(&coord, fut)
            .await
            .unwrap_or_else(|| Err(Error::internal("packument fetch failed")));
        match fetched {
            Ok(doc) => {
                record(if cached.as_ref().is_some_and(|c| c.sha256 == doc.sha256) {
                    CacheOutcome::Revalidated
                } else {
                    CacheOutcome::Miss
                });
                self.confirmed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(coord.clone(), doc.confirmed);
                self.docs.insert(coord, doc.clone());
                Ok((doc, None))
            }
            Err(e) if e.allows_stale() && cached.is_some() => {
                self.metrics
                    .inc("pinproxy_stale_served_total", &[("upstream", up.name())]);
                warn!(upstream = up.name(), package = %name, "upstream failed, serving the stored packument: {e}");
                record(CacheOutcome::Stale);
                Ok((cached.unwrap_or_else(|| unreachable!()), Some(e)))
            }
            Err(e) => Err(e),
        }
    }

    fn last_confirmed(&self, coord: &str, doc: &Doc) -> SystemTime {
        let c = self
            .confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(coord)
            .copied();
        c.map_or(doc.confirmed, |c| c.max(doc.confirmed))
    }

    async fn cached_doc(&self, coord: &str) -> Result<Option<Arc<Doc>>, Error> {
        if let Some(d) = self.docs.get(coord) {
            return Ok(Some(d));
        }
        let Some((entry, obj)) = crate::fill::resolved(&self.store, coord).await? else {
            return Ok(None);
        };
        let doc = Arc::new(Doc {
            sha256: obj.sha256,
            size: obj.size,
            path: obj.path.clone(),
            etag: entry.resolution.etag.clone(),
            confirmed: UNIX_EPOCH + Duration::from_millis(entry.time_ms),
        });
        self.docs.insert(coord.to_owned(), doc.clone());
        Ok(Some(doc))
    }

    /// The document's scan (tarball spans and dists), computed once per document however
    /// many requests ask at once: moka runs one initializer per key and the others wait.
    async fn scan(&self, doc: &Doc) -> Result<Arc<npm::packument::Scan>, Error> {
        if let Some(s) = self.scans.get(&doc.sha256) {
            return Ok(s);
        }
        let (scans, key, path) = (self.scans.clone(), doc.sha256, doc.path.clone());
        tokio::task::spawn_blocking(move || {
            scans
                .try_get_with(key, || -> Result<Arc<npm::packument::Scan>, Error> {
                    let bytes = std::fs::read(&path).map_err(|e| {
                        Error::new(
                            Origin::Store,
                            Kind::Internal,
                            format!("{}: {e}", path.display()),
                        )
                    })?;
                    npm::packument::scan(&bytes).map(Arc::new).map_err(|e| {
                        Error::upstream(
                            Kind::BadGateway,
                            format!("the upstream packument is not valid JSON: {e}"),
                        )
                    })
                })
                .map_err(|e| (*e).clone())
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
    }

    async fn serve_doc(
        &self,
        doc: &Arc<Doc>,
        name: &npm::PackageName,
        repr: npm::packument::Representation,
        base: &str,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        // The served bytes are a function of (stored document, base URL, representation), so
        // a hash of the three is a strong validator.
        let mut h = Sha256::new();
        h.update(doc.sha256.0);
        h.update(base.as_bytes());
        h.update(repr.as_str().as_bytes());
        let identity_etag = hex::encode(&h.finalize()[..20]);
        // Small documents are also offered gzip'd (NPM-P7); the encoded representation has
        // its own validator. Large ones stream identity-encoded.
        let gzip = doc.size <= RENDER_IN_MEMORY && accepts_gzip(headers);
        let etag = if gzip {
            format!("{identity_etag}-gzip")
        } else {
            identity_etag
        };
        let cache_control = format!("public, max-age={}", self.cfg.client_max_age.as_secs());
        let b = Response::builder()
            .header(header::CONTENT_TYPE, repr.content_type())
            .header(header::ETAG, format!("\"{etag}\""))
            .header(header::CACHE_CONTROL, &cache_control)
            .header(header::VARY, "Accept, Accept-Encoding");
        if serve::etag_matches(headers, &etag) {
            return b
                .status(StatusCode::NOT_MODIFIED)
                .body(body::empty())
                .map_err(|e| Error::internal(e.to_string()));
        }
        // Small documents: rendered once per (document, base URL) and served from memory.
        if doc.size <= RENDER_IN_MEMORY {
            let key = (doc.sha256, base.to_owned(), gzip);
            let bytes = match self.rendered.get(&key) {
                Some(bytes) => bytes,
                None => {
                    let replacements = self.replacements(doc, name, base).await?;
                    let path = doc.path.clone();
                    let raw = tokio::task::spawn_blocking(move || std::fs::read(path))
                        .await
                        .map_err(|e| Error::internal(e.to_string()))?
                        .map_err(|e| Error::new(Origin::Store, Kind::Internal, e.to_string()))?;
                    let mut out = splice(&raw, 0, &replacements);
                    if gzip {
                        out = tokio::task::spawn_blocking(move || gzip_bytes(&out))
                            .await
                            .map_err(|e| Error::internal(e.to_string()))?;
                    }
                    let out = Bytes::from(out);
                    self.rendered.insert(key, out.clone());
                    out
                }
            };
            let mut b = b
                .status(StatusCode::OK)
                .header(header::CONTENT_LENGTH, bytes.len());
            if gzip {
                b = b.header(header::CONTENT_ENCODING, "gzip");
            }
            let body = if head {
                body::empty()
            } else {
                body::full(bytes)
            };
            return b.body(body).map_err(|e| Error::internal(e.to_string()));
        }
        // Large ones are spliced while streaming from the store.
        let replacements = self.replacements(doc, name, base).await?;
        let removed: u64 = replacements.iter().map(|(s, e, _)| e - s).sum();
        let added: u64 = replacements.iter().map(|(_, _, r)| r.len() as u64).sum();
        let b = b
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, doc.size - removed + added);
        let body = if head {
            body::empty()
        } else {
            splice_body(doc.path.clone(), doc.size, replacements)
        };
        b.body(body).map_err(|e| Error::internal(e.to_string()))
    }

    /// Where each `dist.tarball` of the document goes, and what it becomes for `base`.
    async fn replacements(
        &self,
        doc: &Doc,
        name: &npm::PackageName,
        base: &str,
    ) -> Result<Vec<(u64, u64, Bytes)>, Error> {
        let scan = self.scan(doc).await?;
        Ok(scan
            .spans
            .iter()
            .map(|s| {
                let url = npm::packument::tarball_url(base, name, &s.version);
                (
                    s.start as u64,
                    s.end as u64,
                    Bytes::from(npm::packument::json_string(&url)),
                )
            })
            .collect())
    }

    // ---- tarballs ----------------------------------------------------------------------

    async fn tarball(
        &self,
        up: &Arc<NpmUpstream>,
        name: &npm::PackageName,
        file: &str,
        version: Option<String>,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        // A conventional file name says its version; a legacy one is looked up in the
        // packument.
        let version = match version {
            Some(v) => v,
            None => self.version_for_file(up, name, file).await?,
        };
        let coord = format!("npm:{name}@{version}");
        if let Some((obj, sri)) = self.pinned(&coord).await? {
            record(CacheOutcome::Hit);
            let meta = tarball_headers(sri.unwrap_or_else(|| format!("sha256-{}", obj.sha256)));
            return serve::object(obj, &meta, headers, head);
        }
        let dist = self.version_dist(up, name, &version).await?;
        let Some(integrity) = npm::Integrity::for_version(&dist) else {
            return Err(Error::upstream(
                Kind::BadGateway,
                format!(
                    "{name}@{version}: the packument gives no integrity or shasum, so the tarball cannot be verified"
                ),
            ));
        };
        let url = match dist
            .tarball
            .as_deref()
            .and_then(|t| reqwest::Url::parse(t).ok())
        {
            Some(u) if up.same_origin(&u) => u,
            // Tarballs are only ever fetched from the configured registry: a document that
            // points elsewhere gets the conventional path on the registry itself.
            _ => up
                .cfg
                .url
                .join(&name.tarball_path(&version))
                .map_err(|e| Error::internal(e.to_string()))?,
        };
        let (fill, leader) = self.fills.get_or_start(&coord, || {
            let up = up.clone();
            let metrics = self.metrics.clone();
            let coord = coord.clone();
            async move { tarball_source(up, url, integrity, dist, coord, metrics).await }
        });
        record(if leader {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Coalesced
        });
        // The registry's integrity is the strong validator, the same before and after the
        // tarball is pinned.
        serve::fill(&fill, &tarball_headers(integrity.to_sri()), headers, head).await
    }

    /// A pinned tarball and the registry integrity it was verified against.
    async fn pinned(&self, coord: &str) -> Result<Option<(Arc<Object>, Option<String>)>, Error> {
        let found = crate::fill::pinned(&self.store, coord).await?;
        Ok(found.map(|(obj, entry)| (obj, entry.pin.digests.get("verified").cloned())))
    }

    /// The `dist` of one version, from a stored packument when it lists the version, else
    /// from a freshly fetched one (a version newer than the stored document).
    async fn version_dist(
        &self,
        up: &Arc<NpmUpstream>,
        name: &npm::PackageName,
        version: &str,
    ) -> Result<npm::packument::VersionDist, Error> {
        use npm::packument::Representation::{Abbreviated, Full};
        for repr in [Abbreviated, Full] {
            let coord = Self::coord(up, name, repr);
            if let Some(doc) = self.cached_doc(&coord).await? {
                let scan = self.scan(&doc).await?;
                if let Some(d) = scan.dists.iter().rev().find(|d| d.version == version) {
                    return Ok(d.clone());
                }
            }
        }
        let (doc, _) = self.current_doc(up, name, Abbreviated, true).await?;
        let scan = self.scan(&doc).await?;
        scan.dists
            .iter()
            .rev()
            .find(|d| d.version == version)
            .cloned()
            .ok_or_else(|| {
                Error::upstream(
                    Kind::NotFound(oci::ErrorCode::ManifestUnknown),
                    format!("{name}@{version} is not in the registry's packument"),
                )
            })
    }

    async fn version_for_file(
        &self,
        up: &Arc<NpmUpstream>,
        name: &npm::PackageName,
        file: &str,
    ) -> Result<String, Error> {
        let (doc, _) = self
            .current_doc(up, name, npm::packument::Representation::Abbreviated, false)
            .await?;
        let scan = self.scan(&doc).await?;
        let suffix = format!("/{file}");
        scan.dists
            .iter()
            .find(|d| d.tarball.as_deref().is_some_and(|t| t.ends_with(&suffix)))
            .map(|d| d.version.clone())
            .ok_or_else(|| {
                Error::upstream(
                    Kind::NotFound(oci::ErrorCode::BlobUnknown),
                    format!("no version of {name} has the tarball {file}"),
                )
            })
    }

    // ---- pass-through ------------------------------------------------------------------

    /// `/<name>/<version-or-tag>`: not used by install paths; passed through uncached.
    async fn version(
        &self,
        up: &Arc<NpmUpstream>,
        name: &npm::PackageName,
        spec: &str,
        head: bool,
    ) -> Result<Response<Body>, Error> {
        let url = up
            .cfg
            .url
            .join(&format!("{}/{}", name.escaped(), encode_segment(spec)))
            .map_err(|e| Error::internal(e.to_string()))?;
        let resp = up.get(url, HeaderMap::new(), &self.metrics).await?;
        record(CacheOutcome::Pass);
        if !resp.status().is_success() {
            return Err(upstream::status_error(
                up.name(),
                resp.status(),
                resp.headers(),
                oci::ErrorCode::ManifestUnknown,
            ));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| upstream::transport_error(up.name(), &e))?;
        Ok(body::response(
            StatusCode::OK,
            "application/json",
            bytes.to_vec(),
            head,
        ))
    }

    /// Audit POSTs go to the upstream as they came (gzip body and all) and are not cached.
    async fn audit(
        &self,
        up: &Arc<NpmUpstream>,
        uri: &Uri,
        headers: &HeaderMap,
        body: Option<hyper::body::Incoming>,
    ) -> Result<Response<Body>, Error> {
        use http_body_util::BodyExt;
        let path = uri.path().strip_prefix("/npm/").unwrap_or(uri.path());
        let url = up
            .cfg
            .url
            .join(path)
            .map_err(|e| Error::internal(e.to_string()))?;
        let bytes = match body {
            Some(b) => http_body_util::Limited::new(b, 16 << 20)
                .collect()
                .await
                .map_err(|e| {
                    Error::client(
                        Kind::Invalid(oci::ErrorCode::SizeInvalid),
                        format!("audit body: {e}"),
                    )
                })?
                .to_bytes(),
            None => Bytes::new(),
        };
        let mut req = up.client.post(url.clone()).body(bytes);
        for name in [
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::ACCEPT,
        ] {
            if let Some(v) = headers.get(&name) {
                req = req.header(name, v);
            }
        }
        if let Some(t) = &up.cfg.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| upstream::transport_error(up.name(), &e))?;
        record(CacheOutcome::Pass);
        let status = resp.status();
        let mut out = Response::builder().status(status);
        for name in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
            if let Some(v) = resp.headers().get(&name) {
                out = out.header(name, v);
            }
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| upstream::transport_error(up.name(), &e))?;
        out.header(header::CONTENT_LENGTH, bytes.len())
            .body(body::full(bytes))
            .map_err(|e| Error::internal(e.to_string()))
    }
}

fn record(outcome: CacheOutcome) {
    outcome.record();
}

fn tarball_headers(etag: String) -> ObjectHeaders {
    ObjectHeaders {
        content_type: "application/octet-stream",
        etag: Some(etag),
        cache_control: Some("public, max-age=31536000, immutable"),
        extra: Vec::new(),
    }
}

/// Whether the client takes gzip (any `gzip` coding without `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|c| {
            let mut parts = c.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.replace(' ', "").eq_ignore_ascii_case("q=0") || p.replace(' ', "") == "q=0.0"
            });
            coding.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn gzip_bytes(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4),
        flate2::Compression::new(6),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(raw);
    enc.finish().unwrap_or_default()
}

fn valid_authority(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Copies `raw` (which starts at byte `offset` of the document) with each replacement that
/// falls inside it spliced in.
fn splice(raw: &[u8], offset: u64, replacements: &[(u64, u64, Bytes)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + replacements.len() * 32);
    let mut cursor = 0usize;
    for (s, e, r) in replacements {
        let (s, e) = ((s - offset) as usize, (e - offset) as usize);
        out.extend_from_slice(&raw[cursor..s]);
        out.extend_from_slice(r);
        cursor = e;
    }
    out.extend_from_slice(&raw[cursor..]);
    out
}

/// Streams a large stored document with the replacements spliced in, one chunk of about
/// 1 MiB at a time (a chunk never ends inside a replaced span), so memory stays flat however
/// many clients read it.
fn splice_body(path: std::path::PathBuf, size: u64, replacements: Vec<(u64, u64, Bytes)>) -> Body {
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};
    const CHUNK: u64 = 1 << 20;
    struct St {
        path: std::path::PathBuf,
        size: u64,
        pos: u64,
        next: usize,
        reps: Arc<Vec<(u64, u64, Bytes)>>,
        done: bool,
    }
    let st = St {
        path,
        size,
        pos: 0,
        next: 0,
        reps: Arc::new(replacements),
        done: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.done || st.pos >= st.size {
            return None;
        }
        let mut end = (st.pos + CHUNK).min(st.size);
        // Never cut a replaced span.
        let mut last = st.next;
        while let Some((s, e, _)) = st.reps.get(last) {
            if *s >= end {
                break;
            }
            if *e > end {
                end = *e;
            }
            last += 1;
        }
        let (pos, path, reps, first) = (st.pos, st.path.clone(), st.reps.clone(), st.next);
        let chunk = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(pos))?;
            let mut raw = Vec::with_capacity((end - pos) as usize);
            f.take(end - pos).read_to_end(&mut raw)?;
            if raw.len() as u64 != end - pos {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "stored document is short",
                ));
            }
            Ok(splice(&raw, pos, &reps[first..last]))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        st.pos = end;
        st.next = last;
        match chunk {
            Ok(c) => Some((Ok(Bytes::from(c)), st)),
            Err(e) => {
                st.done = true;
                Some((Err(e), st))
            }
        }
    });
    BodyExt::boxed(StreamBody::new(stream.map(|r| r.map(Frame::data))))
}

async fn fetch_doc(
    ctx: FetchCtx,
    name: npm::PackageName,
    repr: npm::packument::Representation,
    coord: String,
    prev: Option<Arc<Doc>>,
) -> Result<Arc<Doc>, Error> {
    let up = &ctx.up;
    let url = up
        .cfg
        .url
        .join(&name.escaped())
        .map_err(|e| Error::internal(e.to_string()))?;
    let mut h = HeaderMap::new();
    h.insert(
        header::ACCEPT,
        HeaderValue::from_static(repr.upstream_accept()),
    );
    if let Some(etag) = prev.as_ref().and_then(|p| p.etag.as_deref()) {
        if let Ok(v) = HeaderValue::from_str(etag) {
            h.insert(header::IF_NONE_MATCH, v);
        }
    }
    let resp = up.get_doc(url, h, &ctx.metrics).await?;
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED {
        if let Some(p) = prev {
            return Ok(Arc::new(Doc {
                sha256: p.sha256,
                size: p.size,
                path: p.path.clone(),
                etag: p.etag.clone(),
                confirmed: SystemTime::now(),
            }));
        }
        return Err(Error::upstream(
            Kind::BadGateway,
            format!("{}: 304 to an unconditional request", up.name()),
        ));
    }
    if !status.is_success() {
        return Err(upstream::status_error(
            up.name(),
            status,
            resp.headers(),
            oci::ErrorCode::NameUnknown,
        ));
    }
    let etag = upstream::header_str(resp.headers(), "etag").filter(|e| !e.starts_with("W/"));
    let total = upstream::content_length(resp.headers());
    if total.is_some_and(|t| t > ctx.limit) {
        return Err(Error::upstream(
            Kind::BadGateway,
            format!("{}: packument larger than {} bytes", up.name(), ctx.limit),
        ));
    }
    let media_type = Some(repr.content_type().to_owned());
    let upstream_name = up.name().to_owned();
    let etag2 = etag.clone();
    let coord2 = coord.clone();
    let stream = upstream::body_stream(&upstream_name, resp);
    let idle = up.cfg.http.idle_timeout;
    let limit = ctx.limit;
    // Keyed apart from tarballs and from other representations of the same package.
    let (fill, _) = ctx
        .fills
        .get_or_start(&format!("{coord}@fetch"), move || async move {
            Ok(Source {
                stream,
                total,
                expect: Expect {
                    size: total,
                    digest: None,
                    ..Expect::default()
                },
                limit: Some(limit),
                media_type,
                idle_timeout: idle,
                upstream: upstream_name.clone(),
                headers: Vec::new(),
                events: Box::new(move |v, mt| {
                    vec![Event::Resolve(Resolution {
                        coordinate: coord2,
                        target: format!("sha256:{}", v.sha256),
                        sha256: v.sha256,
                        size: v.size,
                        media_type: mt.map(str::to_owned),
                        upstream: upstream_name,
                        etag: etag2,
                        last_modified: None,
                    })]
                }),
            })
        });
    let obj = fill.finished().await?;
    // The document must at least be JSON we can scan; checked once here, not per request.
    Ok(Arc::new(Doc {
        sha256: obj.sha256,
        size: obj.size,
        path: obj.path.clone(),
        etag,
        confirmed: SystemTime::now(),
    }))
}

async fn tarball_source(
    up: Arc<NpmUpstream>,
    url: reqwest::Url,
    integrity: npm::Integrity,
    dist: npm::packument::VersionDist,
    coord: String,
    metrics: Arc<Metrics>,
) -> Result<Source, Error> {
    let resp = up.get(url, HeaderMap::new(), &metrics).await?;
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
    let expected = match &integrity {
        npm::Integrity::Sha512(b) => Expected::Sha512(*b),
        npm::Integrity::Sha384(b) => Expected::Sha384(*b),
        npm::Integrity::Sha256(b) => Expected::Sha256(*b),
        npm::Integrity::Sha1(b) => Expected::Sha1(*b),
    };
    // The pin keeps what the registry published: the integrity it was verified against
    // first, then `integrity` and `shasum` as the packument gave them.
    let mut digests = BTreeMap::new();
    digests.insert("verified".to_owned(), integrity.to_sri());
    if let Some(i) = &dist.integrity {
        digests.insert("integrity".to_owned(), i.clone());
    }
    if let Some(s) = &dist.shasum {
        digests.insert("shasum".to_owned(), s.clone());
    }
    Ok(Source {
        stream,
        total,
        expect: Expect {
            size: total,
            digest: Some(expected),
            ..Expect::default()
        },
        limit: None,
        media_type: Some("application/octet-stream".to_owned()),
        idle_timeout: up.cfg.http.idle_timeout,
        upstream: name.clone(),
        headers: Vec::new(),
        events: Box::new(move |v, mt| {
            vec![Event::Pin(Pin {
                coordinate: coord,
                sha256: v.sha256,
                size: v.size,
                media_type: mt.map(str::to_owned),
                upstream: name,
                digests,
                verified: PinVerified::Digest,
            })]
        }),
    })
}
