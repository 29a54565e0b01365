//! Semantic checks of a parsed config: every name a rule uses must exist,
//! names are unique, orders are permutations, limits are sane. Produces all
//! findings at once; unreachable stages are warnings, the rest errors.

use super::schema::*;
use super::{Diagnostic, Severity};
use std::collections::{BTreeSet, HashSet};

/// Attribution models journeyd knows.
pub const ATTRIBUTION_MODELS: &[&str] = &["first_touch", "last_touch", "linear", "time_decay", "position_based"];

/// Most stages a model may have (stage sets are 64-bit masks).
pub const MAX_STAGES: usize = 64;
/// Channels, and event kinds, a config may name (each gets a 15-bit id).
pub const MAX_NAMED: usize = 32_000;

struct Findings(Vec<Diagnostic>);

impl Findings {
    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Diagnostic { severity: Severity::Error, key: key.into(), line: None, message: message.into() });
    }
    fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Diagnostic { severity: Severity::Warning, key: key.into(), line: None, message: message.into() });
    }
}

pub fn check(c: &Config) -> Vec<Diagnostic> {
    let mut f = Findings(Vec::new());
    check_nats(c, &mut f);
    check_time(c, &mut f);
    if c.models.is_empty() {
        f.warn("model", "no [[model]]: events are counted and funnels, triggers and segments work, but no customer moves through stages");
    }
    check_identity(c, &mut f);
    if c.http.listen.parse::<std::net::SocketAddr>().is_err() {
        f.error("http.listen", format!("`{}` is not an address like 127.0.0.1:9464", c.http.listen));
    }
    if c.limits.max_event_bytes == 0 {
        f.error("limits.max_event_bytes", "must be positive");
    }
    if c.engine.shards > 256 {
        f.error("engine.shards", "at most 256 shards");
    }
    for (key, v) in [("engine.batch_size", c.engine.batch_size), ("engine.queue_batches", c.engine.queue_batches)] {
        match v {
            Some(0) => f.error(key, "must be positive"),
            Some(v) if v > MAX_BATCHING => f.error(key, format!("at most {MAX_BATCHING}")),
            _ => {}
        }
    }
    for reserved in ["none", "other"] {
        if c.channels.contains_key(reserved) {
            f.error(
                format!("channels.{reserved}"),
                format!("`{reserved}` is a reserved channel label (timer transitions are on `none`, unconfigured channels are `other`)"),
            );
        }
    }
    // Channels and kinds are subject tokens (`touch.<channel>.<kind>`) and labels.
    for name in c.channels.keys() {
        if let Some(why) = token_problem(name) {
            f.error(format!("channels.{name}"), format!("`{name}` cannot be a channel: {why}"));
        }
    }
    for (i, name) in c.kinds.iter().enumerate() {
        if let Some(why) = token_problem(name) {
            f.error(format!("kinds[{i}]"), format!("`{name}` cannot be a kind: {why}"));
        }
    }
    let mut names = HashSet::new();
    for (i, m) in c.models.iter().enumerate() {
        if !names.insert(m.name.as_str()) {
            f.error(format!("model[{i}].name"), format!("duplicate model name `{}`", m.name));
        }
        check_model(c, i, m, &mut f);
    }
    let mut names = HashSet::new();
    for (i, fun) in c.funnels.iter().enumerate() {
        if !names.insert(fun.name.as_str()) {
            f.error(format!("funnel[{i}].name"), format!("duplicate funnel name `{}`", fun.name));
        }
        check_funnel(c, i, fun, &mut f);
    }
    let mut durations = BTreeSet::new();
    for m in &c.models {
        durations.extend(m.transitions.iter().filter_map(|t| t.after_inactivity));
    }
    if durations.len() > 32 {
        f.error("model", "at most 32 distinct `after_inactivity` durations across all models");
    }
    check_attribution(&c.attribution, &mut f);
    if c.segments.window.millis() <= 0 {
        f.error("segments.window", "must be positive");
    }
    for (key, n) in [("segments.purchase_high", c.segments.purchase_high), ("segments.engagement_high", c.segments.engagement_high)] {
        if n == 0 {
            f.error(key, "must be at least 1");
        }
    }
    let mut names = HashSet::new();
    for (i, t) in c.triggers.iter().enumerate() {
        if !names.insert(t.name.as_str()) {
            f.error(format!("trigger[{i}].name"), format!("duplicate trigger name `{}`", t.name));
        }
        check_trigger(c, i, t, &mut f);
    }
    if c.triggers.len() > 1024 {
        f.error("trigger", "at most 1024 triggers");
    }
    if c.triggers.iter().filter(|t| t.after_inactivity.is_some()).count() > 32 {
        f.error("trigger", "at most 32 triggers with `after_inactivity`");
    }
    let cat = crate::catalog::Catalog::new(c);
    // A touch history keeps a channel id in 12 bits, `none` and `other` included.
    if cat.channel_count() > crate::model::attribution::MAX_CHANNEL_IDS {
        f.error("channels", format!("at most {} channels", crate::model::attribution::MAX_CHANNEL_IDS - 2));
    }
    if cat.kind_count() > MAX_NAMED {
        f.error("kinds", format!("at most {MAX_NAMED} distinct event kinds named in the config"));
    }
    let pairs = cat.channel_count() * cat.kind_count();
    if pairs > MAX_CHANNEL_KIND_PAIRS {
        f.error(
            "channels",
            format!(
                "{} channels × {} kinds make {pairs} series of journey_events_total alone (at most {MAX_CHANNEL_KIND_PAIRS}): name fewer",
                cat.channel_count(),
                cat.kind_count()
            ),
        );
    }
    f.0
}

