//! The closed vocabulary of a config, interned: channels (with their service
//! mode), event kinds and id types become small integer ids, so the engine
//! compares `u16`s and every metric label comes from a bounded set. Anything
//! not configured maps to `other`.

use crate::config::{Config, FunnelStepConfig, ServiceMode};
use rustc_hash::FxHashMap;
use std::sync::{Arc, RwLock};

pub type ChannelId = u16;
pub type KindId = u16;
pub type IdTypeId = u16;

/// The channel of a transition that no event caused (an inactivity timer).
pub const CHANNEL_NONE: ChannelId = 0;
/// Any channel not in `[channels]` (only possible when channels are open).
pub const CHANNEL_OTHER: ChannelId = 1;
/// Any kind no rule, funnel, trigger, segment or `kinds` list names.
pub const KIND_OTHER: KindId = 0;

/// Most distinct id types the identity index accepts (configured ones included).
pub const MAX_ID_TYPES: usize = 256;

#[derive(Debug)]
pub struct Catalog {
    channel_names: Vec<String>,
    channel_modes: Vec<Option<ServiceMode>>,
    channel_index: FxHashMap<String, ChannelId>,
    /// Each channel's place among the channel names in name order.
    channel_rank: Vec<u16>,
    /// Whether an unknown channel is refused (`[channels]` is non-empty).
    pub channels_closed: bool,
    kind_names: Vec<String>,
    kind_index: FxHashMap<String, KindId>,
    /// The `consent` kind, always interned.
    pub kind_consent: KindId,
    pub id_types: IdTypes,
}

/// For each name, its place in name order.
pub fn name_ranks<S: AsRef<str>>(names: &[S]) -> Vec<u16> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|a, b| names[*a].as_ref().cmp(names[*b].as_ref()));
    let mut rank = vec![0; names.len()];
    for (r, i) in order.into_iter().enumerate() {
        rank[i] = r as u16;
    }
    rank
}

/// Channel names in rules (`on`, `unless`, funnel steps) and trigger channels.
fn referenced_channels(c: &Config) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    let matchers = c.models.iter().flat_map(|m| m.transitions.iter().filter_map(|t| t.on.as_ref()));
    let matchers = matchers.chain(c.triggers.iter().flat_map(|t| [&t.on, &t.unless].into_iter().flatten()));
    for m in matchers {
        names.extend(m.channel.iter().flat_map(|ch| ch.names()));
    }
    for f in &c.funnels {
        for s in &f.steps {
            if let FunnelStepConfig::Step(t) = s {
                names.extend(t.channel.iter().flat_map(|ch| ch.names()));
            }
        }
    }
    for t in &c.triggers {
        names.extend(t.channels.iter().map(String::as_str));
    }
    names
}

impl Catalog {
    pub fn new(c: &Config) -> Catalog {
        let mut cat = Catalog {
            channel_names: vec!["none".into(), "other".into()],
            channel_modes: vec![None, None],
            channel_index: FxHashMap::default(),
            channel_rank: Vec::new(),
            channels_closed: !c.channels.is_empty(),
            kind_names: vec!["other".into()],
            kind_index: FxHashMap::default(),
            kind_consent: 0,
            id_types: IdTypes::new(&c.identity.priority),
        };
        for (name, mode) in &c.channels {
            cat.channel_index.insert(name.clone(), cat.channel_names.len() as ChannelId);
            cat.channel_names.push(name.clone());
            cat.channel_modes.push(Some(*mode));
        }
        if !cat.channels_closed {
            // Open channels: the ones the rules and triggers name are told
            // apart (without a service mode); any other is `other`.
            for name in referenced_channels(c) {
                if !["*", "none", "other"].contains(&name) && !cat.channel_index.contains_key(name) {
                    cat.channel_index.insert(name.to_string(), cat.channel_names.len() as ChannelId);
                    cat.channel_names.push(name.to_string());
                    cat.channel_modes.push(None);
                }
            }
        }
        let mut kinds: Vec<&str> = vec!["consent"];
        kinds.extend(c.kinds.iter().map(String::as_str));
        for m in &c.models {
            for t in &m.transitions {
                if let Some(on) = &t.on {
                    kinds.extend(on.kind.names());
                }
            }
        }
        for f in &c.funnels {
            kinds.extend(f.exclusions.iter().map(String::as_str));
            for s in &f.steps {
                match s {
                    FunnelStepConfig::Kind(k) => kinds.push(k),
                    FunnelStepConfig::Step(t) => kinds.extend(t.kind.names()),
                }
            }
        }
        for t in &c.triggers {
            for m in [&t.on, &t.unless].into_iter().flatten() {
                kinds.extend(m.kind.names());
            }
        }
        kinds.extend(c.segments.purchase_kinds.iter().map(String::as_str));
        kinds.extend(c.segments.engagement_kinds.iter().map(String::as_str));
        // A kind named `other` gets an id of its own (it matches only events
        // of that kind), though it shares the label of the unnamed kinds.
        for k in kinds {
            if k != "*" && !cat.kind_index.contains_key(k) {
                cat.kind_index.insert(k.to_string(), cat.kind_names.len() as KindId);
                cat.kind_names.push(k.to_string());
            }
        }
        cat.kind_consent = cat.kind_index["consent"];
        cat.channel_rank = name_ranks(&cat.channel_names);
        cat
    }

