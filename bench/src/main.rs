//! Beehive benchmarks: every figure next to a baseline measured in the same process, on a
//! private redis-server, as medians over interleaved runs.
//!
//! ```sh
//! bash bench/build-guests            # the bench guests (Rust and Python) and examples
//! cargo run --release -p beehive-bench -- all
//! ```

mod consume;
mod publish;
mod report;
mod rss;
mod setup;
mod swap;
mod wasm;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use report::Report;
use setup::Bench;

#[derive(Parser)]
#[command(about = "Beehive benchmarks against baselines measured in the same run")]
struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Interleaved runs of every scenario (medians are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Events per measurement (slow scenarios use a fraction).
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Folder of the built Rust components (bench/build-guests).
    #[arg(long, default_value = "target/wasm32-wasip2/release")]
    components: PathBuf,
    /// The Python bench component; C5 is skipped when it does not exist.
    #[arg(long, default_value = "target/bench/python-noop.wasm")]
    python: PathBuf,
    /// Only these scenarios, e.g. `--only C0,C3` (for profiling one path).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Batch sizes of the consume scenarios.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 1000])]
    batches: Vec<usize>,
}

impl Common {
    async fn bench(&self) -> anyhow::Result<Bench> {
        let mut bench = Bench::start(self.components.clone()).await?;
        bench.only = self.only.clone();
        bench.batches = self.batches.clone();
        Ok(bench)
    }
}

#[derive(Subcommand)]
enum Scenario {
    /// Everything: publishing, consuming, WASM costs, RSS, swap pause.
    All(Common),
    /// Publishing scenarios P0–P3.
    Publish(Common),
    /// Consuming scenarios C0–C7.
    Consume(Common),
    /// Instantiation time and per-event cost of the WASM call.
    Wasm(Common),
    /// RSS of `beehive run` with 10 component groups.
    Rss(Common),
    /// The longest pause in handling around a hot swap, against the longest gap between
    /// batches with no swap, under a steady stream of events.
    Swap {
        /// Folder of the example components (built by scripts/build-examples).
        #[arg(long, default_value = "target/wasm32-wasip2/release")]
        components: PathBuf,
        /// Events per second published.
        #[arg(long, default_value_t = 2000)]
        rate: u32,
        /// Swaps to make (alternating echo and page-views).
        #[arg(long, default_value_t = 20)]
        swaps: u32,
    },
}

const BENCH_GUEST: &str = "beehive_bench_guest.wasm";

fn header(common: &Common) {
    let profile = if cfg!(debug_assertions) {
        "debug build: figures are not representative, use --release"
    } else {
        "release build"
    };
    println!(
        "Beehive benchmark, {} runs, {} events per measurement, {profile}",
        common.runs, common.events
    );
    println!(
        "machine: {} cores; redis-server {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        redis_version()
    );
}

fn redis_version() -> String {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            v.split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".into())
}

async fn publishing(bench: &Bench, common: &Common) -> anyhow::Result<()> {
    let mut report = Report::default();
    for run in 0..common.runs {
        publish::run(bench, &mut report, run, common.events).await?;
    }
    let rows = report.rows(|_, _| Some(("P0", Some(64))));
    report::print_table(
        "Publishing (events/s; P0 is redis-benchmark's ceiling)",
        "P0",
        &rows,
    );
    Ok(())
}

async fn consuming(bench: &Bench, common: &Common) -> anyhow::Result<()> {
    let guests = consume::Guests {
        rust: bench.component(std::path::Path::new(BENCH_GUEST))?,
        python: if common.python.exists() {
            Some(bench.component(&common.python)?)
        } else {
            eprintln!(
                "note: {} not found (bash bench/build-guests builds it): C5 skipped",
                common.python.display()
            );
            None
        },
    };
    let mut report = Report::default();
    for run in 0..common.runs {
        consume::run(bench, &guests, &mut report, run, common.events).await?;
    }
    // Each row against C0 at the same batch size; C6 and C7 against C3 at batch 100.
    let rows = report.rows(|scenario, batch| match scenario {
        "C6" | "C7" => Some(("C3", Some(100))),
        _ => Some(("C0", batch)),
    });
    report::print_table(
        "Consuming (events/s, publish N then drain; C6 and C7 are compared to C3 at batch 100)",
        "C0 same batch",
        &rows,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // On a runtime worker, as `beehive run` runs its consumers (not on the thread that
    // blocks on `main`): baselines and Beehive alike.
    tokio::spawn(run(args)).await?
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::All(common) => {
            header(&common);
            let bench = common.bench().await?;
            publishing(&bench, &common).await?;
            consuming(&bench, &common).await?;
            let guest = bench.component(std::path::Path::new(BENCH_GUEST))?;
            wasm::report(&guest).await?;
            rss::report(&bench, &common.components.join(BENCH_GUEST), 10).await?;
            drop(bench);
            println!();
            swap::run(&common.components, 2000, 20).await
        }
        Scenario::Publish(common) => {
            header(&common);
            publishing(&common.bench().await?, &common).await
        }
        Scenario::Consume(common) => {
            header(&common);
            consuming(&common.bench().await?, &common).await
        }
        Scenario::Wasm(common) => {
            let bench = Bench::start(common.components.clone()).await?;
            wasm::report(&bench.component(std::path::Path::new(BENCH_GUEST))?).await
        }
        Scenario::Rss(common) => {
            let bench = Bench::start(common.components.clone()).await?;
            rss::report(&bench, &common.components.join(BENCH_GUEST), 10).await
        }
        Scenario::Swap {
            components,
            rate,
            swaps,
        } => swap::run(&components, rate, swaps).await,
    }
}
