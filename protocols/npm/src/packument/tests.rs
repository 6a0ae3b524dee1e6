use super::*;

/// A packument shaped like a real full document (no registry host names): `n` versions with
/// dependencies, `dist` with integrity, shasum, signatures and a tarball URL, a `time` map, a
/// readme full of escapes, and decoy `dist` objects where the scan must not look.
pub(crate) fn fixture(name: &str, n: usize) -> String {
    let unscoped = name.rsplit('/').next().unwrap_or(name);
    let mut versions = Vec::new();
    let mut time = vec![
        r#""created":"2015-01-01T00:00:00.000Z""#.to_owned(),
        r#""modified":"2024-06-01T12:34:56.789Z""#.to_owned(),
    ];
    for i in 0..n {
        let v = match i % 4 {
            0 => format!("{}.{}.0", i / 10, i % 10),
            1 => format!("{}.{}.1-rc.{i}", i / 10, i % 10),
            2 => format!("{}.{}.2+build.{i}", i / 10, i % 10),
            _ => format!("{}.{}.3-beta.1+exp.sha.5114f85", i / 10, i % 10),
        };
        versions.push(format!(
            r#""{v}":{{"name":"{name}","version":"{v}","description":"Version {v} \"quoted\" \u00e9\ud83d\ude00","main":"index.js","scripts":{{"test":"node test.js","dist":{{"tarball":"decoy"}}}},"dependencies":{{"dep-a":"^1.0.0","@s/dep-b":"~2.{i}.0"}},"engines":{{"node":">=14"}},"_hasShrinkwrap":false,"dist":{{"integrity":"sha512-{i:0>86}==","shasum":"{i:0>40}","tarball":"https://upstream.invalid/{name}/-/{unscoped}-{v}.tgz","fileCount":{i},"unpackedSize":{},"signatures":[{{"keyid":"SHA256:key","sig":"MEUCIQ{i}"}}]}},"deprecated":null,"size":-1.5e3}}"#,
            i * 1000 + 17
        ));
        time.push(format!(
            r#""{v}":"2020-01-{:02}T00:00:00.{i:03}Z""#,
            i % 28 + 1
        ));
    }
    format!(
        "{{\"_id\":\"{name}\",\"_rev\":\"12-abc\",\"name\":\"{name}\",\"dist\":{{\"tarball\":\"decoy\"}},\"dist-tags\":{{\"latest\":\"1.0.0\"}},\n \"versions\":{{{}}},\"time\":{{{}}},\"readme\":\"# {name}\\n\\n\\tTabs \\\\ slashes \\/ \\u0041\\r\\n\",\"maintainers\":[{{\"name\":\"a\",\"email\":\"a@example.invalid\"}}],\"users\":{{}},\"keywords\":[true,false,null,0,-0.5,1E+2,[[]]]}}",
        versions.join(","),
        time.join(",")
    )
}

#[test]
fn negotiation() {
    fn check(input: &[&str], expected: Representation) {
        assert_eq!(negotiate(input.iter().copied()), expected, "{input:?}");
    }
    use Representation::{Abbreviated, Full};
    // pacote, pnpm and yarn v1 defaults (NPM-P2).
    check(
        &["application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"],
        Abbreviated,
    );
    check(&["application/vnd.npm.install-v1+json"], Abbreviated);
    check(&["Application/VND.npm.Install-V1+JSON"], Abbreviated);
    check(
        &[
            "application/json;q=0.5",
            "application/vnd.npm.install-v1+json",
        ],
        Abbreviated,
    );
    check(
        &["application/vnd.npm.install-v1+json;q=0.9,application/json;q=0.9"],
        Abbreviated,
    );
    check(
        &["application/vnd.npm.install-v1+json ; charset=utf-8 ; q=0.5 , text/html;q=0.1"],
        Abbreviated,
    );
    // Full: pnpm's full-metadata Accept, plain JSON, wildcards, nothing, nonsense.
    check(&["application/json; q=1.0, */*"], Full);
    check(&["application/json"], Full);
    check(&["*/*"], Full);
    check(&[], Full);
    check(&[""], Full);
    check(&["text/html"], Full);
    check(
        &["application/vnd.npm.install-v1+json;q=0.8, application/json"],
        Full,
    );
    check(&["application/vnd.npm.install-v1+json;q=0.8, */*"], Full);
    check(&["application/vnd.npm.install-v1+json;q=0"], Full);
    check(&["application/vnd.npm.install-v1+json;q=abc"], Full);
    check(&["application/vnd.npm.install-v1+json;q=1.5"], Full);
    check(
        &[
            "application/vnd.npm.install-v1+json",
            "application/json;q=x",
        ],
        Full,
    );
    check(&["application/vnd.npm.install-v1+jsonx"], Full);

    assert_eq!(parse_q("0.123"), Some(123));
    assert_eq!(parse_q("0.1"), Some(100));
    assert_eq!(parse_q("1.000"), Some(1000));
    assert_eq!(parse_q("1"), Some(1000));
    assert_eq!(parse_q("0"), Some(0));
    assert_eq!(parse_q("1.001"), None);
    assert_eq!(parse_q("0.1234"), None);
    assert_eq!(parse_q(""), None);
    assert_eq!(parse_q(".5"), None);
}

