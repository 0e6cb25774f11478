//! Fuzzes the filter language (`crates/filter/`): parser, canonical
//! `Display`, compiled predicate, `$auth` binding, index terms and
//! SurrealQL translation.
//!
//! It depends on the `livehub-filter` crate alone (not on livehub, which
//! pulls in SurrealDB).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

use livehub_filter::{CompareOp, Expr, Filter, IndexKey, Literal, MAX_DEPTH, MAX_LEN, Operand, compile, parse};

/// Fixed records: nested objects, arrays, nulls, numbers of every kind
/// (negative, float, -0.0, beyond i64, u64::MAX), unicode strings.
fn records() -> &'static [Value] {
    static RECORDS: OnceLock<Vec<Value>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        vec![
            json!({}),
            json!({
                "status": "published", "price": 100, "active": true, "deleted": null,
                "title": "Rust in Action", "tags": ["rust", "books", 1, null, [1, 2], {"k": "v"}],
                "author": {"name": "Jane Doe", "id": 7, "org": {"id": "acme"}},
                "a": {"b": {"c": 1}}, "x": 1.5, "n": -0.0, "big": 18446744073709551615u64,
                "min": -9223372036854775808i64, "e": 1e300, "s": "",
            }),
            json!({
                "name": "José", "greek": "ΟΔΟΣ", "title": "ÉCOLE ß İstanbul K", "emoji": "😀\u{0}\n",
                "a": [{"b": 1}], "tags": [], "price": "100", "owner": "user:123", "room": 7.0,
                "x": {"y": null}, "status": ["published"], "_x9": false, "and": 1, "in": 2,
            }),
            json!({"a": 1, "b": 2, "c": 3, "a1": 0.5, "tags": ["a", "b", "c"], "v": "1.2.3", "z": [[], {}]}),
            json!([1, 2, 3]),
            json!("not an object"),
            Value::Null,
        ]
    })
}

/// Claims for `bind`: nested, with every kind of value.
fn claims() -> &'static Value {
    static CLAIMS: OnceLock<Value> = OnceLock::new();
    CLAIMS.get_or_init(|| {
        json!({
            "sub": "user:123", "role": "admin", "level": 3, "ratio": 0.25, "flag": true,
            "none": null, "groups": ["a", "b"], "org": {"id": "acme", "n": 18446744073709551615u64},
            "name": "Zoë",
        })
    })
}

/// The nesting the parser counts when it reads `e`'s canonical text: each
/// `(` and each `NOT` one level. `Display` writes `NOT (e)` (two levels) and
/// `(item) AND (item)` (one level per item), so it can exceed the input's.
fn display_depth(e: &Expr) -> usize {
    match e {
        Expr::Not(inner) => 2 + display_depth(inner),
        Expr::And(items) | Expr::Or(items) => {
            1 + items.iter().map(display_depth).max().unwrap_or(0)
        }
        Expr::Compare { .. } | Expr::In { .. } | Expr::True => 0,
        Expr::Claim(_) => 1,
    }
}

/// Whether `FILTER_FUZZ_STRICT` is set: assert the round trip even near the
/// limits.
fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("FILTER_FUZZ_STRICT").is_some_and(|v| v == "1"))
}

/// Sets `path` to `v` in `record`, making objects on the way (a step that is
/// already something other than an object is left alone).
fn set_path(record: &mut Value, segments: &[String], v: Value) {
    let Some((last, init)) = segments.split_last() else { return };
    let mut cur = record;
    for seg in init {
        let Some(obj) = cur.as_object_mut() else { return };
        cur = obj.entry(seg.clone()).or_insert_with(|| json!({}));
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.insert(last.clone(), v);
    }
}

/// The checks on every parsed filter, bound or not.
fn exercise(expr: &Expr) {
    let predicate = compile(expr);
    for r in records() {
        let _ = predicate.matches(r);
    }
    let (sql, params) = expr.to_surrealql();
    assert!(!sql.is_empty());
    let _ = params;

    // The hub's index invariant: a matching record has the index value.
    let f = Filter::new(expr.clone());
    let mut own = json!({});
    for (field, lit) in expr.index_alternatives().unwrap_or_default() {
        set_path(&mut own, field.segments(), lit.to_json());
    }
    for r in records().iter().chain(std::iter::once(&own)) {
        let m = f.matches(r);
        assert_eq!(m, predicate.matches(r));
        if m && !f.index_terms().is_empty() {
            assert!(
                f.index_terms().iter().any(|(field, key)| {
                    field.get(r).and_then(IndexKey::from_json).as_ref() == Some(key)
                }),
                "index invariant broken for {expr} on {r}"
            );
        }
    }
    // `field = literal` alone matches the record holding that literal.
    if let Expr::Compare { field, op: CompareOp::Eq, value: Operand::Literal(lit) } = expr {
        let _: &Literal = lit;
        let mut rec = json!({});
        set_path(&mut rec, field.segments(), lit.to_json());
        assert!(f.matches(&rec), "{expr} does not match {rec}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };

    let expr = match parse(text) {
        Ok(expr) => expr,
        Err(e) => {
            let chars = text.chars().count();
            assert!(
                e.column >= 1 && e.column <= chars + 1,
                "column {} out of 1..={} for {text:?}: {}",
                e.column,
                chars + 1,
                e.message
            );
            return;
        }
    };

    // Round trip: the canonical text re-parses to the same tree. Display adds
    // parentheses (`NOT (…)`, `(a) AND (b)`) and quotes/spaces, so a filter
    // near the limits may display to text past MAX_DEPTH or MAX_LEN (the
    // documented edge case); then re-parsing must fail with exactly that
    // limit error, and nothing else.
    // FILTER_FUZZ_STRICT=1 turns the exemptions off (to see them found).
    let canonical = expr.to_string();
    match parse(&canonical) {
        Ok(again) => assert_eq!(again, expr, "round trip of {text:?} via {canonical:?}"),
        Err(e) if strict() => panic!("canonical text {canonical:?} of {text:?} does not re-parse: {e}"),
        Err(e) if canonical.len() > MAX_LEN => assert_eq!(
            e.message,
            format!("the filter is longer than {MAX_LEN} bytes"),
            "canonical text of {text:?} is {} bytes",
            canonical.len()
        ),
        Err(e) if display_depth(&expr) > MAX_DEPTH => assert!(
            e.message.starts_with(&format!("the filter nests deeper than {MAX_DEPTH} levels")),
            "canonical text of {text:?} nests {} deep but fails with {e}",
            display_depth(&expr)
        ),
        Err(e) => panic!("canonical text {canonical:?} of {text:?} does not re-parse: {e}"),
    }
    // The canonical text is stable.
    if let Ok(again) = parse(&canonical) {
        assert_eq!(again.to_string(), canonical);
    }

    exercise(&expr);
    let bound = expr.bind(claims());
    assert!(!bound.has_params());
    exercise(&bound);
    let _ = expr.bind(&Value::Null);
    let _ = expr.bind(&json!([1]));

    for (_, lit) in expr.index_alternatives().unwrap_or_default() {
        let _ = lit.index_key();
    }
    let filter = Filter::parse(text).expect("parsed once, parses again");
    assert_eq!(filter.canonical(), canonical);
    // What a stream does with a query: bind it, compile it again.
    let _ = Filter::new(filter.expr().bind(claims()).simplify());
});
