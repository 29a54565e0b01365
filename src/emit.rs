//! What journeyd publishes: transition and trigger JSON (DESIGN.md contract)
//! and the subjects they go to. Subjects are built once per (model, from, to);
//! a shard only serialises the payload of a transition it fires.

use crate::catalog::ChannelId;
use crate::model::Plan;
use async_nats::Subject;
use bytes::Bytes;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

pub const DLQ_SUBJECT: &str = "journey.dlq";
pub const LATE_SUBJECT: &str = "journey.late";
pub const REASON_HEADER: &str = "Journey-Reason";
pub const DETAIL_HEADER: &str = "Journey-Detail";

/// Why a transition happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// An event matched a rule's `on`.
    Event,
    /// An `after_inactivity` timer fell due.
    Inactivity,
    /// Two customers merged and this side's stage changed.
    Merge,
}

/// One share of a transition's credit: attribution method (index into the
/// plan's methods), channel, share.
pub type Credit = (u8, ChannelId, f64);

/// A transition's `attribution` object: per method, channel → credit (the
/// credits of one method sum to 1). `credits` hold one entry per method and
/// channel, sorted by method name, then channel name, as the JSON keys are.
pub struct Attribution<'a> {
    pub plan: &'a Plan,
    pub credits: &'a [Credit],
}

/// Puts credits in [`Attribution`]'s order: method name, then channel name.
pub fn sort_credits(plan: &Plan, credits: &mut [Credit]) {
    credits.sort_unstable_by_key(|e| (plan.attribution.method_rank[e.0 as usize], plan.catalog.channel_rank(e.1)));
}

impl Serialize for Attribution<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for group in self.credits.chunk_by(|a, b| a.0 == b.0) {
            let method = self.plan.attribution.methods[group[0].0 as usize].as_str();
            map.serialize_entry(method, &Channels { plan: self.plan, credits: group })?;
        }
        map.end()
    }
}

/// One method's credits by channel name.
struct Channels<'a> {
    plan: &'a Plan,
    credits: &'a [Credit],
}

impl Serialize for Channels<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.credits.len()))?;
        for &(_, channel, credit) in self.credits {
            map.serialize_entry(self.plan.catalog.channel_name(channel), &credit)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
pub struct TransitionJson<'a> {
    pub one_id: &'a str,
    pub model: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub ts: i64,
    pub event_id: Option<&'a str>,
    pub channel: &'a str,
    pub reason: Cause,
    pub attribution: &'a Attribution<'a>,
}

#[derive(Serialize)]
pub struct TriggerJson<'a> {
    pub one_id: &'a str,
    pub trigger: &'a str,
    pub channel: &'a str,
    /// Time of the event that started it (the customer's last event for inactivity).
    pub ts: i64,
    /// Event time at which it came due and was sent.
    pub due_ts: i64,
    /// `event` (due at the event), `timeout` (`within` passed without `unless`), or `inactivity`.
    pub reason: &'a str,
}

/// A message ready to publish.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub subject: Subject,
    pub payload: Bytes,
}

/// `journey.transition.<model>.<from>.<to>` for every pair, prebuilt.
pub struct TransitionSubjects {
    per_model: Vec<Vec<Subject>>,
    stages: Vec<usize>,
}

impl TransitionSubjects {
    pub fn new(plan: &Plan) -> TransitionSubjects {
        let per_model = plan
            .models
            .iter()
            .map(|m| {
                m.stages.iter().flat_map(|from| m.stages.iter().map(move |to| Subject::from(format!("journey.transition.{}.{from}.{to}", m.name)))).collect()
            })
            .collect();
        TransitionSubjects { per_model, stages: plan.models.iter().map(|m| m.stages.len()).collect() }
    }

    pub fn get(&self, model: usize, from: u16, to: u16) -> Subject {
        self.per_model[model][from as usize * self.stages[model] + to as usize].clone()
    }
}

thread_local! {
    /// Where messages are serialised before being copied out at their exact
    /// size: growing a fresh `Vec` through reallocations cost a tenth of a
    /// shard's time.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(4096));
}

pub fn to_bytes<T: Serialize>(v: &T) -> Bytes {
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        // Serialising our own plain structs into a Vec cannot fail.
        match serde_json::to_writer(&mut *buf, v) {
            Ok(()) => Bytes::copy_from_slice(buf),
            Err(_) => Bytes::new(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribution_keys_are_in_name_order() {
        let text = "[channels]\nweb = \"tech\"\napp = \"tech\"\nstore = \"high\"\n\n[attribution]\nmodels = [\"linear\", \"first_touch\"]\n";
        let plan = Plan::new(crate::config::parse(text).expect("config").config);
        let ch = |name| plan.catalog.configured_channel(name).expect("channel");
        let (linear, first) = (0, 1);
        let mut credits = vec![(linear, ch("web"), 0.5), (linear, ch("app"), 0.25), (linear, ch("store"), 0.25), (first, ch("web"), 1.0)];
        sort_credits(&plan, &mut credits);
        let json = serde_json::to_string(&Attribution { plan: &plan, credits: &credits }).expect("json");
        assert_eq!(json, r#"{"first_touch":{"web":1.0},"linear":{"app":0.25,"store":0.25,"web":0.5}}"#);
        assert_eq!(serde_json::to_string(&Attribution { plan: &plan, credits: &[] }).expect("json"), "{}");
    }
}
