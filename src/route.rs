//! Routing: one port serves every upstream and the operational endpoints. The engine
//! dispatches on the closed `Route` enum, so adding a protocol makes the compiler list every
//! place to touch.
//!
//! OCI requests choose their upstream, in this order (OCI-R5):
//! 1. containerd's `?ns=<registry>` query parameter (echoed as `OCI-Namespace`);
//! 2. a path prefix naming a configured upstream: `/v2/<upstream>/<repo>/...` (podman,
//!    CRI-O, direct pulls) or `/<upstream>/v2/<repo>/...` (containerd host URLs with a path);
//! 3. the default upstream (the Docker daemon's root-only `registry-mirrors`).
//!
//! All spellings of one image end at the same (upstream, canonical repository) pair, and so
//! at the same cache entries.

use http::Uri;

use crate::error::{Error, Kind};

#[derive(Debug)]
pub enum Route {
    Oci(OciRequest),
    Npm(crate::npm_proxy::NpmRequest),
    Maven(crate::maven_proxy::MavenRequest),
    Healthz,
    Metrics,
    Pins,
    Resolutions,
    NotFound,
}

#[derive(Debug)]
pub struct OciRequest {
    /// Index into the configured upstream list; `None` for requests that need no upstream.
    pub upstream: Option<usize>,
    /// The endpoint, with the repository name as the client wrote it minus any upstream prefix.
    pub endpoint: oci::Endpoint,
    /// The `ns` the client sent, echoed back as `OCI-Namespace`.
    pub ns: Option<String>,
    /// How the client spelled the path up to the repository, to rewrite `Link` headers.
    pub client_prefix: String,
    /// The raw query string (tags/list pagination passes through).
    pub query: Option<String>,
}

/// Resolves a request to a route. `upstreams` are the configured OCI upstream names,
/// `default_upstream` an index into them.
pub fn route(
    method: &http::Method,
    uri: &Uri,
    upstreams: &[String],
    default_upstream: Option<usize>,
) -> Result<Route, Error> {
    let path = uri.path();
    match path {
        "/healthz" => return Ok(Route::Healthz),
        "/metrics" => return Ok(Route::Metrics),
        "/api/v1/pins" => return Ok(Route::Pins),
        "/api/v1/resolutions" => return Ok(Route::Resolutions),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/npm") {
        if rest.is_empty() || rest.starts_with('/') {
            let rest = if rest.is_empty() { "/" } else { rest };
            let endpoint = npm::request::parse(method, rest)?;
            return Ok(Route::Npm(crate::npm_proxy::NpmRequest { endpoint }));
        }
    }
    if let Some(rest) = path.strip_prefix("/maven") {
        if rest.is_empty() || rest.starts_with('/') {
            return Ok(Route::Maven(crate::maven_proxy::MavenRequest::parse(rest)?));
        }
    }
    let find = |name: &str| upstreams.iter().position(|u| u == name);

    let Some(rest) = v2_rest(path) else {
        // `/<upstream>/v2/...`
        let trimmed = &path[1.min(path.len())..];
        let Some((first, after)) = trimmed.split_once('/') else {
            return Ok(Route::NotFound);
        };
        let Some(rest) = v2_rest(&format!("/{after}")).map(str::to_owned) else {
            return Ok(Route::NotFound);
        };
        let Some(i) = find(first) else {
            return Err(name_unknown(first));
        };
        let endpoint = oci::request::parse_v2_path(&rest)?;
        return finish(
            uri,
            endpoint,
            Some(i),
            format!("/{first}/v2"),
            upstreams,
            default_upstream,
            true,
        );
    };
    let endpoint = oci::request::parse_v2_path(rest)?;
    finish(
        uri,
        endpoint,
        None,
        "/v2".to_owned(),
        upstreams,
        default_upstream,
        false,
    )
}

fn finish(
    uri: &Uri,
    endpoint: oci::Endpoint,
    forced: Option<usize>,
    mut client_prefix: String,
    upstreams: &[String],
    default_upstream: Option<usize>,
    prefix_in_host_path: bool,
) -> Result<Route, Error> {
    let find = |name: &str| upstreams.iter().position(|u| u == name);
    let query = uri.query().map(str::to_owned);
    let ns = query.as_deref().and_then(|q| query_param(q, "ns"));
    if matches!(endpoint, oci::Endpoint::Ping | oci::Endpoint::Catalog) {
        return Ok(Route::Oci(OciRequest {
            upstream: None,
            endpoint,
            ns,
            client_prefix,
            query,
        }));
    }
    let mut upstream = forced;
    let mut endpoint = endpoint;
    if let Some(ns) = &ns {
        match find(ns) {
            Some(i) => upstream = Some(i),
            None => return Err(name_unknown(ns)),
        }
    } else if !prefix_in_host_path {
        if let Some((first, rest)) = endpoint.name().and_then(|n| n.strip_prefix_component()) {
            if let Some(i) = find(first) {
                upstream = Some(i);
                client_prefix = format!("{client_prefix}/{first}");
                endpoint = with_name(endpoint, rest);
            }
        }
    }
    let Some(upstream) = upstream.or(default_upstream) else {
        return Err(Error::client(
            Kind::NotFound(oci::ErrorCode::NameUnknown),
            "no OCI upstream is configured",
        ));
    };
    Ok(Route::Oci(OciRequest {
        upstream: Some(upstream),
        endpoint,
        ns,
        client_prefix,
        query,
    }))
}

