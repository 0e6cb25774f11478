//! The syntax tree of a filter, and its canonical text form.
//!
//! [`Expr`]'s `Display` writes the canonical form: every operand of `AND` and
//! `OR` in parentheses, `NOT (…)`, operators spaced, strings double-quoted with
//! escapes, floats with a `.` or an exponent. Parsing that text gives back an
//! equal tree for every tree that [`parse`](super::parse) can produce (the text
//! may nest deeper than the input did, since it adds parentheses, so a filter
//! already at the nesting limit may not re-parse).

use std::collections::BTreeMap;
use std::fmt::{self, Display, Formatter, Write as _};

use serde_json::Value;

/// A field name: one or more segments, `a.b.c` meaning field `c` of the
/// object in field `b` of the object in field `a`.
///
/// Every segment matches `[A-Za-z_][A-Za-z0-9_]*`; the constructors refuse
/// anything else, which is what makes splicing a path into SurrealQL safe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath {
    segments: Vec<String>,
}

impl FieldPath {
    /// Reads `a.b.c`; `None` unless every segment matches
    /// `[A-Za-z_][A-Za-z0-9_]*`.
    pub fn parse(text: &str) -> Option<FieldPath> {
        FieldPath::from_segments(text.split('.').map(str::to_owned).collect())
    }

    /// Builds a path from its segments; `None` if there are none or one does
    /// not match `[A-Za-z_][A-Za-z0-9_]*`.
    pub fn from_segments(segments: Vec<String>) -> Option<FieldPath> {
        if segments.is_empty() || !segments.iter().all(|s| is_segment(s)) {
            return None;
        }
        Some(FieldPath { segments })
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The value at this path in `value`, descending through nested objects.
    /// `None` (the field is missing) when a segment is absent or when an
    /// intermediate value is not an object. Does not allocate.
    pub fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.segments
            .iter()
            .try_fold(value, |cur, seg| cur.as_object()?.get(seg.as_str()))
    }
}

impl Display for FieldPath {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_char('.')?;
            }
            f.write_str(seg)?;
        }
        Ok(())
    }
}

/// Whether `s` is one field-name segment: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_segment(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A constant value in a filter.
///
/// `Array` and `Object` come from the JSON form (`{"tags":["a","b"]}`) or from
/// `[…]` / `{…}` written after an operator; they compare by deep equality.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits in an `i64`.
    Int(i64),
    /// Any other number (always finite when produced by the parser).
    Float(f64),
    /// A quoted string or a bare word.
    String(String),
    /// `[v, …]`.
    Array(Vec<Literal>),
    /// `{"k": v, …}`; keys are kept sorted, so equal objects are equal
    /// whatever the order they were written in.
    Object(BTreeMap<String, Literal>),
}

impl Literal {
    /// The literal for a JSON value. Integers that fit in `i64` become
    /// [`Literal::Int`]; every other number (including integers beyond the
    /// `i64` range) becomes [`Literal::Float`].
    pub fn from_json(value: &Value) -> Literal {
        match value {
            Value::Null => Literal::Null,
            Value::Bool(b) => Literal::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Literal::Int(i),
                None => n.as_f64().map_or(Literal::Null, Literal::Float),
            },
            Value::String(s) => Literal::String(s.clone()),
            Value::Array(a) => Literal::Array(a.iter().map(Literal::from_json).collect()),
            Value::Object(o) => Literal::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), Literal::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// The JSON value of this literal (a non-finite float, which the parser
    /// never produces, becomes `null` as in JSON).
    pub fn to_json(&self) -> Value {
        match self {
            Literal::Null => Value::Null,
            Literal::Bool(b) => Value::Bool(*b),
            Literal::Int(i) => Value::from(*i),
            Literal::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            Literal::String(s) => Value::String(s.clone()),
            Literal::Array(a) => Value::Array(a.iter().map(Literal::to_json).collect()),
            Literal::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("null"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Int(i) => write!(f, "{i}"),
            // `{:?}` is the shortest text that reads back as the same f64, and
            // always has a `.` or an exponent (`1.0`, `1e20`), so it re-parses
            // as a float rather than an integer.
            Literal::Float(x) if x.is_finite() => write!(f, "{x:?}"),
            Literal::Float(_) => f.write_str("null"),
            Literal::String(s) => write_quoted(f, s),
            Literal::Array(items) => {
                f.write_char('[')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(']')
            }
            Literal::Object(members) => {
                f.write_char('{')?;
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_quoted(f, k)?;
                    write!(f, ": {v}")?;
                }
                f.write_char('}')
            }
        }
    }
}

/// Writes `s` double-quoted, escaping what the parser un-escapes. The result
/// is also a valid JSON string.
fn write_quoted(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c if c.is_control() => {
                // Other control characters (all in the BMP) as \uXXXX, so the
                // text stays printable and unambiguous.
                write!(f, "\\u{:04X}", u32::from(c))?;
            }
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// What stands on the right of an operator: a constant, or a claim of the
/// caller's token to be substituted by [`Expr::bind`].
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A constant.
    Literal(Literal),
    /// `$auth.<path>`: the claim at this path (the part after `$auth.`).
    Param(FieldPath),
}

