//! Records: writes checked against rules inside their transaction, gets
//! and lists.

use serde_json::{Map, Value as Json};
use surrealdb::types::{RecordIdKey, Value};

use super::schema::{COLLECTIONS_TABLE, NO_COLLECTION, is_no_collection};
use super::{Store, StoreError, Written};
use crate::collection::{CollectionName, RecordKey};
use crate::filter::{Expr, FieldPath};

/// Thrown when a record is missing or its caller may not read it.
const NO_RECORD: &str = "livehub: no such record";
/// Thrown when a rule refuses a write.
const FORBIDDEN: &str = "livehub: refused by a rule";
/// Thrown, with the id after it, when an atomic batch meets a taken id.
const TAKEN: &str = "livehub: id taken: ";

/// Why a batch failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// One item failed an atomic batch: nothing was written.
    #[error("item {index}: {error}")]
    Item { index: usize, error: StoreError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The rule conditions a record write must pass, inside its transaction,
/// each already bound to the caller (`None`: no condition).
#[derive(Debug, Default)]
pub struct RuleChecks {
    /// The read rule: a record the caller may not read is "not found".
    pub read: Option<Expr>,
    /// The write's own rule (`update` or `delete`), on the record as it was:
    /// refused with 403.
    pub write: Option<Expr>,
    /// Whether `write` must also hold for the record as it is after the
    /// change (updates: no one can move a record out of their own rule).
    pub write_after: bool,
}

/// Sort order for record lists and first-N snapshots: by one field, ties
/// broken by `id` in the same direction (`ORDER BY field DESC, id DESC`
/// for `-field`), so that every order is total, pages are stable, and
/// `-field` is exactly `field` reversed.
///
/// Values order as SurrealDB compares them: a missing field (NONE) first,
/// then null, booleans (false first), numbers (by value, integers and
/// floats alike), strings (by code point: UTF-8 bytes, no collation),
/// arrays (element by element, a prefix first), objects (entries in key
/// order); descending reverses all of it. livehub.js's `comparator` sorts
/// live queries the same way (tests/api/records.rs checks the server's
/// order, tests/api/browser.rs that the library's matches it).
#[derive(Debug, Clone)]
pub struct SortOrder {
    pub(crate) field: FieldPath,
    pub(crate) descending: bool,
}

impl SortOrder {
    /// The `ORDER BY` clause's terms: the field, then `id`, both in the
    /// sort's direction (just `id` when that is the field).
    fn order_by(&self) -> String {
        let direction = if self.descending { "DESC" } else { "ASC" };
        if self.field.segments() == ["id"] {
            format!("id {direction}")
        } else {
            format!("{} {direction}, id {direction}", self.field.to_surrealql())
        }
    }
}

impl Store {
    /// Creates a record.
    pub async fn create_record(
        &self,
        collection: &CollectionName,
        id: &RecordKey,
        data: Map<String, Json>,
    ) -> Result<Json, StoreError> {
        if let Some(committer) = &self.committer {
            self.admit()?;
            return match committer.create(collection, id, data).await? {
                Json::Null => Err(StoreError::Unexpected("CREATE returned no record".into())),
                record => Ok(record),
            };
        }
        self.write_record(
            collection,
            "CREATE type::record($tb, $id) CONTENT $data RETURN AFTER",
            id,
            Some(data),
            &RuleChecks::default(),
        )
        .await?
        .ok_or_else(|| StoreError::Unexpected("CREATE returned no record".into()))
    }

    /// Creates many records in one transaction (one commit): each item is
    /// its new record, or `RecordExists` if its id is taken. `atomic`: a
    /// taken id fails the whole batch instead, with the first such item's
    /// index, and nothing is written.
    pub async fn create_records(
        &self,
        collection: &CollectionName,
        items: Vec<(RecordKey, Map<String, Json>)>,
        atomic: bool,
    ) -> Result<Vec<Result<Json, StoreError>>, BatchError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.admit()?;
        let keys: Vec<RecordKey> = items.iter().map(|(key, _)| key.clone()).collect();
        let taken = |index: usize| BatchError::Item {
            index,
            error: StoreError::RecordExists {
                collection: collection.clone(),
                key: keys[index].clone(),
            },
        };
        if atomic && let Some(index) = first_repeated(&keys) {
            return Err(taken(index));
        }
        // One multi-row statement, its rows a bound parameter: a statement
        // per record cost about half a millisecond each, and the query text
        // grew with the batch.
        let rows: Vec<Json> = items
            .into_iter()
            .map(|(key, mut data)| {
                data.insert("id".into(), serde_json::json!(key));
                Json::Object(data)
            })
            .collect();
        let vars = serde_json::json!({ "tb": collection, "ids": &keys, "rows": rows });
        // Atomic: a taken id fails the whole batch (named by its id, which
        // gives the item); otherwise `IGNORE` leaves taken ids out of what
        // the insert returns, and those items are answered `RecordExists`.
        let (insert, at): (String, usize) = if atomic {
            let sql = format!(
                "LET $taken = $ids.filter(|$id| record::exists(type::record($tb, $id)));
                 IF $taken.len() > 0 {{ THROW '{TAKEN}' + <string> $taken[0] }};
                 INSERT INTO $tb $rows RETURN AFTER;"
            );
            (sql, 4)
        } else {
            ("INSERT IGNORE INTO $tb $rows RETURN AFTER;".to_owned(), 2)
        };
        let sql = format!(
            "BEGIN;
             IF !record::exists(type::record('{COLLECTIONS_TABLE}', $tb)) {{ THROW '{NO_COLLECTION}' }};
             {insert}
             COMMIT;"
        );
        let mut ran = self.write(sql, vars).await?;
        if let Some(error) = ran.error {
            if is_no_collection(&error) {
                return Err(StoreError::NoCollection(collection.clone()).into());
            }
            let message = error.message();
            if let Some(at) = message.find(TAKEN) {
                let id = message[at + TAKEN.len()..].trim_end();
                let index = keys.iter().position(|key| key.as_str() == id).unwrap_or(0);
                return Err(taken(index));
            }
            return Err(StoreError::from(error).into());
        }
        // Statement 0 is BEGIN, 1 the collection check, `at` the insert.
        let rows: Vec<Value> = ran.response.take(at).map_err(StoreError::from)?;
        let mut inserted: std::collections::HashMap<String, Json> = rows
            .into_iter()
            .map(|row| {
                let (_, key, record) = record_json(row);
                (key, record)
            })
            .collect();
        let mut results = Vec::with_capacity(keys.len());
        let mut written = Vec::new();
        for key in keys {
            // A repeated id: the first of its items was inserted.
            match inserted.remove(key.as_str()) {
                Some(record) => {
                    let target = Written::Record {
                        collection: collection.shared(),
                        key: key.to_string(),
                    };
                    written.push((target, super::json_len(&record)));
                    results.push(Ok(record));
                }
                None => results.push(Err(StoreError::RecordExists {
                    collection: collection.clone(),
                    key,
                })),
            }
        }
        ran.guard.acknowledge_all(written);
        Ok(results)
    }

    /// Merges fields into a record; `None` if it does not exist.
    pub async fn merge_record(
        &self,
        collection: &CollectionName,
        id: &RecordKey,
        data: Map<String, Json>,
        checks: &RuleChecks,
    ) -> Result<Option<Json>, StoreError> {
        let sql = "UPDATE type::record($tb, $id) MERGE $data RETURN AFTER";
        self.write_record(collection, sql, id, Some(data), checks)
            .await
    }

    /// Replaces a record's content; `None` if it does not exist.
    pub async fn replace_record(
        &self,
        collection: &CollectionName,
        id: &RecordKey,
        data: Map<String, Json>,
        checks: &RuleChecks,
    ) -> Result<Option<Json>, StoreError> {
        let sql = "UPDATE type::record($tb, $id) CONTENT $data RETURN AFTER";
        self.write_record(collection, sql, id, Some(data), checks)
            .await
    }

    /// Deletes a record; the deleted record, or `None` if it did not exist.
    pub async fn delete_record(
        &self,
        collection: &CollectionName,
        id: &RecordKey,
        checks: &RuleChecks,
    ) -> Result<Option<Json>, StoreError> {
        let sql = "DELETE type::record($tb, $id) RETURN BEFORE";
        self.write_record(collection, sql, id, None, checks).await
    }

    /// Runs one record write inside a transaction that first checks that the
    /// collection exists (so SurrealDB never creates an undefined table), and
    /// then the caller's rules (see [`RuleChecks`]), so that no concurrent
    /// write can slip between the check and the change.
    ///
    /// An update whose data holds long strings first sets each of them to
    /// `null` (see [`long_strings_cleared`]), in the same transaction: the
    /// changefeed then stores whole values for them, not string diffs, which
    /// SurrealDB computes in time quadratic in the length and inside the
    /// write. The feed merges the two steps into one change.
    async fn write_record(
        &self,
        collection: &CollectionName,
        statement: &str,
        id: &RecordKey,
        data: Option<Map<String, Json>>,
        checks: &RuleChecks,
    ) -> Result<Option<Json>, StoreError> {
        self.admit()?;
        let mut vars = serde_json::json!({ "tb": collection, "id": id });
        let clear = match &data {
            Some(data) if statement.starts_with("UPDATE") => long_strings_cleared(data),
            _ => None,
        };
        let statement = match clear {
            Some(cleared) => {
                vars["cleared"] = Json::Object(cleared);
                format!("UPDATE type::record($tb, $id) MERGE $cleared RETURN NONE;\n{statement}")
            }
            None => statement.to_owned(),
        };
        let steps = statement.matches(';').count() + 1;
        let mut check = |name: &str, condition: &Expr, error: &str| {
            let (sql, params) = condition.to_surrealql_named(name);
            for (param, value) in params {
                vars[param] = value;
            }
            format!(
                "IF array::len(SELECT VALUE id FROM type::record($tb, $id) WHERE {sql}) = 0 {{ THROW '{error}' }};"
            )
        };
        let mut before = Vec::new();
        let mut after = Vec::new();
        if let Some(read) = &checks.read {
            // Missing and unreadable records look the same: not found.
            before.push(format!(
                "IF record::exists(type::record($tb, $id)) {{ {} }};",
                check("r", read, NO_RECORD)
            ));
        }
        if let Some(write) = &checks.write {
            before.push(format!(
                "IF record::exists(type::record($tb, $id)) {{ {} }};",
                check("w", write, FORBIDDEN)
            ));
            if checks.write_after {
                // A missing record was not written: nothing to check.
                after.push(format!(
                    "IF record::exists(type::record($tb, $id)) {{ {} }};",
                    check("a", write, FORBIDDEN)
                ));
            }
        }
        let sql = format!(
            "BEGIN;
             IF !record::exists(type::record('{COLLECTIONS_TABLE}', $tb)) {{ THROW '{NO_COLLECTION}' }};
             {}
             {statement};
             {}
             COMMIT;",
            before.join("\n"),
            after.join("\n"),
        );
        if let Some(data) = data {
            vars["data"] = Json::Object(data);
        }
        let mut ran = self.write(sql, vars).await?;
        if let Some(error) = ran.error {
            let message = error.message();
            if is_no_collection(&error) {
                return Err(StoreError::NoCollection(collection.clone()));
            }
            if message.contains(NO_RECORD) {
                return Ok(None);
            }
            if message.contains(FORBIDDEN) {
                return Err(StoreError::Refused {
                    collection: collection.clone(),
                    key: id.clone(),
                });
            }
            if error.is_already_exists() {
                return Err(StoreError::RecordExists {
                    collection: collection.clone(),
                    key: id.clone(),
                });
            }
            return Err(error.into());
        }
        // Statement 0 is BEGIN, 1 the collection check, then the rule
        // checks, then the write's steps, the last of which returns it.
        let rows: Vec<Value> = ran.response.take(1 + before.len() + steps)?;
        let record = rows.into_iter().next().map(|row| record_json(row).2);
        // Only a write that returned its record changed it.
        if let Some(record) = &record {
            let written = Written::Record {
                collection: collection.shared(),
                key: id.to_string(),
            };
            ran.guard
                .acknowledge_all(vec![(written, super::json_len(record))]);
        }
        Ok(record)
    }

    pub async fn get_record(
        &self,
        collection: &CollectionName,
        id: &RecordKey,
    ) -> Result<Json, StoreError> {
        let sql = format!(
            "RETURN record::exists(type::record('{COLLECTIONS_TABLE}', $tb));
             SELECT * FROM type::record($tb, $id);"
        );
        let mut response = self
            .db
            .query(sql)
            .bind(("tb", collection.to_string()))
            .bind(("id", id.to_string()))
            .await?;
        // Read the check first: the second statement fails on a table that
        // does not exist.
        let exists: Option<bool> = response.take(0)?;
        if exists != Some(true) {
            return Err(StoreError::NoCollection(collection.clone()));
        }
        let rows: Vec<Value> = response.take(1)?;
        rows.into_iter()
            .next()
            .map(|row| record_json(row).2)
            .ok_or_else(|| StoreError::NoRecord {
                collection: collection.clone(),
                key: id.clone(),
            })
    }

    /// One page of a collection's records, those matching `filter` if given
    /// (its `$auth` parameters already bound).
    pub async fn list_records(
        &self,
        collection: &CollectionName,
        filter: Option<&Expr>,
        sort: &SortOrder,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Json>, StoreError> {
        let order = sort.order_by();
        let mut response = self
            .select_where(
                collection,
                filter,
                |condition| {
                    format!("SELECT * FROM type::table($tb) WHERE {condition} ORDER BY {order} LIMIT $limit START $start")
                },
                |query| {
                    query
                        .bind(("limit", i64::from(limit)))
                        .bind(("start", offset.min(i64::MAX as u64) as i64))
                },
            )
            .await?;
        let rows: Vec<Value> = response.take(1)?;
        Ok(rows.into_iter().map(|row| record_json(row).2).collect())
    }
}

/// Where a snapshot's read of a collection has got to: after the record
/// with this id, in id order (`None`: at the start). Ids are compared as
/// the database stores them, so keys of any type page exactly.
#[derive(Debug, Clone, Default)]
pub struct PageCursor(Option<Value>);

impl Store {
    /// The next `limit` records of a collection in id order after `after`,
    /// those matching `filter` (its `$auth` parameters already bound), and
    /// the cursor after them. Pages by id stay exact while other writes
    /// run: a record is in the page that covers its id, as it is when that
    /// page is read.
    pub(crate) async fn records_page(
        &self,
        collection: &CollectionName,
        filter: Option<&Expr>,
        after: &PageCursor,
        limit: u32,
    ) -> Result<(Vec<Json>, PageCursor), StoreError> {
        let from = if after.0.is_some() {
            "id > $after AND "
        } else {
            ""
        };
        let mut response = self
            .select_where(
                collection,
                filter,
                |condition| {
                    format!("SELECT * FROM type::table($tb) WHERE {from}({condition}) ORDER BY id ASC LIMIT $limit")
                },
                |query| {
                    let query = query.bind(("limit", i64::from(limit)));
                    match &after.0 {
                        Some(after) => query.bind(("after", after.clone())),
                        None => query,
                    }
                },
            )
            .await?;
        let rows: Vec<Value> = response.take(1)?;
        let last = rows.last().and_then(|row| match row {
            Value::Object(object) => object.get("id").cloned(),
            _ => None,
        });
        let next = PageCursor(last.or_else(|| after.0.clone()));
        let records = rows.into_iter().map(|row| record_json(row).2).collect();
        Ok((records, next))
    }

    /// Runs one read of a collection's records that match `filter`:
    /// `statement` gets the filter's SurrealQL condition, `bind` adds its
    /// own parameters. The statement's rows are result 1 of the response;
    /// a missing collection is `NoCollection` (checked first, since the
    /// statement fails on a table that does not exist).
    async fn select_where(
        &self,
        collection: &CollectionName,
        filter: Option<&Expr>,
        statement: impl FnOnce(&str) -> String,
        bind: impl FnOnce(
            surrealdb::method::Query<'_, surrealdb::engine::any::Any>,
        ) -> surrealdb::method::Query<'_, surrealdb::engine::any::Any>,
    ) -> Result<surrealdb::IndexedResults, StoreError> {
        let (condition, params) = match filter {
            Some(filter) => filter.to_surrealql(),
            None => ("true".to_owned(), Vec::new()),
        };
        let sql = format!(
            "RETURN record::exists(type::record('{COLLECTIONS_TABLE}', $tb));
             {};",
            statement(&condition)
        );
        // The filter's parameters are named `f0`, `f1`, …: no clash.
        let mut query = bind(self.db.query(sql).bind(("tb", collection.to_string())));
        for (name, value) in params {
            query = query.bind((name, value));
        }
        let mut response = query.await?;
        let exists: Option<bool> = response.take(0)?;
        if exists != Some(true) {
            return Err(StoreError::NoCollection(collection.clone()));
        }
        Ok(response)
    }

    /// How many records of a collection match `filter`.
    pub(crate) async fn count_records(
        &self,
        collection: &CollectionName,
        filter: Option<&Expr>,
    ) -> Result<u64, StoreError> {
        let mut response = self
            .select_where(
                collection,
                filter,
                |condition| {
                    format!(
                        "SELECT VALUE count() FROM type::table($tb) WHERE {condition} GROUP ALL"
                    )
                },
                |query| query,
            )
            .await?;
        let counts: Vec<i64> = response.take(1)?;
        Ok(counts.first().copied().unwrap_or(0).max(0) as u64)
    }
}

/// Strings longer than this are written without a string diff (see
/// [`Store::write_record`]): SurrealDB's diff of two strings costs up to
/// length squared, about 5 ms at this length and seconds at 30,000.
const LONG_STRING_BYTES: usize = 1024;

/// `data` with `null` at every field a merge would set to a long string (or
/// to an array holding one anywhere), and nothing else; `None` if there is
/// no such field. Nested objects keep their nesting, since a merge into an
/// object keeps the fields it does not name.
fn long_strings_cleared(data: &Map<String, Json>) -> Option<Map<String, Json>> {
    fn holds_long_string(value: &Json) -> bool {
        match value {
            Json::String(text) => text.len() > LONG_STRING_BYTES,
            Json::Array(items) => items.iter().any(holds_long_string),
            Json::Object(fields) => fields.values().any(holds_long_string),
            _ => false,
        }
    }
    let cleared: Map<String, Json> = data
        .iter()
        .filter_map(|(key, value)| {
            let value = match value {
                Json::Object(fields) if !fields.is_empty() => {
                    Json::Object(long_strings_cleared(fields)?)
                }
                value if holds_long_string(value) => Json::Null,
                _ => return None,
            };
            Some((key.clone(), value))
        })
        .collect();
    (!cleared.is_empty()).then_some(cleared)
}

/// The text of a record id key: the string itself, or its SurrealQL form.
fn key_text(key: &RecordIdKey) -> String {
    match key {
        RecordIdKey::String(text) => text.clone(),
        RecordIdKey::Number(number) => number.to_string(),
        other => Value::RecordId(surrealdb::types::RecordId {
            table: "_".into(),
            key: other.clone(),
        })
        .into_json_value()
        .as_str()
        .map(|text| text.trim_start_matches("_:").to_owned())
        .unwrap_or_default(),
    }
}

/// Converts a stored record to JSON with a bare `id`; also returns its table
/// and key.
/// The index of the first key that an earlier one repeats.
fn first_repeated(keys: &[RecordKey]) -> Option<usize> {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    keys.iter().position(|key| !seen.insert(key.as_str()))
}

pub(super) fn record_json(value: Value) -> (String, String, Json) {
    let Value::Object(object) = value else {
        return (String::new(), String::new(), value.into_json_value());
    };
    let mut table = String::new();
    let mut key = String::new();
    let mut json = Map::new();
    for (field, value) in object.into_inner() {
        match (field.as_str(), value) {
            ("id", Value::RecordId(id)) => {
                table = id.table.to_string();
                key = key_text(&id.key);
                json.insert(field, Json::String(key.clone()));
            }
            (_, value) => {
                json.insert(field, value.into_json_value());
            }
        }
    }
    (table, key, Json::Object(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_found_where_a_merge_puts_them() {
        let long = "x".repeat(LONG_STRING_BYTES + 1);
        let data = serde_json::json!({
            "short": "s", "n": 1, "long": long,
            "list": ["a", long], "plain": ["a"],
            "nested": {"deep": {"long": long, "short": "s"}, "other": 2},
            "flat": {"short": "s"},
        });
        assert_eq!(
            long_strings_cleared(data.as_object().unwrap()).map(Json::Object),
            Some(serde_json::json!({
                "long": null, "list": null, "nested": {"deep": {"long": null}},
            }))
        );
        let short = serde_json::json!({"a": "s", "b": {"c": [1, "d"]}});
        assert_eq!(long_strings_cleared(short.as_object().unwrap()), None);
    }

    #[test]
    fn a_sort_orders_by_its_field_then_by_id_in_one_direction() {
        let order = |text: &str| crate::sort::parse_sort(text).unwrap().order_by();
        assert_eq!(order("-title"), "`title` DESC, id DESC");
        assert_eq!(order("author.name"), "`author`.`name` ASC, id ASC");
        assert_eq!(order("-id"), "id DESC");
    }
}
