//! The synthetic workload of the engine and end-to-end benches: `N` customers,
//! each known by a user id and a device id, sending the event mix of an
//! example config ([`RETAIL`] or [`WEALTH`]) on three of the config's
//! channels (60% on their favourite, 30% and 10% on two others) in
//! increasing event time, about one event per customer per day of event
//! time. It is deterministic for a seed and renders
//! the same draws as pre-decoded [`EventOp`]s (straight into a shard) or as
//! NDJSON lines (for replay).
//!
//! Customers are drawn uniformly at random: the worst case for caches, and the
//! honest one for "events/s at N customers". A sweep visits every customer
//! once in a scrambled order, to give each the same number of events.

use journeyd::catalog::{ChannelId, IdTypeId, KindId};
use journeyd::engine::ops::{EventId, EventOp};
use journeyd::engine::shard::Shard;
use journeyd::model::{Plan, Touch};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

pub const DAY_MS: i64 = 86_400_000;

/// Events per batch, as the router hands them to a shard (`engine::DEFAULT_BATCH`).
pub const BATCH: usize = journeyd::engine::DEFAULT_BATCH;

/// The events of one example config: kinds with their share in percent
/// (summing to 100), and the kind that carries an amount, in a range.
pub struct Mix {
    pub kinds: &'static [(&'static str, u8)],
    pub valued: &'static str,
    pub values: std::ops::Range<u32>,
}

/// Every lifecycle, tier, funnel and segment rule of examples/retail.toml sees traffic.
pub const RETAIL: Mix = Mix {
    kinds: &[("view", 40), ("push_open", 10), ("email_open", 8), ("cart_add", 15), ("purchase", 12), ("signup", 5), ("activate", 5), ("refund", 5)],
    valued: "purchase",
    values: 20..800,
};

/// Every onboarding, advisory, funnel and segment rule of
/// examples/wealth.toml sees traffic (investments above 10,000 included).
pub const WEALTH: Mix = Mix {
    kinds: &[
        ("view", 25),
        ("login", 20),
        ("email_open", 8),
        ("sms_click", 5),
        ("contact", 7),
        ("visit", 5),
        ("signup", 5),
        ("activate", 5),
        ("open_account", 5),
        ("invest", 15),
    ],
    valued: "invest",
    values: 100..20_000,
};

/// A multiplier coprime with any customer count below it: `i * SCRAMBLE mod N`
/// visits every customer once, in an order unrelated to the key.
const SCRAMBLE: u64 = 2_654_435_761;

/// One drawn event.
pub struct Draw {
    pub customer: u32,
    /// The customer's first event: it carries (and links) both ids.
    pub first: bool,
    pub ts: i64,
    kind: usize,
    channel: usize,
    value: Option<f64>,
    /// For a later event: whether it names the customer by device id instead of user id.
    by_device: bool,
}

pub struct Workload {
    customers: u32,
    rng: SmallRng,
    ts: i64,
    step_ms: i64,
    lateness_ms: i64,
    seen: Vec<u64>,
    channels: Vec<(ChannelId, String)>,
    kinds: Vec<(KindId, &'static str)>,
    /// 100 slots, each an index into `kinds`, in the mix's proportions.
    kind_table: Vec<u8>,
    valued: &'static str,
    values: std::ops::Range<u32>,
    user: IdTypeId,
    device: IdTypeId,
    key_offset: u32,
    key_stride: u32,
    seq: u64,
}

impl Workload {
    /// `customers` customers whose events (of the [`RETAIL`] mix) start at `start_ms`.
    pub fn new(plan: &Plan, customers: u32, seed: u64, start_ms: i64) -> Workload {
        Workload::with_mix(plan, &RETAIL, customers, seed, start_ms)
    }

