//! What a response really delivered: `bytes served` counts the body bytes the kernel took, not
//! the length the head announced, and the log says when they differ.
//!
//! A file's response is logged as it starts ([`started`], with the length it is to send, in the
//! format log readers and `contrib/try-lan.sh` know), and counted when it ends ([`ended`]): a
//! transfer that ended short gets a second line saying how far it got, and a file counts as
//! served only when its whole body was taken.

use std::net::IpAddr;

use crate::daemon::stats::Stats;
use crate::info;

/// What the log line says about a request, besides the byte count.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub name: String,
    pub client: IpAddr,
    pub status: u16,
    /// The Range header, if any, as sent.
    pub range: Option<String>,
    /// The body length the response announced.
    pub announced: u64,
}

/// Logs a response as it starts, with the length it is to send.
pub fn started(request: &Request) {
    info!(
        "{} /pkg/{} from {}: {} {} bytes{}",
        request.method,
        request.name,
        request.client,
        request.status,
        request.announced,
        request
            .range
            .as_ref()
            .map(|range| format!(" ({range})"))
            .unwrap_or_default()
    );
}

/// Counts what a finished (or cut) response delivered, and logs a transfer that ended short.
pub fn ended(request: &Request, sent: u64, stats: &Stats) {
    if request.method != "GET" {
        return;
    }
    Stats::add(&stats.bytes_served, sent);
    if sent >= request.announced {
        if (200..300).contains(&request.status) {
            Stats::add(&stats.files_served, 1);
        }
    } else {
        // Worded so that it does not read as another request for the file.
        info!(
            "{} to {}: sent {} of {} bytes, the connection ended early",
            request.name, request.client, sent, request.announced
        );
    }
}
