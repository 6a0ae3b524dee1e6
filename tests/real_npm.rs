//! Real npm clients through pinproxy: npm, pnpm, yarn v1 and yarn berry install the fake
//! registry's universe project (`support::fake_npm::universe`: 115 packages, scoped ones,
//! prereleases, build metadata, peers, an optional dependency, a bin, a sha1-only package and
//! a tarball with a non-conventional name) with the proxy as their registry, each from empty
//! client caches. Every test then stops the upstream and installs again with fresh client
//! caches from the lockfile the first install wrote: the proxy alone must serve everything,
//! and the installed tree must be byte-identical.
//!
//! Each client is sandboxed: its own HOME, XDG directories, npm user and global config and
//! caches in a temp dir, so nothing reads or writes the user's configuration; every command
//! runs under a timeout and shows its output when it fails. The clients come from the npm
//! registry (`.ci/run` installs them); a missing one skips its test, except under `CI=true`.
//!
//! One `#[ignore]`d test (`cargo test -- --ignored`) runs npm against the registry this
//! machine's npm is configured with (`npm config get registry`), then against a dead upstream
//! with the proxy's store alone.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio::process::Command;

use crate::support::fake_npm::{FakeNpm, Universe, universe};
use crate::support::proxy::Proxy;
use crate::support::{REAL_CLIENTS, client, have_tool};

/// Every client command runs under this limit (the ignored test's under [`REAL_TIMEOUT`]).
const CMD_TIMEOUT: Duration = Duration::from_secs(180);
const REAL_TIMEOUT: Duration = Duration::from_secs(300);

/// npm gives up on the first failed request: a proxy that fails one fails the test.
const STRICT: &str = "--fetch-retries=0";
/// Against the real registry, one quick retry (npm's default backoff would make a registry
/// that does not answer take many minutes to fail).
const REAL_RETRIES: &[&str] = &[
    "--fetch-retries=1",
    "--fetch-retry-mintimeout=2000",
    "--fetch-retry-maxtimeout=5000",
];

/// Where `.ci/run` installs yarn berry when `YARN_BERRY_JS` is not set.
const BERRY_FALLBACK: &str = "/opt/yarn-berry/node_modules/@yarnpkg/cli-dist/bin/yarn.js";

// ---------------------------------------------------------------------------------------
// logging, with the real upstream's host kept out of every message

/// Strings replaced by `<upstream>` in everything these tests print (the host of the real
/// registry in the ignored test).
static REDACT: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn redact(text: &str) -> String {
    let list = REDACT.lock().unwrap_or_else(|e| e.into_inner());
    list.iter()
        .fold(text.to_owned(), |t, r| t.replace(r.as_str(), "<upstream>"))
}

/// The proxy's log, captured per test like the test harness's own writer, redacted.
struct RedactingWriter;

impl std::io::Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        eprint!("{}", redact(&String::from_utf8_lossy(buf)));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Shown when a test fails (or with `--nocapture`); `RUST_LOG` overrides the filter.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("pinproxy=info,warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(|| RedactingWriter)
        .try_init();
}

// ---------------------------------------------------------------------------------------
// running client commands

/// Runs `cmd` under `timeout`, panicking with its (redacted) output if it fails.
async fn run(what: &str, cmd: &mut Command, timeout: Duration) -> client::Ran {
    client::run(what, cmd, timeout, redact).await
}

// ---------------------------------------------------------------------------------------
// a sandboxed project

