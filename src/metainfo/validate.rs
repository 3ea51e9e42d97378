//! Path rules for torrent file names: what a component may contain so that joining it below an
//! output directory can never escape that directory or misbehave on another platform.
//!
//! The rules are the same on every platform, because a torrent made on Linux is downloaded on
//! Windows: separators, NUL, `.`/`..`, drive letters and the Windows reserved device names are
//! all rejected everywhere. Duplicate paths and a file that is also another file's directory
//! are rejected too, since two entries would then write the same bytes on disk.
use super::{FileEntry, MetainfoError};
use std::collections::HashSet;

/// Names Windows treats as devices, with or without an extension, in any case.
const RESERVED: [&str; 4] = ["CON", "PRN", "AUX", "NUL"];

/// Checks one path component (or the torrent's `name`); the error is the reason.
pub fn check_component(c: &str) -> Result<(), &'static str> {
    if c.is_empty() {
        return Err("empty");
    }
    if c == "." || c == ".." {
        return Err("relative component");
    }
    if c.contains(['/', '\\']) {
        return Err("contains a path separator");
    }
    if c.contains('\0') {
        return Err("contains nul");
    }
    let b = c.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Err("windows drive letter");
    }
    if is_reserved_name(c) {
        return Err("windows reserved name");
    }
    Ok(())
}

fn is_reserved_name(c: &str) -> bool {
    // Windows ignores the extension and trailing spaces: "con.txt" and "CON " are devices too.
    let stem = c.split('.').next().unwrap_or(c).trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    if RESERVED.contains(&upper.as_str()) {
        return true;
    }
    let b = upper.as_bytes();
    b.len() == 4 && (b.starts_with(b"COM") || b.starts_with(b"LPT")) && (b'1'..=b'9').contains(&b[3])
}

/// Rejects two real files with the same path, and a file whose path is a directory of another.
/// Padding files are exempt: BEP 47 names them `.pad/<size>`, which legitimately repeats.
pub fn check_unique_paths(files: &[FileEntry]) -> Result<(), MetainfoError> {
    let mut paths: HashSet<String> = HashSet::new();
    let mut dirs: HashSet<String> = HashSet::new();
    for f in files.iter().filter(|f| !f.padding) {
        let joined = f.path.join("/");
        if !paths.insert(joined.clone()) {
            return Err(MetainfoError::DuplicatePath(joined));
        }
        for i in 1..f.path.len() {
            dirs.insert(f.path[..i].join("/"));
        }
    }
    if let Some(file) = paths.iter().find(|p| dirs.contains(*p)) {
        let prefix = format!("{file}/");
        let other = paths.iter().find(|p| p.starts_with(&prefix)).cloned().unwrap_or_default();
        return Err(MetainfoError::FileIsDirectory { file: file.clone(), other });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["a", ".hidden", "ファイル.txt", "console", "COM0", "LPT10", "ab:c"] {
            assert_eq!(check_component(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_dangerous_components() {
        let cases = [
            ("", "empty"),
            (".", "relative component"),
            ("..", "relative component"),
            ("a/b", "contains a path separator"),
            ("/etc", "contains a path separator"),
            ("a\\b", "contains a path separator"),
            ("a\0b", "contains nul"),
            ("C:", "windows drive letter"),
            ("c:evil", "windows drive letter"),
            ("CON", "windows reserved name"),
            ("con.txt", "windows reserved name"),
            ("Aux.tar.gz", "windows reserved name"),
            ("nul ", "windows reserved name"),
            ("com7", "windows reserved name"),
            ("LPT1.log", "windows reserved name"),
        ];
        for (c, why) in cases {
            assert_eq!(check_component(c), Err(why), "{c:?}");
        }
    }

    fn entry(path: &[&str], padding: bool) -> FileEntry {
        FileEntry { path: path.iter().map(|s| s.to_string()).collect(), length: 1, offset: 0, padding }
    }

    #[test]
    fn duplicate_and_prefix_paths() {
        let dup = [entry(&["a", "b"], false), entry(&["a", "b"], false)];
        assert_eq!(check_unique_paths(&dup), Err(MetainfoError::DuplicatePath("a/b".into())));
        let prefix = [entry(&["a"], false), entry(&["a", "b"], false)];
        assert!(matches!(check_unique_paths(&prefix), Err(MetainfoError::FileIsDirectory { .. })));
        let pads =
            [entry(&["x"], false), entry(&[".pad", "100"], true), entry(&["y"], false), entry(&[".pad", "100"], true)];
        assert_eq!(check_unique_paths(&pads), Ok(()));
    }
}
