//! The ground truth: a deliberately plain, sequential reading of DESIGN.md's
//! model semantics that shares no code with the engine (nothing from `model`,
//! `engine`, `identity`, `event` or `catalog`), so that the engine is checked
//! against an independent implementation rather than against itself.
//!
//! Plainness over speed: a customer is a set of ids (an event's ids are one
//! customer; an event whose ids belong to several customers merges them),
//! every applied event stays in its customer's history and `count` + `within`
//! scans that list, and timers are an ordered set of (due, customer, duration).
//!
//! Readings of DESIGN.md that the engine must share:
//! - only accepted events move the watermark (refused, duplicate and late
//!   inputs are not "seen"); a duplicate is an id already accepted (the
//!   engine's dedup window is assumed large enough), checked before lateness;
//! - `count` + `within` counts the events of the `on` kind(s), whatever
//!   their channel or value, this one included, with `ts` in `(ts - within, ts]`;
//! - a timer is due at the customer's latest applied event time + D and fires
//!   once, when the watermark reaches it; timers fire before a merge, a merge
//!   before its event applies;
//! - at a timer, per model the first `after_inactivity` rule of that duration
//!   whose `from` holds fires;
//! - identity limits (`max_ids_per_type`, `max_group_size`) refuse an event
//!   whose union of ids would break them: it goes to the DLQ and links nothing.

use crate::config::{Config, MatchConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// What a correct engine reports after the input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    /// Customers (ONE_IDs) at the end: accepted events' id groups after every merge.
    pub customers: u64,
    /// model → stage → customers; every stage of every model is listed.
    pub stages: BTreeMap<String, BTreeMap<String, u64>>,
    /// Events accepted and applied.
    pub events: u64,
    /// Inputs refused (invalid, or breaking an identity limit).
    pub dlq: u64,
    pub duplicates: u64,
    pub late: u64,
}

/// How the input ends, which decides the final watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A replay: the watermark jumps to the largest event time.
    Replay,
    /// A final watermark of the caller's choosing, e.g. a live journeyd's after
    /// the idle rule: wall clock − `idle_timeout` − `allowed_lateness`.
    Watermark(i64),
}

/// What became of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Dlq,
    Duplicate,
    Late,
}

/// An `on` clause with its names kept as names.
struct When {
    /// `None`: any kind (`*`).
    kinds: Option<Vec<String>>,
    channels: Option<Vec<String>>,
    min_value: Option<f64>,
    /// (count, within ms).
    count: Option<(usize, i64)>,
}

impl When {
    fn new(m: &MatchConfig) -> When {
        let names = |o: &crate::config::OneOrMany| {
            let n: Vec<String> = o.names().iter().map(|s| s.to_string()).collect();
            (!n.iter().any(|s| s == "*")).then_some(n)
        };
        When {
            kinds: names(&m.kind),
            channels: m.channel.as_ref().and_then(names),
            min_value: m.min_value,
            count: match (m.count, m.within) {
                (Some(c), Some(w)) => Some((c as usize, w.millis())),
                _ => None,
            },
        }
    }

    fn matches(&self, kind: &str, channel: &str, value: Option<f64>) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.iter().any(|x| x == kind))
            && self.channels.as_ref().is_none_or(|c| c.iter().any(|x| x == channel))
            && self.min_value.is_none_or(|min| value.is_some_and(|v| v >= min))
    }
}

struct Rule {
    from: Vec<usize>,
    to: usize,
    on: Option<When>,
    /// Index into `Reference::durations` for `after_inactivity`.
    after: Option<usize>,
}

struct Model {
    name: String,
    stages: Vec<String>,
    initial: usize,
    /// Merge rank of each stage: the higher wins.
    rank: Vec<usize>,
    rules: Vec<Rule>,
}

/// One applied event, as a customer's history keeps it.
struct Past {
    ts: i64,
    kind: String,
    channel: String,
    value: Option<f64>,
}

struct Customer {
    ids: BTreeSet<(String, String)>,
    stages: Vec<usize>,
    history: Vec<Past>,
    /// Latest applied event time; `None` until the first event applies.
    last: Option<i64>,
}

/// A decoded input.
struct Input {
    id: String,
    ts: i64,
    ids: Vec<(String, String)>,
    channel: String,
    kind: String,
    value: Option<f64>,
}

