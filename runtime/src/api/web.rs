//! The web page: one HTML shell for every screen, its script modules (the page's own two and the
//! vendored Markdown lexer, `runtime/web/vendor/`), a style sheet and an icon, all embedded in the
//! binary (nothing is fetched from elsewhere), and the security headers every response carries.
//! The assets live in `runtime/web/`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const RENDER_JS: &str = include_str!("../../web/render.js");
/// marked 18.3.0 (MIT), as npm publishes it (`runtime/web/vendor/README.md`).
const MARKED_JS: &str = include_str!("../../web/vendor/marked.esm.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");
const ICON_SVG: &str = include_str!("../../web/icon.svg");

/// No inline script or style, nothing from other origins, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Paths that show the page; the script picks the screen from the path.
pub const PAGES: &[&str] = &["/", "/signin", "/signup", "/welcome", "/settings", "/chat", "/chat/{id}"];

pub fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for p in PAGES {
        r = r.route(p, get(index));
    }
    r.route("/assets/app.js", get(|| asset("text/javascript; charset=utf-8", APP_JS)))
        .route("/assets/render.js", get(|| asset("text/javascript; charset=utf-8", RENDER_JS)))
        .route("/assets/marked.js", get(|| asset("text/javascript; charset=utf-8", MARKED_JS)))
        .route("/assets/style.css", get(|| asset("text/css; charset=utf-8", STYLE_CSS)))
        .route("/assets/icon.svg", get(|| asset("image/svg+xml", ICON_SVG)))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
}

async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], INDEX_HTML)
        .into_response()
}

/// Assets change with the binary: revalidate, never serve a stale script with a new API.
async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Security headers on every response (pages, assets and API alike); over HTTPS also
/// `Strict-Transport-Security`, so that a browser never again reaches the site over plain HTTP.
pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let https = super::scheme(&state, req.headers()) == "https";
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if https {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    let set = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
        (HeaderName::from_static("permissions-policy"), "camera=(), microphone=(), geolocation=()"),
    ];
    for (name, value) in set {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    resp
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// The vendored lexer is the release it says it is, byte for byte: a change to it is an
    /// update, made as `runtime/web/vendor/README.md` says.
    #[test]
    fn the_vendored_markdown_lexer_is_the_pinned_release() {
        let digest: String = Sha256::digest(super::MARKED_JS.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(digest, "4d2d824f3035e79b6887380d88c6c9ca0958215d1f4f6c053c562d60babc7172");
        assert!(super::MARKED_JS.starts_with("/**\n * marked v18.3.0 - a markdown parser"));
    }
}
