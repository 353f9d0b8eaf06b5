//! The collection's tests: safety against concurrent pushes and unreadable manifests, cost.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use super::*;
use crate::layout;
use crate::oci::Digest;
use crate::oci::manifest::OCI_MANIFEST;
use crate::oci::{Reference, RepoName};
use crate::registry::Caller;
use crate::registry::{Registry, spawn_watch};
use crate::storage::FsStorage;

async fn blob(registry: &Registry, name: &RepoName, bytes: &'static [u8]) -> (Digest, usize) {
    let digest = Digest::of(crate::oci::Algorithm::Sha256, bytes);
    let id = registry.start_upload(&Caller::default(), name).await.expect("start");
    let body = futures_util::stream::iter(vec![Ok(Bytes::from_static(bytes))]).boxed();
    registry.finish_upload(&Caller::default(), name, &id, &digest, None, Some(body)).await.expect("finish");
    (digest, bytes.len())
}

fn manifest(config: &(Digest, usize), layers: &[&(Digest, usize)]) -> Bytes {
    let d = |(digest, size): &(Digest, usize), mt: &str| serde_json::json!({"mediaType": mt, "digest": digest.to_string(), "size": size});
    let layers: Vec<_> = layers.iter().map(|l| d(l, "application/vnd.oci.image.layer.v1.tar")).collect();
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": d(config, "application/vnd.oci.image.config.v1+json"), "layers": layers,
    });
    Bytes::from(serde_json::to_vec(&m).expect("json"))
}

/// A client was told a blob exists just before a collection started, and pushes the
/// manifest naming it after the mark: the server's pin keeps the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_confirmed_before_the_collection_is_pinned_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
    let registry = Arc::new(Registry::new(storage.clone()));
    let name = RepoName::parse("gc/unit").expect("name");
    let shared = blob(&registry, &name, b"layer used by B, then by C").await;
    let config_b = blob(&registry, &name, b"{\"config\":\"B\"}").await;
    let body_b = manifest(&config_b, &[&shared]);
    let b = registry
        .put_manifest(
            &Caller::default(),
            &name,
            &Reference::parse("b").expect("tag"),
            Some(OCI_MANIFEST),
            body_b,
        )
        .await
        .expect("push B");
    registry
        .delete_manifest(&Caller::default(), &name, &Reference::Digest(b.digest.clone()))
        .await
        .expect("delete B");
    let options = GcOptions {
        dry_run: false,
        delete_untagged: false,
        grace: Duration::from_secs(1),
        upload_max_age: Duration::from_secs(3600),
        settle: Duration::ZERO,
        lease_ttl: Duration::from_secs(60),
        retention: Vec::new(),
        immutable: Default::default(),
    };
    tokio::time::sleep(Duration::from_millis(1500)).await; // B's content is now past the grace period

    let dry =
        collect(storage.as_ref(), &GcOptions { dry_run: true, ..options.clone() }).await.expect("dry run");
    assert_eq!(dry.blobs.len(), 3, "B's manifest, config and layer: {dry:?}");

    // C's client checks the shared layer (HEAD), then the collection starts.
    registry.blob_size(&name, &shared.0).await.expect("HEAD the shared layer");
    spawn_watch(registry.clone());
    let report = collect(storage.as_ref(), &options).await.expect("collect");
    assert_eq!(report.blobs_spared_pinned, 1, "{report:?}");
    let deleted: Vec<&str> = report.blobs.iter().map(|b| b.digest.as_str()).collect();
    let mut expected = vec![b.digest.to_string(), config_b.0.to_string()];
    expected.sort();
    assert_eq!(deleted, expected);

    // C's manifest, pushed after the mark, is accepted with its layer intact.
    let config_c = blob(&registry, &name, b"{\"config\":\"C\"}").await;
    let body_c = manifest(&config_c, &[&shared]);
    registry
        .put_manifest(
            &Caller::default(),
            &name,
            &Reference::parse("c").expect("tag"),
            Some(OCI_MANIFEST),
            body_c,
        )
        .await
        .expect("push C");
    assert!(storage.stat(&layout::blob_data(&shared.0)).await.is_ok());
    for gone in &expected {
        let digest: Digest = gone.parse().expect("digest");
        assert!(storage.stat(&layout::blob_data(&digest)).await.is_err_and(|e| e.is_not_found()));
    }
    // The announcement and the doomed list are gone once the collection ends (pins written
    // by requests that still saw it are cleared by the next collection).
    for path in [active_path(), doomed_path()] {
        assert!(storage.stat(&path).await.is_err_and(|e| e.is_not_found()), "{path} left behind");
    }
}

