//! The TOML config as users write it: serde types with defaults and
//! `deny_unknown_fields`, so a typo is an error with its line, never ignored.
//! Semantic checks (names that must exist, orders, limits) live in `validate.rs`.

use super::duration::Dur;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub nats: NatsConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub time: TimeConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    /// Channel name → service mode. When non-empty, channels are closed: an
    /// event on any other channel goes to the DLQ (`unknown_channel`).
    #[serde(default)]
    pub channels: BTreeMap<String, ServiceMode>,
    /// Event kinds used as metric labels beyond those the rules name.
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default, rename = "model")]
    pub models: Vec<ModelConfig>,
    #[serde(default, rename = "funnel")]
    pub funnels: Vec<FunnelConfig>,
    #[serde(default)]
    pub attribution: AttributionConfig,
    #[serde(default)]
    pub segments: SegmentConfig,
    #[serde(default, rename = "trigger")]
    pub triggers: Vec<TriggerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    #[serde(default = "default_nats_url")]
    pub url: String,
    #[serde(default = "default_subjects")]
    pub subjects: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub credentials: Option<String>,
    /// Messages the client buffers per subscription before it reports a slow consumer.
    #[serde(default = "default_subscription_capacity")]
    pub subscription_capacity: usize,
    pub jetstream: Option<JetStreamConfig>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: default_nats_url(),
            subjects: default_subjects(),
            user: None,
            password: None,
            token: None,
            credentials: None,
            subscription_capacity: default_subscription_capacity(),
            jetstream: None,
        }
    }
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_subjects() -> Vec<String> {
    vec!["touch.>".into()]
}
fn default_subscription_capacity() -> usize {
    262_144
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamConfig {
    pub stream: String,
    pub consumer: String,
    /// On start, rebuild customer state by replaying what the consumer had
    /// acknowledged, with output muted.
    #[serde(default = "default_rebuild")]
    pub rebuild: bool,
}

fn default_rebuild() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: default_listen() }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    #[serde(default = "default_lateness")]
    pub allowed_lateness: Dur,
    #[serde(default = "default_idle")]
    pub idle_timeout: Dur,
    #[serde(default = "default_skew")]
    pub max_future_skew: Dur,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig { allowed_lateness: default_lateness(), idle_timeout: default_idle(), max_future_skew: default_skew() }
    }
}

fn default_lateness() -> Dur {
    Dur::from_secs(5)
}
fn default_idle() -> Dur {
    Dur::from_secs(10)
}
fn default_skew() -> Dur {
    Dur::from_secs(60)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Payloads larger than this go to the DLQ (`oversized`).
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// How many recent event ids are remembered to drop duplicates.
    #[serde(default = "default_dedup_window")]
    pub dedup_window: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { max_event_bytes: default_max_event_bytes(), dedup_window: default_dedup_window() }
    }
}

fn default_max_event_bytes() -> usize {
    64 * 1024
}
fn default_dedup_window() -> usize {
    1_000_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Id types in the order that names the ONE_ID (first present wins).
    #[serde(default = "default_priority")]
    pub priority: Vec<String>,
    /// At most this many distinct ids of a type per customer, e.g. `{ user_id = 1 }`.
    #[serde(default)]
    pub max_ids_per_type: BTreeMap<String, u32>,
    /// At most this many ids in one customer's group.
    #[serde(default = "default_max_group")]
    pub max_group_size: u32,
    /// Id values that never identify anyone, on top of the built-in list.
    #[serde(default)]
    pub blocked_values: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig { priority: default_priority(), max_ids_per_type: BTreeMap::new(), max_group_size: default_max_group(), blocked_values: Vec::new() }
    }
}

fn default_priority() -> Vec<String> {
    ["user_id", "phone", "email", "wechat_unionid", "wechat_openid", "anonymous_id"].iter().map(|s| s.to_string()).collect()
}
fn default_max_group() -> u32 {
    64
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Shard workers; 0 means one per core.
    #[serde(default)]
    pub shards: usize,
    /// Batches each shard's queue holds before the router waits (back-pressure).
    #[serde(default)]
    pub queue_batches: Option<usize>,
    /// Most events per batch.
    #[serde(default)]
    pub batch_size: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    Tech,
    Low,
    High,
}

impl ServiceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceMode::Tech => "tech",
            ServiceMode::Low => "low",
            ServiceMode::High => "high",
        }
    }
}

/// One name or a list of names.
#[derive(Debug, Clone)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a name or a list of names")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<OneOrMany, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(OneOrMany::Many)
            }
        }
        d.deserialize_any(V)
    }
}

