//! Turning a tree into something fast to test records against: binding
//! `$auth` parameters, compiling to a [`Predicate`], and the equality terms
//! the hub indexes subscribers by.

use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::ast::{CompareOp, Expr, FieldPath, Literal, Operand};

impl Expr {
    /// The same filter with every `$auth.<path>` replaced by the value at
    /// `<path>` in `claims` (a JSON object, typically the token's claims);
    /// numbers convert as in [`Literal::from_json`].
    ///
    /// A claim the caller does not have (absent, or under a non-object; an
    /// anonymous caller has none) is no value at all, not `null`: a
    /// comparison with it is false, and it is left out of an `IN` list. So
    /// `owner = $auth.sub` never matches records without an owner for a
    /// caller without a `sub`. (A claim present with the value `null` is
    /// `null`.)
    pub fn bind(&self, claims: &Value) -> Expr {
        match self {
            Expr::And(items) => Expr::And(items.iter().map(|e| e.bind(claims)).collect()),
            Expr::Or(items) => Expr::Or(items.iter().map(|e| e.bind(claims)).collect()),
            Expr::Not(e) => Expr::Not(Box::new(e.bind(claims))),
            Expr::Compare { field, op, value } => match bind_operand(value, claims) {
                Some(value) => Expr::Compare {
                    field: field.clone(),
                    op: *op,
                    value,
                },
                None => Expr::constant(false),
            },
            Expr::In {
                field,
                values,
                negated,
            } => {
                let bound: Vec<Operand> = values
                    .iter()
                    .filter_map(|v| bind_operand(v, claims))
                    .collect();
                let missing = bound.len() < values.len();
                // `IN` leaves a missing claim out and is false when nothing
                // is left; `NOT IN`, like `!=`, is false with a missing claim.
                if missing && (*negated || bound.is_empty()) {
                    return Expr::constant(false);
                }
                Expr::In {
                    field: field.clone(),
                    values: bound,
                    negated: *negated,
                }
            }
            Expr::True => Expr::True,
            // The inner test's field is the claim's path, so it is tested
            // against the claims themselves.
            Expr::Claim(test) => Expr::constant(compile(&test.bind(claims)).matches(claims)),
        }
    }
}

impl Expr {
    /// `field = literal` terms of which every matching record satisfies at
    /// least one, for indexing subscribers under each of them; `None` when
    /// there is no such set (the subscriber must see every event).
    ///
    /// A `field = literal` comparison is its own set when the literal is a
    /// string, number or boolean (not `null`, which a missing field matches
    /// too, nor an array, object or unbound `$auth` parameter; floats are
    /// included whatever their value, since [`IndexKey`] gives `1` and `1.0`
    /// the same key and `=` is exact); an `AND` may use the set of any of its parts (the
    /// smallest is taken); an `OR` needs a set from every part and takes
    /// their union. So `owner = "u7" OR public = true`, a typical bound read
    /// rule, is filed under both, and an event of someone else's private
    /// record never visits it.
    pub fn index_alternatives(&self) -> Option<Vec<(&FieldPath, &Literal)>> {
        /// Union sets larger than this are not worth indexing.
        const MAX_ALTERNATIVES: usize = 16;
        match self {
            Expr::Compare {
                field,
                op: CompareOp::Eq,
                value: Operand::Literal(lit),
            } if lit.index_key().is_some() => Some(vec![(field, lit)]),
            Expr::And(items) => items
                .iter()
                .filter_map(Expr::index_alternatives)
                .min_by_key(Vec::len),
            Expr::Or(items) if !items.is_empty() => {
                let mut union = Vec::new();
                for item in items {
                    union.extend(item.index_alternatives()?);
                }
                (union.len() <= MAX_ALTERNATIVES).then_some(union)
            }
            _ => None,
        }
    }
}

/// The operand with its claim substituted; `None` for a claim that is missing.
fn bind_operand(operand: &Operand, claims: &Value) -> Option<Operand> {
    match operand {
        Operand::Param(path) => path
            .get(claims)
            .map(|value| Operand::Literal(Literal::from_json(value))),
        literal => Some(literal.clone()),
    }
}

