//! Authorization: what a request needs, decided from its typed [`Endpoint`] and method, and
//! whether its caller has it.
//!
//! | request | needs |
//! |---|---|
//! | `GET`/`HEAD` of manifests, blobs, tags, referrers | `pull` on the repository |
//! | `PUT`/`POST`/`PATCH`, upload status and cancel | `push` on the repository |
//! | `DELETE` of a manifest, tag or blob | `delete` on the repository |
//! | `POST …/blobs/uploads/?mount=D&from=OTHER` | `push` here; the mount itself also `pull` on `OTHER` |
//! | `/v2/`, `/v2/_catalog`, the web UI | valid credentials; the catalog and the UI list only what the caller may pull |
//!
//! What the caller's grant does not allow is refused with `403`; what only its Bearer token's
//! scope does not cover (or what the anonymous puller asks beyond pull) gets `401` and the
//! challenge for the scope it needs.
//!
//! Cancelling an upload session (`DELETE` of `…/blobs/uploads/<id>`) is part of a push and
//! destroys no stored content, so it needs `push`, as `PATCH` and `PUT` of the session do.
//!
//! A mount from a repository the caller may not pull (or one without `from`, which would
//! search every repository) is answered as the spec answers a mount the registry cannot make:
//! a plain upload session (`202`), so whether the blob exists there does not leak.
//!
//! Every decision goes through [`User::allows`] and [`User::may_pull`].

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::Request;
use axum::http::{Method, Uri};

use super::User;
use super::access::Access;
use crate::error::Error;
use crate::routes::{Endpoint, Query};

/// What `method` on `endpoint` needs: a level on a repository, or `None` when valid
/// credentials are enough (the base endpoint and the catalog, which filters itself).
pub fn need<'e>(endpoint: &'e Endpoint, method: &Method) -> Option<(&'e str, Access)> {
    let level = match *method {
        Method::GET | Method::HEAD => Access::Pull,
        Method::DELETE => Access::Delete,
        _ => Access::Push,
    };
    match endpoint {
        Endpoint::Base | Endpoint::Catalog => None,
        Endpoint::Upload(name, _) => Some((name.as_str(), Access::Push)),
        Endpoint::Tags(name)
        | Endpoint::Manifest(name, _)
        | Endpoint::Blob(name, _)
        | Endpoint::UploadStart(name)
        | Endpoint::Referrers(name, _) => Some((name.as_str(), level)),
    }
}

/// Whether `user` may do what `request` asks; a refused cross-repository mount is turned
/// into a plain upload start (its query dropped) and let through. For the web UI, leaves
/// [`crate::ui::MayView`] in the request so its pages show only what `user` may pull.
///
/// Refused: `Err(Denied)` (`403`) when the caller's grant does not allow it. `Err(Unauthorized)`
/// (a `401`, which the middleware answers with its challenge) when only a Bearer token's scope
/// is too narrow, as distribution answers `insufficient_scope`, so the client asks `/token`
/// for the scope it needs (oras does); and for the anonymous puller, which sent no
/// credentials, so the client logs in (docker, containerd).
pub fn user(request: &mut Request, user: &User) -> Result<(), Error> {
    if is_ui(request.uri()) {
        let viewer = user.clone();
        let may_view = crate::ui::MayView(Arc::new(move |repo: &str| viewer.may_pull(repo)));
        request.extensions_mut().insert(may_view);
        return Ok(());
    }
    let parsed = Endpoint::of(request);
    // A path that is no endpoint touches no repository: the handler answers it.
    let Ok(endpoint) = parsed.as_ref() else { return Ok(()) };
    if let Some((repository, level)) = need(endpoint, request.method())
        && !user.allows(repository, level)
    {
        let access = vec![endpoint.access(request.method())];
        let granted = user.level_on(repository, SystemTime::now()).is_some_and(|l| l >= level);
        if user.anonymous || granted {
            return Err(Error::Unauthorized { realm: String::new(), rejected: false, access });
        }
        return Err(Error::Denied { access });
    }
    if matches!(endpoint, Endpoint::UploadStart(_)) && !mount_allowed(request.uri(), user) {
        drop_query(request);
    }
    Ok(())
}

