//! `shoal info`: PENDING (helper task).
use clap::Args;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A .torrent file or a magnet URI.
    pub input: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: InfoArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
