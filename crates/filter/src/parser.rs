//! Reading filter text into an [`Expr`]: the nom grammar of the text form, and
//! the JSON form.
//!
//! Each nom function below implements one rule of the grammar in the module
//! documentation of [the crate](crate), and its doc comment names the rule.
//! The rules that can recurse (`or-expr`, `unary`, `primary`, `array`,
//! `object`, `list`) carry a depth and check it *before* descending, so no
//! input can exhaust the stack.
//!
//! Errors: nom's recoverable `Err::Error` means "this rule does not start
//! here" (the caller may try something else or report what it expected);
//! `Err::Failure` (made directly, or by `cut` after an operator) carries the
//! final, specific [`Kind`] and position, and stops the parse.

use std::cell::Cell;
use std::collections::BTreeMap;

use nom::branch::alt;
use nom::bytes::complete::{tag, tag_no_case, take_while, take_while1};
use nom::character::complete::{anychar, char, digit0, digit1, one_of, satisfy};
use nom::combinator::{cut, not, opt};
use nom::error::{ErrorKind, ParseError};
use nom::sequence::{preceded, terminated};
use nom::{Err as NomErr, IResult, Parser};
use serde_json::Value;

use super::ast::{CompareOp, Expr, FieldPath, Literal, Operand};
use super::error::{FilterError, column_of, column_of_byte};
use super::{MAX_DEPTH, MAX_LEN, MAX_TERMS};

/// Reads a filter, in the text form or (when its first non-blank character is
/// `{`) the JSON form.
///
/// Errors for an empty or all-whitespace filter ("the filter is empty"; a
/// caller with no filter at all should use [`Predicate::always`] instead),
/// for text longer than [`MAX_LEN`] bytes, and for anything the grammar does
/// not accept, with the column of the problem.
///
/// [`Predicate::always`]: super::Predicate::always
pub fn parse(input: &str) -> Result<Expr, FilterError> {
    if input.len() > MAX_LEN {
        return Err(FilterError::new(
            format!("the filter is longer than {MAX_LEN} bytes"),
            column_of_byte(input, MAX_LEN),
        ));
    }
    let body = input.trim_start();
    if body.is_empty() {
        return Err(FilterError::new("the filter is empty", 1));
    }
    if body.starts_with('{') {
        return parse_json(input);
    }
    let grammar = Grammar {
        terms: Cell::new(0),
    };
    match grammar.filter(input) {
        Ok((_, expr)) => Ok(expr),
        Err(NomErr::Error(e) | NomErr::Failure(e)) => Err(e.into_filter_error(input)),
        // Only the `complete` parsers are used, which never ask for more input;
        // answer sensibly all the same rather than panic.
        Err(NomErr::Incomplete(_)) => Err(FilterError::new(
            format!(
                "the filter ends too early at column {}",
                column_of(input, "")
            ),
            column_of(input, ""),
        )),
    }
}

/// What went wrong; rendered into a sentence by [`Kind::render`] once the
/// column is known.
#[derive(Debug, Clone, PartialEq)]
enum Kind<'a> {
    /// A generic nom error that no rule turned into something better.
    Unexpected,
    /// The filter does not start with a condition.
    ExpectedFieldName,
    /// Nothing usable after `&&`, `OR`, `(`, `NOT`… (the token as written).
    ExpectedCondition(&'a str),
    /// `a.` not followed by a name.
    ExpectedSegment,
    /// A field not followed by an operator (the field as written).
    ExpectedOperator(&'a str),
    /// A run of operator characters that is no operator.
    UnknownOperator(&'a str),
    /// A single `&` or `|`.
    HalfOperator(char),
    /// `NOT` after a field, not followed by `IN` (the `NOT` as written).
    ExpectedIn(&'a str),
    /// Nothing usable after an operator (the operator as written).
    ExpectedValue(&'a str),
    /// A bare word that is a keyword where a value should be.
    KeywordAsValue(&'a str),
    /// `IN` not followed by `[` or `(` (the `IN` as written).
    ExpectedList(&'a str),
    /// A list or array position holding no value (the closing bracket).
    ExpectedItem(char),
    /// After an item, neither `,` nor the closing bracket.
    ExpectedCommaOr(char),
    /// End of input inside brackets (the opening bracket; the error points
    /// at it).
    Unclosed(char),
    /// An object position holding no key.
    ExpectedKey,
    /// An object key not followed by `:`.
    ExpectedColon,
    /// The same key twice in one object.
    DuplicateKey(String),
    /// End of input inside a string (the error points at the opening quote).
    UnterminatedString,
    /// `\q` and the like.
    InvalidEscape(&'a str),
    /// `\u` not followed by four hex digits, or a lone surrogate.
    InvalidUnicode(&'a str),
    /// A number too large for an f64.
    NumberOutOfRange(&'a str),
    /// `$auth` with no claim.
    AuthWithoutClaim,
    /// `$something` other than `$auth`.
    UnknownParam(&'a str),
    /// `$…` inside `[…]` or `{…}` after an operator.
    ParamInLiteral,
    /// After a condition, something that neither continues nor ends it.
    ExpectedContinuation { in_parens: bool },
    /// A `)` with no `(`.
    UnmatchedClose,
    /// Past [`MAX_DEPTH`].
    TooDeep,
    /// Past [`MAX_TERMS`].
    TooManyTerms,
}

impl Kind<'_> {
    /// The sentence for this problem at column `col`. `at` is the input from
    /// the problem on, used to name what was found.
    fn render(&self, col: usize, at: &str) -> String {
        match self {
            Kind::Unexpected => match at.chars().next() {
                Some(c) => format!("unexpected `{c}` at column {col}"),
                None => format!("unexpected end of the filter at column {col}"),
            },
            Kind::ExpectedFieldName => format!("expected a field name at column {col}"),
            Kind::ExpectedCondition(after) => {
                format!("expected a condition after `{after}` at column {col}")
            }
            Kind::ExpectedSegment => format!("expected a name after `.` at column {col}"),
            Kind::ExpectedOperator(field) => format!(
                "expected an operator (`=`, `!=`, `>`, `<`, `>=`, `<=`, `~`, `!~`, `IN` or `NOT IN`) after `{field}` at column {col}"
            ),
            Kind::UnknownOperator(op) => format!("unknown operator `{op}` at column {col}"),
            Kind::HalfOperator('&') => {
                format!("`&` at column {col} is not an operator; use `&&` or `AND`")
            }
            Kind::HalfOperator(c) => {
                format!("`{c}` at column {col} is not an operator; use `||` or `OR`")
            }
            Kind::ExpectedIn(not) => format!("expected `IN` after `{not}` at column {col}"),
            Kind::ExpectedValue(op) => format!("expected a value after `{op}` at column {col}"),
            Kind::KeywordAsValue(word) => format!(
                "`{word}` at column {col} is a keyword, not a value; quote it (\"{word}\") to compare with that text"
            ),
            Kind::ExpectedList(in_op) => {
                format!("expected a list such as `[a, b]` after `{in_op}` at column {col}")
            }
            Kind::ExpectedItem(close) => format!("expected a value or `{close}` at column {col}"),
            Kind::ExpectedCommaOr(close) => format!("expected `,` or `{close}` at column {col}"),
            Kind::Unclosed('(') => format!("unclosed parenthesis opened at column {col}"),
            Kind::Unclosed('[') => format!("unclosed bracket opened at column {col}"),
            Kind::Unclosed(_) => format!("unclosed brace opened at column {col}"),
            Kind::ExpectedKey => format!("expected a quoted key or `}}` at column {col}"),
            Kind::ExpectedColon => format!("expected `:` after the key at column {col}"),
            Kind::DuplicateKey(key) => format!("duplicate key `{key}` at column {col}"),
            Kind::UnterminatedString => format!("unterminated string starting at column {col}"),
            Kind::InvalidEscape(esc) => format!(
                "invalid escape `{esc}` at column {col}; the escapes are \\\\ \\\" \\' \\/ \\b \\f \\n \\r \\t and \\uXXXX"
            ),
            Kind::InvalidUnicode(esc) => format!(
                "invalid unicode escape `{esc}` at column {col}; write `\\u` and four hex digits (a surrogate pair for characters beyond U+FFFF)"
            ),
            Kind::NumberOutOfRange(n) => {
                format!("the number `{n}` at column {col} is out of range")
            }
            Kind::AuthWithoutClaim => format!(
                "`$auth` at column {col} must be followed by a claim name, e.g. `$auth.sub`"
            ),
            Kind::UnknownParam(p) => format!(
                "unknown parameter `{p}` at column {col}; only `$auth.<claim>` is supported, e.g. `$auth.sub`"
            ),
            Kind::ParamInLiteral => {
                format!("a parameter cannot be used inside an array or object value (column {col})")
            }
            Kind::ExpectedContinuation { in_parens: false } => {
                format!("expected `&&`, `||` or the end of the filter at column {col}")
            }
            Kind::ExpectedContinuation { in_parens: true } => {
                format!("expected `&&`, `||` or `)` at column {col}")
            }
            Kind::UnmatchedClose => format!("unmatched `)` at column {col}"),
            Kind::TooDeep => {
                format!("the filter nests deeper than {MAX_DEPTH} levels at column {col}")
            }
            Kind::TooManyTerms => {
                format!("the filter has more than {MAX_TERMS} comparisons at column {col}")
            }
        }
    }
}

/// The parser's error: what went wrong, and the input from where it did
/// (always a suffix of the whole filter, which gives the column).
#[derive(Debug, Clone, PartialEq)]
struct PError<'a> {
    at: &'a str,
    kind: Kind<'a>,
}

impl<'a> PError<'a> {
    fn into_filter_error(self, src: &str) -> FilterError {
        let col = column_of(src, self.at);
        FilterError::new(self.kind.render(col, self.at), col)
    }
}

impl<'a> ParseError<&'a str> for PError<'a> {
    fn from_error_kind(input: &'a str, _kind: ErrorKind) -> Self {
        PError {
            at: input,
            kind: Kind::Unexpected,
        }
    }

    fn append(_input: &'a str, _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, T> = IResult<&'a str, T, PError<'a>>;

/// A final error of kind `kind` at `at`.
fn fail<'a, T>(at: &'a str, kind: Kind<'a>) -> PResult<'a, T> {
    Err(NomErr::Failure(PError { at, kind }))
}

/// The part of `from` that lies before `rest` (a suffix of `from`).
fn taken<'a>(from: &'a str, rest: &str) -> &'a str {
    from.get(..from.len().saturating_sub(rest.len()))
        .unwrap_or("")
}

/// At most the first `n` characters of `s`.
fn first_chars(s: &str, n: usize) -> &str {
    let end = s.char_indices().nth(n).map_or(s.len(), |(i, _)| i);
    s.get(..end).unwrap_or(s)
}

/// What `p` consumed, as text. (nom 8.0.0's `recognize` computes this from
/// pointers, and its `take_while`/`digit0` on `&str` return a misplaced empty
/// remainder when they reach the end of the input, which made `recognize`
/// return too little; lengths are always right.)
fn recognized<'a, O>(
    mut p: impl Parser<&'a str, Output = O, Error = PError<'a>>,
) -> impl FnMut(&'a str) -> PResult<'a, &'a str> {
    move |i| {
        let (rest, _) = p.parse(i)?;
        Ok((rest, taken(i, rest)))
    }
}

/// Characters of names and keywords: `[A-Za-z0-9_]`.
fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Characters of bare words: Unicode letters and digits, `_ - . @ :`.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':')
}

/// Characters that make up comparison operators (read as one run, so that a
/// wrong one such as `=>` is reported whole).
fn is_op_char(c: char) -> bool {
    matches!(c, '=' | '!' | '<' | '>' | '~')
}

/// Rule `ws = *whitespace` (any Unicode white space).
fn ws(i: &str) -> PResult<'_, &str> {
    take_while(char::is_whitespace)(i)
}

/// A keyword: `kw` in any case, as a whole word (not followed by
/// `[A-Za-z0-9_]`).
fn keyword<'a>(kw: &'static str) -> impl Parser<&'a str, Output = &'a str, Error = PError<'a>> {
    terminated(tag_no_case(kw), not(satisfy(is_ident_char)))
}

/// Rule `and-op = "&&" / "AND"`.
fn and_op(i: &str) -> PResult<'_, &str> {
    alt((tag("&&"), keyword("and"))).parse(i)
}

