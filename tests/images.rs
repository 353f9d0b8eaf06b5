//! Real images through real clients: skopeo pushes generated OCI layouts (one layer over 64 MiB)
//! and pulls them back bit for bit; tags, catalog and deletes are checked over HTTP; artifacts
//! pushed by the `oras` Python client are found through the referrers API.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::util::layout::{self, ImageBuilder, MIB, OCI_INDEX, OCI_MANIFEST, OciImage};
use crate::util::{self, Server, skopeo};

/// A manifest fetched over HTTP.
struct Fetched {
    status: reqwest::StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

/// `GET` (or `HEAD`) `/v2/<repo>/manifests/<reference>` accepting every manifest type.
fn fetch_manifest(server: &Server, method: reqwest::Method, repo: &str, reference: &str) -> Fetched {
    let url = server.url(&format!("/v2/{repo}/manifests/{reference}"));
    let resp = util::http()
        .request(method.clone(), &url)
        .header("Accept", util::MANIFEST_ACCEPT)
        .send()
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let (status, headers) = (resp.status(), resp.headers().clone());
    Fetched { status, headers, body: resp.bytes().expect("body").to_vec() }
}

/// The value of a response header as a string ("" when absent).
fn header(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers.get(name).map(|v| v.to_str().expect("ASCII header").to_string()).unwrap_or_default()
}

/// The first error code of a spec error body (`{"errors":[{"code":…}]}`).
fn error_code(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not a JSON error body: {}", String::from_utf8_lossy(body)));
    value["errors"][0]["code"].as_str().unwrap_or_default().to_string()
}

#[test]
fn skopeo_push_then_pull_back_is_bit_identical() {
    if !skopeo::available() {
        return;
    }
    let server = Server::start();
    let tmp = tempfile::tempdir().expect("temporary directory");
    // An empty file, a small one, a few MiB, and one layer over 64 MiB.
    let image =
        ImageBuilder::new(11, &[0, 1500, 3 * MIB, 64 * MIB + 4321]).write(&tmp.path().join("src"), "v1");
    assert!(image.layers[3].size > 64 * MIB);

    let reference = skopeo::docker_ref(&server.host(), "big/image", "v1");
    let pushed = skopeo::copy_digest(&image.oci_ref(), &reference, skopeo::EXACT);
    assert_eq!(pushed, image.manifest.digest);

    // The manifest comes back byte for byte, by tag and by digest.
    assert_eq!(skopeo::inspect_raw(&reference, &[]), image.manifest_bytes());
    let by_digest = format!("docker://{}/big/image@{}", server.host(), image.manifest.digest);
    assert_eq!(skopeo::inspect_raw(&by_digest, &[]), image.manifest_bytes());

    let summary = skopeo::inspect(&reference, &[]);
    assert_eq!(summary["Digest"], image.manifest.digest.as_str());
    let layers: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(summary["Layers"], json!(layers));
    assert_eq!(summary["RepoTags"], json!(["v1"]));
    assert_eq!(summary["Architecture"], "amd64");
    assert_eq!(summary["Labels"]["org.example.seed"], "11");

    let head = fetch_manifest(&server, reqwest::Method::HEAD, "big/image", "v1");
    assert_eq!(head.status, 200);
    assert_eq!(header(&head.headers, "docker-content-digest"), image.manifest.digest);
    assert_eq!(header(&head.headers, "content-type"), OCI_MANIFEST);
    assert_eq!(header(&head.headers, "content-length"), image.manifest.size.to_string());

    // Every blob, the big layer included, is served with its exact length.
    for blob in image.blobs() {
        let url = server.url(&format!("/v2/big/image/blobs/{}", blob.digest));
        let resp = util::http().head(&url).send().expect("HEAD a blob");
        assert_eq!(resp.status(), 200, "HEAD {url}");
        assert_eq!(header(resp.headers(), "content-length"), blob.size.to_string(), "{url}");
        assert_eq!(header(resp.headers(), "docker-content-digest"), blob.digest, "{url}");
    }

    let back = tmp.path().join("back");
    skopeo::copy_exact(&reference, &format!("oci:{}:v1", back.display()), &[]);
    layout::assert_same_blobs(&image.dir.join("blobs/sha256"), &back.join("blobs/sha256"));
    assert_eq!(layout::layout_manifest_digest(&back, "v1"), image.manifest.digest);
}

#[test]
fn tags_catalog_and_deletes_over_http() {
    if !skopeo::available() {
        return;
    }
    let server = Server::start();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let one = ImageBuilder::new(21, &[2000, 70_000]).write(&tmp.path().join("one"), "one");
    let two = ImageBuilder::new(22, &[3000]).write(&tmp.path().join("two"), "two");
    let pushes = [
        (&one, "team/app", "1.0"),
        (&one, "team/app", "latest"),
        (&two, "team/app", "2.0"),
        (&one, "tools", "stable"),
        (&two, "a-first", "x"),
    ];
    for (image, repo, tag) in pushes {
        skopeo::copy_exact(&image.oci_ref(), &skopeo::docker_ref(&server.host(), repo, tag), &[]);
    }

    let base = server.base();
    let (status, tags) = util::get_json(&server.url("/v2/team/app/tags/list"));
    assert_eq!(status, 200);
    assert_eq!(tags, json!({ "name": "team/app", "tags": ["1.0", "2.0", "latest"] }));
    assert_eq!(util::get_all_pages(&base, "/v2/team/app/tags/list?n=1", "tags"), ["1.0", "2.0", "latest"]);

    let all_repos = ["a-first", "team/app", "tools"];
    assert_eq!(util::get_all_pages(&base, "/v2/_catalog", "repositories"), all_repos);
    assert_eq!(util::get_all_pages(&base, "/v2/_catalog?n=2", "repositories"), all_repos);
    let first_page = util::http().get(server.url("/v2/_catalog?n=2")).send().expect("catalog");
    assert!(first_page.headers().contains_key("link"), "a truncated catalog page has a Link");
    let first_page: Value = first_page.json().expect("JSON catalog");
    assert_eq!(first_page["repositories"], json!(["a-first", "team/app"]));
    assert_eq!(
        util::get_all_pages(&base, "/v2/_catalog?n=5&last=a-first", "repositories"),
        ["team/app", "tools"]
    );

    // Deleting a tag leaves the manifest and its other tags alone.
    let resp = util::http().delete(server.url("/v2/team/app/manifests/latest")).send().expect("DELETE");
    assert_eq!(resp.status(), 202, "DELETE a tag");
    assert_eq!(fetch_manifest(&server, reqwest::Method::GET, "team/app", "latest").status, 404);
    let kept = fetch_manifest(&server, reqwest::Method::GET, "team/app", "1.0");
    assert_eq!(kept.status, 200);
    assert_eq!(kept.body, one.manifest_bytes());
    assert_eq!(util::get_all_pages(&base, "/v2/team/app/tags/list", "tags"), ["1.0", "2.0"]);

    // Deleting a manifest by digest: gone from that repository, by digest and by its tag.
    let digest = &two.manifest.digest;
    let url = server.url(&format!("/v2/team/app/manifests/{digest}"));
    let resp = util::http().delete(&url).send().expect("DELETE");
    assert_eq!(resp.status(), 202, "DELETE {url}");
    let gone = fetch_manifest(&server, reqwest::Method::GET, "team/app", digest);
    assert_eq!(gone.status, 404);
    assert_eq!(error_code(&gone.body), "MANIFEST_UNKNOWN");
    assert_eq!(fetch_manifest(&server, reqwest::Method::HEAD, "team/app", digest).status, 404);
    assert_eq!(fetch_manifest(&server, reqwest::Method::GET, "team/app", "2.0").status, 404);
    let again = util::http().delete(&url).send().expect("DELETE again");
    assert_eq!(again.status(), 404, "DELETE of a deleted manifest");
    let by_digest = format!("docker://{}/team/app@{digest}", server.host());
    assert!(!skopeo::run(&["inspect", "--raw", "--tls-verify=false", &by_digest]).status.success());

    // The same manifest in another repository is untouched.
    let other = fetch_manifest(&server, reqwest::Method::GET, "a-first", digest);
    assert_eq!(other.status, 200);
    assert_eq!(other.body, two.manifest_bytes());
}

/// Artifact types used by the referrers test; the first has a `+`, which a query string must
/// carry as `%2B`.
const SBOM_TYPE: &str = "application/vnd.example.sbom.v1+json";
const SIGNATURE_TYPE: &str = "application/vnd.example.signature.v1";

/// Runs `tests/oras_artifact.py` to push `file` as an artifact to `target` (`repo:tag`) with
/// `subject` as its subject; `via` is `config` or `field` (see the script). Returns the HTTP
/// status of the manifest PUT.
fn oras_push(
    python: &Path,
    server: &Server,
    target: &str,
    (artifact_type, via): (&str, &str),
    file: &Path,
    subject: &OciImage,
    annotations: &[&str],
) -> u64 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oras_artifact.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(["--registry", &server.host(), "--target", target])
        .args(["--artifact-type", artifact_type, "--type-via", via])
        .arg("--file")
        .arg(file)
        .args(["--subject-digest", &subject.manifest.digest])
        .args(["--subject-size", &subject.manifest.size.to_string()])
        .args(["--subject-media-type", &subject.manifest.media_type])
        .stdin(Stdio::null());
    for annotation in annotations {
        cmd.args(["--annotation", annotation]);
    }
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success(),
        "oras push of {target} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    result["status"].as_u64().expect("a status")
}

