//! `mst/*` and `firehose/commit-proof-fixtures.json`, plus structural properties of our MST.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use atproto::Cid;
use atproto::blocks::{BlockMap, Overlay};
use atproto::mst::{self, Mst};
use common::Rng;

fn cid(s: &str) -> Cid {
    Cid::try_from(s).unwrap()
}

fn value(i: u64) -> Cid {
    atproto::cid::cbor_cid(&i.to_be_bytes())
}

#[test]
fn key_heights() {
    let fixtures = common::read_json("mst/key_heights.json");
    for f in fixtures.as_array().unwrap() {
        let key = f["key"].as_str().unwrap();
        assert_eq!(u64::from(mst::key_height(key.as_bytes())), f["height"].as_u64().unwrap(), "{key}");
    }
}

#[test]
fn example_keys_sit_on_the_layer_they_name() {
    // Each example key is "<letter><height>/<digits>".
    let keys = common::lines("mst/example_keys.txt");
    assert!(keys.len() > 100);
    for key in keys {
        let named: u32 = key[1..2].parse().unwrap();
        assert_eq!(mst::key_height(key.as_bytes()), named, "{key}");
    }
}

#[test]
fn common_prefix() {
    let fixtures = common::read_json("mst/common_prefix.json");
    for f in fixtures.as_array().unwrap() {
        let (l, r) = (f["left"].as_str().unwrap(), f["right"].as_str().unwrap());
        assert_eq!(mst::common_prefix_len(l.as_bytes(), r.as_bytes()) as u64, f["len"].as_u64().unwrap(), "{l} {r}");
    }
}

#[test]
fn empty_tree_has_the_well_known_root() {
    let mut tree = Mst::new();
    assert_eq!(tree.root_cid(), cid("bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"));
}

