//! OCI distribution-spec v1.1 conformance of `regctl serve`, written from the spec
//! (<https://github.com/opencontainers/distribution-spec/blob/main/spec.md>) and the workflows
//! of its official conformance suite (`conformance/`): pull, push, content discovery and content
//! management. Every test starts its own server on a fresh storage root, so tests share nothing.
//!
//! Comments cite the spec by section and by its own ids: `end-N` for the endpoints table,
//! `code-N` for the error codes table. Where the spec allows alternatives (404 or 400, …), the
//! test accepts exactly those; where it only says SHOULD and DESIGN.md promises the feature, the
//! test holds the server to the promise and says so.

mod harness;

use reqwest::Method;
use reqwest::Url;
use serde_json::{Value, json};

use crate::util;

use harness::*;

// ---------------------------------------------------------------------------------------------
// end-1: API version check.
// ---------------------------------------------------------------------------------------------

/// Spec "Determining Support": `GET /v2/` answers 200; the historical API (apdx-1) and DESIGN.md
/// add `Docker-Distribution-API-Version: registry/2.0`.
#[test]
fn base_endpoint_answers_200_with_api_version() {
    let reg = Registry::start();
    let resp = reg.get("/v2/");
    assert_eq!(resp.status(), 200);
    assert_eq!(must_header(&resp, "docker-distribution-api-version"), "registry/2.0");
}

