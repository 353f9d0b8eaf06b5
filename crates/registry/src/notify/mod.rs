//! Notifications: push, pull, mount and delete events POSTed to webhook endpoints in CNCF
//! distribution's envelope (`application/vnd.docker.distribution.events.v1+json`), so receivers
//! written for `registry:2` work unchanged.
//!
//! Each endpoint has its own queue ([`queue`]): events are written to storage before they are
//! sent, retried with back-off until the endpoint accepts them, and kept across restarts.
//! Delivery is at least once: an endpoint may see an event twice (after a restart in the middle
//! of a delivery, or when several servers share the storage).

mod queue;

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::{EndpointConfig, NotificationsConfig};
use crate::metrics::{EventOutcome, Metrics};
use crate::oci::Digest;
use crate::registry::{self, Happened, ManifestFacts, Subscriber};
use crate::storage::Storage;

/// Media type reported for blobs in events, as distribution does.
const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// The media type of an event envelope.
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// An envelope of events, as POSTed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// The events, oldest first.
    pub events: Vec<Event>,
}

/// One event, with distribution's field names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// A unique id (a UUID).
    pub id: String,
    /// When it happened (RFC 3339, UTC, nanoseconds).
    pub timestamp: String,
    /// `push`, `pull`, `mount` or `delete`.
    pub action: String,
    /// What was acted on.
    pub target: Target,
    /// The request that caused it.
    pub request: RequestInfo,
    /// Who made the request.
    pub actor: Actor,
    /// The registry that saw it.
    pub source: Source,
}

/// The content an event is about.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Media type of the manifest or blob (blobs are `application/octet-stream`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Its digest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Bytes sent or received (the size, for distribution's older receivers).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub length: u64,
    /// The repository.
    pub repository: String,
    /// Where it can be fetched.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// The tag, when a manifest was pushed, pulled or deleted by tag.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    /// The repository a mounted blob came from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from_repository: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The request behind an event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RequestInfo {
    /// A unique id of the request.
    pub id: String,
    /// The client's address (`ip:port`).
    pub addr: String,
    /// The `Host` the client asked for.
    pub host: String,
    /// The HTTP method.
    pub method: String,
    /// The client's `User-Agent`.
    pub useragent: String,
}

/// Who made the request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Actor {
    /// The authenticated user, when authentication is on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// The registry instance that produced the event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Source {
    /// Its listening address.
    pub addr: String,
    /// A UUID chosen when the process started.
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

/// Sends events to every configured endpoint, through one queue each.
#[derive(Debug)]
pub struct Notifier {
    endpoints: Vec<EndpointHandle>,
    source: Source,
    metrics: Arc<Metrics>,
    /// `https` when the server speaks TLS: the scheme of the URLs in events whose caller names
    /// none.
    scheme: &'static str,
}

#[derive(Debug)]
struct EndpointHandle {
    config: EndpointConfig,
    tx: mpsc::UnboundedSender<queue::Command>,
}

impl Notifier {
    /// Starts one queue per enabled endpoint, resuming what an earlier run left in `storage`.
    /// `None` when no endpoint is enabled. Must be called inside a Tokio runtime.
    pub fn start(
        config: &NotificationsConfig,
        storage: Arc<dyn Storage>,
        source_addr: String,
        scheme: &'static str,
        metrics: Arc<Metrics>,
    ) -> Option<Arc<Notifier>> {
        let endpoints: Vec<EndpointHandle> = config
            .endpoints
            .iter()
            .filter(|e| !e.disabled)
            .map(|e| {
                let tx = queue::spawn(e.clone(), storage.clone(), metrics.clone());
                tracing::info!(endpoint = %e.name, url = %e.url, "notifications on");
                EndpointHandle { config: e.clone(), tx }
            })
            .collect();
        if endpoints.is_empty() {
            return None;
        }
        let source = Source { addr: source_addr, instance_id: uuid::Uuid::new_v4().to_string() };
        Some(Arc::new(Notifier { endpoints, source, metrics, scheme }))
    }

