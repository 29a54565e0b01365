//! Live summaries for the HTTP API, read from the metrics the shards keep:
//! funnel conversion (`/v1/funnels`) and customers and recent transitions
//! (`/v1/stats`). Nothing here touches a shard.

use crate::metrics::Metrics;
use crate::model::segment::cell_labels;
use crate::model::Plan;
use prometheus::core::Collector;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct FunnelReport {
    pub name: String,
    pub window_seconds: f64,
    pub steps: Vec<StepReport>,
    pub completed: u64,
    pub dropped: u64,
    /// Completed / entered.
    pub conversion: f64,
    pub median_seconds_to_convert: Option<f64>,
    pub p90_seconds_to_convert: Option<f64>,
    pub by_entry_channel: BTreeMap<String, ChannelConversion>,
}

#[derive(Debug, Serialize)]
pub struct StepReport {
    pub step: String,
    pub reached: u64,
    /// Reached this step / reached step 1.
    pub conversion_from_start: f64,
    /// Reached this step / reached the previous step.
    pub conversion_from_previous: f64,
    pub dropped_here: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct ChannelConversion {
    pub entered: u64,
    pub completed: u64,
    pub conversion: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// (label value of `label`, counter value) of every series of `vec` whose `funnel` label is `funnel`.
fn by_label(vec: &prometheus::IntCounterVec, funnel: &str, label: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for family in vec.collect() {
        for m in family.get_metric() {
            let labels = m.get_label();
            if labels.iter().any(|l| l.name() == "funnel" && l.value() == funnel) {
                if let Some(l) = labels.iter().find(|l| l.name() == label) {
                    out.push((l.value().to_string(), m.get_counter().get_value() as u64));
                }
            }
        }
    }
    out
}

pub fn funnels(plan: &Plan, metrics: &Metrics) -> Vec<FunnelReport> {
    plan.funnels
        .iter()
        .zip(&metrics.funnels)
        .map(|(f, m)| {
            let reached: Vec<u64> = m.steps.iter().map(|c| c.get()).collect();
            let first = reached.first().copied().unwrap_or(0);
            let steps = f
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| StepReport {
                    step: s.label.clone(),
                    reached: reached[i],
                    conversion_from_start: ratio(reached[i], first),
                    conversion_from_previous: if i == 0 { 1.0 } else { ratio(reached[i], reached[i - 1]) },
                    dropped_here: m.dropped_at[i].get(),
                })
                .collect();
            // Copied out, so the shards recording completions wait for a copy, not a sort.
            let durations = m.durations_ms.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let [median, p90] = durations.quantiles_ms([0.5, 0.9]).map(|q| q.map(|ms| ms / 1000.0));
            let mut by_entry_channel: BTreeMap<String, ChannelConversion> = BTreeMap::new();
            for (ch, n) in by_label(&metrics.funnel_entered, &f.name, "channel") {
                by_entry_channel.entry(ch).or_default().entered = n;
            }
            for (ch, n) in by_label(&metrics.funnel_completed_by_channel, &f.name, "channel") {
                by_entry_channel.entry(ch).or_default().completed = n;
            }
            for c in by_entry_channel.values_mut() {
                c.conversion = ratio(c.completed, c.entered);
            }
            let completed = m.completed.get();
            FunnelReport {
                name: f.name.clone(),
                window_seconds: f.window as f64 / 1000.0,
                steps,
                completed,
                dropped: m.dropped_at.iter().map(|c| c.get()).sum(),
                conversion: ratio(completed, first),
                median_seconds_to_convert: median,
                p90_seconds_to_convert: p90,
                by_entry_channel,
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct Stats {
    /// model → stage → customers.
    pub customers: BTreeMap<String, BTreeMap<String, i64>>,
    /// Transitions in the last minute and hour of wall-clock time, by channel.
    pub transitions_last_minute: BTreeMap<String, u64>,
    pub transitions_last_hour: BTreeMap<String, u64>,
    /// purchase activity → engagement activity → customers.
    pub segments: BTreeMap<String, BTreeMap<String, i64>>,
    pub watermark_ms: i64,
}

pub fn stats(plan: &Plan, metrics: &Metrics, now_ms: i64) -> Stats {
    let customers = metrics.stage_counts(plan).into_iter().map(|(m, st)| (m, st.into_iter().collect())).collect();
    let now = now_ms / 1000;
    let named = |counts: Vec<u64>| -> BTreeMap<String, u64> {
        plan.catalog.channels().zip(counts).filter(|(_, n)| *n > 0).map(|((_, name), n)| (name.to_string(), n)).collect()
    };
    let mut segments: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (cell, g) in metrics.segment_cells.iter().enumerate() {
        let (p, e) = cell_labels(cell as u8);
        segments.entry(p.to_string()).or_default().insert(e.to_string(), g.get());
    }
    Stats {
        customers,
        transitions_last_minute: named(metrics.recent.last(now, 60)),
        transitions_last_hour: named(metrics.recent.last(now, 3600)),
        segments,
        watermark_ms: (metrics.watermark.get() * 1000.0).round() as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_is_reported_to_the_millisecond() {
        let plan = Plan::new(crate::config::parse("").expect("config").config);
        let metrics = Metrics::new(&plan);
        // Set as the router sets the gauge (seconds); truncating gave 1 ms less.
        let watermark: i64 = 1_090_863_873_475;
        metrics.watermark.set(watermark as f64 / 1000.0);
        assert_eq!(stats(&plan, &metrics, 0).watermark_ms, watermark);
    }
}
