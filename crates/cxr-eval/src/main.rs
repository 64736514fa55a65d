//! `cxr-eval`: see `cxr-eval --help` and the library's `cli` module.

use clap::Parser;

fn main() {
    let result = cxr_eval::cli::run(cxr_eval::cli::Cli::parse());
    cxr_core::error::exit_on_error("cxr-eval", result)
}
