//! One piece from one source: a `Range` request that must be answered with exactly that range,
//! read no slower than the source's floor and no later than the peers' deadline, and dropped
//! as soon as its twin has arrived.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use crate::client::error::{Error, ureq_error, wire_error};
use crate::client::transfer::body::Guarded;
use crate::client::transfer::parse_content_range;

use super::Source;

/// Fetches one piece: a 206 for exactly its range, of exactly its length, no slower than the
/// speed floor, by `deadline`; `None` once it is no longer `wanted` (its twin arrived first).
pub(super) fn fetch_piece(
    source: &Source,
    piece: std::ops::Range<u64>,
    size: u64,
    deadline: Option<Instant>,
    wanted: &dyn Fn() -> bool,
) -> Result<Option<Vec<u8>>, Error> {
    let (url, limits) = (&source.url, source.limits);
    let len = piece.end - piece.start;
    let response = source
        .agent
        .get(url)
        .header("Range", format!("bytes={}-{}", piece.start, piece.end - 1))
        .call()
        .map_err(|e| ureq_error(url, &e, limits))?;
    let headers = response.headers();
    let range = headers
        .get("Content-Range")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range);
    let asked = (piece.start, piece.end - 1, Some(size));
    if response.status().as_u16() != 206 || range.map(|r| (r.start, r.end, r.total)) != Some(asked)
    {
        return Err(Error::BadResponse {
            url: url.clone(),
            detail: format!(
                "asked for bytes {}-{} of {size}, got {} {}",
                piece.start,
                piece.end - 1,
                response.status(),
                headers
                    .get("Content-Range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("without a Content-Range")
            ),
        });
    }
    let mut body = Guarded::new(
        response.into_body().into_reader(),
        Some(len),
        limits.low_speed,
    );
    let mut bytes = vec![0; len as usize];
    let mut got = 0;
    while got < bytes.len() {
        match body.read(&mut bytes[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(wire_error(url.clone(), &e, limits)),
        }
        if !wanted() {
            return Ok(None);
        }
        // A piece begun just before the end of the peers' time ends with it, however steadily
        // it arrives.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Timeout {
                url: url.clone(),
                phase: "before the time given to peers was over",
                limit: Duration::ZERO,
            });
        }
    }
    bytes.truncate(got);
    if bytes.len() as u64 != len {
        return Err(Error::Truncated {
            url: url.clone(),
            received: bytes.len() as u64,
            expected: len,
        });
    }
    Ok(Some(bytes))
}
