//! The HTTP server: accept loop (plain or rustls with h2 + http/1.1 by ALPN), the per-request
//! span, client authentication, dispatch on `Route`, and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{Instrument, debug, error, field, info, info_span, warn};

use crate::body::{self, Body};
use crate::config::Config;
use crate::error::{Error, Kind, Proto};
use crate::fill::Fills;
use crate::maven_proxy::MavenService;
use crate::metrics::Metrics;
use crate::npm_proxy::NpmService;
use crate::oci_proxy::{CacheOutcome, OUTCOME, OciService};
use crate::route::{self, Route};
use crate::store::Store;

/// Everything a request handler can reach.
pub struct App {
    pub config: Config,
    pub store: Arc<Store>,
    pub fills: Arc<Fills>,
    pub metrics: Arc<Metrics>,
    pub oci: OciService,
    pub npm: NpmService,
    pub maven: MavenService,
    oci_names: Vec<String>,
    next_id: AtomicU64,
}

impl App {
    /// Opens the store (rebuilding the index if needed) and builds the upstream clients.
    pub fn open(config: Config) -> Result<Arc<Self>, String> {
        let store = Store::open(&config.server.data_dir).map_err(|e| {
            format!(
                "cannot open the store at {}: {e}",
                config.server.data_dir.display()
            )
        })?;
        let store = Arc::new(store);
        let metrics = Arc::new(Metrics::default());
        let fills = Fills::new(store.clone(), metrics.clone());
        let oci = OciService::new(&config.oci, store.clone(), fills.clone(), metrics.clone())?;
        let oci_names = oci.names();
        let npm = NpmService::new(&config, store.clone(), fills.clone(), metrics.clone())?;
        let maven =
            MavenService::new(&config.maven, store.clone(), fills.clone(), metrics.clone())?;
        Ok(Arc::new(Self {
            config,
            store,
            fills,
            metrics,
            oci,
            npm,
            maven,
            oci_names,
            next_id: AtomicU64::new(1),
        }))
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let span = info_span!(
            "req",
            id,
            %peer,
            method = %req.method(),
            path = %req.uri().path(),
            proto = field::Empty,
            cache = field::Empty,
            upstream_status = field::Empty,
            status = field::Empty,
            bytes = field::Empty,
            ms = field::Empty,
        );
        let started = Instant::now();
        let work = async move {
            let method = req.method().clone();
            let head = method == Method::HEAD;
            let routed = route::route(
                &method,
                req.uri(),
                &self.oci_names,
                self.oci.default_upstream,
            );
            let (proto, resp) = match routed {
                Err(e) => {
                    let proto = Proto::for_path(req.uri().path());
                    (proto.as_str(), e.into_response(proto, head))
                }
                Ok(route) => {
                    let proto = Proto::for_route(&route);
                    (proto.as_str(), self.dispatch(route, req, peer).await)
                }
            };
            let s = tracing::Span::current();
            s.record("status", resp.status().as_u16());
            if let Some(len) = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
            {
                s.record("bytes", len);
            }
            s.record("ms", started.elapsed().as_millis() as u64);
            let class = match resp.status().as_u16() {
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            };
            let cache = OUTCOME
                .with(|c| c.get())
                .map_or("none", CacheOutcome::as_str);
            self.metrics.inc(
                "pinproxy_requests_total",
                &[("proto", proto), ("cache", cache), ("status", class)],
            );
            debug!("served");
            resp
        };
        OUTCOME
            .scope(std::cell::Cell::new(None), work)
            .instrument(span)
            .await
    }

    async fn dispatch(
        &self,
        route: Route,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let (method, headers) = (&parts.method, &parts.headers);
        let head = *method == Method::HEAD;
        let proto = Proto::for_route(&route);
        tracing::Span::current().record("proto", proto.as_str());
        if !matches!(route, Route::Healthz) && !self.authorized(headers) {
            return Error::client(Kind::Unauthorized, "a valid read token is required")
                .into_response(proto, head);
        }
        let result = match route {
            Route::Oci(r) => self.oci.handle(r, method, headers).await,
            Route::Npm(r) => {
                self.npm
                    .handle(r, method, &parts.uri, headers, peer.ip(), Some(body))
                    .await
            }
            Route::Maven(r) => self.maven.handle(r, method, headers).await,
            Route::Healthz => Ok(body::response(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                "ok\n",
                head,
            )),
            Route::Metrics => Ok(body::response(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
                head,
            )),
            Route::Pins => self
                .pins_json()
                .await
                .map(|j| body::response(StatusCode::OK, "application/json", j, head)),
            Route::Resolutions => self
                .resolutions_json()
                .await
                .map(|j| body::response(StatusCode::OK, "application/json", j, head)),
            Route::NotFound => Err(Error::client(
                Kind::NotFound(oci::ErrorCode::NameUnknown),
                "no such route",
            )),
        };
        match result {
            Ok(r) => r,
            Err(e) => {
                if e.status().is_server_error() {
                    warn!("{e}");
                } else {
                    debug!("{e}");
                }
                e.into_response(proto, head)
            }
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let tokens = &self.config.server.client_tokens;
        if tokens.is_empty() {
            return true;
        }
        let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let presented = if let Some(t) = v.strip_prefix("Bearer ") {
            t.trim().to_owned()
        } else if let Some(b) = v.strip_prefix("Basic ") {
            // `docker login` sends Basic: any user name, the token as password.
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b.trim()) else {
                return false;
            };
            let Ok(s) = String::from_utf8(raw) else {
                return false;
            };
            s.split_once(':')
                .map(|(_, p)| p.to_owned())
                .unwrap_or_default()
        } else {
            return false;
        };
        tokens
            .iter()
            .any(|t| constant_time_eq(t.as_bytes(), presented.as_bytes()))
    }

