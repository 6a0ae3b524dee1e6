//! Manifest media types and content negotiation (distribution-spec `content-negotiation.md`,
//! checklist OCI-M2/OCI-M3).

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (multi-platform).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (multi-platform).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1, unsigned. Passed through, never produced or converted.
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker schema 1, signed. Docker Hub answers with this when a manifest request has no
/// `Accept` header.
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The `Accept` value for every upstream manifest request by tag. It lists all four modern
/// types so the upstream answers with the manifest as pushed (an index stays an index and its
/// digest matches what clients resolve elsewhere); without an `Accept` header Docker Hub falls
/// back to schema 1 (checklist OCI-M3).
pub const UPSTREAM_MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether `media_type` is a multi-platform index (OCI index or Docker manifest list).
/// Parameters and case are ignored.
pub fn is_index(media_type: &str) -> bool {
    let t = essence(media_type);
    t.eq_ignore_ascii_case(OCI_INDEX) || t.eq_ignore_ascii_case(DOCKER_MANIFEST_LIST)
}

/// Whether `media_type` is a Docker schema 1 manifest (signed or not).
pub fn is_schema1(media_type: &str) -> bool {
    let t = essence(media_type);
    t.eq_ignore_ascii_case(DOCKER_SCHEMA1) || t.eq_ignore_ascii_case(DOCKER_SCHEMA1_SIGNED)
}

/// The media type without parameters and surrounding whitespace:
/// `"application/json; charset=utf-8"` → `"application/json"`. The spec says registries should
/// not send parameters on manifest content types, but some do, and stored types are compared
/// by essence.
pub fn essence(content_type: &str) -> &str {
    content_type
        .split_once(';')
        .map_or(content_type, |(t, _)| t)
        .trim()
}

/// The media types a client accepts, from all of its `Accept` header lines.
///
/// Policy (checklist OCI-M3; a proxy cannot convert between manifest schemas, so the only
/// choice is serve or refuse):
///
/// * Index types (OCI index, Docker manifest list) are acceptable only if listed explicitly,
///   covered by a wildcard (`*/*`, `application/*`), or if the client sent no `Accept` at all.
///   A client that lists types but not indexes expects a single-platform manifest and breaks
///   on an index, so the engine must answer `404 MANIFEST_UNKNOWN` (as distribution does) or
///   re-ask upstream with the client's own `Accept`. containerd lists its types and adds `*/*`,
///   so it accepts everything.
/// * A client with no `Accept` at all is a legacy tool (curl, scripts) that verifies nothing
///   and gets whatever is stored. distribution is stricter here (it refuses an OCI index
///   without an explicit `Accept`); [`AcceptSet::is_legacy`] lets the engine choose that.
/// * Every non-index type is acceptable unless explicitly refused with `q=0`. Historically
///   a client without schema 2 in its list would get schema 1 converted by the registry; a
///   proxy cannot convert, and refusing would turn a maybe-working pull into a certain failure.
/// * `q` values other than 0 do not rank anything: a manifest exists in one type only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcceptSet {
    /// Listed types with `q` > 0, lowercased essences.
    accepted: Vec<String>,
    /// Types listed with `q=0`, lowercased essences.
    refused: Vec<String>,
}

impl AcceptSet {
    /// Parses every `Accept` header line of a request. Docker and containers/image send one
    /// line per type, containerd one comma-separated line; both are handled by splitting each
    /// line on commas. Malformed items are skipped rather than failing the request.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = Self::default();
        for item in values.into_iter().flat_map(|v| v.split(',')) {
            let mut parts = item.split(';');
            let media_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            if media_type.is_empty() || !media_type.contains('/') {
                continue;
            }
            let refused = parts.any(|p| {
                p.trim()
                    .split_once('=')
                    .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("q") && is_q_zero(v))
            });
            if refused {
                set.refused.push(media_type);
            } else {
                set.accepted.push(media_type);
            }
        }
        set
    }

    /// Whether a manifest of `media_type` may be served to this client (see the type's
    /// documentation for the policy).
    pub fn accepts(&self, media_type: &str) -> bool {
        let t = essence(media_type);
        if self.refused.iter().any(|r| r.eq_ignore_ascii_case(t)) {
            return false;
        }
        if !is_index(t) || self.is_empty() {
            return true;
        }
        self.accepted.iter().any(|a| matches_range(a, t))
    }

    /// Whether an index (OCI index or Docker manifest list) may be served to this client.
    pub fn accepts_index(&self) -> bool {
        self.accepts(OCI_INDEX) || self.accepts(DOCKER_MANIFEST_LIST)
    }

    /// No usable `Accept` value at all.
    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty() && self.refused.is_empty()
    }

    /// A client that names no manifest type: no `Accept`, or only `*/*` and
    /// `application/json`. Such clients historically received schema 1.
    pub fn is_legacy(&self) -> bool {
        self.accepted
            .iter()
            .all(|a| a == "*/*" || a == "application/json")
    }
}

