//! The read-only web UI, server-rendered HTML behind the registry's authentication:
//!
//! ```text
//! /ui/                                           repositories, with search (?q=)
//! /ui/repositories/<name>                        tags: size, digest, created, platforms, pull
//! /ui/repositories/<name>/-/manifests/<ref>      a manifest: children or config and layers,
//!                                                referrers, the raw JSON
//! /ui/assets/{style.css,app.js}                  embedded; the script only adds copy buttons
//!                                                and live filtering, pages work without it
//! ```
//!
//! `/-/` separates a repository name from the rest of the path: no name component can be `-`.

mod pages;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::Value;

use crate::error::Error;
use crate::oci::manifest::{Descriptor, Kind, Manifest};
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::registry::{ReferrersPage, ReferrersQuery, Registry};

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("app.js");
/// Tags summarised at once on a repository page.
const TAG_CONCURRENCY: usize = 8;
/// Children of an index whose manifests are read for their sizes.
const MAX_CHILDREN: usize = 32;
/// The largest config blob shown.
const MAX_CONFIG: u64 = 4 << 20;
/// Scripts and styles come from this server only; nothing inline, nothing fetched elsewhere.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Which repositories the caller may see (those it may pull), left in the request by the
/// authentication layer. Without one, every repository: authentication is off, or anyone
/// may pull.
#[derive(Clone)]
pub struct MayView(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl MayView {
    /// Whether the caller of a request with `view` may see `repository`.
    fn allows(view: Option<&MayView>, repository: &str) -> bool {
        view.is_none_or(|view| (view.0)(repository))
    }
}

/// The UI's routes over `registry` (the caller puts them behind authentication).
pub fn router<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>) -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(repositories))
        .route("/ui/assets/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/ui/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/ui/repositories/{*rest}", get(repository_or_manifest))
        .with_state(registry)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    response
}