/// Channel × kind pairs a config may name (each a `journey_events_total`
/// series, and a counter slot in every shard).
pub const MAX_CHANNEL_KIND_PAIRS: usize = 1_000_000;
/// The most events per batch and batches per shard queue.
const MAX_BATCHING: usize = 65_536;
/// The most messages a NATS subscription may buffer.
const MAX_SUBSCRIPTION_CAPACITY: usize = 1 << 24;
/// How far ahead of the clock an event may be (days): event times stay well
/// inside the 48 bits customer state keeps them in.
const MAX_FUTURE_SKEW_DAYS: i64 = 365;

fn check_name(key: String, name: &str, f: &mut Findings) {
    let ok = !name.is_empty() && name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
    if !ok {
        f.error(key, format!("`{name}` must be non-empty letters, digits, `_` or `-` (it becomes part of a NATS subject and a metric label)"));
    }
}

fn check_nats(c: &Config, f: &mut Findings) {
    if c.nats.subjects.is_empty() {
        f.error("nats.subjects", "at least one subject is needed");
    }
    match c.nats.url.parse::<async_nats::ServerAddr>() {
        Err(e) => f.error("nats.url", format!("`{}` is not a NATS server address: {e}", c.nats.url)),
        Ok(addr) if addr.host().is_empty() => f.error("nats.url", format!("`{}` is not a NATS server address: no host", c.nats.url)),
        Ok(_) => {}
    }
    if c.nats.credentials.as_deref().is_some_and(str::is_empty) {
        f.error("nats.credentials", "must name a credentials file");
    }
    let patterns: Vec<Vec<&str>> = c.nats.subjects.iter().map(|s| s.split('.').collect()).collect();
    for (i, subject) in c.nats.subjects.iter().enumerate() {
        if let Some(why) = subject_problem(&patterns[i]) {
            f.error(format!("nats.subjects[{i}]"), format!("`{subject}` is not a NATS subject: {why}"));
            continue;
        }
        if let Some(own) = OWN_SUBJECTS.iter().find(|own| overlap(&patterns[i], &own.split('.').collect::<Vec<_>>())) {
            f.error(
                format!("nats.subjects[{i}]"),
                format!("`{subject}` also takes in journeyd's own `{own}`: what journeyd publishes would come back as input (an event refused to journey.dlq, again and again)"),
            );
        }
        if let Some(j) = (0..i).find(|&j| overlap(&patterns[j], &patterns[i])) {
            f.error(
                format!("nats.subjects[{i}]"),
                format!(
                    "`{subject}` and `{}` both take in some subjects: each such event would be taken twice (once as a duplicate, or refused to journey.dlq twice); keep one",
                    c.nats.subjects[j]
                ),
            );
        }
    }
    if c.nats.subscription_capacity == 0 || c.nats.subscription_capacity > MAX_SUBSCRIPTION_CAPACITY {
        f.error("nats.subscription_capacity", format!("must be between 1 and {MAX_SUBSCRIPTION_CAPACITY}"));
    }
    let auth = [c.nats.token.is_some(), c.nats.user.is_some(), c.nats.credentials.is_some()].iter().filter(|x| **x).count();
    if auth > 1 {
        f.error("nats", "give only one of user/password, token or credentials");
    }
    if let Some(js) = &c.nats.jetstream {
        for (key, name) in [("nats.jetstream.stream", &js.stream), ("nats.jetstream.consumer", &js.consumer)] {
            if name.is_empty() || name.chars().any(|ch| ch.is_whitespace() || matches!(ch, '.' | '*' | '>' | '/' | '\\')) {
                f.error(key, format!("`{name}` is not a JetStream name (non-empty; no spaces, `.`, `*`, `>`, `/` or `\\`)"));
            }
        }
    }
    if c.nats.user.is_some() != c.nats.password.is_some() {
        let (given, missing) = if c.nats.user.is_some() { ("nats.user", "nats.password") } else { ("nats.password", "nats.user") };
        f.error(given, format!("user and password go together: `{missing}` is missing"));
    }
}

/// Why `name` cannot be one token of a subject, if it cannot.
fn token_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.chars().any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>')) {
        Some("no white space, `.`, `*` or `>` (it is a token of the subject touch.<channel>.<kind>)")
    } else {
        None
    }
}

/// What makes a subject pattern's tokens invalid for NATS, if anything.
fn subject_problem(tokens: &[&str]) -> Option<&'static str> {
    if tokens.iter().any(|t| t.is_empty()) {
        return Some("empty token (a `.` at either end, or two in a row)");
    }
    if tokens.iter().any(|t| t.chars().any(char::is_whitespace)) {
        return Some("white space in it");
    }
    let last = tokens.len() - 1;
    if tokens.iter().enumerate().any(|(i, t)| t.contains('>') && (i != last || *t != ">")) {
        return Some("`>` only as the whole last token");
    }
    if tokens.iter().any(|t| t.contains('*') && *t != "*") {
        return Some("`*` only as a whole token");
    }
    None
}

