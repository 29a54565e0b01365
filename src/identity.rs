//! ONE_ID resolution: every `(id type, value)` seen on an event is linked to the
//! others on that event; links are transitive (union-find over customer keys,
//! union by size, path halving). The resolver is owned by the router task, so
//! it needs no lock; shards only ever see the resolved customer key.
//!
//! The index stores a 64-bit hash of each id, not its text (the text lives once,
//! in the owning shard's customer state), which keeps an alias at ~20 bytes
//! here. Guard rails: at most `max_ids_per_type[t]` ids of type `t` and
//! `max_group_size` ids per customer; an event that would break either is
//! refused and links nothing.

use crate::catalog::{IdTypeId, IdTypes, MAX_ID_TYPES};
use crate::chunked::ChunkedVec;
use crate::config::IdentityConfig;
use crate::event::{RejectReason, Rejection};
use crate::split::SplitMap;
use rustc_hash::{FxHashMap, FxHasher};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::hash::{Hash, Hasher};

/// A customer's internal key: stable for the life of the customer; on a merge
/// the survivor keeps its key and the absorbed key points at it.
pub type CustomerKey = u32;

const DEAD: u32 = u32::MAX;

/// The hash of one id.
pub fn id_hash(ty: IdTypeId, value: &str) -> u64 {
    let mut h = FxHasher::default();
    ty.hash(&mut h);
    value.hash(&mut h);
    fmix64(h.finish())
}

/// MurmurHash3's finaliser: spreads FxHash's output over all 64 bits.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The outcome of resolving one event's ids.
#[derive(Debug, PartialEq)]
pub struct Resolved {
    /// The customer the event belongs to (after any merge).
    pub key: CustomerKey,
    /// True when no id was known: a new customer.
    pub created: bool,
    /// Customers merged into `key` by this event, largest first.
    pub absorbed: SmallVec<[CustomerKey; 2]>,
    /// Ids this event adds to the customer, as text for the shard to keep.
    pub new_ids: Vec<(IdTypeId, Box<str>)>,
}

pub struct Resolver {
    /// Split, so that growing it never stops the router for long.
    index: SplitMap<CustomerKey>,
    parent: ChunkedVec<u32>,
    size: ChunkedVec<u32>,
    /// Per customer, per limited type: how many ids of that type the group has.
    limited: ChunkedVec<u8>,
    limits: Vec<(IdTypeId, u32)>,
    max_group: u32,
    types: IdTypes,
    type_cache: FxHashMap<Box<str>, IdTypeId>,
    live: u64,
}

impl Resolver {
    pub fn new(cfg: &IdentityConfig, types: IdTypes) -> Resolver {
        let limits = cfg.max_ids_per_type.iter().filter_map(|(t, n)| types.intern(t).map(|id| (id, (*n).min(255)))).collect();
        Resolver {
            index: SplitMap::default(),
            parent: ChunkedVec::default(),
            size: ChunkedVec::default(),
            limited: ChunkedVec::default(),
            limits,
            max_group: cfg.max_group_size,
            types,
            type_cache: FxHashMap::default(),
            live: 0,
        }
    }

    /// Live customers (not merged away, not forgotten).
    pub fn customers(&self) -> u64 {
        self.live
    }

    /// Known aliases.
    pub fn aliases(&self) -> usize {
        self.index.len()
    }

    /// The id of a known id type (interned by the config or an earlier event).
    fn known_type(&mut self, name: &str) -> Option<IdTypeId> {
        if let Some(id) = self.type_cache.get(name) {
            return Some(*id);
        }
        let id = self.types.lookup(name)?;
        self.type_cache.insert(name.into(), id);
        Some(id)
    }

    /// The root of `k`'s group, or `None` if that customer was forgotten.
    fn find(&mut self, mut k: u32) -> Option<u32> {
        loop {
            let p = *self.parent.get(k as usize)?;
            if p == DEAD {
                return None;
            }
            if p == k {
                return Some(k);
            }
            let gp = self.parent[p as usize];
            if gp != DEAD {
                self.parent[k as usize] = gp;
            }
            k = p;
        }
    }

