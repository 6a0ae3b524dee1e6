//! Tarball integrity (NPM-F4): W3C Subresource Integrity strings as ssri writes them, and the
//! legacy hex `shasum`.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::packument::VersionDist;

/// Standard alphabet, padding optional: some registries and old lockfiles drop the `=`.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One expected digest of a tarball.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Integrity {
    Sha512([u8; 64]),
    Sha384([u8; 48]),
    Sha256([u8; 32]),
    Sha1([u8; 20]),
}

impl Integrity {
    /// Parses an SRI list (`sha512-<base64>[?opts] sha1-<base64> ...`, separated by any ASCII
    /// whitespace) and returns the strongest entry that parses. Entries with an unknown
    /// algorithm or a digest of the wrong length are skipped, as ssri does.
    pub fn parse_sri(s: &str) -> Option<Self> {
        s.split_ascii_whitespace()
            .filter_map(Self::parse_one)
            .max_by_key(Self::strength)
    }

    fn parse_one(entry: &str) -> Option<Self> {
        let (algorithm, rest) = entry.split_once('-')?;
        let digest = rest.split('?').next().unwrap_or_default();
        let bytes = LENIENT.decode(digest).ok()?;
        match algorithm {
            "sha512" => bytes.try_into().ok().map(Self::Sha512),
            "sha384" => bytes.try_into().ok().map(Self::Sha384),
            "sha256" => bytes.try_into().ok().map(Self::Sha256),
            "sha1" => bytes.try_into().ok().map(Self::Sha1),
            _ => None,
        }
    }

    /// A legacy `dist.shasum`: 40 hex digits (either case), sha1.
    pub fn from_shasum(hex: &str) -> Option<Self> {
        let mut digest = [0; 20];
        hex::decode_to_slice(hex, &mut digest).ok()?;
        Some(Self::Sha1(digest))
    }

    /// The integrity to verify a version's tarball against, in pacote's order: `integrity`
    /// when it parses, else `shasum` (`registry.js` manifest()).
    pub fn for_version(d: &VersionDist) -> Option<Self> {
        d.integrity
            .as_deref()
            .and_then(Self::parse_sri)
            .or_else(|| d.shasum.as_deref().and_then(Self::from_shasum))
    }

    /// The SRI algorithm name: `sha512`, `sha384`, `sha256` or `sha1`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::Sha512(_) => "sha512",
            Self::Sha384(_) => "sha384",
            Self::Sha256(_) => "sha256",
            Self::Sha1(_) => "sha1",
        }
    }

    /// The raw digest.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Sha512(d) => d,
            Self::Sha384(d) => d,
            Self::Sha256(d) => d,
            Self::Sha1(d) => d,
        }
    }

    /// `<algorithm>-<base64 with padding>`, the form ssri and `package-lock.json` use.
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algorithm(), STANDARD.encode(self.bytes()))
    }

    /// The digest in lowercase hex.
    pub fn hex(&self) -> String {
        hex::encode(self.bytes())
    }

    fn strength(&self) -> u8 {
        match self {
            Self::Sha512(_) => 4,
            Self::Sha384(_) => 3,
            Self::Sha256(_) => 2,
            Self::Sha1(_) => 1,
        }
    }
}

