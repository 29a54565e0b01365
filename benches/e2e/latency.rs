//! Latency: publish → transition received on `journey.transition.>`, next to
//! the bare NATS round trip (publish → an echo subscriber that republishes →
//! back), at the same paced rates, with the same publisher and receiver, in
//! the same run.
//!
//! Each input is the sign-up of a new customer, so journeyd answers it with
//! exactly one transition (lifecycle visitor → registered). The event id
//! carries the send instant (`l<seq>-<nanoseconds since the bench's base
//! instant>`); the receiver takes the time first, then reads the id back from
//! the transition's `event_id` (or the echoed event's `id`). The publisher
//! runs on a thread of its own and sleeps until the next input is due, so it
//! sends in bursts of a few inputs, never a timer tick's worth.

use crate::live::{live_config, wait_ready};
use crate::nats_server::NatsServer;
use crate::report::{micros, rate, Report};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use journeyd::config::Config;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the receiver waits for stragglers once the publisher is done.
const DRAIN: Duration = Duration::from_secs(3);
const ECHO_SUBJECT: &str = "bench.echo";

#[derive(Clone, Copy, PartialEq)]
enum System {
    /// A subscriber that republishes every input as it is.
    Echo,
    Journeyd,
}

pub struct Settings {
    pub rates: Vec<f64>,
    pub seconds: f64,
    /// Sent before recording starts (connections, caches and the engine warm up).
    pub warmup_seconds: f64,
}

/// One system at one rate.
struct Run {
    sent: u64,
    received: u64,
    send_rate: f64,
    hist: Histogram<u64>,
}

impl Run {
    fn q(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64
    }

    fn quantiles(&self) -> String {
        format!("p50 {} · p99 {} · p99.9 {} · max {}", micros(self.q(0.5)), micros(self.q(0.99)), micros(self.q(0.999)), micros(self.hist.max() as f64))
    }
}

pub fn run(server: &NatsServer, config: &Config, s: &Settings, report: &mut Report) -> anyhow::Result<()> {
    let base = Instant::now();
    for &r in &s.rates {
        let echo = measure(server, config, System::Echo, r, s, base)?;
        let jd = measure(server, config, System::Journeyd, r, s, base)?;
        let label = rate(r);
        eprintln!("latency {label}: echo {} | journeyd {}", echo.quantiles(), jd.quantiles());
        report.info("latency", format!("{label}: bare NATS round trip (sent at {})", rate(echo.send_rate)), echo.quantiles());
        if r <= 10_000.0 {
            report.at_most("latency", format!("{label}: publish → transition"), jd.quantiles(), (jd.q(0.99), 1e6), "p99 < 1 ms", micros);
        } else {
            report.info("latency", format!("{label}: publish → transition"), jd.quantiles());
        }
        let (add50, add99) = (jd.q(0.5) - echo.q(0.5), jd.q(0.99) - echo.q(0.99));
        let added = format!("p50 {} · p99 {}", micros(add50), micros(add99));
        if r <= 50_000.0 {
            report.at_most("latency", format!("{label}: journeyd's added latency"), added, (add99, 100e3), "≤ 100 µs at p99", micros);
        } else {
            report.info("latency", format!("{label}: journeyd's added latency"), added);
        }
        for (who, run) in [("bare round trip", &echo), ("journeyd", &jd)] {
            if run.received < run.sent {
                report.note(format!("latency {label}: {who} answered {} of {} inputs", run.received, run.sent));
            }
        }
    }
    Ok(())
}

