//! Error codes and the JSON error body (distribution-spec §Error Codes, checklist OCI-E1).

use std::fmt;

use http::StatusCode;

/// The error codes a pull-through cache reports: the spec's codes that a pull can produce,
/// plus `RANGE_INVALID` and `UNAVAILABLE`, which distribution registers and clients already
/// understand. `BLOB_UPLOAD_INVALID` and `TAG_INVALID` are left out because only push
/// produces them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    RangeInvalid,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    Unavailable,
}

impl ErrorCode {
    /// The wire form, e.g. `"MANIFEST_UNKNOWN"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::RangeInvalid => "RANGE_INVALID",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::Unavailable => "UNAVAILABLE",
        }
    }

    /// The status code that goes with the code (distribution's registrations):
    /// unknowns 404, invalids 400, ranges 416, then 401, 403, 405, 429, 503.
    ///
    /// `UNSUPPORTED` is 405 because its main use here is refusing push on a pull-through
    /// cache. `UNAVAILABLE` is 503; an engine that knows it was an upstream gateway failure may
    /// prefer 502/504 with the same body.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BlobUnknown
            | Self::BlobUploadUnknown
            | Self::ManifestBlobUnknown
            | Self::ManifestUnknown
            | Self::NameUnknown => StatusCode::NOT_FOUND,
            Self::DigestInvalid | Self::ManifestInvalid | Self::NameInvalid | Self::SizeInvalid => {
                StatusCode::BAD_REQUEST
            }
            Self::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Denied => StatusCode::FORBIDDEN,
            Self::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON error body, `{"errors":[{"code":"…","message":"…","detail":…}]}`, to be sent with
/// `Content-Type: application/json`. `detail` is left out when `None` (it is optional in the
/// spec, and `null` would be a value some clients try to interpret).
pub fn error_body(code: ErrorCode, message: &str, detail: Option<&serde_json::Value>) -> Vec<u8> {
    let mut error = serde_json::Map::new();
    error.insert("code".into(), code.as_str().into());
    error.insert("message".into(), message.into());
    if let Some(detail) = detail {
        error.insert("detail".into(), detail.clone());
    }
    let body = serde_json::json!({ "errors": [error] });
    // Serialising a `Value` cannot fail (all keys are strings); an empty body is still a
    // valid error response should that ever change.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes() {
        let check = |code: ErrorCode, s: &str, status: u16| {
            assert_eq!((code.as_str(), code.status().as_u16()), (s, status));
            assert_eq!(code.to_string(), s);
        };
        check(ErrorCode::BlobUnknown, "BLOB_UNKNOWN", 404);
        check(ErrorCode::BlobUploadUnknown, "BLOB_UPLOAD_UNKNOWN", 404);
        check(ErrorCode::DigestInvalid, "DIGEST_INVALID", 400);
        check(ErrorCode::ManifestBlobUnknown, "MANIFEST_BLOB_UNKNOWN", 404);
        check(ErrorCode::ManifestInvalid, "MANIFEST_INVALID", 400);
        check(ErrorCode::ManifestUnknown, "MANIFEST_UNKNOWN", 404);
        check(ErrorCode::NameInvalid, "NAME_INVALID", 400);
        check(ErrorCode::NameUnknown, "NAME_UNKNOWN", 404);
        check(ErrorCode::RangeInvalid, "RANGE_INVALID", 416);
        check(ErrorCode::SizeInvalid, "SIZE_INVALID", 400);
        check(ErrorCode::Unauthorized, "UNAUTHORIZED", 401);
        check(ErrorCode::Denied, "DENIED", 403);
        check(ErrorCode::Unsupported, "UNSUPPORTED", 405);
        check(ErrorCode::TooManyRequests, "TOOMANYREQUESTS", 429);
        check(ErrorCode::Unavailable, "UNAVAILABLE", 503);
    }

    #[test]
    fn bodies() {
        let body = error_body(ErrorCode::ManifestUnknown, "manifest unknown", None);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
        );
        let detail = json!({"Tag": "3.20"});
        let body = error_body(ErrorCode::NameUnknown, "quote \" and ü", Some(&detail));
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            json!({"errors":[{"code":"NAME_UNKNOWN","message":"quote \" and ü","detail":{"Tag":"3.20"}}]})
        );
    }
}
