//! The outbound side: one HTTP client per configured upstream, and the OCI token dance.
//!
//! Upstream TLS uses the operating system's trust store (rustls with native roots) plus an
//! optional per-upstream CA file; `HTTPS_PROXY`/`NO_PROXY` are honoured by the client.
//! Redirects (Docker Hub's 307 to blob storage) are followed by the client, which drops
//! `Authorization` when the redirect leaves the original host and port, as the OCI spec asks.
//! Requests always ask for `Accept-Encoding: identity`: hashes see the bytes as stored.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tracing::{debug, warn};

use crate::config::{Credentials, HttpConfig, OciUpstreamConfig};
use crate::error::{Error, Kind};
use crate::metrics::Metrics;

/// A URL that is safe to log: no query string (pre-signed URLs carry credentials there).
pub struct SafeUrl<'a>(pub &'a reqwest::Url);

impl fmt::Display for SafeUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}",
            self.0.scheme(),
            self.0.host_str().unwrap_or("")
        )?;
        if let Some(port) = self.0.port() {
            write!(f, ":{port}")?;
        }
        f.write_str(self.0.path())?;
        if self.0.query().is_some() {
            f.write_str("?…")?;
        }
        Ok(())
    }
}

pub fn build_client(http: &HttpConfig) -> Result<reqwest::Client, String> {
    client_builder(http)?
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// A client that asks for gzip and decodes it: for documents that are not verified against
/// a digest of their encoded bytes (npm packuments), where it cuts transfer ~10x.
pub fn build_decoding_client(http: &HttpConfig) -> Result<reqwest::Client, String> {
    client_builder(http)?
        .gzip(true)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

fn client_builder(http: &HttpConfig) -> Result<reqwest::ClientBuilder, String> {
    let mut b = reqwest::Client::builder()
        .gzip(false)
        .user_agent(concat!("pinproxy/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(http.connect_timeout)
        .read_timeout(http.idle_timeout)
        .timeout(http.total_timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .pool_idle_timeout(Duration::from_secs(90));
    if let Some(ca) = &http.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate found", ca.display()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b)
}

/// Sends a request to the upstream `name`: a transport failure becomes the engine's error,
/// and every response is counted in `pinproxy_upstream_requests_total` and recorded on the
/// request's span.
pub async fn send(
    name: &str,
    req: reqwest::RequestBuilder,
    metrics: &Metrics,
) -> Result<reqwest::Response, Error> {
    let resp = req.send().await.map_err(|e| transport_error(name, &e))?;
    tracing::Span::current().record("upstream_status", resp.status().as_u16());
    metrics.inc(
        "pinproxy_upstream_requests_total",
        &[("upstream", name), ("status", resp.status().as_str())],
    );
    Ok(resp)
}

/// Maps a transport failure to the engine's error.
pub fn transport_error(upstream: &str, e: &reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        Kind::Timeout
    } else if e.is_connect() {
        Kind::Unreachable
    } else {
        Kind::BadGateway
    };
    // reqwest's Display includes the URL; strip the query in case it is a signed one.
    let msg = match e.url() {
        Some(u) => format!("{upstream}: {} ({})", without_url(e), SafeUrl(u)),
        None => format!("{upstream}: {e}"),
    };
    Error::upstream(kind, msg)
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" for url ({u})"), "");
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// One configured OCI registry.
pub struct OciUpstream {
    pub cfg: OciUpstreamConfig,
    client: reqwest::Client,
    /// Bearer tokens by scope, until they expire.
    tokens: Mutex<HashMap<String, oci::auth::Token>>,
    /// Set when the registry asked for Basic auth: then credentials go on every request.
    basic: std::sync::atomic::AtomicBool,
}

impl OciUpstream {
    pub fn new(cfg: OciUpstreamConfig) -> Result<Self, String> {
        let client = build_client(&cfg.http).map_err(|e| format!("upstream {}: {e}", cfg.name))?;
        Ok(Self {
            cfg,
            client,
            tokens: Mutex::new(HashMap::new()),
            basic: false.into(),
        })
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The repository name as the upstream knows it (Docker Hub's `library/` added).
    pub fn canonical(&self, name: &oci::RepoName) -> oci::RepoName {
        if self.cfg.docker_hub {
            name.with_library_prefix()
        } else {
            name.clone()
        }
    }

    fn url(&self, repo: &oci::RepoName, suffix: &str) -> String {
        let base = self.cfg.url.as_str().trim_end_matches('/');
        format!("{base}/v2/{repo}/{suffix}")
    }

    /// Sends a request for `repo`, doing the token dance when the registry asks for it.
    /// Returns whatever the upstream answered after authentication (any status).
    pub async fn send(
        &self,
        method: Method,
        repo: &oci::RepoName,
        suffix: &str,
        headers: HeaderMap,
        metrics: &Metrics,
    ) -> Result<reqwest::Response, Error> {
        let url = self.url(repo, suffix);
        let scope = oci::auth::pull_scope(repo);
        let mut retried_with: Option<String> = None;
        loop {
            let mut req = self
                .client
                .request(method.clone(), &url)
                .headers(headers.clone());
            req = req.header(header::ACCEPT_ENCODING, "identity");
            if let Some(token) = self.cached_token(&scope) {
                req = req.bearer_auth(token);
            } else if self.basic.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(c) = &self.cfg.credentials {
                    req = req.basic_auth(&c.username, Some(&c.password));
                }
            }
            let resp = send(self.name(), req, metrics).await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenges = resp
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| oci::auth::parse_www_authenticate(v).ok())
                .flatten()
                .collect::<Vec<_>>();
            let Some(challenge) = challenges.into_iter().next() else {
                return Ok(resp);
            };
            match challenge {
                oci::auth::Challenge::Bearer {
                    realm,
                    service,
                    scope: asked,
                    ..
                } => {
                    let want = asked.unwrap_or_else(|| scope.clone());
                    // A second 401 for the same scope after a fresh token is final: never loop.
                    if retried_with.as_deref() == Some(want.as_str()) {
                        return Ok(resp);
                    }
                    let token = self
                        .fetch_token(&realm, service.as_deref(), &want, metrics)
                        .await?;
                    self.tokens
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(scope.clone(), token);
                    retried_with = Some(want);
                }
                oci::auth::Challenge::Basic { .. } => {
                    if self.cfg.credentials.is_none() || retried_with.is_some() {
                        return Ok(resp);
                    }
                    self.basic.store(true, std::sync::atomic::Ordering::Relaxed);
                    retried_with = Some(String::new());
                }
            }
        }
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let t = map.get(scope)?;
        // Leave a margin so a token does not expire in flight.
        if t.expires_at > SystemTime::now() + Duration::from_secs(10) {
            Some(t.value.clone())
        } else {
            map.remove(scope);
            None
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        metrics: &Metrics,
    ) -> Result<oci::auth::Token, Error> {
        let url = oci::auth::token_url(realm, service, &[scope.to_owned()]);
        let parsed = reqwest::Url::parse(&url).map_err(|e| {
            Error::upstream(
                Kind::BadGateway,
                format!("{}: bad token realm `{realm}`: {e}", self.name()),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::upstream(
                Kind::BadGateway,
                format!("{}: token realm is not http(s)", self.name()),
            ));
        }
        let mut req = self.client.get(parsed);
        if let Some(Credentials { username, password }) = &self.cfg.credentials {
            req = req.basic_auth(username, Some(password));
        }
        let resp = send(self.name(), req, metrics).await?;
        let status = resp.status();
        debug!(upstream = self.name(), %status, scope, "token request");
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Error::upstream(
                Kind::RateLimited {
                    retry_after: retry_after(resp.headers()),
                },
                format!("{}: token service rate-limited", self.name()),
            ));
        }
        if !status.is_success() {
            let kind = if status.is_server_error() {
                Kind::BadGateway
            } else {
                Kind::Denied
            };
            warn!(upstream = self.name(), %status, "token service refused");
            return Err(Error::upstream(
                kind,
                format!("{}: token service answered {status}", self.name()),
            ));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport_error(self.name(), &e))?;
        oci::auth::parse_token_response(&body, SystemTime::now())
            .map_err(|e| Error::upstream(Kind::BadGateway, format!("{}: {e}", self.name())))
    }
}

pub fn retry_after(h: &HeaderMap) -> Option<u64> {
    h.get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Turns a non-success upstream status into the client-facing error. A 404 stays a 404 (with
/// the right code); everything else is an upstream failure, never a 404.
pub fn status_error(
    upstream: &str,
    status: StatusCode,
    headers: &HeaderMap,
    not_found: oci::ErrorCode,
) -> Error {
    match status {
        StatusCode::NOT_FOUND => Error::upstream(
            Kind::NotFound(not_found),
            format!("{upstream}: not found upstream"),
        ),
        // Docker Hub answers 401 for a repository that does not exist even after the token
        // dance; passing a challenge on would make clients loop (OCI-U4).
        StatusCode::UNAUTHORIZED => Error::upstream(
            Kind::NotFound(oci::ErrorCode::NameUnknown),
            format!(
                "{upstream}: repository unknown upstream or not visible with the configured credentials"
            ),
        ),
        StatusCode::FORBIDDEN => {
            Error::upstream(Kind::Denied, format!("{upstream}: access denied upstream"))
        }
        StatusCode::TOO_MANY_REQUESTS => Error::upstream(
            Kind::RateLimited {
                retry_after: retry_after(headers),
            },
            format!("{upstream}: rate limited upstream"),
        ),
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => Error::upstream(
            Kind::Timeout,
            format!("{upstream}: upstream timed out ({status})"),
        ),
        s => Error::upstream(
            Kind::BadGateway,
            format!("{upstream}: upstream answered {s}"),
        ),
    }
}

pub fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

pub fn accept_header(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(header::ACCEPT, v);
    }
    h
}

/// The body of an upstream response as the fill consumes it, with transport errors mapped
/// to the engine's error.
pub fn body_stream(upstream: &str, resp: reqwest::Response) -> crate::fill::ByteStream {
    use futures_util::StreamExt;
    let name = upstream.to_owned();
    Box::pin(
        resp.bytes_stream()
            .map(move |r| r.map_err(|e| transport_error(&name, &e))),
    )
}
