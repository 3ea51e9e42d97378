//! The mainline routing table kept between runs: one `IP:PORT` per line, written at shutdown
//! (atomically: a temporary file renamed over the old one) and read back at start as extra
//! bootstrap nodes, so a restart does not depend on the public routers alone.
//!
//! The first line names the bootstrap list the nodes were learned from
//! (`# bootstrap: a,b,c`); a file learned from another list is not used, so the nodes of a
//! test network never leak into a run on the public one (and the other way round).
//!
//! The file is ours but read defensively: at most [`MAX_FILE_BYTES`] are read and at most
//! [`MAX_NODES`] entries taken; lines that are not an IPv4 `IP:PORT` are skipped.
use std::io::Read;
use std::net::SocketAddrV4;
use std::path::Path;

/// Most saved nodes read back (a full routing table holds at most 8 per bucket).
pub const MAX_NODES: usize = 256;
/// Most bytes read from the file.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The first line of a file learned from `bootstrap`.
fn header(bootstrap: &[String]) -> String {
    format!("# bootstrap: {}", bootstrap.join(","))
}

/// The nodes saved at `path` from the same `bootstrap` list; none when the file is missing,
/// unreadable or from another list.
pub fn load(path: &Path, bootstrap: &[String]) -> Vec<SocketAddrV4> {
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES).read_to_string(&mut text));
    if let Err(e) = read {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "saved mainline DHT nodes not read");
        }
        return Vec::new();
    }
    match text.split_once('\n') {
        Some((first, rest)) if first == header(bootstrap) => parse(rest),
        _ => {
            tracing::debug!(path = %path.display(), "saved mainline DHT nodes are from another bootstrap list");
            Vec::new()
        }
    }
}

/// The valid `IP:PORT` lines of `text`, at most [`MAX_NODES`].
pub fn parse(text: &str) -> Vec<SocketAddrV4> {
    text.lines()
        .filter_map(|l| l.trim().parse::<SocketAddrV4>().ok())
        .filter(|a| a.port() != 0 && !a.ip().is_unspecified())
        .take(MAX_NODES)
        .collect()
}

/// Writes `nodes` (at most [`MAX_NODES`]) learned from `bootstrap` to `path`; a failure is
/// logged, not fatal.
pub fn save(path: &Path, bootstrap: &[String], nodes: &[String]) {
    let mut body = header(bootstrap) + "\n";
    body.extend(nodes.iter().take(MAX_NODES).map(|n| format!("{n}\n")));
    let tmp = path.with_extension("tmp");
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, body))
        .and_then(|()| std::fs::rename(&tmp, path));
    match written {
        Ok(()) => {
            tracing::debug!(path = %path.display(), nodes = nodes.len().min(MAX_NODES), "mainline DHT nodes saved")
        }
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "mainline DHT nodes not saved"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_nodes_read_back_and_junk_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/mainline-nodes");
        let boot = vec!["router.example:6881".to_string()];
        save(&path, &boot, &["1.2.3.4:6881".into(), "5.6.7.8:1".into()]);
        assert_eq!(load(&path, &boot), vec!["1.2.3.4:6881".parse().unwrap(), "5.6.7.8:1".parse().unwrap()]);
        assert!(load(&path, &["127.0.0.1:9".to_string()]).is_empty(), "learned from another list");
        assert_eq!(parse("junk\n0.0.0.0:1\n1.2.3.4:0\n[::1]:5\n9.9.9.9:9\n"), vec!["9.9.9.9:9".parse().unwrap()]);
        assert!(load(&dir.path().join("missing"), &boot).is_empty());
    }

    #[test]
    fn at_most_max_nodes_are_taken() {
        let text: String = (0..1000).map(|i| format!("10.0.{}.{}:6881\n", i / 250, i % 250 + 1)).collect();
        assert_eq!(parse(&text).len(), MAX_NODES);
    }
}
