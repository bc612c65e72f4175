//! What checking a commit costs a signer, on top of the signature itself: `vow signer`'s
//! classification and evidence check (inversion through the listed changes) for one new
//! record in repos of growing size, with the evidence the write pipeline sends.
//! `cargo bench -p vow --bench signer`

use atproto::blocks::{BlockMap, Overlay};
use atproto::crypto::{Algorithm, Keypair};
use atproto::mst::Mst;
use atproto::syntax::{Did, Tid};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use vow::service::signer::protocol::{CommitEvidence, EvidenceOp};
use vow::service::signer::verify;

const DID: &str = "did:plc:benchbenchbenchbenchbenc";

fn record(i: usize) -> (atproto::Cid, Vec<u8>) {
    let value = serde_json::json!({ "$type": "app.bsky.feed.post", "text": format!("post number {i}"),
        "createdAt": "2026-12-01T10:00:00.000Z" });
    let bytes = atproto::data::encode(&atproto::data::record_from_json(&value).unwrap()).unwrap();
    (atproto::cid::cbor_cid(&bytes), bytes)
}

/// A repo of `n` posts, a commit signed by `key` at its head, and the request for one more post.
fn request(n: usize, key: &Keypair) -> (Vec<u8>, CommitEvidence) {
    let mut store = BlockMap::new();
    let entries: Vec<(String, atproto::Cid)> = (0..n)
        .map(|i| {
            let (cid, bytes) = record(i);
            store.insert(cid, bytes);
            (format!("app.bsky.feed.post/{}", Tid::from_parts(1_700_000_000_000_000 + i as u64 * 1000, 0)), cid)
        })
        .collect();
    let mut tree = Mst::from_entries(entries).unwrap();
    let before = tree.commit();
    store.extend(before.blocks);
    let rev = Tid::from_parts(1_800_000_000_000_000, 0);
    let prev = atproto::commit::UnsignedCommit::new(Did::new(DID).unwrap(), before.root, rev);
    let sig = key.sign(&prev.bytes_to_sign()).to_vec();
    let prev_block = prev.with_signature(sig).to_block();

    let mut tree = Mst::load(&store, before.root).unwrap();
    let (cid, bytes) = record(n);
    let path = format!("app.bsky.feed.post/{}", Tid::from_parts(1_800_000_000_000_001, 0));
    tree.insert(&store, &path, cid).unwrap();
    let after = tree.commit();
    let mut new_blocks = after.blocks;
    new_blocks.insert(cid, bytes);
    let proof =
        atproto::mst::commit_event_blocks(&Overlay(&new_blocks, &store), &new_blocks, after.root, [path.as_str()])
            .unwrap();
    let unsigned = atproto::commit::UnsignedCommit::new(
        Did::new(DID).unwrap(),
        after.root,
        Tid::from_parts(1_800_000_000_000_002, 0),
    );
    let evidence = CommitEvidence {
        prev_commit: URL_SAFE_NO_PAD.encode(prev_block),
        blocks: URL_SAFE_NO_PAD.encode(atproto::car::encode(&[after.root], proof.iter())),
        ops: vec![EvidenceOp { action: "create".into(), path, cid: Some(cid.to_string()), prev: None }],
    };
    (unsigned.bytes_to_sign(), evidence)
}

fn bench(c: &mut Criterion) {
    let key = Keypair::generate(Algorithm::K256);
    let own = key.public_key();
    for n in [1_000, 100_000] {
        let (payload, evidence) = request(n, &key);
        c.bench_function(&format!("signer check of one new post, {n}-record repo"), |b| {
            b.iter(|| {
                let verify::Payload::Commit(commit) = verify::classify(DID, &payload).unwrap() else { panic!() };
                let signed = verify::SignedHere::default();
                let ctx = verify::CommitContext { own_key: &own, earlier_keys: &[], last_rev: None, signed: &signed };
                verify::check_commit(&commit, Some(&evidence), &ctx).unwrap()
            })
        });
    }
    let (payload, _) = request(10, &key);
    c.bench_function("signature itself (K-256, for comparison)", |b| b.iter(|| key.sign(&payload)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
