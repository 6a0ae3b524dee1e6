//! Crate-wide properties: no parser panics on hostile input, and whatever parses renders back
//! to the same value. A small deterministic mutator stands in for proptest/cargo-fuzz so the
//! check runs in every `cargo test` with no extra dependency.

use std::time::{Duration, SystemTime};

use crate::auth::{parse_token_response, parse_www_authenticate, ratelimit, token_url};
use crate::media::{AcceptSet, OCI_INDEX, essence, is_index};
use crate::request::parse_v2_path;
use crate::{Digest, Endpoint, Error, ErrorCode, Reference, RepoName, Tag, error_body};

const HEX: &str = "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";

/// Knuth's MMIX LCG; the high bits are good enough to pick mutations.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).unwrap_or_default()
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Bytes that sit on the grammar boundaries of everything in this crate.
const INTERESTING: &[u8] = b"/%.:_-\\\0\"=,; \taAzZ09\xc3\xbc#?&*+@~";

fn mutate(rng: &mut Lcg, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let pos = rng.below(out.len() + 1);
        let byte = INTERESTING[rng.below(INTERESTING.len())];
        match rng.below(6) {
            0 if pos < out.len() => out[pos] = byte,
            1 => out.insert(pos, byte),
            2 if pos < out.len() => {
                out.remove(pos);
            }
            3 => out.truncate(pos),
            4 if pos < out.len() => {
                // Duplicate a slice, which produces repeated separators and long components.
                let end = (pos + rng.below(16)).min(out.len());
                let slice = out[pos..end].to_vec();
                out.splice(pos..pos, slice);
            }
            _ => out.insert(pos, u8::try_from(rng.below(256)).unwrap_or(b'x')),
        }
    }
    out
}

fn corpus() -> Vec<String> {
    let d = format!("sha256:{HEX}");
    vec![
        String::new(),
        "/".into(),
        "/_catalog".into(),
        "/library/nginx/manifests/1.27".into(),
        format!("/library/alpine/manifests/{d}"),
        format!("/a/b/c/blobs/{d}"),
        format!("/docker.io/library/alpine/blobs/sha512:{HEX}{HEX}"),
        "/x/blobs/uploads/".into(),
        "/x/blobs/uploads/6f1c6c1e".into(),
        "/x/tags/list".into(),
        format!("/x/referrers/{d}"),
        format!("/o/app/manifests/sha256-{HEX}.sig"),
        "/a__b.c--d/e_f/manifests/_T.a-g".into(),
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#.into(),
        r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/a:pull",error="insufficient_scope""#.into(),
        r#"Basic realm="x", Newauth abc==, Bearer realm="q\"uo\\te",scope="a,b""#.into(),
        r#"{"token":"t","access_token":"t","expires_in":300,"issued_at":"2024-12-31T23:59:30.5Z"}"#.into(),
        r#"{"access_token":"a","expires_in":1e300,"issued_at":"2025-01-01 00:00:00"}"#.into(),
        "application/vnd.oci.image.index.v1+json;q=0, */*;q=0.5, application/*".into(),
        "98;w=21600".into(),
    ]
}

