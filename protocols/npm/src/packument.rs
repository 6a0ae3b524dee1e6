//! Packuments: Accept negotiation (NPM-P2) and the `dist.tarball` scan behind rewriting
//! (NPM-T1, NPM-T2).
//!
//! Packuments reach tens of megabytes (`time` and `versions` grow with every publish), so the
//! scan is one pass over the bytes with a small hand-written tokenizer rather than a serde DOM:
//! it keeps no copy of the document, only the handful of strings the engine needs and the byte
//! spans to splice. Everything outside those spans is passed on byte for byte, which is what
//! keeps `time` (NPM-P4), `dist.integrity` and `dist.signatures` intact.

use std::collections::HashMap;

use crate::{Error, PackageName};

/// The abbreviated ("corgi") packument media type.
pub const ABBREVIATED: &str = "application/vnd.npm.install-v1+json";

/// Deepest nesting of objects and arrays accepted. Real packuments nest a handful of levels;
/// the limit bounds the recursion, not the document.
const MAX_DEPTH: usize = 512;

/// The two packument documents a registry serves for one name (NPM-P2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Representation {
    /// The install document: versions with only the fields installers need, no `time`.
    Abbreviated,
    /// The whole document, with `time`, `readme`, `maintainers`...
    Full,
}

impl Representation {
    /// The `Content-Type` to serve this representation with.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Abbreviated => ABBREVIATED,
            Self::Full => "application/json",
        }
    }

    /// The `Accept` to ask the upstream for this representation with: pacote's own corgi
    /// header, or plain JSON.
    pub fn upstream_accept(self) -> &'static str {
        match self {
            Self::Abbreviated => {
                "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
            }
            Self::Full => "application/json",
        }
    }

    /// A short name for cache keys and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Abbreviated => "abbreviated",
            Self::Full => "full",
        }
    }
}

/// Picks the representation for a client's `Accept` header lines.
///
/// Abbreviated only when `application/vnd.npm.install-v1+json` is listed with a q-value above
/// zero and at least as high as every other listed type (so pacote's `…; q=1.0, …; q=0.8,
/// */*` ties with `*/*` and wins). Anything else, including no `Accept`, any malformed
/// q-value or a corgi listed below `application/json`, is the full document: serving a corgi
/// document to a client that wanted the full one would silently lose `time` and break
/// `npm install --before` (NPM-P4), while the reverse only costs bytes.
pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Representation {
    let mut corgi: Option<u16> = None;
    let mut others: u16 = 0;
    let mut malformed = false;
    for line in accept {
        for item in line.split(',') {
            let mut params = item.split(';');
            let media = params.next().unwrap_or_default().trim();
            if media.is_empty() {
                continue;
            }
            let mut q = Some(1000);
            for param in params {
                if let Some((key, value)) = param.split_once('=')
                    && key.trim().eq_ignore_ascii_case("q")
                {
                    q = parse_q(value.trim());
                }
            }
            let Some(q) = q else {
                malformed = true;
                continue;
            };
            if media.eq_ignore_ascii_case(ABBREVIATED) {
                corgi = corgi.max(Some(q));
            } else {
                others = others.max(q);
            }
        }
    }
    match corgi {
        Some(q) if q > 0 && q >= others && !malformed => Representation::Abbreviated,
        _ => Representation::Full,
    }
}

/// An RFC 9110 qvalue in thousandths: `0[.ddd]` or `1[.000]`.
fn parse_q(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

/// What [`scan`] found in a packument.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// The top-level `name`, if it is a string.
    pub name: Option<String>,
    /// One entry per key of the top-level `versions` object whose value is an object, in
    /// document order. With duplicate keys the last value wins, at the first key's position
    /// (as `JSON.parse` does).
    pub dists: Vec<VersionDist>,
    /// Every `versions.<v>.dist.tarball` string, sorted by position. Unlike `dists` this keeps
    /// duplicates: every one of them is in the bytes and has to be rewritten.
    pub spans: Vec<TarballSpan>,
}

impl Scan {
    /// The `dist` of one version.
    pub fn dist(&self, version: &str) -> Option<&VersionDist> {
        self.dists.iter().find(|d| d.version == version)
    }