/// A temp dir holding the project and everything a client would otherwise keep in the
/// user's home: config files, caches, stores.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new(package_json: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Self { dir };
        for d in [
            "home",
            "xdg/config",
            "xdg/cache",
            "xdg/data",
            "xdg/state",
            "tmp",
            "project",
        ] {
            std::fs::create_dir_all(sb.root().join(d)).unwrap();
        }
        std::fs::write(sb.npmrc(), "").unwrap();
        std::fs::write(sb.root().join("global-npmrc"), "").unwrap();
        std::fs::write(sb.project().join("package.json"), package_json).unwrap();
        sb
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn project(&self) -> PathBuf {
        self.root().join("project")
    }

    fn node_modules(&self) -> PathBuf {
        self.project().join("node_modules")
    }

    /// The empty npm user config every npm command is given.
    fn npmrc(&self) -> PathBuf {
        self.root().join("npmrc")
    }

    /// A new, empty directory (a fresh cache or store).
    fn fresh(&self, name: &str) -> PathBuf {
        let d = self.root().join(name);
        assert!(!d.exists(), "{} is not fresh", d.display());
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn read(&self, file: &str) -> String {
        let p = self.project().join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn remove_node_modules(&self) {
        std::fs::remove_dir_all(self.node_modules()).expect("remove node_modules");
    }

    /// `program` in the project directory with the user's configuration out of reach: no
    /// inherited npm/yarn/pnpm settings, HOME and XDG directories inside the sandbox.
    fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        for (k, _) in std::env::vars_os() {
            let lower = k.to_string_lossy().to_ascii_lowercase();
            if ["npm_config_", "yarn_", "pnpm_", "berry_", "npm_token"]
                .iter()
                .any(|p| lower.starts_with(p))
            {
                c.env_remove(&k);
            }
        }
        let r = self.root();
        c.current_dir(self.project())
            .env("HOME", r.join("home"))
            .env("XDG_CONFIG_HOME", r.join("xdg/config"))
            .env("XDG_CACHE_HOME", r.join("xdg/cache"))
            .env("XDG_DATA_HOME", r.join("xdg/data"))
            .env("XDG_STATE_HOME", r.join("xdg/state"))
            .env("TMPDIR", r.join("tmp"))
            .env("npm_config_userconfig", self.npmrc())
            .env("npm_config_globalconfig", r.join("global-npmrc"))
            .env("npm_config_update_notifier", "false")
            .env("NO_UPDATE_NOTIFIER", "1")
            .env("COREPACK_ENABLE_STRICT", "0");
        c
    }

    /// npm with `registry` and `cache`, and nothing that could reach elsewhere.
    fn npm(&self, registry: &str, cache: &Path, args: &[&str]) -> Command {
        let mut c = self.cmd("npm");
        c.args(args)
            .arg("--registry")
            .arg(registry)
            .arg("--userconfig")
            .arg(self.npmrc())
            .arg("--cache")
            .arg(cache)
            .args([
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--no-update-notifier",
                "--loglevel=http",
            ]);
        c
    }
}

// ---------------------------------------------------------------------------------------
// what got installed

/// Every file and symlink under `root`: relative path → `f:`/`x:` (executable) + SHA-256 of
/// the bytes, or `l:` + the link target. Client state files named in `skip` (relative paths)
/// are left out, and so are nested `.bin` directories: shims a client writes, not package
/// content (pnpm links a package's own bins into `.pnpm/<id>/node_modules/<pkg>/node_modules/
/// .bin` when it resolves, but not in a frozen install). The top-level `.bin` is compared.
fn tree(root: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if skip.contains(&rel.as_str()) || rel.contains("/node_modules/.bin/") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("l:{}", target.display()));
            } else if meta.is_dir() {
                walk(root, &p, skip, out);
            } else {
                use std::os::unix::fs::PermissionsExt as _;
                let bytes = std::fs::read(&p).unwrap();
                let kind = if meta.permissions().mode() & 0o111 != 0 {
                    "x"
                } else {
                    "f"
                };
                out.insert(
                    rel,
                    format!("{kind}:{}", hex::encode(Sha256::digest(&bytes))),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out);
    assert!(!out.is_empty(), "{} is empty", root.display());
    out
}

