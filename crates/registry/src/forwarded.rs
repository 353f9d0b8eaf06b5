//! Requests that reach the server through a load balancer or reverse proxy. The peer of every
//! connection is then the balancer; who the client is, and how it addressed the registry, is in
//! the `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` headers the balancer adds.
//! Anyone can write those headers, so they are believed only from the peers `[http] proxies`
//! names. [`resolve`] works out each request's [`Origin`] once; the throttle and lockout, the
//! access log, the events and every absolute URL the server builds (the token realm of the
//! `WWW-Authenticate` challenge, the UI's pull commands) read it from there.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header, uri::Authority};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;
use crate::config::Cidr;

/// Who sent a request and how they addressed the server, once trusted proxies' headers are
/// applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The client's address: the peer's, or the one a trusted proxy forwarded; `None` when the
    /// request came with no peer (tests calling the application directly).
    pub client: Option<IpAddr>,
    /// The peer's port, when the peer is the client.
    pub port: Option<u16>,
    /// `http` or `https`, as the client spoke to the registry.
    pub scheme: &'static str,
    /// The host (and port) the client addressed, when it said.
    pub host: Option<String>,
}

impl Origin {
    /// The client as events name it: `ip:port` for a direct peer, the bare address when it was
    /// forwarded; empty when unknown.
    pub fn addr(&self) -> String {
        match (self.client, self.port) {
            (Some(ip), Some(port)) => SocketAddr::new(ip, port).to_string(),
            (Some(ip), None) => ip.to_string(),
            (None, _) => String::new(),
        }
    }

    /// Works out the origin of a request from `peer` carrying `headers` (and `authority`, the
    /// URI's, which names the host over HTTP/2), on a listener speaking `scheme`, believing
    /// the forwarded headers only when `peer` is in `proxies`.
    pub fn of(
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
        authority: Option<&Authority>,
        scheme: &'static str,
        proxies: &[Cidr],
    ) -> Origin {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| authority.map(Authority::to_string));
        let direct = Origin { client: peer.map(|p| p.ip()), port: peer.map(|p| p.port()), scheme, host };
        let Some(peer) = peer.filter(|p| trusted(proxies, p.ip())) else { return direct };
        let client = forwarded_client(peer.ip(), headers, proxies);
        let forwarded_scheme = last_value(headers, "x-forwarded-proto").and_then(|v| match v {
            v if v.eq_ignore_ascii_case("https") => Some("https"),
            v if v.eq_ignore_ascii_case("http") => Some("http"),
            _ => None,
        });
        let forwarded_host =
            last_value(headers, "x-forwarded-host").filter(|h| h.parse::<Authority>().is_ok());
        Origin {
            client: Some(client),
            port: (client == peer.ip()).then_some(peer.port()),
            scheme: forwarded_scheme.unwrap_or(scheme),
            host: forwarded_host.map(str::to_string).or(direct.host),
        }
    }
}

fn trusted(proxies: &[Cidr], ip: IpAddr) -> bool {
    proxies.iter().any(|cidr| cidr.contains(ip))
}

/// The client a trusted `peer` forwarded for: walking `X-Forwarded-For` from the right (each
/// proxy appends the address it saw), the first address outside the trusted proxies. Each
/// trusted hop vouches only for the address to its left, so an entry that does not parse ends
/// the walk at the last hop believed.
fn forwarded_client(peer: IpAddr, headers: &HeaderMap, proxies: &[Cidr]) -> IpAddr {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_forwarded_ip(entry) else { break };
        client = ip;
        if !trusted(proxies, ip) {
            break;
        }
    }
    client
}

/// An address as proxies write it: bare, or with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    entry.parse().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The last comma-separated value of header `name`: the one the nearest proxy wrote.
fn last_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).next_back()?;
    value.rsplit(',').next().map(str::trim).filter(|v| !v.is_empty())
}

/// Records the request's [`Origin`] for everything after it. A host forwarded by a trusted
/// proxy also replaces the `Host` header, so that what reads `Host` (the UI's pull commands)
/// names the registry as its clients do.
pub async fn resolve(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let settings = &state.ops.settings;
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let origin =
        Origin::of(peer, request.headers(), request.uri().authority(), settings.scheme, &settings.proxies);
    if let Some(host) = origin.host.as_deref().and_then(|h| HeaderValue::from_str(h).ok())
        && request.headers().get(header::HOST) != Some(&host)
    {
        request.headers_mut().insert(header::HOST, host);
    }
    request.extensions_mut().insert(origin);
    next.run(request).await
}

