//! The UI's HTML, rendered on the server. Every value from storage or the request goes through
//! [`esc`].

use std::fmt::Write as _;

use axum::http::StatusCode;

use super::{ManifestView, RepoSummary, TagSummary};
use crate::oci::manifest::{Descriptor, Kind};
use crate::units::human_bytes;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment (tags and digests are already URL-safe but for `:`).
fn url_part(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `2026-01-01T00:00:00.123Z` → `2026-01-01 00:00:00 UTC`; anything else as it is.
pub(crate) fn display_time(rfc3339: &str) -> String {
    let looks_right = rfc3339.len() >= 19 && rfc3339.as_bytes().get(10) == Some(&b'T');
    if !looks_right {
        return rfc3339.to_string();
    }
    let zone = if rfc3339.ends_with('Z') { " UTC".to_string() } else { format!(" ({})", &rfc3339[19..]) };
    format!("{} {}{zone}", &rfc3339[..10], &rfc3339[11..19])
}

fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ => digest.to_string(),
    }
}

fn repo_url(name: &str) -> String {
    format!("/ui/repositories/{}", url_part(name))
}

fn manifest_url(name: &str, reference: &str) -> String {
    format!("/ui/repositories/{}/-/manifests/{}", url_part(name), url_part(reference))
}

/// A pull command that one click selects (and the script copies).
fn pull_command(command: &str) -> String {
    let c = esc(command);
    format!(
        "<span class=\"pull\"><code class=\"cmd\">{c}</code><button type=\"button\" class=\"copy\" \
         data-copy=\"{c}\" title=\"Copy to the clipboard\">Copy</button></span>"
    )
}

/// The frame of every page: a title, breadcrumbs (label, link) and the body.
fn layout(title: &str, crumbs: &[(String, Option<String>)], body: &str) -> String {
    let mut nav = String::from("<a href=\"/ui/\">Repositories</a>");
    for (label, link) in crumbs {
        nav.push_str(" <span class=\"sep\">/</span> ");
        match link {
            Some(link) => {
                let _ = write!(nav, "<a href=\"{}\">{}</a>", esc(link), esc(label));
            }
            None => {
                let _ = write!(nav, "<span>{}</span>", esc(label));
            }
        }
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · regctl</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/style.css\">\
         <script src=\"/ui/assets/app.js\" defer></script></head>\
         <body><header><a class=\"brand\" href=\"/ui/\">regctl registry</a>\
         <span class=\"readonly\">read-only</span></header>\
         <nav class=\"crumbs\">{nav}</nav><main>{body}</main>\
         <footer>regctl {version} · OCI distribution v1.1</footer></body></html>\n",
        title = esc(title),
        version = env!("CARGO_PKG_VERSION"),
    )
}

/// A page saying what went wrong.
pub(crate) fn error(status: StatusCode, message: &str) -> String {
    let body = format!("<h1>{}</h1><p class=\"empty\">{}</p>", status.as_u16(), esc(message));
    layout(status.canonical_reason().unwrap_or("Error"), &[], &body)
}

/// What a browser shows when its user cancels the password prompt.
pub(crate) fn sign_in_required() -> String {
    let body = "<h1>Sign in required</h1><p class=\"empty\">This registry asks for the same user name and \
                password as <code>docker login</code>. Reload the page to be asked again.</p>";
    layout("Sign in required", &[], body)
}

/// Where a page of the repository list is: its search, and its neighbours.
pub(crate) struct ListPlace<'a> {
    /// The search, as typed.
    pub(crate) query: &'a str,
    /// The first page (nothing precedes it).
    pub(crate) first: bool,
    /// The first name of this page, when another page precedes it.
    pub(crate) previous: Option<&'a str>,
    /// The last name of this page, when another page follows.
    pub(crate) next: Option<&'a str>,
}

