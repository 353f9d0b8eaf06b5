//! Issue 19, access control: users and tokens made by `regctl add-user` / `add-token --file`,
//! enforced by `regctl serve --htpasswd` against skopeo and raw HTTP: a pull-only user, a user
//! limited to `team/*`, the filtered catalog, cross-repository mounts, expiring tokens, a
//! removed user, and anonymous pull; oras (the Python client) with a pull-only user.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::layout::{ImageBuilder, OciImage};
use crate::util::{self, Server, skopeo};

const ADMIN: (&str, &str) = ("admin", "admin-pw");

/// Runs `regctl ARGS` with `stdin`.
fn regctl(args: &[&str], stdin: &str) -> Output {
    let child = util::spawn_regctl(args, stdin, &[]);
    let out = child.wait_with_output().expect("wait for regctl");
    assert!(
        out.status.success(),
        "regctl {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn path_arg(file: &Path) -> &str {
    file.to_str().expect("a UTF-8 path")
}

/// `regctl add-user NAME --password-stdin --file FILE EXTRA...`.
fn add_user(file: &Path, (name, password): (&str, &str), extra: &[&str]) {
    let args = [&["add-user", name, "--password-stdin", "--file", path_arg(file)], extra].concat();
    regctl(&args, &format!("{password}\n"));
}

/// `regctl add-token NAME --file FILE EXTRA...`: the secret, which must be stdout's one line.
fn add_token(file: &Path, name: &str, extra: &[&str]) -> String {
    let out = regctl(&[&["add-token", name, "--file", path_arg(file)], extra].concat(), "");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(stdout.lines().count(), 1, "the secret alone on stdout: {stdout:?}");
    stdout.trim().to_string()
}

/// A server on `file` with extra arguments.
fn serve(file: &Path, extra: &[&str]) -> Server {
    Server::start_with(&[&["--htpasswd", path_arg(file)], extra].concat())
}

/// `METHOD path` as `creds` (none when `None`): the status and the error code, if any.
fn call(server: &Server, method: &str, path: &str, creds: Option<(&str, &str)>) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = util::http().request(method, server.url(path)).header("accept", util::MANIFEST_ACCEPT);
    if let Some((user, password)) = creds {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().expect("a response");
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().unwrap_or(serde_json::Value::Null);
    (status, body["errors"][0]["code"].as_str().unwrap_or_default().to_string())
}

fn creds((user, password): (&str, &str)) -> String {
    format!("{user}:{password}")
}

/// Pushes `image` to `repo:v1` with skopeo as `who`; the output, whatever the outcome.
fn skopeo_push(server: &Server, image: &OciImage, repo: &str, who: (&str, &str)) -> Output {
    let dest = skopeo::docker_ref(&server.host(), repo, "v1");
    let creds = creds(who);
    let source = image.oci_ref();
    let args =
        [&["copy", "--dest-tls-verify=false", "--dest-creds", &creds], skopeo::EXACT, &[&source, &dest]]
            .concat();
    skopeo::run(&args)
}

fn pushed(out: &Output) -> bool {
    out.status.success()
}

/// Polls `GET path` as `who` until it answers `want`; the time it took. Panics after `limit`.
fn time_until(server: &Server, path: &str, who: (&str, &str), want: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (status, _) = call(server, "GET", path, Some(who));
        if status == want {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{path} as {}: still {status} after {limit:?}", who.0);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_pull_only_user_pulls_and_is_refused_push_and_delete() {
    if !skopeo::available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("htpasswd");
    let reader = ("reader", "reader-pw");
    add_user(&file, ADMIN, &["--access", "delete"]);
    add_user(&file, reader, &["--access", "pull"]);
    let server = serve(&file, &[]);
    let image = ImageBuilder::new(191, &[3000, 70_000]).write(&tmp.path().join("src"), "v1");
    assert!(pushed(&skopeo_push(&server, &image, "app", ADMIN)), "the admin pushes");

    let source = skopeo::docker_ref(&server.host(), "app", "v1");
    let reader_creds = creds(reader);
    assert_eq!(skopeo::inspect_raw(&source, &["--creds", &reader_creds]), image.manifest_bytes());
    let back = tmp.path().join("back");
    skopeo::copy_exact(&source, &format!("oci:{}:v1", back.display()), &["--src-creds", &reader_creds]);

    let refused = skopeo_push(&server, &image, "app2", reader);
    assert!(!pushed(&refused), "a pull-only user pushed");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("denied"), "skopeo says why: {said}");
    let manifest = format!("/v2/app/manifests/{}", image.manifest.digest);
    for (method, path) in
        [("POST", "/v2/app/blobs/uploads/"), ("PUT", "/v2/app/manifests/v2"), ("DELETE", &manifest)]
    {
        assert_eq!(call(&server, method, path, Some(reader)), (403, "DENIED".to_string()), "{method} {path}");
    }
    assert_eq!(call(&server, "GET", &manifest, Some(reader)).0, 200, "the manifest is still there");
    assert_eq!(call(&server, "DELETE", &manifest, Some(ADMIN)).0, 202, "delete is the admin's");
}

#[test]
fn a_team_user_pushes_to_its_repositories_only_and_sees_only_those() {
    if !skopeo::available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("htpasswd");
    let dev = ("dev", "dev-pw");
    add_user(&file, ADMIN, &["--access", "delete"]);
    add_user(&file, dev, &["--repo", "team/*"]);
    let server = serve(&file, &[]);
    let image = ImageBuilder::new(192, &[2000]).write(&tmp.path().join("src"), "v1");
    // Visible and hidden repositories interleaved in the catalog's order.
    for repo in ["a/x", "secret/base", "team/a", "team/b/deep", "team/c", "zz"] {
        assert!(pushed(&skopeo_push(&server, &image, repo, ADMIN)), "the admin pushes {repo}");
    }

    assert!(pushed(&skopeo_push(&server, &image, "team/d", dev)), "dev pushes to team/d");
    for repo in ["other", "team/b/deep"] {
        assert!(!pushed(&skopeo_push(&server, &image, repo, dev)), "dev pushed to {repo}");
    }
    assert_eq!(call(&server, "GET", "/v2/secret/base/manifests/v1", Some(dev)), (403, "DENIED".to_string()));
    assert_eq!(call(&server, "DELETE", "/v2/team/d/manifests/v1", Some(dev)), (403, "DENIED".to_string()));

    // A mount from a repository dev may not pull is a plain upload (202), not the blob (201).
    let layer = &image.blobs()[0].digest;
    let mount = |from: &str| format!("/v2/team/e/blobs/uploads/?mount={layer}&from={from}");
    assert_eq!(call(&server, "POST", &mount("secret/base"), Some(dev)).0, 202);
    assert_eq!(call(&server, "POST", &mount("team/a"), Some(dev)).0, 201);

    // The catalog lists what each may pull, page by page with n=1 (no short page ends it).
    let dev_view = util::get_all_pages_as(&server.base(), "/v2/_catalog?n=1", "repositories", Some(dev));
    // (team/e holds a mounted blob but no manifest: the catalog lists repositories with images.)
    assert_eq!(dev_view, ["team/a", "team/c", "team/d"]);
    let everything = util::get_all_pages_as(&server.base(), "/v2/_catalog?n=2", "repositories", Some(ADMIN));
    assert_eq!(everything.len(), 7, "{everything:?}");
    let page = util::http().get(server.url("/ui/")).basic_auth(dev.0, Some(dev.1)).send().expect("the UI");
    let html = page.text().expect("a page");
    assert!(html.contains("team/a") && !html.contains("secret/base"), "the UI lists dev's repositories only");
    assert_eq!(call(&server, "GET", "/ui/repositories/secret/base", Some(dev)).0, 404);
}

#[test]
fn an_expired_token_and_a_removed_user_are_refused_within_seconds() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("htpasswd");
    let bob = ("bob", "bob-pw");
    add_user(&file, ADMIN, &["--access", "delete"]);
    add_user(&file, bob, &[]);
    let secret = add_token(&file, "ci", &["--access", "push", "--expires", "3s"]);
    let reader_secret = add_token(&file, "reader", &[]);
    let text = std::fs::read_to_string(&file).expect("the file");
    assert!(!text.contains(&secret[7..]) && !text.contains(&reader_secret[7..]), "only digests are stored");
    let listed = regctl(&["list-users", "--file", path_arg(&file), "--output", "json"], "").stdout;
    let listed: serde_json::Value = serde_json::from_slice(&listed).expect("JSON");
    let ci =
        listed["users"].as_array().expect("users").iter().find(|u| u["name"] == "ci").expect("ci").clone();
    assert_eq!((ci["kind"].as_str(), ci["access"].as_str()), (Some("token"), Some("push")), "{ci}");
    assert!(ci["expires"].is_string(), "{ci}");

    let server = serve(&file, &[]);
    let ci = ("ci", secret.as_str());
    assert_eq!(call(&server, "POST", "/v2/ci/app/blobs/uploads/", Some(ci)).0, 202, "the token pushes");
    let reader = ("reader", reader_secret.as_str());
    assert_eq!(call(&server, "POST", "/v2/app/blobs/uploads/", Some(reader)), (403, "DENIED".to_string()));
    let expired = time_until(&server, "/v2/", ci, 401, Duration::from_secs(10));
    eprintln!("the 3 s token was refused {expired:?} after the server answered it");

    assert_eq!(call(&server, "GET", "/v2/", Some(bob)).0, 200);
    regctl(&["remove-user", "bob", "--file", path_arg(&file)], "");
    let removed = time_until(&server, "/v2/", bob, 401, Duration::from_secs(2));
    eprintln!("bob was refused {removed:?} after remove-user returned");
    assert!(!std::fs::read_to_string(&file).expect("the file").contains("bob"), "entry and rule line gone");
}

