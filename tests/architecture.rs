//! The shape design §2 and docs/architecture.md promise, checked on the
//! source: top-level modules depend one way (no import cycles), the pure
//! layers do no I/O, the gateway core is sans-I/O, and no file grows past
//! what one reader holds in mind. A change that breaks one of these fails
//! here, not in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Largest file, in lines of code before its `#[cfg(test)]` module.
const MAX_LINES: usize = 800;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src/ is readable") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `(path relative to src/, code before the test module, comments removed)`.
fn files() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("source is UTF-8");
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let code: String = code
                .lines()
                .map(|l| match l.find("//") {
                    Some(i) => &l[..i],
                    None => l,
                })
                .collect::<Vec<_>>()
                .join("\n");
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            (rel, code)
        })
        .collect()
}

fn top_module(rel: &str) -> &str {
    let first = rel.split('/').next().unwrap();
    first.strip_suffix(".rs").unwrap_or(first)
}

/// The top-level modules `code` names: `crate::x` anywhere, and each name
/// of a `use crate::{x, y::z}` group.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            out.insert(ident(item.trim()));
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out.remove("self");
    out
}

#[test]
fn top_level_modules_have_no_import_cycles() {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, code) in files() {
        let top = top_module(&rel).to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let refs = crate_refs(&code);
        let entry = deps.entry(top.clone()).or_default();
        entry.extend(refs.into_iter().filter(|r| *r != top));
    }
    // A module is in a cycle if it reaches itself.
    for start in deps.keys() {
        let mut stack: Vec<(&String, Vec<&String>)> = vec![(start, vec![start])];
        let mut seen = BTreeSet::new();
        while let Some((m, path)) = stack.pop() {
            for d in deps.get(m).into_iter().flatten() {
                assert!(
                    d != start,
                    "import cycle: {} -> {start}",
                    path.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" -> ")
                );
                if seen.insert(d) {
                    let mut p = path.clone();
                    p.push(d);
                    stack.push((d, p));
                }
            }
        }
    }
    // The check sees the edges it must: the parser is below everything.
    assert!(deps["transport"].contains("sip"));
    assert!(!deps["sip"].contains("transport"));
}

#[test]
fn pure_layers_do_no_io() {
    // sip/ and body/ (design §2): bytes to values and back. The gateway
    // core (docs/architecture.md): events in, effects out.
    let pure = |rel: &str| {
        rel.starts_with("sip/")
            || rel.starts_with("body/")
            || [
                "gateway/core.rs",
                "gateway/cpim_to_sip.rs",
                "gateway/sip_to_cpim.rs",
                "gateway/effects.rs",
                "gateway/held.rs",
            ]
            .contains(&rel)
    };
    let forbidden = [
        "tokio",
        "std::fs",
        "std::thread",
        "UdpSocket",
        "TcpStream",
        "::now()",
        "now_ms",
        "crate::transport",
        "crate::delivery",
        "crate::store::Store",
        "Arc<dyn Store>",
        "TransactionLayer",
        "ServerTransaction",
    ];
    let mut checked = 0;
    for (rel, code) in files() {
        if !pure(&rel) {
            continue;
        }
        checked += 1;
        for f in forbidden {
            assert!(!code.contains(f), "src/{rel} is pure but uses {f}");
        }
    }
    assert!(checked >= 20, "the pure files were found ({checked})");
}

#[test]
fn no_file_is_too_long_to_read() {
    for (rel, code) in files() {
        let n = code.lines().count();
        assert!(
            n <= MAX_LINES,
            "src/{rel}: {n} lines of code (at most {MAX_LINES}); split it along a seam"
        );
    }
}