    fn limit_slot(&self, key: u32, i: usize) -> usize {
        key as usize * self.limits.len() + i
    }

    /// Resolves an event's ids to one customer, linking and merging as needed.
    /// On a refusal nothing changes.
    pub fn resolve(&mut self, ids: &[(Cow<'_, str>, Cow<'_, str>)]) -> Result<Resolved, Rejection> {
        let mut roots: SmallVec<[u32; 2]> = SmallVec::new();
        let mut fresh: SmallVec<[(IdTypeId, u64, usize); 4]> = SmallVec::new();
        // Ids of types no event has brought yet: necessarily new ids. Their
        // types are interned only if the event is taken (a refused event
        // leaves the id types, and so the ONE_ID order, as they were).
        let mut untyped: SmallVec<[usize; 2]> = SmallVec::new();
        for (i, (ty, value)) in ids.iter().enumerate() {
            let Some(t) = self.known_type(ty) else {
                // The same id twice on one event is one id.
                if !untyped.iter().any(|&j| ids[j] == ids[i]) {
                    untyped.push(i);
                }
                continue;
            };
            let h = id_hash(t, value);
            match self.index.get(&h).copied().and_then(|k| self.find(k)) {
                Some(r) if !roots.contains(&r) => roots.push(r),
                Some(_) => {}
                None if fresh.iter().any(|(_, fh, _)| *fh == h) => {}
                None => fresh.push((t, h, i)),
            }
        }
        if !untyped.is_empty() {
            let mut new_types: SmallVec<[&str; 2]> = SmallVec::new();
            for &i in &untyped {
                if !new_types.contains(&ids[i].0.as_ref()) {
                    new_types.push(&ids[i].0);
                }
            }
            if let Some(ty) = new_types.get(MAX_ID_TYPES.saturating_sub(self.types.len())) {
                return Err(too_many_id_types(ty));
            }
        }
        // Guard rails over the group this event would make.
        let size: u64 = roots.iter().map(|r| self.size[*r as usize] as u64).sum::<u64>() + (fresh.len() + untyped.len()) as u64;
        if size > self.max_group as u64 {
            return Err(Rejection::new(RejectReason::GroupLimit, format!("linking would make a customer of {size} ids (limit {})", self.max_group)));
        }
        for (li, (t, max)) in self.limits.iter().enumerate() {
            let have: u32 = roots.iter().map(|r| self.limited[self.limit_slot(*r, li)] as u32).sum();
            let adding = fresh.iter().filter(|(ft, _, _)| ft == t).count() as u32;
            if have + adding > *max {
                let name = self.types.name(*t);
                return Err(Rejection::new(RejectReason::IdentityConflict, format!("would link {} different `{name}` ids (limit {max})", have + adding)));
            }
        }
        // Commit.
        let some_untyped = !untyped.is_empty();
        for i in untyped {
            let ty = &ids[i].0;
            let t = self.types.intern(ty).ok_or_else(|| too_many_id_types(ty))?;
            self.type_cache.insert(ty.as_ref().into(), t);
            fresh.push((t, id_hash(t, &ids[i].1), i));
        }
        if some_untyped {
            // New ids in the event's order.
            fresh.sort_unstable_by_key(|f| f.2);
        }
        roots.sort_by_key(|r| (std::cmp::Reverse(self.size[*r as usize]), *r));
        let created = roots.is_empty();
        let key = match roots.first() {
            Some(r) => *r,
            None => {
                let k = u32::try_from(self.parent.len())
                    .ok()
                    .filter(|k| *k != DEAD)
                    .ok_or_else(|| Rejection::new(RejectReason::GroupLimit, "customer key space exhausted"))?;
                self.parent.push(k);
                self.size.push(0);
                let limited = self.limited.len() + self.limits.len();
                self.limited.grow_to(limited, 0);
                self.live += 1;
                k
            }
        };
        let absorbed: SmallVec<[u32; 2]> = roots.iter().skip(1).copied().collect();
        for &o in &absorbed {
            self.parent[o as usize] = key;
            self.size[key as usize] += self.size[o as usize];
            for li in 0..self.limits.len() {
                let add = self.limited[self.limit_slot(o, li)];
                let slot = self.limit_slot(key, li);
                self.limited[slot] = self.limited[slot].saturating_add(add);
            }
            self.live -= 1;
        }
        let mut new_ids = Vec::with_capacity(fresh.len());
        for (t, h, i) in fresh {
            self.index.insert(h, key);
            self.size[key as usize] += 1;
            if let Some(li) = self.limits.iter().position(|(lt, _)| *lt == t) {
                let slot = self.limit_slot(key, li);
                self.limited[slot] = self.limited[slot].saturating_add(1);
            }
            new_ids.push((t, Box::from(ids[i].1.as_ref())));
        }
        Ok(Resolved { key, created, absorbed, new_ids })
    }

