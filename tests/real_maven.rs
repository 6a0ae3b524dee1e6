//! Real Maven (`mvn`, Debian's 3.8) through pinproxy, all on loopback.
//!
//! The upstream is [`StaticRepo`], a plain static file server over a copy of the Maven
//! repository Debian's Java packages install (`/usr/share/maven-repo`) with generated `.sha1`
//! and `.md5` sidecars ([`debian_maven_repo`]). Every test resolves through the proxy from an
//! empty local repository (`-Dmaven.repo.local`), then stops the upstream and resolves again
//! from another empty local repository: the proxy alone must serve everything, byte for byte.
//!
//! Maven is sandboxed: its own HOME, user settings (`-s`) naming the proxy as the mirror of
//! every repository, empty global settings (`-gs`), `MAVEN_SKIP_RC` (no `/etc/mavenrc`), no
//! inherited `MAVEN_OPTS`. Debian's repository has no `maven-metadata.xml`, so plugins are
//! named with exact versions (the ones Debian ships) and no plugin prefix is resolved.
//! Every command runs under a timeout and shows its output when it fails. A missing `mvn`
//! skips the tests, except under `CI=true` (`.ci/run` installs Maven and the plugins).
//!
//! Recipe (the same without the proxy, which the baseline test checks):
//! `mvn -B -C -s settings.xml -gs empty.xml -Dmaven.repo.local=<fresh dir>
//!  org.apache.maven.plugins:maven-dependency-plugin:3.5.0:get -Dartifact=junit:junit:4.13.2`
//! with `<mirror><mirrorOf>*</mirrorOf><url>http://127.0.0.1:PORT/maven/</url></mirror>`;
//! and `mvn -B package` of [`POM`] (a class and a JUnit 4 test).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use tokio::process::Command;

use crate::support::proxy::Proxy;
use crate::support::static_repo::{StaticRepo, debian_maven_repo};
use crate::support::{REAL_CLIENTS, client, have_tool};

/// Every mvn command runs under this limit.
const MVN_TIMEOUT: Duration = Duration::from_secs(300);

/// The proxy's name for the static upstream.
const UPSTREAM: &str = "debian";

/// The dependency plugin Debian ships, named in full: without `maven-metadata.xml` anywhere,
/// Maven cannot map the `dependency:` prefix to a plugin.
const DEPENDENCY_GET: &str = "org.apache.maven.plugins:maven-dependency-plugin:3.5.0:get";

/// Output that means Maven found a checksum wrong or missing (in `-C` mode it fails instead).
const CHECKSUM_TROUBLE: &[&str] = &[
    "Checksum validation failed",
    "Could not validate integrity",
    "checksum failed",
    "Checksum mismatch",
];

// ---------------------------------------------------------------------------------------
// running mvn

/// Runs `cmd` under `timeout`, panicking with its output if it fails.
async fn run(what: &str, cmd: &mut Command, timeout: Duration) -> client::Ran {
    client::run(what, cmd, timeout, str::to_owned).await
}

// ---------------------------------------------------------------------------------------
// a sandboxed Maven

/// A temp dir holding the project, Maven's settings and HOME, and the local repositories.
struct Sandbox {
    dir: tempfile::TempDir,
}

/// User settings: `mirror` serves every repository Maven would otherwise ask.
fn settings_xml(mirror: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<settings xmlns="http://maven.apache.org/SETTINGS/1.2.0">
  <interactiveMode>false</interactiveMode>
  <offline>false</offline>
  <mirrors>
    <mirror>
      <id>pinproxy</id>
      <name>pinproxy</name>
      <mirrorOf>*</mirrorOf>
      <url>{mirror}</url>
    </mirror>
  </mirrors>
</settings>
"#
    )
}

