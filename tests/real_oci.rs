//! Real clients through pinproxy: skopeo, podman and containerd's ctr pull images that umoci
//! built and skopeo pushed to a real local registry (Debian's `docker-registry`, CNCF
//! distribution 2.8), each in the routing form it uses in production:
//! - skopeo with the proxy as the registry: the default upstream (`/v2/test/...`);
//! - podman with the proxy as a `registries.conf` mirror with a path: a path prefix
//!   (`/v2/upstream.test/test/...`);
//! - ctr with the proxy as a `hosts.toml` mirror: `?ns=upstream.test`.
//!
//! Each test asserts that every manifest digest the client ends up with is the upstream's,
//! then kills the upstream and pulls again with fresh client storage: the proxy alone must
//! serve everything, byte-identical. The tools are Debian packages (.ci/run installs them);
//! a missing one skips the test, except under `CI=true`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::support::proxy::Proxy;
use crate::support::registry::{
    Image, Registry, TestImages, UPSTREAM, count_accesses, free_port, inspect_raw,
    layout_descriptor, run, run_stdout, sha256_digest, skopeo, try_run,
};
use crate::support::{REAL_CLIENTS, have_tool};

/// Captured per test and shown when a test fails; `RUST_LOG` overrides the filter.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("pinproxy=debug,info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Checks every tool (so CI names each missing one in turn).
fn have_tools(tools: &[&str]) -> bool {
    tools.iter().all(|t| have_tool(t))
}

/// How the proxy in front of the upstream is configured.
#[derive(Debug, Clone, Copy)]
struct Opts {
    /// false: the default upstream is a decoy that refuses every connection, so only a
    /// client that names `upstream.test` (path prefix or `ns`) reaches the test images.
    upstream_is_default: bool,
    /// The tag TTL of `upstream.test`; a tiny one makes every tag pull revalidate upstream.
    tag_ttl: &'static str,
}

const DEFAULT_OPTS: Opts = Opts {
    upstream_is_default: true,
    tag_ttl: "5m",
};

/// A running upstream with the test images on it, and a proxy in front of it.
struct Setup {
    work: tempfile::TempDir,
    registry: Registry,
    images: TestImages,
    proxy: Proxy,
}

