//! Speed targets of the protocol core (issue 2):
//! - one record update in a 100,000-record MST (load from an in-memory block map, apply,
//!   compute the new root and new blocks): at most 100 µs
//! - building a 100,000-record MST from scratch: under 1 s
//! - CAR read with hash verification: at least 200 MB/s; CAR write: at least 300 MB/s
//! - K-256 signature verification: at least 10,000 per second per core
//!
//! Run with `cargo bench -p atproto --bench core`.

use std::hint::black_box;

use atproto::Cid;
use atproto::blocks::BlockMap;
use atproto::car::{self, CarLimits, CarReader};
use atproto::crypto::{Algorithm, Keypair};
use atproto::mst::Mst;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn records(n: u64) -> Vec<(String, Cid)> {
    (0..n)
        .map(|i| {
            // TID-like rkeys spread over a few collections, as in a real repo.
            let collection = ["app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow"][(i % 3) as usize];
            let rkey = atproto::syntax::Tid::from_parts(1_700_000_000_000_000 + i * 7919, (i % 1024) as u16);
            (format!("{collection}/{rkey}"), atproto::cid::cbor_cid(&i.to_be_bytes()))
        })
        .collect()
}

fn mst(c: &mut Criterion) {
    let entries = records(100_000);
    let mut group = c.benchmark_group("mst");
    group.sample_size(10);
    group.bench_function("build_100k_from_scratch", |b| {
        b.iter(|| {
            let mut tree = Mst::from_entries(entries.clone()).unwrap();
            black_box(tree.commit())
        })
    });
    group.bench_function("insert_100k_one_by_one", |b| {
        let store = BlockMap::new();
        b.iter(|| {
            let mut tree = Mst::new();
            for (k, v) in &entries {
                tree.insert(&store, k, *v).unwrap();
            }
            black_box(tree.commit())
        })
    });
    group.finish();

    let mut tree = Mst::from_entries(entries.clone()).unwrap();
    let commit = tree.commit();
    let store = commit.blocks;
    let root = commit.root;
    let mut group = c.benchmark_group("mst");
    group.sample_size(200);
    let mut i = 0usize;
    group.bench_function("update_one_record_in_100k", |b| {
        b.iter(|| {
            i = (i + 7_777) % entries.len();
            let mut tree = Mst::load(&store, root).unwrap();
            tree.insert(&store, &entries[i].0, atproto::cid::cbor_cid(&(i as u64 + 1).to_le_bytes())).unwrap();
            black_box(tree.commit())
        })
    });
    let mut n = 0u64;
    group.bench_function("create_one_record_in_100k", |b| {
        b.iter(|| {
            n += 1;
            let key = format!("app.bsky.feed.post/{}", atproto::syntax::Tid::from_parts(1_800_000_000_000_000 + n, 1));
            let mut tree = Mst::load(&store, root).unwrap();
            tree.insert(&store, &key, atproto::cid::cbor_cid(&n.to_le_bytes())).unwrap();
            black_box(tree.commit())
        })
    });
    group.finish();
}

fn car_io(c: &mut Criterion) {
    // 16 MiB of 4 KiB blocks: a mix like a repo export with records and MST nodes.
    let blocks: Vec<(Cid, Vec<u8>)> = (0..4096u32)
        .map(|i| {
            let bytes: Vec<u8> = (0..4096u32).map(|j| (i.wrapping_mul(31).wrapping_add(j)) as u8).collect();
            (atproto::cid::cbor_cid(&bytes), bytes)
        })
        .collect();
    let encoded = car::encode(&[blocks[0].0], blocks.iter().map(|(c, b)| (c, b.as_slice())));
    let mut group = c.benchmark_group("car");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("read_verified_16MiB", |b| {
        b.iter(|| {
            let reader = CarReader::new(&encoded[..], CarLimits::default()).unwrap();
            let mut n = 0usize;
            for block in reader {
                n += block.unwrap().1.len();
            }
            black_box(n)
        })
    });
    group.bench_function("write_16MiB", |b| {
        let mut out = Vec::with_capacity(encoded.len());
        b.iter(|| {
            out.clear();
            let mut w = car::CarWriter::new(&mut out, &[blocks[0].0]).unwrap();
            for (c, bytes) in &blocks {
                w.write_block(c, bytes).unwrap();
            }
            w.finish().unwrap();
            black_box(out.len())
        })
    });
    group.finish();
}

fn signatures(c: &mut Criterion) {
    let key = Keypair::generate(Algorithm::K256);
    let public = key.public_key();
    let message = b"an unsigned commit is about this long, a hundred-odd bytes of canonical DAG-CBOR map";
    let sig = key.sign(message);
    let mut group = c.benchmark_group("k256");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify", |b| b.iter(|| public.verify(black_box(message), black_box(&sig)).unwrap()));
    group.bench_function("sign", |b| b.iter(|| black_box(key.sign(black_box(message)))));
    group.finish();
}

criterion_group!(benches, mst, car_io, signatures);
criterion_main!(benches);
