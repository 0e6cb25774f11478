//! A sort order as clients write it: `field`, `-field` or `+field`, for
//! record lists (`?sort=`) and first-N snapshots (`snapshot_sort`). How
//! records are then ordered, ties and mixed types included, is
//! [`SortOrder`]'s to say.

use crate::Error;
use crate::filter::FieldPath;
use crate::store::SortOrder;

/// `field`, `-field` (descending) or `+field`, with a dotted path of
/// identifiers (as filters write them): `title`, `-title`, `author.name`.
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
                "`sort` must be a field such as `title`, or `-title` for descending, not `{}`",
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
        let sort = parse_sort("-title").unwrap();
        assert!(sort.descending);
        assert_eq!(sort.field.segments(), ["title"]);
        let sort = parse_sort("author.name").unwrap();
        assert!(!sort.descending);
        assert_eq!(sort.field.segments(), ["author", "name"]);
        for bad in ["", "-", "a..b", "a`b", "1a", "a b"] {
            assert!(parse_sort(bad).is_err(), "{bad}");
        }
    }
}