fn quick(dry_run: bool, delete_untagged: bool) -> GcOptions {
    GcOptions {
        dry_run,
        delete_untagged,
        grace: Duration::ZERO,
        upload_max_age: Duration::from_secs(3600),
        settle: Duration::ZERO,
        lease_ttl: Duration::from_secs(60),
        retention: Vec::new(),
        immutable: Default::default(),
    }
}

/// Writes `body` as a manifest of `name` straight into storage, as an older server or
/// another tool could have; tagged `tag` when given.
async fn store_manifest(storage: &dyn Storage, name: &RepoName, body: &[u8], tag: Option<&str>) -> Digest {
    let digest = Digest::of(crate::oci::Algorithm::Sha256, body);
    let link = Bytes::from(digest.to_string());
    storage.put(&layout::blob_data(&digest), Bytes::copy_from_slice(body)).await.expect("bytes");
    storage.put(&layout::revision_link(name, &digest), link.clone()).await.expect("revision");
    if let Some(tag) = tag {
        let tag = crate::oci::Tag::parse(tag).expect("tag");
        storage.put(&layout::tag_current_link(name, &tag), link).await.expect("tag");
    }
    digest
}

async fn exists(storage: &dyn Storage, digest: &Digest) -> bool {
    storage.stat(&layout::blob_data(digest)).await.is_ok()
}

/// Issue 23: a manifest whose bytes garbage collection cannot read had its config and
/// layers deleted. Now the collection (the one `regctl gc` and the server's schedule run)
/// deletes nothing and names it, whether a tag reaches it or not.
#[tokio::test]
async fn an_unreadable_manifest_stops_the_collection_before_it_deletes_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
    let registry = Registry::new(storage.clone());
    let name = RepoName::parse("gc/odd").expect("name");
    let garbage = blob(&registry, &name, b"nothing names this").await;
    let config = blob(&registry, &name, b"{\"config\":1}").await;
    let layer = blob(&registry, &name, b"a layer").await;
    let sane = manifest(&config, &[&layer]);
    let mut body = sane[..sane.len() - 1].to_vec();
    body.extend_from_slice(br#","x":"\ud800"}"#);
    for tag in [Some("t"), None] {
        let hostile = store_manifest(storage.as_ref(), &name, &body, tag).await;
        for (dry_run, delete_untagged) in [(true, false), (false, false), (false, true)] {
            let result = collect(storage.as_ref(), &quick(dry_run, delete_untagged)).await;
            let Err(GcError::Unreadable(items)) = &result else {
                panic!("tag {tag:?}, dry run {dry_run}, untagged {delete_untagged}: {result:?}");
            };
            assert_eq!(items.len(), 1, "{items:?}");
            assert_eq!(
                (items[0].repository.as_str(), items[0].item.clone()),
                ("gc/odd", format!("manifest {hostile}"))
            );
            let message = result.as_ref().err().map(ToString::to_string).unwrap_or_default();
            assert!(
                message.starts_with("nothing was deleted") && message.contains(&hostile.to_string()),
                "{message}"
            );
            for kept in [&garbage.0, &config.0, &layer.0, &hostile] {
                assert!(exists(storage.as_ref(), kept).await, "{kept} deleted");
            }
        }
        // Untagged, it still stops the collection.
        if let Some(tag) = tag {
            registry
                .delete_manifest(&Caller::default(), &name, &Reference::parse(tag).expect("tag"))
                .await
                .expect("untag");
        }
    }
    // Once it is deleted, the collection runs.
    let hostile = Digest::of(crate::oci::Algorithm::Sha256, &body);
    registry
        .delete_manifest(&Caller::default(), &name, &Reference::Digest(hostile.clone()))
        .await
        .expect("delete");
    let report = collect(storage.as_ref(), &quick(false, false)).await.expect("collect");
    assert_eq!(report.blobs.len(), 4, "{report:?}");
    assert!(!exists(storage.as_ref(), &garbage.0).await);
}

/// A tag whose link names no digest hides which manifest it keeps.
#[tokio::test]
async fn a_tag_link_that_names_no_digest_stops_the_collection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FsStorage::new(dir.path());
    let name = RepoName::parse("gc/tag").expect("name");
    let tag = crate::oci::Tag::parse("broken").expect("tag");
    storage.put(&layout::tag_current_link(&name, &tag), Bytes::from_static(b"sha256:zz")).await.expect("put");
    let result = collect(&storage, &quick(true, true)).await;
    assert!(
        matches!(&result, Err(GcError::Unreadable(items)) if items[0].item == "tag broken"),
        "{result:?}"
    );
}

