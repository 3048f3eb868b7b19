//! The shipped extras beside the binaries: the Include line pacman's own downloader uses
//! (`contrib/pacserve.include` and `pacsrv --include-conf`), checked by the real `pacman-conf`
//! of pacman 6.0.2 and 7.1; the firewall definitions, each checked by its tool's own parser
//! (nft in a private namespace, python's XML and INI parsers for firewalld and ufw).

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
    let check = |path: &Path| {
        // nft -c needs netlink; a private network namespace gives it without touching the host.
        run(Command::new("unshare")
            .args(["-rn", "nft", "-c", "-f"])
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
