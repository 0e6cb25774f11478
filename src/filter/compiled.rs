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
    /// A `field = value` term every matching record satisfies, if the filter
    /// has one: the hub indexes the filter by it.
    index_term: Option<(FieldPath, IndexKey)>,
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
        let index_term = expr
            .equality_terms()
            .into_iter()
            .find_map(|(field, literal)| Some((field.clone(), literal.index_key()?)));
        Filter {
            canonical: expr.to_string(),
            expr,
            predicate,
            index_term,
        }
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// Whether `record` matches. Allocates nothing.
    pub fn matches(&self, record: &Value) -> bool {
        self.predicate.matches(record)
    }

    pub fn index_term(&self) -> Option<(&FieldPath, &IndexKey)> {
        self.index_term.as_ref().map(|(field, key)| (field, key))
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
    fn the_index_term_is_a_required_equality() {
        let filter = Filter::parse("room = 7 && kind != 'x'").unwrap();
        let (field, key) = filter.index_term().unwrap();
        assert_eq!(field.to_string(), "room");
        assert_eq!(Some(key.clone()), IndexKey::from_json(&json!(7.0)));
        assert!(
            Filter::parse("room = 7 || room = 8")
                .unwrap()
                .index_term()
                .is_none()
        );
        assert!(Filter::parse("room > 7").unwrap().index_term().is_none());
    }

    #[test]
    fn a_matching_record_always_has_the_index_value() {
        let filter = Filter::parse("room = 7 && active = true").unwrap();
        let (field, key) = filter.index_term().unwrap();
        let record = json!({"room": 7, "active": true});
        assert!(filter.matches(&record));
        assert_eq!(
            field.get(&record).and_then(IndexKey::from_json).as_ref(),
            Some(key)
        );
    }
}
