//! The `beehive` command line. `main.rs` only calls [`main`]; each command lives in its own
//! module and returns a [`Failure`] that maps to the documented exit codes.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod demo;
mod deploy;
mod inspect;
mod new;
mod ops;
mod publish;
mod run;
mod test;

/// Exit code for runtime failures.
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code for bad usage or bad configuration.
pub const EXIT_USAGE: u8 = 2;

/// Why a command failed, and so which exit code it gets.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or configuration: exit 2.
    Usage(String),
    /// Something failed while running: exit 1.
    Runtime(String),
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Config(_)
            | crate::Error::Validation(_)
            | crate::Error::UnregisteredStream(_)
            | crate::Error::UnregisteredGroup(_)
            | crate::Error::EmptyEvent(_)
            | crate::Error::InvalidMetaKey { .. }
            | crate::Error::InvalidArgument(_) => Failure::Usage(e.to_string()),
            other => Failure::Runtime(other.to_string()),
        }
    }
}

impl From<crate::ConfigError> for Failure {
    fn from(e: crate::ConfigError) -> Self {
        Failure::Usage(e.to_string())
    }
}

/// The result of a command.
pub type CommandResult = Result<(), Failure>;

/// Beehive: an event broker on Redis Streams with WebAssembly consumers.
#[derive(Debug, Parser)]
#[command(name = "beehive", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The `-c/--config` option shared by every command.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The configuration file.
    #[arg(short, long, default_value = "beehive.yaml", env = "BEEHIVE_CONFIG")]
    pub config: PathBuf,
}

impl ConfigArg {
    /// Loads and validates the file.
    pub fn load(&self) -> Result<crate::Config, Failure> {
        Ok(crate::Config::load(&self.config)?)
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every configured consumer, reclaim and GC, until SIGINT/SIGTERM.
    Run(run::RunArgs),
    /// Publish one event and print its ID.
    Publish(publish::PublishArgs),
    /// Show streams, groups, pending and lag.
    Status(inspect::StatusArgs),
    /// Move the pending entries of one consumer to another.
    Claim(inspect::ClaimArgs),
    /// Run one garbage-collection pass and print what it deleted.
    Gc(inspect::GcArgs),
    /// Check the configuration; exit 0 when all is well.
    Validate(inspect::ValidateArgs),
    /// Deploy a component to every host running the group, through Redis.
    Deploy(deploy::DeployArgs),
    /// Restore the group's previously deployed component on every host.
    Rollback(deploy::RollbackArgs),
    /// Print a stream's entries as they arrive (body as JSON), without joining a group.
    Tail(ops::TailArgs),
    /// Print a stream's entries as JSON lines (the input of `beehive test`), without joining
    /// a group.
    Record(ops::RecordArgs),
    /// Republish dead-lettered entries, atomically per entry.
    Redrive(ops::RedriveArgs),
    /// A tour of Beehive on a private redis-server: publish, consume, status, GC.
    Demo(demo::DemoArgs),
    /// Create a handler project (Rust, Python or JavaScript) that builds offline, with test
    /// events and their expectation.
    New(new::NewArgs),
    /// Run a handler component on recorded events, without Redis, and compare what it did
    /// with an expectation file; the last line is `N passed, N failed`.
    Test(test::TestArgs),
}

/// Parses `args` (including the program name), runs the command and returns the exit code.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let level = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "warn"
    };
    init_logging(cli.log_format, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Status(args) => inspect::status(args).await,
            Command::Claim(args) => inspect::claim(args).await,
            Command::Gc(args) => inspect::gc(args).await,
            Command::Validate(args) => inspect::validate(args).await,
            Command::Deploy(args) => deploy::deploy(args).await,
            Command::Rollback(args) => deploy::rollback(args).await,
            Command::Tail(args) => ops::tail(args).await,
            Command::Record(args) => ops::record(args).await,
            Command::Redrive(args) => ops::redrive(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::New(args) => new::run(args).await,
            Command::Test(args) => test::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides `default_level`.
fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
