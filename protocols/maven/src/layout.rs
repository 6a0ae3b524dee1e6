//! Repository layout (MVN-L1..L5): a request path relative to the repository root becomes a
//! [`RepoPath`], whose [`Kind`] says what the file is and whose
//! [`cacheability`](RepoPath::cacheability) says whether its bytes can ever change.
//!
//! Artifact file names are parsed right to left from the directories that hold them: the
//! version directory and the artifactId directory give the `<artifactId>-<version>` prefix the
//! file name must start with, so neither dashes in artifactIds and versions nor dashes in
//! classifiers are ambiguous. The file name is never split on `-`.

use std::fmt;

use crate::checksum::ChecksumAlgorithm;
use crate::{Cacheability, Error};

/// Longest request path accepted, in bytes. Real repository paths are far shorter; the bound
/// keeps hostile input cheap.
pub const MAX_PATH_LEN: usize = 1024;

/// Longest path segment accepted, in bytes (the common file-name limit).
pub const MAX_SEGMENT_LEN: usize = 255;

/// Compound extensions that are one extension, not a classifier ending in `.tar`.
const COMPOUND_EXTENSIONS: &[&str] = &["tar.gz", "tar.bz2", "tar.xz"];

/// A parsed request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPath {
    /// The path's segments as sent (percent escapes are not decoded), without the empty
    /// segments of a leading or trailing `/`. The engine forwards them upstream unchanged.
    pub segments: Vec<String>,
    /// What the last segment names.
    pub kind: Kind,
}

/// What a repository path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An artifact file (MVN-L1, MVN-L4): POM, jar, `.module`, sources, ...
    Artifact(Coordinates),
    /// A checksum sidecar (MVN-L2) of whatever `of` is, metadata and signatures included.
    Checksum {
        of: Box<Self>,
        algorithm: ChecksumAlgorithm,
    },
    /// A PGP signature (`.asc`, MVN-L2, MVN-UP3) of whatever `of` is.
    Signature { of: Box<Self> },
    /// `maven-metadata.xml`, or a local repository's `maven-metadata-<repo>.xml` (MVN-L3).
    Metadata { level: MetadataLevel },
    /// A path ending in `/`: a directory listing (MVN-L5).
    Directory,
    /// Anything else: a file whose name does not fit the directories it sits in.
    Other,
}

/// Where a `maven-metadata.xml` sits (MVN-L3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataLevel {
    /// Group level (plugin prefixes) or artifact level (versions): the two cannot be told
    /// apart by the path alone, and both are mutable.
    GroupOrArtifact,
    /// Inside a SNAPSHOT version directory: the list of timestamped builds.
    SnapshotVersion,
}

/// The coordinates of an artifact file, as the path spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    /// The groupId, the directories before the artifactId joined with `.`.
    pub group: String,
    pub artifact: String,
    /// The version directory, e.g. `1.0-SNAPSHOT`.
    pub version: String,
    /// The version in the file name: equal to `version` except for timestamped SNAPSHOT
    /// files, e.g. `1.0-20240101.123456-3`.
    pub file_version: String,
    pub classifier: Option<String>,
    /// The extension without the leading dot; `tar.gz`, `tar.bz2` and `tar.xz` are one.
    pub extension: String,
}

impl Coordinates {
    /// Whether the version directory is a SNAPSHOT (Maven's `ArtifactUtils.isSnapshot`: ends
    /// with `SNAPSHOT`, compared case-insensitively).
    pub fn is_snapshot(&self) -> bool {
        is_snapshot_version(&self.version)
    }

    /// Whether this is a unique, timestamped SNAPSHOT file (`<base>-<yyyyMMdd.HHmmss>-<n>`),
    /// which is written once and never changes.
    pub fn is_timestamped_snapshot(&self) -> bool {
        self.is_snapshot() && self.file_version != self.version
    }
}

impl fmt::Display for Coordinates {
    /// `group:artifact:file_version[:classifier]:extension`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.group, self.artifact, self.file_version)?;
        if let Some(c) = &self.classifier {
            write!(f, ":{c}")?;
        }
        write!(f, ":{}", self.extension)
    }
}

