//! The one decision of what a GET or HEAD of a file answers: status, range, conditional headers
//! and framing, from the file's size and modification time and the request's headers.
//!
//! Every way a file leaves the daemon goes through [`decide`]: a cache file to a peer
//! (`/pkg/`), a file still arriving (its full size announced; the body follows as it lands), a
//! LAN copy pacman's own downloader asked for (`/cache/`), and a prefetched copy handed to the
//! local `pacserve-fetch` over the agent's socket. The rules are RFC 9110's, in its order:
//! `If-Unmodified-Since` (412), `If-Modified-Since` (304), then `Range` (one range, parsed by
//! `http-range-header`, the crate tower-http uses), which `If-Range` cancels unless its
//! validator is exactly the `Last-Modified` sent (a weak or unknown validator never matches, so
//! a client resuming a file that changed under the same name gets the whole file, not two files
//! glued together). A range of an empty file, several ranges, or a range past the end is 416
//! with `bytes */<size>`; a range in a unit other than bytes is ignored. No ETag is sent: the files are named by version, and Last-Modified is
//! what pacman's libcurl and the client use.

use std::time::SystemTime;

use crate::daemon::http::request::Request;
use crate::daemon::http::response::Head;

/// What is known of the file being answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    pub len: u64,
    /// None for a file still arriving (no mtime yet).
    pub modified: Option<SystemTime>,
}

/// The bytes of the file a body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub len: u64,
}

/// The request's headers that shape an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conditions<'a> {
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub if_unmodified_since: Option<&'a str>,
}

impl<'a> Conditions<'a> {
    pub fn of(request: &'a Request) -> Conditions<'a> {
        Conditions {
            range: request.header("range"),
            if_range: request.header("if-range"),
            if_modified_since: request.header("if-modified-since"),
            if_unmodified_since: request.header("if-unmodified-since"),
        }
    }
}

/// The answer: its head, and the part of the file its body carries (for a GET; a HEAD sends
/// the same head and no body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub head: Head,
    pub body: Option<Span>,
}

