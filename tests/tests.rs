//! Integration tests: the production service in-process against fake upstreams, and real clients.

mod crash;
mod lifecycle;
mod maven;
mod must;
mod npm;
mod oci;
mod real_maven;
mod real_npm;
mod real_oci;
mod support;
