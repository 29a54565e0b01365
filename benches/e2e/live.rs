//! Live throughput: the simulator's inputs published as fast as one publisher
//! can to a local nats-server, consumed once by a bare async-nats subscriber
//! that only counts (the ceiling NATS sets on this machine) and once by
//! journeyd in-process (`journeyd::run_with`), in the same run, with the same
//! publisher. journeyd's progress is the sum of the counters behind
//! `journey_events_total`, `journey_dlq_total`, `journey_duplicates_total` and
//! `journey_late_events_total`, read in-process every few milliseconds (the
//! same numbers `/metrics` serves, without loading journeyd with scrapes);
//! one scrape of `/metrics` at the end cross-checks them.
//!
//! Both clients' subscription buffers hold the whole input (core NATS has no
//! flow control; see the README), so neither drops anything and the rate is
//! each consumer's own. The rate is sustained: inputs consumed between the
//! first and the last one.
//! Every input not consumed is reported as lost, with the slow-consumer events
//! of the client and of the server.

use crate::nats_server::{http_get, NatsServer};
use crate::report::{rate, Report};
use async_nats::Subject;
use bytes::Bytes;
use futures::StreamExt;
use journeyd::config::Config;
use journeyd::metrics::Metrics;
use prometheus::core::Collector;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A consumer that got nothing new for this long after the publisher finished has stopped.
const STALL: Duration = Duration::from_secs(3);
/// How often journeyd's counters are read.
const POLL: Duration = Duration::from_millis(5);

pub type Messages = Arc<Vec<(Subject, Bytes)>>;

/// What one consumer did with the published inputs.
struct Consumed {
    count: u64,
    seconds: f64,
    slow_consumer_events: u64,
}

impl Consumed {
    fn rate(&self) -> f64 {
        self.count as f64 / self.seconds.max(1e-9)
    }
}

/// The publisher, the same for both consumers.
struct Published {
    count: usize,
    seconds: f64,
}

pub fn run(server: &NatsServer, config: &Config, messages: Messages, report: &mut Report) -> anyhow::Result<()> {
    let total = messages.len() as u64;
    // Core NATS has no flow control and one publisher outruns any consumer
    // that does real work: with a buffer that holds the whole input, both
    // consumers drain at their own pace and the rate is theirs, not the
    // buffer's (what overflows a smaller buffer is reported as lost).
    let capacity = config.nats.subscription_capacity.max(messages.len() + 1024);
    let mut config = config.clone();
    config.nats.subscription_capacity = capacity;
    let config = &config;

    let server_slow = server.slow_consumers();
    let (bare_pub, bare) = ceiling(&server.url, messages.clone(), capacity)?;
    let bare_server_slow = server.slow_consumers() - server_slow;
    eprintln!("live: bare subscriber {}/{total} in {:.2} s: {}", bare.count, bare.seconds, rate(bare.rate()));

    let server_slow = server.slow_consumers();
    let (jd_pub, jd) = journeyd(&server.url, config, messages)?;
    let jd_server_slow = server.slow_consumers() - server_slow;
    eprintln!("live: journeyd {}/{total} in {:.2} s: {}", jd.count, jd.seconds, rate(jd.rate()));

    let publisher = |p: &Published| rate(p.count as f64 / p.seconds.max(1e-9));
    if bare.rate() >= 0.95 * bare_pub.count as f64 / bare_pub.seconds.max(1e-9) {
        report.note("live: the bare subscriber kept pace with the publisher, so the ceiling is at least what was measured (the publisher bounds it)");
    }
    report.info("live", format!("bare async-nats subscriber, {total} inputs (ceiling)"), format!("{} (publisher {})", rate(bare.rate()), publisher(&bare_pub)));
    let ratio = jd.rate() / bare.rate().max(1e-9);
    report.at_least(
        "live",
        "journeyd in-process, same inputs and publisher: sustained rate / ceiling",
        format!("{} = {:.0}% (publisher {})", rate(jd.rate()), ratio * 100.0, publisher(&jd_pub)),
        (ratio, 0.8),
        "≥ 80% of the ceiling",
    );
    for (who, c, server_slow) in [("bare subscriber", &bare, bare_server_slow), ("journeyd", &jd, jd_server_slow)] {
        let lost = total.saturating_sub(c.count);
        report.info("live", format!("{who}: inputs lost (slow-consumer events client/server)"), format!("{lost} ({}/{server_slow})", c.slow_consumer_events));
        if lost > 0 {
            report.note(format!("live: {who} lost {lost} of {total} inputs: its rate counts only what arrived"));
        }
    }
    Ok(())
}

