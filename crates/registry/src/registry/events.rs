//! What the registry did, told to whoever listens: webhooks ([`crate::notify`]) and metrics
//! ([`crate::metrics`]) subscribe; the registry publishes each event once the operation took
//! effect (for a pull: once the content was found and is about to be sent).
//!
//! The registry does not know HTTP: the layer above hands it a [`Caller`] with what it knows
//! of the request, and the registry passes it on with the event untouched.

use std::fmt::Debug;
use std::sync::Arc;

use crate::oci::{Digest, RepoName, Tag};

/// Who asked for an operation: the authenticated user, and the facts of the request that
/// webhook receivers expect (CNCF distribution's envelope). [`Caller::default`] is nobody:
/// the registry's own work, and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The authenticated user; `None` when authentication is off.
    pub user: Option<String>,
    /// The request's id as the client gave it (`X-Request-Id`); empty when it gave none, and a
    /// subscriber that needs one makes it.
    pub request_id: String,
    /// The client's address (`ip:port`).
    pub addr: String,
    /// The host the client asked for.
    pub host: String,
    /// The scheme the client spoke (`https` behind a trusted proxy that ended TLS); empty for
    /// the registry's own work.
    pub scheme: &'static str,
    /// The request method.
    pub method: String,
    /// The client's own name for itself (`User-Agent`).
    pub user_agent: String,
}

/// A manifest an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFacts {
    /// Its digest.
    pub digest: Digest,
    /// The tag it was pushed or pulled by, if any.
    pub tag: Option<Tag>,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// A manifest was stored (and tagged, when pushed by tag).
    ManifestPushed(ManifestFacts),
    /// A manifest was read by a client.
    ManifestPulled(ManifestFacts),
    /// A manifest was deleted by digest (with its tags).
    ManifestDeleted(Digest),
    /// A tag was deleted; the manifest stays.
    TagDeleted(Tag),
    /// A blob was committed by an upload.
    BlobPushed {
        /// Its digest.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
    },
    /// A blob already stored was linked into the repository (a cross-repository mount).
    BlobMounted {
        /// Its digest.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
        /// The repository it was mounted from, when the client named one.
        from: Option<RepoName>,
    },
    /// A blob (or a range of it) is being sent to a client.
    BlobPulled {
        /// Its digest.
        digest: Digest,
        /// The blob's size in bytes.
        size: u64,
        /// The bytes sent: the size, or the length of the range asked for.
        length: u64,
    },
    /// A blob was unlinked from the repository.
    BlobDeleted(Digest),
    /// An upload session was started.
    UploadStarted,
    /// An upload session was cancelled by its client.
    UploadCancelled,
}

/// One event: what happened, in which repository, on whose request.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The repository.
    pub repository: &'a RepoName,
    /// What happened.
    pub happened: &'a Happened,
    /// Who asked.
    pub caller: &'a Caller,
}

/// Receives the registry's events. Called on the request's task: enqueue or count, never wait.
pub trait Subscriber: Debug + Send + Sync {
    /// Takes note of `event`.
    fn publish(&self, event: Event<'_>);
}

/// The subscribers of one registry.
#[derive(Debug, Default, Clone)]
pub(super) struct Subscribers(Vec<Arc<dyn Subscriber>>);

impl Subscribers {
    /// Adds a subscriber.
    pub(super) fn add(&mut self, subscriber: Arc<dyn Subscriber>) {
        self.0.push(subscriber);
    }

    /// Tells every subscriber.
    pub(super) fn publish(&self, repository: &RepoName, caller: &Caller, happened: Happened) {
        let event = Event { repository, happened: &happened, caller };
        for subscriber in &self.0 {
            subscriber.publish(event);
        }
    }
}