/// A hashable key for `=` on scalars: two JSON scalars are equal under the
/// filter's `=` exactly when they have the same key. Integers and integral
/// floats share keys (`1` and `1.0` agree; so do `u64` values and the
/// floats equal to them), strings key by content, booleans by value.
///
/// Indexing subscribers: file the subscriber under
/// `(field.clone(), literal.index_key())` for each term of
/// `expr.bind(claims).index_alternatives()` (a filter with none goes to the
/// list scanned for every event). For an event, for each indexed
/// field `f`, look up `f.get(&record).and_then(IndexKey::from_json)`: only
/// the subscribers under that key can match, and each is still checked with
/// its [`Predicate`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexKey(KeyRepr);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyRepr {
    Bool(bool),
    /// Every integer, and every float with no fractional part (i128 holds
    /// both i64 and u64 exactly).
    Int(i128),
    /// The bits of a float with a fractional part.
    Float(u64),
    String(String),
}

impl IndexKey {
    /// The key of a record's value, or `None` for `null`, arrays and objects
    /// (which no indexed term can equal).
    pub fn from_json(value: &Value) -> Option<IndexKey> {
        let repr = match value {
            Value::Bool(b) => KeyRepr::Bool(*b),
            Value::Number(n) => num_key(Num::of_json(n)),
            Value::String(s) => KeyRepr::String(s.clone()),
            Value::Null | Value::Array(_) | Value::Object(_) => return None,
        };
        Some(IndexKey(repr))
    }
}

impl Literal {
    /// The [`IndexKey`] of this literal, or `None` for `null`, arrays and
    /// objects.
    pub fn index_key(&self) -> Option<IndexKey> {
        let repr = match self {
            Literal::Bool(b) => KeyRepr::Bool(*b),
            Literal::Int(i) => KeyRepr::Int(i128::from(*i)),
            Literal::Float(f) => num_key(Num::Float(*f)),
            Literal::String(s) => KeyRepr::String(s.clone()),
            Literal::Null | Literal::Array(_) | Literal::Object(_) => return None,
        };
        Some(IndexKey(repr))
    }
}

/// 2^127 as an f64: floats below it in magnitude fit in an i128.
const TWO_POW_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

fn num_key(n: Num) -> KeyRepr {
    match n {
        Num::Int(i) => KeyRepr::Int(i),
        // Integral and in range: the cast is exact. (-0.0 lands on 0.)
        Num::Float(f) if f.fract() == 0.0 && f.abs() < TWO_POW_127 => KeyRepr::Int(f as i128),
        Num::Float(f) => KeyRepr::Float(f.to_bits()),
    }
}

/// A number from a record or a literal, in a form that compares exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    /// Any i64 or u64.
    Int(i128),
    Float(f64),
}

impl Num {
    fn of_json(n: &Number) -> Num {
        if let Some(i) = n.as_i64() {
            Num::Int(i128::from(i))
        } else if let Some(u) = n.as_u64() {
            Num::Int(i128::from(u))
        } else {
            // Without serde_json's arbitrary_precision this is always Some;
            // NaN compares as nothing, which is the safe answer.
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }

    fn of_literal(lit: &Literal) -> Option<Num> {
        match lit {
            Literal::Int(i) => Some(Num::Int(i128::from(*i))),
            Literal::Float(f) => Some(Num::Float(*f)),
            _ => None,
        }
    }
}

/// Exact numeric comparison (no rounding of big integers through f64).
fn cmp_num(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y),
        (Num::Int(x), Num::Float(y)) => cmp_int_float(x, y),
        (Num::Float(x), Num::Int(y)) => cmp_int_float(y, x).map(Ordering::reverse),
    }
}

fn cmp_int_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= TWO_POW_127 {
        return Some(Ordering::Less);
    }
    if f < -TWO_POW_127 {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    // In range and integral: exact.
    match i.cmp(&(whole as i128)) {
        // Same integer part: the fraction decides (i < f when it is positive).
        Ordering::Equal => 0.0_f64.partial_cmp(&(f - whole)),
        other => Some(other),
    }
}

/// `=` between a record value and a literal: type-strict, numbers by value,
/// arrays and objects deeply.
fn json_eq(v: &Value, lit: &Literal) -> bool {
    match (lit, v) {
        (Literal::Null, Value::Null) => true,
        (Literal::Bool(a), Value::Bool(b)) => a == b,
        (Literal::Int(_) | Literal::Float(_), Value::Number(n)) => Num::of_literal(lit)
            .is_some_and(|l| cmp_num(Num::of_json(n), l) == Some(Ordering::Equal)),
        (Literal::String(a), Value::String(b)) => a == b,
        (Literal::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(l, v)| json_eq(v, l))
        }
        (Literal::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, l)| b.get(k.as_str()).is_some_and(|v| json_eq(v, l)))
        }
        _ => false,
    }
}

