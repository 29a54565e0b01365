//! `journeyd sim`: synthetic multi-channel traffic together with the answer a
//! correct engine must give, so tests, benchmarks and live deployments check
//! results, not only speed.
//!
//! - `generate` writes seeded, deterministic scripted journeys for a config
//!   (anonymous browsing, sign-up linking devices, purchases, dormancy and
//!   comebacks on other channels with other ids, abandoned carts, refunds,
//!   consent changes), plus a few duplicates, late and invalid events;
//! - `reference` computes the ground truth with a plain sequential reading of
//!   DESIGN.md, sharing no code with the engine;
//! - `publish` sends the events to NATS (core or JetStream), paced;
//! - `verify` polls a live journeyd's `/metrics` until its
//!   `journey_customers{model,stage}` gauges equal the truth.
//!
//! ## Which truth: replay or live
//!
//! The truth in [`Generated`] (and `--truth`) has replay semantics: at the end
//! of input the watermark jumps to the largest event time. A live journeyd has
//! no end of input: after the last event its watermark stays at the largest
//! event time − `allowed_lateness` until it has been idle for
//! `time.idle_timeout`; then it follows the wall clock (now − `idle_timeout` −
//! `allowed_lateness`), which is later than every simulated event and could
//! fire *more* timers than the end of a replay. [`Reference::truth`] therefore
//! takes the final watermark as an argument ([`End::Replay`] or
//! [`End::Watermark`]), and two things keep `--verify` exact:
//!
//! - the generator keeps every inactivity timer's due time out of the window
//!   from shortly before the last event to one day after `start_ms`, so the
//!   live answer equals the replay answer from the moment journeyd has applied
//!   the last event, before and after its idle rule fires, for a day;
//! - each poll of `--verify` compares with the reference's answer at the
//!   watermark journeyd reports (`journey_watermark_seconds`), so a config
//!   whose durations are too short for that window, or a run cut short by
//!   `--duration` (whose last events are not the generator's last), is judged
//!   exactly too: before the idle rule fires at the largest event time −
//!   lateness, after it (once journeyd has been idle for `idle_timeout`) at the
//!   wall clock − `idle_timeout` − lateness.
//!
//! Every simulated event lies in the past. A journeyd that has seen traffic
//! has customers of its own and, once idle for `idle_timeout`, a watermark near
//! the wall clock that would refuse the whole history as late: `--verify`
//! therefore needs a fresh journeyd (no watermark yet, no customers; its idle
//! clock waits for the first event, however long it has been running). It
//! checks that before publishing and waits for `/readyz`, so no event is
//! published before journeyd is subscribed.

mod generate;
mod publish;
pub mod reference;
mod script;
mod verify;
mod vocab;

pub use generate::generate;
pub use reference::{End, Outcome, Reference, Truth};

use crate::config::{self, Config};
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One simulated input: the NATS subject it is published on, its JSON payload
/// (which also names its channel and kind, so it stands alone in NDJSON), and
/// its event time (for invalid payloads, the time at its place in the stream).
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    pub subject: String,
    pub payload: Vec<u8>,
    pub ts: i64,
}

/// Generated traffic, in publishing order, and the replay truth over all of it.
#[derive(Debug, Clone)]
pub struct Generated {
    pub events: Vec<SimEvent>,
    pub truth: Truth,
}

/// Arguments of `journeyd sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// journeyd TOML config: channels, id types, models and time rules to simulate for.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Simulated people. One person may be several customers until their ids link.
    #[arg(long, default_value_t = 1000)]
    pub customers: usize,
    /// Events per second to publish; 0 publishes as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Stop publishing after this long (e.g. "30s"); the truth covers what was published.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of the generator: the same seed and config give the same traffic, shifted to end just before now.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// NATS server to publish to (default: the config's `nats.url`).
    #[arg(long)]
    pub nats_url: Option<String>,
    /// Publish through JetStream with acks, to the config's `nats.jetstream.stream`
    /// (default `TOUCH`), created over `nats.subjects` if missing.
    #[arg(long)]
    pub jetstream: bool,
    /// Write the events as NDJSON to this file instead of publishing.
    #[arg(long, conflicts_with_all = ["jetstream", "verify", "nats_url"])]
    pub out: Option<PathBuf>,
    /// After publishing, poll journeyd's HTTP base URL (e.g. http://127.0.0.1:9464)
    /// until its stage gauges equal the truth; exit 1 on a mismatch.
    #[arg(long)]
    pub verify: Option<String>,
    /// How long `--verify` waits for journeyd to agree.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub verify_timeout: Duration,
    /// Write the ground truth (replay semantics) as JSON to this file.
    #[arg(long)]
    pub truth: Option<PathBuf>,
}

