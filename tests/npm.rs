//! npm pull-through against the in-process fake registry: behaviour asserted through the
//! fake's counters, the bytes clients receive, and the pins the store holds.

use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use crate::support::fake_npm::{FakeNpm, Fault, PackageSpec, VersionSpec};
use crate::support::proxy::Proxy;

const CORGI: &str = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";

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
    hex::encode(Sha256::digest(bytes))
}

async fn proxy_for(fake: &FakeNpm, npm_extra: &str) -> Proxy {
    let extra = format!("[npm]\nupstream = \"{}\"\n{npm_extra}\n", fake.url());
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

async fn read_all(resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn small_world(fake: &FakeNpm) {
    fake.add_package(
        PackageSpec::new("left-pad")
            .version(VersionSpec::new("1.0.0"))
            .version(VersionSpec::new("1.3.0"))
            .version(VersionSpec::new("2.0.0-rc.1"))
            .version(VersionSpec::new("2.0.0+build.7")),
    );
    fake.add_package(
        PackageSpec::new("@acme/core").version(VersionSpec::new("1.0.0").padded(300_000)),
    );
    fake.add_package(
        PackageSpec::new("oldie").version(VersionSpec::new("0.1.0").legacy_shasum_only()),
    );
    fake.add_package(
        PackageSpec::new("weird").version(VersionSpec::new("1.0.0").nonconventional()),
    );
}

/// The upstream's document with every `dist.tarball` replaced by what the proxy must write:
/// every other byte identical.
fn expected_rewrite(doc: &[u8], base: &str, name: &str) -> Vec<u8> {
    let scan = npm::packument::scan(doc).unwrap();
    let pkg: npm::PackageName = name.parse().unwrap();
    npm::packument::rewrite(doc, &scan.spans, |s| {
        npm::packument::tarball_url(base, &pkg, &s.version)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packuments_at_every_spelling_share_one_entry_and_keep_every_byte_but_the_tarball() {
    let fake = FakeNpm::start().await;
    small_world(&fake);
    let p = proxy_for(&fake, "").await;
    let c = client();
    let base = format!("{}/npm/", p.url());
    for path in [
        "@acme/core",
        "@acme%2fcore",
        "@acme%2Fcore",
        "%40acme%2fcore",
    ] {
        let r = c
            .get(format!("{base}{path}"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let body = r.bytes().await.unwrap();
        let (upstream, _) = fake.packument("@acme/core", true).unwrap();
        assert_eq!(
            body.to_vec(),
            expected_rewrite(&upstream, &base, "@acme/core"),
            "{path}"
        );
    }
    assert_eq!(
        fake.packument_gets_repr("@acme/core", "full"),
        1,
        "one cache entry for all spellings"
    );
    // `time` survives byte for byte (npm install --before needs it).
    let (upstream, _) = fake.packument("left-pad", true).unwrap();
    let r = c.get(format!("{base}left-pad")).send().await.unwrap();
    let body = r.bytes().await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let u: serde_json::Value = serde_json::from_slice(&upstream).unwrap();
    assert_eq!(v["time"], u["time"]);
    assert_eq!(
        v["versions"]["2.0.0+build.7"]["dist"]["tarball"],
        format!("{base}left-pad/-/left-pad-2.0.0+build.7.tgz").as_str()
    );
    assert_eq!(
        v["versions"]["1.3.0"]["dist"]["integrity"],
        u["versions"]["1.3.0"]["dist"]["integrity"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abbreviated_and_full_are_negotiated_with_vary_distinct_etags_and_304() {
    let fake = FakeNpm::start().await;
    small_world(&fake);
    let p = proxy_for(&fake, "client_max_age = \"2m\"").await;
    let c = client();
    let url = format!("{}/npm/left-pad", p.url());
    let corgi = c.get(&url).header("accept", CORGI).send().await.unwrap();
    assert_eq!(
        corgi.headers()["content-type"],
        "application/vnd.npm.install-v1+json"
    );
    assert_eq!(corgi.headers()["vary"], "Accept, Accept-Encoding");
    assert_eq!(corgi.headers()["cache-control"], "public, max-age=120");
    let corgi_etag = corgi.headers()["etag"].clone();
    let corgi_body: serde_json::Value = corgi.json().await.unwrap();
    assert!(
        corgi_body.get("time").is_none(),
        "the abbreviated document has no time"
    );
    for accept in [None, Some("application/json"), Some("*/*")] {
        let mut rb = c.get(&url);
        if let Some(a) = accept {
            rb = rb.header("accept", a);
        }
        let full = rb.send().await.unwrap();
        assert_eq!(
            full.headers()["content-type"],
            "application/json",
            "{accept:?}"
        );
        assert_ne!(full.headers()["etag"], corgi_etag);
        let body: serde_json::Value = full.json().await.unwrap();
        assert!(
            body.get("time").is_some(),
            "{accept:?}: the full document keeps time"
        );
    }
    let r = c
        .get(&url)
        .header("accept", CORGI)
        .header("if-none-match", corgi_etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], corgi_etag);
    assert!(r.headers().contains_key("cache-control"));
    assert!(r.bytes().await.unwrap().is_empty());
    // HEAD agrees with GET.
    let h = c.head(&url).header("accept", CORGI).send().await.unwrap();
    let g = c.get(&url).header("accept", CORGI).send().await.unwrap();
    assert_eq!(h.headers()["content-length"], g.headers()["content-length"]);
    assert_eq!(h.headers()["etag"], g.headers()["etag"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarballs_at_every_spelling_without_a_packument_first_and_never_encoded() {
    let fake = FakeNpm::start().await;
    small_world(&fake);
    let p = proxy_for(&fake, "").await;
    let c = client();
    let want = fake.tarball("@acme/core", "1.0.0").unwrap();
    for path in [
        "@acme/core/-/core-1.0.0.tgz",
        "@acme%2fcore/-/core-1.0.0.tgz",
        "@acme%2Fcore/-/core-1.0.0.tgz",
    ] {
        let r = c
            .get(format!("{}/npm/{path}", p.url()))
            .header("accept-encoding", "gzip, deflate, br")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers().get("content-encoding").is_none());
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        assert_eq!(r.bytes().await.unwrap(), want, "{path}");
    }
    assert_eq!(fake.tarball_gets("@acme/core", "1.0.0"), 1);
    // Prerelease and build metadata, and a legacy shasum-only package.
    for (name, file, version) in [
        ("left-pad", "left-pad-2.0.0-rc.1.tgz", "2.0.0-rc.1"),
        ("left-pad", "left-pad-2.0.0+build.7.tgz", "2.0.0+build.7"),
        ("oldie", "oldie-0.1.0.tgz", "0.1.0"),
    ] {
        let r = c
            .get(format!("{}/npm/{name}/-/{file}", p.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert_eq!(
            r.bytes().await.unwrap(),
            fake.tarball(name, version).unwrap(),
            "{file}"
        );
        let pin = p
            .app()
            .store
            .pin(&format!("npm:{name}@{version}"))
            .unwrap()
            .expect("pinned");
        assert_eq!(pin.pin.verified, pinproxy::store::Verified::Digest);
    }
    let pin = p.app().store.pin("npm:oldie@0.1.0").unwrap().unwrap();
    assert!(
        pin.pin.digests["verified"].starts_with("sha1-"),
        "{:?}",
        pin.pin.digests
    );
    assert_eq!(
        pin.pin.digests["shasum"],
        fake.shasum("oldie", "0.1.0").unwrap()
    );
    let pin = p
        .app()
        .store
        .pin("npm:left-pad@2.0.0-rc.1")
        .unwrap()
        .unwrap();
    assert!(
        pin.pin.digests["verified"].starts_with("sha512-"),
        "{:?}",
        pin.pin.digests
    );
    assert_eq!(
        pin.pin.digests["integrity"],
        fake.integrity("left-pad", "2.0.0-rc.1").unwrap()
    );
    assert!(pin.pin.digests.contains_key("shasum"));
    // A legacy file name that does not follow the convention is found through the packument.
    let path = fake.tarball_path("weird", "1.0.0").unwrap();
    let file = path.rsplit('/').next().unwrap().to_owned();
    let r = c
        .get(format!("{}/npm/weird/-/{file}", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap(),
        fake.tarball("weird", "1.0.0").unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_tarball_pulls_cost_one_fetch_and_a_paused_upstream_streams() {
    let fake = FakeNpm::start().await;
    fake.add_package(PackageSpec::new("big").version(VersionSpec::new("1.0.0").padded(6 << 20)));
    let want = fake.tarball("big", "1.0.0").unwrap();
    fake.set_fault(Fault::PauseAfter { bytes: 2 << 20 });
    let p = proxy_for(&fake, "").await;
    let url = format!("{}/npm/big/-/big-1.0.0.tgz", p.url());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<usize>(64);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (url, tx) = (url.clone(), tx.clone());
            tokio::spawn(async move {
                let r = client().get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let mut s = r.bytes_stream();
                let mut body = Vec::new();
                let mut told = false;
                while let Some(c) = s.next().await {
                    body.extend_from_slice(&c.unwrap());
                    if !told && body.len() >= 1 << 20 {
                        told = true;
                        tx.send(body.len()).await.unwrap();
                    }
                }
                body
            })
        })
        .collect();
    fake.wait_paused().await;
    // While the upstream is paused, clients already hold part of the tarball.
    for _ in 0..50 {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("partial body while paused");
    }
    fake.release_pause();
    for t in tasks {
        assert_eq!(t.await.unwrap(), want.to_vec());
    }
    assert_eq!(fake.tarball_gets("big", "1.0.0"), 1);
    assert_eq!(pins_for(&p, "npm:big@1.0.0"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_integrity_pins_nothing_and_no_client_gets_a_complete_body() {
    let fake = FakeNpm::start().await;
    small_world(&fake);
    fake.set_fault(Fault::WrongIntegrity);
    let p = proxy_for(&fake, "").await;
    let c = client();
    for (name, file) in [
        ("@acme/core", "@acme/core/-/core-1.0.0.tgz"),
        ("oldie", "oldie/-/oldie-0.1.0.tgz"),
    ] {
        let r = c
            .get(format!("{}/npm/{file}", p.url()))
            .send()
            .await
            .unwrap();
        let complete = if r.status() == 200 {
            read_all(r).await.is_ok()
        } else {
            false
        };
        assert!(
            !complete,
            "{name}: a body that fails integrity must not complete"
        );
        assert_eq!(pins_for(&p, &format!("npm:{name}@")), 0, "{name}");
    }
    assert!(
        p.app()
            .metrics
            .counter("pinproxy_digest_mismatch_total", "")
            >= 2
    );
    fake.clear_faults();
    let r = c
        .get(format!("{}/npm/oldie/-/oldie-0.1.0.tgz", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.bytes().await.unwrap(),
        fake.tarball("oldie", "0.1.0").unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_or_rate_limited_still_serves_packuments_and_tarballs() {
    let fake = FakeNpm::start().await;
    small_world(&fake);
    let p = proxy_for(&fake, "packument_ttl = \"0s\"").await;
    let c = client();
    let url = format!("{}/npm/left-pad", p.url());
    let first = c
        .get(&url)
        .header("accept", CORGI)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let tgz = format!("{}/npm/left-pad/-/left-pad-1.3.0.tgz", p.url());
    let tarball = c.get(&tgz).send().await.unwrap().bytes().await.unwrap();
    fake.set_packument_fault(Fault::Status(429));
    let r = c.get(&url).header("accept", CORGI).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-pinproxy-stale"], "1");
    assert_eq!(r.bytes().await.unwrap(), first);
    fake.stop();
    let r = c.get(&url).header("accept", CORGI).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-pinproxy-stale"], "1");
    let r = c.get(&tgz).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), tarball);
    // Never seen, upstream down: an upstream failure, not a 404.
    let r = c
        .get(format!("{}/npm/never-seen", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packuments_revalidate_with_if_none_match_and_see_new_versions() {
    let fake = FakeNpm::start().await;
    small_world(&fake);
    let p = proxy_for(&fake, "packument_ttl = \"1s\"").await;
    let c = client();
    let url = format!("{}/npm/left-pad", p.url());
    c.get(&url)
        .header("accept", CORGI)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    c.get(&url)
        .header("accept", CORGI)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        fake.packument_gets_repr("left-pad", "abbreviated"),
        1,
        "fresh within the TTL"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.get(&url)
        .header("accept", CORGI)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let conditional = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/left-pad" && r.header("if-none-match").is_some())
        .count();
    assert_eq!(conditional, 1, "revalidated with the upstream's ETag");
    fake.publish_version("left-pad", VersionSpec::new("1.4.0"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let v: serde_json::Value = c
        .get(&url)
        .header("accept", CORGI)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["versions"].get("1.4.0").is_some());
    // Each observed document is kept, with history.
    let history = p
        .app()
        .store
        .resolution_history("npm:npm/left-pad#abbreviated")
        .unwrap();
    assert_eq!(history.len(), 2);
    // A version published after the stored packument is found for a tarball request.
    fake.publish_version("left-pad", VersionSpec::new("1.5.0"));
    let r = c
        .get(format!("{}/npm/left-pad/-/left-pad-1.5.0.tgz", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap(),
        fake.tarball("left-pad", "1.5.0").unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_endpoints_audit_pass_through_and_refused_writes() {
    let fake = FakeNpm::start().await;
    small_world(&fake);
    let p = proxy_for(&fake, "").await;
    let c = client();
    let r = c
        .get(format!("{}/npm/-/ping", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{}/npm/-/whoami", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3];
    let r = c
        .post(format!("{}/npm/-/npm/v1/security/advisories/bulk", p.url()))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let audits = fake.audit_requests();
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].body.to_vec(), gz);
    assert_eq!(audits[0].content_encoding.as_deref(), Some("gzip"));
    for (method, path) in [
        (reqwest::Method::PUT, "/npm/left-pad"),
        (reqwest::Method::PUT, "/npm/-/user/org.couchdb.user:me"),
        (reqwest::Method::POST, "/npm/-/v1/login"),
        (reqwest::Method::DELETE, "/npm/left-pad/-rev/1-abc"),
    ] {
        let r = c
            .request(method.clone(), format!("{}{path}", p.url()))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("read-only"),
            "{body}"
        );
    }
    let r = c
        .get(format!("{}/npm/no-such-package", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_upstream_npm_routes_say_how_to_set_one() {
    let p = Proxy::start(&[("up", "http://127.0.0.1:9")]).await;
    let r = client()
        .get(format!("{}/npm/left-pad", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("--npm-upstream") && msg.contains("PINPROXY_NPM_UPSTREAM"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarball_urls_use_the_public_url_or_trusted_forwarding_only() {
    let fake = FakeNpm::start().await;
    small_world(&fake);
    let c = client();
    // Untrusted forwarding headers are ignored.
    let p = proxy_for(&fake, "").await;
    let v: serde_json::Value = c
        .get(format!("{}/npm/left-pad", p.url()))
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = v["versions"]["1.3.0"]["dist"]["tarball"].as_str().unwrap();
    assert!(t.starts_with(&format!("{}/npm/", p.url())), "{t}");
    // From a trusted proxy they are believed.
    let extra = format!("[npm]\nupstream = \"{}\"\n", fake.url());
    let p = Proxy::start_full(&[], "trusted_proxies = [\"127.0.0.1\"]", &extra).await;
    let v: serde_json::Value = c
        .get(format!("{}/npm/left-pad", p.url()))
        .header("x-forwarded-host", "registry.corp.example")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["versions"]["1.3.0"]["dist"]["tarball"],
        "https://registry.corp.example/npm/left-pad/-/left-pad-1.3.0.tgz"
    );
    // A configured public URL wins.
    let p = Proxy::start_full(
        &[],
        "public_url = \"https://pinproxy.corp.example/\"",
        &extra,
    )
    .await;
    let v: serde_json::Value = c
        .get(format!("{}/npm/@acme/core", p.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["versions"]["1.0.0"]["dist"]["tarball"],
        "https://pinproxy.corp.example/npm/@acme/core/-/core-1.0.0.tgz"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twenty_megabyte_packument_reaches_sixteen_clients_intact() {
    let fake = FakeNpm::start().await;
    let big = fake.add_big_package("huge", 20 << 20);
    let p = proxy_for(&fake, "").await;
    let url = format!("{}/npm/huge", p.url());
    let (upstream, _) = fake.packument("huge", true).unwrap();
    let want = sha(&expected_rewrite(
        &upstream,
        &format!("{}/npm/", p.url()),
        "huge",
    ));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let r = client()
                    .get(&url)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let len: usize = r.headers()["content-length"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let body = r.bytes().await.unwrap();
                assert_eq!(body.len(), len);
                sha(&body)
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), want);
    }
    assert!(big.full_bytes >= 19 << 20);
    assert_eq!(fake.packument_gets_repr("huge", "full"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarball_headers_are_immutable_with_a_strong_etag_and_head_agrees() {
    let fake = FakeNpm::start().await;
    small_world(&fake);
    let p = proxy_for(&fake, "").await;
    let c = client();
    let url = format!("{}/npm/left-pad/-/left-pad-1.3.0.tgz", p.url());
    let cold = c.get(&url).send().await.unwrap();
    let cold_etag = cold.headers()["etag"].clone();
    cold.bytes().await.unwrap();
    let h = c.head(&url).send().await.unwrap();
    let g = c.get(&url).send().await.unwrap();
    for name in ["content-type", "content-length", "etag", "cache-control"] {
        assert_eq!(h.headers()[name], g.headers()[name], "{name}");
    }
    assert_eq!(
        g.headers()["etag"],
        cold_etag,
        "the same validator before and after pinning"
    );
    assert_eq!(
        g.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let integrity = fake.integrity("left-pad", "1.3.0").unwrap();
    assert_eq!(g.headers()["etag"], format!("\"{integrity}\"").as_str());
    assert_eq!(
        g.bytes().await.unwrap(),
        fake.tarball("left-pad", "1.3.0").unwrap()
    );
    let r = c
        .get(&url)
        .header("if-none-match", format!("\"{integrity}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = c
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.bytes().await.unwrap(),
        fake.tarball("left-pad", "1.3.0").unwrap().slice(10..20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tokens_on_npm_routes_bearer_or_basic_and_a_401_without_otp() {
    let fake = FakeNpm::start().await;
    small_world(&fake);
    let extra = format!("[npm]\nupstream = \"{}\"\n", fake.url());
    let p = Proxy::start_full(&[], "client_tokens = [\"npm-token-0123\"]", &extra).await;
    let c = client();
    let url = format!("{}/npm/left-pad", p.url());
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(
        r.status(),
        401,
        "never 403 or 404: npm then asks for credentials"
    );
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        !challenge.to_ascii_lowercase().contains("otp"),
        "{challenge}"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].is_string());
    assert_eq!(fake.total_requests(), 0);
    let r = c
        .get(&url)
        .bearer_auth("npm-token-0123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(&url)
        .basic_auth("ci", Some("npm-token-0123"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{}/npm/-/whoami", p.url()))
        .bearer_auth("npm-token-0123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The client's token is never forwarded upstream.
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.header("authorization").is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_packuments_are_gzipped_for_clients_that_take_it_with_their_own_etag() {
    use std::io::Read;
    let fake = FakeNpm::start().await;
    small_world(&fake);
    let p = proxy_for(&fake, "").await;
    let c = client();
    let url = format!("{}/npm/left-pad", p.url());
    let plain = c.get(&url).header("accept", CORGI).send().await.unwrap();
    let plain_etag = plain.headers()["etag"].clone();
    let plain = plain.bytes().await.unwrap();
    let gz = c
        .get(&url)
        .header("accept", CORGI)
        .header("accept-encoding", "gzip, deflate")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    assert_ne!(gz.headers()["etag"], plain_etag);
    let gz_etag = gz.headers()["etag"].clone();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz.bytes().await.unwrap()[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain.to_vec());
    let r = c
        .get(&url)
        .header("accept", CORGI)
        .header("accept-encoding", "gzip")
        .header("if-none-match", gz_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = c
        .get(&url)
        .header("accept", CORGI)
        .header("accept-encoding", "gzip;q=0, identity")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_can_come_from_another_registry() {
    let public = FakeNpm::start().await;
    small_world(&public);
    let corp = FakeNpm::start().await;
    corp.add_package(PackageSpec::new("@corp/tool").version(VersionSpec::new("3.1.4")));
    let extra = format!(
        "[npm]\nupstream = \"{}\"\n[[npm.scopes]]\nscope = \"@corp\"\nurl = \"{}\"\n",
        public.url(),
        corp.url()
    );
    let p = Proxy::start_with(&[], &extra).await;
    let c = client();
    let r = c
        .get(format!("{}/npm/@corp%2ftool", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{}/npm/@corp/tool/-/tool-3.1.4.tgz", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.bytes().await.unwrap(),
        corp.tarball("@corp/tool", "3.1.4").unwrap()
    );
    let r = c
        .get(format!("{}/npm/left-pad", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        public.packument_gets("@corp/tool"),
        0,
        "the scope never reaches the default registry"
    );
    assert_eq!(corp.packument_gets("left-pad"), 0);
}
