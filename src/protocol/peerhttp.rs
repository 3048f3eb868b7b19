//! How a peer's file is reached over HTTP, the same on both sides: its URL (`/pkg/<file>`, the
//! path pacredir's peers serve too) and a resolver that connects to the exact address that
//! answered, since an IPv6 link-local scope cannot be written in a URL.

use std::net::SocketAddr;

use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// The URL of `name` on a peer, as pacredir's peers also serve it. IPv6 scope ids cannot be
/// written in a URL; the peer agent connects to the exact address regardless.
pub fn url(peer: SocketAddr, name: &str) -> String {
    let host = match peer {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let mut path = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:+@".contains(&b) {
            path.push(b as char);
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    format!("http://{host}:{}/pkg/{path}", peer.port())
}

/// A resolver that answers every lookup with one address: a peer's, as it answered.
#[derive(Debug)]
pub struct FixedAddress(pub SocketAddr);

impl Resolver for FixedAddress {
    fn resolve(
        &self,
        _: &ureq::http::Uri,
        _: &ureq::config::Config,
        _: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut addrs = self.empty();
        addrs.push(self.0);
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_keep_pacman_names_readable() {
        let v4: SocketAddr = "10.0.0.2:15678".parse().unwrap();
        assert_eq!(
            url(v4, "vim-2:9.1+r3-1-x86_64.pkg.tar.zst"),
            "http://10.0.0.2:15678/pkg/vim-2:9.1+r3-1-x86_64.pkg.tar.zst"
        );
        let v6: SocketAddr = "[fe80::1%2]:80".parse().unwrap();
        assert_eq!(
            url(v6, "a b.pkg.tar"),
            "http://[fe80::1]:80/pkg/a%20b.pkg.tar"
        );
    }
}