/// Publishes every message as fast as the client takes them, from a thread
/// and runtime of its own, then flushes.
fn publish_all(url: String, messages: Messages) -> std::thread::JoinHandle<anyhow::Result<Published>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let client = async_nats::ConnectOptions::new().name("bench-publisher").connect(url).await?;
            let start = Instant::now();
            for (subject, payload) in messages.iter() {
                client.publish(subject.clone(), payload.clone()).await?;
            }
            client.flush().await?;
            Ok(Published { count: messages.len(), seconds: start.elapsed().as_secs_f64() })
        })
    })
}

fn consumer_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// The ceiling: a subscriber on `touch.>` that only counts.
fn ceiling(url: &str, messages: Messages, capacity: usize) -> anyhow::Result<(Published, Consumed)> {
    let rt = consumer_runtime()?;
    let total = messages.len() as u64;
    let slow = Arc::new(AtomicU64::new(0));
    let events = slow.clone();
    let client = rt.block_on(
        async_nats::ConnectOptions::new()
            .name("bench-bare-subscriber")
            .subscription_capacity(capacity)
            .event_callback(move |e| {
                let events = events.clone();
                async move {
                    if matches!(e, async_nats::Event::SlowConsumer(_)) {
                        events.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .connect(url),
    )?;
    let mut sub = rt.block_on(client.subscribe("touch.>"))?;
    rt.block_on(client.flush())?;
    let counting = rt.spawn(async move {
        let (mut count, mut first, mut last) = (0u64, None, Instant::now());
        while let Ok(Some(_)) = tokio::time::timeout(STALL, sub.next()).await {
            last = Instant::now();
            first.get_or_insert(last);
            count += 1;
            if count == total {
                break;
            }
        }
        (count, first.map_or(0.0, |f| last.duration_since(f).as_secs_f64()))
    });
    let published = publish_all(url.to_string(), messages).join().map_err(|_| anyhow::anyhow!("publisher panicked"))??;
    let (count, seconds) = rt.block_on(counting)?;
    Ok((published, Consumed { count, seconds, slow_consumer_events: slow.load(Ordering::Relaxed) }))
}

/// Inputs journeyd has taken in: applied, refused, duplicate or late.
fn consumed(m: &Metrics) -> u64 {
    let sum = |c: &dyn Collector| -> u64 { c.collect().iter().flat_map(|f| f.get_metric()).map(|m| m.get_counter().get_value() as u64).sum() };
    sum(&m.events) + sum(&m.dlq) + m.late.get() + m.duplicates.get()
}

/// journeyd, in-process, on a runtime like `journeyd run`'s.
fn journeyd(url: &str, config: &Config, messages: Messages) -> anyhow::Result<(Published, Consumed)> {
    let total = messages.len() as u64;
    let config = live_config(config, url);
    let listen = config.http.listen.clone();
    let shared = journeyd::Shared::new(config);
    let rt = consumer_runtime()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let running = rt.spawn(journeyd::run_with(shared.clone(), stop.clone()));
    wait_ready(&shared)?;
    let publisher = publish_all(url.to_string(), messages);
    let (mut first, mut last, mut seen) = (None, Instant::now(), 0u64);
    loop {
        std::thread::sleep(POLL);
        let now = consumed(&shared.metrics);
        if now > seen {
            seen = now;
            last = Instant::now();
            if first.is_none() {
                first = Some(last);
            }
        }
        if seen >= total || (publisher.is_finished() && last.elapsed() > STALL) {
            break;
        }
    }
    let published = publisher.join().map_err(|_| anyhow::anyhow!("publisher panicked"))??;
    let scraped = http_get(&listen, "/metrics").map(|text| metric_sum(&text, "journey_events_total")).unwrap_or(f64::NAN);
    let applied = shared.metrics.events.collect().iter().flat_map(|f| f.get_metric()).map(|m| m.get_counter().get_value()).sum::<f64>();
    if scraped != applied {
        eprintln!("live: /metrics says journey_events_total {scraped}, in-process {applied}");
    }
    let slow = shared.metrics.nats_events.with_label_values(&["slow_consumer"]).get();
    stop.cancel();
    rt.block_on(running)??;
    let seconds = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    Ok((published, Consumed { count: seen, seconds, slow_consumer_events: slow }))
}

/// The config pointed at the bench's server and a free HTTP port; the idle
/// rule is pushed out of the way (simulated traffic lies in the past).
pub fn live_config(config: &Config, url: &str) -> Config {
    let mut c = config.clone();
    c.nats.url = url.to_string();
    c.nats.subjects = vec!["touch.>".into()];
    c.http.listen = format!("127.0.0.1:{}", free_port());
    c.time.idle_timeout = journeyd::config::Dur::from_secs(3600);
    c.engine.shards = 0;
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(0, |a| a.port())
}

/// Waits until journeyd is subscribed (what `/readyz` reports).
pub fn wait_ready(shared: &journeyd::Shared) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !shared.ready.load(Ordering::Acquire) {
        if Instant::now() > deadline {
            anyhow::bail!("journeyd was not ready within 15 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The sum of every series of `name` in Prometheus text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}
