//! The engine against the independent reference: `journeyd sim` traffic for the
//! example configs, replayed through the real engine (`journeyd::replay`), must
//! end in exactly the stage counts `sim::reference` computed, with the same
//! numbers of customers, applied, refused, duplicate and late inputs.

mod common;

use journeyd::config::{self, Config};
use journeyd::replay::{replay, Summary};
use journeyd::sim::{generate, SimArgs, Truth};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const PEOPLE: usize = 2000;

fn example(name: &str) -> (PathBuf, Config) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}")).config;
    (path, config)
}

/// What the engine said, in the truth's shape.
fn engine_answer(s: &Summary) -> Truth {
    let stages: BTreeMap<String, BTreeMap<String, u64>> =
        s.stages.iter().map(|m| (m.model.clone(), m.stages.iter().map(|st| (st.stage.clone(), st.customers.max(0) as u64)).collect())).collect();
    Truth { customers: s.customers, stages, events: s.applied, dlq: s.refused, duplicates: s.duplicates, late: s.late }
}

async fn engine_agrees(name: &str, seed: u64) {
    let (_, config) = example(name);
    let now = chrono::Utc::now().timestamp_millis();
    let generated = generate(&config, PEOPLE, seed, now);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    {
        let mut w = std::io::BufWriter::new(file.as_file_mut());
        for e in &generated.events {
            w.write_all(&e.payload).unwrap();
            w.write_all(b"\n").unwrap();
        }
        w.flush().unwrap();
    }
    let summary = replay(config, file.path(), |_, _, _| {}).await.unwrap();
    let engine = engine_answer(&summary);
    assert_eq!(engine, generated.truth, "{name}, seed {seed}: the engine (left) differs from the reference (right)");
}

#[tokio::test]
async fn retail_seed_1() {
    engine_agrees("retail.toml", 1).await;
}

#[tokio::test]
async fn retail_seed_2() {
    engine_agrees("retail.toml", 2).await;
}

#[tokio::test]
async fn retail_seed_3() {
    engine_agrees("retail.toml", 3).await;
}

#[tokio::test]
async fn wealth_seed_1() {
    engine_agrees("wealth.toml", 1).await;
}

#[tokio::test]
async fn wealth_seed_2() {
    engine_agrees("wealth.toml", 2).await;
}

#[tokio::test]
async fn wealth_seed_3() {
    engine_agrees("wealth.toml", 3).await;
}

/// `sim --out` writes the same NDJSON and truth files the library API gives.
#[tokio::test]
async fn sim_out_writes_ndjson_and_the_truth() {
    let (path, config) = example("retail.toml");
    let dir = tempfile::tempdir().unwrap();
    let (out, truth) = (dir.path().join("events.ndjson"), dir.path().join("truth.json"));
    let args = SimArgs {
        config: path,
        customers: 200,
        rate: 0.0,
        duration: None,
        seed: 11,
        nats_url: None,
        jetstream: false,
        out: Some(out.clone()),
        verify: None,
        verify_timeout: std::time::Duration::from_secs(1),
        truth: Some(truth.clone()),
    };
    assert_eq!(journeyd::sim::run(args).await.unwrap(), 0);
    let written: Truth = serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
    let summary = replay(config, &out, |_, _, _| {}).await.unwrap();
    assert_eq!(engine_answer(&summary), written);
}

/// Mistakes in `sim`'s arguments are told at once, before any traffic is generated.
#[tokio::test]
async fn sim_refuses_a_bad_verify_address_or_output_path_up_front() {
    let (path, _) = example("retail.toml");
    let dir = tempfile::tempdir().unwrap();
    let args = |out: Option<std::path::PathBuf>, verify: Option<&str>| SimArgs {
        config: path.clone(),
        customers: 10,
        rate: 0.0,
        duration: None,
        seed: 1,
        nats_url: None,
        jetstream: false,
        out,
        verify: verify.map(str::to_string),
        verify_timeout: std::time::Duration::from_secs(30),
        truth: None,
    };
    let err = |a| async move { format!("{:#}", journeyd::sim::run(a).await.expect_err("refused")) };
    assert!(err(args(None, Some("not-a-url"))).await.contains("only http:// URLs"));
    assert!(err(args(Some(dir.path().to_path_buf()), None)).await.contains("is a directory"));
    assert!(err(args(Some(dir.path().join("no/such/x.ndjson")), None)).await.contains("no such directory"));
}

/// A config that packs the tricky parts into a few ids and days: two chained
/// inactivity durations, `count` windows with `min_value`, a channel rule, a
/// `merge_order` unlike `stages`, one user id per customer, groups of four ids
/// at most, and four shards so that merges cross shards.
const TIGHT: &str = r#"
[time]
allowed_lateness = "5s"

[engine]
shards = 4

[identity]
priority = ["user_id", "phone", "anonymous_id"]
max_ids_per_type = { user_id = 1 }
max_group_size = 4

[channels]
app = "tech"
web = "tech"
sms = "low"
store = "high"

