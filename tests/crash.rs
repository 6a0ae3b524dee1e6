//! Crash safety of the real binary: `kill -9` it 20 times while clients pull cold objects
//! through it. After every restart it starts, every content file hashes to its name, no
//! partial object was ever served as complete, and every pin whose response completed before
//! a kill is still listed.
//!
//! The fake upstream runs in this process and stays up across the kills; the proxy is the
//! `pinproxy` binary, a child process killed with SIGKILL.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use crate::support::fake_oci::{FakeOci, Fault, pseudo_random_bytes, sha256_digest};

const ROUNDS: u64 = 20;
const CLIENTS: u64 = 8;
const BLOBS: u64 = 30;
/// New upstream blobs per round, so that every round has cold pulls.
const FRESH_BLOBS: u64 = 2;
/// Each round kills the server this long after it became healthy (milliseconds).
const KILL_AFTER_MS: (u64, u64) = (50, 400);
const MT_ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
/// Overrides the seed of the deterministic choices (sizes, targets, kill delays).
const SEED_ENV: &str = "PINPROXY_CRASH_SEED";

/// splitmix64: deterministic choices without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// One thing a client can pull, with the bytes it must get.
#[derive(Clone)]
struct Target {
    path: String,
    manifest: bool,
    digest: String,
    bytes: Bytes,
    /// The pin a completed response implies.
    pin: String,
    /// The tag resolution a completed response implies (pulls by tag).
    resolution: Option<String>,
}

