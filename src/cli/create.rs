//! `shoal create`: PENDING (helper task).
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// File or directory to describe.
    pub path: PathBuf,
    /// Where to write the .torrent file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

pub fn run(_args: CreateArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