/// The reference engine: feed it inputs in order, then ask for the truth.
pub struct Reference {
    models: Vec<Model>,
    durations: Vec<i64>,
    lateness: i64,
    now_ms: i64,
    max_future_skew: i64,
    max_bytes: usize,
    channels: BTreeSet<String>,
    blocked: Vec<String>,
    limits: BTreeMap<String, u32>,
    max_group: usize,
    customers: Vec<Option<Customer>>,
    owner: HashMap<(String, String), usize>,
    timers: BTreeSet<(i64, usize, usize)>,
    accepted: HashSet<String>,
    watermark: i64,
    max_ts: i64,
    counts: Truth,
}

impl Reference {
    /// A reference for `config`; `now_ms` is the wall clock that future
    /// timestamps are judged against.
    pub fn new(config: &Config, now_ms: i64) -> Reference {
        let mut durations: Vec<i64> = Vec::new();
        let models = config
            .models
            .iter()
            .map(|m| {
                let at = |s: &str| m.stages.iter().position(|x| x == s).unwrap_or(0);
                let order = m.merge_order.as_ref().unwrap_or(&m.stages);
                let rules = m
                    .transitions
                    .iter()
                    .map(|t| Rule {
                        from: t.from.names().into_iter().flat_map(|s| if s == "*" { 0..m.stages.len() } else { at(s)..at(s) + 1 }).collect(),
                        to: at(&t.to),
                        on: t.on.as_ref().map(When::new),
                        after: t.after_inactivity.map(|d| match durations.iter().position(|x| *x == d.millis()) {
                            Some(i) => i,
                            None => {
                                durations.push(d.millis());
                                durations.len() - 1
                            }
                        }),
                    })
                    .collect();
                Model {
                    name: m.name.clone(),
                    stages: m.stages.clone(),
                    initial: at(&m.initial),
                    rank: m.stages.iter().map(|s| order.iter().position(|o| o == s).unwrap_or(0)).collect(),
                    rules,
                }
            })
            .collect();
        Reference {
            models,
            durations,
            lateness: config.time.allowed_lateness.millis(),
            now_ms,
            max_future_skew: config.time.max_future_skew.millis(),
            max_bytes: config.limits.max_event_bytes,
            channels: config.channels.keys().cloned().collect(),
            blocked: config.identity.blocked_values.clone(),
            limits: config.identity.max_ids_per_type.clone(),
            max_group: config.identity.max_group_size as usize,
            customers: Vec::new(),
            owner: HashMap::new(),
            timers: BTreeSet::new(),
            accepted: HashSet::new(),
            watermark: i64::MIN,
            max_ts: i64::MIN,
            counts: Truth::default(),
        }
    }

    /// Starts from a watermark a live journeyd already had.
    pub fn with_watermark(mut self, watermark: i64) -> Reference {
        self.watermark = watermark;
        self
    }

    /// The watermark after the inputs so far.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Takes one input (`subject` is `None` for NDJSON).
    pub fn ingest(&mut self, subject: Option<&str>, payload: &[u8]) -> Outcome {
        let Some(ev) = self.decode(subject, payload) else {
            self.counts.dlq += 1;
            return Outcome::Dlq;
        };
        if self.accepted.contains(&ev.id) {
            self.counts.duplicates += 1;
            return Outcome::Duplicate;
        }
        if ev.ts < self.watermark {
            self.counts.late += 1;
            return Outcome::Late;
        }
        let mut owners: Vec<usize> = ev.ids.iter().filter_map(|id| self.owner.get(id).copied()).collect();
        owners.sort_unstable();
        owners.dedup();
        if !self.within_limits(&owners, &ev.ids) {
            self.counts.dlq += 1;
            return Outcome::Dlq;
        }
        self.accepted.insert(ev.id.clone());
        self.counts.events += 1;
        if ev.ts > self.max_ts {
            self.max_ts = ev.ts;
            self.watermark = self.watermark.max(ev.ts - self.lateness);
        }
        self.fire_due(self.watermark);
        let c = match owners.split_first() {
            None => {
                self.customers.push(Some(Customer {
                    ids: BTreeSet::new(),
                    stages: self.models.iter().map(|m| m.initial).collect(),
                    history: Vec::new(),
                    last: None,
                }));
                self.customers.len() - 1
            }
            Some((&first, rest)) => {
                for &other in rest {
                    self.merge(first, other);
                }
                first
            }
        };
        for id in &ev.ids {
            self.owner.insert(id.clone(), c);
        }
        self.apply(c, ev);
        Outcome::Applied
    }

