//! Bearer tokens of Docker's token flow: JWTs signed with HMAC-SHA256 (aws-lc-rs) by a key of
//! the server's [`super::keys::KeyRing`], naming who (`sub`), for which service (`aud`), until
//! when (`exp`), and what (`access`, the distribution token spec's resource actions).
//!
//! Two kinds: an access token (minutes; sent on each request) and a refresh token (days; what
//! `docker login` keeps instead of the password, traded at `/token` for access tokens). Both
//! carry `gen`, a fingerprint of the entry's stored hash, so a changed password or a removed
//! user ends them at once: a token is never trusted alone, its subject is looked up in the
//! current htpasswd entries on every use ([`super::Htpasswd`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::access::Access;
use super::keys::KeyRing;
use crate::oci::RepoName;

/// The issuer named in every token.
pub const ISSUER: &str = "regctl";
/// The longest token accepted, in bytes: past that it is not one of ours.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Most resource actions in one token (each a repository the client named).
pub const MAX_SCOPES: usize = 64;
/// How far a token's `nbf`/`iat` may be in the future (clocks of servers sharing a bucket).
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Sent with each registry request.
    Access,
    /// Traded at `/token` (`grant_type=refresh_token`) for access tokens.
    Refresh,
}

/// One resource and the actions granted on it, in the token spec's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceActions {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A repository name, or `catalog`.
    pub name: String,
    /// `pull`, `push`, `delete`, or `*` (registry-wide).
    pub actions: Vec<String>,
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Always [`ISSUER`].
    pub iss: String,
    /// The user or token entry's name; empty for an anonymous (pull-only) token.
    pub sub: String,
    /// The service (the `service` of the challenge; the registry's host name).
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// A random identifier (logs may name it; nothing else needs it).
    pub jti: String,
    /// What it grants (access tokens).
    #[serde(default)]
    pub access: Vec<ResourceActions>,
    /// Access or refresh.
    pub kind: Kind,
    /// Fingerprint of the subject's stored hash when the token was issued ([`fingerprint`]).
    #[serde(default)]
    pub generation: String,
}

/// Why a token was refused. Deliberately coarse in what the client is told (all are a 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON, too long, or not HS256.
    #[error("malformed token")]
    Malformed,
    /// Signed by no key this server holds (rotated out, or another server's).
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The signature does not match.
    #[error("bad token signature")]
    Signature,
    /// Past its `exp`, or not yet valid.
    #[error("token expired or not yet valid")]
    Expired,
    /// For another service, issuer or kind.
    #[error("token not for this service or use")]
    Audience,
}

/// The JWT header of our tokens.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    kid: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Seconds since the epoch at `t`.
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Signs `claims` with the ring's current key: `header.payload.signature`.
pub fn sign(claims: &Claims, ring: &KeyRing) -> String {
    let key = ring.current();
    let header = Header { alg: "HS256".into(), typ: Some("JWT".into()), kid: key.id().to_string() };
    // Serializing these plain structs cannot fail; an empty part would only make a token that
    // never verifies.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let signed = format!("{}.{}", b64().encode(header), b64().encode(payload));
    let signature = key.sign(signed.as_bytes());
    format!("{signed}.{}", b64().encode(signature))
}

/// Parses and checks `token`: its shape, its key and signature (in constant time), then its
/// times, issuer, audience (`service`) and kind. The subject is not looked up here.
pub fn verify(
    token: &str,
    ring: &KeyRing,
    now: SystemTime,
    service: &str,
    kind: Kind,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = b64()
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::Malformed);
    }
    let signature = b64().decode(signature).map_err(|_| TokenError::Malformed)?;
    let key = ring.verifying(&header.kid, now).ok_or(TokenError::UnknownKey)?;
    let signed_len = token.len() - signature_part_len(token);
    if !key.verify(&token.as_bytes()[..signed_len], &signature) {
        return Err(TokenError::Signature);
    }
    let claims: Claims = b64()
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or(TokenError::Malformed)?;
    let now_secs = epoch_secs(now);
    if now_secs >= claims.exp || claims.nbf > now_secs + CLOCK_SKEW.as_secs() {
        return Err(TokenError::Expired);
    }
    if claims.iss != ISSUER || claims.aud != service || claims.kind != kind {
        return Err(TokenError::Audience);
    }
    Ok(claims)
}

