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

/// `a/{b,c}/d{e,f}` → `a/b/de`, `a/b/df`, `a/c/de`, `a/c/df`, as the shell expands it.
fn expand_braces(pattern: &str) -> Vec<String> {
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_owned()];
    };
    let close = open
        + pattern[open..]
            .find('}')
            .expect("unclosed brace in the README's list");
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    pattern[open + 1..close]
        .split(',')
        .flat_map(|choice| expand_braces(&format!("{head}{choice}{tail}")))
        .collect()
}

/// The files the README promises the package installs: its Install section's list, braces
/// expanded, without the leading `/` (as `bsdtar -t` names them).
fn readme_package_files() -> BTreeSet<String> {
    let readme = read("README.md");
    let list = readme
        .split("The package installs:\n\n```text\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README's Install section lists what the package installs");
    list.lines()
        .filter_map(|line| line.split("  ").next())
        .flat_map(|path| expand_braces(path.trim()))
        .map(|path| path.trim_start_matches('/').to_owned())
        .collect()
}

/// Completes `line` (its last word) in `shell` with pacsrv's shipped completion loaded.
fn complete_pacsrv(shell: &str, line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let out = match shell {
        // Not --no-config: it also hides the completions fish ships (pacman's among them);
        // empty XDG directories keep the user's own configuration out instead.
        "fish" => run(Command::new("fish")
            .env("XDG_CONFIG_HOME", tempdir().path())
            .env("XDG_DATA_HOME", tempdir().path())
            .args([
                "-c",
                &format!("source '{ROOT}/contrib/completions/pacsrv.fish'; complete -C '{line}'"),
            ])),
        _ => run(Command::new("bash").args([
            "--norc",
            "-c",
            &format!(
                "source /usr/share/bash-completion/bash_completion; \
                 source '{ROOT}/contrib/completions/pacsrv.bash'; \
                 COMP_WORDS=({line}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
                 COMP_POINT=${{#COMP_LINE}}; _pacsrv pacsrv '{cur}' '{prev}' 2>/dev/null; \
                 printf '%s\n' \"${{COMPREPLY[@]}}\"",
                cword = words.len() - 1,
                cur = words[words.len() - 1],
                prev = words[words.len() - 2],
            ),
        ])),
    };
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pacsrv_completions_offer_its_own_options_and_pacmans() {
    if !require_tools(&["bash", "zsh", "fish", "pacman"])
        || !require(
            Path::new("/usr/share/bash-completion/bash_completion").is_file(),
            "bash-completion is not installed",
        )
    {
        return;
    }
    for shell in ["bash", "fish"] {
        let own = complete_pacsrv(shell, "pacsrv --inc");
        assert!(own.contains("--include-conf"), "{shell}: {own}");
        let after = complete_pacsrv(shell, "pacsrv --include-conf --in");
        assert!(after.contains("--in-place"), "{shell}: {after}");
        // pacman's own completion does the rest.
        let pacmans = complete_pacsrv(shell, "pacsrv --sy");
        assert!(pacmans.contains("--sync"), "{shell}: {pacmans}");
    }
    // zsh's completion system cannot run outside an interactive shell: its syntax, at least.
    let zsh = run(Command::new("zsh")
        .arg("-n")
        .arg(Path::new(ROOT).join("contrib/completions/_pacsrv")));
    assert!(zsh.status.success());
}

#[test]
fn pkgbuild_package_installs_what_the_readme_lists() {
    if !require_tools(&["bash"]) {
        return;
    }
    // Run the PKGBUILD's package() against the binaries this test run built, in a srcdir whose
    // source tree is this checkout.
    let target =
        crate::contrib::fake_target_dir("release", &["pacserve-fetch", "pacserved", "pacsrv"]);
    let (srcdir, pkgdir) = (tempdir(), tempdir());
    let script = format!(
        "set -e; pkgdir='{}'; source '{ROOT}/contrib/PKGBUILD'; \
         ln -s '{ROOT}' \"$pkgname-$pkgver\"; package",
        pkgdir.path().display()
    );
    let out = run(Command::new("bash")
        .args(["-c", &script])
        .current_dir(srcdir.path())
        .env("CARGO_TARGET_DIR", target.path()));
    assert!(out.status.success());
    let installed: BTreeSet<String> = walk(pkgdir.path())
        .into_iter()
        .map(|file| {
            let meta = fs::metadata(pkgdir.path().join(&file)).unwrap();
            assert!(meta.len() > 0, "{file} is empty");
            file
        })
        .collect();
    // makepkg compresses man pages after package() (see the makepkg test for the real thing).
    let promised: BTreeSet<String> = readme_package_files()
        .into_iter()
        .map(|f| match f.starts_with("usr/share/man/") {
            true => f.trim_end_matches(".gz").to_owned(),
            false => f,
        })
        .collect();
    assert_eq!(
        installed, promised,
        "package() installs what the README lists"
    );
}

/// Every file under `dir`, relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(at) = todo.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap();
                files.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    files
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

/// The package each shared library the binaries link comes from on Arch.
const LIBRARY_PACKAGES: [(&str, &str); 9] = [
    ("libc.so.6", "glibc"),
    ("libm.so.6", "glibc"),
    ("ld-linux-x86-64.so.2", "glibc"),
    ("ld-linux-aarch64.so.1", "glibc"),
    ("libgcc_s.so.1", "gcc-libs"),
    ("liblzma.so.5", "xz"),
    ("libzstd.so.1", "zstd"),
    ("libz.so.1", "zlib"),
    ("libcrypto.so.3", "openssl"),
];

/// `makepkg` as an AUR user would run it, in `start` (the PKGBUILD and its source tarball), with
/// `work` for what persists between runs (builds, crates): as this user when not root, else as a
/// user made for it (makepkg refuses root), who is lent this run's Rust toolchain.
fn makepkg(start: &Path, work: &Path) -> std::process::Output {
    let dirs = [
        ("BUILDDIR", work.join("build")),
        ("PKGDEST", start.to_owned()),
        ("SRCDEST", start.to_owned()),
        ("SRCPKGDEST", start.to_owned()),
    ];
    // --nodeps: Debian has none of Arch's packages. --nocheck: check() compiles the whole test
    // suite a second time, in debug, to run the tests this very run runs.
    let args = ["--nodeps", "--nocheck", "--force"];
    if !is_root() {
        let mut cmd = Command::new("makepkg");
        cmd.args(args).current_dir(start).envs(dirs);
        for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR", "PACSERVE_E2E"] {
            cmd.env_remove(var);
        }
        return run(&mut cmd);
    }
    let (uid, gid) = crate::util::local_user("pacserve-build");
    let home = work.join("home");
    fs::create_dir_all(&home).unwrap();
    for dir in [work, start] {
        let chown = run(Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}")])
            .arg(dir));
        assert!(chown.status.success());
    }
    // The toolchain of this run may sit where the new user cannot reach (rustup under /root):
    // mounted on a path it can, in a mount namespace of this command alone.
    let toolchain = Path::new(env!("CARGO"))
        .parent()
        .and_then(Path::parent)
        .expect("cargo lives in <toolchain>/bin");
    let lent = work.join("toolchain");
    fs::create_dir_all(&lent).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount --bind \"$TOOLCHAIN\" \"$LENT\" && exec setpriv --reuid=\"$BUILD_UID\" \
             --regid=\"$BUILD_GID\" --clear-groups env -i HOME=\"$BUILD_HOME\" LANG=C.UTF-8 \
             PATH=\"$LENT/bin:/usr/local/bin:/usr/bin:/bin\" CARGO_HOME=\"$BUILD_HOME/.cargo\" \
             BUILDDIR=\"$BUILDDIR\" PKGDEST=\"$PKGDEST\" SRCDEST=\"$SRCDEST\" \
             SRCPKGDEST=\"$SRCPKGDEST\" makepkg \"$@\"",
        )
        .arg("sh")
        .args(args)
        .current_dir(start)
        .envs(dirs)
        .env("TOOLCHAIN", toolchain)
        .env("LENT", &lent)
        .env("BUILD_UID", uid.to_string())
        .env("BUILD_GID", gid.to_string())
        .env("BUILD_HOME", &home);
    run(&mut cmd)
}

