//! The real binary's life cycle: start-up checks and SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::support::fake_oci::{FakeOci, Fault, pseudo_random_bytes};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_healthy(url: &str) {
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        if reqwest::get(format!("{url}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pinproxy did not become healthy at {url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_lets_the_fill_finish_and_syncs_the_journal() {
    let fake = FakeOci::start().await;
    let blob = pseudo_random_bytes(2 << 20, 30);
    let digest = fake.add_blob(blob);
    // About 2 s of upstream transfer.
    fake.set_fault(Fault::SlowDrip {
        chunk: 128 * 1024,
        interval: Duration::from_millis(120),
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["--oci-upstream", &format!("up={}", fake.url())])
        .env("PINPROXY_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    wait_healthy(&url).await;
    let r = reqwest::get(format!("{url}/v2/lib/app/blobs/{digest}"))
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let mut got = body.next().await.unwrap().unwrap().len();
    // SIGTERM while the fill streams.
    let pid = i32::try_from(child.0.id()).unwrap();
    assert_eq!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .code(),
        Some(0)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no new connections after SIGTERM"
    );
    while let Some(c) = body.next().await {
        got += c.expect("the running download completes").len();
    }
    assert_eq!(got, 2 << 20);
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < until,
            "pinproxy did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let report = pinproxy::store::verify_journal(&dir.path().join("journal")).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let store = pinproxy::store::Store::open(dir.path()).unwrap();
    assert!(
        store
            .pin(&format!("oci:up/lib/app@{digest}"))
            .unwrap()
            .is_some(),
        "the fill finished and was pinned"
    );
}

#[test]
fn bad_config_is_refused_with_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[oci.upstreams]]\nname = \"x\"\nurl = \"http://127.0.0.1:1\"\ntag_policy = \"often\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml")
            && err.contains("oci.upstreams[0].tag_policy")
            && err.contains("often"),
        "{err}"
    );
    // A store of a newer format is refused with a clear message.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("FORMAT"), "99\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("99") && err.contains("format"), "{err}");
}
