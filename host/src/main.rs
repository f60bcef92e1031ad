//! The `beehive` binary: parses arguments and hands over to [`beehive::cli`].

fn main() -> std::process::ExitCode {
    beehive::cli::main(std::env::args_os())
}