    /// The truth after the inputs so far, ended as `end` says.
    pub fn truth(&self, end: End) -> Truth {
        let w = match end {
            End::Replay => self.watermark.max(self.max_ts),
            End::Watermark(w) => self.watermark.max(w),
        };
        // Timers still to fire, in due order, on copies of the stages they touch.
        let mut fired: HashMap<usize, Vec<usize>> = HashMap::new();
        for &(_, c, d) in self.timers.range(..=(w, usize::MAX, usize::MAX)) {
            let stages = fired.entry(c).or_insert_with(|| self.customer(c).stages.clone());
            self.on_timer(stages, d);
        }
        let mut t = Truth { stages: BTreeMap::new(), ..self.counts.clone() };
        for m in &self.models {
            t.stages.insert(m.name.clone(), m.stages.iter().map(|s| (s.clone(), 0)).collect());
        }
        for (i, c) in self.customers.iter().enumerate() {
            let Some(c) = c else { continue };
            t.customers += 1;
            let stages = fired.get(&i).unwrap_or(&c.stages);
            for (m, &s) in self.models.iter().zip(stages) {
                if let Some(n) = t.stages.get_mut(&m.name).and_then(|st| st.get_mut(&m.stages[s])) {
                    *n += 1;
                }
            }
        }
        t
    }

    fn customer(&self, c: usize) -> &Customer {
        self.customers[c].as_ref().expect("timers and owners point at live customers")
    }

    fn customer_mut(&mut self, c: usize) -> &mut Customer {
        self.customers[c].as_mut().expect("timers and owners point at live customers")
    }

    /// Would the union of `owners`' ids and the event's break an identity limit?
    fn within_limits(&self, owners: &[usize], ids: &[(String, String)]) -> bool {
        let mut union: BTreeSet<&(String, String)> = ids.iter().collect();
        for &o in owners {
            union.extend(self.customer(o).ids.iter());
        }
        union.len() <= self.max_group && self.limits.iter().all(|(ty, max)| union.iter().filter(|(t, _)| t == ty).count() <= *max as usize)
    }

    /// Fires every timer due at or before `w`, in due order.
    fn fire_due(&mut self, w: i64) {
        while let Some(&(due, c, d)) = self.timers.first() {
            if due > w {
                break;
            }
            self.timers.remove(&(due, c, d));
            let mut stages = std::mem::take(&mut self.customer_mut(c).stages);
            self.on_timer(&mut stages, d);
            self.customer_mut(c).stages = stages;
        }
    }

    /// An inactivity timer of duration `d`: per model, the first such rule whose `from` holds.
    fn on_timer(&self, stages: &mut [usize], d: usize) {
        for (m, stage) in self.models.iter().zip(stages.iter_mut()) {
            if let Some(r) = m.rules.iter().find(|r| r.after == Some(d) && r.from.contains(stage)) {
                *stage = r.to;
            }
        }
    }

    fn unschedule(&mut self, c: usize) {
        if let Some(last) = self.customer(c).last {
            for (d, ms) in self.durations.iter().enumerate() {
                self.timers.remove(&(last + ms, c, d));
            }
        }
    }

    /// Folds customer `other` into `into`: per model the later stage (merge
    /// order) wins, ids and histories combine, the last event time is the later.
    fn merge(&mut self, into: usize, other: usize) {
        self.unschedule(into);
        self.unschedule(other);
        let o = self.customers[other].take().expect("an owner is a live customer");
        for id in &o.ids {
            self.owner.insert(id.clone(), into);
        }
        let models = std::mem::take(&mut self.models);
        let c = self.customer_mut(into);
        for (m, (a, b)) in models.iter().zip(c.stages.iter_mut().zip(&o.stages)) {
            if m.rank[*b] > m.rank[*a] {
                *a = *b;
            }
        }
        c.ids.extend(o.ids);
        c.history.extend(o.history);
        c.last = c.last.max(o.last);
        self.models = models;
        // The merged customer's timer is re-armed when its event applies (that
        // event is never before the watermark, so its due time is after it).
    }

