//! The sandbox's helper stages as a program of their own, for the crate's tests and for
//! hosts that do not run the daemon's binary (the daemon re-executes itself instead).

use std::process::ExitCode;

fn main() -> ExitCode {
    match pkgchain_sandbox::stages::run_stage_if_requested() {
        Some(code) => code,
        None => {
            eprintln!(
                "pkgchain-sandbox: this program only runs the sandbox's helper stages \
                 ({}), started by the daemon",
                pkgchain_sandbox::stages::STAGE1_ARG
            );
            ExitCode::from(2)
        }
    }
}
