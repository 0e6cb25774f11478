//! A filter ready for dispatch: parsed, compiled, with its index term.

use serde_json::Value;

use super::{Expr, FieldPath, FilterError, IndexKey, Predicate, compile, parse};

/// A parsed and compiled filter, as the hub and the stream use it.
#[derive(Debug)]
pub struct Filter {
    expr: Expr,
    /// The canonical text: equal filters share one group in the hub.
    canonical: String,
    predicate: Predicate,
    /// `field = value` terms of which every matching record satisfies one
    /// (see [`Expr::index_alternatives`]): the hub files the filter under
    /// each. Empty: the filter must see every event.
    index_terms: Vec<(FieldPath, IndexKey)>,
}

impl Filter {
    /// Parses and compiles `text`. Any `$auth.<claim>` in it reads as `null`
    /// (see [`Expr::bind`] for binding claims first).
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        Ok(Filter::new(parse(text)?))
    }

    /// Compiles an expression.
    pub fn new(expr: Expr) -> Filter {
        let predicate = compile(&expr);
        let index_terms = expr
            .index_alternatives()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(field, literal)| Some((field.clone(), literal.index_key()?)))
            .collect();
        Filter {
            canonical: expr.to_string(),
            expr,
            predicate,
            index_terms,
        }
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// Whether `record` matches. Allocates nothing.
    #[inline]
    pub fn matches(&self, record: &Value) -> bool {
        self.predicate.matches(record)
    }

    /// The terms the hub files this filter under (empty: none).
    #[inline]
    pub fn index_terms(&self) -> &[(FieldPath, IndexKey)] {
        &self.index_terms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_filters_share_a_canonical_form() {
        let a = Filter::parse("status=published && price > 10").unwrap();
        let b = Filter::parse("(status = 'published') AND price>10").unwrap();
        assert_eq!(a.canonical(), b.canonical());
    }

    #[test]
    fn index_terms_are_required_equalities_or_their_union() {
        let filter = Filter::parse("room = 7 && kind != 'x'").unwrap();
        let [(field, key)] = filter.index_terms() else {
            panic!("one term: {:?}", filter.index_terms())
        };
        assert_eq!(field.to_string(), "room");
        assert_eq!(Some(key.clone()), IndexKey::from_json(&json!(7.0)));
        assert_eq!(
            Filter::parse("room = 7 || room = 8")
                .unwrap()
                .index_terms()
                .len(),
            2
        );
        assert!(Filter::parse("room > 7").unwrap().index_terms().is_empty());
        assert!(
            Filter::parse("room = 7 || room > 8")
                .unwrap()
                .index_terms()
                .is_empty()
        );
    }

    #[test]
    fn a_matching_record_always_has_one_index_value() {
        let filter = Filter::parse("(room = 7 && active = true) || owner = ann").unwrap();
        for record in [
            json!({"room": 7, "active": true}),
            json!({"room": 8, "owner": "ann"}),
        ] {
            assert!(filter.matches(&record));
            assert!(filter.index_terms().iter().any(|(field, key)| {
                field.get(&record).and_then(IndexKey::from_json).as_ref() == Some(key)
            }));
        }
    }
}