/// Rule `or-op = "||" / "OR"`.
fn or_op(i: &str) -> PResult<'_, &str> {
    alt((tag("||"), keyword("or"))).parse(i)
}

/// Rule `not-op = "!" / "NOT"`.
fn not_op(i: &str) -> PResult<'_, &str> {
    alt((tag("!"), keyword("not"))).parse(i)
}

/// Rule `segment = (ALPHA / "_") *(ALPHA / DIGIT / "_")`.
fn segment(i: &str) -> PResult<'_, &str> {
    recognized((
        satisfy(|c| c.is_ascii_alphabetic() || c == '_'),
        take_while(is_ident_char),
    ))
    .parse(i)
}

/// Rule `field = segment *("." segment)`. Returns the path and its text.
fn field(i: &str) -> PResult<'_, (FieldPath, &str)> {
    let (mut rest, first) = segment(i)?;
    let mut segments = vec![first.to_owned()];
    while let Some(after_dot) = rest.strip_prefix('.') {
        match segment(after_dot) {
            Ok((r, seg)) => {
                segments.push(seg.to_owned());
                rest = r;
            }
            Err(_) => return fail(after_dot, Kind::ExpectedSegment),
        }
    }
    match FieldPath::from_segments(segments) {
        Some(path) => Ok((rest, (path, taken(i, rest)))),
        None => fail(i, Kind::ExpectedFieldName),
    }
}

/// Rule `compare-op = "==" / "=" / "!=" / ">=" / "<=" / ">" / "<" / "!~" / "~"`.
///
/// Reads the whole run of operator characters first, so `=>` is reported as
/// an unknown operator rather than as `=` followed by a bad value.
fn compare_op(i: &str) -> PResult<'_, (CompareOp, &str)> {
    let (rest, text) = take_while1(is_op_char)(i)?;
    let op = match text {
        "=" | "==" => CompareOp::Eq,
        "!=" => CompareOp::Ne,
        ">" => CompareOp::Gt,
        "<" => CompareOp::Lt,
        ">=" => CompareOp::Ge,
        "<=" => CompareOp::Le,
        "~" => CompareOp::Contains,
        "!~" => CompareOp::NotContains,
        _ => return fail(i, Kind::UnknownOperator(text)),
    };
    Ok((rest, (op, text)))
}

/// Rule `in-op = "IN" / "NOT" ws "IN"`. Returns whether it is `NOT IN`, and
/// its text.
fn in_op(i: &str) -> PResult<'_, (bool, &str)> {
    if let Ok((rest, text)) = keyword("in").parse(i) {
        return Ok((rest, (false, text)));
    }
    let (rest, not_text) = keyword("not").parse(i)?;
    let (rest, _) = ws(rest)?;
    match keyword("in").parse(rest) {
        Ok((after, _)) => Ok((after, (true, taken(i, after)))),
        Err(_) => fail(rest, Kind::ExpectedIn(not_text)),
    }
}

/// Rule `param = "$auth" 1*("." segment)` (`$auth` in any case; the claim
/// names are kept as written).
fn param(i: &str) -> PResult<'_, FieldPath> {
    let (rest, name) = preceded(char('$'), take_while(is_ident_char)).parse(i)?;
    if !name.eq_ignore_ascii_case("auth") {
        return fail(i, Kind::UnknownParam(taken(i, rest)));
    }
    let mut segments = Vec::new();
    let mut rest = rest;
    while let Some(after_dot) = rest.strip_prefix('.') {
        match segment(after_dot) {
            Ok((r, seg)) => {
                segments.push(seg.to_owned());
                rest = r;
            }
            Err(_) if segments.is_empty() => return fail(i, Kind::AuthWithoutClaim),
            Err(_) => return fail(after_dot, Kind::ExpectedSegment),
        }
    }
    match FieldPath::from_segments(segments) {
        Some(path) => Ok((rest, path)),
        None => fail(i, Kind::AuthWithoutClaim),
    }
}

