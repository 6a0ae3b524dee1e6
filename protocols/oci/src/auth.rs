//! Upstream token authentication: `WWW-Authenticate` challenges (RFC 7235 §4.1, RFC 6750 §3),
//! the token request URL and response (distribution `docs/content/spec/auth/token.md`), and
//! Docker Hub's rate-limit headers.
//!
//! The flow itself (401 → fetch token → retry once) is the engine's; this module only answers
//! "what did the upstream ask for" and "what did the token server give us".

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::Error;
use crate::name::RepoName;

/// Lifetime assumed when a token response has no `expires_in`, and the minimum honoured
/// (token.md: "if omitted, 60 seconds"; issuers must not issue shorter-lived tokens).
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Upper bound on the lifetime taken from `expires_in`. Real registries issue tokens for
/// minutes; the cap keeps `SystemTime` arithmetic finite and bounds how long a bogus value
/// can keep a token in the engine's cache.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// How far `issued_at` may lie in the future before it is treated as clock skew.
const MAX_FUTURE_SKEW: Duration = Duration::from_secs(60);

/// One challenge from a `WWW-Authenticate` header. Schemes other than Bearer and Basic are
/// dropped by the parser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// RFC 6750 bearer challenge with the distribution token parameters. `scope` is passed
    /// back to the token server verbatim; `error` (e.g. `insufficient_scope`) tells the engine
    /// that a token it already sent was refused, so it refetches once and then gives up.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
        error: Option<String>,
    },
    Basic {
        realm: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value into its challenges.
///
/// Handles quoted strings with `\` escapes and commas inside quotes (scopes like
/// `repository:a:pull,push`), case-insensitive scheme and parameter names, several challenges
/// in one value, and token68 credentials (`Newauth abc==`). Unknown schemes are skipped, so an
/// upstream offering only those yields an empty list. A Bearer challenge without a `realm`
/// is an error: there is nowhere to fetch a token from. Repeated parameters keep the first.
pub fn parse_www_authenticate(value: &str) -> Result<Vec<Challenge>, Error> {
    let mut cursor = Cursor {
        bytes: value.as_bytes(),
        pos: 0,
    };
    let mut challenges = Vec::new();
    let mut schemes_seen = 0usize;
    loop {
        cursor.skip(|b| is_ows(b) || b == b',');
        if cursor.at_end() {
            break;
        }
        let scheme = cursor.token().ok_or_else(|| {
            Error::ChallengeInvalid(format!("expected an auth scheme at byte {}", cursor.pos))
        })?;
        schemes_seen += 1;
        let params = cursor.params()?;
        let param = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("bearer") {
            let realm = param("realm")
                .filter(|r| !r.is_empty())
                .ok_or_else(|| Error::ChallengeInvalid("bearer challenge without realm".into()))?;
            challenges.push(Challenge::Bearer {
                realm,
                service: param("service"),
                scope: param("scope"),
                error: param("error"),
            });
        } else if scheme.eq_ignore_ascii_case("basic") {
            challenges.push(Challenge::Basic {
                realm: param("realm"),
            });
        }
    }
    if schemes_seen == 0 {
        return Err(Error::ChallengeInvalid("no challenge".into()));
    }
    Ok(challenges)
}

/// A byte cursor over a header value. Header values are visible ASCII in practice; any other
/// byte simply fails the token grammar, and quoted strings keep it (lossily) as text.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip(&mut self, pred: impl Fn(u8) -> bool) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// An RFC 9110 token (`1*tchar`).
    fn token(&mut self) -> Option<String> {
        let start = self.pos;
        if self.skip(is_tchar) == 0 {
            return None;
        }
        Some(String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned())
    }

    /// The auth-params (or token68) after a scheme, stopping before the next scheme.
    fn params(&mut self) -> Result<Vec<(String, String)>, Error> {
        let mut params = Vec::new();
        if self.token68() {
            return Ok(params);
        }
        loop {
            let save = self.pos;
            self.skip(|b| is_ows(b) || b == b',');
            let Some(name) = self.token() else {
                self.pos = save;
                break;
            };
            self.skip(is_ows);
            if self.peek() != Some(b'=') {
                // `name` is the next challenge's scheme, not a parameter.
                self.pos = save;
                break;
            }
            self.pos += 1;
            self.skip(is_ows);
            let value = if self.peek() == Some(b'"') {
                self.quoted_string()?
            } else {
                self.token().ok_or_else(|| {
                    Error::ChallengeInvalid(format!("parameter {name} has no value"))
                })?
            };
            params.push((name, value));
        }
        Ok(params)
    }

    /// Consumes a token68 credential (`1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
    /// *"="`) if that is what follows the scheme: it must then be the whole challenge, i.e. be
    /// followed by a comma or the end. Otherwise leaves the cursor alone.
    fn token68(&mut self) -> bool {
        let save = self.pos;
        self.skip(is_ows);
        let body = self.skip(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
        self.skip(|b| b == b'=');
        self.skip(is_ows);
        if body > 0 && matches!(self.peek(), None | Some(b',')) {
            return true;
        }
        self.pos = save;
        false
    }

    /// A quoted-string starting at the opening quote, with `\` escapes removed.
    fn quoted_string(&mut self) -> Result<String, Error> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(Error::ChallengeInvalid("unterminated quoted string".into()));
            };
            self.pos += 1;
            match b {
                b'"' => return Ok(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let Some(escaped) = self.peek() else {
                        return Err(Error::ChallengeInvalid("unterminated quoted string".into()));
                    };
                    self.pos += 1;
                    out.push(escaped);
                }
                _ => out.push(b),
            }
        }
    }
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The token scope for pulling `name`: `repository:<name>:pull`. Docker Hub scopes are per
/// repository, so `name` must already be the upstream's canonical name (with `library/`).
pub fn pull_scope(name: &RepoName) -> String {
    format!("repository:{name}:pull")
}