/// Length of `.signature` at the end of a three-part token.
fn signature_part_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

/// A fingerprint of an entry's stored hash (bcrypt hash or token digest): changes when the
/// password or token secret is set again. Says nothing usable about the secret itself.
pub fn fingerprint(stored: &[u8]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"regctl token generation\0");
    h.update(stored);
    hex::encode(&h.finalize()[..8])
}

/// What a client asks for at `/token`: `repository:NAME:ACTION[,ACTION...]` or
/// `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// Actions on a repository; the highest level asked for.
    Repository(String, Access),
    /// The catalog (`registry:catalog:*`).
    Catalog,
}

/// Parses one `scope` value (which may hold several scopes separated by spaces, as the OAuth2
/// form sends them). Scopes that are malformed or of unknown types are skipped, as
/// distribution's token servers skip what they do not grant.
pub fn parse_scopes(text: &str) -> Vec<Requested> {
    text.split(' ').filter_map(parse_scope).collect()
}

fn parse_scope(scope: &str) -> Option<Requested> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    match kind {
        "registry" if name == "catalog" && actions.split(',').any(|a| a == "*") => Some(Requested::Catalog),
        "repository" => {
            let name = RepoName::parse(name)?;
            let level = actions.split(',').filter_map(action_level).max()?;
            Some(Requested::Repository(name.as_str().to_string(), level))
        }
        _ => None,
    }
}

fn action_level(action: &str) -> Option<Access> {
    match action {
        "pull" => Some(Access::Pull),
        "push" => Some(Access::Push),
        "delete" | "*" => Some(Access::Delete),
        _ => None,
    }
}

/// The actions a level grants, as the token spec names them.
fn actions_of(level: Access) -> Vec<String> {
    let all = [Access::Pull, Access::Push, Access::Delete];
    all.iter().filter(|a| **a <= level).map(|a| a.as_str().to_string()).collect()
}

/// The part of `requested` that `user` may do at `now` ([`super::User::level_on`]: its grant,
/// and pull everywhere while anonymous pull is on): each repository at the lower of the level
/// asked and the level it has, dropped when it has none; the catalog when it may list anything
/// (it then lists what it may pull). At most [`MAX_SCOPES`].
pub fn granted(requested: &[Requested], user: &super::User, now: SystemTime) -> Vec<ResourceActions> {
    let mut out: Vec<ResourceActions> = Vec::new();
    for request in requested {
        let entry = match request {
            Requested::Repository(name, asked) => {
                let Some(level) = user.level_on(name, now).map(|g| g.min(*asked)) else { continue };
                ResourceActions { kind: "repository".into(), name: name.clone(), actions: actions_of(level) }
            }
            Requested::Catalog if user.may_list(now) => {
                ResourceActions { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] }
            }
            Requested::Catalog => continue,
        };
        if let Some(same) = out.iter_mut().find(|e| e.kind == entry.kind && e.name == entry.name) {
            if same.actions.len() < entry.actions.len() {
                *same = entry;
            }
        } else if out.len() < MAX_SCOPES {
            out.push(entry);
        }
    }
    out
}

/// What an access token lets its bearer do, within the subject's grant: read by
/// [`super::User::allows`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    /// Repositories and the level granted on each.
    pub repositories: Vec<(String, Access)>,
    /// `registry:catalog:*`: the catalog lists what the grant may pull.
    pub catalog: bool,
}

impl Scope {
    /// The scope a token's `access` claim carries; unknown entries grant nothing.
    pub fn of(access: &[ResourceActions]) -> Scope {
        let mut scope = Scope::default();
        for entry in access {
            match entry.kind.as_str() {
                "registry" if entry.name == "catalog" => scope.catalog = true,
                "repository" => {
                    if let Some(level) = entry.actions.iter().filter_map(|a| action_level(a)).max() {
                        scope.repositories.push((entry.name.clone(), level));
                    }
                }
                _ => {}
            }
        }
        scope
    }

    /// Whether the token covers `need` on `repository`.
    pub fn allows(&self, repository: &str, need: Access) -> bool {
        self.repositories.iter().any(|(name, level)| name == repository && *level >= need)
    }
}

