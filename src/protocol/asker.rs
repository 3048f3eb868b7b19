//! The asking side of discovery, shared by the client ([`crate::client::peers::discovery`]) and the
//! daemon's claims ([`crate::daemon::claims`]): the two sockets, one query sent on every chosen
//! interface and to every static peer, and the answers that arrive.
//!
//! What it sends and where answers may come from are decided here once, so a daemon settling a
//! claim believes exactly the answers a client would: only from the link the query went out on,
//! or from a static peer, and only from the port asked ([`Links`]).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::protocol::netif::Interface;
use crate::protocol::onlink::Links;

/// Room for the answers of a large LAN arriving at once: each datagram costs about 1 KiB of
/// kernel buffer, and 200 daemons answer within a millisecond or two.
const ANSWER_BUFFER: usize = 1 << 20;
/// Datagrams taken from one socket per wakeup, so a flood cannot keep the caller receiving.
const DRAIN_LIMIT: usize = 64;

/// Where one query goes.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The UDP port daemons listen on.
    pub port: u16,
    pub group_v4: Ipv4Addr,
    pub group_v6: Ipv6Addr,
    /// Interfaces to multicast on (empty: none).
    pub interfaces: &'a [Interface],
    /// Static peers, asked by unicast.
    pub peers: &'a [SocketAddr],
}

/// The asker's two sockets; either may be missing (no IPv6 on this host, say).
pub struct Asker {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl Asker {
    pub fn open() -> io::Result<Asker> {
        let v4 = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .and_then(|s| {
                s.set_multicast_ttl_v4(1)?;
                s.set_multicast_loop_v4(true)?;
                let _ = s.set_recv_buffer_size(ANSWER_BUFFER);
                s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
                s.set_nonblocking(true)?;
                Ok(UdpSocket::from(s))
            })
            .ok();
        let v6 = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
            .and_then(|s| {
                s.set_only_v6(true)?;
                s.set_multicast_hops_v6(1)?;
                s.set_multicast_loop_v6(true)?;
                let _ = s.set_recv_buffer_size(ANSWER_BUFFER);
                s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
                s.set_nonblocking(true)?;
                Ok(UdpSocket::from(s))
            })
            .ok();
        if v4.is_none() && v6.is_none() {
            return Err(io::Error::other("cannot open a UDP socket for discovery"));
        }
        Ok(Asker { v4, v6 })
    }

    /// Sends `datagrams` (each in full) on every interface of `target` over both families and
    /// to every static peer. Returns how many destinations got them, and the links answers are
    /// believed from.
    pub fn send(&self, target: &Target, datagrams: &[Vec<u8>]) -> (usize, Links) {
        let mut sent = 0;
        for iface in target.interfaces {
            if let (Some(v4), Some(addr)) = (&self.v4, iface.ipv4.first()) {
                let ok = SockRef::from(v4).set_multicast_if_v4(addr).is_ok()
                    && datagrams
                        .iter()
                        .all(|d| v4.send_to(d, (target.group_v4, target.port)).is_ok());
                sent += usize::from(ok);
            }
            if let (Some(v6), true) = (&self.v6, iface.has_ipv6) {
                let group = SocketAddrV6::new(target.group_v6, target.port, 0, iface.index);
                let ok = SockRef::from(v6).set_multicast_if_v6(iface.index).is_ok()
                    && datagrams.iter().all(|d| v6.send_to(d, group).is_ok());
                sent += usize::from(ok);
            }
        }
        for &addr in target.peers {
            let socket = match addr {
                SocketAddr::V4(_) => &self.v4,
                SocketAddr::V6(_) => &self.v6,
            };
            if let Some(socket) = socket {
                sent += usize::from(datagrams.iter().all(|d| socket.send_to(d, addr).is_ok()));
            }
        }
        (
            sent,
            Links::new(target.interfaces, target.port, target.peers),
        )
    }

    /// Waits up to `timeout` for datagrams on either socket and returns those that arrived.
    pub fn receive(&self, timeout: Duration) -> io::Result<Vec<(SocketAddr, Vec<u8>)>> {
        let sockets: Vec<&UdpSocket> = [&self.v4, &self.v6].into_iter().flatten().collect();
        let mut fds: Vec<PollFd> = sockets
            .iter()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
            .collect();
        let millis = timeout.as_millis().clamp(1, u16::MAX as u128) as u16;
        match nix::poll::poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(Vec::new()),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        for socket in sockets {
            for _ in 0..DRAIN_LIMIT {
                match socket.recv_from(&mut buf) {
                    Ok((len, from)) => got.push((from, buf[..len].to_vec())),
                    Err(_) => break,
                }
            }
        }
        Ok(got)
    }
}