impl Sandbox {
    /// Maven set up to use `mirror`, with `pom` (if any) as the project.
    fn new(mirror: &str, pom: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Self { dir };
        for d in ["home", "tmp", "project"] {
            std::fs::create_dir_all(sb.root().join(d)).unwrap();
        }
        std::fs::write(sb.root().join("settings.xml"), settings_xml(mirror)).unwrap();
        std::fs::write(sb.root().join("global-settings.xml"), "<settings/>\n").unwrap();
        if let Some(pom) = pom {
            let p = sb.project();
            std::fs::write(p.join("pom.xml"), pom).unwrap();
            for (file, text) in [
                ("src/main/java/org/example/hello/Greeter.java", GREETER),
                (
                    "src/test/java/org/example/hello/GreeterTest.java",
                    GREETER_TEST,
                ),
            ] {
                let f = p.join(file);
                std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                std::fs::write(f, text).unwrap();
            }
        }
        sb
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn project(&self) -> PathBuf {
        self.root().join("project")
    }

    /// A new, empty directory (a fresh local repository).
    fn fresh(&self, name: &str) -> PathBuf {
        let d = self.root().join(name);
        assert!(!d.exists(), "{} is not fresh", d.display());
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// `mvn -B` in the project directory with `local_repo` and the sandbox's settings, and
    /// nothing of the user's or the machine's Maven configuration. Wagon's retries are off:
    /// a request the proxy fails fails the build.
    fn mvn(&self, local_repo: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("mvn");
        for k in [
            "MAVEN_OPTS",
            "MAVEN_ARGS",
            "MAVEN_CONFIG",
            "M2_HOME",
            "MAVEN_HOME",
        ] {
            c.env_remove(k);
        }
        let r = self.root();
        c.current_dir(self.project())
            .env("HOME", r.join("home"))
            .env("TMPDIR", r.join("tmp"))
            .env("MAVEN_SKIP_RC", "1")
            .arg("-B")
            .arg("-s")
            .arg(r.join("settings.xml"))
            .arg("-gs")
            .arg(r.join("global-settings.xml"))
            .arg(format!("-Dmaven.repo.local={}", local_repo.display()))
            .arg("-Dmaven.wagon.http.retryHandler.count=0")
            .args(args);
        c
    }
}

// ---------------------------------------------------------------------------------------
// what Maven resolved

/// Files Maven writes into a local repository that record where and when, not content.
fn is_resolver_state(name: &str) -> bool {
    name == "_remote.repositories"
        || name == "resolver-status.properties"
        || name.ends_with(".lastUpdated")
        || (name.starts_with("maven-metadata-") && name.ends_with(".xml"))
}

/// Every file in a local repository except the resolver's own state: relative path →
/// SHA-256 hex of its bytes.
fn resolved(local_repo: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let p = entry.expect("dir entry").path();
            if p.is_dir() {
                walk(root, &p, out);
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy();
            if is_resolver_state(&name) {
                continue;
            }
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.insert(rel, hex::encode(Sha256::digest(&bytes)));
        }
    }
    let mut out = BTreeMap::new();
    walk(local_repo, local_repo, &mut out);
    assert!(!out.is_empty(), "{} is empty", local_repo.display());
    out
}

fn is_sidecar(path: &str) -> bool {
    [".sha1", ".md5", ".sha256", ".sha512"]
        .iter()
        .any(|s| path.ends_with(s))
}

/// The pin coordinate of a repository path `g/r/p/artifact/version/artifact-version[-classifier].ext`:
/// `maven:g.r.p:artifact:version[:classifier]:ext`.
fn coordinate(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    assert!(parts.len() >= 4, "not an artifact path: {path}");
    let (file, version, artifact) = (
        parts[parts.len() - 1],
        parts[parts.len() - 2],
        parts[parts.len() - 3],
    );
    let group = parts[..parts.len() - 3].join(".");
    let rest = file
        .strip_prefix(&format!("{artifact}-{version}"))
        .unwrap_or_else(|| panic!("{path}: the file is not named after its artifact and version"));
    let (classifier, ext) = match rest.strip_prefix('-') {
        Some(r) => {
            let (c, e) = r.split_once('.').expect("extension");
            (Some(c), e)
        }
        None => (None, rest.strip_prefix('.').expect("extension")),
    };
    match classifier {
        Some(c) => format!("maven:{group}:{artifact}:{version}:{c}:{ext}"),
        None => format!("maven:{group}:{artifact}:{version}:{ext}"),
    }
}

/// Panics with the differences when two file maps differ.
fn assert_same_files(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, what: &str) {
    if a == b {
        return;
    }
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .take(40)
        .map(|k| format!("{k}: {:?} != {:?}", a.get(k), b.get(k)))
        .collect();
    panic!(
        "{what}: the files differ ({} vs {} files); first differences:\n{}",
        a.len(),
        b.len(),
        diffs.join("\n")
    );
}

/// Every resolved file (artifact or sidecar) has exactly the upstream's bytes.
fn assert_upstream_bytes(files: &BTreeMap<String, String>, upstream: &Path, what: &str) {
    let wrong: Vec<String> = files
        .iter()
        .filter_map(|(rel, sha)| {
            let p = upstream.join(rel);
            let theirs = std::fs::read(&p)
                .map(|b| hex::encode(Sha256::digest(&b)))
                .unwrap_or_else(|e| format!("({e})"));
            (theirs != *sha).then(|| format!("{rel}: got {sha}, upstream has {theirs}"))
        })
        .take(40)
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: files that differ from the upstream's:\n{}",
        wrong.join("\n")
    );
}

