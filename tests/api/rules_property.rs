//! The property of access rules on streams: for random read rules, callers
//! and writes, every stream (collection and global, live and replayed)
//! delivers exactly the events the rule allows its caller, no more and no
//! fewer. The expected events come from a model written here, independently
//! of the server's rule code: each rule is a text for the server and a Rust
//! closure for the model.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp, client_with_token};

/// A caller: its claims (`None`: anonymous), and whether it is an admin.
struct Caller {
    claims: Option<Value>,
}

impl Caller {
    fn admin(&self) -> bool {
        self.claims.as_ref().is_some_and(|c| c["role"] == "admin")
    }
    fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.as_ref().and_then(|c| c.get(name))
    }
}

fn callers() -> Vec<Caller> {
    vec![
        Caller { claims: None },
        Caller {
            claims: Some(json!({"sub": "ann", "level": 1})),
        },
        Caller {
            claims: Some(json!({"sub": "bob", "role": "editor", "level": 3})),
        },
        Caller {
            claims: Some(json!({"sub": "root", "role": "admin"})),
        },
    ]
}

/// A stored record, as the model holds it.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    owner: Option<&'static str>,
    public: bool,
    level: i64,
}

type Oracle = fn(&Record, &Caller) -> bool;

/// Read rules: the server's text (`None`: admins only) and the model's
/// meaning of it for non-admins.
const RULES: &[(Option<&str>, Oracle)] = &[
    (None, |_, _| false),
    (Some("true"), |_, _| true),
    (Some("$auth.sub != null"), |_, c| c.claim("sub").is_some()),
    (Some("owner = $auth.sub"), |r, c| {
        r.owner.is_some() && c.claim("sub").and_then(Value::as_str) == r.owner
    }),
    (Some("public = true"), |r, _| r.public),
    (Some("owner = $auth.sub || public = true"), |r, c| {
        r.public || (r.owner.is_some() && c.claim("sub").and_then(Value::as_str) == r.owner)
    }),
    (
        Some("$auth.role = editor || (public = true && $auth.sub != null)"),
        |r, c| {
            c.claim("role").and_then(Value::as_str) == Some("editor")
                || (r.public && c.claim("sub").is_some())
        },
    ),
    (Some("level <= $auth.level"), |r, c| {
        c.claim("level")
            .and_then(Value::as_i64)
            .is_some_and(|level| r.level <= level)
    }),
    (Some("NOT (public = true) && $auth.sub != null"), |r, c| {
        !r.public && c.claim("sub").is_some()
    }),
];

fn allows(rule: usize, record: &Record, caller: &Caller) -> bool {
    caller.admin() || (RULES[rule].1)(record, caller)
}

/// Whether the rule lets `caller` see no record at all, so that its stream
/// is refused: tried on every record the writes can make.
fn refused(rule: usize, caller: &Caller) -> bool {
    let mut every = Vec::new();
    for owner in [None, Some("ann"), Some("bob")] {
        for public in [false, true] {
            for level in 0..5 {
                every.push(Record {
                    owner,
                    public,
                    level,
                });
            }
        }
    }
    !every.iter().any(|record| allows(rule, record, caller))
}

/// A write, by the admin, on one of four record ids.
#[derive(Debug, Clone)]
enum Write {
    Put(usize, Record),
    Delete(usize),
}

fn arb_record() -> impl Strategy<Value = Record> {
    (
        prop::sample::select(vec![None, Some("ann"), Some("bob")]),
        any::<bool>(),
        0i64..5,
    )
        .prop_map(|(owner, public, level)| Record {
            owner,
            public,
            level,
        })
}

fn arb_write() -> impl Strategy<Value = Write> {
    prop_oneof![
        3 => (0usize..4, arb_record()).prop_map(|(id, record)| Write::Put(id, record)),
        1 => (0usize..4).prop_map(Write::Delete),
    ]
}

/// What a stream shows of a record event: `(id, type, left)`.
type Seen = (String, String, bool);

