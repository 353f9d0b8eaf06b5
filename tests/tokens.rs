//! Docker's token flow against a real `regctl serve`: the Bearer challenge, `/token` with Basic
//! credentials and the OAuth2 form, tokens cut to the user's grant, expiry, refresh tokens
//! ending with their user, and signing keys kept in storage and rotated by
//! `regctl rotate-token-key`. The container engines' side is in tests/clients.rs.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;

use crate::auth::{htpasswd_available, htpasswd_set};
use crate::util::{self, Server};

const WRITER: (&str, &str) = ("writer", "tokens: writer pa55");
const READER: (&str, &str) = ("reader", "tokens: reader pa55");

/// A server with `--htpasswd` (a full-access writer, and a reader whose rule line, written by
/// hand in access.rs's format, grants pull only) and the Bearer challenge, plus `extra`.
fn start(dir: &Path, extra: &[&str]) -> Option<Server> {
    if !htpasswd_available() {
        return None;
    }
    let htpasswd = dir.join("htpasswd");
    // A restart on the same directory keeps the users (setting a password again would end
    // their tokens).
    if !htpasswd.exists() {
        htpasswd_set(&htpasswd, WRITER.0, WRITER.1, true);
        htpasswd_set(&htpasswd, READER.0, READER.1, false);
        let mut text = std::fs::read_to_string(&htpasswd).expect("read htpasswd");
        text.push_str("#!regctl reader access=pull\n");
        std::fs::write(&htpasswd, text).expect("write the rule line");
    }
    let mut args = vec!["--htpasswd", htpasswd.to_str().expect("UTF-8"), "--bearer"];
    args.extend_from_slice(extra);
    Some(Server::start_on(&dir.join("data"), &args))
}

/// `GET /token` for `scopes` with Basic credentials (none when `None`); the status and body.
fn get_token(server: &Server, creds: Option<(&str, &str)>, query: &str) -> (StatusCode, Value) {
    let mut req = util::http().get(server.url(&format!("/token?{query}")));
    if let Some((user, password)) = creds {
        req = req.basic_auth(user, Some(password));
    }
    let resp = req.send().expect("GET /token");
    let status = resp.status();
    (status, resp.json().unwrap_or(Value::Null))
}

/// `POST /token` with the OAuth2 form `fields`.
fn post_token(server: &Server, fields: &[(&str, &str)]) -> (StatusCode, Value) {
    let body: String = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('%', "%25").replace(' ', "%20").replace(':', "%3A")))
        .collect::<Vec<_>>()
        .join("&");
    let resp = util::http()
        .post(server.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .expect("POST /token");
    let status = resp.status();
    (status, resp.json().unwrap_or(Value::Null))
}

/// The claims of a token (its middle part), without checking anything.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three parts");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    serde_json::from_slice(&json).expect("JSON claims")
}

/// The status of `GET path` with `Authorization: Bearer token`.
fn bearer_status(server: &Server, path: &str, token: &str) -> StatusCode {
    util::http().get(server.url(path)).bearer_auth(token).send().expect("GET with a Bearer token").status()
}

/// The `token` of a `/token` answer.
fn token_of(body: &Value) -> String {
    body["token"].as_str().unwrap_or_else(|| panic!("no token in {body}")).to_string()
}

