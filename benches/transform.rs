//! The transform alone, without a broker: records/s per core for ~50-byte and ~1 KB records, and
//! a batch of 1000 hashed inline versus on a rayon pool (what `--parallel-min-bytes` decides).
//!
//! `cargo bench --bench transform` (or `make bench-transform`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ktransform::transform::{transform, transform_into};
use rayon::prelude::*;

/// A seed-format record, ~50 bytes.
fn small(i: usize) -> Vec<u8> {
    format!(r#"{{"first_name":"Bonita{i}","last_name":"Kautzer"}}"#).into_bytes()
}

/// ~1 KB: the seed's fields plus a nested profile and a long text.
fn large(i: usize) -> Vec<u8> {
    let text = "lorem ipsum dolor sit amet ".repeat(30);
    format!(
        r#"{{"first_name":"Bonita{i}","last_name":"Kautzer","age":42,"profile":{{"tags":["a","b","c"],"score":12.5,"active":true}},"bio":"{text}"}}"#
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    for (name, make) in [("50B", small as fn(usize) -> Vec<u8>), ("1KB", large)] {
        let record = make(7);
        let mut group = c.benchmark_group(format!("record_{name}"));
        group.throughput(Throughput::Elements(1));
        let mut out = Vec::new();
        group.bench_function("transform_into", |b| {
            b.iter(|| transform_into(black_box(&record), &mut out).unwrap())
        });
        group.finish();

        let batch: Vec<Vec<u8>> = (0..1000).map(make).collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(num_cpus::get())
            .build()
            .unwrap();
        let mut group = c.benchmark_group(format!("batch1000_{name}"));
        group.throughput(Throughput::Elements(batch.len() as u64));
        group.bench_function("inline", |b| {
            b.iter_batched_ref(
                Vec::new,
                |out| {
                    for r in &batch {
                        transform_into(r, out).unwrap();
                        black_box(&out);
                    }
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function("rayon", |b| {
            b.iter(|| {
                let outs: Vec<_> =
                    pool.install(|| batch.par_iter().map(|r| transform(r)).collect());
                black_box(outs)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