/// Whether a request without credentials may go on when anyone may pull: a pull from a
/// repository, the catalog, or the web UI. Everything else, `/v2/` included (the challenge
/// tells clients to send credentials), needs credentials.
pub fn anonymous_pull(request: &mut Request) -> bool {
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if is_ui(request.uri()) {
        return reads;
    }
    let parsed = Endpoint::of(request);
    match parsed.as_ref() {
        Ok(Endpoint::Catalog) => reads,
        Ok(endpoint) => need(endpoint, request.method()).is_some_and(|(_, level)| level == Access::Pull),
        Err(_) => false,
    }
}

/// Whether the query's cross-repository mount, if any, may be made: `user` may pull the
/// repository it is `from`. A mount without `from` is not made under authentication.
fn mount_allowed(uri: &Uri, user: &User) -> bool {
    let query = Query::parse(uri.query());
    if query.get("mount").is_none() {
        return true;
    }
    query.get("from").is_some_and(|from| user.may_pull(from))
}

/// Drops the request's query: a refused mount becomes the plain upload start that a mount
/// the registry cannot make falls back to (the handler ignores `digest` after a mount too).
fn drop_query(request: &mut Request) {
    let path = request.uri().path().to_string();
    if let Ok(uri) = Uri::builder().path_and_query(path).build() {
        *request.uri_mut() = uri;
    }
}

