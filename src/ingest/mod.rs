//! Input: the live NATS loop (`nats.rs`) and the duplicate window. Decoding
//! and validation live in `event.rs`; routing in `engine::router`.

pub mod dedup;
pub mod nats;
