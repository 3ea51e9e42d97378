//! Path rules for torrent file names: what a component may contain so that joining it below an
//! output directory can never escape that directory or misbehave on another platform.
//!
//! The rules are the same on every platform, because a torrent made on Linux is downloaded on
//! Windows: separators, NUL, `.`/`..`, drive letters and the Windows reserved device names are
//! all rejected everywhere. Duplicate paths and a file that is also another file's directory
//! are rejected too, since two entries would then write the same bytes on disk. Depth and
//! lengths are bounded (the limits below), and the duplicate check is linear in the total
//! number of components, so a hostile path costs no more than its own bytes.
use super::{FileEntry, MetainfoError};
use std::collections::HashMap;

/// Most components in one file's path. libtorrent's `load_torrent_limits::max_directory_depth`
/// is 100 (include/libtorrent/torrent_info.hpp), checked as `path.list_size() > 100`.
pub const MAX_PATH_DEPTH: usize = 100;
/// Longest component (and torrent name) in bytes: `NAME_MAX` of ext4, XFS, btrfs and NTFS
/// (in UTF-16 units there). libtorrent cuts a longer element to 240 bytes plus its extension
/// "so it is not more than 255 characters" (`sanitize_append_path_element`); shoal rejects it
/// instead, because cutting can make two files one.
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest path below the output directory (name, components and separators): Linux
/// `PATH_MAX`, beyond which the file could not be opened by its path anyway.
pub const MAX_PATH_BYTES: usize = 4096;

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
///
/// Linear in the total number of path components: the paths are walked as a tree whose nodes
/// are keyed by (parent node, component), so each component is hashed once and no prefix is
/// ever joined into a string (storing every prefix made a deep path quadratic in memory).
pub fn check_unique_paths(files: &[FileEntry]) -> Result<(), MetainfoError> {
    // Node 0 is the torrent root. A node is a file (index into `files`) or a directory (index
    // of the first file below it, for the error message).
    let mut nodes: Vec<Node> = vec![Node::Dir { first_file: usize::MAX }];
    let mut children: HashMap<(usize, &str), usize> = HashMap::new();
    for (i, f) in files.iter().enumerate().filter(|(_, f)| !f.padding) {
        let mut at = 0;
        for (depth, comp) in f.path.iter().enumerate() {
            let is_last = depth + 1 == f.path.len();
            let wanted = if is_last { Node::File { index: i } } else { Node::Dir { first_file: i } };
            let next = nodes.len();
            let id = *children.entry((at, comp.as_str())).or_insert(next);
            if id == next {
                nodes.push(wanted);
            } else {
                match (nodes[id], is_last) {
                    (Node::Dir { .. }, false) => {}
                    (Node::File { index }, true) => {
                        return Err(MetainfoError::DuplicatePath(files[index].path.join("/")))
                    }
                    (Node::File { index }, false) => return Err(file_is_directory(&files[index], f)),
                    (Node::Dir { first_file }, true) => return Err(file_is_directory(f, &files[first_file])),
                }
            }
            at = id;
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Node {
    File { index: usize },
    Dir { first_file: usize },
}

fn file_is_directory(file: &FileEntry, other: &FileEntry) -> MetainfoError {
    MetainfoError::FileIsDirectory { file: file.path.join("/"), other: other.path.join("/") }
}

/// Checks the shape of one file's path before its components are decoded: at most
/// [`MAX_PATH_DEPTH`] components. `field` names the path in the error.
pub fn check_depth(field: &str, depth: usize) -> Result<(), MetainfoError> {
    if depth > MAX_PATH_DEPTH {
        return Err(MetainfoError::PathTooDeep { field: field.to_string(), depth, limit: MAX_PATH_DEPTH });
    }
    Ok(())
}

/// Checks the length in bytes of a whole path below the output directory: the torrent name,
/// the components and a separator before each.
pub fn check_path_length(field: &str, name: &str, path: &[String]) -> Result<(), MetainfoError> {
    let len = name.len() + path.iter().map(|c| c.len() + 1).sum::<usize>();
    if len > MAX_PATH_BYTES {
        return Err(MetainfoError::PathTooLong { field: field.to_string(), len, limit: MAX_PATH_BYTES });
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

    #[test]
    fn file_and_directory_conflicts_in_either_order_name_both() {
        let dir_first = [entry(&["a", "b", "c"], false), entry(&["a", "b"], false)];
        assert_eq!(
            check_unique_paths(&dir_first),
            Err(MetainfoError::FileIsDirectory { file: "a/b".into(), other: "a/b/c".into() })
        );
        let file_first = [entry(&["x"], false), entry(&["a", "b"], false), entry(&["a", "b", "c", "d"], false)];
        assert_eq!(
            check_unique_paths(&file_first),
            Err(MetainfoError::FileIsDirectory { file: "a/b".into(), other: "a/b/c/d".into() })
        );
        let siblings = [entry(&["a", "b"], false), entry(&["a", "c"], false), entry(&["b"], false)];
        assert_eq!(check_unique_paths(&siblings), Ok(()));
        let same_name_other_dir = [entry(&["a", "x"], false), entry(&["b", "x"], false), entry(&["x"], false)];
        assert_eq!(check_unique_paths(&same_name_other_dir), Ok(()));
    }

    #[test]
    fn many_deep_paths_are_checked_without_joining_prefixes() {
        // 1,000 files 100 deep sharing one long trunk: 100,000 components in all. The old check
        // joined every prefix (about 5 million strings of up to 200 bytes); this one visits
        // each component once.
        let trunk: Vec<String> = (0..99).map(|i| format!("d{i}")).collect();
        let files: Vec<FileEntry> = (0..1000)
            .map(|i| {
                let mut path = trunk.clone();
                path.push(format!("f{i}"));
                FileEntry { path, length: 1, offset: 0, padding: false }
            })
            .collect();
        assert_eq!(check_unique_paths(&files), Ok(()));
    }

    #[test]
    fn depth_and_length_limits() {
        assert_eq!(check_depth("p", MAX_PATH_DEPTH), Ok(()));
        let e = check_depth("info.files[0].path", 60_000).unwrap_err();
        assert_eq!(e.to_string(), "info.files[0].path: 60000 path components, more than the limit of 100");
        let long: Vec<String> = (0..20).map(|_| "x".repeat(250)).collect();
        let e = check_path_length("f", "name", &long).unwrap_err();
        assert!(e.to_string().contains("longer than the limit of 4096"), "{e}");
        assert_eq!(check_path_length("f", "name", &long[..10]), Ok(()));
    }
}
