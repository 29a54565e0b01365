//! The generator: deterministic, valid for its config, covering every stage,
//! anomalies that change nothing, and a live answer equal to the replay one.

use super::*;
use crate::catalog::Catalog;
use crate::config;
use crate::event::{decode, BlockedIds, DecodeContext};
use crate::sim::reference::{Outcome, Truth};
use std::collections::BTreeSet;
use std::path::Path;

const NOW: i64 = 1_750_000_000_000;

fn example(name: &str) -> Config {
    config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)).unwrap().config
}

fn outcomes(c: &Config, events: &[SimEvent]) -> Vec<Outcome> {
    let mut r = Reference::new(c, NOW);
    events.iter().map(|e| r.ingest(Some(&e.subject), &e.payload)).collect()
}

fn kind_of(e: &SimEvent) -> &str {
    e.subject.rsplit('.').next().unwrap_or("")
}

#[test]
fn the_same_seed_gives_the_same_traffic() {
    let c = example("retail.toml");
    let a = generate(&c, 300, 7, NOW);
    let b = generate(&c, 300, 7, NOW);
    assert_eq!(a.events, b.events);
    assert_eq!(a.truth, b.truth);
    assert_ne!(generate(&c, 300, 8, NOW).events, a.events);
}

#[test]
fn every_applied_payload_decodes_and_nothing_else_does_by_accident() {
    for name in ["retail.toml", "wealth.toml"] {
        let c = example(name);
        let g = generate(&c, 1000, 3, NOW);
        let catalog = Catalog::new(&c);
        let blocked = BlockedIds::new(&c.identity.blocked_values);
        let cx = DecodeContext {
            catalog: &catalog,
            max_event_bytes: c.limits.max_event_bytes,
            max_future_skew_ms: c.time.max_future_skew.millis(),
            blocked: &blocked,
        };
        let mut refused = 0;
        for (e, o) in g.events.iter().zip(outcomes(&c, &g.events)) {
            let decoded = decode(&e.payload, Some(&e.subject), NOW, &cx);
            let no_subject = decode(&e.payload, None, NOW, &cx);
            assert_eq!(decoded.is_ok(), no_subject.is_ok(), "{name}: subject and payload agree: {}", String::from_utf8_lossy(&e.payload));
            match (o, decoded) {
                (Outcome::Dlq, Err(_)) => refused += 1,
                (Outcome::Dlq, Ok(_)) => {} // refused by an identity limit, not by decoding
                (_, Err(r)) => panic!("{name}: {r}: {}", String::from_utf8_lossy(&e.payload)),
                (_, Ok(d)) => assert!(c.channels.contains_key(catalog.channel_name(d.channel)), "{name}"),
            }
        }
        assert!(refused > 0 && refused <= g.truth.dlq, "{name}: {refused} of {}", g.truth.dlq);
    }
}

#[test]
fn applied_events_come_in_event_time_order_and_before_now() {
    let c = example("retail.toml");
    let g = generate(&c, 1000, 4, NOW);
    let applied: Vec<i64> = g.events.iter().zip(outcomes(&c, &g.events)).filter(|(_, o)| *o == Outcome::Applied).map(|(e, _)| e.ts).collect();
    assert!(applied.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(applied.last().copied(), Some(NOW - END_GAP));
}

#[test]
fn kinds_cover_the_rules_and_everyday_touches() {
    for (name, rule_kinds) in
        [("retail.toml", &["signup", "purchase"][..]), ("wealth.toml", &["signup", "activate", "open_account", "invest", "login", "contact"][..])]
    {
        let g = generate(&example(name), 2000, 5, NOW);
        let kinds: BTreeSet<&str> = g.events.iter().map(kind_of).collect();
        for k in rule_kinds.iter().chain(&["view", "cart_add", "email_open", "sms_click", "refund", "consent", "search"]) {
            assert!(kinds.contains(k), "{name}: no `{k}` in {kinds:?}");
        }
        let channels: BTreeSet<&str> = g.events.iter().filter_map(|e| e.subject.split('.').nth(1)).collect();
        assert!(channels.len() >= 6, "{name}: {channels:?}");
    }
}

#[test]
fn every_stage_is_reached_and_anomalies_are_present() {
    for (name, seed) in [("retail.toml", 1), ("wealth.toml", 2)] {
        let g = generate(&example(name), 2000, seed, NOW);
        for (model, stages) in &g.truth.stages {
            for (stage, n) in stages {
                assert!(*n > 0, "{name}: nobody in {model}/{stage}: {:?}", g.truth);
            }
        }
        let t = &g.truth;
        assert!(t.duplicates > 0 && t.late > 0 && t.dlq > 0, "{name}: {t:?}");
        assert!(t.customers > 2000, "{name}: unlinked devices and comebacks are customers of their own: {t:?}");
    }
}

#[test]
fn anomalies_change_no_stage() {
    for name in ["retail.toml", "wealth.toml"] {
        let c = example(name);
        let g = generate(&c, 1500, 6, NOW);
        let clean: Vec<SimEvent> = g.events.iter().zip(outcomes(&c, &g.events)).filter(|(_, o)| *o == Outcome::Applied).map(|(e, _)| e.clone()).collect();
        let t = crate::sim::truth_at(&c, &clean, NOW, End::Replay);
        assert_eq!(t, Truth { dlq: 0, duplicates: 0, late: 0, ..g.truth.clone() }, "{name}");
    }
}

#[test]
fn the_live_answer_equals_the_replay_answer_for_a_day() {
    for name in ["retail.toml", "wealth.toml"] {
        let c = example(name);
        let g = generate(&c, 1500, 9, NOW);
        let mut r = Reference::new(&c, NOW);
        for e in &g.events {
            r.ingest(Some(&e.subject), &e.payload);
        }
        let idle = c.time.idle_timeout.millis() + c.time.allowed_lateness.millis();
        for w in [NOW - END_GAP, NOW - idle, NOW + 60_000, NOW + LIVE_HORIZON - 1] {
            assert_eq!(r.truth(End::Watermark(w)), g.truth, "{name} at {w}");
        }
    }
}

#[test]
fn no_event_links_two_user_ids() {
    let c = example("retail.toml");
    let g = generate(&c, 2000, 10, NOW);
    let mut owner: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for (e, o) in g.events.iter().zip(outcomes(&c, &g.events)) {
        if o != Outcome::Applied {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
        let ids = v["ids"].as_object().unwrap();
        if let Some(u) = ids.get("user_id").and_then(|u| u.as_str()) {
            for (t, val) in ids {
                let prev = owner.entry(format!("{t}:{}", val.as_str().unwrap())).or_insert_with(|| u.to_string());
                assert_eq!(prev, u);
            }
        }
    }
}