fn blob_target(repo: &str, digest: &str, bytes: Bytes) -> Target {
    Target {
        path: format!("/v2/{repo}/blobs/{digest}"),
        manifest: false,
        digest: digest.to_owned(),
        bytes,
        pin: format!("oci:up/{repo}@{digest}"),
        resolution: None,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn fetch(c: &reqwest::Client, url: &str, accept: Option<&str>) -> Bytes {
    let mut req = c.get(url);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.bytes().await.unwrap()
}

/// A new blob of `size` bytes upstream, pullable under two repositories (the second pull of
/// the same bytes pins without a fetch); `slow` ones drip so that kills land mid-fill.
fn add_blob(fake: &FakeOci, out: &mut Vec<Target>, size: u64, seed: u64, slow: bool) {
    let bytes = pseudo_random_bytes(size as usize, seed);
    let digest = fake.add_blob(bytes.clone());
    if slow {
        let drip = Fault::SlowDrip {
            chunk: 64 * 1024,
            interval: Duration::from_millis(10),
        };
        fake.set_fault_for(&digest, drip);
    }
    let bytes = Bytes::from(bytes);
    for repo in ["lib/a", "lib/b"] {
        out.push(blob_target(repo, &digest, bytes.clone()));
    }
}

/// Blobs, half of them slow, plus two images pulled by tag and by digest.
async fn targets(fake: &FakeOci, rng: &mut Rng) -> Vec<Target> {
    let mut out = Vec::new();
    for i in 0..BLOBS {
        let size = rng.range((200_000, 4_000_000));
        add_blob(fake, &mut out, size, 1000 + i, i % 2 == 0);
    }
    let c = http();
    for (repo, tag, seed) in [("lib/app", "v1", 1), ("lib/tool", "stable", 2)] {
        let layers = [
            pseudo_random_bytes(300_000, seed),
            pseudo_random_bytes(900_000, seed + 10),
        ];
        let img = fake.image(repo, Some(tag), &layers);
        for (d, l) in img.layer_digests.iter().zip(layers) {
            out.push(blob_target(repo, d, Bytes::from(l)));
        }
        let url = format!("{}/v2/{repo}/blobs/{}", fake.url(), img.config_digest);
        let config = fetch(&c, &url, None).await;
        assert_eq!(sha256_digest(&config), img.config_digest);
        out.push(blob_target(repo, &img.config_digest, config));
        let url = format!("{}/v2/{repo}/manifests/{}", fake.url(), img.manifest_digest);
        let manifest = fetch(&c, &url, Some(MT_ACCEPT)).await;
        assert_eq!(sha256_digest(&manifest), img.manifest_digest);
        let pin = format!("oci:up/{repo}@{}", img.manifest_digest);
        out.push(Target {
            path: format!("/v2/{repo}/manifests/{}", img.manifest_digest),
            manifest: true,
            digest: img.manifest_digest.clone(),
            bytes: manifest.clone(),
            pin: pin.clone(),
            resolution: None,
        });
        out.push(Target {
            path: format!("/v2/{repo}/manifests/{tag}"),
            manifest: true,
            digest: img.manifest_digest.clone(),
            bytes: manifest,
            pin,
            resolution: Some(format!("oci:up/{repo}:{tag}")),
        });
    }
    out
}

/// The `pinproxy serve` child process; killed (SIGKILL) and reaped when dropped, so a failing
/// test leaves no server behind.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn pinproxy() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pinproxy"));
    for var in [
        "PINPROXY_CONFIG",
        "PINPROXY_DATA_DIR",
        "PINPROXY_CLIENT_TOKENS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PINPROXY_LOG", "warn").stdin(Stdio::null());
    cmd
}

impl Server {
    /// Starts the binary on `data` and waits (at most 10 s) until `/healthz` answers 200.
    async fn start(data: &Path, upstream: &str, log: &Path) -> Self {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        // The free port may be taken between probing and binding: then try another one.
        for attempt in 0..3 {
            let port = free_port();
            let stderr = std::fs::File::create(log).unwrap();
            let child = pinproxy()
                .arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(data)
                .arg("--oci-upstream")
                .arg(format!("up={upstream}"))
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap();
            let mut server = Self {
                child,
                base: format!("http://127.0.0.1:{port}"),
                log: log.to_owned(),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = server.child.try_wait().unwrap() {
                    let text = read_log(log);
                    if text.contains("Address already in use") && attempt < 2 {
                        break;
                    }
                    panic!("pinproxy serve exited at start ({status}); stderr:\n{text}");
                }
                let healthz = c.get(format!("{}/healthz", server.base)).send().await;
                if healthz.is_ok_and(|r| r.status() == 200) {
                    return server;
                }
                assert!(
                    Instant::now() < deadline,
                    "pinproxy serve not healthy after 10 s; stderr:\n{}",
                    read_log(log)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        unreachable!("three attempts to start pinproxy serve")
    }

    /// SIGKILL, then reap the process (which releases its locks).
    fn kill(mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "pinproxy serve exited before the kill ({status}); stderr:\n{}",
                read_log(&self.log)
            );
        }
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    async fn get_json(&self, path: &str) -> Vec<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        let resp = http().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {url}");
        resp.json().await.unwrap()
    }
}

enum Outcome {
    /// The whole object arrived, byte for byte.
    Complete(usize),
    /// The kill cut the response after this many (correct) bytes.
    Interrupted(usize),
    /// Something no crash excuses.
    Problem(String),
}

/// Pulls random targets until the kill, half of the time one of `targets[fresh..]` (never
/// pulled before this round: cold). Every byte received must be the object's own byte at
/// its offset, and a body that ends without error must be the whole object: with the bytes
/// known, equality is the sha256 check against the requested digest.
async fn client(
    c: reqwest::Client,
    base: String,
    targets: Arc<Vec<Target>>,
    fresh: usize,
    mut rng: Rng,
    killed: Arc<AtomicBool>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    // Bounded by the kill (a few hundred ms) and the per-request timeout; the count is a
    // backstop only.
    for _ in 0..10_000 {
        if killed.load(Ordering::SeqCst) {
            break;
        }
        let i = if fresh < targets.len() && rng.below(2) == 0 {
            fresh + rng.below(targets.len() - fresh)
        } else {
            rng.below(targets.len())
        };
        let t = &targets[i];
        let mut req = c.get(format!("{base}{}", t.path));
        if t.manifest {
            req = req.header("accept", MT_ACCEPT);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                if !killed.load(Ordering::SeqCst) {
                    out.push(Outcome::Problem(format!(
                        "{} failed before the kill: {e:?}",
                        t.path
                    )));
                }
                break;
            }
        };
        if resp.status() != 200 {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            out.push(Outcome::Problem(format!("{}: {status} {body}", t.path)));
            break;
        }
        let header = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if header != t.digest {
            out.push(Outcome::Problem(format!(
                "{}: Docker-Content-Digest {header:?}",
                t.path
            )));
        }
        let mut got = Vec::with_capacity(t.bytes.len());
        let mut stream = resp.bytes_stream();
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => got.extend_from_slice(&b),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if !t.bytes.starts_with(&got) {
            out.push(Outcome::Problem(format!(
                "{}: served {} bytes that are not a prefix of the object",
                t.path,
                got.len()
            )));
            break;
        }
        match failed {
            None if got.len() == t.bytes.len() => out.push(Outcome::Complete(i)),
            None => {
                out.push(Outcome::Problem(format!(
                    "{}: body ended cleanly after {} of {} bytes: a partial object served as complete",
                    t.path,
                    got.len(),
                    t.bytes.len()
                )));
                break;
            }
            Some(e) => {
                if !killed.load(Ordering::SeqCst) {
                    out.push(Outcome::Problem(format!(
                        "{}: body failed before the kill: {e:?}",
                        t.path
                    )));
                } else {
                    out.push(Outcome::Interrupted(got.len()));
                }
                break;
            }
        }
    }
    out
}

/// What has been observed so far, and what has been checked.
#[derive(Default)]
struct Seen {
    /// Pin coordinate → sha256 hex, for every response that completed.
    pins: BTreeMap<String, String>,
    /// Tag coordinate → manifest digest, for every pull by tag that completed.
    resolutions: BTreeMap<String, String>,
    completed_targets: BTreeSet<usize>,
    /// Content files already re-hashed: path → (inode, size, mtime ns).
    hashed: HashMap<PathBuf, (u64, u64, i128)>,
}

impl Seen {
    fn complete(&mut self, t: &Target, i: usize) {
        let hex = t.digest.trim_start_matches("sha256:").to_owned();
        self.pins.insert(t.pin.clone(), hex);
        if let Some(r) = &t.resolution {
            self.resolutions.insert(r.clone(), t.digest.clone());
        }
        self.completed_targets.insert(i);
    }
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Every file under `content/sha256/xx/` is named by the sha256 of its bytes, and lives under
/// the fan-out directory of its name. Files unchanged since they were last hashed are skipped.
/// Returns the number of content files.
fn check_content(data: &Path, seen: &mut Seen) -> usize {
    let root = data.join("content").join("sha256");
    let mut files = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap();
        let fan = dir.file_name().into_string().unwrap();
        assert!(
            dir.file_type().unwrap().is_dir(),
            "stray file {fan} in {}",
            root.display()
        );
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().into_string().unwrap();
            let path = f.path();
            assert!(
                name.len() == 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                    && name.starts_with(&fan),
                "stray file in the content store: {}",
                path.display()
            );
            let meta = f.metadata().unwrap();
            assert!(meta.is_file(), "{} is not a file", path.display());
            files += 1;
            let stamp = (
                meta.ino(),
                meta.len(),
                i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            );
            if seen.hashed.get(&path) == Some(&stamp) {
                continue;
            }
            assert_eq!(
                sha256_file(&path),
                name,
                "content file {} ({} bytes) does not hash to its name",
                path.display(),
                meta.len()
            );
            seen.hashed.insert(path, stamp);
        }
    }
    files
}

