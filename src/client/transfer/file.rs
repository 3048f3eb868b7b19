//! `file://` sources: a local repository (`Server = file:///srv/repo`), common on build hosts.
//!
//! The same rules as HTTP in [`crate::client::transfer`], with a seek in place of a Range request: a
//! resumable partial continues where it stops if it is not longer than the source, otherwise the
//! copy starts over; the output takes the source's mtime.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use crate::client::error::Error;
use crate::client::output::Output;
use crate::client::terminal::progress::Progress;
use crate::client::transfer::{Delivered, Want, name_of, pump};

/// Copies the file a `file://` URL names into `out`.
pub fn fetch(
    url: &str,
    out: &mut Output,
    want: &Want,
    progress: &mut Progress,
) -> Result<Delivered, Error> {
    let path = file_url_path(url)?;
    let read_err = |source| Error::ReadSource {
        path: path.clone(),
        source,
    };
    let mut source = File::open(&path).map_err(read_err)?;
    let meta = source.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(Error::ReadSource {
            path,
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    let size = meta.len();
    let start = match out.len() {
        have if want.resume && have <= size => have,
        _ => 0,
    };
    source.seek(SeekFrom::Start(start)).map_err(read_err)?;
    out.begin_at(start)?;
    progress.start(name_of(out.path()), "local file", Some(size), start);
    let received = pump(&mut source, out, progress, read_err)?;
    progress.finish();
    if start + received != size {
        return Err(Error::Truncated {
            url: url.into(),
            received,
            expected: size - start,
        });
    }
    out.finish(meta.modified().ok())?;
    Ok(Delivered::Body {
        from: start,
        received,
    })
}

/// The local path of a `file://` URL: `file:///p` or `file://localhost/p`, percent-escapes decoded.
pub fn file_url_path(url: &str) -> Result<PathBuf, Error> {
    let bad = |reason: &str| Error::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .get("file://".len()..)
        .ok_or_else(|| bad("not a file:// URL"))?;
    let path = match rest.find('/') {
        Some(0) => rest,
        Some(i) if rest[..i].eq_ignore_ascii_case("localhost") => &rest[i..],
        _ => return Err(bad("file:// URLs must name a local absolute path")),
    };
    let decoded = percent_decode(path).ok_or_else(|| bad("invalid percent-escape"))?;
    Ok(PathBuf::from(OsString::from_vec(decoded)))
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn file_urls() {
        assert_eq!(
            file_url_path("file:///srv/repo/a.db").unwrap(),
            Path::new("/srv/repo/a.db")
        );
        assert_eq!(
            file_url_path("file://localhost/srv/a%20b").unwrap(),
            Path::new("/srv/a b")
        );
        assert!(file_url_path("file://otherhost/srv/a").is_err());
        assert!(file_url_path("file://relative").is_err());
        assert!(file_url_path("file:///bad%zz").is_err());
    }
}