impl RepoPath {
    /// Whether the bytes behind this path can change (MVN-U3, MVN-UP2). When in doubt the
    /// answer is `Mutable`: calling something immutable that is not is the one mistake a
    /// cache cannot recover from.
    pub fn cacheability(&self) -> Cacheability {
        kind_cacheability(&self.kind)
    }
}

fn kind_cacheability(kind: &Kind) -> Cacheability {
    match kind {
        Kind::Artifact(c) => {
            if c.is_snapshot() {
                if c.is_timestamped_snapshot() {
                    Cacheability::Immutable
                } else {
                    Cacheability::Mutable
                }
            } else if is_meta_version(&c.version) {
                Cacheability::Mutable
            } else {
                Cacheability::Immutable
            }
        }
        Kind::Checksum { of, .. } | Kind::Signature { of } => kind_cacheability(of),
        Kind::Metadata { .. } | Kind::Directory | Kind::Other => Cacheability::Mutable,
    }
}

/// Maven's `ArtifactUtils.isSnapshot` for a version directory: ends with `SNAPSHOT`, any case.
fn is_snapshot_version(version: &str) -> bool {
    let b = version.as_bytes();
    b.len() >= 8 && b[b.len() - 8..].eq_ignore_ascii_case(b"SNAPSHOT")
}

/// `LATEST` and `RELEASE` are meta-versions a client resolves from metadata; a repository
/// that serves files under such a directory serves whatever is current, so they are mutable.
fn is_meta_version(version: &str) -> bool {
    version.eq_ignore_ascii_case("LATEST") || version.eq_ignore_ascii_case("RELEASE")
}

/// Parses a request path relative to the repository root (without the query string), e.g.
/// `/org/apache/maven/maven-core/3.9.6/maven-core-3.9.6.jar` (the leading `/` is optional).
///
/// Refused with [`Error::PathInvalid`]: empty, `.` and `..` segments; percent escapes that
/// decode to `/`, `\`, `.`, NUL or another control character, and malformed escapes; raw
/// control characters and `\`; `:` (Windows drive letters and alternate data streams, and
/// the coordinate separator); paths over [`MAX_PATH_LEN`] bytes and segments over
/// [`MAX_SEGMENT_LEN`] bytes.
pub fn parse(path: &str) -> Result<RepoPath, Error> {
    if path.len() > MAX_PATH_LEN {
        return Err(Error::PathInvalid(format!(
            "path of {} bytes is longer than {MAX_PATH_LEN}",
            path.len()
        )));
    }
    let invalid = || Error::PathInvalid(path.to_owned());
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (rest, directory) = match rest.strip_suffix('/') {
        Some(r) => (r, true),
        None => (rest, rest.is_empty()),
    };
    let segments: Vec<String> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').map(str::to_owned).collect()
    };
    if !segments.iter().all(|s| segment_ok(s)) {
        return Err(invalid());
    }
    let kind = match segments.split_last() {
        Some((file, dirs)) if !directory => classify(dirs, file),
        _ => Kind::Directory,
    };
    Ok(RepoPath { segments, kind })
}

