//! Crate-wide properties: no parser panics on hostile input, the packument scan accepts
//! exactly the documents `serde_json` accepts and finds the same values, and whatever parses
//! renders back to itself. A small deterministic mutator stands in for proptest/cargo-fuzz so
//! the check runs in every `cargo test` with no extra dependency.

use http::Method;

use crate::packument::{self, Representation, negotiate, scan};
use crate::request::parse;
use crate::{Endpoint, Error, Integrity, PackageName, error_body};

/// Knuth's MMIX LCG; the high bits are good enough to pick mutations.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).unwrap_or_default()
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Bytes that sit on the grammar boundaries of everything in this crate.
const INTERESTING: &[u8] = b"/%@.-_+2fF40\\\0\"{}[]:,;=q eE\tuUdD8\xc3\xbc\xed";

fn mutate(rng: &mut Lcg, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        let pos = rng.below(out.len() + 1);
        let byte = INTERESTING[rng.below(INTERESTING.len())];
        match rng.below(6) {
            0 if pos < out.len() => out[pos] = byte,
            1 => out.insert(pos, byte),
            2 if pos < out.len() => {
                out.remove(pos);
            }
            3 if rng.below(4) == 0 => out.truncate(pos),
            4 if pos < out.len() => {
                // Duplicate a slice: repeated separators, keys and nesting.
                let end = (pos + rng.below(16)).min(out.len());
                let slice = out[pos..end].to_vec();
                out.splice(pos..pos, slice);
            }
            _ => out.insert(pos, u8::try_from(rng.below(256)).unwrap_or(b'x')),
        }
    }
    out
}

fn path_corpus() -> Vec<&'static str> {
    vec![
        "/react",
        "/@types%2fnode",
        "/@types%2Fnode",
        "/@types/node",
        "/%40types%2fnode",
        "/react/-/react-18.2.0.tgz",
        "/@types/node/-/node-20.1.0-rc.1+b.5.tgz",
        "/@s%2fx/-/legacy.tgz",
        "/react/latest",
        "/-/ping",
        "/-/whoami",
        "/-/npm/v1/security/advisories/bulk",
        "/-/user/org.couchdb.user:alice",
        "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*",
        "sha512-58IrmUxZ2c8rSOVJseJGZmNgRZMNPafBrLKZ0cO3+TH5Sq5B7dosKyB6NuEPi8uNRSI+VIePWzFufOO2vAGWKQ== sha1-9XLTlvrpIGYocU+yzgD3LpTyJY8=",
        "f572d396fae9206628714fb2ce00f72e94f2258f",
    ]
}

/// Renders an endpoint back to a path in one of the spellings clients use.
fn render(e: &Endpoint, spelling: usize) -> Option<String> {
    let name = |n: &PackageName| match (spelling % 3, n.scope()) {
        (0, _) => n.escaped(),
        (1, Some(scope)) => format!("@{scope}%2F{}", n.unscoped()),
        _ => n.to_string(),
    };
    Some(match e {
        Endpoint::Packument { name: n } => format!("/{}", name(n)),
        Endpoint::Version { name: n, spec } => format!("/{}/{spec}", name(n)),
        Endpoint::Tarball { name: n, file, .. } => format!("/{}/-/{file}", name(n)),
        Endpoint::Ping => "/-/ping".into(),
        Endpoint::Whoami => "/-/whoami".into(),
        _ => return None,
    })
}

/// Exercises every parser on `input`; returns whether it parsed as a request path.
fn exercise(input: &str, spelling: usize) -> bool {
    let mut parsed = false;
    for method in [Method::GET, Method::HEAD, Method::POST, Method::PUT] {
        let Ok(endpoint) = parse(&method, input) else {
            continue;
        };
        parsed = true;
        if let Some(rendered) = render(&endpoint, spelling) {
            assert_eq!(
                parse(&method, &rendered).as_ref(),
                Ok(&endpoint),
                "{input:?}"
            );
        }
        if let Some(name) = endpoint.name() {
            let full = name.to_string();
            assert!(!full.contains("..") && !full.contains('%'), "{input:?}");
            assert_eq!(full.parse::<PackageName>().as_ref(), Ok(name));
        }
        if let Endpoint::Tarball {
            name,
            file,
            version,
        } = &endpoint
        {
            assert!(file.ends_with(".tgz") && !file.contains(['/', '\\', '%', '\0']));
            if let Some(v) = version {
                assert_eq!(&name.tarball_file(v), file);
            }
        }
    }
    if let Ok(name) = input.parse::<PackageName>() {
        assert_eq!(name.to_string(), input);
        let path = format!("/{}", name.escaped());
        assert_eq!(parse(&Method::GET, &path), Ok(Endpoint::Packument { name }));
    }

    let accept = negotiate(input.split('\n'));
    if !input.to_ascii_lowercase().contains(packument::ABBREVIATED) {
        assert_eq!(accept, Representation::Full, "{input:?}");
    }
    if let Some(i) = Integrity::parse_sri(input) {
        assert_eq!(Integrity::parse_sri(&i.to_sri()), Some(i));
        assert_eq!(i.hex().len(), 2 * i.bytes().len());
    }
    if let Some(i) = Integrity::from_shasum(input) {
        assert_eq!(i.hex(), input.to_ascii_lowercase());
    }
    let body = error_body(input);
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["error"].as_str(), Some(input));
    parsed
}

