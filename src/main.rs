//! The `inferno` binary: parses the command line and hands over to [`inferno::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = inferno::cli::Cli::parse();
    match inferno::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
