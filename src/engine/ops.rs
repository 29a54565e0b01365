//! What the router sends a shard, in order, in batches. Per-customer order is
//! the order of ops in one shard's queue; cross-shard merges are an `Evict`
//! on the absorbed side's shard, queued before the `Absorb` on the survivor's.

use super::customer::{Customer, CustomerView, Forgotten};
use crate::catalog::{ChannelId, IdTypeId};
use crate::event::ConsentChange;
use crate::identity::CustomerKey;
use crate::model::Touch;
use std::time::Instant;
use tokio::sync::oneshot;

/// Event ids up to this long travel inside the op (a UUID is 36).
pub const INLINE_EVENT_ID: usize = 46;

/// An event's id, copied out of its payload so that the payload's buffer is
/// released on the router's thread, not shared with the shards': kept inline
/// up to [`INLINE_EVENT_ID`] bytes, boxed beyond.
#[derive(Debug, Clone)]
pub enum EventId {
    Inline { len: u8, bytes: [u8; INLINE_EVENT_ID] },
    Owned(Box<str>),
}

impl EventId {
    pub fn new(id: &str) -> EventId {
        match id.len() {
            len if len <= INLINE_EVENT_ID => {
                let mut bytes = [0; INLINE_EVENT_ID];
                bytes[..len].copy_from_slice(id.as_bytes());
                EventId::Inline { len: len as u8, bytes }
            }
            _ => EventId::Owned(id.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Copied whole from a `str`: always valid.
            EventId::Inline { len, bytes } => std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default(),
            EventId::Owned(s) => s,
        }
    }
}

/// One accepted event, resolved to its customer.
#[derive(Debug)]
pub struct EventOp {
    pub key: CustomerKey,
    pub touch: Touch,
    /// The watermark with this event taken into account.
    pub watermark: i64,
    pub event_id: EventId,
    pub new_ids: Vec<(IdTypeId, Box<str>)>,
    pub consent: Option<Box<ConsentChange>>,
    pub received: Instant,
}

impl EventOp {
    pub fn event_id(&self) -> &str {
        self.event_id.as_str()
    }
}

/// The event that caused a merge, for the merge transitions it publishes.
#[derive(Debug, Clone)]
pub struct MergeCause {
    pub ts: i64,
    pub channel: ChannelId,
    pub event_id: Box<str>,
    pub watermark: i64,
    /// Ids the event adds, joined at the (first) merge so the merged
    /// customer's ONE_ID already reflects them.
    pub new_ids: Vec<(IdTypeId, Box<str>)>,
}

pub type CustomerReply = oneshot::Sender<Option<CustomerView>>;

#[derive(Debug)]
pub enum Op {
    Event(EventOp),
    /// Hand a customer over to another shard (it is merging there).
    Evict {
        key: CustomerKey,
        watermark: i64,
        to: oneshot::Sender<Option<Box<Customer>>>,
    },
    /// Merge a customer evicted from another shard into `into`.
    Absorb {
        into: CustomerKey,
        from: oneshot::Receiver<Option<Box<Customer>>>,
        cause: MergeCause,
    },
    /// Merge `from` into `into`, both on this shard.
    MergeLocal {
        into: CustomerKey,
        from: CustomerKey,
        cause: MergeCause,
    },
    /// The watermark moved without an event (idle clock, end of replay).
    Tick {
        watermark: i64,
    },
    Query {
        key: CustomerKey,
        reply: CustomerReply,
    },
    /// Remove a customer; replies with what was removed.
    Forget {
        key: CustomerKey,
        reply: oneshot::Sender<Option<Forgotten>>,
    },
    /// Replies once every op before it is applied and published.
    Barrier(oneshot::Sender<()>),
    /// Replies once every op before it is applied and its output handed to
    /// the NATS client (no flush): what may be acknowledged to JetStream.
    Applied(oneshot::Sender<()>),
    /// Mute (or unmute) the shard's output: a muted shard applies and counts
    /// as usual but publishes nothing (a rebuild replays what was published).
    Mute(bool),
}
