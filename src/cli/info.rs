//! `shoal info`: show what a `.torrent` file or a magnet URI describes, as text or JSON.
//!
//! The JSON keys are a contract for scripts and tests: `kind` (`torrent`|`magnet`), `name`,
//! `info_hash`, `total_size`, `piece_length`, `piece_count`, `multi_file`,
//! `files: [{path, length, offset, padding}]` (path joined with `/` below the torrent root),
//! `trackers` (tiers), `private`, `comment`, `created_by`, `creation_date`, `url_list`,
//! `magnet`; for a magnet also `peers` and `select_only`. Fields unknown for a magnet are null.
use crate::cli::bad_input;
use crate::metainfo::{Magnet, Metainfo};
use clap::Args;
use serde::Serialize;

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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

/// Reads and parses a `.torrent`; both failures are the user's (exit 2), named by file.
pub fn load(path: &str) -> anyhow::Result<Metainfo> {
    let bytes = std::fs::read(path).map_err(|e| bad_input(format!("{path}: cannot read: {e}")))?;
    Metainfo::from_bytes(&bytes).map_err(|e| bad_input(format!("{path}: {e}")))
}

fn from_torrent(m: &Metainfo) -> InfoJson {
    let files = m
        .files
        .iter()
        .map(|f| FileJson {
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

fn print_text(r: &InfoJson) {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("name:          {}", opt(&r.name));
    println!("info-hash:     {}", r.info_hash);
    if let (Some(total), Some(pl), Some(pc)) = (r.total_size, r.piece_length, r.piece_count) {
        println!("total size:    {total} bytes");
        println!("pieces:        {pc} x {pl} bytes");
        println!("private:       {}", if r.private { "yes" } else { "no" });
        println!("comment:       {}", opt(&r.comment));
        println!("created by:    {}", opt(&r.created_by));
        let date = r.creation_date.map(|d| d.to_string());
        println!("creation date: {}", opt(&date));
    }
    println!("trackers:");
    for (i, tier) in r.trackers.iter().enumerate() {
        for t in tier {
            println!("  tier {i}: {t}");
        }
    }
    for u in &r.url_list {
        println!("  web seed: {u}");
    }
    let padding = r.files.iter().filter(|f| f.padding).count();
    if !r.files.is_empty() {
        println!("files:");
        for f in r.files.iter().filter(|f| !f.padding) {
            println!("  {} ({} bytes)", f.path, f.length);
        }
        if padding > 0 {
            println!("  ({padding} padding files hidden)");
        }
    }
    if let Some(peers) = &r.peers {
        for p in peers {
            println!("peer:          {p}");
        }
    }
    println!("magnet:        {}", r.magnet);
}
