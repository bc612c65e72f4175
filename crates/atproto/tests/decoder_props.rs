//! Property tests: the CBOR, CAR, MST-node and commit decoders never panic on arbitrary bytes,
//! and data-model values survive an encode/decode round trip.

use std::collections::BTreeMap;

use atproto::Ipld;
use atproto::blocks::BlockMap;
use atproto::car::{CarLimits, CarReader};
use proptest::prelude::*;

fn ipld() -> impl Strategy<Value = Ipld> {
    let leaf = prop_oneof![
        Just(Ipld::Null),
        any::<bool>().prop_map(Ipld::Bool),
        any::<i64>().prop_map(|i| Ipld::Integer(i.into())),
        ".{0,20}".prop_map(Ipld::String),
        proptest::collection::vec(any::<u8>(), 0..32).prop_map(Ipld::Bytes),
        any::<[u8; 8]>().prop_map(|b| Ipld::Link(atproto::cid::cbor_cid(&b))),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Ipld::List),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..8)
                .prop_map(|m: BTreeMap<String, Ipld>| Ipld::Map(m)),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn cbor_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = atproto::data::decode(&bytes);
        let _ = atproto::commit::SignedCommit::from_block(&bytes);
    }

    #[test]
    fn mutated_valid_cbor_never_panics(value in ipld(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut bytes = atproto::data::encode(&value).unwrap();
        for (pos, byte) in flips {
            let len = bytes.len();
            bytes[pos % len] ^= byte;
        }
        let _ = atproto::data::decode(&bytes);
        let mut store = BlockMap::new();
        let cid = store.insert_cbor(bytes);
        let _ = atproto::mst::Mst::load(&store, cid).and_then(|t| t.entries(&store));
    }

    #[test]
    fn values_round_trip(value in ipld()) {
        let bytes = atproto::data::encode(&value).unwrap();
        prop_assert_eq!(atproto::data::decode(&bytes).unwrap(), value.clone());
        let json = atproto::data::to_json(&value);
        prop_assert_eq!(atproto::data::from_json(&json).unwrap(), value);
    }

    #[test]
    fn car_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(reader) = CarReader::new(&bytes[..], CarLimits::default()) {
            for block in reader {
                if block.is_err() { break; }
            }
        }
    }

    #[test]
    fn mutated_car_never_panics(pos in any::<usize>(), byte in any::<u8>(), n in 1usize..20) {
        let blocks: Vec<_> = (0..n).map(|i| {
            let b = atproto::data::encode(&Ipld::Integer(i as i128)).unwrap();
            (atproto::cid::cbor_cid(&b), b)
        }).collect();
        let mut car = atproto::car::encode(&[blocks[0].0], blocks.iter().map(|(c, b)| (c, b.as_slice())));
        let len = car.len();
        car[pos % len] ^= byte.max(1);
        if let Ok(reader) = CarReader::new(&car[..], CarLimits::default()) {
            let _ = reader.collect::<Result<Vec<_>, _>>();
        }
    }
}
