//! Collecting samples across interleaved runs and printing the table.

use std::collections::BTreeMap;

/// One measurement: a scenario at a batch size in one run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Scenario key, e.g. `C3`.
    pub scenario: &'static str,
    /// What the scenario is.
    pub label: &'static str,
    /// Batch size (or events per flush), when it applies.
    pub batch: Option<usize>,
    /// Events per second.
    pub rate: f64,
    /// Which interleaved run it belongs to.
    pub run: usize,
    /// Redis CPU time per event, in µs, when measured.
    pub redis_us: Option<f64>,
}

/// Samples of every run; ratios compare samples of the same run.
#[derive(Default)]
pub struct Report {
    samples: Vec<Sample>,
}

/// A table row: rates over runs and the median of per-run ratios to the baseline.
pub struct Row {
    /// Scenario key.
    pub scenario: &'static str,
    /// Description.
    pub label: &'static str,
    /// Batch size.
    pub batch: Option<usize>,
    /// Median, min, max events/s.
    pub median: f64,
    /// Slowest run.
    pub min: f64,
    /// Fastest run.
    pub max: f64,
    /// Median over runs of rate / baseline rate of the same run.
    pub ratio: Option<f64>,
    /// Number of runs.
    pub runs: usize,
    /// Median Redis CPU time per event, in µs, when measured.
    pub redis_us: Option<f64>,
}

impl Report {
    /// Records one measurement and prints it as it comes.
    pub fn add(&mut self, sample: Sample) {
        eprintln!(
            "  run {} {:<3} {:<44} {:>6} {:>12.0} events/s",
            sample.run + 1,
            sample.scenario,
            sample.label,
            sample.batch.map(|b| b.to_string()).unwrap_or_default(),
            sample.rate
        );
        self.samples.push(sample);
    }

    /// Rows in scenario order; `baseline(scenario, batch)` names the row each is compared to.
    pub fn rows(
        &self,
        baseline: impl Fn(&str, Option<usize>) -> Option<(&'static str, Option<usize>)>,
    ) -> Vec<Row> {
        let mut by_key: BTreeMap<(&str, Option<usize>), Vec<&Sample>> = BTreeMap::new();
        let mut order = Vec::new();
        for s in &self.samples {
            let key = (s.scenario, s.batch);
            if !by_key.contains_key(&key) {
                order.push(key);
            }
            by_key.entry(key).or_default().push(s);
        }
        order
            .into_iter()
            .map(|key| {
                let samples = &by_key[&key];
                let rates: Vec<f64> = samples.iter().map(|s| s.rate).collect();
                let cpu: Vec<f64> = samples.iter().filter_map(|s| s.redis_us).collect();
                let ratio = baseline(key.0, key.1).and_then(|base| {
                    let base = by_key.get(&base)?;
                    let ratios: Vec<f64> = samples
                        .iter()
                        .filter_map(|s| {
                            let b = base.iter().find(|b| b.run == s.run)?;
                            Some(s.rate / b.rate)
                        })
                        .collect();
                    (!ratios.is_empty()).then(|| median(&ratios))
                });
                Row {
                    scenario: key.0,
                    label: samples[0].label,
                    batch: key.1,
                    median: median(&rates),
                    min: rates.iter().copied().fold(f64::INFINITY, f64::min),
                    max: rates.iter().copied().fold(0.0, f64::max),
                    ratio,
                    runs: rates.len(),
                    redis_us: (!cpu.is_empty()).then(|| median(&cpu)),
                }
            })
            .collect()
    }
}

/// The median (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Prints rows as a Markdown table (it goes into the README as is).
pub fn print_table(title: &str, baseline_note: &str, rows: &[Row]) {
    println!();
    println!("{title}");
    println!();
    let cpu = rows.iter().any(|r| r.redis_us.is_some());
    println!(
        "| scenario | | batch | events/s median | min | max | ratio to baseline ({baseline_note}) |{}",
        if cpu { " Redis CPU µs/event |" } else { "" }
    );
    println!(
        "|---|---|---:|---:|---:|---:|---:|{}",
        if cpu { "---:|" } else { "" }
    );
    for row in rows {
        let cpu = match (cpu, row.redis_us) {
            (false, _) => String::new(),
            (true, Some(us)) => format!(" {us:.2} |"),
            (true, None) => " – |".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |{cpu}",
            row.scenario,
            row.label,
            row.batch
                .map(|b| b.to_string())
                .unwrap_or_else(|| "–".into()),
            thousands(row.median),
            thousands(row.min),
            thousands(row.max),
            row.ratio
                .map(|r| format!("{r:.2}×"))
                .unwrap_or_else(|| "–".into()),
        );
    }
    if let Some(row) = rows.first() {
        println!();
        println!("({} interleaved runs per row)", row.runs);
    }
}

/// `123456.7` → `123.5k`.
pub fn thousands(rate: f64) -> String {
    if rate >= 1000.0 {
        format!("{:.1}k", rate / 1000.0)
    } else {
        format!("{rate:.0}")
    }
}
