//! `lexicon/*` fixtures: schema documents load or are refused, record data validates or is
//! rejected with a useful message. Also checks the bundled com.atproto/app.bsky schemas.

mod common;

use atproto::data;
use atproto::lexicon::{Catalog, ValidationError};

fn catalog() -> Catalog {
    let mut catalog = Catalog::new();
    for entry in std::fs::read_dir(common::interop("lexicon/catalog")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        catalog.add_json(&serde_json::from_str(&text).unwrap()).unwrap();
    }
    catalog
}

#[test]
fn valid_lexicons_load() {
    for f in common::read_json("lexicon/lexicon-valid.json").as_array().unwrap() {
        Catalog::new().add_json(&f["lexicon"]).unwrap_or_else(|e| panic!("{}: {e}", f["name"]));
    }
}

#[test]
fn invalid_lexicons_are_refused() {
    let fixtures = common::read_json("lexicon/lexicon-invalid.json");
    assert!(!fixtures.as_array().unwrap().is_empty());
    for f in fixtures.as_array().unwrap() {
        assert!(Catalog::new().add_json(&f["lexicon"]).is_err(), "accepted: {}", f["name"]);
    }
}

#[test]
fn valid_record_data_validates() {
    let catalog = catalog();
    for f in common::read_json("lexicon/record-data-valid.json").as_array().unwrap() {
        let value = data::record_from_json(&f["data"]).unwrap();
        let collection = f["data"]["$type"].as_str().unwrap();
        catalog.validate_record(collection, &value).unwrap_or_else(|e| panic!("{}: {e}", f["name"]));
    }
}

#[test]
fn invalid_record_data_is_rejected_with_a_message() {
    let catalog = catalog();
    let fixtures = common::read_json("lexicon/record-data-invalid.json");
    assert!(fixtures.as_array().unwrap().len() >= 40);
    let mut checked = 0;
    for f in fixtures.as_array().unwrap() {
        let collection = f["data"]["$type"].as_str().unwrap();
        checked += 1;
        // Some fixtures are already outside the data model; those fail at conversion.
        let Ok(value) = data::record_from_json(&f["data"]) else {
            checked -= 1;
            continue;
        };
        match catalog.validate_record(collection, &value) {
            Ok(()) => panic!("accepted: {}", f["name"]),
            Err(ValidationError::Invalid { path, message }) => {
                assert!(path.starts_with("record") && !message.is_empty(), "{}", f["name"]);
            }
            Err(e) => panic!("{}: unexpected {e}", f["name"]),
        }
    }
    assert!(checked >= 45, "only {checked} fixtures reached the validator");
}

#[test]
fn bundled_lexicons_validate_real_records() {
    let catalog = Catalog::bundled();
    assert!(catalog.len() > 250, "{} docs", catalog.len());
    let post = serde_json::json!({
        "$type": "app.bsky.feed.post",
        "text": "hello from vow",
        "createdAt": "2026-11-24T10:00:00.000Z",
        "langs": ["en"],
        "embed": {
            "$type": "app.bsky.embed.images",
            "images": [{
                "alt": "a cat",
                "image": {
                    "$type": "blob",
                    "ref": { "$link": "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity" },
                    "mimeType": "image/jpeg",
                    "size": 10000
                }
            }]
        }
    });
    let value = data::record_from_json(&post).unwrap();
    catalog.validate_record("app.bsky.feed.post", &value).unwrap();

    let mut too_long = post.clone();
    too_long["text"] = serde_json::json!("x".repeat(3001));
    let err = catalog.validate_record("app.bsky.feed.post", &data::record_from_json(&too_long).unwrap()).unwrap_err();
    assert!(err.to_string().contains("record/text"), "{err}");

    let mut no_date = post.clone();
    no_date.as_object_mut().unwrap().remove("createdAt");
    assert!(catalog.validate_record("app.bsky.feed.post", &data::record_from_json(&no_date).unwrap()).is_err());

    let mut wrong_embed = post.clone();
    wrong_embed["embed"]["images"][0]["image"]["mimeType"] = serde_json::json!("text/plain");
    assert!(catalog.validate_record("app.bsky.feed.post", &data::record_from_json(&wrong_embed).unwrap()).is_err());

    assert!(matches!(catalog.validate_record("com.example.unknown", &value), Err(ValidationError::UnknownSchema(_))));
    let profile = serde_json::json!({"$type": "app.bsky.actor.profile", "displayName": "Vow"});
    catalog.validate_record("app.bsky.actor.profile", &data::record_from_json(&profile).unwrap()).unwrap();
}