/// A manifest storage fails to read (here a directory where its bytes belong) is no
/// reason to think it names nothing.
#[tokio::test]
async fn a_storage_error_during_the_mark_deletes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
    let registry = Registry::new(storage.clone());
    let name = RepoName::parse("gc/fault").expect("name");
    let garbage = blob(&registry, &name, b"nothing names this").await;
    let config = blob(&registry, &name, b"{\"config\":2}").await;
    let body = manifest(&config, &[]);
    let tag = Reference::parse("t").expect("tag");
    let pushed =
        registry.put_manifest(&Caller::default(), &name, &tag, Some(OCI_MANIFEST), body).await.expect("push");
    let data = dir.path().join(layout::blob_data(&pushed.digest).as_str());
    std::fs::remove_file(&data).expect("remove the bytes");
    std::fs::create_dir(&data).expect("a directory in their place");
    for (dry_run, delete_untagged) in [(true, false), (false, true)] {
        let result = collect(storage.as_ref(), &quick(dry_run, delete_untagged)).await;
        assert!(matches!(result, Err(GcError::Storage(_))), "{result:?}");
        for kept in [&garbage.0, &config.0] {
            assert!(exists(storage.as_ref(), kept).await, "{kept} deleted");
        }
    }
}

/// Docker schema 1 manifests (pushes are refused, older registries stored them) keep the
/// layers they name.
#[tokio::test]
async fn stored_schema1_manifests_keep_their_layers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
    let registry = Registry::new(storage.clone());
    let name = RepoName::parse("gc/old").expect("name");
    let layer = blob(&registry, &name, b"an old layer").await;
    let body = format!(r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{}"}}]}}"#, layer.0);
    store_manifest(storage.as_ref(), &name, body.as_bytes(), Some("old")).await;
    let report = collect(storage.as_ref(), &quick(false, true)).await.expect("collect");
    assert_eq!((report.blobs.len(), report.blobs_in_use), (0, 2), "{report:?}");
}

/// How many `op` calls `metrics` counted.
fn ops(metrics: &crate::metrics::Metrics, op: &str) -> u64 {
    let prefix = format!("regctl_storage_operations_total{{operation=\"{op}\",outcome=\"ok\"}} ");
    let text = metrics.render(None);
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())?.parse().ok()).unwrap_or(0)
}

/// Issue 22: the mark reads one repository at a time (nested ones, and ones holding only
/// uploads, too) with a bounded number of requests each, and a manifest shared by every
/// repository once.
#[tokio::test]
async fn the_mark_costs_a_few_requests_per_repository_and_one_read_per_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let fs: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
    let storage: Arc<dyn Storage> = Arc::new(crate::metrics::InstrumentedStorage::new(fs, metrics.clone()));
    let registry = Registry::new(storage.clone());
    let first = RepoName::parse("a").expect("name");
    let garbage = blob(&registry, &first, b"nothing names this").await;
    let mut bodies = Vec::new();
    for i in 0..3u8 {
        let config =
            blob(&registry, &first, [b"{\"c\":0}", b"{\"c\":1}", b"{\"c\":2}"][usize::from(i)]).await;
        let layer = blob(&registry, &first, [b"layer 0", b"layer 1", b"layer 2"][usize::from(i)]).await;
        bodies.push(manifest(&config, &[&layer]));
    }
    let mut names = vec!["a".to_string(), "a/c".to_string()];
    names.extend((0..10).map(|i| format!("team1/app{i}")));
    for (i, name) in names.iter().enumerate() {
        let name = RepoName::parse(name).expect("name");
        for t in 0..2 {
            store_manifest(storage.as_ref(), &name, &bodies[(i + t) % 3], Some(&format!("t{t}"))).await;
        }
    }
    registry
        .start_upload(&Caller::default(), &RepoName::parse("z/uploads").expect("name"))
        .await
        .expect("an upload");
    let (gets, lists, walks) = (ops(&metrics, "get"), ops(&metrics, "list"), ops(&metrics, "walk"));

    let report = collect(storage.as_ref(), &quick(true, false)).await.expect("collect");
    assert_eq!(report.repositories, names.len() + 1, "{report:?}");
    assert_eq!((report.blobs_in_use, report.blobs.len()), (9, 1), "{report:?}");
    assert_eq!(report.blobs[0].digest, garbage.0.to_string());
    // Each manifest once; no tag link (every revision is a root).
    assert_eq!(ops(&metrics, "get") - gets, 3);
    // Each repository's directory, and the namespaces above them (root, team1, z).
    assert_eq!(ops(&metrics, "list") - lists, names.len() as u64 + 1 + 3);
    // `_manifests` and `_layers` where there are any, `_uploads`, and the blobs.
    assert!(ops(&metrics, "walk") - walks <= 2 * names.len() as u64 + 2);
}

