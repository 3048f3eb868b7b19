//! What kind of file pacman asked for, judged from its name alone.
//!
//! pacman names `%o` `<file>.part`, where `<file>` is the last path segment of the URL. The kind
//! decides two things: whether a partial output may be resumed (packages yes, databases and
//! signatures no, as pacman's own downloader does) and whether a LAN peer may ever supply it
//! (never a database: a peer's database view may be stale or forged).

use std::path::Path;

/// The suffix pacman gives the file it asks an XferCommand to write.
pub const PART_SUFFIX: &str = ".part";

/// The kinds of file pacman downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A sync database: `<repo>.db` or `<repo>.files`.
    Database,
    /// A database's detached signature: `<repo>.db.sig`, `<repo>.files.sig`.
    DatabaseSignature,
    /// A package: `<name>-<ver>-<rel>-<arch>.pkg.tar[.ext]`.
    Package,
    /// A package's detached signature.
    PackageSignature,
    /// Anything else (for example `pacman -U https://…/some.tar.zst`).
    Other,
}

impl FileKind {
    /// Classifies a bare file name (no directory, no `.part`).
    pub fn of(file_name: &str) -> FileKind {
        let (stem, is_sig) = match file_name.strip_suffix(".sig") {
            Some(stem) => (stem, true),
            None => (file_name, false),
        };
        let is_db = stem.ends_with(".db") || stem.ends_with(".files");
        let is_pkg = is_package_stem(stem);
        match (is_db, is_pkg, is_sig) {
            (_, true, false) => FileKind::Package,
            (_, true, true) => FileKind::PackageSignature,
            (true, _, false) => FileKind::Database,
            (true, _, true) => FileKind::DatabaseSignature,
            _ => FileKind::Other,
        }
    }

    /// Whether bytes already in the output may be kept and the rest requested with Range.
    /// Databases and signatures are small and change under the same name, so they start over.
    pub fn resumable(self) -> bool {
        matches!(self, FileKind::Package | FileKind::Other)
    }

    /// Whether LAN peers may be asked for this file. Only packages and their signatures:
    /// their names are unique per content, so any copy of the name is the same file.
    pub fn shareable(self) -> bool {
        matches!(self, FileKind::Package | FileKind::PackageSignature)
    }
}

/// Whether `stem` ends like a package: `.pkg.tar`, or `.pkg.tar.<ext>` with a plain
/// alphanumeric compression suffix (`zst`, `xz`, `gz`, …). Anything merely containing
/// `.pkg.tar` (`….pkg.tar.zst.sig2`, `….pkg.tar.zst.old`) is no package.
fn is_package_stem(stem: &str) -> bool {
    let Some(at) = stem.rfind(".pkg.tar") else {
        return false;
    };
    match &stem[at + ".pkg.tar".len()..] {
        "" => true,
        rest => rest.strip_prefix('.').is_some_and(|ext| {
            !ext.is_empty() && ext.len() <= 8 && ext.bytes().all(|b| b.is_ascii_alphanumeric())
        }),
    }
}

/// The gate every file name from the network passes: a package or package signature named by a
/// single plain path component. Used by the protocol, the daemon's lookup and its HTTP server.
pub fn is_shareable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.ends_with(PART_SUFFIX)
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b'\\' || b.is_ascii_control())
        && FileKind::of(name).shareable()
}

/// The file name pacman means by an output path: the last component without `.part`.
/// Returns `None` when the path has no usable UTF-8 file name.
pub fn target_name(output: &Path) -> Option<&str> {
    let name = output.file_name()?.to_str()?;
    let name = name.strip_suffix(PART_SUFFIX).unwrap_or(name);
    (!name.is_empty()).then_some(name)
}

