//! What pacman's sync databases say about a package file: its size, SHA-256, detached signature
//! and repository.
//!
//! A sync database (`<DBPath>/sync/<repo>.db`) is a tar archive — gzip, zstd, xz or plain —
//! with one `<name>-<version>/desc` per package. Reading a large one (extra.db: tens of MB once
//! decompressed) costs far too much to repeat for every file pacman asks for, so the first
//! lookup after a database changes writes a compact index of it (one line per package file)
//! into [`crate::statedir`], keyed by the database's path, size and mtime; later lookups read
//! only that index, which carries the `%PGPSIG%` too: pacman asks for a `.sig` right after each
//! package, and Arch's databases carry every signature, so that answer must not cost a
//! decompression of the database. Without a usable state directory each lookup scans the
//! database directly.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::statedir;

/// A package file as a sync database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub filename: String,
    pub csize: Option<u64>,
    pub sha256: Option<[u8; 32]>,
    /// The detached signature (`%PGPSIG%`, base64-decoded), when the db carries one.
    pub signature: Option<Vec<u8>>,
    /// The repository: the database's name (`core` for `sync/core.db`).
    pub repo: String,
}

/// Finds `filename` in the sync databases under `dbpath` (`<dbpath>/sync/*.db`).
pub fn lookup(dbpath: &Path, filename: &str) -> Option<Entry> {
    lookup_all(dbpath, &[filename]).remove(filename)
}

/// Finds each of `filenames` in the sync databases under `dbpath`, the first database listing a
/// name winning as in [`lookup`]. Each database (or its index) is read at most once, so a
/// transaction's plan costs one pass, not one per file.
pub fn lookup_all(dbpath: &Path, filenames: &[&str]) -> HashMap<String, Entry> {
    let mut found = HashMap::new();
    for db in sync_dbs(dbpath).unwrap_or_default() {
        let mut wanted: HashSet<&str> = filenames
            .iter()
            .copied()
            .filter(|name| !found.contains_key(*name))
            .collect();
        if wanted.is_empty() {
            break;
        }
        entries_in(&db, &mut wanted, |entry| {
            found.insert(entry.filename.clone(), entry);
        });
    }
    found
}

/// `<dbpath>/sync/*.db`, in name order.
fn sync_dbs(dbpath: &Path) -> Option<Vec<PathBuf>> {
    let mut dbs: Vec<PathBuf> = fs::read_dir(dbpath.join("sync"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "db") && p.is_file())
        .collect();
    dbs.sort();
    Some(dbs)
}

/// The detached signature of package `filename` itself (its `%PGPSIG%`, base64-decoded), from
/// the sync databases under `dbpath`: the one `.sig` that needs no source but the database.
pub fn detached_signature(dbpath: &Path, filename: &str) -> Option<Vec<u8>> {
    lookup(dbpath, filename)?.signature
}

/// Finds `filename` in one database, through its index when possible.
pub fn lookup_in(db: &Path, filename: &str) -> Option<Entry> {
    let mut found = None;
    entries_in(db, &mut HashSet::from([filename]), |entry| {
        found = Some(entry)
    });
    found
}

/// Visits the entries of `db` named in `wanted`, removing each name as it is found, through the
/// index when possible (built first if missing); stops once no name is left.
fn entries_in(db: &Path, wanted: &mut HashSet<&str>, mut visit: impl FnMut(Entry)) {
    let repo = repo_of(db);
    let Some(index) = index_path(db) else {
        let _ = scan(db, |mut entry| {
            entry.repo = repo.clone();
            if wanted.remove(entry.filename.as_str()) {
                visit(entry);
            }
            !wanted.is_empty()
        });
        return;
    };
    if !index.exists() && build_index(db, &index).is_err() {
        return;
    }
    let Ok(file) = File::open(&index) else {
        return;
    };
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        // Only lines of wanted names are parsed: a lookup is one pass of string compares.
        let Some((name, fields)) = line.split_once('\t') else {
            continue;
        };
        if !wanted.remove(name) {
            continue;
        }
        if let Some(mut entry) = index_entry(name, fields) {
            entry.repo = repo.clone();
            visit(entry);
        }
        if wanted.is_empty() {
            return;
        }
    }
}