[[model]]
name = "life"
initial = "visitor"
stages = ["visitor", "registered", "customer", "repeat", "loyal", "at_risk", "dormant", "reactivated"]
transitions = [
  { from = ["visitor"], to = "registered", on = { kind = "signup" } },
  { from = ["visitor", "registered"], to = "customer", on = { kind = "purchase" } },
  { from = ["customer", "reactivated", "at_risk"], to = "repeat", on = { kind = "purchase" } },
  { from = ["repeat"], to = "loyal", on = { kind = "purchase", count = 3, within = "10d" } },
  { from = ["customer", "repeat", "loyal"], to = "at_risk", after_inactivity = "20d" },
  { from = ["registered", "at_risk"], to = "dormant", after_inactivity = "40d" },
  { from = ["dormant"], to = "reactivated", on = { kind = ["login", "purchase", "view"] } },
]

[[model]]
name = "tier"
initial = "member"
stages = ["member", "silver", "gold"]
merge_order = ["gold", "member", "silver"]
transitions = [
  { from = ["member"], to = "silver", on = { kind = "purchase", count = 2, within = "5d", min_value = 100.0 } },
  { from = ["silver"], to = "gold", on = { kind = "purchase", channel = ["store"], min_value = 500.0 } },
  { from = ["gold", "silver"], to = "member", after_inactivity = "40d" },
]
"#;

const DAY: i64 = 86_400_000;

/// A random sequence over a small universe of ids: gaps from 0 ms to weeks,
/// on-time events up to the lateness out of order, late events, duplicates.
fn tight_sequence(seed: u64, len: usize, now: i64, lateness: i64) -> Vec<String> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let (kinds, channels) = (["signup", "purchase", "purchase", "view", "login", "sms_click"], ["app", "web", "sms", "store"]);
    let pools: [(&str, usize); 3] = [("user_id", 6), ("phone", 6), ("anonymous_id", 10)];
    let mut ts = now - 300 * DAY;
    let mut max_ts = ts;
    let mut out: Vec<String> = Vec::new();
    for i in 0..len {
        let roll = rng.random_range(0..100);
        if roll < 5 && !out.is_empty() {
            let again = out[rng.random_range(0..out.len())].clone();
            out.push(again);
            continue;
        }
        ts = match roll {
            5..=14 => max_ts - rng.random_range(0..=lateness),
            15..=19 => max_ts - lateness - 1 - rng.random_range(0..3 * DAY),
            20..=29 => max_ts,
            30..=33 => max_ts + rng.random_range(15 * DAY..45 * DAY),
            // Exactly at a window's or a timer's edge after an earlier event.
            80..=87 if !out.is_empty() => {
                let earlier: serde_json::Value = serde_json::from_str(&out[rng.random_range(out.len().saturating_sub(8)..out.len())]).unwrap();
                let edge = [5 * DAY, 10 * DAY, 20 * DAY, 40 * DAY, 20 * DAY + lateness, 40 * DAY + lateness][rng.random_range(0..6)];
                earlier["ts"].as_i64().unwrap() + edge + rng.random_range(-1..=1)
            }
            34..=79 => max_ts + rng.random_range(0..DAY / 4),
            _ => max_ts + rng.random_range(0..3 * DAY),
        };
        max_ts = max_ts.max(ts);
        let mut ids = serde_json::Map::new();
        for _ in 0..[1, 1, 1, 1, 1, 1, 2, 2, 2, 3][rng.random_range(0..10)] {
            let (ty, n) = pools[rng.random_range(0..pools.len())];
            ids.insert(ty.to_string(), format!("{}{}", &ty[..1], rng.random_range(0..n)).into());
        }
        let kind = kinds[rng.random_range(0..kinds.len())];
        let mut e = serde_json::json!({ "id": format!("e{i}"), "ts": ts, "ids": ids, "channel": channels[rng.random_range(0..channels.len())], "kind": kind });
        if kind == "purchase" && rng.random_bool(0.9) {
            e["value"] = [50.0, 100.0, 499.99, 500.0, 800.0][rng.random_range(0..5)].into();
        }
        out.push(e.to_string());
    }
    out
}

async fn engine_on(config: &Config, lines: &[String]) -> Truth {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for l in lines {
        writeln!(file, "{l}").unwrap();
    }
    file.flush().unwrap();
    engine_answer(&replay(config.clone(), file.path(), |_, _, _| {}).await.unwrap())
}

fn reference_on(config: &Config, lines: &[String], now: i64) -> Truth {
    let mut r = journeyd::sim::Reference::new(config, now);
    for l in lines {
        r.ingest(None, l.as_bytes());
    }
    r.truth(journeyd::sim::End::Replay)
}

/// Removes events one at a time while the engine and the reference still disagree.
async fn shrink(config: &Config, mut lines: Vec<String>, now: i64) -> Vec<String> {
    let mut i = 0;
    while i < lines.len() {
        let mut fewer = lines.clone();
        fewer.remove(i);
        if engine_on(config, &fewer).await != reference_on(config, &fewer, now) {
            lines = fewer;
        } else {
            i += 1;
        }
    }
    lines
}

