//! A static file server over a Maven-layout directory, and the Debian repository it serves.
//!
//! [`StaticRepo`] is the plainest upstream there is: GET and HEAD of regular files (symlinks
//! followed) with `Content-Length`, `404 text/plain` for everything else, and a log of every
//! request so that tests can see what reached it. [`StaticRepo::stop`] closes the port at once,
//! so a test can show the proxy serving with its upstream gone.
//!
//! [`debian_maven_repo`] prepares what it serves for the real-Maven tests: a copy of the
//! repository Debian's Java packages install at `/usr/share/maven-repo` (many entries are
//! symlinks into `/usr/share/java`) with `.sha1` and `.md5` sidecars, which Debian does not
//! ship but Maven verifies downloads against. Debian's repository has no `maven-metadata.xml`
//! at all, so clients must name exact versions (plugins included).
#![allow(dead_code)]

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use md5::Md5;
use sha1::{Digest as _, Sha1};
use tokio::net::TcpListener;

use super::http_server::{self, ServerHandle, lock};

/// Where Debian's Java packages install their Maven-layout repository.
pub(crate) const DEBIAN_MAVEN_REPO: &str = "/usr/share/maven-repo";

/// One request as the server saw it, with the status it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Logged {
    pub(crate) method: String,
    /// The request path as sent (still percent-encoded), e.g. `/junit/junit/4.13.2/junit-4.13.2.pom`.
    pub(crate) path: String,
    pub(crate) status: u16,
}

struct Inner {
    root: PathBuf,
    log: Mutex<Vec<Logged>>,
}

/// A static file server on `127.0.0.1:<ephemeral>` over one directory.
pub(crate) struct StaticRepo {
    inner: Arc<Inner>,
    addr: SocketAddr,
    server: Mutex<Option<ServerHandle>>,
}

impl Drop for StaticRepo {
    fn drop(&mut self) {
        self.stop();
    }
}

impl StaticRepo {
    /// Serves the files under `root`.
    pub(crate) async fn start(root: impl Into<PathBuf>) -> Self {
        // Always a fresh ephemeral port (no restart), so no need for `http_server::bind`'s retry.
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("static_repo: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let inner = Arc::new(Inner {
            root: root.into(),
            log: Mutex::new(Vec::new()),
        });
        let server = spawn_server(listener, Arc::clone(&inner));
        Self {
            inner,
            addr,
            server: Mutex::new(Some(server)),
        }
    }

    /// `http://127.0.0.1:PORT/` (with the trailing slash): the base of the Maven layout.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Closes the listener and aborts every live connection: from now on a connection to
    /// the port is refused. The request log survives.
    pub(crate) fn stop(&self) {
        drop(lock(&self.server).take());
    }

    /// Every request so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<Logged> {
        lock(&self.inner.log).clone()
    }

    pub(crate) fn total_requests(&self) -> usize {
        lock(&self.inner.log).len()
    }

    /// Requests of `method` for exactly `path` (e.g. `/junit/junit/4.13.2/junit-4.13.2.jar`).
    pub(crate) fn hits(&self, method: &str, path: &str) -> usize {
        lock(&self.inner.log)
            .iter()
            .filter(|l| l.method == method && l.path == path)
            .count()
    }

    /// Each request as `METHOD /path -> status`, one a line (for failure messages).
    pub(crate) fn log_text(&self) -> String {
        lock(&self.inner.log)
            .iter()
            .map(|l| format!("{} {} -> {}\n", l.method, l.path, l.status))
            .collect()
    }
}

fn spawn_server(listener: TcpListener, inner: Arc<Inner>) -> ServerHandle {
    http_server::spawn(listener, move |req| Arc::clone(&inner).handle(req))
}

/// The file under `root` that `path` names, if it is a plain relative path: no `..`, no
/// percent-encoding, no backslash or NUL. Anything else is simply not found.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = path.strip_prefix('/')?;
    if rel.is_empty() || rel.contains(['%', '\\', '\0']) {
        return None;
    }
    let rel = Path::new(rel);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| root.join(rel))
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    r
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("pom" | "xml") => "text/xml",
        Some("jar") => "application/java-archive",
        Some("sha1" | "md5" | "sha256" | "sha512") => "text/plain",
        _ => "application/octet-stream",
    }
}

impl Inner {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = req.uri().path().to_owned();
        let response = self.respond(req.method(), &path).await;
        lock(&self.log).push(Logged {
            method: req.method().as_str().to_owned(),
            path,
            status: response.status().as_u16(),
        });
        Ok(response)
    }

    async fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let head = *method == Method::HEAD;
        if !head && *method != Method::GET {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let Some(file) = resolve(&self.root, path) else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        // `metadata` follows symlinks: a directory (or a dangling link) is not found.
        match tokio::fs::metadata(&file).await {
            Ok(m) if m.is_file() => {}
            _ => return text(StatusCode::NOT_FOUND, "not found\n"),
        }
        let bytes = match tokio::fs::read(&file).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return text(StatusCode::NOT_FOUND, "not found\n");
            }
            Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "read error\n"),
        };
        let len = bytes.len();
        let body = if head {
            Bytes::new()
        } else {
            Bytes::from(bytes)
        };
        let mut r = Response::new(Full::new(body));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(&file)),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        r
    }
}