#[test]
fn representations() {
    use Representation::{Abbreviated, Full};
    assert_eq!(Abbreviated.content_type(), ABBREVIATED);
    assert_eq!(Full.content_type(), "application/json");
    assert_eq!(
        negotiate([Abbreviated.upstream_accept()]),
        Abbreviated,
        "our own upstream Accept must ask for what it names"
    );
    assert_eq!(negotiate([Full.upstream_accept()]), Full);
    assert_eq!(
        (Abbreviated.as_str(), Full.as_str()),
        ("abbreviated", "full")
    );
}

/// Compact rendering of a scan: `name | v:tarball:integrity:shasum ... | spans`.
fn summary(doc: &str, s: &Scan) -> String {
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let dists: Vec<String> = s
        .dists
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{}:{}",
                d.version,
                opt(&d.tarball),
                opt(&d.integrity),
                opt(&d.shasum)
            )
        })
        .collect();
    let spans: Vec<String> = s
        .spans
        .iter()
        .map(|sp| format!("{}={}", sp.version, &doc[sp.start..sp.end]))
        .collect();
    format!(
        "{} | {} | {}",
        opt(&s.name),
        dists.join(" "),
        spans.join(" ")
    )
}

fn check(doc: &str, expected: Result<&str, &str>) {
    let actual = scan(doc.as_bytes());
    match (&actual, expected) {
        (Ok(s), Ok(e)) => assert_eq!(summary(doc, s), e, "{doc:?}"),
        (Err(Error::DocumentInvalid(m)), Err(e)) => {
            assert!(m.contains(e), "{doc:?}: {m:?} does not mention {e:?}");
        }
        _ => panic!("{doc:?}: got {actual:?}, expected {expected:?}"),
    }
}

