//! Real Arch packages and a real repository, made with Debian's bsdtar and repo-add, and a real
//! pacman (Debian's pacman-package-manager) confined to a temporary root by its own config.
//!
//! Packages are assembled with bsdtar rather than makepkg because makepkg refuses to run as root,
//! which is how CI runs. Their payload is random data so that compression cannot shrink it and
//! byte counts in the mirror's log mean what they say.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, random_bytes, run};

/// The tools these tests need, checked with the usual policy.
pub fn require_pacman_tools() -> bool {
    util::require_tools(&["pacman", "repo-add", "bsdtar", "zstd"])
        && util::require(
            util::is_root() || util::can_unshare(),
            "pacman needs root, or unshare -r to pretend",
        )
}

/// A repository directory `<root>/<repo>/` holding packages and `<repo>.db`.
pub struct Repo {
    pub name: String,
    pub dir: PathBuf,
}

impl Repo {
    pub fn create(mirror_root: &Path, name: &str) -> Repo {
        let dir = mirror_root.join(name);
        fs::create_dir_all(&dir).unwrap();
        Repo {
            name: name.to_owned(),
            dir,
        }
    }

    /// Builds `<pkgname>-1.0-1-any.pkg.tar.zst` carrying `payload` random bytes in
    /// `/usr/share/<pkgname>/data`, adds it to the database, and returns its file name.
    pub fn add_package(&self, pkgname: &str, payload: usize) -> String {
        self.add_version(pkgname, "1.0", payload)
    }

    /// As [`Repo::add_package`] with version `<pkgver>-1`, replacing any older entry in the
    /// database (its file stays on the mirror), so installed packages have an upgrade pending.
    pub fn add_version(&self, pkgname: &str, pkgver: &str, payload: usize) -> String {
        let file = self.build(pkgname, pkgver, payload);
        self.register(&file);
        file
    }

    /// Builds `<pkgname>-<pkgver>-1-any.pkg.tar.zst` in the repository directory, not yet in
    /// the database; returns its file name.
    pub fn build(&self, pkgname: &str, pkgver: &str, payload: usize) -> String {
        let file = format!("{pkgname}-{pkgver}-1-any.pkg.tar.zst");
        let build = util::tempdir();
        let data_dir = build.path().join("usr/share").join(pkgname);
        fs::create_dir_all(&data_dir).unwrap();
        fs::write(
            data_dir.join("data"),
            random_bytes(payload, payload as u64 ^ 0x5eed),
        )
        .unwrap();
        fs::write(
            build.path().join(".PKGINFO"),
            format!(
                "pkgname = {pkgname}\npkgbase = {pkgname}\npkgver = {pkgver}-1\npkgdesc = test package\n\
                 url = https://example.org\nbuilddate = 1700000000\npackager = pacserve tests\n\
                 size = {payload}\narch = any\nlicense = MIT\n"
            ),
        )
        .unwrap();
        let tar = run(Command::new("bsdtar")
            .arg("--zstd")
            .arg("-cf")
            .arg(self.dir.join(&file))
            .arg("-C")
            .arg(build.path())
            .args([".PKGINFO", "usr"]));
        assert!(tar.status.success(), "bsdtar failed");
        file
    }

    /// Adds `file` (built in the repository directory) to the database. Debian's repo-add
    /// embeds `<file>.sig` as `%PGPSIG%` when it is there already.
    pub fn register(&self, file: &str) {
        let added = run(Command::new("repo-add")
            .arg("-q")
            .arg(self.dir.join(format!("{}.db.tar.gz", self.name)))
            .arg(self.dir.join(file)));
        assert!(added.status.success(), "repo-add failed");
    }
}

/// A pacman confined to a temporary directory: its own root, database, cache and log.
pub struct Pacman {
    pub base: tempfile::TempDir,
    pub config: PathBuf,
    /// The pacman binary: Debian's `pacman` (6.0.2), or pacman 7.1 (tests/it/pacman7.rs).
    pub program: PathBuf,
}

impl Pacman {
    /// `xfer` is the XferCommand line (None: pacman's own downloader, or pacsrv's), in which
    /// `@DBPATH@` stands for this pacman's DBPath;
    /// `servers` are `(repo, url)` pairs.
    pub fn new(xfer: Option<&str>, servers: &[(&str, String)]) -> Pacman {
        let base = util::tempdir();
        let b = base.path();
        for dir in ["root", "db", "cache", "gnupg", "hooks"] {
            fs::create_dir_all(b.join(dir)).unwrap();
        }
        let mut conf = format!(
            "[options]\nRootDir = {r}\nDBPath = {d}\nCacheDir = {c}\nLogFile = {l}\nGPGDir = {g}\n\
             HookDir = {h}\nArchitecture = auto\nSigLevel = Never\n",
            r = b.join("root").display(),
            d = b.join("db").display(),
            c = b.join("cache").display(),
            l = b.join("pacman.log").display(),
            g = b.join("gnupg").display(),
            h = b.join("hooks").display(),
        );
        if let Some(xfer) = xfer {
            let xfer = xfer.replace("@DBPATH@", &b.join("db").display().to_string());
            conf.push_str(&format!("XferCommand = {xfer}\n"));
        }
        for (repo, url) in servers {
            conf.push_str(&format!("\n[{repo}]\nServer = {url}\n"));
        }
        let config = b.join("pacman.conf");
        fs::write(&config, conf).unwrap();
        Pacman {
            base,
            config,
            program: PathBuf::from("pacman"),
        }
    }

