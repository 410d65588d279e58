//! The server's module graph has no cycles.
//!
//! Each source file under `server/` is a module (`backend/batch.rs` is
//! `backend::batch`). A file that names another module's item through a
//! `crate::` or `super::` path depends on that module. A module may use its
//! ancestors (where shared types live) and its own descendants (which it
//! declares); any other dependency is lifted to the two siblings under the
//! closest common ancestor (`model_config::complete` naming
//! `grpc::inference::PLATFORM` makes `model_config` depend on `grpc`). Among
//! the siblings of each module, those dependencies must form no cycle, so
//! every layer can be read, tested and replaced from the bottom up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `server/a/b.rs` or `server/a/b/mod.rs` → `["a", "b"]`; lib.rs and
/// main.rs are the root.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).expect("file is under the root");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file has a name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("server/ is readable") {
        let path = entry.expect("directory entries are readable").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::a::b` and `super::a` path in `source`, as module paths
/// from the crate root (the trailing item name included; callers match the
/// longest known module prefix). Grouped imports (`crate::a::{b, c::d}`)
/// are expanded one level, which is all the code base uses.
fn referenced_paths(module: &[String], source: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let code: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let at_word = i == 0 || !ident(bytes[i - 1]);
        let rest = &code[i..];
        let (base, skip) = if at_word && rest.starts_with("crate::") {
            (Vec::new(), "crate::".len())
        } else if at_word && rest.starts_with("super::") {
            // `super` of `a/b.rs` (module `a::b`) is `a`.
            let mut base = module.to_vec();
            let mut skip = 0;
            let mut r = rest;
            while r.starts_with("super::") {
                base.pop();
                skip += "super::".len();
                r = &r["super::".len()..];
            }
            (base, skip)
        } else {
            i += 1;
            continue;
        };
        i += skip;
        let mut path = base;
        loop {
            if code[i..].starts_with('{') {
                // Grouped members, one level deep: each is a path of its own.
                let end = code[i..].find('}').map_or(code.len(), |e| i + e);
                for member in code[i + 1..end].split(',') {
                    let mut p = path.clone();
                    p.extend(
                        member
                            .trim()
                            .split("::")
                            .map(|s| s.trim().trim_matches('{').to_string())
                            .filter(|s| !s.is_empty() && s != "self"),
                    );
                    found.push(p);
                }
                i = end;
                path.clear();
                break;
            }
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            if start == i {
                break;
            }
            path.push(code[start..i].to_string());
            if code[i..].starts_with("::") {
                i += 2;
            } else {
                break;
            }
        }
        if !path.is_empty() {
            found.push(path);
        }
    }
    found
}

#[test]
fn server_modules_form_no_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("server");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&root, f)).collect();

    // Dependencies between siblings, keyed by their parent.
    let mut edges: BTreeMap<Vec<String>, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut witness: BTreeMap<(Vec<String>, String, String), String> = BTreeMap::new();
    for file in &files {
        let from = module_of(&root, file);
        let source = std::fs::read_to_string(file).expect("source is readable");
        // Test modules may reach anywhere.
        let source = source.split("#[cfg(test)]").next().unwrap_or("");
        for path in referenced_paths(&from, source) {
            // The longest prefix that is a module.
            let Some(to) = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p))
            else {
                continue;
            };
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            // Ancestors and descendants are allowed.
            if common == from.len() || common == to.len() {
                continue;
            }
            let parent = from[..common].to_vec();
            let (a, b) = (from[common].clone(), to[common].clone());
            witness
                .entry((parent.clone(), a.clone(), b.clone()))
                .or_insert_with(|| format!("{} uses {}", file.display(), path.join("::")));
            edges.entry(parent).or_default().insert((a, b));
        }
    }

    let mut cycles = Vec::new();
    for (parent, pairs) in &edges {
        // A cycle exists iff some edge a→b has b reaching a.
        let reach = |from: &str, target: &str| {
            let mut seen = BTreeSet::new();
            let mut stack = vec![from.to_string()];
            while let Some(m) = stack.pop() {
                if m == target {
                    return true;
                }
                if seen.insert(m.clone()) {
                    stack.extend(
                        pairs
                            .iter()
                            .filter(|(x, _)| *x == m)
                            .map(|(_, y)| y.clone()),
                    );
                }
            }
            false
        };
        for (a, b) in pairs {
            if reach(b, a) {
                cycles.push(format!(
                    "in crate::{}: {a} -> {b} ({}) and {b} reaches {a} back",
                    parent.join("::"),
                    witness[&(parent.clone(), a.clone(), b.clone())]
                ));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "import cycles between modules:\n{}",
        cycles.join("\n")
    );
}
