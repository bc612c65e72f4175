//! Embeds every lexicon under `lexicons/` into the library, so the binary carries its schemas.
//!
//! Each document goes in as its text with two facts the catalog needs before parsing it: its
//! NSID (from its path, `app/bsky/feed/post.json` is `app.bsky.feed.post`) and whether its
//! main definition is a query. The catalog parses a document the first time it is used; a unit
//! test parses them all and checks both facts against the parsed documents.

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
    let mut code = String::from(
        "/// Every bundled lexicon document: (NSID, whether its main is a query, JSON text).\n\
         pub static BUNDLED: &[(&str, bool, &str)] = &[\n",
    );
    for file in &files {
        let relative = file.strip_prefix(&root).expect("under lexicons/").with_extension("");
        let nsid =
            relative.components().map(|c| c.as_os_str().to_str().expect("UTF-8 path")).collect::<Vec<_>>().join(".");
        let text = std::fs::read_to_string(file).expect("read lexicon");
        // Only a main definition may be a query, so any `"type": "query"` is main's. A quote
        // inside a description is escaped, so cannot match once whitespace is gone.
        let compact: String = text.split_whitespace().collect();
        let query = compact.contains(r#""type":"query""#);
        writeln!(code, "    ({nsid:?}, {query}, include_str!({:?})),", file.display().to_string())
            .expect("write to String");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("bundled_lexicons.rs");
    std::fs::write(out, code).expect("write bundled_lexicons.rs");
}