    /// The version whose `dist.tarball` URL ends in `/<file>`: the mapping for legacy tarball
    /// file names that do not follow `<name>-<version>.tgz` (NPM-F1).
    pub fn dist_for_file(&self, file: &str) -> Option<&VersionDist> {
        self.dists.iter().find(|d| {
            d.tarball.as_deref().is_some_and(|url| {
                let path = url.split(['?', '#']).next().unwrap_or_default();
                path.rsplit('/').next() == Some(file)
            })
        })
    }
}

/// The `dist` fields of one version, unescaped. A field is `None` when it is absent or not a
/// string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionDist {
    /// The key in `versions`.
    pub version: String,
    pub tarball: Option<String>,
    pub integrity: Option<String>,
    pub shasum: Option<String>,
}

/// The bytes of one `dist.tarball` string literal, quotes included: `doc[start..end]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarballSpan {
    pub start: usize,
    pub end: usize,
    /// The key in `versions` the tarball belongs to.
    pub version: String,
}

/// Validates `doc` as a JSON object and collects the top-level `name`, each version's `dist`
/// fields and the spans of the `dist.tarball` strings, in one pass.
///
/// Strictness follows `serde_json`: UTF-8 only, no control characters in strings, lone
/// surrogate escapes refused, nothing but whitespace after the value. Only
/// `versions.<v>.dist` is looked at; a `dist` anywhere else is ordinary data.
pub fn scan(doc: &[u8]) -> Result<Scan, Error> {
    // One validation of the whole buffer is cheaper than checking each string, and lets the
    // tokenizer treat every byte >= 0x80 as part of a string.
    if let Err(e) = std::str::from_utf8(doc) {
        return Err(Error::DocumentInvalid(format!(
            "invalid utf-8 at byte {}",
            e.valid_up_to()
        )));
    }
    let mut parser = Parser {
        doc,
        pos: 0,
        depth: 0,
    };
    parser.ws();
    if parser.peek() != Some(b'{') {
        return Err(Error::DocumentInvalid("top level is not an object".into()));
    }
    let mut found = Found::default();
    parser.object(|p, key| match p.key_kind(key)? {
        Key::Name => {
            // Last one wins, also when the last one is not a string.
            found.name = None;
            if p.peek() == Some(b'"') {
                let s = p.string()?;
                found.name = Some(p.decode(s)?);
                Ok(())
            } else {
                p.value()
            }
        }
        Key::Versions => {
            // A later `versions` replaces an earlier one; its spans stay recorded.
            found.versions.clear();
            if p.peek() == Some(b'{') {
                p.versions(&mut found.versions, &mut found.spans)
            } else {
                p.value()
            }
        }
        _ => p.value(),
    })?;
    parser.ws();
    if parser.pos != doc.len() {
        return Err(parser.error("trailing data"));
    }
    Ok(Scan {
        name: found.name,
        dists: dedup_versions(found.versions),
        spans: found.spans,
    })
}

/// Keeps the last value of each version at the position of its first key. `None` entries are
/// versions whose (last) value was not an object.
fn dedup_versions(entries: Vec<(String, Option<VersionDist>)>) -> Vec<VersionDist> {
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    for (i, (version, _)) in entries.iter().enumerate() {
        last.insert(version, i);
    }
    if last.len() == entries.len() {
        return entries.into_iter().filter_map(|(_, d)| d).collect();
    }
    let mut order = Vec::with_capacity(last.len());
    let mut seen = vec![false; entries.len()];
    for (version, _) in &entries {
        if let Some(&i) = last.get(version.as_str())
            && !seen[i]
        {
            seen[i] = true;
            order.push(i);
        }
    }
    drop(last);
    let mut entries: Vec<Option<VersionDist>> = entries.into_iter().map(|(_, d)| d).collect();
    order
        .into_iter()
        .filter_map(|i| entries.get_mut(i).and_then(Option::take))
        .collect()
}

#[derive(Default)]
struct Found {
    name: Option<String>,
    versions: Vec<(String, Option<VersionDist>)>,
    spans: Vec<TarballSpan>,
}

/// The keys the scan cares about, recognised without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Name,
    Versions,
    Dist,
    Tarball,
    Integrity,
    Shasum,
    Other,
}

impl Key {
    fn of(s: &[u8]) -> Self {
        match s {
            b"name" => Self::Name,
            b"versions" => Self::Versions,
            b"dist" => Self::Dist,
            b"tarball" => Self::Tarball,
            b"integrity" => Self::Integrity,
            b"shasum" => Self::Shasum,
            _ => Self::Other,
        }
    }
}