#[test]
fn scans() {
    check(r#"{}"#, Ok("- |  | "));
    check(r#" {"name":"x"} "#, Ok("x |  | "));
    check(
        r#"{"name":"x","versions":{"1.0.0":{"dist":{"tarball":"u1","integrity":"i1","shasum":"s1"}}}}"#,
        Ok(r#"x | 1.0.0:u1:i1:s1 | 1.0.0="u1""#),
    );
    // Whitespace everywhere, and key order does not matter.
    check(
        "{ \"versions\" : { \"1\" : { \"dist\" : { \"shasum\" : \"s\" , \"tarball\" : \"u\" } } } ,\n\"name\":\"n\"}\n",
        Ok(r#"n | 1:u:-:s | 1="u""#),
    );
    // Versions without dist or with odd dists still appear; non-object versions do not.
    check(
        r#"{"versions":{"1":{},"2":null,"3":{"dist":null},"4":{"dist":{"tarball":5}},"5":[]}}"#,
        Ok("- | 1:-:-:- 3:-:-:- 4:-:-:- | "),
    );
    // Escapes are decoded in values; the span keeps the raw bytes.
    check(
        r#"{"name":"a\u0062c","versions":{"1\u002e0":{"dist":{"tarball":"h:\/\/x\"y\\z\u00e9\ud83d\ude00"}}}}"#,
        Ok(r#"abc | 1.0:h://x"y\zé😀:-:- | 1.0="h:\/\/x\"y\\z\u00e9\ud83d\ude00""#),
    );
    // Escaped keys are the same keys.
    check(
        r#"{"n\u0061me":"x","\u0076ersions":{"1":{"d\u0069st":{"t\u0061rball":"u"}}}}"#,
        Ok(r#"x | 1:u:-:- | 1="u""#),
    );
    // Only versions.<v>.dist counts; decoys elsewhere are data.
    check(
        r#"{"dist":{"tarball":"a"},"x":{"versions":{"1":{"dist":{"tarball":"b"}}}},"versions":{"1":{"x":{"dist":{"tarball":"c"}},"dist":{"x":{"tarball":"d"},"tarball":"e"}}}}"#,
        Ok(r#"- | 1:e:-:- | 1="e""#),
    );
    // Duplicates: last wins for values, every tarball span is recorded.
    check(
        r#"{"name":"a","name":"b","versions":{"1":{"dist":{"tarball":"x","tarball":"y"}},"2":{},"1":{"dist":{"integrity":"i"}}}}"#,
        Ok(r#"b | 1:-:i:- 2:-:-:- | 1="x" 1="y""#),
    );
    check(
        r#"{"versions":{"1":{"dist":{"tarball":"x"},"dist":{"shasum":"s"}}}}"#,
        Ok(r#"- | 1:-:-:s | 1="x""#),
    );
    check(
        r#"{"versions":{"1":{"dist":{"tarball":"x"}}},"versions":{"2":{}}}"#,
        Ok(r#"- | 2:-:-:- | 1="x""#),
    );
    check(
        r#"{"versions":{"1":{"dist":{"tarball":"x"}},"1":5}}"#,
        Ok(r#"- |  | 1="x""#),
    );
    check(r#"{"name":"a","name":1}"#, Ok("- |  | "));
    check(r#"{"versions":[]}"#, Ok("- |  | "));
    // Every JSON value kind is accepted.
    check(
        r#"{"a":[1,-0,0.5,1e5,1E-5,-1.5e+3,true,false,null,"s",{},[],[{}]],"b":{"c":{"d":[]}}}"#,
        Ok("- |  | "),
    );
}

#[test]
fn scan_rejects() {
    for (doc, why) in [
        ("", "top level is not an object"),
        ("[]", "top level is not an object"),
        ("\"x\"", "top level is not an object"),
        ("null", "top level is not an object"),
        ("\u{feff}{}", "top level is not an object"),
        ("{", "expected a key"),
        ("{}}", "trailing data"),
        ("{} x", "trailing data"),
        ("{}{}", "trailing data"),
        (r#"{"a"}"#, "expected ':'"),
        (r#"{"a":}"#, "expected a value"),
        (r#"{"a":1,}"#, "expected a key"),
        (r#"{"a":[1,]}"#, "expected a value"),
        (r#"{"a":[1 2]}"#, "expected ',' or ']'"),
        (r#"{"a":1 "b":2}"#, "expected ',' or '}'"),
        (r#"{a:1}"#, "expected a key"),
        (r#"{'a':1}"#, "expected a key"),
        (r#"{"a":01}"#, "expected ',' or '}'"),
        (r#"{"a":-}"#, "invalid number"),
        (r#"{"a":1.}"#, "invalid number"),
        (r#"{"a":.5}"#, "expected a value"),
        (r#"{"a":1e}"#, "invalid number"),
        (r#"{"a":+1}"#, "expected a value"),
        (r#"{"a":NaN}"#, "expected a value"),
        (r#"{"a":tru}"#, "invalid literal"),
        (r#"{"a":nul"#, "invalid literal"),
        (r#"{"a":"x}"#, "unterminated string"),
        ("{\"a\":\"x\ny\"}", "control character"),
        ("{\"a\":\"x\ty\"}", "control character"),
        (r#"{"a":"\x"}"#, "invalid escape"),
        (r#"{"a":"\u12"}"#, "invalid unicode escape"),
        (r#"{"a":"\u12g4"}"#, "invalid unicode escape"),
        (r#"{"a":"\ud83d"}"#, "invalid unicode escape"),
        (r#"{"a":"\ud83dx"}"#, "invalid unicode escape"),
        (r#"{"a":"\ud83d\u0041"}"#, "invalid unicode escape"),
        (r#"{"a":"\ude00"}"#, "invalid unicode escape"),
        (
            r#"{"versions":{"1":{"dist":{"tarball":"\ud800"}}}}"#,
            "invalid unicode escape",
        ),
        (r#"{"a":"x"#, "unterminated string"),
        (r#"{"a":1"#, "expected ',' or '}'"),
    ] {
        check(doc, Err(why));
    }
    assert_eq!(
        scan(b"{\"a\":\"\xff\"}"),
        Err(Error::DocumentInvalid("invalid utf-8 at byte 6".into()))
    );
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(511), "]".repeat(511));
    assert!(scan(deep.as_bytes()).is_ok());
    let deeper = format!("{{\"a\":{}{}}}", "[".repeat(512), "]".repeat(512));
    check(&deeper, Err("nesting too deep"));
    // Far deeper than the stack could take if the limit were missing.
    let hostile = format!("{{\"a\":{}", "[{\"a\":".repeat(1_000_000));
    check(&hostile, Err("nesting too deep"));
}

#[test]
fn fixture_scan_agrees_with_serde() {
    let doc = fixture("@scope/pkg", 40);
    let s = scan(doc.as_bytes()).unwrap();
    let value: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(s.name.as_deref(), value["name"].as_str());
    let versions = value["versions"].as_object().unwrap();
    assert_eq!(s.dists.len(), versions.len());
    assert_eq!(s.spans.len(), versions.len());
    for d in &s.dists {
        let dist = &versions[&d.version]["dist"];
        assert_eq!(d.tarball.as_deref(), dist["tarball"].as_str());
        assert_eq!(d.integrity.as_deref(), dist["integrity"].as_str());
        assert_eq!(d.shasum.as_deref(), dist["shasum"].as_str());
    }
    for w in s.spans.windows(2) {
        assert!(w[0].end <= w[1].start);
    }
    let dist = s.dist("0.1.1-rc.1").unwrap();
    assert_eq!(
        dist.tarball.as_deref(),
        Some("https://upstream.invalid/@scope/pkg/-/pkg-0.1.1-rc.1.tgz")
    );
    assert_eq!(
        s.dist_for_file("pkg-0.3.3-beta.1+exp.sha.5114f85.tgz")
            .map(|d| d.version.as_str()),
        Some("0.3.3-beta.1+exp.sha.5114f85")
    );
    assert_eq!(s.dist_for_file("pkg-9.9.9.tgz"), None);
    assert_eq!(s.dist("9.9.9"), None);
}

#[test]
fn rewriting() {
    let doc = fixture("@scope/pkg", 25);
    let bytes = doc.as_bytes();
    let s = scan(bytes).unwrap();
    let name: PackageName = "@scope/pkg".parse().unwrap();
    let base = "http://proxy.invalid:8080/npm/";
    let out = rewrite(bytes, &s.spans, |span| {
        tarball_url(base, &name, &span.version)
    });

    // Every byte outside the spans is unchanged, in order.
    let mut outside = Vec::new();
    let mut at = 0;
    for span in &s.spans {
        outside.extend_from_slice(&bytes[at..span.start]);
        at = span.end;
    }
    outside.extend_from_slice(&bytes[at..]);
    let again = scan(&out).unwrap();
    let mut outside_after = Vec::new();
    let mut at = 0;
    for span in &again.spans {
        outside_after.extend_from_slice(&out[at..span.start]);
        at = span.end;
    }
    outside_after.extend_from_slice(&out[at..]);
    assert_eq!(outside, outside_after);

    // The rewritten document carries the proxy URLs and nothing else changed.
    for d in &again.dists {
        assert_eq!(
            d.tarball.as_deref(),
            Some(format!("{base}@scope/pkg/-/pkg-{}.tgz", d.version).as_str())
        );
    }
    let mut before: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let after: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for (v, version) in before["versions"].as_object_mut().unwrap() {
        version["dist"]["tarball"] = tarball_url(base, &name, v).into();
    }
    assert_eq!(before, after);
    // `time` is byte-identical (NPM-P4).
    let time_of = |d: &[u8]| {
        let s = std::str::from_utf8(d).unwrap();
        let at = s.find("\"time\":").unwrap();
        s[at..at + s[at..].find('}').unwrap()].to_owned()
    };
    assert_eq!(time_of(bytes), time_of(&out));
    assert!(
        !String::from_utf8(out)
            .unwrap()
            .contains("upstream.invalid/@scope")
    );

    // Identity replacement restores the document exactly.
    let same = rewrite(bytes, &s.spans, |span| {
        s.dists
            .iter()
            .find(|d| d.version == span.version)
            .and_then(|d| d.tarball.clone())
            .unwrap_or_default()
    });
    assert_eq!(same, bytes);
    // Bogus spans are skipped rather than trusted.
    let bogus = [
        TarballSpan {
            start: 5,
            end: 3,
            version: String::new(),
        },
        TarballSpan {
            start: 0,
            end: bytes.len() + 1,
            version: String::new(),
        },
    ];
    assert_eq!(rewrite(bytes, &bogus, |_| String::new()), bytes);
}

#[test]
fn json_strings() {
    fn check(input: &str, expected: &str) {
        assert_eq!(json_string(input), expected);
        assert_eq!(
            serde_json::from_str::<String>(expected).unwrap(),
            input,
            "{input:?}"
        );
    }
    check("", r#""""#);
    check(
        "http://h:1/npm/@s/n/-/n-1.0.0+b.tgz",
        r#""http://h:1/npm/@s/n/-/n-1.0.0+b.tgz""#,
    );
    check("a\"b\\c/d", r#""a\"b\\c/d""#);
    check("\n\r\t\u{0}\u{1f}é😀", r#""\n\r\t\u0000\u001fé😀""#);
}

#[test]
fn tarball_urls() {
    let scoped: PackageName = "@types/node".parse().unwrap();
    let plain: PackageName = "react".parse().unwrap();
    assert_eq!(
        tarball_url("https://p.invalid/npm/", &scoped, "20.1.0"),
        "https://p.invalid/npm/@types/node/-/node-20.1.0.tgz"
    );
    assert_eq!(
        tarball_url("https://p.invalid/npm", &plain, "18.2.0"),
        "https://p.invalid/npm/react/-/react-18.2.0.tgz"
    );
    // The URL we write parses back to the same tarball (with the engine's prefix stripped).
    let url = tarball_url("https://p.invalid/npm/", &scoped, "1.0.0-rc.1+b");
    let path = url.strip_prefix("https://p.invalid/npm").unwrap();
    assert_eq!(
        crate::request::parse(&http::Method::GET, path),
        Ok(crate::Endpoint::Tarball {
            name: scoped,
            file: "node-1.0.0-rc.1+b.tgz".into(),
            version: Some("1.0.0-rc.1+b".into()),
        })
    );
}

/// A multi-megabyte document scans correctly; the throughput itself is measured by the
/// engine's criterion bench, and by `scan_throughput` below on request.
#[test]
fn large_document() {
    let doc = fixture("big-package", 6_000);
    assert!(doc.len() > 4_000_000, "{}", doc.len());
    let s = scan(doc.as_bytes()).unwrap();
    assert_eq!(s.dists.len(), 6_000);
    assert_eq!(s.spans.len(), 6_000);
}

/// `cargo test -p npm --release -- --ignored scan_throughput --nocapture`.
#[test]
#[ignore = "reports throughput; run in release"]
#[allow(clippy::disallowed_methods)] // a measurement, not protocol logic
fn scan_throughput() {
    let doc = fixture("big-package", 20_000);
    let start = std::time::Instant::now();
    let rounds = 10;
    for _ in 0..rounds {
        assert_eq!(scan(doc.as_bytes()).unwrap().spans.len(), 20_000);
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = (doc.len() * rounds) as f64 / 1e6;
    eprintln!("scan: {:.0} MB/s over {mb:.0} MB", mb / secs);
}