    /// The same with the events of `mix`.
    pub fn with_mix(plan: &Plan, mix: &Mix, customers: u32, seed: u64, start_ms: i64) -> Workload {
        let cat = &plan.catalog;
        let channels = plan.config.channels.keys().filter_map(|name| cat.channel(name).map(|id| (id, name.clone()))).collect();
        let kinds: Vec<(KindId, &'static str)> = mix.kinds.iter().map(|(name, _)| (cat.kind(name), *name)).collect();
        let kind_table = mix.kinds.iter().enumerate().flat_map(|(i, (_, share))| std::iter::repeat_n(i as u8, *share as usize)).collect();
        let id_type = |name: &str| cat.id_types.intern(name).expect("two id types are within the limit");
        Workload {
            customers: customers.max(1),
            rng: SmallRng::seed_from_u64(seed),
            ts: start_ms,
            step_ms: Self::step_for(customers),
            lateness_ms: plan.config.time.allowed_lateness.millis(),
            seen: vec![0; (customers.max(1) as usize).div_ceil(64)],
            channels,
            kinds,
            kind_table,
            valued: mix.valued,
            values: mix.values.clone(),
            user: id_type("user_id"),
            device: id_type("anonymous_id"),
            key_offset: 0,
            key_stride: 1,
            seq: 0,
        }
    }

    /// Event time between two events, so that each customer has about one event a day.
    pub fn step_for(customers: u32) -> i64 {
        (DAY_MS / customers.max(1) as i64).max(1)
    }

    /// Maps customer `c` to shard key `c * stride + offset`, so that several
    /// workloads can feed disjoint customers to several shards.
    pub fn with_keys(mut self, offset: u32, stride: u32) -> Workload {
        self.key_offset = offset;
        self.key_stride = stride.max(1);
        self
    }

    pub fn key(&self, customer: u32) -> u32 {
        customer * self.key_stride + self.key_offset
    }

    /// The next event of a customer drawn at random.
    pub fn random(&mut self) -> Draw {
        let c = self.rng.random_range(0..self.customers);
        self.event_of(c)
    }

    /// The next event of customer `c`.
    pub fn event_of(&mut self, c: u32) -> Draw {
        let (word, bit) = (c as usize / 64, 1u64 << (c % 64));
        let first = self.seen[word] & bit == 0;
        self.seen[word] |= bit;
        self.ts += self.step_ms;
        let kind = self.kind_table[self.rng.random_range(0..self.kind_table.len())] as usize;
        let channel = self.channel_of(c);
        let value = (self.kinds[kind].1 == self.valued).then(|| self.rng.random_range(self.values.clone()) as f64);
        let by_device = self.rng.random_ratio(1, 5);
        Draw { customer: c, first, ts: self.ts, kind, channel, value, by_device }
    }

    /// One of the customer's three channels, by the 60/30/10 preference.
    fn channel_of(&mut self, c: u32) -> usize {
        let shift = match self.rng.random_range(0..10) {
            0..6 => 8,
            6..9 => 24,
            _ => 40,
        };
        let h = (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((h >> shift) % self.channels.len() as u64) as usize
    }

    /// The `i`-th customer of a sweep: every `i` in `0..customers` names a different one.
    pub fn sweep_customer(&self, i: u32) -> u32 {
        ((i as u64 * SCRAMBLE) % self.customers as u64) as u32
    }

    pub fn user_id(&self, c: u32) -> String {
        format!("u{:09}", self.key(c))
    }

    pub fn device_id(&self, c: u32) -> String {
        format!("dev-{:016x}", (self.key(c) as u64).wrapping_mul(SCRAMBLE))
    }

    /// An op to refill with [`Workload::fill`], allocated once.
    pub fn template(&self) -> EventOp {
        EventOp {
            key: 0,
            touch: Touch { ts: 0, channel: 0, kind: 0, value: None },
            watermark: 0,
            event_id: EventId::new(""),
            new_ids: Vec::with_capacity(2),
            consent: None,
            received: Instant::now(),
        }
    }

    /// Writes `d` into `op` as the router would have resolved it: the ids are
    /// new only on the customer's first event.
    pub fn fill(&self, d: &Draw, op: &mut EventOp) {
        op.key = self.key(d.customer);
        op.touch = Touch { ts: d.ts, channel: self.channels[d.channel].0, kind: self.kinds[d.kind].0, value: d.value };
        op.watermark = d.ts - self.lateness_ms;
        op.new_ids.clear();
        if d.first {
            op.new_ids.push((self.user, self.user_id(d.customer).into()));
            op.new_ids.push((self.device, self.device_id(d.customer).into()));
        }
    }

    /// Appends `d` as one NDJSON line (DESIGN.md's event schema).
    pub fn ndjson(&mut self, d: &Draw, out: &mut Vec<u8>) {
        use std::io::Write;
        self.seq += 1;
        let (channel, kind) = (&self.channels[d.channel].1, self.kinds[d.kind].1);
        let _ = write!(out, r#"{{"id":"w{}","ts":{},"ids":{{"#, self.seq, d.ts);
        if d.first || !d.by_device {
            let _ = write!(out, r#""user_id":"{}""#, self.user_id(d.customer));
        }
        if d.first {
            out.push(b',');
        }
        if d.first || d.by_device {
            let _ = write!(out, r#""anonymous_id":"{}""#, self.device_id(d.customer));
        }
        let _ = write!(out, r#"}},"channel":"{channel}","kind":"{kind}""#);
        if let Some(v) = d.value {
            let _ = write!(out, r#","value":{v:.1}"#);
        }
        out.extend_from_slice(b"}\n");
    }

    /// Applies one event to every customer (in a scrambled order), in batches.
    pub fn sweep(&mut self, shard: &mut Shard, op: &mut EventOp) {
        let n = self.customers;
        let mut i = 0;
        self.drive(shard, op, n as u64, |w| {
            let c = w.sweep_customer(i);
            i += 1;
            w.event_of(c)
        });
    }

    /// Applies `events` events of customers drawn at random, in batches.
    pub fn random_events(&mut self, shard: &mut Shard, op: &mut EventOp, events: u64) {
        self.drive(shard, op, events, Workload::random);
    }

    /// What a shard worker does with a batch, minus the queue and the
    /// publishing: apply every event, flush the metrics, drop the output.
    /// Like the worker, it prefetches the customers of the events ahead.
    fn drive(&mut self, shard: &mut Shard, op: &mut EventOp, events: u64, mut next: impl FnMut(&mut Workload) -> Draw) {
        let mut left = events;
        let mut draws = Vec::with_capacity(BATCH);
        while left > 0 {
            let n = left.min(BATCH as u64);
            draws.clear();
            draws.extend((0..n).map(|_| next(self)));
            for (i, d) in draws.iter().enumerate() {
                shard.prefetch_ahead(|n| draws.get(i + 1 + n).map(|a| self.key(a.customer)));
                self.fill(d, op);
                shard.apply_event(op);
            }
            shard.metrics.flush();
            shard.out.messages.clear();
            left -= n;
        }
    }
}

/// Memory the kernel says is available for new work (MemAvailable), so that a
/// huge run is skipped rather than pushing the machine into swap or the OOM killer.
pub fn available_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo.lines().find_map(|l| l.strip_prefix("MemAvailable:")).and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok())).unwrap_or(0)
        * 1024
}