/// Polls `check` every 100 ms for up to `within` until it is true; false if it never was.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The challenge names `/token`, the service and the scope; a token is cut to what each user is
/// granted (the reader asks pull and push and gets pull); a token verifies on `/v2/`, is not
/// traded for another, and is refused for another service.
#[test]
fn tokens_carry_only_the_granted_scope() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(server) = start(dir.path(), &[]) else { return };
    let resp = util::http().get(server.url("/v2/team/app/manifests/v1")).send().expect("GET");
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().expect("ASCII").to_string();
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"http://{}/token\",service=\"regctl\",scope=\"repository:team/app:pull\"",
            server.host()
        )
    );

    let query = "service=regctl&scope=repository:team/app:pull,push&scope=repository:other:pull";
    let (status, reader) = get_token(&server, Some(READER), query);
    assert_eq!(status, 200, "{reader}");
    assert!(reader["expires_in"].as_u64().is_some_and(|s| s > 0) && reader["issued_at"].is_string());
    assert_eq!(reader["access_token"], reader["token"]);
    let access = &claims(&token_of(&reader))["access"];
    assert_eq!(
        access,
        &serde_json::json!([
            {"type": "repository", "name": "team/app", "actions": ["pull"]},
            {"type": "repository", "name": "other", "actions": ["pull"]}
        ]),
        "push is dropped for the pull-only reader"
    );
    let (_, writer) = get_token(&server, Some(WRITER), query);
    assert_eq!(claims(&token_of(&writer))["access"][0]["actions"], serde_json::json!(["pull", "push"]));
    assert!(!reader.to_string().contains(READER.1), "the password is nowhere in the answer");

    assert_eq!(bearer_status(&server, "/v2/", &token_of(&reader)), 200);
    assert_eq!(bearer_status(&server, "/v2/", "e30.e30.AAAA"), 401, "a forged token");
    let traded = util::http()
        .get(server.url("/token?service=regctl&scope=repository:x:push"))
        .bearer_auth(token_of(&reader))
        .send()
        .expect("GET /token");
    assert_eq!(traded.status(), 401, "a token is not traded for a wider one");
    let (status, _) = get_token(&server, Some(READER), "service=elsewhere&scope=repository:x:pull");
    assert_eq!(status, 400, "another service");
    let (status, _) = get_token(&server, Some((READER.0, "wrong")), query);
    assert_eq!(status, 401, "a wrong password");
    let (status, _) = get_token(&server, None, query);
    assert_eq!(status, 401, "anonymous pull is off");
}

/// An access token stops working at its expiry (`--token-lifetime 2s`).
#[test]
fn access_tokens_expire() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(server) = start(dir.path(), &["--token-lifetime", "2s"]) else { return };
    let (_, body) = get_token(&server, Some(WRITER), "service=regctl");
    assert_eq!(body["expires_in"], 2);
    let token = token_of(&body);
    assert_eq!(bearer_status(&server, "/v2/", &token), 200);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(bearer_status(&server, "/v2/", &token), 401, "the token outlived its lifetime");
}

/// The OAuth2 form: a password grant with `access_type=offline` returns a refresh token (what
/// docker keeps instead of the password); the refresh grant returns working access tokens until
/// the user is removed from the file, when both it and the access token stop within seconds.
#[test]
fn refresh_tokens_work_until_the_user_is_removed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(server) = start(dir.path(), &[]) else { return };
    let (status, login) = post_token(
        &server,
        &[
            ("grant_type", "password"),
            ("username", WRITER.0),
            ("password", WRITER.1),
            ("service", "regctl"),
            ("client_id", "docker"),
            ("access_type", "offline"),
            ("scope", "repository:app:pull,push"),
        ],
    );
    assert_eq!(status, 200, "{login}");
    let refresh = login["refresh_token"].as_str().expect("a refresh token").to_string();
    assert_eq!(claims(&refresh)["access"], serde_json::json!([]), "a refresh token grants nothing itself");
    assert_eq!(bearer_status(&server, "/v2/", &refresh), 401, "a refresh token is no access token");

    let refresh_grant = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("service", "regctl"),
        ("client_id", "docker"),
        ("scope", "repository:app:pull"),
    ];
    let (status, refreshed) = post_token(&server, &refresh_grant);
    assert_eq!(status, 200, "{refreshed}");
    let access = token_of(&refreshed);
    assert_eq!(claims(&access)["sub"], WRITER.0);
    assert_eq!(bearer_status(&server, "/v2/", &access), 200);

    let htpasswd = dir.path().join("htpasswd");
    let text = std::fs::read_to_string(&htpasswd).expect("read");
    let kept: String = text.lines().filter(|l| !l.starts_with("writer:")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&htpasswd, kept).expect("remove the writer");
    assert!(
        eventually(Duration::from_secs(5), || post_token(&server, &refresh_grant).0 == 401),
        "the refresh token still works 5 s after its user was removed"
    );
    assert_eq!(bearer_status(&server, "/v2/", &access), 401, "the access token ended with its user");
}

