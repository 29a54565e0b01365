//! `journeyd replay` on an NDJSON file: final stage counts in every output
//! format, bad lines reported by number, and timers that fall due by the
//! largest event time firing at the end of the input.

mod common;
mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use support::*;

/// A replay's files: the lifecycle config and an NDJSON file of `lines`.
struct Input {
    _dir: tempfile::TempDir,
    config: String,
    events: String,
}

fn input(lines: &[String]) -> Input {
    let dir = common::tempdir();
    let config = common::write_config(dir.path(), &config_text("nats://127.0.0.1:4222", "127.0.0.1:9464", EVENT_TIME_ONLY, LIFECYCLE));
    let events = common::write_file(dir.path(), "events.ndjson", &(lines.join("\n") + "\n"));
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
    Input { config: path(&config), events: path(&events), _dir: dir }
}

fn replay(input: &Input, format: &str) -> Output {
    let out = std::process::Command::new(common::journeyd_bin())
        .args(["replay", "--config", &input.config, &input.events, "--format", format])
        .output()
        .expect("run journeyd replay");
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Three customers end in customer, registered and visitor; line 3 is not JSON.
fn three_customers() -> Vec<String> {
    let t = days_ago(30);
    vec![
        event("e1", t, "u1", "app", "signup").to_string(),
        event("e2", t + 1000, "u1", "store", "purchase").to_string(),
        "this line is not an event".to_string(),
        event("e3", t + 2000, "u2", "web", "signup").to_string(),
        String::new(),
        event("e4", t + 3000, "u3", "app", "view").to_string(),
    ]
}

/// `stage → customers` of `model` from the text summary's indented table.
fn text_stages(text: &str, model: &str) -> BTreeMap<String, i64> {
    text.lines()
        .skip_while(|l| *l != format!("{model}:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let mut it = l.split_whitespace();
            let stage = it.next().expect("stage name").to_string();
            let n = it.next().and_then(|n| n.parse().ok()).expect("stage count");
            (stage, n)
        })
        .collect()
}

fn counts(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

fn lifecycle_counts(visitor: i64, registered: i64, customer: i64, dormant: i64) -> BTreeMap<String, i64> {
    counts(&[("visitor", visitor), ("registered", registered), ("customer", customer), ("repeat", 0), ("loyal", 0), ("dormant", dormant), ("reactivated", 0)])
}

#[test]
fn text_format_prints_the_final_stage_counts() {
    let input = input(&three_customers());

    let out = replay(&input, "text");

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("applied 4, refused 1, late 0, duplicates 0"), "{stdout}");
    assert!(stdout.contains("customers 3, identity merges 0"), "{stdout}");
    assert_eq!(text_stages(&stdout, "lifecycle"), lifecycle_counts(1, 1, 1, 0), "{stdout}");
}

#[test]
fn a_bad_line_is_reported_with_its_line_number_and_reason() {
    let input = input(&three_customers());

    let out = replay(&input, "text");

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:3: not_json:", input.events)), "{stderr}");
    assert_eq!(stderr.matches(": not_json:").count(), 1, "{stderr}");
}

#[test]
fn crlf_line_ends_and_a_last_line_without_one_read_the_same() {
    let input = input(&[]);
    std::fs::write(&input.events, three_customers().join("\r\n")).expect("write the CRLF file");

    let out = replay(&input, "text");

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("applied 4, refused 1, late 0, duplicates 0"), "{stdout}");
    assert_eq!(text_stages(&stdout, "lifecycle"), lifecycle_counts(1, 1, 1, 0), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:3: not_json:", input.events)), "{stderr}");
}

#[test]
fn a_line_longer_than_a_read_is_refused_as_oversized_and_skipped_unbuffered() {
    let input = input(&[]);
    let t = days_ago(30);
    let long = format!(r#"{{"id":"big","ts":{t},"ids":{{"user_id":"u9"}},"channel":"app","kind":"view","campaign":"{}"}}"#, "x".repeat(3 << 20));
    let lines = [event("e1", t, "u1", "app", "signup").to_string(), long, event("e2", t + 1, "u2", "app", "signup").to_string()];
    std::fs::write(&input.events, lines.join("\n")).expect("write the events");

    let out = replay(&input, "json");

    let summary: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!((summary["lines"].as_u64(), summary["applied"].as_u64()), (Some(3), Some(2)), "{summary}");
    assert_eq!(summary["refused_by_reason"], serde_json::json!({"oversized": 1}), "{summary}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:2: oversized:", input.events)), "{stderr}");
}

#[test]
fn json_format_has_the_stage_counts_and_refusals() {
    let input = input(&three_customers());

    let out = replay(&input, "json");

    let summary: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(summary["applied"], 4);
    assert_eq!(summary["refused_by_reason"]["not_json"], 1);
    assert_eq!(summary["customers"], 3);
    let model = &summary["stages"][0];
    assert_eq!(model["model"], "lifecycle");
    let got: BTreeMap<String, i64> = model["stages"]
        .as_array()
        .expect("stages array")
        .iter()
        .map(|s| (s["stage"].as_str().expect("stage").to_string(), s["customers"].as_i64().expect("count")))
        .collect();
    assert_eq!(got, lifecycle_counts(1, 1, 1, 0));
}

#[test]
fn prometheus_format_has_journey_customers_matching_the_counts() {
    let input = input(&three_customers());

    let out = replay(&input, "prometheus");

    let text = String::from_utf8_lossy(&out.stdout);
    let got: BTreeMap<String, i64> = common::metric_samples(&text, "journey_customers", &[("model", "lifecycle")])
        .iter()
        .map(|s| (s.label("stage").expect("stage label").to_string(), s.value as i64))
        .collect();
    assert_eq!(got, lifecycle_counts(1, 1, 1, 0));
    assert_eq!(common::metric_value(&text, "journey_dlq_total", &[("reason", "not_json")]), Some(1.0));
}

#[test]
fn a_timer_due_at_the_largest_event_time_fires_at_the_end_of_the_input() {
    // After b's event the watermark is 5 s short of a's due time (t + 90d);
    // only the end of the input moves it to t + 90d.
    let t = days_ago(100);
    let input = input(&[event("a", t, "cust-a", "app", "signup").to_string(), event("b", t + 90 * DAY, "cust-b", "app", "signup").to_string()]);

    let out = replay(&input, "text");

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text_stages(&stdout, "lifecycle"), lifecycle_counts(0, 1, 0, 1), "{stdout}");
}
