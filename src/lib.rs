//! pinproxy: a streaming pull-through proxy and cache that pins every artifact by content hash.
//!
//! Codemap (see ARCHITECTURE.md for the invariants):
//! - `config`: the TOML configuration, raw → validated, and the compiled-in default.
//! - `server`: accept loop, TLS, per-request span, client tokens, dispatch, graceful shutdown.
//! - `route`: request → `Route` (which protocol, which upstream, which endpoint).
//! - `oci_proxy`: OCI policy: tags, manifests, blobs, stale serving, pass-through lists.
//! - `npm_proxy`: npm policy: packuments (mutable, rewritten per request), verified tarballs.
//! - `maven_proxy`: Maven policy: a group of repositories; verified, pinned release files;
//!   metadata revalidated, merged across members and served stale when they fail.
//! - `upstream`: outbound HTTP clients per upstream, the registry token dance.
//! - `fill`: stream from upstream into the store while hashing; coalescing; verified publish.
//! - `verify`: the pure streaming verifier under `fill`.
//! - `store`: content-addressed files, the pin journal (source of truth), the sled index.
//! - `serve`: full/ranged/conditional responses for stored objects and in-flight fills.
//! - `range`, `body`, `error`, `metrics`: HTTP plumbing shared by all routes.

pub mod body;
pub mod config;
pub mod error;
pub mod fill;
pub mod maven_proxy;
pub mod metrics;
pub mod npm_proxy;
pub mod oci_proxy;
pub mod range;
pub mod route;
pub mod serve;
pub mod server;
pub mod store;
pub mod upstream;
pub mod verify;