    /// Queues an event for every endpoint that wants it.
    fn queue(&self, event: Event) {
        for endpoint in &self.endpoints {
            if !wants(&endpoint.config, &event) {
                self.metrics.notification(&endpoint.config.name, EventOutcome::Ignored, 1);
                continue;
            }
            if endpoint.tx.send(queue::Command::Events(vec![event.clone()])).is_err() {
                tracing::warn!(endpoint = %endpoint.config.name, "notification queue has stopped; event lost");
            }
        }
    }

    /// Writes every event still in memory to storage, so a restart resumes them; called on
    /// shutdown. Waits at most a few seconds per endpoint.
    pub async fn flush(&self) {
        for endpoint in &self.endpoints {
            let (done, wait) = tokio::sync::oneshot::channel();
            if endpoint.tx.send(queue::Command::Flush(done)).is_ok() {
                let limit = endpoint.config.timeout + std::time::Duration::from_secs(5);
                if tokio::time::timeout(limit, wait).await.is_err() {
                    tracing::warn!(endpoint = %endpoint.config.name, "notification queue did not flush in time");
                }
            }
        }
    }
}

impl Subscriber for Notifier {
    fn publish(&self, event: registry::Event<'_>) {
        let Some((action, target)) = target(event, self.scheme) else { return };
        let caller = event.caller;
        self.queue(Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            action: action.to_string(),
            target,
            request: RequestInfo {
                // Made only for events: a request id costs every request otherwise.
                id: match caller.request_id.as_str() {
                    "" => uuid::Uuid::new_v4().to_string(),
                    id => id.to_string(),
                },
                addr: caller.addr.clone(),
                host: caller.host.clone(),
                method: caller.method.clone(),
                useragent: caller.user_agent.clone(),
            },
            actor: Actor { name: caller.user.clone().unwrap_or_default() },
            source: self.source.clone(),
        });
    }
}

/// An event's action and target in distribution's terms, URLs with the scheme the caller spoke
/// (else `scheme`, the listener's); `None` for events webhooks do not carry (upload sessions).
fn target(event: registry::Event<'_>, scheme: &str) -> Option<(&'static str, Target)> {
    let scheme = if event.caller.scheme.is_empty() { scheme } else { event.caller.scheme };
    let repository = event.repository.to_string();
    let url = |kind: &str, digest: &Digest| {
        format!("{scheme}://{}/v2/{repository}/{kind}/{digest}", event.caller.host)
    };
    let manifest = |facts: &ManifestFacts| Target {
        media_type: facts.media_type.clone(),
        size: facts.size,
        length: facts.size,
        url: url("manifests", &facts.digest),
        digest: facts.digest.to_string(),
        repository: repository.clone(),
        tag: facts.tag.as_ref().map(ToString::to_string).unwrap_or_default(),
        ..Target::default()
    };
    let blob = |digest: &Digest, size: u64, length: u64| Target {
        media_type: BLOB_MEDIA_TYPE.into(),
        size,
        length,
        url: url("blobs", digest),
        digest: digest.to_string(),
        repository: repository.clone(),
        ..Target::default()
    };
    let found = match event.happened {
        Happened::ManifestPushed(facts) => ("push", manifest(facts)),
        Happened::ManifestPulled(facts) => ("pull", manifest(facts)),
        Happened::ManifestDeleted(digest) | Happened::BlobDeleted(digest) => (
            "delete",
            Target { digest: digest.to_string(), repository: repository.clone(), ..Target::default() },
        ),
        Happened::TagDeleted(tag) => {
            ("delete", Target { tag: tag.to_string(), repository: repository.clone(), ..Target::default() })
        }
        Happened::BlobPushed { digest, size } => ("push", blob(digest, *size, *size)),
        Happened::BlobMounted { digest, size, from } => {
            let mut target = blob(digest, *size, *size);
            target.from_repository = from.as_ref().map(ToString::to_string).unwrap_or_default();
            ("mount", target)
        }
        Happened::BlobPulled { digest, size, length } => ("pull", blob(digest, *size, *length)),
        Happened::UploadStarted | Happened::UploadCancelled => return None,
    };
    Some(found)
}

