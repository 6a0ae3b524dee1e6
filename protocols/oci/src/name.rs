//! Repository names, tags, digests and references (distribution-spec §Pulling manifests).
//!
//! Each type is validated once at the edge and is then known to be well formed: the engine uses
//! them to build cache keys and upstream URLs, so an unchecked `..` or `%2f` here would be a
//! path-traversal or cache-poisoning bug there.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Cacheability, Error};

/// Maximum length of a repository name. The spec only says "many clients impose a limit of 255
/// characters"; distribution enforces 255 on the name, so a longer name could never be pulled
/// from a distribution-based upstream anyway.
const MAX_NAME_LEN: usize = 255;

/// Maximum length of a tag (1 leading character + up to 127 more).
const MAX_TAG_LEN: usize = 128;

/// A repository name such as `library/alpine` or `ghcr.io/owner/app`, matching
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
///
/// The first component may look like a host name (`docker.io`, `ghcr.io`): the grammar allows
/// dots, and path-prefix routing relies on that ([`RepoName::strip_prefix_component`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated components, first to last. Never empty.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The Docker Hub canonical name: `alpine` becomes `library/alpine`; names with a `/` are
    /// unchanged. Docker Hub itself does not add `library/` (`/v2/alpine/...` answers 401), so
    /// the engine applies this to names bound for Docker Hub, in paths, scopes and cache keys
    /// alike (checklist OCI-H1).
    ///
    /// The result may be up to 8 characters longer than the 255 allowed on input; it still
    /// matches the grammar, and Docker Hub would answer such a name with its own error.
    pub fn with_library_prefix(&self) -> Self {
        if self.0.contains('/') {
            self.clone()
        } else {
            Self(format!("library/{}", self.0))
        }
    }

    /// Splits off the first component for path-prefix routing:
    /// `docker.io/library/alpine` → `("docker.io", library/alpine)`.
    /// `None` for a single-component name, which has nothing left to route.
    pub fn strip_prefix_component(&self) -> Option<(&str, Self)> {
        let (first, rest) = self.0.split_once('/')?;
        // Every component of a valid name is valid on its own, so `rest` needs no re-check.
        Some((first, Self(rest.to_owned())))
    }
}

