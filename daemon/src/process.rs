//! What both binaries do around their work: logging to stderr, a tokio runtime, and an exit
//! code with the error printed the way Nix prints errors.

use std::future::Future;
use std::process::ExitCode;

/// Logs to stderr at a level chosen by `-v` flags above `quiet_level` (`RUST_LOG` overrides),
/// coloured when stderr is a terminal.
pub fn init_logging(verbose: u8, quiet_level: &str) {
    let default = match verbose {
        0 => quiet_level,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a terminal: a log file or journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// Runs `main` on a multi-threaded runtime; an error is printed as `error: ...` (with its
/// causes, for errors whose alternate form lists them) and gives exit code 1.
pub fn run_main<E: std::fmt::Display>(main: impl Future<Output = Result<ExitCode, E>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
