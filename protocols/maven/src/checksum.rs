//! Checksums (MVN-L2, MVN-K1): sidecar bodies, the `X-Checksum-*` headers and Nexus 2's
//! `{SHA1{...}}` ETag.

use http::HeaderMap;

/// A checksum sidecar's algorithm, named by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl ChecksumAlgorithm {
    /// Every algorithm, in the order sidecar extensions are tried.
    pub const ALL: [Self; 4] = [Self::Sha1, Self::Md5, Self::Sha256, Self::Sha512];

    /// The sidecar extension without the dot, e.g. `"sha1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// The digest's length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    /// The digest's length in hex digits.
    pub fn hex_len(self) -> usize {
        self.digest_len() * 2
    }

    /// The response header that carries this digest (lowercase, as `http` names headers):
    /// `x-checksum-sha1` and `x-checksum-md5` are what Central sends and maven-resolver and
    /// Gradle read; the other two are Artifactory's.
    pub fn header_name(self) -> &'static str {
        match self {
            Self::Md5 => "x-checksum-md5",
            Self::Sha1 => "x-checksum-sha1",
            Self::Sha256 => "x-checksum-sha256",
            Self::Sha512 => "x-checksum-sha512",
        }
    }
}

/// The digest in a sidecar body: its first whitespace-separated token, as maven-resolver
/// reads it, so both `<hex>\n` and `<hex>  <file name>` work. Hex is accepted in any case.
///
/// A SHA-1 shorter than 40 digits is left-padded with zeros: Gradle writes SHA-1 sidecars
/// without their leading zeros (MVN-L2). No other algorithm is padded.
pub fn parse_sidecar(body: &[u8], algorithm: ChecksumAlgorithm) -> Option<Vec<u8>> {
    let token = body
        .split(u8::is_ascii_whitespace)
        .find(|t| !t.is_empty())?;
    let token = std::str::from_utf8(token).ok()?;
    if algorithm == ChecksumAlgorithm::Sha1 && token.len() < algorithm.hex_len() {
        let padded = format!("{token:0>40}");
        return decode(&padded, algorithm);
    }
    decode(token, algorithm)
}

/// A sidecar body for `digest`: lowercase hex, no file name and no newline (what Central
/// serves).
pub fn render_sidecar(digest: &[u8]) -> String {
    hex::encode(digest)
}

/// The digest in an `X-Checksum-*` header value (surrounding whitespace ignored). Unlike a
/// sidecar, a header must be exactly the algorithm's length: Gradle's `HashCode.fromString`
/// would refuse anything else.
pub fn parse_header(value: &str, algorithm: ChecksumAlgorithm) -> Option<Vec<u8>> {
    decode(value.trim(), algorithm)
}

/// The digest from `headers`' [`header_name`](ChecksumAlgorithm::header_name) header, if it
/// is present, valid UTF-8 and well-formed.
pub fn from_headers(headers: &HeaderMap, algorithm: ChecksumAlgorithm) -> Option<Vec<u8>> {
    let value = headers.get(algorithm.header_name())?.to_str().ok()?;
    parse_header(value, algorithm)
}

/// The SHA-1 in a Nexus 2 style ETag, `"{SHA1{<hex>}}"` (quotes and a `W/` prefix optional;
/// maven-resolver's `Nx2ChecksumExtractor`).
pub fn parse_nexus_etag(value: &str) -> Option<Vec<u8>> {
    let value = value.trim();
    let value = value.strip_prefix("W/").unwrap_or(value);
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let hex = value.strip_prefix("{SHA1{")?.strip_suffix("}}")?;
    decode(hex, ChecksumAlgorithm::Sha1)
}

fn decode(hex: &str, algorithm: ChecksumAlgorithm) -> Option<Vec<u8>> {
    if hex.len() != algorithm.hex_len() {
        return None;
    }
    hex::decode(hex).ok()
}

#[cfg(test)]
mod tests {
    use super::ChecksumAlgorithm::{Md5, Sha1, Sha256, Sha512};
    use super::*;

    const SHA1: &str = "f572d396fae9206628714fb2ce00f72e94f2258f";
    const MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

    fn check(input: (&[u8], ChecksumAlgorithm), expected: Option<&str>) {
        let (body, algorithm) = input;
        let actual = parse_sidecar(body, algorithm).map(|d| render_sidecar(&d));
        assert_eq!(
            actual.as_deref(),
            expected,
            "{:?} {algorithm:?}",
            String::from_utf8_lossy(body)
        );
    }

    #[test]
    fn sidecars() {
        check((SHA1.as_bytes(), Sha1), Some(SHA1));
        check((format!("{SHA1}\n").as_bytes(), Sha1), Some(SHA1));
        check((format!("{SHA1}\r\n").as_bytes(), Sha1), Some(SHA1));
        check(
            (format!("  {SHA1}  app-1.0.jar\n").as_bytes(), Sha1),
            Some(SHA1),
        );
        check((SHA1.to_uppercase().as_bytes(), Sha1), Some(SHA1));
        check((MD5.as_bytes(), Md5), Some(MD5));
        check((format!("{MD5} *app-1.0.jar").as_bytes(), Md5), Some(MD5));
        check((&[b'a'; 64], Sha256), Some(&"a".repeat(64)));
        check((&[b'0'; 128], Sha512), Some(&"0".repeat(128)));
        // Gradle's short SHA-1s are left-padded; other algorithms are not.
        check(
            (&SHA1.as_bytes()[2..], Sha1),
            Some(&format!("00{}", &SHA1[2..])),
        );
        check(
            (b"1", Sha1),
            Some("0000000000000000000000000000000000000001"),
        );
        check((&MD5.as_bytes()[1..], Md5), None);
        check((&[b'a'; 63], Sha256), None);
        // Wrong lengths, non-hex and empty bodies.
        check((format!("{SHA1}0").as_bytes(), Sha1), None);
        check((SHA1.as_bytes(), Md5), None);
        check((MD5.as_bytes(), Sha256), None);
        check((b"zz", Sha1), None);
        check((b"", Sha1), None);
        check((b" \n\t", Sha1), None);
        check((b"\xff\xfe", Sha1), None);
        check((b"<html>not found</html>", Sha1), None);
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_header(&format!(" {} ", SHA1.to_uppercase()), Sha1).map(|d| render_sidecar(&d)),
            Some(SHA1.to_owned())
        );
        assert_eq!(parse_header(&SHA1[1..], Sha1), None);
        assert_eq!(parse_header(MD5, Sha1), None);
        let mut headers = HeaderMap::new();
        headers.insert("X-Checksum-Md5", MD5.parse().unwrap());
        assert_eq!(from_headers(&headers, Md5), hex::decode(MD5).ok());
        assert_eq!(from_headers(&headers, Sha1), None);
        let want = hex::decode(SHA1).ok();
        assert_eq!(parse_nexus_etag(&format!("\"{{SHA1{{{SHA1}}}}}\"")), want);
        assert_eq!(parse_nexus_etag(&format!("W/\"{{SHA1{{{SHA1}}}}}\"")), want);
        assert_eq!(parse_nexus_etag(&format!("{{SHA1{{{SHA1}}}}}")), want);
        assert_eq!(parse_nexus_etag(&format!("\"{SHA1}\"")), None);
        assert_eq!(parse_nexus_etag("\"{SHA1{}}\""), None);
    }

    #[test]
    fn algorithm_facts() {
        for a in ChecksumAlgorithm::ALL {
            assert_eq!(a.hex_len(), 2 * a.digest_len());
            assert_eq!(a.header_name(), format!("x-checksum-{}", a.as_str()));
        }
    }
}
