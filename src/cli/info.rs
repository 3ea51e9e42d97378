//! `shoal info`: show what a `.torrent` file or a magnet URI describes, as text or JSON.
//!
//! The JSON keys are a contract for scripts and tests: `kind` (`torrent`|`magnet`), `name`,
//! `info_hash`, `total_size`, `piece_length`, `piece_count`, `multi_file`,
//! `files: [{index, path, length, offset, padding}]` (path joined with `/` below the torrent
//! root; `index` is what `download --only` takes),
//! `trackers` (tiers), `private`, `comment`, `created_by`, `creation_date`, `url_list`,
//! `magnet`; for a magnet also `peers` and `select_only`. Fields unknown for a magnet are null.
//!
//! Nothing from the torrent or magnet reaches the terminal raw: names and paths arrive already
//! sanitized by `metainfo`, and every string is escaped again on output (text: `\u{..}`,
//! JSON: `\uXXXX`, lossless), since comments, trackers and web seeds are kept as written.
use crate::cli::bad_input;
use clap::Args;
use serde::Serialize;
use shoal::metainfo::names::{escape, escape_json};
use shoal::metainfo::{Magnet, Metainfo};
use std::io::Write;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A .torrent file or a magnet URI.
    pub input: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct InfoJson {
    kind: &'static str,
    name: Option<String>,
    info_hash: String,
    total_size: Option<u64>,
    piece_length: Option<u32>,
    piece_count: Option<u32>,
    multi_file: Option<bool>,
    files: Vec<FileJson>,
    trackers: Vec<Vec<String>>,
    private: bool,
    comment: Option<String>,
    created_by: Option<String>,
    creation_date: Option<i64>,
    url_list: Vec<String>,
    magnet: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    select_only: Option<String>,
}

#[derive(Serialize)]
struct FileJson {
    /// The index `--only` and a magnet's `so=` use (padding files are counted).
    index: usize,
    path: String,
    length: u64,
    offset: u64,
    padding: bool,
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let report = if args.input.to_ascii_lowercase().starts_with("magnet:") {
        let m = Magnet::parse(&args.input).map_err(|e| bad_input(e.to_string()))?;
        from_magnet(&m)
    } else {
        from_torrent(&load(&args.input)?)
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_string_pretty(&report)
            .map_err(std::io::Error::from)
            .and_then(|json| writeln!(out, "{}", escape_json(&json)))
    } else {
        print_text(&mut out, &report)
    };
    match written {
        // A closed pipe (`shoal info x | head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Reads and parses a `.torrent`; both failures are the user's (exit 2), named by file.
pub fn load(path: &str) -> anyhow::Result<Metainfo> {
    use std::io::Read;
    let cannot = |e: std::io::Error| bad_input(format!("{path}: cannot read: {e}"));
    let limit = shoal::bencode::Limits::TORRENT.max_input;
    // Read at most one byte past the limit: a huge file is refused without loading it.
    let mut bytes = Vec::new();
    std::fs::File::open(path).map_err(cannot)?.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() > limit {
        return Err(bad_input(format!("{path}: larger than {} MiB, not a torrent file", limit >> 20)));
    }
    Metainfo::from_bytes(&bytes).map_err(|e| bad_input(format!("{path}: {e}")))
}

fn from_torrent(m: &Metainfo) -> InfoJson {
    let files = m
        .files
        .iter()
        .enumerate()
        .map(|(index, f)| FileJson {
            index,
            path: f.path.join("/"),
            length: f.length,
            offset: f.offset,
            padding: f.padding,
        })
        .collect();
    InfoJson {
        kind: "torrent",
        name: Some(m.name.clone()),
        info_hash: m.info_hash.to_hex(),
        total_size: Some(m.total_length),
        piece_length: Some(m.piece_length),
        piece_count: Some(m.piece_count()),
        multi_file: Some(m.multi_file),
        files,
        trackers: m.trackers.clone(),
        private: m.private,
        comment: m.comment.clone(),
        created_by: m.created_by.clone(),
        creation_date: m.creation_date,
        url_list: m.url_list.clone(),
        magnet: m.magnet().to_string(),
        peers: None,
        select_only: None,
    }
}

fn from_magnet(m: &Magnet) -> InfoJson {
    let so = m.to_string().split("&so=").nth(1).map(str::to_string);
    InfoJson {
        kind: "magnet",
        name: m.name.clone(),
        info_hash: m.info_hash.to_hex(),
        total_size: None,
        piece_length: None,
        piece_count: None,
        multi_file: None,
        files: Vec::new(),
        // Each `tr` is its own tier, as libtorrent and Transmission treat them.
        trackers: m.trackers.iter().map(|t| vec![t.clone()]).collect(),
        private: false,
        comment: None,
        created_by: None,
        creation_date: None,
        url_list: Vec::new(),
        magnet: m.to_string(),
        peers: Some(m.peers.clone()),
        select_only: so,
    }
}

fn print_text(out: &mut impl Write, r: &InfoJson) -> std::io::Result<()> {
    let opt = |v: &Option<String>| v.as_deref().map_or_else(|| "-".into(), |s| escape(s).into_owned());
    writeln!(out, "name:          {}", opt(&r.name))?;
    writeln!(out, "info-hash:     {}", r.info_hash)?;
    if let (Some(total), Some(pl), Some(pc)) = (r.total_size, r.piece_length, r.piece_count) {
        writeln!(out, "total size:    {total} bytes")?;
        writeln!(out, "pieces:        {pc} x {pl} bytes")?;
        writeln!(out, "private:       {}", if r.private { "yes" } else { "no" })?;
        writeln!(out, "comment:       {}", opt(&r.comment))?;
        writeln!(out, "created by:    {}", opt(&r.created_by))?;
        let date = r.creation_date.map(|d| d.to_string());
        writeln!(out, "creation date: {}", opt(&date))?;
    }
    writeln!(out, "trackers:")?;
    for (i, tier) in r.trackers.iter().enumerate() {
        for t in tier {
            writeln!(out, "  tier {i}: {}", escape(t))?;
        }
    }
    for u in &r.url_list {
        writeln!(out, "  web seed: {}", escape(u))?;
    }
    let padding = r.files.iter().filter(|f| f.padding).count();
    if !r.files.is_empty() {
        writeln!(out, "files (index for --only):")?;
        for f in r.files.iter().filter(|f| !f.padding) {
            writeln!(out, "  {:>3}  {} ({} bytes)", f.index, escape(&f.path), f.length)?;
        }
        if padding > 0 {
            writeln!(out, "  ({padding} padding files hidden)")?;
        }
    }
    if let Some(peers) = &r.peers {
        for p in peers {
            writeln!(out, "peer:          {}", escape(p))?;
        }
    }
    writeln!(out, "magnet:        {}", escape(&r.magnet))
}
