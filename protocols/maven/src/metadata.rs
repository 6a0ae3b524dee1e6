//! Merging artifact-level `maven-metadata.xml` documents (MVN-L3), for a group of upstreams
//! that each know some of an artifact's versions.
//!
//! The reader is a small tolerant XML tokenizer that understands exactly what metadata uses:
//! elements, text, the five predefined entities and character references, comments,
//! processing instructions, a DOCTYPE and CDATA. Attributes (a Maven 4 `xmlns`, say) are
//! skipped. Group-level (`<plugins>`) and SNAPSHOT-version (`<snapshot>`,
//! `<snapshotVersions>`) documents are refused rather than merged with their content dropped.

use std::cmp::Ordering;

use crate::Error;

/// What an artifact-level document says, in document order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Metadata {
    group: Option<String>,
    artifact: Option<String>,
    version: Option<String>,
    latest: Option<String>,
    release: Option<String>,
    versions: Vec<String>,
    last_updated: Option<String>,
}

/// Merges artifact-level metadata documents into one: the union of `<versions>` in
/// first-seen order, `<latest>` the highest version, `<release>` the highest non-SNAPSHOT
/// version (in the ordering of [`compare_versions`]; the documents' own `<latest>` and
/// `<release>` count as candidates), and `<lastUpdated>` the newest.
///
/// A single document is returned unchanged, so one upstream's bytes are served as it sent
/// them. Documents that disagree on groupId or artifactId are refused.
pub fn merge(docs: &[&[u8]]) -> Result<Vec<u8>, Error> {
    match docs {
        [] => return Err(Error::MetadataInvalid("no documents to merge".into())),
        [one] => return Ok(one.to_vec()),
        _ => {}
    }
    let mut merged = Metadata::default();
    let mut candidates: Vec<String> = Vec::new();
    for doc in docs {
        let m = read(doc)?;
        agree(&mut merged.group, m.group, "groupId")?;
        agree(&mut merged.artifact, m.artifact, "artifactId")?;
        if merged.version.is_none() {
            merged.version = m.version;
        }
        for v in m.versions {
            if !merged.versions.contains(&v) {
                merged.versions.push(v);
            }
        }
        candidates.extend(m.latest.into_iter().chain(m.release));
        if let Some(t) = m.last_updated {
            let newer = merged
                .last_updated
                .as_ref()
                .is_none_or(|old| (t.len(), &t) > (old.len(), old));
            if newer {
                merged.last_updated = Some(t);
            }
        }
    }
    candidates.extend(merged.versions.iter().cloned());
    let highest = |release_only: bool| {
        candidates
            .iter()
            .filter(|v| !release_only || !is_snapshot(v))
            .max_by(|a, b| compare_versions(a, b))
            .cloned()
    };
    merged.latest = highest(false);
    merged.release = highest(true);
    Ok(render(&merged).into_bytes())
}

fn agree(slot: &mut Option<String>, value: Option<String>, what: &str) -> Result<(), Error> {
    match (slot.as_ref(), value) {
        (Some(a), Some(b)) if *a != b => Err(Error::MetadataInvalid(format!(
            "{what} {a:?} differs from {b:?}"
        ))),
        (None, v) => {
            *slot = v;
            Ok(())
        }
        _ => Ok(()),
    }
}

fn is_snapshot(version: &str) -> bool {
    let b = version.as_bytes();
    b.len() >= 8 && b[b.len() - 8..].eq_ignore_ascii_case(b"SNAPSHOT")
}

