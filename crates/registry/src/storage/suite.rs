//! One suite of contract tests that every storage backend must pass.

use bytes::Bytes;
use futures_util::{StreamExt, stream};

use super::{ByteStream, Storage, StorageError, StoragePath};

fn path(s: &str) -> StoragePath {
    StoragePath::new([s])
}

fn chunks(parts: &[&'static [u8]]) -> ByteStream {
    let parts: Vec<_> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
    stream::iter(parts).boxed()
}

async fn read_all(storage: &dyn Storage, p: &StoragePath, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
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
    append_is_all_or_nothing(storage).await;
    rename_and_delete(storage).await;
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
    assert_eq!(read_all(storage, &p, None).await, b"abcdefgh");
    assert_eq!(storage.append(&path("up/empty"), 0, chunks(&[])).await.expect("empty"), 0);
}

async fn rename_and_delete(storage: &dyn Storage) {
    let (from, to) = (path("r/src"), path("r2/deep/dst"));
    storage.put(&from, Bytes::from_static(b"moved")).await.expect("put");
    storage.rename(&from, &to).await.expect("rename");
    assert!(storage.stat(&from).await.is_err_and(|e| e.is_not_found()));
    assert_eq!(storage.get(&to).await.expect("get"), Bytes::from_static(b"moved"));
    storage.put(&path("d/x/1"), Bytes::new()).await.expect("put");
    storage.put(&path("d/x/2"), Bytes::new()).await.expect("put");
    storage.delete(&path("d/x")).await.expect("delete tree");
    assert!(storage.list(&path("d/x")).await.expect("list").is_empty());
    storage.delete(&to).await.expect("delete object");
    assert!(storage.get(&to).await.is_err_and(|e| e.is_not_found()));
}