/// Exercises every parser on `input` and checks the properties that must hold for any input.
/// Returns whether `input` was a valid path, so the caller can tell the mutator still reaches
/// the interesting code.
fn exercise(input: &str) -> bool {
    let endpoint = parse_v2_path(input);
    if let Ok(endpoint) = &endpoint {
        // A parsed endpoint renders back to a path that parses to the same endpoint.
        let rendered = render(endpoint);
        assert_eq!(parse_v2_path(&rendered).as_ref(), Ok(endpoint), "{input:?}");
        if let Some(name) = endpoint.name() {
            assert!(!name.as_str().contains(".."), "{input:?}");
            assert!(!name.as_str().contains('%'), "{input:?}");
        }
    }
    for piece in input.split('/') {
        round_trip::<Tag>(piece);
        round_trip::<Digest>(piece);
        round_trip::<Reference>(piece);
    }
    if let Some(rest) = input.strip_prefix('/') {
        round_trip::<RepoName>(rest);
    }
    round_trip::<RepoName>(input);

    if let Ok(challenges) = parse_www_authenticate(input) {
        assert!(challenges.len() <= input.len(), "{input:?}");
    }
    let _ = token_url(input, Some(input), &[input.to_owned()]);

    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_600);
    if let Ok(token) = parse_token_response(input.as_bytes(), now) {
        assert!(!token.value.is_empty());
        assert!(token.expires_at > now, "{input:?}");
        assert!(
            token.expires_at <= now + Duration::from_secs(60 + 24 * 60 * 60),
            "{input:?}"
        );
    }

    let accept = AcceptSet::parse(input.split('\n'));
    let _ = accept.accepts(input);
    if !accept.accepts(OCI_INDEX) {
        assert!(!accept.is_empty(), "{input:?}");
    }
    let _ = (is_index(input), essence(input), ratelimit(input));
    let body = error_body(ErrorCode::NameInvalid, input, None);
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
    endpoint.is_ok()
}

fn round_trip<T>(s: &str)
where
    T: std::str::FromStr<Err = Error> + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = s.parse::<T>() {
        assert_eq!(value.to_string(), s);
        assert_eq!(value.to_string().parse::<T>().as_ref(), Ok(&value));
    }
}

fn render(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Ping => "/".to_owned(),
        Endpoint::Catalog => "/_catalog".to_owned(),
        Endpoint::Manifest { name, reference } => format!("/{name}/manifests/{reference}"),
        Endpoint::Blob { name, digest } => format!("/{name}/blobs/{digest}"),
        Endpoint::TagsList { name } => format!("/{name}/tags/list"),
        Endpoint::Referrers { name, digest } => format!("/{name}/referrers/{digest}"),
        Endpoint::Upload { name } => format!("/{name}/blobs/uploads/"),
    }
}

#[test]
fn never_panics() {
    let mut rng = Lcg(0x5eed);
    let corpus = corpus();
    for seed in &corpus {
        exercise(seed);
    }
    let mut valid_paths = 0;
    for _ in 0..40_000 {
        let seed = corpus[rng.below(corpus.len())].as_bytes();
        let mutated = mutate(&mut rng, seed);
        valid_paths += usize::from(exercise(&String::from_utf8_lossy(&mutated)));
    }
    // Mutations must not be so destructive that only the error paths are exercised.
    assert!(
        valid_paths > 1_000,
        "only {valid_paths} mutated paths parsed"
    );
}

#[test]
fn error_codes() {
    let check = |err: Error, code: ErrorCode, status: u16| {
        assert_eq!(err.code(), code, "{err}");
        assert_eq!(err.code().status().as_u16(), status, "{err}");
    };
    check(Error::NameInvalid("A".into()), ErrorCode::NameInvalid, 400);
    check(
        Error::TagInvalid(".".into()),
        ErrorCode::ManifestInvalid,
        400,
    );
    check(
        Error::DigestInvalid("x".into()),
        ErrorCode::DigestInvalid,
        400,
    );
    check(Error::UnknownEndpoint, ErrorCode::Unsupported, 405);
    check(
        Error::ChallengeInvalid("x".into()),
        ErrorCode::Unavailable,
        503,
    );
    check(Error::TokenInvalid("x".into()), ErrorCode::Unavailable, 503);
}

#[test]
fn error_messages_are_lowercase_without_trailing_punctuation() {
    for err in [
        Error::NameInvalid("A".into()),
        Error::TagInvalid(".".into()),
        Error::DigestInvalid("x".into()),
        Error::UnknownEndpoint,
        Error::ChallengeInvalid("no challenge".into()),
        Error::TokenInvalid("no token".into()),
    ] {
        let msg = err.to_string();
        assert!(msg.starts_with(|c: char| c.is_ascii_lowercase()), "{msg}");
        assert!(!msg.ends_with(['.', '!', '?']), "{msg}");
    }
}