fn name_unknown(name: &str) -> Error {
    Error::client(
        Kind::NotFound(oci::ErrorCode::NameUnknown),
        format!("`{name}` is not a configured upstream registry"),
    )
}

/// The part of `path` after `/v2`, if the path is `/v2` or starts with `/v2/`.
fn v2_rest(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2")?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

fn with_name(endpoint: oci::Endpoint, name: oci::RepoName) -> oci::Endpoint {
    use oci::Endpoint as E;
    match endpoint {
        E::Manifest { reference, .. } => E::Manifest { name, reference },
        E::Blob { digest, .. } => E::Blob { name, digest },
        E::TagsList { .. } => E::TagsList { name },
        E::Referrers { digest, .. } => E::Referrers { name, digest },
        E::Upload { .. } => E::Upload { name },
        e @ (E::Ping | E::Catalog) => e,
    }
}

/// The first value of `key` in a query string, percent-decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ups() -> Vec<String> {
        vec!["docker.io".into(), "ghcr.io".into(), "local".into()]
    }

    fn oci(uri: &str) -> OciRequest {
        match route(&http::Method::GET, &uri.parse().unwrap(), &ups(), Some(0)).unwrap() {
            Route::Oci(r) => r,
            other => panic!("{uri}: {other:?}"),
        }
    }

    #[test]
    fn three_spellings_reach_one_upstream_and_name() {
        for (uri, up, prefix) in [
            ("/v2/library/alpine/manifests/3.20?ns=docker.io", 0, "/v2"),
            (
                "/v2/docker.io/library/alpine/manifests/3.20",
                0,
                "/v2/docker.io",
            ),
            ("/v2/library/alpine/manifests/3.20", 0, "/v2"),
            (
                "/docker.io/v2/library/alpine/manifests/3.20",
                0,
                "/docker.io/v2",
            ),
            (
                "/v2/ghcr.io/library/alpine/manifests/3.20",
                1,
                "/v2/ghcr.io",
            ),
            ("/v2/library/alpine/manifests/3.20?ns=ghcr.io", 1, "/v2"),
        ] {
            let r = oci(uri);
            assert_eq!(r.upstream, Some(up), "{uri}");
            assert_eq!(
                r.endpoint.name().unwrap().as_str(),
                "library/alpine",
                "{uri}"
            );
            assert_eq!(r.client_prefix, prefix, "{uri}");
        }
    }

    #[test]
    fn unknown_namespaces_are_name_unknown_and_never_dialled() {
        for uri in [
            "/v2/a/manifests/1?ns=evil.example",
            "/evil.example/v2/a/manifests/1",
        ] {
            let e = route(&http::Method::GET, &uri.parse().unwrap(), &ups(), Some(0)).unwrap_err();
            assert_eq!(e.kind, Kind::NotFound(oci::ErrorCode::NameUnknown), "{uri}");
        }
        // An unknown first component is just part of a default-upstream name.
        let r = oci("/v2/evil.example/a/manifests/1");
        assert_eq!(r.upstream, Some(0));
        assert_eq!(r.endpoint.name().unwrap().as_str(), "evil.example/a");
    }

    #[test]
    fn operational_and_foreign_paths() {
        let r = |u: &str| route(&http::Method::GET, &u.parse().unwrap(), &ups(), Some(0)).unwrap();
        assert!(matches!(r("/healthz"), Route::Healthz));
        assert!(matches!(r("/metrics"), Route::Metrics));
        assert!(matches!(r("/api/v1/pins"), Route::Pins));
        assert!(matches!(r("/"), Route::NotFound));
        assert!(matches!(r("/v2x/foo"), Route::NotFound));
        assert!(matches!(
            r("/v2/"),
            Route::Oci(OciRequest {
                endpoint: oci::Endpoint::Ping,
                ..
            })
        ));
        assert!(matches!(
            r("/v2"),
            Route::Oci(OciRequest {
                endpoint: oci::Endpoint::Ping,
                ..
            })
        ));
    }

    #[test]
    fn query_params_decode() {
        assert_eq!(
            query_param("a=1&ns=docker.io", "ns").as_deref(),
            Some("docker.io")
        );
        assert_eq!(query_param("ns=a%2Fb", "ns").as_deref(), Some("a/b"));
        assert_eq!(query_param("ns=%", "ns").as_deref(), Some("%"));
        assert_eq!(query_param("x=1", "ns"), None);
    }
}