#[test]
fn makepkg_builds_the_package_the_readme_describes() {
    if !require_tools(&["makepkg", "git", "bsdtar", "fakeroot", "objdump"])
        // Inside makepkg's own check() the source is the release tarball, with nothing to archive.
        || !require(
            Path::new(ROOT).join(".git").exists(),
            "the source is not a git checkout (git archive needs one)",
        )
        || (is_root() && !require_tools(&["unshare", "mount", "setpriv", "useradd", "chown"]))
    {
        return;
    }
    // The release tarball as `git archive` makes it (the GitHub archive of a tag is one): the
    // committed tree, with uncommitted changes to tracked files when there are any.
    let start = tempdir();
    let git = |args: &[&str]| {
        let out = run(Command::new("git").arg("-C").arg(ROOT).args(args));
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let stash = git(&["stash", "create"]);
    let tree = if stash.is_empty() { "HEAD" } else { &stash };
    let named = run(Command::new("bash").args([
        "-c",
        &format!("source '{ROOT}/contrib/PKGBUILD' && echo \"$pkgname-$pkgver\""),
    ]));
    let name_version = String::from_utf8_lossy(&named.stdout).trim().to_owned();
    let tarball = start.path().join(format!("{name_version}.tar.gz"));
    git(&[
        "archive",
        &format!("--prefix={name_version}/"),
        "-o",
        tarball.to_str().unwrap(),
        tree,
    ]);
    // The sum a release would carry (updpkgsums), so makepkg checks the tarball it uses.
    use sha2::{Digest, Sha256};
    let sum: String = Sha256::digest(fs::read(&tarball).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let pkgbuild = read("contrib/PKGBUILD");
    assert!(pkgbuild.contains("\nsha256sums=('SKIP')\n"));
    fs::write(
        start.path().join("PKGBUILD"),
        pkgbuild.replace(
            "\nsha256sums=('SKIP')\n",
            &format!("\nsha256sums=('{sum}')\n"),
        ),
    )
    .unwrap();

    // Builds and crates persist, so only the first run costs minutes. git archive gives every
    // file the commit's time, which may be older than the last build: the crate's own
    // fingerprints go, so it is always rebuilt from this tarball.
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("makepkg");
    let release = work.join(format!(
        "build/pacserve-fetch/src/{name_version}/target/release/.fingerprint"
    ));
    for stale in fs::read_dir(&release).into_iter().flatten().flatten() {
        if stale
            .file_name()
            .to_string_lossy()
            .starts_with("pacserve-fetch-")
        {
            fs::remove_dir_all(stale.path()).unwrap();
        }
    }
    // makepkg extracts over what the last run left, so a file this tarball no longer has (a
    // module moved since) would stay and be compiled too: only the build cache is kept.
    let extracted = work.join(format!("build/pacserve-fetch/src/{name_version}"));
    for entry in fs::read_dir(&extracted).into_iter().flatten().flatten() {
        if entry.file_name() == "target" {
            continue;
        }
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        assert!(removed.is_ok(), "cannot remove {}", path.display());
    }
    let built = makepkg(start.path(), &work);
    assert!(built.status.success(), "makepkg failed");

    let package = fs::read_dir(start.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".pkg.tar."))
        .expect("makepkg made a package");
    let listing = run(Command::new("bsdtar").arg("-tf").arg(&package));
    let files: BTreeSet<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|f| !f.ends_with('/') && !f.starts_with('.'))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        files,
        readme_package_files(),
        "the package holds what the README lists"
    );

    // Every library the binaries link comes from a package in depends; gnupg and pacman are run.
    let pkginfo = run(Command::new("bsdtar")
        .args(["-xOf"])
        .arg(&package)
        .arg(".PKGINFO"));
    let pkginfo = String::from_utf8_lossy(&pkginfo.stdout).into_owned();
    let depends: BTreeSet<&str> = pkginfo
        .lines()
        .filter_map(|l| l.strip_prefix("depend = "))
        .collect();
    assert!(
        pkginfo.contains("\nurl = https://github.com/pacserve/pacserve-fetch\n"),
        "{pkginfo}"
    );
    let unpacked = tempdir();
    let extract = run(Command::new("bsdtar")
        .arg("-xf")
        .arg(&package)
        .arg("-C")
        .arg(unpacked.path())
        .arg("usr/bin"));
    assert!(extract.status.success());
    for bin in ["pacserve-fetch", "pacserved", "pacsrv"] {
        let dynamic = run(Command::new("objdump")
            .arg("-p")
            .arg(unpacked.path().join("usr/bin").join(bin)));
        for library in String::from_utf8_lossy(&dynamic.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("NEEDED"))
            .map(str::trim)
        {
            let from = LIBRARY_PACKAGES
                .iter()
                .find(|(lib, _)| *lib == library)
                .map(|(_, package)| *package)
                .unwrap_or_else(|| panic!("{bin} links {library}: which package ships it?"));
            assert!(
                depends.contains(from),
                "{bin} links {library}, from {from}, which depends lacks: {depends:?}"
            );
        }
    }
    for run_by_name in ["gnupg", "pacman"] {
        assert!(depends.contains(run_by_name), "{depends:?}");
    }
}

/// FLOW.md stays true: every source file it names exists (a renamed or deleted module fails
/// this until the page is updated).
#[test]
fn flow_names_only_modules_that_exist() {
    let flow = read("FLOW.md");
    let named: Vec<&str> = flow
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|code| code.ends_with(".rs") && !code.contains(' '))
        .collect();
    assert!(named.len() > 30, "FLOW.md names modules: {named:?}");
    let missing: Vec<&&str> = named
        .iter()
        .filter(|path| {
            let at = Path::new(ROOT).join(if path.starts_with("tests/") {
                ""
            } else {
                "src"
            });
            !at.join(path).is_file()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "FLOW.md names modules that do not exist: {missing:?}"
    );
}
