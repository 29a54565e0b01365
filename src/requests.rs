//! NATS request-reply: `journey.query.customer` answers with the same JSON as
//! `GET /v1/customers/{id}`; `journey.admin.forget` forgets a customer and
//! answers with what was removed. A request is the id as plain text, or
//! `{"id": "...", "type": "phone"}`. Unknown ids get `{"error": ...}`.

use crate::api::{forget, lookup, ApiError};
use crate::ingest::nats::Control;
use async_nats::Client;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const QUERY_SUBJECT: &str = "journey.query.customer";
pub const FORGET_SUBJECT: &str = "journey.admin.forget";

#[derive(Deserialize)]
struct Request {
    id: String,
    #[serde(rename = "type")]
    id_type: Option<String>,
}

fn parse(payload: &[u8]) -> Option<(Option<String>, String)> {
    if let Ok(r) = serde_json::from_slice::<Request>(payload) {
        return Some((r.id_type, r.id));
    }
    let text = std::str::from_utf8(payload).ok()?.trim();
    (!text.is_empty()).then(|| (None, text.trim_matches('"').to_string()))
}

fn error_body(e: impl std::fmt::Display) -> bytes::Bytes {
    crate::emit::to_bytes(&serde_json::json!({ "error": e.to_string() }))
}

/// The two request subscriptions, made before journeyd reports ready.
pub struct Requests {
    queries: async_nats::Subscriber,
    forgets: async_nats::Subscriber,
}

/// Subscribes to both request subjects (the caller flushes).
pub async fn subscribe(client: &Client) -> anyhow::Result<Requests> {
    Ok(Requests { queries: client.subscribe(QUERY_SUBJECT).await?, forgets: client.subscribe(FORGET_SUBJECT).await? })
}

/// `body`, or an error naming its size when it is over the server's
/// `max_payload` (the client would refuse it, and the requester would only
/// see a timeout). HTTP has no such limit.
fn fit_reply(body: bytes::Bytes, is_forget: bool, max_payload: usize) -> bytes::Bytes {
    if body.len() <= max_payload {
        return body;
    }
    let done = if is_forget { "the customer was forgotten, but " } else { "" };
    let error = format!(
        "{done}the answer is {} bytes, over the NATS server's max_payload ({max_payload}); the HTTP API (/v1/customers/{{id}}) has no such limit",
        body.len()
    );
    error_body(error)
}

/// Serves both subjects until `shutdown`.
pub async fn serve(requests: Requests, client: Client, control: mpsc::Sender<Control>, shutdown: CancellationToken) {
    let Requests { mut queries, mut forgets } = requests;
    loop {
        let (msg, is_forget) = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(m) = queries.next() => (m, false),
            Some(m) = forgets.next() => (m, true),
            else => return,
        };
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let body = match parse(&msg.payload) {
            None => error_body(ApiError::NotFound(String::new())),
            Some((ty, id)) if is_forget => match forget(&control, ty, id).await {
                Ok(v) => crate::emit::to_bytes(&serde_json::json!({ "forgotten": v })),
                Err(e) => error_body(e),
            },
            Some((ty, id)) => match lookup(&control, ty, id).await {
                Ok(v) => crate::emit::to_bytes(&v),
                Err(e) => error_body(e),
            },
        };
        let body = fit_reply(body, is_forget, client.server_info().max_payload);
        if let Err(e) = client.publish(reply, body).await {
            tracing::warn!(error = %e, "cannot reply to a request");
        }
    }
}
