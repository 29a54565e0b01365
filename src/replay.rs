//! `journeyd replay`: the live engine over an NDJSON file (one event per line,
//! channel and kind in the payload), as fast as it goes. At the end of input
//! the watermark advances to the largest event time, so every timer due by
//! then fires. Bad lines are reported with their line number and skipped.

use crate::config::Config;
use crate::engine::{Engine, Outcome, Sink};
use crate::metrics::latency::LatencyHub;
use crate::metrics::Metrics;
use crate::model::Plan;
use anyhow::Context;
use bytes::{Buf, BytesMut};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt;

/// Bad lines printed one by one before only counting them.
const REPORTED_BAD_LINES: usize = 100;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub lines: u64,
    pub bytes: u64,
    pub applied: u64,
    pub refused: u64,
    pub refused_by_reason: BTreeMap<&'static str, u64>,
    pub late: u64,
    pub duplicates: u64,
    pub customers: u64,
    pub merges: u64,
    /// model → stage → customers, in config order.
    pub stages: Vec<ModelStages>,
    pub elapsed_seconds: f64,
    pub events_per_second: f64,
    #[serde(skip)]
    pub metrics_text: String,
}

#[derive(Debug, Serialize)]
pub struct ModelStages {
    pub model: String,
    pub stages: Vec<StageCount>,
}

#[derive(Debug, Serialize)]
pub struct StageCount {
    pub stage: String,
    pub customers: i64,
}

/// What became of the lines read so far.
#[derive(Default)]
struct Tally {
    applied: u64,
    refused: u64,
    late: u64,
    dups: u64,
    by_reason: BTreeMap<&'static str, u64>,
}

impl Tally {
    /// Counts line `line`'s outcome; the first [`REPORTED_BAD_LINES`] refusals go to `on_bad`.
    fn add(&mut self, line: u64, outcome: Outcome, on_bad: &mut impl FnMut(u64, &str, &str)) {
        match outcome {
            Outcome::Accepted => self.applied += 1,
            Outcome::Late => self.late += 1,
            Outcome::Duplicate => self.dups += 1,
            Outcome::Rejected(r) => {
                self.refused += 1;
                *self.by_reason.entry(r.reason.as_str()).or_default() += 1;
                if self.refused <= REPORTED_BAD_LINES as u64 {
                    on_bad(line, r.reason.as_str(), &r.detail);
                }
            }
        }
    }
}

/// Replays `path`; bad lines go to `on_bad(line_number, reason, detail)`.
pub async fn replay(config: Config, path: &Path, mut on_bad: impl FnMut(u64, &str, &str)) -> anyhow::Result<Summary> {
    let plan = Arc::new(Plan::new(config));
    let metrics = Arc::new(Metrics::new(&plan));
    let latency = Arc::new(LatencyHub::default());
    let (engine, mut router) = Engine::start(plan.clone(), metrics.clone(), latency.clone(), Sink::Discard);
    let mut file = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
    let started = Instant::now();
    let now_ms = crate::ingest::nats::wall_ms();
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut tally = Tally::default();
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut eof = false;
    // A line longer than any event may be is refused (as oversized) from
    // what has been read of it, and the rest of it is skipped, not buffered.
    let max_line = plan.config.limits.max_event_bytes.saturating_add(2);
    let mut skipping = false;
    while !eof || !buf.is_empty() {
        let newline = memchr::memchr(b'\n', &buf);
        if newline.is_none() && !eof {
            if skipping {
                buf.clear();
            } else if buf.len() > max_line {
                lines += 1;
                tally.add(lines, router.ingest(&buf, None, Instant::now(), now_ms).await, &mut on_bad);
                buf.clear();
                skipping = true;
            }
            buf.reserve(1 << 20);
            let n = file.read_buf(&mut buf).await.with_context(|| format!("reading {}", path.display()))?;
            eof = n == 0;
            bytes += n as u64;
            continue;
        }
        let end = newline.unwrap_or(buf.len());
        if skipping {
            // The end of the over-long line, already counted.
            buf.advance((end + 1).min(buf.len()));
            skipping = false;
            continue;
        }
        // The line is read in place and the buffer advanced past it: a
        // split-off `Bytes` per line would cost two reference-count updates.
        lines += 1;
        let mut line = &buf[..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            tally.add(lines, router.ingest(line, None, Instant::now(), now_ms).await, &mut on_bad);
        }
        buf.advance((end + 1).min(buf.len()));
    }
    router.finish_input().await;
    router.barrier().await;
    let customers = router.resolver().customers();
    engine.shutdown(router).await;
    let elapsed = started.elapsed().as_secs_f64();
    let stages = metrics
        .stage_counts(&plan)
        .into_iter()
        .map(|(model, st)| ModelStages { model, stages: st.into_iter().map(|(stage, customers)| StageCount { stage, customers }).collect() })
        .collect();
    let Tally { applied, refused, late, dups, by_reason } = tally;
    Ok(Summary {
        lines,
        bytes,
        applied,
        refused,
        refused_by_reason: by_reason,
        late,
        duplicates: dups,
        customers,
        merges: metrics.merges.get(),
        stages,
        elapsed_seconds: elapsed,
        events_per_second: (applied + late + dups + refused) as f64 / elapsed.max(1e-9),
        metrics_text: metrics.render(),
    })
}

impl Summary {
    /// The human-readable summary.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "replayed {} lines ({:.1} MB) in {:.2} s: {:.0} events/s",
            self.lines,
            self.bytes as f64 / 1e6,
            self.elapsed_seconds,
            self.events_per_second
        );
        let _ = writeln!(s, "applied {}, refused {}, late {}, duplicates {}", self.applied, self.refused, self.late, self.duplicates);
        for (reason, n) in &self.refused_by_reason {
            let _ = writeln!(s, "  refused {reason}: {n}");
        }
        let _ = writeln!(s, "customers {}, identity merges {}", self.customers, self.merges);
        for m in &self.stages {
            let _ = writeln!(s, "\n{}:", m.model);
            let width = m.stages.iter().map(|st| st.stage.len()).max().unwrap_or(0);
            for st in &m.stages {
                let _ = writeln!(s, "  {:width$}  {:>10}", st.stage, st.customers);
            }
        }
        s
    }
}
