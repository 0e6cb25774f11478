use serde_json::{Value, json};

use crate::helpers::TestApp;

#[tokio::test]
async fn health_answers_once_serving() {
    let app = TestApp::spawn().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "ok");
}

#[tokio::test]
async fn collections_can_be_created_listed_changed_and_deleted() {
    let app = TestApp::spawn().await;
    let response = app
        .post(
            "/api/v1/collections",
            &json!({"name": "posts", "description": "blog posts"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["name"], "posts");
    assert_eq!(created["description"], "blog posts");
    assert!(created["created"].is_string());

    app.create_collection("authors").await;
    let list: Value = app.get("/api/v1/collections").await.json().await.unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["authors", "posts"]);

    let response = app
        .patch(
            "/api/v1/collections/posts",
            &json!({"description": "articles"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["description"],
        "articles"
    );
    let shown: Value = app
        .get("/api/v1/collections/posts")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["description"], "articles");

    assert_eq!(app.delete("/api/v1/collections/posts").await.status(), 204);
    assert_eq!(app.get("/api/v1/collections/posts").await.status(), 404);
    assert_eq!(app.delete("/api/v1/collections/posts").await.status(), 404);
    // Its records went with it: a new collection of that name starts empty.
    app.create_collection("posts").await;
    let records: Value = app
        .get("/api/v1/collections/posts/records")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(records["items"], json!([]));
}

#[tokio::test]
async fn collection_errors_have_the_right_status_and_shape() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;

    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (
            app.post("/api/v1/collections", &json!({"name": "posts"}))
                .await,
            409,
            "conflict",
        ),
        (
            app.post("/api/v1/collections", &json!({"name": "1bad"}))
                .await,
            400,
            "invalid_name",
        ),
        (
            app.post("/api/v1/collections", &json!({"name": "a-b"}))
                .await,
            400,
            "invalid_name",
        ),
        (
            app.post("/api/v1/collections", &json!({"name": "_lh_collections"}))
                .await,
            400,
            "invalid_name",
        ),
        (
            app.post("/api/v1/collections", &json!({"name": "x".repeat(65)}))
                .await,
            400,
            "invalid_name",
        ),
        (
            app.post("/api/v1/collections", &json!({})).await,
            400,
            "invalid_body",
        ),
        (
            app.post("/api/v1/collections", &json!({"name": 5})).await,
            400,
            "invalid_body",
        ),
        (
            app.post("/api/v1/collections", &json!({"name": "ok", "extra": 1}))
                .await,
            400,
            "invalid_body",
        ),
        (app.get("/api/v1/collections/nope").await, 404, "not_found"),
        (
            app.get("/api/v1/collections/bad%20name").await,
            400,
            "invalid_name",
        ),
        (
            app.patch("/api/v1/collections/nope", &json!({})).await,
            404,
            "not_found",
        ),
        (app.get("/api/v1/nothing-here").await, 404, "not_found"),
        (
            app.put("/api/v1/collections/posts", &json!({})).await,
            405,
            "method_not_allowed",
        ),
    ];
    for (response, status, code) in cases {
        let url = response.url().to_string();
        assert_eq!(response.status(), status, "{url}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{url}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().len() > 3,
            "{body}"
        );
    }

    let response = app
        .client
        .post(app.url("/api/v1/collections"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_body"
    );
}
