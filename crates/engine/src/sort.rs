//! A sort order as clients write it: `field`, `-field` or `+field`.

use crate::Error;
use crate::filter::FieldPath;
use crate::store::SortOrder;

/// `field`, `-field` or `+field`, with a dotted path of identifiers (as
/// filters write them).
pub fn parse_sort(sort: &str) -> Result<SortOrder, Error> {
    let (descending, path) = match sort.strip_prefix('-') {
        Some(path) => (true, path),
        None => (false, sort.strip_prefix('+').unwrap_or(sort)),
    };
    let field = FieldPath::parse(path).filter(|_| path.len() <= 256);
    let Some(field) = field else {
        return Err(Error::invalid(
            "invalid_query",
            format!(
                "`sort` must be a field name such as `title` or `-created`, not `{}`",
                sort.chars().take(80).collect::<String>()
            ),
        ));
    };
    Ok(SortOrder { field, descending })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_orders_parse() {
        let sort = parse_sort("-created").unwrap();
        assert!(sort.descending);
        assert_eq!(sort.field.segments(), ["created"]);
        let sort = parse_sort("author.name").unwrap();
        assert!(!sort.descending);
        assert_eq!(sort.field.segments(), ["author", "name"]);
        for bad in ["", "-", "a..b", "a`b", "1a", "a b"] {
            assert!(parse_sort(bad).is_err(), "{bad}");
        }
    }
}