#[test]
fn anonymous_pull_lets_anyone_pull_and_nobody_push_without_credentials() {
    if !skopeo::available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("htpasswd");
    let reader = ("reader", "reader-pw");
    add_user(&file, ADMIN, &["--access", "delete"]);
    add_user(&file, reader, &["--access", "pull"]);
    let server = serve(&file, &["--anonymous-pull"]);
    let image = ImageBuilder::new(193, &[5000]).write(&tmp.path().join("src"), "v1");
    assert!(pushed(&skopeo_push(&server, &image, "app", ADMIN)), "the admin pushes");

    let source = skopeo::docker_ref(&server.host(), "app", "v1");
    assert_eq!(skopeo::inspect_raw(&source, &["--no-creds"]), image.manifest_bytes());
    let back = tmp.path().join("back");
    skopeo::copy_exact(&source, &format!("oci:{}:v1", back.display()), &["--src-no-creds"]);
    let dest = skopeo::docker_ref(&server.host(), "app", "v2");
    let anonymous = skopeo::run(
        &[&["copy", "--dest-tls-verify=false", "--dest-no-creds"], skopeo::EXACT, &[&image.oci_ref(), &dest]]
            .concat(),
    );
    assert!(!anonymous.status.success(), "an anonymous push went through");

    assert_eq!(call(&server, "GET", "/v2/app/manifests/v1", None).0, 200);
    assert_eq!(call(&server, "GET", "/v2/_catalog", None).0, 200);
    for (method, path) in
        [("GET", "/v2/"), ("POST", "/v2/app/blobs/uploads/"), ("DELETE", "/v2/app/manifests/v1")]
    {
        assert_eq!(call(&server, method, path, None), (401, "UNAUTHORIZED".to_string()), "{method} {path}");
    }
    assert_eq!(call(&server, "POST", "/v2/app/blobs/uploads/", Some(reader)).0, 403);
    assert_eq!(
        call(&server, "GET", "/v2/app/manifests/v1", Some(("reader", "wrong"))).0,
        401,
        "wrong is not none"
    );

    // The same from the environment, as registry:2 users set it.
    let root = tmp.path().join("data");
    let by_env =
        Server::start_on_env(&root, &["--htpasswd", path_arg(&file)], &[("REGISTRY_AUTH_ANONYMOUS", "pull")]);
    assert_eq!(call(&by_env, "GET", "/v2/_catalog", None).0, 200);
}