/// Rule `number = ["-"] ("0" / %x31-39 *DIGIT) ["." 1*DIGIT] [("e" / "E") ["+" / "-"] 1*DIGIT]`
/// (the JSON number syntax). Returns its text.
fn number(i: &str) -> PResult<'_, &str> {
    recognized((
        opt(char('-')),
        alt((
            tag("0"),
            recognized((satisfy(|c| c.is_ascii_digit() && c != '0'), digit0)),
        )),
        opt((char('.'), digit1)),
        opt((one_of("eE"), opt(one_of("+-")), digit1)),
    ))
    .parse(i)
}

/// The literal for number text `text` found at `at`: an integer when it has
/// no fraction or exponent and fits in an i64, a float otherwise; an error if
/// it is beyond the f64 range.
fn number_literal<'a>(at: &'a str, text: &'a str) -> Result<Literal, NomErr<PError<'a>>> {
    if !text.contains(['.', 'e', 'E'])
        && let Ok(i) = text.parse::<i64>()
    {
        return Ok(Literal::Int(i));
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(Literal::Float(f)),
        _ => Err(NomErr::Failure(PError {
            at,
            kind: Kind::NumberOutOfRange(text),
        })),
    }
}

/// Rule `scalar = number / word`: a number when the number syntax matches and
/// no word character follows it; otherwise a bare word, which is `true`,
/// `false` or `null` (any case), an error for the keywords `and`, `or`, `not`
/// and `in`, and a string for anything else.
fn scalar(i: &str) -> PResult<'_, Literal> {
    if let Ok((rest, text)) = number(i)
        && !rest.starts_with(is_word_char)
    {
        let lit = number_literal(i, text)?;
        return Ok((rest, lit));
    }
    let (rest, word) = take_while1(is_word_char)(i)?;
    let lit = if word.eq_ignore_ascii_case("true") {
        Literal::Bool(true)
    } else if word.eq_ignore_ascii_case("false") {
        Literal::Bool(false)
    } else if word.eq_ignore_ascii_case("null") {
        Literal::Null
    } else if ["and", "or", "not", "in"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
    {
        return fail(i, Kind::KeywordAsValue(word));
    } else {
        Literal::String(word.to_owned())
    };
    Ok((rest, lit))
}

/// Rule `string = DQUOTE *(char / escape) DQUOTE / "'" *(char / escape) "'"`,
/// with `escape = "\" ("\" / DQUOTE / "'" / "/" / "b" / "f" / "n" / "r" / "t" / "u" 4HEXDIG)`.
fn string(i: &str) -> PResult<'_, String> {
    let (mut rest, quote) = one_of("\"'")(i)?;
    let mut out = String::new();
    loop {
        let Ok((after, c)) = anychar::<_, PError<'_>>(rest) else {
            return fail(i, Kind::UnterminatedString);
        };
        if c == quote {
            return Ok((after, out));
        }
        if c != '\\' {
            out.push(c);
            rest = after;
            continue;
        }
        let Ok((after_esc, e)) = anychar::<_, PError<'_>>(after) else {
            return fail(i, Kind::UnterminatedString);
        };
        let simple = match e {
            '\\' => Some('\\'),
            '"' => Some('"'),
            '\'' => Some('\''),
            '/' => Some('/'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            _ => None,
        };
        if let Some(s) = simple {
            out.push(s);
            rest = after_esc;
        } else if e == 'u' {
            let (after_u, ch) = unicode_escape(rest)?;
            out.push(ch);
            rest = after_u;
        } else {
            return fail(rest, Kind::InvalidEscape(taken(rest, after_esc)));
        }
    }
}

/// Four hex digits at the start of `s`.
fn hex4(s: &str) -> Option<u32> {
    let digits = s.get(..4)?;
    if digits.chars().all(|c| c.is_ascii_hexdigit()) {
        u32::from_str_radix(digits, 16).ok()
    } else {
        None
    }
}

/// A `\uXXXX` escape at the start of `at` (which starts with `\u`), or a
/// surrogate pair `\uD83D\uDE00`.
fn unicode_escape(at: &str) -> PResult<'_, char> {
    let bad = || fail(at, Kind::InvalidUnicode(first_chars(at, 6)));
    let Some(first) = at.get(2..).and_then(hex4) else {
        return bad();
    };
    let after_first = at.get(6..).unwrap_or("");
    if (0xD800..0xDC00).contains(&first) {
        // A high surrogate: only valid as the first half of a pair.
        if let Some(second) = after_first
            .strip_prefix("\\u")
            .and_then(hex4)
            .filter(|lo| (0xDC00..0xE000).contains(lo))
            && let Some(c) = char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
        {
            return Ok((after_first.get(6..).unwrap_or(""), c));
        }
        return bad();
    }
    match char::from_u32(first) {
        Some(c) => Ok((after_first, c)),
        None => bad(),
    }
}

/// The recursive rules. Holds the count of comparisons so far (for the
/// [`MAX_TERMS`] limit); depths travel as arguments.
struct Grammar {
    terms: Cell<usize>,
}

