//! One suite of contract tests that every storage backend must pass.

use bytes::Bytes;
use futures_util::{StreamExt, stream};

use super::{ByteStream, Condition, Storage, StorageError, StoragePath};

fn path(s: &str) -> StoragePath {
    StoragePath::new([s])
}

fn chunks(parts: &[&'static [u8]]) -> ByteStream {
    let parts: Vec<_> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
    stream::iter(parts).boxed()
}

pub(crate) async fn read_all(
    storage: &dyn Storage,
    p: &StoragePath,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = storage.reader(p, range).await.expect("reader");
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

/// Runs every contract check against `storage`, which must start empty.
pub async fn run(storage: &dyn Storage) {
    missing_objects_are_not_found(storage).await;
    put_get_stat_and_ranges(storage).await;
    list_children(storage).await;
    list_pages_follow_name_order(storage).await;
    append_is_all_or_nothing(storage).await;
    rename_and_delete(storage).await;
    directories_leave_with_their_last_object(storage).await;
    rename_replaces_an_existing_object(storage).await;
    tidy_keeps_finished_objects(storage).await;
    rename_moves_only_the_expected_size(storage).await;
    appends_at_one_offset_do_not_both_land(storage).await;
    a_hanging_append_cannot_alter_a_renamed_object(storage).await;
    walk_reports_sizes_and_times(storage).await;
    conditional_writes_create_once_and_replace_from_one_version(storage).await;
    conditional_writes_racing_from_one_state_land_once(storage).await;
}

async fn missing_objects_are_not_found(storage: &dyn Storage) {
    let p = path("missing/object");
    assert!(storage.get(&p).await.is_err_and(|e| e.is_not_found()));
    assert!(storage.stat(&p).await.is_err_and(|e| e.is_not_found()));
    assert!(storage.reader(&p, None).await.is_err_and(|e| e.is_not_found()));
    assert!(storage.delete(&p).await.is_err_and(|e| e.is_not_found()));
    assert!(storage.list(&path("missing")).await.expect("list").is_empty());
}

async fn put_get_stat_and_ranges(storage: &dyn Storage) {
    let p = path("a/b/data");
    storage.put(&p, Bytes::from_static(b"hello world")).await.expect("put");
    assert_eq!(storage.get(&p).await.expect("get"), Bytes::from_static(b"hello world"));
    assert_eq!(storage.stat(&p).await.expect("stat").size, 11);
    assert_eq!(read_all(storage, &p, None).await, b"hello world");
    assert_eq!(read_all(storage, &p, Some(6..11)).await, b"world");
    assert_eq!(read_all(storage, &p, Some(0..1)).await, b"h");
    // A directory is not an object.
    assert!(storage.stat(&path("a/b")).await.is_err_and(|e| e.is_not_found()));
    storage.put(&p, Bytes::from_static(b"replaced")).await.expect("overwrite");
    assert_eq!(storage.get(&p).await.expect("get"), Bytes::from_static(b"replaced"));
}

async fn list_children(storage: &dyn Storage) {
    storage.put(&path("l/x/1"), Bytes::new()).await.expect("put");
    storage.put(&path("l/x/2"), Bytes::new()).await.expect("put");
    storage.put(&path("l/y"), Bytes::new()).await.expect("put");
    let mut names = storage.list(&path("l")).await.expect("list");
    names.sort();
    assert_eq!(names, ["x", "y"]);
    let mut names = storage.list(&path("l/x")).await.expect("list");
    names.sort();
    assert_eq!(names, ["1", "2"]);
    // Many directories at once, each as `list` gives it, in the order asked, a missing one empty;
    // more of them than are listed together.
    let mut dirs = vec![path("l/x"), path("l"), path("l/missing")];
    dirs.extend((0..20).map(|_| path("l/x")));
    let listed = storage.list_many(&dirs).await.expect("list_many");
    assert_eq!(listed.len(), dirs.len());
    for (i, mut names) in listed.into_iter().enumerate() {
        names.sort();
        let expected: &[&str] = match i {
            1 => &["x", "y"],
            2 => &[],
            _ => &["1", "2"],
        };
        assert_eq!(names, expected, "directory {i}");
    }
    assert!(storage.list_many(&[]).await.expect("list_many").is_empty());
}

/// Pages of children in name order, whatever order the backend keeps keys in: on S3 `a-b/`
/// and `a.b/` sort before `a/` (`-` and `.` are below `/`), `a_b/` after it.
async fn list_pages_follow_name_order(storage: &dyn Storage) {
    let dir = path("pages");
    let mut names = vec!["a", "a-b", "a-b-c", "a.b", "a_b", "ab", "a.b.c", "b-", "b"];
    for name in &names {
        let link = StoragePath::new(["pages", name, "current", "link"]);
        storage.put(&link, Bytes::from_static(b"x")).await.expect("put");
    }
    // An object among the directories, and a directory without its `current/link`.
    storage.put(&path("pages/a-a"), Bytes::from_static(b"x")).await.expect("put");
    let other = StoragePath::new(["pages", "a-c", "index", "link"]);
    storage.put(&other, Bytes::from_static(b"x")).await.expect("put");
    names.extend(["a-a", "a-c"]);
    names.sort_unstable();
    for limit in 1..=names.len() + 1 {
        let mut walked: Vec<String> = Vec::new();
        loop {
            let after = walked.last().map(String::as_str);
            let page = storage.list_page(&dir, after, limit).await.expect("a page");
            assert!(page.len() <= limit, "{page:?}");
            walked.extend(page.iter().cloned());
            if page.len() < limit {
                break;
            }
        }
        assert_eq!(walked, names, "pages of {limit}");
    }
    storage.delete(&dir).await.expect("delete");
}

async fn append_is_all_or_nothing(storage: &dyn Storage) {
    let p = path("up/data");
    assert_eq!(storage.append(&p, 0, chunks(&[b"abc", b"def"])).await.expect("append"), 6);
    assert_eq!(storage.append(&p, 6, chunks(&[b"gh"])).await.expect("append"), 8);
    let err = storage.append(&p, 3, chunks(&[b"zz"])).await.expect_err("wrong offset");
    assert!(matches!(err, StorageError::OffsetMismatch { actual: 8, .. }), "{err:?}");
    let failing: ByteStream =
        stream::iter(vec![Ok(Bytes::from_static(b"ij")), Err(std::io::Error::other("client went away"))])
            .boxed();
    let err = storage.append(&p, 8, failing).await.expect_err("failing body");
    assert!(matches!(err, StorageError::Body(_)), "{err:?}");
    assert_eq!(storage.stat(&p).await.expect("stat").size, 8);
    // Appended bytes are readable once the object is renamed into place.
    let done = path("up/done");
    storage.rename(&p, &done, 8).await.expect("rename");
    assert_eq!(read_all(storage, &done, None).await, b"abcdefgh");
    assert!(storage.stat(&p).await.is_err_and(|e| e.is_not_found()));
    assert_eq!(storage.append(&path("up/empty"), 0, chunks(&[])).await.expect("empty"), 0);
}

async fn rename_and_delete(storage: &dyn Storage) {
    let (from, to) = (path("r/src"), path("r2/deep/dst"));
    storage.put(&from, Bytes::from_static(b"moved")).await.expect("put");
    storage.rename(&from, &to, 5).await.expect("rename");
    assert!(storage.stat(&from).await.is_err_and(|e| e.is_not_found()));
    assert_eq!(storage.get(&to).await.expect("get"), Bytes::from_static(b"moved"));
    storage.put(&path("d/x/1"), Bytes::new()).await.expect("put");
    storage.put(&path("d/x/2"), Bytes::new()).await.expect("put");
    storage.delete(&path("d/x")).await.expect("delete tree");
    assert!(storage.list(&path("d/x")).await.expect("list").is_empty());
    storage.delete(&to).await.expect("delete object");
    assert!(storage.get(&to).await.is_err_and(|e| e.is_not_found()));
}

/// A listing names a directory only while an object lies below it: deleting its last object,
/// renaming it away or deleting a directory whole removes the directories left empty (the
/// catalog and tags lists decide from names alone).
async fn directories_leave_with_their_last_object(storage: &dyn Storage) {
    let listed = |dir: &'static str| async move {
        let mut names = storage.list(&path(dir)).await.expect("list");
        names.sort();
        names
    };
    storage.put(&path("gone/tags/a/current/link"), Bytes::from_static(b"x")).await.expect("put");
    storage.put(&path("gone/tags/b/current/link"), Bytes::from_static(b"x")).await.expect("put");
    storage.put(&path("gone/tags/b/index/sha256/00/link"), Bytes::from_static(b"x")).await.expect("put");
    storage.put(&path("gone/up/u/data"), Bytes::from_static(b"x")).await.expect("put");
    assert_eq!(listed("gone").await, ["tags", "up"]);
    storage.delete(&path("gone/tags/a/current/link")).await.expect("delete an object");
    assert_eq!(listed("gone/tags").await, ["b"]);
    storage.delete(&path("gone/tags/b")).await.expect("delete a directory");
    assert_eq!(listed("gone").await, ["up"]);
    storage.rename(&path("gone/up/u/data"), &path("gone-moved/data"), 1).await.expect("rename");
    assert!(listed("gone").await.is_empty());
    // Written again into a directory that is gone.
    storage.put(&path("gone/tags/a/current/link"), Bytes::from_static(b"y")).await.expect("put again");
    assert_eq!(listed("gone/tags").await, ["a"]);
    storage.delete(&path("gone")).await.expect("delete");
    storage.delete(&path("gone-moved")).await.expect("delete");
}

/// A blob committed again (a second push of the same digest) lands over the first copy.
async fn rename_replaces_an_existing_object(storage: &dyn Storage) {
    let (from, to) = (path("over/src"), path("over/dst"));
    storage.put(&to, Bytes::from_static(b"old bytes")).await.expect("put the old object");
    storage.append(&from, 0, chunks(&[b"new"])).await.expect("append");
    storage.rename(&from, &to, 3).await.expect("rename over it");
    assert_eq!(storage.get(&to).await.expect("get"), Bytes::from_static(b"new"));
    assert_eq!(storage.stat(&to).await.expect("stat").size, 3);
    assert!(storage.stat(&from).await.is_err_and(|e| e.is_not_found()));
}

/// Housekeeping with everything abandoned before now removes no finished object.
async fn tidy_keeps_finished_objects(storage: &dyn Storage) {
    let kept = path("tidy/kept");
    storage.put(&kept, Bytes::from_static(b"kept")).await.expect("put");
    let future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    storage.tidy(future).await.expect("tidy");
    assert_eq!(storage.get(&kept).await.expect("get"), Bytes::from_static(b"kept"));
}

async fn rename_moves_only_the_expected_size(storage: &dyn Storage) {
    let (from, to) = (path("size/up"), path("size/done"));
    storage.append(&from, 0, chunks(&[b"abc"])).await.expect("append");
    for wrong in [2, 4] {
        let err = storage.rename(&from, &to, wrong).await.expect_err("a wrong size");
        assert!(matches!(err, StorageError::OffsetMismatch { actual: 3, .. }), "{err:?}");
    }
    assert!(storage.stat(&to).await.is_err_and(|e| e.is_not_found()), "moved despite the wrong size");
    storage.rename(&from, &to, 3).await.expect("rename");
    assert_eq!(read_all(storage, &to, None).await, b"abc");
}

/// A body that reports on `started` when first asked for bytes, waits for `go`, then sends
/// `last` and ends, or fails when `last` is `None` (the client went away). Nothing is sent
/// before `go`, as when the server is still filling its first block.
fn gated(
    started: tokio::sync::oneshot::Sender<()>,
    go: tokio::sync::oneshot::Receiver<()>,
    last: Option<&'static [u8]>,
) -> ByteStream {
    stream::once(async move {
        let _ = started.send(());
        let _ = go.await;
        last.map(Bytes::from_static).ok_or_else(|| std::io::Error::other("client went away"))
    })
    .boxed()
}

/// Two writers (two servers) append at the same offset at once: one lands, whole, the other is
/// refused, and the object holds the one that landed.
async fn appends_at_one_offset_do_not_both_land(storage: &dyn Storage) {
    let (p, done) = (path("race/up"), path("race/done"));
    let (started, is_started) = tokio::sync::oneshot::channel();
    let (go, gate) = tokio::sync::oneshot::channel();
    let slow = storage.append(&p, 0, gated(started, gate, Some(b"aa")));
    let fast = async {
        let _ = is_started.await;
        let fast = storage.append(&p, 0, chunks(&[b"bbbbbbbb"])).await;
        let _ = go.send(());
        fast
    };
    let (slow, fast) = tokio::join!(slow, fast);
    let (size, content): (u64, &[u8]) = match (&slow, &fast) {
        (Ok(2), Err(StorageError::OffsetMismatch { .. })) => (2, b"aa"),
        (Err(StorageError::OffsetMismatch { .. }), Ok(8)) => (8, b"bbbbbbbb"),
        _ => panic!("two appends at offset 0: {slow:?} and {fast:?}"),
    };
    storage.rename(&p, &done, size).await.expect("rename");
    assert_eq!(read_all(storage, &done, None).await, content);
}

/// The reported attack in miniature: an append hangs at offset 3 while another writer appends
/// there and the object is renamed into place; then the hanging append fails and is undone.
/// What was renamed must stay exactly what the committing writer appended.
async fn a_hanging_append_cannot_alter_a_renamed_object(storage: &dyn Storage) {
    let (p, done) = (path("hang/up"), path("hang/done"));
    storage.append(&p, 0, chunks(&[b"abc"])).await.expect("append");
    let (started, is_started) = tokio::sync::oneshot::channel();
    let (go, gate) = tokio::sync::oneshot::channel();
    let hanging = storage.append(&p, 3, gated(started, gate, None));
    let committer = async {
        let _ = is_started.await;
        let committed = match storage.append(&p, 3, chunks(&[b"DDD"])).await {
            Ok(size) => storage.rename(&p, &done, size).await.is_ok(),
            Err(_) => false,
        };
        let _ = go.send(());
        committed
    };
    let (hanging, committed) = tokio::join!(hanging, committer);
    assert!(hanging.is_err(), "the failed append reported {hanging:?}");
    if committed {
        assert_eq!(read_all(storage, &done, None).await, b"abcDDD");
    } else {
        assert!(storage.stat(&done).await.is_err_and(|e| e.is_not_found()), "a refused commit moved bytes");
        assert_eq!(storage.stat(&p).await.expect("stat").size, 3, "the failed append was not undone");
    }
}

async fn walk_reports_sizes_and_times(storage: &dyn Storage) {
    // Backends may keep times to the second (S3): allow for that, and for clock skew.
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(5);
    storage.put(&path("w/a/1"), Bytes::from_static(b"one")).await.expect("put");
    storage.put(&path("w/a/b/2"), Bytes::from_static(b"two!")).await.expect("put");
    storage.put(&path("w/3"), Bytes::new()).await.expect("put");
    let after = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    let mut found = storage.walk(&path("w")).await.expect("walk");
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<(&str, u64)> = found.iter().map(|(n, m)| (n.as_str(), m.size)).collect();
    assert_eq!(names, [("3", 0), ("a/1", 3), ("a/b/2", 4)]);
    for (name, meta) in &found {
        let modified = meta.modified.unwrap_or_else(|| panic!("{name} has no modification time"));
        assert!(modified > before && modified < after, "{name} modified at {modified:?}");
    }
    let stat = storage.stat(&path("w/a/1")).await.expect("stat");
    assert!(stat.modified.is_some_and(|m| m > before && m < after), "stat has the time: {stat:?}");
    assert!(storage.walk(&path("w/missing")).await.expect("walk").is_empty());
}

async fn conditional_writes_create_once_and_replace_from_one_version(storage: &dyn Storage) {
    let p = path("cond/lease");
    let refused = |r: Result<_, StorageError>| r.is_err_and(|e| e.is_precondition());
    let first = storage.put_if(&p, Bytes::from_static(b"one"), Condition::Absent).await.expect("create");
    assert!(refused(storage.put_if(&p, Bytes::from_static(b"two"), Condition::Absent).await));
    // The same bytes again: what a retried create that took effect finds.
    storage.put_if(&p, Bytes::from_static(b"one"), Condition::Absent).await.expect("a retried create");
    let (data, tag) = storage.get_tagged(&p).await.expect("get");
    assert_eq!((data.as_ref(), &tag), (&b"one"[..], &first));
    let second =
        storage.put_if(&p, Bytes::from_static(b"two"), Condition::Unchanged(&tag)).await.expect("replace");
    assert_ne!(second, first);
    assert_eq!(storage.get_tagged(&p).await.expect("get"), (Bytes::from_static(b"two"), second.clone()));
    // A version replaced since is refused, and changes nothing.
    assert!(refused(storage.put_if(&p, Bytes::from_static(b"three"), Condition::Unchanged(&first)).await));
    assert_eq!(storage.get(&p).await.expect("get"), Bytes::from_static(b"two"));
    // A plain put makes a new version too.
    storage.put(&p, Bytes::from_static(b"plain")).await.expect("put");
    assert!(refused(storage.put_if(&p, Bytes::from_static(b"four"), Condition::Unchanged(&second)).await));
    // A missing object is no version at all.
    let missing = path("cond/missing");
    assert!(refused(storage.put_if(&missing, Bytes::from_static(b"x"), Condition::Unchanged(&first)).await));
    assert!(storage.get_tagged(&missing).await.is_err_and(|e| e.is_not_found()));
    storage.delete(&path("cond")).await.expect("delete");
    assert!(refused(storage.put_if(&p, Bytes::from_static(b"x"), Condition::Unchanged(&second)).await));
}

async fn conditional_writes_racing_from_one_state_land_once(storage: &dyn Storage) {
    let p = path("race/lease");
    let body = |i: usize| Bytes::from(format!("racer {i}"));
    let created =
        futures_util::future::join_all((0..8).map(|i| storage.put_if(&p, body(i), Condition::Absent))).await;
    let winners: Vec<usize> = (0..8).filter(|&i| created[i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "creates: {created:?}");
    assert!(created.iter().all(|r| r.as_ref().is_ok() || r.as_ref().is_err_and(|e| e.is_precondition())));
    let (data, tag) = storage.get_tagged(&p).await.expect("get");
    assert_eq!(data, body(winners[0]));
    let replaced = futures_util::future::join_all(
        (10..18).map(|i| storage.put_if(&p, body(i), Condition::Unchanged(&tag))),
    )
    .await;
    let winners: Vec<usize> = (0..8).filter(|&i| replaced[i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "replaces: {replaced:?}");
    assert_eq!(storage.get(&p).await.expect("get"), body(10 + winners[0]));
    storage.delete(&p).await.expect("delete");
}

/// A moto server (PyPI `moto[server]`) on a free loopback port, killed when dropped.
pub struct Moto {
    /// Its endpoint URL.
    pub endpoint: String,
    child: std::process::Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto, or returns `None` (locally) when it is not installed; in CI a missing moto
/// fails the test.
pub fn start_moto() -> Option<Moto> {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("moto_server").is_file()));
    if !found {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(!ci, "moto_server is required in CI (pip install 'moto[server]')");
        eprintln!("SKIPPED: moto_server is not installed; install it with: pip install 'moto[server]'");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start moto_server");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Some(Moto { endpoint: format!("http://{addr}"), child })
}
