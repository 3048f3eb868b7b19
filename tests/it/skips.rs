//! The prerequisite policy itself (see [`crate::util::require`]): on a machine without a tool,
//! the tests that need it skip cleanly and the run ends with a count of skips by reason; under
//! `PACSERVE_E2E=require` each fails with one MISSING line. A tool is taken away by running this
//! test binary again in a private mount namespace with `/dev/null` mounted over the tool, so
//! every use of it is seen, guarded or not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{is_root, require, require_tools, run};

/// Every file `tool` could be run as (PATH, plus the sbin directories `find_tool` looks in).
fn copies_of(tool: &str) -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut found: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Runs `tests` of this binary (exact names) on a machine without `tools`.
fn without(tools: &[&str], tests: &[&str], require_mode: bool) -> Output {
    let masks: Vec<PathBuf> = tools.iter().flat_map(|tool| copies_of(tool)).collect();
    masked(&masks, tests, require_mode)
}

/// Runs `tests` of this binary (exact names) with each of `masks` hidden: a file replaced by
/// `/dev/null`, a directory by an empty one.
fn masked(masks: &[PathBuf], tests: &[&str], require_mode: bool) -> Output {
    let script = "for t in $MASKS; do \
                  if [ -d \"$t\" ]; then mount -t tmpfs none \"$t\"; else mount --bind /dev/null \"$t\"; fi \
                  || exit 99; done; exec \"$@\"";
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "--test-threads", "2"])
        .args(tests)
        .env(
            "MASKS",
            masks
                .iter()
                .map(|p| p.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
        );
    match require_mode {
        true => cmd.env("PACSERVE_E2E", "require"),
        false => cmd.env_remove("PACSERVE_E2E"),
    };
    run(&mut cmd)
}

#[test]
fn without_ethtool_the_delayed_link_tests_skip_and_the_run_counts_them() {
    // The tests below need root, nginx and curl before they get to ethtool.
    if !require(is_root(), "a private mount namespace needs root")
        || !require_tools(&["unshare", "mount", "ip", "nginx", "curl"])
    {
        return;
    }
    let tests = [
        "lan_hosts::a_silent_lan_is_skimmed_yet_a_daemon_that_appears_is_found",
        "lan_faults::a_delayed_link_carries_a_download_intact_and_slowly",
    ];
    let out = without(&["ethtool"], &tests, false);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("test result: ok. 2 passed"), "{stdout}");
    for test in tests {
        assert!(
            stderr.contains(&format!("SKIPPED ({test}): ethtool is not installed")),
            "{stderr}"
        );
    }
    // The count at the end, with the reason and the tests.
    let summary = stderr
        .split("pacserve tests: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    assert!(
        summary.starts_with("2 tests SKIPPED") && summary.contains("2  ethtool is not installed"),
        "{summary}"
    );
    assert!(tests.iter().all(|t| summary.contains(t)), "{summary}");

    // Under require: each test fails, with one line and no panic message.
    let out = without(&["ethtool"], &tests, true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let missing: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("MISSING ("))
        .collect();
    assert_eq!(missing.len(), 2, "{stderr}");
    assert!(
        missing
            .iter()
            .all(|l| l.contains("ethtool is not installed (PACSERVE_E2E=require)")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains("pacserve tests: "),
        "no skip summary under require: {stderr}"
    );
}

#[test]
fn without_curl_and_python3_the_http_tests_skip() {
    if !require(is_root(), "a private mount namespace needs root")
        || !require_tools(&["unshare", "mount"])
    {
        return;
    }
    let tests = [
        "daemon_http::http_corners_if_range_empty_ranges_odd_names_and_the_status_page",
        "daemon_http::pipelined_requests_on_one_connection_are_answered_in_order_and_intact",
        "lan_loopback::the_daemon_serves_http_correctly_and_refuses_paths_outside_the_cache",
        "lan_loopback::malformed_and_foreign_datagrams_are_dropped_and_counted",
    ];
    let out = without(&["curl", "python3"], &tests, false);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for test in tests {
        assert!(
            stderr.contains(&format!("SKIPPED ({test}): ")),
            "{test}: {stderr}"
        );
    }
    assert!(
        stderr.contains("pacserve tests: 4 tests SKIPPED"),
        "{stderr}"
    );
}

#[test]
fn without_git_history_the_old_release_tests_skip() {
    // What those tests need before they look for the history (git itself included).
    if !require(is_root(), "a private mount namespace needs root")
        || !require_tools(&[
            "unshare",
            "mount",
            "ip",
            "nginx",
            "tc",
            "cp",
            "pacman",
            "repo-add",
            "bsdtar",
            "zstd",
            "gpg",
            "gpgconf",
            "pacman-key",
            "git",
        ])
    {
        return;
    }
    // A release tarball: the source without its .git (a directory in a clone, a file in a
    // worktree).
    let git = Path::new(env!("CARGO_MANIFEST_DIR")).join(".git");
    let tests = [
        "lan_versions::every_release_installs_from_every_other_on_one_lan",
        "lan_versions::two_current_daemons_and_a_version_2_daemon_share_the_files_they_fetch_at_once",
    ];
    let reason = "has none (a release tarball?)";
    let out = masked(std::slice::from_ref(&git), &tests, false);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for test in tests {
        assert!(
            stderr.contains(&format!("SKIPPED ({test}): older releases are built from")),
            "{test}: {stderr}"
        );
    }
    assert!(stderr.contains(reason), "{stderr}");
    assert!(
        stderr.contains("pacserve tests: 2 tests SKIPPED"),
        "{stderr}"
    );

    let out = masked(std::slice::from_ref(&git), &tests, true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let missing: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("MISSING ("))
        .collect();
    assert_eq!(missing.len(), 2, "{stderr}");
    assert!(missing.iter().all(|l| l.contains(reason)), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