/// One page of the repository list, with links to the first, the previous and the next page.
pub(crate) fn repositories(repos: &[RepoSummary], place: &ListPlace<'_>) -> String {
    let mut body = format!(
        "<h1>Repositories</h1>\
         <form class=\"search\" method=\"get\" action=\"/ui/\" role=\"search\">\
         <input type=\"search\" name=\"q\" id=\"filter\" value=\"{}\" placeholder=\"Search repositories\" \
         aria-label=\"Search repositories\" autocomplete=\"off\"><button type=\"submit\">Search</button></form>",
        esc(place.query)
    );
    if repos.is_empty() {
        let message = if place.first && place.query.is_empty() {
            "No repositories yet. Push an image, e.g. <code>skopeo copy … docker://HOST/NAME:TAG</code>."
                .to_string()
        } else {
            format!("No repository matches “{}”.", esc(place.query))
        };
        let _ = write!(body, "<p class=\"empty\">{message}</p>");
    } else {
        body.push_str(
            "<table class=\"list\" id=\"repositories\"><thead><tr><th>Name</th><th>Tags</th></tr></thead><tbody>",
        );
        for repo in repos {
            let _ = write!(
                body,
                "<tr data-name=\"{name}\"><td><a href=\"{link}\">{name}</a></td><td>{tags}</td></tr>",
                name = esc(&repo.name),
                link = esc(&repo_url(&repo.name)),
                tags = repo.tags,
            );
        }
        body.push_str("</tbody></table><p class=\"empty hidden\" id=\"no-match\">No repository matches.</p>");
    }
    let list_url = |from: Option<(&'static str, &str)>| {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if !place.query.is_empty() {
            query.push(("q", place.query));
        }
        query.extend(from);
        let query = serde_urlencoded::to_string(query).unwrap_or_default();
        if query.is_empty() { "/ui/".to_string() } else { format!("/ui/?{query}") }
    };
    let mut links = Vec::new();
    if !place.first {
        links.push(format!("<a href=\"{}\" rel=\"first\">« First page</a>", esc(&list_url(None))));
    }
    if let Some(first) = place.previous {
        let url = list_url(Some(("before", first)));
        links.push(format!("<a href=\"{}\" rel=\"prev\">‹ Previous page</a>", esc(&url)));
    }
    if let Some(last) = place.next {
        links.push(format!(
            "<a href=\"{}\" rel=\"next\">Next page »</a>",
            esc(&list_url(Some(("last", last))))
        ));
    }
    if !links.is_empty() {
        let _ = write!(body, "<nav class=\"pager\">{}</nav>", links.join(" "));
    }
    layout("Repositories", &[], &body)
}

/// A repository's tags.
pub(crate) fn repository(name: &str, tags: &[TagSummary], host: &str) -> String {
    let mut body = format!(
        "<h1>{} <span class=\"count\">{} tag{}</span></h1>",
        esc(name),
        tags.len(),
        if tags.len() == 1 { "" } else { "s" }
    );
    if tags.is_empty() {
        body.push_str(
            "<p class=\"empty\">No tags. Manifests pushed by digest only are listed by the API.</p>",
        );
    } else {
        body.push_str(
            "<table class=\"list\" id=\"tags\"><thead><tr><th>Tag</th><th>Digest</th><th>Size</th>\
             <th>Created</th><th>Platform</th><th>Pull</th></tr></thead><tbody>",
        );
        for t in tags {
            let platforms = if t.platforms.is_empty() {
                "<span class=\"muted\">—</span>".to_string()
            } else {
                t.platforms.iter().map(|p| format!("<span class=\"chip\">{}</span>", esc(p))).collect()
            };
            let _ = write!(
                body,
                "<tr data-tag=\"{tag}\"><td class=\"tag\"><a href=\"{link}\">{tag}</a></td>\
                 <td><a class=\"digest\" href=\"{dlink}\" title=\"{digest}\">{short}</a></td>\
                 <td class=\"num\" title=\"{bytes} bytes\">{size}</td><td>{created}</td><td>{platforms}</td>\
                 <td>{pull}</td></tr>",
                tag = esc(&t.tag),
                link = esc(&manifest_url(name, &t.tag)),
                dlink = esc(&manifest_url(name, &t.digest)),
                digest = esc(&t.digest),
                short = esc(&short_digest(&t.digest)),
                bytes = t.size,
                size = human_bytes(t.size),
                created = t.created.as_deref().map_or_else(|| "<span class=\"muted\">—</span>".into(), esc),
                pull = pull_command(&format!("docker pull {host}/{name}:{}", t.tag)),
            );
        }
        body.push_str("</tbody></table>");
    }
    layout(name, &[(name.to_string(), None)], &body)
}

fn descriptor_rows(body: &mut String, name: &str, descriptors: &[Descriptor], link_manifests: bool) {
    for d in descriptors {
        let digest = d.digest.to_string();
        let shown = if link_manifests {
            format!("<a class=\"digest\" href=\"{}\">{}</a>", esc(&manifest_url(name, &digest)), esc(&digest))
        } else {
            format!("<span class=\"digest\">{}</span>", esc(&digest))
        };
        let _ = write!(
            body,
            "<tr><td>{shown}</td><td>{}</td><td class=\"num\" title=\"{} bytes\">{}</td></tr>",
            esc(&d.media_type),
            d.size,
            human_bytes(d.size)
        );
    }
}

