//! The status page in a real browser (issue 23): headless Chromium renders pacserved's HTML
//! page, its screenshot is kept as `target/status-page.png` (a CI artifact) and read back to
//! see that the charts drew bars in the served and mirror colours, and the rendered DOM must show
//! the numbers the daemon counted (`/metrics`). curl still gets the plain text, and the HTML
//! loads nothing from anywhere else.

use std::fs;
use std::path::PathBuf;

use crate::daemon::{Daemon, conf_naming};
use crate::netns::Host;
use crate::nginx::Nginx;
use crate::png;
use crate::util::{self, fetch_bin, random_bytes, require_tools, run, stderr, tempdir};

/// The charts' colours (`daemon::statuspage`): served to peers, from the mirror.
const SERVED: [u8; 3] = [0x3b, 0x7d, 0xd8];
const MIRROR: [u8; 3] = [0xe6, 0x55, 0x0d];

/// Where the screenshot is kept: the target directory this test binary was built in.
fn screenshot_path() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/debug/deps/it-…
    let target = exe.ancestors().nth(3).expect("a target directory");
    target.join("status-page.png")
}

#[test]
fn chromium_renders_the_status_page_with_its_charts_and_the_daemons_numbers() {
    if !require_tools(&["chromium", "curl"]) {
        return;
    }
    let Some(host) = Host::loopback() else { return };
    let root = tempdir();
    let name = "chart-1-1-any.pkg.tar.zst";
    fs::write(root.path().join(name), random_bytes(900_000, 23)).unwrap();
    let Some(mirror) = Nginx::mirror_on(&host, root.path()) else {
        return;
    };
    // The daemon shares a cache holding a package, and may reach the loopback mirror.
    let dir = tempdir();
    let cache = dir.path().join("cache");
    fs::create_dir(&cache).unwrap();
    fs::write(
        cache.join("held-1-1-any.pkg.tar.zst"),
        random_bytes(300_000, 5),
    )
    .unwrap();
    let conf = conf_naming(dir.path(), &["http://127.0.0.1:8080".into()]);
    let daemon = Daemon::start(
        &host,
        &cache,
        &["--http-port", "0", "--interface", "lo", "--pacman-conf"]
            .into_iter()
            .chain([conf.to_str().unwrap(), "--prefetch", "0"])
            .collect::<Vec<_>>(),
    );
    let base = format!("http://127.0.0.1:{}", daemon.http_port);
    // Something served to a "peer", and something fetched from the mirror through the agent.
    let served = run(host.command("curl").args([
        "-sf",
        "-o",
        "/dev/null",
        &format!("{base}/pkg/held-1-1-any.pkg.tar.zst"),
    ]));
    assert!(served.status.success());
    let part = dir.path().join(format!("{name}.part"));
    let fetched = run(host
        .command(fetch_bin())
        .env("TMPDIR", util::lan_memory_dir())
        .args(util::MIRROR_ONLY)
        .arg(&part)
        .arg(mirror.url(name)));
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    let bytes_served = daemon.metric(&host, "pacserved_served_bytes_total", 300_000.0);
    let from_mirror = daemon.metric(&host, "pacserved_agent_mirror_bytes_total", 900_000.0);
    assert_eq!((bytes_served, from_mirror), (300_000.0, 900_000.0));

    // curl as scripts use it: the plain text.
    let plain = run(host.command("curl").args(["-s", &base]));
    let plain = String::from_utf8_lossy(&plain.stdout);
    assert!(plain.starts_with("pacserved "), "{plain}");
    assert!(
        plain.contains("package bytes since ") && plain.contains("900000 from the mirror"),
        "{plain}"
    );
    // A browser's Accept: one document, nothing loaded from elsewhere.
    let html = run(host.command("curl").args([
        "-s",
        "-H",
        "Accept: text/html,application/xhtml+xml,*/*;q=0.8",
        &base,
    ]));
    let html = String::from_utf8_lossy(&html.stdout);
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    for external in [
        "src=", "href=", "url(", "@import", "<script", "<link", "http:", "https:",
    ] {
        assert!(!html.contains(external), "{external} in the page: {html}");
    }

    // Chromium, in the daemon's namespace, with a profile of its own.
    let profile = tempdir();
    let chromium = |extra: &[&str]| {
        let mut cmd = host.command("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--window-size=1000,1700"])
        .args(extra)
        .arg(&base);
        run(&mut cmd)
    };
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for counted in [
        format!("<td class=\"n\">{bytes_served}</td>"),
        format!("<td class=\"n\">{from_mirror}</td>"),
        "<svg id=\"day\"".to_owned(),
        "<svg id=\"week\"".to_owned(),
    ] {
        assert!(
            dom.contains(&counted),
            "{counted} in the rendered page: {dom}"
        );
    }
    let shot = screenshot_path();
    let _ = fs::remove_file(&shot);
    let taken = chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(taken.status.success(), "{}", stderr(&taken));
    let image = png::decode(&fs::read(&shot).expect("the screenshot")).expect("a PNG");
    assert_eq!((image.width, image.height), (1000, 1700));
    eprintln!("status page screenshot: {}", shot.display());
    // Both charts drew a served bar and a mirror bar for this hour: solid areas, not specks.
    for (what, colour) in [("served", SERVED), ("mirror", MIRROR)] {
        let pixels = image.count(colour, 2);
        assert!(
            pixels > 400,
            "{pixels} pixels of the {what} colour in {}",
            shot.display()
        );
    }
}
