//! npm registry protocol knowledge for a pull-through cache: pure parsing, negotiation and
//! scanning, no I/O, no clock, no environment.
//!
//! Implemented (section numbers are `protocols-checklist.md` §2):
//!
//! * Package names (`name`): validate-npm-package-name's rules for names that are valid for old
//!   packages (capitals and `~'!()*` allowed), the canonical `@scope/name` form, the upstream
//!   path form `@scope%2fname` and the conventional tarball path (NPM-T2).
//! * Request paths (`request`, NPM-P1, NPM-F1, §2.5): packuments at `/<name>`, `/@scope%2fname`,
//!   `/@scope%2Fname`, `/@scope/name` and `/%40scope%2fname`; tarballs at `/<name>/-/<file>.tgz`
//!   for every spelling of the name, with the version derived by stripping `<unscoped>-` and
//!   `.tgz` (never by splitting on `-`); single-version documents; ping, whoami and the two audit
//!   endpoints.
//! * Accept negotiation (`packument`, NPM-P2): the abbreviated ("corgi") document only when the
//!   client prefers it, the full document otherwise.
//! * `dist.tarball` rewriting (`packument`, NPM-T1/T2): a single-pass, allocation-light scan
//!   that validates the packument as JSON and returns the byte span of every
//!   `versions.<v>.dist.tarball` string, so the engine can splice in its own URLs while every
//!   other byte (`time`, `dist.integrity`, signatures, ...) stays identical (NPM-P4).
//! * Integrity (`integrity`, NPM-F4): SRI strings and legacy hex `shasum`, in pacote's order.
//! * Error bodies (NPM-E1): `{"error":"..."}`, which npm prints after the status line.
//!
//! Deliberately ignored:
//!
//! * Publishing, unpublishing, dist-tag edits and login are recognised only so the engine can
//!   refuse them ([`Endpoint::Unsupported`]); nothing here models a publish document.
//! * Search, `/-/npm/v1/keys`, attestations, `/-/package/<name>/dist-tags` and every other
//!   `/-/...` path: not routed ([`Error::PathInvalid`]), so the engine answers 404.
//! * Authentication flows (web login, CouchDB login, OTP): the proxy has its own credentials;
//!   an npm client's token is never forwarded upstream, so there is nothing to model.
//! * Abbreviated documents are never synthesised from full ones: the engine caches the
//!   upstream's own representation of each kind (NPM-P3).

pub mod integrity;
pub mod name;
pub mod packument;
pub mod request;

pub use integrity::Integrity;
pub use name::PackageName;
pub use request::Endpoint;

/// Everything that can go wrong while parsing npm protocol input.
///
/// The `String` payloads are the offending input (names, paths, versions) or a short
/// description of what is wrong with a document. Paths never carry credentials (npm sends
/// tokens in `Authorization` only), so they are safe to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A package name that is not valid even for old packages.
    #[error("invalid package name {0:?}")]
    NameInvalid(String),
    /// A path that is none of the registry endpoints this proxy serves.
    #[error("invalid path {0:?}")]
    PathInvalid(String),
    /// A version or dist-tag segment that cannot be one.
    #[error("invalid version {0:?}")]
    VersionInvalid(String),
    /// A packument that is not well-formed JSON or not an object.
    #[error("invalid packument: {0}")]
    DocumentInvalid(String),
}

/// The JSON error body `{"error":"<message>"}`, to be sent with `Content-Type:
/// application/json`. npm prints `body.error` after the status line (npm-registry-fetch
/// `lib/errors.js`), so the message is what the user sees.
pub fn error_body(message: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(message.len() + 12);
    body.extend_from_slice(b"{\"error\":");
    body.extend_from_slice(packument::json_string(message).as_bytes());
    body.push(b'}');
    body
}

#[cfg(test)]
mod tests;
