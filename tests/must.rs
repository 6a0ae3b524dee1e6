//! `tests/MUST.md` maps every checklist item of sections 0 to 3 to the tests that show it.
//! This test fails when a MUST item has no row or a row names a test that does not exist.

use std::collections::BTreeSet;
use std::path::Path;

/// The MUST items of sections 0 to 3, used when `shared/` is not beside the checkout.
const KNOWN_MUST: &[&str] = &[
    "X-01", "X-03", "X-04", "X-06", "OCI-R1", "OCI-R3", "OCI-R4", "OCI-A1", "OCI-A2", "OCI-A3",
    "OCI-M3", "OCI-M4", "OCI-M8", "OCI-B2", "OCI-B3", "OCI-B4", "OCI-B6", "OCI-H1", "OCI-L3",
    "NPM-C2", "NPM-C4", "NPM-P1", "NPM-P2", "NPM-P4", "NPM-P5", "NPM-P6", "NPM-T1", "NPM-F1",
    "NPM-F2", "NPM-F3", "NPM-F4", "MVN-L2", "MVN-C3", "MVN-Q2", "MVN-Q4", "MVN-K1", "MVN-U2",
];

/// MUST items of sections 0 to 3 read from the checklist: items whose text says MUST.
fn must_ids(checklist: &str) -> BTreeSet<String> {
    let start = checklist.find("## 0.").unwrap_or(0);
    let end = checklist.find("## 4.").unwrap_or(checklist.len());
    let mut ids = BTreeSet::new();
    let mut current: Option<(String, String)> = None;
    for line in checklist[start..end].lines() {
        let id = line.split_whitespace().next().unwrap_or("");
        let is_item = ["X-", "OCI-", "NPM-", "MVN-"]
            .iter()
            .any(|p| id.starts_with(p))
            && id[id.find('-').unwrap_or(0) + 1..]
                .chars()
                .any(|c| c.is_ascii_digit());
        if is_item {
            if let Some((id, text)) = current.take() {
                if text.contains("MUST") {
                    ids.insert(id);
                }
            }
            current = Some((id.to_owned(), line.to_owned()));
        } else if let Some((_, text)) = &mut current {
            if line.starts_with("## ") || line.starts_with("### ") {
                let (id, text) = current.take().unwrap_or_default();
                if text.contains("MUST") {
                    ids.insert(id);
                }
            } else {
                text.push('\n');
                text.push_str(line);
            }
        }
    }
    if let Some((id, text)) = current {
        if text.contains("MUST") {
            ids.insert(id);
        }
    }
    ids
}

fn sources(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

#[test]
fn every_must_item_has_a_row_naming_existing_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = std::fs::read_to_string(root.join("tests/MUST.md")).unwrap();
    let checklist = root.join("../shared/protocols-checklist.md");
    let mut required: BTreeSet<String> = KNOWN_MUST.iter().map(|s| (*s).to_owned()).collect();
    if let Ok(text) = std::fs::read_to_string(&checklist) {
        let from_file = must_ids(&text);
        assert!(
            from_file.len() >= KNOWN_MUST.len() / 2,
            "could not read MUST items from {}",
            checklist.display()
        );
        required.extend(from_file);
    } else {
        eprintln!(
            "{} not found; checking the built-in list of MUST items",
            checklist.display()
        );
    }
    let mut code = String::new();
    sources(&root.join("tests"), &mut code);
    sources(&root.join("src"), &mut code);
    sources(&root.join("protocols"), &mut code);
    let mut rows = BTreeSet::new();
    for line in table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| ID") && !l.starts_with("|---"))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (id, tests) = (cells[1], cells[3]);
        let names: Vec<&str> = tests.split('`').skip(1).step_by(2).collect();
        assert!(!names.is_empty(), "{id}: the row names no test");
        for name in names {
            let func = name.rsplit("::").next().unwrap();
            assert!(
                code.contains(&format!("fn {func}(")),
                "{id}: test `{name}` does not exist"
            );
        }
        rows.insert(id.to_owned());
    }
    let missing: Vec<_> = required.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "MUST items without a row in tests/MUST.md: {missing:?}"
    );
}
