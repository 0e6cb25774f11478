//! Subscriptions added to and removed from an open stream.
//!
//! # The seam
//!
//! A change subscribes the stream anew, with its new topics, at the hub's
//! cursor `S`. The hub queues events under the same lock that moves its
//! cursor, so by then every event below `S` is in the old subscription's
//! queue: the stream sends those first, then the new subscription's, which
//! begin at `S`. The topics it keeps lose nothing and repeat nothing; an
//! added collection begins at `S`, after its snapshot if it asked for one
//! (read after subscribing, as a new stream's is).

use bytes::Bytes;
use serde_json::{Value as Json, json};

use super::subscribe::taken;
use std::sync::Arc;

use super::{
    CollectionSub, Phase, Plan, Session, Snapshot, Subscribed, check_snapshot_size, snapshot_parts,
    subscribe, view_name,
};
use crate::Error;
use crate::collection::CollectionName;
use crate::connections::{Change, NewSubscription, Requester, SubscriptionId};
use crate::event::{Event, sse_frame};
use crate::filter::Filter;
use crate::rules::Access;
use crate::session::First;
use crate::shape::Shape;

impl Session {
    /// Applies a change its owner asked of this node: the answer for the
    /// request, and the frame that marks the change on the stream.
    pub(super) async fn apply(&mut self, change: Change) -> Result<(Json, Bytes), Error> {
        match change {
            Change::Add(new) => self.add(new).await,
            Change::Remove { id } => self.remove(&id).await,
        }
    }

    /// Applies a change asked of another node, if `requester` owns this
    /// stream; its outcome is told on the stream.
    pub(super) async fn apply_forwarded(
        &mut self,
        change: Change,
        requester: &Requester,
    ) -> Option<Bytes> {
        if !self.registration.owner.admits(requester) {
            tracing::debug!("a forwarded change by someone else was ignored");
            return None;
        }
        let asked = match &change {
            Change::Add(new) => new.id().ok().map(|id| id.to_string()),
            Change::Remove { id } => Some(id.clone()),
        };
        match self.apply(change).await {
            Ok((_, frame)) => Some(frame),
            Err(error) => {
                let body = json!({
                    "id": asked,
                    "error": {"code": error.code(), "message": error.to_string()},
                });
                Some(sse_frame(None, "subscription.refused", &body))
            }
        }
    }

    /// The change a `subscription.change` event carries, if it is for this
    /// stream.
    pub(super) fn forwarded_to_me(&self, event: &Event) -> Option<(Change, Requester)> {
        let data = &event.data;
        if data.get("connection")?.as_str()? != self.registration.id {
            return None;
        }
        let change = serde_json::from_value(data.get("change")?.clone()).ok()?;
        let requester = serde_json::from_value(data.get("requester")?.clone()).ok()?;
        Some((change, requester))
    }

    async fn add(&mut self, new: NewSubscription) -> Result<(Json, Bytes), Error> {
        let id = new.id()?;
        let mut plan = self.plan.clone();
        let mut presence = self.interest.presence.clone();
        let collection_only = |what: &str| {
            Error::invalid(
                "invalid_body",
                format!("`{what}` applies to a collection's subscription"),
            )
        };
        if new.collection.is_none() {
            for (given, what) in [
                (new.query.is_some(), "query"),
                (new.fields.is_some(), "fields"),
                (new.diff.is_some(), "diff"),
                (new.snapshot.is_some(), "snapshot"),
                (new.snapshot_limit.is_some(), "snapshot_limit"),
                (new.snapshot_sort.is_some(), "snapshot_sort"),
            ] {
                if given {
                    return Err(collection_only(what));
                }
            }
        }
        if new.view.is_some() && new.collection.is_none() {
            return Err(collection_only("view"));
        }
        let mut added = None;
        if let Some(name) = &new.collection {
            let name = CollectionName::new(name)?;
            let view = new.view.as_deref().map(view_name).transpose()?;
            let filter = match new.query.as_deref() {
                Some(text) if !text.trim().is_empty() => Some(Filter::parse(text)?.expr().clone()),
                _ => None,
            };
            let diff = new.diff.unwrap_or(false);
            let shape = Shape::parse(new.fields.as_deref(), diff)?;
            let first = First::parse(new.snapshot_limit, new.snapshot_sort.as_deref(), diff)?;
            let wants_snapshot = new.snapshot.unwrap_or(false);
            if first.is_some() && !wants_snapshot {
                return Err(Error::invalid(
                    "invalid_body",
                    "`snapshot_limit` and `snapshot_sort` need `snapshot: true`",
                ));
            }
            let sub = CollectionSub { name, view, filter };
            let key = sub.key();
            plan.add_collection(sub)?;
            added = Some((key, shape, wants_snapshot.then_some(first)));
        } else if let Some(channel) = &new.channel {
            plan.add_channel(channel)?;
        } else {
            if presence.is_some() {
                return Err(taken(&id));
            }
            presence = Some(self.state.presence_rule.access(&self.caller)?);
        }
        let (old_plan, old_presence) = (self.plan.clone(), self.interest.presence.clone());
        self.resubscribe(plan, presence).await?;
        let mut snapshot = false;
        if let Some((key, shape, first)) = added {
            if let Some(first) = first {
                let parts = snapshot_parts(&self.views, |other| other == key);
                if first.is_none()
                    && let Err(too_large) = check_snapshot_size(&self.state, &parts).await
                {
                    // Refused whole: the stream goes back to what it had.
                    self.resubscribe(old_plan, old_presence).await?;
                    return Err(too_large);
                }
                self.snapshot = Some(Snapshot::new(parts, first));
                self.phase = Phase::Snapshot;
                snapshot = true;
            }
            self.shapes.own.insert(Arc::from(key), shape);
        }
        let body = json!({"id": id, "snapshot": snapshot});
        let frame = sse_frame(None, "subscription.added", &body);
        Ok((body, frame))
    }

    async fn remove(&mut self, id: &str) -> Result<(Json, Bytes), Error> {
        let mut plan = self.plan.clone();
        let mut presence = self.interest.presence.clone();
        let removed = match SubscriptionId::parse(id) {
            Some(SubscriptionId::Presence) => presence.take().is_some(),
            Some(topic) => plan.remove(&topic),
            None => false,
        };
        if !removed {
            return Err(Error::NotFound(format!(
                "this stream has no subscription `{id}`"
            )));
        }
        if plan.is_empty() {
            return Err(Error::Conflict(
                "a stream keeps at least one collection or channel: close it instead".into(),
            ));
        }
        if let Some(SubscriptionId::Collection(key)) = SubscriptionId::parse(id) {
            self.shapes.own.remove(key.as_str());
        }
        self.resubscribe(plan, presence).await?;
        let body = json!({"id": id});
        Ok((body.clone(), sse_frame(None, "subscription.removed", &body)))
    }

    /// Subscribes anew with `plan` and `presence`, keeping the events the
    /// old subscription holds from before the new one's start (see the
    /// seam above).
    async fn resubscribe(&mut self, plan: Plan, presence: Option<Access>) -> Result<(), Error> {
        let Subscribed {
            interest,
            subscription,
            watched,
            views,
        } = subscribe(&self.state, &self.caller, &plan, presence).await?;
        let start = subscription.start;
        let mut old = std::mem::replace(&mut self.subscription, subscription);
        while let Some(queued) = old.try_recv() {
            if queued.0.id.stamp >= start {
                break;
            }
            self.pending.push_back(queued);
        }
        self.interest = interest;
        self.views = views;
        self.watched_rules = watched;
        self.plan = plan;
        Ok(())
    }
}
