//! The pure core of a fill: a streaming verifier. It hashes every byte as it passes
//! (`update`), always computing the store's sha256 and, when the upstream promised a different
//! algorithm, that one too; `finish` compares length and digest with what was promised.
//! Nothing here does I/O, so the fill's hard guarantees are testable as plain functions.

use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha384, Sha512};

use crate::store::ContentHash;

/// A digest the upstream promised, in raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Sha256([u8; 32]),
    Sha512([u8; 64]),
    /// npm SRI `sha384-…` (rare, but valid).
    Sha384([u8; 48]),
    /// npm's legacy `shasum`, Maven's `.sha1`.
    Sha1([u8; 20]),
    /// Maven's `X-Checksum-Md5` / `.md5`: never the only check, always beside another one.
    Md5([u8; 16]),
}

impl Expected {
    pub fn from_oci(d: &oci::Digest) -> Option<Self> {
        let raw = hex::decode(d.hex()).ok()?;
        match d.algorithm() {
            oci::Algorithm::Sha256 => Some(Self::Sha256(raw.try_into().ok()?)),
            oci::Algorithm::Sha512 => Some(Self::Sha512(raw.try_into().ok()?)),
        }
    }

    fn render(&self) -> String {
        match self {
            Self::Sha256(b) => format!("sha256:{}", hex::encode(b)),
            Self::Sha512(b) => format!("sha512:{}", hex::encode(b)),
            Self::Sha384(b) => format!("sha384:{}", hex::encode(b)),
            Self::Sha1(b) => format!("sha1:{}", hex::encode(b)),
            Self::Md5(b) => format!("md5:{}", hex::encode(b)),
        }
    }
}

/// What the bytes must turn out to be.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub size: Option<u64>,
    pub digest: Option<Expected>,
    /// Further digests the bytes must also match (Maven's MD5 header beside its SHA-1).
    pub also: Vec<Expected>,
    /// Compute SHA-1 and MD5 of the bytes whatever is expected (Maven serves them as
    /// `X-Checksum-*` headers and sidecars).
    pub legacy_digests: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub sha256: ContentHash,
    pub size: u64,
    /// Whether a promised digest was checked (false = first seen, nothing to check against).
    pub checked: bool,
    /// SHA-1 of the bytes, when it was computed (expected, or `legacy_digests`).
    pub sha1: Option<[u8; 20]>,
    /// MD5 of the bytes, when it was computed.
    pub md5: Option<[u8; 16]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    Size { expected: u64, got: u64 },
    Digest { expected: String, got: String },
    TooLarge { limit: u64 },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Size { expected, got } => {
                write!(f, "length mismatch: expected {expected} bytes, got {got}")
            }
            Self::Digest { expected, got } => {
                write!(f, "digest mismatch: expected {expected}, got {got}")
            }
            Self::TooLarge { limit } => write!(f, "object larger than the {limit} byte limit"),
        }
    }
}

pub struct Verifier {
    sha256: Sha256,
    sha512: Option<Sha512>,
    sha384: Option<Sha384>,
    sha1: Option<Sha1>,
    md5: Option<md5::Md5>,
    len: u64,
    expect: Expect,
    limit: Option<u64>,
}

impl Verifier {
    pub fn new(expect: Expect, limit: Option<u64>) -> Self {
        let sha512 = matches!(expect.digest, Some(Expected::Sha512(_))).then(Sha512::new);
        let sha384 = matches!(expect.digest, Some(Expected::Sha384(_))).then(Sha384::new);
        let wants = |f: fn(&Expected) -> bool| {
            expect.legacy_digests || expect.digest.iter().chain(&expect.also).any(f)
        };
        let sha1 = wants(|e| matches!(e, Expected::Sha1(_))).then(Sha1::new);
        let md5 = wants(|e| matches!(e, Expected::Md5(_))).then(md5::Md5::new);
        Self {
            sha256: Sha256::new(),
            sha512,
            sha384,
            sha1,
            md5,
            len: 0,
            expect,
            limit,
        }
    }

