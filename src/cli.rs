//! The command line's shape (ARCHITECTURE §2): the subcommands, their flags and their help.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use a_chat::{client, config};

#[derive(Parser)]
#[command(
    name = "a-chat",
    version = a_chat::VERSION,
    propagate_version = true,
    about = "A hardened, observable line-protocol chat daemon"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the chat daemon (built-in defaults without --config).
    Server {
        /// TOML configuration file (see config/a-chat.toml).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Address to listen on (IP:PORT), overriding [server] listen; repeat it for more.
        #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
        listen: Vec<SocketAddr>,
        /// Set one key, as in the file: --set admin.listen=127.0.0.1:9100 (strings may go
        /// without quotes). Repeatable; applied after the file, validated with it, and
        /// again at each reload.
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE", value_parser = config::Setting::parse)]
        sets: Vec<config::Setting>,
    },
    /// Chat interactively: stdin to the server, the server to stdout. Exits 0 when the
    /// conversation ends, 1 when the server closed the connection right after an
    /// `error:` line (a login taken or refused, a line too long, a timeout), 2 on a bad flag.
    Client {
        /// Server address: IP:PORT or HOST:PORT.
        #[arg(default_value = "127.0.0.1:8080", value_parser = client::Target::parse)]
        addr: client::Target,
        #[command(flatten)]
        tls: TlsArgs,
        /// Log in as NAME on a server with authenticated logins: the password is asked
        /// without echo, or read from the A_CHAT_PASSWORD environment variable.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Validate a configuration file and print the effective settings.
    CheckConfig {
        /// The file to check.
        path: PathBuf,
        /// Print nothing when the file is valid (for ExecStartPre: the journal need not
        /// get the whole configuration at every start); errors still go to stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print the users-file line for NAME ([auth] users_file), or with --file write it
    /// there: reads the password without echo on a terminal, or one line from stdin.
    Passwd {
        /// The login the password is for.
        name: String,
        /// Add NAME to this users file, or replace NAME's password in it, keeping every
        /// other line and comment; a new file is created with mode 0600 and its [users]
        /// header. Replaced atomically (a reloading daemon never reads half a file); send
        /// SIGHUP to a running daemon to use it.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Reload a running daemon's configuration and wait for the outcome: exit 0 when it was
    /// applied, 1 when it was refused (the reason is printed; the settings in force stay),
    /// 2 on a bad flag. Asks the admin endpoint (POST /reload) found in --config's [admin]
    /// listen, or at --admin; without one, sends SIGHUP to --pid and cannot tell the outcome.
    /// For systemd: ExecReload=a-chat reload --config FILE --pid $MAINPID
    Reload {
        /// The daemon's configuration file: its [admin] listen says where to ask (the
        /// daemon checks the whole file, and says why it refuses it).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// The admin endpoint's address (IP:PORT), instead of the one in --config.
        #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
        admin: Option<SocketAddr>,
        /// The daemon's process id: where there is no admin endpoint to ask, it gets SIGHUP.
        #[arg(long, value_name = "PID")]
        pid: Option<u32>,
        /// How long to wait for the outcome (a users file with strong hash settings takes
        /// a second or more to check).
        #[arg(long, default_value = "90s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Load-test a server: message rate, delivered messages/s, latency, loss check.
    #[command(
        disable_help_flag = true,
        long_about = "Load-test a server: runs a-chat-bench, the load generator, installed beside a-chat (its own binary, as redis-benchmark is); `a-chat bench --help` shows its help."
    )]
    Bench {
        /// Everything a-chat-bench takes (a-chat bench --help).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
    /// Exit 0 if a daemon at ADDR completes a chat round trip in time, 1 otherwise (for
    /// health checks).
    Probe {
        /// Address to connect to: IP:PORT or HOST:PORT.
        #[arg(default_value = "127.0.0.1:8080", value_parser = client::Target::parse)]
        addr: client::Target,
        /// How long the whole round trip (connect, log in, a line to itself) may take.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        tls: TlsArgs,
        /// Log in as NAME on a server with authenticated logins (password from
        /// A_CHAT_PASSWORD).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
}

/// How `client` and `probe` speak TLS.
#[derive(clap::Args)]
pub struct TlsArgs {
    /// Connect with TLS, trusting the system's certificate authorities (or --ca).
    #[arg(long)]
    tls: bool,
    /// The CA certificate (PEM) that signed the server's certificate [default: the
    /// system's trusted authorities].
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// A client certificate (PEM), for a server that requires mutual TLS (needs --key).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// The name the server's certificate must carry [default: the host of the address].
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
}

impl TlsArgs {
    pub fn options(self) -> Option<client::TlsOptions> {
        if !self.tls {
            return None;
        }
        Some(client::TlsOptions {
            ca: self.ca,
            cert_and_key: self.cert.zip(self.key),
            server_name: self.server_name,
        })
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, config::NotAnAddress> {
    config::parse_addr(s)
}

fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}
