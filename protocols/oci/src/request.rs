//! Classification of request paths under `/v2` (distribution-spec §Endpoints).

use crate::name::{Digest, Reference, RepoName};
use crate::{Cacheability, Error};

/// One endpoint of the distribution API, with its parameters parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/v2/`: API version check ("ping").
    Ping,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        name: RepoName,
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob { name: RepoName, digest: Digest },
    /// `/v2/<name>/tags/list`.
    TagsList { name: RepoName },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers { name: RepoName, digest: Digest },
    /// `/v2/<name>/blobs/uploads/` and `/v2/<name>/blobs/uploads/<session>`: push, which a
    /// pull-through cache refuses. The session id is not kept because nothing uses it.
    Upload { name: RepoName },
}

impl Endpoint {
    /// Whether the answer is content-addressed. `None` for endpoints whose answers are not
    /// cached at all (ping, catalog, uploads).
    pub fn cacheability(&self) -> Option<Cacheability> {
        match self {
            Self::Blob { .. } => Some(Cacheability::Immutable),
            Self::Manifest { reference, .. } => Some(reference.cacheability()),
            Self::TagsList { .. } | Self::Referrers { .. } => Some(Cacheability::Mutable),
            Self::Ping | Self::Catalog | Self::Upload { .. } => None,
        }
    }

    /// The repository the request is about, if any.
    pub fn name(&self) -> Option<&RepoName> {
        match self {
            Self::Manifest { name, .. }
            | Self::Blob { name, .. }
            | Self::TagsList { name }
            | Self::Referrers { name, .. }
            | Self::Upload { name } => Some(name),
            Self::Ping | Self::Catalog => None,
        }
    }
}