#[test]
fn oras_artifacts_are_listed_by_the_referrers_api() {
    if !skopeo::available() {
        return;
    }
    let Some(python) = util::python_with("oras") else {
        return;
    };
    let server = Server::start();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let subject = ImageBuilder::new(31, &[5000]).write(&tmp.path().join("app"), "v1");
    skopeo::copy_exact(&subject.oci_ref(), &skopeo::docker_ref(&server.host(), "signed/app", "v1"), &[]);

    // 10 000 bytes, pushed by oras in 4096-byte PATCH chunks.
    let payload = tmp.path().join("sbom.bin");
    let mut bytes = vec![0u8; 10_000];
    layout::Prng::new(32).fill(&mut bytes);
    std::fs::write(&payload, &bytes).expect("write the payload");

    let sbom = (SBOM_TYPE, "config");
    let status =
        oras_push(&python, &server, "signed/app:sbom", sbom, &payload, &subject, &["org.example.kind=sbom"]);
    assert_eq!(status, 201, "manifest PUT of the sbom artifact");
    let signature = (SIGNATURE_TYPE, "field");
    let status = oras_push(&python, &server, "signed/app:sig", signature, &payload, &subject, &[]);
    assert_eq!(status, 201, "manifest PUT of the signature artifact");

    // What the registry stores for each artifact: its digest and size are the referrers'.
    let stored = |tag: &str| {
        let m = fetch_manifest(&server, reqwest::Method::GET, "signed/app", tag);
        assert_eq!(m.status, 200, "GET the {tag} artifact");
        let manifest: Value = serde_json::from_slice(&m.body).expect("JSON manifest");
        assert_eq!(manifest["subject"]["digest"], subject.manifest.digest.as_str());
        assert_eq!(manifest["layers"][0]["digest"], util::sha256(&bytes).as_str());
        (util::sha256(&m.body), m.body.len())
    };
    let (sbom_digest, sbom_size) = stored("sbom");
    let (sig_digest, sig_size) = stored("sig");

    let referrers = |query: &str| {
        let url = server.url(&format!("/v2/signed/app/referrers/{}{query}", subject.manifest.digest));
        let resp = util::http().get(&url).send().expect("GET referrers");
        assert_eq!(resp.status(), 200, "GET {url}");
        let headers = resp.headers().clone();
        assert_eq!(header(&headers, "content-type"), OCI_INDEX, "GET {url}");
        let index: Value = resp.json().expect("a JSON index");
        assert_eq!(index["schemaVersion"], 2, "{index}");
        assert_eq!(index["mediaType"], OCI_INDEX, "{index}");
        let mut manifests = index["manifests"].as_array().expect("manifests").clone();
        manifests.sort_by_key(|m| m["artifactType"].as_str().unwrap_or_default().to_string());
        (headers, manifests)
    };

    let (_, all) = referrers("");
    assert_eq!(all.len(), 2, "{all:?}");
    let (sbom_entry, sig_entry) = (&all[0], &all[1]);
    assert_eq!(sbom_entry["mediaType"], OCI_MANIFEST);
    assert_eq!(sbom_entry["digest"], sbom_digest.as_str());
    assert_eq!(sbom_entry["size"], sbom_size);
    assert_eq!(sbom_entry["artifactType"], SBOM_TYPE, "from the config's mediaType");
    assert_eq!(sbom_entry["annotations"], json!({ "org.example.kind": "sbom" }));
    assert_eq!(sig_entry["mediaType"], OCI_MANIFEST);
    assert_eq!(sig_entry["digest"], sig_digest.as_str());
    assert_eq!(sig_entry["size"], sig_size);
    assert_eq!(sig_entry["artifactType"], SIGNATURE_TYPE, "from the artifactType field");

    let (headers, filtered) = referrers(&format!("?artifactType={SIGNATURE_TYPE}"));
    assert_eq!(filtered, std::slice::from_ref(sig_entry));
    assert_eq!(header(&headers, "oci-filters-applied"), "artifactType");
    let (_, filtered) = referrers("?artifactType=application/vnd.example.sbom.v1%2Bjson");
    assert_eq!(filtered, std::slice::from_ref(sbom_entry));
    let (_, filtered) = referrers("?artifactType=application/vnd.example.none");
    assert_eq!(filtered, Vec::<Value>::new());

    // A digest nothing refers to: an empty index, not a 404.
    let unrelated = &subject.layers[0].digest;
    let url = server.url(&format!("/v2/signed/app/referrers/{unrelated}"));
    let (status, index) = util::get_json(&url);
    assert_eq!(status, 200, "GET {url}");
    assert_eq!(index["manifests"], json!([]), "{index}");
}

