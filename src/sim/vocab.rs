//! What the generator may say for a given config: its channels by service
//! mode, the kinds its rules name (sign-up, one-off steps, repeated
//! transactions, engagement), the thresholds and windows worth probing, and
//! the id types of `identity.priority` with their per-customer limits.

use crate::config::{Config, ServiceMode};
use std::collections::BTreeMap;

pub(crate) const DAY: i64 = 86_400_000;

/// Channels used when a config leaves `[channels]` open.
const OPEN_CHANNELS: [(&str, ServiceMode); 9] = [
    ("app", ServiceMode::Tech),
    ("web", ServiceMode::Tech),
    ("wechat", ServiceMode::Tech),
    ("mini_program", ServiceMode::Tech),
    ("push", ServiceMode::Tech),
    ("sms", ServiceMode::Low),
    ("email", ServiceMode::Low),
    ("store", ServiceMode::High),
    ("call_center", ServiceMode::High),
];

/// Channels a lapsed customer comes back on, in order of preference.
const COMEBACK_CHANNELS: [&str; 6] = ["wechat", "mini_program", "store", "call_center", "branch", "h5"];

#[derive(Debug)]
pub(crate) struct Vocab {
    pub signup: String,
    /// One-off steps after sign-up, in the order rules name them (activate, open_account…).
    pub ladder: Vec<String>,
    /// Repeated, value-carrying kinds: those with `count` or `min_value` in a rule.
    pub transactions: Vec<String>,
    /// Other kinds rules name (login, contact…), mixed into sessions.
    pub engagement: Vec<String>,
    /// Kind → channels some rule requires for it.
    pub hints: BTreeMap<String, Vec<String>>,
    /// `min_value`s of rules, probed at, just below and above.
    pub thresholds: Vec<f64>,
    /// Median order value.
    pub value_scale: f64,
    /// The first `count` + `within` rule: (kind, count, within ms).
    pub counted: Option<(String, usize, i64)>,
    /// Distinct `after_inactivity` durations (ms).
    pub durations: Vec<i64>,
    pub lateness: i64,
    pub max_future_skew: i64,
    /// Tech-mode channels other than push: where people browse.
    pub web: Vec<String>,
    pub push: Option<String>,
    pub email: Option<String>,
    pub sms: Option<String>,
    pub low: Vec<String>,
    pub comeback: Vec<String>,
    pub all: Vec<String>,
    /// A channel name the config does not have (for invalid inputs), if channels are closed.
    pub unknown_channel: Option<String>,
    pub user: String,
    pub anon: Option<String>,
    pub phone: Option<String>,
    pub wechat: Option<String>,
    pub email_id: Option<String>,
    /// Most anonymous ids (devices) one person uses.
    pub devices: usize,
    /// Whether an event naming two people's user ids is refused (`max_ids_per_type` of 1).
    pub user_limited: bool,
}

