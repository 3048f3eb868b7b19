//! Arch integration files: man pages, help, pacman.conf.example, systemd unit, PKGBUILD,
//! completions, and the try-lan walkthrough the README sends new users to.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use pacserve_fetch::client::args::FetchArgs;
use pacserve_fetch::daemon::args::DaemonArgs;

use crate::util::{fetch_bin, is_root, require, require_tools, run, tempdir};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Long options a clap command accepts (help and version included).
fn long_options(command: clap::Command) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    names.extend(["help".to_owned(), "version".to_owned()]);
    names
}

/// Long options a man page documents: every `\-\-name` in the troff source.
fn documented_options(troff: &str) -> BTreeSet<String> {
    troff
        .split("\\-\\-")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '\\' || *c == '-')
                .collect::<String>()
        })
        .map(|name| name.replace("\\-", "-").trim_end_matches('\\').to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn man_pages_document_exactly_the_options_help_shows() {
    for (page, options) in [
        ("man/pacserve-fetch.1", long_options(FetchArgs::command())),
        ("man/pacserved.8", long_options(DaemonArgs::command())),
    ] {
        let troff = read(page);
        let options_section = troff
            .split(".SH OPTIONS")
            .nth(1)
            .and_then(|rest| rest.split("\n.SH ").next())
            .unwrap_or_else(|| panic!("{page} has no OPTIONS section"));
        let documented = documented_options(options_section);
        let missing: Vec<_> = options.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&options).collect();
        assert!(missing.is_empty(), "{page} lacks {missing:?}");
        assert!(
            unknown.is_empty(),
            "{page} documents options that do not exist: {unknown:?}"
        );
    }
    // And the real --help output names them all too.
    let help = run(Command::new(fetch_bin()).arg("--help"));
    let text = String::from_utf8_lossy(&help.stdout);
    for option in long_options(FetchArgs::command()) {
        assert!(
            text.contains(&format!("--{option}")),
            "--help lacks --{option}"
        );
    }
}