/// A string literal in the document: `doc[start..end]` including the quotes.
#[derive(Clone, Copy)]
struct Str {
    start: usize,
    end: usize,
    escaped: bool,
}

/// A recursive-descent validator. Recursion depth is bounded by [`MAX_DEPTH`], so hostile
/// nesting costs an error, not the stack.
struct Parser<'a> {
    doc: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> Error {
        if self.pos >= self.doc.len() {
            Error::DocumentInvalid(format!("{what}: unexpected end"))
        } else {
            Error::DocumentInvalid(format!("{what} at byte {}", self.pos))
        }
    }

    fn peek(&self) -> Option<u8> {
        self.doc.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Any value, validated and skipped.
    fn value(&mut self) -> Result<(), Error> {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => self.object(|p, _| p.value()),
            Some(b'[') => self.array(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("expected a value")),
        }
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        self.pos += 1;
        self.ws();
        Ok(())
    }

    /// The object at `pos`. `on_value` is called with each key when the cursor is on the
    /// member's value, and must consume that value.
    fn object(
        &mut self,
        mut on_value: impl FnMut(&mut Self, Str) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.enter()?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key"));
            }
            let key = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':'"));
            }
            self.pos += 1;
            self.ws();
            on_value(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self) -> Result<(), Error> {
        self.enter()?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.value()?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Error> {
        if self.doc[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("invalid literal"))
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), Error> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.required_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.required_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), Error> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(self.error("invalid number"));
        }
        self.digits();
        Ok(())
    }

    /// The string literal at `pos`, validated (escapes, surrogate pairs, no control
    /// characters). UTF-8 was checked for the whole document up front.
    fn string(&mut self) -> Result<Str, Error> {
        let start = self.pos;
        self.pos += 1;
        let mut escaped = false;
        loop {
            let rest = &self.doc[self.pos..];
            let Some(n) = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            else {
                self.pos = self.doc.len();
                return Err(self.error("unterminated string"));
            };
            self.pos += n;
            match self.doc[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Ok(Str {
                        start,
                        end: self.pos,
                        escaped,
                    });
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return Err(self.error("control character in string")),
            }
        }
    }

    /// The escape sequence at `pos` (on the backslash).
    fn escape(&mut self) -> Result<(), Error> {
        match self.doc.get(self.pos + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 2;
                Ok(())
            }
            Some(b'u') => {
                let (_, len) = unicode_escape(&self.doc[self.pos..])
                    .ok_or_else(|| self.error("invalid unicode escape"))?;
                self.pos += len;
                Ok(())
            }
            _ => Err(self.error("invalid escape")),
        }
    }

    /// The contents of a string literal, unescaped.
    fn decode(&self, s: Str) -> Result<String, Error> {
        let raw = self.doc.get(s.start + 1..s.end - 1).unwrap_or_default();
        let invalid = || Error::DocumentInvalid(format!("invalid string at byte {}", s.start));
        if !s.escaped {
            return std::str::from_utf8(raw)
                .map(str::to_owned)
                .map_err(|_| invalid());
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while let Some(&b) = raw.get(i) {
            if b != b'\\' {
                out.push(b);
                i += 1;
                continue;
            }
            let simple = match raw.get(i + 1) {
                Some(b'"') => b'"',
                Some(b'\\') => b'\\',
                Some(b'/') => b'/',
                Some(b'b') => 0x08,
                Some(b'f') => 0x0c,
                Some(b'n') => b'\n',
                Some(b'r') => b'\r',
                Some(b't') => b'\t',
                Some(b'u') => {
                    let (c, len) = unicode_escape(&raw[i..]).ok_or_else(invalid)?;
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    i += len;
                    continue;
                }
                _ => return Err(invalid()),
            };
            out.push(simple);
            i += 2;
        }
        String::from_utf8(out).map_err(|_| invalid())
    }

    /// Decodes a key; most keys have no escapes and are compared in place.
    fn key_kind(&self, key: Str) -> Result<Key, Error> {
        if key.escaped {
            // `"n\u0061me"` is `name` to every JSON parser; rare enough to allocate for.
            Ok(Key::of(self.decode(key)?.as_bytes()))
        } else {
            Ok(Key::of(&self.doc[key.start + 1..key.end - 1]))
        }
    }

    /// The top-level `versions` object: every key is a version.
    fn versions(
        &mut self,
        versions: &mut Vec<(String, Option<VersionDist>)>,
        spans: &mut Vec<TarballSpan>,
    ) -> Result<(), Error> {
        self.object(|p, key| {
            let version = p.decode(key)?;
            if p.peek() == Some(b'{') {
                let mut dist = VersionDist {
                    version,
                    ..VersionDist::default()
                };
                p.version(&mut dist, spans)?;
                versions.push((dist.version.clone(), Some(dist)));
                Ok(())
            } else {
                versions.push((version, None));
                p.value()
            }
        })
    }

    /// `versions.<v>`: only its `dist` member matters.
    fn version(
        &mut self,
        dist: &mut VersionDist,
        spans: &mut Vec<TarballSpan>,
    ) -> Result<(), Error> {
        self.object(|p, key| {
            if p.key_kind(key)? != Key::Dist {
                return p.value();
            }
            // Last `dist` wins as a whole.
            dist.tarball = None;
            dist.integrity = None;
            dist.shasum = None;
            if p.peek() == Some(b'{') {
                p.dist(dist, spans)
            } else {
                p.value()
            }
        })
    }

    /// `versions.<v>.dist`.
    fn dist(&mut self, dist: &mut VersionDist, spans: &mut Vec<TarballSpan>) -> Result<(), Error> {
        self.object(|p, key| {
            let kind = p.key_kind(key)?;
            let field = match kind {
                Key::Tarball => &mut dist.tarball,
                Key::Integrity => &mut dist.integrity,
                Key::Shasum => &mut dist.shasum,
                _ => return p.value(),
            };
            *field = None;
            if p.peek() != Some(b'"') {
                return p.value();
            }
            let s = p.string()?;
            *field = Some(p.decode(s)?);
            if kind == Key::Tarball {
                spans.push(TarballSpan {
                    start: s.start,
                    end: s.end,
                    version: dist.version.clone(),
                });
            }
            Ok(())
        })
    }
}