/// The origin [`resolve`] recorded on a request; a direct one with nothing known otherwise.
pub fn origin_of(extensions: &axum::http::Extensions) -> Origin {
    extensions.get::<Origin>().cloned().unwrap_or(Origin {
        client: None,
        port: None,
        scheme: "http",
        host: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().expect("CIDR")).collect()
    }

    fn peer(text: &str) -> Option<SocketAddr> {
        Some(text.parse().expect("socket address"))
    }

    #[test]
    fn blocks_parse_and_match() {
        let private = cidrs(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]);
        assert!(trusted(&private, "10.200.3.4".parse().expect("ip")));
        assert!(trusted(&private, "::ffff:10.1.1.1".parse().expect("ip")), "IPv4-mapped");
        assert!(trusted(&private, "192.168.1.7".parse().expect("ip")));
        assert!(!trusted(&private, "192.168.1.8".parse().expect("ip")));
        assert!(trusted(&private, "fd12::1".parse().expect("ip")));
        assert!(!trusted(&private, "11.0.0.1".parse().expect("ip")));
        assert!(trusted(&cidrs(&["0.0.0.0/0"]), "8.8.8.8".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "", "x/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let config: crate::Config =
            toml::from_str("[http]\nproxies = [\"10.0.0.0/8\"]\n").expect("proxies in the config");
        assert_eq!(config.http.proxies, cidrs(&["10.0.0.0/8"]));
        assert!(toml::from_str::<crate::Config>("[http]\nproxies = [\"ten\"]\n").is_err());
    }

    #[test]
    fn a_trusted_proxy_names_the_client_scheme_and_host() {
        let proxies = cidrs(&["10.0.0.0/8"]);
        let sent = headers(&[
            ("host", "10.0.3.9"),
            ("x-forwarded-for", "203.0.113.9, 198.51.100.4"),
            ("x-forwarded-for", "10.0.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "registry.example.com"),
        ]);
        let origin = Origin::of(peer("10.0.0.5:4444"), &sent, None, "http", &proxies);
        // The rightmost address outside the proxies: 198.51.100.4 (what 10.0.1.1 saw), not
        // the 203.0.113.9 the client itself may have written.
        assert_eq!(origin.client, Some("198.51.100.4".parse().expect("ip")));
        assert_eq!(origin.addr(), "198.51.100.4");
        assert_eq!((origin.scheme, origin.host.as_deref()), ("https", Some("registry.example.com")));

        // Nothing forwarded: the peer itself, and its Host.
        let plain =
            Origin::of(peer("10.0.0.5:4444"), &headers(&[("host", "r:5000")]), None, "http", &proxies);
        assert_eq!(
            (plain.addr(), plain.scheme, plain.host.as_deref()),
            ("10.0.0.5:4444".into(), "http", Some("r:5000"))
        );

        // Garbage ends the walk at the last address a trusted hop vouched for.
        let odd =
            headers(&[("x-forwarded-for", "198.51.100.4, junk, 10.0.1.1"), ("x-forwarded-proto", "gopher")]);
        let origin = Origin::of(peer("10.0.0.5:1"), &odd, None, "https", &proxies);
        assert_eq!(origin.client, Some("10.0.1.1".parse().expect("ip")));
        assert_eq!(origin.scheme, "https", "an unknown protocol changes nothing");
    }

    #[test]
    fn an_untrusted_peer_s_forwarded_headers_are_ignored() {
        let sent = headers(&[
            ("host", "r.example:5000"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        for proxies in [cidrs(&[]), cidrs(&["10.0.0.0/8"])] {
            let origin = Origin::of(peer("203.0.113.7:5555"), &sent, None, "http", &proxies);
            assert_eq!(origin.addr(), "203.0.113.7:5555");
            assert_eq!((origin.scheme, origin.host.as_deref()), ("http", Some("r.example:5000")));
        }
    }
}