/// An HTML page with the headers every page carries.
fn page(status: StatusCode, html: String) -> Response {
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The `401` answer for UI pages: the registry's challenge headers with a page a person can
/// read when they cancel the password prompt.
pub(crate) fn unauthorized(response: Response) -> Response {
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    parts.headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    Response::from_parts(parts, axum::body::Body::from(pages::sign_in_required()))
}

/// An error page: 404 for unknown names and references, 500 (logged) for the rest.
fn error_page(e: Error) -> Response {
    let (status, message) = match e {
        Error::NameUnknown | Error::NameInvalid => (StatusCode::NOT_FOUND, "No such repository.".to_string()),
        Error::ManifestUnknown | Error::TagInvalid | Error::DigestInvalid(_) => {
            (StatusCode::NOT_FOUND, "No such tag or manifest.".to_string())
        }
        other => {
            tracing::error!(error = %other, "web UI page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("The registry could not answer: {other}."))
        }
    };
    page(status, pages::error(status, &message))
}

/// The host clients pull from, as the browser reached us.
fn registry_host(headers: &HeaderMap) -> String {
    headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost:5000").to_string()
}

/// The repository list's query: a search, and where the page starts.
#[derive(Debug, Deserialize)]
struct Search {
    #[serde(default)]
    q: String,
    /// The page starts after this name (the previous page's last).
    last: Option<String>,
    /// The page ends before this name (the next page's first): "Previous page".
    before: Option<String>,
}

/// Repositories a page of the list shows.
const REPOS_PER_PAGE: usize = 50;

/// A repository in the list.
#[derive(Debug, Clone)]
pub(crate) struct RepoSummary {
    pub(crate) name: String,
    pub(crate) tags: usize,
}

/// The names of one page of the repository list matching `query`, read with the catalog's
/// pagination: after `last` ([`Registry::catalog_page`]), or backwards before `before`
/// ([`Registry::catalog_page_before`]). Catalog pages are read until the list's page is full of
/// matches, never the whole catalog at once. Returns the names in order, and whether more
/// matching names follow in the direction read.
async fn matching_page(
    registry: &Registry,
    query: &str,
    search: &Search,
    view: Option<&MayView>,
) -> Result<(Vec<String>, bool), Error> {
    let backwards = search.last.is_none() && search.before.is_some();
    let mut from = if backwards { search.before.clone() } else { search.last.clone() };
    let mut shown = Vec::new();
    loop {
        let mut names = match (&from, backwards) {
            (Some(before), true) => registry.catalog_page_before(before, REPOS_PER_PAGE + 1).await?,
            (after, _) => registry.catalog_page(after.as_deref(), REPOS_PER_PAGE + 1).await?,
        };
        let exhausted = names.len() <= REPOS_PER_PAGE;
        if backwards {
            names.reverse();
        }
        for name in names {
            if shown.len() == REPOS_PER_PAGE {
                if backwards {
                    shown.reverse();
                }
                return Ok((shown, true));
            }
            from = Some(name.clone());
            if name.contains(query) && MayView::allows(view, &name) {
                shown.push(name);
            }
        }
        if exhausted {
            if backwards {
                shown.reverse();
            }
            return Ok((shown, false));
        }
    }
}

/// One page of the repository list ([`matching_page`]) of what the caller may see, with links
/// to the first, previous and next pages.
async fn repositories(
    State(registry): State<Arc<Registry>>,
    view: Option<Extension<MayView>>,
    Query(search): Query<Search>,
) -> Response {
    let registry = registry.as_ref();
    let query = search.q.trim().to_lowercase();
    let view = view.map(|Extension(view)| view);
    let (shown, more) = match matching_page(registry, &query, &search, view.as_ref()).await {
        Ok(found) => found,
        Err(e) => return error_page(e),
    };
    let backwards = search.last.is_none() && search.before.is_some();
    // Read backwards, the page is followed by `before`; read forwards, preceded by `last`.
    let (earlier, later) = if backwards { (more, true) } else { (search.last.is_some(), more) };
    let previous = shown.first().filter(|_| earlier).cloned();
    let next = shown.last().filter(|_| later).cloned();
    let summaries: Result<Vec<RepoSummary>, Error> = futures_util::stream::iter(shown)
        .map(|name| async move {
            let tags = match RepoName::parse(&name) {
                Some(repo) => match registry.tags(&repo).await {
                    Ok(tags) => tags.len(),
                    Err(Error::NameUnknown) => 0,
                    Err(e) => return Err(e),
                },
                None => 0,
            };
            Ok(RepoSummary { name, tags })
        })
        .buffered(TAG_CONCURRENCY)
        .try_collect()
        .await;
    let place = pages::ListPlace {
        query: &search.q,
        first: !earlier,
        previous: previous.as_deref(),
        next: next.as_deref(),
    };
    match summaries {
        Ok(summaries) => page(StatusCode::OK, pages::repositories(&summaries, &place)),
        Err(e) => error_page(e),
    }
}

/// A repository's page or one of its manifests; a repository the caller may not see is
/// answered as one that does not exist.
async fn repository_or_manifest(
    State(registry): State<Arc<Registry>>,
    view: Option<Extension<MayView>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Response {
    let host = registry_host(&headers);
    let (name, tail) = match rest.split_once("/-/") {
        Some((name, tail)) => (name, Some(tail)),
        None => (rest.trim_end_matches('/'), None),
    };
    let Some(name) = RepoName::parse(name) else { return error_page(Error::NameUnknown) };
    if !MayView::allows(view.as_ref().map(|Extension(view)| view), name.as_str()) {
        return error_page(Error::NameUnknown);
    }
    let result = match tail.and_then(|t| t.strip_prefix("manifests/")) {
        Some(reference) => match Reference::parse(reference) {
            Ok(reference) => manifest_page(&registry, &name, &reference, &host).await,
            Err(_) => Err(Error::ManifestUnknown),
        },
        None if tail.is_some() => Err(Error::ManifestUnknown),
        None => repository_page(&registry, &name, &host).await,
    };
    result.unwrap_or_else(error_page)
}

/// What the tag table shows of one tag.
#[derive(Debug, Clone, Default)]
pub(crate) struct TagSummary {
    pub(crate) tag: String,
    pub(crate) digest: String,
    /// Compressed size: config and layers (of every child, for an index).
    pub(crate) size: u64,
    pub(crate) created: Option<String>,
    pub(crate) platforms: Vec<String>,
}

async fn repository_page(registry: &Registry, name: &RepoName, host: &str) -> Result<Response, Error> {
    let tags = registry.tags(name).await?;
    let summaries: Vec<TagSummary> = futures_util::stream::iter(tags)
        .map(|tag| summarize_tag(registry, name, tag))
        .buffered(TAG_CONCURRENCY)
        .try_collect::<Vec<Option<TagSummary>>>()
        .await?
        .into_iter()
        .flatten()
        .collect();
    Ok(page(StatusCode::OK, pages::repository(name.as_str(), &summaries, host)))
}

/// A tag's row; `None` when it was deleted while the page was being built.
async fn summarize_tag(registry: &Registry, name: &RepoName, tag: Tag) -> Result<Option<TagSummary>, Error> {
    let stored = match registry.get_manifest(name, &Reference::Tag(tag.clone())).await {
        Ok(stored) => stored,
        Err(Error::ManifestUnknown) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut summary =
        TagSummary { tag: tag.to_string(), digest: stored.digest.to_string(), ..TagSummary::default() };
    let Ok(manifest) = Manifest::parse(&stored.body, None) else { return Ok(Some(summary)) };
    match manifest.kind {
        Kind::Image => {
            summary.size = image_size(&manifest);
            let config = read_config(registry, name, &manifest).await?;
            summary.created = config.as_ref().and_then(created_of);
            summary.platforms.extend(config.as_ref().and_then(platform_of_config));
        }
        Kind::Index => {
            for child in manifest.manifests.iter().take(MAX_CHILDREN) {
                summary.platforms.extend(child.platform.as_ref().and_then(platform_text));
                let child_ref = Reference::Digest(child.digest.clone());
                let Ok(stored) = registry.get_manifest(name, &child_ref).await else { continue };
                let Ok(child_manifest) = Manifest::parse(&stored.body, None) else { continue };
                summary.size += image_size(&child_manifest);
                if summary.created.is_none() && child_manifest.kind == Kind::Image {
                    let config = read_config(registry, name, &child_manifest).await?;
                    summary.created = config.as_ref().and_then(created_of);
                }
            }
            summary.platforms.sort();
            summary.platforms.dedup();
        }
    }
    Ok(Some(summary))
}

/// Config and layers, as registries report an image's (compressed) size.
fn image_size(manifest: &Manifest) -> u64 {
    manifest.config.iter().chain(&manifest.layers).map(|d| d.size).sum()
}

/// The image config as JSON, when it is a readable JSON blob of reasonable size.
async fn read_config(
    registry: &Registry,
    name: &RepoName,
    manifest: &Manifest,
) -> Result<Option<Value>, Error> {
    let Some(config) = &manifest.config else { return Ok(None) };
    if config.size > MAX_CONFIG || !config.media_type.contains("json") {
        return Ok(None);
    }
    read_json_blob(registry, name, &config.digest).await
}

async fn read_json_blob(
    registry: &Registry,
    name: &RepoName,
    digest: &Digest,
) -> Result<Option<Value>, Error> {
    match registry.blob_size(name, digest).await {
        Ok(size) if size <= MAX_CONFIG => {}
        Ok(_) | Err(Error::BlobUnknown) => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut stream = registry.blob_reader(digest, None).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| {
            Error::Storage(crate::storage::StorageError::Backend {
                path: crate::layout::blob_data(digest),
                source,
            })
        })?;
        bytes.extend_from_slice(&chunk);
    }
    Ok(serde_json::from_slice(&bytes).ok())
}

/// The config's `created`, shown as `2026-01-01 00:00:00 UTC`.
fn created_of(config: &Value) -> Option<String> {
    let created = config.get("created")?.as_str()?;
    Some(pages::display_time(created))
}

fn platform_of_config(config: &Value) -> Option<String> {
    platform_text(config)
}

/// `os/architecture[/variant]` of a config or an index entry's `platform`.
fn platform_text(platform: &Value) -> Option<String> {
    let os = platform.get("os")?.as_str()?;
    let arch = platform.get("architecture")?.as_str()?;
    let mut text = format!("{os}/{arch}");
    if let Some(variant) = platform.get("variant").and_then(Value::as_str) {
        text.push('/');
        text.push_str(variant);
    }
    Some(text)
}

/// The referrers a manifest page lists: the first ones by digest, so that a page costs the same
/// whatever the number of referrers (the API lists them all, page by page).
const UI_REFERRERS: ReferrersQuery<'static> = ReferrersQuery { artifact_type: None, after: None, limit: 100 };

/// Everything the manifest page shows.
#[derive(Debug)]
pub(crate) struct ManifestView {
    pub(crate) name: String,
    pub(crate) reference: String,
    pub(crate) digest: String,
    pub(crate) media_type: String,
    pub(crate) size: u64,
    pub(crate) raw: String,
    pub(crate) kind: Option<Kind>,
    pub(crate) children: Vec<(Descriptor, Option<String>)>,
    pub(crate) config: Option<Descriptor>,
    pub(crate) config_json: Option<Value>,
    pub(crate) layers: Vec<Descriptor>,
    pub(crate) referrers: ReferrersPage,
    pub(crate) subject: Option<Descriptor>,
    pub(crate) tags: Vec<String>,
}

async fn manifest_page(
    registry: &Registry,
    name: &RepoName,
    reference: &Reference,
    host: &str,
) -> Result<Response, Error> {
    let stored = registry.get_manifest(name, reference).await?;
    let parsed = Manifest::parse(&stored.body, None).ok();
    let raw = serde_json::from_slice::<Value>(&stored.body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&stored.body).into_owned());
    let mut view = ManifestView {
        name: name.to_string(),
        reference: reference.to_string(),
        digest: stored.digest.to_string(),
        media_type: stored.media_type.clone(),
        size: stored.body.len() as u64,
        raw,
        kind: parsed.as_ref().map(|m| m.kind),
        children: Vec::new(),
        config: None,
        config_json: None,
        layers: Vec::new(),
        referrers: registry.referrers(name, &stored.digest, UI_REFERRERS).await.unwrap_or_default(),
        subject: None,
        tags: Vec::new(),
    };
    // The tags pointing here, so a page reached by digest still shows them.
    for tag in registry.tags(name).await.unwrap_or_default() {
        if let Ok(found) = registry.get_manifest(name, &Reference::Tag(tag.clone())).await
            && found.digest == stored.digest
        {
            view.tags.push(tag.to_string());
        }
    }
    if let Some(manifest) = parsed {
        view.subject = manifest.subject.clone();
        match manifest.kind {
            Kind::Image => {
                view.config_json = read_config(registry, name, &manifest).await?;
                view.config = manifest.config.clone();
                view.layers = manifest.layers.clone();
            }
            Kind::Index => {
                for child in manifest.manifests.iter() {
                    let platform = child.platform.as_ref().and_then(platform_text);
                    view.children.push((child.clone(), platform));
                }
            }
        }
    }
    Ok(page(StatusCode::OK, pages::manifest(&view, host)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_read_from_config_or_descriptor() {
        let v = serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"});
        assert_eq!(platform_text(&v).as_deref(), Some("linux/arm64/v8"));
        assert_eq!(platform_text(&serde_json::json!({"os": "linux"})), None);
    }

    /// The `href` of the link `rel` on a rendered page, decoded back to its query.
    fn link(page: &str, rel: &str) -> Option<Search> {
        let end = page.find(&format!("\" rel=\"{rel}\""))?;
        let href = &page[page[..end].rfind("href=\"")? + 6..end];
        let query = href.replace("&amp;", "&");
        let query = query.strip_prefix("/ui/").and_then(|q| q.strip_prefix('?')).unwrap_or_default();
        serde_urlencoded::from_str(query).ok()
    }

    /// Issue 22: the repository list's "Previous page" leads back through the pages "Next page"
    /// went through, with a search, and the first page has no "Previous page".
    #[tokio::test]
    async fn the_repository_list_pages_back_and_forth() {
        use bytes::Bytes;

        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Arc::new(Registry::new(Arc::new(crate::storage::FsStorage::new(dir.path()))));
        let tag = Tag::parse("t").expect("a tag");
        for i in 0..130 {
            let name =
                RepoName::parse(&format!("team{}/{}{i:03}", i % 3, ["app", "db"][i % 2])).expect("name");
            let link = crate::layout::tag_current_link(&name, &tag);
            registry.storage().put(&link, Bytes::from_static(b"sha256:00")).await.expect("put");
        }
        let render = |search: Search, view: Option<MayView>| {
            let registry = registry.clone();
            async move {
                let response = repositories(State(registry), view.map(Extension), Query(search)).await;
                let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
                String::from_utf8(body.to_vec()).expect("utf-8")
            }
        };
        let names = |page: &str| -> Vec<String> {
            page.split("<tr data-name=\"")
                .skip(1)
                .filter_map(|r| r.split('"').next())
                .map(String::from)
                .collect()
        };
        // Issue 19: a caller who may see only some repositories pages through those alone.
        let two_teams = MayView(Arc::new(|name: &str| !name.starts_with("team2/")));
        for (q, view) in [("", None), ("app", None), ("", Some(two_teams))] {
            let mut forward = Vec::new();
            let mut page = render(Search { q: q.into(), last: None, before: None }, view.clone()).await;
            assert!(link(&page, "prev").is_none() && link(&page, "first").is_none(), "{page}");
            loop {
                forward.push(names(&page));
                let Some(next) = link(&page, "next") else { break };
                page = render(next, view.clone()).await;
            }
            assert!(forward.len() >= 2, "{q}: {forward:?}");
            if view.is_some() {
                let seen: Vec<&String> = forward.iter().flatten().collect();
                assert_eq!(seen.len(), 87, "every team0 and team1 repository, once");
                assert!(seen.iter().all(|name| !name.starts_with("team2/")), "{seen:?}");
            }
            let mut backward = vec![names(&page)];
            while let Some(previous) = link(&page, "prev") {
                page = render(previous, view.clone()).await;
                backward.push(names(&page));
            }
            backward.reverse();
            assert_eq!(backward, forward, "q={q}");
            assert!(link(&page, "first").is_none() && link(&page, "next").is_some(), "{page}");
        }
    }
}