impl Grammar {
    /// Rule `filter = ws or-expr ws` (the text form; the JSON form is taken
    /// apart before the grammar runs).
    fn filter<'a>(&self, i: &'a str) -> PResult<'a, Expr> {
        let (i, _) = ws(i)?;
        let (i, expr) = self.or_expr(i, 0, None)?;
        let (i, _) = ws(i)?;
        if i.is_empty() {
            Ok((i, expr))
        } else {
            continuation_error(i, false)
        }
    }

    /// Rule `or-expr = and-expr *(ws or-op ws and-expr)`. `after` is the token
    /// before it (for messages), if any.
    fn or_expr<'a>(&self, i: &'a str, depth: usize, after: Option<&'a str>) -> PResult<'a, Expr> {
        let (mut i, first) = self.and_expr(i, depth, after)?;
        let mut items = vec![first];
        loop {
            let (j, _) = ws(i)?;
            let (j, op) = match or_op(j) {
                Ok(found) => found,
                Err(NomErr::Error(_)) => break,
                Err(e) => return Err(e),
            };
            let (j, _) = ws(j)?;
            // `cut`: after an operator, a missing operand is the error to
            // report, not a reason to backtrack.
            let (j, e) = cut(|x| self.and_expr(x, depth, Some(op))).parse(j)?;
            items.push(e);
            i = j;
        }
        Ok((i, one_or_many(items, Expr::Or)))
    }

    /// Rule `and-expr = unary *(ws and-op ws unary)`.
    fn and_expr<'a>(&self, i: &'a str, depth: usize, after: Option<&'a str>) -> PResult<'a, Expr> {
        let (mut i, first) = self.unary(i, depth, after)?;
        let mut items = vec![first];
        loop {
            let (j, _) = ws(i)?;
            let (j, op) = match and_op(j) {
                Ok(found) => found,
                Err(NomErr::Error(_)) => break,
                Err(e) => return Err(e),
            };
            let (j, _) = ws(j)?;
            let (j, e) = cut(|x| self.unary(x, depth, Some(op))).parse(j)?;
            items.push(e);
            i = j;
        }
        Ok((i, one_or_many(items, Expr::And)))
    }

    /// Rule `unary = not-op ws unary / primary`.
    fn unary<'a>(&self, i: &'a str, depth: usize, after: Option<&'a str>) -> PResult<'a, Expr> {
        match not_op(i) {
            Ok((j, op)) => {
                if depth >= MAX_DEPTH {
                    return fail(i, Kind::TooDeep);
                }
                let (j, _) = ws(j)?;
                let (j, e) = cut(|x| self.unary(x, depth + 1, Some(op))).parse(j)?;
                Ok((j, Expr::Not(Box::new(e))))
            }
            Err(NomErr::Error(_)) => self.primary(i, depth, after),
            Err(e) => Err(e),
        }
    }

    /// Rule `primary = "(" ws or-expr ws ")" / condition`.
    fn primary<'a>(&self, i: &'a str, depth: usize, after: Option<&'a str>) -> PResult<'a, Expr> {
        let Ok((j, open)) = tag::<_, _, PError<'a>>("(")(i) else {
            return self.condition(i, after);
        };
        if depth >= MAX_DEPTH {
            return fail(i, Kind::TooDeep);
        }
        let (j, _) = ws(j)?;
        let (j, e) = cut(|x| self.or_expr(x, depth + 1, Some(open))).parse(j)?;
        let (j, _) = ws(j)?;
        match tag::<_, _, PError<'a>>(")")(j) {
            Ok((k, _)) => Ok((k, e)),
            Err(_) if j.is_empty() => fail(i, Kind::Unclosed('(')),
            Err(_) => continuation_error(j, true),
        }
    }

    /// Rule `condition = (field / param) ws (in-op ws list / compare-op ws operand)`;
    /// on a `param`, the condition tests the caller's claim ([`Expr::Claim`]).
    fn condition<'a>(&self, i: &'a str, after: Option<&'a str>) -> PResult<'a, Expr> {
        // `$auth.<claim> …`: the same condition, on a claim.
        let claim = i.starts_with('$');
        let (j, (field, field_text)) = if claim {
            let (j, path) = param(i)?;
            (j, (path, taken(i, j)))
        } else {
            match field(i) {
                Ok(found) => found,
                Err(NomErr::Error(_)) => {
                    let kind = after.map_or(Kind::ExpectedFieldName, Kind::ExpectedCondition);
                    return fail(i, kind);
                }
                Err(e) => return Err(e),
            }
        };
        let count = self.terms.get() + 1;
        if count > MAX_TERMS {
            return fail(i, Kind::TooManyTerms);
        }
        self.terms.set(count);
        let (k, test) = self.test(j, field, field_text)?;
        Ok((
            k,
            if claim {
                Expr::Claim(Box::new(test))
            } else {
                test
            },
        ))
    }

    /// The rest of a condition after its `field` (written `field_text`).
    fn test<'a>(&self, j: &'a str, field: FieldPath, field_text: &'a str) -> PResult<'a, Expr> {
        let (j, _) = ws(j)?;
        match in_op(j) {
            Ok((k, (negated, in_text))) => {
                let (k, _) = ws(k)?;
                let (k, values) = cut(|x| self.list(x, in_text)).parse(k)?;
                return Ok((
                    k,
                    Expr::In {
                        field,
                        values,
                        negated,
                    },
                ));
            }
            Err(NomErr::Error(_)) => {}
            Err(e) => return Err(e),
        }
        let (k, (op, op_text)) = match compare_op(j) {
            Ok(found) => found,
            Err(NomErr::Error(_)) => return fail(j, Kind::ExpectedOperator(field_text)),
            Err(e) => return Err(e),
        };
        let (k, _) = ws(k)?;
        let (k, value) = cut(|x| match operand(x) {
            Err(NomErr::Error(_)) => fail(x, Kind::ExpectedValue(op_text)),
            other => other,
        })
        .parse(k)?;
        Ok((k, Expr::Compare { field, op, value }))
    }

    /// Rule `list = "[" ws [operand *(ws "," ws operand) [ws ","] ws] "]"`,
    /// or the same between `(` and `)`. `in_text` is the `IN` before it.
    fn list<'a>(&self, i: &'a str, in_text: &'a str) -> PResult<'a, Vec<Operand>> {
        let close = match i.chars().next() {
            Some('[') => ']',
            Some('(') => ')',
            _ => return fail(i, Kind::ExpectedList(in_text)),
        };
        // The list counts as one level of literal nesting, like an array.
        sequence(i, close, Kind::ExpectedItem(close), |x| {
            if x.starts_with('$') {
                param(x).map(|(r, p)| (r, Operand::Param(p)))
            } else {
                value(x, 1).map(|(r, v)| (r, Operand::Literal(v)))
            }
        })
    }
}

/// The error for input after a complete condition that neither continues
/// the expression (`&&`, `||`) nor ends it (`)` in parentheses, the end).
fn continuation_error<T>(i: &str, in_parens: bool) -> PResult<'_, T> {
    if i.starts_with(')') && !in_parens {
        fail(i, Kind::UnmatchedClose)
    } else if i.starts_with('&') {
        fail(i, Kind::HalfOperator('&'))
    } else if i.starts_with('|') {
        fail(i, Kind::HalfOperator('|'))
    } else {
        fail(i, Kind::ExpectedContinuation { in_parens })
    }
}

/// `items` itself when it holds one expression, else `group(items)`.
fn one_or_many(items: Vec<Expr>, group: fn(Vec<Expr>) -> Expr) -> Expr {
    match <[Expr; 1]>::try_from(items) {
        Ok([single]) => single,
        Err(items) => group(items),
    }
}

/// Rule `operand = param / value`.
fn operand(i: &str) -> PResult<'_, Operand> {
    if i.starts_with('$') {
        let (rest, p) = param(i)?;
        return Ok((rest, Operand::Param(p)));
    }
    let (rest, v) = value(i, 0)?;
    Ok((rest, Operand::Literal(v)))
}

/// Rule `value = string / array / object / scalar`. `depth` is the literal
/// nesting so far (arrays, objects, `IN` lists), limited to [`MAX_DEPTH`].
fn value(i: &str, depth: usize) -> PResult<'_, Literal> {
    match i.chars().next() {
        Some('"' | '\'') => string(i).map(|(r, s)| (r, Literal::String(s))),
        Some('[') => array(i, depth),
        Some('{') => object(i, depth),
        // Parameters are replaced by whole values; inside a constant array or
        // object there is nothing to bind them to.
        Some('$') => fail(i, Kind::ParamInLiteral),
        _ => scalar(i),
    }
}

/// Rule `array = "[" ws [value *(ws "," ws value) [ws ","] ws] "]"`.
fn array(i: &str, depth: usize) -> PResult<'_, Literal> {
    if depth >= MAX_DEPTH {
        return fail(i, Kind::TooDeep);
    }
    let (rest, items) = sequence(i, ']', Kind::ExpectedItem(']'), |x| value(x, depth + 1))?;
    Ok((rest, Literal::Array(items)))
}

/// Rule `object = "{" ws [member *(ws "," ws member) [ws ","] ws] "}"`.
fn object(i: &str, depth: usize) -> PResult<'_, Literal> {
    if depth >= MAX_DEPTH {
        return fail(i, Kind::TooDeep);
    }
    let (rest, members) = sequence(i, '}', Kind::ExpectedKey, |x| member(x, depth + 1))?;
    let mut map = BTreeMap::new();
    for (key_at, key, v) in members {
        if map.contains_key(&key) {
            return fail(key_at, Kind::DuplicateKey(key));
        }
        map.insert(key, v);
    }
    Ok((rest, Literal::Object(map)))
}

/// Rule `member = (string / segment) ws ":" ws value`. Returns where the key
/// starts (for the duplicate-key error), the key and the value.
fn member(i: &str, depth: usize) -> PResult<'_, (&str, String, Literal)> {
    let (j, key) = if i.starts_with(['"', '\'']) {
        string(i)?
    } else {
        let (j, key) = segment(i)?;
        (j, key.to_owned())
    };
    let (j, _) = ws(j)?;
    let Ok((j, colon)) = tag::<_, _, PError<'_>>(":")(j) else {
        return fail(j, Kind::ExpectedColon);
    };
    let (j, _) = ws(j)?;
    match value(j, depth) {
        Ok((k, v)) => Ok((k, (i, key, v))),
        Err(NomErr::Error(_)) => fail(j, Kind::ExpectedValue(colon)),
        Err(e) => Err(e),
    }
}

