//! The command line: clap definitions and the dispatch to each command.
//!
//! Errors leave here as `anyhow::Error`; an error that is the user's fault (bad flag value,
//! unreadable or invalid torrent, bad magnet, bad config) is wrapped in [`BadInput`] so that
//! `main` exits 2 instead of 1.
use clap::{Parser, Subcommand};
use std::fmt;

pub mod bench;
pub mod client;
pub mod common;
pub mod create;
pub mod daemon;
pub mod download;
pub mod info;
pub mod node;
pub mod progress;
pub mod seed;

#[derive(Parser, Debug)]
#[command(name = "shoal", version, about = "A BitTorrent swarm client and seeder")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make a .torrent file from a file or a directory.
    Create(create::CreateArgs),
    /// Show what a .torrent file or magnet link describes.
    Info(info::InfoArgs),
    /// Download a torrent (a .torrent file or a magnet link).
    Download(download::DownloadArgs),
    /// Seed a file or directory.
    Seed(seed::SeedArgs),
    /// Measure piece throughput on a loopback swarm of generated data.
    Bench(bench::BenchArgs),
    /// Run a DHT node for others to bootstrap from.
    Node(node::NodeArgs),
    /// Run many torrents in one process, managed over an HTTP API.
    Daemon(daemon::DaemonArgs),
    /// Add a .torrent to a running daemon.
    Add(client::AddArgs),
    /// List the daemon's torrents.
    List(client::ListArgs),
    /// Pause one of the daemon's torrents.
    Pause(client::IdArgs),
    /// Resume one of the daemon's torrents.
    Resume(client::IdArgs),
    /// Remove one of the daemon's torrents (`--delete-data` removes its files too).
    Remove(client::RemoveArgs),
    /// Read or change the daemon's configuration: get, set, history, rollback.
    #[command(subcommand)]
    Config(client::ConfigAction),
}

/// A failure caused by the user's input: exit code 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BadInput {}

/// Shorthand to build a bad-input error.
pub fn bad_input(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(msg.into()))
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Create(args) => create::run(args),
        Command::Info(args) => info::run(args),
        Command::Download(args) => block_on_workers(download::run(args), Some(1)),
        Command::Seed(args) => block_on_workers(seed::run(args), Some(1)),
        Command::Bench(args) => block_on(bench::run(args)),
        Command::Node(args) => block_on(node::run(args)),
        Command::Daemon(args) => block_on(daemon::run(args)),
        Command::Add(args) => block_on(client::add(args)),
        Command::List(args) => block_on(client::list(args)),
        Command::Pause(args) => block_on(client::act("pause", args)),
        Command::Resume(args) => block_on(client::act("resume", args)),
        Command::Remove(args) => block_on(client::remove(args)),
        Command::Config(action) => block_on(client::config(action)),
    }
}

/// Runs a command on a fresh runtime with tokio's default worker count (one per core).
fn block_on(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    block_on_workers(command, None)
}

/// Runs a command on a fresh runtime of `workers` threads (`None`: one per core; the
/// `TOKIO_WORKER_THREADS` variable overrides either). Tasks still running at the end (a shutdown
/// cut short) get a moment to finish; a blocking call stuck in the kernel does not hold the exit.
///
/// `download` and `seed` run on one worker: the peer tasks and the torrent task then hand blocks
/// to each other on one thread instead of waking a second one, while hashing and disk I/O still
/// run on the blocking pool. Against one worker per core that spent less CPU per GiB in the
/// harness and moved as much, except on tmpfs (`docs/performance-log.md`, 2026-12-07).
fn block_on_workers(
    command: impl std::future::Future<Output = anyhow::Result<()>>,
    workers: Option<usize>,
) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers.filter(|_| std::env::var_os("TOKIO_WORKER_THREADS").is_none()) {
        builder.worker_threads(n);
    }
    let rt = builder.enable_all().build()?;
    let result = rt.block_on(command);
    rt.shutdown_timeout(std::time::Duration::from_millis(300));
    result
}
