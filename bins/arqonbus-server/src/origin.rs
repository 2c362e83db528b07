//! Which browser pages may open a WebSocket (SPEC §18, "Origin and
//! browsers"). Browsers send an `Origin` header with every upgrade and let
//! any page connect anywhere; the server is what stands between a page on
//! another site and the bus. Both listeners apply the same rule:
//!
//! - no `Origin` header: allowed (not a browser: services, agents, CLIs);
//! - an `Origin` whose host and port equal the request's `Host`: allowed
//!   (a page served by this very host and port);
//! - an `Origin` matching `ARQONBUS_ALLOWED_ORIGINS`: allowed;
//! - anything else, `Origin: null` included: refused with HTTP 403.
//!
//! Listed origins match on scheme, host and port (`https://app.example.com`
//! is `https://app.example.com:443`); `https://*.example.com` matches any
//! depth of subdomain of `example.com`, but not `example.com` itself; `*`
//! allows every origin.

use axum::http::{HeaderMap, header};

/// The allow-list of `ARQONBUS_ALLOWED_ORIGINS`, parsed once.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    any: bool,
    listed: Vec<Listed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    scheme: String,
    /// The host, or for a wildcard the suffix after `*` (with its dot).
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Exact(String),
    /// `*.example.com` kept as `.example.com`.
    Suffix(String),
}

/// A parsed `scheme://host[:port]`, lower-cased, port made explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.trim().split_once("://")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return None;
        }
        let (host, port) = split_host_port(rest)?;
        Some(Self {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The port, or the scheme's default one.
    fn effective_port(&self) -> Option<u16> {
        self.port.or_else(|| default_port(&self.scheme))
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `host[:port]`, with IPv6 literals in brackets; `None` when the port is
/// not a number.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let port_start = if authority.starts_with('[') {
        authority.find("]:").map(|i| i + 1)
    } else {
        authority.rfind(':')
    };
    match port_start {
        Some(colon) => {
            let port = authority[colon + 1..].parse().ok()?;
            Some((&authority[..colon], Some(port)))
        }
        None => Some((authority, None)),
    }
}

impl OriginPolicy {
    /// Parses the configured list. Entries were checked by configuration
    /// validation; one that still does not parse allows nothing.
    pub fn new(allowed: &[String]) -> Self {
        let mut policy = Self::default();
        for entry in allowed {
            if entry == "*" {
                policy.any = true;
                continue;
            }
            let Some(origin) = Origin::parse(entry) else {
                continue;
            };
            let Some(port) = origin.effective_port() else {
                continue;
            };
            let host = match origin.host.strip_prefix('*') {
                Some(suffix) => Host::Suffix(suffix.to_owned()),
                None => Host::Exact(origin.host),
            };
            policy.listed.push(Listed {
                scheme: origin.scheme,
                host,
                port,
            });
        }
        policy
    }

    /// Whether an upgrade with these headers may proceed; the `Err` is the
    /// refused origin as sent, for the 403 body.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let sent = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        if self.any {
            return Ok(());
        }
        let Some(parsed) = Origin::parse(&sent) else {
            return Err(sent);
        };
        let host = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok());
        if host.is_some_and(|host| same_host_and_port(&parsed, host)) || self.lists(&parsed) {
            Ok(())
        } else {
            Err(sent)
        }
    }

    fn lists(&self, origin: &Origin) -> bool {
        let Some(port) = origin.effective_port() else {
            return false;
        };
        self.listed.iter().any(|listed| {
            listed.scheme == origin.scheme
                && listed.port == port
                && match &listed.host {
                    Host::Exact(host) => *host == origin.host,
                    Host::Suffix(suffix) => {
                        origin.host.len() > suffix.len() && origin.host.ends_with(suffix.as_str())
                    }
                }
        })
    }
}