/// The signing key is generated at first start under the storage root, survives a restart
/// (tokens issued before it still verify), and `regctl rotate-token-key` replaces it: tokens of
/// the old key keep working for their lifetime, and the server signs with the new key within
/// seconds.
#[test]
fn signing_keys_survive_restarts_and_rotate_without_breaking_sessions() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(server) = start(dir.path(), &[]) else { return };
    let keys = dir.path().join("data/regctl/token/keys.json");
    assert!(keys.is_file(), "no key in storage at {}", keys.display());
    let (_, body) = get_token(&server, Some(WRITER), "service=regctl");
    let before = token_of(&body);
    drop(server);
    let Some(server) = start(dir.path(), &[]) else { return };
    assert_eq!(bearer_status(&server, "/v2/", &before), 200, "a restart keeps the key");

    let kid = |token: &str| -> Value {
        let header = token.split('.').next().expect("a header");
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).expect("base64url");
        serde_json::from_slice::<Value>(&json).expect("JSON")["kid"].clone()
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regctl"))
        .args(["rotate-token-key", "--root"])
        .arg(dir.path().join("data"))
        .env_remove("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY")
        .output()
        .expect("run regctl rotate-token-key");
    assert!(out.status.success(), "rotate-token-key: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        // The server re-reads the keys every 5 s (`RELOAD_INTERVAL`): a whole interval and a margin.
        eventually(Duration::from_secs(8), || {
            kid(&token_of(&get_token(&server, Some(WRITER), "service=regctl").1)) != kid(&before)
        }),
        "the server still signs with the old key 8 s after the rotation"
    );
    assert_eq!(bearer_status(&server, "/v2/", &before), 200, "a token of the previous key still works");
}