    /// The XferCommand line for the binary under test as a mirror-only downloader, quoted as
    /// the man page says.
    pub fn xfer_line(binary: &str) -> String {
        format!("{binary} {} '%o' '%u'", util::MIRROR_ONLY.join(" "))
    }

    /// The XferCommand line for the binary under test on a namespace LAN: peers on, no
    /// configuration file, this pacman's own sync databases.
    pub fn lan_xfer_line(binary: &str) -> String {
        format!("{binary} --config /dev/null --dbpath @DBPATH@ '%o' '%u'")
    }

    pub fn cache(&self) -> PathBuf {
        self.base.path().join("cache")
    }

    pub fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }

    /// A pacman command with our config; run as root directly, else in a user namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = if util::is_root() {
            Command::new(&self.program)
        } else {
            let mut c = Command::new("unshare");
            c.arg("-r").arg(&self.program);
            c
        };
        util::strip_network_env(&mut cmd);
        self.with_config(cmd, args)
    }

    /// `cmd` with this pacman's configuration, `--noconfirm`, and `args`.
    fn with_config(&self, mut cmd: Command, args: &[&str]) -> Command {
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--noconfirm")
            .args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        run_showing_stdout(self.command(args))
    }

    /// Runs this pacman inside a test host's network namespace, with `env` set.
    pub fn run_in(
        &self,
        host: &crate::netns::Host,
        env: &[(&str, &std::ffi::OsStr)],
        args: &[&str],
    ) -> std::process::Output {
        run_showing_stdout(self.command_in(host, env, args))
    }

    /// This pacman inside a test host's network namespace, with `env` set, not yet run.
    pub fn command_in(
        &self,
        host: &crate::netns::Host,
        env: &[(&str, &std::ffi::OsStr)],
        args: &[&str],
    ) -> Command {
        let mut cmd = host.command(self.program.to_str().expect("UTF-8 pacman path"));
        util::strip_network_env(&mut cmd);
        cmd.envs(env.iter().copied());
        self.with_config(cmd, args)
    }

    /// Asserts that package `pkgname` is installed and that `file` in the cache is the
    /// repository's, byte for byte.
    pub fn assert_installed_from(&self, repo: &Repo, pkgname: &str, file: &str) {
        assert!(
            self.installed_data(pkgname).is_some(),
            "{pkgname} installed"
        );
        assert!(
            fs::read(self.cache().join(file)).ok() == fs::read(repo.dir.join(file)).ok(),
            "{file} in the cache is the repository's"
        );
    }

    /// The installed payload of a test package.
    pub fn installed_data(&self, pkgname: &str) -> Option<Vec<u8>> {
        fs::read(self.root().join("usr/share").join(pkgname).join("data")).ok()
    }
}

/// Runs pacman, printing its stdout too (a failing test shows what pacman said).
fn run_showing_stdout(mut cmd: Command) -> std::process::Output {
    let out = run(&mut cmd);
    eprintln!(
        "  stdout: {}",
        String::from_utf8_lossy(&out.stdout).trim_end()
    );
    out
}

/// `<dbpath>/sync/<db>.db` written directly, without repo-add: a plain tar with one `desc` that
/// vouches for `filename` by the size and SHA-256 of `content` (all pacserve-fetch reads of it).
pub fn write_sync_db(dbpath: &Path, db: &str, filename: &str, content: &[u8]) {
    use sha2::{Digest, Sha256};
    let sha: [u8; 32] = Sha256::digest(content).into();
    write_sync_db_entries(
        dbpath,
        db,
        &[(filename.to_owned(), content.len() as u64, sha)],
    );
}

/// As [`write_sync_db`], one `desc` per `(file name, size, SHA-256)`.
pub fn write_sync_db_entries(dbpath: &Path, db: &str, entries: &[(String, u64, [u8; 32])]) {
    fs::create_dir_all(dbpath.join("sync")).unwrap();
    let file = fs::File::create(dbpath.join("sync").join(format!("{db}.db"))).unwrap();
    let mut tar = tar::Builder::new(file);
    for (i, (filename, size, sha)) in entries.iter().enumerate() {
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        let desc = format!(
            "%FILENAME%\n{filename}\n\n%NAME%\n{db}{i}\n\n%VERSION%\n1.0-1\n\n%CSIZE%\n{size}\n\n%SHA256SUM%\n{hex}\n"
        );
        let mut header = tar::Header::new_gnu();
        header.set_size(desc.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("{db}{i}-1.0-1/desc"), desc.as_bytes())
            .unwrap();
    }
    tar.finish().unwrap();
}
