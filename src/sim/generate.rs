//! The traffic generator: every person's scripted journey (`script`), merged
//! into one stream in event-time order, with a few deliberate anomalies mixed
//! in — duplicates (an accepted event sent again), late events (well before
//! the watermark) and invalid inputs (not JSON, unknown channel, no ids, a
//! future time, a wrong type, an event linking two people's user ids) — each
//! counted by the truth and none able to change a stage.
//!
//! Time: the history spans two years or more and ends `END_GAP` before
//! `start_ms` (the wall clock: journeyd refuses events too far ahead of it).
//! Event times are pushed out of the windows that would make an inactivity
//! timer fall due between the end of the input and `LIVE_HORIZON` after
//! `start_ms`, and the stream ends with an event at exactly the end, so a live
//! journeyd agrees with the replay truth until then (see the module `sim`).

use super::reference::{End, Reference};
use super::script::{Avoid, Draft, Person, World};
use super::vocab::{Vocab, DAY};
use super::{Generated, SimEvent};
use crate::config::Config;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::BTreeMap;

/// The last simulated event is this long before `start_ms`.
const END_GAP: i64 = 60_000;
/// How long after `start_ms` no timer of the generated history falls due.
const LIVE_HORIZON: i64 = DAY;
/// Margin before the last event in which no timer falls due either.
const SETTLE: i64 = 60_000;
/// Share of inputs that are duplicates, late, invalid.
const DUPLICATES: f64 = 0.004;
const LATE: f64 = 0.002;
const INVALID: f64 = 0.002;
/// A duplicate follows its original within this many inputs.
const DUPLICATE_DISTANCE: usize = 20;

/// Generates traffic for `customers` people, deterministic for
/// (`config`, `customers`, `seed`, `start_ms`), and its replay truth.
pub fn generate(config: &Config, customers: usize, seed: u64, start_ms: i64) -> Generated {
    let v = Vocab::new(config);
    let end = start_ms - END_GAP;
    let begin = end - v.span();
    let avoid = Avoid(
        v.durations
            .iter()
            .map(|d| (end - SETTLE - v.lateness - d, start_ms + LIVE_HORIZON - d))
            .filter(|(_, hi)| hi + 1 < end - SETTLE)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
    );
    let world = World { vocab: &v, avoid: &avoid, seed, end };
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut drafts: Vec<Draft> = Vec::with_capacity(customers * 16);
    for n in 0..customers {
        let start = rng.random_range(begin..end);
        Person::new(&world, &mut rng, &mut drafts, n as u32, start).live();
    }
    if customers > 0 {
        // A visitor arriving just now: the input ends at exactly `end`.
        let ids = match &v.anon {
            Some(a) => vec![(a.clone(), format!("dev{seed}-last"))],
            None => vec![(v.user.clone(), format!("u{seed}-last"))],
        };
        drafts.push(Draft { ts: end, person: u32::MAX, seq: 0, ids, channel: v.web[0].clone(), kind: "view".into(), value: None, campaign: None, attrs: None });
    }
    drafts.sort_by_key(|d| (d.ts, d.person, d.seq));
    let events = Stream::new(&v, seed, start_ms).mix(&drafts, &mut rng);
    let mut reference = Reference::new(config, start_ms);
    for e in &events {
        reference.ingest(Some(&e.subject), &e.payload);
    }
    Generated { events, truth: reference.truth(End::Replay) }
}

/// The payload of DESIGN.md's event schema.
#[derive(Serialize)]
struct Wire<'a> {
    id: &'a str,
    ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ids: Option<BTreeMap<&'a str, &'a str>>,
    channel: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    campaign: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attrs: Option<&'a serde_json::Value>,
}

/// Numbers the drafts into inputs and mixes the anomalies in.
struct Stream<'v> {
    v: &'v Vocab,
    seed: u64,
    start_ms: i64,
    out: Vec<SimEvent>,
}