/// The token request URL: `realm` with `service` and one `scope` parameter per scope appended
/// (token.md §Requesting a token), percent-encoded. Appends with `&` when the realm already
/// has a query. A fragment in the realm is dropped, since it would swallow the parameters.
/// Empty values are left out: an empty `service=` or `scope=` is a different request from
/// none at all to some token servers.
pub fn token_url(realm: &str, service: Option<&str>, scopes: &[String]) -> String {
    let mut url = realm.split_once('#').map_or(realm, |(u, _)| u).to_owned();
    let params = service
        .map(|s| ("service", s))
        .into_iter()
        .chain(scopes.iter().map(|s| ("scope", s.as_str())))
        .filter(|(_, v)| !v.is_empty());
    for (key, value) in params {
        match url.find('?') {
            None => url.push('?'),
            Some(q) if q + 1 == url.len() || url.ends_with('&') => {}
            Some(_) => url.push('&'),
        }
        url.push_str(key);
        url.push('=');
        percent_encode_into(&mut url, value);
    }
    url
}

/// Percent-encodes everything except RFC 3986 unreserved characters. `:` and `/` in scopes are
/// encoded too, as Go's `url.Values.Encode` (used by docker and containerd) does.
fn percent_encode_into(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// A bearer token and the time after which it must not be used.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    pub expires_at: SystemTime,
}