/// The events `rule` lets `caller` see for `writes`, by the model.
fn expected(rule: usize, caller: &Caller, writes: &[Write]) -> Vec<Seen> {
    let mut records: BTreeMap<usize, Record> = BTreeMap::new();
    let mut seen = Vec::new();
    for write in writes {
        match write {
            Write::Put(id, record) => {
                let before = records.insert(*id, record.clone());
                let after_visible = allows(rule, record, caller);
                let event = match before {
                    // Writing a record as it already is changes nothing:
                    // SurrealDB records no change, so there is no event.
                    Some(before) if before == *record => None,
                    None if after_visible => Some(("record.created", false)),
                    None => None,
                    Some(_) if after_visible => Some(("record.updated", false)),
                    Some(before) if allows(rule, &before, caller) => Some(("record.updated", true)),
                    Some(_) => None,
                };
                if let Some((kind, left)) = event {
                    seen.push((format!("r{id}"), kind.to_owned(), left));
                }
            }
            Write::Delete(id) => {
                if let Some(before) = records.remove(id)
                    && allows(rule, &before, caller)
                {
                    seen.push((format!("r{id}"), "record.deleted".to_owned(), false));
                }
            }
        }
    }
    seen
}

fn record_json(record: &Record) -> Value {
    json!({"owner": record.owner, "public": record.public, "level": record.level})
}

/// A read rule that means the same as `rule` but reads differently: setting
/// it ends the collection's streams without changing what they may see.
fn equivalent(rule: usize, round: usize) -> Value {
    let never = format!("__never{round}__");
    match RULES[rule].0 {
        None => json!(format!("$auth.{} = 1", never.trim_matches('_'))),
        Some("true") => json!(format!("id != \"{never}\"")),
        Some(text) => json!(format!("({text}) && id != \"{never}\"")),
    }
}

/// Reads the record events of `collection` until the stream ends, or until
/// the record event `until` (of any collection).
async fn collect(stream: &mut SseClient, collection: &str, until: Option<&str>) -> Vec<Seen> {
    let mut seen = Vec::new();
    while let Some(event) = stream.next().await {
        if !event.event.starts_with("record.") {
            continue;
        }
        let body: Value = serde_json::from_str(&event.data).unwrap();
        let record_id = body["record_id"].as_str().unwrap().to_owned();
        if until == Some(record_id.as_str()) {
            return seen;
        }
        if body["collection"] == collection {
            let left = body["left"] == true;
            if left {
                assert_eq!(
                    body["data"],
                    json!({"id": record_id}),
                    "no content when left"
                );
            }
            seen.push((record_id, event.event, left));
        }
    }
    assert!(until.is_none(), "the stream ended before `{until:?}`");
    seen
}

