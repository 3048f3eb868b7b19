//! The shipped extras beside the binaries: the Include line pacman's own downloader uses
//! (`contrib/pacserve.include` and `pacsrv --include-conf`), checked by the real `pacman-conf`
//! of pacman 6.0.2 and 7.1; the firewall definitions, each checked by its tool's own parser
//! (nft in a private namespace, python's XML and INI parsers for firewalld and ufw); and the
//! try scripts finding the binaries where cargo put them, or failing in one line.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{can_unshare, require, require_tools, run, tempdir};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn pacsrv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pacsrv"))
}

fn contrib(path: &str) -> PathBuf {
    Path::new(ROOT).join("contrib").join(path)
}

/// pacman 7's pacman-conf, next to the pacman 7 the tests use (`PACSERVE_PACMAN7`, else the
/// system pacman when it is 7.x).
fn pacman7_conf() -> Option<PathBuf> {
    let conf = crate::pacman7_setup::find_pacman7(
        std::env::var_os("PACSERVE_PACMAN7").as_deref(),
        std::env::var_os("PATH").as_deref(),
    )
    .map(|p| p.with_file_name("pacman-conf"))
    .and_then(|p| match p.is_file() {
        true => Ok(p),
        false => Err(format!("{} is missing", p.display())),
    });
    match conf {
        Ok(conf) => Some(conf),
        Err(why) => {
            require(
                false,
                &format!("pacman 7's pacman-conf checks CacheServer: {why}"),
            );
            None
        }
    }
}

/// Runs `pacsrv --include-conf` on `conf` and makes the result checkable here: the Include
/// points at the shipped file, the mirrorlist at a local one (neither is in /etc on Debian).
fn included(conf: &Path, dir: &Path) -> String {
    let out = run(pacsrv().arg("--include-conf").arg(conf));
    assert!(out.status.success());
    let mirrorlist = dir.join("mirrorlist");
    fs::write(
        &mirrorlist,
        "Server = http://mirror.invalid/$repo/os/$arch\n",
    )
    .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .replace(
            "/etc/pacman.d/pacserve",
            contrib("pacserve.include").to_str().unwrap(),
        )
        .replace("/etc/pacman.d/mirrorlist", mirrorlist.to_str().unwrap())
}

fn pacman_conf(program: &Path, conf: &Path, repo: &str) -> String {
    let out = run(Command::new(program)
        .arg("--config")
        .arg(conf)
        .args(["--repo", repo]));
    assert!(
        out.status.success(),
        "{} rejects {}",
        program.display(),
        conf.display()
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_repository_gets_the_cache_server_and_pacman_conf_accepts_it() {
    if !require_tools(&["pacman-conf"]) {
        return;
    }
    let Some(conf7) = pacman7_conf() else { return };
    let dir = tempdir();
    let conf = dir.path().join("pacman.conf");
    fs::write(
        &conf,
        included(&Path::new(ROOT).join("pacman.conf.example"), dir.path()),
    )
    .unwrap();
    for repo in ["core", "extra"] {
        let seven = pacman_conf(&conf7, &conf, repo);
        assert!(
            seven.contains("CacheServer = http://127.0.0.1:15678/cache\n"),
            "{repo}: {seven}"
        );
        assert!(seven.contains(&format!("Server = http://mirror.invalid/{repo}/os/")));
        // pacman 6.0 has no CacheServer: it warns, and still reads the file.
        let six = pacman_conf(Path::new("pacman-conf"), &conf, repo);
        assert!(six.contains("Server = http://mirror.invalid/"), "{six}");
    }
}

#[test]
fn debians_pacman_conf_has_no_repository_and_stays_as_it_is() {
    if !require_tools(&["pacman-conf"])
        || !require(
            Path::new("/etc/pacman.conf").is_file(),
            "no /etc/pacman.conf",
        )
    {
        return;
    }
    let out = run(pacsrv().args(["--include-conf", "/etc/pacman.conf"]));
    assert!(out.status.success());
    assert_eq!(out.stdout, fs::read("/etc/pacman.conf").unwrap());
    let dir = tempdir();
    let conf = dir.path().join("pacman.conf");
    fs::write(&conf, &out.stdout).unwrap();
    assert!(
        run(Command::new("pacman-conf").arg("--config").arg(&conf))
            .status
            .success()
    );
}

#[test]
fn in_place_writes_once_and_keeps_the_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let conf = dir.path().join("pacman.conf");
    fs::copy(Path::new(ROOT).join("pacman.conf.example"), &conf).unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o640)).unwrap();
    let printed = run(pacsrv().arg("--include-conf").arg(&conf));
    assert_eq!(
        fs::read(&conf).unwrap(),
        fs::read(Path::new(ROOT).join("pacman.conf.example")).unwrap(),
        "printing leaves the file alone"
    );

    for _ in 0..2 {
        let out = run(pacsrv().args(["--include-conf", "--in-place"]).arg(&conf));
        assert!(out.status.success() && out.stdout.is_empty());
        assert_eq!(
            fs::read(&conf).unwrap(),
            printed.stdout,
            "the second run changes nothing"
        );
    }
    let text = fs::read_to_string(&conf).unwrap();
    assert_eq!(text.matches("Include = /etc/pacman.d/pacserve").count(), 2);
    assert_eq!(
        fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o640
    );

    let bad = run(pacsrv().args(["--include-conf", "--inplace"]).arg(&conf));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--inplace"));
}

