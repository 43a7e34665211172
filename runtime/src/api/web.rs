//! The web page (issue 6) will live here: pages and embedded assets served by the API.

use axum::response::Html;
use axum::routing::get;
use axum::Router;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(index))
}

async fn index() -> Html<&'static str> {
    Html("<!doctype html><html lang=en><meta charset=utf-8><title>aira</title><p>aira chat runtime. The API is described at <a href=\"/openapi.json\">/openapi.json</a>.</p></html>")
}
