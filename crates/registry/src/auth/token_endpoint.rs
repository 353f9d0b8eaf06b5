//! Docker's token flow, served by the registry itself: `GET /token` with Basic credentials
//! (or none, for anonymous pull), the OAuth2 `POST /token` form (`grant_type=password` or
//! `refresh_token`), and the `Bearer` challenge that sends clients there.
//!
//! A token is issued for the scopes asked for, each cut to what the caller's grant allows
//! (what is not granted is dropped, as distribution's token servers do); `offline_token=true`
//! (GET) or `access_type=offline` (POST) adds a refresh token, which `docker login` keeps
//! instead of the password.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::keys::{KeyError, KeyRing, SharedRing};
use super::token::{self, Claims, Kind, ResourceActions};
use super::{Credentials, Htpasswd, User};
use crate::AppState;
use crate::error::{Access, Error};
use crate::storage::Storage;

/// How long a refresh token lasts: `docker login` keeps it, so a login lasts this long at
/// most (and ends sooner when the user is removed or its password set again).
pub const REFRESH_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// The largest `POST /token` form read.
const MAX_FORM: usize = 64 * 1024;

/// How the token flow behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSettings {
    /// Challenge `/v2` requests with `Bearer` (else `Basic`, as before tokens existed).
    pub bearer: bool,
    /// Anonymous pull is on: `/token` without credentials issues pull tokens, and the
    /// challenge is `Bearer` (the issue requires it: Basic-only clients cannot pull anonymously
    /// and push logged in on one registry).
    pub anonymous_pull: bool,
    /// How long an access token lasts.
    pub lifetime: Duration,
}

/// The token flow's keys and settings.
#[derive(Debug)]
pub struct TokenService {
    /// How it behaves.
    pub settings: TokenSettings,
    ring: Arc<SharedRing>,
    issued: AtomicU64,
}

impl TokenService {
    /// Loads (or creates) the signing keys in `storage` and re-reads them periodically.
    pub async fn start(storage: Arc<dyn Storage>, settings: TokenSettings) -> Result<TokenService, KeyError> {
        let ring = Arc::new(SharedRing::load(storage).await?);
        ring.spawn_reload();
        Ok(TokenService { settings, ring, issued: AtomicU64::new(0) })
    }

    /// The signing keys now.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.get()
    }

    /// Tokens issued since start.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// Whether `/v2` is challenged with `Bearer`.
    pub fn bearer_challenge(&self) -> bool {
        self.settings.bearer || self.settings.anonymous_pull
    }

    fn issue(
        &self,
        subject: &Subject,
        service: &str,
        access: Vec<ResourceActions>,
        kind: Kind,
    ) -> (String, Duration) {
        let now = SystemTime::now();
        let lifetime = match kind {
            Kind::Access => self.settings.lifetime,
            Kind::Refresh => REFRESH_LIFETIME,
        };
        let at = token::epoch_secs(now);
        let claims = Claims {
            iss: token::ISSUER.into(),
            sub: subject.name.clone(),
            aud: service.into(),
            exp: at + lifetime.as_secs().max(1),
            nbf: at,
            iat: at,
            jti: token::token_id(),
            access,
            kind,
            generation: subject.generation.clone(),
        };
        self.issued.fetch_add(1, Ordering::Relaxed);
        (token::sign(&claims, &self.ring()), lifetime)
    }
}

/// Who a token is for: a user's name and entry generation, or the anonymous puller (empty).
struct Subject {
    name: String,
    generation: String,
    user: User,
}

/// The `WWW-Authenticate` value that sends a client to `/token` on `host` for what a request
/// asked (`access`), or `None` when `host` cannot be put in a header.
pub fn challenge(scheme: &str, host: &str, service: &str, access: &[Access]) -> Option<HeaderValue> {
    let clean = |s: &str| s.replace(['"', '\\'], "");
    let mut value =
        format!("Bearer realm=\"{scheme}://{}/token\",service=\"{}\"", clean(host), clean(service));
    let scopes: Vec<String> = access
        .iter()
        .filter_map(|a| match (a.kind, a.action) {
            ("repository", "push") => Some(format!("repository:{}:pull,push", a.name)),
            ("repository", action) => Some(format!("repository:{}:{action}", a.name)),
            ("registry", _) if a.name == "catalog" => Some("registry:catalog:*".to_string()),
            _ => None,
        })
        .collect();
    if !scopes.is_empty() {
        value.push_str(&format!(",scope=\"{}\"", clean(&scopes.join(" "))));
    }
    HeaderValue::from_str(&value).ok()
}

