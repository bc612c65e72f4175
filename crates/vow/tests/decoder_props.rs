//! Property tests for what the server decodes from the network and that the protocol crate's
//! own property tests do not cover: record JSON into the data model and through lexicon
//! validation, blob type sniffing, WebAuthn ceremonies and signer frames. None may panic.
//! `PROPTEST_CASES=100000 cargo test -p vow --test decoder_props` runs them longer by hand.

use proptest::prelude::*;
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// Arbitrary JSON, with the shapes the data model treats specially mixed in.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
        Just(json!({ "$link": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm" })),
        ".{0,16}".prop_map(|s| json!({ "$link": s })),
        ".{0,16}".prop_map(|s| json!({ "$bytes": s })),
        Just(
            json!({ "$type": "blob", "ref": { "$link": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku" },
                     "mimeType": "image/png", "size": 10 })
        ),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map("\\$?[a-zA-Z]{0,8}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const COLLECTIONS: &[&str] = &[
    "app.bsky.feed.post",
    "app.bsky.actor.profile",
    "app.bsky.feed.like",
    "app.bsky.graph.follow",
    "app.bsky.feed.threadgate",
    "com.example.unknown",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn records_never_panic_the_data_model_or_validation(value in json_value(), c in 0..COLLECTIONS.len()) {
        let collection = COLLECTIONS[c];
        let mut record = value;
        if let Value::Object(map) = &mut record {
            map.insert("$type".into(), json!(collection));
        }
        if let Ok(ipld) = atproto::data::record_from_json(&record) {
            let _ = atproto::lexicon::Catalog::bundled().validate_record(collection, &ipld);
            let _ = atproto::data::encode(&ipld);
            let _ = atproto::data::blob_refs(&ipld);
        }
    }

    #[test]
    fn posts_with_any_field_replaced_never_panic(field in "[a-zA-Z]{1,10}", value in json_value(), nested in any::<bool>()) {
        let mut post = json!({ "$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2026-12-01T10:00:00.000Z",
            "embed": { "$type": "app.bsky.embed.images", "images": [{ "alt": "", "image": { "$type": "blob",
                "ref": { "$link": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku" }, "mimeType": "image/png", "size": 1 } }] },
            "facets": [{ "index": { "byteStart": 0, "byteEnd": 2 }, "features": [{ "$type": "app.bsky.richtext.facet#tag", "tag": "x" }] }],
            "reply": { "root": { "uri": "at://did:plc:x/app.bsky.feed.post/3k", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm" },
                       "parent": { "uri": "at://did:plc:x/app.bsky.feed.post/3k", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm" } } });
        let target = if nested { &mut post["embed"]["images"][0] } else { &mut post };
        target[field.as_str()] = value;
        if let Ok(ipld) = atproto::data::record_from_json(&post) {
            let _ = atproto::lexicon::Catalog::bundled().validate_record("app.bsky.feed.post", &ipld);
        }
    }

    #[test]
    fn blob_sniffing_never_panics(head in proptest::collection::vec(any::<u8>(), 0..600), brand in any::<[u8; 4]>(), size in any::<u32>()) {
        let _ = vow::service::mime::sniff(&head);
        let mut boxed = size.to_be_bytes().to_vec();
        boxed.extend_from_slice(b"ftyp");
        boxed.extend_from_slice(&brand);
        boxed.extend_from_slice(&head);
        let _ = vow::service::mime::sniff(&boxed);
    }

    #[test]
    fn webauthn_ceremonies_refuse_garbage(
        client_data in proptest::collection::vec(any::<u8>(), 0..200),
        blob in proptest::collection::vec(any::<u8>(), 0..300),
        kind in prop_oneof![Just("webauthn.create".to_owned()), Just("webauthn.get".to_owned()), ".{0,12}"],
        challenge in ".{0,16}",
    ) {
        let rp = vow::service::webauthn::RelyingParty { id: "pds.test".into(), origin: "https://pds.test".into() };
        // Random bytes, and well-formed client data around random fields.
        let shaped = json!({ "type": kind, "challenge": challenge, "origin": "https://pds.test" }).to_string();
        for cd in [client_data.as_slice(), shaped.as_bytes()] {
            prop_assert!(vow::service::webauthn::verify_registration(&rp, b"challenge", cd, &blob).is_err());
            let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
            let public = key.verifying_key().to_sec1_point(true).as_bytes().to_vec();
            prop_assert!(vow::service::webauthn::verify_assertion(&rp, &public, b"challenge", &blob, cd, &blob).is_err());
        }
    }

    #[test]
    fn signer_frames_never_panic(text in ".{0,200}", value in json_value()) {
        let _ = serde_json::from_str::<vow::service::signer::protocol::ClientMessage>(&text);
        let _ = serde_json::from_value::<vow::service::signer::protocol::ClientMessage>(value.clone());
        let mut framed = value;
        if let Value::Object(map) = &mut framed {
            map.insert("type".into(), json!("sign_response"));
        }
        let _ = serde_json::from_value::<vow::service::signer::protocol::ClientMessage>(framed);
    }
}
