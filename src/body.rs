//! The one response body type, and the constructors everything uses.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Response body: a boxed stream of bytes whose error aborts the connection. An error after
/// the headers went out is how a client learns that a body will not complete.
pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A complete response with a known body; for HEAD the same headers and no body.
pub fn response(
    status: StatusCode,
    content_type: &'static str,
    bytes: impl Into<Bytes>,
    head: bool,
) -> Response<Body> {
    let bytes = bytes.into();
    let len = bytes.len();
    let mut r = Response::new(if head { empty() } else { full(bytes) });
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}
