//! Serving stored objects and in-flight fills: full, ranged (206/416) and conditional (304)
//! responses shared by every protocol, so HEAD and GET always agree on every header and
//! every protocol gets the same Range semantics.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use tracing::debug;

use crate::body::{self, Body};
use crate::error::{Error, Kind};
use crate::fill::{Fill, Object, State, object_body, reader_body};

/// The protocol-specific headers of an immutable object.
#[derive(Clone)]
pub struct ObjectHeaders {
    pub content_type: &'static str,
    /// A strong validator, unquoted (e.g. `sha256:…`); compared with If-None-Match. `None`
    /// when it is not known yet (an npm tarball still being filled).
    pub etag: Option<String>,
    pub cache_control: Option<&'static str>,
    pub extra: Vec<(HeaderName, HeaderValue)>,
}

impl ObjectHeaders {
    fn builder(&self) -> http::response::Builder {
        let mut b = Response::builder()
            .header(header::CONTENT_TYPE, self.content_type)
            .header(header::ACCEPT_RANGES, "bytes");
        if let Some(etag) = &self.etag {
            b = b.header(header::ETAG, format!("\"{etag}\""));
        }
        if let Some(cc) = self.cache_control {
            b = b.header(header::CACHE_CONTROL, cc);
        }
        for (k, v) in &self.extra {
            b = b.header(k, v);
        }
        b
    }
}

/// Whether an If-None-Match header names `etag` (quoted or bare, weak or strong, or `*`).
pub fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == etag || t == "*")
}

/// Serves a published object.
pub fn object(
    obj: Arc<Object>,
    meta: &ObjectHeaders,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, Error> {
    let size = obj.size;
    respond(meta, headers, head, size, |start, end| {
        object_body(obj, start, end)
    })
}

/// Serves a published object whose bytes are already in memory (small, hot objects): the
/// same headers, validators and ranges as [`object`], without touching the disk.
pub fn object_bytes(
    bytes: bytes::Bytes,
    meta: &ObjectHeaders,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, Error> {
    let size = bytes.len() as u64;
    respond(meta, headers, head, size, |start, end| {
        body::full(bytes.slice(start as usize..end as usize))
    })
}

/// A complete object's response: 304 on a matching If-None-Match, else 200/206/416 with
/// the body `body(start, end)` gives (none for HEAD).
fn respond(
    meta: &ObjectHeaders,
    headers: &HeaderMap,
    head: bool,
    size: u64,
    body: impl FnOnce(u64, u64) -> Body,
) -> Result<Response<Body>, Error> {
    let b = meta.builder();
    if meta
        .etag
        .as_deref()
        .is_some_and(|e| etag_matches(headers, e))
    {
        return b
            .status(StatusCode::NOT_MODIFIED)
            .body(body::empty())
            .map_err(|e| Error::internal(e.to_string()));
    }
    let (b, start, end) = ranged(b, headers, size)?;
    let body = if head {
        body::empty()
    } else {
        body(start, end)
    };
    b.body(body).map_err(|e| Error::internal(e.to_string()))
}

/// Serves an object that is still being filled: headers as soon as the upstream answered,
/// bytes as they land on disk, the last byte only after verification.
pub async fn fill(
    fill: &Arc<Fill>,
    meta: &ObjectHeaders,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, Error> {
    let p = fill.started().await;
    // What the source promised about its bytes (true once they verified) goes out too.
    let mut meta = meta.clone();
    meta.extra.extend(p.headers.iter().cloned());
    let total = match &p.state {
        State::Failed(e) => return Err(e.clone()),
        State::Done(obj) => return object(obj.clone(), &meta, headers, head),
        _ => p.total,
    };
    let b = meta.builder();
    let Some(size) = total else {
        // No length known: stream everything; the last byte still waits for verification.
        let body = if head {
            body::empty()
        } else {
            reader_body(fill.subscribe(), 0, u64::MAX)
        };
        return b
            .status(StatusCode::OK)
            .body(body)
            .map_err(|e| Error::internal(e.to_string()));
    };
    let (b, start, end) = ranged(b, headers, size)?;
    let body = if head {
        body::empty()
    } else {
        reader_body(fill.subscribe(), start, end)
    };
    debug!(bytes = end - start, "streaming from an in-flight fill");
    b.body(body).map_err(|e| Error::internal(e.to_string()))
}

/// Status, `Content-Range` and `Content-Length` for a (possibly) ranged request of an object
/// of `size` bytes, and the byte range to send.
pub(crate) fn ranged(
    b: http::response::Builder,
    headers: &HeaderMap,
    size: u64,
) -> Result<(http::response::Builder, u64, u64), Error> {
    let (b, start, end) = match crate::range::parse(headers, size) {
        Some(Ok((s, e))) => (
            b.status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {s}-{}/{size}", e - 1)),
            s,
            e,
        ),
        Some(Err(())) => {
            return Err(Error::client(
                Kind::RangeNotSatisfiable { size },
                "requested range not satisfiable",
            ));
        }
        None => (b.status(StatusCode::OK), 0, size),
    };
    Ok((b.header(header::CONTENT_LENGTH, end - start), start, end))
}