    fn apply(&mut self, c: usize, ev: Input) {
        self.unschedule(c);
        let models = std::mem::take(&mut self.models);
        let cust = self.customer_mut(c);
        cust.ids.extend(ev.ids);
        cust.history.push(Past { ts: ev.ts, kind: ev.kind, channel: ev.channel, value: ev.value });
        let now = cust.history.last().expect("just pushed");
        for (m, stage) in models.iter().zip(cust.stages.iter_mut()) {
            let fires = |r: &&Rule| {
                let Some(on) = &r.on else { return false };
                r.from.contains(stage)
                    && on.matches(&now.kind, &now.channel, now.value)
                    && on.count.is_none_or(|(count, within)| {
                        cust.history
                            .iter()
                            .filter(|p| p.ts > now.ts - within && p.ts <= now.ts && on.kinds.as_ref().is_none_or(|k| k.contains(&p.kind)))
                            .count()
                            >= count
                    })
            };
            if let Some(r) = m.rules.iter().find(fires) {
                *stage = r.to;
            }
        }
        cust.last = Some(cust.last.map_or(ev.ts, |l| l.max(ev.ts)));
        let last = cust.last.unwrap_or(ev.ts);
        self.models = models;
        for (d, ms) in self.durations.iter().enumerate() {
            self.timers.insert((last + ms, c, d));
        }
    }

    /// The event schema of DESIGN.md, read with serde_json's `Value`: `None`
    /// is a refusal.
    fn decode(&self, subject: Option<&str>, payload: &[u8]) -> Option<Input> {
        if payload.len() > self.max_bytes {
            return None;
        }
        let v: Value = serde_json::from_slice(payload).ok()?;
        let o = v.as_object()?;
        let id = o.get("id")?.as_str().filter(|s| !s.is_empty())?.to_string();
        let ts = match o.get("ts")? {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite() && f.abs() < 9.0e15).map(|f| f.floor() as i64))?,
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).ok()?.timestamp_millis(),
            _ => return None,
        };
        if ts < 0 || ts > self.now_ms + self.max_future_skew {
            return None;
        }
        let mut ids = Vec::new();
        for (ty, value) in o.get("ids")?.as_object()? {
            match value {
                Value::Null => {}
                Value::String(_) if ty.is_empty() => return None,
                Value::String(s) if self.is_blocked(s) => {}
                Value::String(s) => ids.push((ty.clone(), s.clone())),
                _ => return None,
            }
        }
        if ids.is_empty() {
            return None;
        }
        let (subj_channel, subj_kind) = subject_parts(subject);
        let channel = agree(subj_channel, o.get("channel"))?;
        let kind = agree(subj_kind, o.get("kind"))?;
        if !self.channels.is_empty() && !self.channels.contains(&channel) {
            return None;
        }
        let value = match o.get("value") {
            None => None,
            Some(v) => Some(v.as_f64().filter(|f| f.is_finite())?),
        };
        if o.get("campaign").is_some_and(|c| !c.is_string()) {
            return None;
        }
        match o.get("attrs") {
            None if kind == "consent" => return None,
            None => {}
            Some(Value::Object(a)) if kind == "consent" => {
                a.get("purpose")?.as_str()?;
                let ch = a.get("channel")?.as_str()?;
                a.get("granted")?.as_bool()?;
                if ch != "*" && !self.channels.is_empty() && !self.channels.contains(ch) {
                    return None;
                }
            }
            Some(Value::Object(_)) => {}
            Some(_) => return None,
        }
        Some(Input { id, ts, ids, channel, kind, value })
    }

    fn is_blocked(&self, v: &str) -> bool {
        let v = v.trim();
        ["", "null", "undefined", "0", "anonymous", "none"].into_iter().chain(self.blocked.iter().map(String::as_str)).any(|b| v.eq_ignore_ascii_case(b.trim()))
    }
}

fn subject_parts(subject: Option<&str>) -> (Option<&str>, Option<&str>) {
    let parts: Vec<&str> = subject.map(|s| s.split('.').collect()).unwrap_or_default();
    match parts.as_slice() {
        ["touch", ch, kind] if !ch.is_empty() && !kind.is_empty() => (Some(ch), Some(kind)),
        _ => (None, None),
    }
}

/// The subject's and the payload's value must agree; either alone is enough.
fn agree(from_subject: Option<&str>, from_payload: Option<&Value>) -> Option<String> {
    let payload = match from_payload {
        None => None,
        // An empty string counts as absent.
        Some(v) => Some(v.as_str()?).filter(|p| !p.is_empty()),
    };
    match (from_subject, payload) {
        (Some(s), Some(p)) if s != p => None,
        (_, Some(v)) | (Some(v), None) => Some(v.to_string()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests;
