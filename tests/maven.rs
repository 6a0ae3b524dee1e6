//! Maven pull-through against the in-process fake repository: behaviour asserted through the
//! fake's counters, the bytes clients receive, and the pins and resolutions the proxy lists.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::support::fake_maven::{
    Checksums, FakeMaven, Fault, ReleasePaths, artifact_metadata_xml, gradle_pom_bytes, http_date,
    jar_bytes, md5_hex, parse_http_date, release_paths, sha1_hex, sha256_hex, sha512_hex,
    snapshot_metadata_xml, unix_now,
};
use crate::support::proxy::Proxy;

const G: &str = "org.example";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// What maven-resolver sends on every request (MVN-Q1).
const MVN_NO_CACHE: [(&str, &str); 2] = [
    ("cache-control", "no-cache, no-store"),
    ("pragma", "no-cache"),
];

fn client() -> reqwest::Client {
    // Raw responses: no transparent decompression, no redirects followed.
    reqwest::Client::builder()
        .no_gzip()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// One `[[maven.upstreams]]` block; `extra` holds include/exclude/policy lines.
fn member(name: &str, fake: &FakeMaven, extra: &str) -> String {
    format!(
        "[[maven.upstreams]]\nname = \"{name}\"\nurl = \"{}\"\n{extra}\n",
        fake.url()
    )
}

/// A proxy whose `[maven]` table holds `maven` lines and the group `members`.
async fn proxy_with(maven: &str, members: &[String]) -> Proxy {
    let mut extra = format!("[maven]\n{maven}\n");
    for m in members {
        extra.push_str(m);
    }
    Proxy::start_full(&[], "", &extra).await
}

/// A proxy with one member, `central`, backed by `fake`.
async fn proxy_for(fake: &FakeMaven, maven: &str) -> Proxy {
    proxy_with(maven, &[member("central", fake, "")]).await
}

fn url(p: &Proxy, path: &str) -> String {
    format!("{}/maven/{path}", p.url())
}

async fn get(c: &reqwest::Client, p: &Proxy, path: &str) -> reqwest::Response {
    c.get(url(p, path)).send().await.unwrap()
}

async fn head(c: &reqwest::Client, p: &Proxy, path: &str) -> reqwest::Response {
    c.head(url(p, path)).send().await.unwrap()
}

/// A GET as maven-resolver sends it (no-cache request headers).
async fn mvn_get(c: &reqwest::Client, p: &Proxy, path: &str) -> reqwest::Response {
    let mut rb = c.get(url(p, path));
    for (k, v) in MVN_NO_CACHE {
        rb = rb.header(k, v);
    }
    rb.send().await.unwrap()
}

/// GET that must answer 200; returns the body.
async fn get_ok(c: &reqwest::Client, p: &Proxy, path: &str) -> Vec<u8> {
    let r = get(c, p, path).await;
    assert_eq!(r.status(), 200, "GET {path}");
    r.bytes().await.unwrap().to_vec()
}

fn hdr(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap_or("<non-utf8>").to_owned())
}

/// Every header but `Date`, as text, for comparing HEAD with GET.
fn headers_without_date(r: &reqwest::Response) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in r.headers() {
        if k != "date" {
            let v = v.to_str().unwrap_or("<non-utf8>").to_owned();
            out.entry(k.as_str().to_owned()).or_default().push(v);
        }
    }
    out
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

/// Whether the client received a complete 200 body: the thing a failed verification must
/// never produce.
async fn complete_200(resp: reqwest::Response, len: usize) -> bool {
    if resp.status() != 200 {
        return false;
    }
    matches!(read_all(resp).await, Ok(body) if body.len() >= len)
}

/// The first whitespace-separated token of a sidecar body.
fn first_token(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}

async fn api(p: &Proxy, what: &str) -> Vec<Value> {
    let r = client()
        .get(format!("{}/api/v1/{what}", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "/api/v1/{what}");
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    v.as_array().expect("a JSON array").clone()
}

/// The pin of `coordinate` from `GET /api/v1/pins`, if listed.
async fn pin(p: &Proxy, coordinate: &str) -> Option<Value> {
    api(p, "pins")
        .await
        .into_iter()
        .find(|e| e["coordinate"] == coordinate)
}

/// Waits (at most 10 s) for `coordinate` to be pinned: the pin is written when the fill
/// commits, which may be just after the last byte reached the client.
async fn wait_pin(p: &Proxy, coordinate: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = pin(p, coordinate).await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{coordinate} not pinned; pins: {:?}",
            api(p, "pins").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pinned coordinates containing `needle` (after a moment for any commit to land).
async fn pins_matching(p: &Proxy, needle: &str) -> Vec<String> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    api(p, "pins")
        .await
        .iter()
        .filter_map(|e| e["coordinate"].as_str())
        .filter(|c| c.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// A request written by hand on a fresh connection, so nothing normalises the path.
/// Returns (status, header block, body).
async fn raw_request(host_port: &str, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(host_port).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("response within 10 s")
        .unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = buf.get(split + 4..).unwrap_or_default().to_vec();
    (status, head, body)
}

/// Text between `<tag>` and `</tag>`, every occurrence.
fn xml_values(doc: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].trim().to_owned());
        rest = &after[j + close.len()..];
    }
    out
}

fn assert_plain_404(
    status: reqwest::StatusCode,
    content_type: Option<&str>,
    body: &[u8],
    what: &str,
) {
    assert_eq!(status, 404, "{what}: missing must be 404 (never 403)");
    let ct = content_type.unwrap_or("");
    assert!(ct.starts_with("text/plain"), "{what}: Content-Type {ct:?}");
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    assert!(!text.contains("<html"), "{what}: 404 body is HTML: {text}");
}

fn coord(artifact: &str, version: &str, ext: &str) -> String {
    format!("maven:{G}:{artifact}:{version}:{ext}")
}

