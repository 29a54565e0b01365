//! Every metric journeyd exports, registered once in one place. Names and
//! labels are the DESIGN.md contract; label values come only from the
//! config's bounded vocabulary (see `catalog`). Hot paths do not touch this
//! registry per event: shards hold pre-resolved local handles (`local.rs`).

pub mod durations;
pub mod latency;
pub mod local;
pub mod recent;

use crate::event::RejectReason;
use crate::model::segment::cell_labels;
use crate::model::Plan;
use prometheus::{
    CounterVec, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::Mutex;

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
const LATENCY_BUCKETS: &[f64] =
    &[0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// The `event` label values of `journey_nats_connection_events_total`, all
/// exported from start-up (at 0), so that an alert on `increase()` sees the
/// first one: async-nats reports a slow consumer once per dropped message,
/// and a series born at its first value shows no increase.
pub const NATS_EVENTS: [&str; 8] = ["connected", "disconnected", "lame_duck", "draining", "closed", "slow_consumer", "server_error", "client_error"];

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
    /// JetStream input only: messages of the stream journeyd has not applied yet.
    pub consumer_lag: Option<IntGauge>,
    pub latency: latency::LatencySummary,
    pub attributed: CounterVec,
    pub attributed_by_mode: CounterVec,
    /// Per model, per stage: the exact customer count (pre-resolved).
    pub stage_gauges: Vec<Vec<IntGauge>>,
    pub dlq_by_reason: Vec<IntCounter>,
    pub funnels: Vec<FunnelMetrics>,
    pub funnel_entered: IntCounterVec,
    pub funnel_completed_by_channel: IntCounterVec,
    /// The nine cells of the segment matrix, `purchase * 3 + engagement`.
    pub segment_cells: Vec<IntGauge>,
    pub recent: recent::RecentTransitions,
    /// Per trigger: sent per channel (in the trigger's channel order), suppressed per reason.
    pub triggers: Vec<TriggerMetrics>,
}

pub struct TriggerMetrics {
    pub sent: Vec<(crate::catalog::ChannelId, IntCounter)>,
    pub suppressed: Vec<IntCounter>,
}

/// One funnel's pre-resolved handles and its time-to-convert distribution.
pub struct FunnelMetrics {
    pub steps: Vec<IntCounter>,
    pub dropped_at: Vec<IntCounter>,
    pub completed: IntCounter,
    pub duration: Histogram,
    /// Milliseconds from step 1 to completion, for the funnel API's quantiles.
    pub durations_ms: Mutex<durations::Durations>,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(v.clone())).expect("metric registered once");
    v
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    r.register(Box::new(c.clone())).expect("metric registered once");
    c
}