#[test]
fn nft_accepts_the_snippet_and_its_multicast_only_variant() {
    if !require_tools(&["nft"]) || !require(can_unshare(), "unshare -rn is not permitted here") {
        return;
    }
    // By its path: nft lives in /usr/sbin, which a user's PATH (makepkg's check()) may lack.
    let nft = crate::util::find_tool("nft").expect("nft was required");
    let check = |path: &Path| {
        // nft -c needs netlink; a private network namespace gives it without touching the host.
        run(Command::new("unshare")
            .args(["-rn"])
            .arg(&nft)
            .args(["-c", "-f"])
            .arg(path))
        .status
        .success()
    };
    let shipped = contrib("firewall/pacserve.nft");
    assert!(check(&shipped));
    let text = fs::read_to_string(&shipped).unwrap();
    let dir = tempdir();
    let multicast_only = dir.path().join("multicast.nft");
    let variant = text
        .replace("        udp dport 15678 accept\n", "")
        .replace("        #   ip", "        ip");
    assert!(variant.contains("        ip daddr 239.255.15.78 udp dport 15678 accept\n"));
    assert!(variant.contains("        ip6 daddr ff02::15:678 udp dport 15678 accept\n"));
    fs::write(&multicast_only, &variant).unwrap();
    assert!(check(&multicast_only));
    // The check can fail: a typo is refused.
    let broken = dir.path().join("broken.nft");
    fs::write(&broken, text.replace("tcp dport", "tcp dprot")).unwrap();
    assert!(!check(&broken));
}

