//! The touchpoint event schema (DESIGN.md contract) and its decoding.
//!
//! Decoding borrows from the payload wherever JSON allows (no allocation for
//! unescaped strings), checks every field's type, and classifies every failure
//! as a [`RejectReason`] whose stable name is at once the DLQ header, the
//! `journey_dlq_total{reason}` label and the log field.

use crate::catalog::{Catalog, ChannelId, KindId};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::fmt;

/// Why an input was refused. `as_str` is a stable contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    NotJson,
    MissingField,
    WrongType,
    InvalidTimestamp,
    EmptyIds,
    NoUsableId,
    SubjectMismatch,
    UnknownChannel,
    Oversized,
    FutureTimestamp,
    IdentityConflict,
    GroupLimit,
    TooManyIdTypes,
}

impl RejectReason {
    pub const ALL: [RejectReason; 13] = [
        RejectReason::NotJson,
        RejectReason::MissingField,
        RejectReason::WrongType,
        RejectReason::InvalidTimestamp,
        RejectReason::EmptyIds,
        RejectReason::NoUsableId,
        RejectReason::SubjectMismatch,
        RejectReason::UnknownChannel,
        RejectReason::Oversized,
        RejectReason::FutureTimestamp,
        RejectReason::IdentityConflict,
        RejectReason::GroupLimit,
        RejectReason::TooManyIdTypes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotJson => "not_json",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::EmptyIds => "empty_ids",
            RejectReason::NoUsableId => "no_usable_id",
            RejectReason::SubjectMismatch => "subject_mismatch",
            RejectReason::UnknownChannel => "unknown_channel",
            RejectReason::Oversized => "oversized",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::IdentityConflict => "identity_conflict",
            RejectReason::GroupLimit => "group_limit",
            RejectReason::TooManyIdTypes => "too_many_id_types",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A refused input: the reason and a human detail (which field, what was wrong).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Rejection {
        Rejection { reason, detail: detail.into() }
    }
}

/// A consent change carried by a `consent` event.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsentChange {
    pub purpose: Box<str>,
    /// `None` means every channel (`"*"`).
    pub channel: Option<ChannelId>,
    pub granted: bool,
}

/// A decoded, validated event, borrowing from its payload.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub id: Cow<'a, str>,
    pub ts: i64,
    /// (id type, value), blocked values already removed.
    pub ids: Ids<'a>,
    pub channel: ChannelId,
    pub kind: KindId,
    pub value: Option<f64>,
    pub consent: Option<Box<ConsentChange>>,
}

/// What decoding needs besides the payload.
pub struct DecodeContext<'c> {
    pub catalog: &'c Catalog,
    pub max_event_bytes: usize,
    pub max_future_skew_ms: i64,
    pub blocked: &'c BlockedIds,
}

/// Id values that never identify anyone: empty, `null`, `undefined`, `0`,
/// `anonymous`, `none` and the config's `identity.blocked_values`, in any
/// (ASCII) case, around spaces.
#[derive(Debug, Clone)]
pub struct BlockedIds {
    extra: Vec<String>,
}

impl BlockedIds {
    const BUILTIN: [&'static str; 6] = ["", "null", "undefined", "0", "anonymous", "none"];

    pub fn new(extra: &[String]) -> BlockedIds {
        BlockedIds { extra: extra.iter().map(|b| b.trim().to_string()).collect() }
    }

    pub fn is_blocked(&self, value: &str) -> bool {
        let v = value.trim();
        Self::BUILTIN.into_iter().chain(self.extra.iter().map(String::as_str)).any(|b| v.eq_ignore_ascii_case(b))
    }
}

/// Splits `touch.<channel>.<kind>` into its channel and kind.
pub fn subject_parts(subject: &str) -> (Option<&str>, Option<&str>) {
    let mut it = subject.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some("touch"), Some(ch), Some(kind), None) if !ch.is_empty() && !kind.is_empty() => (Some(ch), Some(kind)),
        _ => (None, None),
    }
}

/// Any JSON value, classified in the one parsing pass: strings borrow from
/// the payload when they have no escapes; objects and arrays are skipped.
#[derive(Debug)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Null,
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// The ids of an event: (id type, value) in payload order.
pub type Ids<'a> = SmallVec<[(Cow<'a, str>, Cow<'a, str>); 2]>;

