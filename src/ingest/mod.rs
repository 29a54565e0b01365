//! Input: where live events come from (`input.rs`: core NATS or a JetStream
//! consumer), the live loop (`nats.rs`), the rebuild of state from a
//! JetStream stream on start (`rebuild.rs`) and the duplicate window. Decoding
//! and validation live in `event.rs`; routing in `engine::router`.

pub mod dedup;
pub mod forgotten;
pub mod input;
pub mod nats;
pub mod rebuild;