/// Redacts the token so it cannot end up in a log line through `{:?}`.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Parses a token server response received at `now`.
///
/// * The token is `token`, or `access_token` when `token` is absent or empty (token.md: both
///   may be sent for OAuth2 compatibility; they are then equal).
/// * The lifetime is `expires_in` seconds, at least 60 (the default when absent or not a
///   non-negative number) and at most a day.
/// * The lifetime counts from `issued_at` (RFC 3339) when it is plausible, otherwise from
///   `now`. A response was just issued, so an `issued_at` more than a minute in the future,
///   or so far in the past that the token would already be expired, is clock skew between us
///   and the issuer; trusting it would make every token look expired and refetch it on every
///   request.
pub fn parse_token_response(body: &[u8], now: SystemTime) -> Result<Token, Error> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Error::TokenInvalid(e.to_string()))?;
    let object = json
        .as_object()
        .ok_or_else(|| Error::TokenInvalid("not a json object".into()))?;
    let field = |name: &str| {
        object
            .get(name)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let value = field("token")
        .or_else(|| field("access_token"))
        .ok_or_else(|| Error::TokenInvalid("no token".into()))?
        .to_owned();

    let lifetime = object
        .get("expires_in")
        .and_then(|v| match v.as_u64() {
            Some(secs) => Some(Duration::from_secs(secs)),
            None => v.as_f64().and_then(|f| Duration::try_from_secs_f64(f).ok()),
        })
        .unwrap_or(MIN_TOKEN_LIFETIME)
        .clamp(MIN_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME);

    let issued = field("issued_at")
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
        .filter(|&issued| {
            let not_future = now
                .checked_add(MAX_FUTURE_SKEW)
                .is_none_or(|limit| issued <= limit);
            let not_expired = issued.checked_add(lifetime).is_some_and(|end| end > now);
            not_future && not_expired
        })
        .unwrap_or(now);

    let expires_at = issued
        .checked_add(lifetime)
        .ok_or_else(|| Error::TokenInvalid("expiry out of range".into()))?;
    Ok(Token { value, expires_at })
}