/// DESIGN.md: `Docker-Distribution-API-Version` on the registry's responses, success and error.
#[test]
fn api_version_header_on_every_endpoint() {
    let reg = Registry::start();
    let image = reg.push_image("hdr", Some("v1"), "hdr");
    let layer = util::sha256(&image.layer);
    let responses = [
        reg.get_manifest("hdr", "v1"),
        reg.head(&format!("/v2/hdr/blobs/{layer}")),
        reg.get(&format!("/v2/hdr/blobs/{layer}")),
        reg.post_upload("hdr"),
        reg.get("/v2/hdr/tags/list"),
        reg.get_manifest("hdr", "missing"),
        reg.get(&format!("/v2/hdr/referrers/{}", image.digest)),
    ];
    for resp in responses {
        assert_eq!(
            header(&resp, "docker-distribution-api-version").as_deref(),
            Some("registry/2.0"),
            "{} {}",
            resp.status(),
            resp.url()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Pull (end-2, end-3).
// ---------------------------------------------------------------------------------------------

/// Spec "Pulling manifests" and "Checking if content exists": GET and HEAD by tag and by digest
/// answer 200 with the manifest's type, digest and size; HEAD has no body; GET returns the exact
/// bytes pushed.
#[test]
fn pull_manifest_by_tag_and_by_digest() {
    let reg = Registry::start();
    let image = reg.push_image("pull/manifest", Some("v1"), "pull");
    for reference in ["v1", image.digest.as_str()] {
        let resp = reg.get_manifest("pull/manifest", reference);
        assert_eq!(must_header(&resp, "content-type"), OCI_MANIFEST, "GET {reference}");
        let body = assert_content(resp, 200, &image.digest, image.manifest.len());
        assert_eq!(body, image.manifest, "GET {reference} returns the manifest as pushed");

        let url = format!("/v2/pull/manifest/manifests/{reference}");
        let resp = reg.send(reg.request(Method::HEAD, &url).header("accept", ACCEPT_MANIFESTS));
        assert_eq!(must_header(&resp, "content-type"), OCI_MANIFEST, "HEAD {reference}");
        let body = assert_content(resp, 200, &image.digest, image.manifest.len());
        assert!(body.is_empty(), "HEAD {reference} has no body");
    }
}

/// Spec "Pushing Manifests": "The registry MUST store the manifest in the exact byte
/// representation provided by the client" — whitespace and key order included.
#[test]
fn pull_manifest_returns_exact_bytes_pushed() {
    let reg = Registry::start();
    let config = reg.push_blob("exact", b"{\"os\":\"linux\"}");
    let manifest = format!(
        "{{\n   \"schemaVersion\" : 2,\n\t\"layers\": [],\n \"mediaType\": \"{OCI_MANIFEST}\",\n  \
         \"config\": {{\"size\": 14, \"digest\": \"{config}\", \"mediaType\": \"{OCI_CONFIG}\"}}\n}}\n\n"
    )
    .into_bytes();
    let digest = reg.push_manifest("exact", "pretty", OCI_MANIFEST, &manifest);
    let body = assert_content(reg.get_manifest("exact", "pretty"), 200, &digest, manifest.len());
    assert_eq!(body, manifest);
}

/// Spec "Pulling blobs" and "Checking if content exists": GET returns the blob with its digest;
/// HEAD returns 200, `Docker-Content-Digest` and `Content-Length` and no body.
#[test]
fn pull_blob_get_and_head() {
    let reg = Registry::start();
    let data = pattern(3000);
    let digest = reg.push_blob("pull/blob", &data);
    let url = format!("/v2/pull/blob/blobs/{digest}");
    assert_eq!(assert_content(reg.get(&url), 200, &digest, data.len()), data);
    assert!(assert_content(reg.head(&url), 200, &digest, data.len()).is_empty(), "HEAD has no body");
}

/// Spec "Pulling blobs": a registry SHOULD support `Range` per RFC 9110 (DESIGN.md: it does):
/// 206 with `Content-Range` for satisfiable ranges, 416 with `Content-Range: bytes */SIZE` for
/// unsatisfiable ones (RFC 9110 §15.5.17), a last byte before the first (`bytes=50-0`)
/// included, as distribution answers it (issue 16.6: it was served whole with 200).
#[test]
fn pull_blob_range_requests() {
    let reg = Registry::start();
    let data = pattern(100);
    let digest = reg.push_blob("range", &data);
    let url = format!("/v2/range/blobs/{digest}");
    let ranged = |range: &str| reg.send(reg.request(Method::GET, &url).header("range", range));

    for (range, first, last) in [
        ("bytes=0-9", 0, 9),
        ("bytes=10-", 10, 99),
        ("bytes=-5", 95, 99),
        ("bytes=90-1000", 90, 99), // RFC 9110 §14.1.2: a last-pos past the end means the end
        ("bytes=99-99", 99, 99),
    ] {
        let resp = ranged(range);
        assert_eq!(resp.status(), 206, "{range}");
        assert_eq!(must_header(&resp, "content-range"), format!("bytes {first}-{last}/100"), "{range}");
        assert_eq!(must_header(&resp, "content-length"), (last - first + 1).to_string(), "{range}");
        assert_eq!(bytes(resp), &data[first..=last], "{range}");
    }
    for range in ["bytes=100-", "bytes=200-300", "bytes=50-0", "bytes=500-0"] {
        let resp = ranged(range);
        assert_eq!(resp.status(), 416, "{range}");
        assert_eq!(must_header(&resp, "content-range"), "bytes */100", "{range}");
    }
}

/// Spec "Pulling manifests"/"Pulling blobs": missing content is 404 (end-2, end-3), with
/// MANIFEST_UNKNOWN (code-7) or BLOB_UNKNOWN (code-1); a repository that does not exist may be
/// reported as NAME_UNKNOWN (code-9) instead. HEAD answers 404 without a body.
#[test]
fn pull_unknown_content_is_404() {
    let reg = Registry::start();
    reg.push_image("known", Some("v1"), "known");
    let missing = util::sha256(b"never pushed");

    assert_error(reg.get_manifest("known", "nope"), &[404], &["MANIFEST_UNKNOWN"]);
    assert_error(reg.get_manifest("known", &missing), &[404], &["MANIFEST_UNKNOWN"]);
    assert_error(reg.get(&format!("/v2/known/blobs/{missing}")), &[404], &["BLOB_UNKNOWN"]);
    assert_eq!(reg.head("/v2/known/manifests/nope").status(), 404);
    assert_eq!(reg.head(&format!("/v2/known/manifests/{missing}")).status(), 404);
    assert_eq!(reg.head(&format!("/v2/known/blobs/{missing}")).status(), 404);

    assert_error(reg.get_manifest("unknown", "v1"), &[404], &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]);
    assert_error(reg.get(&format!("/v2/unknown/blobs/{missing}")), &[404], &["BLOB_UNKNOWN", "NAME_UNKNOWN"]);
    assert_eq!(reg.head("/v2/unknown/manifests/v1").status(), 404);
}

/// Spec "Pulling blobs"/"Pulling manifests": "If the blob is not found in the repository, the
/// response code MUST be 404" — content pushed to one repository is not in another.
#[test]
fn pull_is_scoped_to_the_repository() {
    let reg = Registry::start();
    let image = reg.push_image("owner", Some("v1"), "scoped");
    reg.push_image("other", Some("v1"), "other");
    let layer = util::sha256(&image.layer);
    assert_error(reg.get(&format!("/v2/other/blobs/{layer}")), &[404], &["BLOB_UNKNOWN"]);
    assert_error(reg.get_manifest("other", &image.digest), &[404], &["MANIFEST_UNKNOWN"]);
}

// ---------------------------------------------------------------------------------------------
// Push: blobs (end-4a, end-4b, end-5, end-6, end-11, end-13).
// ---------------------------------------------------------------------------------------------

/// Spec "POST then PUT": POST answers 202 with a `Location`; PUT `<location>?digest=` answers
/// 201 with a `Location` that is a pullable blob URL (and, apdx-1, `Docker-Content-Digest`).
#[test]
fn push_blob_post_then_put() {
    let reg = Registry::start();
    let data = pattern(5000);
    let digest = util::sha256(&data);
    let location = reg.start_upload("push/mono");
    let resp = reg.put_upload(&location, &digest, data.clone());
    assert_eq!(resp.status(), 201);
    assert_eq!(must_header(&resp, "docker-content-digest"), digest);
    let blob_location = must_header(&resp, "location");
    assert_eq!(assert_content(reg.get(&blob_location), 200, &digest, data.len()), data);
}

/// Spec "Single POST" (end-4b): 201 with a pullable `Location`. Registries that lack it may answer
/// 202, but DESIGN.md promises single-POST uploads, so 201 is required here.
#[test]
fn push_blob_single_post() {
    let reg = Registry::start();
    let data = pattern(777);
    let digest = util::sha256(&data);
    let request = reg
        .request(Method::POST, "/v2/push/single/blobs/uploads/")
        .query(&[("digest", &digest)])
        .header("content-type", OCTET_STREAM)
        .body(data.clone());
    let resp = reg.send(request);
    assert_eq!(resp.status(), 201);
    let location = must_header(&resp, "location");
    assert_eq!(assert_content(reg.get(&location), 200, &digest, data.len()), data);
}

/// Spec "Pushing a blob in chunks": each PATCH answers 202 with `Location` and
/// `Range: 0-<end>`; GET on the session answers 204 with the same (end-13); the closing PUT
/// answers 201 with a `Location`.
#[test]
fn push_blob_in_chunks() {
    let reg = Registry::start();
    let resp = reg.post_upload("push/chunked");
    assert_eq!(resp.status(), 202);
    let chunk = chunk_len(&resp);
    let mut location = must_header(&resp, "location");
    let data = pattern(chunk * 3);
    let digest = util::sha256(&data);

    for (i, part) in data.chunks(chunk).enumerate() {
        let resp = reg.patch_chunk(&location, i * chunk, part);
        assert_eq!(resp.status(), 202, "chunk {i}");
        assert_eq!(must_header(&resp, "range"), format!("0-{}", (i + 1) * chunk - 1), "chunk {i}");
        location = must_header(&resp, "location");

        let status = reg.get(&location);
        assert_eq!(status.status(), 204, "upload status after chunk {i}");
        assert_eq!(must_header(&status, "range"), format!("0-{}", (i + 1) * chunk - 1));
        location = must_header(&status, "location");
    }
    let resp = reg.put_upload(&location, &digest, Vec::new());
    assert_eq!(resp.status(), 201);
    assert_eq!(must_header(&resp, "docker-content-digest"), digest);
    let blob = must_header(&resp, "location");
    assert_eq!(assert_content(reg.get(&blob), 200, &digest, data.len()), data);
}

/// Spec "Pushing a blob in chunks": "The final chunk MAY be uploaded using a PATCH request or it
/// MAY be uploaded in the closing PUT request."
#[test]
fn push_blob_final_chunk_in_put() {
    let reg = Registry::start();
    let resp = reg.post_upload("push/final");
    let chunk = chunk_len(&resp);
    let location = must_header(&resp, "location");
    let data = pattern(chunk * 2);
    let digest = util::sha256(&data);

    let resp = reg.patch_chunk(&location, 0, &data[..chunk]);
    assert_eq!(resp.status(), 202);
    let location = must_header(&resp, "location");
    let resp = reg.put_final_chunk(&location, &digest, chunk, &data[chunk..]);
    assert_eq!(resp.status(), 201);
    let blob = must_header(&resp, "location");
    assert_eq!(assert_content(reg.get(&blob), 200, &digest, data.len()), data);

    // The closing PUT's `Content-Range` is only "if present".
    let other = pattern(chunk * 2 + 1);
    let other_digest = util::sha256(&other);
    let location = reg.start_upload("push/final");
    let resp = reg.patch_chunk(&location, 0, &other[..chunk]);
    assert_eq!(resp.status(), 202);
    let location = must_header(&resp, "location");
    let resp = reg.put_upload(&location, &other_digest, other[chunk..].to_vec());
    assert_eq!(resp.status(), 201);
    let blob = must_header(&resp, "location");
    assert_eq!(assert_content(reg.get(&blob), 200, &other_digest, other.len()), other);
}

/// Conformance "Blob Upload Streamed": a PATCH without `Content-Range` carries the blob as a
/// stream; 202, then PUT with the digest and no body answers 201.
#[test]
fn push_blob_streamed_patch() {
    let reg = Registry::start();
    let data = pattern(4096);
    let digest = util::sha256(&data);
    let location = reg.start_upload("push/streamed");
    let request =
        reg.request(Method::PATCH, &location).header("content-type", OCTET_STREAM).body(data.clone());
    let resp = reg.send(request);
    assert_eq!(resp.status(), 202);
    assert_eq!(must_header(&resp, "range"), "0-4095");
    let location = must_header(&resp, "location");
    let resp = reg.put_upload(&location, &digest, Vec::new());
    assert_eq!(resp.status(), 201);
    assert_eq!(
        assert_content(reg.get(&format!("/v2/push/streamed/blobs/{digest}")), 200, &digest, 4096),
        data
    );
}

/// Spec "Pushing a blob in chunks": "If a chunk is uploaded out of order, the registry MUST
/// respond with a 416"; a GET then gives the current offset (end-13) and the upload goes on.
#[test]
fn push_chunk_out_of_order_is_416() {
    let reg = Registry::start();
    let resp = reg.post_upload("push/order");
    let chunk = chunk_len(&resp);
    let first_location = must_header(&resp, "location");
    let data = pattern(chunk * 2);
    let digest = util::sha256(&data);

    // The second chunk first: it does not start at 0.
    let resp = reg.patch_chunk(&first_location, chunk, &data[chunk..]);
    assert_eq!(resp.status(), 416, "second chunk before the first");

    let resp = reg.patch_chunk(&first_location, 0, &data[..chunk]);
    assert_eq!(resp.status(), 202, "first chunk");
    let location = must_header(&resp, "location");

    // Conformance "Retry previous blob chunk should return 416", to the session's first location.
    let resp = reg.patch_chunk(&first_location, 0, &data[..chunk]);
    assert_eq!(resp.status(), 416, "the first chunk again");

    let resp = reg.get(&location);
    assert_eq!(resp.status(), 204);
    assert_eq!(must_header(&resp, "range"), format!("0-{}", chunk - 1));
    let location = must_header(&resp, "location");

    let resp = reg.patch_chunk(&location, chunk, &data[chunk..]);
    assert_eq!(resp.status(), 202, "second chunk in order");
    let location = must_header(&resp, "location");
    let resp = reg.put_upload(&location, &digest, Vec::new());
    assert_eq!(resp.status(), 201);
    assert_eq!(
        assert_content(reg.get(&format!("/v2/push/order/blobs/{digest}")), 200, &digest, data.len()),
        data
    );
}

/// Spec "Pushing a blob in chunks": the final chunk MAY come with the closing PUT, and chunks
/// "MUST be uploaded in order … If a chunk is uploaded out of order, the registry MUST respond
/// with a 416" — the PUT's chunk included. The session survives and completes in order.
#[test]
fn push_final_chunk_out_of_order_is_416() {
    let reg = Registry::start();
    let resp = reg.post_upload("push/finalorder");
    let chunk = chunk_len(&resp);
    let location = must_header(&resp, "location");
    let data = pattern(chunk * 2);
    let digest = util::sha256(&data);

    // Nothing uploaded yet: a final chunk at `chunk` leaves a gap.
    let resp = reg.put_final_chunk(&location, &digest, chunk, &data[chunk..]);
    assert_eq!(resp.status(), 416, "final chunk before the first: {}", text(resp));

    let resp = reg.patch_chunk(&location, 0, &data[..chunk]);
    assert_eq!(resp.status(), 202, "first chunk");
    let location = must_header(&resp, "location");
    // Overlapping the first chunk.
    let resp = reg.put_final_chunk(&location, &digest, chunk - 1, &data[chunk - 1..]);
    assert_eq!(resp.status(), 416, "final chunk overlapping the first: {}", text(resp));

    let resp = reg.get(&location);
    assert_eq!(resp.status(), 204);
    assert_eq!(must_header(&resp, "range"), format!("0-{}", chunk - 1));
    let location = must_header(&resp, "location");
    assert_eq!(reg.put_final_chunk(&location, &digest, chunk, &data[chunk..]).status(), 201);
    let url = format!("/v2/push/finalorder/blobs/{digest}");
    assert_eq!(assert_content(reg.get(&url), 200, &digest, data.len()), data);
}

/// Historical API (apdx-1, "DELETE Blob Upload"): cancelling a session answers 204; the session
/// is then unknown: 404 BLOB_UPLOAD_UNKNOWN (code-3) on GET, PATCH and PUT.
#[test]
fn push_upload_cancel() {
    let reg = Registry::start();
    let location = reg.start_upload("push/cancel");
    let resp = reg.patch_chunk(&location, 0, b"some bytes");
    assert_eq!(resp.status(), 202);
    let location = must_header(&resp, "location");

    assert_eq!(reg.delete(&location).status(), 204, "DELETE {location}");
    assert_error(reg.get(&location), &[404], &["BLOB_UPLOAD_UNKNOWN"]);
    assert_error(reg.patch_chunk(&location, 10, b"more"), &[404], &["BLOB_UPLOAD_UNKNOWN"]);
    let digest = util::sha256(b"some bytesmore");
    assert_error(reg.put_upload(&location, &digest, b"more".to_vec()), &[404], &["BLOB_UPLOAD_UNKNOWN"]);
}

/// end-5, end-6, end-13 fail with 404 for a session that never existed (BLOB_UPLOAD_UNKNOWN,
/// code-3), and a completed session is over.
#[test]
fn push_unknown_upload_session_is_404() {
    let reg = Registry::start();
    reg.push_blob("push/session", b"make the repository exist");
    let bogus = "/v2/push/session/blobs/uploads/6f1b2a4e-3c1d-4f6e-9a0b-5d7c8e9f0a1b";
    let digest = util::sha256(b"x");
    assert_error(reg.get(bogus), &[404], &["BLOB_UPLOAD_UNKNOWN"]);
    assert_error(reg.patch_chunk(bogus, 0, b"x"), &[404], &["BLOB_UPLOAD_UNKNOWN"]);
    assert_error(reg.put_upload(bogus, &digest, b"x".to_vec()), &[404], &["BLOB_UPLOAD_UNKNOWN"]);

    let location = reg.start_upload("push/session");
    assert_eq!(reg.put_upload(&location, &digest, b"x".to_vec()).status(), 201);
    assert_error(reg.get(&location), &[404], &["BLOB_UPLOAD_UNKNOWN"]);
}

/// An upload session belongs to its repository: under another repository's path it does not
/// exist, so end-5, end-6 and end-13 fail with their 404 (BLOB_UPLOAD_UNKNOWN, code-3, or, as
/// CNCF distribution answers, BLOB_UPLOAD_INVALID, code-2), and no blob lands in that repository.
#[test]
fn push_upload_session_is_scoped_to_its_repository() {
    let reg = Registry::start();
    reg.push_blob("session/b", b"make the repository exist");
    let location = reg.start_upload("session/a");
    let url = Url::parse(&reg.resolve(&location)).expect("Location");
    let moved = url.path().replacen("/v2/session/a/", "/v2/session/b/", 1);
    assert_ne!(moved, url.path(), "Location {location} is under /v2/session/a/");
    let data = b"chunk".to_vec();
    let codes = ["BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"];
    let digest = util::sha256(&data);
    assert_error(reg.get(&moved), &[404], &codes);
    assert_error(reg.patch_chunk(&moved, 0, &data), &[404], &codes);
    assert_error(reg.put_upload(&moved, &digest, data.clone()), &[404], &codes);
    assert_error(reg.get(&format!("/v2/session/b/blobs/{digest}")), &[404], &["BLOB_UNKNOWN"]);
    // The session itself is untouched.
    assert_eq!(reg.put_upload(&location, &digest, data).status(), 201);
}

/// The empty blob is a blob like any other (image-spec: the empty layer/config has size 0 or 2);
/// a range of it is unsatisfiable (RFC 9110 §15.5.17: `Content-Range: bytes */0`).
#[test]
fn push_and_pull_empty_blob() {
    let reg = Registry::start();
    let digest = util::sha256(b"");
    let request = reg
        .request(Method::POST, "/v2/empty/blob/blobs/uploads/")
        .query(&[("digest", &digest)])
        .header("content-type", OCTET_STREAM)
        .body(Vec::new());
    assert_eq!(reg.send(request).status(), 201, "single POST of the empty blob");
    let url = format!("/v2/empty/blob/blobs/{digest}");
    assert!(assert_content(reg.get(&url), 200, &digest, 0).is_empty());
    assert!(assert_content(reg.head(&url), 200, &digest, 0).is_empty());
    reg.push_blob_as("empty/other", b"", &digest);
    let resp = reg.send(reg.request(Method::GET, &url).header("range", "bytes=0-"));
    assert_eq!(resp.status(), 416);
    assert_eq!(must_header(&resp, "content-range"), "bytes */0");
}

/// Blobs stream (DESIGN.md): a 12 MiB blob in 4 MiB chunks arrives intact, and a range deep inside
/// it is served exactly.
#[test]
fn push_large_blob_in_chunks() {
    let reg = Registry::start();
    let data = pattern(12 * 1024 * 1024 + 123);
    let digest = util::sha256(&data);
    let mut location = reg.start_upload("large");
    let chunk = 4 * 1024 * 1024;
    for (i, part) in data.chunks(chunk).enumerate() {
        let resp = reg.patch_chunk(&location, i * chunk, part);
        assert_eq!(resp.status(), 202, "chunk {i}");
        assert_eq!(must_header(&resp, "range"), format!("0-{}", i * chunk + part.len() - 1));
        location = must_header(&resp, "location");
    }
    assert_eq!(reg.put_upload(&location, &digest, Vec::new()).status(), 201);
    let url = format!("/v2/large/blobs/{digest}");
    assert_eq!(assert_content(reg.get(&url), 200, &digest, data.len()), data);
    let (first, last) = (chunk - 10, 2 * chunk + 10);
    let resp = reg.send(reg.request(Method::GET, &url).header("range", format!("bytes={first}-{last}")));
    assert_eq!(resp.status(), 206);
    assert_eq!(must_header(&resp, "content-range"), format!("bytes {first}-{last}/{}", data.len()));
    assert_eq!(bytes(resp), &data[first..=last]);
}

/// Spec "Layer Upload De-duplication": "If process A and B upload the same layer at the same
/// time, both operations will proceed"; concurrent pushes of one blob and of tags all succeed.
#[test]
fn concurrent_pushes_of_the_same_content() {
    let reg = Registry::start();
    let data = pattern(256 * 1024);
    let digest = util::sha256(&data);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| reg.push_blob_as("concurrent", &data, &digest));
        }
    });
    assert_eq!(
        assert_content(reg.get(&format!("/v2/concurrent/blobs/{digest}")), 200, &digest, data.len()),
        data
    );

    let image = reg.push_image("concurrent", None, "concurrent");
    std::thread::scope(|scope| {
        for i in 0..4 {
            let (reg, image) = (&reg, &image);
            scope.spawn(move || {
                reg.push_manifest("concurrent", &format!("t{i}"), OCI_MANIFEST, &image.manifest)
            });
        }
    });
    let tags: Value = reg.get("/v2/concurrent/tags/list").json().expect("tags JSON");
    assert_eq!(tags["tags"], json!(["t0", "t1", "t2", "t3"]));
}