/// A random identifier for `jti`.
pub fn token_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::User;
    use crate::auth::access::{Grant, RepoGlob};

    fn claims(now: SystemTime, kind: Kind) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "alice".into(),
            aud: "registry.test".into(),
            exp: epoch_secs(now) + 300,
            nbf: epoch_secs(now),
            iat: epoch_secs(now),
            jti: token_id(),
            access: vec![ResourceActions {
                kind: "repository".into(),
                name: "app".into(),
                actions: vec!["pull".into()],
            }],
            kind,
            generation: "0011".into(),
        }
    }

    #[test]
    fn signed_tokens_verify_and_tampered_expired_or_foreign_ones_do_not() {
        let ring = KeyRing::generate();
        let now = SystemTime::now();
        let token = sign(&claims(now, Kind::Access), &ring);
        let verified = verify(&token, &ring, now, "registry.test", Kind::Access).expect("verifies");
        assert_eq!(verified, claims_like(&verified, now));
        // Tampering with the payload (push instead of pull) breaks the signature.
        let mut forged = claims(now, Kind::Access);
        forged.access[0].actions = vec!["pull".into(), "push".into()];
        let forged_payload = b64().encode(serde_json::to_vec(&forged).expect("json"));
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(verify(&tampered, &ring, now, "registry.test", Kind::Access), Err(TokenError::Signature));
        // `alg: none` and truncated tokens are malformed.
        let none = format!("{}.{}.", b64().encode(r#"{"alg":"none","kid":"x"}"#), parts[1]);
        assert_eq!(verify(&none, &ring, now, "registry.test", Kind::Access), Err(TokenError::Malformed));
        assert_eq!(verify("a.b", &ring, now, "registry.test", Kind::Access), Err(TokenError::Malformed));
        // Expiry, audience, kind, and another server's key.
        let later = now + Duration::from_secs(301);
        assert_eq!(verify(&token, &ring, later, "registry.test", Kind::Access), Err(TokenError::Expired));
        assert_eq!(verify(&token, &ring, now, "other.test", Kind::Access), Err(TokenError::Audience));
        assert_eq!(verify(&token, &ring, now, "registry.test", Kind::Refresh), Err(TokenError::Audience));
        let other = KeyRing::generate();
        assert_eq!(verify(&token, &other, now, "registry.test", Kind::Access), Err(TokenError::UnknownKey));
    }

    fn claims_like(verified: &Claims, now: SystemTime) -> Claims {
        Claims { jti: verified.jti.clone(), ..claims(now, Kind::Access) }
    }

    #[test]
    fn scopes_are_parsed_and_cut_to_the_grant() {
        let requested = parse_scopes("repository:team/app:pull,push registry:catalog:* repository:Bad:pull");
        assert_eq!(
            requested,
            [Requested::Repository("team/app".into(), Access::Push), Requested::Catalog],
            "the invalid name is dropped"
        );
        let now = SystemTime::now();
        let pull_only = Grant {
            access: Access::Pull,
            repos: vec!["team/*".parse::<RepoGlob>().expect("glob")],
            expires: None,
        };
        let granted = granted(&requested, &User::new("r", pull_only.clone()), now);
        assert_eq!(granted[0].actions, ["pull"], "push is dropped, pull kept");
        assert_eq!(granted[1].name, "catalog");
        let scope = Scope::of(&granted);
        assert!(scope.allows("team/app", Access::Pull) && !scope.allows("team/app", Access::Push));
        assert!(!scope.allows("other", Access::Pull) && scope.catalog);
        assert!(granted_is_empty(&parse_scopes("repository:elsewhere:pull"), &pull_only, now));
        assert!(granted_is_empty(&parse_scopes("repository:team/app:pull"), &Grant::nothing(), now));
        // With anonymous pull on, every caller may pull everything on top of its grant.
        let public = User { public_pull: true, ..User::new("r", pull_only) };
        let public = super::granted(&parse_scopes("repository:elsewhere:pull,push"), &public, now);
        assert_eq!(
            (public[0].name.as_str(), &public[0].actions[..]),
            ("elsewhere", &["pull".to_string()][..])
        );
    }

    fn granted_is_empty(requested: &[Requested], grant: &Grant, now: SystemTime) -> bool {
        granted(requested, &User::new("r", grant.clone()), now).is_empty()
    }
}