    async fn pins_json(&self) -> Result<String, Error> {
        let store = self.store.clone();
        let pins = tokio::task::spawn_blocking(move || store.pins())
            .await
            .map_err(|e| Error::internal(e.to_string()))?
            .map_err(|e| Error::store(&e))?;
        let rows: Vec<serde_json::Value> = pins
            .into_iter()
            .map(|p| {
                serde_json::json!({
                    "coordinate": p.pin.coordinate,
                    "sha256": p.pin.sha256.to_string(),
                    "size": p.pin.size,
                    "media_type": p.pin.media_type,
                    "upstream": p.pin.upstream,
                    "digests": p.pin.digests,
                    "verified": p.pin.verified,
                    "seq": p.seq,
                    "time": rfc3339(p.time_ms),
                })
            })
            .collect();
        serde_json::to_string_pretty(&rows).map_err(|e| Error::internal(e.to_string()))
    }

    async fn resolutions_json(&self) -> Result<String, Error> {
        let store = self.store.clone();
        let rs = tokio::task::spawn_blocking(move || store.resolutions())
            .await
            .map_err(|e| Error::internal(e.to_string()))?
            .map_err(|e| Error::store(&e))?;
        let rows: Vec<serde_json::Value> = rs
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "coordinate": r.resolution.coordinate,
                    "target": r.resolution.target,
                    "sha256": r.resolution.sha256.to_string(),
                    "size": r.resolution.size,
                    "media_type": r.resolution.media_type,
                    "upstream": r.resolution.upstream,
                    "seq": r.seq,
                    "time": rfc3339(r.time_ms),
                })
            })
            .collect();
        serde_json::to_string_pretty(&rows).map_err(|e| Error::internal(e.to_string()))
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Asks the server to stop and waits for it: stop accepting, let connections and fills
    /// finish within the configured grace period, sync the journal.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Binds the listen address and serves until `shutdown`.
pub async fn start(app: Arc<App>) -> Result<Server, String> {
    let listen = app.config.server.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = match &app.config.server.tls {
        Some(files) => Some(tls_acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let (stop, mut stopped) = watch::channel(false);
    let app2 = app.clone();
    let task = tokio::spawn(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Oversized request heads get 431 from hyper before they reach a handler.
        builder.http1().max_buf_size(64 * 1024).keep_alive(true);
        builder.http2().max_header_list_size(64 * 1024);
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let app = app2.clone();
                    let svc = hyper::service::service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(app.handle(req, peer).await) }
                    });
                    match &tls {
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                            let conn = graceful.watch(conn);
                            tokio::spawn(async move {
                                if let Err(e) = conn.await {
                                    debug!(%peer, "connection ended: {e}");
                                }
                            });
                        }
                        Some(acceptor) => {
                            let acceptor = acceptor.clone();
                            let builder = builder.clone();
                            let watcher = graceful.watcher();
                            tokio::spawn(async move {
                                let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => s,
                                    Ok(Err(e)) => { debug!(%peer, "TLS handshake failed: {e}"); return; }
                                    Err(_) => { debug!(%peer, "TLS handshake timed out"); return; }
                                };
                                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                                if let Err(e) = watcher.watch(conn).await {
                                    debug!(%peer, "connection ended: {e}");
                                }
                            });
                        }
                    }
                }
                _ = stopped.changed() => break,
            }
        }
        drop(listener);
        let grace = app2.config.server.shutdown_grace;
        info!(
            "shutting down: no longer accepting; waiting up to {} for connections and fills",
            humantime::format_duration(grace)
        );
        let deadline = Instant::now() + grace;
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            warn!("connections still open after the grace period; closing them");
        }
        info!("connections drained");
        let left = deadline.saturating_duration_since(Instant::now());
        if !app2.fills.wait_idle(left).await {
            warn!(
                in_flight = app2.fills.in_flight(),
                "fills still running after the grace period; their temp files are removed at next start"
            );
        }
        let store = app2.store.clone();
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(Ok(())) => info!("journal and index synced"),
            Ok(Err(e)) => error!("syncing the store failed: {e}"),
            Err(e) => error!("syncing the store failed: {e}"),
        }
    });
    info!(%addr, tls = app.config.server.tls.is_some(), data_dir = %app.config.server.data_dir.display(), "listening");
    Ok(Server {
        addr,
        app,
        stop,
        task,
    })
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    let certs = {
        let f =
            std::fs::File::open(cert).map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
        rustls_pemfile::certs(&mut std::io::BufReader::new(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?
    };
    if certs.is_empty() {
        return Err(format!("tls_cert {}: no certificate found", cert.display()));
    }
    let key = {
        let f = std::fs::File::open(key).map_err(|e| format!("tls_key {}: {e}", key.display()))?;
        rustls_pemfile::private_key(&mut std::io::BufReader::new(f))
            .map_err(|e| format!("tls_key {}: {e}", key.display()))?
            .ok_or_else(|| format!("tls_key {}: no private key found", key.display()))?
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("TLS certificate and key do not work together: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Time since the epoch in milliseconds (journal timestamps).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