/// Runs `journeyd sim`; returns the process exit code: 0 on success, 1 when
/// `--verify` found a mismatch, 2 when journeyd was not fresh enough to verify.
pub async fn run(args: SimArgs) -> anyhow::Result<i32> {
    let loaded = config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in &loaded.warnings {
        eprintln!("{}: {w}", args.config.display());
    }
    let cfg = loaded.config;
    // Mistakes in the arguments are told before the traffic is generated.
    if let Some(url) = &args.verify {
        anyhow::ensure!(url.starts_with("http://"), "--verify {url}: give journeyd's HTTP address, e.g. http://127.0.0.1:9464 (only http:// URLs)");
    }
    for path in [&args.out, &args.truth].into_iter().flatten() {
        anyhow::ensure!(!path.is_dir(), "{}: is a directory; give a file to write", path.display());
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        anyhow::ensure!(parent.is_none_or(|p| p.is_dir()), "{}: no such directory to write in", path.display());
    }
    let start_ms = chrono::Utc::now().timestamp_millis();
    let (customers, seed) = (args.customers, args.seed);
    let gen_cfg = cfg.clone();
    let generated = tokio::task::spawn_blocking(move || generate(&gen_cfg, customers, seed, start_ms)).await.context("generator task")?;
    let t = &generated.truth;
    eprintln!(
        "sim: {} people → {} inputs ({} applied, {} invalid, {} duplicates, {} late), {} customers",
        customers,
        generated.events.len(),
        t.events,
        t.dlq,
        t.duplicates,
        t.late,
        t.customers
    );

    if let Some(out) = &args.out {
        let events = generated.events;
        let path = out.clone();
        tokio::task::spawn_blocking(move || write_ndjson(&path, &events)).await.context("writer task")??;
        eprintln!("sim: wrote {}", out.display());
        if let Some(path) = &args.truth {
            write_truth(path, &generated.truth)?;
        }
        print!("{}", verify::truth_text(&cfg, &generated.truth));
        return Ok(0);
    }

    if let Some(url) = &args.verify {
        if let verify::Fresh::No(why) = verify::before_publishing(url, args.verify_timeout).await? {
            eprintln!("sim: cannot verify against {url}: {why}");
            return Ok(2);
        }
    }
    let idle = cfg.time.idle_timeout.as_std().as_secs_f64();
    if args.rate > 0.0 && args.rate * idle < 2.0 {
        eprintln!(
            "sim: warning: at {} events/s journeyd goes idle between events (time.idle_timeout = {}); its watermark then follows \
             the wall clock and the simulated history arrives late",
            args.rate, cfg.time.idle_timeout
        );
    }
    let url = args.nats_url.clone().unwrap_or_else(|| cfg.nats.url.clone());
    let client = publish::connect(&cfg, &url).await?;
    let pace = publish::Pace { rate: args.rate, duration: args.duration, progress: true };
    let sent = if args.jetstream {
        publish::jetstream(&client, &cfg, &generated.events, pace).await?
    } else {
        publish::core(&client, &generated.events, pace).await?
    };

    let Some(url) = &args.verify else {
        eprintln!("sim: events are dated in the past: a journeyd that was idle for time.idle_timeout before they arrived counts them late");
        let truth = if sent == generated.events.len() { generated.truth } else { truth_at(&cfg, &generated.events[..sent], start_ms, End::Replay) };
        if let Some(path) = &args.truth {
            write_truth(path, &truth)?;
        }
        print!("{}", verify::truth_text(&cfg, &truth));
        return Ok(0);
    };
    // The reference itself, not only its truth: verify asks it at journeyd's watermark.
    let (ref_cfg, mut events) = (cfg.clone(), generated.events);
    events.truncate(sent);
    let reference = tokio::task::spawn_blocking(move || {
        let mut r = Reference::new(&ref_cfg, start_ms);
        for e in &events {
            r.ingest(Some(&e.subject), &e.payload);
        }
        r
    })
    .await
    .context("reference task")?;
    if let Some(path) = &args.truth {
        write_truth(path, &reference.truth(End::Replay))?;
    }
    verify::until_equal(url, &cfg, &reference, args.verify_timeout).await
}

/// Writes one payload per line, to a temporary file renamed into place.
fn write_ndjson(path: &Path, events: &[SimEvent]) -> anyhow::Result<()> {
    write_atomically(path, |w| {
        for e in events {
            w.write_all(&e.payload)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// Writes the truth as pretty JSON.
pub fn write_truth(path: &Path, truth: &Truth) -> anyhow::Result<()> {
    write_atomically(path, |w| {
        serde_json::to_writer_pretty(&mut *w, truth)?;
        w.write_all(b"\n")?;
        Ok(())
    })
}

fn write_atomically(path: &Path, body: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    body(&mut w).with_context(|| format!("writing {}", tmp.display()))?;
    let file = w.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The truth of the whole of `generated` under another ending, e.g. a live
/// final watermark (`End::Watermark(now − idle_timeout − allowed_lateness)`).
pub fn truth_at(config: &Config, events: &[SimEvent], now_ms: i64, end: End) -> Truth {
    let mut r = Reference::new(config, now_ms);
    for e in events {
        r.ingest(Some(&e.subject), &e.payload);
    }
    r.truth(end)
}

/// Publishes `events` with core NATS at `rate` events/s (0: as fast as
/// possible), for at most `duration`, silently (the demo draws its own
/// screen); returns how many went out.
pub async fn publish_paced(client: &async_nats::Client, events: &[SimEvent], rate: f64, duration: Option<Duration>) -> anyhow::Result<usize> {
    publish::core(client, events, publish::Pace { rate, duration, progress: false }).await
}