/// See the module doc.
pub fn decide(file: Resource, request: Conditions) -> Answer {
    let last_modified = file.modified.map(httpdate::fmt_http_date);
    let with_validators = |mut head: Head| {
        if let Some(last) = &last_modified {
            head = head.with("last-modified", last.clone());
        }
        head
    };
    // Dates compare at whole seconds, the precision of an HTTP date.
    let mtime = file.modified.and_then(|m| {
        m.duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    });
    let date = |value: Option<&str>| -> Option<u64> {
        let at = httpdate::parse_http_date(value?).ok()?;
        at.duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    };
    if let (Some(mtime), Some(since)) = (mtime, date(request.if_unmodified_since))
        && mtime > since
    {
        return Answer {
            head: Head::new(412),
            body: None,
        };
    }
    if let (Some(mtime), Some(since)) = (mtime, date(request.if_modified_since))
        && mtime <= since
    {
        return Answer {
            head: with_validators(Head::new(304)),
            body: None,
        };
    }
    let range = request
        .range
        // A unit other than bytes is ignored, as RFC 9110 14.2 requires (a MUST): the whole
        // file, not a 416. Units compare case-insensitively.
        .filter(|value| {
            value
                .split_once('=')
                .is_some_and(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        })
        .filter(|_| match request.if_range {
            None => true,
            Some(validator) => last_modified.as_deref() == Some(validator.trim()),
        });
    let unsatisfiable = || Answer {
        head: with_validators(
            Head::new(416).with("content-range", format!("bytes */{}", file.len)),
        ),
        body: None,
    };
    let whole = Span {
        offset: 0,
        len: file.len,
    };
    let (status, span) = match range {
        None => (200, whole),
        Some(_) if file.len == 0 => return unsatisfiable(),
        Some(value) => {
            let Ok(parsed) = http_range_header::parse_range_header(value) else {
                return unsatisfiable();
            };
            if parsed.len() != 1 {
                return unsatisfiable();
            }
            match parsed.validate(file.len).map(|mut r| r.pop()) {
                Ok(Some(r)) => (
                    206,
                    Span {
                        offset: *r.start(),
                        len: r.end() - r.start() + 1,
                    },
                ),
                _ => return unsatisfiable(),
            }
        }
    };
    let mut head = with_validators(Head::new(status))
        .with("content-type", "application/octet-stream")
        .with("accept-ranges", "bytes")
        .with("content-length", span.len.to_string());
    if status == 206 {
        head = head.with(
            "content-range",
            format!(
                "bytes {}-{}/{}",
                span.offset,
                span.offset + span.len - 1,
                file.len
            ),
        );
    }
    Answer {
        head,
        body: (span.len > 0).then_some(span),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file(len: u64) -> Resource {
        Resource {
            len,
            modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        }
    }

    fn ask(len: u64, range: Option<&str>) -> Answer {
        decide(
            file(len),
            Conditions {
                range,
                ..Conditions::default()
            },
        )
    }

    #[test]
    fn whole_files_ranges_and_what_no_range_can_satisfy() {
        let whole = ask(100, None);
        assert_eq!(whole.head.status, 200);
        assert_eq!(whole.head.field("content-length"), Some("100"));
        assert_eq!(
            whole.body,
            Some(Span {
                offset: 0,
                len: 100
            })
        );
        let part = ask(100, Some("bytes=10-19"));
        assert_eq!(part.head.status, 206);
        assert_eq!(part.head.field("content-range"), Some("bytes 10-19/100"));
        assert_eq!(
            part.body,
            Some(Span {
                offset: 10,
                len: 10
            })
        );
        let rest = ask(100, Some("bytes=90-"));
        assert_eq!(
            rest.body,
            Some(Span {
                offset: 90,
                len: 10
            })
        );
        assert_eq!(
            ask(100, Some("bytes=-5")).body,
            Some(Span { offset: 95, len: 5 })
        );
        assert_eq!(
            ask(100, Some("bytes=0-500")).head.field("content-length"),
            Some("100")
        );
        for unsatisfiable in ["bytes=100-", "bytes=50-10", "bytes=0-1,5-6", "bytes=x-"] {
            let answer = ask(100, Some(unsatisfiable));
            assert_eq!(answer.head.status, 416, "{unsatisfiable}");
            assert_eq!(answer.head.field("content-range"), Some("bytes */100"));
            assert_eq!(answer.body, None);
        }
        for other_unit in ["lines=1-2", "items=0-0", "lines"] {
            let answer = ask(100, Some(other_unit));
            assert_eq!(answer.head.status, 200, "{other_unit}: ignored");
            assert_eq!(answer.body, whole.body);
        }
        assert_eq!(ask(100, Some("Bytes=0-0")).head.status, 206);
        let empty = ask(0, Some("bytes=0-0"));
        assert_eq!(empty.head.status, 416);
        assert_eq!(empty.head.field("content-range"), Some("bytes */0"));
        assert_eq!(ask(0, None).head.status, 200);
        assert_eq!(ask(0, None).body, None);
    }

    #[test]
    fn conditions_in_rfc_order() {
        let last = httpdate::fmt_http_date(file(1).modified.unwrap());
        let later = "Wed, 01 Jan 2098 00:00:00 GMT";
        let earlier = "Wed, 01 Jan 2003 00:00:00 GMT";
        let with = |c: Conditions| decide(file(100), c);
        assert_eq!(
            with(Conditions {
                if_modified_since: Some(later),
                ..Conditions::default()
            })
            .head
            .status,
            304
        );
        assert_eq!(
            with(Conditions {
                if_modified_since: Some(earlier),
                ..Conditions::default()
            })
            .head
            .status,
            200
        );
        assert_eq!(
            with(Conditions {
                if_unmodified_since: Some(earlier),
                if_modified_since: Some(later),
                ..Conditions::default()
            })
            .head
            .status,
            412
        );
        let ranged = |if_range: &str| {
            with(Conditions {
                range: Some("bytes=0-9"),
                if_range: Some(if_range),
                ..Conditions::default()
            })
            .head
            .status
        };
        assert_eq!(ranged(&last), 206, "the validator matches");
        for stale in [earlier, "\"an-etag\"", "W/\"weak\"", "garbage"] {
            assert_eq!(ranged(stale), 200, "{stale}: the whole file");
        }
        // A file still arriving has no validator: a conditional range gets the whole file.
        let growing = decide(
            Resource {
                len: 100,
                modified: None,
            },
            Conditions {
                range: Some("bytes=5-"),
                if_range: Some(&last),
                ..Conditions::default()
            },
        );
        assert_eq!(growing.head.status, 200);
        assert_eq!(growing.head.field("last-modified"), None);
    }
}
