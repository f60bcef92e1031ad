//! Beehive benchmarks: every figure next to a baseline measured in the same process, on a
//! private redis-server, as medians over interleaved runs.
//!
//! ```sh
//! bash bench/build-guests            # the bench guests (Rust and Python) and examples
//! cargo run --release -p beehive-bench -- all
//! ```

mod cluster;
mod consume;
mod fleet;
mod outputs;
mod publish;
mod report;
mod rss;
mod setup;
mod swap;
mod tooling;
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
    /// Only these scenarios, e.g. `--only C0,C3` (for profiling one path); `cluster` also
    /// takes `single` or `cluster` to run one side only.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Batch sizes of the consume scenarios.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 1000])]
    batches: Vec<usize>,
    /// Events/s of the paced output runs (latency under a steady rate; 0 skips them).
    #[arg(long, default_value_t = 20_000)]
    paced_rate: u32,
    /// Seconds of publishing in each paced output run.
    #[arg(long, default_value_t = 3.0)]
    paced_seconds: f64,
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
    /// Consuming scenarios C0–C7, and C3 with one output per event to a stream of the same
    /// pool (C3-out-same) and of another pool on a second redis-server (C3-out-cross).
    Consume(Common),
    /// C0 and C3 on 3 streams drained at once, on one redis-server and on a private
    /// 3-master Redis Cluster (one stream per master): events/s, Redis and host CPU per
    /// event, and the throughput they project for 1, 3 and 10 masters.
    Cluster(Common),
    /// Instantiation time and per-event cost of the WASM call.
    Wasm(Common),
    /// RSS of `beehive run` with 10 component groups.
    Rss(Common),
    /// A fleet of real `beehive run` processes: 1 host x 4 consumers against 2 hosts x 2,
    /// and the longest waits around a join and a kill -9.
    Fleet {
        /// The release `beehive` binary (cargo build --release -p beehive).
        #[arg(long, default_value = "target/release/beehive")]
        beehive: PathBuf,
        /// The echo component (scripts/build-examples).
        #[arg(
            long,
            default_value = "target/wasm32-wasip2/release/beehive_example_echo.wasm"
        )]
        echo: PathBuf,
        /// Events of each throughput measurement.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Events per second during the join and the kill.
        #[arg(long, default_value_t = 2000)]
        rate: u32,
    },
    /// `beehive test` on recorded events against `beehive run --drain` through Redis.
    Tooling {
        /// The release `beehive` binary (cargo build --release -p beehive).
        #[arg(long, default_value = "target/release/beehive")]
        beehive: PathBuf,
        /// The Rust router component (scripts/build-examples).
        #[arg(
            long,
            default_value = "target/wasm32-wasip2/release/beehive_example_router.wasm"
        )]
        router: PathBuf,
        /// Recorded events.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
    },
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
    // The output scenarios need a second redis-server (for the other pool).
    let mut outputs = if bench.selected(outputs::SAME) || bench.selected(outputs::CROSS) {
        let mut outputs = outputs::Outputs::start(bench, guests.rust.clone()).await?;
        outputs.paced_rate = common.paced_rate;
        outputs.paced_seconds = common.paced_seconds;
        Some(outputs)
    } else {
        None
    };
    let mut report = Report::default();
    for run in 0..common.runs {
        consume::run(bench, &guests, &mut report, run, common.events).await?;
        if let Some(outputs) = &mut outputs {
            for &batch in &bench.batches {
                outputs
                    .run(bench, &mut report, run, batch, common.events)
                    .await?;
            }
            if common.paced_rate > 0 {
                outputs.paced(bench, run, 100).await?;
            }
        }
    }
    let is_output = |scenario: &str| scenario == outputs::SAME || scenario == outputs::CROSS;
    // Each row against C0 at the same batch size; C6 and C7 against C3 at batch 100.
    let rows = report.rows(|scenario, batch| match scenario {
        "C6" | "C7" => Some(("C3", Some(100))),
        _ => Some(("C0", batch)),
    });
    let (output_rows, rows): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|row| is_output(row.scenario));
    if !rows.is_empty() {
        report::print_table(
            "Consuming (events/s, publish N then drain; C6 and C7 are compared to C3 at batch 100)",
            "C0 same batch",
            &rows,
        );
    }
    if !output_rows.is_empty() {
        // Same pool against C3 (the cost of one output per event); cross against same.
        let rows: Vec<_> = report
            .rows(|scenario, batch| match scenario {
                outputs::SAME => Some(("C3", batch)),
                outputs::CROSS => Some((outputs::SAME, batch)),
                _ => None,
            })
            .into_iter()
            .filter(|row| is_output(row.scenario))
            .collect();
        report::print_table(
            "Outputs (events/s until the input is drained and every output is in its target; \
             Redis CPU of both servers)",
            "C3-out-same to C3, C3-out-cross to C3-out-same, same batch",
            &rows,
        );
    }
    if let Some(outputs) = &outputs {
        outputs.print_latencies();
    }
    Ok(())
}

async fn clustering(bench: &Bench, common: &Common) -> anyhow::Result<()> {
    let guest = bench.component(std::path::Path::new(BENCH_GUEST))?;
    let mut cluster = cluster::ClusterBench::start(bench, guest).await?;
    cluster.print_placement();
    for run in 0..common.runs {
        cluster
            .run(bench, run, &bench.batches, common.events)
            .await?;
    }
    cluster.print();
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
        Scenario::Cluster(common) => {
            header(&common);
            clustering(&common.bench().await?, &common).await
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
        Scenario::Fleet {
            beehive,
            echo,
            events,
            rate,
        } => {
            let figures = fleet::run(&beehive, &echo, events, rate).await?;
            fleet::print(&figures);
            Ok(())
        }
        Scenario::Tooling {
            beehive,
            router,
            events,
        } => {
            let figures = tooling::run_tooling(&beehive, &router, events).await?;
            tooling::print(&figures);
            Ok(())
        }
    }
}