impl Vocab {
    pub fn new(c: &Config) -> Vocab {
        let mut rule_kinds: Vec<String> = Vec::new();
        let mut transactions: Vec<String> = Vec::new();
        let mut hints: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut thresholds: Vec<f64> = Vec::new();
        let mut counted = None;
        let mut durations: Vec<i64> = Vec::new();
        for t in c.models.iter().flat_map(|m| &m.transitions) {
            if let Some(d) = t.after_inactivity {
                if !durations.contains(&d.millis()) {
                    durations.push(d.millis());
                }
            }
            let Some(on) = &t.on else { continue };
            // Consent events carry attrs of their own; `Person::consent` writes them.
            let kinds: Vec<String> = on.kind.names().iter().filter(|k| **k != "*" && **k != "consent").map(|k| k.to_string()).collect();
            for k in &kinds {
                if !rule_kinds.contains(k) {
                    rule_kinds.push(k.clone());
                }
                if (on.count.is_some() || on.min_value.is_some()) && !transactions.contains(k) {
                    transactions.push(k.clone());
                }
                if let Some(ch) = &on.channel {
                    let e = hints.entry(k.clone()).or_default();
                    e.extend(ch.names().iter().filter(|c| **c != "*").map(|c| c.to_string()));
                }
            }
            if let Some(min) = on.min_value {
                thresholds.push(min);
            }
            if let (Some(n), Some(w), Some(k), None) = (on.count, on.within, kinds.first(), &counted) {
                counted = Some((k.clone(), n as usize, w.millis()));
            }
        }
        let signup = "signup".to_string();
        if transactions.is_empty() {
            transactions.push(rule_kinds.iter().rev().find(|k| **k != signup).cloned().unwrap_or_else(|| "purchase".into()));
        }
        let mut ladder = vec!["activate".to_string()];
        let mut engagement = Vec::new();
        for k in &rule_kinds {
            if *k == signup || transactions.contains(k) || ladder.contains(k) {
                continue;
            }
            // Kinds that rules accept from several stages (a re-activation
            // list, a channel-bound contact) recur; the others are steps.
            if hints.contains_key(k)
                || c.models
                    .iter()
                    .flat_map(|m| &m.transitions)
                    .any(|t| t.on.as_ref().is_some_and(|o| o.kind.names().len() > 1 && o.kind.names().contains(&k.as_str())))
            {
                engagement.push(k.clone());
            } else {
                ladder.push(k.clone());
            }
        }

        let channels: Vec<(String, ServiceMode)> = if c.channels.is_empty() {
            OPEN_CHANNELS.iter().map(|(n, m)| (n.to_string(), *m)).collect()
        } else {
            c.channels.iter().map(|(n, m)| (n.clone(), *m)).collect()
        };
        let named = |n: &str| channels.iter().find(|(c, _)| c == n).map(|(c, _)| c.clone());
        let all: Vec<String> = channels.iter().map(|(c, _)| c.clone()).collect();
        let of_mode = |mode: ServiceMode| -> Vec<String> { channels.iter().filter(|(_, m)| *m == mode).map(|(c, _)| c.clone()).collect() };
        let mut web: Vec<String> = of_mode(ServiceMode::Tech).into_iter().filter(|c| c != "push").collect();
        if web.is_empty() {
            web = all.clone();
        }
        let mut low = of_mode(ServiceMode::Low);
        if low.is_empty() {
            low = all.clone();
        }
        let mut comeback: Vec<String> = COMEBACK_CHANNELS.iter().filter_map(|c| named(c)).collect();
        for c in of_mode(ServiceMode::High) {
            if !comeback.contains(&c) {
                comeback.push(c);
            }
        }
        if comeback.is_empty() {
            comeback = all.clone();
        }
        let unknown_channel = (!c.channels.is_empty()).then(|| (0..).map(|i| format!("fax{i}")).find(|n| !c.channels.contains_key(n)).unwrap_or_default());

        let prio = &c.identity.priority;
        let has = |t: &str| prio.iter().any(|p| p == t).then(|| t.to_string());
        let anon = has("anonymous_id");
        let user = has("user_id").or_else(|| prio.iter().find(|p| Some(*p) != anon.as_ref()).cloned()).unwrap_or_else(|| "user_id".into());
        let limit = |t: &Option<String>| t.as_ref().and_then(|t| c.identity.max_ids_per_type.get(t)).copied();
        let second = |t: &str| has(t).filter(|t| *t != user && limit(&Some(t.clone())) != Some(0));
        let value_max = thresholds.iter().copied().fold(0.0f64, f64::max);
        Vocab {
            signup,
            ladder,
            transactions,
            engagement,
            hints,
            thresholds,
            value_scale: (value_max / 20.0).max(60.0),
            counted,
            durations,
            lateness: c.time.allowed_lateness.millis(),
            max_future_skew: c.time.max_future_skew.millis(),
            push: named("push"),
            email: named("email"),
            sms: named("sms"),
            web,
            low,
            comeback,
            all,
            unknown_channel,
            devices: limit(&anon).map_or(3, |n| (n as usize).min(3)),
            user_limited: limit(&Some(user.clone())) == Some(1),
            phone: second("phone"),
            wechat: second("wechat_unionid"),
            email_id: second("email"),
            user,
            anon: anon.filter(|a| limit(&Some(a.clone())) != Some(0)),
        }
    }

    /// How long the simulated history spans: long enough for every window and
    /// several dormancies.
    pub fn span(&self) -> i64 {
        let longest = self.durations.iter().copied().max().unwrap_or(0).max(self.counted.as_ref().map_or(0, |c| c.2));
        (730 * DAY).max(3 * longest)
    }
}