fn segment_ok(segment: &str) -> bool {
    if segment.is_empty() || segment == "." || segment == ".." || segment.len() > MAX_SEGMENT_LEN {
        return false;
    }
    let b = segment.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_control() || c == b'\\' || c == b':' => return false,
            b'%' => {
                let decoded = match (b.get(i + 1), b.get(i + 2)) {
                    (Some(&h), Some(&l)) => match (hex_value(h), hex_value(l)) {
                        (Some(h), Some(l)) => h * 16 + l,
                        _ => return false,
                    },
                    _ => return false,
                };
                if decoded.is_ascii_control() || matches!(decoded, b'/' | b'\\' | b'.' | b':') {
                    return false;
                }
                i += 3;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    true
}

fn hex_value(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Classifies the file `file` inside the directories `dirs`. Sidecars are peeled first, so a
/// checksum of a signature of an artifact is classified as such.
fn classify(dirs: &[String], file: &str) -> Kind {
    for algorithm in ChecksumAlgorithm::ALL {
        if let Some(target) = strip_extension(file, algorithm.as_str()) {
            return Kind::Checksum {
                of: Box::new(classify(dirs, target)),
                algorithm,
            };
        }
    }
    if let Some(target) = strip_extension(file, "asc") {
        return Kind::Signature {
            of: Box::new(classify(dirs, target)),
        };
    }
    if file == "maven-metadata.xml"
        || (file.starts_with("maven-metadata-") && file.ends_with(".xml"))
    {
        let snapshot = dirs.last().is_some_and(|v| is_snapshot_version(v));
        let level = if snapshot {
            MetadataLevel::SnapshotVersion
        } else {
            MetadataLevel::GroupOrArtifact
        };
        return Kind::Metadata { level };
    }
    artifact(dirs, file).map_or(Kind::Other, Kind::Artifact)
}

/// `name` without `.ext`, if it ends so and something is left.
fn strip_extension<'a>(name: &'a str, ext: &str) -> Option<&'a str> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    (!stem.is_empty()).then_some(stem)
}

fn artifact(dirs: &[String], file: &str) -> Option<Coordinates> {
    let [group @ .., artifact, version] = dirs else {
        return None;
    };
    // A groupId's dots are all directory separators in the layout, so a group directory
    // with a dot cannot come from one; refusing it keeps one path per coordinate, which
    // matters to anything keyed by coordinates.
    if group.is_empty() || group.iter().any(|g| g.contains('.')) || version.is_empty() {
        return None;
    }
    let rest = file.strip_prefix(artifact.as_str())?.strip_prefix('-')?;
    let (file_version, tail) = timestamped(version, rest)
        .or_else(|| Some((version.clone(), after_version(rest, version)?)))?;
    let (classifier, extension) = if let Some(ext) = tail.strip_prefix('.') {
        // No classifier: everything after the version's dot is the extension.
        (None, ext)
    } else {
        let tail = tail.strip_prefix('-')?;
        let ext_start = COMPOUND_EXTENSIONS
            .iter()
            .find_map(|ext| strip_extension(tail, ext).map(|stem| stem.len()))
            .or_else(|| tail.rfind('.'))?;
        let classifier = &tail[..ext_start];
        (Some(classifier.to_owned()), &tail[ext_start + 1..])
    };
    if extension.is_empty() || classifier.as_deref() == Some("") {
        return None;
    }
    Some(Coordinates {
        group: group.join("."),
        artifact: artifact.clone(),
        version: version.clone(),
        file_version,
        classifier,
        extension: extension.to_owned(),
    })
}

/// What follows `version` at the start of `rest`, if `version` ends there at a `.` or `-`.
fn after_version<'a>(rest: &'a str, version: &str) -> Option<&'a str> {
    let tail = rest.strip_prefix(version)?;
    matches!(tail.as_bytes().first(), Some(b'.' | b'-')).then_some(tail)
}

