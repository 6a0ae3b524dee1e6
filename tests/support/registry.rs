//! A real local upstream for the real-client tests: Debian's `docker-registry` (CNCF
//! distribution 2.8) on 127.0.0.1 with a private storage directory, and test images built
//! with umoci into an OCI layout and pushed to it with skopeo.
//!
//! Everything binds or dials 127.0.0.1 only, and every external command runs under a timeout.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio::process::Command;

/// The one upstream name the real-client tests configure. It works in all three routing
/// forms: the default (root `/v2/test/...`), a path prefix (`/v2/upstream.test/test/...`, a
/// valid repository-name component) and containerd's `?ns=upstream.test` (the host part of an
/// image reference `upstream.test/test/...`). `.test` never resolves, so a client that
/// bypassed its mirror would fail instead of reaching anything.
pub(crate) const UPSTREAM: &str = "upstream.test";

/// The bound on any one external command.
pub(crate) const CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `cmd` to completion under [`CMD_TIMEOUT`]; on failure returns a message with the
/// command line, exit status, stdout and stderr.
pub(crate) async fn try_run(cmd: &mut Command) -> Result<std::process::Output, String> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let what = format!("{:?}", cmd.as_std());
    let started = Instant::now();
    let out = match tokio::time::timeout(CMD_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(format!("{what}: timed out after {CMD_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("{what}: cannot run: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        eprintln!("ran in {:.2?}: {what}", started.elapsed());
        Ok(out)
    } else {
        Err(format!(
            "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// [`try_run`], panicking on failure.
pub(crate) async fn run(cmd: &mut Command) -> std::process::Output {
    try_run(cmd).await.unwrap_or_else(|e| panic!("{e}"))
}

/// `run`, returning stdout as text.
pub(crate) async fn run_stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).await.stdout).expect("utf-8 output")
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Waits until `http://127.0.0.1:port/v2/` answers 200, or `deadline` passes.
async fn wait_ready(port: u16, deadline: Duration) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .expect("client");
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/v2/"))
            .send()
            .await
        {
            if r.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// One request line of the registry's access log (Apache combined format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Access {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) status: u16,
}

/// `docker-registry serve` on a fixed 127.0.0.1 port with a private storage directory; killed
/// on drop. Stopping and starting again keeps the port and the stored images.
pub(crate) struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Registry {
    pub(crate) async fn start() -> Self {
        let mut r = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            port: 0,
            child: None,
        };
        for _attempt in 0..5 {
            // Another process may take the port between the probe and the child's bind: then
            // the child exits and the next attempt takes another port.
            r.port = free_port();
            if r.spawn().await {
                return r;
            }
        }
        panic!("docker-registry did not start; its log:\n{}", r.log());
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Starts the process; false if it exited or did not answer in time.
    async fn spawn(&mut self) -> bool {
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             redirect:\n    disable: true\n\
             http:\n  addr: 127.0.0.1:{}\n\
             health:\n  storagedriver:\n    enabled: false\n",
            self.dir.path().join("storage").display(),
            self.port
        );
        std::fs::write(self.config_path(), config).expect("write registry config");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open registry log");
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Some(Some(status)) = self.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                eprintln!("docker-registry exited at start: {status}");
                self.child = None;
                return false;
            }
            if wait_ready(self.port, Duration::from_millis(500)).await {
                return true;
            }
        }
        self.kill();
        false
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the registry: from now on the proxy's upstream refuses connections.
    pub(crate) async fn stop(&mut self) {
        self.kill();
        // Make sure nothing answers any more.
        assert!(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .no_proxy()
                .build()
                .unwrap()
                .get(format!("{}/v2/", self.url()))
                .send()
                .await
                .is_err(),
            "the registry still answers after being killed"
        );
    }

    /// Starts the registry again on the same port with the same storage.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn().await,
            "docker-registry did not restart; its log:\n{}",
            self.log()
        );
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log so far (its application log and access log, interleaved).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A mark to pass to [`Registry::accesses_since`].
    pub(crate) fn log_mark(&self) -> usize {
        self.log().len()
    }

    /// The access-log entries written after `mark`.
    pub(crate) fn accesses_since(&self, mark: usize) -> Vec<Access> {
        let log = self.log();
        log.get(mark..)
            .unwrap_or_default()
            .lines()
            .filter_map(parse_access_line)
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Parses `127.0.0.1 - - [date] "GET /v2/x HTTP/1.1" 200 123 "" "agent"`.
fn parse_access_line(line: &str) -> Option<Access> {
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let status = rest.split(' ').next()?.parse().ok()?;
    Some(Access {
        method,
        path,
        status,
    })
}

/// One pushed image manifest.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    /// The repository, for example `test/single`.
    pub(crate) repo: String,
    /// The tag it was pushed under (empty for an index's children).
    pub(crate) tag: String,
    /// The manifest digest as the upstream serves it.
    pub(crate) digest: String,
    /// The manifest's bytes as the upstream serves them.
    pub(crate) manifest: Vec<u8>,
    /// The config and layer digests, config first.
    pub(crate) blobs: Vec<String>,
    /// The layer sizes, in order.
    pub(crate) layer_sizes: Vec<u64>,
}

/// A pushed two-platform OCI index.
#[derive(Debug, Clone)]
pub(crate) struct IndexImage {
    pub(crate) repo: String,
    pub(crate) tag: String,
    pub(crate) digest: String,
    pub(crate) raw: Vec<u8>,
    /// `(architecture, child image)`, amd64 first.
    pub(crate) children: Vec<(String, Image)>,
}

/// The images every real-client test pulls.
#[derive(Debug, Clone)]
pub(crate) struct TestImages {
    /// `test/single:v1`: one layer.
    pub(crate) single: Image,
    /// `test/multi:v1`: three layers, the middle one over 5 MiB of incompressible bytes.
    pub(crate) multi: Image,
    /// `test/multiarch:v1`: an OCI index of a linux/amd64 and a linux/arm64 image.
    pub(crate) multiarch: IndexImage,
}

/// Deterministic incompressible bytes (xorshift64*).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `files` (relative path, bytes) under a fresh directory `dir`.
fn write_tree(dir: &Path, files: &[(&str, Vec<u8>)]) {
    for (rel, bytes) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
}

fn umoci() -> Command {
    Command::new("umoci")
}

/// A skopeo command that reads no system registry or policy configuration.
pub(crate) fn skopeo(conf_dir: &Path) -> Command {
    let registries = conf_dir.join("skopeo-registries.conf");
    if !registries.exists() {
        std::fs::write(&registries, "unqualified-search-registries = []\n").unwrap();
    }
    let mut c = Command::new("skopeo");
    c.env("CONTAINERS_REGISTRIES_CONF", &registries)
        .env("TMPDIR", conf_dir)
        .arg("--insecure-policy")
        .arg("--registries-conf")
        .arg(&registries);
    c
}

/// Builds one image `tag` in `layout` with one layer per source tree, then sets its platform.
async fn build_image(layout: &Path, tag: &str, layers: &[Vec<(&str, Vec<u8>)>], arch: &str) {
    let image = format!("{}:{tag}", layout.display());
    run(umoci().args(["new", "--image", &image])).await;
    for (i, files) in layers.iter().enumerate() {
        let src = layout.parent().unwrap().join(format!("src-{tag}-{i}"));
        write_tree(&src, files);
        run(umoci()
            .args(["insert", "--image", &image])
            .arg(&src)
            .arg(format!("/data/{tag}/{i}")))
        .await;
    }
    run(umoci().args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        arch,
        "--author",
        "pinproxy tests",
    ]))
    .await;
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The descriptor `index.json` of `layout` holds for the ref name `tag`.
pub(crate) fn layout_descriptor(layout: &Path, tag: &str) -> serde_json::Value {
    let index = read_json(&layout.join("index.json"));
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no `{tag}` in {}/index.json: {index}", layout.display()))
        .clone()
}