/// A `400` in OAuth2's error shape.
fn bad_request(error: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": error, "error_description": description });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// `GET` or `POST /token`.
pub async fn token(State(state): State<AppState>, request: Request) -> Response {
    let Some(auth) = state.auth.clone() else { return Error::RouteUnknown.into_response() };
    let Some(tokens) = auth.tokens() else { return Error::RouteUnknown.into_response() };
    let client = crate::forwarded::origin_of(request.extensions()).client;
    let authorization =
        request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let post = match *request.method() {
        Method::GET => false,
        Method::POST => true,
        _ => return Error::Unsupported("only GET and POST /token".into()).into_response(),
    };
    let params: Vec<(String, String)> = if post {
        let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_FORM).await else {
            return bad_request("invalid_request", "the form is too large or was cut off");
        };
        serde_urlencoded::from_bytes(&body).unwrap_or_default()
    } else {
        serde_urlencoded::from_str(request.uri().query().unwrap_or_default()).unwrap_or_default()
    };
    let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let service = auth.service().to_string();
    if param("service").is_some_and(|s| s != service) {
        return bad_request("invalid_request", "unknown service");
    }
    let requested: Vec<token::Requested> =
        params.iter().filter(|(k, _)| k == "scope").flat_map(|(_, v)| token::parse_scopes(v)).collect();

    let subject = if post {
        match param("grant_type") {
            Some("password") => {
                let (Some(user), Some(password)) = (param("username"), param("password")) else {
                    return bad_request("invalid_request", "username and password are required");
                };
                password_subject(&auth, user, password, client).await
            }
            Some("refresh_token") => {
                let Some(refresh) = param("refresh_token") else {
                    return bad_request("invalid_request", "refresh_token is required");
                };
                refresh_subject(&auth, tokens, refresh, &service)
            }
            _ => return bad_request("unsupported_grant_type", "grant_type is password or refresh_token"),
        }
    } else {
        match Credentials::of(authorization.as_deref()) {
            Credentials::Basic(user, password) => password_subject(&auth, &user, &password, client).await,
            // A token is not traded for another: its scope would widen to the whole grant.
            Credentials::Bearer(_) | Credentials::Unreadable => Err(auth.unauthorized(true)),
            Credentials::Absent if tokens.settings.anonymous_pull => {
                Ok(Subject { name: String::new(), generation: String::new(), user: super::anonymous() })
            }
            Credentials::Absent => Err(auth.unauthorized(false)),
        }
    };
    let subject = match subject {
        Ok(subject) => subject,
        Err(e) => return e.into_response(),
    };
    let now = SystemTime::now();
    let access = token::granted(&requested, &subject.user, now);
    let granted_scopes: Vec<String> =
        access.iter().map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(","))).collect();
    let (access_token, lifetime) = tokens.issue(&subject, &service, access, Kind::Access);
    let offline = param("offline_token") == Some("true") || param("access_type") == Some("offline");
    let grant_type = param("grant_type").unwrap_or("basic");
    let mut body = serde_json::json!({
        "token": access_token,
        "access_token": access_token,
        "expires_in": lifetime.as_secs(),
        "issued_at": humantime::format_rfc3339_seconds(now).to_string(),
        "scope": granted_scopes.join(" "),
    });
    // Only a user who proved a password gets a refresh token (not the anonymous puller, and
    // not a refresh: the one it holds still works).
    if offline && !subject.name.is_empty() && grant_type != "refresh_token" {
        let (refresh, _) = tokens.issue(&subject, &service, Vec::new(), Kind::Refresh);
        body["refresh_token"] = serde_json::Value::String(refresh);
    }
    // The name only, never a secret or a token.
    tracing::info!(user = ?subject.user.name, grant_type, scopes = ?granted_scopes, "token issued");
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// The subject of a password (or token secret) check through [`Htpasswd::check_password`]:
/// cached, throttled, bcrypt.
async fn password_subject(
    auth: &Htpasswd,
    user: &str,
    password: &str,
    client: Option<std::net::IpAddr>,
) -> Result<Subject, Error> {
    let user = auth.check_password(user.to_string(), password.to_string(), client).await?;
    let (user, generation) = auth.entry_now(&user.name).ok_or_else(|| auth.unauthorized(true))?;
    Ok(Subject { name: user.name.clone(), generation, user })
}

/// The subject of a refresh token: verified, and its user still there, unchanged.
fn refresh_subject(
    auth: &Htpasswd,
    tokens: &TokenService,
    refresh: &str,
    service: &str,
) -> Result<Subject, Error> {
    let now = SystemTime::now();
    let claims = token::verify(refresh, &tokens.ring(), now, service, Kind::Refresh).map_err(|e| {
        tracing::info!(error = %e, "refresh token refused");
        auth.unauthorized(true)
    })?;
    match auth.entry_now(&claims.sub) {
        Some((user, generation)) if !claims.sub.is_empty() && generation == claims.generation => {
            Ok(Subject { name: claims.sub, generation, user })
        }
        _ => {
            tracing::info!(user = ?claims.sub, "refresh token of a removed or changed user refused");
            Err(auth.unauthorized(true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_names_the_token_endpoint_and_the_scope() {
        let access = [Access { kind: "repository", class: "", name: "team/app".into(), action: "push" }];
        let value = challenge("https", "registry.test:5000", "regctl", &access).expect("a header");
        assert_eq!(
            value,
            "Bearer realm=\"https://registry.test:5000/token\",service=\"regctl\",scope=\"repository:team/app:pull,push\""
        );
        let base = challenge("http", "h\"ost", "s", &[]).expect("a header");
        assert_eq!(base, "Bearer realm=\"http://host/token\",service=\"s\"");
        assert!(challenge("http", "a\r\nb", "s", &[]).is_none());
    }
}