// ---- releases ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_jar_and_pom_are_verified_pinned_and_served_forever_with_central_headers() {
    let fake = FakeMaven::start().await;
    let rel = fake.add_release(G, "lib", "1.0", Checksums::central());
    let mut p = proxy_for(&fake, "").await;
    let c = client();
    let jar = fake.file(&rel.jar).unwrap();
    let pom = fake.file(&rel.pom).unwrap();
    let (jar_sha1, jar_md5) = (sha1_hex(&jar), md5_hex(&jar));

    // Cold: the bytes, and the checksum headers when already known they are right.
    let r = get(&c, &p, &rel.jar).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        hdr(&r, "content-type").as_deref(),
        Some("application/java-archive")
    );
    assert_eq!(hdr(&r, "content-length"), Some(jar.len().to_string()));
    for (name, want) in [("x-checksum-sha1", &jar_sha1), ("x-checksum-md5", &jar_md5)] {
        if let Some(v) = hdr(&r, name) {
            assert_eq!(&v, want, "cold {name}");
        }
    }
    assert_eq!(r.bytes().await.unwrap(), jar);
    assert_eq!(fake.gets(&rel.jar), 1);
    // Hashes see the bytes as stored: the upstream is never asked for a compressed body.
    let upstream_req = &fake.requests_for(&rel.jar)[0];
    let ae = upstream_req.header("accept-encoding");
    assert!(ae.is_none_or(|v| v == "identity"), "Accept-Encoding {ae:?}");

    // Warm: every header of the contract, and no upstream request.
    let r = get(&c, &p, &rel.jar).await;
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, "cache-control").as_deref(), Some(IMMUTABLE));
    let etag = format!("\"{{SHA1{{{jar_sha1}}}}}\"");
    assert_eq!(hdr(&r, "etag"), Some(etag.clone()));
    assert_eq!(hdr(&r, "x-checksum-sha1"), Some(jar_sha1.clone()));
    assert_eq!(hdr(&r, "x-checksum-md5"), Some(jar_md5.clone()));
    assert_eq!(hdr(&r, "accept-ranges").as_deref(), Some("bytes"));
    assert_eq!(hdr(&r, "content-length"), Some(jar.len().to_string()));
    assert_eq!(
        hdr(&r, "content-type").as_deref(),
        Some("application/java-archive")
    );
    assert_eq!(r.bytes().await.unwrap(), jar);
    assert_eq!(
        fake.gets(&rel.jar),
        1,
        "warm GET must not reach the upstream"
    );

    // The POM, as text/xml.
    let r = get(&c, &p, &rel.pom).await;
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, "content-type").as_deref(), Some("text/xml"));
    assert_eq!(r.bytes().await.unwrap(), pom);
    let r = get(&c, &p, &rel.pom).await;
    assert_eq!(hdr(&r, "x-checksum-sha1"), Some(sha1_hex(&pom)));
    assert_eq!(fake.gets(&rel.pom), 1);

    // The pins API lists both with coordinate, digests and how they were verified.
    let jp = wait_pin(&p, &coord("lib", "1.0", "jar")).await;
    assert_eq!(jp["verified"], "digest", "{jp}");
    assert_eq!(jp["upstream"], "central", "{jp}");
    assert_eq!(jp["size"], jar.len() as u64, "{jp}");
    assert_eq!(jp["sha256"], sha256_hex(&jar), "{jp}");
    assert_eq!(jp["digests"]["sha1"], jar_sha1.as_str(), "{jp}");
    assert_eq!(jp["digests"]["md5"], jar_md5.as_str(), "{jp}");
    assert_eq!(
        jp["digests"]["verified"],
        format!("sha1:{jar_sha1}"),
        "{jp}"
    );
    let pp = wait_pin(&p, &coord("lib", "1.0", "pom")).await;
    assert_eq!(pp["verified"], "digest", "{pp}");
    assert_eq!(pp["digests"]["sha1"], sha1_hex(&pom), "{pp}");

    // HEAD and GET agree on every header, and HEAD has no body.
    let g = get(&c, &p, &rel.jar).await;
    let h = head(&c, &p, &rel.jar).await;
    assert_eq!(h.status(), g.status());
    assert_eq!(headers_without_date(&h), headers_without_date(&g));
    assert!(h.bytes().await.unwrap().is_empty());
    drop(g);

    // If-None-Match with the ETag → 304.
    let r = c
        .get(url(&p, &rel.jar))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert!(r.bytes().await.unwrap().is_empty());

    // Sidecars: the upstream's own bytes.
    for path in [
        format!("{}.sha1", rel.jar),
        format!("{}.md5", rel.jar),
        format!("{}.sha1", rel.pom),
    ] {
        let r = get(&c, &p, &path).await;
        assert_eq!(r.status(), 200, "{path}");
        let ct = hdr(&r, "content-type").unwrap_or_default();
        assert!(ct.starts_with("text/plain"), "{path}: {ct}");
        assert_eq!(
            r.bytes().await.unwrap(),
            fake.file(&path).unwrap(),
            "{path}"
        );
    }

    // Metrics name the protocol and the member.
    let metrics = c
        .get(format!("{}/metrics", p.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pinproxy_requests_total{") && l.contains("proto=\"maven\"")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| {
            l.starts_with("pinproxy_upstream_requests_total{") && l.contains("upstream=\"central\"")
        }),
        "{metrics}"
    );

    // The upstream goes away: everything pinned is still served, also after a restart.
    fake.stop();
    for round in ["upstream stopped", "proxy restarted"] {
        for path in [
            rel.jar.clone(),
            rel.pom.clone(),
            format!("{}.sha1", rel.jar),
            format!("{}.md5", rel.jar),
        ] {
            let r = get(&c, &p, &path).await;
            assert_eq!(r.status(), 200, "{round}: {path}");
            assert_eq!(
                r.bytes().await.unwrap(),
                fake.file(&path).unwrap(),
                "{round}: {path}"
            );
        }
        p.restart().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checksum_header_alone_or_one_sidecar_alone_verifies_a_release() {
    let fake = FakeMaven::start().await;
    let by_header = fake.add_release(G, "hdr", "1.0", Checksums::headers_only());
    let by_sidecar = fake.add_release(G, "side", "1.0", Checksums::sidecars_only().named());
    let by_sha2 = fake.add_release(G, "shatwo", "1.0", Checksums::sha2_only());
    let p = proxy_for(&fake, "").await;
    let c = client();
    for (artifact, rel) in [
        ("hdr", &by_header),
        ("side", &by_sidecar),
        ("shatwo", &by_sha2),
    ] {
        let want = fake.file(&rel.jar).unwrap();
        assert_eq!(get_ok(&c, &p, &rel.jar).await, want, "{artifact}");
        let pin = wait_pin(&p, &coord(artifact, "1.0", "jar")).await;
        assert_eq!(pin["verified"], "digest", "{artifact}: {pin}");
        assert_eq!(pin["digests"]["sha1"], sha1_hex(&want), "{artifact}: {pin}");
        assert_eq!(pin["digests"]["md5"], md5_hex(&want), "{artifact}: {pin}");
        let verified = pin["digests"]["verified"].as_str().unwrap_or("");
        let expected: Vec<String> = match artifact {
            "shatwo" => vec![
                format!("sha512:{}", sha512_hex(&want)),
                format!("sha256:{}", sha256_hex(&want)),
            ],
            _ => vec![format!("sha1:{}", sha1_hex(&want))],
        };
        assert!(expected.iter().any(|e| e == verified), "{artifact}: {pin}");
    }
    // Verified against a header, no upstream sidecars: the proxy computes them.
    let want = fake.file(&by_header.jar).unwrap();
    let sha1 = get_ok(&c, &p, &format!("{}.sha1", by_header.jar)).await;
    assert_eq!(first_token(&sha1), sha1_hex(&want));
    let md5 = get_ok(&c, &p, &format!("{}.md5", by_header.jar)).await;
    assert_eq!(first_token(&md5), md5_hex(&want));
    let sha256 = get_ok(&c, &p, &format!("{}.sha256", by_header.jar)).await;
    assert_eq!(first_token(&sha256), sha256_hex(&want));
    // The upstream's own sidecar (with its file name) is served byte for byte.
    let path = format!("{}.sha1", by_sidecar.jar);
    assert_eq!(get_ok(&c, &p, &path).await, fake.file(&path).unwrap());
    let path = format!("{}.sha256", by_sha2.jar);
    assert_eq!(get_ok(&c, &p, &path).await, fake.file(&path).unwrap());
    // Every sidecar algorithm of the contract is computed for a verified pin, SHA-512 too.
    let sha512 = get_ok(&c, &p, &format!("{}.sha512", by_header.jar)).await;
    assert_eq!(first_token(&sha512), sha512_hex(&want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_without_any_checksum_is_pinned_first_seen_and_has_no_sidecars() {
    let fake = FakeMaven::start().await;
    let rel = fake.add_release(G, "bare", "1.0", Checksums::none());
    let p = proxy_for(&fake, "").await;
    let c = client();
    let want = fake.file(&rel.jar).unwrap();
    assert_eq!(get_ok(&c, &p, &rel.jar).await, want);
    let pin = wait_pin(&p, &coord("bare", "1.0", "jar")).await;
    assert_eq!(pin["verified"], "first_seen", "{pin}");
    assert_eq!(pin["digests"]["sha1"], sha1_hex(&want), "{pin}");
    assert_eq!(pin["digests"]["md5"], md5_hex(&want), "{pin}");
    assert!(pin["digests"].get("verified").is_none(), "{pin}");
    // Once pinned, the checksum headers describe the stored bytes.
    let r = get(&c, &p, &rel.jar).await;
    assert_eq!(hdr(&r, "x-checksum-sha1"), Some(sha1_hex(&want)));
    assert_eq!(hdr(&r, "x-checksum-md5"), Some(md5_hex(&want)));
    let etag = format!("\"{{SHA1{{{}}}}}\"", sha1_hex(&want));
    assert_eq!(hdr(&r, "etag"), Some(etag));
    assert_eq!(r.bytes().await.unwrap(), want);
    // No upstream sidecar and nothing verified: no sidecar is invented.
    for ext in ["sha1", "md5"] {
        let path = format!("{}.{ext}", rel.jar);
        let r = get(&c, &p, &path).await;
        let (status, ct) = (r.status(), hdr(&r, "content-type"));
        assert_plain_404(status, ct.as_deref(), &r.bytes().await.unwrap(), &path);
    }
    assert_eq!(fake.gets(&rel.jar), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synthesize_checksums_serves_computed_sidecars_for_first_seen_pins() {
    let fake = FakeMaven::start().await;
    let rel = fake.add_release(G, "bare", "1.0", Checksums::none());
    let p = proxy_for(&fake, "synthesize_checksums = true").await;
    let c = client();
    let want = fake.file(&rel.jar).unwrap();
    assert_eq!(get_ok(&c, &p, &rel.jar).await, want);
    let pin = wait_pin(&p, &coord("bare", "1.0", "jar")).await;
    assert_eq!(pin["verified"], "first_seen", "{pin}");
    let sha1 = get_ok(&c, &p, &format!("{}.sha1", rel.jar)).await;
    assert_eq!(first_token(&sha1), sha1_hex(&want));
    let md5 = get_ok(&c, &p, &format!("{}.md5", rel.jar)).await;
    assert_eq!(first_token(&md5), md5_hex(&want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_checksum_fail_answers_502_and_pins_nothing_globally_or_per_upstream() {
    let fake = FakeMaven::start().await;
    let bare = fake.add_release(G, "bare", "1.0", Checksums::none());
    let ok = fake.add_release(G, "ok", "1.0", Checksums::central());
    let c = client();
    let global = proxy_for(&fake, "missing_checksum = \"fail\"").await;
    let per_upstream = proxy_with(
        "",
        &[member("strict", &fake, "missing_checksum = \"fail\"")],
    )
    .await;
    for p in [&global, &per_upstream] {
        let r = get(&c, p, &bare.jar).await;
        assert_eq!(r.status(), 502);
        assert!(pins_matching(p, ":bare:").await.is_empty());
        // Verifiable artifacts are unaffected.
        assert_eq!(get_ok(&c, p, &ok.jar).await, fake.file(&ok.jar).unwrap());
        let pin = wait_pin(p, &coord("ok", "1.0", "jar")).await;
        assert_eq!(pin["verified"], "digest");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_body_pins_nothing_never_completes_and_is_fetched_again_once_clean() {
    let fake = FakeMaven::start().await;
    let by_header = fake.add_release(G, "lib", "1.0", Checksums::central());
    let by_sidecar = fake.add_release(G, "side", "1.0", Checksums::sidecars_only());
    let wrong_sum = fake.add_release(G, "badsum", "1.0", Checksums::sidecars_only());
    fake.put_raw(&format!("{}.sha1", wrong_sum.jar), "0".repeat(40));
    // The header wins over a right sidecar; a wrong MD5 header alone also fails.
    let wrong_sha1_header = fake.add_release(G, "badhdr", "1.0", Checksums::central());
    let jar = fake.file(&wrong_sha1_header.jar).unwrap();
    fake.set_checksum_headers(&wrong_sha1_header.jar, &"1".repeat(40), &md5_hex(&jar));
    let wrong_md5_header = fake.add_release(G, "badmd5", "1.0", Checksums::central());
    let jar = fake.file(&wrong_md5_header.jar).unwrap();
    fake.set_checksum_headers(&wrong_md5_header.jar, &sha1_hex(&jar), &"2".repeat(32));
    fake.set_fault_for(&by_header.jar, Fault::Corrupt);
    fake.set_fault_for(&by_sidecar.jar, Fault::Corrupt);
    let p = proxy_for(&fake, "").await;
    let c = client();
    for rel in [
        &by_header,
        &by_sidecar,
        &wrong_sum,
        &wrong_sha1_header,
        &wrong_md5_header,
    ] {
        let len = fake.file(&rel.jar).unwrap().len();
        let r = get(&c, &p, &rel.jar).await;
        assert_ne!(r.status(), 404, "{}", rel.jar);
        assert!(
            !complete_200(r, len).await,
            "{}: a body that fails verification must not complete",
            rel.jar
        );
    }
    for artifact in ["lib", "side", "badsum", "badhdr", "badmd5"] {
        let pinned = pins_matching(&p, &format!(":{artifact}:")).await;
        assert!(pinned.is_empty(), "{artifact}: {pinned:?}");
    }
    // Once the upstream serves the right bytes, the next request fetches and pins.
    fake.clear_faults();
    for (artifact, rel) in [("lib", &by_header), ("side", &by_sidecar)] {
        assert_eq!(get_ok(&c, &p, &rel.jar).await, fake.file(&rel.jar).unwrap());
        let pin = wait_pin(&p, &coord(artifact, "1.0", "jar")).await;
        assert_eq!(pin["verified"], "digest");
        assert_eq!(fake.gets(&rel.jar), 2, "{artifact}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_cold_gets_of_one_jar_cost_one_upstream_get() {
    let fake = FakeMaven::start().await;
    let rel = fake.add_release_sized(G, "hot", "1.0", 2 << 20, Checksums::central());
    // A slow body keeps the fill in flight while all fifty requests arrive.
    let drip = Fault::SlowDrip {
        chunk: 128 * 1024,
        interval: Duration::from_millis(20),
    };
    fake.set_fault_for(&rel.jar, drip);
    let p = proxy_for(&fake, "").await;
    let want = fake.file(&rel.jar).unwrap();
    let u = url(&p, &rel.jar);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let u = u.clone();
            tokio::spawn(async move {
                let r = client().get(&u).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), want);
    }
    assert_eq!(fake.gets(&rel.jar), 1);
    wait_pin(&p, &coord("hot", "1.0", "jar")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_100_mb_jar_streams_to_clients_while_the_upstream_is_paused() {
    const SIZE: usize = 100 << 20;
    const PAUSE_AT: usize = 8 << 20;
    const CLIENTS: usize = 3;
    let fake = FakeMaven::start().await;
    let path = fake.add_big(G, "big", "1.0", SIZE);
    let want = fake.file(&path).unwrap();
    fake.set_fault_for_n(&path, Fault::PauseAfter { bytes: PAUSE_AT }, 1);
    let p = proxy_for(&fake, "").await;
    let u = url(&p, &path);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<usize>(CLIENTS);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (u, tx, want) = (u.clone(), tx.clone(), want.clone());
            tokio::spawn(async move {
                let r = client().get(&u).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let mut s = r.bytes_stream();
                let (mut pos, mut told) = (0usize, false);
                while let Some(chunk) = s.next().await {
                    let chunk = chunk.map_err(|e| e.to_string())?;
                    // Compared as it arrives: no 100 MB copy per client.
                    if want.get(pos..pos + chunk.len()) != Some(&chunk[..]) {
                        return Err(format!("bytes differ near offset {pos}"));
                    }
                    pos += chunk.len();
                    if !told && pos >= 1 << 20 {
                        told = true;
                        tx.send(pos).await.unwrap();
                    }
                }
                Ok::<usize, String>(pos)
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(30), fake.wait_paused())
        .await
        .expect("the upstream reached its pause point");
    // While the upstream is paused, every client already holds part of the body.
    for _ in 0..CLIENTS {
        let got = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("part of the body while the upstream is paused")
            .unwrap();
        assert!(got > 0 && got <= PAUSE_AT, "{got} bytes while paused");
    }
    assert_eq!(
        fake.paused_waiters(),
        1,
        "one upstream body for all clients"
    );
    fake.release_pause();
    for t in tasks {
        let got = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("body completes after release")
            .unwrap();
        assert_eq!(got, Ok(SIZE));
    }
    assert_eq!(fake.gets(&path), 1);
    let pin = wait_pin(&p, &coord("big", "1.0", "jar")).await;
    assert_eq!(pin["verified"], "digest");
    assert_eq!(pin["size"], SIZE as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ranges_are_exact_on_filling_and_pinned_files_and_unsatisfiable_ones_are_416() {
    let fake = FakeMaven::start().await;
    let rel = fake.add_release_sized(G, "ranged", "1.0", 4 << 20, Checksums::central());
    let want = fake.file(&rel.jar).unwrap();
    let len = want.len();
    fake.set_fault_for_n(&rel.jar, Fault::PauseAfter { bytes: 1 << 20 }, 1);
    let p = proxy_for(&fake, "").await;
    let c = client();
    let ranged = |range: String| {
        let (c, u) = (c.clone(), url(&p, &rel.jar));
        async move {
            let r = c.get(&u).header("range", range).send().await.unwrap();
            let status = r.status().as_u16();
            let cr = hdr(&r, "content-range");
            let cl = hdr(&r, "content-length");
            (status, cr, cl, r.bytes().await.unwrap().to_vec())
        }
    };
    // A full GET starts the fill and pauses upstream after 1 MiB.
    let full = {
        let u = url(&p, &rel.jar);
        tokio::spawn(async move { read_all(client().get(&u).send().await.unwrap()).await })
    };
    tokio::time::timeout(Duration::from_secs(20), fake.wait_paused())
        .await
        .expect("fill in flight");
    // While filling: a range inside what has arrived is answered at once...
    let (status, cr, cl, body) =
        tokio::time::timeout(Duration::from_secs(10), ranged("bytes=100-199".into()))
            .await
            .expect("a range of bytes already received does not wait for the fill");
    assert_eq!(status, 206);
    assert_eq!(cr, Some(format!("bytes 100-199/{len}")));
    assert_eq!(cl.as_deref(), Some("100"));
    assert_eq!(body, &want[100..200]);
    // ...and one past the pause point completes once the upstream continues.
    let start = 3 << 20;
    let tail = tokio::spawn(ranged(format!("bytes={start}-")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    fake.release_pause();
    assert_eq!(full.await.unwrap().unwrap(), want);
    let (status, cr, _, body) = tail.await.unwrap();
    assert_eq!(status, 206);
    assert_eq!(cr, Some(format!("bytes {start}-{}/{len}", len - 1)));
    assert_eq!(body, &want[start..]);

    // Pinned: served from the store.
    wait_pin(&p, &coord("ranged", "1.0", "jar")).await;
    let before = fake.total_hits();
    for (range, a, b) in [
        ("bytes=0-0".to_owned(), 0, 0),
        ("bytes=1000-".to_owned(), 1000, len - 1),
        ("bytes=5-1048580".to_owned(), 5, 1_048_580),
        (format!("bytes={}-", len - 1), len - 1, len - 1),
        (
            format!("bytes={}-{}", len - 10, len + 1000),
            len - 10,
            len - 1,
        ),
    ] {
        let (status, cr, cl, body) = ranged(range.clone()).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(cr, Some(format!("bytes {a}-{b}/{len}")), "{range}");
        assert_eq!(cl, Some((b - a + 1).to_string()), "{range}");
        assert_eq!(body, &want[a..=b], "{range}");
    }
    let (status, cr, _, _) = ranged(format!("bytes={len}-")).await;
    assert_eq!(status, 416);
    assert_eq!(cr, Some(format!("bytes */{len}")));
    assert_eq!(
        fake.total_hits(),
        before,
        "ranges of a pinned file stay local"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_release_file_kind_is_pinned_under_its_coordinate_with_its_content_type() {
    let fake = FakeMaven::start().await;
    let rel = fake.add_release(G, "lib", "1.0", Checksums::central());
    let module = format!("{}lib-1.0.module", rel.dir);
    let war = format!("{}lib-1.0.war", rel.dir);
    let dist = format!("{}lib-1.0-dist.tar.gz", rel.dir);
    let asc = format!("{}.asc", rel.jar);
    let module_json = format!(
        "{{\"formatVersion\":\"1.1\",\"component\":{{\"group\":\"{G}\",\"module\":\"lib\",\"version\":\"1.0\"}}}}\n"
    );
    fake.put(&module, module_json, Checksums::central());
    fake.put(
        &war,
        jar_bytes(G, "lib", "1.0-war", 10_000),
        Checksums::central(),
    );
    fake.put(
        &dist,
        jar_bytes(G, "lib", "1.0-dist", 10_000),
        Checksums::central(),
    );
    // Central's signatures: no checksum sidecars are requested for them (MVN-L2).
    let signature =
        "-----BEGIN PGP SIGNATURE-----\n\niQEzBAABCAAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n";
    fake.put(&asc, signature, Checksums::none());
    let p = proxy_for(&fake, "").await;
    let c = client();
    // Content-Type differences are collected so one of them does not hide the others.
    let mut wrong_types = Vec::new();
    for (path, content_type, coordinate) in [
        (
            &rel.jar,
            "application/java-archive",
            coord("lib", "1.0", "jar"),
        ),
        (&rel.pom, "text/xml", coord("lib", "1.0", "pom")),
        (
            &rel.sources,
            "application/java-archive",
            coord("lib", "1.0", "sources:jar"),
        ),
        (&module, "application/json", coord("lib", "1.0", "module")),
        (&war, "application/java-archive", coord("lib", "1.0", "war")),
        (
            &dist,
            "application/gzip",
            coord("lib", "1.0", "dist:tar.gz"),
        ),
        (
            &asc,
            "application/pgp-signature",
            coord("lib", "1.0", "jar.asc"),
        ),
    ] {
        let want = fake.file(path).unwrap();
        assert_eq!(get_ok(&c, &p, path).await, want, "{path}");
        let r = get(&c, &p, path).await;
        let served = hdr(&r, "content-type");
        if served.as_deref() != Some(content_type) {
            wrong_types.push(format!("{path}: {served:?}, contract: {content_type}"));
        }
        assert_eq!(
            hdr(&r, "cache-control").as_deref(),
            Some(IMMUTABLE),
            "{path}"
        );
        assert_eq!(hdr(&r, "x-checksum-sha1"), Some(sha1_hex(&want)), "{path}");
        assert_eq!(r.bytes().await.unwrap(), want, "{path}");
        let pin = wait_pin(&p, &coordinate).await;
        assert_eq!(pin["sha256"], sha256_hex(&want), "{coordinate}");
        assert_eq!(pin["upstream"], "central", "{coordinate}");
        assert_eq!(fake.gets(path), 1, "{path}");
    }
    // The signature has no upstream checksums: its sidecars are 404.
    for ext in ["sha1", "md5"] {
        let path = format!("{asc}.{ext}");
        let r = get(&c, &p, &path).await;
        let (status, ct) = (r.status(), hdr(&r, "content-type"));
        assert_plain_404(status, ct.as_deref(), &r.bytes().await.unwrap(), &path);
    }
    // The sources jar's sidecar is served as the upstream wrote it.
    let path = format!("{}.sha1", rel.sources);
    assert_eq!(get_ok(&c, &p, &path).await, fake.file(&path).unwrap());
    assert!(wrong_types.is_empty(), "{wrong_types:#?}");
}

// ---- misses and failures -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_files_are_plain_404s_remembered_for_not_found_ttl() {
    let fake = FakeMaven::start().await;
    let rel = fake.add_release(G, "lib", "1.0", Checksums::central());
    fake.put(
        &rel.pom,
        gradle_pom_bytes(G, "lib", "1.0"),
        Checksums::central(),
    );
    let p = proxy_for(&fake, "not_found_ttl = \"3s\"").await;
    let c = client();
    let late = release_paths(G, "late", "1.0");
    let module = format!("{}lib-1.0.module", rel.dir);
    let missing = [
        late.jar.clone(),
        late.pom.clone(),
        format!("{}.sha1", late.jar),
        module.clone(),
        late.metadata.clone(),
    ];
    for path in &missing {
        for attempt in ["cold", "within not_found_ttl"] {
            let before = fake.hits_under(path);
            let r = get(&c, &p, path).await;
            let (status, ct) = (r.status(), hdr(&r, "content-type"));
            let body = r.bytes().await.unwrap();
            assert_plain_404(status, ct.as_deref(), &body, &format!("{attempt} {path}"));
            if attempt != "cold" {
                assert_eq!(fake.hits_under(path), before, "{path}: negative cache");
            }
        }
        let r = head(&c, &p, path).await;
        assert_eq!(r.status(), 404, "HEAD {path}");
    }
    // Gradle's .module probe (MVN-Q4) is a 404, never a 403, also next to a pinned POM.
    assert_eq!(get_ok(&c, &p, &rel.pom).await, fake.file(&rel.pom).unwrap());
    assert_eq!(get(&c, &p, &module).await.status(), 404);
    // A release published after the miss is found once not_found_ttl has passed.
    fake.add_release(G, "late", "1.0", Checksums::central());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        get_ok(&c, &p, &late.jar).await,
        fake.file(&late.jar).unwrap()
    );
    assert!(pins_matching(&p, "lib-1.0.module").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_failures_with_nothing_cached_are_5xx_never_404_and_are_not_remembered() {
    let fake = FakeMaven::start().await;
    let cases: Vec<(&str, Fault, ReleasePaths)> = [
        ("e500", Fault::Status(500)),
        ("reset", Fault::Reset),
        ("truncate", Fault::Truncate(5000)),
        ("stall", Fault::Stall { after: 5000 }),
    ]
    .into_iter()
    .map(|(a, f)| (a, f, fake.add_release(G, a, "1.0", Checksums::central())))
    .collect();
    for (_, fault, rel) in &cases {
        fake.set_fault_for(&rel.jar, fault.clone());
    }
    let limited = fake.add_release(G, "limited", "1.0", Checksums::central());
    fake.set_fault_for(&limited.jar, Fault::Status(429));
    let md_429 = format!("{}/m429/maven-metadata.xml", G.replace('.', "/"));
    fake.set_metadata(
        &md_429,
        &artifact_metadata_xml(G, "m429", &["1.0"], "20240101000000"),
    );
    fake.set_fault_for(&md_429, Fault::Status(429));
    let md_500 = format!("{}/m500/maven-metadata.xml", G.replace('.', "/"));
    let md_stall = format!("{}/mstall/maven-metadata.xml", G.replace('.', "/"));
    fake.set_metadata(
        &md_500,
        &artifact_metadata_xml(G, "m500", &["1.0"], "20240101000000"),
    );
    fake.set_metadata(
        &md_stall,
        &artifact_metadata_xml(G, "mstall", &["1.0"], "20240101000000"),
    );
    fake.set_fault_for(&md_500, Fault::Status(500));
    fake.set_fault_for(&md_stall, Fault::Stall { after: 0 });
    let p = proxy_for(&fake, "").await;
    let c = client();
    for (name, _, rel) in &cases {
        let len = fake.file(&rel.jar).unwrap().len();
        let r = get(&c, &p, &rel.jar).await;
        let status = r.status().as_u16();
        assert_ne!(status, 404, "{name}");
        if status == 200 {
            // Headers went out before the failure: the body must not complete.
            assert!(!complete_200(r, len).await, "{name}: complete body");
        } else {
            assert!(matches!(status, 502 | 504), "{name}: {status}");
        }
    }
    for path in [&limited.jar, &md_429] {
        let r = get(&c, &p, path).await;
        assert_eq!(r.status(), 429, "{path}");
        assert!(
            r.headers().contains_key("retry-after"),
            "{path}: 429 carries Retry-After"
        );
    }
    for md in [&md_500, &md_stall] {
        let status = get(&c, &p, md).await.status().as_u16();
        assert!(matches!(status, 502 | 504), "{md}: {status}");
    }
    assert!(pins_matching(&p, "maven:").await.is_empty());
    // None of it was remembered as missing.
    fake.clear_faults();
    for rel in cases.iter().map(|(_, _, r)| r).chain([&limited]) {
        assert_eq!(get_ok(&c, &p, &rel.jar).await, fake.file(&rel.jar).unwrap());
    }
    for md in [&md_429, &md_500, &md_stall] {
        assert_eq!(get_ok(&c, &p, md).await, fake.file(md).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_paths_are_400_and_never_reach_the_upstream() {
    let fake = FakeMaven::start().await;
    fake.add_release(G, "lib", "1.0", Checksums::central());
    let p = proxy_for(&fake, "").await;
    let overlong = format!("/maven/{}lib-1.0.jar", "a/".repeat(520));
    let paths = [
        "/maven/org/example/../../../etc/passwd",
        "/maven/org/example/lib/1.0/../1.0/lib-1.0.jar",
        "/maven/org/example/%2e%2e/%2e%2e/etc/passwd",
        "/maven/org/example/%2E%2E/lib/1.0/lib-1.0.jar",
        "/maven/org%2Fexample/lib/1.0/lib-1.0.jar",
        "/maven/org%2fexample/lib/1.0/lib-1.0.jar",
        "/maven/org/example/lib/1.0/lib-1.0.jar%00",
        "/maven/org/example/lib/1.0/lib-1.0.jar%00.pom",
        "/maven/org%5Cexample/lib/1.0/lib-1.0.jar",
        "/maven//etc/passwd",
        "/maven/C:/windows/win.ini",
        "/maven/org/example:lib/1.0/lib-1.0.jar",
        overlong.as_str(),
    ];
    for path in paths {
        for method in ["GET", "HEAD"] {
            let (status, head, _) = raw_request(&p.host_port(), method, path).await;
            assert_eq!(status, 400, "{method} {path}");
            assert!(
                head.contains("content-type: text/plain"),
                "{method} {path}: {head}"
            );
        }
    }
    // A raw backslash: refused by the proxy or by the HTTP parser, either way a 400.
    let (status, _, _) = raw_request(
        &p.host_port(),
        "GET",
        "/maven/org\\example\\lib/1.0/lib-1.0.jar",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(fake.total_hits(), 0, "{:?}", fake.requests());
    assert!(pins_matching(&p, "maven:").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn methods_other_than_get_and_head_are_405() {
    let fake = FakeMaven::start().await;
    let rel = fake.add_release(G, "lib", "1.0", Checksums::central());
    fake.set_metadata(
        &rel.metadata,
        &artifact_metadata_xml(G, "lib", &["1.0"], "20240101000000"),
    );
    let p = proxy_for(&fake, "").await;
    let c = client();
    for path in [&rel.jar, &rel.metadata, &rel.artifact_dir] {
        for method in ["PUT", "DELETE", "POST", "PATCH"] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let r = c.request(m, url(&p, path)).body("x").send().await.unwrap();
            assert_eq!(r.status(), 405, "{method} {path}");
        }
    }
    assert_eq!(fake.total_hits(), 0);
}

// ---- groups ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_group_the_first_member_with_the_file_wins_and_later_members_fill_gaps() {
    let (a, b) = (FakeMaven::start().await, FakeMaven::start().await);
    let shared = a.add_release(G, "lib", "1.0", Checksums::central());
    // b holds different bytes under the same path: a, listed first, must win.
    b.put(
        &shared.jar,
        jar_bytes(G, "lib", "1.0-rebuilt", 24 * 1024),
        Checksums::central(),
    );
    let only_b = b.add_release(G, "extra", "2.0", Checksums::central());
    let p = proxy_with("", &[member("a", &a, ""), member("b", &b, "")]).await;
    let c = client();
    assert_eq!(
        get_ok(&c, &p, &shared.jar).await,
        a.file(&shared.jar).unwrap()
    );
    assert_eq!(b.hits_any(&shared.jar), 0, "a answered: b is never asked");
    let pin = wait_pin(&p, &coord("lib", "1.0", "jar")).await;
    assert_eq!(pin["upstream"], "a");
    // A file only b has: a answers 404, b serves it.
    assert_eq!(
        get_ok(&c, &p, &only_b.jar).await,
        b.file(&only_b.jar).unwrap()
    );
    assert_eq!(
        get_ok(&c, &p, &only_b.pom).await,
        b.file(&only_b.pom).unwrap()
    );
    assert_eq!(a.gets(&only_b.jar), 1);
    let pin = wait_pin(&p, &coord("extra", "2.0", "jar")).await;
    assert_eq!(pin["upstream"], "b");
    assert_eq!(pin["verified"], "digest");
    // Neither has it: one question each, then a 404.
    let none = release_paths(G, "none", "1.0");
    assert_eq!(get(&c, &p, &none.jar).await.status(), 404);
    assert_eq!((a.gets(&none.jar), b.gets(&none.jar)), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn include_and_exclude_keep_group_ids_away_from_a_member() {
    let (a, b) = (FakeMaven::start().await, FakeMaven::start().await);
    let groups = [
        "org.example",
        "org.example.sub",
        "org.example.secret",
        "org.example.secret.deep",
        "org.examplefoo",
        "com.other",
    ];
    for g in groups {
        for fake in [&a, &b] {
            let rel = fake.add_release(g, "tool", "1.0", Checksums::central());
            let xml = artifact_metadata_xml(g, "tool", &["1.0"], "20240101000000");
            fake.set_metadata(&rel.metadata, &xml);
        }
    }
    let a_rules = "include = [\"org.example\", \"org.example.*\"]\n\
                   exclude = [\"org.example.secret\", \"org.example.secret.*\"]";
    let p = proxy_with("", &[member("a", &a, a_rules), member("b", &b, "")]).await;
    let c = client();
    for g in groups {
        let rel = release_paths(g, "tool", "1.0");
        let expect_a = matches!(g, "org.example" | "org.example.sub");
        assert_eq!(
            get_ok(&c, &p, &rel.jar).await,
            a.file(&rel.jar).unwrap(),
            "{g}"
        );
        let body = get_ok(&c, &p, &rel.metadata).await;
        assert!(String::from_utf8_lossy(&body).contains(&format!("<groupId>{g}</groupId>")));
        let pin = wait_pin(&p, &format!("maven:{g}:tool:1.0:jar")).await;
        let dir = format!("{}/", g.replace('.', "/"));
        let a_hits: usize = a
            .requests()
            .iter()
            .filter(|r| {
                r.path
                    .strip_prefix(&dir)
                    .is_some_and(|rest| rest.starts_with("tool/"))
            })
            .count();
        if expect_a {
            assert_eq!(pin["upstream"], "a", "{g}");
            assert!(a_hits > 0, "{g}");
        } else {
            assert_eq!(pin["upstream"], "b", "{g}");
            assert_eq!(a_hits, 0, "{g} must never reach member a");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn artifact_metadata_in_two_members_is_merged_and_its_checksums_describe_the_merged_bytes() {
    let (a, b) = (FakeMaven::start().await, FakeMaven::start().await);
    let md = release_paths(G, "lib", "1.0").metadata;
    a.set_metadata(
        &md,
        &artifact_metadata_xml(G, "lib", &["1.0", "1.1"], "20240101000000"),
    );
    b.set_metadata(
        &md,
        &artifact_metadata_xml(G, "lib", &["1.1", "1.5", "2.0"], "20240301000000"),
    );
    let newest = a.last_modified(&md).unwrap() + 3600;
    b.set_last_modified(&md, newest);
    let p = proxy_with("", &[member("a", &a, ""), member("b", &b, "")]).await;
    let c = client();
    let r = get(&c, &p, &md).await;
    assert_eq!(r.status(), 200);
    let ct = hdr(&r, "content-type").unwrap_or_default();
    assert!(ct.starts_with("text/xml"), "{ct}");
    let cc = hdr(&r, "cache-control").unwrap_or_default();
    assert!(cc.contains("max-age=") && !cc.contains("immutable"), "{cc}");
    assert_eq!(hdr(&r, "last-modified"), Some(http_date(newest)));
    let etag = hdr(&r, "etag");
    let body = r.bytes().await.unwrap();
    assert_eq!(etag, Some(format!("\"{}\"", sha256_hex(&body))));
    let text = String::from_utf8_lossy(&body).into_owned();
    let versions = xml_values(&text, "version");
    let set: BTreeSet<&str> = versions.iter().map(String::as_str).collect();
    assert_eq!(set, BTreeSet::from(["1.0", "1.1", "1.5", "2.0"]), "{text}");
    assert_eq!(versions.len(), 4, "each version once: {text}");
    assert_eq!(xml_values(&text, "latest"), ["2.0"], "{text}");
    assert_eq!(xml_values(&text, "release"), ["2.0"], "{text}");
    assert_eq!(
        xml_values(&text, "lastUpdated"),
        ["20240301000000"],
        "{text}"
    );
    assert_eq!(xml_values(&text, "groupId"), [G], "{text}");
    assert_eq!(xml_values(&text, "artifactId"), ["lib"], "{text}");
    // Sidecars describe the document served, not either member's.
    let sha1 = get_ok(&c, &p, &format!("{md}.sha1")).await;
    assert_eq!(first_token(&sha1), sha1_hex(&body));
    let md5 = get_ok(&c, &p, &format!("{md}.md5")).await;
    assert_eq!(first_token(&md5), md5_hex(&body));
    // HEAD agrees with GET.
    let g = get(&c, &p, &md).await;
    let h = head(&c, &p, &md).await;
    assert_eq!(headers_without_date(&h), headers_without_date(&g));
    assert_eq!(g.bytes().await.unwrap(), body);
    // Resolutions: the served document and each member's copy.
    let listed = api(&p, "resolutions").await;
    for coordinate in [
        format!("maven:{md}"),
        format!("maven:a/{md}"),
        format!("maven:b/{md}"),
    ] {
        let found = listed
            .iter()
            .find(|r| r["coordinate"] == coordinate.as_str());
        assert!(found.is_some(), "{coordinate} in {listed:?}");
    }
    let served = listed
        .iter()
        .find(|r| r["coordinate"] == format!("maven:{md}").as_str())
        .unwrap();
    assert_eq!(served["sha256"], sha256_hex(&body), "{served}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_in_one_member_only_is_served_byte_for_byte() {
    let (a, b) = (FakeMaven::start().await, FakeMaven::start().await);
    let md = release_paths(G, "lib", "1.0").metadata;
    b.set_metadata(
        &md,
        &artifact_metadata_xml(G, "lib", &["1.0", "1.1", "2.0-SNAPSHOT"], "20240301000000"),
    );
    let p = proxy_with("", &[member("a", &a, ""), member("b", &b, "")]).await;
    let c = client();
    let want = b.file(&md).unwrap();
    let r = get(&c, &p, &md).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        hdr(&r, "last-modified"),
        Some(http_date(b.last_modified(&md).unwrap()))
    );
    assert_eq!(r.bytes().await.unwrap(), want);
    assert_eq!(a.gets(&md), 1);
    let sha1 = get_ok(&c, &p, &format!("{md}.sha1")).await;
    assert_eq!(first_token(&sha1), sha1_hex(&want));
}

// ---- mutable documents -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_is_fresh_within_its_ttl_then_revalidated_conditionally_and_follows_changes() {
    let fake = FakeMaven::start().await;
    let md = release_paths(G, "lib", "1.0").metadata;
    let v1 = artifact_metadata_xml(G, "lib", &["1.0"], "20240101000000");
    fake.set_metadata(&md, &v1);
    let p = proxy_for(&fake, "metadata_ttl = \"2s\"").await;
    let c = client();
    let r = get(&c, &p, &md).await;
    assert_eq!(r.status(), 200);
    assert!(
        hdr(&r, "content-type")
            .unwrap_or_default()
            .starts_with("text/xml")
    );
    let etag = hdr(&r, "etag").expect("metadata has an ETag");
    assert_eq!(r.bytes().await.unwrap(), v1.as_bytes());
    assert_eq!(fake.gets(&md), 1);
    // Fresh: no upstream request, and the ETag answers a conditional request.
    assert_eq!(get_ok(&c, &p, &md).await, v1.as_bytes());
    let h = head(&c, &p, &md).await;
    let g = get(&c, &p, &md).await;
    assert_eq!(headers_without_date(&h), headers_without_date(&g));
    let r = c
        .get(url(&p, &md))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(fake.gets(&md), 1, "within metadata_ttl");
    // Past the TTL: a conditional request upstream, whose 304 keeps the document.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get_ok(&c, &p, &md).await, v1.as_bytes());
    assert_eq!(fake.gets(&md), 2);
    let reval = fake.requests_for(&md).pop().unwrap();
    let inm = reval.header("if-none-match").map(str::to_owned);
    let ims = reval.header("if-modified-since").and_then(parse_http_date);
    assert!(
        inm == fake.etag(&md) || ims == fake.last_modified(&md),
        "revalidation must be conditional: {:?}",
        reval.headers
    );
    assert_eq!(get_ok(&c, &p, &md).await, v1.as_bytes());
    assert_eq!(fake.gets(&md), 2, "a 304 makes the document fresh again");
    // A changed document is served once the TTL has passed.
    let v2 = artifact_metadata_xml(G, "lib", &["1.0", "1.1"], "20240201000000");
    fake.set_metadata(&md, &v2);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = get(&c, &p, &md).await;
    assert_ne!(hdr(&r, "etag"), Some(etag));
    assert_eq!(r.bytes().await.unwrap(), v2.as_bytes());
    let sha1 = get_ok(&c, &p, &format!("{md}.sha1")).await;
    assert_eq!(first_token(&sha1), sha1_hex(v2.as_bytes()));
    let coordinate = format!("maven:{md}");
    let listed = api(&p, "resolutions").await;
    assert!(
        listed
            .iter()
            .any(|r| r["coordinate"] == coordinate.as_str()),
        "{coordinate} in {listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_metadata_is_served_with_a_warning_when_the_upstream_fails_after_the_ttl() {
    let fake = FakeMaven::start().await;
    let md = release_paths(G, "lib", "1.0").metadata;
    let xml = artifact_metadata_xml(G, "lib", &["1.0", "1.1"], "20240101000000");
    fake.set_metadata(&md, &xml);
    let p = proxy_for(&fake, "metadata_ttl = \"300ms\"").await;
    let c = client();
    assert_eq!(get_ok(&c, &p, &md).await, xml.as_bytes());
    for (what, fault) in [
        ("500", Some(Fault::Status(500))),
        ("429", Some(Fault::Status(429))),
        ("reset", Some(Fault::Reset)),
        ("down", None),
    ] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        match fault {
            Some(f) => fake.set_fault_for(&md, f),
            None => fake.stop(),
        }
        let r = get(&c, &p, &md).await;
        assert_eq!(r.status(), 200, "{what}");
        assert_eq!(hdr(&r, "x-pinproxy-stale").as_deref(), Some("1"), "{what}");
        let warning = hdr(&r, "warning").unwrap_or_default();
        assert!(warning.starts_with("299"), "{what}: Warning {warning:?}");
        assert_eq!(r.bytes().await.unwrap(), xml.as_bytes(), "{what}");
        fake.clear_faults();
    }
    // Back up: fresh answers carry no stale marker.
    fake.restart().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = get(&c, &p, &md).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-pinproxy-stale").is_none());
    let coordinate = format!("maven:{md}");
    let listed = api(&p, "resolutions").await;
    assert!(
        listed
            .iter()
            .any(|r| r["coordinate"] == coordinate.as_str()),
        "{coordinate} in {listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_no_cache_headers_never_refetch_pinned_files_or_fresh_metadata() {
    let fake = FakeMaven::start().await;
    let rel = fake.add_release(G, "lib", "1.0", Checksums::central());
    fake.set_metadata(
        &rel.metadata,
        &artifact_metadata_xml(G, "lib", &["1.0"], "20240101000000"),
    );
    let p = proxy_for(&fake, "metadata_ttl = \"1h\"").await;
    let c = client();
    for path in [&rel.jar, &rel.pom, &rel.metadata] {
        get_ok(&c, &p, path).await;
    }
    wait_pin(&p, &coord("lib", "1.0", "jar")).await;
    let r = get(&c, &p, &rel.metadata).await;
    let cc = hdr(&r, "cache-control").unwrap_or_default();
    let max_age: u64 = cc
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metadata Cache-Control {cc:?}"));
    assert!((3500..=3600).contains(&max_age), "{cc}");
    assert!(!cc.contains("immutable"), "{cc}");
    drop(r);
    let before = fake.total_hits();
    for _ in 0..3 {
        for path in [&rel.jar, &rel.pom, &rel.metadata] {
            let r = mvn_get(&c, &p, path).await;
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.bytes().await.unwrap(), fake.file(path).unwrap(), "{path}");
            let mut rb = c.head(url(&p, path));
            for (k, v) in MVN_NO_CACHE {
                rb = rb.header(k, v);
            }
            assert_eq!(rb.send().await.unwrap().status(), 200, "HEAD {path}");
        }
    }
    assert_eq!(fake.total_hits(), before, "{:?}", fake.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timestamped_snapshots_are_pinned_while_legacy_snapshots_and_their_metadata_expire() {
    let fake = FakeMaven::start().await;
    let s = fake.add_snapshot(G, "snap", "1.0", "20240101.123456", 3, Checksums::central());
    let p = proxy_for(&fake, "snapshot_ttl = \"2s\"\nmetadata_ttl = \"1h\"").await;
    let c = client();
    // The timestamped file is immutable: pinned under its unique version.
    assert_eq!(get_ok(&c, &p, &s.jar).await, fake.file(&s.jar).unwrap());
    let pin = wait_pin(&p, &coord("snap", &s.unique_version, "jar")).await;
    assert_eq!(pin["verified"], "digest");
    let r = get(&c, &p, &s.jar).await;
    assert_eq!(hdr(&r, "cache-control").as_deref(), Some(IMMUTABLE));
    // SNAPSHOT-version metadata: XML, not immutable.
    let r = get(&c, &p, &s.metadata).await;
    assert_eq!(r.status(), 200);
    assert!(
        hdr(&r, "content-type")
            .unwrap_or_default()
            .starts_with("text/xml")
    );
    assert!(
        !hdr(&r, "cache-control")
            .unwrap_or_default()
            .contains("immutable")
    );
    assert_eq!(r.bytes().await.unwrap(), fake.file(&s.metadata).unwrap());
    // The legacy name is mutable: fresh for snapshot_ttl, never pinned.
    assert_eq!(
        get_ok(&c, &p, &s.legacy_jar).await,
        fake.file(&s.legacy_jar).unwrap()
    );
    let r = get(&c, &p, &s.legacy_jar).await;
    assert!(
        !hdr(&r, "cache-control")
            .unwrap_or_default()
            .contains("immutable")
    );
    drop(r);
    assert_eq!(fake.gets(&s.legacy_jar), 1);
    assert!(pins_matching(&p, "1.0-SNAPSHOT").await.is_empty());
    // A new build: after snapshot_ttl both the legacy file and the metadata follow it.
    let build4 = jar_bytes(G, "snap", "1.0-20240102.000000-4", 16 * 1024);
    fake.put(&s.legacy_jar, build4.clone(), Checksums::central());
    let xml4 = snapshot_metadata_xml(G, "snap", "1.0-SNAPSHOT", "20240102.000000", 4);
    fake.set_metadata(&s.metadata, &xml4);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get_ok(&c, &p, &s.legacy_jar).await, build4);
    assert_eq!(get_ok(&c, &p, &s.metadata).await, xml4.as_bytes());
    // The timestamped file was never asked for again.
    assert_eq!(get_ok(&c, &p, &s.jar).await, fake.file(&s.jar).unwrap());
    assert_eq!(fake.gets(&s.jar), 1);
}

// ---- what real clients send ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resolver_and_gradle_requests_head_revalidation_resume_checksum_reuse_and_listings() {
    let fake = FakeMaven::start().await;
    let rel = fake.add_release_sized(G, "lib", "1.0", 256 * 1024, Checksums::central());
    fake.put(
        &rel.pom,
        gradle_pom_bytes(G, "lib", "1.0"),
        Checksums::central(),
    );
    let p = proxy_for(&fake, "").await;
    let c = client();
    let jar = fake.file(&rel.jar).unwrap();
    // maven-resolver's existence check: HEAD of a file nobody fetched yet answers what a
    // GET would.
    let other = fake.add_release(G, "peek", "1.0", Checksums::central());
    let peek = fake.file(&other.jar).unwrap();
    let h = head(&c, &p, &other.jar).await;
    assert_eq!(h.status(), 200);
    assert_eq!(hdr(&h, "content-length"), Some(peek.len().to_string()));
    assert_eq!(
        hdr(&h, "content-type").as_deref(),
        Some("application/java-archive")
    );
    assert!(h.bytes().await.unwrap().is_empty());
    assert_eq!(get_ok(&c, &p, &other.jar).await, peek);
    // maven-resolver: POM then jar, every request with no-cache headers.
    let r = mvn_get(&c, &p, &rel.pom).await;
    assert_eq!(r.status(), 200);
    let pom = r.bytes().await.unwrap();
    assert!(String::from_utf8_lossy(&pom).contains("published-with-gradle-metadata"));
    // Gradle then probes the .module (MVN-Q4): missing is a 404.
    let module = format!("{}lib-1.0.module", rel.dir);
    assert_eq!(mvn_get(&c, &p, &module).await.status(), 404);
    let r = mvn_get(&c, &p, &rel.jar).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), jar);
    wait_pin(&p, &coord("lib", "1.0", "jar")).await;

    // Gradle revalidates a cached file with HEAD (MVN-Q2): the same validators as GET.
    let g = get(&c, &p, &rel.jar).await;
    let h = head(&c, &p, &rel.jar).await;
    assert_eq!(h.status(), 200);
    for name in ["content-length", "etag", "x-checksum-sha1", "last-modified"] {
        assert_eq!(hdr(&h, name), hdr(&g, name), "{name}");
    }
    assert_eq!(hdr(&h, "content-length"), Some(jar.len().to_string()));
    drop(g);
    // Checksum-based reuse (MVN-Q5): the header's SHA-1 is the .sha1 sidecar's.
    let sha1_header = hdr(&h, "x-checksum-sha1").expect("X-Checksum-Sha1 on HEAD");
    let sidecar = get_ok(&c, &p, &format!("{}.sha1", rel.jar)).await;
    assert_eq!(first_token(&sidecar), sha1_header);
    assert_eq!(sha1_header, sha1_hex(&jar));

    // maven-resolver resumes a broken download (MVN-Q3).
    let n = 100_000;
    let r = c
        .get(url(&p, &rel.jar))
        .header("range", format!("bytes={n}-"))
        .header("if-unmodified-since", http_date(unix_now() - 60))
        .header("accept-encoding", "identity")
        .header("cache-control", "no-cache, no-store")
        .header("pragma", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        hdr(&r, "content-range"),
        Some(format!("bytes {n}-{}/{}", jar.len() - 1, jar.len()))
    );
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.bytes().await.unwrap(), &jar[n..]);
    assert_eq!(fake.gets(&rel.jar), 1);

    // Gradle lists a directory when metadata is missing (MVN-L5): passed through.
    let r = get(&c, &p, &rel.artifact_dir).await;
    assert_eq!(r.status(), 200);
    assert!(
        hdr(&r, "content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let listing = r.bytes().await.unwrap();
    assert_eq!(listing, fake.listing(&rel.artifact_dir).unwrap());
    assert!(String::from_utf8_lossy(&listing).contains("<a href=\"1.0/\""));
    let r = get(&c, &p, "org/example/nothing-here/").await;
    let (status, ct) = (r.status(), hdr(&r, "content-type"));
    assert_plain_404(
        status,
        ct.as_deref(),
        &r.bytes().await.unwrap(),
        "missing directory",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_client_tokens_maven_gets_a_basic_challenge_never_a_403_or_404() {
    let fake = FakeMaven::start().await;
    let rel = fake.add_release(G, "lib", "1.0", Checksums::central());
    let maven = format!("[maven]\n{}", member("central", &fake, ""));
    let p = Proxy::start_full(&[], "client_tokens = [\"tok-0123456789\"]", &maven).await;
    let c = client();
    // maven-resolver sends no credentials until challenged (MVN-C3).
    for path in [
        &rel.jar,
        &rel.pom,
        &rel.metadata,
        &format!("{}.sha1", rel.jar),
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let r = c
                .request(method.clone(), url(&p, path))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{method} {path}");
            let challenge = hdr(&r, "www-authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with("Basic realm="),
                "{method} {path}: {challenge:?}"
            );
        }
    }
    let wrong = c
        .get(url(&p, &rel.jar))
        .basic_auth("deploy", Some("tok-wrong-000"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        fake.total_hits(),
        0,
        "unauthenticated requests never reach the upstream"
    );
    // settings.xml <server> credentials: any user name, the token as password.
    let ok = c
        .get(url(&p, &rel.jar))
        .basic_auth("deploy", Some("tok-0123456789"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.unwrap(), fake.file(&rel.jar).unwrap());
}