impl Setup {
    async fn new(opts: Opts) -> Self {
        init_tracing();
        let started = Instant::now();
        let work = tempfile::tempdir().expect("tempdir");
        let registry = Registry::start().await;
        let images = TestImages::build_and_push(&registry, work.path()).await;
        let decoy = format!("http://127.0.0.1:{}", free_port());
        let default = if opts.upstream_is_default {
            UPSTREAM
        } else {
            "decoy.test"
        };
        let config = format!(
            "[oci]\ndefault_upstream = \"{default}\"\n\
             [[oci.upstreams]]\nname = \"decoy.test\"\nurl = \"{decoy}\"\n\
             [[oci.upstreams]]\nname = \"{UPSTREAM}\"\nurl = \"{}\"\ntag_ttl = \"{}\"\n",
            registry.url(),
            opts.tag_ttl
        );
        let proxy = Proxy::start_with(&[], &config).await;
        eprintln!(
            "setup in {:.2?}: upstream {} proxy {} {opts:?}",
            started.elapsed(),
            registry.url(),
            proxy.url()
        );
        Self {
            work,
            registry,
            images,
            proxy,
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.work.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

fn timed(label: &str, started: Instant) {
    eprintln!("TIMING {label}: {:.2?}", started.elapsed());
}

/// With a decoy default upstream, the root form must not reach the test images: proof that
/// the client under test got them by naming `upstream.test`.
async fn assert_root_form_is_decoy(s: &Setup) {
    let conf = s.dir("decoy-check");
    let mut c = skopeo(&conf);
    c.args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--retry-times",
        "0",
    ])
    .arg(format!(
        "docker://{}/{}:v1",
        s.proxy.host_port(),
        s.images.multi.repo
    ));
    let r = try_run(&mut c).await;
    assert!(r.is_err(), "the root form reached the test images: {r:?}");
}

// ---------------------------------------------------------------------------------------
// skopeo

/// `skopeo copy` from the proxy (root form) into an OCI layout `out`, tagged `x`; returns
/// the digest the layout's `index.json` names.
async fn skopeo_copy(conf: &Path, source: &str, out: &Path, all: bool) -> String {
    let mut cmd = skopeo(conf);
    cmd.args([
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        "--retry-times",
        "0",
    ]);
    if all {
        cmd.arg("--all");
    }
    cmd.arg(format!("docker://{source}"))
        .arg(format!("oci:{}:x", out.display()));
    run(&mut cmd).await;
    layout_descriptor(out, "x")["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn assert_layout_has(out: &Path, img: &Image, what: &str) {
    for d in std::iter::once(&img.digest).chain(&img.blobs) {
        let p = out
            .join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap());
        let bytes =
            std::fs::read(&p).unwrap_or_else(|e| panic!("{what}: {} is missing: {e}", p.display()));
        assert_eq!(&sha256_digest(&bytes), d, "{what}: {}", p.display());
    }
}

/// Pulls every test image through the proxy with skopeo, by tag, by digest and the index
/// with `--all`, into fresh layouts under `out`, and checks every digest against upstream.
async fn skopeo_pull_all(conf: &Path, proxy: &str, images: &TestImages, out: &Path, phase: &str) {
    let started = Instant::now();
    std::fs::create_dir_all(out).unwrap();
    // Byte-identical manifests, by tag and by digest, index children included.
    for img in [&images.single, &images.multi] {
        let by_tag = inspect_raw(conf, &format!("{proxy}/{}:{}", img.repo, img.tag)).await;
        assert_eq!(
            sha256_digest(&by_tag),
            img.digest,
            "{phase}: {}:{}",
            img.repo,
            img.tag
        );
        assert_eq!(by_tag, img.manifest, "{phase}: {}:{}", img.repo, img.tag);
    }
    let ix = &images.multiarch;
    let raw = inspect_raw(conf, &format!("{proxy}/{}:{}", ix.repo, ix.tag)).await;
    assert_eq!(sha256_digest(&raw), ix.digest, "{phase}: index by tag");
    assert_eq!(raw, ix.raw, "{phase}: index by tag");
    for (repo, digest) in images.all_manifests() {
        let raw = inspect_raw(conf, &format!("{proxy}/{repo}@{digest}")).await;
        assert_eq!(sha256_digest(&raw), digest, "{phase}: {repo}@{digest}");
    }

    // Whole images into OCI layouts.
    let s = &images.single;
    let o = out.join("single-by-tag");
    let got = skopeo_copy(conf, &format!("{proxy}/{}:v1", s.repo), &o, false).await;
    assert_eq!(got, s.digest, "{phase}: single by tag");
    assert_layout_has(&o, s, phase);

    let o = out.join("single-by-digest");
    let got = skopeo_copy(conf, &format!("{proxy}/{}@{}", s.repo, s.digest), &o, false).await;
    assert_eq!(got, s.digest, "{phase}: single by digest");
    assert_layout_has(&o, s, phase);

    let m = &images.multi;
    let o = out.join("multi-by-tag");
    let got = skopeo_copy(conf, &format!("{proxy}/{}:v1", m.repo), &o, false).await;
    assert_eq!(got, m.digest, "{phase}: multi by tag");
    assert_layout_has(&o, m, phase);

    let o = out.join("multiarch-all");
    let got = skopeo_copy(conf, &format!("{proxy}/{}:v1", ix.repo), &o, true).await;
    assert_eq!(got, ix.digest, "{phase}: index with --all");
    for (arch, child) in &ix.children {
        assert_layout_has(&o, child, &format!("{phase}: {arch}"));
    }
    timed(&format!("skopeo pull-all ({phase})"), started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_by_tag_digest_and_index_and_keeps_pulling_without_upstream() {
    let _guard = REAL_CLIENTS.lock().await;
    if !have_tools(&["skopeo", "umoci", "docker-registry"]) {
        return;
    }
    let started = Instant::now();
    // Every tag pull revalidates upstream, so with the upstream down the proxy serves its
    // last resolutions stale (a 5-minute TTL would just serve them fresh).
    let mut s = Setup::new(Opts {
        tag_ttl: "1ms",
        ..DEFAULT_OPTS
    })
    .await;
    let conf = s.dir("skopeo");
    let stale = |s: &Setup| {
        s.proxy
            .app()
            .metrics
            .counter("pinproxy_stale_served_total", UPSTREAM)
    };

    let proxy = s.proxy.host_port();
    skopeo_pull_all(&conf, &proxy, &s.images, &s.dir("online"), "online").await;
    assert_eq!(stale(&s), 0, "nothing is stale while the upstream is up");

    s.registry.stop().await;
    let phase = "upstream down";
    skopeo_pull_all(&conf, &proxy, &s.images, &s.dir("offline"), phase).await;
    assert!(stale(&s) > 0, "{phase}: tags were served stale");

    // The cache survives a proxy restart too, still without upstream.
    s.proxy.restart().await;
    let proxy = s.proxy.host_port();
    let phase = "upstream down, proxy restarted";
    skopeo_pull_all(&conf, &proxy, &s.images, &s.dir("offline-restarted"), phase).await;
    assert!(stale(&s) > 0, "{phase}: tags were served stale");

    // With the upstream back (same port, same storage) tags revalidate to the same digests.
    s.registry.restart().await;
    let before = stale(&s);
    for img in [&s.images.single, &s.images.multi] {
        let raw = inspect_raw(&conf, &format!("{proxy}/{}:v1", img.repo)).await;
        assert_eq!(
            sha256_digest(&raw),
            img.digest,
            "upstream back: {}",
            img.repo
        );
    }
    assert_eq!(stale(&s), before, "upstream back: nothing served stale");
    timed("skopeo test total", started);
}

// ---------------------------------------------------------------------------------------
// podman

/// A podman with private storage and configuration: nothing under /var/lib/containers, no
/// system registries.conf. `upstream.test` is mirrored by the proxy with a path prefix.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new(proxy: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["root", "run", "tmp", "net"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                d.join("root").display(),
                d.join("run").display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("registries.conf"),
            format!(
                "unqualified-search-registries = []\n\
                 [[registry]]\nprefix = \"{UPSTREAM}\"\nlocation = \"{UPSTREAM}\"\n\
                 [[registry.mirror]]\nlocation = \"{proxy}/{UPSTREAM}\"\ninsecure = true\n"
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\n\
                 tmp_dir = \"{tmp}\"\nimage_copy_tmp_dir = \"{tmp}\"\n\
                 [network]\nnetwork_config_dir = \"{net}\"\n",
                tmp = d.join("tmp").display(),
                net = d.join("net").display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        Self { dir }
    }

    fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("TMPDIR", d.join("tmp"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager=cgroupfs",
                "--events-backend=none",
            ]);
        c
    }

    async fn pull(&self, reference: &str) {
        let mut c = self.cmd();
        c.args(["pull", "--arch", "amd64", "--os", "linux"])
            .arg("--signature-policy")
            .arg(self.dir.path().join("policy.json"))
            .arg(reference);
        run(&mut c).await;
    }

    async fn inspect(&self, reference: &str, format: &str) -> String {
        let mut c = self.cmd();
        c.args(["image", "inspect", "--format", format, reference]);
        run_stdout(&mut c).await.trim().to_owned()
    }
}

/// Pulls with a fresh podman through the proxy and checks the digests podman records.
async fn podman_pull_all(proxy: &str, images: &TestImages, phase: &str) {
    let started = Instant::now();
    let podman = Podman::new(proxy);
    let m = &images.multi;
    let r = format!("{UPSTREAM}/{}:v1", m.repo);
    podman.pull(&r).await;
    assert_eq!(
        podman.inspect(&r, "{{.Digest}}").await,
        m.digest,
        "{phase}: {r}"
    );

    let s = &images.single;
    let r = format!("{UPSTREAM}/{}@{}", s.repo, s.digest);
    podman.pull(&r).await;
    assert_eq!(
        podman.inspect(&r, "{{.Digest}}").await,
        s.digest,
        "{phase}: {r}"
    );

    // The index: podman records the index digest, and the amd64 child's as a repo digest.
    let ix = &images.multiarch;
    let r = format!("{UPSTREAM}/{}:v1", ix.repo);
    podman.pull(&r).await;
    let amd64 = &ix.children[0];
    assert_eq!(amd64.0, "amd64");
    let digest = podman.inspect(&r, "{{.Digest}}").await;
    let repo_digests = podman.inspect(&r, "{{.RepoDigests}}").await;
    assert_eq!(
        digest, ix.digest,
        "{phase}: {r}: repo digests {repo_digests}"
    );
    assert!(
        repo_digests.contains(&amd64.1.digest),
        "{phase}: {r}: repo digests {repo_digests}, expected the amd64 child {}",
        amd64.1.digest
    );
    timed(&format!("podman pull-all ({phase})"), started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pulls_through_a_path_prefix_mirror_and_without_upstream() {
    let _guard = REAL_CLIENTS.lock().await;
    if !have_tools(&["skopeo", "umoci", "docker-registry", "podman"]) {
        return;
    }
    let started = Instant::now();
    let mut s = Setup::new(Opts {
        upstream_is_default: false,
        ..DEFAULT_OPTS
    })
    .await;
    assert_root_form_is_decoy(&s).await;
    let proxy = s.proxy.host_port();
    podman_pull_all(&proxy, &s.images, "online").await;
    s.registry.stop().await;
    podman_pull_all(&proxy, &s.images, "upstream down").await;
    timed("podman test total", started);
}

// ---------------------------------------------------------------------------------------
// containerd

/// A private containerd (own root, state, socket, config) whose `ctr` pulls `upstream.test`
/// through the proxy as a `hosts.toml` mirror, so it sends `?ns=upstream.test`.
struct Containerd {
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl Containerd {
    async fn start(proxy: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let hosts = d.join("certs.d").join(UPSTREAM);
        std::fs::create_dir_all(&hosts).unwrap();
        // No fallback that could work: the server name never resolves.
        std::fs::write(
            hosts.join("hosts.toml"),
            format!(
                "server = \"http://{UPSTREAM}\"\n\n[host.\"http://{proxy}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .unwrap();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.aufs\", \
             \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \
             \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.tracing.processor.v1.otlp\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n\
             [metrics]\n  address = \"\"\n\
             [plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"{opt}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("containerd.sock").display(),
            opt = d.join("opt").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = std::process::Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let mut c = Self {
            dir,
            child: Some(child),
        };
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let mut v = c.ctr();
            v.arg("version").stdout(Stdio::null()).stderr(Stdio::null());
            if try_run(&mut v).await.is_ok() {
                break;
            }
            let exited = c.child.as_mut().and_then(|ch| ch.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > until {
                panic!(
                    "containerd did not start ({exited:?}); its log:\n{}",
                    c.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.dir.path().join("containerd.sock"));
        c
    }

    fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    async fn pull(&self, reference: &str) {
        let mut c = self.ctr();
        c.args([
            "image",
            "pull",
            "--snapshotter",
            "native",
            "--platform",
            "linux/amd64",
        ])
        .arg("--hosts-dir")
        .arg(self.hosts_dir())
        .arg(reference);
        run(&mut c).await;
    }

    async fn fetch_all_platforms(&self, reference: &str) {
        let mut c = self.ctr();
        c.args(["content", "fetch", "--all-platforms"])
            .arg("--hosts-dir")
            .arg(self.hosts_dir())
            .arg(reference);
        run(&mut c).await;
    }

    /// `ctr image ls`: reference → target digest.
    async fn images(&self) -> BTreeMap<String, String> {
        let mut c = self.ctr();
        c.args(["image", "ls"]);
        run_stdout(&mut c)
            .await
            .lines()
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some((cols.first()?.to_string(), cols.get(2)?.to_string()))
            })
            .collect()
    }

    /// `ctr content ls -q`: every digest in the content store.
    async fn content(&self) -> BTreeSet<String> {
        let mut c = self.ctr();
        c.args(["content", "ls", "-q"]);
        run_stdout(&mut c)
            .await
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Pulls with a fresh containerd through the proxy and checks the digests it records.
async fn containerd_pull_all(proxy: &str, images: &TestImages, phase: &str) {
    let started = Instant::now();
    let ctd = Containerd::start(proxy).await;
    let m = &images.multi;
    let multi_ref = format!("{UPSTREAM}/{}:v1", m.repo);
    ctd.pull(&multi_ref).await;
    let s = &images.single;
    let single_ref = format!("{UPSTREAM}/{}@{}", s.repo, s.digest);
    ctd.pull(&single_ref).await;
    let ix = &images.multiarch;
    let index_ref = format!("{UPSTREAM}/{}:v1", ix.repo);
    ctd.fetch_all_platforms(&index_ref).await;

    let listed = ctd.images().await;
    assert_eq!(
        listed.get(&multi_ref),
        Some(&m.digest),
        "{phase}: {listed:#?}"
    );
    assert_eq!(
        listed.get(&single_ref),
        Some(&s.digest),
        "{phase}: {listed:#?}"
    );
    assert_eq!(
        listed.get(&index_ref),
        Some(&ix.digest),
        "{phase}: {listed:#?}"
    );
    let content = ctd.content().await;
    let mut want: BTreeSet<String> = [&m.digest, &s.digest, &ix.digest]
        .into_iter()
        .chain(&m.blobs)
        .chain(&s.blobs)
        .cloned()
        .collect();
    for (_, child) in &ix.children {
        want.insert(child.digest.clone());
        want.extend(child.blobs.iter().cloned());
    }
    let missing: Vec<_> = want.difference(&content).collect();
    assert!(missing.is_empty(), "{phase}: containerd lacks {missing:?}");
    timed(&format!("containerd pull-all ({phase})"), started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_an_ns_mirror_and_without_upstream() {
    let _guard = REAL_CLIENTS.lock().await;
    if !have_tools(&["skopeo", "umoci", "docker-registry", "containerd", "ctr"]) {
        return;
    }
    let started = Instant::now();
    let mut s = Setup::new(Opts {
        upstream_is_default: false,
        ..DEFAULT_OPTS
    })
    .await;
    assert_root_form_is_decoy(&s).await;
    let proxy = s.proxy.host_port();
    containerd_pull_all(&proxy, &s.images, "online").await;
    s.registry.stop().await;
    containerd_pull_all(&proxy, &s.images, "upstream down").await;
    timed("containerd test total", started);
}

// ---------------------------------------------------------------------------------------
// all three routing forms

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_routing_forms_share_one_cache_entry() {
    let _guard = REAL_CLIENTS.lock().await;
    if !have_tools(&[
        "skopeo",
        "umoci",
        "docker-registry",
        "podman",
        "containerd",
        "ctr",
    ]) {
        return;
    }
    let started = Instant::now();
    let mut s = Setup::new(DEFAULT_OPTS).await;
    let proxy = s.proxy.host_port();
    let m = s.images.multi.clone();
    let mark = s.registry.log_mark();

    // Root form, path prefix, ns: the same image three times.
    let conf = s.dir("skopeo");
    let got = skopeo_copy(
        &conf,
        &format!("{proxy}/{}:v1", m.repo),
        &s.dir("root-form"),
        false,
    )
    .await;
    assert_eq!(got, m.digest, "skopeo");
    let podman = Podman::new(&proxy);
    let reference = format!("{UPSTREAM}/{}:v1", m.repo);
    podman.pull(&reference).await;
    assert_eq!(
        podman.inspect(&reference, "{{.Digest}}").await,
        m.digest,
        "podman"
    );
    let ctd = Containerd::start(&proxy).await;
    ctd.pull(&reference).await;
    assert_eq!(ctd.images().await.get(&reference), Some(&m.digest), "ctr");

    // The upstream saw each blob fetched once, and the manifest at most once.
    let accesses = s.registry.accesses_since(mark);
    let counts = count_accesses(&accesses);
    let log = || format!("upstream requests after the push:\n{accesses:#?}");
    for b in &m.blobs {
        let path = format!("/v2/{}/blobs/{b}", m.repo);
        let gets: Vec<_> = counts
            .iter()
            .filter(|((method, p, _), _)| method == "GET" && *p == path)
            .collect();
        assert_eq!(
            gets.iter().map(|(_, n)| **n).sum::<usize>(),
            1,
            "GET {path}: {gets:?}\n{}",
            log()
        );
        assert_eq!(gets[0].0.2, 200, "GET {path}\n{}", log());
    }
    let blob_gets = accesses
        .iter()
        .filter(|a| a.method == "GET" && a.path.contains("/blobs/"))
        .count();
    assert_eq!(
        blob_gets,
        m.blobs.len(),
        "only the image's blobs\n{}",
        log()
    );
    let manifest_gets = accesses
        .iter()
        .filter(|a| a.method == "GET" && a.path.contains("/manifests/"))
        .count();
    assert!(
        manifest_gets <= 1,
        "manifest fetched {manifest_gets} times\n{}",
        log()
    );
    assert!(
        accesses.iter().all(|a| !a.path.contains(UPSTREAM)),
        "the upstream name leaked into an upstream path\n{}",
        log()
    );

    // One pin per coordinate, all under the one canonical spelling.
    let pins = s.proxy.app().store.pins().unwrap();
    let coords: Vec<&str> = pins.iter().map(|p| p.pin.coordinate.as_str()).collect();
    let mut want: BTreeSet<String> = m
        .blobs
        .iter()
        .map(|b| format!("oci:{UPSTREAM}/{}@{b}", m.repo))
        .collect();
    want.insert(format!("oci:{UPSTREAM}/{}@{}", m.repo, m.digest));
    for c in &want {
        assert_eq!(
            coords.iter().filter(|x| **x == c).count(),
            1,
            "{c} in {coords:#?}"
        );
    }
    assert_eq!(coords.len(), want.len(), "unexpected pins: {coords:#?}");
    let tag = format!("oci:{UPSTREAM}/{}:v1", m.repo);
    let resolutions = s.proxy.app().store.resolutions().unwrap();
    assert!(
        resolutions
            .iter()
            .any(|r| r.resolution.coordinate == tag && r.resolution.target == m.digest),
        "{tag} in {resolutions:#?}"
    );
    drop(ctd);

    // Second pulls with the upstream gone, fresh client storage, every form.
    s.registry.stop().await;
    let got = skopeo_copy(
        &conf,
        &format!("{proxy}/{}:v1", m.repo),
        &s.dir("root-form-2"),
        false,
    )
    .await;
    assert_eq!(got, m.digest, "skopeo, upstream down");
    let podman = Podman::new(&proxy);
    podman.pull(&reference).await;
    assert_eq!(
        podman.inspect(&reference, "{{.Digest}}").await,
        m.digest,
        "podman, upstream down"
    );
    let ctd = Containerd::start(&proxy).await;
    ctd.pull(&reference).await;
    assert_eq!(
        ctd.images().await.get(&reference),
        Some(&m.digest),
        "ctr, upstream down"
    );
    assert_eq!(
        s.proxy.app().store.pins().unwrap().len(),
        want.len(),
        "no new pins"
    );
    timed("three-forms test total", started);
}