/// Maven's `Downloading from <id>: <url>` / `Downloaded from <id>: <url> (..)` lines: the
/// URLs. All must be the proxy's.
fn downloads(output: &str, mirror: &str, what: &str) -> BTreeSet<String> {
    let mut urls = BTreeSet::new();
    for line in output.lines() {
        let Some(rest) = line
            .split_once("Downloaded from ")
            .or_else(|| line.split_once("Downloading from "))
            .map(|(_, r)| r)
        else {
            continue;
        };
        let url = rest
            .split_once(": ")
            .map(|(_, u)| u.split(' ').next().unwrap_or(u))
            .unwrap_or_else(|| panic!("{what}: unexpected line {line:?}"));
        assert!(
            url.starts_with(mirror),
            "{what}: Maven downloaded {url}, not from the proxy {mirror}"
        );
        urls.insert(url.to_owned());
    }
    urls
}

/// No checksum trouble in Maven's output.
fn assert_no_checksum_warnings(output: &str, what: &str) {
    let bad: Vec<&str> = output
        .lines()
        .filter(|l| {
            CHECKSUM_TROUBLE.iter().any(|t| l.contains(t))
                || (l.contains("WARN") && l.to_ascii_lowercase().contains("checksum"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: Maven reported checksum trouble:\n{}",
        bad.join("\n")
    );
}

/// `GET /api/v1/pins`, as JSON objects by coordinate.
async fn pins(proxy: &Proxy) -> BTreeMap<String, serde_json::Value> {
    let url = format!("{}/api/v1/pins", proxy.url());
    let resp = reqwest::get(&url).await.expect("GET /api/v1/pins");
    assert_eq!(resp.status(), 200, "GET /api/v1/pins");
    let rows: Vec<serde_json::Value> = resp.json().await.expect("pins JSON");
    rows.into_iter()
        .filter_map(|p| Some((p["coordinate"].as_str()?.to_owned(), p)))
        .filter(|(c, _)| c.starts_with("maven:"))
        .collect()
}

/// Every resolved artifact (not sidecar) is pinned under its coordinate, verified against
/// the upstream's digest, with its sha256, sha1 and size; `must` coordinates in particular.
/// Returns the Maven pins.
async fn assert_pinned(
    proxy: &Proxy,
    local_repo: &Path,
    files: &BTreeMap<String, String>,
    must: &[&str],
    what: &str,
) -> BTreeMap<String, serde_json::Value> {
    let pins = pins(proxy).await;
    let mut problems = Vec::new();
    let mut coordinates = BTreeSet::new();
    for (rel, sha256) in files.iter().filter(|(rel, _)| !is_sidecar(rel)) {
        let c = coordinate(rel);
        coordinates.insert(c.clone());
        let Some(pin) = pins.get(&c) else {
            problems.push(format!("{rel}: no pin {c}"));
            continue;
        };
        let bytes = std::fs::read(local_repo.join(rel)).unwrap();
        let sha1 = hex::encode(Sha1::digest(&bytes));
        let checks = [
            ("sha256", pin["sha256"].as_str() == Some(sha256.as_str())),
            ("size", pin["size"].as_u64() == Some(bytes.len() as u64)),
            ("verified", pin["verified"] == "digest"),
            ("upstream", pin["upstream"] == UPSTREAM),
            (
                "digests.sha1",
                pin["digests"]["sha1"].as_str() == Some(sha1.as_str()),
            ),
        ];
        for (field, ok) in checks {
            if !ok {
                problems.push(format!("{c}: {field} is wrong: {pin}"));
            }
        }
    }
    for c in must {
        if !coordinates.contains(*c) {
            problems.push(format!("{c} was not resolved"));
        }
    }
    assert!(
        problems.is_empty(),
        "{what}: pins:\n{}\nall Maven pins: {:?}",
        problems.join("\n"),
        pins.keys().collect::<Vec<_>>()
    );
    pins
}

/// In a cold run the upstream got at most one GET per path, whatever Maven asked for.
fn assert_each_upstream_path_fetched_once(upstream: &StaticRepo, what: &str) {
    let mut gets: BTreeMap<String, usize> = BTreeMap::new();
    for r in upstream.requests().iter().filter(|r| r.method == "GET") {
        *gets.entry(r.path.clone()).or_default() += 1;
    }
    let repeated: Vec<String> = gets
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, n)| format!("{p}: {n} GETs"))
        .collect();
    assert!(
        repeated.is_empty(),
        "{what}: the upstream was asked more than once for:\n{}\nupstream log:\n{}",
        repeated.join("\n"),
        upstream.log_text()
    );
}

/// Maven requests the proxy has answered so far (any outcome).
fn maven_requests(proxy: &Proxy) -> u64 {
    proxy
        .app()
        .metrics
        .counter("pinproxy_requests_total", "proto=\"maven\"")
}

/// Shown when a test fails (or with `--nocapture`); `RUST_LOG` overrides the filter.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("pinproxy=info,warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------------------
// the scenario

/// The prepared copy of Debian's repository; `None` (test skipped) without `mvn` or
/// Debian's repository, except under `CI=true`, where that fails the test.
fn prerequisites() -> Option<&'static Path> {
    if !have_tool("mvn") {
        return None;
    }
    let repo = debian_maven_repo();
    if repo.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "/usr/share/maven-repo is required under CI=true (.ci/run installs it)"
        );
        eprintln!("skipping: /usr/share/maven-repo is not installed");
    }
    repo
}