fn measure(server: &NatsServer, config: &Config, system: System, rate: f64, s: &Settings, base: Instant) -> anyhow::Result<Run> {
    let total = (rate * (s.warmup_seconds + s.seconds)) as u64;
    let warmup = (rate * s.warmup_seconds) as u64;
    let capacity = config.nats.subscription_capacity;

    // The system under test, on a runtime like `journeyd run`'s.
    let sut = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let reply_subject = match system {
        System::Echo => {
            let client = sut.block_on(async_nats::ConnectOptions::new().name("bench-echo").subscription_capacity(capacity).connect(&server.url))?;
            let mut sub = sut.block_on(client.subscribe("touch.>"))?;
            sut.block_on(client.flush())?;
            let stop = stop.clone();
            sut.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        msg = sub.next() => match msg {
                            Some(m) => { let _ = client.publish(ECHO_SUBJECT, m.payload).await; }
                            None => break,
                        },
                    }
                }
            });
            ECHO_SUBJECT
        }
        System::Journeyd => "journey.transition.>",
    };
    let journeyd = match system {
        System::Journeyd => {
            let shared = journeyd::Shared::new(live_config(config, &server.url));
            let handle = sut.spawn(journeyd::run_with(shared.clone(), stop.clone()));
            wait_ready(&shared)?;
            Some(handle)
        }
        System::Echo => None,
    };

    // The driver: the receiver and the publisher's connection, on one worker of their own.
    let driver = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let receiver_client = driver.block_on(async_nats::ConnectOptions::new().name("bench-receiver").subscription_capacity(capacity).connect(&server.url))?;
    let mut replies = driver.block_on(receiver_client.subscribe(reply_subject))?;
    driver.block_on(receiver_client.flush())?;
    let publisher_client = driver.block_on(async_nats::ConnectOptions::new().name("bench-publisher").connect(&server.url))?;
    let done = Arc::new(tokio::sync::Notify::new());
    let receiving = {
        let done = done.clone();
        driver.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid HDR bounds");
            let mut received = 0u64;
            let mut draining = std::pin::pin!(async {
                done.notified().await;
                tokio::time::sleep(DRAIN).await;
            });
            loop {
                tokio::select! {
                    _ = &mut draining => break,
                    msg = replies.next() => {
                        let Some(msg) = msg else { break };
                        let now = base.elapsed().as_nanos() as u64;
                        if let Some((seq, sent)) = probe(&msg.payload) {
                            received += 1;
                            if seq >= warmup {
                                hist.saturating_record(now.saturating_sub(sent).max(1));
                            }
                        }
                        if received == total {
                            break;
                        }
                    }
                }
            }
            (received, hist)
        })
    };

    let handle = driver.handle().clone();
    let start = Instant::now();
    let mut seq = 0u64;
    while seq < total {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
        while seq < due {
            let sent = base.elapsed().as_nanos() as u64;
            let payload = format!(
                r#"{{"id":"l{seq}-{sent}","ts":{},"ids":{{"user_id":"lat{}-{seq}"}},"channel":"app","kind":"signup"}}"#,
                journeyd::ingest::nats::wall_ms(),
                rate as u64
            );
            handle.block_on(publisher_client.publish("touch.app.signup", Bytes::from(payload)))?;
            seq += 1;
        }
        let next = start + Duration::from_secs_f64(seq as f64 / rate);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    handle.block_on(publisher_client.flush())?;
    let send_rate = total as f64 / start.elapsed().as_secs_f64();
    done.notify_one();
    let (received, hist) = driver.block_on(receiving)?;

    stop.cancel();
    if let Some(h) = journeyd {
        sut.block_on(h)??;
    }
    sut.shutdown_timeout(Duration::from_secs(5));
    driver.shutdown_timeout(Duration::from_secs(5));
    Ok(Run { sent: total, received, send_rate, hist })
}

/// The sequence number and send time in a transition's `event_id` or an echoed event's `id`.
fn probe(payload: &[u8]) -> Option<(u64, u64)> {
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        id: Option<&'a str>,
        #[serde(borrow)]
        event_id: Option<&'a str>,
    }
    let p: Probe = serde_json::from_slice(payload).ok()?;
    let (seq, sent) = p.event_id.or(p.id)?.strip_prefix('l')?.split_once('-')?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}
