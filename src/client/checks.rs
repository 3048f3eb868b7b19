//! Values pacserve-fetch refuses before it sends anything: a static peer that is a URL, has a
//! port past 65535 or a host that does not resolve; an interface that does not exist; a URL
//! that is not http(s):// or file://. Each would otherwise be skipped silently, leaving the user
//! to wonder why no peer is ever asked; as an error it names the value and exits 2.
//!
//! A host name in the configuration file that does not resolve is the one exception, checked
//! only on the command line: a VPN peer that is down must not fail every download pacman asks
//! for (at send time it is skipped, as an unreachable peer is).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::client::error::Error;
use crate::client::transfer::file;
use crate::protocol::netif;

/// Checks one `HOST`, `HOST:PORT`, `IPv6` or `[IPv6]:PORT`; `resolve` also looks the host up.
pub fn peer(peer: &str, default_port: u16, resolve: bool) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{peer}: {why}"));
    if peer.contains("://") || peer.contains('/') {
        return bad("not HOST or HOST:PORT (a peer is named without a URL scheme or path)");
    }
    if peer.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if let Ok(addr) = peer.parse::<SocketAddr>() {
        return match addr.port() {
            0 => bad("port 0 is not a port"),
            _ => Ok(()),
        };
    }
    let (host, port) = match peer.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port),
        Some(_) => return bad("not an IPv6 address (write [ADDR]:PORT to give a port)"),
        None => (peer, ""),
    };
    let port = match port {
        "" => default_port,
        digits => match digits.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return bad(&format!("invalid port {digits:?} (1 to 65535)")),
        },
    };
    if host.is_empty() {
        return bad("no host");
    }
    if resolve
        && (host, port)
            .to_socket_addrs()
            .map_or(true, |mut a| a.next().is_none())
    {
        return bad("host not found");
    }
    Ok(())
}

/// Every named interface must exist on this machine.
pub fn interfaces(names: &[String]) -> Result<(), String> {
    match names.iter().find(|n| !netif::exists(n)) {
        Some(name) => Err(format!("{name}: no such network interface")),
        None => Ok(()),
    }
}

/// pacman's `%u`: http://, https:// or file:// with a host or an absolute path.
pub fn url(url: &str) -> Result<(), Error> {
    let bad = |reason: String| Error::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(bad(
            "no scheme (expected http://, https:// or file://)".into()
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "file" => file::file_url_path(url).map(drop),
        "http" | "https" => match url.parse::<ureq::http::Uri>() {
            Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
            Ok(_) => Err(bad("no host".into())),
            Err(e) => Err(bad(e.to_string())),
        },
        other => Err(bad(format!(
            "unsupported scheme {other}:// (expected http, https or file)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_that_cannot_work_are_named() {
        for good in [
            "10.0.0.2",
            "10.0.0.2:99",
            "fe80::1",
            "[fe80::1]:15678",
            "localhost",
        ] {
            assert_eq!(peer(good, 15678, true), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("127.0.0.1:99999", "invalid port \"99999\""),
            ("http://10.0.0.2:15678", "URL scheme"),
            ("nas/pkg", "URL scheme"),
            ("127.0.0.1:0", "port 0"),
            (":15678", "no host"),
            ("no-such-host.invalid", "host not found"),
        ] {
            let err = peer(bad, 15678, true).unwrap_err();
            assert!(err.starts_with(bad) && err.contains(why), "{err}");
        }
        assert_eq!(peer("no-such-host.invalid", 15678, false), Ok(()));
    }

    #[test]
    fn urls_pacman_cannot_mean_are_bad_urls() {
        for good in [
            "http://m/core.db",
            "HTTPS://m:8/x",
            "file:///srv/x.pkg.tar.zst",
        ] {
            assert!(url(good).is_ok(), "{good}");
        }
        for bad in [
            "notaurl",
            "ftp://m/x",
            "http://",
            "http://a b/x",
            "file://host/x",
        ] {
            assert!(matches!(url(bad), Err(Error::BadUrl { .. })), "{bad}");
        }
    }

    #[test]
    fn a_missing_interface_is_named() {
        assert_eq!(interfaces(&["lo".into()]), Ok(()));
        let err = interfaces(&["lo".into(), "nosuch0".into()]).unwrap_err();
        assert_eq!(err, "nosuch0: no such network interface");
    }
}