/// The static upstream over the prepared Debian repository, and a proxy in front of it;
/// `None` if the test is skipped.
async fn setup() -> Option<(StaticRepo, Proxy)> {
    let repo = prerequisites()?;
    init_tracing();
    let upstream = StaticRepo::start(repo).await;
    let extra = format!(
        "[maven]\n[[maven.upstreams]]\nname = \"{UPSTREAM}\"\nurl = \"{}\"\n",
        upstream.url()
    );
    let proxy = Proxy::start_full(&[], "", &extra).await;
    eprintln!("upstream {} proxy {}/maven/", upstream.url(), proxy.url());
    Some((upstream, proxy))
}

/// What one run resolved.
struct Outcome {
    files: BTreeMap<String, String>,
    downloads: BTreeSet<String>,
    ran: client::Ran,
}

/// Runs mvn with `args` (plus `-C`, strict checksums, if `strict`) in the sandbox with a
/// fresh local repository `name`, and checks what every run must show: success, no checksum
/// trouble, every download from the proxy.
async fn resolve(sb: &Sandbox, mirror: &str, name: &str, args: &[&str], strict: bool) -> Outcome {
    let local = sb.fresh(name);
    let mut all: Vec<&str> = Vec::new();
    if strict {
        all.push("-C");
    }
    all.extend_from_slice(args);
    let what = format!("mvn {} ({name})", args.join(" "));
    let ran = run(&what, &mut sb.mvn(&local, &all), MVN_TIMEOUT).await;
    assert!(
        ran.output().contains("BUILD SUCCESS"),
        "{what}:\n{}",
        ran.output()
    );
    assert_no_checksum_warnings(&ran.output(), &what);
    let downloads = downloads(&ran.output(), mirror, &what);
    let files = resolved(&local);
    Outcome {
        files,
        downloads,
        ran,
    }
}

