//! When a customer next needs the clock. A customer keeps one timer in its
//! shard's queue, due at the earliest of its deadlines: an armed inactivity
//! duration, an open funnel attempt's expiry, its segment cell's next change,
//! a waiting trigger. Every change to a customer is followed by [`rewake`],
//! so the queued timer is never later than any deadline; one that became
//! stale (a sooner one was queued) is told apart by [`Customer::wake`].

use super::customer::Customer;
use super::timers::{Timer, TimerQueue};
use crate::identity::CustomerKey;
use crate::model::time48::Due48;
use crate::model::Plan;

/// The earliest deadline of `c`, or `i64::MAX` when it has none.
pub fn next_due(plan: &Plan, c: &Customer) -> i64 {
    let mut due = c.segment_due.get();
    for (i, d) in plan.inactivity.iter().enumerate() {
        if let Some(at) = inactive_at(c, 1u64 << i, *d) {
            due = due.min(at);
        }
    }
    for (funnel, s) in plan.funnels.iter().zip(&c.funnels) {
        if s.reached > 0 {
            due = due.min(funnel.expiry(s));
        }
    }
    for (trigger, s) in plan.triggers.iter().zip(&c.triggers) {
        if s.is_pending() {
            due = due.min(s.pending_due());
        }
        if let Some(at) = trigger.inactivity().and_then(|d| inactive_at(c, trigger.armed_bit, d)) {
            due = due.min(at);
        }
    }
    due
}

/// When the inactivity deadline of `armed` bit `bit` (duration `d`) falls,
/// if it is armed: `d` after the customer's last event.
pub fn inactive_at(c: &Customer, bit: u64, d: i64) -> Option<i64> {
    (c.armed & bit != 0).then(|| c.last_seen.get().saturating_add(d))
}

/// Queues a timer for `c`'s earliest deadline, unless one at least as soon
/// is queued already.
pub fn rewake(timers: &mut TimerQueue, plan: &Plan, key: CustomerKey, c: &mut Customer) {
    // In the customer's precision (a due time past 48 bits never comes), so
    // that the queued timer's due time is exactly the customer's `wake`.
    let due = Due48::new(next_due(plan, c));
    if due < c.wake {
        c.wake = due;
        timers.push(Timer { due: due.get(), key });
    }
}

/// Arms every inactivity deadline (after an event: inactivity is measured
/// from the customer's last event again).
pub fn arm(plan: &Plan, c: &mut Customer) {
    c.armed |= plan.inactivity_bits;
}