/// `ids` as found in the payload: its string entries (a `null` value is
/// skipped), how many entries it had, and the first entry that is not an id.
/// Anything but an object is `NotObject`. (The size difference is what it
/// is: boxing the map would allocate per event for the rare error case.)
#[allow(clippy::large_enum_variant)]
enum IdsField<'a> {
    Map { ids: Ids<'a>, entries: usize, bad: Option<BadId<'a>> },
    NotObject,
}

/// An `ids` entry that is neither a string nor `null`, or a string under an empty type name.
enum BadId<'a> {
    NotString(Cow<'a, str>),
    EmptyType,
}

impl<'de> Deserialize<'de> for IdsField<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdsField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of id type to id")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut ids, mut entries, mut bad) = (Ids::new(), 0, None);
                while let Some((k, v)) = map.next_entry::<MaybeBorrowed<'de>, Scalar<'de>>()? {
                    entries += 1;
                    match v {
                        Scalar::Null => {}
                        Scalar::Str(_) if k.0.is_empty() => {
                            bad.get_or_insert(BadId::EmptyType);
                        }
                        Scalar::Str(value) => match ids.iter().find(|(t, _)| *t == k.0) {
                            // The same id twice is one id; two under one key are not an object.
                            Some((_, v)) if *v == value => {}
                            Some(_) => return Err(de::Error::custom(format_args!("`ids` has the key `{}` twice with different values", k.0))),
                            None => ids.push((k.0, value)),
                        },
                        _ => {
                            bad.get_or_insert(BadId::NotString(k.0));
                        }
                    }
                }
                Ok(IdsField::Map { ids, entries, bad })
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(IdsField::NotObject)
            }
            fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(IdsField::NotObject)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(IdsField::NotObject)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(IdsField::NotObject)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(IdsField::NotObject)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(IdsField::NotObject)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(IdsField::NotObject)
            }
        }
        d.deserialize_any(V)
    }
}

/// The fields of an event as found in the payload, each parsed once; unknown
/// fields are skipped. Written out rather than derived so that every field
/// borrows from the payload directly (no copy of the ids to change lifetimes).
#[derive(Default)]
struct Wire<'a> {
    id: Option<Scalar<'a>>,
    ts: Option<Scalar<'a>>,
    ids: Option<IdsField<'a>>,
    channel: Option<Scalar<'a>>,
    kind: Option<Scalar<'a>>,
    value: Option<Scalar<'a>>,
    campaign: Option<Scalar<'a>>,
    attrs: Option<&'a RawValue>,
}

/// Fills a [`Wire`] in place: it is a few hundred bytes, and returning it by
/// value through serde's layers copied it several times per event.
struct FillWire<'w, 'de>(&'w mut Wire<'de>);