/// The subjects journeyd publishes or answers on, as NATS subject patterns.
const OWN_SUBJECTS: [&str; 6] =
    ["journey.dlq", "journey.late", "journey.transition.*.*.*", "journey.trigger.*", "journey.query.customer", "journey.admin.forget"];

/// Whether some subject matches both NATS subject patterns (`*`: one token,
/// `>`: one or more trailing tokens).
fn overlap(a: &[&str], b: &[&str]) -> bool {
    match (a.split_first(), b.split_first()) {
        (None, None) => true,
        (Some((&">", _)), Some(_)) | (Some(_), Some((&">", _))) => true,
        (Some((x, a)), Some((y, b))) if *x == "*" || *y == "*" || x == y => overlap(a, b),
        _ => false,
    }
}

fn check_time(c: &Config, f: &mut Findings) {
    if c.time.idle_timeout.millis() <= 0 {
        f.error("time.idle_timeout", "must be positive");
    }
    for (key, d) in [("time.max_future_skew", c.time.max_future_skew), ("time.allowed_lateness", c.time.allowed_lateness)] {
        if d.millis() < 0 {
            f.error(key, "must not be negative");
        }
    }
    if c.time.max_future_skew.millis() > MAX_FUTURE_SKEW_DAYS * 86_400_000 {
        f.error("time.max_future_skew", format!("at most {MAX_FUTURE_SKEW_DAYS}d"));
    }
}

fn check_identity(c: &Config, f: &mut Findings) {
    let id = &c.identity;
    if id.priority.is_empty() {
        f.error("identity.priority", "name at least one id type");
    }
    let mut seen = HashSet::new();
    for (i, t) in id.priority.iter().enumerate() {
        if !seen.insert(t) {
            f.error(format!("identity.priority[{i}]"), format!("`{t}` is listed twice"));
        }
    }
    for (t, n) in &id.max_ids_per_type {
        if *n == 0 || *n > 255 {
            f.error(format!("identity.max_ids_per_type.{t}"), "must be between 1 and 255");
        }
    }
    if id.max_group_size < 1 {
        f.error("identity.max_group_size", "must be at least 1");
    }
}

/// Checks channel names against `[channels]` when channels are closed.
fn check_channels(c: &Config, key: &str, names: &[&str], f: &mut Findings) {
    if c.channels.is_empty() {
        return;
    }
    for n in names {
        if *n != "*" && !c.channels.contains_key(*n) {
            f.error(key, format!("unknown channel `{n}` (not in [channels])"));
        }
    }
}

fn check_match(c: &Config, key: &str, m: &MatchConfig, allow_count: bool, f: &mut Findings) {
    let kinds = m.kind.names();
    if kinds.is_empty() || kinds.iter().any(|k| k.is_empty()) {
        f.error(format!("{key}.kind"), "name a kind, a list of kinds, or \"*\"");
    }
    if let Some(ch) = &m.channel {
        check_channels(c, &format!("{key}.channel"), &ch.names(), f);
    }
    if m.channel.as_ref().is_some_and(|ch| ch.names().is_empty()) {
        f.error(format!("{key}.channel"), "an empty list matches no event: name a channel or a list of channels, or leave `channel` out");
    }
    if let Some(v) = m.min_value {
        if !v.is_finite() {
            f.error(format!("{key}.min_value"), "must be a finite number");
        }
    }
    match (m.count, m.within) {
        (Some(0), _) => f.error(format!("{key}.count"), "must be at least 1"),
        (Some(_), None) | (None, Some(_)) if allow_count => f.error(key, "`count` and `within` go together"),
        (Some(_), Some(w)) if w.millis() <= 0 => f.error(format!("{key}.within"), "must be positive"),
        (Some(_), _) | (None, Some(_)) if !allow_count => f.error(key, "`count`/`within` are not allowed here"),
        _ => {}
    }
}