fn render(m: &Metadata) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata>\n");
    let mut element = |indent: &str, name: &str, value: &Option<String>| {
        if let Some(v) = value {
            out.push_str(&format!("{indent}<{name}>{}</{name}>\n", escape(v)));
        }
    };
    element("  ", "groupId", &m.group);
    element("  ", "artifactId", &m.artifact);
    element("  ", "version", &m.version);
    out.push_str("  <versioning>\n");
    let mut element = |name: &str, value: &Option<String>| {
        if let Some(v) = value {
            out.push_str(&format!("    <{name}>{}</{name}>\n", escape(v)));
        }
    };
    element("latest", &m.latest);
    element("release", &m.release);
    out.push_str("    <versions>\n");
    for v in &m.versions {
        out.push_str(&format!("      <version>{}</version>\n", escape(v)));
    }
    out.push_str("    </versions>\n");
    if let Some(t) = &m.last_updated {
        out.push_str(&format!("    <lastUpdated>{}</lastUpdated>\n", escape(t)));
    }
    out.push_str("  </versioning>\n</metadata>\n");
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

fn invalid(what: &str) -> Error {
    Error::MetadataInvalid(what.to_owned())
}

/// Reads an artifact-level document.
fn read(doc: &[u8]) -> Result<Metadata, Error> {
    let text = std::str::from_utf8(doc).map_err(|_| invalid("not utf-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut m = Metadata::default();
    let mut stack: Vec<&str> = Vec::new();
    let mut content = String::new();
    let mut seen_root = false;
    let mut rest = text;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            content.push_str(&unescape(rest)?);
            break;
        };
        content.push_str(&unescape(&rest[..lt])?);
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<!--") {
            rest = skip_past(r, "-->")?;
        } else if let Some(r) = rest.strip_prefix("<![CDATA[") {
            let end = r.find("]]>").ok_or_else(|| invalid("unterminated cdata"))?;
            content.push_str(&r[..end]);
            rest = &r[end + 3..];
        } else if let Some(r) = rest.strip_prefix("<?") {
            rest = skip_past(r, "?>")?;
        } else if let Some(r) = rest.strip_prefix("<!") {
            // A DOCTYPE; metadata never has an internal subset, so the first `>` ends it.
            rest = skip_past(r, ">")?;
        } else if let Some(r) = rest.strip_prefix("</") {
            let end = r.find('>').ok_or_else(|| invalid("unterminated tag"))?;
            let name = r[..end].trim_end();
            if stack.pop() != Some(name) {
                return Err(invalid("mismatched end tag"));
            }
            let text = std::mem::take(&mut content);
            record(&mut m, &stack, name, text.trim());
            rest = &r[end + 1..];
        } else {
            let r = &rest[1..];
            let end = r.find('>').ok_or_else(|| invalid("unterminated tag"))?;
            let tag = &r[..end];
            let (tag, empty) = match tag.strip_suffix('/') {
                Some(t) => (t, true),
                None => (tag, false),
            };
            let name = tag
                .split(|c: char| c.is_ascii_whitespace())
                .next()
                .unwrap_or_default();
            if name.is_empty() {
                return Err(invalid("empty tag name"));
            }
            if stack.is_empty() {
                if seen_root || name != "metadata" {
                    return Err(invalid("root element is not metadata"));
                }
                seen_root = true;
            }
            let path_has = |parent: &str| stack.last() == Some(&parent);
            if (path_has("versioning") && matches!(name, "snapshot" | "snapshotVersions"))
                || (path_has("metadata") && name == "plugins")
            {
                return Err(invalid("only artifact-level metadata can be merged"));
            }
            content.clear();
            if !empty {
                stack.push(name);
            }
            rest = &r[end + 1..];
        }
    }
    if !stack.is_empty() || !seen_root {
        return Err(invalid("unterminated document"));
    }
    Ok(m)
}

fn skip_past<'a>(text: &'a str, end: &str) -> Result<&'a str, Error> {
    let at = text
        .find(end)
        .ok_or_else(|| invalid("unterminated markup"))?;
    Ok(&text[at + end.len()..])
}

