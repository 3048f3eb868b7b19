//! The other way into pacman: `Include = /etc/pacman.d/pacserve` in each repository section,
//! whose `CacheServer` line sends pacman's own downloader to the local pacserved first.
//!
//! This owns the text edit behind `pacsrv --include-conf`, as the original Pacserve's
//! `pacman.conf-insert_pacserve` did: print pacman.conf with the line at the top of every
//! repository (every section but `[options]`), never twice. The edit is line-based and keeps
//! every other byte, comments and order included, because users diff the result against the
//! file they know.

/// Where the PKGBUILD installs `contrib/pacserve.include`.
pub const INCLUDE_PATH: &str = "/etc/pacman.d/pacserve";

/// `conf` with `Include = <include>` as the first line of every repository section that does not
/// include it yet. Sections are recognised as pacman does: a line `[name]` after trimming.
pub fn with_include(conf: &str, include: &str) -> String {
    let line = format!("Include = {include}");
    let lines: Vec<&str> = conf.lines().collect();
    let mut out = String::with_capacity(conf.len() + 64);
    for (i, raw) in lines.iter().enumerate() {
        out.push_str(raw);
        out.push('\n');
        let Some(section) = section_name(raw) else {
            continue;
        };
        let body = lines[i + 1..]
            .iter()
            .take_while(|l| section_name(l).is_none());
        let already = body.clone().any(|l| includes(l, include));
        if section != "options" && !already {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// `[name]` on a line of its own (surrounding blanks allowed), as pacman parses section headers.
fn section_name(line: &str) -> Option<&str> {
    line.trim().strip_prefix('[')?.strip_suffix(']')
}

/// An active (uncommented) `Include = <path>` line.
fn includes(line: &str, path: &str) -> bool {
    let line = line.split('#').next().unwrap_or_default();
    match line.split_once('=') {
        Some((key, value)) => key.trim() == "Include" && value.trim() == path,
        None => false,
    }
}

/// `pacsrv --include-conf [--in-place] [FILE]`: the edited FILE (default /etc/pacman.conf) on
/// stdout, or written back in place (atomically, keeping its mode) with `--in-place`. Returns
/// what to print, or an error for the caller to report.
pub fn include_conf_command(args: &[std::ffi::OsString]) -> Result<String, String> {
    use std::path::PathBuf;
    let mut in_place = false;
    let mut file: Option<PathBuf> = None;
    for arg in args {
        match arg.to_str() {
            Some("--in-place") => in_place = true,
            Some(a) if a.starts_with('-') => {
                return Err(format!("--include-conf: unknown option {a}"));
            }
            _ if file.is_none() => file = Some(PathBuf::from(arg)),
            _ => {
                return Err(format!(
                    "--include-conf: more than one file ({})",
                    arg.to_string_lossy()
                ));
            }
        }
    }
    let file = file.unwrap_or_else(|| PathBuf::from(crate::pacman::pacsrv::DEFAULT_PACMAN_CONF));
    let original = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let edited = with_include(&original, INCLUDE_PATH);
    if !in_place {
        return Ok(edited);
    }
    if edited != original {
        write_in_place(&file, &edited)
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    Ok(String::new())
}

/// Replaces `file` by a sibling temporary file, so a crash never leaves half a pacman.conf.
fn write_in_place(file: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".pacman.conf-")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file()
        .set_permissions(std::fs::metadata(file)?.permissions())?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "[options]\nHoldPkg = pacman\n\n# [testing]\n[core]\nInclude = /etc/pacman.d/mirrorlist\n\n  [extra]  \nServer = https://m/$repo\n";

    #[test]
    fn every_repository_gets_the_line_first_and_options_none() {
        let out = with_include(CONF, INCLUDE_PATH);
        let line = "Include = /etc/pacman.d/pacserve\n";
        assert_eq!(out.matches(line).count(), 2, "{out}");
        assert!(out.contains(&format!("[core]\n{line}Include = /etc/pacman.d/mirrorlist")));
        assert!(out.contains(&format!("  [extra]  \n{line}Server")));
        assert!(out.starts_with("[options]\nHoldPkg"), "{out}");
        assert!(
            out.contains("# [testing]\n[core]"),
            "a commented header is no section"
        );
    }

    #[test]
    fn a_second_run_changes_nothing_and_a_commented_line_does_not_count() {
        let once = with_include(CONF, INCLUDE_PATH);
        assert_eq!(with_include(&once, INCLUDE_PATH), once);
        let commented = "[core]\n#Include = /etc/pacman.d/pacserve\n";
        assert_eq!(
            with_include(commented, INCLUDE_PATH),
            "[core]\nInclude = /etc/pacman.d/pacserve\n#Include = /etc/pacman.d/pacserve\n"
        );
    }
}
