//! HTTPS helpers: a test CA (rcgen) that issues server certificates, Debian's Pebble (an ACME
//! server) started on loopback with a certificate from that CA, TLS clients that trust only a
//! given root, and skopeo with TLS verification on.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Whether Pebble is installed (see [`super::require_tool`]): tests return early when not.
pub fn pebble_available() -> bool {
    super::require_tool("pebble", "apt-get install pebble")
}

/// A certificate authority made for one test.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub pem: String,
    /// Where [`TestCa::pem`] is written.
    pub path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA named `name`; its certificate is written to `dir/<name>.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("regctl test CA {name}"));
        let cert = params.self_signed(&key).expect("CA certificate");
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem()).expect("write the CA certificate");
        TestCa { pem: cert.pem(), path, issuer: Issuer::new(params, key) }
    }

    /// Issues a certificate for `names` (DNS names or IP addresses) and writes the chain (leaf,
    /// then this CA) to `cert` and its key to `key`. Returns the leaf, DER.
    pub fn issue(&self, names: &[&str], cert: &Path, key: &Path) -> Vec<u8> {
        let leaf_key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("leaf parameters");
        let leaf = params.signed_by(&leaf_key, &self.issuer).expect("leaf certificate");
        std::fs::write(cert, format!("{}{}", leaf.pem(), self.pem)).expect("write the certificate");
        std::fs::write(key, leaf_key.serialize_pem()).expect("write the key");
        leaf.der().to_vec()
    }
}

/// A rustls client configuration trusting only the PEM roots `roots`.
pub fn client_config(roots: &str) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots.as_bytes()) {
        store.add(cert.expect("a PEM root")).expect("a usable root");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(store)
        .with_no_client_auth()
}

/// An HTTPS client (no redirects followed) trusting only `roots`.
pub fn https_client(roots: &str) -> reqwest::blocking::Client {
    super::client_builder()
        .use_preconfigured_tls(client_config(roots))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTPS client")
}

/// Connects to `addr`, verifies the certificate for `name` against `roots`, and returns the
/// leaf (DER) it was given, or why the handshake failed. `alpn` is offered when not empty.
pub fn handshake(
    addr: SocketAddr,
    name: &str,
    roots: &str,
    alpn: &[&[u8]],
) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    let mut config = client_config(roots);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let server_name = ServerName::try_from(name.to_string()).expect("a server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).expect("TLS client");
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    let leaf = conn.peer_certificates().and_then(|c| c.first()).ok_or("no certificate")?.to_vec();
    Ok((leaf, conn.alpn_protocol().map(<[u8]>::to_vec)))
}

/// Waits until `addr` serves a certificate for `name` that `roots` verifies (and that is not
/// `not`, when given); returns it.
pub fn wait_for_certificate(
    addr: SocketAddr,
    name: &str,
    roots: &str,
    not: Option<&[u8]>,
    timeout: Duration,
) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match handshake(addr, name, roots, &[]) {
            Ok((leaf, _)) if Some(leaf.as_slice()) != not => return leaf,
            Ok(_) => "the same certificate as before".to_string(),
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "no new verified certificate from {addr} after {timeout:?}: {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes `ca_pem` as `<dir>/ca.crt`, the layout skopeo's `--*-cert-dir` reads.
pub fn cert_dir(dir: &Path, ca_pem: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the cert dir");
    std::fs::write(dir.join("ca.crt"), ca_pem).expect("write ca.crt");
    dir.to_path_buf()
}

/// Runs `skopeo --insecure-policy <args>` with `cert_dir/ca.crt` as the only trusted root
/// (`SSL_CERT_FILE` and an empty `SSL_CERT_DIR` hide the system's roots), whatever its exit
/// status.
pub fn skopeo_trusting(args: &[&str], cert_dir: &Path) -> Output {
    let empty = cert_dir.join("no-system-roots");
    std::fs::create_dir_all(&empty).expect("create an empty directory");
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .env("SSL_CERT_FILE", cert_dir.join("ca.crt"))
        .env("SSL_CERT_DIR", &empty)
        .stdin(Stdio::null())
        .output()
        .expect("run skopeo")
}

/// [`skopeo_trusting`], panicking with skopeo's stderr unless it succeeds.
pub fn skopeo_verified(args: &[&str], cert_dir: &Path) -> Output {
    let out = skopeo_trusting(args, cert_dir);
    assert!(
        out.status.success(),
        "skopeo {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A Pebble ACME server on loopback, killed when dropped.
pub struct Pebble {
    /// Its ACME directory URL.
    pub directory: String,
    /// The CA that signed Pebble's own HTTPS certificate (give it to the registry with
    /// `--acme-ca-root`).
    pub tls_ca: PathBuf,
    tls_ca_pem: String,
    management: SocketAddr,
    log: PathBuf,
    child: Child,
}

impl Pebble {
    /// Starts Pebble with its state in `dir`, validating HTTP-01 on `http_port` and
    /// TLS-ALPN-01 on `tls_port` of the names asked (`localhost` resolves to loopback), issuing
    /// certificates valid for `validity` (Pebble's default, 5 years, when `None`).
    pub fn start(dir: &Path, http_port: u16, tls_port: u16, validity: Option<Duration>) -> Pebble {
        std::fs::create_dir_all(dir).expect("create Pebble's directory");
        let ca = TestCa::new(dir, "pebble-tls-ca");
        let (cert, key) = (dir.join("pebble-cert.pem"), dir.join("pebble-key.pem"));
        ca.issue(&["localhost", "127.0.0.1"], &cert, &key);
        let (listen, management) = (super::free_addr(), super::free_addr());
        let mut config = serde_json::json!({ "pebble": {
            "listenAddress": listen.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(validity) = validity {
            config["pebble"]["certificateValidityPeriod"] = validity.as_secs().into();
        }
        let config_path = dir.join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).expect("write Pebble's config");
        let log = dir.join("pebble.log");
        let log_file = std::fs::File::create(&log).expect("create Pebble's log");
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .arg("-strict=false")
            // Validate at once, never reject a good nonce, and validate every order afresh.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start pebble");
        let pebble = Pebble {
            directory: format!("https://127.0.0.1:{}/dir", listen.port()),
            tls_ca: ca.path.clone(),
            tls_ca_pem: ca.pem.clone(),
            management,
            log,
            child,
        };
        super::wait_for_port(listen, Duration::from_secs(20));
        super::wait_for_port(management, Duration::from_secs(20));
        pebble
    }

    /// The root that Pebble's issued certificates chain to (it makes a new one each start).
    pub fn issuing_root(&self) -> String {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management.port());
        let resp =
            https_client(&self.tls_ca_pem).get(&url).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(resp.status(), 200, "GET {url}");
        resp.text().expect("the root, PEM")
    }

    /// How many orders Pebble has accepted, from its log.
    pub fn orders(&self) -> usize {
        std::fs::read_to_string(&self.log).expect("Pebble's log").matches("Added order").count()
    }

    /// Pebble's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The arguments that point `regctl serve` at this Pebble for `host`.
    pub fn serve_args(&self, host: &str, cache: &Path) -> Vec<String> {
        vec![
            "--acme-host".into(),
            host.into(),
            "--acme-directory".into(),
            self.directory.clone(),
            "--acme-ca-root".into(),
            self.tls_ca.display().to_string(),
            "--acme-cache".into(),
            cache.display().to_string(),
            "--acme-email".into(),
            "ops@example.com".into(),
        ]
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
