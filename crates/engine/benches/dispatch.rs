//! Hub dispatch: publishing one event among 100,000 subscribers. Run with
//! `cargo bench --bench dispatch`.
//!
//! `indexed`: every subscriber filters on `room = N` (distinct rooms), and 10
//! of them match the event: the equality index makes the cost depend on the
//! 10, not on the 100,000. `unindexed` is the same crowd with `room >= N`
//! filters, which the index cannot serve: every group is evaluated.
//!
//! `dispatch_100k_users_rule_10_match`: 100,000 users, each with a read
//! rule bound to its own claims (as collection streams fold it into their
//! filter); 10 streams of one user match.
//!
//! `leave_100k_subscribers`: all 100,000 leaving, each from a group of its
//! own; `join_100k_subscribers`: all 100,000 subscribing.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use livehub_engine::clock::Stamp;
use livehub_engine::event::{Event, EventId, EventKind, Source};
use livehub_engine::filter::Filter;
use livehub_engine::hub::{Hub, Interest, QueueLimit, Scope, Subscription};
use livehub_engine::identity::Identity;
use livehub_engine::rules::Access;
use serde_json::json;

const SUBSCRIBERS: usize = 100_000;
/// The filter of the n-th non-matching subscriber.
type OtherFilter = fn(usize) -> String;
const MATCHING: usize = 10;

/// The crowds that join and leave: each subscriber's filter.
const CROWDS: [(&str, OtherFilter); 3] = [
    ("indexed", |n| format!("room = {}", n + 1000)),
    ("unindexed", |n| format!("room >= {}", n + 1000)),
    // Every group is also filed under `public = true`.
    ("indexed_shared_value", |n| {
        format!("room = {} || public = true", n + 1000)
    }),
];

fn subscribe(hub: &Hub, filter: &str) -> Subscription {
    let interest = Interest::topic(
        Scope::Collection(Arc::from("messages")),
        Some(Arc::new(Filter::parse(filter).unwrap())),
    );
    hub.subscribe(
        interest,
        QueueLimit {
            events: 64,
            bytes: usize::MAX,
        },
    )
    .0
}

/// A hub with `SUBSCRIBERS` subscribers, `MATCHING` of whom match room 7.
fn crowd(others: impl Fn(usize) -> String) -> (Hub, Vec<Subscription>, Vec<Subscription>) {
    let hub = Hub::new(Stamp(0), Default::default());
    let matching = (0..MATCHING)
        .map(|n| {
            subscribe(
                &hub,
                if n % 2 == 0 {
                    "room = 7"
                } else {
                    "room = 7 && kind = chat"
                },
            )
        })
        .collect();
    let rest = (0..SUBSCRIBERS - MATCHING)
        .map(|n| subscribe(&hub, &others(n)))
        .collect();
    (hub, matching, rest)
}

/// The creation of record `m1` of `messages`, with `data`.
fn event(data: serde_json::Value) -> Arc<Event> {
    Arc::new(Event::new(
        EventId {
            stamp: Stamp(1 << 40),
            index: 0,
        },
        EventKind::RecordCreated,
        Source::Collection(Arc::from("messages")),
        Some("m1".into()),
        data,
        None,
    ))
}

/// Publishes `events` and takes them off the `matching` subscribers' queues
/// (so the queues never fill), once per iteration.
fn publish_and_drain(
    b: &mut criterion::Bencher,
    hub: &Hub,
    events: &[Arc<Event>],
    matching: &mut [Subscription],
) {
    b.iter(|| {
        hub.publish(black_box(events), Stamp(1));
        for subscription in matching.iter_mut() {
            assert!(subscription.try_recv().is_some());
        }
    })
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch_100k_subscribers_10_match");
    let cases: [(&str, OtherFilter); 2] = [
        ("indexed", |n| format!("room = {}", n + 1000)),
        ("unindexed", |n| format!("room >= {}", n + 1000)),
    ];
    for (name, others) in cases {
        let (hub, mut matching, _rest) = crowd(others);
        let events = [event(
            json!({"id": "m1", "room": 7, "kind": "chat", "text": "hello"}),
        )];
        group.bench_function(name, |b| publish_and_drain(b, &hub, &events, &mut matching));
    }
    group.finish();
}

/// A subscriber per user, each with a collection's read rule bound to its
/// claims and folded into its filter, as collection streams do: 10 streams
/// of user `u7` match an event of a record `u7` owns.
fn per_user_rules(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch_100k_users_rule_10_match");
    let subscribe_as = |hub: &Hub, rule: &str, user: usize| {
        let identity = Identity {
            user_id: format!("u{user}"),
            name: None,
            admin: false,
            claims: json!({ "sub": format!("u{user}") }),
            expires_at: None,
            issued_at: None,
        };
        let filter = match Access::of(Some(rule), &Some(Arc::new(identity))) {
            Access::Matching(filter) => filter,
            other => panic!("{rule} binds to {other:?}"),
        };
        let interest = Interest::topic(Scope::Collection(Arc::from("messages")), Some(filter));
        hub.subscribe(
            interest,
            QueueLimit {
                events: 64,
                bytes: usize::MAX,
            },
        )
        .0
    };
    for (name, rule) in [
        ("owner", "owner = $auth.sub"),
        ("owner_or_public", "owner = $auth.sub || public = true"),
    ] {
        let hub = Hub::new(Stamp(0), Default::default());
        let mut matching: Vec<_> = (0..MATCHING).map(|_| subscribe_as(&hub, rule, 7)).collect();
        let _rest: Vec<_> = (0..SUBSCRIBERS - MATCHING)
            .map(|n| subscribe_as(&hub, rule, n + 1000))
            .collect();
        let events = [event(
            json!({"id": "m1", "owner": "u7", "public": false, "text": "hello"}),
        )];
        group.bench_function(name, |b| publish_and_drain(b, &hub, &events, &mut matching));
    }
    group.finish();
}

/// Every one of 100,000 subscribers leaving (a node's streams all closing
/// at once: a network blip, a deploy), each in a group of its own. The hub
/// holds its lock for each leave, so this is time dispatch waits.
fn leave(c: &mut Criterion) {
    let mut group = c.benchmark_group("leave_100k_subscribers");
    group.sample_size(10);
    for (name, others) in CROWDS {
        group.bench_function(name, |b| {
            b.iter_batched(
                || crowd(others),
                |(hub, matching, rest)| {
                    drop(matching);
                    drop(rest);
                    hub
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// 100,000 subscribers joining one hub, each into a group of its own, their
/// filters parsed beforehand: the time the index's inserts add to the
/// subscribe path (under the hub's lock).
fn join(c: &mut Criterion) {
    let mut group = c.benchmark_group("join_100k_subscribers");
    group.sample_size(10);
    let limit = QueueLimit {
        events: 64,
        bytes: usize::MAX,
    };
    for (name, others) in CROWDS {
        let interests: Vec<Interest> = (0..SUBSCRIBERS)
            .map(|n| {
                Interest::topic(
                    Scope::Collection(Arc::from("messages")),
                    Some(Arc::new(Filter::parse(&others(n)).unwrap())),
                )
            })
            .collect();
        group.bench_function(name, |b| {
            b.iter_batched(
                || (Hub::new(Stamp(0), Default::default()), interests.clone()),
                |(hub, interests)| {
                    let joined: Vec<Subscription> = interests
                        .into_iter()
                        .map(|interest| hub.subscribe(interest, limit).0)
                        .collect();
                    // Dropped (leaving) after the measurement.
                    (hub, joined)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, dispatch, per_user_rules, leave, join);
criterion_main!(benches);
