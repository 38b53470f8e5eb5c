//! `a-chat-bench`: the load generator, a binary of its own as `redis-benchmark` is. `a-chat
//! bench ARGS` runs it too (it looks for `a-chat-bench` beside the `a-chat` binary).

use std::process::ExitCode;

use clap::Parser;

/// Load-test a server: message rate, delivered messages/s, latency, loss check.
#[derive(Parser)]
#[command(name = "a-chat-bench", version = a_chat::VERSION)]
struct Cli {
    #[command(flatten)]
    bench: a_chat_bench::BenchArgs,
}

fn main() -> ExitCode {
    a_chat_bench::run(Cli::parse().bench)
}