    /// Feeds bytes; fails early when more bytes arrive than promised or allowed.
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), Mismatch> {
        self.len += bytes.len() as u64;
        if let Some(expected) = self.expect.size {
            if self.len > expected {
                return Err(Mismatch::Size {
                    expected,
                    got: self.len,
                });
            }
        }
        if let Some(limit) = self.limit {
            if self.len > limit {
                return Err(Mismatch::TooLarge { limit });
            }
        }
        self.sha256.update(bytes);
        if let Some(h) = &mut self.sha512 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.sha384 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.md5 {
            h.update(bytes);
        }
        Ok(())
    }

    pub fn finish(self) -> Result<Verified, Mismatch> {
        if let Some(expected) = self.expect.size {
            if self.len != expected {
                return Err(Mismatch::Size {
                    expected,
                    got: self.len,
                });
            }
        }
        let sha256: [u8; 32] = self.sha256.finalize().into();
        let sha512: Option<[u8; 64]> = self.sha512.map(|h| h.finalize().into());
        let sha384: Option<[u8; 48]> = self.sha384.map(|h| h.finalize().into());
        let sha1: Option<[u8; 20]> = self.sha1.map(|h| h.finalize().into());
        let md5: Option<[u8; 16]> = self.md5.map(|h| h.finalize().into());
        let got = |want: &Expected| match want {
            Expected::Sha256(_) => Expected::Sha256(sha256),
            Expected::Sha512(_) => Expected::Sha512(sha512.unwrap_or([0; 64])),
            Expected::Sha384(_) => Expected::Sha384(sha384.unwrap_or([0; 48])),
            Expected::Sha1(_) => Expected::Sha1(sha1.unwrap_or([0; 20])),
            Expected::Md5(_) => Expected::Md5(md5.unwrap_or([0; 16])),
        };
        let mut checked = false;
        for want in self.expect.digest.iter().chain(&self.expect.also) {
            checked |= check(want.clone(), got(want))?;
        }
        Ok(Verified {
            sha256: ContentHash(sha256),
            size: self.len,
            checked,
            sha1,
            md5,
        })
    }
}

fn check(want: Expected, got: Expected) -> Result<bool, Mismatch> {
    if want == got {
        Ok(true)
    } else {
        Err(Mismatch::Digest {
            expected: want.render(),
            got: got.render(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    #[test]
    fn verifies_in_any_chunking() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for chunk in [1, 7, 4096, 10_000] {
            let mut v = Verifier::new(
                Expect {
                    size: Some(10_000),
                    digest: Some(Expected::Sha256(sha256(&data))),
                    ..Expect::default()
                },
                None,
            );
            for c in data.chunks(chunk) {
                v.update(c).unwrap();
            }
            let ok = v.finish().unwrap();
            assert_eq!(ok.sha256.0, sha256(&data));
            assert!(ok.checked);
        }
    }

    #[test]
    fn one_flipped_bit_fails() {
        let data = vec![5u8; 1000];
        let mut bad = data.clone();
        bad[999] ^= 1;
        let mut v = Verifier::new(
            Expect {
                size: None,
                digest: Some(Expected::Sha256(sha256(&data))),
                ..Expect::default()
            },
            None,
        );
        v.update(&bad).unwrap();
        assert!(matches!(v.finish(), Err(Mismatch::Digest { .. })));
    }

    #[test]
    fn short_and_long_bodies_fail() {
        let data = vec![1u8; 100];
        let mut v = Verifier::new(
            Expect {
                size: Some(101),
                digest: None,
                ..Expect::default()
            },
            None,
        );
        v.update(&data).unwrap();
        assert_eq!(
            v.finish(),
            Err(Mismatch::Size {
                expected: 101,
                got: 100
            })
        );
        let mut v = Verifier::new(
            Expect {
                size: Some(99),
                digest: None,
                ..Expect::default()
            },
            None,
        );
        assert!(v.update(&data).is_err());
        let mut v = Verifier::new(Expect::default(), Some(50));
        assert_eq!(v.update(&data), Err(Mismatch::TooLarge { limit: 50 }));
    }

    #[test]
    fn sha1_and_sha384_digests_are_checked() {
        let data = b"legacy".to_vec();
        let want: [u8; 20] = Sha1::digest(&data).into();
        let mut v = Verifier::new(
            Expect {
                size: None,
                digest: Some(Expected::Sha1(want)),
                ..Expect::default()
            },
            None,
        );
        v.update(&data).unwrap();
        assert!(v.finish().unwrap().checked);
        let mut v = Verifier::new(
            Expect {
                size: None,
                digest: Some(Expected::Sha1(want)),
                ..Expect::default()
            },
            None,
        );
        v.update(b"legacx").unwrap();
        assert!(matches!(v.finish(), Err(Mismatch::Digest { .. })));
        let want: [u8; 48] = Sha384::digest(&data).into();
        let mut v = Verifier::new(
            Expect {
                size: None,
                digest: Some(Expected::Sha384(want)),
                ..Expect::default()
            },
            None,
        );
        v.update(&data).unwrap();
        assert!(v.finish().unwrap().checked);
    }

    #[test]
    fn sha512_digests_are_checked() {
        let data = b"hello".to_vec();
        let want: [u8; 64] = Sha512::digest(&data).into();
        let mut v = Verifier::new(
            Expect {
                size: None,
                digest: Some(Expected::Sha512(want)),
                ..Expect::default()
            },
            None,
        );
        v.update(&data).unwrap();
        let ok = v.finish().unwrap();
        assert_eq!(ok.sha256.0, sha256(&data));
    }
}