/// image-spec "Registered algorithms" are sha256 and sha512; a syntactically valid digest of an
/// algorithm the registry does not implement is refused with 400 (end-4b, end-6), as
/// DIGEST_INVALID (code-4) or UNSUPPORTED (code-13).
#[test]
fn push_blob_with_unsupported_algorithm_is_400() {
    let reg = Registry::start();
    let data = b"payload".to_vec();
    let digest = format!("sha384:{}", "ab".repeat(48));
    let location = reg.start_upload("algo");
    assert_error(reg.put_upload(&location, &digest, data), &[400], &["DIGEST_INVALID", "UNSUPPORTED"]);
}

/// A digest in the path that does not parse cannot name a blob: 404 (end-2, end-10) or 400
/// DIGEST_INVALID (code-4).
#[test]
fn invalid_digest_in_blob_path() {
    let reg = Registry::start();
    reg.push_blob("baddigest/path", b"exists");
    for bad in [
        "sha256:xyz",
        "sha256:..%2F..%2F..%2Fetc",
        "notadigest",
        "sha256:ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789",
    ] {
        let url = format!("/v2/baddigest/path/blobs/{bad}");
        assert_error(reg.get(&url), &[400, 404], &["DIGEST_INVALID", "BLOB_UNKNOWN"]);
        assert_error(reg.delete(&url), &[400, 404], &["DIGEST_INVALID", "BLOB_UNKNOWN"]);
    }
}

/// Spec "Single POST": "the <digest> MUST match the blob's digest"; a mismatch fails with 400
/// (end-4b, end-6) DIGEST_INVALID (code-4, "provided digest did not match uploaded content"),
/// and nothing is stored under either digest.
#[test]
fn push_blob_digest_mismatch_is_400() {
    let reg = Registry::start();
    let data = pattern(1000);
    let actual = util::sha256(&data);
    let claimed = util::sha256(b"something else");

    let location = reg.start_upload("push/mismatch");
    assert_error(reg.put_upload(&location, &claimed, data.clone()), &[400], &["DIGEST_INVALID"]);

    let request = reg
        .request(Method::POST, "/v2/push/mismatch/blobs/uploads/")
        .query(&[("digest", &claimed)])
        .header("content-type", OCTET_STREAM)
        .body(data.clone());
    assert_error(reg.send(request), &[400], &["DIGEST_INVALID"]);

    let location = reg.start_upload("push/mismatch");
    let resp = reg.patch_chunk(&location, 0, &data);
    assert_eq!(resp.status(), 202);
    let location = must_header(&resp, "location");
    assert_error(reg.put_upload(&location, &claimed, Vec::new()), &[400], &["DIGEST_INVALID"]);

    for digest in [&actual, &claimed] {
        assert_eq!(reg.head(&format!("/v2/push/mismatch/blobs/{digest}")).status(), 404, "{digest}");
    }
}

/// A digest that does not parse (spec "Content Digests", image-spec descriptor grammar) fails
/// with 400 (end-4b, end-6) DIGEST_INVALID (code-4); so does a closing PUT without one ("The
/// closing PUT request MUST include the <digest>").
#[test]
fn push_blob_invalid_digest_is_400() {
    let reg = Registry::start();
    let data = b"payload".to_vec();
    let valid_hex = util::sha256(&data);
    let short = &valid_hex[..valid_hex.len() - 1];
    for bad in ["sha256:not-hex-at-all", short, "nocolon", "sha256:", ":abcdef"] {
        let location = reg.start_upload("push/baddigest");
        assert_error(reg.put_upload(&location, bad, data.clone()), &[400], &["DIGEST_INVALID"]);

        let request = reg
            .request(Method::POST, "/v2/push/baddigest/blobs/uploads/")
            .query(&[("digest", bad)])
            .header("content-type", OCTET_STREAM)
            .body(data.clone());
        assert_error(reg.send(request), &[400], &["DIGEST_INVALID"]);
    }
    let location = reg.start_upload("push/baddigest");
    let request = reg.request(Method::PUT, &location).header("content-type", OCTET_STREAM).body(data);
    assert_error(reg.send(request), &[400], &["DIGEST_INVALID"]);
}

