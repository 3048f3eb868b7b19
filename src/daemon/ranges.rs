//! The two corners of Range that tower-http's `ServeFile` gets wrong, fixed around it.
//!
//! - `If-Range` (RFC 9110 §13.1.5): a range is served only if the validator still matches the
//!   file, else the whole file with 200. ServeFile ignores the header and answers 206, so a
//!   client resuming a file that changed under the same name would glue two files together.
//!   [`if_range_fails`] compares the validator with the ETag and Last-Modified ServeFile itself
//!   sends, so the two can never disagree.
//! - A range of an empty file is never satisfiable (§14.1.2): 416 with `bytes */0`, where
//!   ServeFile answered `206` with an impossible `Content-Range: bytes 0-0/0`.
//!
//! [`serve_file`] is ServeFile with the first fix applied; the caller applies the second.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

/// Whether the request's `If-Range` does not match the representation `response` describes,
/// so its Range must be ignored. False without `If-Range`.
pub fn if_range_fails(request: &HeaderMap, response: &HeaderMap) -> bool {
    let Some(validator) = request.get(header::IF_RANGE) else {
        return false;
    };
    let Ok(validator) = validator.to_str() else {
        return true;
    };
    let validator = validator.trim();
    if validator.starts_with("W/") {
        // A weak tag never matches for If-Range: a strong comparison is required.
        return true;
    }
    if validator.starts_with('"') {
        return response.get(header::ETAG).and_then(|v| v.to_str().ok()) != Some(validator);
    }
    // A date matches only if it is exactly the Last-Modified sent.
    response
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|last| last != validator)
}

/// The request's Range header as sent, for the answer and the log.
pub fn range_header(request: &HeaderMap) -> Option<String> {
    request
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The answer to a Range request on an empty file: 416, nothing in it is satisfiable.
pub fn empty_file_range() -> Response {
    (
        StatusCode::RANGE_NOT_SATISFIABLE,
        [(header::CONTENT_RANGE, HeaderValue::from_static("bytes */0"))],
        Body::empty(),
    )
        .into_response()
}

/// The file through tower-http, with `If-Range` honoured ([`ranges::if_range_fails`]): a
/// range whose validator no longer matches is answered with the whole file.
pub async fn serve_file(path: &std::path::Path, request: Request, chunk: usize) -> Response {
    let file = ServeFile::new(path).with_buf_chunk_size(chunk);
    let retry = request.headers().contains_key(header::IF_RANGE).then(|| {
        let mut whole = Request::new(Body::empty());
        *whole.method_mut() = request.method().clone();
        *whole.uri_mut() = request.uri().clone();
        *whole.headers_mut() = request.headers().clone();
        whole.headers_mut().remove(header::RANGE);
        whole
    });
    let response = match file.clone().oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    };
    match retry {
        Some(whole)
            if response.status() == StatusCode::PARTIAL_CONTENT
                // `whole` carries the request's If-Range still (only Range is gone).
                && if_range_fails(whole.headers(), response.headers()) =>
        {
            match file.oneshot(whole).await {
                Ok(response) => response.map(Body::new),
                Err(never) => match never {},
            }
        }
        _ => response,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header map from pairs, for tests here and in [`crate::daemon::sendfile`].
    pub(crate) fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn if_range_matches_only_the_exact_strong_validator() {
        let date = "Wed, 01 Jan 2025 00:00:00 GMT";
        let file = headers(&[(header::ETAG, "\"abc\""), (header::LAST_MODIFIED, date)]);
        let asks = |v: &str| if_range_fails(&headers(&[(header::IF_RANGE, v)]), &file);
        assert!(!if_range_fails(&HeaderMap::new(), &file), "no If-Range");
        assert!(!asks("\"abc\""));
        assert!(!asks(date));
        assert!(asks("\"abd\""));
        assert!(asks("W/\"abc\""));
        assert!(asks("Thu, 02 Jan 2025 00:00:00 GMT"));
        assert!(asks("garbage"));
        assert!(
            if_range_fails(&headers(&[(header::IF_RANGE, date)]), &HeaderMap::new()),
            "nothing to compare with"
        );
    }
}