/// Classifies the raw (not percent-decoded) path after `/v2`, without the query string:
/// `""` and `"/"` are the ping, `"/library/alpine/manifests/3.20"` a manifest, and so on.
///
/// Names contain slashes, so the endpoint is found from the end of the path: the last segment
/// is the reference/digest (which cannot contain `/`) and the one before it the endpoint kind.
/// This is the same as routing by the last `/manifests/`, `/blobs/`, `/referrers/` or
/// `/tags/list` and lets a repository itself be called `x/manifests/y`.
///
/// The path is never decoded: `%2f` or `%2e%2e` fail the name, tag or digest grammar instead
/// of turning into separators or `..` after validation. The same holds for empty segments,
/// `.`/`..`, NUL and backslashes, so a parsed [`Endpoint`] is safe to turn into a cache key or
/// an upstream URL.
pub fn parse_v2_path(rest: &str) -> Result<Endpoint, Error> {
    let path = match rest {
        "" | "/" => return Ok(Endpoint::Ping),
        _ => rest.strip_prefix('/').ok_or(Error::UnknownEndpoint)?,
    };
    if path == "_catalog" {
        return Ok(Endpoint::Catalog);
    }

    let segments: Vec<&str> = path.split('/').collect();
    // The name is everything before segment `i`; the separating `/` is ASCII, so the byte
    // offset is always a char boundary.
    let name_before = |i: usize| -> Result<RepoName, Error> {
        let len = segments[..i].iter().map(|s| s.len() + 1).sum::<usize>();
        path.get(..len.saturating_sub(1))
            .unwrap_or_default()
            .parse()
    };

    match segments.as_slice() {
        // `POST /blobs/uploads/` and the session URLs; also without the trailing slash, which
        // some clients send. Checked before `blobs/<digest>` so `uploads` is not a digest.
        [.., "blobs", "uploads"] => Ok(Endpoint::Upload {
            name: name_before(segments.len() - 2)?,
        }),
        [.., "blobs", "uploads", _session] => Ok(Endpoint::Upload {
            name: name_before(segments.len() - 3)?,
        }),
        [.., "tags", "list"] => Ok(Endpoint::TagsList {
            name: name_before(segments.len() - 2)?,
        }),
        [.., "manifests", reference] => {
            let name = name_before(segments.len() - 2)?;
            Ok(Endpoint::Manifest {
                name,
                reference: reference.parse()?,
            })
        }
        [.., "blobs", digest] => {
            let name = name_before(segments.len() - 2)?;
            Ok(Endpoint::Blob {
                name,
                digest: digest.parse()?,
            })
        }
        [.., "referrers", digest] => {
            let name = name_before(segments.len() - 2)?;
            Ok(Endpoint::Referrers {
                name,
                digest: digest.parse()?,
            })
        }
        _ => Err(Error::UnknownEndpoint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::Tag;

    const HEX: &str = "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";

    /// Expected outcome, written compactly: the endpoint's debug-ish summary or the error.
    fn check(input: &str, expected: Result<&str, Error>) {
        let actual = parse_v2_path(input).map(|e| summary(&e));
        assert_eq!(
            actual.as_deref().map_err(Clone::clone),
            expected,
            "input: {input:?}"
        );
    }

    fn summary(e: &Endpoint) -> String {
        let c = match e.cacheability() {
            Some(Cacheability::Immutable) => "immutable",
            Some(Cacheability::Mutable) => "mutable",
            None => "-",
        };
        let body = match e {
            Endpoint::Ping => "ping".to_owned(),
            Endpoint::Catalog => "catalog".to_owned(),
            Endpoint::Manifest {
                name,
                reference: Reference::Tag(t),
            } => format!("manifest {name} tag {t}"),
            Endpoint::Manifest {
                name,
                reference: Reference::Digest(d),
            } => format!("manifest {name} digest {d}"),
            Endpoint::Blob { name, digest } => format!("blob {name} {digest}"),
            Endpoint::TagsList { name } => format!("tags {name}"),
            Endpoint::Referrers { name, digest } => format!("referrers {name} {digest}"),
            Endpoint::Upload { name } => format!("upload {name}"),
        };
        format!("{body} ({c})")
    }

    fn ok(s: &str) -> Result<&str, Error> {
        Ok(s)
    }

    #[test]
    fn routes() {
        let d = format!("sha256:{HEX}");
        check("", ok("ping (-)"));
        check("/", ok("ping (-)"));
        check("/_catalog", ok("catalog (-)"));
        check(
            "/library/nginx/manifests/1.27",
            ok("manifest library/nginx tag 1.27 (mutable)"),
        );
        check(
            "/alpine/manifests/latest",
            ok("manifest alpine tag latest (mutable)"),
        );
        check(
            &format!("/library/alpine/manifests/{d}"),
            ok(&format!("manifest library/alpine digest {d} (immutable)")),
        );
        check(
            &format!("/a/b/c/blobs/{d}"),
            ok(&format!("blob a/b/c {d} (immutable)")),
        );
        check(
            &format!("/docker.io/library/alpine/blobs/{d}"),
            ok(&format!("blob docker.io/library/alpine {d} (immutable)")),
        );
        check("/x/tags/list", ok("tags x (mutable)"));
        check(
            "/ghcr.io/o/app/tags/list",
            ok("tags ghcr.io/o/app (mutable)"),
        );
        check(
            &format!("/x/referrers/{d}"),
            ok(&format!("referrers x {d} (mutable)")),
        );
        check("/x/blobs/uploads/", ok("upload x (-)"));
        check("/x/blobs/uploads", ok("upload x (-)"));
        check(
            "/a/b/blobs/uploads/6f1c6c1e-5b2a-4c1d-9f0e-1c2b3a4d5e6f",
            ok("upload a/b (-)"),
        );
        // cosign signatures and the referrers fallback are tags.
        check(
            &format!("/o/app/manifests/sha256-{HEX}.sig"),
            ok(&format!("manifest o/app tag sha256-{HEX}.sig (mutable)")),
        );
        // The last keyword wins: a repository may itself contain `manifests` or `blobs`.
        check(
            "/a/manifests/b/manifests/v1",
            ok("manifest a/manifests/b tag v1 (mutable)"),
        );
        check(
            &format!("/blobs/manifests/blobs/{d}"),
            ok(&format!("blob blobs/manifests {d} (immutable)")),
        );
        check("/tags/tags/list", ok("tags tags (mutable)"));
    }

    #[test]
    fn rejects() {
        let d = format!("sha256:{HEX}");
        let name = |s: &str| Err(Error::NameInvalid(s.to_owned()));
        check("/UPPER/manifests/latest", name("UPPER"));
        check("/a//b/manifests/latest", name("a//b"));
        check("/a/../b/manifests/latest", name("a/../b"));
        check("/../manifests/latest", name(".."));
        check("/%2e%2e/manifests/latest", name("%2e%2e"));
        check(
            "/library%2falpine/manifests/latest",
            name("library%2falpine"),
        );
        check("/a\\b/manifests/latest", name("a\\b"));
        check("/a\0b/manifests/latest", name("a\0b"));
        check("//manifests/latest", name(""));
        check("/manifests/latest", name(""));
        check("/tags/list", name(""));
        check(&format!("/blobs/{d}"), name(""));
        check("/blobs/uploads/", name(""));
        check(&format!("/a/b//blobs/{d}"), name("a/b/"));

        check(
            "/a/manifests/la%74est",
            Err(Error::TagInvalid("la%74est".to_owned())),
        );
        check("/a/manifests/", Err(Error::TagInvalid(String::new())));
        check("/a/manifests/..", Err(Error::TagInvalid("..".to_owned())));
        let long = "t".repeat(129);
        check(
            &format!("/a/manifests/{long}"),
            Err(Error::TagInvalid(long)),
        );
        check(
            "/a/manifests/sha256:abc",
            Err(Error::DigestInvalid("sha256:abc".to_owned())),
        );
        check(
            "/a/blobs/latest",
            Err(Error::DigestInvalid("latest".to_owned())),
        );
        check(
            "/a/referrers/latest",
            Err(Error::DigestInvalid("latest".to_owned())),
        );

        // Trailing slashes and unknown suffixes are not endpoints.
        check("/a/manifests/latest/", Err(Error::UnknownEndpoint));
        check("/a/tags/list/", Err(Error::UnknownEndpoint));
        check("/library/alpine", Err(Error::UnknownEndpoint));
        check("/library/alpine/", Err(Error::UnknownEndpoint));
        check("//", Err(Error::UnknownEndpoint));
        check("/_catalog/", Err(Error::UnknownEndpoint));
        check("no-leading-slash", Err(Error::UnknownEndpoint));
        check("/manifests", Err(Error::UnknownEndpoint));
    }

    #[test]
    fn accessors() {
        let e = parse_v2_path("/library/alpine/manifests/3.20").unwrap();
        assert_eq!(e.name().map(RepoName::as_str), Some("library/alpine"));
        assert_eq!(
            e,
            Endpoint::Manifest {
                name: "library/alpine".parse().unwrap(),
                reference: Reference::Tag("3.20".parse::<Tag>().unwrap()),
            }
        );
        assert_eq!(parse_v2_path("/").unwrap().name(), None);
        assert_eq!(parse_v2_path("/_catalog").unwrap().name(), None);
        assert_eq!(
            parse_v2_path("/x/blobs/uploads/")
                .unwrap()
                .name()
                .map(RepoName::as_str),
            Some("x")
        );
    }
}