/// Whether `endpoint`'s filters let `event` through.
fn wants(endpoint: &EndpointConfig, event: &Event) -> bool {
    let media_type = event.target.media_type.as_str();
    let ignored_type = !media_type.is_empty()
        && endpoint.ignoredmediatypes.iter().chain(&endpoint.ignore.mediatypes).any(|m| m == media_type);
    let ignored_action = endpoint.ignore.actions.iter().any(|a| a.eq_ignore_ascii_case(&event.action));
    !(ignored_type || ignored_action)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(toml_text: &str) -> EndpointConfig {
        toml::from_str(&format!("name = \"e\"\nurl = \"http://127.0.0.1:1/\"\n{toml_text}"))
            .expect("endpoint")
    }

    fn event(action: &str, media_type: &str) -> Event {
        Event {
            id: "1".into(),
            timestamp: "t".into(),
            action: action.into(),
            target: Target { media_type: media_type.into(), repository: "r".into(), ..Target::default() },
            request: RequestInfo::default(),
            actor: Actor::default(),
            source: Source::default(),
        }
    }

    #[test]
    fn urls_take_the_scheme_the_client_spoke() {
        let repository = crate::oci::RepoName::parse("team/app").expect("a name");
        let digest = Digest::of(crate::oci::Algorithm::Sha256, b"manifest");
        let happened = Happened::ManifestPushed(ManifestFacts {
            digest: digest.clone(),
            tag: None,
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 8,
        });
        let url = |scheme: &'static str| {
            let caller =
                registry::Caller { host: "registry.example.com".into(), scheme, ..Default::default() };
            let event = registry::Event { repository: &repository, happened: &happened, caller: &caller };
            target(event, "http").expect("a target").1.url
        };
        // Behind a proxy that ended TLS, the plain listener's scheme is not the client's.
        assert_eq!(url("https"), format!("https://registry.example.com/v2/team/app/manifests/{digest}"));
        assert_eq!(url(""), format!("http://registry.example.com/v2/team/app/manifests/{digest}"));
    }

    #[test]
    fn filters_by_action_and_media_type() {
        let e =
            endpoint("ignoredmediatypes = [\"application/octet-stream\"]\nignore = { actions = [\"pull\"] }");
        assert!(wants(&e, &event("push", "application/vnd.oci.image.manifest.v1+json")));
        assert!(!wants(&e, &event("push", "application/octet-stream")));
        assert!(!wants(&e, &event("pull", "application/vnd.oci.image.manifest.v1+json")));
        assert!(wants(&e, &event("delete", "")), "deletes have no media type");
        let e = endpoint("ignore = { mediatypes = [\"x/y\"] }");
        assert!(!wants(&e, &event("delete", "x/y")));
    }

    #[test]
    fn envelope_uses_distribution_field_names() {
        let mut e = event("push", "application/octet-stream");
        e.target.size = 3;
        e.target.length = 3;
        e.target.digest = "sha256:abc".into();
        e.source.instance_id = "i".into();
        let json = serde_json::to_value(Envelope { events: vec![e] }).expect("json");
        let target = &json["events"][0]["target"];
        assert_eq!(target["mediaType"], "application/octet-stream");
        assert_eq!(target["size"], 3);
        assert!(target.get("tag").is_none(), "empty fields are left out");
        assert_eq!(json["events"][0]["source"]["instanceID"], "i");
        assert!(json["events"][0]["actor"].as_object().is_some_and(|a| a.is_empty()));
    }
}
