//! OCI distribution protocol knowledge for a pull-through cache: pure parsing and classification,
//! no I/O, no clock, no environment. Time is always passed in by the caller.
//!
//! Implemented (opencontainers/distribution-spec `spec.md` unless noted):
//!
//! * §Pulling manifests / §Pulling blobs: the `/v2/` URL space (`request`), the repository name,
//!   tag and digest grammars (`name`), and which responses are content-addressed
//!   ([`Cacheability`]).
//! * §Determining support (`GET /v2/`), §Listing tags, §Listing referrers: routing only.
//! * `content-negotiation.md`: manifest media types and the client `Accept` set (`media`).
//! * Token authentication (distribution `docs/content/spec/auth/token.md`, RFC 7235 §4.1,
//!   RFC 6750 §3): `WWW-Authenticate` challenges, token URLs, token responses (`auth`), and
//!   Docker Hub's `ratelimit-*` headers.
//! * §Error codes: the JSON error body and the status code of each code (`error`).
//!
//! Deliberately ignored:
//!
//! * Push: upload, mount, manifest PUT and DELETE are recognised only so the engine can refuse
//!   them with `UNSUPPORTED` ([`Endpoint::Upload`]); nothing here models an upload session.
//! * `GET /v2/_catalog`: recognised, not modelled (public registries do not serve it).
//! * Schema1 conversion: a proxy stores upstream bytes verbatim and never converts between
//!   manifest schemas, so schema1 is only a media type constant here.
//! * Manifest bodies: the crate never parses or re-serialises a manifest, because the digest is
//!   over the exact upstream bytes.

pub mod auth;
pub mod error;
pub mod media;
pub mod name;
pub mod request;

pub use error::{ErrorCode, error_body};
pub use name::{Algorithm, Digest, Reference, RepoName, Tag};
pub use request::Endpoint;

/// Whether a response is addressed by its content (and so can be kept forever) or can change
/// under the same URL. This is a protocol fact; how long a mutable answer may be served is the
/// engine's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cacheability {
    /// The bytes are fixed by a digest in the URL.
    Immutable,
    /// The URL names something that can be re-pointed (a tag, a tag list, a referrers list).
    Mutable,
}

/// Everything that can go wrong while parsing OCI protocol input.
///
/// The `String` payloads are the offending input (for names, tags and digests) or a short
/// description of the problem (for challenges and token responses). They never contain a token.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A repository name that does not match the distribution name grammar.
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    /// A tag that does not match `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    #[error("invalid tag {0:?}")]
    TagInvalid(String),
    /// A digest with an unsupported algorithm or a malformed hex part.
    #[error("invalid digest {0:?}")]
    DigestInvalid(String),
    /// A path under `/v2` that is none of the distribution API endpoints.
    #[error("unknown endpoint")]
    UnknownEndpoint,
    /// An upstream `WWW-Authenticate` header that cannot be parsed.
    #[error("invalid www-authenticate challenge: {0}")]
    ChallengeInvalid(String),
    /// An upstream token response that cannot be used.
    #[error("invalid token response: {0}")]
    TokenInvalid(String),
}

impl Error {
    /// The OCI error code to report to the client for this error.
    ///
    /// * Names, tags and digests follow OCI-M1: `NAME_INVALID`, `MANIFEST_INVALID` (the spec
    ///   has no tag code; distribution answers a bad reference with `MANIFEST_INVALID`/
    ///   `MANIFEST_UNKNOWN`) and `DIGEST_INVALID`, all `400`.
    /// * An unknown endpoint is `UNSUPPORTED` (`405`): the spec has no generic "not found"
    ///   code, `UNSUPPORTED` means "missing implementation", and a `404` would let clients
    ///   cache "absent" for something that was merely a path we do not serve (checklist X-07).
    /// * Challenge and token errors come from the upstream, not the client, so they are
    ///   `UNAVAILABLE` (`503`): the client did nothing wrong and may retry.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NameInvalid(_) => ErrorCode::NameInvalid,
            Self::TagInvalid(_) => ErrorCode::ManifestInvalid,
            Self::DigestInvalid(_) => ErrorCode::DigestInvalid,
            Self::UnknownEndpoint => ErrorCode::Unsupported,
            Self::ChallengeInvalid(_) | Self::TokenInvalid(_) => ErrorCode::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests;