/// Whether `uri` is a page or asset of the web UI.
fn is_ui(uri: &Uri) -> bool {
    let path = uri.path();
    path == "/ui" || path.starts_with("/ui/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::access::{Grant, RepoGlob};

    fn user_with(access: Access, repos: &[&str]) -> User {
        let repos = repos.iter().map(|r| r.parse::<RepoGlob>().expect("glob")).collect();
        User::new("u", Grant { access, repos, expires: None })
    }

    fn request(method: Method, uri: &str) -> Request {
        Request::builder().method(method).uri(uri).body(axum::body::Body::empty()).expect("request")
    }

    fn digest() -> String {
        format!("sha256:{}", "a".repeat(64))
    }

    fn decide(who: &User, method: Method, uri: &str) -> Result<String, String> {
        let mut req = request(method, uri);
        match user(&mut req, who) {
            Ok(()) => Ok(req.uri().to_string()),
            Err(e) => Err(e.code().to_string()),
        }
    }

    #[test]
    fn each_method_needs_its_level() {
        let blob = format!("/v2/team/app/blobs/{}", digest());
        let upload = format!("/v2/team/app/blobs/uploads/{}", uuid::Uuid::new_v4());
        let cases: &[(Access, Method, &str, bool)] = &[
            (Access::Pull, Method::GET, "/v2/team/app/manifests/v1", true),
            (Access::Pull, Method::HEAD, &blob, true),
            (Access::Pull, Method::GET, "/v2/team/app/tags/list", true),
            (Access::Pull, Method::PUT, "/v2/team/app/manifests/v1", false),
            (Access::Pull, Method::POST, "/v2/team/app/blobs/uploads/", false),
            (Access::Pull, Method::PATCH, &upload, false),
            (Access::Pull, Method::DELETE, &blob, false),
            (Access::Push, Method::PUT, "/v2/team/app/manifests/v1", true),
            (Access::Push, Method::DELETE, "/v2/team/app/manifests/v1", false),
            (Access::Push, Method::DELETE, &upload, true),
            (Access::Push, Method::GET, &upload, true),
            (Access::Delete, Method::DELETE, &blob, true),
            (Access::Pull, Method::GET, "/v2/", true),
            (Access::Pull, Method::GET, "/v2/_catalog", true),
        ];
        for (level, method, uri, allowed) in cases {
            let result = decide(&user_with(*level, &["team/*"]), method.clone(), uri);
            assert_eq!(result.is_ok(), *allowed, "{level} {method} {uri}: {result:?}");
            if !allowed {
                assert_eq!(result, Err("DENIED".to_string()));
            }
        }
        // Outside its globs, a user may do nothing; an expired grant allows nothing.
        let pusher = user_with(Access::Delete, &["team/*"]);
        assert!(decide(&pusher, Method::GET, "/v2/other/manifests/v1").is_err());
        assert!(decide(&pusher, Method::GET, "/v2/team/a/b/manifests/v1").is_err());
        let mut expired = user_with(Access::Delete, &["**"]);
        expired.grant.expires = Some(std::time::SystemTime::now());
        assert!(decide(&expired, Method::GET, "/v2/team/app/manifests/v1").is_err());
    }

    /// What only a token's scope refuses is a `401` (the client asks `/token` for the scope);
    /// what the grant refuses is a `403`; the anonymous puller is asked to log in for more
    /// than pull.
    #[test]
    fn a_token_too_narrow_is_challenged_and_a_grant_too_narrow_denied() {
        let mut writer = user_with(Access::Push, &["team/*"]);
        let pull_app = crate::auth::token::ResourceActions {
            kind: "repository".into(),
            name: "team/app".into(),
            actions: vec!["pull".into()],
        };
        writer.scope = Some(crate::auth::token::Scope::of(&[pull_app]));
        assert!(decide(&writer, Method::GET, "/v2/team/app/manifests/v1").is_ok());
        let unauthorized = Err("UNAUTHORIZED".to_string());
        assert_eq!(decide(&writer, Method::POST, "/v2/team/app/blobs/uploads/"), unauthorized);
        assert_eq!(decide(&writer, Method::DELETE, "/v2/team/app/manifests/v1"), Err("DENIED".into()));
        assert_eq!(decide(&writer, Method::POST, "/v2/other/blobs/uploads/"), Err("DENIED".into()));
        let anonymous = crate::auth::anonymous();
        assert!(decide(&anonymous, Method::GET, "/v2/app/manifests/v1").is_ok());
        assert_eq!(decide(&anonymous, Method::POST, "/v2/app/blobs/uploads/"), unauthorized);
    }

    #[test]
    fn a_mount_from_a_repository_the_user_may_not_pull_is_a_plain_upload() {
        let pusher = user_with(Access::Push, &["team/*"]);
        let mount = |from: &str| format!("/v2/team/app/blobs/uploads/?mount={}{from}", digest());
        assert_eq!(decide(&pusher, Method::POST, &mount("&from=team/base")), Ok(mount("&from=team/base")));
        for refused in ["&from=secret/base", ""] {
            assert_eq!(
                decide(&pusher, Method::POST, &mount(refused)),
                Ok("/v2/team/app/blobs/uploads/".to_string()),
                "{refused:?}"
            );
        }
        let monolithic = format!("/v2/team/app/blobs/uploads/?digest={}", digest());
        assert_eq!(decide(&pusher, Method::POST, &monolithic), Ok(monolithic.clone()));
    }

    #[test]
    fn anonymous_pull_reads_and_nothing_else() {
        let blob = format!("/v2/app/blobs/{}", digest());
        for (method, uri, allowed) in [
            (Method::GET, "/v2/app/manifests/v1", true),
            (Method::HEAD, blob.as_str(), true),
            (Method::GET, "/v2/_catalog", true),
            (Method::GET, "/ui/", true),
            (Method::GET, "/v2/", false),
            (Method::PUT, "/v2/app/manifests/v1", false),
            (Method::POST, "/v2/app/blobs/uploads/", false),
            (Method::DELETE, blob.as_str(), false),
            (Method::GET, "/metrics", false),
            (Method::GET, "/v2/Bad/manifests/v1", false),
        ] {
            assert_eq!(anonymous_pull(&mut request(method.clone(), uri)), allowed, "{method} {uri}");
        }
    }

    #[test]
    fn the_ui_gets_the_users_view() {
        let reader = user_with(Access::Pull, &["team/*"]);
        let mut req = request(Method::GET, "/ui/");
        user(&mut req, &reader).expect("the UI needs only credentials");
        let view = req.extensions().get::<crate::ui::MayView>().expect("a view");
        assert!((view.0)("team/app") && !(view.0)("other"));
    }
}
