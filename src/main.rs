//! Temporary entry point of the `bench` branch: only the `bench` subcommand.
//! The daemon's own main replaces this when the branches meet.

mod bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "a-chat",
    version,
    about = "A hardened, observable line-protocol chat daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load-test a server: message rate, delivered messages/s, latency, loss check
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Bench(args) => bench::run(args),
    }
}
