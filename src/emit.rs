//! What journeyd publishes: transition and trigger JSON (DESIGN.md contract)
//! and the subjects they go to. Subjects are built once per (model, from, to);
//! a shard only serialises the payload of a transition it fires.

use crate::catalog::ChannelId;
use crate::model::Plan;
use crate::model::StageId;
use async_nats::Subject;
use bytes::Bytes;
use serde::Serialize;

pub const DLQ_SUBJECT: &str = "journey.dlq";
pub const LATE_SUBJECT: &str = "journey.late";
pub const REASON_HEADER: &str = "Journey-Reason";
pub const DETAIL_HEADER: &str = "Journey-Detail";
/// On a refused input cut to fit the server's `max_payload`: its full length.
pub const TRUNCATED_HEADER: &str = "Journey-Truncated";

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

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Event => "event",
            Cause::Inactivity => "inactivity",
            Cause::Merge => "merge",
        }
    }
}

/// One share of a transition's credit: attribution method (index into the
/// plan's methods), channel, share.
pub type Credit = (u8, ChannelId, f64);

/// Puts credits in the order of a transition's `attribution` keys: method
/// name, then channel name.
pub fn sort_credits(plan: &Plan, credits: &mut [Credit]) {
    credits.sort_unstable_by_key(|e| (plan.attribution.method_rank[e.0 as usize], plan.catalog.channel_rank(e.1)));
}

/// One transition, as a shard hands it to [`TransitionJson::write`].
pub struct Transition<'a> {
    pub one_id: &'a str,
    pub model: usize,
    pub from: StageId,
    pub to: StageId,
    pub ts: i64,
    pub event_id: Option<&'a str>,
    pub channel: ChannelId,
    pub reason: Cause,
    /// One per method and channel, in [`sort_credits`] order.
    pub credits: &'a [Credit],
}

/// Writes transition JSON (`{"one_id","model","from","to","ts","event_id",
/// "channel","reason","attribution"}`) with the config's names quoted and
/// escaped once, up front: serialising a transition field by field spent
/// most of its time escaping the same model, stage, channel and method names.
pub struct TransitionJson {
    models: Vec<Box<[u8]>>,
    stages: Vec<Vec<Box<[u8]>>>,
    channels: Vec<Box<[u8]>>,
    methods: Vec<Box<[u8]>>,
}

/// `s` as a JSON string.
fn quoted(s: &str) -> Box<[u8]> {
    let mut buf = Vec::with_capacity(s.len() + 2);
    json_str(&mut buf, s);
    buf.into_boxed_slice()
}

/// Appends `s` as a JSON string, escaped.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

impl TransitionJson {
    pub fn new(plan: &Plan) -> TransitionJson {
        TransitionJson {
            models: plan.models.iter().map(|m| quoted(&m.name)).collect(),
            stages: plan.models.iter().map(|m| m.stages.iter().map(|st| quoted(st)).collect()).collect(),
            channels: plan.catalog.channels().map(|(_, name)| quoted(name)).collect(),
            methods: plan.attribution.methods.iter().map(|m| quoted(m.as_str())).collect(),
        }
    }

    fn channel(&self, c: ChannelId) -> &[u8] {
        self.channels.get(c as usize).map_or(b"\"other\"", |q| q)
    }

