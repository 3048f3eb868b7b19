//! pacman 7 for the tests: where it is (`PACSERVE_PACMAN7`, else the system pacman when it is
//! 7.x, as on Arch), the unprivileged download user the tests create, and a confined pacman 7
//! whose `DownloadUser` can reach pacserve-fetch, its configuration and databases as on Arch;
//! plus what its download directories hold.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::archrepo::{Pacman, Repo, require_pacman_tools};
use crate::daemon::Daemon;
use crate::hostile::Hostile;
use crate::netns::{Family, Host, Lan};
use crate::nginx::{self, Nginx};
use crate::util::{self, fetch_bin, require, run, stderr, tempdir};

/// The unprivileged user pacman 7 downloads as in these tests (Arch uses `alpm`).
pub const DOWNLOAD_USER: &str = "pacserve-dl";

/// pacman 7.1's path, once the download user exists; None (after `util::require`) when a
/// prerequisite is missing.
pub fn pacman7() -> Option<PathBuf> {
    if !require_pacman_tools() || !require(util::is_root(), "pacman 7's DownloadUser needs root") {
        return None;
    }
    let found = find_pacman7(
        std::env::var_os("PACSERVE_PACMAN7").as_deref(),
        std::env::var_os("PATH").as_deref(),
    );
    let path = match found {
        Ok(path) => path,
        Err(why) => {
            require(false, &why);
            return None;
        }
    };
    create_download_user();
    Some(path)
}

/// Where pacman 7 is, given the values of `PACSERVE_PACMAN7` and `PATH`: the variable when set
/// (a pacman 7.1 built into a prefix beside Debian's 6.0.2), else the `pacman` on `PATH` when
/// its `--version` says 7.x (Arch's). Err says what was found instead and what to do.
pub fn find_pacman7(var: Option<&OsStr>, path: Option<&OsStr>) -> Result<PathBuf, String> {
    const HOW: &str = "set PACSERVE_PACMAN7 to a pacman 7 (../shared/pacman7/build.sh PREFIX \
                       builds 7.1 into PREFIX/bin/pacman)";
    if let Some(var) = var {
        let named = PathBuf::from(var);
        return match named.is_file() {
            true => Ok(named),
            false => Err(format!(
                "PACSERVE_PACMAN7={} is not a file; {HOW}",
                named.display()
            )),
        };
    }
    let system = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("pacman"))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no pacman on PATH and PACSERVE_PACMAN7 is unset; {HOW}"))?;
    let version = Command::new(&system)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    let version = version
        .split("Pacman v")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("of unknown version");
    match version.split('.').next() {
        Some("7") => Ok(system),
        _ => Err(format!(
            "{} is pacman {version}, not 7, and PACSERVE_PACMAN7 is unset; {HOW}",
            system.display()
        )),
    }
}

/// `useradd` once per test run, when the user does not exist yet (tests run in parallel).
pub fn create_download_user() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if nix_user_exists(DOWNLOAD_USER) {
            return;
        }
        let added = run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            DOWNLOAD_USER,
        ]));
        assert!(added.status.success(), "useradd {DOWNLOAD_USER}");
    });
}