impl FromStr for RepoName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(is_name_component) {
            return Err(Error::NameInvalid(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

/// One component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_name_component(c: &str) -> bool {
    fn alnum(b: u8) -> bool {
        b.is_ascii_lowercase() || b.is_ascii_digit()
    }
    let bytes = c.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Because the component starts and ends alphanumeric, every maximal run of other bytes is a
    // separator between two alphanumeric runs; each such run must be one of the allowed forms.
    bytes
        .split(|&b| alnum(b))
        .filter(|run| !run.is_empty())
        .all(|sep| sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&b| b == b'-'))
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
///
/// Tags are always mutable, including cosign's `sha256-<hex>.sig` tags and the referrers
/// fallback tags `sha256-<hex>`: they look content-addressed but are re-pointed when
/// signatures or attestations are added.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bytes = s.as_bytes();
        let valid = match bytes.split_first() {
            Some((&first, rest)) => {
                bytes.len() <= MAX_TAG_LEN
                    && (first.is_ascii_alphanumeric() || first == b'_')
                    && rest
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            }
            None => false,
        };
        if !valid {
            return Err(Error::TagInvalid(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

/// The digest algorithms this proxy verifies. The spec registers `sha256` and `sha512`;
/// anything else is refused rather than passed through, because the engine could not verify
/// the bytes it caches under that digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding of a digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "sha256" => Ok(Self::Sha256),
            "sha512" => Ok(Self::Sha512),
            _ => Err(Error::DigestInvalid(s.to_owned())),
        }
    }
}

/// A content digest, `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`.
///
/// Uppercase hex is refused (the spec's encoded portion for these algorithms is `[a-f0-9]`):
/// accepting it would give one blob two cache keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Builds a digest from a computed hash, e.g. the engine's hex-encoded sha256 of a body.
    pub fn new(algorithm: Algorithm, hex: &str) -> Result<Self, Error> {
        if hex.len() != algorithm.hex_len()
            || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(Error::DigestInvalid(format!(
                "{}:{hex}",
                algorithm.as_str()
            )));
        }
        Ok(Self {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::DigestInvalid(s.to_owned());
        let (algorithm, hex) = s.split_once(':').ok_or_else(invalid)?;
        let algorithm = algorithm.parse::<Algorithm>().map_err(|_| invalid())?;
        Self::new(algorithm, hex).map_err(|_| invalid())
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest. The spec distinguishes them by the
/// `:`, which a tag cannot contain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// A manifest by digest is fixed bytes; a manifest by tag can be re-pointed.
    pub fn cacheability(&self) -> Cacheability {
        match self {
            Self::Tag(_) => Cacheability::Mutable,
            Self::Digest(_) => Cacheability::Immutable,
        }
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s.contains(':') {
            s.parse().map(Self::Digest)
        } else {
            s.parse().map(Self::Tag)
        }
    }
}

impl From<Tag> for Reference {
    fn from(tag: Tag) -> Self {
        Self::Tag(tag)
    }
}

impl From<Digest> for Reference {
    fn from(digest: Digest) -> Self {
        Self::Digest(digest)
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(tag) => tag.fmt(f),
            Self::Digest(digest) => digest.fmt(f),
        }
    }
}

/// Serialises as the string form and deserialises through `FromStr`, so a stored value is
/// re-validated when it is read back.
macro_rules! serde_as_string {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_string!(RepoName, Tag, Algorithm, Digest, Reference);

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn check_name(input: &str, valid: bool) {
        let parsed = input.parse::<RepoName>();
        match (valid, parsed) {
            (true, Ok(name)) => assert_eq!(name.as_str(), input),
            (false, Err(err)) => assert_eq!(err, Error::NameInvalid(input.to_owned())),
            (valid, parsed) => panic!("{input:?}: expected valid={valid}, got {parsed:?}"),
        }
    }

    #[test]
    fn repo_names() {
        for ok in [
            "alpine",
            "library/alpine",
            "a/b/c/d",
            "docker.io/library/alpine",
            "ghcr.io/owner/app",
            "registry.k8s.io/pause",
            "a-b",
            "a--b",
            "a---b",
            "a_b",
            "a__b",
            "a.b",
            "0",
            "a1.b2_c3__d4-e5/f",
        ] {
            check_name(ok, true);
        }
        check_name(&"a".repeat(255), true);
        for bad in [
            "",
            "UPPER",
            "Library/alpine",
            "a//b",
            "/a",
            "a/",
            "a/../b",
            "..",
            ".",
            "a..b",
            "a___b",
            "a._b",
            "a_-b",
            "-a",
            "a-",
            "_a",
            "a b",
            "%2e%2e",
            "a%2fb",
            "a\\b",
            "a\0b",
            "a:b",
            "a@b",
            "ä",
        ] {
            check_name(bad, false);
        }
        check_name(&"a".repeat(256), false);
    }

    #[test]
    fn repo_name_helpers() {
        let name: RepoName = "docker.io/library/alpine".parse().unwrap();
        assert_eq!(
            name.components().collect::<Vec<_>>(),
            ["docker.io", "library", "alpine"]
        );
        let (first, rest) = name.strip_prefix_component().unwrap();
        assert_eq!(first, "docker.io");
        assert_eq!(rest.as_str(), "library/alpine");
        let (first, rest) = rest.strip_prefix_component().unwrap();
        assert_eq!((first, rest.as_str()), ("library", "alpine"));
        assert_eq!(rest.strip_prefix_component(), None);

        let single: RepoName = "alpine".parse().unwrap();
        assert_eq!(single.with_library_prefix().as_str(), "library/alpine");
        let nested: RepoName = "bitnami/redis".parse().unwrap();
        assert_eq!(nested.with_library_prefix(), nested);
        let already: RepoName = "library/alpine".parse().unwrap();
        assert_eq!(already.with_library_prefix(), already);
    }

    #[test]
    fn tags() {
        for ok in [
            "latest",
            "3.20",
            "1.27.0-alpine",
            "_private",
            "A",
            "v1__x..y--z",
            "sha256-abc.sig",
        ] {
            assert_eq!(ok.parse::<Tag>().unwrap().as_str(), ok);
        }
        assert!("a".repeat(128).parse::<Tag>().is_ok());
        for bad in ["", ".hidden", "-x", "a/b", "a:b", "a b", "a%20", "ä", "a\0"] {
            assert_eq!(bad.parse::<Tag>(), Err(Error::TagInvalid(bad.to_owned())));
        }
        let long = "a".repeat(129);
        assert_eq!(long.parse::<Tag>(), Err(Error::TagInvalid(long.clone())));
    }

    #[test]
    fn digests() {
        let d: Digest = format!("sha256:{HEX64}").parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex(), HEX64);
        assert_eq!(d.to_string(), format!("sha256:{HEX64}"));

        let hex128 = HEX64.repeat(2);
        let d: Digest = format!("sha512:{hex128}").parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha512);
        assert_eq!(d.to_string(), format!("sha512:{hex128}"));

        for bad in [
            String::new(),
            "sha256".to_owned(),
            "sha256:".to_owned(),
            HEX64.to_owned(),
            format!("sha256:{}", &HEX64[1..]),
            format!("sha256:{HEX64}0"),
            format!("sha256:{}", HEX64.to_uppercase()),
            format!("sha256:{}g", &HEX64[1..]),
            format!("sha512:{HEX64}"),
            format!("sha384:{HEX64}"),
            format!("SHA256:{HEX64}"),
            format!("md5:{HEX64}"),
            format!("sha256+b64:{HEX64}"),
            format!("sha256:{HEX64}:"),
            format!(" sha256:{HEX64}"),
        ] {
            assert_eq!(
                bad.parse::<Digest>(),
                Err(Error::DigestInvalid(bad.clone()))
            );
        }
        assert!(Digest::new(Algorithm::Sha256, HEX64).is_ok());
        assert!(Digest::new(Algorithm::Sha512, HEX64).is_err());
    }