/// Lower-cases one character for `~`: Unicode lower case, character by
/// character, with the final sigma `ς` folded into `σ` (so that `ΟΔΟΣ`,
/// `οδος` and `οδοσ` all match one another).
fn fold(c: char) -> impl Iterator<Item = char> {
    c.to_lowercase().map(|l| if l == 'ς' { 'σ' } else { l })
}

/// `s` folded with [`fold`] (done once, when compiling).
fn fold_str(s: &str) -> String {
    s.chars().flat_map(fold).collect()
}

/// A `~` needle, folded once when compiling, with a substring searcher
/// built for it: a search costs time linear in the haystack, whatever the
/// needle (a naive scan costs haystack x needle, which a hostile filter
/// could use to stall dispatch).
#[derive(Debug, Clone)]
pub(super) struct Needle {
    finder: memchr::memmem::Finder<'static>,
}

impl Needle {
    fn new(text: &str) -> Needle {
        Needle {
            finder: memchr::memmem::Finder::new(fold_str(text).as_bytes()).into_owned(),
        }
    }

    /// Whether `haystack`, folded with [`fold`], contains the needle.
    fn found_in(&self, haystack: &str) -> bool {
        if !haystack
            .bytes()
            .any(|byte| byte >= 0x80 || byte.is_ascii_uppercase())
        {
            // Already folded: search it as it is.
            return self.finder.find(haystack.as_bytes()).is_some();
        }
        // Folded into a buffer kept per thread, so matching does not
        // allocate once the buffer has grown to the largest text seen.
        thread_local! {
            static FOLDED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        FOLDED.with(|buffer| {
            let mut folded = buffer.borrow_mut();
            folded.clear();
            folded.extend(haystack.chars().flat_map(fold));
            let found = self.finder.find(folded.as_bytes()).is_some();
            // A buffer grown by one huge text is not kept for ever.
            if folded.capacity() > 1 << 20 {
                *folded = String::new();
            }
            found
        })
    }
}

/// A compiled filter: [`Predicate::matches`] tests a record without
/// allocating.
///
/// `$auth` parameters must be bound ([`Expr::bind`]) before compiling; one
/// left unbound is treated as `null`, never a panic (and
/// [`Expr::to_surrealql`] does the same, so both agree).
#[derive(Debug, Clone)]
pub struct Predicate {
    root: Node,
}

#[derive(Debug, Clone)]
enum Node {
    Const(bool),
    All(Box<[Node]>),
    Any(Box<[Node]>),
    Not(Box<Node>),
    Test { path: Box<[String]>, test: Test },
}

#[derive(Debug, Clone)]
enum Test {
    /// `= null`: missing or null.
    NullOrMissing,
    /// `!= null`: present and not null.
    PresentNotNull,
    /// `= v` (v not null): present and equal.
    Equal(Literal),
    /// `!= v` (v not null): present and not equal.
    NotEqual(Literal),
    /// `> < >= <=` against a number or a string.
    Order { op: CompareOp, bound: Bound },
    /// `~` / `!~`. `needle` is set when the value is a string.
    Tilde {
        value: Literal,
        /// Boxed: a searcher is large, and most tests are not `~`.
        needle: Option<Box<Needle>>,
        negated: bool,
    },
    /// `IN` / `NOT IN`.
    In {
        values: Box<[Literal]>,
        negated: bool,
    },
}

#[derive(Debug, Clone)]
enum Bound {
    Num(Num),
    Str(Box<str>),
}

/// Compiles a filter (see [`Predicate`] about parameters).
pub fn compile(expr: &Expr) -> Predicate {
    Predicate { root: node(expr) }
}

fn operand_literal(operand: &Operand) -> Literal {
    match operand {
        Operand::Literal(lit) => lit.clone(),
        // Unbound: documented as null.
        Operand::Param(_) => Literal::Null,
    }
}

fn node(expr: &Expr) -> Node {
    match expr {
        Expr::True => Node::Const(true),
        // Unbound: no claims (documented on `Predicate`).
        Expr::Claim(_) => Node::Const(expr.bind(&Value::Null).as_constant() == Some(true)),
        Expr::And(items) => Node::All(items.iter().map(node).collect()),
        Expr::Or(items) => Node::Any(items.iter().map(node).collect()),
        Expr::Not(e) => Node::Not(Box::new(node(e))),
        Expr::Compare { field, op, value } => {
            let lit = operand_literal(value);
            let test = match (op, lit) {
                (CompareOp::Eq, Literal::Null) => Test::NullOrMissing,
                (CompareOp::Ne, Literal::Null) => Test::PresentNotNull,
                (CompareOp::Eq, lit) => Test::Equal(lit),
                (CompareOp::Ne, lit) => Test::NotEqual(lit),
                (CompareOp::Gt | CompareOp::Lt | CompareOp::Ge | CompareOp::Le, lit) => {
                    let bound = match lit {
                        Literal::String(s) => Bound::Str(s.into_boxed_str()),
                        other => match Num::of_literal(&other) {
                            Some(n) => Bound::Num(n),
                            // Ordering against null, a boolean, an array or
                            // an object is false for every record.
                            None => return Node::Const(false),
                        },
                    };
                    Test::Order { op: *op, bound }
                }
                (CompareOp::Contains | CompareOp::NotContains, value) => {
                    let needle = match &value {
                        Literal::String(s) => Some(Box::new(Needle::new(s))),
                        _ => None,
                    };
                    Test::Tilde {
                        value,
                        needle,
                        negated: *op == CompareOp::NotContains,
                    }
                }
            };
            Node::Test {
                path: field.segments().into(),
                test,
            }
        }
        Expr::In {
            field,
            values,
            negated,
        } => Node::Test {
            path: field.segments().into(),
            test: Test::In {
                values: values.iter().map(operand_literal).collect(),
                negated: *negated,
            },
        },
    }
}

/// The value at `path` in `record`, or `None` if missing.
fn lookup<'r>(path: &[String], record: &'r Value) -> Option<&'r Value> {
    path.iter()
        .try_fold(record, |cur, seg| cur.as_object()?.get(seg.as_str()))
}

