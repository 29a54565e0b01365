//! HDR-histogram latency, exported as the summary `journey_latency_seconds{stage,quantile}`.
//! Each recorder (a shard, the router) owns its own histogram behind its own
//! mutex, locked once per batch; an exporter folds them together every
//! interval and resets them, so the quantiles are those of the most recent
//! interval (with the cumulative count and sum of the same samples, kept by
//! `journey_processing_seconds`, as a summary's `_count` and `_sum`).

use super::{Metrics, Stage};
use hdrhistogram::Histogram;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary};
use prometheus::HistogramVec;
use std::sync::{Arc, Mutex};

const QUANTILES: [(f64, &str); 5] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (0.999, "0.999"), (1.0, "1")];

fn new_hist() -> Histogram<u64> {
    // 1 ns .. 60 s at 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid HDR bounds")
}

/// One recorder's histogram for one stage.
#[derive(Clone)]
pub struct Recorder {
    stage: Stage,
    hist: Arc<Mutex<Histogram<u64>>>,
}

impl Recorder {
    /// Records a batch of nanosecond samples under one lock.
    pub fn record_all(&self, nanos: &[u64]) {
        if nanos.is_empty() {
            return;
        }
        let mut h = self.hist.lock().unwrap_or_else(|p| p.into_inner());
        for &n in nanos {
            h.saturating_record(n.max(1));
        }
    }
}

/// Every recorder, for the exporter.
#[derive(Default)]
pub struct LatencyHub {
    recorders: Mutex<Vec<Recorder>>,
}

impl LatencyHub {
    pub fn recorder(&self, stage: Stage) -> Recorder {
        let r = Recorder { stage, hist: Arc::new(Mutex::new(new_hist())) };
        self.recorders.lock().unwrap_or_else(|p| p.into_inner()).push(r.clone());
        r
    }

    /// Folds and resets every recorder; sets the quantile gauges of stages that had samples.
    pub fn export(&self, metrics: &Metrics) -> Vec<(Stage, Histogram<u64>)> {
        let recorders = self.recorders.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out: Vec<(Stage, Histogram<u64>)> = Vec::new();
        for r in recorders {
            let mut h = r.hist.lock().unwrap_or_else(|p| p.into_inner());
            let agg = match out.iter_mut().find(|(s, _)| *s == r.stage) {
                Some((_, agg)) => agg,
                None => {
                    out.push((r.stage, new_hist()));
                    &mut out.last_mut().expect("just pushed").1
                }
            };
            let _ = agg.add(&*h);
            h.reset();
        }
        for (stage, h) in &out {
            if h.is_empty() {
                continue;
            }
            metrics.latency.set(*stage, QUANTILES.map(|(q, _)| h.value_at_quantile(q) as f64 / 1e9));
        }
        out
    }
}

/// One stage's latest quantiles, in seconds, in [`QUANTILES`] order.
type Quantiles = [f64; QUANTILES.len()];

/// `journey_latency_seconds`, a Prometheus summary per stage: the quantiles
/// of the last export interval, `_count` and `_sum` of every sample.
#[derive(Clone)]
pub struct LatencySummary {
    desc: Desc,
    latest: Arc<Mutex<Vec<(Stage, Quantiles)>>>,
    processing: HistogramVec,
}

impl LatencySummary {
    /// `processing`: `journey_processing_seconds`, which times the same samples.
    pub fn new(processing: HistogramVec) -> LatencySummary {
        let desc = Desc::new(
            "journey_latency_seconds".into(),
            "Per-event latency quantiles over the last 5 s (HDR histogram), by stage.".into(),
            vec!["stage".into()],
            Default::default(),
        )
        .expect("static metric definition");
        LatencySummary { desc, latest: Arc::default(), processing }
    }

    /// Sets a stage's quantiles (in seconds, in [`QUANTILES`] order).
    pub fn set(&self, stage: Stage, values: Quantiles) {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        match latest.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, v)) => *v = values,
            None => latest.push((stage, values)),
        }
    }

    /// A stage's latest quantile `label` (e.g. `"0.99"`), in seconds.
    pub fn get(&self, stage: Stage, label: &str) -> Option<f64> {
        let i = QUANTILES.iter().position(|(_, l)| *l == label)?;
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(s, _)| *s == stage).map(|(_, v)| v[i])
    }
}

impl Collector for LatencySummary {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if latest.is_empty() {
            return Vec::new();
        }
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        for (stage, values) in latest {
            let all = self.processing.with_label_values(&[stage.as_str()]);
            let mut summary = Summary::default();
            summary.set_sample_count(all.get_sample_count());
            summary.set_sample_sum(all.get_sample_sum());
            summary.set_quantile(
                QUANTILES
                    .iter()
                    .zip(values)
                    .map(|((q, _), v)| {
                        let mut quantile = Quantile::default();
                        quantile.set_quantile(*q);
                        quantile.set_value(v);
                        quantile
                    })
                    .collect(),
            );
            let mut label = LabelPair::default();
            label.set_name("stage".into());
            label.set_value(stage.as_str().into());
            let mut metric = Metric::default();
            metric.set_label(vec![label]);
            metric.set_summary(summary);
            family.mut_metric().push(metric);
        }
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Plan;

    #[test]
    fn latency_is_a_summary_with_the_quantiles_of_the_interval_and_every_sample_counted() {
        let plan = Plan::new(crate::config::parse("").expect("config").config);
        let metrics = Metrics::new(&plan);
        let hub = LatencyHub::default();
        assert!(!metrics.render().contains("journey_latency_seconds"), "no series before a sample");
        let engine = hub.recorder(Stage::Engine);
        engine.record_all(&[1_000, 2_000, 3_000]);
        for s in [1e-6, 2e-6, 3e-6] {
            metrics.processing.with_label_values(&[Stage::Engine.as_str()]).observe(s);
        }
        hub.export(&metrics);
        let text = metrics.render();
        assert!(text.contains("# TYPE journey_latency_seconds summary"), "{text}");
        let line = |name: &str| text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {text}")).to_string();
        let value = |name: &str| line(name).rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).expect("a value");
        // HDR keeps three significant digits.
        let near = |x: f64, want: f64| (x - want).abs() <= want * 1e-3;
        assert!(near(value("journey_latency_seconds{stage=\"engine\",quantile=\"0.5\"}"), 2e-6), "{text}");
        assert!(near(value("journey_latency_seconds{stage=\"engine\",quantile=\"1\"}"), 3e-6), "{text}");
        assert_eq!(value("journey_latency_seconds_count{stage=\"engine\"}"), 3.0);
        assert!(near(value("journey_latency_seconds_sum{stage=\"engine\"}"), 6e-6), "{text}");
        assert!(metrics.latency.get(Stage::Engine, "0.99").is_some_and(|v| near(v, 3e-6)));
    }
}
