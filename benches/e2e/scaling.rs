//! Scaling: the same number of synthetic events spread over 10k, 100k and 1M
//! customers, replayed with 1 and 2 shards, each replay in a fresh child
//! process: events/s, MB/s, and the peak resident memory of the replay.

use crate::child::{self, Task};
use crate::machine::{peak_rss_bytes, rss_bytes};
use crate::report::{bytes, rate, Report};
use crate::workload::Workload;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;

#[derive(Serialize, Deserialize)]
pub struct ReplayResult {
    inputs: u64,
    applied: u64,
    customers: u64,
    bytes: u64,
    seconds: f64,
    pub events_per_second: f64,
    rss_before: u64,
    peak_rss: u64,
}

/// Child: replays `path` with `shards` shards on a runtime like `journeyd replay`'s.
pub fn replay(path: PathBuf, shards: usize) -> ReplayResult {
    let mut config = crate::retail_config();
    config.engine.shards = shards;
    let rss_before = rss_bytes();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let s = rt.block_on(journeyd::replay::replay(config, &path, |_, _, _| {})).unwrap_or_else(|e| panic!("replay of {}: {e:#}", path.display()));
    ReplayResult {
        inputs: s.lines,
        applied: s.applied,
        customers: s.customers,
        bytes: s.bytes,
        seconds: s.elapsed_seconds,
        events_per_second: s.events_per_second,
        rss_before,
        peak_rss: peak_rss_bytes(),
    }
}

/// Writes `events` synthetic events over `customers` customers as NDJSON,
/// ending an hour before now (replay refuses events from the future).
fn write_events(path: &std::path::Path, customers: u32, events: u64) -> anyhow::Result<()> {
    let plan = crate::memory::plan();
    let span = Workload::step_for(customers) * (events as i64 + 1);
    let start = journeyd::ingest::nats::wall_ms() - 3_600_000 - span;
    let mut w = Workload::new(&plan, customers, 11, start);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut line = Vec::with_capacity(256);
    for _ in 0..events {
        line.clear();
        let d = w.random();
        w.ndjson(&d, &mut line);
        out.write_all(&line)?;
    }
    out.flush()?;
    Ok(())
}

pub fn run(customer_counts: &[u32], events: u64, report: &mut Report) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("journeyd-bench-scaling-").tempdir()?;
    for &customers in customer_counts {
        let path = dir.path().join(format!("events-{customers}.ndjson"));
        write_events(&path, customers, events)?;
        for shards in [1, 2] {
            let r: ReplayResult = child::run(&Task::Replay { path: path.clone(), shards })?;
            let growth = r.peak_rss.saturating_sub(r.rss_before);
            eprintln!("scaling: {customers} customers, {shards} shard(s): {} , peak {}", rate(r.events_per_second), bytes(r.peak_rss as f64));
            report.info(
                "scaling",
                format!("{} events over {} customers, {shards} shard{}", r.inputs, r.customers, if shards == 1 { "" } else { "s" }),
                format!(
                    "{} · {:.0} MB/s · peak RSS {} (+{}, {:.0} B per customer)",
                    rate(r.events_per_second),
                    r.bytes as f64 / 1e6 / r.seconds,
                    bytes(r.peak_rss as f64),
                    bytes(growth as f64),
                    growth as f64 / r.customers.max(1) as f64
                ),
            );
            if r.applied != r.inputs {
                report.note(format!("scaling: {customers} customers, {shards} shards: only {} of {} inputs applied", r.applied, r.inputs));
            }
        }
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
