//! Translating a filter into a SurrealQL `WHERE` condition that selects the
//! same records as the compiled [`Predicate`](super::Predicate), on
//! SurrealDB 3.x.
//!
//! Values are never spliced into the text: each is a bound parameter
//! `$f0`, `$f1`, … Field names are spliced, each segment between backticks,
//! which is safe because a [`FieldPath`] segment can only be
//! `[A-Za-z_][A-Za-z0-9_]*` (backticks and backslashes are escaped all the
//! same, in case that ever changes).
//!
//! Where SurrealQL and the filter language differ, guards make the result
//! the same:
//! - SurrealQL orders values of different types against each other; the
//!   filter does not, so `>`, `<`, `>=`, `<=` are guarded by
//!   `type::is_number` or `type::is_string`.
//! - A missing field reads as `NONE`, distinct from `NULL`; `= null` tests
//!   both, `!=`, `!~`, `IN` and `NOT IN` test that the field is not `NONE`.
//! - On an array, `a.b` projects (`[{b: 1}].b` is `[1]`) where the filter
//!   sees a missing field, so for a nested path every intermediate value is
//!   checked with `type::is_object` first.
//! - `~` calls `string::lowercase` only once `type::is_string` has held
//!   (SurrealQL's `AND` short-circuits), since the function rejects other
//!   types; the needle is lower-cased here, with Rust's `str::to_lowercase`,
//!   which is what `string::lowercase` uses.
//!
//! One difference remains: SurrealDB lower-cases a final capital sigma to `ς`
//! and a non-final one to `σ`, while the predicate treats `ς` and `σ` as the
//! same letter, so a `~` whose needle holds `σ`/`ς` can differ between the two
//! at the edges (e.g. `ΟΔΟΣ ~ σ` is true for the predicate and false in
//! SurrealDB).

use serde_json::Value;

use super::ast::{CompareOp, Expr, FieldPath, Literal, Operand};

impl Expr {
    /// A SurrealQL condition (for `WHERE`) equivalent to this filter, and its
    /// parameters, in order: `price>100` gives
    /// ``(type::is_number(`price`) AND `price` > $f0)`` and `[("f0", 100)]`.
    /// The names are given without the `$`, as SurrealDB's `bind` takes them.
    ///
    /// `$auth` parameters must be bound ([`Expr::bind`]) first; one left
    /// unbound is translated as `null`, the same as [`compile`] does.
    ///
    /// [`compile`]: super::compile
    pub fn to_surrealql(&self) -> (String, Vec<(String, Value)>) {
        self.to_surrealql_named("f")
    }

    /// [`Expr::to_surrealql`] with parameters named `<prefix>0`,
    /// `<prefix>1`, …, so several conditions can share one query.
    pub fn to_surrealql_named(&self, prefix: &str) -> (String, Vec<(String, Value)>) {
        let mut t = Translator {
            prefix,
            params: Vec::new(),
        };
        let sql = t.expr(self);
        (sql, t.params)
    }
}

struct Translator<'p> {
    prefix: &'p str,
    params: Vec<(String, Value)>,
}

/// `(a AND b AND c)`.
fn conj(parts: Vec<String>) -> String {
    format!("({})", parts.join(" AND "))
}

impl FieldPath {
    /// The field as SurrealQL (see [`path_sql`]): what the store splices
    /// wherever it names a field, in a condition or an `ORDER BY`.
    pub fn to_surrealql(&self) -> String {
        path_sql(self.segments())
    }
}

/// The field as SurrealQL: `` `a`.`b` ``. A top-level `id` is the record's
/// bare id (a string in the JSON that filters see), so it reads as
/// `record::id(id)` rather than the record id itself.
fn path_sql(segments: &[String]) -> String {
    if segments == ["id"] {
        return "record::id(id)".to_owned();
    }
    let mut out = String::new();
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push('`');
        for c in seg.chars() {
            if c == '`' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('`');
    }
    out
}

/// `type::is_object(…)` for every proper prefix of the path: what it takes
/// for the last segment to be read from an object rather than projected
/// from an array or taken from something else.
fn object_guards(field: &FieldPath) -> Vec<String> {
    let segs = field.segments();
    (1..segs.len())
        .map(|n| {
            let mut g = String::from("type::is_object(");
            g.push_str(&path_sql(segs.get(..n).unwrap_or(&[])));
            g.push(')');
            g
        })
        .collect()
}