/// The file a download is for, given `%o` and `%u`. pacman names `%o` `<last URL segment>.part`,
/// and that name is kept exactly, as is any output name that says what the file is (a package,
/// a signature, a database). A path picked by hand (`pacserve-fetch /tmp/x.part URL`) says
/// nothing about the file, so then the URL's last segment (without `?query` or `#fragment`)
/// names it; when the URL has none, the output's name does.
pub fn requested_name<'a>(output: &'a Path, url: &'a str) -> Option<&'a str> {
    let pacmans = url
        .rsplit('/')
        .next()
        .map(|segment| format!("{segment}{PART_SUFFIX}"));
    let output_name = output.file_name().and_then(|n| n.to_str());
    let telling = target_name(output).filter(|n| FileKind::of(n) != FileKind::Other);
    if output_name.is_some() && output_name == pacmans.as_deref() || telling.is_some() {
        return target_name(output);
    }
    let from_url = url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.split_once("://"))
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(_, path)| path.rsplit('/').next())
        .filter(|n| !n.is_empty() && !n.starts_with('.'));
    from_url.or_else(|| target_name(output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacmans_output_name_is_kept_and_a_hand_picked_one_yields_to_the_url() {
        let name = |o: &str, u: &str| requested_name(Path::new(o), u).map(str::to_owned);
        let pkg = "vim-2:9.1-1-x86_64.pkg.tar.zst";
        let url = format!("https://m/extra/os/x86_64/{pkg}");
        assert_eq!(name(&format!("/c/{pkg}.part"), &url).as_deref(), Some(pkg));
        assert_eq!(name("/tmp/x.part", &url).as_deref(), Some(pkg));
        assert_eq!(name("/tmp/x", &format!("{url}?a=b")).as_deref(), Some(pkg));
        assert_eq!(name("/tmp/x.part", "https://m/dir/").as_deref(), Some("x"));
        assert_eq!(name("/tmp/x.part", "https://m").as_deref(), Some("x"));
        // An output that names a package keeps its name, whatever the URL.
        let other = format!("/c/{pkg}.part");
        assert_eq!(name(&other, "http://m/dead/x").as_deref(), Some(pkg));
        // pacman's own odd names stay exact: the segment with its query is what it wrote.
        assert_eq!(
            name("/c/get?id=3.part", "https://m/get?id=3").as_deref(),
            Some("get?id=3")
        );
    }

    #[test]
    fn classifies_what_pacman_downloads() {
        assert_eq!(FileKind::of("core.db"), FileKind::Database);
        assert_eq!(FileKind::of("extra.files"), FileKind::Database);
        assert_eq!(FileKind::of("core.db.sig"), FileKind::DatabaseSignature);
        assert_eq!(
            FileKind::of("linux-6.7.arch1-1-x86_64.pkg.tar.zst"),
            FileKind::Package
        );
        assert_eq!(
            FileKind::of("vim-1:9.0-1-x86_64.pkg.tar.xz"),
            FileKind::Package
        );
        assert_eq!(
            FileKind::of("linux-6.7.arch1-1-x86_64.pkg.tar.zst.sig"),
            FileKind::PackageSignature
        );
        assert_eq!(FileKind::of("notes.txt"), FileKind::Other);
        assert_eq!(FileKind::of("a-1-1-any.pkg.tar"), FileKind::Package);
        for odd in [
            "a-1-1-any.pkg.tar.zst.sig2",
            "a-1-1-any.pkg.tar.zst.old",
            "a-1-1-any.pkg.tar.zst.sig.sig",
            "a-1-1-any.pkg.tar.",
            "a-1-1-any.pkg.tarball",
        ] {
            assert_eq!(FileKind::of(odd), FileKind::Other, "{odd}");
        }
        // A package whose name merely ends like a database is still a package.
        assert_eq!(
            FileKind::of("foo.db-1-1-any.pkg.tar.zst"),
            FileKind::Package
        );
    }

    #[test]
    fn only_packages_resume_and_only_packages_are_shared() {
        assert!(FileKind::Package.resumable());
        assert!(!FileKind::Database.resumable());
        assert!(!FileKind::PackageSignature.resumable());
        assert!(FileKind::PackageSignature.shareable());
        assert!(!FileKind::Database.shareable());
        assert!(!FileKind::DatabaseSignature.shareable());
        assert!(!FileKind::Other.shareable());
    }

    #[test]
    fn only_plain_package_names_are_shareable() {
        assert!(is_shareable_name("linux-6.7-1-x86_64.pkg.tar.zst"));
        assert!(is_shareable_name("linux-6.7-1-x86_64.pkg.tar.zst.sig"));
        assert!(is_shareable_name("vim-2:9.1+r3-1-x86_64.pkg.tar.zst"));
        for bad in [
            "",
            "core.db",
            "core.files.sig",
            "../x.pkg.tar.zst",
            "a/b.pkg.tar.zst",
            ".x.pkg.tar.zst",
            "x.pkg.tar.zst.part",
            "x.pkg.tar.zst\0",
            "x\n.pkg.tar.zst",
            "download-abc",
        ] {
            assert!(!is_shareable_name(bad), "{bad:?}");
        }
        assert!(!is_shareable_name(&format!(
            "{}.pkg.tar.zst",
            "a".repeat(250)
        )));
    }

    #[test]
    fn fuzzed_names_never_escape() {
        // Random names from an alphabet rich in separators, dots, NULs and escapes: whatever
        // the gate accepts is one plain, non-hidden path component naming a package file.
        let alphabet: Vec<char> = "ab-._/\\\0%2e:+~ \n.pkg.tar.zst.sig.db.part.."
            .chars()
            .collect();
        let cases: u64 = std::env::var("PACSERVE_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut accepted = 0;
        for _ in 0..cases {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 40) as usize;
            let mut s: String = (0..len)
                .map(|i| alphabet[((state >> (i % 48)) as usize + i * 7) % alphabet.len()])
                .collect();
            if state & 1 == 0 {
                s.push_str(".pkg.tar.zst");
            }
            if is_shareable_name(&s) {
                accepted += 1;
                let path = Path::new(&s);
                assert_eq!(path.components().count(), 1, "{s:?}");
                assert!(
                    !s.contains('/') && !s.contains('\0') && !s.starts_with('.'),
                    "{s:?}"
                );
                assert!(
                    FileKind::of(&s).shareable() && !s.ends_with(".part"),
                    "{s:?}"
                );
            }
        }
        eprintln!("FUZZ names: {cases} names, {accepted} accepted, none escaped");
    }

    #[test]
    fn target_name_strips_part() {
        assert_eq!(
            target_name(Path::new("/c/a.pkg.tar.zst.part")),
            Some("a.pkg.tar.zst")
        );
        assert_eq!(target_name(Path::new("core.db")), Some("core.db"));
        assert_eq!(target_name(Path::new("/")), None);
        assert_eq!(target_name(Path::new("/x/.part")), None);
    }
}