fn check_model(c: &Config, i: usize, m: &ModelConfig, f: &mut Findings) {
    let base = format!("model[{i}]");
    check_name(format!("{base}.name"), &m.name, f);
    if m.stages.is_empty() {
        f.error(format!("{base}.stages"), "a model needs at least one stage");
    }
    if m.stages.len() > MAX_STAGES {
        f.error(format!("{base}.stages"), format!("at most {MAX_STAGES} stages"));
    }
    let mut stages = HashSet::new();
    for (j, s) in m.stages.iter().enumerate() {
        check_name(format!("{base}.stages[{j}]"), s, f);
        if !stages.insert(s.as_str()) {
            f.error(format!("{base}.stages[{j}]"), format!("duplicate stage `{s}`"));
        }
    }
    if !stages.contains(m.initial.as_str()) {
        f.error(format!("{base}.initial"), format!("unknown stage `{}`", m.initial));
    }
    if let Some(order) = &m.merge_order {
        let set: BTreeSet<&str> = order.iter().map(String::as_str).collect();
        if set.len() != order.len() || set != stages.iter().copied().collect::<BTreeSet<_>>() {
            let missing: Vec<&str> = m.stages.iter().map(String::as_str).filter(|s| !set.contains(s)).collect();
            let unknown: Vec<&str> = set.iter().copied().filter(|s| !stages.contains(s)).collect();
            let twice: BTreeSet<&str> = order.iter().enumerate().filter(|(i, s)| order[..*i].contains(s)).map(|(_, s)| s.as_str()).collect();
            let mut what = Vec::new();
            for (label, list) in [("missing", missing), ("not a stage", unknown), ("listed twice", twice.into_iter().collect())] {
                if !list.is_empty() {
                    what.push(format!("{label}: {}", list.join(", ")));
                }
            }
            f.error(format!("{base}.merge_order"), format!("must list every stage exactly once ({})", what.join("; ")));
        }
    }
    for (j, t) in m.transitions.iter().enumerate() {
        let key = format!("{base}.transitions[{j}]");
        if t.from.names().is_empty() {
            f.error(format!("{key}.from"), "an empty list never holds: name a stage or a list of stages");
        }
        for s in t.from.names() {
            if s != "*" && !stages.contains(s) {
                f.error(format!("{key}.from"), format!("unknown stage `{s}`"));
            }
        }
        if !stages.contains(t.to.as_str()) {
            f.error(format!("{key}.to"), format!("unknown stage `{}`", t.to));
        }
        match (&t.on, t.after_inactivity) {
            (Some(on), None) => check_match(c, &format!("{key}.on"), on, true, f),
            (None, Some(d)) if d.millis() <= 0 => f.error(format!("{key}.after_inactivity"), "must be positive"),
            (None, Some(_)) => {}
            _ => f.error(key, "a transition needs exactly one of `on` or `after_inactivity`"),
        }
    }
    // The stages a customer can get to from `initial`, a transition at a
    // time (a merge takes one of two stages customers already reached).
    let mut reachable: HashSet<&str> = HashSet::from([m.initial.as_str()]);
    while let Some(t) = m.transitions.iter().find(|t| !reachable.contains(t.to.as_str()) && t.from.names().iter().any(|s| *s == "*" || reachable.contains(s))) {
        reachable.insert(t.to.as_str());
    }
    for (j, s) in m.stages.iter().enumerate() {
        if !reachable.contains(s.as_str()) {
            let why = match m.transitions.iter().any(|t| t.to == *s) {
                true => "every transition to it starts from a stage that is unreachable",
                false => "it is not `initial` and no transition leads to it",
            };
            f.warn(format!("{base}.stages[{j}]"), format!("stage `{s}` is unreachable: {why}"));
        }
    }
}

fn check_funnel(c: &Config, i: usize, fun: &FunnelConfig, f: &mut Findings) {
    let base = format!("funnel[{i}]");
    check_name(format!("{base}.name"), &fun.name, f);
    if fun.steps.is_empty() || fun.steps.len() > 64 {
        f.error(format!("{base}.steps"), "a funnel needs 1 to 64 steps");
    }
    if fun.window.millis() <= 0 {
        f.error(format!("{base}.window"), "must be positive");
    }
    if let Some(k) = fun.exclusions.iter().position(|x| x == "*") {
        f.warn(format!("{base}.exclusions[{k}]"), "`*`: every event ends an open attempt, so none gets past its first step");
    }
    let mut labels = HashSet::new();
    for (j, s) in fun.steps.iter().enumerate() {
        let key = format!("{base}.steps[{j}]");
        let label = match s {
            FunnelStepConfig::Kind(k) => k.clone(),
            FunnelStepConfig::Step(t) => {
                if let Some(ch) = &t.channel {
                    check_channels(c, &format!("{key}.channel"), &ch.names(), f);
                }
                if t.within.is_some_and(|w| w.millis() <= 0) {
                    f.error(format!("{key}.within"), "must be positive");
                }
                if j == 0 && t.within.is_some() {
                    f.warn(format!("{key}.within"), "the first step has no previous step: `within` on it is never checked");
                }
                t.name.clone().unwrap_or_else(|| t.kind.names().join("|"))
            }
        };
        check_name(key.clone(), &label.replace('|', "_").replace('*', "any"), f);
        if !labels.insert(label.clone()) {
            f.error(key, format!("two steps are labelled `{label}`: give one a `name`"));
        }
    }
}

fn check_attribution(a: &AttributionConfig, f: &mut Findings) {
    for (i, m) in a.models.iter().enumerate() {
        if !ATTRIBUTION_MODELS.contains(&m.as_str()) {
            f.error(format!("attribution.models[{i}]"), format!("unknown attribution model `{m}` (known: {})", ATTRIBUTION_MODELS.join(", ")));
        } else if a.models[..i].contains(m) {
            // Listed twice, every conversion would be credited twice under it.
            f.error(format!("attribution.models[{i}]"), format!("`{m}` is listed twice"));
        }
    }
    for (key, d) in [("attribution.lookback", a.lookback), ("attribution.half_life", a.half_life)] {
        if d.millis() <= 0 {
            f.error(key, "must be positive");
        }
    }
    if a.max_touches == 0 || a.max_touches > 1024 {
        f.error("attribution.max_touches", "must be between 1 and 1024");
    }
    let (p1, p2) = (a.position_first, a.position_last);
    for (key, p) in [("attribution.position_first", p1), ("attribution.position_last", p2)] {
        if !(0.0..=1.0).contains(&p) {
            f.error(key, "must be in [0, 1]");
        }
    }
    if (0.0..=1.0).contains(&p1) && (0.0..=1.0).contains(&p2) && p1 + p2 > 1.0 + 1e-9 {
        f.error("attribution.position_last", format!("position_first + position_last must be at most 1 (here {p1} + {p2})"));
    }
}

