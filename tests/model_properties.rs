//! Invariants of the engine over random event sequences, through
//! `journeyd::replay::replay`: kinds and channels the config does not know,
//! ids from a small pool (so customers merge, across shards too), times out
//! of order and far apart (so events are late and timers fire), duplicates.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::io::Write;

const DAY: i64 = 86_400_000;

/// Two models (one with a count window, a min_value and a timer), closed
/// channels, two shards (for merges across them).
const CONFIG: &str = r#"
[time]
allowed_lateness = "5s"

[engine]
shards = 2

[channels]
app = "tech"
web = "tech"
sms = "low"
store = "high"

[[model]]
name = "lifecycle"
initial = "visitor"
stages = ["visitor", "registered", "customer", "repeat", "loyal", "dormant", "reactivated"]
transitions = [
  { from = ["visitor"], to = "registered", on = { kind = "signup" } },
  { from = ["visitor", "registered"], to = "customer", on = { kind = "purchase" } },
  { from = ["customer", "reactivated"], to = "repeat", on = { kind = "purchase" } },
  { from = ["repeat"], to = "loyal", on = { kind = "purchase", count = 3, within = "30d" } },
  { from = ["registered", "customer", "repeat", "loyal"], to = "dormant", after_inactivity = "20d" },
  { from = ["dormant"], to = "reactivated", on = { kind = "*" } },
]

[[model]]
name = "tier"
initial = "member"
stages = ["member", "silver", "gold"]
transitions = [
  { from = ["member"], to = "silver", on = { kind = "purchase", count = 2, within = "10d" } },
  { from = ["silver"], to = "gold", on = { kind = "purchase", channel = ["store"], min_value = 100.0 } },
]
"#;

const KINDS: [&str; 5] = ["signup", "purchase", "view", "login", "mystery"];
const CHANNELS: [&str; 5] = ["app", "web", "sms", "store", "fax"];
const ID_TYPES: [&str; 3] = ["user_id", "anonymous_id", "phone"];
/// How far an event is from the previous one: mostly forward, sometimes back.
const STEPS: [i64; 9] = [0, 1_000, 3_600_000, DAY, 7 * DAY, 25 * DAY, -3_000, -10_000, -DAY];

/// One generated event before it is laid out in time.
#[derive(Debug, Clone)]
struct Gen {
    kind: usize,
    channel: usize,
    ids: Vec<(usize, u8)>,
    step: usize,
    value: Option<u16>,
    /// Reuse the id of an earlier event (a duplicate when that one was applied).
    repeat_id: Option<usize>,
}

fn gen_event() -> impl Strategy<Value = Gen> {
    (
        0..KINDS.len(),
        0..CHANNELS.len(),
        prop::collection::vec((0..ID_TYPES.len(), 0u8..4), 1..3),
        0..STEPS.len(),
        prop::option::of(0u16..300),
        prop::option::weighted(0.1, 0usize..64),
    )
        .prop_map(|(kind, channel, ids, step, value, repeat_id)| Gen { kind, channel, ids, step, value, repeat_id })
}

/// Lays generated events out as NDJSON lines, starting 300 days ago and never past yesterday.
fn ndjson(events: &[Gen]) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis() as i64;
    let (start, last) = (now - 300 * DAY, now - DAY);
    let mut ts = start;
    let mut out = String::new();
    for (i, g) in events.iter().enumerate() {
        ts = (ts + STEPS[g.step]).clamp(start, last);
        let id = match g.repeat_id {
            Some(j) if j < i => format!("e{j}"),
            _ => format!("e{i}"),
        };
        let ids: Map<String, Value> = g.ids.iter().map(|(t, n)| (ID_TYPES[*t].to_string(), json!(format!("{}-{n}", ID_TYPES[*t])))).collect();
        let mut ev = json!({"id": id, "ts": ts, "ids": ids, "channel": CHANNELS[g.channel], "kind": KINDS[g.kind]});
        if let Some(v) = g.value {
            ev["value"] = json!(v);
        }
        out.push_str(&ev.to_string());
        out.push('\n');
    }
    out
}

fn run_replay(events: &[Gen]) -> journeyd::replay::Summary {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(ndjson(events).as_bytes()).expect("write NDJSON");
    let config = journeyd::config::parse(CONFIG).expect("valid config").config;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(journeyd::replay::replay(config, file.path(), |_, _, _| {})).expect("replay runs")
}

/// The nine `journey_segment_customers` gauges in a `/metrics` text.
fn segment_cells(metrics: &str) -> Vec<f64> {
    metrics.lines().filter(|l| l.starts_with("journey_segment_customers{")).filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn every_models_stage_counts_and_the_segment_cells_sum_to_the_customers(events in prop::collection::vec(gen_event(), 1..60)) {
        let summary = run_replay(&events);

        prop_assert_eq!(summary.stages.len(), 2);
        for model in &summary.stages {
            prop_assert!(model.stages.iter().all(|s| s.customers >= 0), "{:?}", model);
            let total: i64 = model.stages.iter().map(|s| s.customers).sum();
            prop_assert_eq!(total, summary.customers as i64, "model {}: {:?}", model.model, model.stages);
        }
        let cells = segment_cells(&summary.metrics_text);
        prop_assert_eq!(cells.len(), 9, "{:?}", cells);
        prop_assert!(cells.iter().all(|c| *c >= 0.0), "{:?}", cells);
        prop_assert_eq!(cells.iter().sum::<f64>(), summary.customers as f64, "segment cells: {:?}", cells);
    }

    #[test]
    fn every_line_is_applied_refused_late_or_a_duplicate_exactly_once(events in prop::collection::vec(gen_event(), 1..60)) {
        let summary = run_replay(&events);

        prop_assert_eq!(summary.applied + summary.refused + summary.late + summary.duplicates, events.len() as u64);
        prop_assert_eq!(summary.refused_by_reason.values().sum::<u64>(), summary.refused);
    }
}