/// Cold through the proxy, then with the upstream stopped: identical files, all pinned.
/// `check` runs after each mvn run (e.g. to look at the project's build output).
async fn cold_then_upstream_stopped(
    test: &str,
    pom: Option<&str>,
    args: &[&str],
    must_pin: &[&str],
    check: impl Fn(&Sandbox, &str),
) {
    let started = Instant::now();
    let Some((upstream, proxy)) = setup().await else {
        return;
    };
    let mirror = format!("{}/maven/", proxy.url());
    let sb = Sandbox::new(&mirror, pom);

    let cold = resolve(&sb, &mirror, "repo-cold", args, true).await;
    let what = format!("{test} (cold)");
    check(&sb, &what);
    assert!(
        !cold.downloads.is_empty(),
        "{what}: Maven downloaded nothing:\n{}",
        cold.ran.output()
    );
    assert_upstream_bytes(&cold.files, upstream.root(), &what);
    assert_each_upstream_path_fetched_once(&upstream, &what);
    let cold_pins = assert_pinned(
        &proxy,
        &sb.root().join("repo-cold"),
        &cold.files,
        must_pin,
        &what,
    )
    .await;
    let upstream_requests = upstream.total_requests();

    upstream.stop();
    let before = maven_requests(&proxy);
    let warm = resolve(&sb, &mirror, "repo-warm", args, false).await;
    let what = format!("{test} (warm, upstream stopped)");
    check(&sb, &what);
    assert_same_files(&cold.files, &warm.files, &format!("{test}: cold vs warm"));
    assert_eq!(
        warm.downloads, cold.downloads,
        "{what}: Maven's downloads differ from the cold run's"
    );
    let asked = maven_requests(&proxy) - before;
    assert!(
        asked >= warm.files.len() as u64,
        "{what}: the proxy answered {asked} Maven requests for {} files",
        warm.files.len()
    );
    assert_eq!(
        upstream.total_requests(),
        upstream_requests,
        "{what}: the stopped upstream was reached"
    );
    let warm_pins = assert_pinned(
        &proxy,
        &sb.root().join("repo-warm"),
        &warm.files,
        must_pin,
        &what,
    )
    .await;
    assert_eq!(
        warm_pins.keys().collect::<Vec<_>>(),
        cold_pins.keys().collect::<Vec<_>>(),
        "{what}: the Maven pins changed"
    );
    eprintln!(
        "TIMING {test}: cold {:.2?}, warm {:.2?}, test {:.2?}; {} files ({} artifacts), \
         {} upstream requests, {} Maven requests to the proxy in the warm run",
        cold.ran.took,
        warm.ran.took,
        started.elapsed(),
        cold.files.len(),
        cold.downloads.len(),
        upstream_requests,
        asked
    );
}

// ---------------------------------------------------------------------------------------
// the small project

/// A jar project with a class and a JUnit 4 test; every plugin `package` runs is pinned to
/// the version Debian ships (`/usr/share/maven-repo/org/apache/maven/plugins/`).
const POM: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>org.example</groupId>
  <artifactId>hello</artifactId>
  <version>1.0</version>
  <packaging>jar</packaging>
  <properties>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
    <maven.compiler.release>17</maven.compiler.release>
  </properties>
  <dependencies>
    <dependency>
      <groupId>junit</groupId>
      <artifactId>junit</artifactId>
      <version>4.13.2</version>
      <scope>test</scope>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-resources-plugin</artifactId>
        <version>3.3.0</version>
      </plugin>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-compiler-plugin</artifactId>
        <version>3.10.1</version>
      </plugin>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-surefire-plugin</artifactId>
        <version>2.22.3</version>
      </plugin>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-jar-plugin</artifactId>
        <version>3.3.0</version>
      </plugin>
    </plugins>
  </build>
</project>
"#;

const GREETER: &str = r#"package org.example.hello;

public final class Greeter {
    private Greeter() {}

    public static String greet(String name) {
        return "Hello, " + name + "!";
    }
}
"#;