impl Translator<'_> {
    /// Binds `value` as the next parameter and returns its `$name`.
    fn bind(&mut self, value: Value) -> String {
        let name = format!("{}{}", self.prefix, self.params.len());
        let reference = format!("${name}");
        self.params.push((name, value));
        reference
    }

    fn expr(&mut self, e: &Expr) -> String {
        match e {
            Expr::True => "true".to_owned(),
            Expr::And(items) if items.is_empty() => "true".to_owned(),
            Expr::Or(items) if items.is_empty() => "false".to_owned(),
            Expr::And(items) => self.group(items, " AND "),
            Expr::Or(items) => self.group(items, " OR "),
            Expr::Not(inner) => format!("!({})", self.expr(inner)),
            // Unbound: no claims, as `compile` sees it.
            Expr::Claim(_) => {
                let holds = e.bind(&Value::Null).as_constant() == Some(true);
                holds.to_string()
            }
            Expr::Compare { field, op, value } => {
                let lit = match value {
                    Operand::Literal(lit) => lit.clone(),
                    Operand::Param(_) => Literal::Null,
                };
                self.compare(field, *op, &lit)
            }
            Expr::In {
                field,
                values,
                negated,
            } => {
                let list = values
                    .iter()
                    .map(|v| match v {
                        Operand::Literal(lit) => lit.to_json(),
                        Operand::Param(_) => Value::Null,
                    })
                    .collect();
                let p = path_sql(field.segments());
                let list = self.bind(Value::Array(list));
                let mut parts = object_guards(field);
                parts.push(format!("{p} != NONE"));
                parts.push(if *negated {
                    format!("!({p} IN {list})")
                } else {
                    format!("{p} IN {list}")
                });
                conj(parts)
            }
        }
    }

    fn group(&mut self, items: &[Expr], sep: &str) -> String {
        let mut out = String::from("(");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            let sql = self.expr(item);
            out.push_str(&sql);
        }
        out.push(')');
        out
    }

    fn compare(&mut self, field: &FieldPath, op: CompareOp, lit: &Literal) -> String {
        let p = path_sql(field.segments());
        let mut parts = object_guards(field);
        match (op, lit) {
            (CompareOp::Eq, Literal::Null) => {
                let test = format!("{p} = NONE OR {p} = NULL");
                if parts.is_empty() {
                    format!("({test})")
                } else {
                    // A non-object on the way makes the field missing, and
                    // so `= null` true.
                    format!("(!{} OR {test})", conj(parts))
                }
            }
            (CompareOp::Ne, Literal::Null) => {
                parts.push(format!("{p} != NONE"));
                parts.push(format!("{p} != NULL"));
                conj(parts)
            }
            (CompareOp::Eq, lit) => {
                let v = self.bind(lit.to_json());
                parts.push(format!("{p} = {v}"));
                conj(parts)
            }
            (CompareOp::Ne, lit) => {
                let v = self.bind(lit.to_json());
                parts.push(format!("{p} != NONE"));
                parts.push(format!("{p} != {v}"));
                conj(parts)
            }
            (CompareOp::Gt | CompareOp::Lt | CompareOp::Ge | CompareOp::Le, lit) => {
                let guard = match lit {
                    Literal::Int(_) | Literal::Float(_) => "type::is_number",
                    Literal::String(_) => "type::is_string",
                    // No record orders against null, booleans, arrays or
                    // objects in the filter language.
                    _ => return "false".to_owned(),
                };
                let v = self.bind(lit.to_json());
                parts.push(format!("{guard}({p})"));
                parts.push(format!("{p} {} {v}", op.as_str()));
                conj(parts)
            }
            (CompareOp::Contains, lit) => {
                let test = self.tilde(&p, lit);
                parts.push(test);
                conj(parts)
            }
            (CompareOp::NotContains, lit) => {
                let test = self.tilde(&p, lit);
                parts.push(format!("{p} != NONE"));
                parts.push(format!("!{test}"));
                conj(parts)
            }
        }
    }

    /// `~` on a field already known to be reachable: substring for strings,
    /// membership for arrays.
    fn tilde(&mut self, p: &str, lit: &Literal) -> String {
        match lit {
            Literal::String(s) => {
                let needle = self.bind(Value::String(s.to_lowercase()));
                let element = self.bind(Value::String(s.clone()));
                format!(
                    "((type::is_string({p}) AND string::contains(string::lowercase({p}), {needle})) OR (type::is_array({p}) AND {p} CONTAINS {element}))"
                )
            }
            other => {
                let element = self.bind(other.to_json());
                format!("(type::is_array({p}) AND {p} CONTAINS {element})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use serde_json::{Value, json};

    fn sql(filter: &str) -> (String, Vec<(String, Value)>) {
        match parse(filter) {
            Ok(e) => e.to_surrealql(),
            Err(e) => panic!("{filter:?}: {e}"),
        }
    }

    #[track_caller]
    fn check(filter: &str, text: &str, params: Value) {
        let (got, bound) = sql(filter);
        assert_eq!(got, text, "{filter}");
        let names: Vec<String> = (0..bound.len()).map(|i| format!("f{i}")).collect();
        assert_eq!(
            bound.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            names
        );
        let values: Vec<Value> = bound.into_iter().map(|(_, v)| v).collect();
        assert_eq!(Value::Array(values), params, "{filter}");
    }

    #[test]
    fn translations() {
        check("status=published", "(`status` = $f0)", json!(["published"]));
        check("price == 1.5", "(`price` = $f0)", json!([1.5]));
        check(
            "price>100",
            "(type::is_number(`price`) AND `price` > $f0)",
            json!([100]),
        );
        check(
            "price<=1e3",
            "(type::is_number(`price`) AND `price` <= $f0)",
            json!([1000.0]),
        );
        check(
            "name>=m",
            "(type::is_string(`name`) AND `name` >= $f0)",
            json!(["m"]),
        );
        check(
            "name<m",
            "(type::is_string(`name`) AND `name` < $f0)",
            json!(["m"]),
        );
        check("flag>true", "false", json!([]));
        check("x<null", "false", json!([]));
        check("f=null", "(`f` = NONE OR `f` = NULL)", json!([]));
        check("f!=null", "(`f` != NONE AND `f` != NULL)", json!([]));
        check("f!=1", "(`f` != NONE AND `f` != $f0)", json!([1]));
        check(
            "a.b.c=1",
            "(type::is_object(`a`) AND type::is_object(`a`.`b`) AND `a`.`b`.`c` = $f0)",
            json!([1]),
        );
        check(
            "a.b=null",
            "(!(type::is_object(`a`)) OR `a`.`b` = NONE OR `a`.`b` = NULL)",
            json!([]),
        );
        check(
            "title~Rust",
            "(((type::is_string(`title`) AND string::contains(string::lowercase(`title`), $f0)) OR (type::is_array(`title`) AND `title` CONTAINS $f1)))",
            json!(["rust", "Rust"]),
        );
        check(
            "school~ÉCOLE",
            "(((type::is_string(`school`) AND string::contains(string::lowercase(`school`), $f0)) OR (type::is_array(`school`) AND `school` CONTAINS $f1)))",
            json!(["école", "ÉCOLE"]),
        );
        check(
            "tags~3",
            "((type::is_array(`tags`) AND `tags` CONTAINS $f0))",
            json!([3]),
        );
        check(
            "tags!~3",
            "(`tags` != NONE AND !(type::is_array(`tags`) AND `tags` CONTAINS $f0))",
            json!([3]),
        );
        check(
            "s IN [a, 1, null]",
            "(`s` != NONE AND `s` IN $f0)",
            json!([["a", 1, null]]),
        );
        check(
            "s NOT IN []",
            "(`s` != NONE AND !(`s` IN $f0))",
            json!([[]]),
        );
        check(
            "a=1 && (b=2 || !c=3)",
            "((`a` = $f0) AND ((`b` = $f1) OR !((`c` = $f2))))",
            json!([1, 2, 3]),
        );
        check("{}", "true", json!([]));
        check(
            r#"{"published": true, "meta": {"k": [1]}}"#,
            "((`meta` = $f0) AND (`published` = $f1))",
            json!([{"k": [1]}, true]),
        );
        // Values never reach the text, whatever they hold.
        check(
            "a = \"'; DELETE x; --\"",
            "(`a` = $f0)",
            json!(["'; DELETE x; --"]),
        );
        // Unbound parameters are null, as in the predicate.
        check(
            "owner = $auth.sub",
            "(`owner` = NONE OR `owner` = NULL)",
            json!([]),
        );
        check(
            "owner IN [$auth.sub]",
            "(`owner` != NONE AND `owner` IN $f0)",
            json!([[null]]),
        );
    }

    #[test]
    fn bound_parameters_translate_as_values() {
        let e = parse("owner = $auth.sub").map(|e| e.bind(&json!({"sub": "u1"})));
        let (text, params) = e.map(|e| e.to_surrealql()).unwrap_or_default();
        assert_eq!(text, "(`owner` = $f0)");
        assert_eq!(params, vec![("f0".to_owned(), json!("u1"))]);
    }

    #[test]
    fn unusual_trees() {
        use super::super::Expr;
        assert_eq!(Expr::And(vec![]).to_surrealql().0, "true");
        assert_eq!(Expr::Or(vec![]).to_surrealql().0, "false");
        assert_eq!(
            super::path_sql(&["a`b".into(), "c\\".into()]),
            r"`a\`b`.`c\\`"
        );
    }
}
