//! Content discovery: tags list and catalog (paginated with `n`, `last` and `Link`), and the
//! referrers API.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Req;
use crate::error::{Error, Result};
use crate::oci::manifest::OCI_INDEX;
use crate::oci::{Digest, RepoName};

/// One page of a sorted list: entries after `last`, at most `n`, and whether more follow.
fn paginate(items: Vec<String>, req: &Req<'_>) -> Result<(Vec<String>, Option<usize>, bool)> {
    let n = match req.query.get("n") {
        Some(n) => Some(n.parse::<usize>().map_err(|_| Error::PaginationInvalid)?),
        None => None,
    };
    let last = req.query.get("last");
    let mut page: Vec<String> = items.into_iter().filter(|i| last.is_none_or(|l| i.as_str() > l)).collect();
    let more = n.is_some_and(|n| page.len() > n);
    if let Some(n) = n {
        page.truncate(n);
    }
    Ok((page, n, more))
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

pub(super) async fn tags(req: Req<'_>, name: &RepoName) -> Result<Response> {
    let tags = req.state.registry.tags(name).await?;
    let (page, n, more) = paginate(tags.iter().map(|t| t.to_string()).collect(), &req)?;
    let response = axum::Json(json!({"name": name.as_str(), "tags": page})).into_response();
    Ok(with_next_link(response, &format!("/v2/{name}/tags/list"), &page, n, more))
}

pub(super) async fn catalog(req: Req<'_>) -> Result<Response> {
    let repositories = req.state.registry.catalog().await?;
    let (page, n, more) = paginate(repositories, &req)?;
    let response = axum::Json(json!({"repositories": page})).into_response();
    Ok(with_next_link(response, "/v2/_catalog", &page, n, more))
}

pub(super) async fn referrers(req: Req<'_>, name: &RepoName, subject: &Digest) -> Result<Response> {
    let artifact_type = req.query.get("artifactType");
    let manifests = req.state.registry.referrers(name, subject, artifact_type).await?;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let mut response = axum::Json(index).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    if artifact_type.is_some() {
        headers
            .insert(HeaderName::from_static("oci-filters-applied"), HeaderValue::from_static("artifactType"));
    }
    Ok(response)
}
