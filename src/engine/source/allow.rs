//! Where a dataset may fetch from: the scheme, host and port its spec
//! allows (`source.allowed_sources`, else its URL template's origin), with
//! SSRF checks — a URL that came from outside (a webhook) must name an
//! allowed origin and must not reach an internal address unless the spec
//! lists that address itself; every redirect is checked again
//! ([`redirect_guard`]).

use std::net::IpAddr;

use crate::dataset::Spec;

/// The scheme, host and port a spec lets webhooks point its source at.
fn allowed_origins(spec: &Spec) -> Vec<(String, String, Option<u16>)> {
    let entries: Vec<String> = if spec.source.allowed_sources.is_empty() {
        vec![spec.source.url.clone()]
    } else {
        spec.source.allowed_sources.clone()
    };
    entries
        .iter()
        .filter_map(|e| url::Url::parse(&e.replace(['{', '}'], "")).ok())
        .filter_map(|u| {
            Some((
                u.scheme().to_string(),
                u.host_str()?.to_ascii_lowercase(),
                u.port(),
            ))
        })
        .collect()
}

/// An allow-list entry without a port allows only its scheme's default
/// port; with one, only that port.
fn port_matches(scheme: &str, listed: Option<u16>, target: &url::Url) -> bool {
    let default = match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    listed.or(default) == target.port_or_known_default()
}

/// Refuses a source URL whose scheme and host the spec does not list, and
/// one that resolves to a loopback, link-local or private address unless
/// the spec lists that internal host itself (`allowed_sources`).
pub(crate) async fn source_allowed(spec: &Spec, url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|_| "the source url does not parse".to_string())?;
    let host = parsed
        .host_str()
        .ok_or_else(|| "the source url has no host".to_string())?
        .to_ascii_lowercase();
    let listed = allowed_origins(spec).into_iter().any(|(scheme, h, port)| {
        scheme == parsed.scheme() && h == host && port_matches(&scheme, port, &parsed)
    });
    if !listed {
        return Err(format!(
            "source {}://{host} is not on {}'s allow-list (source.allowed_sources)",
            parsed.scheme(),
            spec.dataset
        ));
    }
    if internal_hosts(spec).contains(&host) {
        return Ok(());
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addresses: Vec<IpAddr> = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map(|a| a.map(|s| s.ip()).collect())
            .unwrap_or_default(),
    };
    if let Some(ip) = addresses.iter().find(|ip| internal(ip)) {
        return Err(format!(
            "source host {host} resolves to an internal address ({ip}); list it in source.allowed_sources to allow it"
        ));
    }
    Ok(())
}

/// Checks every redirect of a webhook-named source: the target's scheme
/// and host must be on the spec's allow-list, and a literal address must
/// not be internal unless the spec lists that host.
pub(crate) fn redirect_guard(spec: &Spec) -> super::RedirectGuard {
    let origins = allowed_origins(spec);
    let explicit = internal_hosts(spec);
    let dataset = spec.dataset.clone();
    super::RedirectGuard(std::sync::Arc::new(move |target: &url::Url| {
        let host = target.host_str().unwrap_or_default().to_ascii_lowercase();
        let listed = origins.iter().any(|(scheme, h, port)| {
            scheme == target.scheme() && *h == host && port_matches(scheme, *port, target)
        });
        if !listed {
            return Err(format!(
                "{}://{host} is not on {dataset}'s allow-list",
                target.scheme()
            ));
        }
        let literal = host.trim_matches(['[', ']']).parse::<IpAddr>().ok();
        if literal.is_some_and(|ip| internal(&ip)) && !explicit.contains(&host) {
            return Err(format!("{host} is an internal address"));
        }
        Ok(())
    }))
}

/// Hosts the spec lists that are internal on their face (an IP literal of
/// an internal address, or `localhost`): the only ones allowed to be
/// internal. A listed public name that resolves to an internal address is
/// still refused.
fn internal_hosts(spec: &Spec) -> Vec<String> {
    spec.source
        .allowed_sources
        .iter()
        .filter_map(|e| {
            url::Url::parse(e)
                .ok()?
                .host_str()
                .map(str::to_ascii_lowercase)
        })
        .filter(|h| {
            h == "localhost"
                || h.trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| internal(&ip))
        })
        .collect()
}

/// Loopback, link-local, private, unique-local, unspecified or the like.
pub(crate) fn internal(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // CGNAT
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| internal(&IpAddr::V4(v4)))
                || embedded_v4(v6).is_some_and(|v4| internal(&IpAddr::V4(v4)))
        }
    }
}

/// The IPv4 address an IPv6 address carries to a gateway that will reach
/// it: NAT64 (`64:ff9b::/96`, RFC 6052), IPv4-compatible (`::a.b.c.d`,
/// deprecated but still routed by some stacks) and 6to4 (`2002:AABB:CCDD::/48`,
/// RFC 3056). An internal address behind any of them is internal.
fn embedded_v4(v6: &std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let low = |hi: u16, lo: u16| {
        std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
    };
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1)) {
        Some(low(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(low(s[1], s[2]))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_the_allow_list_scheme_host_and_port() {
        let spec =
            crate::dataset::find(std::path::Path::new("jobs"), "novo-bolsa-familia").expect("spec");
        let guard = redirect_guard(&spec);
        let check = |u: &str| (guard.0)(&url::Url::parse(u).expect("url"));
        assert!(
            check("https://dadosabertos-download.cgu.gov.br/PortalDaTransparencia/x.zip").is_ok()
        );
        assert!(check("https://portaldatransparencia.gov.br:443/x").is_ok());
        for refused in [
            "https://portaldatransparencia.gov.br:8443/x",
            "http://portaldatransparencia.gov.br/x",
            "https://evil.example/x",
            "https://169.254.169.254/latest",
        ] {
            assert!(check(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
            "::127.0.0.1",        // IPv4-compatible
            "2002:a9fe:a9fe::1",  // 6to4 of 169.254.169.254
        ] {
            assert!(internal(&ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "200.152.38.10",
            "8.8.8.8",
            "2001:4860:4860::8888",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!internal(&ip.parse().expect("ip")), "{ip}");
        }
    }
}