fn check_trigger(c: &Config, i: usize, t: &TriggerConfig, f: &mut Findings) {
    let base = format!("trigger[{i}]");
    check_name(format!("{base}.name"), &t.name, f);
    match (&t.on, t.after_inactivity) {
        (Some(on), None) => check_match(c, &format!("{base}.on"), on, false, f),
        (None, Some(d)) if d.millis() <= 0 => f.error(format!("{base}.after_inactivity"), "must be positive"),
        (None, Some(_)) => {}
        _ => f.error(base.clone(), "a trigger needs exactly one of `on` or `after_inactivity`"),
    }
    if let Some(u) = &t.unless {
        check_match(c, &format!("{base}.unless"), u, false, f);
        if t.within.is_none() {
            f.error(format!("{base}.unless"), "`unless` needs `within`: how long to wait for it");
        }
    }
    if t.within.is_some_and(|w| w.millis() <= 0) {
        f.error(format!("{base}.within"), "must be positive");
    }
    if t.within.is_some() && t.after_inactivity.is_some() {
        f.error(format!("{base}.within"), "`within` goes with `on`, not with `after_inactivity`");
    }
    if t.channels.is_empty() {
        f.error(format!("{base}.channels"), "name at least one channel to send on");
    }
    match t.consent.as_deref() {
        None => {
            f.warn(format!("{base}.consent"), format!("trigger `{}` names no consent purpose: it is sent whatever the customer answered to consent", t.name))
        }
        // A consent event's purpose is never empty: no answer could ever hold it back.
        Some("") => f.error(format!("{base}.consent"), "an empty purpose: name the consent purpose to respect, or leave `consent` out"),
        Some(_) => {}
    }
    let names: Vec<&str> = t.channels.iter().map(String::as_str).collect();
    check_channels(c, &format!("{base}.channels"), &names, f);
    if let Some(cap) = &t.cap {
        if cap.max == 0 {
            f.error(format!("{base}.cap.max"), "must be positive");
        }
        if cap.per.millis() <= 0 {
            f.error(format!("{base}.cap.per"), "must be positive");
        }
    }
    if let Some(q) = &t.quiet_hours {
        for (k, v) in [("from", &q.from), ("to", &q.to)] {
            if parse_hhmm(v).is_none() {
                f.error(format!("{base}.quiet_hours.{k}"), format!("`{v}` is not a time like 22:00"));
            }
        }
        if parse_utc_offset(&q.utc_offset).is_none() {
            f.error(format!("{base}.quiet_hours.utc_offset"), format!("`{}` is not an offset like +08:00", q.utc_offset));
        }
        if parse_hhmm(&q.from).is_some() && parse_hhmm(&q.from) == parse_hhmm(&q.to) {
            f.warn(format!("{base}.quiet_hours"), "`from` and `to` are the same time: no hour is quiet");
        }
    }
}

