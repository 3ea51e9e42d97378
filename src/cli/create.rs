//! `shoal create`: make a v1 `.torrent` from a file or directory, print its info-hash and magnet.
//!
//! Also home of [`parse_size`], the one size parser every command's flags share.
use crate::cli::bad_input;
use anyhow::Context;
use clap::Args;
use shoal::metainfo::create::{check_piece_length, create_torrent, CreateError, CreateOptions};
use shoal::metainfo::Metainfo;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// File or directory to describe.
    pub path: PathBuf,
    /// Where to write the .torrent file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Piece size (power of two, 16KiB..64MiB), e.g. 262144, 256KiB, 1MiB. Default: chosen from
    /// the total size.
    #[arg(long = "piece-size", value_parser = parse_size)]
    pub piece_size: Option<u64>,
    /// Tracker URL; repeat for more tiers, or separate URLs with commas for one tier.
    #[arg(short = 't', long = "tracker")]
    pub trackers: Vec<String>,
    /// Mark the torrent private (BEP 27): peers only from its trackers.
    #[arg(long)]
    pub private: bool,
    /// Free-text comment.
    #[arg(long)]
    pub comment: Option<String>,
}

/// Parses a byte size: `1048576`, `16KiB`, `1MiB`, `1GiB` (also `K`/`M`/`G`/`T`, `KB`..., any
/// case; all binary multiples, as piece sizes are).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!("bad size {s:?}: expected a number like 1048576 or 1MiB"));
    }
    let n: u64 = digits.parse().map_err(|_| format!("bad size {s:?}: number too large"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("bad size {s:?}: unknown unit {unit:?} (use KiB, MiB, GiB)")),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("bad size {s:?}: too large"))
}

/// `--tracker` values to BEP 12 tiers: one tier per flag, commas join URLs into one tier.
pub fn tracker_tiers(values: &[String]) -> Vec<Vec<String>> {
    values
        .iter()
        .map(|v| v.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect::<Vec<_>>())
        .filter(|tier| !tier.is_empty())
        .collect()
}

pub fn run(args: CreateArgs) -> anyhow::Result<()> {
    let piece_length = args
        .piece_size
        .map(|p| check_piece_length(p).map_err(|e| bad_input(format!("--piece-size: {e}"))))
        .transpose()?;
    let opts = CreateOptions {
        piece_length,
        trackers: tracker_tiers(&args.trackers),
        private: args.private,
        comment: args.comment.clone(),
        ..CreateOptions::default()
    };
    let bytes = create_torrent(&args.path, &opts).map_err(classify)?;
    std::fs::write(&args.output, &bytes).with_context(|| format!("{}: cannot write", args.output.display()))?;
    // Parse back what we wrote: prints exactly what other tools will see.
    let m = Metainfo::from_bytes(&bytes)
        .with_context(|| format!("{}: created torrent does not parse", args.output.display()))?;
    match report(&args, &m) {
        // A closed pipe is the reader's choice; the torrent is already written.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(())
}

fn report(args: &CreateArgs, m: &Metainfo) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "created {}: {} files, {} bytes, {} pieces of {} bytes",
        args.output.display(),
        m.files.len(),
        m.total_length,
        m.piece_count(),
        m.piece_length
    )?;
    writeln!(out, "info-hash: {}", m.info_hash)?;
    writeln!(out, "magnet: {}", m.magnet())
}

/// A missing/unreadable source or an unusable name is the user's fault (exit 2); a read
/// failure mid-hash is a run-time failure (exit 1).
fn classify(e: CreateError) -> anyhow::Error {
    match &e {
        CreateError::Io { source, .. }
            if !matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied) =>
        {
            anyhow::Error::new(e)
        }
        CreateError::FileChanged(_) => anyhow::Error::new(e),
        _ => bad_input(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("16KiB"), Ok(16 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("4 M"), Ok(4 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "MiB", "1.5MiB", "1XB", "-1", "99999999999999999999", "20000000TiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tiers() {
        let v = vec!["http://a,http://b".to_string(), "udp://c".to_string(), ",".to_string()];
        assert_eq!(tracker_tiers(&v), vec![vec!["http://a", "http://b"], vec!["udp://c"]]);
    }
}