/// Records the text of element `name` closed under `parents` (root first).
fn record(m: &mut Metadata, parents: &[&str], name: &str, text: &str) {
    let value = || (!text.is_empty()).then(|| text.to_owned());
    match (parents, name) {
        (["metadata"], "groupId") => m.group = value(),
        (["metadata"], "artifactId") => m.artifact = value(),
        (["metadata"], "version") => m.version = value(),
        (["metadata", "versioning"], "latest") => m.latest = value(),
        (["metadata", "versioning"], "release") => m.release = value(),
        (["metadata", "versioning"], "lastUpdated") => m.last_updated = value(),
        (["metadata", "versioning", "versions"], "version") => {
            if let Some(v) = value()
                && !m.versions.contains(&v)
            {
                m.versions.push(v);
            }
        }
        _ => {}
    }
}

fn unescape(text: &str) -> Result<String, Error> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let r = &rest[amp + 1..];
        let semi = r.find(';').ok_or_else(|| invalid("unterminated entity"))?;
        let entity = &r[..semi];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| invalid("unknown entity"))?
            }
        };
        out.push(c);
        rest = &r[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One item of a version: a number (as its digits without leading zeros, so any length
/// compares) or a qualifier.
#[derive(Debug, PartialEq, Eq)]
enum Item<'a> {
    Number(&'a str),
    Qualifier(&'a str),
}

/// Orders versions like a simplified Maven `ComparableVersion`: items split at `.`, `-` and
/// digit/letter transitions; numbers compare numerically and above qualifiers; missing items
/// count as `0` or the release qualifier, so `1.0 == 1`; qualifiers rank
/// `alpha < beta < milestone < rc = cr < snapshot < "" = ga = final = release < sp < others`
/// (others lexically, ignoring case).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a, b) = (items(a), items(b));
    (0..a.len().max(b.len()))
        .map(|i| compare_items(a.get(i), b.get(i)))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn items(version: &str) -> Vec<Item<'_>> {
    let mut out = Vec::new();
    for part in version.split(['.', '-']) {
        let mut rest = part;
        while !rest.is_empty() {
            let digit = rest.starts_with(|c: char| c.is_ascii_digit());
            let end = rest
                .find(|c: char| c.is_ascii_digit() != digit)
                .unwrap_or(rest.len());
            let (item, tail) = rest.split_at(end);
            out.push(if digit {
                Item::Number(item.trim_start_matches('0'))
            } else {
                Item::Qualifier(item)
            });
            rest = tail;
        }
    }
    out
}

/// Compares two items; a missing item (`None`) is `0` against a number and the release
/// against a qualifier.
fn compare_items(x: Option<&Item<'_>>, y: Option<&Item<'_>>) -> Ordering {
    match (x, y) {
        (Some(Item::Number(a)), Some(Item::Number(b))) => (a.len(), a).cmp(&(b.len(), b)),
        (Some(Item::Number(_)), Some(Item::Qualifier(_))) => Ordering::Greater,
        (Some(Item::Qualifier(_)), Some(Item::Number(_))) => Ordering::Less,
        (Some(Item::Qualifier(a)), Some(Item::Qualifier(b))) => rank(a)
            .cmp(&rank(b))
            .then_with(|| a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase())),
        (Some(Item::Number("")), None) => Ordering::Equal,
        (Some(Item::Number(_)), None) => Ordering::Greater,
        (Some(Item::Qualifier(q)), None) => rank(q).cmp(&RELEASE_RANK),
        (None, Some(_)) => compare_items(y, x).reverse(),
        (None, None) => Ordering::Equal,
    }
}

const RELEASE_RANK: u8 = 5;

fn rank(qualifier: &str) -> u8 {
    match qualifier.to_ascii_lowercase().as_str() {
        "alpha" | "a" => 0,
        "beta" | "b" => 1,
        "milestone" | "m" => 2,
        "rc" | "cr" => 3,
        "snapshot" => 4,
        "" | "ga" | "final" | "release" => RELEASE_RANK,
        "sp" => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(versions: &[&str], last_updated: &str) -> String {
        let versions: String = versions
            .iter()
            .map(|v| format!("<version>{v}</version>"))
            .collect();
        format!(
            "<?xml version=\"1.0\"?>\n<!-- c --><metadata xmlns=\"http://maven.apache.org/METADATA/1.1.0\">\
             <groupId>org.x</groupId><artifactId>app</artifactId><versioning><latest/>\
             <versions>{versions}</versions><lastUpdated>{last_updated}</lastUpdated></versioning></metadata>"
        )
    }

    fn check(input: &[&str], expected: Result<&str, Error>) {
        let docs: Vec<&[u8]> = input.iter().map(|d| d.as_bytes()).collect();
        let actual = merge(&docs).map(|out| String::from_utf8(out).unwrap());
        assert_eq!(
            actual.as_deref().map_err(Clone::clone),
            expected,
            "{input:?}"
        );
    }

    #[test]
    fn merges() {
        let a = doc(&["1.0", "1.1", "2.0-SNAPSHOT"], "20240101120000");
        let b = doc(&["1.0", "1.2-rc-1", "1.10"], "20240301000000");
        check(
            &[&a, &b],
            Ok(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata>\n  <groupId>org.x</groupId>\n  \
                <artifactId>app</artifactId>\n  <versioning>\n    <latest>2.0-SNAPSHOT</latest>\n    \
                <release>1.10</release>\n    <versions>\n      <version>1.0</version>\n      \
                <version>1.1</version>\n      <version>2.0-SNAPSHOT</version>\n      \
                <version>1.2-rc-1</version>\n      <version>1.10</version>\n    </versions>\n    \
                <lastUpdated>20240301000000</lastUpdated>\n  </versioning>\n</metadata>\n",
            ),
        );
        // One document is served as the upstream sent it.
        check(&["<not xml"], Ok("<not xml"));
        check(&[], Err(invalid("no documents to merge")));
    }

    #[test]
    fn round_trips_through_the_reader() {
        let a = doc(&["1.0", "a&amp;b"], "1");
        let b = doc(&["<![CDATA[2.0]]>", "&#x31;.5"], "2");
        let out = merge(&[a.as_bytes(), b.as_bytes()]).unwrap();
        let m = read(&out).unwrap();
        assert_eq!(m.versions, ["1.0", "a&b", "2.0", "1.5"]);
        assert_eq!(m.latest.as_deref(), Some("2.0"));
        assert_eq!(m.release.as_deref(), Some("2.0"));
        assert_eq!(m.last_updated.as_deref(), Some("2"));
        assert_eq!(merge(&[&out, &out]).unwrap(), out);
    }

    #[test]
    fn refuses() {
        let good = doc(&["1.0"], "1");
        let other = good.replace("<artifactId>app<", "<artifactId>lib<");
        check(
            &[&good, &other],
            Err(invalid("artifactId \"app\" differs from \"lib\"")),
        );
        let snapshot = "<metadata><versioning><snapshot><buildNumber>1</buildNumber></snapshot></versioning></metadata>";
        let plugins = "<metadata><plugins><plugin/></plugins></metadata>";
        let only = invalid("only artifact-level metadata can be merged");
        check(&[&good, snapshot], Err(only.clone()));
        check(&[plugins, &good], Err(only));
        for bad in [
            "",
            "<metadata>",
            "<metadata></versioning>",
            "<project/>",
            "<metadata/><metadata/>",
            "<metadata>&bogus;</metadata>",
            "<metadata><!-- </metadata>",
            "<metadata><</metadata>",
        ] {
            assert!(
                merge(&[good.as_bytes(), bad.as_bytes()]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn version_order() {
        let ordered = [
            "1-alpha-1",
            "1-alpha-2",
            "1-beta",
            "1-m1",
            "1-rc1",
            "1-SNAPSHOT",
            "1",
            "1-sp",
            "1-xyz",
            "1.0.1",
            "1.1",
            "1.2",
            "1.10",
            "2.0-rc-1",
            "2.0",
            "10",
            "99999999999999999999999",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(compare_versions(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert_eq!(compare_versions("1.0", "1"), Ordering::Equal);
        assert_eq!(compare_versions("1.0.0-ga", "1"), Ordering::Equal);
        assert_eq!(compare_versions("01.2", "1.2"), Ordering::Equal);
    }
}
