//! Every response head the daemon writes, and the chunked framing of a body of unknown length:
//! one writer, so that what is on the wire is decided in one place.

use std::time::SystemTime;

/// A response head: a status and its header fields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub fields: Vec<(&'static str, String)>,
}

impl Head {
    pub fn new(status: u16) -> Head {
        Head {
            status,
            fields: Vec::new(),
        }
    }

    /// Adds a header field.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Head {
        self.fields.push((name, value.into()));
        self
    }

    /// The value of a field set here (case-insensitive name).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The head as sent: the status line, the fields, a Date, `content-length: 0` when no
    /// framing was given (every answer is framed, so a cut is visible; a 304 by its status
    /// alone), and `connection:
    /// close` unless the connection stays open.
    pub fn to_bytes(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.fields {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        let framed = ["content-length", "transfer-encoding"]
            .iter()
            .any(|f| self.field(f).is_some());
        // A 304 is framed by its status (it never has a body), and RFC 9110 8.6 forbids a
        // Content-Length there other than the 200's: `0` would tell a cache the file is empty.
        if !framed && self.status != 304 {
            out.push_str("content-length: 0\r\n");
        }
        out.push_str(&format!(
            "date: {}\r\n",
            httpdate::fmt_http_date(SystemTime::now())
        ));
        if !keep_alive {
            out.push_str("connection: close\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// A short answer with a plain-text body (errors, the status page).
pub fn text(status: u16, content_type: &str, body: &str) -> (Head, Vec<u8>) {
    let head = Head::new(status)
        .with("content-type", content_type.to_owned())
        .with("content-length", body.len().to_string());
    (head, body.as_bytes().to_vec())
}

/// One piece of a chunked body; an empty piece is the end.
pub fn chunk(piece: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", piece.len()).into_bytes();
    out.extend_from_slice(piece);
    out.extend_from_slice(b"\r\n");
    out
}

/// The reason phrase of the statuses the daemon and the mirrors it relays use.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_head_is_framed_and_closes_unless_kept_alive() {
        let bytes = Head::new(404).to_bytes(false);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("content-length: 0\r\n"));
        assert!(text.contains("connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        let text =
            String::from_utf8(Head::new(200).with("content-length", "5").to_bytes(true)).unwrap();
        assert_eq!(text.matches("content-length").count(), 1);
        assert!(!text.contains("connection"));
        let not_modified = String::from_utf8(Head::new(304).to_bytes(true)).unwrap();
        assert!(!not_modified.contains("content-length"), "{not_modified}");
        assert_eq!(chunk(b"abc"), b"3\r\nabc\r\n");
        assert_eq!(chunk(b""), b"0\r\n\r\n");
    }
}