impl Display for Operand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Literal(l) => write!(f, "{l}"),
            Operand::Param(p) => write!(f, "$auth.{p}"),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `=` (also written `==`).
    Eq,
    /// `!=`.
    Ne,
    /// `>`.
    Gt,
    /// `<`.
    Lt,
    /// `>=`.
    Ge,
    /// `<=`.
    Le,
    /// `~`: case-insensitive substring, or array membership.
    Contains,
    /// `!~`: the negation of `~` on a present field.
    NotContains,
}

impl CompareOp {
    /// The canonical spelling (`=`, `!=`, `>`, `<`, `>=`, `<=`, `~`, `!~`).
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Gt => ">",
            CompareOp::Lt => "<",
            CompareOp::Ge => ">=",
            CompareOp::Le => "<=",
            CompareOp::Contains => "~",
            CompareOp::NotContains => "!~",
        }
    }
}

impl Display for CompareOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// All of them (an empty list matches everything; the parser never makes
    /// one, and never makes a list of fewer than two).
    And(Vec<Expr>),
    /// Any of them (an empty list matches nothing; the parser never makes one,
    /// and never makes a list of fewer than two).
    Or(Vec<Expr>),
    /// The negation.
    Not(Box<Expr>),
    /// `field op value`.
    Compare {
        /// The field compared.
        field: FieldPath,
        /// The operator.
        op: CompareOp,
        /// The right-hand side.
        value: Operand,
    },
    /// `field IN [values]`, or `field NOT IN [values]` when `negated`.
    In {
        /// The field compared.
        field: FieldPath,
        /// The list.
        values: Vec<Operand>,
        /// `NOT IN`.
        negated: bool,
    },
    /// Matches every record: the JSON filter `{}`.
    True,
    /// `$auth.<claim> op value` or `$auth.<claim> [NOT] IN [...]`: a test of
    /// the caller's token alone, such as `$auth.sub != null` (signed in) or
    /// `$auth.role = editor`. The inner expression is a `Compare` or `In`
    /// whose `field` is the claim's path, so testing it against the claims
    /// object tests the claim. [`Expr::bind`] turns it into a constant;
    /// unbound, it sees no claims (every claim is missing).
    Claim(Box<Expr>),
}

impl Expr {
    /// Whether any `$auth.…` parameter is left (see [`Expr::bind`]).
    pub fn has_params(&self) -> bool {
        match self {
            Expr::And(items) | Expr::Or(items) => items.iter().any(Expr::has_params),
            Expr::Not(e) => e.has_params(),
            Expr::Compare { value, .. } => matches!(value, Operand::Param(_)),
            Expr::In { values, .. } => values.iter().any(|v| matches!(v, Operand::Param(_))),
            Expr::True => false,
            Expr::Claim(_) => true,
        }
    }

    /// A filter that matches every record (`true`) or none.
    pub fn constant(value: bool) -> Expr {
        if value {
            Expr::True
        } else {
            Expr::Not(Box::new(Expr::True))
        }
    }

    /// `Some(value)` when the filter is a constant (see [`Expr::constant`]).
    pub fn as_constant(&self) -> Option<bool> {
        match self {
            Expr::True => Some(true),
            Expr::Not(inner) if matches!(**inner, Expr::True) => Some(false),
            _ => None,
        }
    }

    /// Folds constants: `AND` with a false part is false, `OR` with a true
    /// part is true, and constant parts are dropped from the rest. Bound
    /// rules often reduce to a constant (`$auth.sub != null`), which then
    /// needs no per-record test at all.
    pub fn simplify(self) -> Expr {
        match self {
            Expr::And(items) => fold(items, false, Expr::And),
            Expr::Or(items) => fold(items, true, Expr::Or),
            Expr::Not(inner) => match inner.simplify() {
                Expr::Not(twice) if !matches!(*twice, Expr::True) => *twice,
                other => match other.as_constant() {
                    Some(value) => Expr::constant(!value),
                    None => Expr::Not(Box::new(other)),
                },
            },
            other => other,
        }
    }
}