/// Parses a Docker Hub `ratelimit-limit` / `ratelimit-remaining` value, `98;w=21600`, into
/// `(count, window_seconds)`. The window is 0 when absent.
pub fn ratelimit(value: &str) -> Option<(u64, u64)> {
    let mut parts = value.split(';');
    let count = parts.next()?.trim().parse().ok()?;
    let mut window = 0;
    for param in parts {
        if let Some((key, v)) = param.split_once('=')
            && key.trim().eq_ignore_ascii_case("w")
        {
            window = v.trim().parse().ok()?;
        }
    }
    Some((count, window))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        error: Option<&str>,
    ) -> Challenge {
        Challenge::Bearer {
            realm: realm.to_owned(),
            service: service.map(str::to_owned),
            scope: scope.map(str::to_owned),
            error: error.map(str::to_owned),
        }
    }

    fn check(input: &str, expected: Result<Vec<Challenge>, Error>) {
        assert_eq!(parse_www_authenticate(input), expected, "input: {input:?}");
    }

    #[test]
    fn challenges() {
        check(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
            Ok(vec![bearer(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                Some("repository:library/alpine:pull"),
                None,
            )]),
        );
        check(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:owner/app:pull""#,
            Ok(vec![bearer(
                "https://ghcr.io/token",
                Some("ghcr.io"),
                Some("repository:owner/app:pull"),
                None,
            )]),
        );
        // quay.io may omit the scope.
        check(
            r#"Bearer realm="https://quay.io/v2/auth",service="quay.io""#,
            Ok(vec![bearer(
                "https://quay.io/v2/auth",
                Some("quay.io"),
                None,
                None,
            )]),
        );
        check(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull",error="insufficient_scope""#,
            Ok(vec![bearer(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                Some("repository:library/alpine:pull"),
                Some("insufficient_scope"),
            )]),
        );
        // Commas and escaped quotes inside quoted strings, odd spacing, case-insensitivity.
        check(
            r#"BEARER  Realm = "https://r/t" , SCOPE="repository:a:pull,push" ,service="s\"x\\y""#,
            Ok(vec![bearer(
                "https://r/t",
                Some("s\"x\\y"),
                Some("repository:a:pull,push"),
                None,
            )]),
        );
        // Unquoted values must be tokens (a URL is not); the first of repeated parameters wins.
        check(
            "Bearer realm=https://r/t,service=svc,service=other",
            Err(Error::ChallengeInvalid(
                "expected an auth scheme at byte 18".into(),
            )),
        );
        // `Bearer realm=` alone is a token68 credential (the grammar allows trailing `=`).
        check(
            "Bearer realm=",
            Err(Error::ChallengeInvalid(
                "bearer challenge without realm".into(),
            )),
        );
        check(
            r#"Bearer service="s",realm="#,
            Err(Error::ChallengeInvalid(
                "parameter realm has no value".into(),
            )),
        );
        check(
            "Bearer realm=realm-token,service=svc,service=other",
            Ok(vec![bearer("realm-token", Some("svc"), None, None)]),
        );
        check(
            r#"Basic realm="Registry Realm""#,
            Ok(vec![Challenge::Basic {
                realm: Some("Registry Realm".into()),
            }]),
        );
        check("Basic", Ok(vec![Challenge::Basic { realm: None }]));
        // Several challenges in one value, unknown schemes and token68 skipped.
        check(
            r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple", Bearer realm="https://r""#,
            Ok(vec![
                Challenge::Basic {
                    realm: Some("simple".into()),
                },
                bearer("https://r", None, None, None),
            ]),
        );
        check(
            r#"Negotiate abc+/def==, Bearer realm="https://r""#,
            Ok(vec![bearer("https://r", None, None, None)]),
        );
        check("Negotiate", Ok(vec![]));
        check(
            r#"Bearer service="s""#,
            Err(Error::ChallengeInvalid(
                "bearer challenge without realm".into(),
            )),
        );
        check(
            r#"Bearer realm="""#,
            Err(Error::ChallengeInvalid(
                "bearer challenge without realm".into(),
            )),
        );
        check(
            r#"Bearer realm="https://r"#,
            Err(Error::ChallengeInvalid("unterminated quoted string".into())),
        );
        check("", Err(Error::ChallengeInvalid("no challenge".into())));
        check(" , ", Err(Error::ChallengeInvalid("no challenge".into())));
        check(
            "=x",
            Err(Error::ChallengeInvalid(
                "expected an auth scheme at byte 0".into(),
            )),
        );
    }

    #[test]
    fn urls() {
        let name: RepoName = "library/alpine".parse().unwrap();
        assert_eq!(pull_scope(&name), "repository:library/alpine:pull");
        assert_eq!(
            token_url(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                &[pull_scope(&name)]
            ),
            "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Falpine%3Apull"
        );
        assert_eq!(
            token_url(
                "https://r/t?x=1",
                None,
                &["a b".to_owned(), "repository:x:pull,push".to_owned()]
            ),
            "https://r/t?x=1&scope=a%20b&scope=repository%3Ax%3Apull%2Cpush"
        );
        assert_eq!(
            token_url("https://r/t?", Some("s"), &[]),
            "https://r/t?service=s"
        );
        assert_eq!(
            token_url("https://r/t?a=b&", Some("s"), &[]),
            "https://r/t?a=b&service=s"
        );
        assert_eq!(
            token_url("https://r/t#frag", Some("s"), &[]),
            "https://r/t?service=s"
        );
        assert_eq!(
            token_url("https://quay.io/v2/auth", None, &[]),
            "https://quay.io/v2/auth"
        );
        assert_eq!(
            token_url("https://r", Some(""), &[String::new()]),
            "https://r"
        );
        assert_eq!(
            token_url("https://r", Some("ü~"), &[]),
            "https://r?service=%C3%BC~"
        );
    }

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    fn check_token(body: &str, now: &str, expected: Result<(&str, &str), Error>) {
        let actual = parse_token_response(body.as_bytes(), at(now));
        let expected = expected.map(|(value, expires)| Token {
            value: value.to_owned(),
            expires_at: at(expires),
        });
        assert_eq!(actual, expected, "body: {body}");
    }

    #[test]
    fn tokens() {
        let now = "2025-01-01T00:00:00Z";
        check_token(
            r#"{"token":"t","access_token":"t","expires_in":300,"issued_at":"2024-12-31T23:59:30Z"}"#,
            now,
            Ok(("t", "2025-01-01T00:04:30Z")),
        );
        check_token(
            r#"{"token":"t","expires_in":300,"issued_at":"2024-12-31T23:59:59.123456789Z"}"#,
            now,
            Ok(("t", "2025-01-01T00:04:59.123456789Z")),
        );
        // No issued_at, no expires_in: now + 60 s.
        check_token(r#"{"token":"t"}"#, now, Ok(("t", "2025-01-01T00:01:00Z")));
        // access_token only (OAuth2 style), and `token` preferred when both differ.
        check_token(
            r#"{"access_token":"a","expires_in":120}"#,
            now,
            Ok(("a", "2025-01-01T00:02:00Z")),
        );
        check_token(
            r#"{"token":"t","access_token":"a"}"#,
            now,
            Ok(("t", "2025-01-01T00:01:00Z")),
        );
        check_token(
            r#"{"token":"","access_token":"a"}"#,
            now,
            Ok(("a", "2025-01-01T00:01:00Z")),
        );
        // expires_in below the minimum, fractional, negative, wrong type, huge.
        check_token(
            r#"{"token":"t","expires_in":5}"#,
            now,
            Ok(("t", "2025-01-01T00:01:00Z")),
        );
        check_token(
            r#"{"token":"t","expires_in":90.5}"#,
            now,
            Ok(("t", "2025-01-01T00:01:30.5Z")),
        );
        check_token(
            r#"{"token":"t","expires_in":-1}"#,
            now,
            Ok(("t", "2025-01-01T00:01:00Z")),
        );
        check_token(
            r#"{"token":"t","expires_in":"300"}"#,
            now,
            Ok(("t", "2025-01-01T00:01:00Z")),
        );
        check_token(
            r#"{"token":"t","expires_in":18446744073709551615}"#,
            now,
            Ok(("t", "2025-01-02T00:00:00Z")),
        );
        // issued_at: unparsable, far future, slightly future, already expired → clamp.
        check_token(
            r#"{"token":"t","expires_in":300,"issued_at":"yesterday"}"#,
            now,
            Ok(("t", "2025-01-01T00:05:00Z")),
        );
        check_token(
            r#"{"token":"t","expires_in":300,"issued_at":"2025-01-01T01:00:00Z"}"#,
            now,
            Ok(("t", "2025-01-01T00:05:00Z")),
        );
        check_token(
            r#"{"token":"t","expires_in":300,"issued_at":"2025-01-01T00:00:30Z"}"#,
            now,
            Ok(("t", "2025-01-01T00:05:30Z")),
        );
        check_token(
            r#"{"token":"t","expires_in":300,"issued_at":"2024-12-31T00:00:00Z"}"#,
            now,
            Ok(("t", "2025-01-01T00:05:00Z")),
        );
        check_token(
            r#"{"token":"t","issued_at":42}"#,
            now,
            Ok(("t", "2025-01-01T00:01:00Z")),
        );

        check_token(
            r#"{"expires_in":60}"#,
            now,
            Err(Error::TokenInvalid("no token".into())),
        );
        check_token(
            r#"{"token":null}"#,
            now,
            Err(Error::TokenInvalid("no token".into())),
        );
        check_token(
            r#"["t"]"#,
            now,
            Err(Error::TokenInvalid("not a json object".into())),
        );
        assert!(matches!(
            parse_token_response(b"<html>", at(now)),
            Err(Error::TokenInvalid(_))
        ));
    }

    #[test]
    fn token_debug_is_redacted() {
        let token = parse_token_response(br#"{"token":"s3cret"}"#, SystemTime::UNIX_EPOCH).unwrap();
        let debug = format!("{token:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn ratelimits() {
        let check = |input: &str, expected: Option<(u64, u64)>| {
            assert_eq!(ratelimit(input), expected, "input: {input:?}");
        };
        check("98;w=21600", Some((98, 21600)));
        check("100;w=21600", Some((100, 21600)));
        check(" 0 ; W = 60 ", Some((0, 60)));
        check("42", Some((42, 0)));
        check("42;x=1", Some((42, 0)));
        check("", None);
        check("-1;w=60", None);
        check("a;w=60", None);
        check("1;w=x", None);
    }
}