/// One manifest: summary, pull commands, children or config and layers, referrers, raw JSON.
pub(crate) fn manifest(view: &ManifestView, host: &str) -> String {
    let name = &view.name;
    let mut body = format!(
        "<h1>{}<span class=\"at\">{}</span></h1>",
        esc(name),
        esc(&{
            if view.reference.contains(':') {
                format!("@{}", short_digest(&view.reference))
            } else {
                format!(":{}", view.reference)
            }
        })
    );
    let kind = match view.kind {
        Some(Kind::Index) => "index (multi-platform)",
        Some(Kind::Image) => "image",
        None => "unrecognised",
    };
    let tags = if view.tags.is_empty() {
        "<span class=\"muted\">untagged</span>".to_string()
    } else {
        view.tags
            .iter()
            .map(|t| format!("<a class=\"chip\" href=\"{}\">{}</a>", esc(&manifest_url(name, t)), esc(t)))
            .collect()
    };
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>Digest</dt><dd><code class=\"cmd\" id=\"digest\">{digest}</code></dd>\
         <dt>Media type</dt><dd>{mt}</dd><dt>Kind</dt><dd>{kind}</dd><dt>Manifest size</dt><dd>{size}</dd>\
         <dt>Tags</dt><dd>{tags}</dd>",
        digest = esc(&view.digest),
        mt = esc(&view.media_type),
        size = human_bytes(view.size),
    );
    if let Some(config) = &view.config_json {
        if let Some(created) = config.get("created").and_then(|c| c.as_str()) {
            let _ = write!(body, "<dt>Created</dt><dd id=\"created\">{}</dd>", esc(&display_time(created)));
        }
        if let Some(platform) = super::platform_of_config(config) {
            let _ = write!(body, "<dt>Platform</dt><dd><span class=\"chip\">{}</span></dd>", esc(&platform));
        }
        let total: u64 = view.config.iter().chain(&view.layers).map(|d| d.size).sum();
        let layers = view.layers.len();
        let plural = if layers == 1 { "" } else { "s" };
        let _ = write!(body, "<dt>Image size</dt><dd>{} ({layers} layer{plural})</dd>", human_bytes(total));
    }
    if let Some(subject) = &view.subject {
        let digest = subject.digest.to_string();
        let _ = write!(
            body,
            "<dt>Subject</dt><dd><a class=\"digest\" href=\"{}\">{}</a></dd>",
            esc(&manifest_url(name, &digest)),
            esc(&digest)
        );
    }
    body.push_str("</dl><h2>Pull</h2><div class=\"pulls\">");
    for tag in &view.tags {
        body.push_str(&pull_command(&format!("docker pull {host}/{name}:{tag}")));
    }
    body.push_str(&pull_command(&format!("docker pull {host}/{name}@{}", view.digest)));
    body.push_str("</div>");

    if !view.children.is_empty() {
        body.push_str(
            "<h2>Platforms</h2><table class=\"list\" id=\"children\"><thead><tr><th>Platform</th>\
             <th>Digest</th><th>Media type</th><th>Size</th></tr></thead><tbody>",
        );
        for (child, platform) in &view.children {
            let digest = child.digest.to_string();
            let _ = write!(
                body,
                "<tr><td>{}</td><td><a class=\"digest\" href=\"{}\">{}</a></td><td>{}</td><td class=\"num\">{}</td></tr>",
                platform.as_deref().map_or_else(
                    || "<span class=\"muted\">—</span>".into(),
                    |p| format!("<span class=\"chip\">{}</span>", esc(p))
                ),
                esc(&manifest_url(name, &digest)),
                esc(&short_digest(&digest)),
                esc(&child.media_type),
                human_bytes(child.size),
            );
        }
        body.push_str("</tbody></table>");
    }
    if let Some(config) = &view.config {
        body.push_str("<h2>Config</h2><table class=\"list\"><thead><tr><th>Digest</th><th>Media type</th><th>Size</th></tr></thead><tbody>");
        descriptor_rows(&mut body, name, std::slice::from_ref(config), false);
        body.push_str("</tbody></table>");
        if let Some(json) = &view.config_json {
            if let Some(details) = json.get("config") {
                body.push_str("<dl class=\"facts\">");
                for (key, label) in [
                    ("Entrypoint", "Entrypoint"),
                    ("Cmd", "Command"),
                    ("WorkingDir", "Working directory"),
                    ("User", "User"),
                ] {
                    if let Some(value) = details.get(key).filter(|v| !v.is_null() && v.as_str() != Some("")) {
                        let _ =
                            write!(body, "<dt>{label}</dt><dd><code>{}</code></dd>", esc(&value.to_string()));
                    }
                }
                if let Some(env) = details.get("Env").and_then(|e| e.as_array()) {
                    let list: String = env
                        .iter()
                        .filter_map(|e| e.as_str())
                        .map(|e| format!("<code>{}</code><br>", esc(e)))
                        .collect();
                    let _ = write!(body, "<dt>Environment</dt><dd>{list}</dd>");
                }
                if let Some(labels) = details.get("Labels").and_then(|l| l.as_object()) {
                    let list: String = labels
                        .iter()
                        .map(|(k, v)| {
                            format!("<code>{}={}</code><br>", esc(k), esc(v.as_str().unwrap_or_default()))
                        })
                        .collect();
                    let _ = write!(body, "<dt>Labels</dt><dd>{list}</dd>");
                }
                body.push_str("</dl>");
            }
            let pretty = serde_json::to_string_pretty(json).unwrap_or_default();
            let _ = write!(
                body,
                "<details><summary>Config JSON</summary><pre class=\"json\">{}</pre></details>",
                esc(&pretty)
            );
        }
    }
    if !view.layers.is_empty() {
        body.push_str("<h2>Layers</h2><table class=\"list\" id=\"layers\"><thead><tr><th>Digest</th><th>Media type</th><th>Size</th></tr></thead><tbody>");
        descriptor_rows(&mut body, name, &view.layers, false);
        body.push_str("</tbody></table>");
    }
    if !view.referrers.descriptors.is_empty() {
        body.push_str("<h2>Referrers</h2><table class=\"list\" id=\"referrers\"><thead><tr><th>Digest</th><th>Artifact type</th><th>Size</th></tr></thead><tbody>");
        for r in &view.referrers.descriptors {
            let digest = r.digest.to_string();
            let _ = write!(
                body,
                "<tr><td><a class=\"digest\" href=\"{}\">{}</a></td><td>{}</td><td class=\"num\">{}</td></tr>",
                esc(&manifest_url(name, &digest)),
                esc(&short_digest(&digest)),
                esc(r.artifact_type.as_deref().unwrap_or(&r.media_type)),
                human_bytes(r.size)
            );
        }
        body.push_str("</tbody></table>");
        if view.referrers.more {
            let _ = write!(
                body,
                "<p class=\"empty\">Only the first {} referrers by digest are shown; the referrers API lists them all.</p>",
                view.referrers.descriptors.len()
            );
        }
    }
    let _ =
        write!(body, "<h2>Manifest</h2><pre class=\"json\" id=\"manifest-json\">{}</pre>", esc(&view.raw));
    let crumbs = [(name.clone(), Some(repo_url(name))), (view.reference.clone(), None)];
    layout(&format!("{name}:{}", view.reference), &crumbs, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_from_storage() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        let place =
            ListPlace { query: "\"><script>", first: false, previous: Some("a<b"), next: Some("a<b") };
        let page = repositories(&[RepoSummary { name: "a<b".into(), tags: 1 }], &place);
        assert!(!page.contains("<script>") && page.contains("a&lt;b"), "{page}");
    }

    /// Issue 22: the repository list links to the next page after its last name, and back to the
    /// first, keeping the search.
    #[test]
    fn the_repository_list_links_its_pages() {
        let repos = [RepoSummary { name: "team1/app9".into(), tags: 3 }];
        let place =
            ListPlace { query: "app", first: false, previous: Some("team1/app9"), next: Some("team1/app9") };
        let page = repositories(&repos, &place);
        assert!(page.contains("href=\"/ui/?q=app&amp;last=team1%2Fapp9\" rel=\"next\""), "{page}");
        assert!(page.contains("href=\"/ui/?q=app&amp;before=team1%2Fapp9\" rel=\"prev\""), "{page}");
        assert!(page.contains("href=\"/ui/?q=app\" rel=\"first\""), "{page}");
        let page = repositories(&repos, &ListPlace { query: "", first: true, previous: None, next: None });
        assert!(!page.contains("rel=\"next\"") && !page.contains("rel=\"first\""), "{page}");
        assert!(!page.contains("rel=\"prev\""), "{page}");
    }

    #[test]
    fn times_and_digests_are_shortened() {
        assert_eq!(display_time("2026-01-01T10:20:30.5Z"), "2026-01-01 10:20:30 UTC");
        assert_eq!(display_time("yesterday"), "yesterday");
        assert_eq!(short_digest(&format!("sha256:{}", "a".repeat(64))), "sha256:aaaaaaaaaaaa");
        assert_eq!(manifest_url("a/b", "sha256:x"), "/ui/repositories/a/b/-/manifests/sha256:x");
    }
}