/// Runs a python snippet with the file as its argument; the snippet prints what it parsed.
fn python(script: &str, path: &Path) -> String {
    let out = run(Command::new("python3").args(["-c", script]).arg(path));
    assert!(
        out.status.success(),
        "python could not parse {}",
        path.display()
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn firewalld_and_ufw_definitions_parse_and_open_both_ports() {
    if !require_tools(&["python3"]) {
        return;
    }
    let xml = python(
        "import sys, xml.etree.ElementTree as E\n\
         r = E.parse(sys.argv[1]).getroot()\n\
         assert r.tag == 'service'\n\
         print(r.find('short').text)\n\
         for p in r.findall('port'): print(p.get('port') + '/' + p.get('protocol'))",
        &contrib("firewall/pacserve.xml"),
    );
    assert_eq!(xml, "pacserve\n15678/tcp\n15678/udp\n");
    let ufw = python(
        "import sys, configparser\n\
         c = configparser.ConfigParser(); c.read_file(open(sys.argv[1]))\n\
         s = c['pacserve']\n\
         assert s['title'] and s['description']\n\
         print(s['ports'])",
        &contrib("firewall/pacserve.ufw"),
    );
    assert_eq!(ufw, "15678/tcp|15678/udp\n");
}

#[test]
fn try_it_says_it_needs_python3_when_it_is_missing() {
    if !require_tools(&["bash", "dirname", "nginx", "bsdtar"]) {
        return;
    }
    // A PATH holding exactly what try-it.sh needs before its python3 check.
    let bin = tempdir();
    for tool in ["dirname", "nginx", "bsdtar"] {
        let found = crate::util::find_tool(tool).unwrap();
        std::os::unix::fs::symlink(found, bin.path().join(tool)).unwrap();
    }
    let bash = crate::util::find_tool("bash").unwrap();
    let out = run(Command::new(bash)
        .arg(contrib("try-it.sh"))
        .env("PATH", bin.path()));
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("try-it: needs python3"), "{said}");
}

/// A `cargo` for the try scripts that answers everything but `build` as the real one does:
/// these tests must not build (a fresh target directory costs minutes), and a script that
/// builds where it should not fails here at once.
pub fn cargo_that_never_builds() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let cargo = dir.path().join("cargo");
    fs::write(
        &cargo,
        format!(
            "#!/bin/sh\ncase \"$1\" in build) echo \"test: no cargo build here\" >&2; exit 97;; esac\n\
             exec '{}' \"$@\"\n",
            env!("CARGO")
        ),
    )
    .unwrap();
    fs::set_permissions(&cargo, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `bash contrib/<script> args` with the never-building cargo first on PATH and no override
/// from the environment.
pub fn try_script(script: &str, cargo: &Path, args: &[&str]) -> Command {
    let path = std::env::join_paths(std::iter::once(cargo.to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(contrib(script))
        .args(args)
        .env("PATH", path)
        .env_remove("CARGO")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("PACSERVE_FETCH_BIN")
        .env_remove("PACSERVE_BIN_DIR");
    cmd
}

/// A target directory as cargo would leave it, holding links to this run's binaries.
pub fn fake_target_dir(profile: &str, bins: &[&str]) -> tempfile::TempDir {
    let target = tempdir();
    let dir = target.path().join(profile);
    fs::create_dir(&dir).unwrap();
    let built = Path::new(crate::util::fetch_bin()).parent().unwrap();
    for bin in bins {
        std::os::unix::fs::symlink(built.join(bin), dir.join(bin)).unwrap();
    }
    target
}

/// Asserts exit status 1 and exactly one line on stderr, containing each of `says`.
fn one_line_failure(out: &std::process::Output, says: &[&str]) {
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert_eq!(said.lines().count(), 1, "one line: {said}");
    for s in says {
        assert!(said.contains(s), "{s:?} not in: {said}");
    }
}

#[test]
fn try_it_finds_pacserve_fetch_where_cargo_put_it() {
    if !require_tools(&["bash", "nginx", "bsdtar", "python3"]) {
        return;
    }
    // Issue 23: with CARGO_TARGET_DIR set, try-it.sh built there and then looked in ./target.
    let cargo = cargo_that_never_builds();
    let target = fake_target_dir("release", &["pacserve-fetch"]);
    let out = run(try_script("try-it.sh", cargo.path(), &["--no-build"])
        .env("CARGO_TARGET_DIR", target.path()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let bin = target.path().join("release/pacserve-fetch");
    assert!(
        text.contains(&format!("== using {}\n", bin.display())),
        "{text}"
    );
    assert!(text.contains("identical to the mirror's copy"), "{text}");

    // Nothing built there: one line naming where it looked.
    let empty = tempdir();
    let out = run(try_script("try-it.sh", cargo.path(), &["--no-build"])
        .env("CARGO_TARGET_DIR", empty.path()));
    one_line_failure(
        &out,
        &[
            "try-it: no pacserve-fetch in",
            &empty.path().display().to_string(),
        ],
    );
}

#[test]
fn the_try_scripts_document_their_overrides_and_fail_in_one_line() {
    if !require_tools(&["bash", "nginx", "bsdtar", "python3"]) {
        return;
    }
    let cargo = cargo_that_never_builds();
    for (script, variable) in [
        ("try-it.sh", "PACSERVE_FETCH_BIN"),
        ("try-lan.sh", "PACSERVE_BIN_DIR"),
    ] {
        let help = run(&mut try_script(script, cargo.path(), &["--help"]));
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{script}: {text}");
        for documented in [variable, "CARGO_TARGET_DIR", "CARGO ", "--no-build"] {
            assert!(
                text.contains(documented),
                "{script} --help lacks {documented}: {text}"
            );
        }
        let bad = run(&mut try_script(script, cargo.path(), &["--bogus"]));
        assert_eq!(bad.status.code(), Some(2), "{script}");
    }
    let out = run(try_script("try-it.sh", cargo.path(), &[])
        .env("PACSERVE_FETCH_BIN", "/nonexistent/pacserve-fetch"));
    one_line_failure(&out, &["PACSERVE_FETCH_BIN=/nonexistent/pacserve-fetch"]);

    // try-lan.sh checks the binaries before root, namespaces or anything else: one line, not a
    // LAN of failing commands ("exec … failed" 58 times, issue 23).
    let only_fetch = fake_target_dir("debug", &["pacserve-fetch"]);
    let out = run(try_script("try-lan.sh", cargo.path(), &[])
        .env("PACSERVE_BIN_DIR", only_fetch.path().join("debug")));
    one_line_failure(&out, &["holds no executable pacserved"]);
    let out = run(try_script("try-lan.sh", cargo.path(), &["--no-build"])
        .env("CARGO_TARGET_DIR", only_fetch.path()));
    one_line_failure(
        &out,
        &[
            "try-lan: no pacserve-fetch and pacserved in",
            &only_fetch.path().display().to_string(),
        ],
    );
}

/// Arch's default `/etc/nftables.conf` (nftables 1.1), without its first line `destroy table
/// inet filter`, which Debian's nft 1.0.6 does not know.
const ARCH_NFTABLES_CONF: &str = r#"table inet filter {
  chain input {
    type filter hook input priority filter
    policy drop

    ct state invalid drop comment "early drop of invalid connections"
    ct state {established, related} accept comment "allow tracked connections"
    iif lo accept comment "allow from loopback"
    ip protocol icmp accept comment "allow icmp"
    meta l4proto ipv6-icmp accept comment "allow icmp v6"
    tcp dport ssh accept comment "allow sshd"
    pkttype host limit rate 5/second counter reject with icmpx type admin-prohibited
    counter
  }
  chain forward {
    type filter hook forward priority filter
    policy drop
  }
}
"#;

#[test]
fn beside_archs_default_nftables_the_shipped_table_opens_nothing_and_the_readme_rules_do() {
    use crate::netns::{Family, Lan};
    if !require_tools(&["nft"]) {
        return;
    }
    let Some(lan) = Lan::new(2, Family::Dual) else {
        return;
    };
    let cache = tempdir();
    let _daemon = crate::daemon::Daemon::start(lan.host(2), cache.path(), &[]);
    lan.wait_for_daemons(1);
    let heard = || {
        let out = run(lan
            .host(1)
            .command(crate::util::fetch_bin())
            .env("TMPDIR", crate::util::lan_memory_dir())
            .args(["--config", "/dev/null", "--list-peers"]));
        out.status.success()
    };
    let rules = tempdir();
    let arch = rules.path().join("nftables.conf");
    fs::write(&arch, ARCH_NFTABLES_CONF).unwrap();
    let load = |files: &[&Path]| {
        let mut script = "nft flush ruleset".to_owned();
        for file in files {
            script.push_str(&format!(" && nft -f '{}'", file.display()));
        }
        lan.host(2).sh(&script);
    };
    // Arch's ruleset alone drops the queries; the shipped table beside it changes nothing.
    load(&[&arch]);
    assert!(!heard(), "Arch's default ruleset lets queries through");
    load(&[&arch, &contrib("firewall/pacserve.nft")]);
    assert!(!heard(), "the shipped table overruled another table's drop");
    // The README's advice: the two rules in Arch's own input chain, after the ssh line.
    let readme = fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let advice: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("#     "))
        .filter(|l| l.contains("dport 15678 accept"))
        .collect();
    assert_eq!(advice, ["tcp dport 15678 accept", "udp dport 15678 accept"]);
    let ssh = "    tcp dport ssh accept comment \"allow sshd\"\n";
    let fixed = rules.path().join("fixed.conf");
    fs::write(
        &fixed,
        ARCH_NFTABLES_CONF.replace(ssh, &format!("{ssh}    {}\n    {}\n", advice[0], advice[1])),
    )
    .unwrap();
    load(&[&fixed]);
    assert!(heard(), "the README's rules open the daemon");
}

#[test]
fn try_lan_run_as_a_user_hands_the_lan_part_to_sudo() {
    use crate::util::{hand_to_unprivileged, is_root};
    if !require_tools(&["bash"]) || (is_root() && !require_tools(&["setpriv"])) {
        return;
    }
    // A sudo that only says how it was called, and binaries a user can reach.
    let sudo = tempdir();
    hand_to_unprivileged(sudo.path(), 0o755);
    let fake = sudo.path().join("sudo");
    fs::write(&fake, "#!/bin/sh\necho \"sudo $*\"\n").unwrap();
    hand_to_unprivileged(&fake, 0o755);
    let target = fake_target_dir("debug", &["pacserve-fetch", "pacserved"]);
    hand_to_unprivileged(target.path(), 0o755);
    let bins = target.path().join("debug");
    hand_to_unprivileged(&bins, 0o755);
    let mut cmd = crate::util::as_unprivileged("bash");
    let out = run(cmd
        .arg(contrib("try-lan.sh"))
        .env("PATH", format!("{}:/usr/bin:/bin", sudo.path().display()))
        .env("PACSERVE_BIN_DIR", &bins));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.trim(),
        format!(
            "sudo env PACSERVE_BIN_DIR={} {}",
            bins.display(),
            contrib("try-lan.sh").display()
        )
    );
}

/// The Grafana dashboard is JSON with a panel per query, and every series it queries is one
/// pacserved exposes (the names `/metrics` renders, `_total` on counters).
#[test]
fn the_grafana_dashboard_queries_only_series_pacserved_exposes() {
    if !require_tools(&["python3"]) {
        return;
    }
    let dashboard = contrib("grafana/pacserved.json");
    let exprs = python(
        "import json, sys\n\
         d = json.load(open(sys.argv[1]))\n\
         for p in d['panels']:\n\
         \x20   assert p['targets'], p['title']\n\
         \x20   for t in p['targets']:\n\
         \x20       print(t['expr'])\n",
        &dashboard,
    );
    let stats = std::sync::Arc::new(pacserve_fetch::daemon::stats::Stats::default());
    let exposition = pacserve_fetch::daemon::metrics::render(&stats);
    let exposed: Vec<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| match l.split_once(' ')? {
            (name, "counter") => Some(format!("{name}_total")),
            (name, _) => Some(name.to_owned()),
        })
        .collect();
    let queried: Vec<&str> = exprs
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("pacserved_"))
        .collect();
    assert!(queried.len() >= 15, "{exprs}");
    for series in &queried {
        assert!(
            exposed.iter().any(|e| e == series),
            "{series} is not a series of pacserved: {exposed:?}"
        );
    }
    for wanted in [
        "pacserved_received_bytes_total",
        "pacserved_agent_mirror_bytes_total",
        "pacserved_peer_verification_failures_total",
        "pacserved_followers",
    ] {
        assert!(queried.contains(&wanted), "the dashboard shows {wanted}");
    }
}
