//! `cxr-eval`: see `cxr-eval --help` and the library's `cli` module.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match cxr_eval::cli::run(cxr_eval::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