fn order_accepts(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        _ => false,
    }
}

impl Predicate {
    /// The predicate that matches every record (no filter).
    pub fn always() -> Predicate {
        Predicate {
            root: Node::Const(true),
        }
    }

    /// Whether `record` (normally a JSON object) matches. Does not allocate.
    #[inline]
    pub fn matches(&self, record: &Value) -> bool {
        self.root.eval(record)
    }
}

impl Node {
    fn eval(&self, record: &Value) -> bool {
        match self {
            Node::Const(b) => *b,
            Node::All(items) => items.iter().all(|n| n.eval(record)),
            Node::Any(items) => items.iter().any(|n| n.eval(record)),
            Node::Not(n) => !n.eval(record),
            Node::Test { path, test } => test.eval(lookup(path, record)),
        }
    }
}

impl Test {
    /// The test on the field's value (`None` when missing).
    fn eval(&self, v: Option<&Value>) -> bool {
        match self {
            Test::NullOrMissing => v.is_none_or(Value::is_null),
            Test::PresentNotNull => v.is_some_and(|v| !v.is_null()),
            Test::Equal(lit) => v.is_some_and(|v| json_eq(v, lit)),
            Test::NotEqual(lit) => v.is_some_and(|v| !json_eq(v, lit)),
            Test::Order { op, bound } => match (bound, v) {
                (Bound::Num(b), Some(Value::Number(n))) => {
                    cmp_num(Num::of_json(n), *b).is_some_and(|o| order_accepts(*op, o))
                }
                (Bound::Str(b), Some(Value::String(s))) => order_accepts(*op, s.as_str().cmp(b)),
                _ => false,
            },
            Test::Tilde {
                value,
                needle,
                negated,
            } => {
                let Some(v) = v else { return false };
                let hit = match v {
                    Value::String(s) => needle.as_ref().is_some_and(|n| n.found_in(s)),
                    Value::Array(items) => items.iter().any(|item| json_eq(item, value)),
                    _ => false,
                };
                hit != *negated
            }
            Test::In { values, negated } => {
                let Some(v) = v else { return false };
                values.iter().any(|lit| json_eq(v, lit)) != *negated
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use serde_json::json;

    fn matches(filter: &str, record: &Value) -> bool {
        match parse(filter) {
            Ok(e) => compile(&e).matches(record),
            Err(e) => panic!("{filter:?}: {e}"),
        }
    }

    #[test]
    fn evaluation() {
        let rec = json!({
            "status": "published",
            "price": 150,
            "ratio": 0.5,
            "one_f": 1.0,
            "big": 18446744073709551615u64,
            "active": true,
            "nothing": null,
            "title": "Rust in Action",
            "school": "ÉCOLE Normale",
            "greek": "ΟΔΟΣ",
            "tags": ["news", "Tech", 3, null, [1, 2], {"k": 1}],
            "empty": "",
            "author": {"name": "john", "age": 40, "address": {"city": "Paris"}},
            "id": "user:123",
            "n100": "100"
        });
        let table: &[(&str, bool)] = &[
            // Equality, type-strict.
            ("status=published", true),
            ("status=draft", false),
            ("status='published'", true),
            ("status=Published", false),
            ("price=150", true),
            ("price=150.0", true),
            ("price=\"150\"", false),
            ("n100=100", false),
            ("n100=\"100\"", true),
            ("active=true", true),
            ("active=1", false),
            ("active=\"true\"", false),
            ("one_f=1", true),
            ("one_f=1.0", true),
            ("ratio=0.5", true),
            ("ratio=5e-1", true),
            ("big=18446744073709551615", false), // parsed as the float 2^64
            ("big>9223372036854775807", true),
            ("big<18446744073709551616", true),
            ("id=user:123", true),
            // !=.
            ("status!=draft", true),
            ("status!=published", false),
            ("price!=\"150\"", true),
            ("nothing!=5", true),
            ("missing!=5", false),
            ("missing!=\"x\"", false),
            // null and missing.
            ("nothing=null", true),
            ("missing=null", true),
            ("missing.deeper=null", true),
            ("price=null", false),
            ("nothing!=null", false),
            ("missing!=null", false),
            ("price!=null", true),
            ("missing=1", false),
            ("missing>1", false),
            ("missing<1", false),
            ("missing~x", false),
            ("missing!~x", false),
            ("missing IN [null]", false),
            ("missing NOT IN [1]", false),
            ("NOT missing=1", true),
            ("NOT (price > 10)", false),
            ("NOT (missing > 10)", true),
            // Ordering.
            ("price>100", true),
            ("price>150", false),
            ("price>=150", true),
            ("price<=150", true),
            ("price<150.5", true),
            ("price>149.99", true),
            ("price<200", true),
            ("ratio<1", true),
            ("ratio>0", true),
            ("price>\"100\"", false),
            ("n100>50", false),
            ("status>pub", true),
            ("status<q", true),
            ("status>=published", true),
            ("status<published", false),
            ("title<rust", true), // 'R' < 'r' by code point
            ("active>false", false),
            ("nothing>0", false),
            ("nothing<0", false),
            ("price>null", false),
            ("tags>1", false),
            ("author>1", false),
            ("price>[1]", false),
            // Nested paths.
            ("author.name=john", true),
            ("author.age>=40", true),
            ("author.address.city=Paris", true),
            ("author.address.city.x=null", true),
            ("author.address.zip=null", true),
            ("status.length=null", true),
            ("status.length>0", false),
            ("tags.news=null", true),
            // ~ on strings.
            ("title~rust", true),
            ("title~ACTION", true),
            ("title~'in a'", true),
            ("title~java", false),
            ("title~''", true),
            ("empty~''", true),
            ("empty~a", false),
            ("school~école", true),
            ("school~'ÉCOLE NORMALE'", true),
            ("school~normale", true),
            ("school~ecole", false),
            ("greek~οδος", true),
            ("greek~'ΟΔΟΣ'", true),
            ("greek~οδοσ", true),
            ("title~1", false),
            ("title!~rust", false),
            ("title!~java", true),
            // ~ on arrays: membership with `=`, case-sensitive.
            ("tags~news", true),
            ("tags~NEWS", false),
            ("tags~Tech", true),
            ("tags~tech", false),
            ("tags~3", true),
            ("tags~3.0", true),
            ("tags~\"3\"", false),
            ("tags~null", true),
            ("tags~[1, 2]", true),
            ("tags~[2, 1]", false),
            ("tags~{k: 1}", true),
            ("tags~{k: 1.0}", true),
            ("tags~{k: 1, j: 2}", false),
            ("tags!~news", false),
            ("tags!~sports", true),
            // ~ on other types.
            ("price~1", false),
            ("price~'150'", false),
            ("active~true", false),
            ("nothing~x", false),
            ("author~name", false),
            ("price!~1", true),
            ("nothing!~x", true),
            ("author!~john", true),
            // Deep equality.
            ("tags=[\"news\", \"Tech\", 3, null, [1, 2], {k: 1}]", true),
            ("tags=[\"news\"]", false),
            ("author.address={city: Paris}", true),
            ("author.address={city: Paris, zip: null}", false),
            ("author.address!={}", true),
            // IN.
            ("status IN [draft, published]", true),
            ("status IN [draft]", false),
            ("status IN []", false),
            ("price IN [1, 150.0]", true),
            ("price IN [\"150\"]", false),
            ("nothing IN [null]", true),
            ("status NOT IN [draft]", true),
            ("status NOT IN [draft, published]", false),
            ("status NOT IN []", true),
            ("nothing NOT IN [1]", true),
            // Boolean logic.
            ("status=published && price>100", true),
            ("status=published && price>200", false),
            ("status=draft || price>100", true),
            ("status=draft || price>200", false),
            ("!status=draft", true),
            ("status=draft || price>100 && active=false", false),
            ("(status=draft || price>100) && active=true", true),
            ("not not status=published", true),
            // JSON form.
            ("{}", true),
            (r#"{"status": "published", "price": 150}"#, true),
            (r#"{"status": "published", "price": 151}"#, false),
            (r#"{"author.address": {"city": "Paris"}}"#, true),
            (r#"{"nothing": null, "missing": null}"#, true),
        ];
        for &(filter, expected) in table {
            assert_eq!(matches(filter, &rec), expected, "{filter}");
        }
    }

    #[test]
    fn non_object_records_have_no_fields() {
        for rec in [json!(null), json!(5), json!([1]), json!("s")] {
            assert!(matches("a=null", &rec));
            assert!(!matches("a!=null", &rec));
            assert!(!matches("a=1", &rec));
        }
    }

    #[test]
    fn always_matches_everything() {
        assert!(Predicate::always().matches(&json!({})));
        assert!(Predicate::always().matches(&json!(null)));
    }

    #[test]
    fn exact_number_comparison() {
        let rec = json!({"i": 9007199254740993i64, "f": 9007199254740992.0, "neg": -0.0});
        // 2^53 + 1 is not equal to the float 2^53, though `as f64` would say so.
        assert!(!matches("i=9007199254740992.0", &rec));
        assert!(matches("i>9007199254740992.0", &rec));
        assert!(matches("i=9007199254740993", &rec));
        assert!(matches("f=9007199254740992", &rec));
        assert!(matches("neg=0", &rec));
        assert!(matches("neg=0.0", &rec));
        assert_eq!(cmp_int_float(-1, -0.5), Some(Ordering::Less));
        assert_eq!(cmp_int_float(0, -0.5), Some(Ordering::Greater));
        assert_eq!(cmp_int_float(0, 0.5), Some(Ordering::Less));
        assert_eq!(cmp_int_float(1, f64::NAN), None);
        assert_eq!(cmp_int_float(i128::MAX, 1e300), Some(Ordering::Less));
        assert_eq!(cmp_int_float(i128::MIN, -1e300), Some(Ordering::Greater));
    }

    #[test]
    fn case_insensitive_contains() {
        for (hay, needle, expected) in [
            ("Hello World", "o w", true),
            ("Hello", "hello!", false),
            ("ÉCOLE", "école", true),
            ("école", "ÉCOLE", true),
            ("Straße", "STRASSE", false), // no full case folding: ß stays ß
            ("STRAẞE", "straße", true),
            ("İstanbul", "i̇stanbul", true),
            ("abc", "é", false),
            ("aé", "É", true),
            ("ΣΊΣΥΦΟΣ", "σίσυφος", true),
            ("x", "", true),
            ("", "", true),
            ("", "a", false),
        ] {
            assert_eq!(
                Needle::new(needle).found_in(hay),
                expected,
                "{hay} ~ {needle}"
            );
        }
    }

    #[test]
    fn bind_substitutes_claims() {
        let claims = json!({"sub": "u1", "role": "admin", "org": {"id": 7}, "groups": ["a", "b"]});
        let bound =
            parse("owner=$auth.sub && (org=$auth.org.id || grp IN [$auth.groups, $auth.nope])")
                .map(|e| e.bind(&claims));
        assert_eq!(
            bound.map(|e| e.to_string()),
            Ok(r#"(owner = "u1") AND ((org = 7) OR (grp IN [["a", "b"]]))"#.to_owned())
        );
        // A missing claim is no value: comparisons with it are false.
        let e = parse("x=$auth.missing").map(|e| e.bind(&json!("not an object")));
        assert_eq!(e.map(|e| e.to_string()), Ok("NOT ({})".to_owned()));
        let e = parse("x=$auth.nothing || x IN [1, $auth.nothing]").unwrap();
        let bound = compile(&e.bind(&json!({"nothing": null})));
        assert!(bound.matches(&json!({})), "a claim that is null is null");
        let unknown = compile(&e.bind(&json!({})));
        assert!(!unknown.matches(&json!({})) && unknown.matches(&json!({"x": 1})));
        // Nothing left to be in, and nothing known to be out of.
        for text in ["x IN [$auth.nothing]", "x NOT IN [1, $auth.nothing]"] {
            let bound = parse(text).unwrap().bind(&json!({})).simplify();
            assert_eq!(bound.as_constant(), Some(false), "{text}");
        }
    }

    #[test]
    fn unbound_params_are_null() {
        let e = parse("owner=$auth.sub").unwrap_or(Expr::True);
        assert!(e.has_params());
        let p = compile(&e);
        assert!(p.matches(&json!({})));
        assert!(p.matches(&json!({"owner": null})));
        assert!(!p.matches(&json!({"owner": "u1"})));
    }

    #[test]
    fn claim_conditions_bind_to_constants() {
        let signed_in = parse("$auth.sub != null").unwrap();
        assert_eq!(signed_in.to_string(), "$auth.sub != null");
        assert_eq!(parse(&signed_in.to_string()).unwrap(), signed_in);
        assert_eq!(signed_in.bind(&json!({"sub": "u1"})), Expr::True);
        assert_eq!(signed_in.bind(&json!({})).as_constant(), Some(false));
        // Unbound, no claims: compiled and translated alike.
        assert!(!compile(&signed_in).matches(&json!({})));
        assert_eq!(signed_in.to_surrealql().0, "false");

        let rule = parse("$auth.role IN [editor, admin] || owner = $auth.sub").unwrap();
        let editor = rule.bind(&json!({"sub": "e", "role": "editor"})).simplify();
        assert_eq!(editor, Expr::True);
        let viewer = rule.bind(&json!({"sub": "v", "role": "viewer"})).simplify();
        assert_eq!(viewer.to_string(), r#"owner = "v""#);
        assert!(compile(&viewer).matches(&json!({"owner": "v"})));
        assert!(!compile(&viewer).matches(&json!({"owner": "e"})));
    }

    #[test]
    fn index_alternatives_cover_every_match() {
        let alternatives = |text: &str| -> Option<Vec<String>> {
            let expr = parse(text).unwrap();
            expr.index_alternatives()
                .map(|set| set.iter().map(|(f, l)| format!("{f}={l}")).collect())
        };
        assert_eq!(alternatives("a = 1"), Some(vec!["a=1".to_owned()]));
        assert_eq!(
            alternatives("owner = u7 || public = true"),
            Some(vec![r#"owner="u7""#.to_owned(), "public=true".to_owned()])
        );
        assert_eq!(
            alternatives("(a = 1 || b = 2) && c = 3 && d > 0"),
            Some(vec!["c=3".to_owned()]),
            "the smallest set of a conjunction"
        );
        for unindexable in [
            "a = 1 || b > 2",
            "a > 1",
            "!(a = 1)",
            "a = null",
            "a = 1 || !(b = 2)",
        ] {
            assert_eq!(alternatives(unindexable), None, "{unindexable}");
        }
    }

    #[test]
    fn simplify_folds_constants() {
        let cases = [
            ("{}", "{}"),
            ("a = 1 && $auth.x = null", "a = 1"),
            ("a = 1 || $auth.x = null", "{}"),
            ("a = 1 && $auth.x != null", "NOT ({})"),
            ("!(a = 1 || $auth.x != null)", "NOT (a = 1)"),
            ("!($auth.x != null)", "{}"),
            ("!!(a = 1)", "a = 1"),
        ];
        for (text, simplified) in cases {
            let expr = parse(text).unwrap().bind(&json!({})).simplify();
            assert_eq!(expr.to_string(), simplified, "{text}");
        }
    }

    #[test]
    fn only_exact_scalar_equalities_index() {
        let terms = |f: &str| -> Vec<String> {
            match parse(f) {
                Ok(e) => e
                    .index_alternatives()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(p, l)| format!("{p}={l}"))
                    .collect(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(terms("status=published"), ["status=\"published\""]);
        for (one, indexed) in [
            ("a=1", true),
            ("b>2", false),
            ("c=true", true),
            ("d=null", false),
            ("e=[1]", false),
            ("f=2.5", true),
            ("g=$auth.sub", false),
            ("h==x", true),
            ("a!=1", false),
            ("a IN [1]", false),
            ("!a=1", false),
            ("{}", false),
        ] {
            assert_eq!(!terms(one).is_empty(), indexed, "{one}");
        }
        // A conjunction takes one of its parts' sets.
        assert_eq!(
            terms("a=1 && b>2 && c=true && d=null && e=[1] && f=2.5 && g=$auth.sub && h==x"),
            ["a=1"]
        );
        assert_eq!(terms(r#"{"a": 1, "b": {"c": 1}, "d": "x"}"#), ["a=1"]);
        assert!(terms("(a=1 || b>2) && !c=3").is_empty());
        let bound = parse("g=$auth.sub").map(|e| e.bind(&json!({"sub": "u1"})));
        let bound = bound.unwrap_or(Expr::True);
        assert_eq!(bound.index_alternatives().map(|set| set.len()), Some(1));
    }

    #[test]
    fn index_keys_agree_with_equality() {
        let key = |v: Value| IndexKey::from_json(&v);
        assert_eq!(key(json!(1)), Literal::Int(1).index_key());
        assert_eq!(key(json!(1.0)), Literal::Int(1).index_key());
        assert_eq!(key(json!(1)), Literal::Float(1.0).index_key());
        assert_eq!(key(json!(-0.0)), Literal::Int(0).index_key());
        assert_eq!(key(json!(1.5)), Literal::Float(1.5).index_key());
        assert_ne!(key(json!(1.5)), Literal::Float(2.5).index_key());
        assert_eq!(
            key(json!(18446744073709551615u64)),
            Some(IndexKey(KeyRepr::Int(18446744073709551615)))
        );
        assert_eq!(
            key(json!(9223372036854775808u64)),
            Literal::Float(9223372036854775808.0).index_key()
        );
        assert_ne!(key(json!("1")), Literal::Int(1).index_key());
        assert_ne!(key(json!(true)), Literal::Int(1).index_key());
        assert_eq!(key(json!("x")), Literal::String("x".into()).index_key());
        assert_eq!(key(json!(true)), Literal::Bool(true).index_key());
        assert_eq!(key(json!(null)), None);
        assert_eq!(key(json!([1])), None);
        assert_eq!(key(json!({})), None);
        assert_eq!(Literal::Null.index_key(), None);
        assert_eq!(Literal::Array(vec![]).index_key(), None);
        // A lookup through the field path, as the hub does it.
        let rec = json!({"a": {"b": 2.0}});
        let path = FieldPath::parse("a.b");
        let found = path
            .as_ref()
            .and_then(|p| p.get(&rec))
            .and_then(IndexKey::from_json);
        assert_eq!(found, Literal::Int(2).index_key());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                (-3i64..3).prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                prop::sample::select(vec![-1.0f64, 0.0, -0.0, 0.5, 1.0, 2.0, 1e20])
                    .prop_map(Value::from),
                "[a-cA-C]{0,2}".prop_map(Value::from),
            ];
            leaf.prop_recursive(2, 8, 3, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                    prop::collection::btree_map("[a-b]", inner, 0..3)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// `IndexKey` equality is `=`: for scalars, equal keys exactly
            /// when `field = literal` matches.
            #[test]
            fn index_key_iff_equal(a in arb_json(), b in arb_json()) {
                let lit = Literal::from_json(&b);
                if let (Some(ka), Some(kb)) = (IndexKey::from_json(&a), lit.index_key()) {
                    prop_assert_eq!(ka == kb, json_eq(&a, &lit));
                }
            }

            /// `=` and `!=` are complementary on present fields; `IN [v]` is `= v`
            /// on present fields; `!~` is `NOT ~` on present fields.
            #[test]
            fn operator_relations(a in arb_json(), b in arb_json()) {
                let rec = json!({"f": a});
                let lit = Literal::from_json(&b);
                let eq = matches(&format!("f = {lit}"), &rec);
                prop_assert_eq!(matches(&format!("f != {lit}"), &rec), !eq);
                prop_assert_eq!(matches(&format!("f IN [{lit}]"), &rec), eq);
                prop_assert_eq!(matches(&format!("f NOT IN [{lit}]"), &rec), !eq);
                let tilde = matches(&format!("f ~ {lit}"), &rec);
                prop_assert_eq!(matches(&format!("f !~ {lit}"), &rec), !tilde);
                // Equality is symmetric (where the conversion to a literal is
                // exact: u64 values beyond i64 become floats).
                let back = Literal::from_json(&a);
                if back.to_json() == a && lit.to_json() == b {
                    prop_assert_eq!(json_eq(&b, &back), eq);
                }
            }
        }
    }
}
