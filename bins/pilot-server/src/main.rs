//! pilot-server: parses the configuration once, starts tracing, and hands over to `app::run`.
//! An error is printed once, with its chain, and the process exits non-zero.

mod app;
mod cli;
mod files;

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse_args();
    if let Err(e) = pilot_boot::init_tracing(&cli.config.log) {
        let _ = writeln!(std::io::stderr(), "error: {e:#}");
        return ExitCode::FAILURE;
    }
    // Before anything opens the database or writes a key: a new data directory is private.
    if let Err(e) = files::prepare(&cli.config.database) {
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