/// Spec "Mounting a blob from another repository" (end-11): 201 with a `Location` of the blob in
/// the target repository and its `Docker-Content-Digest`.
#[test]
fn push_cross_repository_mount() {
    let reg = Registry::start();
    let data = pattern(2048);
    let digest = reg.push_blob("mount/source", &data);

    let request = reg
        .request(Method::POST, "/v2/mount/target/blobs/uploads/")
        .query(&[("mount", digest.as_str()), ("from", "mount/source")]);
    let resp = reg.send(request);
    assert_eq!(resp.status(), 201);
    assert_eq!(must_header(&resp, "docker-content-digest"), digest);
    let location = must_header(&resp, "location");
    let path = Url::parse(&reg.resolve(&location)).expect("Location").path().to_string();
    assert_eq!(path, format!("/v2/mount/target/blobs/{digest}"), "Location of the mounted blob");
    assert_eq!(assert_content(reg.get(&location), 200, &digest, data.len()), data);
}

/// Spec "Mounting a blob from another repository": a registry "unable to mount the requested blob
/// … SHOULD return a 202", an upload session the client may use (conformance: the Location is
/// `/v2/<name>/blobs/uploads/…`). Also without `from`, which the registry MAY treat as optional.
#[test]
fn push_mount_of_unknown_blob_opens_a_session() {
    let reg = Registry::start();
    reg.push_blob("mount/empty", b"not the blob being mounted");
    let data = pattern(300);
    let digest = util::sha256(&data);
    for query in [
        vec![("mount", digest.as_str()), ("from", "mount/empty")],
        vec![("mount", digest.as_str()), ("from", "mount/nonexistent")],
        vec![("mount", digest.as_str())],
    ] {
        let resp = reg.send(reg.request(Method::POST, "/v2/mount/dest/blobs/uploads/").query(&query));
        assert_eq!(resp.status(), 202, "{query:?}");
        let location = must_header(&resp, "location");
        let path = Url::parse(&reg.resolve(&location)).expect("Location").path().to_string();
        assert!(path.starts_with("/v2/mount/dest/blobs/uploads/"), "{query:?}: Location {location}");
    }
    // The session is usable.
    let request = reg.request(Method::POST, "/v2/mount/dest/blobs/uploads/").query(&[("mount", &digest)]);
    let location = must_header(&reg.send(request), "location");
    assert_eq!(reg.put_upload(&location, &digest, data.clone()).status(), 201);
    assert_eq!(assert_content(reg.get(&format!("/v2/mount/dest/blobs/{digest}")), 200, &digest, 300), data);
}

/// DESIGN.md: both registered algorithms (image-spec "Registered algorithms": sha256, sha512) for
/// blobs; the registry answers with the digest used.
#[test]
fn push_sha512_blob() {
    let reg = Registry::start();
    let data = pattern(1500);
    let digest = sha512(&data);
    reg.push_blob_as("sha512/blob", &data, &digest);
    let url = format!("/v2/sha512/blob/blobs/{digest}");
    assert_eq!(assert_content(reg.get(&url), 200, &digest, data.len()), data);
    assert!(assert_content(reg.head(&url), 200, &digest, data.len()).is_empty());

    let other = pattern(1600);
    let other_digest = sha512(&other);
    let request = reg
        .request(Method::POST, "/v2/sha512/blob/blobs/uploads/")
        .query(&[("digest", &other_digest)])
        .header("content-type", OCTET_STREAM)
        .body(other.clone());
    let resp = reg.send(request);
    assert_eq!(resp.status(), 201, "single POST with a sha512 digest");
    let location = must_header(&resp, "location");
    assert_eq!(assert_content(reg.get(&location), 200, &other_digest, other.len()), other);

    let location = reg.start_upload("sha512/blob");
    assert_error(reg.put_upload(&location, &sha512(b"else"), other), &[400], &["DIGEST_INVALID"]);
}

/// DESIGN.md: "a manifest pushed by a sha512 digest is answered with that digest" (spec
/// "Pushing Manifests": `Docker-Content-Digest` "MUST be equal to the client provided digest").
#[test]
fn push_manifest_by_sha512_digest() {
    let reg = Registry::start();
    let config = br#"{"architecture":"arm64","os":"linux"}"#;
    let layer = pattern(640);
    reg.push_blob_as("sha512/manifest", config, &sha512(config));
    reg.push_blob_as("sha512/manifest", &layer, &sha512(&layer));
    let manifest = to_bytes(&image_manifest(
        json!({"mediaType": OCI_CONFIG, "digest": sha512(config), "size": config.len()}),
        vec![json!({"mediaType": OCI_LAYER, "digest": sha512(&layer), "size": layer.len()})],
    ));
    let digest = sha512(&manifest);

    let resp = reg.put_manifest("sha512/manifest", &digest, OCI_MANIFEST, &manifest);
    assert_eq!(resp.status(), 201);
    assert_eq!(must_header(&resp, "docker-content-digest"), digest);
    let location = must_header(&resp, "location");
    assert!(location.ends_with(&format!("/v2/sha512/manifest/manifests/{digest}")), "Location {location}");

    let resp = reg.get_manifest("sha512/manifest", &digest);
    assert_eq!(must_header(&resp, "content-type"), OCI_MANIFEST);
    assert_eq!(assert_content(resp, 200, &digest, manifest.len()), manifest);
    let resp = reg.head(&format!("/v2/sha512/manifest/manifests/{digest}"));
    assert!(assert_content(resp, 200, &digest, manifest.len()).is_empty());

    // The wrong sha512 for the body is a mismatch, as with sha256.
    let resp = reg.put_manifest("sha512/manifest", &sha512(b"other"), OCI_MANIFEST, &manifest);
    assert_error(resp, &[400], &["DIGEST_INVALID"]);

    // A referrer of the sha512-named manifest is listed under that digest.
    reg.push_blob("sha512/manifest", EMPTY_JSON);
    let mut artifact =
        image_manifest(descriptor(OCI_EMPTY, EMPTY_JSON), vec![descriptor(OCI_EMPTY, EMPTY_JSON)]);
    artifact["artifactType"] = json!("application/vnd.example.sha512.note");
    artifact["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len()});
    let expected = reg.push_referrer("sha512/manifest", &artifact, &digest);
    assert_eq!(reg.referrers("sha512/manifest", &digest, None).0, vec![expected]);
}

// ---------------------------------------------------------------------------------------------
// Push: manifests (end-7).
// ---------------------------------------------------------------------------------------------

/// Spec "Pushing Manifests": PUT by tag or by digest answers 201 with a pullable `Location` and
/// the `Docker-Content-Digest` of the body; a tag pushed again moves to the new manifest.
#[test]
fn push_manifest_by_tag_and_by_digest() {
    let reg = Registry::start();
    let first = reg.push_image("push/manifest", Some("latest"), "one");

    let resp = reg.put_manifest("push/manifest", "v1", OCI_MANIFEST, &first.manifest);
    assert_eq!(resp.status(), 201);
    assert_eq!(must_header(&resp, "docker-content-digest"), first.digest);
    let location = must_header(&resp, "location");
    assert_eq!(
        assert_content(reg.get_manifest_at(&location), 200, &first.digest, first.manifest.len()),
        first.manifest
    );

    let resp = reg.put_manifest("push/manifest", &first.digest, OCI_MANIFEST, &first.manifest);
    assert_eq!(resp.status(), 201);
    assert_eq!(must_header(&resp, "docker-content-digest"), first.digest);
    let location = must_header(&resp, "location");
    assert_eq!(reg.get_manifest_at(&location).status(), 200);

    let second = reg.push_image("push/manifest", Some("latest"), "two");
    let resp = reg.get_manifest("push/manifest", "latest");
    assert_eq!(assert_content(resp, 200, &second.digest, second.manifest.len()), second.manifest);
    assert_eq!(reg.get_manifest("push/manifest", "v1").status(), 200, "v1 still names the first");
    let tags: Value = reg.get("/v2/push/manifest/tags/list").json().expect("tags JSON");
    assert_eq!(tags["tags"], json!(["latest", "v1"]), "a moved tag is listed once; digests are not tags");
}

/// Spec "Pushing Manifests": the `Docker-Content-Digest` "MUST be equal to the client provided
/// digest", so a body that does not hash to the digest in the URL is refused: 400 DIGEST_INVALID
/// (code-4).
#[test]
fn push_manifest_digest_mismatch_is_400() {
    let reg = Registry::start();
    let image = reg.push_image("push/mdigest", Some("v1"), "m");
    let wrong = util::sha256(b"not the manifest");
    let resp = reg.put_manifest("push/mdigest", &wrong, OCI_MANIFEST, &image.manifest);
    assert_error(resp, &[400], &["DIGEST_INVALID"]);
    assert_eq!(reg.get_manifest("push/mdigest", &wrong).status(), 404);
}

/// Spec "Pushing Manifests": the registry SHOULD ignore parameters on `Content-Type`, and
/// "Pulling manifests": it SHOULD NOT include parameters in its own.
#[test]
fn push_manifest_content_type_parameters_are_ignored() {
    let reg = Registry::start();
    reg.push_blob("push/ctype", b"{}");
    let manifest = to_bytes(&image_manifest(descriptor(OCI_CONFIG, b"{}"), vec![]));
    let content_type = format!("{OCI_MANIFEST}; charset=utf-8");
    let digest = reg.push_manifest("push/ctype", "v1", &content_type, &manifest);
    let resp = reg.get_manifest("push/ctype", "v1");
    assert_eq!(must_header(&resp, "content-type"), OCI_MANIFEST);
    assert_content(resp, 200, &digest, manifest.len());
}

/// Spec "Push": a registry MAY reject a manifest whose descriptors reference blobs it does not
/// have; "it MUST result in one or more MANIFEST_BLOB_UNKNOWN errors" (code-5). DESIGN.md: it does.
#[test]
fn push_manifest_with_missing_blob_is_400() {
    let reg = Registry::start();
    let config = br#"{"os":"linux"}"#;
    let layer = b"a layer that is never uploaded";
    reg.push_blob("push/missing", config);

    let missing_layer =
        to_bytes(&image_manifest(descriptor(OCI_CONFIG, config), vec![descriptor(OCI_LAYER, layer)]));
    let resp = reg.put_manifest("push/missing", "v1", OCI_MANIFEST, &missing_layer);
    assert_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]);

    let missing_config = to_bytes(&image_manifest(descriptor(OCI_CONFIG, b"{\"no\":1}"), vec![]));
    let resp = reg.put_manifest("push/missing", "v2", OCI_MANIFEST, &missing_config);
    assert_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]);

    // A blob in another repository of the registry is not in this one.
    reg.push_blob("push/elsewhere", layer);
    let resp = reg.put_manifest("push/missing", "v3", OCI_MANIFEST, &missing_layer);
    assert_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]);
    assert_eq!(reg.get_manifest("push/missing", "v1").status(), 404, "nothing was stored");
}