/// For a `<base>-SNAPSHOT` directory, a `rest` of `<base>-<yyyyMMdd.HHmmss>-<n>...` gives the
/// file version and what follows it (MVN-L4).
fn timestamped<'a>(version: &str, rest: &'a str) -> Option<(String, &'a str)> {
    let base = version.strip_suffix("-SNAPSHOT")?;
    let stamp = rest.strip_prefix(base)?.strip_prefix('-')?;
    let b = stamp.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if !(digits(0..8) && b.get(8) == Some(&b'.') && digits(9..15) && b.get(15) == Some(&b'-')) {
        return None;
    }
    let build = b[16..].iter().take_while(|d| d.is_ascii_digit()).count();
    if build == 0 {
        return None;
    }
    let end = 16 + build;
    let tail = &stamp[end..];
    if !matches!(tail.as_bytes().first(), Some(b'.' | b'-')) {
        return None;
    }
    let file_version = format!("{base}-{}", &stamp[..end]);
    Some((file_version, tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cacheability::{Immutable, Mutable};

    /// A one-line summary of a parse: the kind, chained through sidecars, and the
    /// cacheability.
    fn summary(p: &RepoPath) -> String {
        fn kind(k: &Kind) -> String {
            match k {
                Kind::Artifact(c) => format!(
                    "artifact {c} v={} c={} e={}",
                    c.version,
                    c.classifier.as_deref().unwrap_or("-"),
                    c.extension
                ),
                Kind::Checksum { of, algorithm } => {
                    format!("{} of {}", algorithm.as_str(), kind(of))
                }
                Kind::Signature { of } => format!("asc of {}", kind(of)),
                Kind::Metadata { level } => format!("metadata {level:?}"),
                Kind::Directory => "directory".to_owned(),
                Kind::Other => "other".to_owned(),
            }
        }
        let c = match p.cacheability() {
            Immutable => "immutable",
            Mutable => "mutable",
        };
        format!("{} {c}", kind(&p.kind))
    }

    fn check(input: &str, expected: Result<&str, ()>) {
        let actual = parse(input).map(|p| summary(&p));
        match expected {
            Ok(e) => assert_eq!(actual.as_deref(), Ok(e), "{input:?}"),
            Err(()) => assert_eq!(
                actual,
                Err(Error::PathInvalid(input.to_owned())),
                "{input:?}"
            ),
        }
    }

    #[test]
    fn releases() {
        let core = "org/apache/maven/maven-core/3.9.6";
        let jar = "artifact org.apache.maven:maven-core:3.9.6:jar v=3.9.6 c=- e=jar";
        check(
            &format!("/{core}/maven-core-3.9.6.jar"),
            Ok(&format!("{jar} immutable")),
        );
        check(
            &format!("{core}/maven-core-3.9.6.jar"),
            Ok(&format!("{jar} immutable")),
        );
        check(
            &format!("{core}/maven-core-3.9.6-sources.jar"),
            Ok(
                "artifact org.apache.maven:maven-core:3.9.6:sources:jar v=3.9.6 c=sources e=jar immutable",
            ),
        );
        check(
            &format!("{core}/maven-core-3.9.6.pom"),
            Ok("artifact org.apache.maven:maven-core:3.9.6:pom v=3.9.6 c=- e=pom immutable"),
        );
        check(
            "org/x/app/1.0/app-1.0.module",
            Ok("artifact org.x:app:1.0:module v=1.0 c=- e=module immutable"),
        );
        check(
            "org/x/app/1.0/app-1.0-bin.tar.gz",
            Ok("artifact org.x:app:1.0:bin:tar.gz v=1.0 c=bin e=tar.gz immutable"),
        );
        check(
            "org/x/app/1.0/app-1.0.tar.gz",
            Ok("artifact org.x:app:1.0:tar.gz v=1.0 c=- e=tar.gz immutable"),
        );
        check(
            "org/x/app/1.0/app-1.0-linux-x86_64.tar.xz",
            Ok(
                "artifact org.x:app:1.0:linux-x86_64:tar.xz v=1.0 c=linux-x86_64 e=tar.xz immutable",
            ),
        );
        check(
            "org/x/app/1.0/app-1.0-jdk1.8.jar",
            Ok("artifact org.x:app:1.0:jdk1.8:jar v=1.0 c=jdk1.8 e=jar immutable"),
        );
        // Dashes in the artifactId and the version: the directories, not `-`, delimit them.
        check(
            "com/x/lib-core/2.0-rc-1/lib-core-2.0-rc-1-tests.jar",
            Ok("artifact com.x:lib-core:2.0-rc-1:tests:jar v=2.0-rc-1 c=tests e=jar immutable"),
        );
        check(
            "com/x/lib-core/2.0-rc-1/lib-core-2.0-rc-1.jar",
            Ok("artifact com.x:lib-core:2.0-rc-1:jar v=2.0-rc-1 c=- e=jar immutable"),
        );
        // Gradle plugin marker (MVN-C2).
        check(
            "org/x/p/org.x.p.gradle.plugin/1.2/org.x.p.gradle.plugin-1.2.pom",
            Ok("artifact org.x.p:org.x.p.gradle.plugin:1.2:pom v=1.2 c=- e=pom immutable"),
        );
    }

    #[test]
    fn sidecars() {
        let jar = "artifact org.x:app:1.0:jar v=1.0 c=- e=jar";
        check(
            "org/x/app/1.0/app-1.0.jar.asc",
            Ok(&format!("asc of {jar} immutable")),
        );
        check(
            "org/x/app/1.0/app-1.0.jar.asc.sha1",
            Ok(&format!("sha1 of asc of {jar} immutable")),
        );
        check(
            "org/x/app/1.0/app-1.0.pom.sha512",
            Ok("sha512 of artifact org.x:app:1.0:pom v=1.0 c=- e=pom immutable"),
        );
        check(
            "org/x/app/1.0/app-1.0.jar.md5",
            Ok(&format!("md5 of {jar} immutable")),
        );
        check(
            "org/x/app/1.0/app-1.0.jar.sha256",
            Ok(&format!("sha256 of {jar} immutable")),
        );
        check(
            "org/x/app/maven-metadata.xml.sha1",
            Ok("sha1 of metadata GroupOrArtifact mutable"),
        );
        check(
            "org/x/app/1.0-SNAPSHOT/app-1.0-SNAPSHOT.jar.sha1",
            Ok("sha1 of artifact org.x:app:1.0-SNAPSHOT:jar v=1.0-SNAPSHOT c=- e=jar mutable"),
        );
        // A bare `.sha1` is no sidecar of anything.
        check("org/x/app/1.0/.sha1", Ok("other mutable"));
    }

    #[test]
    fn snapshots() {
        check(
            "org/x/app/1.0-SNAPSHOT/app-1.0-20240101.123456-3.jar",
            Ok("artifact org.x:app:1.0-20240101.123456-3:jar v=1.0-SNAPSHOT c=- e=jar immutable"),
        );
        check(
            "org/x/app/1.0-SNAPSHOT/app-1.0-20240101.123456-3-sources.jar.sha1",
            Ok(
                "sha1 of artifact org.x:app:1.0-20240101.123456-3:sources:jar v=1.0-SNAPSHOT c=sources e=jar immutable",
            ),
        );
        check(
            "org/x/app/1.0-SNAPSHOT/app-1.0-SNAPSHOT.jar",
            Ok("artifact org.x:app:1.0-SNAPSHOT:jar v=1.0-SNAPSHOT c=- e=jar mutable"),
        );
        check(
            "org/x/app/1.0-SNAPSHOT/app-1.0-SNAPSHOT-tests.jar",
            Ok("artifact org.x:app:1.0-SNAPSHOT:tests:jar v=1.0-SNAPSHOT c=tests e=jar mutable"),
        );
        check(
            "org/x/app/1.0-SNAPSHOT/maven-metadata.xml",
            Ok("metadata SnapshotVersion mutable"),
        );
        // Malformed timestamps are not unique names: whatever they are, they are mutable.
        check(
            "org/x/app/1.0-SNAPSHOT/app-1.0-2024010.123456-3.jar",
            Ok("other mutable"),
        );
        check(
            "org/x/app/1.0-SNAPSHOT/app-1.0-20240101.123456-.jar",
            Ok("other mutable"),
        );
        check(
            "org/x/app/1.0-SNAPSHOT/app-1.0-20240101.123456-3x.jar",
            Ok("other mutable"),
        );
        check(
            "org/x/app/1.0-SNAPSHOT/app-2.0-20240101.123456-3.jar",
            Ok("other mutable"),
        );
        // Any spelling Maven takes for a SNAPSHOT is mutable.
        check(
            "org/x/app/1.0-snapshot/app-1.0-snapshot.jar",
            Ok("artifact org.x:app:1.0-snapshot:jar v=1.0-snapshot c=- e=jar mutable"),
        );
        check(
            "org/x/app/1.0.SNAPSHOT/app-1.0.SNAPSHOT.jar",
            Ok("artifact org.x:app:1.0.SNAPSHOT:jar v=1.0.SNAPSHOT c=- e=jar mutable"),
        );
        check(
            "org/x/app/LATEST/app-LATEST.jar",
            Ok("artifact org.x:app:LATEST:jar v=LATEST c=- e=jar mutable"),
        );
    }

    #[test]
    fn metadata_directories_and_others() {
        check(
            "org/x/app/maven-metadata.xml",
            Ok("metadata GroupOrArtifact mutable"),
        );
        check(
            "org/x/maven-metadata-central.xml",
            Ok("metadata GroupOrArtifact mutable"),
        );
        check("maven-metadata.xml", Ok("metadata GroupOrArtifact mutable"));
        check("org/x/app/", Ok("directory mutable"));
        check("/org/x/app/", Ok("directory mutable"));
        check("/", Ok("directory mutable"));
        check("", Ok("directory mutable"));
        // A file that does not carry its directories' coordinates is not an artifact.
        check("org/x/app/1.0/other-1.0.jar", Ok("other mutable"));
        check("org/x/app/1.0/app-1.1.jar", Ok("other mutable"));
        check("org/x/app/1.0/app-1.0", Ok("other mutable"));
        check("org/x/app/1.0/app-1.0-.jar", Ok("other mutable"));
        check("org/x/app/1.0/app-1.0-sources", Ok("other mutable"));
        check("org/x/app/1.0/app-1.0.", Ok("other mutable"));
        check("app/1.0/app-1.0.jar", Ok("other mutable"));
        check("org/x/app/1.0/app-1.00.jar", Ok("other mutable"));
        check("org/x/app/1.0/archetype-catalog.xml", Ok("other mutable"));
        check("org/x/app/1.0/app%2D1.0.jar", Ok("other mutable"));
        check("org.x/app/1.0/app-1.0.jar", Ok("other mutable"));
    }

    #[test]
    fn refused() {
        for path in [
            "org/x/../app/1.0/app-1.0.jar",
            "../etc/passwd",
            "org/./x/app",
            "org//x/app/1.0/app-1.0.jar",
            "//org/x",
            "org/x/app//",
            "org/%2e%2e/x",
            "org/%2E%2E/x",
            "org/x%2fy/app",
            "org/x%2Fy/app",
            "org/x%5cy/app",
            "org/x%00/app",
            "org/x%0a/app",
            "org/x%3a/app",
            "org/x%/app",
            "org/x%2/app",
            "org/x%zz/app",
            "org/x\0/app",
            "org/x\\..\\y/app",
            "org/x\n/app",
            "C:/Windows/win.ini",
            "/c:/x",
            "org/x/app.jar::$DATA",
        ] {
            check(path, Err(()));
        }
        let long = "a/".repeat(MAX_PATH_LEN / 2 + 1);
        assert!(matches!(parse(&long), Err(Error::PathInvalid(_))));
        let segment = "a".repeat(MAX_SEGMENT_LEN + 1);
        check(&format!("org/{segment}/x"), Err(()));
        check(&format!("org/{}/x", &segment[1..]), Ok("other mutable"));
    }

    #[test]
    fn segments_are_kept_as_sent() {
        let p = parse("/org/x/app/1.0/app-1.0%2B1.jar").unwrap();
        assert_eq!(p.segments, ["org", "x", "app", "1.0", "app-1.0%2B1.jar"]);
        let p = parse("/org/x/app/").unwrap();
        assert_eq!(p.segments, ["org", "x", "app"]);
        assert!(parse("/").unwrap().segments.is_empty());
    }

    #[test]
    fn coordinates_predicates() {
        let Kind::Artifact(c) = parse("org/x/app/1.0-SNAPSHOT/app-1.0-20240101.123456-3.jar")
            .unwrap()
            .kind
        else {
            panic!("not an artifact");
        };
        assert!(c.is_snapshot() && c.is_timestamped_snapshot());
        assert_eq!(c.to_string(), "org.x:app:1.0-20240101.123456-3:jar");
        assert_eq!(c.file_version, "1.0-20240101.123456-3");
        assert_eq!(c.version, "1.0-SNAPSHOT");
        let Kind::Artifact(c) = parse("org/x/app/1.0/app-1.0.jar").unwrap().kind else {
            panic!("not an artifact");
        };
        assert!(!c.is_snapshot() && !c.is_timestamped_snapshot());
    }
}