impl<'de> DeserializeSeed<'de> for FillWire<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FillWire<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        /// Takes the value of a field, which must not have been seen before.
        fn field<'de, A: MapAccess<'de>, T: Deserialize<'de>>(map: &mut A, slot: &mut Option<T>, seen: &mut bool, name: &'static str) -> Result<(), A::Error> {
            if std::mem::replace(seen, true) {
                return Err(de::Error::duplicate_field(name));
            }
            *slot = map.next_value()?;
            Ok(())
        }
        let w = self.0;
        let mut seen = [false; 8];
        while let Some(key) = map.next_key::<MaybeBorrowed<'de>>()? {
            match key.0.as_ref() {
                "id" => field(&mut map, &mut w.id, &mut seen[0], "id")?,
                "ts" => field(&mut map, &mut w.ts, &mut seen[1], "ts")?,
                "ids" => field(&mut map, &mut w.ids, &mut seen[2], "ids")?,
                "channel" => field(&mut map, &mut w.channel, &mut seen[3], "channel")?,
                "kind" => field(&mut map, &mut w.kind, &mut seen[4], "kind")?,
                "value" => field(&mut map, &mut w.value, &mut seen[5], "value")?,
                "campaign" => field(&mut map, &mut w.campaign, &mut seen[6], "campaign")?,
                "attrs" => field(&mut map, &mut w.attrs, &mut seen[7], "attrs")?,
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Decodes one event. `subject` is `None` for subject-less input (NDJSON replay).
pub fn decode<'a>(payload: &'a [u8], subject: Option<&str>, now_ms: i64, cx: &DecodeContext<'_>) -> Result<Decoded<'a>, Rejection> {
    if payload.len() > cx.max_event_bytes {
        return Err(Rejection::new(RejectReason::Oversized, format!("{} bytes, limit {}", payload.len(), cx.max_event_bytes)));
    }
    let text = std::str::from_utf8(payload).map_err(|_| Rejection::new(RejectReason::NotJson, "payload is not UTF-8"))?;
    if !text.trim_start().starts_with('{') {
        return Err(Rejection::new(RejectReason::NotJson, "payload is not a JSON object"));
    }
    let mut wire = Wire::default();
    let mut de = serde_json::Deserializer::from_str(text);
    FillWire(&mut wire).deserialize(&mut de).and_then(|()| de.end()).map_err(|e| {
        // A JSON document that is not an object (or has a duplicate key) is still "not an event object".
        Rejection::new(RejectReason::NotJson, format!("not a JSON object: {e}"))
    })?;
    let id = required_scalar("id", wire.id)?;
    if id.is_empty() {
        return Err(Rejection::new(RejectReason::MissingField, "`id` is empty"));
    }
    let ts = scalar_ts(wire.ts.ok_or_else(|| missing("ts"))?)?;
    if ts > now_ms.saturating_add(cx.max_future_skew_ms) {
        return Err(Rejection::new(RejectReason::FutureTimestamp, format!("ts {ts} is {} ms ahead of the clock", ts - now_ms)));
    }
    let ids = check_ids(wire.ids.ok_or_else(|| missing("ids"))?, cx.blocked)?;

    let (subj_channel, subj_kind) = subject.map_or((None, None), subject_parts);
    let payload_channel = optional_scalar("channel", wire.channel)?;
    let payload_kind = optional_scalar("kind", wire.kind)?;
    let channel_name = pick("channel", subj_channel, payload_channel.as_deref())?;
    let kind_name = pick("kind", subj_kind, payload_kind.as_deref())?;
    let channel = cx
        .catalog
        .channel(channel_name)
        .ok_or_else(|| Rejection::new(RejectReason::UnknownChannel, format!("channel `{channel_name}` is not in [channels]")))?;
    let kind = cx.catalog.kind(kind_name);

    let value = match wire.value {
        None | Some(Scalar::Null) => None,
        Some(Scalar::Int(v)) => Some(v as f64),
        Some(Scalar::Float(v)) if v.is_finite() => Some(v),
        Some(_) => return Err(wrong_type("value", "a number")),
    };
    optional_scalar("campaign", wire.campaign)?;
    let consent = match wire.attrs {
        None if kind == cx.catalog.kind_consent => return Err(missing("attrs")),
        None => None,
        Some(raw) if !raw.get().starts_with('{') => return Err(wrong_type("attrs", "an object")),
        Some(raw) if kind == cx.catalog.kind_consent => Some(Box::new(parse_consent(raw, cx.catalog)?)),
        Some(_) => None,
    };
    Ok(Decoded { id, ts, ids, channel, kind, value, consent })
}

fn missing(field: &str) -> Rejection {
    Rejection::new(RejectReason::MissingField, format!("`{field}` is required"))
}

fn wrong_type(field: &str, expected: &str) -> Rejection {
    Rejection::new(RejectReason::WrongType, format!("`{field}` must be {expected}"))
}

fn required_scalar<'a>(field: &str, v: Option<Scalar<'a>>) -> Result<Cow<'a, str>, Rejection> {
    match v {
        None | Some(Scalar::Null) => Err(missing(field)),
        Some(Scalar::Str(s)) => Ok(s),
        Some(_) => Err(wrong_type(field, "a string")),
    }
}

fn optional_scalar<'a>(field: &str, v: Option<Scalar<'a>>) -> Result<Option<Cow<'a, str>>, Rejection> {
    match v {
        None | Some(Scalar::Null) => Ok(None),
        Some(Scalar::Str(s)) => Ok(Some(s)),
        Some(_) => Err(wrong_type(field, "a string")),
    }
}