/// `"22:00"` → minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let digits = |x: &str| !x.is_empty() && x.len() <= 2 && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// `"+08:00"` → minutes east of UTC.
pub fn parse_utc_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let mins = parse_hhmm(rest)? as i32;
    Some(sign * mins)
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Severity};

    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => vec![],
            Err(d) => d.iter().filter(|d| d.severity == Severity::Error).map(|d| d.to_string()).collect(),
        }
    }

    const MODEL: &str = "[[model]]\nname = \"life\"\ninitial = \"a\"\nstages = [\"a\", \"b\", \"c\"]\ntransitions = [\n  { from = [\"a\"], to = \"b\", on = { kind = \"x\" } },\n  { from = [\"b\"], to = \"zz\", on = { kind = \"y\" } },\n]\n";

    #[test]
    fn unknown_stage_in_a_transition_names_key_and_line() {
        let e = errors(MODEL);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("line 7: error: model[0].transitions[1].to: unknown stage `zz`"), "{e:?}");
    }

    #[test]
    fn channels_and_kinds_that_cannot_be_subject_tokens_are_refused() {
        let e = errors("kinds = [\"ok\", \"\", \"a b\"]\n[channels]\n\"web.h5\" = \"tech\"\n\"*\" = \"low\"\napp = \"tech\"\n");
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].starts_with("line 1: error: kinds[1]: `` cannot be a kind: it is empty"), "{e:?}");
        assert!(e[1].starts_with("line 1: error: kinds[2]: `a b` cannot be a kind"), "{e:?}");
        assert!(e.iter().any(|l| l.contains("channels.web.h5: `web.h5` cannot be a channel")), "{e:?}");
        assert!(e.iter().any(|l| l.contains("channels.*: `*` cannot be a channel")), "{e:?}");
    }

    #[test]
    fn settings_that_can_never_act_are_warned_about() {
        let text = "[[funnel]]\nname = \"f\"\nwindow = \"1d\"\nsteps = [{ kind = \"a\", within = \"1h\" }, \"b\"]\nexclusions = [\"*\"]\n\n[[trigger]]\nname = \"t\"\non = { kind = \"x\" }\nchannels = [\"push\"]\nconsent = \"m\"\nquiet_hours = { from = \"22:00\", to = \"22:00\", utc_offset = \"+08:00\" }\n";
        let mut w: Vec<String> = parse(text).expect("valid").warnings.iter().filter(|d| d.key != "model").map(|d| d.to_string()).collect();
        w.sort();
        assert_eq!(
            w,
            [
                "line 12: warning: trigger[0].quiet_hours: `from` and `to` are the same time: no hour is quiet",
                "line 4: warning: funnel[0].steps[0].within: the first step has no previous step: `within` on it is never checked",
                "line 5: warning: funnel[0].exclusions[0]: `*`: every event ends an open attempt, so none gets past its first step"
            ]
        );
    }

    #[test]
    fn merge_order_and_cap_mistakes_say_which() {
        let model = "[[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\", \"b\", \"c\"]\ntransitions = [{ from = [\"a\"], to = \"b\", on = { kind = \"x\" } }, { from = [\"b\"], to = \"c\", on = { kind = \"x\" } }]\n";
        let e = errors(&format!("{model}merge_order = [\"a\", \"a\", \"z\"]\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].ends_with("must list every stage exactly once (missing: b, c; not a stage: z; listed twice: a)"), "{e:?}");
        let e = errors("[channels]\napp = \"tech\"\n[[trigger]]\nname = \"t\"\non = { kind = \"x\" }\nchannels = [\"app\"]\nconsent = \"m\"\ncap = { max = 0, per = \"1d\" }\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("trigger[0].cap.max: must be positive"), "{e:?}");
        let e = errors("[time]\nallowed_lateness = \"-1s\"\n");
        assert!(e[0].contains("durations are not negative"), "{e:?}");
    }

    #[test]
    fn a_value_that_must_be_positive_is_named_on_its_own_line() {
        let e = errors("[engine]\n\nbatch_size = 0\n\n[attribution]\nhalf_life = \"0s\"\n");
        assert_eq!(e, ["line 3: error: engine.batch_size: must be positive", "line 6: error: attribution.half_life: must be positive"]);
        let e = errors("[attribution]\nposition_first = 0.7\nposition_last = 0.5\n\n[segments]\nengagement_high = 0\n");
        assert_eq!(
            e,
            [
                "line 3: error: attribution.position_last: position_first + position_last must be at most 1 (here 0.7 + 0.5)",
                "line 6: error: segments.engagement_high: must be at least 1"
            ]
        );
    }

    #[test]
    fn the_reserved_channel_labels_cannot_be_configured() {
        let e = errors("[channels]\napp = \"tech\"\nnone = \"low\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("line 3: error: channels.none: `none` is a reserved channel label"), "{e:?}");
    }

    #[test]
    fn a_syntax_error_inside_an_inline_table_names_its_key() {
        let text = MODEL.replace("kind = \"x\"", "knd = \"x\"").replace("\"zz\"", "\"c\"");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("line 6: error: model[0].transitions[0].on.knd: unknown field `knd`"), "{e:?}");
    }

    #[test]
    fn a_typo_in_a_funnel_step_table_and_a_wrong_type_for_a_name_say_what_is_wrong() {
        let e = errors("[[funnel]]\nname = \"f\"\nwindow = \"1d\"\nsteps = [\"a\", { kind = \"b\", withn = \"1d\" }]\n");
        assert!(e[0].contains("unknown field `withn`"), "{e:?}");
        assert_eq!(e.len(), 1, "`steps` is not missing: its line was left out for the error in it: {e:?}");
        let e = errors(&MODEL.replace("kind = \"x\"", "kind = 3").replace("\"zz\"", "\"c\""));
        assert!(e[0].contains("expected a name or a list of names"), "{e:?}");
    }

    #[test]
    fn a_config_naming_more_kinds_than_ids_can_hold_is_refused() {
        let kinds: Vec<String> = (0..=super::MAX_NAMED).map(|i| format!("\"k{i}\"")).collect();
        let e = errors(&format!("kinds = [{}]\n", kinds.join(", ")));
        assert_eq!(e.len(), 1, "{:?}", &e[..e.len().min(3)]);
        assert!(e[0].contains("error: kinds: at most 32000 distinct event kinds"), "{e:?}");
        assert!(errors(&format!("kinds = [{}]\n", kinds[..1000].join(", "))).is_empty());
    }

    #[test]
    fn a_config_naming_more_channels_than_a_touch_can_hold_is_refused() {
        let channels = |n: usize| (0..n).map(|i| format!("c{i} = \"tech\"\n")).collect::<String>();
        let e = errors(&format!("[channels]\n{}", channels(4095)));
        assert_eq!(e.len(), 1, "{:?}", &e[..e.len().min(3)]);
        assert!(e[0].contains("error: channels: at most 4094 channels"), "{e:?}");
        assert!(errors(&format!("[channels]\n{}", channels(4094))).is_empty());
    }

    #[test]
    fn a_table_header_comment_stays_out_of_the_key() {
        let e = errors("[time]   # time settings\nallowed_latenes = \"5s\"\n");
        assert!(e[0].starts_with("line 2: error: time.allowed_latenes:"), "{e:?}");
    }

    #[test]
    fn quiet_hours_and_offsets_take_digits_only() {
        let e = errors("[[trigger]]\nname = \"t\"\non = { kind = \"x\" }\nchannels = [\"push\"]\nquiet_hours = { from = \"+1:+5\", to = \"08:00\", utc_offset = \"++08:00\" }\n");
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn the_readme_configuration_reference_is_a_valid_config() {
        let readme = include_str!("../../README.md");
        let block = &readme[readme.find("## Configuration").expect("section")..];
        let block = &block[block.find("```toml\n").expect("block") + 8..];
        let block = &block[..block.find("```").expect("block end")];
        assert_eq!(errors(block), Vec::<String>::new());
    }

    #[test]
    fn an_attribution_model_listed_twice_is_refused() {
        let e = errors("[attribution]\nmodels = [\"linear\", \"first_touch\", \"linear\"]\n");
        assert_eq!(e, ["line 2: error: attribution.models[2]: `linear` is listed twice"]);
    }

    #[test]
    fn more_than_32_inactivity_triggers_are_refused() {
        let trigger = |i: usize| format!("[[trigger]]\nname = \"t{i}\"\nafter_inactivity = \"{}d\"\nchannels = [\"app\"]\n", i + 1);
        let config = |n: usize| format!("[channels]\napp = \"tech\"\n{}", (0..n).map(trigger).collect::<String>());
        assert_eq!(errors(&config(32)), Vec::<String>::new());
        assert_eq!(errors(&config(33)), ["line 3: error: trigger: at most 32 triggers with `after_inactivity`"]);
    }

    #[test]
    fn unreachable_stage_is_a_warning_not_an_error() {
        let text = MODEL.replace("\"zz\"", "\"b\"");
        let loaded = parse(&text).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].message.contains("`c` is unreachable"));
        assert_eq!(loaded.warnings[0].line, Some(4));
    }

    #[test]
    fn a_stage_reached_only_from_unreachable_stages_is_unreachable_too() {
        let text = MODEL.replace("stages = [\"a\", \"b\", \"c\"]", "stages = [\"a\", \"b\", \"c\", \"zz\"]").replace("from = [\"a\"]", "from = [\"c\"]");
        let loaded = parse(&text).unwrap();
        let found: Vec<&str> = loaded.warnings.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("`b` is unreachable: every transition to it starts from a stage that is unreachable"), "{found:?}");
        assert!(found[1].contains("`c` is unreachable: it is not `initial`"), "{found:?}");
        assert!(found[2].contains("`zz` is unreachable: every transition"), "{found:?}");
    }

    #[test]
    fn input_subjects_that_overlap_each_other_are_refused() {
        for (a, b) in [("touch.>", "touch.app.*"), ("touch.app.*", "touch.*.view"), ("touch.>", "touch.>"), ("touch.*.*", "touch.>")] {
            let e = errors(&format!("[nats]\nsubjects = [\"{a}\", \"{b}\"]\n"));
            assert_eq!(e.len(), 1, "{a} {b}: {e:?}");
            assert!(e[0].contains(&format!("nats.subjects[1]: `{b}` and `{a}` both take in some subjects")), "{e:?}");
        }
        for (a, b) in [("touch.app.*", "touch.web.*"), ("touch.*.view", "touch.*.buy"), ("touch.a", "touch.a.>")] {
            assert_eq!(errors(&format!("[nats]\nsubjects = [\"{a}\", \"{b}\"]\n")), Vec::<String>::new(), "{a} {b}");
        }
    }

    #[test]
    fn a_subject_or_server_address_nats_would_refuse_is_an_error_here() {
        for (subject, why) in [
            ("touch.>.x", "`>` only as the whole last token"),
            ("", "empty token"),
            ("touch..x", "empty token"),
            ("touch. x", "white space"),
            ("touch.ap*", "`*` only as a whole token"),
        ] {
            let e = errors(&format!("[nats]\nsubjects = [\"{subject}\"]\n"));
            assert_eq!(e.len(), 1, "{subject}: {e:?}");
            assert!(e[0].starts_with(&format!("line 2: error: nats.subjects[0]: `{subject}` is not a NATS subject: {why}")), "{e:?}");
        }
        for url in ["", "http://x:1", "nats://a:99999", "nats://a b:1"] {
            let e = errors(&format!("[nats]\nurl = \"{url}\"\n"));
            assert_eq!(e.len(), 1, "{url}: {e:?}");
            assert!(e[0].starts_with(&format!("line 2: error: nats.url: `{url}` is not a NATS server address")), "{e:?}");
        }
        for url in ["nats://127.0.0.1:4222", "nats:4222", "tls://nats.example.com", "localhost"] {
            assert_eq!(errors(&format!("[nats]\nurl = \"{url}\"\n")), Vec::<String>::new(), "{url}");
        }
        assert_eq!(errors("[nats]\ncredentials = \"\"\n"), ["line 2: error: nats.credentials: must name a credentials file"]);
    }

    #[test]
    fn input_subjects_that_take_in_journeyds_own_output_are_refused() {
        for subject in [">", "journey.>", "*.dlq", "journey.transition.lifecycle.>", "journey.*", "*.*.*.*.*"] {
            let e = errors(&format!("[nats]\nsubjects = [\"touch.>\", \"{subject}\"]\n"));
            let e: Vec<&String> = e.iter().filter(|e| !e.contains("both take in")).collect();
            assert_eq!(e.len(), 1, "{subject}: {e:?}");
            assert!(e[0].contains(&format!("nats.subjects[1]: `{subject}` also takes in journeyd's own")), "{e:?}");
        }
        for subject in ["touch.>", "touch.*.*", "journeys.>", "journey", "*.dlq.x", "journey.transition.a.b"] {
            assert_eq!(errors(&format!("[nats]\nsubjects = [\"{subject}\"]\n")), Vec::<String>::new(), "{subject}");
        }
    }

    #[test]
    fn sizes_that_would_exhaust_memory_or_overflow_are_refused() {
        let e = errors("[engine]\nbatch_size = 4611686018427387904\nqueue_batches = 70000\n");
        assert_eq!(e, ["line 2: error: engine.batch_size: at most 65536", "line 3: error: engine.queue_batches: at most 65536"]);
        let e = errors("[nats]\nsubscription_capacity = 100000000\n");
        assert_eq!(e, ["line 2: error: nats.subscription_capacity: must be between 1 and 16777216"]);
        let e = errors("[time]\nmax_future_skew = \"400d\"\n");
        assert_eq!(e, ["line 2: error: time.max_future_skew: at most 365d"]);
        let e = errors("[identity]\nmax_ids_per_type = { user_id = 256 }\n");
        assert_eq!(e, ["line 2: error: identity.max_ids_per_type.user_id: must be between 1 and 255"]);
        let channels: String = (0..1001).map(|i| format!("c{i} = \"tech\"\n")).collect();
        let kinds: Vec<String> = (0..1000).map(|i| format!("\"k{i}\"")).collect();
        let e = errors(&format!("kinds = [{}]\n[channels]\n{channels}", kinds.join(", ")));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("line 2: error: channels: 1003 channels × ") && e[0].contains("(at most 1000000)"), "{e:?}");
    }

    #[test]
    fn a_config_without_a_model_is_a_warning() {
        let loaded = parse("[channels]\napp = \"tech\"\n").unwrap();
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].message.starts_with("no [[model]]"), "{:?}", loaded.warnings);
    }

    #[test]
    fn a_trigger_without_a_consent_purpose_is_a_warning() {
        let text = "[channels]\napp = \"tech\"\n\n[[trigger]]\nname = \"welcome\"\non = { kind = \"signup\" }\nchannels = [\"app\"]\n";
        // (Without a model: that is a warning of its own.)
        let about_triggers = |text: &str| parse(text).unwrap().warnings.into_iter().filter(|w| w.key != "model").collect::<Vec<_>>();
        let warnings = about_triggers(text);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].message.contains("`welcome` names no consent purpose"), "{warnings:?}");
        assert_eq!(warnings[0].line, Some(4));
        assert!(about_triggers(&format!("{text}consent = \"marketing\"\n")).is_empty());
        let e = errors(&format!("{text}consent = \"\"\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("trigger[0].consent: an empty purpose"), "{e:?}");
    }

    #[test]
    fn jetstream_stream_and_consumer_must_be_jetstream_names() {
        let text = format!("[nats]\njetstream = {{ stream = \"touch.events\", consumer = \"\" }}\n\n{}", MODEL.replace("\"zz\"", "\"b\""));
        let e = errors(&text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("nats.jetstream.stream: `touch.events` is not a JetStream name"), "{e:?}");
        assert!(e[1].contains("nats.jetstream.consumer: `` is not a JetStream name"), "{e:?}");
        let ok = format!("[nats]\njetstream = {{ stream = \"TOUCH\", consumer = \"journeyd\" }}\n\n{}", MODEL.replace("\"zz\"", "\"b\""));
        assert!(errors(&ok).is_empty());
    }

    #[test]
    fn duplicate_model_names_are_errors() {
        let text = format!("{}{}", MODEL.replace("\"zz\"", "\"b\""), MODEL.replace("\"zz\"", "\"b\""));
        let e = errors(&text);
        assert!(e.iter().any(|e| e.contains("duplicate model name `life`")), "{e:?}");
    }

    #[test]
    fn empty_lists_of_stages_or_channels_are_errors() {
        let e = errors(&MODEL.replace("from = [\"a\"]", "from = []").replace("kind = \"y\"", "kind = \"y\", channel = []").replace("\"zz\"", "\"c\""));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("model[0].transitions[0].from: an empty list never holds"), "{e:?}");
        assert!(e[1].contains("model[0].transitions[1].on.channel: an empty list matches no event"), "{e:?}");
    }

    #[test]
    fn user_and_password_name_the_one_given() {
        let model = MODEL.replace("\"zz\"", "\"b\"");
        let e = errors(&format!("[nats]\npassword = \"p\"\n\n{model}"));
        assert!(e.len() == 1 && e[0].contains("nats.password: user and password go together: `nats.user` is missing"), "{e:?}");
        let e = errors(&format!("[nats]\nuser = \"u\"\n\n{model}"));
        assert!(e.len() == 1 && e[0].contains("nats.user: user and password go together: `nats.password` is missing"), "{e:?}");
    }

    #[test]
    fn transition_needs_exactly_one_trigger() {
        let text = "[[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\", \"b\"]\ntransitions = [{ from = \"a\", to = \"b\" }]\n";
        let e = errors(text);
        assert!(e[0].contains("exactly one of `on` or `after_inactivity`"), "{e:?}");
    }

    #[test]
    fn count_without_within_is_an_error() {
        let text = MODEL.replace("kind = \"y\"", "kind = \"y\", count = 3").replace("\"zz\"", "\"c\"");
        let e = errors(&text);
        assert!(e[0].contains("`count` and `within` go together"), "{e:?}");
    }

    #[test]
    fn unknown_channel_when_channels_are_closed() {
        let text = format!("[channels]\napp = \"tech\"\n\n{}", MODEL.replace("kind = \"y\"", "kind = \"y\", channel = [\"fax\"]").replace("\"zz\"", "\"c\""));
        let e = errors(&text);
        assert!(e[0].contains("unknown channel `fax`"), "{e:?}");
    }
}
