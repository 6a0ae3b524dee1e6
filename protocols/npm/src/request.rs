//! Classification of request paths relative to the registry root (NPM-P1, NPM-P8, NPM-F1,
//! §2.5).
//!
//! The path is the raw, still percent-encoded path. Only the spellings clients really send are
//! decoded: `%40` for the leading `@` and `%2f`/`%2F` between scope and name. Every other `%`
//! fails validation, because no package name, version or tarball file needs one; decoding more
//! would let `%2e%2e` become `..` after the checks.

use http::Method;

use crate::name::is_name_byte;
use crate::{Error, PackageName};

/// Longest version or dist-tag segment accepted. Semver has no limit, but npm's `semver`
/// refuses versions longer than 256 characters (`MAX_LENGTH`).
const MAX_VERSION_LEN: usize = 256;

/// One registry endpoint, with its parameters parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /<name>`: the packument (mutable; NPM-P5).
    Packument { name: PackageName },
    /// `GET /<name>/<version-or-tag>`: one version's manifest (NPM-P8; no install path uses
    /// it). `spec` is a version or dist-tag, not validated as semver.
    Version { name: PackageName, spec: String },
    /// `GET /<name>/-/<file>`: a tarball. `version` is derived from a conventional file name
    /// (`<unscoped>-<version>.tgz`); `None` for a legacy file name, which the engine maps
    /// through the packument's `dist.tarball` URLs (NPM-F1).
    Tarball {
        name: PackageName,
        file: String,
        version: Option<String>,
    },
    /// `GET /-/ping` (`npm ping`, `npm doctor`): answered locally.
    Ping,
    /// `GET /-/whoami`: answered locally from the proxy's own auth, never forwarded.
    Whoami,
    /// `POST /-/npm/v1/security/advisories/bulk`: passed through, never cached.
    AuditBulk,
    /// `POST /-/npm/v1/security/audits/quick`: npm's fallback when bulk fails.
    AuditQuick,
    /// A request a pull-through cache refuses. `what` completes "... is not supported" and is
    /// one of `"publishing"`, `"unpublishing"`, `"dist-tag changes"`, `"login"`, `"logout"`
    /// or `"this method"`.
    Unsupported { what: &'static str },
}

impl Endpoint {
    /// The package the request is about, if any.
    pub fn name(&self) -> Option<&PackageName> {
        match self {
            Self::Packument { name } | Self::Version { name, .. } | Self::Tarball { name, .. } => {
                Some(name)
            }
            Self::Ping
            | Self::Whoami
            | Self::AuditBulk
            | Self::AuditQuick
            | Self::Unsupported { .. } => None,
        }
    }
}

