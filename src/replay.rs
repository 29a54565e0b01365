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

/// Replays `path`; bad lines go to `on_bad(line_number, reason, detail)`.
pub async fn replay(config: Config, path: &Path, mut on_bad: impl FnMut(u64, &str, &str)) -> anyhow::Result<Summary> {
    let plan = Arc::new(Plan::new(config));
    let metrics = Arc::new(Metrics::new(&plan));
    let latency = Arc::new(LatencyHub::default());
    let (engine, mut router) = Engine::start(plan.clone(), metrics.clone(), latency.clone(), Sink::Discard);
    let mut file = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
    let started = Instant::now();
    let now_ms = crate::ingest::nats::wall_ms();
    let (mut lines, mut bytes, mut applied, mut refused, mut late, mut dups) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut by_reason: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut eof = false;
    while !eof || !buf.is_empty() {
        let newline = memchr::memchr(b'\n', &buf);
        if newline.is_none() && !eof {
            buf.reserve(1 << 20);
            let n = file.read_buf(&mut buf).await.with_context(|| format!("reading {}", path.display()))?;
            eof = n == 0;
            bytes += n as u64;
            continue;
        }
        // The line is read in place and the buffer advanced past it: a
        // split-off `Bytes` per line would cost two reference-count updates.
        let end = newline.unwrap_or(buf.len());
        lines += 1;
        let mut line = &buf[..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            match router.ingest(line, None, Instant::now(), now_ms).await {
                Outcome::Accepted => applied += 1,
                Outcome::Late => late += 1,
                Outcome::Duplicate => dups += 1,
                Outcome::Rejected(r) => {
                    refused += 1;
                    *by_reason.entry(r.reason.as_str()).or_default() += 1;
                    if refused <= REPORTED_BAD_LINES as u64 {
                        on_bad(lines, r.reason.as_str(), &r.detail);
                    }
                }
            }
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
