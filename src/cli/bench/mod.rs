//! `shoal bench`: runs the loopback swarm benchmark of [`engine`] and prints MiB/s per
//! leecher and for the swarm (or JSON with `--json`).
use crate::cli::bad_input;
use crate::cli::common::{human_bytes, init_logging};
use crate::cli::create::parse_size;
use clap::{Args, ValueEnum};
use engine::{self as bench, BenchConfig};

mod engine;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Transport {
    Tcp,
    Libp2p,
    Quic,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Bytes of generated content.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub size: u64,
    /// Piece size.
    #[arg(long = "piece-size", default_value = "1MiB", value_parser = parse_size)]
    pub piece_size: u64,
    #[arg(long, default_value_t = 1)]
    pub seeders: usize,
    #[arg(long, default_value_t = 1)]
    pub leechers: usize,
    /// How the peers talk: plain TCP, or encrypted libp2p streams over TCP or QUIC.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: Transport,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    init_logging(true);
    if args.seeders == 0 || args.leechers == 0 {
        return Err(bad_input("--seeders and --leechers must be at least 1"));
    }
    if args.size == 0 {
        return Err(bad_input("--size must be more than 0"));
    }
    let piece_size = shoal::metainfo::create::check_piece_length(args.piece_size)
        .map_err(|e| bad_input(format!("--piece-size: {e}")))?;
    let transport = match args.transport {
        Transport::Tcp => bench::Transport::Tcp,
        Transport::Libp2p => bench::Transport::Libp2p,
        Transport::Quic => bench::Transport::Quic,
    };
    let cfg = BenchConfig {
        transport,
        size: args.size,
        piece_size,
        seeders: args.seeders,
        leechers: args.leechers,
        ..Default::default()
    };
    if !args.json {
        eprintln!(
            "bench: {} in {} pieces, {} seeder(s) -> {} leecher(s) over {} on 127.0.0.1",
            human_bytes(cfg.size as f64),
            human_bytes(piece_size as f64),
            cfg.seeders,
            cfg.leechers,
            transport.describe()
        );
    }
    let report = bench::run(&cfg).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("set-up (generate, create, seeder check): {:.1} s", report.setup_seconds);
    for (i, l) in report.per_leecher.iter().enumerate() {
        println!("leecher {i}: {:.2} s, {:.1} MiB/s", l.seconds, l.mib_per_s);
    }
    println!(
        "swarm: {:.1} MiB/s ({} delivered in {:.2} s)",
        report.swarm_mib_per_s,
        human_bytes((report.size * report.leechers as u64) as f64),
        report.wall_seconds
    );
    if let (Some(cpu), Some(per_gib)) = (report.cpu_seconds, report.cpu_seconds_per_gib) {
        println!("cpu: {cpu:.2} s for the whole swarm, {per_gib:.2} s per GiB delivered");
    }
    Ok(())
}
