//! Every line of every `syntax/*_valid.txt` parses; every line of `*_invalid.txt` is rejected.

mod common;

use atproto::syntax::*;

fn check(name: &str, parse: impl Fn(&str) -> bool, extra_invalid: &[&str]) {
    let valid = common::lines(&format!("syntax/{name}_syntax_valid.txt"));
    assert!(!valid.is_empty());
    let bad: Vec<_> = valid.iter().filter(|l| !parse(l)).collect();
    assert!(bad.is_empty(), "{name}: valid lines rejected: {bad:?}");

    let mut invalid = common::lines(&format!("syntax/{name}_syntax_invalid.txt"));
    for extra in extra_invalid {
        invalid.extend(common::lines(extra));
    }
    assert!(!invalid.is_empty());
    let bad: Vec<_> = invalid.iter().filter(|l| parse(l)).collect();
    assert!(bad.is_empty(), "{name}: invalid lines accepted: {bad:?}");
}

#[test]
fn did() {
    check("did", |s| Did::new(s).is_ok(), &[]);
}

#[test]
fn handle() {
    check("handle", |s| Handle::new(s).is_ok(), &[]);
}

#[test]
fn nsid() {
    check("nsid", |s| Nsid::new(s).is_ok(), &[]);
}

#[test]
fn record_key() {
    check("recordkey", |s| RecordKey::new(s).is_ok(), &[]);
}

#[test]
fn tid() {
    check("tid", |s| Tid::new(s).is_ok(), &[]);
}

#[test]
fn at_uri() {
    check("aturi", |s| AtUri::new(s).is_ok(), &[]);
}

#[test]
fn at_identifier() {
    check("atidentifier", |s| AtIdentifier::new(s).is_ok(), &[]);
}

#[test]
fn datetime() {
    check("datetime", |s| Datetime::new(s).is_ok(), &["syntax/datetime_parse_invalid.txt"]);
}

#[test]
fn language() {
    check("language", |s| Language::new(s).is_ok(), &["syntax/language_parse_invalid.txt"]);
}

#[test]
fn cid() {
    check("cid", |s| CidString::new(s).is_ok(), &[]);
}

#[test]
fn uri() {
    check("uri", |s| Uri::new(s).is_ok(), &[]);
}

#[test]
fn tid_generator_is_monotonic_and_round_trips() {
    let generator = TidGenerator::new(7);
    let mut prev = generator.next();
    for _ in 0..10_000 {
        let next = generator.next();
        assert!(next > prev, "{next} <= {prev}");
        assert!(Tid::new(next.as_str()).is_ok());
        prev = next;
    }
    let far_future = Tid::from_parts(prev.timestamp_micros() + 60_000_000, 0);
    let after = generator.next_after(Some(&far_future));
    assert!(after > far_future);
    assert_eq!(Tid::from_parts(1_700_000_000_000_000, 5).timestamp_micros(), 1_700_000_000_000_000);
}

#[test]
fn at_uri_parts() {
    let uri = AtUri::new("at://did:plc:abc/app.bsky.feed.post/3jzfcijpj2z2a").unwrap();
    assert_eq!(uri.authority().as_str(), "did:plc:abc");
    assert_eq!(uri.collection().unwrap().as_str(), "app.bsky.feed.post");
    assert_eq!(uri.rkey().unwrap().as_str(), "3jzfcijpj2z2a");
}
