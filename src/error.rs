//! The engine's one error type. Every failure carries where it came from (`Origin`) and what
//! kind of failure it is (`Kind`); `into_response` is the single place where that becomes a
//! protocol-correct HTTP response. `Display` is for humans and logs.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The request was wrong.
    Client,
    /// The upstream failed, answered something unusable, or sent bytes that do not verify.
    Upstream,
    /// Our own disk or index failed.
    Store,
    /// A bug or an unexpected state in pinproxy.
    Internal,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Client => "client",
            Self::Upstream => "upstream",
            Self::Store => "store",
            Self::Internal => "internal",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// 400 with the protocol's code (NAME_INVALID, DIGEST_INVALID, ...).
    Invalid(oci::ErrorCode),
    /// 404 with the protocol's code. Only ever produced by a real "not there" answer.
    NotFound(oci::ErrorCode),
    /// 401: the client did not present a valid read token.
    Unauthorized,
    /// 403.
    Denied,
    /// 405: pushes, deletes, uploads on a pull-through cache.
    Unsupported,
    /// 416 with the object's size.
    RangeNotSatisfiable { size: u64 },
    /// 429 from the upstream, nothing cached to serve instead.
    RateLimited { retry_after: Option<u64> },
    /// 502: the upstream answered with an error or with bytes that do not verify.
    BadGateway,
    /// 502: no connection to the upstream.
    Unreachable,
    /// 504: the upstream did not answer (or stalled) in time.
    Timeout,
    /// 503: pinproxy is shutting down or the route is not configured.
    Unavailable,
    /// 507: the disk is full.
    InsufficientStorage,
    /// 500.
    Internal,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub origin: Origin,
    pub kind: Kind,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.origin, self.message)
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn new(origin: Origin, kind: Kind, message: impl Into<String>) -> Self {
        Self {
            origin,
            kind,
            message: message.into(),
        }
    }
    pub fn client(kind: Kind, message: impl Into<String>) -> Self {
        Self::new(Origin::Client, kind, message)
    }
    pub fn upstream(kind: Kind, message: impl Into<String>) -> Self {
        Self::new(Origin::Upstream, kind, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Origin::Internal, Kind::Internal, message)
    }

    pub fn store(e: &crate::store::StoreError) -> Self {
        let kind = if e.is_disk_full() {
            Kind::InsufficientStorage
        } else {
            Kind::Internal
        };
        Self::new(Origin::Store, kind, e.to_string())
    }

    /// Whether a cached copy should be served instead of this error (stale-if-error): any
    /// upstream failure except a real "not found".
    pub fn allows_stale(&self) -> bool {
        self.origin == Origin::Upstream && !matches!(self.kind, Kind::NotFound(_) | Kind::Denied)
    }

    pub fn status(&self) -> StatusCode {
        match &self.kind {
            Kind::Invalid(_) => StatusCode::BAD_REQUEST,
            Kind::NotFound(_) => StatusCode::NOT_FOUND,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Denied => StatusCode::FORBIDDEN,
            Kind::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Kind::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Kind::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Kind::BadGateway | Kind::Unreachable => StatusCode::BAD_GATEWAY,
            Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn oci_code(&self) -> oci::ErrorCode {
        use oci::ErrorCode as C;
        match &self.kind {
            Kind::Invalid(c) | Kind::NotFound(c) => *c,
            Kind::Unauthorized => C::Unauthorized,
            Kind::Denied => C::Denied,
            Kind::Unsupported => C::Unsupported,
            Kind::RangeNotSatisfiable { .. } => C::SizeInvalid,
            Kind::RateLimited { .. } => C::TooManyRequests,
            _ => C::Unavailable,
        }
    }

    /// Renders the error in the protocol the request spoke.
    pub fn into_response(self, proto: Proto, head: bool) -> Response<Body> {
        let status = self.status();
        let (content_type, bytes) = match proto {
            Proto::Oci => (
                "application/json",
                oci::error_body(self.oci_code(), &self.message, None),
            ),
            Proto::Npm => ("application/json", npm::error_body(&self.message)),
            // Maven and Gradle only look at the status; the text is for the person reading
            // the build log. Never HTML.
            Proto::Maven | Proto::Plain => (
                "text/plain; charset=utf-8",
                format!("{}\n", self.message).into_bytes(),
            ),
        };
        let len = bytes.len();
        let mut resp = Response::new(if head {
            body::empty()
        } else {
            body::full(Bytes::from(bytes))
        });
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        match &self.kind {
            Kind::RateLimited { retry_after } => {
                h.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.unwrap_or(60)),
                );
            }
            Kind::Unavailable | Kind::Timeout | Kind::Unreachable => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(10u32));
            }
            Kind::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
            }
            Kind::Unauthorized => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"pinproxy\", charset=\"UTF-8\""),
                );
            }
            _ => {}
        }
        resp
    }
}

/// Which protocol's error format a response uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Oci,
    Npm,
    Maven,
    Plain,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oci => "oci",
            Self::Npm => "npm",
            Self::Maven => "maven",
            Self::Plain => "ops",
        }
    }

    /// The protocol a path belongs to, for errors raised before routing succeeded.
    pub fn for_path(path: &str) -> Self {
        if path == "/npm" || path.starts_with("/npm/") {
            Self::Npm
        } else if path == "/maven" || path.starts_with("/maven/") {
            Self::Maven
        } else {
            Self::Oci
        }
    }

    pub fn for_route(route: &crate::route::Route) -> Self {
        match route {
            crate::route::Route::Oci(_) => Self::Oci,
            crate::route::Route::Npm(_) => Self::Npm,
            crate::route::Route::Maven(_) => Self::Maven,
            _ => Self::Plain,
        }
    }
}

impl From<npm::Error> for Error {
    fn from(e: npm::Error) -> Self {
        match e {
            npm::Error::PathInvalid(_) => {
                Self::client(Kind::NotFound(oci::ErrorCode::NameUnknown), e.to_string())
            }
            // Only the upstream's documents are scanned: a broken one is its failure.
            npm::Error::DocumentInvalid(_) => Self::upstream(Kind::BadGateway, e.to_string()),
            _ => Self::client(Kind::Invalid(oci::ErrorCode::NameInvalid), e.to_string()),
        }
    }
}

impl From<maven::Error> for Error {
    fn from(e: maven::Error) -> Self {
        match e {
            maven::Error::PathInvalid(_) => {
                Self::client(Kind::Invalid(oci::ErrorCode::NameInvalid), e.to_string())
            }
            // Only upstream documents are parsed.
            maven::Error::MetadataInvalid(_) => Self::upstream(Kind::BadGateway, e.to_string()),
        }
    }
}

impl From<oci::Error> for Error {
    fn from(e: oci::Error) -> Self {
        let code = e.code();
        let kind = if code.status() == StatusCode::NOT_FOUND {
            Kind::NotFound(code)
        } else if code.status() == StatusCode::METHOD_NOT_ALLOWED {
            Kind::Unsupported
        } else {
            Kind::Invalid(code)
        };
        Self::client(kind, e.to_string())
    }
}