// ---------------------------------------------------------------------------------------
// the Debian repository, with sidecars

/// Extensions of checksum sidecars: never given sidecars of their own.
const SIDECARS: [&str; 4] = ["sha1", "md5", "sha256", "sha512"];

/// Names the copy's fingerprint file (not a Maven path: no artifact is called that).
const STAMP: &str = ".pinproxy-source-stamp";

static DEBIAN_COPY: OnceLock<Option<PathBuf>> = OnceLock::new();

/// A copy of Debian's Maven repository ([`DEBIAN_MAVEN_REPO`]) with symlinks resolved and
/// `<file>.sha1` and `<file>.md5` (lowercase hex, as Maven Central has them) next to every
/// file; `None` if Debian's repository is not installed. Tests only read it.
///
/// The copy (about 1,300 files, 140 MB with the symlinks resolved; 3 s in a debug build)
/// lives in Cargo's per-target temp dir, not in `/tmp`, so nothing is left behind in `/tmp`
/// and a later run reuses it: it is rebuilt only when the source's fingerprint (every
/// path, size and modification time) changed, e.g. after a Debian package update.
pub(crate) fn debian_maven_repo() -> Option<&'static Path> {
    DEBIAN_COPY
        .get_or_init(|| {
            let src = Path::new(DEBIAN_MAVEN_REPO);
            src.is_dir().then(|| {
                prepare_copy(
                    src,
                    &Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-maven-repo"),
                )
            })
        })
        .as_deref()
}

fn prepare_copy(src: &Path, dest: &Path) -> PathBuf {
    let stamp = fingerprint(src);
    if std::fs::read_to_string(dest.join(STAMP)).is_ok_and(|s| s == stamp) {
        return dest.to_owned();
    }
    let started = Instant::now();
    let parent = dest.parent().expect("parent");
    std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
    // Built beside the destination and renamed into place, so that a concurrent or
    // interrupted run never sees half a copy.
    let building = tempfile::Builder::new()
        .prefix("debian-maven-repo.building.")
        .tempdir_in(parent)
        .expect("tempdir");
    let mut copied = Copied::default();
    copy_tree(src, building.path(), &mut copied);
    std::fs::write(building.path().join(STAMP), &stamp).expect("write the stamp");
    if dest.exists() {
        let _ = std::fs::remove_dir_all(dest);
    }
    match std::fs::rename(building.path(), dest) {
        Ok(()) => {}
        // Another test process got there first with the same source: use its copy.
        Err(_) if std::fs::read_to_string(dest.join(STAMP)).is_ok_and(|s| s == stamp) => {}
        Err(e) => panic!(
            "rename {} to {}: {e}",
            building.path().display(),
            dest.display()
        ),
    }
    eprintln!(
        "static_repo: copied {} ({} files, {} bytes) with sidecars to {} in {:.2?}",
        src.display(),
        copied.files,
        copied.bytes,
        dest.display(),
        started.elapsed()
    );
    dest.to_owned()
}

/// Every file under `root` (symlinks followed) as `path size mtime`, one a line, sorted.
fn fingerprint(root: &Path) -> String {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let p = entry.expect("dir entry").path();
            let m = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            if m.is_dir() {
                walk(root, &p, out);
            } else {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                let rel = p.strip_prefix(root).expect("under root").display();
                out.push(format!("{rel} {} {mtime}\n", m.len()));
            }
        }
    }
    let mut lines = Vec::new();
    walk(root, root, &mut lines);
    lines.sort();
    lines.concat()
}

#[derive(Default)]
struct Copied {
    files: usize,
    bytes: u64,
}

/// Copies `from` (a file or directory, symlinks followed) to `to`, adding sidecars.
fn copy_tree(from: &Path, to: &Path, copied: &mut Copied) {
    let meta = std::fs::metadata(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    if meta.is_dir() {
        std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
        let entries = std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        for entry in entries {
            let name = entry.expect("dir entry").file_name();
            copy_tree(&from.join(&name), &to.join(&name), copied);
        }
        return;
    }
    let bytes = std::fs::read(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    std::fs::write(to, &bytes).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    let is_sidecar = from
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| SIDECARS.contains(&e));
    if is_sidecar {
        return;
    }
    copied.files += 1;
    copied.bytes += bytes.len() as u64;
    let name = to.file_name().expect("file name").to_string_lossy();
    for (ext, hex) in [
        ("sha1", hex::encode(Sha1::digest(&bytes))),
        ("md5", hex::encode(Md5::digest(&bytes))),
    ] {
        let sidecar = to.with_file_name(format!("{name}.{ext}"));
        // Debian ships no sidecars; should a package start to, its own win (a shipped one
        // copied later overwrites this).
        if !sidecar.exists() {
            std::fs::write(&sidecar, hex).unwrap_or_else(|e| panic!("{}: {e}", sidecar.display()));
        }
    }
}
