//! Replay: the simulator's NDJSON through decode, dedup, identity and the
//! engine on every core (`[engine] shards = 0`), as `journeyd replay` runs it;
//! events/s and MB/s, and the final stages checked against the simulator's
//! ground truth, so a fast wrong answer does not pass for a result.

use crate::report::{rate, Report};
use journeyd::allocator::{THP_CONF, THP_ENV};
use journeyd::config::Config;
use journeyd::replay::Summary;
use journeyd::sim::{Generated, SimEvent};
use std::io::Write;
use std::path::Path;

/// Simulated inputs per person with examples/retail.toml (measured: ~12.9).
const INPUTS_PER_PERSON: usize = 13;

/// About `inputs` simulated inputs ending a minute before now.
pub fn simulate(config: &Config, inputs: usize) -> Generated {
    let now = journeyd::ingest::nats::wall_ms();
    journeyd::sim::generate(config, (inputs / INPUTS_PER_PERSON).max(1), 6, now)
}

/// Writes one payload per line.
pub fn write_ndjson(events: &[SimEvent], path: &Path) -> anyhow::Result<u64> {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut bytes = 0;
    for e in events {
        w.write_all(&e.payload)?;
        w.write_all(b"\n")?;
        bytes += e.payload.len() as u64 + 1;
    }
    w.flush()?;
    Ok(bytes)
}

pub fn run(config: &Config, traffic: &Generated, path: &Path, report: &mut Report) -> anyhow::Result<()> {
    let mut config = config.clone();
    config.engine.shards = 0;
    let shards = journeyd::engine::shard_count(&config.engine);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let summary = rt.block_on(journeyd::replay::replay(config, path, |_, _, _| {}))?;
    drop(rt);
    let mb_s = summary.bytes as f64 / 1e6 / summary.elapsed_seconds;
    eprintln!("replay: {} inputs in {:.2} s: {}, {mb_s:.0} MB/s", summary.lines, summary.elapsed_seconds, rate(summary.events_per_second));
    report.at_least(
        "replay",
        format!("simulator NDJSON, {} inputs, {shards} shard{}: decode + engine", summary.lines, if shards == 1 { "" } else { "s" }),
        format!("{} ({mb_s:.0} MB/s)", rate(summary.events_per_second)),
        (summary.events_per_second, 1e6),
        "≥ 1M events/s",
    );
    let thp: crate::scaling::ReplayResult =
        crate::child::run_with_env(&crate::child::Task::Replay { path: path.to_path_buf(), shards }, &[(THP_ENV, THP_CONF)])?;
    eprintln!("replay with {THP_ENV}={THP_CONF}: {}", rate(thp.events_per_second));
    report.info("replay", format!("the same, {THP_ENV}={THP_CONF} (transparent huge pages)"), rate(thp.events_per_second));
    let check = compare(&summary, traffic);
    report.info("replay", "final stages vs the simulator's truth", if check.is_empty() { "identical".to_string() } else { format!("**differs**: {check}") });
    Ok(())
}

/// What differs between a replay and the truth (empty: nothing).
fn compare(s: &Summary, g: &Generated) -> String {
    let t = &g.truth;
    let mut diffs = Vec::new();
    for (what, got, want) in
        [("applied", s.applied, t.events), ("customers", s.customers, t.customers), ("duplicates", s.duplicates, t.duplicates), ("late", s.late, t.late)]
    {
        if got != want {
            diffs.push(format!("{what} {got} (truth {want})"));
        }
    }
    for m in &s.stages {
        for st in &m.stages {
            let want = t.stages.get(&m.model).and_then(|x| x.get(&st.stage)).copied().unwrap_or(0);
            if st.customers != want as i64 {
                diffs.push(format!("{}.{} {} (truth {want})", m.model, st.stage, st.customers));
            }
        }
    }
    diffs.join(", ")
}
