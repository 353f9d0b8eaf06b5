//! The plain-HTTP listener (port 80): answers ACME HTTP-01 challenges from
//! `/.well-known/acme-challenge/<token>` and redirects every other request to the same URL over
//! HTTPS.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Key authorizations of pending HTTP-01 challenges, by token.
#[derive(Debug, Default)]
pub struct Http01Tokens {
    tokens: RwLock<HashMap<String, String>>,
}

impl Http01Tokens {
    /// Answers `token` with `key_authorization` until [`Http01Tokens::remove`].
    pub fn insert(&self, token: String, key_authorization: String) {
        self.tokens.write().unwrap_or_else(PoisonError::into_inner).insert(token, key_authorization);
    }

    /// Stops answering `token`.
    pub fn remove(&self, token: &str) {
        self.tokens.write().unwrap_or_else(PoisonError::into_inner).remove(token);
    }

    fn get(&self, token: &str) -> Option<String> {
        self.tokens.read().unwrap_or_else(PoisonError::into_inner).get(token).cloned()
    }
}

#[derive(Clone)]
struct RedirectState {
    tokens: Arc<Http01Tokens>,
    https_port: u16,
}

/// The port-80 application: HTTP-01 tokens, and a 308 redirect to `https://` for the rest
/// (the port of the HTTPS listener is kept in the URL unless it is 443).
pub fn app(tokens: Arc<Http01Tokens>, https_port: u16) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", axum::routing::get(challenge))
        .fallback(redirect)
        .with_state(RedirectState { tokens, https_port })
}

async fn challenge(State(state): State<RedirectState>, Path(token): Path<String>) -> Response {
    match state.tokens.get(&token) {
        Some(key_authorization) => {
            tracing::info!(token, "answered an ACME HTTP-01 challenge");
            ([(header::CONTENT_TYPE, "application/octet-stream")], key_authorization).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such ACME challenge\n").into_response(),
    }
}

async fn redirect(State(state): State<RedirectState>, request: Request) -> Response {
    let authority =
        request.uri().authority().map(|a| a.as_str().to_string()).or_else(|| {
            request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string)
        });
    let Some(host) = authority.as_deref().and_then(host_without_port) else {
        return (
            StatusCode::BAD_REQUEST,
            "this server only speaks HTTPS; send a Host header to be redirected\n",
        )
            .into_response();
    };
    let port = if state.https_port == 443 { String::new() } else { format!(":{}", state.https_port) };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    match HeaderValue::try_from(format!("https://{host}{port}{path}")) {
        Ok(location) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, location)]).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "invalid Host header\n").into_response(),
    }
}

/// The host of a `Host` header or authority (`name`, `name:80`, `[::1]:80`), if well-formed.
fn host_without_port(authority: &str) -> Option<&str> {
    let host = if authority.starts_with('[') {
        let end = authority.find(']')?;
        &authority[..=end]
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            Some(_) => return None,
            None => authority,
        }
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':'));
    valid.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn challenges_and_redirects() {
        let tokens = Arc::new(Http01Tokens::default());
        tokens.insert("tok".into(), "tok.thumb".into());
        let get = |uri: &str, host: &str| {
            axum::http::Request::get(uri)
                .header("host", host)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        let resp =
            app(tokens.clone(), 443).oneshot(get("/.well-known/acme-challenge/tok", "r.example")).await;
        let resp = resp.expect("response");
        assert_eq!(resp.status(), 200);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.expect("body");
        assert_eq!(&body[..], b"tok.thumb");
        tokens.remove("tok");
        let resp =
            app(tokens.clone(), 443).oneshot(get("/.well-known/acme-challenge/tok", "r.example")).await;
        assert_eq!(resp.expect("response").status(), 404);

        let resp = app(tokens.clone(), 443).oneshot(get("/v2/x/tags/list?n=1", "r.example:80")).await;
        let resp = resp.expect("response");
        assert_eq!(resp.status(), 308);
        assert_eq!(resp.headers()["location"], "https://r.example/v2/x/tags/list?n=1");
        let resp = app(tokens.clone(), 8443).oneshot(get("/", "[::1]:8080")).await.expect("response");
        assert_eq!(resp.headers()["location"], "https://[::1]:8443/");
        let resp = app(tokens, 443).oneshot(get("/", "bad host")).await.expect("response");
        assert_eq!(resp.status(), 400);
    }
}
