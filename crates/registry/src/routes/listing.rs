//! Content discovery: tags list, catalog and the referrers API, all paginated with `n`, `last`
//! and `Link`.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::Req;
use crate::auth::User;
use crate::error::{Error, Result};
use crate::oci::manifest::{Descriptor, OCI_INDEX};
use crate::oci::{Digest, RepoName};
use crate::registry::{MAX_REFERRERS_PAGE, ReferrersQuery, Registry};

/// How many entries to read for a page of `n`: one more than asked, to know whether another
/// page follows.
fn one_more(n: Option<usize>) -> usize {
    n.map_or(usize::MAX, |n| n.saturating_add(1))
}

/// Cuts `page` to at most `n` entries; whether any were cut (another page follows).
fn cut_to(page: &mut Vec<String>, n: Option<usize>) -> bool {
    let more = n.is_some_and(|n| page.len() > n);
    if let Some(n) = n {
        page.truncate(n);
    }
    more
}

/// The `n` parameter: the most entries a page may hold, if asked.
fn page_size(req: &Req<'_>) -> Result<Option<usize>> {
    req.query.get("n").map(|n| n.parse::<usize>().map_err(|_| Error::PaginationInvalid)).transpose()
}

/// Adds `Link: <path?n=N&last=X>; rel="next"` when another page follows.
fn with_next_link(
    mut response: Response,
    path: &str,
    page: &[String],
    n: Option<usize>,
    more: bool,
) -> Response {
    if let (true, Some(n), Some(last)) = (more, n, page.last()) {
        let query =
            serde_urlencoded::to_string([("n", n.to_string()), ("last", last.clone())]).unwrap_or_default();
        if let Ok(link) = HeaderValue::from_str(&format!("<{path}?{query}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, link);
        }
    }
    response
}

/// One page of a repository's tags, read from storage only as far as the page reaches.
pub(super) async fn tags(req: Req<'_>, name: &RepoName) -> Result<Response> {
    let n = page_size(&req)?;
    let tags = req.state.registry.tags_page(name, req.query.get("last"), one_more(n)).await?;
    let mut page: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    let more = cut_to(&mut page, n);
    let response = axum::Json(json!({"name": name.as_str(), "tags": page})).into_response();
    Ok(with_next_link(response, &format!("/v2/{name}/tags/list"), &page, n, more))
}

/// One page of the catalog, of the repositories the caller may pull, read from storage only as
/// far as the page reaches.
pub(super) async fn catalog(req: Req<'_>) -> Result<Response> {
    let n = page_size(&req)?;
    let registry = &req.state.registry;
    let mut page = pullable_page(registry, req.user, req.query.get("last"), one_more(n)).await?;
    let more = cut_to(&mut page, n);
    let response = axum::Json(json!({"repositories": page})).into_response();
    Ok(with_next_link(response, "/v2/_catalog", &page, n, more))
}

/// Storage catalog pages read at once while filtering: a caller who may pull few of many
/// repositories costs one listing per this many names skipped.
const FILTER_READ: usize = 1000;

/// Up to `limit` repositories after `last` that `user` may pull (all without one). Storage pages
/// are read until `limit` such names are found or the catalog ends, so a page comes out short
/// only at the end: a client stops at a page without a `Link`, and must not miss the
/// repositories after a stretch it may not see.
async fn pullable_page(
    registry: &Registry,
    user: Option<&User>,
    last: Option<&str>,
    limit: usize,
) -> Result<Vec<String>> {
    let Some(user) = user else { return registry.catalog_page(last, limit).await };
    let mut shown = Vec::new();
    let mut after = last.map(str::to_string);
    loop {
        let read = limit.saturating_sub(shown.len()).max(FILTER_READ);
        let names = registry.catalog_page(after.as_deref(), read).await?;
        let exhausted = names.len() < read;
        after = names.last().cloned();
        shown.extend(names.into_iter().filter(|name| user.may_pull(name)));
        if exhausted || shown.len() >= limit {
            shown.truncate(limit);
            return Ok(shown);
        }
    }
}

/// The referrers index, one page at a time: at most `n` descriptors (and see
/// [`crate::registry::ReferrersQuery`] for the other bounds), after the digest `last`, with a
/// `Link` to the next page that carries the filter along.
pub(super) async fn referrers(req: Req<'_>, name: &RepoName, subject: &Digest) -> Result<Response> {
    let artifact_type = req.query.get("artifactType");
    let n = page_size(&req)?;
    let last = req.query.get("last").map(|l| l.parse::<Digest>().map_err(|_| Error::PaginationInvalid));
    let last = last.transpose()?;
    let query =
        ReferrersQuery { artifact_type, after: last.as_ref(), limit: n.unwrap_or(MAX_REFERRERS_PAGE) };
    let page = req.state.registry.referrers(name, subject, query).await?;
    let index = ReferrersIndex { schema_version: 2, media_type: OCI_INDEX, manifests: &page.descriptors };
    let mut response = axum::Json(index).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    if artifact_type.is_some() {
        headers
            .insert(HeaderName::from_static("oci-filters-applied"), HeaderValue::from_static("artifactType"));
    }
    if let (true, Some(last)) = (page.more, page.descriptors.last()) {
        let mut query = vec![("last", last.digest.to_string())];
        query.extend(n.map(|n| ("n", n.to_string())));
        query.extend(artifact_type.map(|t| ("artifactType", t.to_string())));
        let query = serde_urlencoded::to_string(query).unwrap_or_default();
        if let Ok(link) =
            HeaderValue::from_str(&format!("</v2/{name}/referrers/{subject}?{query}>; rel=\"next\""))
        {
            headers.insert(header::LINK, link);
        }
    }
    Ok(response)
}

/// The referrers response: an image index, serialized straight from the page's descriptors.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrersIndex<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: &'a [Descriptor],
}
