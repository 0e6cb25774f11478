//! The real `surreal` server (the `surrealdb-server` crate's own entry point),
//! so that livehub's multi-node tests run against what users deploy.
#![recursion_limit = "256"]

fn main() -> std::process::ExitCode {
    surrealdb_server::init(surrealdb_server::core::CommunityComposer())
}
