//! pacserve-fetch against servers that break the HTTP contract. The rule in every case: exit 0
//! only with the complete file; otherwise a one-line error and an output that is still a prefix
//! of the real file, so the next attempt can resume.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::faultserver::{Behaviour, FaultServer};
use crate::nginx::Nginx;
use crate::util::{fetch_cmd, random_bytes, run, stderr, tempdir};

const PKG: &str = "faulty-2.0-1-any.pkg.tar.zst";
const SIZE: usize = 400_000;

fn fetch(url: &str, out: &Path, extra: &[&str]) -> Output {
    run(fetch_cmd().args(extra).arg(out).arg(url))
}

fn assert_prefix(out: &Path, content: &[u8]) {
    let got = fs::read(out).unwrap_or_default();
    assert!(
        got.len() <= content.len() && got == content[..got.len()],
        "output is not a prefix"
    );
}

#[test]
fn a_server_that_ignores_range_makes_us_start_over() {
    let content = random_bytes(SIZE, 11);
    let server = FaultServer::start(content.clone(), Behaviour::IgnoreRange);
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));
    fs::write(&out, &content[..1000]).unwrap();

    assert!(fetch(&server.url(PKG), &out, &[]).status.success());

    assert_eq!(fs::read(&out).unwrap(), content);
    assert!(server.requests()[0].contains("bytes=1000-"));
}

#[test]
fn a_lying_content_range_is_refused_and_the_partial_kept() {
    let content = random_bytes(SIZE, 12);
    let server = FaultServer::start(content.clone(), Behaviour::LieInContentRange { skew: 10 });
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));
    fs::write(&out, &content[..5000]).unwrap();

    let result = fetch(&server.url(PKG), &out, &[]);

    assert_eq!(result.status.code(), Some(1));
    assert!(
        stderr(&result).contains("Content-Range"),
        "{}",
        stderr(&result)
    );
    assert_eq!(
        fs::read(&out).unwrap(),
        &content[..5000],
        "partial untouched"
    );
}

#[test]
fn a_connection_closed_mid_body_fails_then_resumes_from_a_good_mirror() {
    let content = random_bytes(SIZE, 13);
    let broken = FaultServer::start(content.clone(), Behaviour::CloseAfter { after: 150_000 });
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));

    let result = fetch(&broken.url(PKG), &out, &[]);
    assert_eq!(result.status.code(), Some(1));
    assert!(stderr(&result).contains("closed"), "{}", stderr(&result));
    assert_eq!(fs::metadata(&out).unwrap().len(), 150_000);
    assert_prefix(&out, &content);

    // pacman tries the next server with the same %o.
    let root = tempdir();
    fs::write(root.path().join(PKG), &content).unwrap();
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    assert!(fetch(&mirror.url(PKG), &out, &[]).status.success());
    assert_eq!(fs::read(&out).unwrap(), content);
    assert_eq!(
        mirror.requests_for(PKG)[0].body_bytes,
        (SIZE - 150_000) as u64
    );
}

#[test]
fn server_errors_are_reported_with_their_status() {
    for code in [500, 403, 503] {
        let server = FaultServer::start(Vec::new(), Behaviour::Status(code));
        let dir = tempdir();
        let out = dir.path().join(format!("{PKG}.part"));
        let result = fetch(&server.url(PKG), &out, &[]);
        assert_eq!(result.status.code(), Some(1));
        assert!(
            stderr(&result).contains(&code.to_string()),
            "{}",
            stderr(&result)
        );
        assert!(!out.exists());
    }
}

#[test]
fn a_stalled_server_times_out_and_keeps_what_arrived() {
    let content = random_bytes(SIZE, 14);
    let server = FaultServer::start(content.clone(), Behaviour::StallAfter { after: 64_000 });
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));

    let result = fetch(&server.url(PKG), &out, &["--stall-timeout", "0.5"]);

    assert_eq!(result.status.code(), Some(1));
    assert!(
        stderr(&result).contains("timed out waiting for data"),
        "{}",
        stderr(&result)
    );
    assert_eq!(fs::metadata(&out).unwrap().len(), 64_000);
    assert_prefix(&out, &content);
}

#[test]
fn a_server_that_never_answers_times_out() {
    let server = FaultServer::start(Vec::new(), Behaviour::Silent);
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));

    let result = fetch(&server.url(PKG), &out, &["--stall-timeout", "0.5"]);

    assert_eq!(result.status.code(), Some(1));
    assert!(stderr(&result).contains("timed out"), "{}", stderr(&result));
    assert!(!out.exists());
}

#[test]
fn an_encoded_body_is_refused() {
    let content = random_bytes(SIZE, 15);
    let server = FaultServer::start(content, Behaviour::Gzip);
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));

    let result = fetch(&server.url(PKG), &out, &[]);

    assert_eq!(result.status.code(), Some(1));
    assert!(stderr(&result).contains("gzip"), "{}", stderr(&result));
    assert!(!out.exists());
}

#[test]
fn redirects_are_followed_and_keep_the_range() {
    let content = random_bytes(SIZE, 16);
    let root = tempdir();
    fs::write(root.path().join(PKG), &content).unwrap();
    let Some(mirror) = Nginx::start(root.path()) else {
        return;
    };
    let redirector = FaultServer::start(Vec::new(), Behaviour::RedirectTo(mirror.url(PKG)));
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));
    fs::write(&out, &content[..20_000]).unwrap();

    assert!(fetch(&redirector.url(PKG), &out, &[]).status.success());

    assert_eq!(fs::read(&out).unwrap(), content);
    let log = mirror.requests_for(PKG);
    assert_eq!(
        (log[0].status, log[0].range.as_str()),
        (206, "bytes=20000-")
    );
}

#[test]
fn mirrors_are_reached_through_the_proxy_variables() {
    let content = random_bytes(SIZE, 17);
    let proxy = FaultServer::start(content.clone(), Behaviour::Good);
    let dir = tempdir();
    let out = dir.path().join(format!("{PKG}.part"));
    // The mirror's name does not resolve: only a proxy can reach it.
    let url = format!("http://mirror.invalid/core/{PKG}");

    let result = run(fetch_cmd()
        .env("http_proxy", format!("http://127.0.0.1:{}", proxy.port))
        .arg(&out)
        .arg(&url));

    assert!(result.status.success());
    assert_eq!(fs::read(&out).unwrap(), content);
    // ureq tunnels through the proxy (CONNECT) or sends the absolute URL; either names the mirror.
    let first = &proxy.requests()[0];
    assert!(
        first.starts_with("CONNECT mirror.invalid:80 ")
            || first.starts_with(&format!("GET {url} ")),
        "{first}"
    );
}