/// Panics with the differences when two trees differ.
fn assert_same_tree(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, what: &str) {
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
        "{what}: the trees differ ({} vs {} entries); first differences:\n{}",
        a.len(),
        b.len(),
        diffs.join("\n")
    );
}

/// Every package directory under `node_modules` (hoisted, nested, scoped, and the real
/// directories of pnpm's `.pnpm` store; symlinks are not followed), as `(name, version)` from
/// its `package.json`, sorted (a package installed at two places is listed twice).
fn installed(node_modules: &Path) -> Vec<(String, String)> {
    fn is_real_dir(p: &Path) -> bool {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
    }
    fn children(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| is_real_dir(p))
            .collect();
        v.sort();
        v
    }
    fn package(dir: &Path, out: &mut Vec<(String, String)>) {
        let pj = dir.join("package.json");
        let text = std::fs::read_to_string(&pj).unwrap_or_else(|e| panic!("{}: {e}", pj.display()));
        let v: serde_json::Value = serde_json::from_str(&text).expect("package.json");
        out.push((
            v["name"].as_str().expect("name").to_owned(),
            v["version"].as_str().expect("version").to_owned(),
        ));
        let nested = dir.join("node_modules");
        if is_real_dir(&nested) {
            walk(&nested, out);
        }
    }
    fn walk(nm: &Path, out: &mut Vec<(String, String)>) {
        for p in children(nm) {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name == ".pnpm" {
                for id in children(&p) {
                    let inner = id.join("node_modules");
                    if is_real_dir(&inner) {
                        walk(&inner, out);
                    }
                }
            } else if name.starts_with('.') {
                // .bin, .cache, client state
            } else if name.starts_with('@') {
                for pkg in children(&p) {
                    package(&pkg, out);
                }
            } else {
                package(&p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(node_modules, &mut out);
    out.sort();
    out
}

fn as_set(v: &[(String, String)]) -> BTreeSet<(String, String)> {
    v.iter().cloned().collect()
}

/// Every installed package has its tarball pinned as `npm:<name>@<version>`; returns how
/// many npm tarball pins the store holds.
fn assert_pinned(
    proxy: &pinproxy::server::App,
    installed: &[(String, String)],
    what: &str,
) -> usize {
    let pins: BTreeSet<String> = proxy
        .store
        .pins()
        .expect("pins")
        .into_iter()
        .map(|p| p.pin.coordinate)
        .filter(|c| c.starts_with("npm:"))
        .collect();
    let missing: Vec<String> = installed
        .iter()
        .map(|(n, v)| format!("npm:{n}@{v}"))
        .filter(|c| !pins.contains(c))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: installed but not pinned: {missing:?}\npins: {pins:#?}"
    );
    pins.len()
}

/// The bin of the universe is linked and runs.
async fn assert_bin_runs(sb: &Sandbox, u: &Universe, what: &str) {
    for bin in &u.bins {
        let p = sb.node_modules().join(".bin").join(bin);
        assert!(
            std::fs::symlink_metadata(&p).is_ok(),
            "{what}: {} is not linked",
            p.display()
        );
        let out = run(&format!("{what}: {bin}"), &mut sb.cmd(&p), CMD_TIMEOUT).await;
        assert_eq!(out.stdout.trim(), "@tools/cli@4.2.0", "{what}: {bin}");
    }
}

/// The upstream's address appears nowhere in `text` (clients only ever see the proxy).
fn assert_no_upstream(text: &str, fake: &FakeNpm, what: &str) {
    let addr = fake.addr().to_string();
    assert!(
        !text.contains(&addr),
        "{what} names the upstream {addr}:\n{text}"
    );
}

fn npm_proxy(fake: &FakeNpm) -> String {
    format!("[npm]\nupstream = \"{}\"\n", fake.url())
}

/// A fake upstream serving the universe, and a proxy in front of it.
async fn setup() -> (FakeNpm, Universe, Proxy) {
    init_tracing();
    let fake = FakeNpm::start().await;
    let u = universe();
    fake.add_universe(&u);
    let proxy = Proxy::start_with(&[], &npm_proxy(&fake)).await;
    eprintln!("upstream {} proxy {}/npm/", fake.url(), proxy.url());
    (fake, u, proxy)
}

/// After a cold install: the upstream served every tarball exactly once, whatever the
/// client did, and nothing else was fetched as a tarball.
fn assert_each_tarball_fetched_once(fake: &FakeNpm, u: &Universe, what: &str) {
    let wanted = as_set(&u.expected_installed);
    for (n, v) in &wanted {
        assert_eq!(
            fake.tarball_gets(n, v),
            1,
            "{what}: upstream GETs of {n}@{v}"
        );
    }
    assert_eq!(
        fake.total_tarball_gets(),
        wanted.len(),
        "{what}: upstream tarball GETs"
    );
}

/// npm requests the proxy has answered so far (any outcome).
fn npm_requests(app: &pinproxy::server::App) -> u64 {
    app.metrics
        .counter("pinproxy_requests_total", "proto=\"npm\"")
}

/// A warm install got every tarball from the proxy (and not from some cache a client keeps
/// outside the directories the test made fresh).
fn assert_warm_asked_proxy(before: u64, app: &pinproxy::server::App, u: &Universe, what: &str) {
    let asked = npm_requests(app) - before;
    let tarballs = as_set(&u.expected_installed).len() as u64;
    assert!(
        asked >= tarballs,
        "{what}: the proxy answered {asked} npm requests, fewer than the {tarballs} tarballs"
    );
    eprintln!("{what}: the proxy answered {asked} npm requests");
}

/// Client state files in `node_modules` that record paths or times, not packages.
const STATE_FILES: &[&str] = &[
    ".package-lock.json",
    ".modules.yaml",
    ".pnpm-workspace-state.json",
    ".pnpm-workspace-state-v1.json",
    ".yarn-integrity",
    ".yarn-state.yml",
];

// ---------------------------------------------------------------------------------------
// npm

/// The lockfile's `packages` as `(name, version)`, checking that each has an integrity and
/// a `resolved` URL under `registry`.
fn npm_lock_packages(lock: &str, registry: &str, what: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(lock).expect("package-lock.json");
    assert_eq!(v["lockfileVersion"], 3, "{what}");
    let mut out = Vec::new();
    for (path, entry) in v["packages"].as_object().expect("packages") {
        if path.is_empty() {
            continue;
        }
        let name = path
            .rsplit_once("node_modules/")
            .map(|(_, n)| n)
            .expect("node_modules path");
        let resolved = entry["resolved"].as_str().unwrap_or_default();
        assert!(
            resolved.starts_with(registry),
            "{what}: {path} resolved to {resolved:?}, not under {registry}"
        );
        assert!(
            entry["integrity"].as_str().is_some_and(|i| !i.is_empty()),
            "{what}: {path} has no integrity"
        );
        out.push((
            name.to_owned(),
            entry["version"].as_str().expect("version").to_owned(),
        ));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_ci_installs_the_universe_through_the_proxy_and_again_without_upstream() {
    let _guard = REAL_CLIENTS.lock().await;
    if !(have_tool("node") & have_tool("npm")) {
        return;
    }
    let started = Instant::now();
    let (fake, u, proxy) = setup().await;
    let registry = format!("{}/npm/", proxy.url());
    let sb = Sandbox::new(&u.package_json());

    // The lockfile, resolved through the proxy.
    let cache = sb.fresh("cache-lock");
    let mut c = sb.npm(
        &registry,
        &cache,
        &["install", "--package-lock-only", STRICT],
    );
    let lock_run = run("npm install --package-lock-only", &mut c, CMD_TIMEOUT).await;
    let lock = sb.read("package-lock.json");
    assert_no_upstream(&lock, &fake, "package-lock.json");
    assert_eq!(
        npm_lock_packages(&lock, &registry, "package-lock.json"),
        u.expected_installed,
        "the lockfile's packages"
    );
    assert_eq!(
        fake.total_tarball_gets(),
        0,
        "resolving the lockfile fetched tarballs: `npm ci` would not start cold"
    );

    // Cold: the proxy has packuments only.
    let cache = sb.fresh("cache-cold");
    let mut c = sb.npm(&registry, &cache, &["ci", STRICT]);
    let cold = run("npm ci (cold)", &mut c, CMD_TIMEOUT).await;
    let got = installed(&sb.node_modules());
    assert_eq!(got, u.expected_installed, "npm ci (cold): node_modules");
    assert_bin_runs(&sb, &u, "npm ci (cold)").await;
    assert_each_tarball_fetched_once(&fake, &u, "npm ci (cold)");
    let pins = assert_pinned(proxy.app(), &got, "npm ci (cold)");
    assert_eq!(
        sb.read("package-lock.json"),
        lock,
        "npm ci left the lockfile alone"
    );
    let cold_tree = tree(&sb.node_modules(), STATE_FILES);

    // Warm: upstream gone, node_modules and the npm cache gone.
    fake.stop();
    sb.remove_node_modules();
    let cache = sb.fresh("cache-warm");
    let mut c = sb.npm(&registry, &cache, &["ci", STRICT]);
    let before = npm_requests(proxy.app());
    let warm = run("npm ci (warm, upstream down)", &mut c, CMD_TIMEOUT).await;
    assert_warm_asked_proxy(before, proxy.app(), &u, "npm ci (warm)");
    let warm_tree = tree(&sb.node_modules(), STATE_FILES);
    assert_same_tree(&cold_tree, &warm_tree, "npm ci cold vs warm");
    assert_eq!(installed(&sb.node_modules()), u.expected_installed);
    assert_bin_runs(&sb, &u, "npm ci (warm)").await;
    assert_eq!(
        assert_pinned(proxy.app(), &got, "npm ci (warm)"),
        pins,
        "no new pins"
    );
    eprintln!(
        "TIMING npm: lockfile {:.2?}, cold {:.2?}, warm {:.2?}, test {:.2?}; {} packages, {} files",
        lock_run.took,
        cold.took,
        warm.took,
        started.elapsed(),
        got.len(),
        cold_tree.len()
    );
}

// ---------------------------------------------------------------------------------------
// pnpm, yarn v1, yarn berry: install (writing the lockfile), then with the upstream down a
// frozen install from fresh caches

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Pnpm,
    Yarn1,
    Berry,
}

impl Client {
    fn lockfile(self) -> &'static str {
        match self {
            Self::Pnpm => "pnpm-lock.yaml",
            Self::Yarn1 | Self::Berry => "yarn.lock",
        }
    }
}

/// Where yarn berry's `yarn.js` is: `YARN_BERRY_JS`, else where `.ci/run` puts it. None
/// (after saying why) skips; under `CI=true` a missing berry fails.
fn berry_js() -> Option<PathBuf> {
    let p = std::env::var_os("YARN_BERRY_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BERRY_FALLBACK));
    if p.is_file() {
        return Some(p);
    }
    let msg = format!(
        "yarn berry is not installed at {} (set YARN_BERRY_JS; .ci/run installs @yarnpkg/cli-dist)",
        p.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    None
}

/// One install by `client` with caches/stores in fresh directories named after `phase`;
/// `frozen`: from the lockfile, which must not change.
async fn install(
    client: Client,
    sb: &Sandbox,
    registry: &str,
    berry: Option<&Path>,
    phase: &str,
    frozen: bool,
) -> client::Ran {
    let what = format!("{client:?} install ({phase})");
    let mut c = match client {
        Client::Pnpm => {
            let store = sb.fresh(&format!("pnpm-store-{phase}"));
            let cache = sb.fresh(&format!("pnpm-cache-{phase}"));
            let mut c = sb.cmd("pnpm");
            c.arg("install")
                .arg("--registry")
                .arg(registry)
                .arg("--store-dir")
                .arg(&store)
                .arg(format!("--config.cache-dir={}", cache.display()))
                .args([
                    "--ignore-scripts",
                    "--reporter=append-only",
                    "--config.update-notifier=false",
                    "--config.fetch-retries=0",
                ])
                .arg(if frozen {
                    "--frozen-lockfile"
                } else {
                    "--no-frozen-lockfile"
                });
            c
        }
        Client::Yarn1 => {
            let cache = sb.fresh(&format!("yarn-cache-{phase}"));
            std::fs::write(
                sb.project().join(".yarnrc"),
                format!("registry \"{registry}\"\ndisable-self-update-check true\n"),
            )
            .unwrap();
            let mut c = sb.cmd("yarn");
            c.arg("install")
                .arg("--registry")
                .arg(registry)
                .arg("--cache-folder")
                .arg(&cache)
                .args([
                    "--non-interactive",
                    "--no-progress",
                    "--ignore-scripts",
                    "--network-timeout",
                    "60000",
                ]);
            if frozen {
                c.arg("--frozen-lockfile");
            }
            c
        }
        Client::Berry => {
            let cache = sb.fresh(&format!("berry-cache-{phase}"));
            let global = sb.fresh(&format!("berry-global-{phase}"));
            std::fs::write(
                sb.project().join(".yarnrc.yml"),
                format!(
                    "npmRegistryServer: \"{registry}\"\n\
                     unsafeHttpWhitelist:\n  - \"127.0.0.1\"\n\
                     nodeLinker: node-modules\n\
                     enableGlobalCache: false\n\
                     enableMirror: false\n\
                     globalFolder: \"{}\"\n\
                     cacheFolder: \"{}\"\n\
                     enableTelemetry: false\n\
                     enableImmutableInstalls: false\n\
                     enableScripts: false\n\
                     enableProgressBars: false\n\
                     httpRetry: 0\n",
                    global.display(),
                    cache.display()
                ),
            )
            .unwrap();
            let mut c = sb.cmd("node");
            c.arg(berry.expect("berry")).arg("install");
            if frozen {
                c.arg("--immutable");
            }
            c
        }
    };
    run(&what, &mut c, CMD_TIMEOUT).await
}

async fn install_cold_then_warm(client: Client, berry: Option<&Path>) {
    let started = Instant::now();
    let (fake, u, proxy) = setup().await;
    let registry = format!("{}/npm/", proxy.url());
    let sb = Sandbox::new(&u.package_json());
    let wanted = as_set(&u.expected_installed);

    let cold = install(client, &sb, &registry, berry, "cold", false).await;
    let what = format!("{client:?} (cold)");
    let got = installed(&sb.node_modules());
    assert_eq!(as_set(&got), wanted, "{what}: installed packages");
    assert_bin_runs(&sb, &u, &what).await;
    assert_each_tarball_fetched_once(&fake, &u, &what);
    let pins = assert_pinned(proxy.app(), &got, &what);
    let lock = sb.read(client.lockfile());
    assert_no_upstream(&lock, &fake, client.lockfile());
    if client == Client::Yarn1 {
        // yarn v1 records each tarball's URL: the proxy's.
        let resolved: Vec<&str> = lock
            .lines()
            .filter_map(|l| l.trim().strip_prefix("resolved "))
            .collect();
        assert_eq!(resolved.len(), wanted.len(), "{what}: yarn.lock entries");
        let prefix = format!("\"{registry}");
        for r in resolved {
            assert!(r.starts_with(&prefix), "{what}: yarn.lock: resolved {r}");
        }
    }
    let cold_tree = tree(&sb.node_modules(), STATE_FILES);

    fake.stop();
    sb.remove_node_modules();
    let before = npm_requests(proxy.app());
    let warm = install(client, &sb, &registry, berry, "warm", true).await;
    let what = format!("{client:?} (warm, upstream down)");
    assert_warm_asked_proxy(before, proxy.app(), &u, &what);
    let got_warm = installed(&sb.node_modules());
    assert_eq!(got_warm, got, "{what}: installed packages");
    assert_same_tree(
        &cold_tree,
        &tree(&sb.node_modules(), STATE_FILES),
        &format!("{client:?} cold vs warm"),
    );
    assert_bin_runs(&sb, &u, &what).await;
    assert_eq!(sb.read(client.lockfile()), lock, "{what}: the lockfile");
    assert_eq!(assert_pinned(proxy.app(), &got, &what), pins, "no new pins");
    eprintln!(
        "TIMING {client:?}: cold {:.2?}, warm {:.2?}, test {:.2?}; {} package dirs, {} files",
        cold.took,
        warm.took,
        started.elapsed(),
        got.len(),
        cold_tree.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pnpm_installs_the_universe_through_the_proxy_and_again_without_upstream() {
    let _guard = REAL_CLIENTS.lock().await;
    if !(have_tool("node") & have_tool("pnpm")) {
        return;
    }
    install_cold_then_warm(Client::Pnpm, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yarn_v1_installs_the_universe_through_the_proxy_and_again_without_upstream() {
    let _guard = REAL_CLIENTS.lock().await;
    if !(have_tool("node") & have_tool("yarn")) {
        return;
    }
    install_cold_then_warm(Client::Yarn1, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yarn_berry_installs_the_universe_through_the_proxy_and_again_without_upstream() {
    let _guard = REAL_CLIENTS.lock().await;
    if !have_tool("node") {
        return;
    }
    let Some(berry) = berry_js() else { return };
    install_cold_then_warm(Client::Berry, Some(&berry)).await;
}

// ---------------------------------------------------------------------------------------
// the real registry

/// A proxy on `listen` with the store in `data_dir` and `upstream` as its npm registry,
/// retrying the bind briefly (the previous server on that address may just have closed).
async fn start_server(
    data_dir: &Path,
    listen: SocketAddr,
    upstream: &str,
) -> pinproxy::server::Server {
    let text = format!(
        "[server]\nlisten = \"{listen}\"\ndata_dir = \"{}\"\nshutdown_grace = \"5s\"\n\
         [http]\nidle_timeout = \"30s\"\nconnect_timeout = \"10s\"\n\
         [npm]\nupstream = \"{upstream}\"\n",
        data_dir.display()
    );
    let no_env = |_: &str| None;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let config = pinproxy::config::Config::parse(
            "real_npm.toml",
            &text,
            &pinproxy::config::Overrides::default(),
            &no_env,
        )
        .unwrap_or_else(|e| panic!("config: {}", redact(&e.to_string())));
        let app = pinproxy::server::App::open(config).expect("open app");
        match pinproxy::server::start(app).await {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("start on {listen}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot start the proxy on {listen}: {e}"),
        }
    }
}

/// A few small, well-known packages (a scoped one, one with a bin, transitive deps).
const REAL_PROJECT: &str = r#"{
  "name": "pinproxy-real-npm-check",
  "version": "1.0.0",
  "private": true,
  "dependencies": {
    "@sindresorhus/is": "4.6.0",
    "chalk": "4.1.2",
    "debug": "4.3.4",
    "is-number": "7.0.0",
    "semver": "7.6.0"
  }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reaches the registry this machine's npm is configured with"]
async fn npm_ci_through_the_configured_registry_and_again_from_the_store_alone() {
    let _guard = REAL_CLIENTS.lock().await;
    assert!(
        have_tool("node") & have_tool("npm"),
        "this test needs node and npm"
    );
    init_tracing();
    let started = Instant::now();

    // The registry as this machine's npm is configured (its name is never printed).
    let probe = tempfile::tempdir().expect("tempdir");
    let mut c = Command::new("npm");
    c.args(["config", "get", "registry"])
        .current_dir(probe.path());
    let upstream = run("npm config get registry", &mut c, CMD_TIMEOUT)
        .await
        .stdout
        .trim()
        .to_owned();
    let url = reqwest::Url::parse(&upstream).expect("npm's registry is a URL");
    let host = url
        .host_str()
        .expect("npm's registry has a host")
        .to_owned();
    if !["127.0.0.1", "localhost", "[::1]"].contains(&host.as_str()) {
        REDACT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(host.clone());
    }
    let upstream = if upstream.ends_with('/') {
        upstream
    } else {
        format!("{upstream}/")
    };

    let data = tempfile::tempdir().expect("tempdir");
    let server = start_server(data.path(), "127.0.0.1:0".parse().unwrap(), &upstream).await;
    let addr = server.addr;
    let registry = format!("http://{addr}/npm/");
    let sb = Sandbox::new(REAL_PROJECT);

    let cache = sb.fresh("cache-lock");
    let mut c = sb.npm(
        &registry,
        &cache,
        &[&["install", "--package-lock-only"], REAL_RETRIES].concat(),
    );
    let lock_run = run(
        "npm install --package-lock-only (real)",
        &mut c,
        REAL_TIMEOUT,
    )
    .await;
    let lock = sb.read("package-lock.json");
    assert!(
        !lock.contains(&host),
        "package-lock.json names the upstream registry's host"
    );
    let locked = npm_lock_packages(&lock, &registry, "package-lock.json");

    let cache = sb.fresh("cache-cold");
    let mut c = sb.npm(&registry, &cache, &[&["ci"], REAL_RETRIES].concat());
    let cold = run("npm ci (real, cold)", &mut c, REAL_TIMEOUT).await;
    let got = installed(&sb.node_modules());
    assert_eq!(got, locked, "node_modules is what the lockfile says");
    let roots: serde_json::Value = serde_json::from_str(REAL_PROJECT).unwrap();
    for (name, version) in roots["dependencies"].as_object().unwrap() {
        let want = (name.clone(), version.as_str().unwrap().to_owned());
        assert!(got.contains(&want), "{want:?} is not installed: {got:?}");
    }
    let pins = assert_pinned(&server.app, &got, "npm ci (real, cold)");
    let cold_tree = tree(&sb.node_modules(), STATE_FILES);
    assert!(
        cold_tree.contains_key(".bin/semver"),
        "semver's bin is linked"
    );

    // The same address and store, the upstream a port nobody answers on.
    server.shutdown().await;
    let server = start_server(data.path(), addr, "http://127.0.0.1:9/").await;
    sb.remove_node_modules();
    let cache = sb.fresh("cache-warm");
    let mut c = sb.npm(&registry, &cache, &["ci", STRICT]);
    let warm = run("npm ci (real, store alone)", &mut c, REAL_TIMEOUT).await;
    let asked = npm_requests(&server.app);
    assert!(
        asked >= got.len() as u64,
        "npm ci (real, store alone): the proxy answered {asked} npm requests for {} packages",
        got.len()
    );
    assert_same_tree(
        &cold_tree,
        &tree(&sb.node_modules(), STATE_FILES),
        "real npm ci: cold vs store alone",
    );
    assert_eq!(
        assert_pinned(&server.app, &got, "npm ci (real, store alone)"),
        pins,
        "no new pins"
    );
    server.shutdown().await;
    eprintln!(
        "TIMING real npm: lockfile {:.2?}, cold {:.2?}, store alone {:.2?}, test {:.2?}; {} packages",
        lock_run.took,
        cold.took,
        warm.took,
        started.elapsed(),
        got.len()
    );
}
