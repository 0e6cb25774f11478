//! The browser library, served by livehub itself so that a page loads the
//! client of the server it talks to: `/livehub.js` (an ES module with no
//! dependencies), its React and Vue bindings, and their types. Compiled
//! in, like the demo page.

use axum::http::header;
use axum::response::IntoResponse;

/// JavaScript modules are revalidated hourly: a deploy reaches pages soon.
const CACHE: &str = "public, max-age=3600";

fn module(source: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        source,
    )
}

fn types(source: &'static str) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/typescript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, CACHE),
        ],
        source,
    )
}

pub async fn library() -> impl IntoResponse {
    module(include_str!("../../client/livehub.js"))
}

pub async fn library_types() -> impl IntoResponse {
    types(include_str!("../../client/livehub.d.ts"))
}

pub async fn react() -> impl IntoResponse {
    module(include_str!("../../client/livehub-react.js"))
}

pub async fn react_types() -> impl IntoResponse {
    types(include_str!("../../client/livehub-react.d.ts"))
}

pub async fn vue() -> impl IntoResponse {
    module(include_str!("../../client/livehub-vue.js"))
}

pub async fn vue_types() -> impl IntoResponse {
    types(include_str!("../../client/livehub-vue.d.ts"))
}
