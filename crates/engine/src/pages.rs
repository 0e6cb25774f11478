//! Change pages: the events a stream would carry, read as pages with a
//! cursor, for services that capture changes and for clients behind
//! proxies that break long streams.
//!
//! A page is the replay a stream resuming from the cursor would send,
//! stopped after `limit` events. It subscribes to the hub first, like a
//! stream, and reads the changefeed only below the subscription's start:
//! everything there is final, so a page that fills up before that edge is
//! history and never changes (the route lets caches keep it). A page that
//! reaches the edge empty may wait for the next live events that match.
//!
//! A page that waited is judged again when it answers, as a fresh request
//! would be: a token that expired or was signed out meanwhile gets a 401,
//! and a read rule that changed means the page is read anew under the new
//! rule (which may refuse it). A page never carries what its caller could
//! no longer read when it answered.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::Engine;
use crate::Error;
use crate::clock::{Stamp, unix_now};
use crate::decide::WatchedRules;
use crate::decide::{ends_page, judge, replayable};
use crate::event::{EventId, frame_data};
use crate::frame::frame_for;
use crate::hub::{Interest, Subscription};
use crate::identity::{AuthError, Caller};
use crate::replay::{ChangeReader, Replay};
use crate::shape::Shape;

/// Where a page starts and how much it may hold.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    /// The page holds events after this one.
    pub since: EventId,
    /// At most this many events.
    pub limit: usize,
    /// How long a page that would be empty at the edge waits for events.
    pub wait: Duration,
}

/// One page of events.
pub struct Page {
    /// Each event's JSON, as a stream's `data:` carries it.
    pub events: Vec<Bytes>,
    /// The cursor to ask for next: the page's last event, or the edge it
    /// read up to.
    pub next: EventId,
    /// Whether the page reached the feed's edge. One that did not holds
    /// exactly `limit` events, all final: asked again, it is the same.
    pub caught_up: bool,
}

/// What a page is read for: the caller, and the interest its subscription
/// was made with (the caller's read rules folded in).
pub struct Reader<'a> {
    pub state: &'a Engine,
    pub caller: &'a Caller,
    pub interest: &'a Interest,
    /// The read rules the subscription was bound with.
    pub watched: &'a WatchedRules,
    pub shape: &'a Shape,
}

/// What reading a page gave.
pub enum Read {
    Page(Page),
    /// A read rule the page was bound with changed while it waited: it
    /// must be read again, as a new request, under the rules of now.
    Rebind,
}

impl Reader<'_> {
    /// Reads the page `request` asks for. The subscription must have been
    /// made before (its start is the edge of history).
    pub async fn read(
        &self,
        subscription: &mut Subscription,
        request: PageRequest,
    ) -> Result<Read, Error> {
        self.state
            .store
            .replay_check(request.since.stamp)
            .map_err(|reason| Error::CursorUnavailable {
                reason: reason.as_str(),
                message: format!(
                    "the events after `{}` are not available ({}): start again from `since=earliest` or `since=now`, after reloading the current state",
                    request.since,
                    reason.as_str()
                ),
            })?;
        let mut page = self.history(subscription.start, request).await?;
        if page.events.is_empty() && !request.wait.is_zero() {
            self.wait_for_live(subscription, request, &mut page).await;
            return self.judge_again(page);
        }
        Ok(Read::Page(page))
    }

    /// A page that waited, judged as a fresh request would be judged now.
    fn judge_again(&self, page: Page) -> Result<Read, Error> {
        if let Some(identity) = self.caller {
            if identity.expires_at.is_some_and(|exp| exp <= unix_now()) {
                return Err(AuthError::Expired.into());
            }
            if self
                .state
                .hub
                .revocations()
                .is_revoked(&identity.user_id, identity.issued_at)
            {
                return Err(Error::SignInRequired(
                    "the token was revoked while the page waited: an admin signed this user out; sign in again".into(),
                ));
            }
        }
        let rules = self.state.hub.rules();
        let changed = self.watched.iter().any(|(name, bound)| {
            rules
                .get(name)
                .is_none_or(|meta| meta.rules.read != bound.read)
        });
        Ok(if changed {
            Read::Rebind
        } else {
            Read::Page(page)
        })
    }

    /// The events after `request.since` below `edge`, up to the limit.
    async fn history(&self, edge: Stamp, request: PageRequest) -> Result<Page, Error> {
        let replay = Replay {
            state: self.state,
            caller: self.caller,
            interest: self.interest,
        };
        let mut reader = ChangeReader::default();
        let mut events = Vec::new();
        let mut since = Some(request.since.stamp);
        while let Some(from) = since.filter(|from| *from < edge) {
            let replayed = replay.read(&mut reader, from, edge, request.since).await?;
            for (event, delivery) in &replayed.events {
                let frame = frame_for(self.shape, self.interest, event, *delivery, &replayed.rules);
                events.push(frame_data(&frame));
                if events.len() >= request.limit {
                    return Ok(Page {
                        events,
                        next: event.id,
                        caught_up: false,
                    });
                }
            }
            since = replayed.next;
        }
        Ok(Page {
            events,
            // A cursor ahead of this node's edge (from a node that is
            // further on) stays where it is.
            next: request.since.max(EventId::before_stamp(edge)),
            caught_up: true,
        })
    }

    /// Waits up to `request.wait` for live events, and puts those queued
    /// when the first arrives into `page`. An event that would end a stream
    /// (a sign-out of the caller, a change to a read rule it was bound
    /// with, its collection deleted) ends the page, and so does the token's
    /// expiry: the page is then judged again (see [`Reader::judge_again`]).
    async fn wait_for_live(
        &self,
        subscription: &mut Subscription,
        request: PageRequest,
        page: &mut Page,
    ) {
        let mut deadline = Instant::now() + request.wait;
        if let Some(exp) = self
            .caller
            .as_ref()
            .and_then(|identity| identity.expires_at)
        {
            let left = Duration::from_secs(exp.saturating_sub(unix_now()));
            deadline = deadline.min(Instant::now() + left);
        }
        let state = self.state;
        loop {
            let queued = tokio::select! {
                biased;
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                queued = subscription.recv() => queued,
            };
            // `None`: the queue overflowed; the client asks again.
            let Some(first) = queued else { return };
            let rules = state.hub.rules();
            let mut next = Some(first);
            while let Some((event, delivery)) = next {
                let verdict = judge(self.caller, self.watched, &event);
                if verdict.send
                    && event.id > request.since
                    && replayable(self.caller, &rules, &event)
                {
                    let frame = frame_for(self.shape, self.interest, &event, delivery, &rules);
                    page.events.push(frame_data(&frame));
                    page.next = event.id;
                }
                if verdict.end {
                    return;
                }
                if page.events.len() >= request.limit || ends_page(event.kind) {
                    break;
                }
                next = subscription.try_recv();
            }
            if !page.events.is_empty() {
                return;
            }
        }
    }
}