/// MANIFEST_INVALID (code-6) with 400 (end-7) for a body that is not a manifest: malformed JSON,
/// a wrong `schemaVersion`, or a `mediaType` that differs from `Content-Type` (spec "Pushing
/// Manifests": the client MUST set `Content-Type` to the `mediaType` field).
#[test]
fn push_invalid_manifest_is_400() {
    let reg = Registry::start();
    reg.push_blob("push/invalid", b"{}");
    let valid = image_manifest(descriptor(OCI_CONFIG, b"{}"), vec![]);

    let resp = reg.put_manifest("push/invalid", "v1", OCI_MANIFEST, b"{\"schemaVersion\": 2, \"config\": ");
    assert_error(resp, &[400], &["MANIFEST_INVALID"]);

    let resp = reg.put_manifest("push/invalid", "v1", OCI_MANIFEST, b"not json at all");
    assert_error(resp, &[400], &["MANIFEST_INVALID"]);

    let mut wrong_version = valid.clone();
    wrong_version["schemaVersion"] = json!(1);
    let resp = reg.put_manifest("push/invalid", "v1", OCI_MANIFEST, &to_bytes(&wrong_version));
    assert_error(resp, &[400], &["MANIFEST_INVALID"]);

    for content_type in [DOCKER_MANIFEST, OCI_INDEX] {
        let resp = reg.put_manifest("push/invalid", "v1", content_type, &to_bytes(&valid));
        assert_error(resp, &[400], &["MANIFEST_INVALID"]);
    }
    assert_eq!(reg.get_manifest("push/invalid", "v1").status(), 404, "nothing was stored");
}

/// Spec "Pulling manifests": a tag "MUST be at most 128 characters … and MUST match
/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`"; a PUT with any other reference is a 400 (end-7 lists no
/// other failure for a bad request; conformance "Error codes" expects 400 with a spec code). The
/// legacy TAG_INVALID is allowed (spec "Legacy Docker support error codes").
#[test]
fn push_manifest_with_invalid_reference_is_400_and_a_read_is_404() {
    let reg = Registry::start();
    let image = reg.push_image("push/tags", None, "tags");
    let too_long = "t".repeat(129);
    for reference in [
        "-leading-dash",
        ".leading-dot",
        too_long.as_str(),
        "has+plus",
        "sha256:totallywrong",
        "..%2F..%2Fescape",
    ] {
        let resp = reg.put_manifest("push/tags", reference, OCI_MANIFEST, &image.manifest);
        assert_error(resp, &[400], &["TAG_INVALID", "MANIFEST_INVALID", "DIGEST_INVALID"]);
    }
    // A read of a reference that cannot be a tag names no manifest: 404, the only failure the
    // spec's endpoint table lists for a manifest GET or HEAD; and an invalid tag in a push is
    // TAG_INVALID, the code that says so.
    for reference in [".INVALID", "-leading-dash", too_long.as_str(), "has+plus"] {
        assert_error(reg.get_manifest("push/tags", reference), &[404], &["MANIFEST_UNKNOWN"]);
        let head = reg.send(reg.request(Method::HEAD, &format!("/v2/push/tags/manifests/{reference}")));
        assert_eq!(head.status(), 404, "HEAD of {reference}");
        let resp = reg.put_manifest("push/tags", reference, OCI_MANIFEST, &image.manifest);
        assert_error(resp, &[400], &["TAG_INVALID"]);
    }
    let longest = "T".repeat(128);
    for reference in ["_Under.Score-1", longest.as_str(), "0", "a.b-c_d"] {
        reg.push_manifest("push/tags", reference, OCI_MANIFEST, &image.manifest);
        assert_eq!(reg.get_manifest("push/tags", reference).status(), 200, "{reference}");
    }
}

/// Spec "Pulling manifests": `<name>` MUST match
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`. Other names fail
/// with NAME_INVALID (code-8, 400) or, where routing cannot tell a name from a path, 404
/// NAME_UNKNOWN (code-9; end-2..end-8 fail with 404).
#[test]
fn invalid_repository_names_are_refused() {
    let reg = Registry::start();
    let image = reg.push_image("valid", None, "names");
    for name in [
        "UpperCase",
        "bad..dots",
        "trailing-",
        "-leading",
        "a___b",
        "a/_b",
        "a._b",
        "with%20space",
        ".hidden/x",
        "a/..b",
        "a%2Fb",
    ] {
        assert_error(reg.post_upload(name), &[400, 404], &["NAME_INVALID", "NAME_UNKNOWN"]);
        let resp = reg.put_manifest(name, "v1", OCI_MANIFEST, &image.manifest);
        assert_error(resp, &[400, 404], &["NAME_INVALID", "NAME_UNKNOWN"]);
        assert_error(reg.get_manifest(name, "v1"), &[400, 404], &["NAME_INVALID", "NAME_UNKNOWN"]);
        assert_error(
            reg.get(&format!("/v2/{name}/tags/list")),
            &[400, 404],
            &["NAME_INVALID", "NAME_UNKNOWN"],
        );
    }
}

/// The name grammar allows `__`, runs of `-`, many components, and components that spell the
/// API's own path words; all of them push and pull.
#[test]
fn unusual_valid_repository_names_work() {
    let reg = Registry::start();
    for name in ["a__b", "a--b", "a.b-c_d", "x/y/z/w", "team/manifests", "team/blobs", "team/tags", "v2"] {
        let image = reg.push_image(name, Some("v1"), name);
        let resp = reg.get_manifest(name, "v1");
        assert_eq!(assert_content(resp, 200, &image.digest, image.manifest.len()), image.manifest, "{name}");
        let layer = util::sha256(&image.layer);
        assert_eq!(reg.get(&format!("/v2/{name}/blobs/{layer}")).status(), 200, "{name}");
        let tags: Value = reg.get(&format!("/v2/{name}/tags/list")).json().expect("tags JSON");
        assert_eq!(tags, json!({"name": name, "tags": ["v1"]}), "{name}");
    }
}

/// Spec "Pushing Manifests": a registry SHOULD enforce a limit and answer 413 above it, and
/// "SHOULD expect to … support manifest pushes of at least 4 megabytes". A 4 MB manifest is
/// accepted; one over 4 MiB is refused with 413 (or 400 MANIFEST_INVALID/SIZE_INVALID).
#[test]
fn push_manifest_size_limit() {
    let reg = Registry::start();
    reg.push_blob("push/big", b"{}");
    let padded = |total: usize| {
        let mut manifest = image_manifest(descriptor(OCI_CONFIG, b"{}"), vec![]);
        let base = to_bytes(&manifest).len() + r#","annotations":{"pad":""}"#.len();
        manifest["annotations"] = json!({"pad": "p".repeat(total - base)});
        let bytes = to_bytes(&manifest);
        assert_eq!(bytes.len(), total);
        bytes
    };

    let four_mb = padded(4_000_000);
    reg.push_manifest("push/big", "fits", OCI_MANIFEST, &four_mb);

    let oversize = padded(5 * 1024 * 1024);
    let resp = reg.put_manifest("push/big", "toobig", OCI_MANIFEST, &oversize);
    let status = resp.status().as_u16();
    if status == 413 {
        // A 4XX body "MAY … be in any format"; if JSON, it has the error format.
        if header(&resp, "content-type").is_some_and(|t| t.starts_with("application/json")) {
            assert_error(resp, &[413], &["MANIFEST_INVALID", "SIZE_INVALID"]);
        }
    } else {
        assert_error(resp, &[400], &["MANIFEST_INVALID", "SIZE_INVALID"]);
    }
    assert_eq!(reg.get_manifest("push/big", "toobig").status(), 404);
}

