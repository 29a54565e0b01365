//! Publishing simulated inputs to NATS on `touch.<channel>.<kind>`: core NATS
//! (fire and forget, flushed at the end) or JetStream (acks pipelined, at most
//! `ACKS_IN_FLIGHT` outstanding). Pacing is by batches on a 10 ms tick: each
//! tick publishes what the rate allows for the time elapsed so far, so the
//! average rate holds without a sleep per message.

use super::SimEvent;
use crate::config::Config;
use anyhow::Context;
use async_nats::jetstream;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Below async-nats' default `max_ack_inflight` (5,000).
const ACKS_IN_FLIGHT: usize = 4096;
const TICK: Duration = Duration::from_millis(10);
/// Unpaced publishing checks the clock (progress, `--duration`) this often.
const CHUNK: usize = 1024;

/// How fast and how long to publish.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// Events per second; 0 or less: as fast as possible.
    pub rate: f64,
    pub duration: Option<Duration>,
    /// Print progress once a second and the final rate on stderr.
    pub progress: bool,
}

/// Connects with the config's credentials to `url`.
pub(crate) async fn connect(cfg: &Config, url: &str) -> anyhow::Result<async_nats::Client> {
    let n = &cfg.nats;
    let mut opts = async_nats::ConnectOptions::new().name("journeyd-sim");
    if let (Some(u), Some(p)) = (&n.user, &n.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &n.token {
        opts = opts.token(t.clone());
    }
    if let Some(c) = &n.credentials {
        opts = opts.credentials_file(c).await.with_context(|| format!("reading NATS credentials file {c}"))?;
    }
    opts.connect(url).await.with_context(|| format!("connecting to NATS at {url}"))
}

/// Publishes with core NATS; returns how many inputs went out.
pub(crate) async fn core(client: &async_nats::Client, events: &[SimEvent], pace: Pace) -> anyhow::Result<usize> {
    let mut pacer = Pacer::new(events.len(), pace);
    while let Some(batch) = pacer.next().await {
        for e in &events[batch] {
            client.publish(e.subject.clone(), Bytes::copy_from_slice(&e.payload)).await.context("publishing to NATS")?;
        }
    }
    client.flush().await.context("flushing to NATS")?;
    Ok(pacer.finish())
}

/// Publishes through JetStream with acks into the config's stream (created if missing).
pub(crate) async fn jetstream(client: &async_nats::Client, cfg: &Config, events: &[SimEvent], pace: Pace) -> anyhow::Result<usize> {
    let js = jetstream::new(client.clone());
    let name = cfg.nats.jetstream.as_ref().map_or_else(|| "TOUCH".to_string(), |j| j.stream.clone());
    js.get_or_create_stream(jetstream::stream::Config { name: name.clone(), subjects: cfg.nats.subjects.clone(), ..Default::default() })
        .await
        .with_context(|| format!("getting or creating JetStream stream {name}"))?;
    let mut acks = VecDeque::with_capacity(ACKS_IN_FLIGHT + 1);
    let mut pacer = Pacer::new(events.len(), pace);
    while let Some(batch) = pacer.next().await {
        for e in &events[batch] {
            acks.push_back(js.publish(e.subject.clone(), Bytes::copy_from_slice(&e.payload)).await.context("publishing to JetStream")?);
            if acks.len() > ACKS_IN_FLIGHT {
                if let Some(ack) = acks.pop_front() {
                    ack.await.context("JetStream did not acknowledge a publish")?;
                }
            }
        }
    }
    for ack in acks {
        ack.await.context("JetStream did not acknowledge a publish")?;
    }
    Ok(pacer.finish())
}

/// Hands out the next batch of inputs to publish at the pace asked; prints
/// progress once a second and the final rate when asked to.
struct Pacer {
    pace: Pace,
    total: usize,
    sent: usize,
    started: Instant,
    reported: Instant,
    ticker: tokio::time::Interval,
}

impl Pacer {
    fn new(total: usize, pace: Pace) -> Pacer {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let now = Instant::now();
        Pacer { pace, total, sent: 0, started: now, reported: now, ticker }
    }

    /// The next batch (indices), or `None` when done or out of time. Assumes
    /// the previous batch was published.
    async fn next(&mut self) -> Option<std::ops::Range<usize>> {
        if self.pace.progress && self.reported.elapsed() >= Duration::from_secs(1) {
            self.reported = Instant::now();
            eprintln!("sim: {}/{} published ({:.0} events/s)", self.sent, self.total, self.rate());
        }
        if self.sent >= self.total || self.pace.duration.is_some_and(|d| self.started.elapsed() >= d) {
            return None;
        }
        let upto = if self.pace.rate > 0.0 {
            loop {
                self.ticker.tick().await;
                let due = (self.pace.rate * self.started.elapsed().as_secs_f64()).floor() as usize;
                if due > self.sent {
                    break due.min(self.total);
                }
            }
        } else {
            (self.sent + CHUNK).min(self.total)
        };
        let batch = self.sent..upto;
        self.sent = upto;
        Some(batch)
    }

    fn rate(&self) -> f64 {
        self.sent as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Prints the final rate; returns how many inputs were handed out.
    fn finish(self) -> usize {
        if self.pace.progress {
            eprintln!("sim: published {} of {} inputs in {:.2} s: {:.0} events/s", self.sent, self.total, self.started.elapsed().as_secs_f64(), self.rate());
        }
        self.sent
    }
}