/// Simplifies an `AND` (`decisive` false) or `OR` (`decisive` true).
fn fold(items: Vec<Expr>, decisive: bool, group: fn(Vec<Expr>) -> Expr) -> Expr {
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        let item = item.simplify();
        match item.as_constant() {
            Some(value) if value == decisive => return Expr::constant(decisive),
            Some(_) => {}
            None => kept.push(item),
        }
    }
    match kept.len() {
        0 => Expr::constant(!decisive),
        1 => kept.pop().unwrap_or(Expr::True),
        _ => group(kept),
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::True => f.write_str("{}"),
            Expr::And(items) if items.is_empty() => f.write_str("{}"),
            // No text means "nothing"; this form does not re-parse, but the
            // parser never produces an empty `Or` either.
            Expr::Or(items) if items.is_empty() => f.write_str("NOT ({})"),
            Expr::And(items) => write_group(f, items, " AND "),
            Expr::Or(items) => write_group(f, items, " OR "),
            Expr::Not(e) => write!(f, "NOT ({e})"),
            Expr::Compare { field, op, value } => write!(f, "{field} {op} {value}"),
            Expr::In {
                field,
                values,
                negated,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "{field} {not}IN [")?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_char(']')
            }
            Expr::Claim(inner) => write!(f, "$auth.{inner}"),
        }
    }
}

/// `(a) SEP (b) SEP (c)`.
fn write_group(f: &mut Formatter<'_>, items: &[Expr], sep: &str) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "({item})")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_paths_validate_segments() {
        assert!(FieldPath::parse("a").is_some());
        assert!(FieldPath::parse("_a1.b_2.C").is_some());
        for bad in ["", ".", "a.", ".a", "a..b", "1a", "a-b", "a b", "é", "a`b"] {
            assert!(FieldPath::parse(bad).is_none(), "{bad:?}");
        }
        assert!(FieldPath::from_segments(vec![]).is_none());
        assert_eq!(
            FieldPath::parse("a.b.c").map(|p| p.to_string()),
            Some("a.b.c".into())
        );
    }

    #[test]
    fn field_path_lookup() {
        let rec = json!({"a": {"b": {"c": 1}}, "s": "x", "n": null});
        let get = |p: &str| FieldPath::parse(p).and_then(|p| p.get(&rec).cloned());
        assert_eq!(get("a.b.c"), Some(json!(1)));
        assert_eq!(get("a.b"), Some(json!({"c": 1})));
        assert_eq!(get("a.x.c"), None);
        assert_eq!(get("s.len"), None);
        assert_eq!(get("n"), Some(Value::Null));
        assert_eq!(get("n.x"), None);
        assert_eq!(
            FieldPath::parse("a").and_then(|p| p.get(&json!([1])).cloned()),
            None
        );
    }

    #[test]
    fn literal_display() {
        let cases: Vec<(Literal, &str)> = vec![
            (Literal::Null, "null"),
            (Literal::Bool(true), "true"),
            (Literal::Int(-5), "-5"),
            (Literal::Float(1.0), "1.0"),
            (Literal::Float(-2000.0), "-2000.0"),
            (Literal::Float(1e20), "1e20"),
            (Literal::Float(1.5e-7), "1.5e-7"),
            (Literal::Float(f64::NAN), "null"),
            (
                Literal::String("a\"b\\c\n\t\r\u{1}é".into()),
                r#""a\"b\\c\n\t\r\u0001é""#,
            ),
            (Literal::String("it's".into()), r#""it's""#),
            (
                Literal::Array(vec![Literal::Int(1), Literal::String("a".into())]),
                r#"[1, "a"]"#,
            ),
            (Literal::Array(vec![]), "[]"),
            (
                Literal::from_json(&json!({"b": 1, "a": [true]})),
                r#"{"a": [true], "b": 1}"#,
            ),
        ];
        for (lit, text) in cases {
            assert_eq!(lit.to_string(), text);
        }
    }

    #[test]
    fn json_round_trip() {
        let v = json!({"a": [1, 2.5, "x", null, true, {"b": -3}], "big": 18446744073709551615u64});
        let lit = Literal::from_json(&v);
        let Literal::Object(o) = &lit else {
            panic!("not an object")
        };
        assert_eq!(
            o.get("big"),
            Some(&Literal::Float(18446744073709551615u64 as f64))
        );
        assert_eq!(lit.to_json()["a"], v["a"]);
        assert_eq!(Literal::Float(f64::INFINITY).to_json(), Value::Null);
    }

    #[test]
    fn has_params() {
        let f = FieldPath::parse("a").unwrap();
        let p = Operand::Param(f.clone());
        let e = Expr::Not(Box::new(Expr::In {
            field: f.clone(),
            values: vec![Operand::Literal(Literal::Null), p],
            negated: false,
        }));
        assert!(e.has_params());
        assert!(!Expr::True.has_params());
        let c = Expr::Compare {
            field: f,
            op: CompareOp::Eq,
            value: Operand::Literal(Literal::Int(1)),
        };
        assert!(!Expr::And(vec![c.clone(), c]).has_params());
    }

    #[test]
    fn unusual_trees_display_without_panicking() {
        assert_eq!(Expr::And(vec![]).to_string(), "{}");
        assert_eq!(Expr::Or(vec![]).to_string(), "NOT ({})");
        assert_eq!(Expr::Not(Box::new(Expr::True)).to_string(), "NOT ({})");
    }
}