/// Whether an `Accept` media range (`*/*`, `type/*` or an exact type) covers `media_type`.
fn matches_range(range: &str, media_type: &str) -> bool {
    if range == "*/*" {
        return true;
    }
    match range.strip_suffix("/*") {
        Some(main) => media_type
            .split_once('/')
            .is_some_and(|(m, _)| m.eq_ignore_ascii_case(main)),
        None => range.eq_ignore_ascii_case(media_type),
    }
}

/// `q=0`, `q=0.0`, `q=0.000` (RFC 9110 §12.4.2 qvalue) mean "not acceptable".
fn is_q_zero(v: &str) -> bool {
    let v = v.trim().trim_matches('"');
    match v.split_once('.') {
        Some((int, frac)) => int == "0" && frac.bytes().all(|b| b == b'0'),
        None => v == "0",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTAINERD: &str = "application/vnd.docker.distribution.manifest.v2+json, \
        application/vnd.docker.distribution.manifest.list.v2+json, \
        application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";

    const CONTAINERS_IMAGE: [&str; 6] = [
        OCI_MANIFEST,
        DOCKER_MANIFEST_V2,
        DOCKER_SCHEMA1_SIGNED,
        DOCKER_SCHEMA1,
        DOCKER_MANIFEST_LIST,
        OCI_INDEX,
    ];

    /// `expected` is the verdict for, in order: OCI manifest, OCI index, Docker v2, Docker
    /// list, schema1 signed.
    fn check(accept: &[&str], expected: [bool; 5]) {
        let set = AcceptSet::parse(accept.iter().copied());
        let actual = [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST_V2,
            DOCKER_MANIFEST_LIST,
            DOCKER_SCHEMA1_SIGNED,
        ]
        .map(|t| set.accepts(t));
        assert_eq!(actual, expected, "accept: {accept:?}");
        assert_eq!(set.accepts_index(), expected[1] || expected[3]);
    }

    #[test]
    fn negotiation() {
        let all = [true; 5];
        check(&[CONTAINERD], all);
        check(&CONTAINERS_IMAGE, all);
        check(&[], all);
        check(&[""], all);
        check(&["*/*"], all);
        check(&["application/*"], all);
        // Single-platform clients never get an index.
        check(
            &[DOCKER_MANIFEST_V2, OCI_MANIFEST],
            [true, false, true, false, true],
        );
        check(&["application/json"], [true, false, true, false, true]);
        check(
            &[&format!("{DOCKER_MANIFEST_V2}, {DOCKER_MANIFEST_LIST}")],
            [true, false, true, true, true],
        );
        check(&[OCI_INDEX], [true, true, true, false, true]);
        // q=0 refuses; other q values and parameters are ignored.
        check(
            &[&format!("{OCI_INDEX};q=0, */*")],
            [true, false, true, true, true],
        );
        check(
            &[&format!(
                "{OCI_INDEX}; q=0.000, {DOCKER_MANIFEST_LIST} ; Q=0.5"
            )],
            [true, false, true, true, true],
        );
        check(
            &[&format!("{OCI_MANIFEST};q=0"), OCI_INDEX],
            [false, true, true, false, true],
        );
        check(
            &[&format!("{OCI_INDEX};q=0.01")],
            [true, true, true, false, true],
        );
        // Case-insensitive, whitespace tolerant, garbage skipped.
        check(
            &["  APPLICATION/VND.OCI.IMAGE.INDEX.V1+JSON  ,,garbage,;q=0"],
            [true, true, true, false, true],
        );
        // Only a refusal: the client did send an Accept, so indexes need listing.
        check(&["text/html;q=0"], [true, false, true, false, true]);
    }

    #[test]
    fn legacy() {
        assert!(AcceptSet::parse([]).is_legacy());
        assert!(AcceptSet::parse(["*/*"]).is_legacy());
        assert!(AcceptSet::parse(["application/json, */*"]).is_legacy());
        assert!(!AcceptSet::parse([CONTAINERD]).is_legacy());
        assert!(AcceptSet::parse([]).is_empty());
        assert!(!AcceptSet::parse(["*/*"]).is_empty());
    }

    #[test]
    fn media_type_helpers() {
        assert_eq!(
            essence("application/json; charset=utf-8"),
            "application/json"
        );
        assert_eq!(essence("  text/plain  "), "text/plain");
        assert_eq!(essence(""), "");
        assert!(is_index(OCI_INDEX));
        assert!(is_index(&format!("{DOCKER_MANIFEST_LIST}; charset=utf-8")));
        assert!(!is_index(OCI_MANIFEST));
        assert!(!is_index(DOCKER_MANIFEST_V2));
        assert!(is_schema1(DOCKER_SCHEMA1_SIGNED));
        assert!(!is_schema1(DOCKER_MANIFEST_V2));

        let upstream = AcceptSet::parse([UPSTREAM_MANIFEST_ACCEPT]);
        for t in [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST_V2,
            DOCKER_MANIFEST_LIST,
        ] {
            assert!(upstream.accepted.iter().any(|a| a == t), "{t}");
        }
        assert_eq!(upstream.accepted.len(), 4);
    }
}
