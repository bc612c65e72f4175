//! CAR round trips, corruption and limits; commits signed, encoded, decoded and verified.

use atproto::Cid;
use atproto::car::{self, CarError, CarLimits, CarReader, CarWriter};
use atproto::commit::{SignedCommit, UnsignedCommit};
use atproto::crypto::{Algorithm, Keypair};
use atproto::mst::Mst;
use atproto::syntax::{Did, Tid};

fn blocks(n: usize) -> Vec<(Cid, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let bytes =
                atproto::data::encode(&atproto::Ipld::String(format!("block {i} {}", "x".repeat(i % 97)))).unwrap();
            (atproto::cid::cbor_cid(&bytes), bytes)
        })
        .collect()
}

#[test]
fn car_round_trip() {
    let blocks = blocks(500);
    let roots = [blocks[0].0];
    let bytes = car::encode(&roots, blocks.iter().map(|(c, b)| (c, b.as_slice())));
    let mut reader = CarReader::new(&bytes[..], CarLimits::default()).unwrap();
    assert_eq!(reader.roots(), &roots);
    let read: Vec<_> = reader.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(read, blocks);
}

#[test]
fn car_detects_corruption_and_truncation() {
    let blocks = blocks(10);
    let bytes = car::encode(&[blocks[0].0], blocks.iter().map(|(c, b)| (c, b.as_slice())));
    let mut corrupt = bytes.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let result: Result<Vec<_>, _> = CarReader::new(&corrupt[..], CarLimits::default()).unwrap().collect();
    assert!(matches!(result, Err(CarError::HashMismatch { .. })));

    for cut in [1, 5, bytes.len() / 2, bytes.len() - 1] {
        let truncated = &bytes[..cut];
        let outcome = CarReader::new(truncated, CarLimits::default()).and_then(|r| r.collect::<Result<Vec<_>, _>>());
        assert!(outcome.is_err(), "truncated at {cut} accepted");
    }
    assert!(CarReader::new(&[][..], CarLimits::default()).is_err());
}

#[test]
fn car_limits() {
    let blocks = blocks(20);
    let bytes = car::encode(&[], blocks.iter().map(|(c, b)| (c, b.as_slice())));
    let few = CarLimits { max_blocks: 5, ..CarLimits::default() };
    let r: Result<Vec<_>, _> = CarReader::new(&bytes[..], few).unwrap().collect();
    assert!(matches!(r, Err(CarError::Limit(_))));
    let small = CarLimits { max_block_size: 20, ..CarLimits::default() };
    let r: Result<Vec<_>, _> = CarReader::new(&bytes[..], small).unwrap().collect();
    assert!(matches!(r, Err(CarError::Limit(_))));
    let short = CarLimits { max_total_bytes: 200, ..CarLimits::default() };
    let r: Result<Vec<_>, _> = CarReader::new(&bytes[..], short).unwrap().collect();
    assert!(matches!(r, Err(CarError::Limit(_))));
}

#[test]
fn car_writer_streams_to_any_writer() {
    let blocks = blocks(3);
    let mut w = CarWriter::new(Vec::new(), &[blocks[0].0]).unwrap();
    for (c, b) in &blocks {
        w.write_block(c, b).unwrap();
    }
    let out = w.finish().unwrap();
    assert_eq!(out, car::encode(&[blocks[0].0], blocks.iter().map(|(c, b)| (c, b.as_slice()))));
}

#[test]
fn commit_sign_encode_decode_verify() {
    let key = Keypair::generate(Algorithm::K256);
    let did = Did::new("did:plc:ewvi7nxzyoun6zhxrhs64oiz").unwrap();
    let data = Mst::new().root_cid();
    let unsigned = UnsignedCommit::new(did.clone(), data, Tid::new("3jzfcijpj2z2a").unwrap());
    let to_sign = unsigned.bytes_to_sign();
    // The unsigned commit is the canonical map {data, did, prev: null, rev, version: 3}.
    let as_value = atproto::data::decode(&to_sign).unwrap();
    assert_eq!(
        atproto::data::to_json(&as_value),
        serde_json::json!({"did": did.as_str(), "version": 3, "data": {"$link": data.to_string()}, "rev": "3jzfcijpj2z2a", "prev": null})
    );
    let signed = unsigned.with_signature(key.sign(&to_sign).to_vec());
    let (cid, block) = signed.to_block_with_cid();
    assert_eq!(cid, atproto::cid::cbor_cid(&block));
    let decoded = SignedCommit::from_block(&block).unwrap();
    assert_eq!(decoded, signed);
    decoded.verify(&key.public_key()).unwrap();

    let other = Keypair::generate(Algorithm::K256);
    assert!(decoded.verify(&other.public_key()).is_err());
    let mut tampered = decoded.clone();
    tampered.unsigned.rev = Tid::new("3jzfcijpj2z2b").unwrap();
    assert!(tampered.verify(&key.public_key()).is_err());
    let mut garbage = decoded;
    garbage.sig = vec![1, 2, 3];
    assert!(garbage.verify(&key.public_key()).is_err());
}

#[test]
fn commit_decode_rejects_other_versions_and_junk() {
    let v2 = serde_json::json!({"did": "did:plc:abc", "version": 2, "data": {"$link": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}, "rev": "3jzfcijpj2z2a", "prev": null, "sig": {"$bytes": "AAAA"}});
    let bytes = atproto::data::encode(&atproto::data::from_json(&v2).unwrap()).unwrap();
    assert!(SignedCommit::from_block(&bytes).is_err());
    assert!(SignedCommit::from_block(b"\xa0").is_err());
    assert!(SignedCommit::from_block(b"garbage").is_err());
}
