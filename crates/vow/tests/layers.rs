//! The shape of the code, checked from its source (see ARCHITECTURE.md): no import cycle
//! between the top-level modules of `crates/vow/src`, `AppState` known only to the HTTP edge,
//! and SQL only in the database layer, the embedded block store and the files listed below,
//! which still hold some (a list that may only shrink).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules that make up the HTTP edge: the only ones that may know `AppState`.
const EDGE: &[&str] = &["cli", "server", "state", "web", "wellknown", "xrpc"];

/// Files outside `db/` and `storage.rs` that run SQL themselves: none. A file that needs to
/// can be listed here while its queries move.
const SQL_NOT_YET_MOVED: &[&str] = &[];

fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut todo = vec![root.clone()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path: PathBuf = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
                // Comments may name any module; only code counts.
                let code: String = std::fs::read_to_string(&path)
                    .unwrap()
                    .lines()
                    .map(|l| l.split("//").next().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("\n");
                out.push((rel, code));
            }
        }
    }
    out
}

fn top_module(rel: &str) -> &str {
    rel.split('/').next().unwrap().trim_end_matches(".rs")
}

/// Top-level module → the top-level modules it refers to (`crate::x`).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, code) in sources() {
        let from = top_module(&rel);
        if from == "lib" || from == "main" {
            continue;
        }
        let deps = g.entry(from.to_owned()).or_default();
        for part in code.split("crate::").skip(1) {
            let to: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !to.is_empty() && to != from {
                deps.insert(to);
            }
        }
    }
    g
}

#[test]
fn no_import_cycles_between_modules() {
    let g = graph();
    // Depth-first search with colours: grey = on the current path.
    fn visit<'a>(
        n: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        colour: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        colour.insert(n, 1);
        path.push(n);
        for m in g.get(n).into_iter().flatten() {
            match colour.get(m.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|p| p == m).unwrap();
                    let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, g, colour, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        colour.insert(n, 2);
        None
    }
    let mut colour = BTreeMap::new();
    for n in g.keys() {
        if !colour.contains_key(n.as_str())
            && let Some(cycle) = visit(n, &g, &mut colour, &mut Vec::new())
        {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn only_the_http_edge_knows_app_state() {
    for (module, deps) in graph() {
        if deps.contains("state") || deps.contains("server") {
            assert!(EDGE.contains(&module.as_str()), "{module} imports the application state or the router");
        }
    }
}

#[test]
fn sql_lives_in_the_database_layer() {
    let mut found = BTreeSet::new();
    for (rel, code) in sources() {
        if code.contains("sqlx::query") && !rel.starts_with("db/") && rel != "storage.rs" {
            found.insert(rel);
        }
    }
    for rel in &found {
        assert!(SQL_NOT_YET_MOVED.contains(&rel.as_str()), "{rel} runs SQL itself: put it in db/");
    }
    for rel in SQL_NOT_YET_MOVED {
        assert!(found.contains(*rel), "{rel} no longer runs SQL: take it off SQL_NOT_YET_MOVED");
    }
}