/// `\uXXXX`, or a surrogate pair `\uD8xx\uDCxx`, at the start of `s`: the character and the
/// number of bytes it took. `None` for bad hex and for lone surrogates (as `serde_json`).
fn unicode_escape(s: &[u8]) -> Option<(char, usize)> {
    let first = hex4(s.get(2..6)?)?;
    match first {
        0xD800..=0xDBFF => {
            if s.get(6..8)? != b"\\u" {
                return None;
            }
            let second = hex4(s.get(8..12)?)?;
            if !(0xDC00..=0xDFFF).contains(&second) {
                return None;
            }
            let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
            Some((char::from_u32(c)?, 12))
        }
        0xDC00..=0xDFFF => None,
        _ => Some((char::from_u32(first)?, 6)),
    }
}

fn hex4(s: &[u8]) -> Option<u32> {
    s.iter().try_fold(0u32, |acc, &b| {
        let d = char::from(b).to_digit(16)?;
        Some(acc * 16 + d)
    })
}

/// The conventional proxy URL of a tarball: `base` followed by
/// [`PackageName::tarball_path`]. `base` is the registry's public URL and should end in `/`;
/// one is added if it does not, so the result never glues host and name together.
pub fn tarball_url(base: &str, name: &PackageName, version: &str) -> String {
    let path = name.tarball_path(version);
    let mut url = String::with_capacity(base.len() + 1 + path.len());
    url.push_str(base);
    if !base.ends_with('/') {
        url.push('/');
    }
    url.push_str(&path);
    url
}

/// `s` as a JSON string literal, quotes included. Escapes only what JSON requires (`"`, `\`
/// and control characters), so URLs come out as they went in.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Replaces each span in `doc` with `json_string(&replace(span))`, copying every other byte
/// unchanged. `spans` must be sorted and non-overlapping, as [`scan`] returns them; a span
/// that is out of order or out of bounds is skipped rather than trusted.
pub fn rewrite(
    doc: &[u8],
    spans: &[TarballSpan],
    replace: impl Fn(&TarballSpan) -> String,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(doc.len() + spans.len() * 16);
    let mut copied = 0;
    for span in spans {
        if span.start < copied || span.end > doc.len() || span.start > span.end {
            continue;
        }
        out.extend_from_slice(&doc[copied..span.start]);
        out.extend_from_slice(json_string(&replace(span)).as_bytes());
        copied = span.end;
    }
    out.extend_from_slice(&doc[copied..]);
    out
}

#[cfg(test)]
pub(crate) mod tests;
