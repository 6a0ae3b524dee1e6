//! OCI pull-through against the in-process fake registry: behaviour asserted through the
//! fake's hit counters, the bytes clients receive, and the pins the store holds.

use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use crate::support::fake_oci::{FakeOci, Fault, pseudo_random_bytes, sha256_digest};
use crate::support::proxy::Proxy;

const MT_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

fn client() -> reqwest::Client {
    // Raw responses: no transparent decompression (the tests look at Content-Encoding).
    reqwest::Client::builder()
        .no_gzip()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

async fn proxy_for(fake: &FakeOci) -> Proxy {
    Proxy::start(&[("up", &fake.url())]).await
}

/// A proxy with one upstream `up` and extra per-upstream settings.
async fn proxy_with(fake: &FakeOci, upstream_extra: &str) -> Proxy {
    let extra = format!(
        "[oci]\ndefault_upstream = \"up\"\n[[oci.upstreams]]\nname = \"up\"\nurl = \"{}\"\n{upstream_extra}\n",
        fake.url()
    );
    Proxy::start_with(&[], &extra).await
}

fn pins_for(p: &Proxy, needle: &str) -> usize {
    p.app()
        .store
        .pins()
        .unwrap()
        .iter()
        .filter(|e| e.pin.coordinate.contains(needle))
        .count()
}

/// A GET written by hand on a fresh connection, so nothing normalises the path.
async fn raw_get(host_port: &str, path: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(host_port).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| buf[i + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

/// Reads a body to the end; Err if the connection broke before the body completed.
async fn read_all(resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_cold_pulls_cost_one_upstream_fetch() {
    let fake = FakeOci::start().await;
    let blob = pseudo_random_bytes(3 << 20, 1);
    let digest = fake.add_blob(blob.clone());
    // Slow the upstream a little so the requests really overlap.
    fake.set_fault(Fault::SlowDrip {
        chunk: 256 * 1024,
        interval: Duration::from_millis(20),
    });
    let p = proxy_for(&fake).await;
    let url = format!("{}/v2/lib/app/blobs/{digest}", p.url());
    let c = client();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                read_all(r).await.unwrap()
            })
        })
        .collect();
    for t in tasks {
        let body = t.await.unwrap();
        assert_eq!(sha(&body), digest);
    }
    assert_eq!(
        fake.blob_gets(&digest),
        1,
        "one upstream fetch for 50 clients"
    );
    assert_eq!(pins_for(&p, &digest), 1);
    assert!(
        p.app()
            .store
            .verify_content(&digest[7..].parse().unwrap())
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_still_serves_cached_tags_and_blobs() {
    let fake = FakeOci::start().await;
    let img = fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(100_000, 2)]);
    let p = proxy_with(&fake, "tag_ttl = \"0s\"").await;
    let c = client();
    let m = c
        .get(format!("{}/v2/lib/app/manifests/v1", p.url()))
        .header("accept", MT_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    let layer = &img.layer_digests[0];
    let b = c
        .get(format!("{}/v2/lib/app/blobs/{layer}", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(sha(&b.bytes().await.unwrap()), *layer);

    fake.stop();
    // TTL 0: the tag is revalidated on every request; with the upstream gone, the last
    // resolution is served, marked stale.
    let m = c
        .get(format!("{}/v2/lib/app/manifests/v1", p.url()))
        .header("accept", MT_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    assert_eq!(
        m.headers()["docker-content-digest"],
        img.manifest_digest.as_str()
    );
    assert_eq!(m.headers()["x-pinproxy-stale"], "1");
    assert!(m.headers()["warning"].to_str().unwrap().starts_with("299"));
    assert_eq!(sha(&m.bytes().await.unwrap()), img.manifest_digest);
    let b = c
        .get(format!("{}/v2/lib/app/blobs/{layer}", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(b.status(), 200);
    assert_eq!(sha(&b.bytes().await.unwrap()), *layer);
    let by_digest = c
        .get(format!(
            "{}/v2/lib/app/manifests/{}",
            p.url(),
            img.manifest_digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(by_digest.status(), 200);
    assert!(p.app().metrics.counter("pinproxy_stale_served_total", "up") >= 1);

    // An uncached object with the upstream down is an upstream failure, never a 404.
    let missing = c
        .get(format!("{}/v2/lib/app/blobs/{}", p.url(), sha(b"nope")))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_pins_nothing_and_no_client_gets_a_complete_body() {
    let fake = FakeOci::start().await;
    let blob = pseudo_random_bytes(2 << 20, 3);
    let digest = fake.add_blob(blob.clone());
    fake.set_fault(Fault::WrongDigest);
    let p = proxy_for(&fake).await;
    let c = client();
    let url = format!("{}/v2/lib/app/blobs/{digest}", p.url());
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => read_all(r).await.map(|b| b.len()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            })
        })
        .collect();
    for t in tasks {
        if let Ok(len) = t.await.unwrap() {
            panic!("a client received a complete body of {len} bytes");
        }
    }
    assert_eq!(pins_for(&p, &digest), 0);
    assert!(!p.app().store.has_content(&digest[7..].parse().unwrap()));
    assert_eq!(
        p.app()
            .metrics
            .counter("pinproxy_digest_mismatch_total", ""),
        1
    );
    // Nothing was cached: the next request fetches again, and succeeds once upstream is fixed.
    fake.clear_faults();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(sha(&r.bytes().await.unwrap()), digest);
    assert_eq!(fake.blob_gets(&digest), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_reset_and_5xx_upstreams_pin_nothing_and_are_not_404() {
    let fake = FakeOci::start().await;
    let blob = pseudo_random_bytes(1 << 20, 4);
    let digest = fake.add_blob(blob.clone());
    let p = proxy_for(&fake).await;
    let c = client();
    let url = format!("{}/v2/lib/app/blobs/{digest}", p.url());
    for (fault, expect_status) in [
        (Fault::Truncate(100_000), None),
        (Fault::Reset, Some(502)),
        (Fault::Status(500), Some(502)),
        (Fault::Status(503), Some(502)),
    ] {
        fake.set_fault(fault.clone());
        match c.get(&url).send().await {
            Ok(r) if r.status() == 200 => {
                assert!(expect_status.is_none(), "{fault:?}: 200");
                assert!(
                    read_all(r).await.is_err(),
                    "{fault:?}: body must not complete"
                );
            }
            Ok(r) => {
                assert_eq!(Some(r.status().as_u16()), expect_status, "{fault:?}");
                let body: serde_json::Value = r.json().await.unwrap();
                assert!(
                    body["errors"][0]["code"].is_string(),
                    "{fault:?}: OCI error body"
                );
            }
            Err(e) => panic!("{fault:?}: {e}"),
        }
        assert_eq!(pins_for(&p, &digest), 0, "{fault:?}");
    }
    fake.set_fault(Fault::Status(429));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    fake.clear_faults();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(sha(&r.bytes().await.unwrap()), digest);
    assert_eq!(pins_for(&p, &digest), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_stream_does_not_abort_the_fill() {
    let fake = FakeOci::start().await;
    let blob = pseudo_random_bytes(4 << 20, 5);
    let digest = fake.add_blob(blob.clone());
    fake.set_fault(Fault::PauseAfter { bytes: 1 << 20 });
    let p = proxy_for(&fake).await;
    let url = format!("{}/v2/lib/app/blobs/{digest}", p.url());
    {
        let r = client().get(&url).send().await.unwrap();
        let mut s = r.bytes_stream();
        let mut got = 0;
        while got < 512 * 1024 {
            got += s.next().await.unwrap().unwrap().len();
        }
        // Dropping the stream and the client closes the connection.
    }
    fake.wait_paused().await;
    fake.release_pause();
    for _ in 0..200 {
        if pins_for(&p, &digest) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        pins_for(&p, &digest),
        1,
        "the fill completed and pinned after the client left"
    );
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(sha(&r.bytes().await.unwrap()), digest);
    assert_eq!(fake.blob_gets(&digest), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_not_store_and_forward() {
    let fake = FakeOci::start().await;
    let blob = pseudo_random_bytes(64 << 20, 6);
    let digest = fake.add_blob(blob.clone());
    fake.set_fault(Fault::PauseAfter { bytes: 8 << 20 });
    let p = proxy_for(&fake).await;
    let url = format!("{}/v2/lib/app/blobs/{digest}", p.url());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<usize>(64);
    let mut readers = Vec::new();
    for _ in 0..8 {
        let (url, tx) = (url.clone(), tx.clone());
        readers.push(tokio::spawn(async move {
            let r = client().get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.content_length(), Some(64 << 20));
            let mut s = r.bytes_stream();
            let mut body = Vec::new();
            let mut announced = false;
            while let Some(c) = s.next().await {
                body.extend_from_slice(&c.unwrap());
                if !announced && body.len() >= 7 << 20 {
                    announced = true;
                    tx.send(body.len()).await.unwrap();
                }
            }
            body
        }));
    }
    // While the upstream is paused after 8 MB, every client has at least 7 MB.
    fake.wait_paused().await;
    for _ in 0..8 {
        let got = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("7 MB while paused")
            .unwrap();
        assert!(got >= 7 << 20);
    }
    assert_eq!(fake.paused_waiters(), 1, "upstream still paused");
    // A range inside the received prefix completes while the upstream is paused.
    let r = client()
        .get(&url)
        .header("range", "bytes=1000000-1999999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 1000000-1999999/{}", 64 << 20).as_str()
    );
    let part = tokio::time::timeout(Duration::from_secs(10), r.bytes())
        .await
        .expect("range completes while paused")
        .unwrap();
    assert_eq!(&part[..], &blob[1_000_000..2_000_000]);
    fake.release_pause();
    for r in readers {
        assert_eq!(sha(&r.await.unwrap()), digest);
    }
    assert_eq!(fake.blob_gets(&digest), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_delay_the_others() {
    let fake = FakeOci::start().await;
    let blob = pseudo_random_bytes(4 << 20, 7);
    let digest = fake.add_blob(blob.clone());
    let p = proxy_for(&fake).await;
    let url = format!("{}/v2/lib/app/blobs/{digest}", p.url());
    // The slow client starts first and reads at ~10 KB/s.
    let slow_url = url.clone();
    let slow = tokio::spawn(async move {
        let r = client().get(&slow_url).send().await.unwrap();
        let mut s = r.bytes_stream();
        let mut got = 0usize;
        let started = std::time::Instant::now();
        while let Some(c) = s.next().await {
            got += c.unwrap().len();
            let due = Duration::from_millis((got as u64) / 10);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            if started.elapsed() > Duration::from_secs(4) {
                break;
            }
        }
        got
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fast: Vec<_> = (0..7)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let r = client().get(&url).send().await.unwrap();
                tokio::time::timeout(Duration::from_secs(3), r.bytes())
                    .await
                    .expect("fast client finished while the slow one crawls")
                    .unwrap()
            })
        })
        .collect();
    for f in fast {
        assert_eq!(sha(&f.await.unwrap()), digest);
    }
    let slow_got = slow.await.unwrap();
    assert!(
        slow_got < blob.len(),
        "the slow client was really slow ({slow_got} bytes)"
    );
    assert_eq!(fake.blob_gets(&digest), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_aborts_the_fill_and_the_next_request_fetches_again() {
    let fake = FakeOci::start().await;
    let blob = pseudo_random_bytes(1 << 20, 8);
    let digest = fake.add_blob(blob.clone());
    fake.set_fault_for_n(&digest, Fault::Stall { after: 300_000 }, 1);
    // The test proxy's idle timeout is 3 s.
    let p = proxy_for(&fake).await;
    let url = format!("{}/v2/lib/app/blobs/{digest}", p.url());
    let r = client().get(&url).send().await.unwrap();
    let started = std::time::Instant::now();
    assert!(
        read_all(r).await.is_err(),
        "a stalled fill must not complete"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(pins_for(&p, &digest), 0);
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(sha(&r.bytes().await.unwrap()), digest);
    assert_eq!(fake.blob_gets(&digest), 2);
    assert_eq!(pins_for(&p, &digest), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_get_agree_on_every_header() {
    let fake = FakeOci::start().await;
    let img = fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(50_000, 9)]);
    let p = proxy_for(&fake).await;
    let c = client();
    for path in [
        "/v2/lib/app/manifests/v1".to_owned(),
        format!("/v2/lib/app/manifests/{}", img.manifest_digest),
        format!("/v2/lib/app/blobs/{}", img.layer_digests[0]),
        format!("/v2/lib/app/blobs/{}", img.config_digest),
        "/v2/".to_owned(),
        "/v2/lib/app/manifests/missing".to_owned(),
    ] {
        // HEAD first (cold), then GET, then HEAD again (warm).
        let h1 = c
            .head(format!("{}{path}", p.url()))
            .header("accept", MT_ACCEPT)
            .send()
            .await
            .unwrap();
        let g = c
            .get(format!("{}{path}", p.url()))
            .header("accept", MT_ACCEPT)
            .send()
            .await
            .unwrap();
        let h2 = c
            .head(format!("{}{path}", p.url()))
            .header("accept", MT_ACCEPT)
            .send()
            .await
            .unwrap();
        let strip = |r: &reqwest::Response| {
            let mut h = r.headers().clone();
            h.remove("date");
            (r.status(), h)
        };
        let (sg, hg) = strip(&g);
        assert_eq!(strip(&h1), (sg, hg.clone()), "{path}: cold HEAD vs GET");
        assert_eq!(strip(&h2), (sg, hg.clone()), "{path}: warm HEAD vs GET");
        let len: usize = hg["content-length"].to_str().unwrap().parse().unwrap();
        assert_eq!(g.bytes().await.unwrap().len(), len, "{path}");
    }
    // Manifests: exact bytes, type and digest.
    let g = c
        .get(format!("{}/v2/lib/app/manifests/v1", p.url()))
        .header("accept", MT_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        g.headers()["content-type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        g.headers()["docker-content-digest"],
        img.manifest_digest.as_str()
    );
    assert_eq!(
        g.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    assert_eq!(sha(&g.bytes().await.unwrap()), img.manifest_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_on_stored_and_filling_blobs() {
    let fake = FakeOci::start().await;
    let blob = pseudo_random_bytes(1 << 20, 10);
    let digest = fake.add_blob(blob.clone());
    let p = proxy_for(&fake).await;
    let c = client();
    let url = format!("{}/v2/lib/app/blobs/{digest}", p.url());
    // Cold: the first request is a range (containerd fires ranges at once).
    let r = c
        .get(&url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 100-199/1048576");
    assert_eq!(&r.bytes().await.unwrap()[..], &blob[100..200]);
    for (range, status, slice) in [
        ("bytes=0-", 206, 0..blob.len()),
        ("bytes=1048000-", 206, 1_048_000..blob.len()),
        ("bytes=-10", 206, blob.len() - 10..blob.len()),
        ("bytes=5-5", 206, 5..6),
        ("bytes=0-1,5-9", 200, 0..blob.len()),
    ] {
        let r = c.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), status, "{range}");
        assert_eq!(&r.bytes().await.unwrap()[..], &blob[slice], "{range}");
    }
    let r = c
        .get(&url)
        .header("range", "bytes=2000000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */1048576");
    assert_eq!(fake.blob_gets(&digest), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_redirects_and_full_accept_upstream() {
    let fake = FakeOci::start().await;
    let img = fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(200_000, 11)]);
    fake.enable_token_auth(None);
    fake.enable_blob_redirect().await;
    let p = proxy_for(&fake).await;
    let c = client();
    let m = c
        .get(format!("{}/v2/lib/app/manifests/v1", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    for d in img.layer_digests.iter().chain([&img.config_digest]) {
        let b = c
            .get(format!("{}/v2/lib/app/blobs/{d}", p.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(b.status(), 200, "{d}");
        assert_eq!(sha(&b.bytes().await.unwrap()), *d);
    }
    assert!(
        !fake.redirect_target_saw_authorization(),
        "credentials never follow a redirect to another host"
    );
    assert_eq!(fake.token_requests(), 1, "the token is cached per scope");
    // Tag requests carry the full modern Accept list, whatever the client sent.
    let accept = fake.last_accept("/v2/lib/app/manifests/v1").join(",");
    for t in [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ] {
        assert!(accept.contains(t), "{t} missing from {accept}");
    }
    // Identity encoding upstream, so the hash sees stored bytes.
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.path.contains("/blobs/"))
            .all(|r| r.header("accept-encoding") == Some("identity"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_forms_share_one_cache_entry_and_unknown_ns_never_dials() {
    let fake = FakeOci::start().await;
    let img = fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(10_000, 12)]);
    let p = proxy_for(&fake).await;
    let c = client();
    let layer = &img.layer_digests[0];
    for path in [
        format!("/v2/lib/app/blobs/{layer}"),
        format!("/v2/up/lib/app/blobs/{layer}"),
        format!("/v2/lib/app/blobs/{layer}?ns=up"),
        format!("/up/v2/lib/app/blobs/{layer}"),
    ] {
        let r = c.get(format!("{}{path}", p.url())).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        if path.contains("ns=") {
            assert_eq!(r.headers()["oci-namespace"], "up");
        }
        assert_eq!(sha(&r.bytes().await.unwrap()), *layer);
    }
    assert_eq!(fake.blob_gets(layer), 1);
    assert_eq!(pins_for(&p, layer), 1);
    let before = fake.total_requests();
    let r = c
        .get(format!(
            "{}/v2/lib/app/manifests/v1?ns=elsewhere.example",
            p.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN");
    assert_eq!(fake.total_requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_hub_library_prefix_in_path_and_cache_key() {
    let fake = FakeOci::start().await;
    let img = fake.image(
        "library/alpine",
        Some("3.20"),
        &[pseudo_random_bytes(1000, 13)],
    );
    // An upstream named docker.io gets Docker Hub's `library/` normalisation.
    let p = Proxy::start(&[("docker.io", &fake.url())]).await;
    let c = client();
    for path in [
        "/v2/alpine/manifests/3.20",
        "/v2/library/alpine/manifests/3.20",
        "/v2/docker.io/alpine/manifests/3.20",
    ] {
        let r = c
            .get(format!("{}{path}", p.url()))
            .header("accept", MT_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            r.headers()["docker-content-digest"],
            img.manifest_digest.as_str()
        );
    }
    assert_eq!(fake.manifest_gets("library/alpine", "3.20"), 1);
    assert!(
        p.app()
            .store
            .resolution("oci:docker.io/library/alpine:3.20")
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_revalidate_with_head_and_follow_moves() {
    let fake = FakeOci::start().await;
    let a = fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(1000, 14)]);
    let b = fake.image("lib/app", None, &[pseudo_random_bytes(1000, 15)]);
    let p = proxy_with(&fake, "tag_ttl = \"1s\"").await;
    let c = client();
    let get = || {
        c.get(format!("{}/v2/lib/app/manifests/v1", p.url()))
            .header("accept", MT_ACCEPT)
            .send()
    };
    assert_eq!(
        get().await.unwrap().headers()["docker-content-digest"],
        a.manifest_digest.as_str()
    );
    assert_eq!(
        get().await.unwrap().headers()["docker-content-digest"],
        a.manifest_digest.as_str()
    );
    assert_eq!(
        fake.manifest_gets("lib/app", "v1"),
        1,
        "fresh within the TTL"
    );
    fake.set_tag("lib/app", "v1", &b.manifest_digest);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        get().await.unwrap().headers()["docker-content-digest"],
        b.manifest_digest.as_str()
    );
    assert_eq!(
        fake.manifest_heads("lib/app", "v1"),
        1,
        "revalidated with a HEAD"
    );
    let history = p
        .app()
        .store
        .resolution_history("oci:up/lib/app:v1")
        .unwrap();
    let targets: Vec<_> = history
        .iter()
        .map(|h| h.resolution.target.as_str())
        .collect();
    assert_eq!(
        targets,
        [a.manifest_digest.as_str(), b.manifest_digest.as_str()]
    );
    // The old digest stays pinned and servable.
    let old = c
        .get(format!(
            "{}/v2/lib/app/manifests/{}",
            p.url(),
            a.manifest_digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(sha(&old.bytes().await.unwrap()), a.manifest_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_tags_are_never_revalidated() {
    let fake = FakeOci::start().await;
    let a = fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(1000, 16)]);
    let p = proxy_with(&fake, "tag_policy = \"pin\"").await;
    let c = client();
    for _ in 0..3 {
        let r = c
            .head(format!("{}/v2/lib/app/manifests/v1", p.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()["docker-content-digest"],
            a.manifest_digest.as_str()
        );
    }
    assert_eq!(
        fake.manifest_gets("lib/app", "v1") + fake.manifest_heads("lib/app", "v1"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_tag_with_a_cached_resolution_is_served_stale() {
    let fake = FakeOci::start().await;
    let a = fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(1000, 17)]);
    fake.set_ratelimit_headers(true);
    let p = proxy_with(&fake, "tag_ttl = \"0s\"").await;
    let c = client();
    let url = format!("{}/v2/lib/app/manifests/v1", p.url());
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert!(
        p.app()
            .metrics
            .render()
            .contains("pinproxy_upstream_ratelimit_remaining{upstream=\"up\"} 99")
    );
    fake.set_manifest_fault(Fault::Status(429));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-pinproxy-stale"], "1");
    assert_eq!(
        r.headers()["docker-content-digest"],
        a.manifest_digest.as_str()
    );
    // Nothing cached for another tag: the 429 is passed on, with OCI's code.
    fake.add_manifest(
        "lib/app",
        Some("v2"),
        "application/vnd.oci.image.manifest.v1+json",
        b"{}".to_vec(),
    );
    let r = c
        .get(format!("{}/v2/lib/app/manifests/v2", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_is_cached_by_its_digest_and_never_served_to_clients_that_refuse_it() {
    let fake = FakeOci::start().await;
    let (index, [amd, _arm]) =
        fake.multi_arch_image("lib/multi", "v1", &[pseudo_random_bytes(1000, 18)]);
    let p = proxy_for(&fake).await;
    let c = client();
    let r = c
        .get(format!("{}/v2/lib/multi/manifests/v1", p.url()))
        .header("accept", MT_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(r.headers()["docker-content-digest"], index.as_str());
    // containerd then fetches the index by digest: served from the store.
    let gets_before = fake.total_requests();
    let r = c
        .get(format!("{}/v2/lib/multi/manifests/{index}", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(sha(&r.bytes().await.unwrap()), index);
    assert_eq!(fake.total_requests(), gets_before);
    // A client that accepts only single-platform manifests never gets the index.
    let r = c
        .get(format!("{}/v2/lib/multi/manifests/v1", p.url()))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    if r.status() == 200 {
        assert_ne!(
            r.headers()["content-type"],
            "application/vnd.oci.image.index.v1+json"
        );
    } else {
        assert_eq!(r.status(), 404);
    }
    let r = c
        .get(format!(
            "{}/v2/lib/multi/manifests/{}",
            p.url(),
            amd.manifest_digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(sha(&r.bytes().await.unwrap()), amd.manifest_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_protocol_errors_and_touches_nothing() {
    let fake = FakeOci::start().await;
    let p = proxy_for(&fake).await;
    let c = client();
    let good = sha(b"x");
    // Sent raw: HTTP client libraries normalise `..` away before it reaches a server.
    for (path, status, code) in [
        ("/v2/a/../b/manifests/v1", 400, "NAME_INVALID"),
        ("/v2/../../etc/passwd/blobs/sha256:00", 400, "NAME_INVALID"),
        ("/v2/a/%2e%2e/%2e%2e/blobs/sha256:00", 400, "NAME_INVALID"),
    ] {
        let (st, body) = raw_get(&p.host_port(), path).await;
        assert_eq!(st, status, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{path}");
    }
    for (path, status, code) in [
        ("/v2/UPPER/manifests/v1", 400, "NAME_INVALID"),
        ("/v2/a//b/manifests/v1", 400, "NAME_INVALID"),
        ("/v2/a/blobs/sha256:zz", 400, "DIGEST_INVALID"),
        ("/v2/a/blobs/md5:abcd", 400, "DIGEST_INVALID"),
        ("/v2/a/manifests/-bad-tag", 400, "MANIFEST_INVALID"),
        ("/v2/a/blobs/uploads/", 405, "UNSUPPORTED"),
    ] {
        let r = c.get(format!("{}{path}", p.url())).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{path}");
    }
    let r = c
        .delete(format!("{}/v2/a/manifests/{good}", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = c
        .put(format!("{}/v2/a/manifests/v1", p.url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // An oversized request head is refused before routing.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut st = tokio::net::TcpStream::connect(p.host_port()).await.unwrap();
        let req = format!(
            "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "x".repeat(100 * 1024)
        );
        let _ = st.write_all(req.as_bytes()).await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), st.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 431"),
            "{text}"
        );
    }
    assert_eq!(fake.total_requests(), 0, "nothing reached the upstream");
    assert!(p.app().store.pins().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_list_works_against_a_live_server() {
    let fake = FakeOci::start().await;
    let img = fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(1000, 19)]);
    let p = proxy_for(&fake).await;
    let c = client();
    c.get(format!("{}/v2/lib/app/manifests/v1", p.url()))
        .send()
        .await
        .unwrap();
    c.get(format!(
        "{}/v2/lib/app/blobs/{}",
        p.url(),
        img.layer_digests[0]
    ))
    .send()
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    let url = p.url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
            .args(["pins", "list", "--json", "--server", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let coords: Vec<_> = rows
        .iter()
        .map(|r| r["coordinate"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        coords.contains(&format!("oci:up/lib/app@{}", img.manifest_digest)),
        "{coords:?}"
    );
    assert!(
        coords.contains(&format!("oci:up/lib/app@{}", img.layer_digests[0])),
        "{coords:?}"
    );
    let url = p.url();
    let table = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
            .args(["pins", "list", "--server", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("COORDINATE") && text.contains("2 pins"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_pins_and_serves_without_upstream() {
    let fake = FakeOci::start().await;
    let img = fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(300_000, 20)]);
    let mut p = proxy_for(&fake).await;
    let c = client();
    c.get(format!("{}/v2/lib/app/manifests/v1", p.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let layer = &img.layer_digests[0];
    c.get(format!("{}/v2/lib/app/blobs/{layer}", p.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    p.restart().await;
    fake.stop();
    let r = c
        .get(format!("{}/v2/lib/app/blobs/{layer}", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(sha(&r.bytes().await.unwrap()), *layer);
    let r = c
        .get(format!(
            "{}/v2/lib/app/manifests/{}",
            p.url(),
            img.manifest_digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(sha(&r.bytes().await.unwrap()), img.manifest_digest);
    let report = pinproxy::store::verify_journal(&p.data_dir().join("journal")).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let _ = sha256_digest(b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tokens_guard_every_route_with_a_basic_challenge() {
    let fake = FakeOci::start().await;
    let img = fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(1000, 21)]);
    let p = Proxy::start_full(
        &[("up", &fake.url())],
        "client_tokens = [\"tok-0123456789\"]",
        "",
    )
    .await;
    let c = client();
    // The ping carries the challenge: docker and containers/image take the scheme from it.
    for path in [
        "/v2/",
        "/v2",
        "/v2/lib/app/manifests/v1",
        "/metrics",
        "/api/v1/pins",
    ] {
        let r = c.get(format!("{}{path}", p.url())).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic realm="),
            "{path}"
        );
    }
    let r = c.get(format!("{}/v2/", p.url())).send().await.unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    assert_eq!(fake.total_requests(), 0);
    let wrong = c
        .get(format!("{}/v2/", p.url()))
        .bearer_auth("tok-wrong-000")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = c
        .get(format!("{}/v2/", p.url()))
        .bearer_auth("tok-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // `docker login` sends Basic with any user name and the token as password.
    let ok = c
        .get(format!(
            "{}/v2/lib/app/manifests/{}",
            p.url(),
            img.manifest_digest
        ))
        .basic_auth("ci", Some("tok-0123456789"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let health = c.get(format!("{}/healthz", p.url())).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_answers_as_a_registry() {
    let fake = FakeOci::start().await;
    let p = proxy_for(&fake).await;
    for path in ["/v2/", "/v2"] {
        let r = client()
            .get(format!("{}{path}", p.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(
            r.headers()["docker-distribution-api-version"],
            "registry/2.0"
        );
        assert_eq!(r.text().await.unwrap(), "{}");
    }
    assert_eq!(fake.total_requests(), 0, "no upstream is needed for a ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema1_manifests_pass_through_unchanged() {
    let fake = FakeOci::start().await;
    let body = b"{\n   \"schemaVersion\": 1,\n   \"name\": \"lib/old\",\n   \"tag\": \"v1\",\n   \"fsLayers\": []\n}".to_vec();
    let mt = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    let digest = fake.add_manifest("lib/old", Some("v1"), mt, body.clone());
    let p = proxy_for(&fake).await;
    let r = client()
        .get(format!("{}/v2/lib/old/manifests/v1", p.url()))
        .header("accept", format!("{MT_ACCEPT}, {mt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], mt);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(r.bytes().await.unwrap().to_vec(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_upstream_credentials_a_shared_blob_is_confirmed_per_repository() {
    let fake = FakeOci::start().await;
    let blob = pseudo_random_bytes(10_000, 22);
    let digest = fake.add_blob(blob);
    fake.enable_token_auth(Some(("robot".into(), "s3cret".into())));
    let p = proxy_with(&fake, "username = \"robot\"\npassword = \"s3cret\"").await;
    let c = client();
    for repo in ["team/a", "team/b", "team/a"] {
        let r = c
            .get(format!("{}/v2/{repo}/blobs/{digest}", p.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{repo}");
        assert_eq!(sha(&r.bytes().await.unwrap()), digest);
    }
    // team/b was not served from team/a's pin without asking the upstream (a HEAD, since the
    // bytes are already here); team/a's second pull came from the store.
    assert_eq!(fake.blob_gets(&digest), 1);
    assert!(fake.hits("HEAD", &format!("/v2/team/b/blobs/{digest}")) >= 1);
    assert!(fake.token_requests() >= 2, "one token per repository scope");
    let basic = fake.requests().iter().any(|r| {
        r.path == "/token"
            && r.header("authorization")
                .is_some_and(|a| a.starts_with("Basic "))
    });
    assert!(basic, "the token service saw the configured credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_lists_pass_through_with_our_link_and_referrers_404_stays_404() {
    let fake = FakeOci::start().await;
    for t in ["v1", "v2", "v3"] {
        fake.image("lib/app", Some(t), &[pseudo_random_bytes(100, 23)]);
    }
    let p = proxy_for(&fake).await;
    let c = client();
    let r = c
        .get(format!("{}/v2/up/lib/app/tags/list?n=2", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let link = r.headers()["link"].to_str().unwrap().to_owned();
    assert!(
        link.starts_with("</v2/up/lib/app/tags/list?n=2&last=v2>"),
        "{link}"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tags"], serde_json::json!(["v1", "v2"]));
    let r = c
        .get(format!(
            "{}/v2/lib/app/referrers/{}",
            p.url(),
            sha(b"subject")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "no referrers API upstream: clients fall back to the tag schema"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_never_content_encoded_and_honour_if_none_match() {
    let fake = FakeOci::start().await;
    let blob = vec![b'a'; 200_000]; // very compressible
    let digest = fake.add_blob(blob.clone());
    let p = proxy_for(&fake).await;
    let c = client();
    let url = format!("{}/v2/lib/app/blobs/{digest}", p.url());
    let r = c
        .get(&url)
        .header("accept-encoding", "zstd;q=1.0, gzip;q=0.8, deflate;q=0.5")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.bytes().await.unwrap().len(), blob.len());
    for inm in [format!("\"{digest}\""), digest.clone()] {
        let r = c
            .get(&url)
            .header("if-none-match", inm)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304);
        assert_eq!(r.headers()["etag"], format!("\"{digest}\"").as_str());
        assert!(r.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_h2_and_http11_by_alpn() {
    if !crate::support::have_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca_cert, cert, key) = (d.join("ca.pem"), d.join("cert.pem"), d.join("key.pem"));
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(d)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A CA, and a leaf for 127.0.0.1 signed by it (rustls refuses a CA used as end entity).
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    let fake = FakeOci::start().await;
    let img = fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(70_000, 24)]);
    let server = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    );
    let p = Proxy::start_full(&[("up", &fake.url())], &server, "").await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_cert).unwrap()).unwrap();
    for h1 in [false, true] {
        let mut b = reqwest::Client::builder().add_root_certificate(ca.clone());
        if h1 {
            b = b.http1_only();
        }
        let c = b.build().unwrap();
        let url = format!(
            "https://{}/v2/lib/app/blobs/{}",
            p.host_port(),
            img.layer_digests[0]
        );
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(
            r.version(),
            if h1 {
                reqwest::Version::HTTP_11
            } else {
                reqwest::Version::HTTP_2
            }
        );
        assert_eq!(sha(&r.bytes().await.unwrap()), img.layer_digests[0]);
    }
}

/// Unmounts a test tmpfs when dropped.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_during_a_fill_pins_nothing_and_cleans_up() {
    // A small tmpfs makes a real ENOSPC; mounting needs root (CI runs as root).
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs as root and must mount a tmpfs"
        );
        eprintln!("skipping: cannot mount a tmpfs (not root)");
        return;
    }
    let _mount = Mount(mnt.clone());
    let fake = FakeOci::start().await;
    let big = pseudo_random_bytes(24 << 20, 25);
    let big_digest = fake.add_blob(big);
    let small = pseudo_random_bytes(100_000, 26);
    let small_digest = fake.add_blob(small);
    let mut p = Proxy::start(&[("up", &fake.url())]).await;
    p.stop().await;
    p.data_dir = mnt.join("data");
    p.restart().await;
    let c = client();
    let r = c
        .get(format!("{}/v2/lib/app/blobs/{big_digest}", p.url()))
        .send()
        .await
        .unwrap();
    let outcome = if r.status() == 200 {
        read_all(r).await.map(|_| ())
    } else {
        Err(format!("status {}", r.status()))
    };
    assert!(outcome.is_err(), "no complete body when the disk filled up");
    assert_eq!(pins_for(&p, &big_digest), 0);
    assert!(p.app().metrics.counter("pinproxy_disk_full_total", "") >= 1);
    let leftovers = std::fs::read_dir(mnt.join("data/tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "the temp file was removed");
    // Space is back: the next fill works.
    let r = c
        .get(format!("{}/v2/lib/app/blobs/{small_digest}", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(sha(&r.bytes().await.unwrap()), small_digest);
    assert_eq!(pins_for(&p, &small_digest), 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_answer_if_none_match_with_304() {
    let fake = FakeOci::start().await;
    let img = fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(100, 27)]);
    let p = proxy_for(&fake).await;
    let c = client();
    for (path, inm) in [
        ("v1".to_owned(), format!("\"{}\"", img.manifest_digest)),
        (img.manifest_digest.clone(), img.manifest_digest.clone()),
    ] {
        let r = c
            .get(format!("{}/v2/lib/app/manifests/{path}", p.url()))
            .header("accept", MT_ACCEPT)
            .header("if-none-match", inm)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{path}");
        assert_eq!(
            r.headers()["docker-content-digest"],
            img.manifest_digest.as_str()
        );
        assert!(r.bytes().await.unwrap().is_empty());
    }
    let r = c
        .get(format!("{}/v2/lib/app/manifests/v1", p.url()))
        .header(
            "if-none-match",
            "\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_things_are_404_with_the_right_code_and_never_html() {
    let fake = FakeOci::start().await;
    fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(100, 28)]);
    let p = proxy_for(&fake).await;
    let c = client();
    for (path, code) in [
        ("/v2/lib/app/manifests/nope".to_owned(), "MANIFEST_UNKNOWN"),
        (
            format!("/v2/lib/app/manifests/{}", sha(b"nope")),
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/lib/app/blobs/{}", sha(b"nope")),
            "BLOB_UNKNOWN",
        ),
        ("/v2/_catalog".to_owned(), "UNSUPPORTED"),
    ] {
        let r = c.get(format!("{}{path}", p.url())).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{path}");
    }
    // Docker Hub answers 401 for a repository that does not exist, even with a token: that
    // becomes NAME_UNKNOWN without a challenge, so clients do not loop.
    fake.set_manifest_fault(Fault::Status(401));
    let r = c
        .get(format!("{}/v2/lib/ghost/manifests/v1", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("www-authenticate").is_none());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_no_cache_never_refetches_immutable_content() {
    let fake = FakeOci::start().await;
    let img = fake.image("lib/app", Some("v1"), &[pseudo_random_bytes(5000, 29)]);
    let p = proxy_for(&fake).await;
    let c = client();
    let layer = &img.layer_digests[0];
    for _ in 0..3 {
        for path in [
            format!("/v2/lib/app/blobs/{layer}"),
            format!("/v2/lib/app/manifests/{}", img.manifest_digest),
        ] {
            let r = c
                .get(format!("{}{path}", p.url()))
                .header("cache-control", "no-cache, no-store")
                .header("pragma", "no-cache")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    }
    assert_eq!(fake.blob_gets(layer), 1);
    assert_eq!(fake.manifest_gets("lib/app", &img.manifest_digest), 1);
}
