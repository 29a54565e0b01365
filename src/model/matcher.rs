//! The one answer to "does this event match": transitions, counted windows,
//! funnel steps, exclusions and trigger `unless` clauses all use [`Matcher`].

use crate::catalog::{Catalog, ChannelId, KindId};
use crate::config::{MatchConfig, OneOrMany};

/// The parts of an event that rules look at.
#[derive(Clone, Copy, Debug)]
pub struct Touch {
    pub ts: i64,
    pub channel: ChannelId,
    pub kind: KindId,
    pub value: Option<f64>,
}

/// A small fixed set of ids as a bitmask.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdSet(Box<[u64]>);

impl IdSet {
    pub fn with_capacity(n: usize) -> IdSet {
        IdSet(vec![0; n.div_ceil(64).max(1)].into_boxed_slice())
    }
    pub fn insert(&mut self, id: u16) {
        let (w, b) = (id as usize / 64, id as usize % 64);
        if let Some(word) = self.0.get_mut(w) {
            *word |= 1 << b;
        }
    }
    pub fn contains(&self, id: u16) -> bool {
        let (w, b) = (id as usize / 64, id as usize % 64);
        self.0.get(w).is_some_and(|word| word & (1 << b) != 0)
    }
}

#[derive(Clone, Debug)]
pub struct Matcher {
    /// `None` matches every kind (`"*"`).
    kinds: Option<IdSet>,
    channels: Option<IdSet>,
    min_value: Option<f64>,
}

impl Matcher {
    pub fn new(cat: &Catalog, kinds: &OneOrMany, channels: Option<&OneOrMany>, min_value: Option<f64>) -> Matcher {
        let kinds = if kinds.names().contains(&"*") {
            None
        } else {
            let mut set = IdSet::with_capacity(cat.kind_count());
            for k in kinds.names() {
                set.insert(cat.kind(k));
            }
            Some(set)
        };
        let channels = channels.filter(|c| !c.names().contains(&"*")).map(|c| {
            let mut set = IdSet::with_capacity(cat.channel_count());
            for name in c.names() {
                if let Some(id) = cat.configured_channel(name) {
                    set.insert(id);
                }
            }
            set
        });
        Matcher { kinds, channels, min_value }
    }

    pub fn from_config(cat: &Catalog, m: &MatchConfig) -> Matcher {
        Matcher::new(cat, &m.kind, m.channel.as_ref(), m.min_value)
    }

    pub fn matches(&self, t: &Touch) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(t.kind))
            && self.channels.as_ref().is_none_or(|c| c.contains(t.channel))
            && self.min_value.is_none_or(|min| t.value.is_some_and(|v| v >= min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn kind_channel_and_min_value_all_must_hold() {
        let c = config::parse("kinds = [\"purchase\", \"view\"]\n[channels]\napp = \"tech\"\nsms = \"low\"\n").unwrap().config;
        let cat = Catalog::new(&c);
        let m = Matcher::new(&cat, &OneOrMany::One("purchase".into()), Some(&OneOrMany::Many(vec!["app".into()])), Some(100.0));
        let t = |kind: &str, ch: &str, v: Option<f64>| Touch { ts: 0, channel: cat.channel(ch).unwrap(), kind: cat.kind(kind), value: v };
        assert!(m.matches(&t("purchase", "app", Some(100.0))));
        assert!(!m.matches(&t("purchase", "app", Some(99.0))));
        assert!(!m.matches(&t("purchase", "app", None)));
        assert!(!m.matches(&t("purchase", "sms", Some(200.0))));
        assert!(!m.matches(&t("view", "app", Some(200.0))));
        let any = Matcher::new(&cat, &OneOrMany::One("*".into()), None, None);
        assert!(any.matches(&t("view", "sms", None)));
    }
}