impl OneOrMany {
    pub fn names(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// What an event must look like to match (`on`, `unless`, funnel steps).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    pub kind: OneOrMany,
    pub channel: Option<OneOrMany>,
    pub min_value: Option<f64>,
    pub count: Option<u32>,
    pub within: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    pub initial: String,
    pub stages: Vec<String>,
    /// Stage order used when two customers merge (later wins); defaults to `stages`.
    pub merge_order: Option<Vec<String>>,
    #[serde(default)]
    pub transitions: Vec<TransitionConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionConfig {
    pub from: OneOrMany,
    pub to: String,
    pub on: Option<MatchConfig>,
    pub after_inactivity: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelConfig {
    pub name: String,
    pub steps: Vec<FunnelStepConfig>,
    pub window: Dur,
    /// Kinds that end an open attempt.
    #[serde(default)]
    pub exclusions: Vec<String>,
    /// Whether a customer may start another attempt after completing one.
    #[serde(default = "yes")]
    pub reentry: bool,
}

fn yes() -> bool {
    true
}

/// A funnel step: a kind name, or a table (whose own errors, such as an
/// unknown key, are reported as they are).
#[derive(Debug, Clone)]
pub enum FunnelStepConfig {
    Kind(String),
    Step(StepTable),
}

impl<'de> Deserialize<'de> for FunnelStepConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FunnelStepConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a kind name or a step table { kind, name, channel, min_value, within }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FunnelStepConfig, E> {
                Ok(FunnelStepConfig::Kind(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<FunnelStepConfig, A::Error> {
                StepTable::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(FunnelStepConfig::Step)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTable {
    pub kind: OneOrMany,
    pub name: Option<String>,
    pub channel: Option<OneOrMany>,
    pub min_value: Option<f64>,
    /// Most time allowed since the previous step.
    pub within: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributionConfig {
    #[serde(default = "default_lookback")]
    pub lookback: Dur,
    #[serde(default = "default_attribution_models")]
    pub models: Vec<String>,
    #[serde(default = "default_half_life")]
    pub half_life: Dur,
    /// Touches kept per customer (the most recent).
    #[serde(default = "default_max_touches")]
    pub max_touches: usize,
    #[serde(default = "default_first_share")]
    pub position_first: f64,
    #[serde(default = "default_first_share")]
    pub position_last: f64,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            lookback: default_lookback(),
            models: default_attribution_models(),
            half_life: default_half_life(),
            max_touches: default_max_touches(),
            position_first: default_first_share(),
            position_last: default_first_share(),
        }
    }
}

fn default_lookback() -> Dur {
    Dur::from_secs(30 * 86_400)
}
fn default_half_life() -> Dur {
    Dur::from_secs(7 * 86_400)
}
fn default_max_touches() -> usize {
    32
}
fn default_first_share() -> f64 {
    0.4
}
fn default_attribution_models() -> Vec<String> {
    ["first_touch", "last_touch", "linear", "time_decay", "position_based"].iter().map(|s| s.to_string()).collect()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    #[serde(default = "default_segment_window")]
    pub window: Dur,
    #[serde(default = "default_purchase_kinds")]
    pub purchase_kinds: Vec<String>,
    #[serde(default = "default_engagement_kinds")]
    pub engagement_kinds: Vec<String>,
    /// At least this many events in the window is `high`; at least one is `low`.
    #[serde(default = "default_high_purchase")]
    pub purchase_high: u32,
    #[serde(default = "default_high_engagement")]
    pub engagement_high: u32,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            window: default_segment_window(),
            purchase_kinds: default_purchase_kinds(),
            engagement_kinds: default_engagement_kinds(),
            purchase_high: default_high_purchase(),
            engagement_high: default_high_engagement(),
        }
    }
}

fn default_segment_window() -> Dur {
    Dur::from_secs(30 * 86_400)
}
fn default_purchase_kinds() -> Vec<String> {
    vec!["purchase".into()]
}
fn default_engagement_kinds() -> Vec<String> {
    ["view", "open", "click", "email_open", "sms_click", "push_open", "visit", "contact"].iter().map(|s| s.to_string()).collect()
}
fn default_high_purchase() -> u32 {
    3
}
fn default_high_engagement() -> u32 {
    10
}

/// Accepted and checked so configs stay forward compatible; see the README for
/// which trigger features this version evaluates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    pub name: String,
    pub on: Option<MatchConfig>,
    pub after_inactivity: Option<Dur>,
    pub unless: Option<MatchConfig>,
    pub within: Option<Dur>,
    #[serde(default)]
    pub channels: Vec<String>,
    pub cap: Option<CapConfig>,
    pub quiet_hours: Option<QuietHoursConfig>,
    pub consent: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapConfig {
    pub max: u32,
    pub per: Dur,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursConfig {
    pub from: String,
    pub to: String,
    #[serde(default = "default_offset")]
    pub utc_offset: String,
}

fn default_offset() -> String {
    "+00:00".into()
}