/// The repository a database file is of: its name without `.db`.
fn repo_of(db: &Path) -> String {
    db.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `<statedir>/syncdb2-<hash of path, size, mtime>`: a changed database gets a new index (and
/// an index of the layout before signatures were in it is never read).
fn index_path(db: &Path) -> Option<PathBuf> {
    let meta = fs::metadata(db).ok()?;
    let key = format!(
        "{}\0{}\0{}.{}",
        db.display(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let digest = Sha256::digest(key.as_bytes());
    Some(statedir::dir()?.join(format!("syncdb2-{}", crate::hex::encode(&digest[..12]))))
}

fn build_index(db: &Path, index: &Path) -> io::Result<()> {
    let mut lines = String::new();
    scan(db, |entry| {
        let opt_hex =
            |h: Option<[u8; 32]>| h.map_or_else(|| "-".to_owned(), |h| crate::hex::encode(&h));
        let size = entry
            .csize
            .map_or_else(|| "-".to_owned(), |s| s.to_string());
        let signature = entry.signature.as_deref().map_or_else(
            || "-".to_owned(),
            |sig| base64::engine::general_purpose::STANDARD.encode(sig),
        );
        lines.push_str(&format!(
            "{}\t{size}\t{}\t{signature}\n",
            entry.filename,
            opt_hex(entry.sha256),
        ));
        true
    })?;
    statedir::write_atomically(index, lines.as_bytes());
    // Indexes of older versions of this database are now useless; they are small and named by
    // hash, so they are left for the temporary directory's own cleaning.
    Ok(())
}

/// One index line's entry: `fields` are what follows the file name.
fn index_entry(filename: &str, fields: &str) -> Option<Entry> {
    let mut fields = fields.split('\t');
    let csize = fields.next()?.parse().ok();
    let sha256 = fields.next().and_then(unhex32);
    let signature = fields
        .next()
        .filter(|b64| *b64 != "-")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
    Some(Entry {
        filename: filename.to_owned(),
        csize,
        sha256,
        signature,
        repo: String::new(),
    })
}

/// Whether `db` reads as a complete archive, to the compressed stream's last byte. A truncated or
/// damaged database (which pacman rejects) must never be the copy a 304 keeps. A complete read
/// is remembered as the database's index, so an unchanged database is read once.
pub fn is_complete(db: &Path) -> bool {
    match index_path(db) {
        Some(index) if index.exists() => true,
        Some(index) => build_index(db, &index).is_ok(),
        None => scan(db, |_| true).is_ok(),
    }
}

/// Calls `visit` for every package entry until it returns false. When every entry was visited,
/// the rest of the stream is read too, so a truncated database is an error, not a short list.
pub fn scan(db: &Path, mut visit: impl FnMut(Entry) -> bool) -> io::Result<()> {
    scan_descs(db, |text| parse_desc(text).is_none_or(&mut visit))
}

/// [`scan`] over the raw `desc` texts.
fn scan_descs(db: &Path, mut visit: impl FnMut(&str) -> bool) -> io::Result<()> {
    let mut archive = tar::Archive::new(decompressed(db)?);
    let mut stopped = false;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let is_desc = entry
            .path()
            .is_ok_and(|p| p.file_name().is_some_and(|n| n == "desc"));
        if !is_desc {
            continue;
        }
        let mut text = String::new();
        if entry.read_to_string(&mut text).is_err() {
            continue;
        }
        if !visit(&text) {
            stopped = true;
            break;
        }
    }
    if !stopped {
        // tar stops at its end-of-archive blocks; the compressed stream's end (and its
        // checksum) comes after them.
        io::copy(&mut archive.into_inner(), &mut io::sink())?;
    }
    Ok(())
}

/// The database's bytes, decompressed according to their magic number.
fn decompressed(db: &Path) -> io::Result<Box<dyn Read>> {
    let mut file = File::open(db)?;
    let mut magic = [0u8; 6];
    let n = file.read(&mut magic)?;
    magic[n..].fill(0);
    file.seek(SeekFrom::Start(0))?;
    let file = BufReader::new(file);
    Ok(match magic {
        [0x1f, 0x8b, ..] => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00] => Box::new(xz2::bufread::XzDecoder::new(file)),
        _ => Box::new(file),
    })
}

/// Parses a `desc` file's `%FILENAME%`, `%CSIZE%`, `%SHA256SUM%` and `%PGPSIG%`.
pub fn parse_desc(text: &str) -> Option<Entry> {
    let mut entry = Entry {
        filename: String::new(),
        csize: None,
        sha256: None,
        signature: None,
        repo: String::new(),
    };
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let key = line.trim();
        if !(key.starts_with('%') && key.ends_with('%')) {
            continue;
        }
        // A value is every line up to the blank separator; the fields we use have one line.
        let value = lines.next().unwrap_or("").trim();
        match key {
            "%FILENAME%" => entry.filename = value.to_owned(),
            "%CSIZE%" => entry.csize = value.parse().ok(),
            "%SHA256SUM%" => entry.sha256 = unhex32(value),
            "%PGPSIG%" => {
                entry.signature = base64::engine::general_purpose::STANDARD.decode(value).ok()
            }
            _ => {}
        }
    }
    (!entry.filename.is_empty()).then_some(entry)
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    crate::hex::decode(text.trim())
}

#[cfg(test)]
mod tests;
