//! Filter language costs: parsing, and evaluating a compiled predicate
//! against one record. Run with `cargo bench --bench filter`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use livehub_filter::Filter;
use serde_json::json;

const FILTERS: [(&str, &str); 3] = [
    ("simple", "status=published"),
    (
        "typical",
        "status = published && price > 100 && (tags ~ rust || title ~ 'Async')",
    ),
    (
        "large",
        "(a = 1 || b = 2) && c IN [x, y, z, 4, 5] && NOT d.e.f = null && g ~ hello && h != 'w' \
         && (i >= 1.5 || j <= -2) && k !~ spam && l NOT IN [1, 2, 3] && m = true && n.o = 'p q r'",
    ),
];

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, text) in FILTERS {
        group.bench_function(name, |b| b.iter(|| Filter::parse(black_box(text)).unwrap()));
    }
    group.finish();
}

fn evaluate(c: &mut Criterion) {
    let record = json!({
        "id": "01jd5x0000000000000000000",
        "status": "published",
        "price": 129.5,
        "title": "Async Rust in practice",
        "tags": ["rust", "tokio", "sse"],
        "a": 1, "c": "y", "d": {"e": {"f": 3}}, "g": "Well, HELLO there", "h": "v",
        "i": 2, "k": "ham", "l": 9, "m": true, "n": {"o": "p q r"},
        "body": "lorem ipsum ".repeat(40),
    });
    let mut group = c.benchmark_group("evaluate");
    for (name, text) in FILTERS {
        let filter = Filter::parse(text).unwrap();
        assert!(
            filter.matches(&record),
            "{name} should match the sample record"
        );
        group.bench_function(name, |b| b.iter(|| filter.matches(black_box(&record))));
    }
    group.finish();
}

criterion_group!(benches, parse, evaluate);
criterion_main!(benches);