impl<'v> Stream<'v> {
    fn new(v: &'v Vocab, seed: u64, start_ms: i64) -> Stream<'v> {
        Stream { v, seed, start_ms, out: Vec::new() }
    }

    fn next_id(&self) -> String {
        format!("s{}-{}", self.seed, self.out.len())
    }

    fn push(&mut self, ts: i64, channel: &str, kind: &str, payload: Vec<u8>) {
        self.out.push(SimEvent { subject: format!("touch.{channel}.{kind}"), payload, ts });
    }

    fn encode(&mut self, d: &Draft, ts: i64) {
        let id = self.next_id();
        let wire = Wire {
            id: &id,
            ts,
            ids: Some(d.ids.iter().map(|(t, v)| (t.as_str(), v.as_str())).collect()),
            channel: &d.channel,
            kind: &d.kind,
            value: d.value,
            campaign: d.campaign,
            attrs: d.attrs.as_ref(),
        };
        let payload = serde_json::to_vec(&wire).expect("a plain struct serializes");
        self.push(ts, &d.channel, &d.kind, payload);
    }

    fn mix(mut self, drafts: &[Draft], rng: &mut SmallRng) -> Vec<SimEvent> {
        self.out.reserve(drafts.len() + drafts.len() / 64);
        let mut again: Vec<(usize, SimEvent)> = Vec::new();
        // (user id, device) pairs already linked by a sign-up: material for identity conflicts.
        let mut signed: Vec<(String, String)> = Vec::new();
        let mut max_ts = i64::MIN;
        for (i, d) in drafts.iter().enumerate() {
            self.encode(d, d.ts);
            max_ts = max_ts.max(d.ts);
            if d.kind == self.v.signup {
                let user = d.ids.iter().find(|(t, _)| *t == self.v.user);
                let dev = d.ids.iter().find(|(t, _)| Some(t) == self.v.anon.as_ref());
                if let (Some(u), Some(a)) = (user, dev) {
                    signed.push((u.1.clone(), a.1.clone()));
                }
            }
            if rng.random_bool(DUPLICATES) {
                let copy = self.out.last().cloned().expect("just pushed");
                again.push((self.out.len() + rng.random_range(0..DUPLICATE_DISTANCE), copy));
            }
            if i > 100 && rng.random_bool(LATE) {
                let old = &drafts[rng.random_range(i.saturating_sub(1000)..i)];
                let ts = (max_ts - self.v.lateness - 1 - rng.random_range(0..7 * DAY)).max(0);
                let late = Draft { kind: "view".into(), value: None, attrs: None, campaign: None, ids: old.ids[..1].to_vec(), ..old.clone() };
                self.encode(&late, ts);
            }
            if rng.random_bool(INVALID) {
                self.invalid(d, max_ts, &signed, rng);
            }
            while let Some(pos) = again.iter().position(|(at, _)| *at <= self.out.len()) {
                let (_, e) = again.swap_remove(pos);
                self.out.push(e);
            }
        }
        again.sort_by_key(|(at, _)| *at);
        self.out.extend(again.into_iter().map(|(_, e)| e));
        self.out
    }

    /// One refused input, modelled on `d`.
    fn invalid(&mut self, d: &Draft, max_ts: i64, signed: &[(String, String)], rng: &mut SmallRng) {
        let id = self.next_id();
        let ids: BTreeMap<&str, &str> = d.ids.iter().map(|(t, v)| (t.as_str(), v.as_str())).collect();
        let base = serde_json::json!({ "id": id, "ts": max_ts, "ids": ids, "channel": d.channel, "kind": d.kind });
        let mut variant = rng.random_range(0..6);
        if variant == 1 && self.v.unknown_channel.is_none() {
            variant = 0;
        }
        if variant == 5 && (!self.v.user_limited || self.v.anon.is_none() || signed.len() < 2) {
            variant = 2;
        }
        let with = |key: &str, value: serde_json::Value| {
            let mut o = base.clone();
            o[key] = value;
            serde_json::to_vec(&o).expect("a JSON value serializes")
        };
        let (channel, kind, payload) = match variant {
            0 => {
                let text = serde_json::to_string(&base).expect("a JSON value serializes");
                (d.channel.clone(), d.kind.clone(), text.as_bytes()[..text.len() / 2].to_vec())
            }
            1 => {
                let ch = self.v.unknown_channel.clone().unwrap_or_default();
                (ch.clone(), d.kind.clone(), with("channel", ch.into()))
            }
            2 => {
                let mut o = base.clone();
                o.as_object_mut().map(|m| m.remove("ids"));
                (d.channel.clone(), d.kind.clone(), serde_json::to_vec(&o).expect("a JSON value serializes"))
            }
            3 => {
                let future = self.start_ms + self.v.max_future_skew + DAY;
                (d.channel.clone(), d.kind.clone(), with("ts", future.into()))
            }
            4 => (d.channel.clone(), d.kind.clone(), with("value", "12.50".into())),
            _ => {
                // Person A's user id with person B's device: two user ids in one customer.
                let a = rng.random_range(0..signed.len());
                let b = (a + 1 + rng.random_range(0..signed.len() - 1)) % signed.len();
                let anon = self.v.anon.clone().unwrap_or_default();
                let mut o = base.clone();
                o["ids"] = serde_json::json!({ self.v.user.clone(): signed[a].0, anon: signed[b].1 });
                o["kind"] = "login".into();
                (d.channel.clone(), "login".to_string(), serde_json::to_vec(&o).expect("a JSON value serializes"))
            }
        };
        self.push(max_ts, &channel, &kind, payload);
    }
}

#[cfg(test)]
mod tests;