#[test]
fn never_panics() {
    let mut rng = Lcg(0x5eed);
    let corpus = path_corpus();
    for (i, seed) in corpus.iter().enumerate() {
        assert!(exercise(seed, i) || !seed.starts_with('/'), "{seed:?}");
    }
    let mut parsed = 0;
    for i in 0..40_000 {
        let seed = corpus[rng.below(corpus.len())].as_bytes();
        let mutated = mutate(&mut rng, seed);
        parsed += usize::from(exercise(&String::from_utf8_lossy(&mutated), i));
    }
    // Mutations must not be so destructive that only the error paths are exercised.
    assert!(parsed > 5_000, "only {parsed} mutated paths parsed");
}

/// The scan accepts exactly what `serde_json` accepts (for objects) and finds the same
/// values; it never panics on anything.
#[test]
fn scan_agrees_with_serde_json() {
    let mut rng = Lcg(0xd0c);
    let seeds = [
        packument::tests::fixture("@s/p", 3),
        packument::tests::fixture("p", 1),
        r#"{"name":"x","versions":{"1.0.0":{"dist":{"tarball":"a\u00e9\ud83d\ude00","shasum":"s"}}},"time":{"1.0.0":"t"}}"#.to_owned(),
        r#"{"a":[1,-0.5e+3,true,false,null,{"b":[]}],"versions":{"1":{"dist":{"integrity":"i"}},"2":3}}"#.to_owned(),
    ];
    let mut valid = 0;
    for _ in 0..20_000 {
        let seed = seeds[rng.below(seeds.len())].as_bytes();
        let doc = mutate(&mut rng, seed);
        let ours = scan(&doc);
        let theirs = serde_json::from_slice::<serde_json::Value>(&doc);
        match (&ours, &theirs) {
            (Ok(s), Ok(value)) => {
                valid += 1;
                check_against(&doc, s, value);
            }
            (Err(Error::DocumentInvalid(_)), Err(_)) => {}
            (Err(Error::DocumentInvalid(_)), Ok(value)) if !value.is_object() => {}
            (Ok(_), Err(e)) if e.to_string().contains("out of range") => {}
            _ => panic!(
                "disagreement on {:?}: ours {ours:?}, serde_json {theirs:?}",
                String::from_utf8_lossy(&doc)
            ),
        }
    }
    assert!(valid > 1_000, "only {valid} mutated documents were valid");
}

fn check_against(doc: &[u8], s: &packument::Scan, value: &serde_json::Value) {
    assert_eq!(s.name.as_deref(), value["name"].as_str());
    let versions = value["versions"].as_object();
    let expected: Vec<_> = versions
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.is_object())
        .map(|(k, v)| {
            let field = |f: &str| v["dist"][f].as_str().map(str::to_owned);
            (
                k.clone(),
                field("tarball"),
                field("integrity"),
                field("shasum"),
            )
        })
        .collect();
    let mut actual: Vec<_> = s
        .dists
        .iter()
        .map(|d| {
            (
                d.version.clone(),
                d.tarball.clone(),
                d.integrity.clone(),
                d.shasum.clone(),
            )
        })
        .collect();
    actual.sort();
    assert_eq!(actual, expected, "{:?}", String::from_utf8_lossy(doc));
    for span in &s.spans {
        let literal = &doc[span.start..span.end];
        assert!(serde_json::from_slice::<String>(literal).is_ok());
    }
}
