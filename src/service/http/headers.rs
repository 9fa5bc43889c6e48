//! Security headers on every response. The console's pages get a strict
//! Content-Security-Policy: scripts, styles and fetches from this origin
//! only, no inline script or style (the templates have none: the progress
//! bar is a `<progress>` element, the script and stylesheet are embedded
//! files under `/console/assets/`), no framing, forms posting only here.
//! Everything else (JSON, metrics, health) gets a policy that allows
//! nothing, so a response opened in a browser can neither run nor be
//! framed. All responses: `nosniff`, `X-Frame-Options: DENY` (for browsers
//! without `frame-ancestors`), and no `Referer` leaving the console.

use axum::extract::Request;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The console's policy.
const CONSOLE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// The policy of every other response: nothing may load, nothing may frame it.
const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// Adds the security headers to every response (outermost layer, so
/// refusals, timeouts and 413s carry them too).
pub(crate) async fn secure(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let console = path == "/console" || path.starts_with("/console/");
    let mut response = next.run(request).await;
    add(response.headers_mut(), console);
    response
}

fn add(headers: &mut HeaderMap, console: bool) {
    let policy = if console { CONSOLE_POLICY } else { API_POLICY };
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}