/// Classifies `method` and the raw `path` (relative to the registry root, starting with `/`,
/// without the query string).
///
/// * `PUT` and `DELETE` are always writes and become [`Endpoint::Unsupported`] without looking
///   further: a pull-through cache refuses them whatever they name.
/// * `/-/...` is the registry's own namespace: ping, whoami, the audits and login; any other
///   path there is [`Error::PathInvalid`] (the engine answers 404).
/// * Anything else is `/<name>`, `/<name>/<spec>` or `/<name>/-/<file>`, where `<name>` is any
///   spelling of the name (NPM-P1). A first segment starting with `@` (or `%40`) and holding
///   no encoded slash takes the next segment as the rest of the name, so `/@scope/name` is a
///   packument, not the version `name` of a package `@scope`.
/// * Only `GET` and `HEAD` read packages; other methods on package paths are unsupported.
pub fn parse(method: &Method, path: &str) -> Result<Endpoint, Error> {
    let invalid = || Error::PathInvalid(path.to_owned());
    let rest = path.strip_prefix('/').ok_or_else(invalid)?;

    if method == Method::PUT || method == Method::DELETE {
        return Ok(Endpoint::Unsupported {
            what: write_kind(method, rest),
        });
    }
    let read = method == Method::GET || method == Method::HEAD;
    let unsupported = Endpoint::Unsupported {
        what: "this method",
    };

    if let Some(special) = rest.strip_prefix("-/") {
        let post = method == Method::POST;
        return match special {
            "ping" | "whoami" if !read => Ok(unsupported),
            "ping" => Ok(Endpoint::Ping),
            "whoami" => Ok(Endpoint::Whoami),
            "npm/v1/security/advisories/bulk" | "npm/v1/security/audits/quick" if !post => {
                Ok(unsupported)
            }
            "npm/v1/security/advisories/bulk" => Ok(Endpoint::AuditBulk),
            "npm/v1/security/audits/quick" => Ok(Endpoint::AuditQuick),
            "v1/login" => Ok(Endpoint::Unsupported { what: "login" }),
            _ if special.starts_with("user/") => Ok(Endpoint::Unsupported { what: "login" }),
            _ => Err(invalid()),
        };
    }

    // `-` is the registry's own namespace, never a package (see `name::RESERVED`).
    if rest == "-" {
        return Err(invalid());
    }
    let (name, segments) = split_name(rest, invalid())?;
    let endpoint = match segments.as_slice() {
        [] => Endpoint::Packument { name },
        ["-", file] => {
            if !is_valid_file(file) {
                return Err(invalid());
            }
            let version = file
                .strip_prefix(name.unscoped())
                .and_then(|v| v.strip_prefix('-'))
                .and_then(|v| v.strip_suffix(".tgz"))
                .filter(|v| is_plausible_version(v))
                .map(str::to_owned);
            Endpoint::Tarball {
                name,
                file: (*file).to_owned(),
                version,
            }
        }
        [spec] if *spec != "-" && !spec.is_empty() => {
            if !is_valid_spec(spec) {
                return Err(Error::VersionInvalid((*spec).to_owned()));
            }
            Endpoint::Version {
                name,
                spec: (*spec).to_owned(),
            }
        }
        _ => return Err(invalid()),
    };
    Ok(if read { endpoint } else { unsupported })
}

/// Whether `s` looks like a published version: starts with a digit and uses only semver's
/// characters `[0-9A-Za-z.+-]` (`1.0.0`, `1.0.0-rc.1`, `2.0.0-beta.1+exp.sha.5114f85`).
///
/// Deliberately loose (not a semver parser) but strict enough that the result is safe in a
/// URL path segment and a cache key. The leading digit keeps `foo-bar-1.0.0.tgz` under
/// package `foo` from being read as version `bar-1.0.0` of `foo`.
pub fn is_plausible_version(s: &str) -> bool {
    s.len() <= MAX_VERSION_LEN
        && s.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
}

/// Splits the name off the front of `rest` (the path without its leading `/`), decoding the
/// spellings of NPM-P1, and returns it with the remaining segments. `invalid` is the error for
/// a path with no name at all (empty, or `/@scope` alone).
fn split_name(rest: &str, invalid: Error) -> Result<(PackageName, Vec<&str>), Error> {
    let mut segments = rest.split('/');
    let first = segments.next().unwrap_or_default();
    if first.is_empty() {
        return Err(invalid);
    }
    let scoped = first
        .strip_prefix('@')
        .or_else(|| first.strip_prefix("%40"));
    let name = match scoped {
        None => PackageName::new(None, first)?,
        Some(scoped) => match split_encoded_slash(scoped) {
            Some((scope, name)) => PackageName::new(Some(scope), name)?,
            None => PackageName::new(Some(scoped), segments.next().ok_or(invalid)?)?,
        },
    };
    Ok((name, segments.collect()))
}

/// `scope%2fname` or `scope%2Fname` → `(scope, name)`, at the first encoded slash.
fn split_encoded_slash(s: &str) -> Option<(&str, &str)> {
    let at = s
        .as_bytes()
        .windows(3)
        .position(|w| w[0] == b'%' && w[1] == b'2' && (w[2] | 0x20) == b'f')?;
    Some((&s[..at], &s[at + 3..]))
}