/// DESIGN.md manifest types: an OCI image index of child manifests (spec "Definitions": an index
/// is a manifest whose descriptors reference other manifests), pushed by tag and pulled with its
/// media type.
#[test]
fn push_oci_image_index() {
    let reg = Registry::start();
    let amd64 = reg.push_image("index", None, "amd64");
    let arm64 = reg.push_image("index", None, "arm64");
    let child = |image: &Image, arch: &str| {
        let mut d = descriptor(OCI_MANIFEST, &image.manifest);
        d["platform"] = json!({"architecture": arch, "os": "linux"});
        d
    };
    let index = to_bytes(&image_index(vec![child(&amd64, "amd64"), child(&arm64, "arm64")]));
    let digest = reg.push_manifest("index", "multi", OCI_INDEX, &index);

    for reference in ["multi", digest.as_str()] {
        let resp = reg.get_manifest("index", reference);
        assert_eq!(must_header(&resp, "content-type"), OCI_INDEX, "{reference}");
        assert_eq!(assert_content(resp, 200, &digest, index.len()), index, "{reference}");
    }
    for image in [&amd64, &arm64] {
        let resp = reg.get_manifest("index", &image.digest);
        assert_eq!(assert_content(resp, 200, &image.digest, image.manifest.len()), image.manifest);
    }
}

/// DESIGN.md manifest types: Docker schema 2 manifests and a manifest list of them, each served
/// with its own media type.
#[test]
fn push_docker_manifest_list() {
    let reg = Registry::start();
    let mut children = Vec::new();
    for arch in ["amd64", "ppc64le"] {
        let config = json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}}).to_string();
        let layer = format!("docker layer {arch}").into_bytes();
        reg.push_blob("docker", config.as_bytes());
        reg.push_blob("docker", &layer);
        let manifest = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": descriptor(DOCKER_CONFIG, config.as_bytes()),
            "layers": [descriptor(DOCKER_LAYER, &layer)],
        }));
        let digest = reg.push_manifest("docker", arch, DOCKER_MANIFEST, &manifest);
        let resp = reg.get_manifest("docker", arch);
        assert_eq!(must_header(&resp, "content-type"), DOCKER_MANIFEST);
        assert_content(resp, 200, &digest, manifest.len());
        let mut child = descriptor(DOCKER_MANIFEST, &manifest);
        child["platform"] = json!({"architecture": arch, "os": "linux"});
        children.push(child);
    }
    let list = to_bytes(&json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": children}));
    let digest = reg.push_manifest("docker", "latest", DOCKER_LIST, &list);
    let resp = reg.get_manifest("docker", "latest");
    assert_eq!(must_header(&resp, "content-type"), DOCKER_LIST);
    assert_eq!(assert_content(resp, 200, &digest, list.len()), list);
}

/// Spec "Push": an index referencing a manifest the repository does not have is rejected with
/// MANIFEST_BLOB_UNKNOWN (code-5, "manifest references a manifest or blob unknown").
#[test]
fn push_index_with_missing_child_is_400() {
    let reg = Registry::start();
    let present = reg.push_image("index/missing", None, "present");
    let absent = to_bytes(&image_manifest(descriptor(OCI_CONFIG, b"{\"absent\":1}"), vec![]));
    let index =
        image_index(vec![descriptor(OCI_MANIFEST, &present.manifest), descriptor(OCI_MANIFEST, &absent)]);
    let resp = reg.put_manifest("index/missing", "multi", OCI_INDEX, &to_bytes(&index));
    assert_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]);

    // A manifest of another repository is not in this one.
    let elsewhere = reg.push_image("index/elsewhere", None, "elsewhere");
    let index = image_index(vec![descriptor(OCI_MANIFEST, &elsewhere.manifest)]);
    let resp = reg.put_manifest("index/missing", "multi", OCI_INDEX, &to_bytes(&index));
    assert_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]);

    let list = json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [descriptor(DOCKER_MANIFEST, &absent)]});
    let resp = reg.put_manifest("index/missing", "list", DOCKER_LIST, &to_bytes(&list));
    assert_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]);
}

/// DESIGN.md manifest types: non-distributable (foreign) layers live outside the registry
/// (image-spec: their `urls`), so a manifest with one is accepted without that blob.
#[test]
fn push_manifest_with_foreign_layer() {
    let reg = Registry::start();
    let config = br#"{"os":"windows"}"#;
    reg.push_blob("foreign", config);
    let mut foreign = descriptor(OCI_FOREIGN_LAYER, b"windows base layer, hosted elsewhere");
    foreign["urls"] = json!(["https://example.com/layers/base.tar.gz"]);
    let manifest = to_bytes(&image_manifest(descriptor(OCI_CONFIG, config), vec![foreign]));
    let digest = reg.push_manifest("foreign", "v1", OCI_MANIFEST, &manifest);
    assert_content(reg.get_manifest("foreign", "v1"), 200, &digest, manifest.len());
}

// ---------------------------------------------------------------------------------------------
// Content discovery: tags (end-8a, end-8b), catalog, referrers (end-12a, end-12b).
// ---------------------------------------------------------------------------------------------

/// Spec "Listing Tags": 200 with `{"name", "tags"}` in lexical order; `n` limits the page and
/// "MUST include <int> results" unless fewer remain or a `Link` is given; `last` starts after a
/// tag; `n=0` gives an empty list and no `Link`; `Link: <…>; rel="next"` leads to the rest.
#[test]
fn tags_list_and_pagination() {
    let reg = Registry::start();
    let image = reg.push_image("tags", None, "tags");
    let tags = ["v2", "latest", "v10", "1.0", "v1"]; // sorted: 1.0, latest, v1, v10, v2
    for tag in tags {
        reg.push_manifest("tags", tag, OCI_MANIFEST, &image.manifest);
    }
    let sorted = ["1.0", "latest", "v1", "v10", "v2"];

    let resp = reg.get("/v2/tags/tags/list");
    assert_eq!(resp.status(), 200);
    assert!(must_header(&resp, "content-type").starts_with("application/json"));
    assert_eq!(resp.json::<Value>().expect("JSON"), json!({"name": "tags", "tags": sorted}));

    let resp = reg.get("/v2/tags/tags/list?n=2");
    assert_eq!(resp.status(), 200);
    let link = next_link(&resp).expect("a Link to the next page");
    assert_eq!(strings(&resp.json::<Value>().expect("JSON")["tags"]), ["1.0", "latest"]);
    let url = Url::parse(&reg.resolve(&link)).expect("Link URL");
    assert_eq!(url.path(), "/v2/tags/tags/list");
    assert_eq!(query_param(&url, "last").as_deref(), Some("latest"));

    assert_eq!(reg.paginate("/v2/tags/tags/list?n=2", "tags", 2, "/v2/tags/tags/list"), sorted);
    assert_eq!(reg.paginate("/v2/tags/tags/list?n=1", "tags", 1, "/v2/tags/tags/list"), sorted);

    let page = |query: &str| {
        let resp = reg.get(&format!("/v2/tags/tags/list?{query}"));
        assert_eq!(resp.status(), 200, "{query}");
        let link = header(&resp, "link");
        (strings(&resp.json::<Value>().expect("JSON")["tags"]), link)
    };
    assert_eq!(page("last=latest").0, ["v1", "v10", "v2"]);
    assert_eq!(page("last=m").0, ["v1", "v10", "v2"], "last need not be an existing tag");
    assert_eq!(page("n=2&last=v1").0, ["v10", "v2"]);
    assert_eq!(page("n=10").0, sorted);
    let (empty, link) = page("n=0");
    assert!(empty.is_empty(), "n=0 returns an empty list");
    assert_eq!(link, None, "n=0 MUST NOT include a Link header");
}

/// Spec "Listing Tags": "the tags MUST be in lexical (i.e. case-insensitive alphanumeric order)
/// or "ASCIIbetical" order" — either is allowed, nothing else.
#[test]
fn tags_list_order_with_mixed_case() {
    let reg = Registry::start();
    let image = reg.push_image("tags/case", None, "case");
    for tag in ["beta", "Gamma", "alpha", "Delta", "_under"] {
        reg.push_manifest("tags/case", tag, OCI_MANIFEST, &image.manifest);
    }
    let tags: Value = reg.get("/v2/tags/case/tags/list").json().expect("tags JSON");
    let tags = strings(&tags["tags"]);
    let ascii = ["Delta", "Gamma", "_under", "alpha", "beta"];
    let lexical = ["_under", "alpha", "beta", "Delta", "Gamma"];
    assert!(tags == ascii || tags == lexical, "tags in neither order: {tags:?}");
    let paged = reg.paginate("/v2/tags/case/tags/list?n=2", "tags", 2, "/v2/tags/case/tags/list");
    assert_eq!(paged, tags, "pages follow the same order");
}

/// end-8a fails with 404 for a repository that does not exist: NAME_UNKNOWN (code-9).
#[test]
fn tags_list_of_unknown_repository_is_404() {
    let reg = Registry::start();
    assert_error(reg.get("/v2/nothing/here/tags/list"), &[404], &["NAME_UNKNOWN"]);
}

/// `GET /v2/_catalog` (historical API, apdx-1 "Listing Repositories"; DESIGN.md: paginated like
/// the tags list): `{"repositories": [...]}` in lexical order, with `n`, `last` and `Link`.
#[test]
fn catalog_and_pagination() {
    let reg = Registry::start();
    let repos = ["zeta", "beta/two", "alpha", "gamma", "beta/one"];
    for repo in repos {
        reg.push_image(repo, Some("v1"), repo);
    }
    let sorted = ["alpha", "beta/one", "beta/two", "gamma", "zeta"];

    let resp = reg.get("/v2/_catalog");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().expect("JSON"), json!({"repositories": sorted}));

    let resp = reg.get("/v2/_catalog?n=2");
    assert_eq!(resp.status(), 200);
    let link = next_link(&resp).expect("a Link to the next page");
    assert_eq!(strings(&resp.json::<Value>().expect("JSON")["repositories"]), ["alpha", "beta/one"]);
    let url = Url::parse(&reg.resolve(&link)).expect("Link URL");
    assert_eq!(query_param(&url, "last").as_deref(), Some("beta/one"));

    assert_eq!(reg.paginate("/v2/_catalog?n=2", "repositories", 2, "/v2/_catalog"), sorted);
    assert_eq!(reg.paginate("/v2/_catalog?n=3", "repositories", 3, "/v2/_catalog"), sorted);

    let resp = reg.send(reg.request(Method::GET, "/v2/_catalog").query(&[("n", "2"), ("last", "beta/two")]));
    assert_eq!(resp.status(), 200);
    assert_eq!(strings(&resp.json::<Value>().expect("JSON")["repositories"]), ["gamma", "zeta"]);
}

