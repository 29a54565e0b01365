//! Forgets that survive a rebuild. A customer forgotten while journeyd
//! consumes a JetStream stream still has its events in the stream, and a
//! rebuild would bring it back; so each forget is recorded in a key-value
//! bucket beside the stream, with the stream position it came after, and the
//! rebuild forgets the customer again at that position (later events with
//! the same ids still start a new customer, as they did live).
//!
//! The bucket also keeps the applied mark: the stream position up to which
//! every message the consumer was delivered has been applied, with its
//! output published. The server's ack floor lags behind it after a restart
//! (what the rebuild applied of an earlier run's unacknowledged messages is
//! acknowledged only when the server sends it again, after its ack wait), and
//! a rebuild that trusted the floor alone would publish everything after it
//! again.

use crate::config::JetStreamConfig;
use anyhow::Context;
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

/// One forget: the id it named, after the stream message `seq` was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forget {
    pub seq: u64,
    pub id_type: Option<String>,
    pub id: String,
}

/// The key of the applied mark (forgets' keys start with their position).
const APPLIED: &str = "applied";

pub struct ForgetLog {
    store: kv::Store,
}

impl ForgetLog {
    /// The bucket of a stream and consumer.
    pub fn bucket(js: &JetStreamConfig) -> String {
        format!("journeyd_forgotten_{}_{}", js.stream, js.consumer)
    }

    /// The log, created if it does not exist yet.
    pub async fn open(context: &jetstream::Context, js: &JetStreamConfig) -> anyhow::Result<ForgetLog> {
        if let Some(log) = Self::existing(context, js).await {
            return Ok(log);
        }
        let bucket = Self::bucket(js);
        let store = context
            .create_key_value(kv::Config { bucket: bucket.clone(), history: 1, ..Default::default() })
            .await
            .with_context(|| format!("creating the key-value bucket {bucket}"))?;
        Ok(ForgetLog { store })
    }

    /// The log, if a run has created it.
    pub async fn existing(context: &jetstream::Context, js: &JetStreamConfig) -> Option<ForgetLog> {
        context.get_key_value(Self::bucket(js)).await.ok().map(|store| ForgetLog { store })
    }

    /// Records the applied mark of the consumer created at `created` (ns
    /// since the epoch: a consumer made anew starts over).
    pub async fn record_applied(&self, seq: u64, created: i128) -> anyhow::Result<()> {
        self.store.put(APPLIED, format!("{seq} {created}").into()).await.context("recording the applied mark")?;
        Ok(())
    }

    /// The applied mark recorded for the consumer created at `created`, if any.
    pub async fn applied(&self, created: i128) -> Option<u64> {
        let value = self.store.get(APPLIED).await.ok().flatten()?;
        let (seq, at) = std::str::from_utf8(&value).ok()?.split_once(' ')?;
        (at.parse::<i128>().ok()? == created).then(|| seq.parse().ok()).flatten()
    }

    pub async fn record(&self, f: &Forget) -> anyhow::Result<()> {
        let mut h = rustc_hash::FxHasher::default();
        (&f.id_type, &f.id).hash(&mut h);
        let key = format!("{:020}-{:016x}", f.seq, h.finish());
        let value = serde_json::to_vec(f).context("encoding a forget")?;
        self.store.put(key, value.into()).await.context("recording a forget")?;
        Ok(())
    }

    /// Every recorded forget, in stream order.
    pub async fn all(&self) -> anyhow::Result<Vec<Forget>> {
        let mut keys = self.store.keys().await.context("listing recorded forgets")?;
        let mut all = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.context("listing recorded forgets")?;
            if key == APPLIED {
                continue;
            }
            if let Some(value) = self.store.get(&key).await.with_context(|| format!("reading recorded forget {key}"))? {
                all.push(serde_json::from_slice::<Forget>(&value).with_context(|| format!("recorded forget {key} is not one"))?);
            }
        }
        all.sort_by_key(|f| f.seq);
        Ok(all)
    }
}