/// A real run removes the links to the blobs it deleted, and only those.
#[tokio::test]
async fn deleted_blobs_lose_their_layer_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
    let registry = Registry::new(storage.clone());
    let name = RepoName::parse("gc/links").expect("name");
    let unused = blob(&registry, &name, b"unused").await;
    let config = blob(&registry, &name, b"{\"config\":3}").await;
    registry
        .put_manifest(
            &Caller::default(),
            &name,
            &Reference::parse("t").expect("tag"),
            Some(OCI_MANIFEST),
            manifest(&config, &[]),
        )
        .await
        .expect("push");
    let report = collect(storage.as_ref(), &quick(false, false)).await.expect("collect");
    assert_eq!(report.blobs.len(), 1, "{report:?}");
    assert!(storage.stat(&layout::layer_link(&name, &unused.0)).await.is_err_and(|e| e.is_not_found()));
    assert!(storage.stat(&layout::layer_link(&name, &config.0)).await.is_ok());
}

/// Names no path may hold, written into the root by another tool or a hostile bucket: the
/// catalog, a collection and the pin reader skip them instead of panicking.
#[tokio::test]
async fn objects_whose_names_cannot_be_paths_are_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v2 = dir.path().join("docker/registry/v2");
    std::fs::create_dir_all(v2.join("repositories/bad\\name/_manifests/tags/t/current")).expect("mkdir");
    std::fs::write(v2.join("repositories/bad\\name/_manifests/tags/t/current/link"), b"sha256:x")
        .expect("link");
    std::fs::create_dir_all(v2.join("repositories/ok/_layers/sha256/a\\b")).expect("mkdir");
    std::fs::write(v2.join("repositories/ok/_layers/sha256/a\\b/link"), b"sha256:x").expect("link");
    std::fs::create_dir_all(v2.join("_regctl/gc/pins")).expect("mkdir");
    std::fs::write(v2.join("_regctl/gc/pins/x\\y"), b"sha256:x").expect("pin");
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
    let registry = Registry::new(storage.clone());
    assert!(registry.catalog().await.expect("catalog").is_empty());
    collect(storage.as_ref(), &quick(true, true)).await.expect("a dry run");
    assert!(crate::registry::pins::read_pins(storage.as_ref()).await.expect("pins").is_empty());
    let walked = storage.walk(&layout::repositories()).await.expect("walk");
    assert!(walked.iter().any(|(name, _)| name.contains('\\')), "the walk reports them: {walked:?}");
}

/// Of two collections started at once on one storage (two servers' schedules), one runs and
/// the other is refused at once, naming the holder of the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_racing_collections_exactly_one_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FsStorage::new(dir.path());
    let options = quick(false, false);
    let (a, b) = tokio::join!(collect(&storage, &options), collect(&storage, &options));
    let busy = |r: &Result<GcReport, GcError>| matches!(r, Err(GcError::Busy { holder, .. }) if holder.contains("pid"));
    assert!(
        (a.is_ok() && busy(&b)) || (busy(&a) && b.is_ok()),
        "one must run, the other be refused: {a:?} / {b:?}"
    );
    // The lease is released at the end: the next one runs.
    collect(&storage, &options).await.expect("the next collection");
}

/// A collection whose process died mid-run (its lease never released, its announcement left
/// behind) keeps others out only until its lease expires; the next one then runs and cleans up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_that_died_is_taken_over_once_its_lease_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FsStorage::new(dir.path());
    let ttl = Duration::from_millis(500);
    let dead = crate::lease::Lease::acquire(&storage, GC_LEASE, ttl).await.expect("lease");
    announce(&storage, Duration::from_secs(1)).await.expect("announce");
    drop(dead); // killed: nothing released
    let options = GcOptions { lease_ttl: ttl, ..quick(false, false) };
    assert!(matches!(collect(&storage, &options).await, Err(GcError::Busy { .. })));
    tokio::time::sleep(ttl).await;
    collect(&storage, &options).await.expect("taken over");
    for path in [active_path(), doomed_path()] {
        assert!(storage.stat(&path).await.is_err_and(|e| e.is_not_found()), "{path} left behind");
    }
}
