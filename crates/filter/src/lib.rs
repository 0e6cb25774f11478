//! The filter language: which record changes a subscriber receives.
//!
//! A crate of its own, so that it depends on nothing of livehub's (and the
//! fuzz target builds it without SurrealDB). Its modules: `parser` (nom),
//! `ast` (with the canonical `Display`), `predicate` (binding claims,
//! compiling to a [`Predicate`], index terms), `compiled` ([`Filter`], what
//! the hub holds), `surrealql` (the `WHERE` translation).
//!
//! Clients write filters by hand in URLs (`?query=status=published&&price>100`),
//! so the language is forgiving to read (bare words are strings, keywords in
//! any case, free whitespace) and precise in its errors (a sentence and a
//! column). This module is pure: text in, [`Expr`] out ([`parse`]); then
//! [`Expr::bind`] for `$auth` claims, [`compile`] to a [`Predicate`] that tests
//! JSON records without allocating, [`Expr::index_alternatives`] and [`IndexKey`]
//! for indexing subscribers, and [`Expr::to_surrealql`] for the same condition
//! as a SurrealQL `WHERE` clause.
//!
//! # Examples
//!
//! ```text
//! status=published&&price>100
//! category IN [books, music] AND NOT (stock = 0)
//! title ~ "rust" || tags ~ rust
//! author.name = 'Jane Doe' && published != null
//! owner = $auth.sub
//! $auth.sub != null && (public = true || $auth.role = editor)
//! {"published": true, "category": "electronics"}
//! ```
//!
//! # Grammar
//!
//! ```text
//! filter      = ws ( json-filter / or-expr ) ws
//! json-filter = "{" … "}"        ; a JSON object (RFC 8259), when the first
//!                                ; non-blank character is "{"
//! or-expr     = and-expr *( ws or-op ws and-expr )
//! and-expr    = unary *( ws and-op ws unary )
//! unary       = not-op ws unary / primary
//! primary     = "(" ws or-expr ws ")" / condition
//! condition   = ( field / param ) ws ( in-op ws list / compare-op ws operand )
//!                              ; on a param: a test of the caller's claim
//! compare-op  = "==" / "=" / "!=" / ">=" / "<=" / ">" / "<" / "!~" / "~"
//! in-op       = "IN" / "NOT" ws "IN"
//! list        = "[" ws [ operand *( ws "," ws operand ) [ ws "," ] ws ] "]"
//!             / "(" ws [ operand *( ws "," ws operand ) [ ws "," ] ws ] ")"
//! operand     = param / value
//! param       = "$auth" 1*( "." segment )
//! value       = string / array / object / scalar
//! array       = "[" ws [ value *( ws "," ws value ) [ ws "," ] ws ] "]"
//! object      = "{" ws [ member *( ws "," ws member ) [ ws "," ] ws ] "}"
//! member      = ( string / segment ) ws ":" ws value
//! scalar      = number / word  ; number only if no word-char follows it
//! number      = [ "-" ] ( "0" / %x31-39 *DIGIT ) [ "." 1*DIGIT ]
//!               [ ( "e" / "E" ) [ "+" / "-" ] 1*DIGIT ]
//! word        = 1*word-char
//! word-char   = letter / digit / "_" / "-" / "." / "@" / ":"
//!                              ; letter, digit: any Unicode alphanumeric
//! string      = DQUOTE *( char / escape ) DQUOTE
//!             / "'" *( char / escape ) "'"
//! escape      = "\" ( "\" / DQUOTE / "'" / "/" / "b" / "f" / "n" / "r"
//!                   / "t" / "u" 4HEXDIG )
//! field       = segment *( "." segment )  ; first segment not "not"
//! segment     = ( ALPHA / "_" ) *( ALPHA / DIGIT / "_" )
//! and-op      = "&&" / "AND"
//! or-op       = "||" / "OR"
//! not-op      = "!" / "NOT"
//! ws          = *white-space          ; any Unicode white space
//! ```
//!
//! - Keywords (`AND`, `OR`, `NOT`, `IN`, `true`, `false`, `null`) are matched
//!   in any case, and only as whole words: `ANDROID` is not `AND`, and
//!   `notes` is a field. `$auth` is also matched in any case; claim names
//!   are kept as written.
//! - Precedence: `NOT` binds tightest, then `AND`, then `OR`:
//!   `a=1 || b=2 && !c=3` is `a=1 || (b=2 && (NOT c=3))`.
//! - `in-op` is tried before `compare-op`. A `NOT` at the start of a
//!   condition is the operator, so no field can begin with the segment
//!   `not` (`a.not` is fine, and so are fields named `and`, `or`, `in`).
//!
//! ## Values
//!
//! - A quoted string (`'…'` or `"…"`) is always a string. Escapes: `\\`,
//!   `\"`, `\'`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\uXXXX` (with surrogate
//!   pairs for characters beyond U+FFFF); any other character, including a
//!   raw newline, stands for itself.
//! - A bare word is the longest run of Unicode letters and digits and
//!   `_ - . @ :`. It never includes white space or any of `& | ! = < > ~ ( )
//!   [ ] { } , ' " $`, so `status=published&&x=1` and `a IN [x,y]` split
//!   where expected. Then:
//!   - a word that is entirely a JSON number is a number: `100`, `-2`,
//!     `1.5`, `-2e3`, `1E+2` (the `+` of an exponent is read with the
//!     number). Integers that fit in i64 are integers; those beyond, and
//!     every number with a fraction or an exponent, are floats; a number
//!     beyond the f64 range is an error;
//!   - `true`, `false`, `null` (any case) are those literals;
//!   - `and`, `or`, `not`, `in` (any case) are an error (quote them);
//!   - any other word is a string: `published`, `a@b.com`, `my-post`,
//!     `abc123`, `user:123`, `José`, and also `007`, `1.2.3`, `.5`, `1.`,
//!     `inf`, `NaN` (not JSON numbers).
//! - `[…]` and `{…}` after an operator are array and object values (keys
//!   quoted, or bare names), compared by deep equality.
//! - `$auth.<claim>` (also `$auth.a.b`) stands for a claim of the caller's
//!   token wherever a value may stand, including in `IN` lists, but not
//!   inside an array or object value.
//!
//! ## The JSON form
//!
//! `{"k1": v1, "k2": v2}` means `k1 = v1 AND k2 = v2`; a key is a field path
//! (`"a.b"` is field `b` of object `a`) and an array or object value is
//! compared by deep equality. `{}` matches everything. Integers that fit in
//! i64 are integers, other numbers floats.
//!
//! ## Limits
//!
//! At most [`MAX_LEN`] (4096) bytes; at most [`MAX_DEPTH`] (32) levels of
//! nesting, each `(` and each `NOT`/`!` counting one (and, separately, at most
//! 32 levels of `[…]`/`{…}` in values, an `IN` list counting as one); at most
//! [`MAX_TERMS`] (64) comparisons (an `IN` counts as one whatever its length;
//! in the JSON form, each key counts as one). An empty or all-blank filter is
//! an error.
//!
//! # Semantics
//!
//! A filter is tested against one record, a JSON object. `a.b.c` names field
//! `c` of the object in field `b` of the object in field `a`; if a step is
//! absent, or is not an object, the field is *missing*.
//!
//! - **Equality** (`=`, `!=`, `IN`, `NOT IN`, and array membership in `~`)
//!   is type-strict: a number never equals a string (`price = "100"` does
//!   not match `100`), a boolean never equals a number, and `null` equals
//!   only `null`. Integers and floats compare by numeric value (`1 = 1.0`),
//!   exactly, without rounding big integers through floating point. Arrays
//!   are equal when they have the same length and equal elements in order;
//!   objects when they have the same keys with equal values; the same rules
//!   apply inside them.
//! - **Ordering** (`>`, `<`, `>=`, `<=`) is defined between two numbers (by
//!   value) and between two strings (by Unicode code point, character by
//!   character). Any other pair is false: `null`, booleans, arrays, objects,
//!   a missing field, a number against a string.
//! - **`~`**: when the field and the value are both strings, a
//!   case-insensitive substring test (`title ~ rust` matches `"Rust in
//!   Action"`, `ÉCOLE ~ école` is true, an empty value matches every
//!   string). Case-insensitive means both sides are lower-cased character by
//!   character with Unicode's lower-case mapping (no full case folding: `ß`
//!   does not match `ss`), the Greek final sigma `ς` counting as `σ`. When
//!   the field is an array, `~` is membership: the array has an element
//!   equal to the value, by the equality above (so case-sensitive). On any
//!   other field `~` is false. **`!~`** is the negation of `~` for a present
//!   field, and false for a missing one.
//! - **Missing fields** make every comparison false, except `field = null`,
//!   which is true for a missing field as for a `null` one. So
//!   `field != null` means "present and not null", and `field != value` is
//!   true when the field is present and differs (including when it is `null`
//!   or of another type).
//! - **`IN [v1, v2, …]`** is true when the field is present and equals one of
//!   the values; **`NOT IN`** when it is present and equals none of them.
//!   Both are false for a missing field.
//! - **`NOT`, `AND`, `OR`** are plain boolean logic over those results:
//!   `NOT (price > 10)` is true for a record without `price`.
//! - **`$auth.<claim>`** is replaced by the value of that claim of the
//!   caller's token before the filter is used. A claim the token does not
//!   have (and every claim of an anonymous caller) is no value at all, not
//!   `null`: every comparison with it is false, `!=` included, and it is
//!   left out of an `IN` list. So `owner = $auth.sub` never matches records
//!   without an owner for an anonymous caller. A claim present as `null`
//!   is `null`. Written on the left (`$auth.sub != null`), the claim is the
//!   field tested, with the rules for missing fields above.

mod ast;
mod compiled;
mod error;
mod parser;
mod predicate;
mod surrealql;

pub use ast::{CompareOp, Expr, FieldPath, Literal, Operand};
pub use compiled::Filter;
pub use error::FilterError;
pub use parser::parse;
pub use predicate::{IndexKey, Predicate, compile};

/// The longest filter accepted, in bytes.
pub const MAX_LEN: usize = 4096;

/// The deepest nesting accepted: `(` and `NOT` each count one level (and,
/// separately, `[`/`{` in values).
pub const MAX_DEPTH: usize = 32;

/// The most comparisons (`field op value`, `field IN […]`) in one filter.
pub const MAX_TERMS: usize = 64;
