//! The operator dashboard (SPEC §19): `GET /` without a WebSocket upgrade
//! on the telemetry listener serves one self-contained page. Its HTML, CSS
//! and JavaScript are embedded in the binary and joined into one document;
//! it loads nothing else (no CDN, font or external script) and connects to
//! the same listener's WebSocket, so the Origin check (SPEC §18) passes as
//! same-origin.
//!
//! The page learns the auth mode from a `<meta>` tag so that in `token` and
//! `jwt` modes it asks for the admin credential before connecting; the
//! credential never reaches the page from the server.

use std::sync::Arc;

use arqon_config::AuthMode;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::{App, VERSION};

const HTML: &str = include_str!("dashboard/index.html");
const CSS: &str = include_str!("dashboard/dashboard.css");
const JS: &str = include_str!("dashboard/dashboard.js");

/// The page allows only its own inline style and script and connections
/// to its own origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Middleware on the telemetry router: a `GET` or `HEAD` of `/` that does
/// not ask for a WebSocket upgrade gets the page; everything else goes on
/// to the telemetry WebSocket handler (which still answers 426 to other
/// non-upgrade requests, such as a `POST`).
pub async fn page_or_next(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let wants_page = (request.method() == Method::GET || request.method() == Method::HEAD)
        && request.uri().path() == "/"
        && !is_upgrade(request.headers());
    if !wants_page {
        return next.run(request).await;
    }
    page(app.config.auth.mode)
}

/// Whether the request asks to switch protocols.
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
}

/// The page for `mode`.
fn page(mode: AuthMode) -> Response {
    let body = render(mode);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The document: the HTML with its style, script, auth mode and server
/// version filled in. None of them comes from a request.
fn render(mode: AuthMode) -> String {
    let auth = match mode {
        AuthMode::None => "none",
        AuthMode::Token => "token",
        AuthMode::Jwt => "jwt",
    };
    HTML.replace("/*__STYLE__*/", CSS)
        .replace("/*__SCRIPT__*/", JS)
        .replace("__AUTH_MODE__", auth)
        .replace("__VERSION__", VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained() {
        for mode in [AuthMode::None, AuthMode::Token, AuthMode::Jwt] {
            let page = render(mode);
            assert!(!page.contains("__"), "a placeholder is left");
            for external in [
                "src=\"http",
                "href=\"http",
                "src=\"//",
                "href=\"//",
                "@import",
            ] {
                assert!(!page.contains(external), "loads {external}");
            }
            assert!(page.contains("</script>") && page.contains("</style>"));
        }
        assert!(render(AuthMode::Token).contains(r#"content="token""#));
    }

    #[test]
    fn only_plain_requests_get_the_page() {
        let mut headers = HeaderMap::new();
        assert!(!is_upgrade(&headers));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&headers));
    }
}
