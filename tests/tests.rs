//! Integration tests: the production service in-process against fake upstreams, and real clients.

mod oci;
mod support;
