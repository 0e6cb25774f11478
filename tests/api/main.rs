//! Integration tests: a real server on a loopback port, a real HTTP client,
//! a real SSE client, and the real embedded SurrealDB.

mod auth;
mod binary;
mod browser;
mod cdn;
mod changes;
mod channels;
mod collections;
mod contract;
mod differential;
mod existence;
mod faults;
mod filters;
mod fleet;
mod front;
mod hardening;
mod helpers;
mod http_fuzz;
mod live_queries;
mod live_query_property;
mod local_first;
mod lost_access;
mod nginx;
mod nodes;
mod operations;
mod parameters;
mod presence;
mod proxies;
mod readme;
mod records;
mod resume;
mod rules_property;
mod streams;
mod subscriptions;
mod surreal;
mod views;
