//! Collections: their metadata rows and their tables.

use serde_json::{Map, Value as Json};
use surrealdb::types::Value;

use super::records::record_json;
use super::schema::{COLLECTIONS_TABLE, NO_COLLECTION, is_no_collection};
use super::{Store, StoreError, Written};
use crate::clock::formatted_now;
use crate::collection::{CollectionMeta, CollectionName};
use crate::rules::Rules;

impl Store {
    /// Creates a collection: its metadata record and its table.
    pub async fn create_collection(
        &self,
        name: &CollectionName,
        description: Option<&str>,
        rules: &Rules,
    ) -> Result<CollectionMeta, StoreError> {
        let now = formatted_now();
        let meta = CollectionMeta {
            created: Some(now.clone()),
            description: description.map(str::to_owned),
            name: name.to_string(),
            rules: rules.clone(),
            updated: Some(now),
        };
        let changefeed = self.changefeed_clause();
        // A `CollectionName` is an identifier, so splicing it (escaped) is safe.
        let sql = format!(
            "BEGIN;
             CREATE type::record('{COLLECTIONS_TABLE}', $name) CONTENT $meta RETURN AFTER;
             DEFINE TABLE IF NOT EXISTS `{name}` SCHEMALESS;
             ALTER TABLE `{name}` {changefeed};
             COMMIT;"
        );
        let mut ran = self
            .write(sql, serde_json::json!({ "name": name, "meta": meta }))
            .await?;
        if let Some(error) = ran.error {
            if error.is_already_exists() {
                return Err(StoreError::CollectionExists(name.clone()));
            }
            return Err(error.into());
        }
        // Statement 0 is BEGIN.
        let created: Vec<Value> = ran.response.take(1)?;
        ran.guard.acknowledge(Written::Collection(name.shared()));
        created
            .into_iter()
            .next()
            .and_then(decode_meta)
            .ok_or_else(|| StoreError::Unexpected("CREATE returned no collection".into()))
    }

    pub async fn list_collections(&self) -> Result<Vec<CollectionMeta>, StoreError> {
        let sql = format!("SELECT * FROM {COLLECTIONS_TABLE} ORDER BY id");
        let rows: Vec<Value> = self.db.query(sql).await?.check()?.take(0)?;
        Ok(rows.into_iter().filter_map(decode_meta).collect())
    }

    pub async fn get_collection(
        &self,
        name: &CollectionName,
    ) -> Result<Option<CollectionMeta>, StoreError> {
        let sql = format!("SELECT * FROM type::record('{COLLECTIONS_TABLE}', $name)");
        let rows: Vec<Value> = self
            .db
            .query(sql)
            .bind(("name", name.to_string()))
            .await?
            .check()?
            .take(0)?;
        Ok(rows.into_iter().next().and_then(decode_meta))
    }

    /// Changes a collection's description and rules (those given); `None`
    /// if it does not exist.
    pub async fn update_collection(
        &self,
        name: &CollectionName,
        description: Option<Option<String>>,
        rules: Option<&Rules>,
    ) -> Result<Option<CollectionMeta>, StoreError> {
        let now = formatted_now();
        let mut patch = Map::new();
        patch.insert("updated".into(), Json::String(now));
        if let Some(rules) = rules {
            patch.insert(
                "rules".into(),
                serde_json::to_value(rules).unwrap_or_default(),
            );
        }
        if let Some(description) = description {
            patch.insert(
                "description".into(),
                description.map_or(Json::Null, Json::String),
            );
        }
        let sql =
            format!("UPDATE type::record('{COLLECTIONS_TABLE}', $name) MERGE $patch RETURN AFTER");
        let mut ran = self
            .write(sql, serde_json::json!({ "name": name, "patch": patch }))
            .await?;
        if let Some(error) = ran.error {
            return Err(error.into());
        }
        let rows: Vec<Value> = ran.response.take(0)?;
        let updated = rows.into_iter().next().and_then(decode_meta);
        if updated.is_some() {
            ran.guard.acknowledge(Written::Collection(name.shared()));
        }
        Ok(updated)
    }

    /// Deletes a collection with all its records; `false` if it did not exist.
    pub async fn delete_collection(&self, name: &CollectionName) -> Result<bool, StoreError> {
        let sql = format!(
            "BEGIN;
             IF !record::exists(type::record('{COLLECTIONS_TABLE}', $name)) {{ THROW '{NO_COLLECTION}' }};
             DELETE type::record('{COLLECTIONS_TABLE}', $name);
             REMOVE TABLE IF EXISTS `{name}`;
             COMMIT;"
        );
        let ran = self.write(sql, serde_json::json!({ "name": name })).await?;
        match ran.error {
            Some(error) if is_no_collection(&error) => Ok(false),
            Some(error) => Err(error.into()),
            None => {
                ran.guard.acknowledge(Written::Collection(name.shared()));
                Ok(true)
            }
        }
    }
}

/// A stored metadata row, typed.
fn decode_meta(row: Value) -> Option<CollectionMeta> {
    let (_, key, json) = record_json(row);
    CollectionMeta::decode(&json, &key)
}