/// Differential check on many small random sequences; a disagreement is
/// shrunk to a minimal sequence and printed with both answers. `SIM_SEEDS`
/// sets how many sequences per lateness (default 100).
#[tokio::test]
async fn engine_agrees_on_tight_random_sequences() {
    let now = chrono::Utc::now().timestamp_millis();
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    for (lateness, ms) in [("0s", 0), ("5s", 5_000), ("1d", DAY)] {
        let text = TIGHT.replace("allowed_lateness = \"5s\"", &format!("allowed_lateness = \"{lateness}\""));
        let config = config::parse(&text).unwrap_or_else(|e| panic!("{e:?}")).config;
        for seed in 0..seeds {
            let lines = tight_sequence(seed, 80, now, ms);
            // Every prefix that ends at a quarter, so intermediate stages are compared too.
            let mut differs = None;
            for len in [20, 40, 60, 80] {
                if engine_on(&config, &lines[..len]).await != reference_on(&config, &lines[..len], now) {
                    differs = Some(len);
                    break;
                }
            }
            let Some(len) = differs else { continue };
            let minimal = shrink(&config, lines[..len].to_vec(), now).await;
            let (engine, reference) = (engine_on(&config, &minimal).await, reference_on(&config, &minimal, now));
            panic!("lateness {lateness}, seed {seed}: minimal sequence:\n{}\nengine:    {engine:?}\nreference: {reference:?}", minimal.join("\n"));
        }
    }
}

/// A live journeyd (in process) on a real nats-server, a config of its own.
struct Live {
    _nats: common::NatsServer,
    _dir: tempfile::TempDir,
    config: PathBuf,
    http: String,
    stop: tokio_util::sync::CancellationToken,
    journeyd: tokio::task::JoinHandle<anyhow::Result<journeyd::RunReport>>,
}

impl Live {
    async fn start(example_name: &str, jetstream: bool) -> Live {
        let nats = if jetstream { common::NatsServer::start_jetstream() } else { common::NatsServer::start() };
        let dir = tempfile::tempdir().unwrap();
        let listen = common::free_addr();
        let text = std::fs::read_to_string(example(example_name).0)
            .unwrap()
            .replace("url = \"nats://127.0.0.1:4222\"", &format!("url = \"{}\"", nats.url()))
            .replace("listen = \"127.0.0.1:9464\"", &format!("listen = \"{listen}\""))
            // Verification needs no idle rule (it asks the reference at journeyd's own
            // watermark); a long idle timeout keeps a pause of a busy machine in the
            // middle of the history from making the rest of it late.
            .replace("idle_timeout = \"10s\"", "idle_timeout = \"2m\"");
        let config = dir.path().join("journeyd.toml");
        std::fs::write(&config, &text).unwrap();
        let cfg = config::parse(&text).unwrap_or_else(|e| panic!("{e:?}")).config;
        assert_eq!((cfg.nats.url.as_str(), cfg.http.listen.as_str(), cfg.time.idle_timeout.millis()), (nats.url().as_str(), listen.as_str(), 120_000));
        let stop = tokio_util::sync::CancellationToken::new();
        let journeyd = tokio::spawn(journeyd::run(cfg, stop.clone()));
        Live { _nats: nats, _dir: dir, config, http: format!("http://{listen}"), stop, journeyd }
    }

    fn args(&self, customers: usize, seed: u64) -> SimArgs {
        SimArgs {
            config: self.config.clone(),
            customers,
            rate: 0.0,
            duration: None,
            seed,
            nats_url: None,
            jetstream: false,
            out: None,
            verify: Some(self.http.clone()),
            verify_timeout: std::time::Duration::from_secs(30),
            truth: None,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.journeyd.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_verify_passes_against_a_live_journeyd() {
    let live = Live::start("retail.toml", false).await;
    assert_eq!(journeyd::sim::run(live.args(500, 21)).await.unwrap(), 0);
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_verify_passes_through_jetstream_at_a_paced_rate_cut_short() {
    let live = Live::start("wealth.toml", true).await;
    let dir = tempfile::tempdir().unwrap();
    let truth = dir.path().join("truth.json");
    let args =
        SimArgs { jetstream: true, rate: 3000.0, duration: Some(std::time::Duration::from_millis(1500)), truth: Some(truth.clone()), ..live.args(1000, 22) };
    let started = std::time::Instant::now();
    assert_eq!(journeyd::sim::run(args).await.unwrap(), 0);
    let written: Truth = serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
    let published = written.events + written.dlq + written.duplicates + written.late;
    assert!((1000..=4600).contains(&published), "at most 1.5 s at 3000/s: {published}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_refuses_to_verify_a_journeyd_that_already_has_customers() {
    let live = Live::start("retail.toml", false).await;
    assert_eq!(journeyd::sim::run(live.args(50, 23)).await.unwrap(), 0);
    assert_eq!(journeyd::sim::run(live.args(50, 24)).await.unwrap(), 2);
    live.stop().await;
}