/// Opens a stream as `caller`; `None` if it was refused (and checks how).
async fn open(
    app: &TestApp,
    caller: &Caller,
    path: &str,
    resume: Option<&str>,
    refusal: bool,
) -> Option<(SseClient, String)> {
    let client = match &caller.claims {
        Some(claims) => client_with_token(&app.token(claims.clone())),
        None => app.anonymous.clone(),
    };
    let mut request = client.get(app.url(path));
    if let Some(id) = resume {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.unwrap();
    if refusal {
        let expected = if caller.claims.is_none() { 401 } else { 403 };
        assert_eq!(response.status(), expected, "{path} refused");
        return None;
    }
    assert_eq!(response.status(), 200, "{path} as {:?}", caller.claims);
    let mut stream = SseClient::new(response);
    let connected = stream.connected().await;
    Some((stream, connected.id))
}

async fn run_scenario(app: &TestApp, case: usize, rule: usize, writes: &[Write]) {
    let name = format!("c{case}");
    let response = app
        .post(
            "/api/v1/collections",
            &json!({"name": name, "rules": {"read": RULES[rule].0}}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let callers = callers();
    let mut streams = Vec::new();
    for caller in &callers {
        let own = open(
            app,
            caller,
            &format!("/api/v1/realtime/{name}"),
            None,
            refused(rule, caller),
        )
        .await;
        let global = open(app, caller, "/api/v1/realtime", None, false)
            .await
            .unwrap();
        streams.push((own, global));
    }

    for write in writes {
        let response = match write {
            Write::Put(id, record) => {
                let path = format!("/api/v1/collections/{name}/records/r{id}");
                let put = app.put(&path, &record_json(record)).await;
                if put.status() == 404 {
                    let mut body = record_json(record);
                    body["id"] = json!(format!("r{id}"));
                    app.post(&format!("/api/v1/collections/{name}/records"), &body)
                        .await
                } else {
                    put
                }
            }
            Write::Delete(id) => {
                app.delete(&format!("/api/v1/collections/{name}/records/r{id}"))
                    .await
            }
        };
        assert!(
            response.status().is_success() || response.status() == 404,
            "{write:?}: {}",
            response.status()
        );
    }
    // Ends the collection streams (their rule text changes) and marks the
    // end of the global ones.
    app.patch(
        &format!("/api/v1/collections/{name}"),
        &json!({"rules": {"read": equivalent(rule, 1)}}),
    )
    .await;
    let marker = format!("end{case}a");
    app.create_record("markers", json!({"id": marker})).await;

    let mut resumes = Vec::new();
    for (caller, (own, global)) in callers.iter().zip(streams) {
        let want = expected(rule, caller, writes);
        let who = format!("{:?} under {:?}", caller.claims, RULES[rule].0);
        if let Some((mut stream, start)) = own {
            assert_eq!(collect(&mut stream, &name, None).await, want, "live, {who}");
            resumes.push((caller, Some(start)));
        } else {
            resumes.push((caller, None));
        }
        let (mut stream, start) = global;
        assert_eq!(
            collect(&mut stream, &name, Some(&marker)).await,
            want,
            "global, {who}"
        );
        resumes.push((caller, Some(format!("global:{start}"))));
    }

    // Replays from each stream's start, under the (equivalent) rule of now.
    let mut replays = Vec::new();
    for (caller, start) in resumes {
        let Some(start) = start else { continue };
        let (path, id) = match start.strip_prefix("global:") {
            Some(id) => ("/api/v1/realtime".to_owned(), id.to_owned()),
            None => (format!("/api/v1/realtime/{name}"), start.clone()),
        };
        let (stream, _) = open(app, caller, &path, Some(&id), false).await.unwrap();
        replays.push((caller, path.ends_with(&name), stream));
    }
    app.patch(
        &format!("/api/v1/collections/{name}"),
        &json!({"rules": {"read": equivalent(rule, 2)}}),
    )
    .await;
    let marker = format!("end{case}b");
    app.create_record("markers", json!({"id": marker})).await;
    for (caller, own, mut stream) in replays {
        let want = expected(rule, caller, writes);
        let until = if own { None } else { Some(marker.as_str()) };
        let who = format!("{:?} under {:?}, own: {own}", caller.claims, RULES[rule].0);
        assert_eq!(
            collect(&mut stream, &name, until).await,
            want,
            "replayed, {who}"
        );
    }
}

#[test]
fn streams_deliver_exactly_what_the_read_rules_allow() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(async {
        let app = TestApp::spawn().await;
        let markers = app
            .post(
                "/api/v1/collections",
                &json!({"name": "markers", "rules": {"read": "true"}}),
            )
            .await;
        assert_eq!(markers.status(), 201);
        app
    });
    // Each rule gets its own random writes, so every rule is tried.
    let case = std::sync::atomic::AtomicUsize::new(0);
    for rule in 0..RULES.len() {
        let mut runner = TestRunner::new(ProptestConfig {
            cases: 4,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&prop::collection::vec(arb_write(), 1..16), |writes| {
                let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                runtime.block_on(run_scenario(&app, n, rule, &writes));
                Ok(())
            })
            .unwrap();
    }
}
