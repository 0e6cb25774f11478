//! The one error type of the filter language.

/// Why a filter could not be read, and where.
///
/// `message` is a complete sentence meant for the person who typed the filter;
/// when the problem has a place it already says `at column N`. `column` is the
/// same place as a number, for callers (the HTTP layer) that return it as a
/// separate field: 1-based and counted in characters (not bytes) from the start
/// of the filter text, so a filter that spans several lines is counted as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FilterError {
    /// A sentence describing the problem, including its column when it has one.
    pub message: String,
    /// 1-based character column of the problem (1 for problems with no place,
    /// such as an empty filter).
    pub column: usize,
}

impl FilterError {
    /// Builds an error from a message and a 1-based character column.
    pub fn new(message: impl Into<String>, column: usize) -> Self {
        FilterError {
            message: message.into(),
            column,
        }
    }
}

/// The 1-based character column of `rest` inside `src`, where `rest` is a
/// suffix of `src` (every position the parser holds is one). A `rest` that is
/// somehow not a suffix is clamped rather than trusted, so this never panics.
pub(crate) fn column_of(src: &str, rest: &str) -> usize {
    column_of_byte(src, src.len().saturating_sub(rest.len()))
}

/// The 1-based character column of byte offset `byte` in `src` (clamped to the
/// length of `src`, and rounded down to a character boundary).
pub(crate) fn column_of_byte(src: &str, byte: usize) -> usize {
    let mut b = byte.min(src.len());
    while b > 0 && !src.is_char_boundary(b) {
        b -= 1;
    }
    src.get(..b).map_or(0, |p| p.chars().count()) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters_not_bytes() {
        let src = "é=1 && x";
        assert_eq!(column_of(src, src), 1);
        assert_eq!(column_of(src, "x"), 8);
        assert_eq!(column_of(src, ""), 9);
        assert_eq!(column_of_byte(src, 1), 1); // inside `é`: rounded down
        assert_eq!(column_of_byte(src, 1000), 9);
    }

    #[test]
    fn display_is_the_message() {
        let e = FilterError::new("unknown operator `=>` at column 6", 6);
        assert_eq!(e.to_string(), "unknown operator `=>` at column 6");
        let _: &dyn std::error::Error = &e;
    }
}
