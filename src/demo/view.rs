//! The demo's live terminal view: one screen, redrawn every second, of what
//! journeyd is doing: events/s, customers per stage, the top transitions,
//! which channels get the credit, funnel conversion, triggered messages and
//! latency.

use crate::metrics::{Metrics, Stage};
use crate::model::Plan;
use prometheus::core::Collector;
use std::fmt::Write;

/// Sum and per-label-set values of a metric family, read from the registry.
fn samples(c: &dyn Collector) -> Vec<(Vec<(String, String)>, f64)> {
    let mut out = Vec::new();
    for family in c.collect() {
        let kind = family.get_field_type();
        for m in family.get_metric() {
            let labels = m.get_label().iter().map(|l| (l.name().to_string(), l.value().to_string())).collect();
            let v = match kind {
                prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                prometheus::proto::MetricType::GAUGE => m.get_gauge().get_value(),
                _ => continue,
            };
            out.push((labels, v));
        }
    }
    out
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> &'a str {
    labels.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
}

/// Total events counted so far (applied, refused, late and duplicate).
pub fn events_seen(m: &Metrics) -> f64 {
    samples(&m.events).iter().map(|(_, v)| v).sum::<f64>()
        + samples(&m.dlq).iter().map(|(_, v)| v).sum::<f64>()
        + m.late.get() as f64
        + m.duplicates.get() as f64
}

/// Renders one screen. `rate` is events/s over the last interval.
pub fn render(plan: &Plan, m: &Metrics, rate: f64, elapsed_secs: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "journeyd demo  {elapsed_secs:>6.0}s   {rate:>9.0} events/s   {:>10.0} events in all", events_seen(m));
    let _ = writeln!(
        s,
        "refused {:>6}   late {:>6}   duplicates {:>6}   identity merges {:>6}",
        samples(&m.dlq).iter().map(|(_, v)| v).sum::<f64>(),
        m.late.get(),
        m.duplicates.get(),
        m.merges.get()
    );
    for (model, stages) in m.stage_counts(plan) {
        let _ = writeln!(s, "\n{model}");
        let total: i64 = stages.iter().map(|(_, n)| n).sum::<i64>().max(1);
        for (stage, n) in stages {
            let bar = "#".repeat(((n as f64 / total as f64) * 40.0).round() as usize);
            let _ = writeln!(s, "  {stage:14} {n:>9}  {bar}");
        }
    }
    let mut transitions = samples(&m.transitions);
    transitions.sort_by(|a, b| b.1.total_cmp(&a.1));
    let _ = writeln!(s, "\ntop transitions");
    for (labels, v) in transitions.iter().take(8) {
        let _ = writeln!(
            s,
            "  {:10} {:>12} -> {:12} via {:12} {v:>9}",
            label(labels, "model"),
            label(labels, "from"),
            label(labels, "to"),
            label(labels, "channel")
        );
    }
    let mut by_channel: Vec<(String, f64)> = Vec::new();
    for (labels, v) in samples(&m.attributed) {
        if label(&labels, "attribution") != "linear" {
            continue;
        }
        let ch = label(&labels, "channel").to_string();
        match by_channel.iter_mut().find(|(c, _)| *c == ch) {
            Some(e) => e.1 += v,
            None => by_channel.push((ch, v)),
        }
    }
    by_channel.sort_by(|a, b| b.1.total_cmp(&a.1));
    let _ = writeln!(s, "\nchannel effect (linear attribution, transitions credited)");
    for (ch, v) in by_channel.iter().take(8) {
        let mode = plan.catalog.channel(ch).and_then(|id| plan.catalog.channel_mode(id)).map_or("?", |md| md.as_str());
        let _ = writeln!(s, "  {ch:14} {mode:5} {v:>10.1}");
    }
    for f in crate::stats::funnels(plan, m) {
        let steps: Vec<String> = f.steps.iter().map(|st| format!("{} {}", st.step, st.reached)).collect();
        let _ = writeln!(s, "\nfunnel {}: {}  (conversion {:.1}%)", f.name, steps.join(" → "), f.conversion * 100.0);
    }
    if !plan.triggers.is_empty() {
        let _ = writeln!(s, "\ntriggers          sent   by channel                      held back (consent/cap/quiet/cancelled)");
        for (t, tm) in plan.triggers.iter().zip(&m.triggers) {
            let sent: u64 = tm.sent.iter().map(|(_, c)| c.get()).sum();
            let by: Vec<String> =
                tm.sent.iter().filter(|(_, c)| c.get() > 0).map(|(ch, c)| format!("{} {}", plan.catalog.channel_name(*ch), c.get())).collect();
            let held: Vec<String> = tm.suppressed.iter().map(|c| c.get().to_string()).collect();
            let _ = writeln!(s, "  {:14} {sent:>7}   {:31} {}", t.name, by.join(", "), held.join("/"));
        }
    }
    let q = |stage: Stage, quant: &str| m.latency.get(stage, quant).map_or(0.0, |v| v * 1e6);
    let _ = writeln!(
        s,
        "\nlatency (µs, last interval)  end-to-end p50 {:>7.0}  p99 {:>7.0}   engine p99 {:>5.1}",
        q(Stage::EndToEnd, "0.5"),
        q(Stage::EndToEnd, "0.99"),
        q(Stage::Engine, "0.99")
    );
    s
}
