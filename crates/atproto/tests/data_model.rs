//! `data-model/*` fixtures: valid values round-trip to the same bytes and CID; invalid ones fail.

mod common;

use atproto::data;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;

#[test]
fn fixtures_round_trip_to_the_same_bytes_and_cid() {
    let fixtures = common::read_json("data-model/data-model-fixtures.json");
    let fixtures = fixtures.as_array().unwrap();
    assert!(fixtures.len() >= 3);
    for f in fixtures {
        let expected_cbor = STANDARD_NO_PAD.decode(f["cbor_base64"].as_str().unwrap()).unwrap();
        let value = data::from_json(&f["json"]).unwrap();
        let cbor = data::encode(&value).unwrap();
        assert_eq!(cbor, expected_cbor, "CBOR of {}", f["json"]);
        assert_eq!(atproto::cid::cbor_cid(&cbor).to_string(), f["cid"].as_str().unwrap());

        let decoded = data::decode(&expected_cbor).unwrap();
        assert_eq!(decoded, value);
        assert_eq!(data::to_json(&decoded), f["json"]);
    }
}

#[test]
fn valid_records_are_accepted() {
    let fixtures = common::read_json("data-model/data-model-valid.json");
    for f in fixtures.as_array().unwrap() {
        let value = data::record_from_json(&f["json"]).unwrap_or_else(|e| panic!("{}: {e}", f["note"]));
        let cbor = data::encode(&value).unwrap();
        assert_eq!(data::decode(&cbor).unwrap(), value, "{}", f["note"]);
    }
}

#[test]
fn invalid_records_are_rejected() {
    let fixtures = common::read_json("data-model/data-model-invalid.json");
    let fixtures = fixtures.as_array().unwrap();
    assert!(!fixtures.is_empty());
    for f in fixtures {
        assert!(data::record_from_json(&f["json"]).is_err(), "accepted: {}", f["note"]);
    }
}

#[test]
fn non_canonical_and_forbidden_cbor_is_rejected() {
    let cases: &[(&str, &[u8])] = &[
        ("float", &[0xfb, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18]),
        ("half float", &[0xf9, 0x3c, 0x00]),
        ("indefinite array", &[0x9f, 0x01, 0xff]),
        ("map keys out of order", &[0xa2, 0x61, 0x62, 0x01, 0x61, 0x61, 0x02]),
        ("non-minimal integer", &[0x18, 0x01]),
        ("unknown tag", &[0xc1, 0x01]),
        ("trailing bytes", &[0x01, 0x02]),
        ("truncated", &[0x62, 0x61]),
        ("undefined", &[0xf7]),
        ("huge declared length", &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        ("u64 above i64::MAX", &[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        ("non-string map key", &[0xa1, 0x01, 0x02]),
    ];
    for (name, bytes) in cases {
        assert!(data::decode(bytes).is_err(), "accepted {name}");
    }
}

#[test]
fn limits_are_enforced() {
    let mut deep = vec![0x81u8; 1000];
    deep.push(0x01);
    assert!(matches!(data::decode(&deep), Err(data::DataError::TooDeep { .. })));
    let limits = data::Limits { max_bytes: 4, max_depth: 8 };
    assert!(matches!(data::decode_with(&[0x45, 1, 2, 3, 4, 5], &limits), Err(data::DataError::TooLarge { .. })));
}

#[test]
fn blob_refs_are_found_when_nested() {
    let record = serde_json::json!({
        "$type": "app.bsky.feed.post",
        "embed": { "images": [ { "image": {
            "$type": "blob",
            "ref": { "$link": "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity" },
            "mimeType": "image/jpeg", "size": 10000 } } ] }
    });
    let value = data::record_from_json(&record).unwrap();
    let refs = data::blob_refs(&value);
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].to_string(), "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity");
}