/// With anonymous pull on, what anyone may do is added to every caller's grant: a user limited
/// to pushing `team/*` still pulls the public `app` with Basic, and `/token` grants it pull
/// there; pushing outside `team/*` stays refused (`403`). A request with the anonymous puller's
/// token sent no credentials, so a push with it is challenged (`401` and the Bearer challenge
/// for the push scope), not refused with `403`.
#[test]
fn anonymous_pull_adds_to_every_grant_and_challenges_anonymous_pushes() {
    if !skopeo::available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("htpasswd");
    let team = ("teamer", "teamer-pw");
    add_user(&file, ADMIN, &["--access", "delete"]);
    add_user(&file, team, &["--access", "push", "--repo", "team/*"]);
    let server = serve(&file, &["--anonymous-pull"]);
    let image = ImageBuilder::new(194, &[3000]).write(&tmp.path().join("src"), "v1");
    assert!(pushed(&skopeo_push(&server, &image, "app", ADMIN)), "the admin pushes");

    assert_eq!(call(&server, "GET", "/v2/app/manifests/v1", Some(team)).0, 200, "the public pull");
    assert_eq!(call(&server, "POST", "/v2/app/blobs/uploads/", Some(team)), (403, "DENIED".to_string()));
    assert_eq!(call(&server, "POST", "/v2/team/x/blobs/uploads/", Some(team)).0, 202);

    let token = |creds: Option<(&str, &str)>| {
        let mut request =
            util::http().get(server.url("/token?service=regctl&scope=repository:app:pull,push"));
        if let Some((user, password)) = creds {
            request = request.basic_auth(user, Some(password));
        }
        let body: serde_json::Value = request.send().expect("GET /token").json().expect("JSON");
        body["token"].as_str().unwrap_or_else(|| panic!("no token in {body}")).to_string()
    };
    let bearer = |method: reqwest::Method, path: &str, token: &str| {
        let request = util::http().request(method, server.url(path)).header("accept", util::MANIFEST_ACCEPT);
        request.bearer_auth(token).send().expect("a response")
    };
    let team_token = token(Some(team));
    assert_eq!(bearer(reqwest::Method::GET, "/v2/app/manifests/v1", &team_token).status(), 200);
    assert_eq!(bearer(reqwest::Method::POST, "/v2/app/blobs/uploads/", &team_token).status(), 403);

    let anonymous = token(None);
    assert_eq!(bearer(reqwest::Method::GET, "/v2/app/manifests/v1", &anonymous).status(), 200);
    let push = bearer(reqwest::Method::POST, "/v2/app/blobs/uploads/", &anonymous);
    assert_eq!(push.status(), 401, "an anonymous push is challenged, not refused");
    let challenge = push.headers()["www-authenticate"].to_str().expect("ASCII").to_string();
    assert!(
        challenge.starts_with("Bearer realm=") && challenge.contains("scope=\"repository:app:pull,push\""),
        "{challenge}"
    );
}