    /// The customer an id belongs to. `ty` `None` tries every id type in priority order.
    pub fn lookup(&mut self, ty: Option<&str>, value: &str) -> Option<CustomerKey> {
        let types: Vec<IdTypeId> = match ty {
            Some(t) => vec![self.types.lookup(t)?],
            None => self.types.all().into_iter().map(|(id, _)| id).collect(),
        };
        types.into_iter().find_map(|t| self.index.get(&id_hash(t, value)).copied().and_then(|k| self.find(k)))
    }

    /// Forgets a customer: its ids resolve to nobody from now on.
    pub fn forget(&mut self, key: CustomerKey) -> bool {
        match self.find(key) {
            Some(root) => {
                self.parent[root as usize] = DEAD;
                self.live -= 1;
                true
            }
            None => false,
        }
    }

    /// Drops index entries of forgotten customers (the ids a shard removed).
    pub fn purge(&mut self, ids: &[(IdTypeId, Box<str>)]) {
        for (t, v) in ids {
            let h = id_hash(*t, v);
            if let Some(k) = self.index.get(&h).copied() {
                if self.find(k).is_none() {
                    self.index.remove(&h);
                }
            }
        }
    }

    /// Approximate bytes held by the index, for the memory benchmark.
    pub fn heap_bytes(&self) -> usize {
        self.index.heap_bytes() + self.parent.heap_bytes() + self.size.heap_bytes() + self.limited.heap_bytes()
    }
}

