//! A link with latency, for a kernel without netem: a userspace relay that forwards Ethernet
//! frames between two interfaces of the switch namespace after a fixed one-way delay.
//!
//! The mirror of a real Arch user is tens of milliseconds away, and that distance is what makes
//! one cold connection per file expensive (handshakes, TCP slow start), so a benchmark of the
//! mirror path needs it. This kernel has neither netem nor fq (the usual ways to delay packets),
//! so [`crate::netns::Lan::delay_link`] takes a host's switch port out of the bridge and puts
//! this relay between them. It works at the frame level, so TCP sees a real round-trip time:
//! handshakes, slow start and ACK clocking behave as over a long link. Offloads are turned off on
//! the path (`ethtool`): segmentation, so every frame is at most one MTU and slow start counts
//! real segments; and checksums, since a frame re-sent from a packet socket is not completed
//! by the kernel and would be dropped by the receiver.
//!
//! The relay runs as threads of the test or bench process that entered the switch namespace
//! (`setns` is per thread); they end when the namespace goes and their sockets fail.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::libc;

/// Largest frame forwarded: offloads are off, so frames are at most MTU + Ethernet header.
const MAX_FRAME: usize = 9216;
/// Frames in flight per direction: 200 Mbit/s × 50 ms is about 850 full frames.
const QUEUE: usize = 65_536;

/// Starts relaying frames between `a` and `b` (interface names in the namespace `netns`, as in
/// /run/netns) with `delay` in each direction.
pub fn start(netns: &str, a: &str, b: &str, delay: Duration) {
    let ns_path = Path::new("/run/netns").join(netns);
    let (a, b) = (a.to_owned(), b.to_owned());
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&ns_path).expect("open the switch namespace");
        // SAFETY: setns on this thread only, with a valid namespace fd.
        let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns into {}", ns_path.display());
        let (sa, sb) = (packet_socket(&a), packet_socket(&b));
        let (sa2, sb2) = (dup(&sa), dup(&sb));
        std::thread::spawn(move || forward(sa, sb2, delay));
        std::thread::spawn(move || forward(sb, sa2, delay));
        let _ = ready_tx.send(());
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("relay started");
}

/// Receives frames on `from` and sends each on `to` once `delay` has passed since it arrived.
fn forward(from: OwnedFd, to: OwnedFd, delay: Duration) {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(QUEUE);
    std::thread::spawn(move || {
        let mut pending: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
        while let Ok(item) = rx.recv() {
            pending.push_back(item);
            while let Ok(more) = rx.try_recv() {
                pending.push_back(more);
            }
            while let Some((due, frame)) = pending.pop_front() {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                // SAFETY: sending a valid buffer on a bound packet socket.
                let sent =
                    unsafe { libc::send(to.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                if sent < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                    return;
                }
                while let Ok(more) = rx.try_recv() {
                    pending.push_back(more);
                }
            }
        }
    });
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        // SAFETY: zeroed sockaddr_ll is a valid out-parameter for recvfrom.
        let mut from_addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        let n = unsafe {
            libc::recvfrom(
                from.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from_addr as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return; // the interface (and namespace) went away
        }
        // A packet socket also sees what is sent out of its interface, including our own sends.
        if from_addr.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        let item = (Instant::now() + delay, buf[..n as usize].to_vec());
        if tx.send(item).is_err() {
            return;
        }
    }
}

/// A raw packet socket bound to `interface`, receiving every protocol.
fn packet_socket(interface: &str) -> OwnedFd {
    let index = nix::net::if_::if_nametoindex(interface).expect("relay interface exists");
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the fd is owned at once.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, protocol as i32) };
    assert!(
        raw >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = index as i32;
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    assert_eq!(bound, 0, "bind packet socket to {interface}");
    // Bursts at line rate must not overflow the default receive buffer.
    let size: libc::c_int = 8 << 20;
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    fd
}

fn dup(fd: &OwnedFd) -> OwnedFd {
    fd.try_clone().expect("dup packet socket")
}
