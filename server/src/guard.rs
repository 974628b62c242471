//! Who may drive the server: requests must name it by an address (an IP literal or
//! `localhost`, with its port), never by a domain name another site could point at it (DNS
//! rebinding); a browser's `Origin`, when sent, must be the server itself (no cross-site
//! requests); and with a token, the API and the images need it (`Authorization: Bearer` or
//! `?token=`).

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::{refuse, App};

/// Whether `host` (a `Host` header value) names this server on `port`.
pub fn host_allowed(host: &str, port: u16) -> bool {
    let Some((name, given_port)) = host.rsplit_once(':') else { return false };
    if given_port.parse::<u16>().ok() != Some(port) {
        return false;
    }
    let bracketed = name.strip_prefix('[').and_then(|n| n.strip_suffix(']'));
    match bracketed {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

/// Whether a browser `origin` is this server reached as `host`.
pub fn origin_allowed(origin: &str, host: &str) -> bool {
    origin.strip_prefix("http://").is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

/// The token a request carries, if any.
fn carried_token(request: &Request) -> Option<String> {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    bearer
        .or_else(|| request.uri().query()?.split('&').find_map(|pair| pair.strip_prefix("token=").map(str::to_string)))
}

/// Constant-time comparison of two tokens.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: refuses requests that fail the checks above with 403 or 401.
pub async fn check(State(app): State<std::sync::Arc<App>>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if !host_allowed(&host, app.port) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this server answers only to its address (an IP address or localhost with its port), not to a name",
        )
        .into_response();
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        if !origin.to_str().is_ok_and(|o| origin_allowed(o, &host)) {
            return refuse(StatusCode::FORBIDDEN, "requests from other web sites are refused").into_response();
        }
    }
    let path = request.uri().path();
    let protected = path.starts_with("/api/") || path.starts_with("/images/");
    if let (true, Some(token)) = (protected, &app.token) {
        if !carried_token(&request).is_some_and(|t| same_token(&t, token)) {
            return refuse(StatusCode::UNAUTHORIZED, "this server needs its token: open the address it printed")
                .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_of_this_server_and_its_own_origin_pass() {
        for good in ["127.0.0.1:7860", "localhost:7860", "LOCALHOST:7860", "[::1]:7860", "192.168.1.5:7860"] {
            assert!(host_allowed(good, 7860), "{good}");
        }
        for bad in ["evil.example:7860", "127.0.0.1:80", "127.0.0.1", "", "localhost.evil.example:7860"] {
            assert!(!host_allowed(bad, 7860), "{bad}");
        }
        assert!(origin_allowed("http://127.0.0.1:7860", "127.0.0.1:7860"));
        assert!(!origin_allowed("http://evil.example", "127.0.0.1:7860"));
        assert!(!origin_allowed("null", "127.0.0.1:7860"));
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("abc", "ab"));
    }
}
