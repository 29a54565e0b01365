//! What journeyd publishes: transition and trigger JSON (DESIGN.md contract)
//! and the subjects they go to. Subjects are built once per (model, from, to);
//! a shard only serialises the payload of a transition it fires.

use crate::model::Plan;
use async_nats::Subject;
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;

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

/// Per attribution model, channel → credit (sums to 1 per model).
pub type Attribution = BTreeMap<&'static str, BTreeMap<String, f64>>;

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
    pub attribution: &'a Attribution,
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
