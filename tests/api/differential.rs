//! Differential test of the filter language: for random records and random
//! filters, the compiled predicate and SurrealDB running the filter's
//! `WHERE` translation select the same records.

use livehub::engine::filter::Filter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::TestApp;

const RECORDS: usize = 60;
const FILTERS: usize = 400;

/// A random scalar, of every JSON type the language compares.
fn scalar(rng: &mut StdRng) -> Value {
    match rng.random_range(0..10) {
        0 => Value::Null,
        1 => json!(rng.random_bool(0.5)),
        2 | 3 => json!(rng.random_range(-3..4)),
        4 => json!(rng.random_range(-3..4) as f64 + [0.0, 0.5][rng.random_range(0..2)]),
        _ => json!(
            [
                "a", "A", "ab", "Abc", "b", "école", "ÉCOLE", "", "10", "z z"
            ][rng.random_range(0..10)]
        ),
    }
}

/// A random value: mostly scalars, sometimes arrays or objects.
fn value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..8) {
        0 => Value::Array((0..rng.random_range(0..3)).map(|_| scalar(rng)).collect()),
        1 => json!({"d": scalar(rng)}),
        _ => scalar(rng),
    }
}

fn record(rng: &mut StdRng, n: usize) -> Value {
    let mut record = json!({ "id": format!("r{n:02}") });
    for field in ["a", "b", "c", "tags"] {
        // Each field is missing one time in five.
        if rng.random_range(0..5) > 0 {
            record[field] = value(rng);
        }
    }
    record
}

/// A literal as filter text, in the forms the language reads.
fn literal(rng: &mut StdRng) -> String {
    match scalar(rng) {
        Value::String(text)
            if !text.is_empty()
                && !text.contains(' ')
                && text.parse::<f64>().is_err()
                && rng.random_bool(0.5) =>
        {
            text
        }
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

fn condition(rng: &mut StdRng) -> String {
    let field = ["a", "b", "c", "c.d", "tags", "id", "missing"][rng.random_range(0..7)];
    match rng.random_range(0..10) {
        0 => format!("{field} IN [{}, {}]", literal(rng), literal(rng)),
        1 => format!("{field} NOT IN [{}]", literal(rng)),
        2 => format!("{field} {} null", ["=", "!="][rng.random_range(0..2)]),
        3 => format!("id = r{:02}", rng.random_range(0..RECORDS)),
        _ => {
            let op = ["=", "!=", ">", "<", ">=", "<=", "~", "!~"][rng.random_range(0..8)];
            format!("{field} {op} {}", literal(rng))
        }
    }
}

fn filter(rng: &mut StdRng, depth: u32) -> String {
    if depth == 0 || rng.random_range(0..3) == 0 {
        return condition(rng);
    }
    match rng.random_range(0..3) {
        0 => format!("({} && {})", filter(rng, depth - 1), filter(rng, depth - 1)),
        1 => format!("({} || {})", filter(rng, depth - 1), filter(rng, depth - 1)),
        _ => format!("NOT ({})", filter(rng, depth - 1)),
    }
}

#[tokio::test]
async fn the_predicate_and_surrealdb_select_the_same_records() {
    let app = TestApp::spawn().await;
    app.create_collection("diff").await;
    let mut rng = StdRng::seed_from_u64(0x0011_fe4b);
    let mut records = Vec::new();
    for n in 0..RECORDS {
        records.push(app.create_record("diff", record(&mut rng, n)).await);
    }

    let mut mismatches = Vec::new();
    let mut selective = 0;
    for _ in 0..FILTERS {
        let text = filter(&mut rng, 3);
        let compiled = Filter::parse(&text).unwrap_or_else(|error| panic!("{text}: {error}"));
        let expected: Vec<&str> = records
            .iter()
            .filter(|record| compiled.matches(record))
            .map(|record| record["id"].as_str().unwrap())
            .collect();
        let query = serde_urlencoded::to_string([
            ("filter", text.as_str()),
            ("sort", "id"),
            ("limit", "1000"),
        ])
        .unwrap();
        let response = app
            .get(&format!("/api/v1/collections/diff/records?{query}"))
            .await;
        assert_eq!(response.status(), 200, "{text}");
        let page: Value = response.json().await.unwrap();
        let actual: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        if !expected.is_empty() && expected.len() < RECORDS {
            selective += 1;
        }
        if actual != expected {
            let (sql, _) = compiled.expr().to_surrealql();
            let differing: Vec<&Value> = records
                .iter()
                .filter(|r| {
                    expected.contains(&r["id"].as_str().unwrap())
                        != actual.contains(&r["id"].as_str().unwrap())
                })
                .collect();
            mismatches.push(format!("{text}\n  WHERE {sql}\n  differs on {differing:?}"));
        }
    }
    // The comparison means something only if filters split the records.
    assert!(
        selective * 3 > FILTERS,
        "only {selective} of {FILTERS} filters select a proper subset"
    );
    assert!(
        mismatches.is_empty(),
        "{} of {FILTERS} filters disagree:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