/// Runs `regctl login --password-stdin ARGS` with `secret` on stdin, docker's and containers'
/// directories under `dir`, and `path` before `PATH`; returns the output, whatever the outcome.
fn regctl_login(dir: &Path, args: &[&str], secret: &str, path: Option<&Path>) -> std::process::Output {
    use std::io::Write as _;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_regctl"));
    cmd.args(["login", "--password-stdin"])
        .args(args)
        .env("DOCKER_CONFIG", dir.join("docker"))
        .env("REGCTL_DOCKER_CERTS_D", dir.join("docker-certs.d"))
        .env("REGCTL_CONTAINERS_CERTS_D", dir.join("containers-certs.d"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(path) = path {
        let old = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{old}", path.display()));
    }
    let mut child = cmd.spawn().expect("run regctl login");
    child.stdin.take().expect("stdin").write_all(secret.as_bytes()).expect("write the secret");
    child.wait_with_output().expect("wait for regctl login")
}

/// [`regctl_login`], which must succeed.
fn regctl_login_ok(dir: &Path, args: &[&str], secret: &str, path: Option<&Path>) -> std::process::Output {
    let out = regctl_login(dir, args, secret, path);
    assert!(out.status.success(), "regctl login: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `regctl login` against a server over HTTPS with a private CA: a wrong password is refused
/// by the registry before anything is written; then the CA goes into docker's and containers'
/// certs.d; without a credential helper the credentials go into config.json and the command
/// says they are in plain text; with `credsStore` set they go to `docker-credential-<store>
/// store` on stdin and the file keeps an empty entry; the host comes from the state file when
/// `--registry` is not given. (The helper here is a script speaking docker's helper protocol:
/// no helper that works headless, without a desktop keyring or GPG setup, is installed.)
#[test]
fn regctl_login_checks_the_credentials_trusts_the_ca_and_keeps_secrets_in_the_helper() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some((server, ca)) = start_tls(dir.path()) else { return };
    let host = server.host();
    let ca_arg = ca.path.to_str().expect("UTF-8");
    let config = dir.path().join("docker/config.json");

    let wrong = regctl_login(
        dir.path(),
        &["--registry", &host, "--user", WRITER.0, "--ca", ca_arg],
        "n0t-the-pa55",
        None,
    );
    assert!(!wrong.status.success(), "a wrong password was taken");
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(said.contains("refused the credentials") && !said.contains("n0t-the-pa55"), "{said}");
    assert!(!config.exists() && !dir.path().join("docker-certs.d").exists(), "nothing is saved");

    let out = regctl_login_ok(
        dir.path(),
        &["--registry", &host, "--user", WRITER.0, "--ca", ca_arg],
        WRITER.1,
        None,
    );
    for certs in ["docker-certs.d", "containers-certs.d"] {
        let file = dir.path().join(certs).join(&host).join("ca.crt");
        assert_eq!(std::fs::read_to_string(&file).expect("ca.crt"), ca.pem);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no docker credential helper") && stderr.contains("not encrypted"), "{stderr}");
    let written: Value = serde_json::from_slice(&std::fs::read(&config).expect("config.json")).expect("JSON");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", WRITER.0, WRITER.1));
    assert_eq!(written["auths"][&host]["auth"], auth.as_str());

    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let helper = bin.join("docker-credential-testvault");
    let received = dir.path().join("received.json");
    std::fs::write(&helper, format!("#!/bin/sh\n[ \"$1\" = store ] && cat > '{}'\n", received.display()))
        .expect("write the helper");
    std::process::Command::new("chmod").arg("+x").arg(&helper).status().expect("chmod");
    let with_helper =
        format!(r#"{{"credsStore": "testvault", "auths": {{"{host}": {{"auth": "b2xkOm9sZA=="}}}}}}"#);
    std::fs::write(&config, with_helper).expect("config with a helper");
    // The host from the deployment's recorded settings this time.
    let state = dir.path().join("regctl.toml");
    std::fs::write(&state, format!("[deployments.registry]\ndomain = \"{host}\"\n")).expect("the state file");
    let state_arg = state.to_str().expect("UTF-8");
    let args = ["--state-file", state_arg, "--user", READER.0, "--ca", ca_arg];
    let out = regctl_login_ok(dir.path(), &args, READER.1, Some(&bin));
    assert!(String::from_utf8_lossy(&out.stderr).contains("docker-credential-testvault"));
    let stored: Value =
        serde_json::from_slice(&std::fs::read(&received).expect("the helper got it")).expect("JSON");
    assert_eq!(stored, serde_json::json!({"ServerURL": host, "Username": READER.0, "Secret": READER.1}));
    let written = std::fs::read_to_string(&config).expect("config.json");
    assert!(
        !written.contains(READER.1) && !written.contains("b2xkOm9sZA=="),
        "a secret stayed in the file: {written}"
    );
}

/// `regctl login --kubernetes-secret NAME --file F`: after the user's credentials are checked,
/// a pull-only token NAME is added to the server's file and the printed
/// `kubernetes.io/dockerconfigjson` Secret holds it, not the user's password; the registry
/// takes it for pulls and refuses it a push.
#[test]
fn regctl_login_prints_a_kubernetes_secret_of_a_new_pull_only_token() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some((server, ca)) = start_tls(dir.path()) else { return };
    let host = server.host();
    let htpasswd = dir.path().join("htpasswd");
    let args = [
        "--registry",
        &host,
        "--user",
        WRITER.0,
        "--ca",
        ca.path.to_str().expect("UTF-8"),
        "--kubernetes-secret",
        "regcred",
        "--file",
        htpasswd.to_str().expect("UTF-8"),
    ];
    let out = regctl_login_ok(dir.path(), &args, WRITER.1, None);
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        yaml.contains("type: kubernetes.io/dockerconfigjson") && yaml.contains("name: regcred"),
        "{yaml}"
    );
    let data = yaml.split(".dockerconfigjson: ").nth(1).expect("the data").trim();
    let decoded: Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(data).expect("base64"))
            .expect("JSON");
    let entry = &decoded["auths"][&host];
    assert_eq!(entry["username"], "regcred");
    let secret = entry["password"].as_str().expect("a password").to_string();
    assert_ne!(secret, WRITER.1, "the Secret holds the user's password");
    let file = std::fs::read_to_string(&htpasswd).expect("htpasswd");
    assert!(file.contains("#!regctl regcred access=pull"), "{file}");
    assert!(!dir.path().join("docker/config.json").exists(), "docker is not configured");

    let client = util::tls::https_client(&ca.pem);
    let status = |method: reqwest::Method, path: &str| {
        let url = format!("https://{host}{path}");
        client.request(method, &url).basic_auth("regcred", Some(&secret)).send().expect("a response").status()
    };
    assert_eq!(status(reqwest::Method::GET, "/v2/_catalog"), 200, "the token pulls");
    assert_eq!(status(reqwest::Method::POST, "/v2/app/blobs/uploads/"), 403, "the token may not push");
}

/// [`start`] over HTTPS, with a certificate for 127.0.0.1 from a new test CA.
fn start_tls(dir: &Path) -> Option<(Server, util::tls::TestCa)> {
    let ca = util::tls::TestCa::new(dir, "login-ca");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    ca.issue(&["127.0.0.1"], &cert, &key);
    let tls = ["--tls-cert", cert.to_str().expect("UTF-8"), "--tls-key", key.to_str().expect("UTF-8")];
    Some((start(dir, &tls)?, ca))
}