/// The bracketed, comma-separated part shared by `list`, `array` and
/// `object`: `i` starts at the opening bracket; `close` is the closing one;
/// `missing` is the error for a position where `item` finds nothing. A
/// trailing comma is allowed.
fn sequence<'a, T>(
    i: &'a str,
    close: char,
    missing: Kind<'a>,
    mut item: impl FnMut(&'a str) -> PResult<'a, T>,
) -> PResult<'a, Vec<T>> {
    let (mut j, open) = anychar(i)?;
    let mut items = Vec::new();
    loop {
        let (k, _) = ws(j)?;
        if let Some(rest) = k.strip_prefix(close) {
            return Ok((rest, items));
        }
        if k.is_empty() {
            return fail(i, Kind::Unclosed(open));
        }
        let (k, v) = match item(k) {
            Ok(found) => found,
            Err(NomErr::Error(_)) => return fail(k, missing),
            Err(e) => return Err(e),
        };
        items.push(v);
        let (k, _) = ws(k)?;
        if let Some(rest) = k.strip_prefix(',') {
            j = rest;
        } else if let Some(rest) = k.strip_prefix(close) {
            return Ok((rest, items));
        } else if k.is_empty() {
            return fail(i, Kind::Unclosed(open));
        } else {
            return fail(k, Kind::ExpectedCommaOr(close));
        }
    }
}

/// The JSON form: `{"field": value, …}` is the `AND` of `field = value`.
/// A key is a field path (`"a.b"` is field `b` of object `a`); `{}` is
/// [`Expr::True`]; one key gives a single comparison, not an `AND` of one.
fn parse_json(src: &str) -> Result<Expr, FilterError> {
    let value: Value = serde_json::from_str(src).map_err(|e| json_syntax_error(src, &e))?;
    let brace_col = column_of(src, src.trim_start());
    let Value::Object(map) = value else {
        return Err(FilterError::new(
            format!(
                "a JSON filter must be an object such as {{\"field\": value}} (column {brace_col})"
            ),
            brace_col,
        ));
    };
    let mut terms = Vec::with_capacity(map.len());
    for (n, (key, v)) in map.iter().enumerate() {
        let col = key_column(src, key).unwrap_or(brace_col);
        if n >= MAX_TERMS {
            return Err(FilterError::new(Kind::TooManyTerms.render(col, ""), col));
        }
        let Some(field) = FieldPath::parse(key) else {
            return Err(FilterError::new(
                format!(
                    "the key `{key}` at column {col} is not a field name; use letters, digits and `_`, with `.` between nested names"
                ),
                col,
            ));
        };
        if field
            .segments()
            .first()
            .is_some_and(|s| s.eq_ignore_ascii_case("not"))
        {
            // The text form reads a leading `not` as the operator, so such a
            // field could not be written back as text.
            return Err(FilterError::new(
                format!("the key `{key}` at column {col} is not a field name: `not` is a keyword"),
                col,
            ));
        }
        let Some(lit) = json_literal(v, 0) else {
            return Err(FilterError::new(Kind::TooDeep.render(col, ""), col));
        };
        terms.push(Expr::Compare {
            field,
            op: CompareOp::Eq,
            value: Operand::Literal(lit),
        });
    }
    Ok(match terms.len() {
        0 => Expr::True,
        _ => one_or_many(terms, Expr::And),
    })
}

/// A JSON value as a literal, or `None` if arrays and objects nest deeper
/// than [`MAX_DEPTH`] (the same limit as for `[…]` and `{…}` in text).
fn json_literal(v: &Value, depth: usize) -> Option<Literal> {
    match v {
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return None;
            }
            let items = items.iter().map(|x| json_literal(x, depth + 1));
            Some(Literal::Array(items.collect::<Option<_>>()?))
        }
        Value::Object(members) => {
            if depth >= MAX_DEPTH {
                return None;
            }
            let members = members
                .iter()
                .map(|(k, x)| Some((k.clone(), json_literal(x, depth + 1)?)));
            Some(Literal::Object(members.collect::<Option<_>>()?))
        }
        scalar => Some(Literal::from_json(scalar)),
    }
}

/// The column of `key` as written in `src` (its first occurrence as a JSON
/// string), if it can be found; serde_json keeps no positions for keys.
fn key_column(src: &str, key: &str) -> Option<usize> {
    let quoted = serde_json::to_string(key).ok()?;
    src.find(&quoted).map(|b| column_of_byte(src, b))
}