    /// The id of a channel name: `None` when channels are closed and it is unknown.
    pub fn channel(&self, name: &str) -> Option<ChannelId> {
        match self.channel_index.get(name) {
            Some(id) => Some(*id),
            None if self.channels_closed => None,
            None => Some(CHANNEL_OTHER),
        }
    }

    /// A configured channel's id, for rules (no `other` fallback).
    pub fn configured_channel(&self, name: &str) -> Option<ChannelId> {
        self.channel_index.get(name).copied()
    }

    pub fn kind(&self, name: &str) -> KindId {
        self.kind_index.get(name).copied().unwrap_or(KIND_OTHER)
    }

    pub fn channel_name(&self, id: ChannelId) -> &str {
        self.channel_names.get(id as usize).map_or("other", String::as_str)
    }

    /// Orders channels by name without comparing strings.
    pub fn channel_rank(&self, id: ChannelId) -> u16 {
        self.channel_rank.get(id as usize).copied().unwrap_or(u16::MAX)
    }

    pub fn channel_mode(&self, id: ChannelId) -> Option<ServiceMode> {
        self.channel_modes.get(id as usize).copied().flatten()
    }

    pub fn kind_name(&self, id: KindId) -> &str {
        self.kind_names.get(id as usize).map_or("other", String::as_str)
    }

    pub fn channel_count(&self) -> usize {
        self.channel_names.len()
    }

    pub fn kind_count(&self) -> usize {
        self.kind_names.len()
    }

    /// Every channel name with its id, `none` and `other` included.
    pub fn channels(&self) -> impl Iterator<Item = (ChannelId, &str)> {
        self.channel_names.iter().enumerate().map(|(i, n)| (i as ChannelId, n.as_str()))
    }

    pub fn kinds(&self) -> impl Iterator<Item = (KindId, &str)> {
        self.kind_names.iter().enumerate().map(|(i, n)| (i as KindId, n.as_str()))
    }
}

/// Id types, interned in priority order first, then as first seen (bounded).
/// A lower id means a higher priority when naming the ONE_ID.
#[derive(Debug, Clone)]
pub struct IdTypes {
    inner: Arc<RwLock<IdTypesInner>>,
}

#[derive(Debug, Default)]
struct IdTypesInner {
    names: Vec<Arc<str>>,
    index: FxHashMap<Arc<str>, IdTypeId>,
}

impl IdTypes {
    fn new(priority: &[String]) -> IdTypes {
        let t = IdTypes { inner: Arc::default() };
        for p in priority {
            t.intern(p);
        }
        t
    }

    /// The id of an id type, interning it if new; `None` past [`MAX_ID_TYPES`].
    pub fn intern(&self, name: &str) -> Option<IdTypeId> {
        if let Some(id) = self.inner.read().unwrap_or_else(|p| p.into_inner()).index.get(name) {
            return Some(*id);
        }
        let mut w = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = w.index.get(name) {
            return Some(*id);
        }
        if w.names.len() >= MAX_ID_TYPES {
            return None;
        }
        let id = w.names.len() as IdTypeId;
        let name: Arc<str> = Arc::from(name);
        w.names.push(name.clone());
        w.index.insert(name, id);
        Some(id)
    }

    /// How many id types are interned.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn lookup(&self, name: &str) -> Option<IdTypeId> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).index.get(name).copied()
    }

    pub fn name(&self, id: IdTypeId) -> Arc<str> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).names.get(id as usize).cloned().unwrap_or_else(|| Arc::from("unknown"))
    }

    pub fn all(&self) -> Vec<(IdTypeId, Arc<str>)> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).names.iter().enumerate().map(|(i, n)| (i as IdTypeId, n.clone())).collect()
    }
}
