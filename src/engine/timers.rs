//! Timers of one shard: a min-heap by due time. A customer has at most one
//! queued timer per purpose (an inactivity duration, a funnel's expiry, its
//! segment cell); a timer made stale by a later event is re-queued at its new
//! due time when it surfaces, or skipped, never searched for.

use crate::identity::CustomerKey;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// `after_inactivity`: index into `Plan::inactivity`.
    Inactivity(u8),
    /// A funnel attempt's window: index into `Plan::funnels`.
    FunnelExpiry(u16),
    /// The customer's segment cell may change (an event leaves the window).
    Segment,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub due: i64,
    pub key: CustomerKey,
    pub kind: TimerKind,
}

#[derive(Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl TimerQueue {
    pub fn push(&mut self, t: Timer) {
        self.heap.push(Reverse(t));
    }

    /// The next timer due at or before `watermark`, in due order.
    pub fn pop_due(&mut self, watermark: i64) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse(t)) if t.due <= watermark => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}
