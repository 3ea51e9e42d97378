//! The `shoal` binary: parse the command line, run, map errors to exit codes
//! (0 done, 1 failure at run time, 2 bad usage or bad input).
//!
//! The command line lives here, not in the library: [`cli`] (clap, indicatif, anyhow) is
//! compiled only into this binary, with the default `cli` feature.
#![forbid(unsafe_code)]
use clap::Parser;
use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal: {e:#}");
            if e.chain().any(|c| c.is::<cli::BadInput>()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