#[test]
fn commit_proof_fixtures() {
    let fixtures = common::read_json("firehose/commit-proof-fixtures.json");
    let fixtures = fixtures.as_array().unwrap();
    assert!(fixtures.len() >= 6);
    for f in fixtures {
        let name = f["comment"].as_str().unwrap();
        let leaf = cid(f["leafValue"].as_str().unwrap());
        let strings = |k: &str| -> Vec<String> {
            f[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
        };
        let (keys, adds, dels) = (strings("keys"), strings("adds"), strings("dels"));

        let mut store = BlockMap::new();
        let mut tree = Mst::new();
        for k in &keys {
            tree.insert(&store, k, leaf).unwrap();
        }
        let before = tree.commit();
        assert_eq!(before.root.to_string(), f["rootBeforeCommit"].as_str().unwrap(), "{name}: root before");
        store.extend(before.blocks);

        // Apply the commit to the tree as loaded from storage, as the write path does.
        let mut tree = Mst::load(&store, before.root).unwrap();
        for k in &adds {
            assert_eq!(tree.insert(&store, k, leaf).unwrap(), None);
        }
        for k in &dels {
            assert_eq!(tree.remove(&store, k).unwrap(), Some(leaf), "{name}: delete {k}");
        }
        let after = tree.commit();
        assert_eq!(after.root.to_string(), f["rootAfterCommit"].as_str().unwrap(), "{name}: root after");

        // The same key set built from scratch gives the same root.
        let mut final_keys: BTreeSet<String> = keys.iter().cloned().collect();
        final_keys.extend(adds.iter().cloned());
        dels.iter().for_each(|k| {
            final_keys.remove(k);
        });
        let mut rebuilt = Mst::from_entries(final_keys.into_iter().map(|k| (k, leaf))).unwrap();
        assert_eq!(rebuilt.root_cid(), after.root, "{name}: bulk build");

        let all = Overlay(&after.blocks, &store);
        let mut proof = BTreeSet::new();
        for k in adds.iter().chain(&dels) {
            proof.extend(mst::covering_proof(&all, after.root, k).unwrap().cids().copied());
        }
        let expected: BTreeSet<Cid> =
            f["blocksInProof"].as_array().unwrap().iter().map(|v| cid(v.as_str().unwrap())).collect();
        assert_eq!(proof, expected, "{name}: proof blocks");

        // The firehose event builder carries the new blocks plus exactly those proofs.
        let changed = adds.iter().chain(&dels).map(String::as_str);
        let event = mst::commit_event_blocks(&all, &after.blocks, after.root, changed).unwrap();
        let carried: BTreeSet<Cid> = event.cids().copied().collect();
        let mut wanted: BTreeSet<Cid> = after.blocks.cids().copied().collect();
        wanted.extend(expected);
        assert_eq!(carried, wanted, "{name}: #commit event blocks");

        // From those blocks alone, the commit inverts to the root before it; a change left
        // out, or one that claims what the tree does not hold, does not.
        let changes: Vec<mst::KeyChange> = adds
            .iter()
            .map(|k| mst::KeyChange { key: k.clone(), cid: Some(leaf), prev: None })
            .chain(dels.iter().map(|k| mst::KeyChange { key: k.clone(), cid: None, prev: Some(leaf) }))
            .collect();
        assert_eq!(mst::invert(&event, after.root, &changes).unwrap(), before.root, "{name}: inversion");
        if changes.len() > 1 {
            let partial = mst::invert(&event, after.root, &changes[1..]);
            assert!(partial.map_or(true, |root| root != before.root), "{name}: a change left out");
        }
        let mut wrong = changes.clone();
        wrong[0].cid = Some(value(99));
        assert!(mst::invert(&event, after.root, &wrong).is_err(), "{name}: a false claim");
        let mut twice = changes.clone();
        twice.push(changes[0].clone());
        assert!(mst::invert(&event, after.root, &twice).is_err(), "{name}: a repeated key");
    }
}

fn random_key(rng: &mut Rng) -> String {
    let collections = ["app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow", "com.example.x"];
    format!("{}/{:013x}", collections[rng.below(4) as usize], rng.below(1 << 40))
}

#[test]
fn root_does_not_depend_on_operation_order_and_diff_matches() {
    let mut rng = Rng(0x5eed);
    for round in 0..40 {
        let n = 1 + rng.below(300) as usize;
        let entries: BTreeMap<String, Cid> = (0..n).map(|i| (random_key(&mut rng), value(i as u64))).collect();
        let mut expected = Mst::from_entries(entries.clone()).unwrap();
        let expected_commit = expected.commit();

        // Insert in a shuffled order.
        let mut order: Vec<_> = entries.iter().collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut store = BlockMap::new();
        let mut tree = Mst::new();
        for (k, v) in &order {
            tree.insert(&store, k, **v).unwrap();
        }
        let c = tree.commit();
        assert_eq!(c.root, expected_commit.root, "round {round}");
        assert_eq!(c.blocks, expected_commit.blocks, "round {round}: same nodes");
        store.extend(c.blocks);
        assert_eq!(tree.entries(&store).unwrap(), entries.clone().into_iter().collect::<Vec<_>>());

        // Mutate a loaded copy: delete some, update some, add some.
        let mut model = entries.clone();
        let mut tree = Mst::load(&store, c.root).unwrap();
        for (i, k) in entries.keys().enumerate() {
            match rng.below(4) {
                0 => {
                    assert_eq!(tree.remove(&store, k).unwrap(), model.remove(k));
                }
                1 => {
                    let v = value(10_000 + i as u64);
                    assert_eq!(tree.insert(&store, k, v).unwrap(), model.insert(k.clone(), v));
                }
                _ => {}
            }
        }
        for i in 0..rng.below(50) {
            let k = random_key(&mut rng);
            let v = value(20_000 + i);
            assert_eq!(tree.insert(&store, &k, v).unwrap(), model.insert(k, v));
        }
        assert_eq!(tree.remove(&store, "app.bsky.feed.post/absent").unwrap(), None);
        let next = tree.commit();
        let mut from_scratch = Mst::from_entries(model.clone()).unwrap();
        assert_eq!(next.root, from_scratch.root_cid(), "round {round}: after mutations");

        for (k, v) in &model {
            assert_eq!(tree.get(&store, k).unwrap(), Some(*v));
        }

        let all = Overlay(&next.blocks, &store);
        let d = mst::diff(&all, Some(c.root), next.root).unwrap();
        let mut expected_ops = Vec::new();
        let keys: BTreeSet<&String> = entries.keys().chain(model.keys()).collect();
        for k in keys {
            let (old, new) = (entries.get(k).copied(), model.get(k).copied());
            if old != new {
                expected_ops.push(mst::DiffOp { key: k.clone(), old, new });
            }
        }
        assert_eq!(d.ops, expected_ops, "round {round}: diff ops");
        let fresh: BTreeSet<Cid> = next.blocks.cids().filter(|c| !store.contains(c)).copied().collect();
        assert_eq!(d.new_nodes, fresh, "round {round}: new nodes");
        for removed in &d.removed_nodes {
            assert!(store.contains(removed) && !next.blocks.contains(removed));
        }
        let full = mst::diff(&all, None, next.root).unwrap();
        assert_eq!(full.ops.len(), model.len());
        assert!(full.ops.iter().all(|op| op.old.is_none()));
    }
}

#[test]
fn deleting_everything_gives_the_empty_root() {
    let mut rng = Rng(42);
    let entries: Vec<(String, Cid)> = (0..500).map(|i| (random_key(&mut rng), value(i))).collect();
    let mut store = BlockMap::new();
    let mut tree = Mst::from_entries(entries.clone()).unwrap();
    let c = tree.commit();
    store.extend(c.blocks);
    let mut tree = Mst::load(&store, c.root).unwrap();
    for (k, v) in &entries {
        assert_eq!(tree.remove(&store, k).unwrap(), Some(*v));
    }
    assert_eq!(tree.root_cid(), Mst::new().root_cid());
}

#[test]
fn record_proof_walks_to_the_key() {
    let mut rng = Rng(7);
    let entries: Vec<(String, Cid)> = (0..2000).map(|i| (random_key(&mut rng), value(i))).collect();
    let mut tree = Mst::from_entries(entries.clone()).unwrap();
    let c = tree.commit();
    let store = c.blocks;
    for (k, v) in entries.iter().take(50) {
        let proof = mst::record_proof(&store, c.root, k).unwrap();
        // The proof alone is enough to find the record...
        assert_eq!(Mst::load(&proof, c.root).unwrap().get(&proof, k).unwrap(), Some(*v));
        // ...and to show that a neighbouring key is absent.
        let absent = format!("{k}x");
        let proof = mst::record_proof(&store, c.root, &absent).unwrap();
        assert_eq!(Mst::load(&proof, c.root).unwrap().get(&proof, &absent).unwrap(), None);
    }
}

#[test]
fn invalid_keys_and_missing_blocks_are_errors() {
    let store = BlockMap::new();
    let mut tree = Mst::new();
    for bad in ["", "nocollection", "a/b/c", "/x", "x/", "a/b c", &format!("a/{}", "x".repeat(1100))] {
        assert!(tree.insert(&store, bad, value(1)).is_err(), "{bad:?}");
    }
    let missing = value(99);
    assert!(matches!(Mst::load(&store, missing), Err(mst::MstError::MissingBlock(_))));
    // A block that is not an MST node.
    let mut store = BlockMap::new();
    let junk = store.insert_cbor(atproto::data::encode(&atproto::Ipld::String("hi".into())).unwrap());
    assert!(matches!(Mst::load(&store, junk), Err(mst::MstError::InvalidNode { .. })));
}
