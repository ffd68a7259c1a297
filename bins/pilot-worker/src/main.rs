//! pilot-worker: parses the configuration once, starts tracing, and hands over to `app::run`.
//! An error is printed once, with its chain, and the process exits non-zero.

mod app;
mod cli;
mod metrics_http;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Err(e) = pilot_boot::init_tracing(&cli.log) {
        let _ = writeln!(std::io::stderr(), "error: {e:#}");
        return ExitCode::FAILURE;
    }
    match app::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
