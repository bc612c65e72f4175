use super::string_type;

string_type!(
    /// A BCP-47 language tag (RFC 5646), e.g. `en`, `pt-BR`, `zh-Hant`.
    Language, "language tag", check_language
);

/// Grandfathered tags (RFC 5646 §2.2.8) that do not follow the general grammar.
const GRANDFATHERED: &[&str] = &[
    "en-gb-oed",
    "i-ami",
    "i-bnn",
    "i-default",
    "i-enochian",
    "i-hak",
    "i-klingon",
    "i-lux",
    "i-mingo",
    "i-navajo",
    "i-pwn",
    "i-tao",
    "i-tay",
    "i-tsu",
    "sgn-be-fr",
    "sgn-be-nl",
    "sgn-ch-de",
    "art-lojban",
    "cel-gaulish",
    "no-bok",
    "no-nyn",
    "zh-guoyu",
    "zh-hakka",
    "zh-min",
    "zh-min-nan",
    "zh-xiang",
];

fn alpha(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphabetic())
}
fn alnum(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}
fn digit(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

fn check_private_use(subtags: &[&str]) -> Result<(), String> {
    if subtags.is_empty() || subtags.iter().any(|t| t.is_empty() || t.len() > 8 || !alnum(t)) {
        return Err("private-use subtags must be 1 to 8 letters or digits".into());
    }
    Ok(())
}

fn check_language(s: &str) -> Result<(), String> {
    if s.len() > 128 {
        return Err("too long".into());
    }
    if GRANDFATHERED.contains(&s.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    let tags: Vec<&str> = s.split('-').collect();
    if tags.iter().any(|t| t.is_empty()) {
        return Err("empty subtag".into());
    }
    if tags[0].eq_ignore_ascii_case("x") {
        return check_private_use(&tags[1..]);
    }
    let primary = tags[0];
    let primary_ok = matches!(primary.len(), 2 | 3 | 5..=8) && primary.bytes().all(|b| b.is_ascii_lowercase());
    if !primary_ok {
        return Err("primary language must be 2-3 or 5-8 lowercase letters".into());
    }
    let mut i = 1;
    // Extended language subtags: up to three of 3 letters, only after a 2-3 letter language.
    let mut extlangs = 0;
    while primary.len() <= 3 && i < tags.len() && extlangs < 3 && tags[i].len() == 3 && alpha(tags[i]) {
        i += 1;
        extlangs += 1;
    }
    if i < tags.len() && tags[i].len() == 4 && alpha(tags[i]) {
        i += 1; // script
    }
    if i < tags.len() && ((tags[i].len() == 2 && alpha(tags[i])) || (tags[i].len() == 3 && digit(tags[i]))) {
        i += 1; // region
    }
    let mut variants: Vec<String> = Vec::new();
    while i < tags.len() {
        let t = tags[i];
        let is_variant =
            (5..=8).contains(&t.len()) && alnum(t) || (t.len() == 4 && t.as_bytes()[0].is_ascii_digit() && alnum(t));
        if !is_variant {
            break;
        }
        let lower = t.to_ascii_lowercase();
        if variants.contains(&lower) {
            return Err(format!("duplicate variant '{t}'"));
        }
        variants.push(lower);
        i += 1;
    }
    let mut singletons: Vec<u8> = Vec::new();
    while i < tags.len() {
        let t = tags[i];
        if t.len() != 1 || !alnum(t) {
            return Err(format!("unexpected subtag '{t}'"));
        }
        let singleton = t.as_bytes()[0].to_ascii_lowercase();
        if singleton == b'x' {
            return check_private_use(&tags[i + 1..]);
        }
        if singletons.contains(&singleton) {
            return Err(format!("duplicate extension '{t}'"));
        }
        singletons.push(singleton);
        i += 1;
        let start = i;
        while i < tags.len() && (2..=8).contains(&tags[i].len()) && alnum(tags[i]) {
            i += 1;
        }
        if i == start {
            return Err(format!("extension '{t}' has no subtags"));
        }
    }
    Ok(())
}