/// A tarball file name: ends in `.tgz`, has something before it, no `..`, and only name
/// characters plus `+` (build metadata) and `@`. That excludes `/`, `\`, `%`, NUL and every
/// other byte that could change meaning in an upstream URL or a cache key.
fn is_valid_file(file: &str) -> bool {
    file.len() > ".tgz".len()
        && file.len() <= 2 * MAX_VERSION_LEN + 214
        && file.ends_with(".tgz")
        && !file.contains("..")
        && file
            .bytes()
            .all(|b| is_name_byte(b) || matches!(b, b'+' | b'@'))
}

/// A version or dist-tag in `/<name>/<spec>`: name characters plus `+`, no `..`.
fn is_valid_spec(spec: &str) -> bool {
    spec.len() <= MAX_VERSION_LEN
        && !spec.contains("..")
        && spec.bytes().all(|b| is_name_byte(b) || b == b'+')
}

/// What a `PUT` or `DELETE` would have done, for the refusal message.
fn write_kind(method: &Method, rest: &str) -> &'static str {
    if rest.starts_with("-/user/org.couchdb.user:") {
        "login"
    } else if rest.starts_with("-/user/token/") {
        "logout"
    } else if rest.contains("/dist-tags") {
        "dist-tag changes"
    } else if method == Method::DELETE || rest.contains("/-rev/") {
        "unpublishing"
    } else {
        "publishing"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compact rendering of an endpoint, so the table stays readable.
    fn summary(e: &Endpoint) -> String {
        match e {
            Endpoint::Packument { name } => format!("packument {name}"),
            Endpoint::Version { name, spec } => format!("version {name} {spec}"),
            Endpoint::Tarball {
                name,
                file,
                version: Some(v),
            } => format!("tarball {name} {file} v={v}"),
            Endpoint::Tarball {
                name,
                file,
                version: None,
            } => format!("tarball {name} {file} legacy"),
            Endpoint::Ping => "ping".to_owned(),
            Endpoint::Whoami => "whoami".to_owned(),
            Endpoint::AuditBulk => "audit bulk".to_owned(),
            Endpoint::AuditQuick => "audit quick".to_owned(),
            Endpoint::Unsupported { what } => format!("unsupported {what}"),
        }
    }

    fn check(input: (&Method, &str), expected: Result<&str, Error>) {
        let (method, path) = input;
        let actual = parse(method, path).map(|e| summary(&e));
        assert_eq!(
            actual.as_deref().map_err(Clone::clone),
            expected,
            "{method} {path:?}"
        );
    }

    const GET: &Method = &Method::GET;

    fn path_invalid(p: &str) -> Result<&'static str, Error> {
        Err(Error::PathInvalid(p.to_owned()))
    }

    fn name_invalid(n: &str) -> Result<&'static str, Error> {
        Err(Error::NameInvalid(n.to_owned()))
    }

    #[test]
    fn packuments() {
        check((GET, "/react"), Ok("packument react"));
        check((&Method::HEAD, "/react"), Ok("packument react"));
        check((GET, "/JSONStream"), Ok("packument JSONStream"));
        // Every spelling of a scoped name is the same package (NPM-P1).
        for path in [
            "/@types%2fnode",
            "/@types%2Fnode",
            "/@types/node",
            "/%40types%2fnode",
            "/%40types%2Fnode",
            "/%40types/node",
        ] {
            check((GET, path), Ok("packument @types/node"));
        }
        check((GET, "/@types"), path_invalid("/@types"));
        check((GET, "/@types/"), name_invalid("@types/"));
        check((GET, "/@types%2f"), name_invalid("@types/"));
        check((GET, "/@types%2fa%2fb"), name_invalid("@types/a%2fb"));
        check((GET, "/@%2fnode"), name_invalid("@/node"));
        check((GET, "/%2e%2e"), name_invalid("%2e%2e"));
        check((GET, "/react%2fx"), name_invalid("react%2fx"));
        check((GET, "/%72eact"), name_invalid("%72eact"));
        check((GET, "/@types%252fnode"), path_invalid("/@types%252fnode"));
        check(
            (GET, "/@types%252fnode/x"),
            name_invalid("@types%252fnode/x"),
        );
        check((GET, "/.."), name_invalid(".."));
        check((GET, "/a\\b"), name_invalid("a\\b"));
        check((GET, "/a\0"), name_invalid("a\0"));
        check((GET, "/a b"), name_invalid("a b"));
        check((GET, "/"), path_invalid("/"));
        check((GET, ""), path_invalid(""));
        check((GET, "react"), path_invalid("react"));
        check((GET, "//react"), path_invalid("//react"));
        check((GET, "/react/"), path_invalid("/react/"));
        check((GET, "/-"), path_invalid("/-"));
    }

    #[test]
    fn tarballs() {
        check(
            (GET, "/react/-/react-18.2.0.tgz"),
            Ok("tarball react react-18.2.0.tgz v=18.2.0"),
        );
        for path in [
            "/@types%2fnode/-/node-20.1.0.tgz",
            "/@types%2Fnode/-/node-20.1.0.tgz",
            "/@types/node/-/node-20.1.0.tgz",
            "/%40types%2fnode/-/node-20.1.0.tgz",
        ] {
            check(
                (GET, path),
                Ok("tarball @types/node node-20.1.0.tgz v=20.1.0"),
            );
        }
        // Versions keep their prerelease and build parts: never split on `-` (NPM-F1).
        check(
            (GET, "/a-b/-/a-b-1.0.0-rc.1.tgz"),
            Ok("tarball a-b a-b-1.0.0-rc.1.tgz v=1.0.0-rc.1"),
        );
        check(
            (GET, "/x/-/x-1.0.0+build.5.tgz"),
            Ok("tarball x x-1.0.0+build.5.tgz v=1.0.0+build.5"),
        );
        check(
            (GET, "/x/-/x-2.0.0-beta.1+exp.sha.5114f85.tgz"),
            Ok("tarball x x-2.0.0-beta.1+exp.sha.5114f85.tgz v=2.0.0-beta.1+exp.sha.5114f85"),
        );
        // Legacy file names: the engine maps them through the packument.
        check(
            (GET, "/x/-/other-1.0.0.tgz"),
            Ok("tarball x other-1.0.0.tgz legacy"),
        );
        check(
            (GET, "/foo/-/foo-bar-1.0.0.tgz"),
            Ok("tarball foo foo-bar-1.0.0.tgz legacy"),
        );
        check((GET, "/x/-/x-.tgz"), Ok("tarball x x-.tgz legacy"));
        check((GET, "/x/-/x.tgz"), Ok("tarball x x.tgz legacy"));
        check(
            (GET, "/@s/x/-/@s/x-1.0.0.tgz"),
            path_invalid("/@s/x/-/@s/x-1.0.0.tgz"),
        );
        check(
            (&Method::HEAD, "/x/-/x-1.0.0.tgz"),
            Ok("tarball x x-1.0.0.tgz v=1.0.0"),
        );

        for bad in [
            "/x/-/x-1.0.0.tar.gz",
            "/x/-/x-1.0.0",
            "/x/-/.tgz",
            "/x/-/",
            "/x/-",
            "/x/-/x-1.0.0.tgz/",
            "/x/-/..%2fx-1.0.0.tgz",
            "/x/-/x-1.0.0%2etgz",
            "/x/-/x-1..0.tgz",
            "/x/-/x\\1.0.0.tgz",
            "/x/-/x-1.0.0\0.tgz",
            "/x/-/x 1.tgz",
            "/x/-/a/x-1.0.0.tgz",
        ] {
            check((GET, bad), path_invalid(bad));
        }
    }

    #[test]
    fn versions() {
        check((GET, "/react/18.2.0"), Ok("version react 18.2.0"));
        check((GET, "/react/latest"), Ok("version react latest"));
        check((GET, "/@types/node/next"), Ok("version @types/node next"));
        check(
            (GET, "/@types%2fnode/1.0.0+x"),
            Ok("version @types/node 1.0.0+x"),
        );
        check(
            (GET, "/react/%5E18"),
            Err(Error::VersionInvalid("%5E18".into())),
        );
        check((GET, "/react/.."), Err(Error::VersionInvalid("..".into())));
        check((GET, "/react/a/b"), path_invalid("/react/a/b"));
        check(
            (GET, "/react/-rev/1-abc"),
            path_invalid("/react/-rev/1-abc"),
        );
    }

    #[test]
    fn registry_endpoints() {
        check((GET, "/-/ping"), Ok("ping"));
        check((&Method::HEAD, "/-/ping"), Ok("ping"));
        check((GET, "/-/whoami"), Ok("whoami"));
        check(
            (&Method::POST, "/-/npm/v1/security/advisories/bulk"),
            Ok("audit bulk"),
        );
        check(
            (&Method::POST, "/-/npm/v1/security/audits/quick"),
            Ok("audit quick"),
        );
        check(
            (GET, "/-/npm/v1/security/advisories/bulk"),
            Ok("unsupported this method"),
        );
        check((&Method::POST, "/-/ping"), Ok("unsupported this method"));
        for unknown in [
            "/-/",
            "/-/v1/search",
            "/-/npm/v1/keys",
            "/-/package/react/dist-tags",
            "/-/npm/v1/attestations/react@1.0.0",
            "/-/ping/",
        ] {
            check((GET, unknown), path_invalid(unknown));
        }
    }

    #[test]
    fn writes() {
        let put = &Method::PUT;
        let delete = &Method::DELETE;
        check((put, "/react"), Ok("unsupported publishing"));
        check((put, "/@s%2fx"), Ok("unsupported publishing"));
        check((put, "/anything/at/all"), Ok("unsupported publishing"));
        check((put, "/react/-rev/3-abc"), Ok("unsupported unpublishing"));
        check(
            (delete, "/react/-/react-1.0.0.tgz/-rev/3-abc"),
            Ok("unsupported unpublishing"),
        );
        check(
            (delete, "/react/-rev/3-abc"),
            Ok("unsupported unpublishing"),
        );
        check(
            (put, "/-/package/react/dist-tags/next"),
            Ok("unsupported dist-tag changes"),
        );
        check(
            (delete, "/-/package/@s%2fx/dist-tags/next"),
            Ok("unsupported dist-tag changes"),
        );
        check(
            (put, "/-/user/org.couchdb.user:alice"),
            Ok("unsupported login"),
        );
        check((delete, "/-/user/token/abc"), Ok("unsupported logout"));
        check((&Method::POST, "/-/v1/login"), Ok("unsupported login"));
        check((&Method::POST, "/react"), Ok("unsupported this method"));
        check(
            (&Method::PATCH, "/react/-/react-1.0.0.tgz"),
            Ok("unsupported this method"),
        );
        check((&Method::OPTIONS, "/react"), Ok("unsupported this method"));
        check(
            (&Method::POST, "/-/v1/search"),
            path_invalid("/-/v1/search"),
        );
        check((put, "no-slash"), path_invalid("no-slash"));
    }

    #[test]
    fn accessors() {
        let e = parse(GET, "/@types%2fnode/-/node-1.0.0.tgz").unwrap();
        assert_eq!(
            e.name().map(ToString::to_string).as_deref(),
            Some("@types/node")
        );
        assert_eq!(
            e,
            Endpoint::Tarball {
                name: "@types/node".parse().unwrap(),
                file: "node-1.0.0.tgz".into(),
                version: Some("1.0.0".into()),
            }
        );
        assert_eq!(parse(GET, "/-/ping").unwrap().name(), None);
        assert!(is_plausible_version("1.0.0"));
        assert!(!is_plausible_version("v1.0.0"));
        assert!(!is_plausible_version(""));
        assert!(!is_plausible_version("1.0.0/x"));
    }
}
