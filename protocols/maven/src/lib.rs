//! Maven repository protocol knowledge for a pull-through cache: pure parsing and
//! classification, no I/O, no clock, no environment.
//!
//! Implemented (section numbers are `protocols-checklist.md` §3):
//!
//! * Layout (`layout`, MVN-L1..L5): request paths become a [`RepoPath`] whose [`Kind`] is an
//!   artifact with its [`Coordinates`] (parsed right to left from the groupId, artifactId and
//!   version directories, never by splitting the file name on `-`; `tar.gz`, `tar.bz2` and
//!   `tar.xz` are one extension), a checksum sidecar or `.asc` signature of any other kind,
//!   `maven-metadata.xml` at group/artifact or SNAPSHOT-version level, or a directory listing.
//!   Traversal, encoded separators and dots, control characters, backslashes and `:` are
//!   refused.
//! * Cacheability (MVN-U3, MVN-UP2): release files and their sidecars and timestamped SNAPSHOT
//!   files are immutable; metadata, legacy `-SNAPSHOT` files, directory listings and anything
//!   unrecognised are mutable.
//! * Checksums (`checksum`, MVN-L2, MVN-K1): sidecar bodies (first token, Gradle's short
//!   SHA-1s), `X-Checksum-*` headers and Nexus 2's `{SHA1{...}}` ETag.
//! * Metadata (`metadata`, MVN-L3): merging artifact-level `maven-metadata.xml` documents from
//!   several upstreams.
//!
//! Deliberately ignored:
//!
//! * Deploys (`PUT`): the proxy is read-only, so nothing here models an upload.
//! * Checksum *policy* (MVN-K2) is the client's; the engine verifies what it stores.
//! * Version ranges and Maven's full version ordering: the metadata merge needs only
//!   "highest release", for which a simplified `ComparableVersion` is enough.
//! * The content of directory listings (MVN-L5): they are passed through, never parsed.

pub mod checksum;
pub mod layout;
pub mod metadata;

pub use checksum::ChecksumAlgorithm;
pub use layout::{Coordinates, Kind, MetadataLevel, RepoPath};

/// Whether the bytes behind a path can ever change. A fact of the protocol; how long a
/// mutable answer may be reused is the engine's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cacheability {
    /// Never changes: store once, serve forever without asking the upstream.
    Immutable,
    /// May change: revalidate with the upstream.
    Mutable,
}

/// Everything that can go wrong while parsing Maven protocol input.
///
/// `PathInvalid` carries the offending path (Maven sends credentials only in
/// `Authorization`, so paths are safe to log), or a description when the path is too long to
/// repeat.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A path that is not a safe repository path.
    #[error("invalid path {0:?}")]
    PathInvalid(String),
    /// A `maven-metadata.xml` that cannot be read.
    #[error("invalid metadata: {0}")]
    MetadataInvalid(String),
}

#[cfg(test)]
mod tests;
