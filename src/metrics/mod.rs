//! Every metric journeyd exports, registered once in one place. Names and
//! labels are the DESIGN.md contract; label values come only from the
//! config's bounded vocabulary (see `catalog`). Hot paths do not touch this
//! registry per event: shards hold pre-resolved local handles (`local.rs`).

pub mod latency;
pub mod local;

use crate::event::RejectReason;
use crate::model::Plan;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Processing stages timed in `journey_processing_seconds{stage}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Decode,
    Engine,
    EndToEnd,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Decode, Stage::Engine, Stage::EndToEnd];
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Engine => "engine",
            Stage::EndToEnd => "end_to_end",
        }
    }
}

/// Latency buckets from 5 µs to 1 s: journeyd's budget is sub-millisecond.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

pub struct Metrics {
    pub registry: Registry,
    pub events: IntCounterVec,
    pub transitions: IntCounterVec,
    pub customers: IntGaugeVec,
    pub channel_touches: IntCounterVec,
    pub processing: HistogramVec,
    pub dlq: IntCounterVec,
    pub late: IntCounter,
    pub duplicates: IntCounter,
    pub merges: IntCounter,
    pub queue_depth: IntGaugeVec,
    pub nats_events: IntCounterVec,
    pub watermark: Gauge,
    pub latency: GaugeVec,
    /// Per model, per stage: the exact customer count (pre-resolved).
    pub stage_gauges: Vec<Vec<IntGauge>>,
    pub dlq_by_reason: Vec<IntCounter>,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(v.clone()))
        .expect("metric registered once");
    v
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Metrics {
    pub fn new(plan: &Plan) -> Metrics {
        let r = Registry::new();
        let events = counter_vec(
            &r,
            "journey_events_total",
            "Events applied, by channel and kind.",
            &["channel", "kind"],
        );
        let transitions = counter_vec(&r, "journey_transitions_total", "Stage transitions, by model, stages and the channel that caused them (none for timers).", &["model", "from", "to", "channel"]);
        let customers = IntGaugeVec::new(
            Opts::new(
                "journey_customers",
                "Customers currently in each stage of each model.",
            ),
            &["model", "stage"],
        )
        .expect("static metric definition");
        r.register(Box::new(customers.clone()))
            .expect("metric registered once");
        let channel_touches = counter_vec(&r, "journey_channel_touches_total", "Events by channel, its service mode, and the customer's stage (first model) when touched.", &["channel", "mode", "stage"]);
        let processing = HistogramVec::new(
            HistogramOpts::new(
                "journey_processing_seconds",
                "Time spent per event, by processing stage.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("static metric definition");
        r.register(Box::new(processing.clone()))
            .expect("metric registered once");
        let dlq = counter_vec(
            &r,
            "journey_dlq_total",
            "Inputs refused to journey.dlq, by reason.",
            &["reason"],
        );
        let late = counter(
            &r,
            "journey_late_events_total",
            "Events older than the watermark, published to journey.late and not applied.",
        );
        let duplicates = counter(
            &r,
            "journey_duplicates_total",
            "Events whose id was already seen within the dedup window.",
        );
        let merges = counter(
            &r,
            "journey_identity_merges_total",
            "Customers merged because an event linked their ids.",
        );
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "journey_shard_queue_depth",
                "Batches waiting in each shard's queue.",
            ),
            &["shard"],
        )
        .expect("static metric definition");
        r.register(Box::new(queue_depth.clone()))
            .expect("metric registered once");
        let nats_events = counter_vec(
            &r,
            "journey_nats_connection_events_total",
            "NATS connection events (connected, disconnected, slow_consumer, ...).",
            &["event"],
        );
        let watermark = Gauge::new(
            "journey_watermark_seconds",
            "The event-time watermark, in unix seconds.",
        )
        .expect("static metric definition");
        r.register(Box::new(watermark.clone()))
            .expect("metric registered once");
        let latency = GaugeVec::new(
            Opts::new(
                "journey_latency_seconds",
                "Recent per-event latency quantiles from an HDR histogram.",
            ),
            &["stage", "quantile"],
        )
        .expect("static metric definition");
        r.register(Box::new(latency.clone()))
            .expect("metric registered once");

        let stage_gauges = plan
            .models
            .iter()
            .map(|m| {
                m.stages
                    .iter()
                    .map(|s| customers.with_label_values(&[m.name.as_str(), s.as_str()]))
                    .collect()
            })
            .collect();
        let dlq_by_reason = RejectReason::ALL
            .iter()
            .map(|r| dlq.with_label_values(&[r.as_str()]))
            .collect();
        for s in Stage::ALL {
            processing.with_label_values(&[s.as_str()]);
        }
        Metrics {
            registry: r,
            events,
            transitions,
            customers,
            channel_touches,
            processing,
            dlq,
            late,
            duplicates,
            merges,
            queue_depth,
            nats_events,
            watermark,
            latency,
            stage_gauges,
            dlq_by_reason,
        }
    }

    pub fn rejected(&self, reason: RejectReason) {
        self.dlq_by_reason[reason.index()].inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = enc.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Customers per stage per model, as counted by the gauges.
    pub fn stage_counts(&self, plan: &Plan) -> Vec<(String, Vec<(String, i64)>)> {
        plan.models
            .iter()
            .zip(&self.stage_gauges)
            .map(|(m, g)| {
                (
                    m.name.clone(),
                    m.stages
                        .iter()
                        .cloned()
                        .zip(g.iter().map(IntGauge::get))
                        .collect(),
                )
            })
            .collect()
    }
}