    /// Appends `t` as JSON to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>, t: &Transition) {
        let stages = &self.stages[t.model];
        buf.extend_from_slice(b"{\"one_id\":");
        json_str(buf, t.one_id);
        buf.extend_from_slice(b",\"model\":");
        buf.extend_from_slice(&self.models[t.model]);
        buf.extend_from_slice(b",\"from\":");
        buf.extend_from_slice(&stages[t.from as usize]);
        buf.extend_from_slice(b",\"to\":");
        buf.extend_from_slice(&stages[t.to as usize]);
        buf.extend_from_slice(b",\"ts\":");
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, &t.ts);
        buf.extend_from_slice(b",\"event_id\":");
        match t.event_id {
            Some(id) => json_str(buf, id),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",\"channel\":");
        buf.extend_from_slice(self.channel(t.channel));
        buf.extend_from_slice(b",\"reason\":\"");
        buf.extend_from_slice(t.reason.as_str().as_bytes());
        buf.extend_from_slice(b"\",\"attribution\":{");
        for (i, group) in t.credits.chunk_by(|a, b| a.0 == b.0).enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(&self.methods[group[0].0 as usize]);
            buf.extend_from_slice(b":{");
            for (j, &(_, channel, credit)) in group.iter().enumerate() {
                if j > 0 {
                    buf.push(b',');
                }
                buf.extend_from_slice(self.channel(channel));
                buf.push(b':');
                // Writing into a Vec cannot fail; a non-finite credit is `null`, as serde_json writes it.
                let _ = serde_json::to_writer(&mut *buf, &credit);
            }
            buf.push(b'}');
        }
        buf.extend_from_slice(b"}}");
    }
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
    use serde::ser::SerializeMap;
    use serde::Serializer;

    /// The transition JSON as serde writes it, the reference for [`TransitionJson::write`].
    #[derive(Serialize)]
    struct Reference<'a> {
        one_id: &'a str,
        model: &'a str,
        from: &'a str,
        to: &'a str,
        ts: i64,
        event_id: Option<&'a str>,
        channel: &'a str,
        reason: Cause,
        attribution: Attribution<'a>,
    }

    /// A transition's `attribution` object: per method, channel → credit (the
    /// credits of one method sum to 1). `credits` hold one entry per method and
    /// channel, sorted by method name, then channel name, as the JSON keys are.
    struct Attribution<'a> {
        plan: &'a Plan,
        credits: &'a [Credit],
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

    fn plan() -> Plan {
        let text = r#"
[channels]
web = "tech"
app = "tech"
in_store = "high"

[attribution]
models = ["linear", "first_touch"]

[[model]]
name = "m-1"
initial = "a"
stages = ["a", "b_2"]
transitions = [{ from = ["a"], to = "b_2", on = { kind = "x" } }]
"#;
        Plan::new(crate::config::parse(text).expect("config").config)
    }

    fn reference(plan: &Plan, t: &Transition) -> String {
        let m = &plan.models[t.model];
        let r = Reference {
            one_id: t.one_id,
            model: &m.name,
            from: m.stage_name(t.from),
            to: m.stage_name(t.to),
            ts: t.ts,
            event_id: t.event_id,
            channel: plan.catalog.channel_name(t.channel),
            reason: t.reason,
            attribution: Attribution { plan, credits: t.credits },
        };
        serde_json::to_string(&r).expect("json")
    }

    #[test]
    fn transitions_are_written_as_serde_writes_them() {
        let plan = plan();
        let json = TransitionJson::new(&plan);
        let ch = |name| plan.catalog.configured_channel(name).expect("channel");
        let (linear, first) = (0, 1);
        let mut credits = vec![(linear, ch("web"), 0.5), (linear, ch("app"), 0.1 + 0.2), (linear, ch("in_store"), 0.2), (first, ch("web"), 1.0)];
        sort_credits(&plan, &mut credits);
        let cases = [
            Transition {
                one_id: "u\"1\n",
                model: 0,
                from: 0,
                to: 1,
                ts: -5,
                event_id: Some("e\\1\u{1}"),
                channel: ch("app"),
                reason: Cause::Event,
                credits: &credits,
            },
            Transition { one_id: "", model: 0, from: 1, to: 0, ts: i64::MAX, event_id: None, channel: 0, reason: Cause::Inactivity, credits: &[] },
            Transition { one_id: "ü", model: 0, from: 0, to: 1, ts: 0, event_id: Some(""), channel: 999, reason: Cause::Merge, credits: &credits[..1] },
        ];
        for t in &cases {
            let mut buf = Vec::new();
            json.write(&mut buf, t);
            let got = String::from_utf8(buf).expect("UTF-8");
            assert_eq!(got, reference(&plan, t));
            serde_json::from_str::<serde_json::Value>(&got).expect("valid JSON");
        }
        let mut buf = Vec::new();
        json.write(&mut buf, &cases[0]);
        assert!(String::from_utf8(buf)
            .expect("UTF-8")
            .contains(r#""attribution":{"first_touch":{"web":1.0},"linear":{"app":0.30000000000000004,"in_store":0.2,"web":0.5}}"#));
    }
}
