//! HDR-histogram latency, exported as `journey_latency_seconds{stage,quantile}`.
//! Each recorder (a shard, the router) owns its own histogram behind its own
//! mutex, locked once per batch; an exporter folds them together every
//! interval and resets them, so the gauges show the most recent interval.

use super::{Metrics, Stage};
use hdrhistogram::Histogram;
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
            for (q, label) in QUANTILES {
                metrics.latency.with_label_values(&[stage.as_str(), label]).set(h.value_at_quantile(q) as f64 / 1e9);
            }
        }
        out
    }
}