pub fn nix_user_exists(name: &str) -> bool {
    Command::new("id")
        .args(["-u", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A confined pacman 7.1 with `DownloadUser` and pacserve-fetch (copied where the download user
/// can execute it) as a plain `'%o' '%u'` XferCommand.
pub fn pacman7_with(program: &Path, servers: &[(&str, String)]) -> Pacman {
    let mut pacman = Pacman::new(None, servers);
    let base = pacman.base.path();
    // The download user must reach the cache, the databases and the binary, as on Arch.
    fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();
    let bin = base.join("bin");
    fs::create_dir(&bin).unwrap();
    fs::copy(fetch_bin(), bin.join("pacserve-fetch")).unwrap();
    fs::set_permissions(
        bin.join("pacserve-fetch"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // Its own TMPDIR: the download user's LAN memory and database indexes, per test.
    fs::create_dir(base.join("tmp")).unwrap();
    fs::set_permissions(base.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let conf = fs::read_to_string(&pacman.config).unwrap().replacen(
        "[options]\n",
        &format!(
            "[options]\nDownloadUser = {DOWNLOAD_USER}\nXferCommand = '{}' '%o' '%u'\n",
            bin.join("pacserve-fetch").display()
        ),
        1,
    );
    fs::write(&pacman.config, conf).unwrap();
    pacman.program = program.to_owned();
    pacman
}

pub fn env(pacman: &Pacman) -> [(&'static str, &OsStr); 1] {
    [(
        "TMPDIR",
        pacman.base.path().join("tmp").into_os_string().leak(),
    )]
}

/// pacman 7's temporary download directories still present in CacheDir and DBPath/sync.
pub fn download_dirs(pacman: &Pacman) -> Vec<PathBuf> {
    let sync = pacman.base.path().join("db/sync");
    [pacman.cache(), sync]
        .iter()
        .filter_map(|dir| fs::read_dir(dir).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("download-"))
        .map(|e| e.path())
        .collect()
}

/// pacman 7.1 on host 1 of a namespace LAN whose last host is the mirror of repository `repo`.
pub struct Scene {
    pub program: PathBuf,
    pub lan: Lan,
    pub mirror_root: tempfile::TempDir,
    pub repo: Repo,
}

impl Scene {
    /// None (after `util::require`) when a prerequisite is missing.
    pub fn new(hosts: usize, repo: &str) -> Option<Scene> {
        let program = pacman7()?;
        let lan = Lan::new(hosts, Family::Dual)?;
        let mirror_root = tempdir();
        let repo = Repo::create(mirror_root.path(), repo);
        Some(Scene {
            program,
            lan,
            mirror_root,
            repo,
        })
    }

    /// nginx on the last host, serving the repository.
    pub fn mirror(&self, options: nginx::Options) -> Option<Nginx> {
        let host = self.lan.host(self.lan.hosts.len());
        Nginx::start_in(Some(host), self.mirror_root.path(), options)
    }

    /// pacman 7.1 (see [`pacman7_with`]) using that mirror.
    pub fn pacman(&self) -> Pacman {
        let name = &self.repo.name;
        let mirror = self.lan.ipv4(self.lan.hosts.len());
        pacman7_with(
            &self.program,
            &[(name, format!("http://{mirror}:8080/{name}"))],
        )
    }
}

/// The peer scene of a 4-host [`Scene`]: host 2 an honest pacserved holding `frompeer` (and
/// `also_held`), host 3 a hostile peer offering a tampered `tampered` (right size, wrong bytes),
/// host 4 the mirror, which alone has `frommirror`.
pub struct Peers {
    pub frompeer: String,
    pub tampered: String,
    pub frommirror: String,
    pub also_held: Vec<String>,
    pub peer: Daemon,
    pub hostile: Hostile,
    pub mirror: Nginx,
    _peer_cache: tempfile::TempDir,
}

impl Scene {
    /// Starts [`Peers`] with `also_held` packages (of 100 kB) on the honest peer too.
    pub fn peers(&self, also_held: &[&str]) -> Option<Peers> {
        // The tampering peer is a python script.
        if !util::require_tools(&["python3"]) {
            return None;
        }
        let (lan, repo) = (&self.lan, &self.repo);
        let frompeer = repo.add_package("frompeer", 400_000);
        let tampered = repo.add_package("tampered", 300_000);
        let frommirror = repo.add_package("frommirror", 200_000);
        let also_held: Vec<String> = also_held
            .iter()
            .map(|name| repo.add_package(name, 100_000))
            .collect();
        let peer_cache = tempdir();
        for file in std::iter::once(&frompeer).chain(&also_held) {
            fs::copy(repo.dir.join(file), peer_cache.path().join(file)).unwrap();
        }
        let peer = Daemon::start(lan.host(2), peer_cache.path(), &[]);
        let hostile = Hostile::start(
            lan.host(3),
            "wrongbytes",
            &repo.dir.join(&tampered),
            &lan.ipv4(3),
        );
        let mirror = self.mirror(Default::default())?;
        Some(Peers {
            frompeer,
            tampered,
            frommirror,
            also_held,
            peer,
            hostile,
            mirror,
            _peer_cache: peer_cache,
        })
    }
}

impl Peers {
    /// `pacman -Sy`, then `pacman -S` of the three packages, on host 1: the transaction's output.
    pub fn sync_and_install(
        &self,
        pacman: &Pacman,
        host: &Host,
        env: &[(&str, &OsStr)],
    ) -> std::process::Output {
        ok(&pacman.run_in(host, env, &["-Sy"]), "-Sy");
        pacman.run_in(host, env, &["-S", "frompeer", "tampered", "frommirror"])
    }

    /// All three installed; `frompeer` from the peer only; the hostile peer asked for
    /// `tampered`, whose bytes the mirror then sent. Returns the hostile peer's log.
    pub fn assert_installed(&self, pacman: &Pacman, repo: &Repo) -> String {
        for (pkg, file) in [
            ("frompeer", &self.frompeer),
            ("tampered", &self.tampered),
            ("frommirror", &self.frommirror),
        ] {
            pacman.assert_installed_from(repo, pkg, file);
        }
        assert_eq!(
            self.peer.served(&self.frompeer).len(),
            1,
            "frompeer came from the peer"
        );
        assert!(
            self.mirror.requests_for(&self.frompeer).is_empty(),
            "and not from the mirror"
        );
        let log = self.hostile.log();
        assert!(
            log.contains(&format!("GET /pkg/{}", self.tampered)),
            "the hostile peer was tried: {log}"
        );
        assert!(!self.mirror.requests_for(&self.tampered).is_empty());
        assert!(!self.mirror.requests_for(&self.frommirror).is_empty());
        log
    }
}

pub fn ok(out: &std::process::Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", stderr(out));
}

/// The directory of the `.part` pacman 7 is downloading `file` into, once it holds `n` bytes.
pub fn wait_for_part(pacman: &Pacman, file: &str, n: u64) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = download_dirs(pacman)
            .into_iter()
            .map(|d| d.join(format!("{file}.part")))
            .find(|p| fs::metadata(p).is_ok_and(|m| m.len() >= n));
        if let Some(part) = found {
            return part;
        }
        assert!(
            Instant::now() < deadline,
            "{file}.part never reached {n} bytes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What is left in pacman 7's download directories: (directory, file names).
pub fn left_in_download_dirs(pacman: &Pacman) -> Vec<(PathBuf, Vec<String>)> {
    download_dirs(pacman)
        .into_iter()
        .map(|d| {
            let names = fs::read_dir(&d)
                .map(|r| {
                    r.filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            (d, names)
        })
        .collect()
}

/// Under a plain XferCommand every stranded file was adopted: what remains are empty
/// directories, which only root may remove from CacheDir (pacsrv does).
pub fn assert_nothing_stranded(pacman: &Pacman) {
    let left = left_in_download_dirs(pacman);
    assert!(
        left.iter().all(|(_, names)| names.is_empty()),
        "files stranded in download directories: {left:?}"
    );
}

/// pacsrv with pacman 7.1 (through `$PACMAN`), from the download user's reach.
pub fn pacsrv_in(
    pacman: &Pacman,
    host: &Host,
    env: &[(&str, &OsStr)],
    args: &[&str],
) -> std::process::Output {
    let pacsrv = pacman.base.path().join("bin/pacsrv");
    if !pacsrv.exists() {
        fs::copy(env!("CARGO_BIN_EXE_pacsrv"), &pacsrv).unwrap();
    }
    let mut cmd = host.command(pacsrv.to_str().unwrap());
    util::strip_network_env(&mut cmd);
    cmd.envs(env.iter().copied())
        .env("PACMAN", &pacman.program)
        .arg("--config")
        .arg(&pacman.config)
        .arg("--noconfirm")
        .args(args);
    run(&mut cmd)
}