#[test]
fn man_pages_render_without_warnings() {
    if !require_tools(&["man", "groff"]) {
        return;
    }
    for page in ["man/pacserve-fetch.1", "man/pacserved.8", "man/pacsrv.1"] {
        let out = run(Command::new("man")
            .args(["--warnings=w", "-l", "-Tutf8"])
            .arg(Path::new(ROOT).join(page))
            .env("MANWIDTH", "80"));
        assert!(out.status.success(), "{page}");
        assert!(out.stdout.len() > 1000, "{page} rendered");
        assert!(
            out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn pacman_conf_accepts_the_example() {
    if !require_tools(&["pacman-conf"]) {
        return;
    }
    let dir = tempdir();
    let mirrorlist = dir.path().join("mirrorlist");
    fs::write(
        &mirrorlist,
        "Server = https://mirror.invalid/$repo/os/$arch\n",
    )
    .unwrap();
    let conf = read("pacman.conf.example")
        .replace("/etc/pacman.d/mirrorlist", mirrorlist.to_str().unwrap());
    let path = dir.path().join("pacman.conf");
    fs::write(&path, conf).unwrap();

    let out = run(Command::new("pacman-conf")
        .arg("--config")
        .arg(&path)
        .arg("XferCommand"));
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "/usr/bin/pacserve-fetch '%o' '%u'"
    );
    let repos = run(Command::new("pacman-conf")
        .arg("--config")
        .arg(&path)
        .arg("--repo-list"));
    assert_eq!(
        String::from_utf8_lossy(&repos.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["core", "extra"]
    );
}

#[test]
fn the_systemd_unit_verifies() {
    if !require_tools(&["systemd-analyze"]) {
        return;
    }
    let dir = tempdir();
    // verify checks that ExecStart exists and that Documentation= man pages resolve.
    let unit = read("contrib/pacserved.service")
        .replace("/usr/bin/pacserved", crate::daemon::daemon_bin());
    let path = dir.path().join("pacserved.service");
    fs::write(&path, unit).unwrap();
    for (section, page) in [
        ("man1", "man/pacserve-fetch.1"),
        ("man8", "man/pacserved.8"),
    ] {
        fs::create_dir_all(dir.path().join(section)).unwrap();
        fs::copy(
            Path::new(ROOT).join(page),
            dir.path()
                .join(section)
                .join(Path::new(page).file_name().unwrap()),
        )
        .unwrap();
    }
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", dir.path()));
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = read("contrib/pacserved.service");
    for hardening in [
        "User=pacserved\n",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "LimitNOFILE=",
        "TasksMax=",
        "MemoryMax=",
    ] {
        assert!(unit.contains(hardening), "unit lacks {hardening}");
    }
    // SO_PEERCRED inside a private user namespace says 65534 for nearly every caller, and the
    // agent's per-uid limits would lump all users together (issue 18, finding 8).
    assert!(
        !unit.lines().any(|l| l.trim() == "PrivateUsers=yes"),
        "PrivateUsers=yes hides callers' uids from the agent"
    );
    // The user the unit runs as is the one clients trust on the agent socket.
    let sysusers = read("contrib/pacserved.sysusers");
    let user = sysusers
        .lines()
        .find(|l| l.starts_with("u "))
        .and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(user, Some(pacserve_fetch::protocol::agent::DAEMON_USER));
}

#[test]
fn completions_are_valid_scripts_for_each_shell() {
    let bins = [fetch_bin(), crate::daemon::daemon_bin()];
    for (shell, checker) in [("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")] {
        if !require_tools(&[checker]) {
            return;
        }
        for bin in bins {
            let out = run(Command::new(bin).args(["--completions", shell]));
            assert!(out.status.success());
            let script = tempdir();
            let file = script.path().join("completion");
            fs::write(&file, &out.stdout).unwrap();
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("interface"),
                "{shell} completion of {bin} names its options"
            );
            let check = run(Command::new(checker).arg("-n").arg(&file));
            assert!(
                check.status.success(),
                "{shell} rejects the completion of {bin}"
            );
        }
    }
}

#[test]
fn pkgbuild_package_installs_everything() {
    if !require_tools(&["bash"]) {
        return;
    }
    // Run the PKGBUILD's package() against the binaries this test run built.
    let target = tempdir();
    let release = target.path().join("release");
    fs::create_dir(&release).unwrap();
    let debug_dir = Path::new(fetch_bin()).parent().unwrap();
    for bin in ["pacserve-fetch", "pacserved", "pacsrv"] {
        std::os::unix::fs::symlink(debug_dir.join(bin), release.join(bin)).unwrap();
    }
    let pkgdir = tempdir();
    let script = format!(
        "set -e; startdir='{ROOT}/contrib'; pkgdir='{}'; source '{ROOT}/contrib/PKGBUILD'; package",
        pkgdir.path().display()
    );
    let out = run(Command::new("bash")
        .args(["-c", &script])
        .env("CARGO_TARGET_DIR", target.path()));
    assert!(out.status.success());
    for file in [
        "usr/bin/pacserve-fetch",
        "usr/bin/pacserved",
        "usr/bin/pacsrv",
        "usr/share/man/man1/pacserve-fetch.1",
        "usr/share/man/man1/pacsrv.1",
        "usr/share/man/man8/pacserved.8",
        "usr/lib/systemd/system/pacserved.service",
        "usr/lib/sysusers.d/pacserved.conf",
        "etc/pacserve/pacserved.conf",
        "etc/pacserve/pacserve-fetch.conf",
        "etc/pacman.d/pacserve",
        "usr/share/libalpm/hooks/pacserve-download-dirs.hook",
        "usr/lib/firewalld/services/pacserve.xml",
        "etc/ufw/applications.d/pacserve",
        "usr/share/pacserve/pacserve.nft",
        "usr/share/licenses/pacserve-fetch/LICENSE",
        "usr/share/bash-completion/completions/pacserve-fetch",
        "usr/share/zsh/site-functions/_pacserved",
        "usr/share/fish/vendor_completions.d/pacserve-fetch.fish",
    ] {
        let meta = fs::metadata(pkgdir.path().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(meta.len() > 0, "{file} is empty");
    }
}

/// A shipped configuration file with every commented-out `key = value` line switched on.
fn uncommented(path: &str) -> String {
    read(path)
        .lines()
        .map(|l| l.trim_start_matches('#'))
        .filter(|l| l.contains(" = "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn config_file_examples_parse() {
    let fetch: pacserve_fetch::config::FileConfig =
        toml::from_str(&uncommented("contrib/pacserve-fetch.conf")).unwrap();
    assert_eq!(fetch.peer_wait_ms, Some(100));
    let daemon: pacserve_fetch::config::DaemonFileConfig =
        toml::from_str(&uncommented("contrib/pacserved.conf")).unwrap();
    assert_eq!(daemon.http_port, Some(15678));
    assert_eq!(daemon.allow.map(|a| a.len()), Some(2));
}

#[test]
fn the_readme_walkthrough_fetches_from_the_first_host() {
    if !require(is_root(), "contrib/try-lan.sh needs root (ip netns)") {
        return;
    }
    // The binaries found where cargo put them (a target directory of links to this run's), as
    // a user's `./contrib/try-lan.sh` finds them after building; this test must not build.
    let cargo = crate::contrib::cargo_that_never_builds();
    let target = crate::contrib::fake_target_dir("debug", &["pacserve-fetch", "pacserved"]);
    let out = run(
        crate::contrib::try_script("try-lan.sh", cargo.path(), &["--no-build"])
            .env("CARGO_TARGET_DIR", target.path()),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "using {}/debug/pacserve-fetch",
            target.path().display()
        )),
        "{text}"
    );
    assert!(text.contains("identical to host1's copy"), "{text}");
    assert!(
        text.contains("GET /pkg/hello-1.0-1-x86_64.pkg.tar.zst from 10.99.0.2: 200 2000000 bytes"),
        "{text}"
    );
    // --list-peers shows the peer, not the probe behind it.
    assert!(
        text.contains("1 daemon answered") && !text.contains("probe"),
        "{text}"
    );
}

#[test]
fn the_readme_first_command_downloads_and_resumes() {
    if !require_tools(&["nginx", "bsdtar", "python3"]) {
        return;
    }
    let out = run(Command::new("bash")
        .arg(Path::new(ROOT).join("contrib/try-it.sh"))
        .env("PACSERVE_FETCH_BIN", fetch_bin()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("identical to the mirror's copy"), "{text}");
    assert!(
        text.contains("206 3") && text.contains("range=\"bytes=1000000-\""),
        "{text}"
    );
}