/// Same host and port, whatever the scheme (SPEC §18). A side without a
/// port stands for the default port of the Origin's scheme, so that
/// `Origin: https://example.com` matches `Host: example.com` behind a TLS
/// proxy.
fn same_host_and_port(origin: &Origin, host_header: &str) -> bool {
    let Some((host, port)) = split_host_port(host_header.trim()) else {
        return false;
    };
    if !host.eq_ignore_ascii_case(&origin.host) {
        return false;
    }
    match (origin.port, port) {
        (None, None) => true,
        (Some(a), Some(b)) => a == b,
        (None, Some(explicit)) | (Some(explicit), None) => {
            default_port(&origin.scheme) == Some(explicit)
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).expect("host"));
        if let Some(origin) = origin {
            headers.insert(
                header::ORIGIN,
                HeaderValue::from_str(origin).expect("origin"),
            );
        }
        headers
    }

    fn allowed(list: &[&str], origin: Option<&str>, host: &str) -> bool {
        let list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        OriginPolicy::new(&list)
            .check(&headers(origin, host))
            .is_ok()
    }

    #[test]
    fn default_allows_no_origin_and_same_origin_only() {
        assert!(allowed(&[], None, "127.0.0.1:9100"));
        assert!(allowed(
            &[],
            Some("http://127.0.0.1:9100"),
            "127.0.0.1:9100"
        ));
        // The scheme is not compared, host and port are.
        assert!(allowed(
            &[],
            Some("https://127.0.0.1:9100"),
            "127.0.0.1:9100"
        ));
        assert!(allowed(
            &[],
            Some("https://Bus.Example.com"),
            "bus.example.com"
        ));
        assert!(allowed(
            &[],
            Some("https://bus.example.com"),
            "bus.example.com:443"
        ));
        assert!(!allowed(
            &[],
            Some("http://127.0.0.1:8080"),
            "127.0.0.1:9100"
        ));
        assert!(!allowed(
            &[],
            Some("http://localhost:9100"),
            "127.0.0.1:9100"
        ));
        assert!(!allowed(
            &[],
            Some("https://evil.example"),
            "127.0.0.1:9100"
        ));
        assert!(!allowed(&[], Some("null"), "127.0.0.1:9100"));
        assert!(!allowed(&[], Some("http://[::1]:9100"), "127.0.0.1:9100"));
        assert!(allowed(&[], Some("http://[::1]:9100"), "[::1]:9100"));
    }

    #[test]
    fn listed_origins_match_scheme_host_and_port() {
        let list = ["https://app.example.com", "http://localhost:8080"];
        assert!(allowed(&list, Some("https://app.example.com"), "bus:9100"));
        assert!(allowed(
            &list,
            Some("https://app.example.com:443"),
            "bus:9100"
        ));
        assert!(allowed(&list, Some("http://localhost:8080"), "bus:9100"));
        assert!(!allowed(&list, Some("http://app.example.com"), "bus:9100"));
        assert!(!allowed(
            &list,
            Some("https://app.example.com:8443"),
            "bus:9100"
        ));
        assert!(!allowed(&list, Some("http://localhost:8081"), "bus:9100"));
        // Same-origin and no-Origin stay allowed with a list.
        assert!(allowed(&list, None, "bus:9100"));
        assert!(allowed(&list, Some("http://bus:9100"), "bus:9100"));
    }

    #[test]
    fn wildcards_match_subdomains_at_any_depth_but_not_the_domain() {
        let list = ["https://*.example.com"];
        assert!(allowed(&list, Some("https://a.example.com"), "bus:1"));
        assert!(allowed(&list, Some("https://a.b.example.com"), "bus:1"));
        assert!(!allowed(&list, Some("https://example.com"), "bus:1"));
        assert!(!allowed(&list, Some("https://evilexample.com"), "bus:1"));
        assert!(!allowed(&list, Some("http://a.example.com"), "bus:1"));
    }

    #[test]
    fn star_allows_everything() {
        assert!(allowed(&["*"], Some("https://anything.example"), "bus:1"));
        assert!(allowed(&["*"], Some("null"), "bus:1"));
    }
}
