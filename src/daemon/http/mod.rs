//! pacserved's HTTP/1.1, the one way the daemon answers a request: on the LAN's TCP port and on
//! the local agent's socket alike.
//!
//! Small on purpose, as darkhttpd is: a request head is read and parsed ([`request`], with
//! httparse, hyper's own parser), one decision says what a GET or HEAD of a file answers
//! ([`answer`]: status, range, conditional headers, framing, from the file's size and mtime and
//! the request), one writer writes every response head and chunk ([`response`]), and bodies go
//! out by the kernel ([`send`]: sendfile, for files in the cache and files still arriving).
//! The TCP server ([`crate::daemon::server`]) drives these with tokio, so that slow clients cost
//! memory, not threads; the agent ([`crate::daemon::agent`]) drives the same functions on its
//! bounded blocking threads, because its jobs wait on blocking mirror requests anyway.

pub mod answer;
pub mod request;
pub mod response;
pub mod send;
