//! A customer's linked ids, packed into one heap block: for each id, its
//! type (2 bytes), its length (4 bytes) and its bytes, in the order linked.
//! 16 bytes in the customer's slot and one allocation, where a list of
//! `(type, string)` pairs takes 56 bytes and one allocation per id.

use crate::catalog::IdTypeId;

const HEADER: usize = 6;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ids(Box<[u8]>);

impl Ids {
    /// The ids with their types, in the order they were linked.
    pub fn iter(&self) -> IdsIter<'_> {
        IdsIter { rest: &self.0 }
    }

    /// Where the ids are stored, for a prefetch (reading them to find the
    /// ONE_ID would wait for the very miss the prefetch is to hide).
    pub fn block(&self) -> *const u8 {
        self.0.as_ptr()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, t: IdTypeId, v: &str) -> bool {
        self.iter().any(|(et, ev)| et == t && ev == v)
    }

    /// Appends ids (one reallocation for all of them).
    pub fn extend<'a>(&mut self, ids: impl IntoIterator<Item = (IdTypeId, &'a str)>) {
        let mut bytes = std::mem::take(&mut self.0).into_vec();
        for (t, v) in ids {
            bytes.extend_from_slice(&t.to_le_bytes());
            bytes.extend_from_slice(&(v.len() as u32).to_le_bytes());
            bytes.extend_from_slice(v.as_bytes());
        }
        self.0 = bytes.into_boxed_slice();
    }

    /// Links an event's new ids (nothing to do for most events).
    pub fn link(&mut self, new_ids: &[(IdTypeId, Box<str>)]) {
        if !new_ids.is_empty() {
            self.extend(new_ids.iter().map(|(t, v)| (*t, &**v)));
        }
    }

    /// Appends the ids of `other` that this list lacks, in their order.
    pub fn absorb(&mut self, other: &Ids) {
        let new: Vec<(IdTypeId, &str)> = other.iter().filter(|(t, v)| !self.contains(*t, v)).collect();
        if !new.is_empty() {
            self.extend(new);
        }
    }

    /// The ONE_ID: the value of the highest-priority id type (lowest type
    /// id), the earliest linked on a tie.
    pub fn one_id(&self) -> &str {
        self.iter().min_by_key(|(t, _)| *t).map_or("", |(_, v)| v)
    }

    pub fn to_vec(&self) -> Vec<(IdTypeId, Box<str>)> {
        self.iter().map(|(t, v)| (t, Box::from(v))).collect()
    }
}

pub struct IdsIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for IdsIter<'a> {
    type Item = (IdTypeId, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let (head, rest) = self.rest.split_at_checked(HEADER)?;
        let t = IdTypeId::from_le_bytes([head[0], head[1]]);
        let len = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let (value, rest) = rest.split_at_checked(len)?;
        self.rest = rest;
        // Written from a `&str` by `extend`, so always UTF-8.
        Some((t, std::str::from_utf8(value).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_back_in_link_order_with_their_types() {
        let mut ids = Ids::default();
        assert_eq!((ids.one_id(), ids.is_empty()), ("", true));
        ids.extend([(3, "dev-1"), (0, "")]);
        ids.extend([(0, "ü-2"), (3, "dev-1")]);
        assert_eq!(ids.iter().collect::<Vec<_>>(), [(3, "dev-1"), (0, ""), (0, "ü-2"), (3, "dev-1")]);
        assert_eq!(ids.one_id(), "", "the lowest type, the earliest on a tie");
        assert!(ids.contains(0, "ü-2") && !ids.contains(3, "ü-2"));
    }

    #[test]
    fn absorbing_appends_only_the_ids_not_linked_yet() {
        let (mut a, mut b) = (Ids::default(), Ids::default());
        a.extend([(1, "a"), (2, "x")]);
        b.extend([(2, "x"), (1, "b"), (2, "y")]);
        a.absorb(&b);
        assert_eq!(a.to_vec(), [(1, "a".into()), (2, "x".into()), (1, "b".into()), (2, "y".into())]);
        assert_eq!(a.one_id(), "a");
    }
}