#[test]
fn generated_images_are_deterministic_tar_layers() {
    if !util::require_tool("tar", "apt-get install tar") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let a = ImageBuilder::new(7, &[0, 1000, 70_000]).write(&tmp.path().join("a"), "t");
    let b = ImageBuilder::new(7, &[0, 1000, 70_000]).write(&tmp.path().join("b"), "t");
    let c = ImageBuilder::new(8, &[0, 1000, 70_000]).write(&tmp.path().join("c"), "t");
    assert_eq!(a.manifest, b.manifest, "the same builder writes the same image");
    assert_ne!(a.layers[2].digest, c.layers[2].digest, "another seed, other content");
    assert_eq!(layout::layout_manifest_digest(&a.dir, "t"), a.manifest.digest);

    for (i, layer) in a.layers.iter().enumerate() {
        let path = layout::blob_path(&a.dir, &layer.digest);
        assert_eq!(layout::sha256_file(&path), layer.digest);
        assert_eq!(std::fs::metadata(&path).expect("layer file").len(), layer.size);
        // GNU tar reads the archive back: every member, with its size.
        let out = Command::new("tar").arg("-tvf").arg(&path).output().expect("run tar");
        assert!(out.status.success(), "tar -tvf layer {i}: {}", String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8_lossy(&out.stdout);
        let data_line = listing.lines().find(|l| l.ends_with("data.bin")).expect("a data.bin member");
        let payload = [0, 1000, 70_000][i].to_string();
        assert!(data_line.split_whitespace().any(|w| w == payload), "layer {i}: {listing}");
        assert!(listing.contains(&format!("opt/layer-{i}/README")), "layer {i}: {listing}");
    }
}