/// Epoch milliseconds (an integer, or a number that is truncated) or RFC 3339.
fn scalar_ts(v: Scalar<'_>) -> Result<i64, Rejection> {
    let ms = match v {
        Scalar::Str(s) => chrono::DateTime::parse_from_rfc3339(&s)
            .map(|t| t.timestamp_millis())
            .map_err(|e| Rejection::new(RejectReason::InvalidTimestamp, format!("`ts` `{s}` is not RFC 3339: {e}")))?,
        Scalar::Int(ms) => ms,
        // Saturating: a time too large for i64 is far in the future, a negative one before 1970.
        Scalar::Float(f) if f.is_finite() => f.trunc() as i64,
        Scalar::Null => return Err(missing("ts")),
        _ => return Err(wrong_type("ts", "epoch milliseconds or an RFC 3339 string")),
    };
    if ms < 0 {
        return Err(Rejection::new(RejectReason::InvalidTimestamp, "`ts` is before 1970"));
    }
    Ok(ms)
}

/// The usable ids of `ids`: blocked placeholder values dropped.
fn check_ids<'a>(field: IdsField<'a>, blocked: &BlockedIds) -> Result<Ids<'a>, Rejection> {
    let IdsField::Map { mut ids, entries, bad } = field else { return Err(wrong_type("ids", "an object of id type to id string")) };
    if entries == 0 {
        return Err(Rejection::new(RejectReason::EmptyIds, "`ids` has no entry"));
    }
    match bad {
        Some(BadId::NotString(ty)) => return Err(wrong_type(&format!("ids.{ty}"), "a string")),
        Some(BadId::EmptyType) => return Err(wrong_type("ids", "an object with non-empty id type names")),
        None => {}
    }
    ids.retain(|(_, value)| !blocked.is_blocked(value));
    if ids.is_empty() {
        return Err(Rejection::new(RejectReason::NoUsableId, "every id in `ids` is a blocked placeholder value"));
    }
    Ok(ids)
}

/// A JSON string, borrowed when it has no escapes.
fn json_str<'a>(raw: &'a RawValue) -> Option<Cow<'a, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&'a str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

fn required_str<'a>(field: &str, raw: Option<&'a RawValue>) -> Result<Cow<'a, str>, Rejection> {
    json_str(raw.ok_or_else(|| missing(field))?).ok_or_else(|| wrong_type(field, "a string"))
}

/// A required string that is not empty (like the event's own channel and
/// kind, an empty string is missing).
fn required_text<'a>(field: &str, raw: Option<&'a RawValue>) -> Result<Cow<'a, str>, Rejection> {
    required_str(field, raw).and_then(|v| if v.is_empty() { Err(missing(field)) } else { Ok(v) })
}

/// The subject's value and the payload's must agree; either alone is enough.
/// An empty string in the payload counts as absent.
fn pick<'s>(field: &str, from_subject: Option<&'s str>, from_payload: Option<&'s str>) -> Result<&'s str, Rejection> {
    match (from_subject, from_payload.filter(|v| !v.is_empty())) {
        (Some(s), Some(p)) if s != p => Err(Rejection::new(RejectReason::SubjectMismatch, format!("subject says {field} `{s}`, payload says `{p}`"))),
        (_, Some(v)) | (Some(v), None) => Ok(v),
        (None, None) => Err(missing(field)),
    }
}

/// A map key or string value that borrows when it can.
struct MaybeBorrowed<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for MaybeBorrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeBorrowed<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Deserialize)]
struct ConsentWire<'a> {
    #[serde(borrow, default)]
    purpose: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
    #[serde(borrow, default)]
    granted: Option<&'a RawValue>,
}