/// Runs `tests/oras_access.py` as `who` through oras' `auth` backend (`basic` or `token`):
/// its pull of `pull`, push of `file` to `push` and delete of the tag `delete`, each
/// `{"ok": bool, "error": ...}`.
fn oras_as(
    python: &Path,
    server: &Server,
    (user, password): (&str, &str),
    auth: &str,
    [pull, push, delete]: [&str; 3],
    file: &Path,
) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oras_access.py");
    let out = Command::new(python)
        .arg(script)
        .args(["--registry", &server.host(), "--auth", auth])
        .args(["--pull", pull, "--push", push, "--delete", delete, "--file"])
        .arg(file)
        .env("ORAS_USER", user)
        .env("ORAS_PASS", password)
        .stdin(Stdio::null())
        .output()
        .expect("run python");
    assert!(out.status.success(), "oras_access.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

/// oras with a pull-only user, with Basic on every request and through the Bearer flow
/// (`--bearer`, oras' `token` backend): it pulls what the admin pushed, and its push and its
/// delete of the tag are refused by the registry (`DENIED`, not a failed login), as is curl's
/// `DELETE` of the manifest; the tag is still there and nothing was pushed. The admin's push
/// and delete through the same script go through (Basic; oras-py's token backend asks
/// `/token` again only after a `403`, so it cannot widen its token on the spec's `401` for an
/// insufficient scope), so the refusals are the user's.
#[test]
fn oras_with_a_pull_only_user_pulls_and_is_refused_push_and_delete() {
    if !skopeo::available() {
        return;
    }
    let Some(python) = util::python_with("oras") else { return };
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("htpasswd");
    let reader = ("reader", "reader-pw");
    add_user(&file, ADMIN, &["--access", "delete"]);
    add_user(&file, reader, &["--access", "pull"]);
    let payload = tmp.path().join("payload.bin");
    std::fs::write(&payload, b"an artifact oras must not push").expect("the payload");
    for (auth, serve_args) in [("basic", &[][..]), ("token", &["--bearer"][..])] {
        let server = serve(&file, serve_args);
        let image = ImageBuilder::new(195, &[4000]).write(&tmp.path().join(auth), "v1");
        assert!(pushed(&skopeo_push(&server, &image, "app", ADMIN)), "the admin pushes");

        let steps = ["app:v1", "app:artifact", "app:v1"];
        let outcome = oras_as(&python, &server, reader, auth, steps, &payload);
        assert_eq!(outcome["pull"]["ok"], true, "{auth}: {outcome}");
        for step in ["push", "delete"] {
            assert_eq!(outcome[step]["ok"], false, "{auth}: the reader may not {step}: {outcome}");
            let error = outcome[step]["error"].as_str().unwrap_or_default();
            assert!(error.contains("DENIED"), "{auth}: {step} refused by the registry: {error}");
        }
        if util::require_tool("curl", "apt-get install curl") {
            let manifest = server.url(&format!("/v2/app/manifests/{}", image.manifest.digest));
            assert_eq!(curl_delete(&manifest, reader), "403", "{auth}: curl's DELETE as the reader");
        }
        assert_eq!(call(&server, "GET", "/v2/app/manifests/v1", Some(ADMIN)).0, 200, "{auth}: v1 stays");
        assert_eq!(call(&server, "GET", "/v2/app/manifests/artifact", Some(ADMIN)).0, 404, "{auth}");
    }
    let server = serve(&file, &[]);
    let image = ImageBuilder::new(196, &[4000]).write(&tmp.path().join("admin"), "v1");
    assert!(pushed(&skopeo_push(&server, &image, "app", ADMIN)), "the admin pushes");
    let outcome = oras_as(&python, &server, ADMIN, "basic", ["app:v1", "app:artifact", "app:v1"], &payload);
    for step in ["pull", "push", "delete"] {
        assert_eq!(outcome[step]["ok"], true, "the admin may {step}: {outcome}");
    }
    assert_eq!(call(&server, "GET", "/v2/app/manifests/v1", Some(ADMIN)).0, 404, "deleted");
}

/// `curl -X DELETE url` as `who` (the credentials in a config on stdin, not argv): the status.
fn curl_delete(url: &str, (user, password): (&str, &str)) -> String {
    let mut child = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", "-K", "-", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl");
    let config = format!("user = \"{user}:{password}\"\n");
    child.stdin.take().expect("stdin").write_all(config.as_bytes()).expect("curl's config");
    let out = child.wait_with_output().expect("wait for curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