impl Metrics {
    pub fn new(plan: &Plan) -> Metrics {
        let r = Registry::new();
        let events = counter_vec(&r, "journey_events_total", "Events applied, by channel and kind.", &["channel", "kind"]);
        let transitions = counter_vec(
            &r,
            "journey_transitions_total",
            "Stage transitions, by model, stages and the channel that caused them (none for timers).",
            &["model", "from", "to", "channel"],
        );
        let customers = IntGaugeVec::new(Opts::new("journey_customers", "Customers currently in each stage of each model."), &["model", "stage"])
            .expect("static metric definition");
        r.register(Box::new(customers.clone())).expect("metric registered once");
        let channel_touches = counter_vec(
            &r,
            "journey_channel_touches_total",
            "Events by channel, its service mode, and the customer's stage (first model) when touched.",
            &["channel", "mode", "stage"],
        );
        let processing = HistogramVec::new(
            HistogramOpts::new("journey_processing_seconds", "Time spent per event, by processing stage.").buckets(LATENCY_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("static metric definition");
        r.register(Box::new(processing.clone())).expect("metric registered once");
        let dlq = counter_vec(&r, "journey_dlq_total", "Inputs refused to journey.dlq, by reason.", &["reason"]);
        let late = counter(&r, "journey_late_events_total", "Events older than the watermark, published to journey.late and not applied.");
        let duplicates = counter(&r, "journey_duplicates_total", "Events whose id was already seen within the dedup window.");
        let merges = counter(&r, "journey_identity_merges_total", "Customers merged because an event linked their ids.");
        let queue_depth =
            IntGaugeVec::new(Opts::new("journey_shard_queue_depth", "Batches waiting in each shard's queue."), &["shard"]).expect("static metric definition");
        r.register(Box::new(queue_depth.clone())).expect("metric registered once");
        let nats_events =
            counter_vec(&r, "journey_nats_connection_events_total", "NATS connection events (connected, disconnected, slow_consumer, ...).", &["event"]);
        let watermark = Gauge::new("journey_watermark_seconds", "The event-time watermark, in unix seconds.").expect("static metric definition");
        r.register(Box::new(watermark.clone())).expect("metric registered once");
        let consumer_lag = plan.config.nats.jetstream.as_ref().map(|_| {
            let g = IntGauge::new(
                "journey_consumer_lag_messages",
                "JetStream input: messages of the stream not yet delivered to journeyd plus those delivered and not yet acknowledged.",
            )
            .expect("static metric definition");
            r.register(Box::new(g.clone())).expect("metric registered once");
            g
        });
        let latency = latency::LatencySummary::new(processing.clone());
        r.register(Box::new(latency.clone())).expect("metric registered once");

        let attributed = CounterVec::new(
            Opts::new(
                "journey_attributed_transitions_total",
                "Credit for event-caused transitions, by model, target stage, channel and attribution model; each transition's credit sums to 1.",
            ),
            &["model", "to", "channel", "attribution"],
        )
        .expect("static metric definition");
        r.register(Box::new(attributed.clone())).expect("metric registered once");
        let attributed_by_mode = CounterVec::new(
            Opts::new("journey_attributed_by_mode_total", "Attributed credit by service mode (tech, low, high touch)."),
            &["model", "to", "mode", "attribution"],
        )
        .expect("static metric definition");
        r.register(Box::new(attributed_by_mode.clone())).expect("metric registered once");
        let funnel_step = counter_vec(&r, "journey_funnel_step_total", "Funnel steps reached.", &["funnel", "step"]);
        let funnel_completed = counter_vec(&r, "journey_funnel_completed_total", "Funnel attempts that reached the last step.", &["funnel"]);
        let funnel_dropped = counter_vec(
            &r,
            "journey_funnel_dropped_total",
            "Funnel attempts that ended unfinished (window passed or exclusion), by the first step not reached.",
            &["funnel", "at_step"],
        );
        let funnel_duration = HistogramVec::new(
            HistogramOpts::new("journey_funnel_duration_seconds", "Event time from a funnel's first step to its completion.").buckets(vec![
                1.0,
                10.0,
                60.0,
                300.0,
                900.0,
                3600.0,
                6.0 * 3600.0,
                86_400.0,
                3.0 * 86_400.0,
                7.0 * 86_400.0,
                14.0 * 86_400.0,
                30.0 * 86_400.0,
            ]),
            &["funnel"],
        )
        .expect("static metric definition");
        r.register(Box::new(funnel_duration.clone())).expect("metric registered once");
        let funnel_entered =
            counter_vec(&r, "journey_funnel_entered_total", "Funnel attempts started, by the channel of the first step.", &["funnel", "channel"]);
        let funnel_completed_by_channel =
            counter_vec(&r, "journey_funnel_completed_by_channel_total", "Funnel completions, by the channel the attempt entered on.", &["funnel", "channel"]);
        let funnels = plan
            .funnels
            .iter()
            .map(|f| FunnelMetrics {
                steps: f.steps.iter().map(|s| funnel_step.with_label_values(&[f.name.as_str(), s.label.as_str()])).collect(),
                dropped_at: f.steps.iter().map(|s| funnel_dropped.with_label_values(&[f.name.as_str(), s.label.as_str()])).collect(),
                completed: funnel_completed.with_label_values(&[f.name.as_str()]),
                duration: funnel_duration.with_label_values(&[f.name.as_str()]),
                durations_ms: Mutex::default(),
            })
            .collect();
        let segments = IntGaugeVec::new(
            Opts::new("journey_segment_customers", "Customers per cell of purchase activity x engagement activity (high, low, none)."),
            &["purchase", "engagement"],
        )
        .expect("static metric definition");
        r.register(Box::new(segments.clone())).expect("metric registered once");
        let segment_cells = (0..9u8)
            .map(|c| {
                let (p, e) = cell_labels(c);
                segments.with_label_values(&[p, e])
            })
            .collect();
        let triggers_sent = counter_vec(&r, "journey_triggers_total", "Triggered messages sent, by trigger and the channel chosen.", &["trigger", "channel"]);
        let triggers_suppressed = counter_vec(
            &r,
            "journey_triggers_suppressed_total",
            "Due triggers not sent, by reason (consent, cap, quiet_hours, cancelled).",
            &["trigger", "reason"],
        );
        let triggers = plan
            .triggers
            .iter()
            .map(|t| TriggerMetrics {
                sent: t.channels.iter().map(|ch| (*ch, triggers_sent.with_label_values(&[t.name.as_str(), plan.catalog.channel_name(*ch)]))).collect(),
                suppressed: crate::trigger::Suppressed::ALL.iter().map(|r| triggers_suppressed.with_label_values(&[t.name.as_str(), r.as_str()])).collect(),
            })
            .collect();
        let stage_gauges = plan.models.iter().map(|m| m.stages.iter().map(|s| customers.with_label_values(&[m.name.as_str(), s.as_str()])).collect()).collect();
        let dlq_by_reason = RejectReason::ALL.iter().map(|r| dlq.with_label_values(&[r.as_str()])).collect();
        for s in Stage::ALL {
            processing.with_label_values(&[s.as_str()]);
        }
        for e in NATS_EVENTS {
            nats_events.with_label_values(&[e]);
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
            consumer_lag,
            latency,
            attributed,
            attributed_by_mode,
            stage_gauges,
            dlq_by_reason,
            funnels,
            funnel_entered,
            funnel_completed_by_channel,
            segment_cells,
            recent: recent::RecentTransitions::new(plan.catalog.channel_count()),
            triggers,
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
        plan.models.iter().zip(&self.stage_gauges).map(|(m, g)| (m.name.clone(), m.stages.iter().cloned().zip(g.iter().map(IntGauge::get)).collect())).collect()
    }
}

/// The most series each metric can have under a config: every label value
/// comes from the config's vocabulary, so this bound holds whatever the input.
pub fn worst_case_series(plan: &Plan) -> Vec<(&'static str, usize)> {
    let c = plan.catalog.channel_count();
    let k = plan.catalog.kind_count();
    let stages: Vec<usize> = plan.models.iter().map(|m| m.stages.len()).collect();
    let all_stages: usize = stages.iter().sum();
    // Without models, touches are labelled with the stage `none`.
    let first = stages.first().copied().unwrap_or(1);
    let methods = plan.attribution.methods.len();
    let f = plan.funnels.len();
    let steps: usize = plan.funnels.iter().map(|f| f.steps.len()).sum();
    let hist = |buckets: usize| buckets + 3; // buckets + +Inf, _sum, _count
    vec![
        ("journey_events_total", c * k),
        ("journey_transitions_total", stages.iter().map(|s| s * s * c).sum()),
        ("journey_customers", all_stages),
        ("journey_channel_touches_total", c * first),
        ("journey_attributed_transitions_total", all_stages * c * methods),
        ("journey_attributed_by_mode_total", all_stages * 4 * methods),
        ("journey_funnel_step_total", steps),
        ("journey_funnel_completed_total", f),
        ("journey_funnel_dropped_total", steps),
        ("journey_funnel_duration_seconds", f * hist(12)),
        ("journey_funnel_entered_total", f * c),
        ("journey_funnel_completed_by_channel_total", f * c),
        ("journey_segment_customers", 9),
        ("journey_triggers_total", plan.triggers.iter().map(|t| t.channels.len()).sum()),
        ("journey_triggers_suppressed_total", plan.triggers.len() * 4),
        ("journey_processing_seconds", Stage::ALL.len() * hist(LATENCY_BUCKETS.len())),
        ("journey_latency_seconds", Stage::ALL.len() * 7),
        ("journey_dlq_total", RejectReason::ALL.len()),
        ("journey_late_events_total", 1),
        ("journey_duplicates_total", 1),
        ("journey_identity_merges_total", 1),
        ("journey_shard_queue_depth", crate::engine::shard_count(&plan.config.engine)),
        ("journey_nats_connection_events_total", NATS_EVENTS.len()),
        ("journey_watermark_seconds", 1),
        ("journey_consumer_lag_messages", usize::from(plan.config.nats.jetstream.is_some())),
    ]
}
