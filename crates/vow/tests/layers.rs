//! The shape of the code, checked from its source (see ARCHITECTURE.md): each module uses
//! only its own floor and those below it, no import cycle between modules (a top-level module,
//! or a child of `http/`, `service/` or `store/`), `AppState` known only to the HTTP edge and
//! the composition, and SQL only in the database layer and the embedded block store.
//! References are read from `crate::` paths in code (comments excluded); `super::` stays
//! inside a module, which is checked below too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files outside `store/db/` and `store/blocks.rs` that run SQL themselves: none. A file that needs to
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

/// The folders whose children are units of their own: `http/xrpc`, `service/repo`, `store/db`.
const FLOOR_DIRS: &[&str] = &["http", "service", "store"];

/// The unit a source file belongs to: a top-level module, or a child of a floor folder.
fn unit_of(rel: &str) -> String {
    let parts: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
    match parts.as_slice() {
        [floor, "mod"] | [floor] => floor.to_string(),
        [floor, child, ..] if FLOOR_DIRS.contains(floor) => format!("{floor}/{child}"),
        [top, ..] => top.to_string(),
        [] => unreachable!(),
    }
}

/// The floor a unit stands on, top (1) to bottom (5). A unit may use its own floor and those
/// below it.
fn floor_of(unit: &str) -> u8 {
    match unit.split('/').next().unwrap() {
        "cli" | "http" => 1,
        "state" => 2,
        "service" => 3,
        "store" => 4,
        "config" | "error" => 5,
        other => panic!("{other}: a module outside the floors; give it a place in ARCHITECTURE.md and here"),
    }
}

/// Unit → the units it refers to (`crate::x`, or `crate::floor::child`).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, code) in sources() {
        let from = unit_of(&rel);
        if from == "lib" || from == "main" {
            continue;
        }
        let deps = g.entry(from.clone()).or_default();
        for part in code.split("crate::").skip(1) {
            let segment =
                |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
            let top = segment(part);
            let to = if FLOOR_DIRS.contains(&top.as_str()) {
                let rest = &part[top.len()..];
                assert!(!rest.starts_with("::{"), "{rel}: name each module of crate::{top} in its own `use`");
                match rest.strip_prefix("::").map(segment) {
                    Some(child) if !child.is_empty() && child.chars().next().unwrap().is_lowercase() => {
                        format!("{top}/{child}")
                    }
                    _ => top,
                }
            } else {
                top
            };
            if !to.is_empty() && to != from {
                deps.insert(to);
            }
        }
    }
    g
}

#[test]
fn every_module_uses_only_its_floor_and_those_below() {
    for (from, deps) in graph() {
        for to in deps {
            assert!(
                floor_of(&to) >= floor_of(&from),
                "{from} (floor {}) uses {to}, on floor {} above it",
                floor_of(&from),
                floor_of(&to)
            );
        }
    }
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
        if deps.contains("state") || deps.iter().any(|d| d == "http" || d.starts_with("http/")) {
            assert!(floor_of(&module) <= 2, "{module} imports the application state or the HTTP edge");
        }
    }
    // And no service or storage module names the type, under any path.
    for (rel, code) in sources() {
        if code.contains("AppState") {
            assert!(floor_of(&unit_of(&rel)) <= 2, "{rel} names AppState");
        }
    }
}

#[test]
fn super_paths_stay_inside_their_module() {
    for (rel, code) in sources() {
        let depth = rel.matches('/').count();
        // `http/xrpc/repo.rs` may reach `http/xrpc` with `super::`; `service/mime.rs` may not
        // reach `service` that way.
        let in_child_folder = depth >= 2 && FLOOR_DIRS.contains(&rel.split('/').next().unwrap());
        let in_top_folder = depth >= 1 && !FLOOR_DIRS.contains(&rel.split('/').next().unwrap());
        // A file's own tests reach it with `super::`.
        let code = code.split("#[cfg(test)]").next().unwrap();
        if code.contains("super::") {
            assert!(in_child_folder || in_top_folder, "{rel}: use a crate:: path to reach another module");
        }
    }
}

#[test]
fn sql_lives_in_the_database_layer() {
    let mut found = BTreeSet::new();
    for (rel, code) in sources() {
        if code.contains("sqlx::query") && !rel.starts_with("store/db/") && rel != "store/blocks.rs" {
            found.insert(rel);
        }
    }
    for rel in &found {
        assert!(SQL_NOT_YET_MOVED.contains(&rel.as_str()), "{rel} runs SQL itself: put it in store/db/");
    }
    for rel in SQL_NOT_YET_MOVED {
        assert!(found.contains(*rel), "{rel} no longer runs SQL: take it off SQL_NOT_YET_MOVED");
    }
}