    #[test]
    fn references() {
        let r: Reference = "3.20".parse().unwrap();
        assert!(matches!(&r, Reference::Tag(t) if t.as_str() == "3.20"));
        assert_eq!(r.cacheability(), Cacheability::Mutable);

        let r: Reference = format!("sha256:{HEX64}").parse().unwrap();
        assert!(matches!(&r, Reference::Digest(_)));
        assert_eq!(r.cacheability(), Cacheability::Immutable);
        assert_eq!(r.to_string(), format!("sha256:{HEX64}"));

        // cosign signature tags look content-addressed but are ordinary, mutable tags.
        let r: Reference = format!("sha256-{HEX64}.sig").parse().unwrap();
        assert_eq!(r.cacheability(), Cacheability::Mutable);

        assert!(matches!(
            "sha256:nothex".parse::<Reference>(),
            Err(Error::DigestInvalid(_))
        ));
        assert!(matches!(
            "a/b".parse::<Reference>(),
            Err(Error::TagInvalid(_))
        ));
    }

    #[test]
    fn serde_round_trip() {
        let name: RepoName = "library/alpine".parse().unwrap();
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(json, r#""library/alpine""#);
        assert_eq!(serde_json::from_str::<RepoName>(&json).unwrap(), name);

        let reference: Reference = format!("sha256:{HEX64}").parse().unwrap();
        let json = serde_json::to_string(&reference).unwrap();
        assert_eq!(json, format!(r#""sha256:{HEX64}""#));
        assert_eq!(serde_json::from_str::<Reference>(&json).unwrap(), reference);

        let json = serde_json::to_string(&Algorithm::Sha512).unwrap();
        assert_eq!(json, r#""sha512""#);

        // Stored values are re-validated on the way back in.
        assert!(serde_json::from_str::<RepoName>(r#""a//b""#).is_err());
        assert!(serde_json::from_str::<Digest>(r#""sha256:00""#).is_err());
        assert!(serde_json::from_str::<Tag>("42").is_err());
    }
}