const GREETER_TEST: &str = r#"package org.example.hello;

import static org.junit.Assert.assertEquals;

import org.junit.Test;

public class GreeterTest {
    @Test
    public void greets() {
        assertEquals("Hello, pinproxy!", Greeter.greet("pinproxy"));
    }
}
"#;

/// `mvn package` compiled the class, ran the test and built the jar; removes `target` so
/// that the next run builds from scratch.
fn check_package(sb: &Sandbox, what: &str) {
    let target = sb.project().join("target");
    let jar = std::fs::read(target.join("hello-1.0.jar"))
        .unwrap_or_else(|e| panic!("{what}: target/hello-1.0.jar: {e}"));
    // A jar's central directory names its entries uncompressed.
    let needle = b"org/example/hello/Greeter.class";
    assert!(
        jar.windows(needle.len()).any(|w| w == needle),
        "{what}: the jar has no Greeter.class"
    );
    let report = target.join("surefire-reports/TEST-org.example.hello.GreeterTest.xml");
    let report = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("{what}: {}: {e}", report.display()));
    for want in [r#"tests="1""#, r#"failures="0""#, r#"errors="0""#] {
        assert!(
            report.contains(want),
            "{what}: the test report lacks {want}"
        );
    }
    std::fs::remove_dir_all(&target).expect("remove target");
}

// ---------------------------------------------------------------------------------------
// the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mvn_dependency_get_through_pinproxy_cold_then_with_upstream_stopped() {
    let _guard = REAL_CLIENTS.lock().await;
    cold_then_upstream_stopped(
        "mvn dependency:get",
        None,
        &[DEPENDENCY_GET, "-Dartifact=junit:junit:4.13.2"],
        &[
            "maven:junit:junit:4.13.2:jar",
            "maven:junit:junit:4.13.2:pom",
            "maven:org.hamcrest:hamcrest:debian:jar",
            "maven:org.apache.maven.plugins:maven-dependency-plugin:3.5.0:jar",
        ],
        |_, _| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mvn_package_of_a_small_project_through_pinproxy_cold_then_offline_upstream() {
    let _guard = REAL_CLIENTS.lock().await;
    cold_then_upstream_stopped(
        "mvn package",
        Some(POM),
        &["package"],
        &[
            "maven:junit:junit:4.13.2:jar",
            "maven:org.apache.maven.plugins:maven-resources-plugin:3.3.0:jar",
            "maven:org.apache.maven.plugins:maven-compiler-plugin:3.10.1:jar",
            "maven:org.apache.maven.plugins:maven-surefire-plugin:2.22.3:jar",
            "maven:org.apache.maven.plugins:maven-jar-plugin:3.3.0:jar",
            "maven:org.apache.maven.surefire:surefire-junit4:debian:jar",
        ],
        check_package,
    )
    .await;
}

/// The recipe without the proxy: Maven resolves straight from the static upstream, which
/// sees every path once. When a proxy test fails and this one passes, the proxy is at fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mvn_dependency_get_straight_from_the_static_upstream_baseline() {
    let _guard = REAL_CLIENTS.lock().await;
    let Some(repo) = prerequisites() else {
        return;
    };
    let upstream = StaticRepo::start(repo).await;
    let mirror = upstream.url();
    let sb = Sandbox::new(&mirror, None);
    let args = [DEPENDENCY_GET, "-Dartifact=junit:junit:4.13.2"];
    let out = resolve(&sb, &mirror, "repo", &args, true).await;
    let what = "mvn dependency:get (no proxy)";
    assert_upstream_bytes(&out.files, upstream.root(), what);
    assert_each_upstream_path_fetched_once(&upstream, what);
    let log = upstream.requests();
    assert!(
        log.iter().all(|r| r.status == 200),
        "{what}: requests that failed:\n{}",
        upstream.log_text()
    );
    // Maven asked for each artifact and its .sha1 (it needs no .md5 when there is a .sha1).
    assert_eq!(log.len(), out.files.len(), "{what}: upstream requests");
    assert!(
        out.files
            .contains_key("junit/junit/4.13.2/junit-4.13.2.jar.sha1")
    );
}