/// Writes an OCI index of the images `platforms` (tag, architecture) into the layout's blobs
/// and names it `tag` in `index.json`.
fn add_index(layout: &Path, tag: &str, platforms: &[(&str, &str)]) {
    let manifests: Vec<serde_json::Value> = platforms
        .iter()
        .map(|(t, arch)| {
            let d = layout_descriptor(layout, t);
            serde_json::json!({
                "mediaType": d["mediaType"],
                "digest": d["digest"],
                "size": d["size"],
                "platform": {"architecture": arch, "os": "linux"},
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = sha256_digest(&bytes);
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::write(layout.join("blobs/sha256").join(hex), &bytes).unwrap();
    let mut top = read_json(&layout.join("index.json"));
    top["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
}

fn blobs_of(manifest: &[u8]) -> (Vec<String>, Vec<u64>) {
    let m: serde_json::Value = serde_json::from_slice(manifest).expect("manifest json");
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
    let mut sizes = Vec::new();
    for l in m["layers"].as_array().unwrap() {
        blobs.push(l["digest"].as_str().unwrap().to_owned());
        sizes.push(l["size"].as_u64().unwrap());
    }
    (blobs, sizes)
}

/// `skopeo inspect --raw` of `reference` (`host/repo:tag` or `host/repo@digest`).
pub(crate) async fn inspect_raw(conf_dir: &Path, reference: &str) -> Vec<u8> {
    run(skopeo(conf_dir)
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--retry-times",
            "0",
        ])
        .arg(format!("docker://{reference}")))
    .await
    .stdout
}

async fn upstream_image(conf_dir: &Path, host: &str, repo: &str, reference: &str) -> Image {
    let sep = if reference.starts_with("sha256:") {
        '@'
    } else {
        ':'
    };
    let manifest = inspect_raw(conf_dir, &format!("{host}/{repo}{sep}{reference}")).await;
    let (blobs, layer_sizes) = blobs_of(&manifest);
    Image {
        repo: repo.to_owned(),
        tag: if sep == ':' {
            reference.to_owned()
        } else {
            String::new()
        },
        digest: sha256_digest(&manifest),
        manifest,
        blobs,
        layer_sizes,
    }
}

impl TestImages {
    /// Builds the test images under `work` and pushes them to `registry`; returns what the
    /// upstream then serves.
    pub(crate) async fn build_and_push(registry: &Registry, work: &Path) -> Self {
        let started = Instant::now();
        let layout = work.join("layout");
        run(umoci().args(["init", "--layout"]).arg(&layout)).await;
        let text = |s: &str| s.as_bytes().to_vec();
        build_image(
            &layout,
            "single",
            &[vec![
                ("hello.txt", text("hello from the single-layer image\n")),
                ("etc/version", text("1\n")),
                ("bin/blob", pseudo_random(64 * 1024, 1)),
            ]],
            "amd64",
        )
        .await;
        build_image(
            &layout,
            "multi",
            &[
                vec![("etc/os-release", text("NAME=pinproxy-test\nVERSION=1\n"))],
                vec![("opt/big.bin", pseudo_random(6 << 20, 2))],
                vec![
                    ("opt/small.bin", pseudo_random(200 * 1024, 3)),
                    ("README", text("third layer\n")),
                ],
            ],
            "amd64",
        )
        .await;
        build_image(
            &layout,
            "amd64",
            &[vec![
                ("arch", text("amd64\n")),
                ("payload", pseudo_random(300 * 1024, 4)),
            ]],
            "amd64",
        )
        .await;
        build_image(
            &layout,
            "arm64",
            &[vec![
                ("arch", text("arm64\n")),
                ("payload", pseudo_random(300 * 1024, 5)),
            ]],
            "arm64",
        )
        .await;
        add_index(&layout, "index", &[("amd64", "amd64"), ("arm64", "arm64")]);

        let host = registry.host_port();
        for (tag, repo, all) in [
            ("single", "test/single", false),
            ("multi", "test/multi", false),
            ("index", "test/multiarch", true),
        ] {
            let mut cmd = skopeo(work);
            cmd.args([
                "copy",
                "--dest-tls-verify=false",
                "--preserve-digests",
                "--retry-times",
                "0",
            ]);
            if all {
                cmd.arg("--all");
            }
            cmd.arg(format!("oci:{}:{tag}", layout.display()))
                .arg(format!("docker://{host}/{repo}:v1"));
            run(&mut cmd).await;
        }

        let single = upstream_image(work, &host, "test/single", "v1").await;
        let multi = upstream_image(work, &host, "test/multi", "v1").await;
        let raw = inspect_raw(work, &format!("{host}/test/multiarch:v1")).await;
        let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let mut children = Vec::new();
        for d in index["manifests"].as_array().unwrap() {
            let arch = d["platform"]["architecture"].as_str().unwrap().to_owned();
            let digest = d["digest"].as_str().unwrap();
            children.push((
                arch,
                upstream_image(work, &host, "test/multiarch", digest).await,
            ));
        }
        let images = Self {
            single,
            multi,
            multiarch: IndexImage {
                repo: "test/multiarch".to_owned(),
                tag: "v1".to_owned(),
                digest: sha256_digest(&raw),
                raw,
                children,
            },
        };
        // The upstream serves exactly what was built.
        for (img, tag) in [(&images.single, "single"), (&images.multi, "multi")] {
            assert_eq!(
                img.digest,
                layout_descriptor(&layout, tag)["digest"],
                "{tag}"
            );
        }
        assert_eq!(
            images.multiarch.digest,
            layout_descriptor(&layout, "index")["digest"]
        );
        assert_eq!(images.multi.layer_sizes.len(), 3);
        assert!(images.multi.layer_sizes.iter().any(|&s| s >= 5 << 20));
        eprintln!(
            "built and pushed the test images in {:.2?}: {images:#?}",
            started.elapsed()
        );
        images
    }

    /// Every image manifest, as `(repo, digest)`, index children included.
    pub(crate) fn all_manifests(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (self.single.repo.clone(), self.single.digest.clone()),
            (self.multi.repo.clone(), self.multi.digest.clone()),
            (self.multiarch.repo.clone(), self.multiarch.digest.clone()),
        ];
        for (_, c) in &self.multiarch.children {
            v.push((c.repo.clone(), c.digest.clone()));
        }
        v
    }
}

/// Counts access-log entries per `(method, path, status)`.
pub(crate) fn count_accesses(accesses: &[Access]) -> BTreeMap<(String, String, u16), usize> {
    let mut m = BTreeMap::new();
    for a in accesses {
        *m.entry((a.method.clone(), a.path.clone(), a.status))
            .or_insert(0) += 1;
    }
    m
}