impl fmt::Display for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // sha512/sha1 of the bytes "hello\n" as ssri prints them.
    const SHA512: &str = "sha512-58IrmUxZ2c8rSOVJseJGZmNgRZMNPafBrLKZ0cO3+TH5Sq5B7dosKyB6NuEPi8uNRSI+VIePWzFufOO2vAGWKQ==";
    const SHA512_HEX: &str = "e7c22b994c59d9cf2b48e549b1e24666636045930d3da7c1acb299d1c3b7f931f94aae41edda2c2b207a36e10f8bcb8d45223e54878f5b316e7ce3b6bc019629";
    const SHA1: &str = "sha1-9XLTlvrpIGYocU+yzgD3LpTyJY8=";
    const SHA1_HEX: &str = "f572d396fae9206628714fb2ce00f72e94f2258f";

    fn check(input: &str, expected: Option<(&str, &str)>) {
        let actual = Integrity::parse_sri(input);
        assert_eq!(
            actual.map(|i| (i.algorithm(), i.hex())),
            expected.map(|(a, h)| (a, h.to_owned())),
            "{input:?}"
        );
    }

    #[test]
    fn sri() {
        check(SHA512, Some(("sha512", SHA512_HEX)));
        check(SHA1, Some(("sha1", SHA1_HEX)));
        // The strongest parseable entry wins, wherever it is in the list.
        check(&format!("{SHA1} {SHA512}"), Some(("sha512", SHA512_HEX)));
        check(&format!("{SHA512}\n\t{SHA1}"), Some(("sha512", SHA512_HEX)));
        check(
            &format!("  {SHA512}?foo=bar  "),
            Some(("sha512", SHA512_HEX)),
        );
        check(SHA512.trim_end_matches('='), Some(("sha512", SHA512_HEX)));
        check(SHA1.trim_end_matches('='), Some(("sha1", SHA1_HEX)));
        // Broken strongest entries fall back to weaker ones.
        check(&format!("sha512-AAAA {SHA1}"), Some(("sha1", SHA1_HEX)));
        check(&format!("md5-AAAA {SHA1}"), Some(("sha1", SHA1_HEX)));
        check(
            &format!("sha256-{}", STANDARD.encode([7; 32])),
            Some(("sha256", &"07".repeat(32))),
        );
        check(
            &format!("sha384-{}", STANDARD.encode([9; 48])),
            Some(("sha384", &"09".repeat(48))),
        );
        check("", None);
        check("sha512-", None);
        check("sha512", None);
        check(
            "SHA512-58IrmUxZ2c8rSOVJseJGZmNgRZMNPafBrLKZ0cO3+TH5Sq5B7dosKyB6NuEPi8uNRSI+VIePWzFufOO2vAGWKQ==",
            None,
        );
        check(&SHA512.replace('+', "-"), None);
        check(&format!("{SHA512}x"), None);
        check(&SHA1.replace("sha1", "sha512"), None);
    }

    #[test]
    fn round_trips() {
        let i = Integrity::parse_sri(SHA512).unwrap();
        assert_eq!(i.to_sri(), SHA512);
        assert_eq!(i.to_string(), SHA512);
        assert_eq!(i.bytes().len(), 64);
        let legacy = Integrity::from_shasum(SHA1_HEX).unwrap();
        assert_eq!(legacy.to_sri(), SHA1);
        assert_eq!(
            Integrity::from_shasum(&SHA1_HEX.to_uppercase()),
            Some(legacy)
        );
        assert_eq!(Integrity::from_shasum(&SHA1_HEX[1..]), None);
        assert_eq!(Integrity::from_shasum(&format!("{SHA1_HEX}0")), None);
        assert_eq!(Integrity::from_shasum("g".repeat(40).as_str()), None);
    }

    #[test]
    fn pacote_order() {
        let dist = |integrity: Option<&str>, shasum: Option<&str>| VersionDist {
            version: "1.0.0".into(),
            tarball: None,
            integrity: integrity.map(Into::into),
            shasum: shasum.map(Into::into),
        };
        let of = |d: VersionDist| Integrity::for_version(&d).map(|i| i.algorithm());
        assert_eq!(of(dist(Some(SHA512), Some(SHA1_HEX))), Some("sha512"));
        assert_eq!(of(dist(None, Some(SHA1_HEX))), Some("sha1"));
        assert_eq!(of(dist(Some("garbage"), Some(SHA1_HEX))), Some("sha1"));
        assert_eq!(of(dist(Some(SHA512), None)), Some("sha512"));
        assert_eq!(of(dist(None, Some("nothex"))), None);
        assert_eq!(of(dist(None, None)), None);
    }
}