fn parse_consent(raw: &RawValue, catalog: &Catalog) -> Result<ConsentChange, Rejection> {
    let w: ConsentWire = serde_json::from_str(raw.get()).map_err(|e| match raw.get().trim_start().starts_with('{') {
        // An object the reader refused: a key given twice.
        true => Rejection::new(RejectReason::NotJson, format!("attrs: {e}")),
        false => wrong_type("attrs", "an object"),
    })?;
    let purpose = required_text("attrs.purpose", w.purpose)?;
    let channel = required_text("attrs.channel", w.channel)?;
    let granted = match w.granted.map(RawValue::get) {
        Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(wrong_type("attrs.granted", "true or false")),
        None => return Err(missing("attrs.granted")),
    };
    let channel = if channel == "*" {
        None
    } else {
        Some(
            catalog
                .channel(&channel)
                .ok_or_else(|| Rejection::new(RejectReason::UnknownChannel, format!("consent channel `{channel}` is not in [channels]")))?,
        )
    };
    Ok(ConsentChange { purpose: purpose.into(), channel, granted })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn catalog() -> Catalog {
        let c = config::parse("[channels]\napp = \"tech\"\nsms = \"low\"\n[[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\", \"b\"]\ntransitions = [{ from = \"a\", to = \"b\", on = { kind = \"purchase\" } }]\n").unwrap().config;
        Catalog::new(&c)
    }

    #[test]
    fn an_empty_channel_or_kind_is_missing() {
        let p = |channel: &str, kind: &str| format!(r#"{{"id":"e","ts":1,"ids":{{"u":"1"}},"channel":"{channel}","kind":"{kind}"}}"#);
        assert_eq!(run(&p("", "view"), None).map(|d| d.1), Err(RejectReason::MissingField));
        assert_eq!(run(&p("app", ""), None).map(|d| d.1), Err(RejectReason::MissingField));
        assert_eq!(run(&p("", ""), Some("touch.app.view")).map(|d| (d.3, d.4)), Ok(("app".to_string(), "view".to_string())), "the subject has them");
    }

    #[test]
    fn blocked_values_match_in_any_case_around_spaces() {
        let blocked = BlockedIds::new(&["N/A".to_string(), " test ".to_string()]);
        for v in ["N/A", "n/a", " n/A ", "TEST", "test", "None", " anonymous "] {
            assert!(blocked.is_blocked(v), "{v:?}");
        }
        for v in ["n/a2", "tester", "u-1"] {
            assert!(!blocked.is_blocked(v), "{v:?}");
        }
    }

    #[test]
    fn an_rfc3339_time_before_1970_is_an_invalid_timestamp() {
        let p = r#"{"id":"e","ts":"1969-12-31T23:59:59Z","ids":{"u":"1"},"channel":"app","kind":"k"}"#;
        assert_eq!(run(p, None).map(|d| d.1), Err(RejectReason::InvalidTimestamp));
        let p = r#"{"id":"e","ts":"1970-01-01T00:00:01Z","ids":{"u":"1"},"channel":"app","kind":"k"}"#;
        assert_eq!(run(p, None).map(|d| d.1), Ok(1000));
    }

    fn run(payload: &str, subject: Option<&str>) -> Result<(String, i64, usize, String, String), RejectReason> {
        let cat = catalog();
        let blocked = BlockedIds::new(&[]);
        let cx = DecodeContext { catalog: &cat, max_event_bytes: 1024, max_future_skew_ms: 60_000, blocked: &blocked };
        decode(payload.as_bytes(), subject, 1_800_000_000_000, &cx)
            .map(|d| (d.id.into_owned(), d.ts, d.ids.len(), cat.channel_name(d.channel).to_string(), cat.kind_name(d.kind).to_string()))
            .map_err(|r| r.reason)
    }

    #[test]
    fn fields_ids_and_their_faults_are_read_in_one_pass() {
        let ok = |ids: &str| format!(r#"{{"id":"e","ts":1,"ids":{ids},"channel":"app","kind":"view","extra":{{"a":[1,{{"b":null}}]}}}}"#);
        assert_eq!(run(&ok(r#"{"user_id":"u","phone":"p","wechat_unionid":"w"}"#), None).map(|d| d.2), Ok(3), "a third id spills, nothing lost");
        assert_eq!(run(&ok(r#"{"user_id":null,"phone":"p"}"#), None).map(|d| d.2), Ok(1), "a null id is skipped");
        assert_eq!(run(&ok(r#"{"user_id":"anonymous","phone":"p"}"#), None).map(|d| d.2), Ok(1), "a placeholder id is dropped");
        assert_eq!(run(&ok(r#"{"user_id":null}"#), None), Err(RejectReason::NoUsableId));
        assert_eq!(run(&ok(r#"{"":"x","phone":"p"}"#), None), Err(RejectReason::WrongType));
        assert_eq!(run(&ok(r#"{"user_id":"anonymous","phone":7}"#), None), Err(RejectReason::WrongType), "a wrong value after a blocked one");
        assert_eq!(run(&ok(r#"{"user_id":"u","user_id":"u"}"#), None).map(|d| d.2), Ok(1), "the same id twice is one id");
        assert_eq!(run(&ok(r#"{"user_id":"u","user_id":"v"}"#), None), Err(RejectReason::NotJson), "one key, two ids");
        assert_eq!(run(&ok("[]"), None), Err(RejectReason::WrongType));
        assert_eq!(run(&ok("{}"), None), Err(RejectReason::EmptyIds));
        assert_eq!(run(&ok("null"), None), Err(RejectReason::MissingField));
        let dup = r#"{"id":"e","id":"f","ts":1,"ids":{"u":"1"},"channel":"app","kind":"view"}"#;
        assert_eq!(run(dup, None), Err(RejectReason::NotJson), "a duplicate field is not an event object");
        let escaped = r#"{"i\u0064":"e","ts":1,"ids":{"u":"1"},"channel":"app","kind":"view"}"#;
        assert_eq!(run(escaped, None).map(|d| d.0), Ok("e".to_string()), "escaped field names are field names");
    }

    #[test]
    fn decodes_the_design_example() {
        let p = r#"{"id":"evt-8f2c","ts":1732233600123,"ids":{"user_id":"u-17","anonymous_id":"dev-9f"},"channel":"app","kind":"purchase","value":129.0,"campaign":"spring","attrs":{"sku":"x"}}"#;
        assert_eq!(run(p, Some("touch.app.purchase")), Ok(("evt-8f2c".into(), 1732233600123, 2, "app".into(), "purchase".into())));
    }

    #[test]
    fn channel_and_kind_may_come_from_the_subject_alone() {
        let p = r#"{"id":"e","ts":"2024-11-22T00:00:00.123Z","ids":{"user_id":"u"}}"#;
        assert_eq!(run(p, Some("touch.sms.purchase")), Ok(("e".into(), 1732233600123, 1, "sms".into(), "purchase".into())));
    }

    #[test]
    fn unknown_kind_is_other() {
        let p = r#"{"id":"e","ts":1,"ids":{"user_id":"u"},"channel":"app","kind":"wave"}"#;
        assert_eq!(run(p, None).unwrap().4, "other");
    }

    #[test]
    fn every_reason_is_classified() {
        let cases = [
            ("nope", None, RejectReason::NotJson),
            ("[1,2]", None, RejectReason::NotJson),
            (r#"{"ts":1,"ids":{"u":"1"},"channel":"app","kind":"k"}"#, None, RejectReason::MissingField),
            (r#"{"id":5,"ts":1,"ids":{"u":"1"},"channel":"app","kind":"k"}"#, None, RejectReason::WrongType),
            (r#"{"id":"e","ts":"yesterday","ids":{"u":"1"},"channel":"app","kind":"k"}"#, None, RejectReason::InvalidTimestamp),
            (r#"{"id":"e","ts":1,"ids":{},"channel":"app","kind":"k"}"#, None, RejectReason::EmptyIds),
            (r#"{"id":"e","ts":1,"ids":{"u":"null","v":""},"channel":"app","kind":"k"}"#, None, RejectReason::NoUsableId),
            (r#"{"id":"e","ts":1,"ids":{"u":"1"},"channel":"app","kind":"k"}"#, Some("touch.sms.k"), RejectReason::SubjectMismatch),
            (r#"{"id":"e","ts":1,"ids":{"u":"1"},"channel":"fax","kind":"k"}"#, None, RejectReason::UnknownChannel),
            (r#"{"id":"e","ts":9999999999999,"ids":{"u":"1"},"channel":"app","kind":"k"}"#, None, RejectReason::FutureTimestamp),
            (r#"{"id":"e","ts":1,"ids":{"u":"1"},"channel":"app","kind":"k","value":"12"}"#, None, RejectReason::WrongType),
            (r#"{"id":"e","ts":1,"ids":{"u":1},"channel":"app","kind":"k"}"#, None, RejectReason::WrongType),
            (r#"{"id":"e","ts":1,"ids":{"u":"1"},"channel":"app"}"#, None, RejectReason::MissingField),
            (
                r#"{"id":"e","ts":1,"ids":{"u":"1"},"channel":"app","kind":"consent","attrs":{"purpose":"marketing","channel":"sms"}}"#,
                None,
                RejectReason::MissingField,
            ),
            (
                r#"{"id":"e","ts":1,"ids":{"u":"1"},"channel":"app","kind":"consent","attrs":{"purpose":"m","purpose":"n","channel":"sms","granted":false}}"#,
                None,
                RejectReason::NotJson,
            ),
            (r#"{"id":"e","ts":1,"ids":{"u":"1"},"channel":"app","kind":"consent","attrs":["marketing"]}"#, None, RejectReason::WrongType),
            (
                r#"{"id":"e","ts":1,"ids":{"u":"1"},"channel":"app","kind":"consent","attrs":{"purpose":"","channel":"sms","granted":false}}"#,
                None,
                RejectReason::MissingField,
            ),
            (
                r#"{"id":"e","ts":1,"ids":{"u":"1"},"channel":"app","kind":"consent","attrs":{"purpose":"marketing","channel":"","granted":false}}"#,
                None,
                RejectReason::MissingField,
            ),
        ];
        for (p, s, want) in cases {
            assert_eq!(run(p, s).map(|_| ()), Err(want), "{p}");
        }
        let big = format!(r#"{{"id":"e","ts":1,"ids":{{"u":"1"}},"channel":"app","kind":"k","campaign":"{}"}}"#, "x".repeat(2000));
        assert_eq!(run(&big, None).map(|_| ()), Err(RejectReason::Oversized));
    }

    #[test]
    fn an_integer_ts_too_large_for_i64_is_a_future_timestamp() {
        // README: `future_timestamp` = `ts` more than max_future_skew ahead; `wrong_type` is for a field of the wrong JSON type.
        let p = |ts: &str| format!(r#"{{"id":"e","ts":{ts},"ids":{{"u":"1"}},"channel":"app","kind":"k"}}"#);
        assert_eq!(run(&p("9223372036854775807"), None).map(|_| ()), Err(RejectReason::FutureTimestamp), "i64::MAX (control: passes)");
        assert_eq!(run(&p("9223372036854775808"), None).map(|_| ()), Err(RejectReason::FutureTimestamp), "i64::MAX + 1");
        assert_eq!(run(&p("100000000000000000000"), None).map(|_| ()), Err(RejectReason::FutureTimestamp));
        assert_eq!(run(&p("1e16"), None).map(|_| ()), Err(RejectReason::FutureTimestamp), "a number, truncated");
    }

    #[test]
    fn a_ts_before_1970_is_an_invalid_timestamp_whatever_its_size() {
        // README: `invalid_timestamp` = `ts` ... before 1970.
        let p = |ts: &str| format!(r#"{{"id":"e","ts":{ts},"ids":{{"u":"1"}},"channel":"app","kind":"k"}}"#);
        assert_eq!(run(&p("-1"), None).map(|_| ()), Err(RejectReason::InvalidTimestamp), "control: passes");
        assert_eq!(run(&p("-100000000000000000000"), None).map(|_| ()), Err(RejectReason::InvalidTimestamp));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let p = r#"{"id":"e\u0031","ts":1,"ids":{"user_id":"a\"b"},"channel":"app","kind":"k"}"#;
        assert_eq!(run(p, None).unwrap().0, "e1");
    }

    #[test]
    fn consent_event_carries_its_change() {
        let cat = catalog();
        let blocked = BlockedIds::new(&[]);
        let cx = DecodeContext { catalog: &cat, max_event_bytes: 1024, max_future_skew_ms: 0, blocked: &blocked };
        let p = r#"{"id":"e","ts":1,"ids":{"u":"1"},"channel":"sms","kind":"consent","attrs":{"purpose":"marketing","channel":"*","granted":false}}"#;
        let d = decode(p.as_bytes(), None, 10, &cx).unwrap();
        assert_eq!(*d.consent.unwrap(), ConsentChange { purpose: "marketing".into(), channel: None, granted: false });
    }
}