fn journal_verify(data: &Path) {
    let out = pinproxy()
        .args(["journal", "verify", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pinproxy journal verify: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The checks after every (re)start, before any client runs.
async fn check_restarted(
    server: &Server,
    data: &Path,
    fake: &FakeOci,
    targets: &[Target],
    seen: &mut Seen,
    rng: &mut Rng,
) -> usize {
    let leftovers: Vec<_> = std::fs::read_dir(data.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "tmp/ not emptied at start: {leftovers:?}"
    );
    let files = check_content(data, seen);

    let pins: BTreeMap<String, serde_json::Value> = server
        .get_json("/api/v1/pins")
        .await
        .into_iter()
        .map(|p| (p["coordinate"].as_str().unwrap().to_owned(), p))
        .collect();
    for (coord, hex) in &seen.pins {
        let Some(p) = pins.get(coord) else {
            panic!(
                "{coord} completed before a kill but is no longer pinned ({} pins listed); stderr:\n{}",
                pins.len(),
                read_log(&server.log)
            );
        };
        assert_eq!(p["sha256"].as_str(), Some(hex.as_str()), "{coord}");
    }
    // A pin is only journaled after its content is published: every listed pin has its file.
    for (coord, p) in &pins {
        let hex = p["sha256"].as_str().unwrap();
        let path = data.join("content/sha256").join(&hex[..2]).join(hex);
        let len = std::fs::metadata(&path).map(|m| m.len()).ok();
        assert_eq!(len, p["size"].as_u64(), "content of pin {coord}");
    }
    let resolutions: BTreeMap<String, String> = server
        .get_json("/api/v1/resolutions")
        .await
        .into_iter()
        .map(|r| {
            let coord = r["coordinate"].as_str().unwrap().to_owned();
            (coord, r["target"].as_str().unwrap().to_owned())
        })
        .collect();
    for (coord, digest) in &seen.resolutions {
        assert_eq!(
            resolutions.get(coord),
            Some(digest),
            "resolution of {coord}"
        );
    }
    journal_verify(data);

    // Objects completed earlier come from the store again, byte for byte, without upstream.
    let done: Vec<usize> = seen.completed_targets.iter().copied().collect();
    let before = fake.total_requests();
    let c = http();
    for _ in 0..done.len().min(3) {
        let t = &targets[done[rng.below(done.len())]];
        let url = format!("{}{}", server.base, t.path);
        let body = fetch(&c, &url, t.manifest.then_some(MT_ACCEPT)).await;
        assert!(
            body == t.bytes,
            "{}: served different bytes after a restart",
            t.path
        );
    }
    assert_eq!(
        fake.total_requests(),
        before,
        "objects pinned before the kill went upstream again"
    );
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_concurrent_cold_pulls_loses_nothing() {
    let t0 = Instant::now();
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xC4A5_u64);
    eprintln!("crash: seed {seed} (set {SEED_ENV} to repeat)");
    let mut rng = Rng(seed);
    let fake = FakeOci::start().await;
    let mut targets = targets(&fake, &mut rng).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut seen = Seen::default();
    let (mut completed, mut interrupted, mut mid_body) = (0, 0, 0);
    eprintln!(
        "crash: {} targets ready in {:?}",
        targets.len(),
        t0.elapsed()
    );

    for round in 0..ROUNDS {
        let r0 = Instant::now();
        // Cold objects every round: two new blobs upstream, one of them slow.
        let fresh = targets.len();
        for k in 0..FRESH_BLOBS {
            let size = rng.range((200_000, 2_000_000));
            add_blob(&fake, &mut targets, size, 5000 + round * 10 + k, k % 2 == 0);
        }
        let shared = Arc::new(targets.clone());
        let log = tmp.path().join(format!("serve-{round}.log"));
        let server = Server::start(&data, &fake.url(), &log).await;
        let started = r0.elapsed();
        let files = check_restarted(&server, &data, &fake, &targets, &mut seen, &mut rng).await;
        let checked = r0.elapsed();

        let killed = Arc::new(AtomicBool::new(false));
        let c = http();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let rng = Rng(seed ^ (round * 1000 + k + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
                let run = client(
                    c.clone(),
                    server.base.clone(),
                    shared.clone(),
                    fresh,
                    rng,
                    killed.clone(),
                );
                tokio::spawn(run)
            })
            .collect();
        let delay = rng.range(KILL_AFTER_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        killed.store(true, Ordering::SeqCst);
        server.kill();

        let mut problems = Vec::new();
        let (mut round_done, mut round_cut) = (0, 0);
        for task in clients {
            let outcomes = tokio::time::timeout(Duration::from_secs(40), task)
                .await
                .expect("a client hung after the kill")
                .expect("client task panicked");
            for o in outcomes {
                match o {
                    Outcome::Complete(i) => {
                        round_done += 1;
                        seen.complete(&targets[i], i);
                    }
                    Outcome::Interrupted(got) => {
                        round_cut += 1;
                        if got > 0 {
                            mid_body += 1;
                        }
                    }
                    Outcome::Problem(p) => problems.push(p),
                }
            }
        }
        assert!(
            problems.is_empty(),
            "round {round}: {problems:#?}\nstderr:\n{}",
            read_log(&log)
        );
        completed += round_done;
        interrupted += round_cut;
        eprintln!(
            "crash: round {round:2}: up in {started:?}, checked {files} files by {checked:?}, \
             killed after {delay} ms: {round_done} complete, {round_cut} cut; {} pins seen",
            seen.pins.len()
        );
        let warnings = read_log(&log);
        if !warnings.trim().is_empty() {
            eprintln!("crash: round {round:2} stderr:\n{warnings}");
        }
    }

    // After the last kill: start once more, check, then pull everything to the end.
    let log = tmp.path().join("serve-final.log");
    let server = Server::start(&data, &fake.url(), &log).await;
    check_restarted(&server, &data, &fake, &targets, &mut seen, &mut rng).await;
    let targets = Arc::new(targets);
    let c = http();
    let order: Vec<usize> = (0..targets.len()).collect();
    for batch in order.chunks(CLIENTS as usize) {
        let pulls: Vec<_> = batch
            .iter()
            .map(|&i| {
                let (c, targets) = (c.clone(), targets.clone());
                let url = format!("{}{}", server.base, targets[i].path);
                tokio::spawn(async move {
                    let t = &targets[i];
                    let body = fetch(&c, &url, t.manifest.then_some(MT_ACCEPT)).await;
                    assert!(body == t.bytes, "{}: wrong bytes", t.path);
                    i
                })
            })
            .collect();
        for p in pulls {
            let i = p.await.unwrap();
            seen.complete(&targets[i], i);
        }
    }
    check_restarted(&server, &data, &fake, &targets, &mut seen, &mut rng).await;
    assert_eq!(seen.completed_targets.len(), targets.len());
    server.kill();
    journal_verify(&data);
    let warnings = read_log(&log);
    assert!(
        !warnings.contains("ERROR"),
        "errors in the last run:\n{warnings}"
    );

    eprintln!(
        "crash: {ROUNDS} kills, {completed} complete responses, {interrupted} cut by a kill \
         ({mid_body} mid-body), {} pins, {:?} in all",
        seen.pins.len(),
        t0.elapsed()
    );
    assert!(
        mid_body > 0,
        "no kill landed while a body was streaming: the test exercised nothing"
    );
}
