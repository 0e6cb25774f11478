//! Stream tickets: single use across nodes, because they live in the
//! database and are taken out with `DELETE ... RETURN BEFORE`.

use serde_json::Value as Json;
use surrealdb::types::Value;

use super::records::record_json;
use super::schema::TICKETS_TABLE;
use super::{Store, StoreError};

impl Store {
    /// Stores a single-use ticket for `claims`, valid until `expires` (Unix
    /// seconds). In the database, so that any node sharing it can redeem the
    /// ticket. Expired tickets are cleared by [`Store::presence_maintain`],
    /// not here: a request must not cost a scan of every ticket.
    pub async fn create_ticket(
        &self,
        ticket: &str,
        claims: &Json,
        expires: u64,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "CREATE type::record('{TICKETS_TABLE}', $ticket) CONTENT {{ claims: $claims, expires: $expires }};"
        );
        self.db
            .query(sql)
            .bind(("ticket", ticket.to_owned()))
            .bind(("claims", claims.clone()))
            .bind(("expires", expires as i64))
            .await?
            .check()?;
        Ok(())
    }

    /// Takes a ticket out (so it works once) and returns its claims and
    /// expiry, if it existed.
    pub async fn redeem_ticket(&self, ticket: &str) -> Result<Option<(Json, u64)>, StoreError> {
        let sql = format!("DELETE type::record('{TICKETS_TABLE}', $ticket) RETURN BEFORE");
        let rows: Vec<Value> = self
            .db
            .query(sql)
            .bind(("ticket", ticket.to_owned()))
            .await?
            .check()?
            .take(0)?;
        Ok(rows.into_iter().next().and_then(|row| {
            let (_, _, row) = record_json(row);
            let expires = row.get("expires")?.as_u64()?;
            Some((row.get("claims")?.clone(), expires))
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::Database;
    use crate::store::WriteTracker;

    /// Expired tickets used to be deleted by every ticket request, with a
    /// scan of the whole table. They are pruned by the maintenance pass now,
    /// through an index on `expires`.
    #[tokio::test]
    async fn expired_tickets_are_pruned_through_an_index() {
        let store = Store::connect(&Database::in_memory(), WriteTracker::new())
            .await
            .unwrap();
        let claims = serde_json::json!({"sub": "ann"});
        store.create_ticket("old", &claims, 1).await.unwrap();
        store
            .create_ticket("new", &claims, u64::MAX >> 12)
            .await
            .unwrap();
        let plan: Vec<Value> = store
            .db
            .query(format!(
                "SELECT * FROM {TICKETS_TABLE} WHERE expires < $now EXPLAIN"
            ))
            .bind(("now", 1_000_i64))
            .await
            .unwrap()
            .take(0)
            .unwrap();
        let plan = serde_json::to_string(&Value::Array(plan.into())).unwrap();
        assert!(plan.contains("IndexScan"), "{plan}");
        // Creating a ticket left the expired one; maintenance removes it.
        let count = |store: &Store| {
            let db = store.db.clone();
            async move {
                let keys: Vec<Value> = db
                    .query(format!("SELECT VALUE id FROM {TICKETS_TABLE}"))
                    .await
                    .unwrap()
                    .take(0)
                    .unwrap();
                keys.len()
            }
        };
        assert_eq!(count(&store).await, 2);
        store
            .presence_maintain("node", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(count(&store).await, 1);
        assert!(store.redeem_ticket("new").await.unwrap().is_some());
    }
}