/// The catalog and the tags list agree on which repositories exist (README: a repository exists
/// while it holds a manifest). Deleting every tag keeps the repository in both (its manifest is
/// still there by digest); deleting its last manifest removes it from both, while its layers
/// stay readable until garbage collection (issue 16.7: it left the catalog but its tags list
/// still answered 200).
#[test]
fn catalog_and_tags_list_agree_after_deletes() {
    let reg = Registry::start();
    let image = reg.push_image("agree/gone", Some("v1"), "gone");
    reg.push_image("agree/kept", Some("v1"), "kept");
    let catalog = || {
        let resp = reg.get("/v2/_catalog");
        assert_eq!(resp.status(), 200);
        strings(&resp.json::<Value>().expect("JSON")["repositories"])
    };
    assert_eq!(catalog(), ["agree/gone", "agree/kept"]);

    assert_eq!(reg.delete("/v2/agree/gone/manifests/v1").status(), 202);
    assert_eq!(catalog(), ["agree/gone", "agree/kept"], "an untagged manifest keeps its repository");
    let tags: Value = reg.get("/v2/agree/gone/tags/list").json().expect("tags JSON");
    assert_eq!(tags, json!({"name": "agree/gone", "tags": []}));

    assert_eq!(reg.delete(&format!("/v2/agree/gone/manifests/{}", image.digest)).status(), 202);
    assert_eq!(catalog(), ["agree/kept"], "no manifest left: not a repository");
    assert_error(reg.get("/v2/agree/gone/tags/list"), &[404], &["NAME_UNKNOWN"]);
    let layer = util::sha256(&image.layer);
    assert_eq!(reg.get(&format!("/v2/agree/gone/blobs/{layer}")).status(), 200, "layers stay until gc");

    // A blob pushed without a manifest (a push in progress) makes no repository either.
    reg.push_blob("agree/blobs-only", b"just a blob");
    assert_eq!(catalog(), ["agree/kept"]);
    assert_error(reg.get("/v2/agree/blobs-only/tags/list"), &[404], &["NAME_UNKNOWN"]);

    reg.push_manifest("agree/gone", "v2", OCI_MANIFEST, &image.manifest);
    assert_eq!(catalog(), ["agree/gone", "agree/kept"], "pushed again: listed again");
    let tags: Value = reg.get("/v2/agree/gone/tags/list").json().expect("tags JSON");
    assert_eq!(tags["tags"], json!(["v2"]));
}

/// Pushes the referrers fixture of the referrers tests: an image, and in its repository two
/// image-manifest artifacts and an index that name it as `subject`.
struct Referrers {
    subject: String,
    sbom: Value,
    signature: Value,
    index: Value,
}

const SBOM_TYPE: &str = "application/vnd.example.sbom.v1";
const SIGNATURE_CONFIG: &str = "application/vnd.example.signature.config.v1+json";

impl Registry {
    /// Pushes an artifact manifest with `subject`; asserts 201 and `OCI-Subject` (spec "Pushing
    /// Manifests with Subject": a registry supporting referrers "MUST respond with the response
    /// header `OCI-Subject: <subject digest>`"). Returns the descriptor the referrers list must
    /// hold for it.
    #[track_caller]
    fn push_referrer(&self, name: &str, manifest: &Value, subject: &str) -> Value {
        let media_type = manifest["mediaType"].as_str().expect("mediaType");
        let body = to_bytes(manifest);
        let digest = util::sha256(&body);
        let resp = self.put_manifest(name, &digest, media_type, &body);
        assert_eq!(resp.status(), 201, "PUT referrer {digest}");
        assert_eq!(must_header(&resp, "oci-subject"), subject, "OCI-Subject of {digest}");
        assert_eq!(must_header(&resp, "docker-content-digest"), digest);
        // Spec "Listing Referrers": artifactType from the manifest, else the config's mediaType
        // for an image manifest; omitted for an index without one; annotations copied.
        let artifact_type =
            manifest["artifactType"].as_str().or_else(|| manifest["config"]["mediaType"].as_str());
        let mut expected = json!({"mediaType": media_type, "digest": digest, "size": body.len()});
        if let Some(artifact_type) = artifact_type {
            expected["artifactType"] = json!(artifact_type);
        }
        if manifest.get("annotations").is_some() {
            expected["annotations"] = manifest["annotations"].clone();
        }
        expected
    }

