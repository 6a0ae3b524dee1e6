//! Package names (validate-npm-package-name, "valid for old packages").
//!
//! A [`PackageName`] is validated once at the edge and is then safe to put into a cache key, an
//! upstream URL or a rewritten `dist.tarball`: it has no `/` inside a part, no `%`, no `\`, no
//! `..` and only URL-safe characters, so no spelling of it can escape its path segment.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// validate-npm-package-name's `maxLength`, over the whole name including `@scope/`.
/// New packages must respect it; the brief's rule is to hold old packages to it too, and no
/// public package exceeds it.
const MAX_LEN: usize = 214;

/// Names npm itself refuses at any time (validate-npm-package-name `blacklist`), plus `-`, the
/// registry's own namespace: `/-/ping` must never be read as version `ping` of a package `-`.
const RESERVED: &[&str] = &["node_modules", "favicon.ico", "-"];

/// An npm package name: `name` or `@scope/name`.
///
/// Capitals are accepted because legacy packages have them (`JSONStream`), and the registry
/// treats names case-sensitively, so `Foo` and `foo` are different cache keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageName {
    scope: Option<String>,
    name: String,
}

impl PackageName {
    /// Builds a name from its parts; `scope` is without the `@`.
    pub fn new(scope: Option<&str>, name: &str) -> Result<Self, Error> {
        let full = match scope {
            Some(scope) => format!("@{scope}/{name}"),
            None => name.to_owned(),
        };
        let valid = full.len() <= MAX_LEN
            && scope.is_none_or(is_valid_part)
            && is_valid_part(name)
            && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&full));
        if !valid {
            return Err(Error::NameInvalid(full));
        }
        Ok(Self {
            scope: scope.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// The canonical form, `@scope/name` or `name` (same as `Display`).
    pub fn full(&self) -> String {
        self.to_string()
    }

    /// The part after the scope (the whole name when unscoped).
    pub fn unscoped(&self) -> &str {
        &self.name
    }

    /// The scope without `@`.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The form for upstream paths, `@scope%2fname` or `name` (pacote's `escapedName`, which
    /// every registry accepts).
    pub fn escaped(&self) -> String {
        match &self.scope {
            Some(scope) => format!("@{scope}%2f{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The conventional tarball file name, `<unscoped>-<version>.tgz`.
    pub fn tarball_file(&self, version: &str) -> String {
        format!("{}-{version}.tgz", self.name)
    }

    /// The conventional tarball path without a leading slash: `name/-/name-1.0.0.tgz` or
    /// `@scope/name/-/name-1.0.0.tgz`. The scope's slash is not encoded, as verdaccio and
    /// pnpm's `get-npm-tarball-url` build it, so pnpm and yarn berry recognise the URL as
    /// conventional and leave it out of their lockfiles (NPM-T2).
    pub fn tarball_path(&self, version: &str) -> String {
        format!("{self}/-/{}", self.tarball_file(version))
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Some(scope) => write!(f, "@{scope}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl FromStr for PackageName {
    type Err = Error;

    /// Parses the canonical form only: `@scope/name` or `name`. Percent-encoded spellings are
    /// the business of [`crate::request::parse`].
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.strip_prefix('@') {
            Some(rest) => match rest.split_once('/') {
                Some((scope, name)) => Self::new(Some(scope), name),
                None => Err(Error::NameInvalid(s.to_owned())),
            },
            None => Self::new(None, s),
        }
        .map_err(|_| Error::NameInvalid(s.to_owned()))
    }
}

impl Serialize for PackageName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PackageName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One part (scope or unscoped name): non-empty, no leading `.` or `_`, and only the characters
/// `encodeURIComponent` leaves alone. That set excludes space, `/`, `%`, `\`, `@` and control
/// characters, and with the leading-dot rule also `.` and `..`.
fn is_valid_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    match bytes.first() {
        None | Some(b'.' | b'_') => false,
        Some(_) => bytes.iter().all(|&b| is_name_byte(b)),
    }
}

pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'_' | b'~' | b'!' | b'*' | b'\'' | b'(' | b')'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(Option<&str>, &str), ()>) {
        let actual = input.parse::<PackageName>();
        match (&actual, expected) {
            (Ok(name), Ok((scope, unscoped))) => {
                assert_eq!(
                    (name.scope(), name.unscoped()),
                    (scope, unscoped),
                    "{input:?}"
                );
                assert_eq!(name.to_string(), input);
                assert_eq!(name.full(), input);
            }
            (Err(err), Err(())) => assert_eq!(err, &Error::NameInvalid(input.to_owned())),
            _ => panic!("{input:?}: got {actual:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn names() {
        check("react", Ok((None, "react")));
        check("lodash.merge", Ok((None, "lodash.merge")));
        check("@types/node", Ok((Some("types"), "node")));
        check("@babel/core", Ok((Some("babel"), "core")));
        check("@a/b", Ok((Some("a"), "b")));
        check("JSONStream", Ok((None, "JSONStream")));
        check("@Scope/Name", Ok((Some("Scope"), "Name")));
        check("a-b_c.d~e!f*g'h(i)", Ok((None, "a-b_c.d~e!f*g'h(i)")));
        check("@scope/_private", Err(()));
        check("@scope/.hidden", Err(()));
        check("@_scope/x", Err(()));
        check("@.scope/x", Err(()));
        check("123", Ok((None, "123")));
        check("-dash", Ok((None, "-dash")));
        check("-", Err(()));
        check("@-/-", Ok((Some("-"), "-")));
        check(&"a".repeat(214), Ok((None, &"a".repeat(214))));

        check("", Err(()));
        check("@", Err(()));
        check("@/", Err(()));
        check("@scope", Err(()));
        check("@scope/", Err(()));
        check("@/name", Err(()));
        check("@scope/a/b", Err(()));
        check("a/b", Err(()));
        check(".", Err(()));
        check("..", Err(()));
        check(".bin", Err(()));
        check("_x", Err(()));
        check("a b", Err(()));
        check(" a", Err(()));
        check("a%2fb", Err(()));
        check("a\\b", Err(()));
        check("a\0", Err(()));
        check("a\n", Err(()));
        check("ä", Err(()));
        check("a@b", Err(()));
        check("a:b", Err(()));
        check("a+b", Err(()));
        check("node_modules", Err(()));
        check("FAVICON.ICO", Err(()));
        check(&"a".repeat(215), Err(()));
        // 214 counts the scope too.
        check(
            &format!("@s/{}", "a".repeat(211)),
            Ok((Some("s"), &"a".repeat(211))),
        );
        check(&format!("@s/{}", "a".repeat(212)), Err(()));
    }

    #[test]
    fn forms() {
        let scoped: PackageName = "@types/node".parse().unwrap();
        assert_eq!(scoped.escaped(), "@types%2fnode");
        assert_eq!(scoped.tarball_file("20.1.0"), "node-20.1.0.tgz");
        assert_eq!(
            scoped.tarball_path("20.1.0"),
            "@types/node/-/node-20.1.0.tgz"
        );
        let plain: PackageName = "react".parse().unwrap();
        assert_eq!(plain.escaped(), "react");
        assert_eq!(plain.scope(), None);
        assert_eq!(
            plain.tarball_path("1.0.0+b.1"),
            "react/-/react-1.0.0+b.1.tgz"
        );
        assert_eq!(PackageName::new(Some("types"), "node").unwrap(), scoped);
        assert!(PackageName::new(Some("a/b"), "c").is_err());
        assert!(PackageName::new(None, "@a").is_err());
    }

    #[test]
    fn serde_round_trip() {
        let name: PackageName = "@types/node".parse().unwrap();
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(json, r#""@types/node""#);
        assert_eq!(serde_json::from_str::<PackageName>(&json).unwrap(), name);
        assert!(serde_json::from_str::<PackageName>(r#""../x""#).is_err());
    }
}
