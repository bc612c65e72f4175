//! Embeds every lexicon under `lexicons/` into the library, so the binary carries its schemas.

use std::fmt::Write;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("lexicons dir").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("lexicons");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &mut files);
    let mut code =
        String::from("/// Every bundled lexicon document, as JSON text.\npub static BUNDLED: &[&str] = &[\n");
    for file in &files {
        writeln!(code, "    include_str!({:?}),", file.display().to_string()).expect("write to String");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("bundled_lexicons.rs");
    std::fs::write(out, code).expect("write bundled_lexicons.rs");
}