/// serde_json's error as ours: its message without its "at line L column C"
/// (which counts bytes on one line), and our character column over the whole
/// input instead.
fn json_syntax_error(src: &str, e: &serde_json::Error) -> FilterError {
    let line_start: usize = src
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum();
    let col = column_of_byte(src, line_start + e.column().saturating_sub(1));
    let full = e.to_string();
    let message = full
        .rfind(" at line ")
        .and_then(|at| full.get(..at))
        .unwrap_or(&full);
    FilterError::new(
        format!("invalid JSON filter: {message} at column {col}"),
        col,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `input` parses, displays as `display`, and the display re-parses to
    /// the same tree.
    #[track_caller]
    fn check(input: &str, display: &str) {
        let expr = match parse(input) {
            Ok(e) => e,
            Err(e) => panic!("{input:?} failed: {e}"),
        };
        assert_eq!(expr.to_string(), display, "display of {input:?}");
        assert_eq!(
            parse(display).as_ref(),
            Ok(&expr),
            "re-parse of {display:?}"
        );
    }

    #[test]
    fn comparisons() {
        for (input, display) in [
            ("status=published", r#"status = "published""#),
            ("price>100", "price > 100"),
            ("price<100", "price < 100"),
            ("price>=100", "price >= 100"),
            ("price<=100", "price <= 100"),
            ("price!=100", "price != 100"),
            ("price==100", "price = 100"),
            ("active=true", "active = true"),
            ("author=john", r#"author = "john""#),
            ("title~rust", r#"title ~ "rust""#),
            ("title!~rust", r#"title !~ "rust""#),
            ("deleted = null", "deleted = null"),
            ("deleted != NULL", "deleted != null"),
            ("a.b.c = 1", "a.b.c = 1"),
            ("_x9 = 1", "_x9 = 1"),
            ("and = 1", "and = 1"),
            ("in = 1", "in = 1"),
            ("a.not = 1", "a.not = 1"),
            ("notes = 1", "notes = 1"),
            ("tags IN [a, b, c]", r#"tags IN ["a", "b", "c"]"#),
            ("tags in (1, 2)", "tags IN [1, 2]"),
            ("tags NOT IN [a, b]", r#"tags NOT IN ["a", "b"]"#),
            ("tags not   in [ ]", "tags NOT IN []"),
            (
                "tags IN [1, 'a', null, 2.5, [1], $auth.sub,]",
                r#"tags IN [1, "a", null, 2.5, [1], $auth.sub]"#,
            ),
        ] {
            check(input, display);
        }
    }

    #[test]
    fn values() {
        for (input, display) in [
            ("a=0", "a = 0"),
            ("a=-7", "a = -7"),
            ("a=9223372036854775807", "a = 9223372036854775807"),
            ("a=-9223372036854775808", "a = -9223372036854775808"),
            // Beyond i64: a float, as in JSON.
            ("a=9223372036854775808", "a = 9.223372036854776e18"),
            ("a=1.5", "a = 1.5"),
            ("a=1.0", "a = 1.0"),
            ("a=-2e3", "a = -2000.0"),
            ("a=1E+2", "a = 100.0"),
            ("a=1e-7", "a = 1e-7"),
            ("a=1e300", "a = 1e300"),
            ("a=true", "a = true"),
            ("a=FALSE", "a = false"),
            ("a=Null", "a = null"),
            ("a='single'", r#"a = "single""#),
            (r#"a="double""#, r#"a = "double""#),
            (r#"a='it\'s'"#, r#"a = "it's""#),
            (r#"a="say \"hi\"""#, r#"a = "say \"hi\"""#),
            (
                r#"a="x\\y\n\t\r\/\b\f""#,
                r#"a = "x\\y\n\t\r/\u0008\u000C""#,
            ),
            (r#"a="\u00e9\u00C9""#, r#"a = "éÉ""#),
            (r#"a="\ud83d\ude00""#, r#"a = "😀""#),
            (r#"a="""#, r#"a = """#),
            ("a='\"'", r#"a = "\"""#),
            (r#"a="true""#, r#"a = "true""#),
            (r#"a="100""#, r#"a = "100""#),
            // Bare words.
            ("email=a@b.com", r#"email = "a@b.com""#),
            ("slug=my-post", r#"slug = "my-post""#),
            ("id=abc123", r#"id = "abc123""#),
            ("id=user:123", r#"id = "user:123""#),
            ("name=José", r#"name = "José""#),
            ("v=1.2.3", r#"v = "1.2.3""#),
            ("zip=01234", r#"zip = "01234""#),
            ("a=123abc", r#"a = "123abc""#),
            ("a=1-2", r#"a = "1-2""#),
            ("a=.5", r#"a = ".5""#),
            ("a=1.", r#"a = "1.""#),
            ("a=-", r#"a = "-""#),
            ("a=inf", r#"a = "inf""#),
            ("a=NaN", r#"a = "NaN""#),
            ("a=trueish", r#"a = "trueish""#),
            ("a=_", r#"a = "_""#),
            // Arrays and objects after an operator.
            ("a=[1, [2, 3], []]", "a = [1, [2, 3], []]"),
            ("a=[x, 'y',]", r#"a = ["x", "y"]"#),
            (
                r#"a={"k": 1, b: [true], 'c d': {}}"#,
                r#"a = {"b": [true], "c d": {}, "k": 1}"#,
            ),
            ("a = {}", "a = {}"),
            // Parameters.
            ("owner=$auth.sub", "owner = $auth.sub"),
            ("role = $AUTH.role", "role = $auth.role"),
            ("org = $auth.org.id", "org = $auth.org.id"),
            ("n > $auth.level", "n > $auth.level"),
        ] {
            check(input, display);
        }
    }

    #[test]
    fn boolean_structure() {
        for (input, display) in [
            ("a=1 && b>2", "(a = 1) AND (b > 2)"),
            ("a=1 and b>2", "(a = 1) AND (b > 2)"),
            ("a=1 AnD b>2", "(a = 1) AND (b > 2)"),
            ("a=1 || b=2", "(a = 1) OR (b = 2)"),
            ("a=1 Or b=2", "(a = 1) OR (b = 2)"),
            ("a=1&&b=2&&c=3", "(a = 1) AND (b = 2) AND (c = 3)"),
            ("!a=1", "NOT (a = 1)"),
            ("not a=1", "NOT (a = 1)"),
            ("NOT(a=1)", "NOT (a = 1)"),
            ("!!a=1", "NOT (NOT (a = 1))"),
            ("! ( a = 1 )", "NOT (a = 1)"),
            // Precedence: NOT > AND > OR.
            ("a=1 || b=2 && c=3", "(a = 1) OR ((b = 2) AND (c = 3))"),
            ("a=1 && b=2 || c=3", "((a = 1) AND (b = 2)) OR (c = 3)"),
            ("!a=1 && b=2", "(NOT (a = 1)) AND (b = 2)"),
            ("NOT a=1 OR b=2", "(NOT (a = 1)) OR (b = 2)"),
            ("!(a=1 && b=2)", "NOT ((a = 1) AND (b = 2))"),
            ("(a=1 || b=2) && c=3", "((a = 1) OR (b = 2)) AND (c = 3)"),
            ("((a=1))", "a = 1"),
            ("(a=1 && b=2) && c=3", "((a = 1) AND (b = 2)) AND (c = 3)"),
            // Keywords must be whole words; `android` is a value.
            ("os=android", r#"os = "android""#),
            ("os=android or x=1", r#"(os = "android") OR (x = 1)"#),
            (
                "x=1 AND NOT y=2 OR z=3",
                "((x = 1) AND (NOT (y = 2))) OR (z = 3)",
            ),
        ] {
            check(input, display);
        }
    }

    #[test]
    fn whitespace_is_free() {
        for input in [
            "a=1&&b>2",
            "  a = 1   &&   b > 2  ",
            "\ta\t=\t1\n&&\r\nb\u{a0}>\u{3000}2",
            "(a=1)and(b>2)",
        ] {
            check(input, "(a = 1) AND (b > 2)");
        }
        check(
            "status=published&&price>100",
            r#"(status = "published") AND (price > 100)"#,
        );
        check(" x IN [ 1 , 2 ] ", "x IN [1, 2]");
        check("x NOT\n IN[1]", "x NOT IN [1]");
    }

    #[test]
    fn json_form() {
        for (input, display) in [
            (
                r#"{"published":true,"category":"electronics"}"#,
                r#"(category = "electronics") AND (published = true)"#,
            ),
            (r#"  {"a": 1}  "#, "a = 1"),
            ("{}", "{}"),
            (" { } ", "{}"),
            (r#"{"a.b": null}"#, "a.b = null"),
            (
                r#"{"tags": ["x", 1, 2.5], "meta": {"k": {"z": false}}}"#,
                r#"(meta = {"k": {"z": false}}) AND (tags = ["x", 1, 2.5])"#,
            ),
            (
                r#"{"big": 18446744073709551615}"#,
                "big = 1.8446744073709552e19",
            ),
            (r#"{"s": "a\"b\u0001"}"#, r#"s = "a\"b\u0001""#),
        ] {
            check(input, display);
        }
    }

    #[test]
    fn keys_limits_for_json() {
        let many: Vec<String> = (0..65).map(|n| format!("\"k{n:02}\": {n}")).collect();
        let text = format!("{{{}}}", many.join(","));
        let err = parse(&text).err();
        assert_eq!(
            err.map(|e| e.message),
            Some(format!(
                "the filter has more than 64 comparisons at column {}",
                text.find("\"k64\"").map_or(0, |b| b + 1)
            ))
        );
        let ok: Vec<String> = (0..64).map(|n| format!("\"k{n}\": {n}")).collect();
        assert!(parse(&format!("{{{}}}", ok.join(","))).is_ok());
    }

    /// Input, exact message, column.
    const ERRORS: &[(&str, &str, usize)] = &[
        ("", "the filter is empty", 1),
        (" \t\n ", "the filter is empty", 1),
        ("=1", "expected a field name at column 1", 1),
        ("1abc=2", "expected a field name at column 1", 1),
        ("é=1", "expected a field name at column 1", 1),
        ("a=1 &&", "expected a condition after `&&` at column 7", 7),
        (
            "a=1 and ",
            "expected a condition after `and` at column 9",
            9,
        ),
        ("a=1 || )", "expected a condition after `||` at column 8", 8),
        ("()", "expected a condition after `(` at column 2", 2),
        ("!", "expected a condition after `!` at column 2", 2),
        ("not = 1", "expected a condition after `not` at column 5", 5),
        ("a.=1", "expected a name after `.` at column 3", 3),
        ("a.b.", "expected a name after `.` at column 5", 5),
        // Names that run to the end of the input are read whole.
        (
            "abc",
            "expected an operator (`=`, `!=`, `>`, `<`, `>=`, `<=`, `~`, `!~`, `IN` or `NOT IN`) after `abc` at column 4",
            4,
        ),
        (
            "x=1 && a.bcd",
            "expected an operator (`=`, `!=`, `>`, `<`, `>=`, `<=`, `~`, `!~`, `IN` or `NOT IN`) after `a.bcd` at column 13",
            13,
        ),
        (
            "a",
            "expected an operator (`=`, `!=`, `>`, `<`, `>=`, `<=`, `~`, `!~`, `IN` or `NOT IN`) after `a` at column 2",
            2,
        ),
        (
            "a.b 1",
            "expected an operator (`=`, `!=`, `>`, `<`, `>=`, `<=`, `~`, `!~`, `IN` or `NOT IN`) after `a.b` at column 5",
            5,
        ),
        ("price=>5", "unknown operator `=>` at column 6", 6),
        ("a === 1", "unknown operator `===` at column 3", 3),
        ("a <> 1", "unknown operator `<>` at column 3", 3),
        ("a =~ 1", "unknown operator `=~` at column 3", 3),
        ("a ! 1", "unknown operator `!` at column 3", 3),
        (
            "a=1 & b=2",
            "`&` at column 5 is not an operator; use `&&` or `AND`",
            5,
        ),
        (
            "a=1 | b=2",
            "`|` at column 5 is not an operator; use `||` or `OR`",
            5,
        ),
        ("a not = 1", "expected `IN` after `not` at column 7", 7),
        ("a NOT [1]", "expected `IN` after `NOT` at column 7", 7),
        ("price > ", "expected a value after `>` at column 9", 9),
        ("price >", "expected a value after `>` at column 8", 8),
        ("a= && b=1", "expected a value after `=` at column 4", 4),
        ("(a=)", "expected a value after `=` at column 4", 4),
        ("a = = 1", "expected a value after `=` at column 5", 5),
        (
            "a = and",
            "`and` at column 5 is a keyword, not a value; quote it (\"and\") to compare with that text",
            5,
        ),
        (
            "a = b or = 1",
            "expected a condition after `or` at column 10",
            10,
        ),
        (
            "a = IN",
            "`IN` at column 5 is a keyword, not a value; quote it (\"IN\") to compare with that text",
            5,
        ),
        (
            "a IN 1",
            "expected a list such as `[a, b]` after `IN` at column 6",
            6,
        ),
        (
            "a not in",
            "expected a list such as `[a, b]` after `not in` at column 9",
            9,
        ),
        ("a IN [1 2]", "expected `,` or `]` at column 9", 9),
        ("a IN (1 2)", "expected `,` or `)` at column 9", 9),
        ("a IN [1,,2]", "expected a value or `]` at column 9", 9),
        ("a IN [&&]", "expected a value or `]` at column 7", 7),
        ("a IN [1, 2", "unclosed bracket opened at column 6", 6),
        ("a IN [1,", "unclosed bracket opened at column 6", 6),
        ("a IN (1", "unclosed parenthesis opened at column 6", 6),
        ("a = [1, {", "unclosed brace opened at column 9", 9),
        ("a = {x 1}", "expected `:` after the key at column 8", 8),
        ("a = {1: 1}", "expected a quoted key or `}` at column 6", 6),
        ("a = {x: }", "expected a value after `:` at column 9", 9),
        ("a = {x: 1 y: 2}", "expected `,` or `}` at column 11", 11),
        ("a = {x: 1, 'x': 2}", "duplicate key `x` at column 12", 12),
        (
            "a = [1, $auth.sub]",
            "a parameter cannot be used inside an array or object value (column 9)",
            9,
        ),
        ("a = 'abc", "unterminated string starting at column 5", 5),
        (
            "a = \"abc\\\"",
            "unterminated string starting at column 5",
            5,
        ),
        ("a = \"abc\\", "unterminated string starting at column 5", 5),
        ("title = \"ü", "unterminated string starting at column 9", 9),
        (
            r#"a = "x\qy""#,
            "invalid escape `\\q` at column 7; the escapes are \\\\ \\\" \\' \\/ \\b \\f \\n \\r \\t and \\uXXXX",
            7,
        ),
        (
            r#"a = "\u12G4""#,
            "invalid unicode escape `\\u12G4` at column 6; write `\\u` and four hex digits (a surrogate pair for characters beyond U+FFFF)",
            6,
        ),
        (
            r#"a = "\u12""#,
            "invalid unicode escape `\\u12\"` at column 6; write `\\u` and four hex digits (a surrogate pair for characters beyond U+FFFF)",
            6,
        ),
        (
            r#"a = "\ud800x""#,
            "invalid unicode escape `\\ud800` at column 6; write `\\u` and four hex digits (a surrogate pair for characters beyond U+FFFF)",
            6,
        ),
        (
            r#"a = "\udc00""#,
            "invalid unicode escape `\\udc00` at column 6; write `\\u` and four hex digits (a surrogate pair for characters beyond U+FFFF)",
            6,
        ),
        (
            "a = 1e999",
            "the number `1e999` at column 5 is out of range",
            5,
        ),
        (
            "a = -1e309",
            "the number `-1e309` at column 5 is out of range",
            5,
        ),
        (
            "owner = $auth",
            "`$auth` at column 9 must be followed by a claim name, e.g. `$auth.sub`",
            9,
        ),
        (
            "owner = $auth.",
            "`$auth` at column 9 must be followed by a claim name, e.g. `$auth.sub`",
            9,
        ),
        (
            "owner = $auth.1",
            "`$auth` at column 9 must be followed by a claim name, e.g. `$auth.sub`",
            9,
        ),
        (
            "owner = $auth.a.",
            "expected a name after `.` at column 17",
            17,
        ),
        (
            "owner = $user.id",
            "unknown parameter `$user` at column 9; only `$auth.<claim>` is supported, e.g. `$auth.sub`",
            9,
        ),
        (
            "owner = $",
            "unknown parameter `$` at column 9; only `$auth.<claim>` is supported, e.g. `$auth.sub`",
            9,
        ),
        (
            "a IN [$me]",
            "unknown parameter `$me` at column 7; only `$auth.<claim>` is supported, e.g. `$auth.sub`",
            7,
        ),
        (
            "a=1 b=2",
            "expected `&&`, `||` or the end of the filter at column 5",
            5,
        ),
        (
            "a=hello world",
            "expected `&&`, `||` or the end of the filter at column 9",
            9,
        ),
        (
            "a=1 ANDb=2",
            "expected `&&`, `||` or the end of the filter at column 5",
            5,
        ),
        ("(a=1 b=2)", "expected `&&`, `||` or `)` at column 6", 6),
        ("a=1)", "unmatched `)` at column 4", 4),
        ("(a=1", "unclosed parenthesis opened at column 1", 1),
        (
            "x=1 && (a=1 || (b=2)",
            "unclosed parenthesis opened at column 8",
            8,
        ),
        ("  (a=1", "unclosed parenthesis opened at column 3", 3),
        ("é = 1", "expected a field name at column 1", 1),
        ("ü=1 && x", "expected a field name at column 1", 1),
        (
            "a=\"é\" && x",
            "expected an operator (`=`, `!=`, `>`, `<`, `>=`, `<=`, `~`, `!~`, `IN` or `NOT IN`) after `x` at column 11",
            11,
        ),
        // The JSON form.
        (
            "{",
            "invalid JSON filter: EOF while parsing an object at column 1",
            1,
        ),
        (
            r#"{"a": }"#,
            "invalid JSON filter: expected value at column 7",
            7,
        ),
        (
            r#"{"a": 1} x"#,
            "invalid JSON filter: trailing characters at column 10",
            10,
        ),
        (
            r#"{"é": x}"#,
            "invalid JSON filter: expected value at column 7",
            7,
        ),
        (
            r#"{"a b": 1}"#,
            "the key `a b` at column 2 is not a field name; use letters, digits and `_`, with `.` between nested names",
            2,
        ),
        (
            r#"{"x": 1, "a.": 1}"#,
            "the key `a.` at column 10 is not a field name; use letters, digits and `_`, with `.` between nested names",
            10,
        ),
        (
            r#"{"NOT": 1}"#,
            "the key `NOT` at column 2 is not a field name: `not` is a keyword",
            2,
        ),
    ];

    #[test]
    fn errors() {
        for &(input, message, column) in ERRORS {
            assert_eq!(
                parse(input),
                Err(FilterError::new(message, column)),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn length_limit() {
        let at_limit = format!("a={}", "x".repeat(MAX_LEN - 2));
        assert!(parse(&at_limit).is_ok());
        let over = format!("a={}", "x".repeat(MAX_LEN - 1));
        assert_eq!(
            parse(&over),
            Err(FilterError::new(
                "the filter is longer than 4096 bytes",
                4097
            ))
        );
        // Counted in bytes, reported in characters.
        let wide = format!("a={}", "é".repeat(MAX_LEN));
        assert_eq!(parse(&wide).map_err(|e| e.column), Err(2050));
    }

    #[test]
    fn depth_limit() {
        // 32 levels are fine, the 33rd is not; never a stack overflow.
        let ok = format!("{}a=1{}", "(".repeat(32), ")".repeat(32));
        check(&ok, "a = 1");
        let deep = format!("{}a=1{}", "(".repeat(33), ")".repeat(33));
        let msg = "the filter nests deeper than 32 levels at column 33";
        assert_eq!(parse(&deep), Err(FilterError::new(msg, 33)));
        let nots = format!("{}a=1", "!".repeat(33));
        assert_eq!(parse(&nots), Err(FilterError::new(msg, 33)));
        let mixed = format!("{}a=1", "NOT (".repeat(17));
        let msg = "the filter nests deeper than 32 levels at column 81";
        assert_eq!(parse(&mixed), Err(FilterError::new(msg, 81)));
        let arrays = format!("a={}1{}", "[".repeat(33), "]".repeat(33));
        let msg = "the filter nests deeper than 32 levels at column 35";
        assert_eq!(parse(&arrays), Err(FilterError::new(msg, 35)));
        let ok_arrays = format!("a={}1{}", "[".repeat(32), "]".repeat(32));
        assert!(parse(&ok_arrays).is_ok());
        let objects = format!("a={}1{}", "{x:".repeat(40), "}".repeat(40));
        assert!(parse(&objects).is_err());
        let json_deep = format!("{{\"a\": {}1{}}}", "[".repeat(33), "]".repeat(33));
        let msg = "the filter nests deeper than 32 levels at column 2";
        assert_eq!(parse(&json_deep), Err(FilterError::new(msg, 2)));
        let json_ok = format!("{{\"a\": {}1{}}}", "[".repeat(32), "]".repeat(32));
        assert!(parse(&json_ok).is_ok());
        // The depth check does not rely on the length limit: the grammar on
        // its own stops a 10,000-deep input at level 33.
        let very_deep = "(".repeat(10_000);
        let grammar = Grammar {
            terms: Cell::new(0),
        };
        match grammar.filter(&very_deep) {
            Err(NomErr::Failure(e)) => {
                assert_eq!((e.kind, column_of(&very_deep, e.at)), (Kind::TooDeep, 33))
            }
            other => panic!("{other:?}"),
        }
        let msg = "the filter is longer than 4096 bytes";
        assert_eq!(parse(&very_deep), Err(FilterError::new(msg, 4097)));
        // Far past the limits, and past the length limit too.
        for n in [1000, 2048, 10_000] {
            for unit in ["(", "!", "NOT ", "a=[", "a IN [", "{\"a\":["] {
                assert!(parse(&unit.repeat(n)).is_err());
            }
        }
    }

    #[test]
    fn term_limit() {
        let terms = |n: usize| (0..n).map(|i| format!("a{i}=1")).collect::<Vec<_>>();
        assert!(parse(&terms(64).join("&&")).is_ok());
        let text = terms(65).join("&&");
        let col = text.find("a64").map_or(0, |b| b + 1);
        let msg = format!("the filter has more than 64 comparisons at column {col}");
        assert_eq!(parse(&text), Err(FilterError::new(msg, col)));
        // IN lists count once whatever their length.
        let list: Vec<String> = (0..500).map(|i| i.to_string()).collect();
        assert!(parse(&format!("a IN [{}]", list.join(","))).is_ok());
    }

    // ---- property tests -------------------------------------------------

    fn arb_segment() -> impl Strategy<Value = String> {
        "[A-Za-z_][A-Za-z0-9_]{0,6}".prop_filter("`not` cannot start a field", |s| {
            !s.eq_ignore_ascii_case("not")
        })
    }

    fn arb_field() -> impl Strategy<Value = FieldPath> {
        (
            arb_segment(),
            prop::collection::vec("[A-Za-z_][A-Za-z0-9_]{0,4}", 0..3),
        )
            .prop_map(|(first, rest)| {
                let mut segs = vec![first];
                segs.extend(rest);
                FieldPath::from_segments(segs).unwrap_or_else(|| unreachable!("valid segments"))
            })
    }

    fn arb_string() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{0,8}",
            any::<String>(),
            "[\"'\\\\\n\t\r\u{0}-\u{1f}éÉ😀 ]{0,8}",
            Just("true".to_owned()),
            Just("and".to_owned()),
            Just("1.5".to_owned()),
        ]
    }

    fn arb_scalar() -> impl Strategy<Value = Literal> {
        prop_oneof![
            Just(Literal::Null),
            any::<bool>().prop_map(Literal::Bool),
            any::<i64>().prop_map(Literal::Int),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Literal::Float),
            (-1000i32..1000).prop_map(|n| Literal::Float(f64::from(n))),
            arb_string().prop_map(Literal::String),
        ]
    }

    fn arb_literal() -> impl Strategy<Value = Literal> {
        arb_scalar().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Literal::Array),
                prop::collection::btree_map(arb_string(), inner, 0..4).prop_map(Literal::Object),
            ]
        })
    }

    fn arb_operand() -> impl Strategy<Value = Operand> {
        prop_oneof![
            4 => arb_literal().prop_map(Operand::Literal),
            1 => arb_field().prop_map(Operand::Param),
        ]
    }

    fn arb_op() -> impl Strategy<Value = CompareOp> {
        prop_oneof![
            Just(CompareOp::Eq),
            Just(CompareOp::Ne),
            Just(CompareOp::Gt),
            Just(CompareOp::Lt),
            Just(CompareOp::Ge),
            Just(CompareOp::Le),
            Just(CompareOp::Contains),
            Just(CompareOp::NotContains),
        ]
    }

    fn arb_leaf() -> impl Strategy<Value = Expr> {
        prop_oneof![
            (arb_field(), arb_op(), arb_operand()).prop_map(|(field, op, value)| Expr::Compare {
                field,
                op,
                value
            }),
            (
                arb_field(),
                prop::collection::vec(arb_operand(), 0..4),
                any::<bool>()
            )
                .prop_map(|(field, values, negated)| Expr::In {
                    field,
                    values,
                    negated
                }),
        ]
    }

    /// Trees as the parser builds them: `And`/`Or` of at least two, no
    /// `True` below the top.
    fn arb_expr() -> impl Strategy<Value = Expr> {
        // Depth 3 with up to 3 children keeps every tree within the 64
        // comparisons and the 32 levels (NOT adds two: `NOT (`).
        let tree = arb_leaf().prop_recursive(3, 24, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
                inner.prop_map(|e| Expr::Not(Box::new(e))),
            ]
        });
        prop_oneof![20 => tree, 1 => Just(Expr::True)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn display_reparses_to_the_same_tree(expr in arb_expr()) {
            let text = expr.to_string();
            prop_assert_eq!(parse(&text), Ok(expr), "text: {}", text);
        }

        #[test]
        fn parse_never_panics(input in any::<String>()) {
            let _ = parse(&input);
        }

        #[test]
        fn parse_never_panics_on_filter_like_text(
            input in "[a-z0-9 =!<>~&|()\\[\\],.$'\"\\\\{}:-]{0,40}"
        ) {
            if let Err(e) = parse(&input) {
                prop_assert!(e.column >= 1 && e.column <= input.chars().count() + 1);
            }
        }
    }
}