    fn push_referrers_fixture(&self, name: &str) -> Referrers {
        let image = self.push_image(name, Some("v1"), "subject");
        let subject =
            json!({"mediaType": OCI_MANIFEST, "digest": image.digest, "size": image.manifest.len()});
        self.push_blob(name, EMPTY_JSON);
        self.push_blob(name, b"{\"packages\":[]}");

        let mut sbom = image_manifest(
            descriptor(OCI_EMPTY, EMPTY_JSON),
            vec![descriptor("application/spdx+json", b"{\"packages\":[]}")],
        );
        sbom["artifactType"] = json!(SBOM_TYPE);
        sbom["subject"] = subject.clone();
        sbom["annotations"] =
            json!({"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "kind": "sbom"});
        let sbom = self.push_referrer(name, &sbom, &image.digest);

        let signature_config = b"{\"signer\":\"ci\"}";
        self.push_blob(name, signature_config);
        let mut signature = image_manifest(
            descriptor(SIGNATURE_CONFIG, signature_config),
            vec![descriptor(OCI_EMPTY, EMPTY_JSON)],
        );
        signature["subject"] = subject.clone();
        signature["annotations"] = json!({"kind": "signature"});
        let signature = self.push_referrer(name, &signature, &image.digest);

        let mut index = image_index(vec![]);
        index["subject"] = subject;
        index["annotations"] = json!({"kind": "index"});
        let index = self.push_referrer(name, &index, &image.digest);

        Referrers { subject: image.digest, sbom, signature, index }
    }

    /// `GET /v2/<name>/referrers/<digest>[?artifactType=]`: asserts 200 and the index media type;
    /// returns the descriptors sorted by digest and the `OCI-Filters-Applied` header.
    #[track_caller]
    fn referrers(
        &self,
        name: &str,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> (Vec<Value>, Option<String>) {
        let mut request = self.request(Method::GET, &format!("/v2/{name}/referrers/{digest}"));
        if let Some(artifact_type) = artifact_type {
            request = request.query(&[("artifactType", artifact_type)]);
        }
        let resp = self.send(request);
        assert_eq!(resp.status(), 200, "referrers of {digest}");
        assert_eq!(must_header(&resp, "content-type"), OCI_INDEX, "referrers Content-Type");
        let filters = header(&resp, "oci-filters-applied");
        let body: Value = resp.json().expect("referrers JSON");
        assert_eq!(body["schemaVersion"], json!(2));
        assert_eq!(body["mediaType"], json!(OCI_INDEX));
        let manifests = body["manifests"].as_array().expect("manifests array").clone();
        (sorted_by_digest(manifests), filters)
    }
}

fn sorted_by_digest(mut descriptors: Vec<Value>) -> Vec<Value> {
    descriptors.sort_by_key(|d| d["digest"].as_str().unwrap_or_default().to_string());
    descriptors
}

/// Spec "Listing Referrers": 200 with an image index (`Content-Type:
/// application/vnd.oci.image.index.v1+json`) of the manifests in the repository whose `subject`
/// is the digest, each with `artifactType` and the manifest's annotations.
#[test]
fn referrers_list() {
    let reg = Registry::start();
    let fixture = reg.push_referrers_fixture("refs");
    // A referrer of the same digest in another repository is not in this repository's list.
    reg.push_image("refs/other", None, "other");
    let (list, filters) = reg.referrers("refs", &fixture.subject, None);
    assert_eq!(filters, None, "no filter was requested, so none is reported applied");
    let expected = sorted_by_digest(vec![fixture.sbom, fixture.signature, fixture.index.clone()]);
    assert_eq!(list, expected);
    assert!(fixture.index.get("artifactType").is_none(), "an index without artifactType has none");
    // Referrers pushed by digest are not tagged.
    let tags: Value = reg.get("/v2/refs/tags/list").json().expect("tags JSON");
    assert_eq!(tags["tags"], json!(["v1"]));
}

/// Spec "Listing Referrers": with `?artifactType=` the response, when filtered, MUST carry
/// `OCI-Filters-Applied: artifactType` (DESIGN.md: filtering is supported).
#[test]
fn referrers_filter_by_artifact_type() {
    let reg = Registry::start();
    let fixture = reg.push_referrers_fixture("refs/filter");
    let (list, filters) = reg.referrers("refs/filter", &fixture.subject, Some(SBOM_TYPE));
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(list, vec![fixture.sbom]);

    let (list, filters) = reg.referrers("refs/filter", &fixture.subject, Some(SIGNATURE_CONFIG));
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(list, vec![fixture.signature]);

    let (list, filters) = reg.referrers("refs/filter", &fixture.subject, Some("application/vnd.none+json"));
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert!(list.is_empty());
}

/// Spec "Listing Referrers": "If a query results in no matching referrers, an empty manifest list
/// MUST be returned" with 200 (the registry "MUST NOT return a 404"); an invalid digest is a 400.
#[test]
fn referrers_of_unknown_subject_is_empty() {
    let reg = Registry::start();
    reg.push_image("refs/empty", Some("v1"), "empty");
    let (list, _) = reg.referrers("refs/empty", &util::sha256(b"no such manifest"), None);
    assert!(list.is_empty());
    let resp = reg.get("/v2/refs/empty/referrers/sha256:not-a-digest");
    assert_eq!(resp.status(), 400, "{}", text(resp));
}

/// Spec "Push": "A registry MUST initially accept an otherwise valid manifest with a `subject`
/// field that references a manifest that does not exist", and lists it as a referrer of it.
#[test]
fn referrer_to_missing_subject_is_accepted() {
    let reg = Registry::start();
    reg.push_blob("refs/dangling", EMPTY_JSON);
    let absent = to_bytes(&image_manifest(descriptor(OCI_CONFIG, b"{\"later\":1}"), vec![]));
    let absent_digest = util::sha256(&absent);
    let mut artifact =
        image_manifest(descriptor(OCI_EMPTY, EMPTY_JSON), vec![descriptor(OCI_EMPTY, EMPTY_JSON)]);
    artifact["artifactType"] = json!("application/vnd.example.note");
    artifact["subject"] = descriptor(OCI_MANIFEST, &absent);
    let expected = reg.push_referrer("refs/dangling", &artifact, &absent_digest);
    let (list, _) = reg.referrers("refs/dangling", &absent_digest, None);
    assert_eq!(list, vec![expected]);
}

/// Spec "Deleting Manifests": a deleted referrer is no longer in the referrers list.
#[test]
fn deleted_referrer_leaves_the_list() {
    let reg = Registry::start();
    let fixture = reg.push_referrers_fixture("refs/delete");
    let sbom = fixture.sbom["digest"].as_str().expect("digest").to_string();
    assert_eq!(reg.delete(&format!("/v2/refs/delete/manifests/{sbom}")).status(), 202);
    let (list, _) = reg.referrers("refs/delete", &fixture.subject, None);
    assert_eq!(list, sorted_by_digest(vec![fixture.signature, fixture.index]));
}

// ---------------------------------------------------------------------------------------------
// Content management (end-9, end-10).
// ---------------------------------------------------------------------------------------------

/// Spec "Deleting Manifests": 202, then GET by digest "and any tag pointing to that digest will
/// return a 404"; deleting it again is 404 MANIFEST_UNKNOWN (code-7).
#[test]
fn delete_manifest_by_digest() {
    let reg = Registry::start();
    let image = reg.push_image("manage/manifest", Some("v1"), "deleted");
    reg.push_manifest("manage/manifest", "v2", OCI_MANIFEST, &image.manifest);
    let kept = reg.push_image("manage/manifest", Some("kept"), "kept");

    let url = format!("/v2/manage/manifest/manifests/{}", image.digest);
    assert_eq!(reg.delete(&url).status(), 202);
    assert_error(reg.get_manifest("manage/manifest", &image.digest), &[404], &["MANIFEST_UNKNOWN"]);
    assert_eq!(reg.head(&url).status(), 404);
    for tag in ["v1", "v2"] {
        assert_error(reg.get_manifest("manage/manifest", tag), &[404], &["MANIFEST_UNKNOWN"]);
    }
    assert_error(reg.delete(&url), &[404], &["MANIFEST_UNKNOWN"]);
    // A blob's digest names no manifest; the blob survives the attempt.
    let layer = util::sha256(&kept.layer);
    assert_error(
        reg.delete(&format!("/v2/manage/manifest/manifests/{layer}")),
        &[404],
        &["MANIFEST_UNKNOWN"],
    );
    assert_eq!(reg.get(&format!("/v2/manage/manifest/blobs/{layer}")).status(), 200);
    assert_content(reg.get_manifest("manage/manifest", "kept"), 200, &kept.digest, kept.manifest.len());
    let tags: Value = reg.get("/v2/manage/manifest/tags/list").json().expect("tags JSON");
    assert_eq!(tags["tags"], json!(["kept"]), "the deleted manifest's tags are gone from the list");

    // Deleted content can be pushed again.
    reg.push_manifest("manage/manifest", "v1", OCI_MANIFEST, &image.manifest);
    assert_content(
        reg.get_manifest("manage/manifest", &image.digest),
        200,
        &image.digest,
        image.manifest.len(),
    );
}

/// Spec "Deleting tags": `DELETE /v2/<name>/manifests/<tag>` answers 202 (DESIGN.md: tag delete
/// is enabled); the tag is gone, the manifest stays reachable by digest and by other tags.
#[test]
fn delete_tag() {
    let reg = Registry::start();
    let image = reg.push_image("manage/tag", Some("v1"), "tagged");
    reg.push_manifest("manage/tag", "v2", OCI_MANIFEST, &image.manifest);

    assert_eq!(reg.delete("/v2/manage/tag/manifests/v1").status(), 202);
    assert_error(reg.get_manifest("manage/tag", "v1"), &[404], &["MANIFEST_UNKNOWN"]);
    assert_content(reg.get_manifest("manage/tag", &image.digest), 200, &image.digest, image.manifest.len());
    assert_content(reg.get_manifest("manage/tag", "v2"), 200, &image.digest, image.manifest.len());
    let tags: Value = reg.get("/v2/manage/tag/tags/list").json().expect("tags JSON");
    assert_eq!(tags["tags"], json!(["v2"]));
    assert_error(reg.delete("/v2/manage/tag/manifests/v1"), &[404], &["MANIFEST_UNKNOWN"]);

    // Spec "Listing Tags": the repository still exists, so 200, and "the list of tags MAY be empty".
    assert_eq!(reg.delete("/v2/manage/tag/manifests/v2").status(), 202);
    let resp = reg.get("/v2/manage/tag/tags/list");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().expect("tags JSON"), json!({"name": "manage/tag", "tags": []}));
    assert_content(reg.get_manifest("manage/tag", &image.digest), 200, &image.digest, image.manifest.len());
}

/// Spec "Deleting Blobs": 202, then 404 BLOB_UNKNOWN (code-1); "If the blob is not found, a 404
/// Not Found code MUST be returned".
#[test]
fn delete_blob() {
    let reg = Registry::start();
    let data = pattern(512);
    let digest = reg.push_blob("manage/blob", &data);
    let url = format!("/v2/manage/blob/blobs/{digest}");
    assert_eq!(reg.delete(&url).status(), 202);
    assert_error(reg.get(&url), &[404], &["BLOB_UNKNOWN"]);
    assert_eq!(reg.head(&url).status(), 404);
    assert_error(reg.delete(&url), &[404], &["BLOB_UNKNOWN"]);
    let never = format!("/v2/manage/blob/blobs/{}", util::sha256(b"never"));
    assert_error(reg.delete(&never), &[404], &["BLOB_UNKNOWN"]);

    // Deleted content can be pushed again.
    reg.push_blob("manage/blob", &data);
    assert_eq!(assert_content(reg.get(&url), 200, &digest, data.len()), data);
}

/// Spec "Content Management": every delete names a repository (`/v2/<name>/…`); the same blob,
/// manifest or tag in another repository is untouched.
#[test]
fn deletes_are_scoped_to_the_repository() {
    let reg = Registry::start();
    let a = reg.push_image("scope/a", Some("v1"), "shared");
    let b = reg.push_image("scope/b", Some("v1"), "shared");
    assert_eq!(a.digest, b.digest, "the same content in both repositories");
    let layer = util::sha256(&a.layer);

    assert_eq!(reg.delete("/v2/scope/a/manifests/v1").status(), 202);
    assert_content(reg.get_manifest("scope/b", "v1"), 200, &b.digest, b.manifest.len());
    assert_eq!(reg.delete(&format!("/v2/scope/a/manifests/{}", a.digest)).status(), 202);
    assert_content(reg.get_manifest("scope/b", &b.digest), 200, &b.digest, b.manifest.len());
    assert_eq!(reg.delete(&format!("/v2/scope/a/blobs/{layer}")).status(), 202);
    assert_eq!(
        assert_content(reg.get(&format!("/v2/scope/b/blobs/{layer}")), 200, &layer, b.layer.len()),
        b.layer
    );
}

/// Spec "Pushing Manifests": manifests SHOULD (not MUST) include `mediaType`; without it the
/// `Content-Type` of the push says what it is, and the pull answers with that type ("The
/// Content-Type header SHOULD match what the client pushed").
#[test]
fn push_manifest_without_media_type_field() {
    let reg = Registry::start();
    reg.push_blob("nomediatype", b"{}");
    let manifest =
        to_bytes(&json!({"schemaVersion": 2, "config": descriptor(OCI_CONFIG, b"{}"), "layers": []}));
    let digest = reg.push_manifest("nomediatype", "v1", OCI_MANIFEST, &manifest);
    let resp = reg.get_manifest("nomediatype", "v1");
    assert_eq!(must_header(&resp, "content-type"), OCI_MANIFEST);
    assert_eq!(assert_content(resp, 200, &digest, manifest.len()), manifest);
}

/// Spec "Error Codes": a 4XX JSON error's "code field MUST be one of" the spec's codes — also for
/// a malformed `n` (the spec defines no pagination error; answering 200 is fine too).
#[test]
fn malformed_pagination_errors_use_spec_codes() {
    let reg = Registry::start();
    reg.push_image("paging", Some("v1"), "paging");
    for url in
        ["/v2/paging/tags/list?n=abc", "/v2/paging/tags/list?n=-1", "/v2/_catalog?n=abc", "/v2/_catalog?n=-1"]
    {
        let resp = reg.get(url);
        if resp.status() != 200 {
            assert_error(resp, &[400], SPEC_CODES);
        }
    }
}