fn too_many_id_types(ty: &str) -> Rejection {
    Rejection::new(RejectReason::TooManyIdTypes, format!("id type `{ty}` is past the limit of distinct id types"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn resolver(extra: &str) -> Resolver {
        let c = config::parse(&format!("[identity]\npriority = [\"user_id\", \"phone\", \"anonymous_id\"]\n{extra}")).unwrap().config;
        Resolver::new(&c.identity, crate::catalog::Catalog::new(&c).id_types)
    }

    fn ids<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
        pairs.iter().map(|(t, v)| (Cow::Borrowed(*t), Cow::Borrowed(*v))).collect()
    }

    #[test]
    fn anonymous_then_signup_links_to_one_customer() {
        let mut r = resolver("");
        let a = r.resolve(&ids(&[("anonymous_id", "dev-1")])).unwrap();
        assert!(a.created);
        let b = r.resolve(&ids(&[("anonymous_id", "dev-1"), ("user_id", "u-1")])).unwrap();
        assert_eq!(b.key, a.key);
        assert!(!b.created);
        assert_eq!(b.new_ids.len(), 1);
        assert_eq!(r.lookup(None, "u-1"), Some(a.key));
        assert_eq!(r.customers(), 1);
    }

    #[test]
    fn an_event_linking_two_customers_merges_them() {
        let mut r = resolver("");
        let a = r.resolve(&ids(&[("anonymous_id", "dev-1")])).unwrap().key;
        let b = r.resolve(&ids(&[("phone", "+1")])).unwrap().key;
        let m = r.resolve(&ids(&[("anonymous_id", "dev-1"), ("phone", "+1")])).unwrap();
        assert_eq!(m.key, a);
        assert_eq!(m.absorbed.as_slice(), &[b]);
        assert_eq!(r.lookup(Some("phone"), "+1"), Some(a));
        assert_eq!(r.customers(), 1);
    }

    #[test]
    fn second_user_id_is_an_identity_conflict_and_links_nothing() {
        let mut r = resolver("max_ids_per_type = { user_id = 1 }\n");
        let a = r.resolve(&ids(&[("user_id", "u-1"), ("anonymous_id", "d")])).unwrap().key;
        let b = r.resolve(&ids(&[("user_id", "u-2")])).unwrap().key;
        let err = r.resolve(&ids(&[("anonymous_id", "d"), ("user_id", "u-2")])).unwrap_err();
        assert_eq!(err.reason, RejectReason::IdentityConflict);
        assert_eq!(r.lookup(None, "u-2"), Some(b));
        assert_eq!(r.lookup(None, "d"), Some(a));
        let err = r.resolve(&ids(&[("anonymous_id", "d"), ("user_id", "u-3")])).unwrap_err();
        assert_eq!(err.reason, RejectReason::IdentityConflict);
        assert_eq!(r.lookup(None, "u-3"), None);
    }

    #[test]
    fn group_size_is_bounded() {
        let mut r = resolver("max_group_size = 2\n");
        r.resolve(&ids(&[("anonymous_id", "a"), ("phone", "p")])).unwrap();
        let err = r.resolve(&ids(&[("anonymous_id", "a"), ("user_id", "u")])).unwrap_err();
        assert_eq!(err.reason, RejectReason::GroupLimit);
    }

    #[test]
    fn forgotten_ids_start_a_new_customer() {
        let mut r = resolver("");
        let a = r.resolve(&ids(&[("user_id", "u")])).unwrap().key;
        assert!(r.forget(a));
        assert_eq!(r.lookup(None, "u"), None);
        let b = r.resolve(&ids(&[("user_id", "u")])).unwrap();
        assert!(b.created);
        assert_ne!(b.key, a);
    }

    #[test]
    fn a_refused_event_leaves_the_id_types_as_they_were() {
        let mut r = resolver("max_group_size = 2\n");
        r.resolve(&ids(&[("anonymous_id", "a"), ("phone", "p")])).unwrap();
        let known = r.types.len();
        let err = r.resolve(&ids(&[("anonymous_id", "a"), ("crm_id", "c")])).unwrap_err();
        assert_eq!(err.reason, RejectReason::GroupLimit);
        assert_eq!((r.types.len(), r.types.lookup("crm_id")), (known, None));
        // Taken, the new type is interned, and its id found by it.
        let k = r.resolve(&ids(&[("crm_id", "c"), ("crm_id", "c"), ("loyalty", "l")])).unwrap();
        assert_eq!(
            k.new_ids.iter().map(|(t, v)| (r.types.name(*t).to_string(), v.to_string())).collect::<Vec<_>>(),
            [("crm_id".to_string(), "c".to_string()), ("loyalty".to_string(), "l".to_string())]
        );
        assert_eq!(r.lookup(Some("crm_id"), "c"), Some(k.key));
    }

    #[test]
    fn id_types_past_the_limit_are_refused_without_interning_any() {
        let mut r = resolver("");
        for n in r.types.len()..MAX_ID_TYPES - 1 {
            r.resolve(&ids(&[(&format!("t{n}"), "v")])).unwrap();
        }
        let err = r.resolve(&ids(&[("new_a", "v"), ("new_b", "v")])).unwrap_err();
        assert_eq!(err.reason, RejectReason::TooManyIdTypes);
        assert!(err.detail.contains("new_b"), "{}", err.detail);
        assert_eq!((r.types.len(), r.types.lookup("new_a")), (MAX_ID_TYPES - 1, None));
        r.resolve(&ids(&[("new_a", "v"), ("new_a", "w")])).unwrap();
        assert_eq!(r.types.len(), MAX_ID_TYPES);
    }
}
