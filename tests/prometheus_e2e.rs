//! The dashboards and alert rules under `grafana/` against a real Prometheus.
//!
//! One test runs the whole chain: a nats-server with JetStream, journeyd
//! in-process (the retail example config, consuming through JetStream), a real
//! `prometheus` scraping journeyd every second and evaluating a test copy of
//! `grafana/alerts/journey.rules.yml` every second, and simulated traffic. It then proves, through Prometheus' HTTP API, that
//!
//! 1. every query of every dashboard returns data: each `label_values(...)`
//!    variable has values (and its default among them), and each panel target's
//!    PromQL, with the variables filled in, returns at least one number;
//! 2. the conversion-drop alerts fire when conversion drops: the simulator keeps
//!    publishing its customers' journeys but stops sending purchases, so people
//!    still register and nobody becomes a customer, and `JourneyConversionBelowFloor`,
//!    `JourneyConversionDropVsLastWeek` (registered → customer) and
//!    `JourneyFunnelCompletionDrop` (onboarding) go from inactive to firing.
//!
//! What differs from production, so that this fits in well under a minute: the rules
//! copy has every `for:` at 1s and the one-hour windows at 10s ([`rules_for_test`]);
//! the dashboards' `$__rate_interval` is 1m; and the week-old samples that `offset 1w`
//! reads are written into Prometheus' empty storage before it starts
//! ([`last_week_openmetrics`]).
//!
//! The prometheus binary is `$PROMETHEUS_BIN`, else `prometheus` on `PATH` (promtool
//! beside it, else on `PATH`); `make test` provides both. Without them the test fails.

mod common;
#[path = "fixtures/prometheus_server.rs"]
mod prometheus_server;

use common::*;
use journeyd::config::{self, Config, Dur};
use journeyd::sim::{self, SimEvent};
use prometheus_server::{url_encode, Prometheus, QueryError};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Simulated people, and how fast their events are published: about 50 000 events,
/// enough to keep traffic flowing (history in event-time order, without a gap that
/// would let journeyd's idle clock overtake it) through both checks.
const PEOPLE: usize = 4000;
const EVENTS_PER_SECOND: f64 = 1200.0;
const SEED: u64 = 42;

/// What the dashboards' template variables get when they are not read from Prometheus.
/// Grafana derives `$__rate_interval` from the scrape interval; one minute holds many
/// 1 s scrapes, so every `rate` has enough samples once traffic has flowed for a moment.
const BUILTIN_INTERVALS: &[(&str, &str)] =
    &[("__rate_interval", "1m"), ("__interval", "1m"), ("__range", "1m"), ("__interval_ms", "60000"), ("__range_s", "60"), ("__range_ms", "60000")];

/// Range windows of the rules file replaced in the test copy. The recording rules
/// behind the conversion alerts look at one hour; the test's traffic lasts under a
/// minute, so the drop would barely move a one-hour ratio. Ten seconds (ten scrapes)
/// lets the ratio reflect the drop within seconds.
const RULE_WINDOW: (&str, &str) = ("[1h]", "[10s]");
/// Every alert's `for:` in the test copy: one evaluation pending, then firing.
const RULE_FOR: &str = "1s";

/// The stage conversion (of the retail lifecycle) and the funnel whose drop must alert.
const FROM_STAGE: &str = "registered";
const TO_STAGE: &str = "customer";
const FUNNEL: &str = "onboarding";
const MODEL: &str = "lifecycle";

/// "The same hour last week", written into Prometheus' storage before it starts (see
/// [`last_week_openmetrics`]): the recorded series the week-over-week alerts compare
/// with. Low, so that what the simulator's traffic shows live is well above half of
/// them whatever its mix of journeys, and only a collapse (as the drop makes) falls
/// below; the volume guards' base rates are far above 50 per hour.
const LAST_WEEK_CONVERSION: f64 = 0.1;
const LAST_WEEK_FUNNEL_COMPLETION: f64 = 0.005;
const LAST_WEEK_BASE_RATE: f64 = 1.0;

const STARTUP: Duration = Duration::from_secs(20);
const DASHBOARDS_DEADLINE: Duration = Duration::from_secs(30);
const BEFORE_DROP_DEADLINE: Duration = Duration::from_secs(20);
const ALERT_DEADLINE: Duration = Duration::from_secs(30);
const QUERY_POLL: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboards_have_data_and_conversion_drop_alerts_fire_in_real_prometheus() {
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // journeyd consumes through JetStream here, so that the dashboards'
    // JetStream panel (consumer lag) has data too.
    let nats = NatsServer::start_jetstream();

    let mut config = config::load(&root.join("examples/retail.toml")).unwrap_or_else(|e| panic!("{e}")).config;
    config.nats.url = nats.url();
    config.nats.jetstream = Some(config::JetStreamConfig { stream: "TOUCH".into(), consumer: "journeyd".into(), rebuild: true });
    config.http.listen = free_addr();
    // Short, so that the idle clock moves the watermark (and fires timers) soon after
    // traffic pauses; the publisher never pauses that long mid-stream.
    config.time.idle_timeout = Dur::parse("2s").expect("a valid duration");
    let journeyd_addr = config.http.listen.clone();

    let generator_config = config.clone();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let generated = tokio::task::spawn_blocking(move || sim::generate(&generator_config, PEOPLE, SEED, now_ms)).await.expect("the generator task");
    let events = generated.events;
    eprintln!("setup: {} events for {PEOPLE} people generated in {:.1}s", events.len(), started.elapsed().as_secs_f64());

    // Prometheus first, scraping the address journeyd is about to listen on.
    let rules_text = std::fs::read_to_string(root.join("grafana/alerts/journey.rules.yml")).expect("read grafana/alerts/journey.rules.yml");
    let prometheus = Prometheus::start(&journeyd_addr, &rules_for_test(&rules_text), Some(&last_week_openmetrics(now_ms))).await;
    let client = nats.connect().await;
    eprintln!("setup: events generated and Prometheus ready after {:.1}s", started.elapsed().as_secs_f64());

    let shutdown = CancellationToken::new();
    let journeyd = tokio::spawn(journeyd::run(config.clone(), shutdown.clone()));
    wait_until("journeyd is ready (/readyz)", STARTUP, || async { matches!(try_http_get(&journeyd_addr, "/readyz").await, Ok((200, _))).then_some(()) }).await;
    let traffic = Traffic::start(client, events, EVENTS_PER_SECOND);
    eprintln!("traffic: publishing {} events at {EVENTS_PER_SECOND}/s", traffic.total);
    wait_until("journeyd applies simulated events (not all late)", STARTUP, || async {
        let (_, metrics) = try_http_get(&journeyd_addr, "/metrics").await.ok()?;
        metric_sum(&metrics, "journey_events_total", &[]).filter(|n| *n > 0.0)
    })
    .await;
    wait_until("Prometheus scrapes journeyd (up == 1)", STARTUP, || async {
        prometheus.numbers("up{job=\"journeyd\"} == 1").await.ok().filter(|v| !v.is_empty())
    })
    .await;

    let phase = Instant::now();
    every_dashboard_query_returns_data(&prometheus, root, &config).await;
    eprintln!("dashboards: every query has data after {:.1}s of traffic", phase.elapsed().as_secs_f64());

    let phase = Instant::now();
    let (conversion, completion) = conversion_is_healthy_before_the_drop(&prometheus, &traffic).await;
    traffic.drop_purchases.store(true, Ordering::Release);
    let (healthy_after, dropped_at, position) = (phase.elapsed(), Instant::now(), traffic.position.load(Ordering::Acquire));
    let firing = conversion_drop_alerts_fire(&prometheus, &traffic).await;
    eprintln!(
        "alerts: healthy after {:.1}s ({FROM_STAGE} → {TO_STAGE} {conversion:.3}, {FUNNEL} completion {completion:.3}); \
         purchases dropped from event {position} on; {:.1}s later firing: {firing:?}",
        healthy_after.as_secs_f64(),
        dropped_at.elapsed().as_secs_f64()
    );

    let published = traffic.stop().await;
    let (_, metrics) = http_get(&journeyd_addr, "/metrics").await;
    exposition_passes_promtool_lint(&metrics);
    let (applied, late) =
        (metric_sum(&metrics, "journey_events_total", &[]).unwrap_or(0.0), metric_value(&metrics, "journey_late_events_total", &[]).unwrap_or(0.0));
    assert!(late < 0.01 * published as f64, "{late} of {published} events were late ({applied} applied): the watermark overtook the simulated history");
    shutdown.cancel();
    tokio::time::timeout(STARTUP, journeyd)
        .await
        .expect("journeyd drains within the deadline")
        .expect("the journeyd task")
        .expect("journeyd ran without error");
    eprintln!("total {:.1}s, {published} events published", started.elapsed().as_secs_f64());
}

/// `promtool check metrics`: names, types and labels as Prometheus expects them.
fn exposition_passes_promtool_lint(metrics: &str) {
    use std::io::Write as _;
    let (_, promtool) = prometheus_server::prometheus_binaries();
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", promtool.display()));
    child.stdin.take().expect("stdin").write_all(metrics.as_bytes()).expect("write the exposition to promtool");
    let out = child.wait_with_output().expect("promtool check metrics");
    assert!(
        out.status.success(),
        "promtool check metrics refused journeyd's /metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// (1) Dashboards
// ---------------------------------------------------------------------------------------------

/// A PromQL query of a dashboard: a panel target or a variable's query.
struct DashboardQuery {
    /// `file, panel N "title", target A`, for failure messages.
    place: String,
    expr: String,
}

/// Resolves every dashboard's variables against Prometheus, then polls every panel
/// query until each one returns a number; panics listing the ones that never did.
async fn every_dashboard_query_returns_data(prometheus: &Prometheus, root: &Path, config: &Config) {
    let mut dir: Vec<PathBuf> = std::fs::read_dir(root.join("grafana/dashboards"))
        .expect("read grafana/dashboards")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    dir.sort();
    assert!(!dir.is_empty(), "no dashboards under grafana/dashboards");

    let deadline = tokio::time::Instant::now() + DASHBOARDS_DEADLINE;
    let mut queries = Vec::new();
    for path in &dir {
        let file = path.file_name().expect("a file name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let dashboard: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"));
        let (values, variable_queries) = resolve_variables(prometheus, &file, &dashboard, config, deadline).await;
        queries.extend(variable_queries);
        let mut targets = Vec::new();
        collect_targets(&file, dashboard["panels"].as_array().unwrap_or_else(|| panic!("{file}: no panels")), &mut targets);
        for (place, expr) in targets {
            let expr = substitute(&expr, &values).unwrap_or_else(|e| panic!("{place}: {e}"));
            queries.push(DashboardQuery { place, expr });
        }
    }
    eprintln!("dashboards: {} files, {} PromQL queries", dir.len(), queries.len());

    let mut pending: Vec<(DashboardQuery, String)> = queries.into_iter().map(|q| (q, String::from("not queried yet"))).collect();
    loop {
        for (query, last) in pending.iter_mut() {
            match prometheus.query(&query.expr).await {
                Ok(data) if has_number(&data) => *last = String::new(),
                Ok(data) => *last = format!("no data: {data}"),
                Err(QueryError::Rejected(e)) => panic!("{}: Prometheus rejects the query\n  {}\n  {e}", query.place, query.expr),
                Err(QueryError::Unreachable(e)) => *last = e,
            }
        }
        pending.retain(|(_, last)| !last.is_empty());
        if pending.is_empty() {
            return;
        }
        if tokio::time::Instant::now() + QUERY_POLL >= deadline {
            let mut report = String::new();
            for (query, last) in &pending {
                let _ = writeln!(report, "- {}\n    {}\n    {last}", query.place, query.expr);
            }
            panic!("{} dashboard queries returned no data within {DASHBOARDS_DEADLINE:?}:\n{report}", pending.len());
        }
        tokio::time::sleep(QUERY_POLL).await;
    }
}

/// Every target `expr` of every panel (rows' nested panels included), with where it is.
fn collect_targets(file: &str, panels: &[Value], out: &mut Vec<(String, String)>) {
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("");
        let id = &panel["id"];
        for target in panel["targets"].as_array().into_iter().flatten() {
            let place = format!("{file}, panel {id} {title:?}, target {}", target["refId"].as_str().unwrap_or("?"));
            let expr = target["expr"].as_str().filter(|e| !e.trim().is_empty()).unwrap_or_else(|| panic!("{place}: no PromQL expr"));
            out.push((place, expr.to_string()));
        }
        if let Some(nested) = panel["panels"].as_array() {
            collect_targets(file, nested, out);
        }
    }
}

/// The value of each template variable of a dashboard, as Grafana would fill it in with
/// the dashboard's defaults, read from Prometheus; plus the variables whose query is
/// PromQL (not `label_values`), to be checked with the panels.
///
/// `label_values(selector, label)` is Grafana's, not PromQL: it is checked with
/// `/api/v1/label/<label>/values?match[]=<selector>`, which must list values (waiting
/// for them until `deadline`), the variable's default among them. "All" (the default of
/// the multi-value variables) becomes the alternation of every value.
async fn resolve_variables(
    prometheus: &Prometheus,
    file: &str,
    dashboard: &Value,
    config: &Config,
    deadline: tokio::time::Instant,
) -> (BTreeMap<String, String>, Vec<DashboardQuery>) {
    let mut values: BTreeMap<String, String> = BUILTIN_INTERVALS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut promql = Vec::new();
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_else(|| panic!("{file}: a variable without a name")).to_string();
        let place = format!("{file}, variable ${name}");
        let current = current_values(&var["current"]);
        let value = match var["type"].as_str() {
            Some("datasource") => {
                assert_eq!(var["query"], "prometheus", "{place}: the datasource variable must list Prometheus datasources");
                "prometheus".to_string()
            }
            Some("query") => {
                let query = var["query"].as_str().or_else(|| var["query"]["query"].as_str()).unwrap_or_else(|| panic!("{place}: no query"));
                let query = substitute(query, &values).unwrap_or_else(|e| panic!("{place}: {e}"));
                match parse_label_values(&query) {
                    Some((selector, label)) => {
                        let found = label_values(prometheus, &place, &query, selector, label, deadline).await;
                        let value = if current.iter().any(|v| v == "$__all") {
                            alternation(&found)
                        } else {
                            let default = current.first().unwrap_or_else(|| panic!("{place}: no default value"));
                            assert!(found.contains(default), "{place}: the default {default:?} is not among the values Prometheus has: {found:?}");
                            default.clone()
                        };
                        listed.insert(name.clone(), found);
                        value
                    }
                    None => {
                        promql.push(DashboardQuery { place: place.clone(), expr: query });
                        current.first().cloned().unwrap_or_else(|| panic!("{place}: no default value"))
                    }
                }
            }
            _ => current.first().cloned().unwrap_or_else(|| panic!("{place}: no default value")),
        };
        values.insert(name, value);
    }
    // "All channels" must mean every configured channel, not only those seen so far.
    if let Some(channels) = listed.get("channel") {
        let missing: Vec<&String> = config.channels.keys().filter(|c| !channels.contains(c)).collect();
        assert!(missing.is_empty(), "{file}: $channel lists {channels:?}, without the configured {missing:?}");
    }
    (values, promql)
}

/// A variable's `current.value`, a string or a list of strings.
fn current_values(current: &Value) -> Vec<String> {
    match &current["value"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// `label_values(selector, label)` → `(Some(selector), label)`; `label_values(label)` →
/// `(None, label)`; anything else → `None`.
fn parse_label_values(query: &str) -> Option<(Option<&str>, &str)> {
    let inner = query.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    Some(match inner.rsplit_once(',') {
        Some((selector, label)) => (Some(selector.trim()), label.trim()),
        None => (None, inner.trim()),
    })
}

/// The values Prometheus has for `label` (on series matching `selector`), polled until
/// there is at least one; panics at `deadline`.
async fn label_values(prometheus: &Prometheus, place: &str, query: &str, selector: Option<&str>, label: &str, deadline: tokio::time::Instant) -> Vec<String> {
    let mut path = format!("/api/v1/label/{label}/values");
    if let Some(selector) = selector {
        path.push_str(&format!("?match[]={}", url_encode(selector)));
    }
    loop {
        let answer = match prometheus.api(&path).await {
            Ok(data) => {
                let found: Vec<String> = data.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
                if !found.is_empty() {
                    return found;
                }
                format!("no values: {data}")
            }
            Err(QueryError::Rejected(e)) => panic!("{place}: Prometheus rejects {path} (for {query}): {e}"),
            Err(QueryError::Unreachable(e)) => e,
        };
        if tokio::time::Instant::now() + QUERY_POLL >= deadline {
            panic!("{place}: {query} has no values in Prometheus ({path}): {answer}");
        }
        tokio::time::sleep(QUERY_POLL).await;
    }
}

/// `(a|b|c)` with regex metacharacters escaped the way Grafana does in PromQL strings.
fn alternation(values: &[String]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| {
            v.chars().fold(String::new(), |mut s, c| {
                if "\\^$.|?*+()[]{}".contains(c) {
                    s.push_str("\\\\");
                }
                s.push(c);
                s
            })
        })
        .collect();
    format!("({})", escaped.join("|"))
}

/// Replaces Grafana's variable references (`$name`, `${name}`, `${name:format}`,
/// `[[name]]`) with `values`; an unknown name is an error, since Prometheus would get
/// the literal text.
fn substitute(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let lookup = |name: &str| values.get(name).cloned().ok_or_else(|| format!("unknown template variable ${name} in {text}"));
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| format!("unterminated ${{ in {text}"))?;
            let name = after[..end].split(':').next().unwrap_or_default();
            out.push_str(&lookup(name)?);
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('$') {
            let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
            if end == 0 {
                return Err(format!("a lone $ in {text}"));
            }
            out.push_str(&lookup(&after[..end])?);
            rest = &after[end..];
        } else if let Some((name, after)) = rest.strip_prefix("[[").and_then(|a| a.split_once("]]")).filter(|(n, _)| !n.is_empty() && n.chars().all(is_name)) {
            out.push_str(&lookup(name)?);
            rest = after;
        } else {
            out.push('[');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether an instant-query result holds at least one sample that is a number (not NaN).
fn has_number(data: &Value) -> bool {
    let is_number = |sample: &Value| sample[1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| !v.is_nan());
    match data["resultType"].as_str() {
        Some("vector") => data["result"].as_array().is_some_and(|r| r.iter().any(|s| is_number(&s["value"]))),
        Some("scalar") => is_number(&data["result"]),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// (2) Conversion-drop alerts
// ---------------------------------------------------------------------------------------------

/// The alerts the drop must fire, with the labels that say which conversion dropped.
fn drop_alerts() -> [(&'static str, Vec<(&'static str, &'static str)>); 3] {
    let pair = vec![("model", MODEL), ("from_stage", FROM_STAGE), ("to_stage", TO_STAGE)];
    [("JourneyConversionBelowFloor", pair.clone()), ("JourneyConversionDropVsLastWeek", pair), ("JourneyFunnelCompletionDrop", vec![("funnel", FUNNEL)])]
}

/// Waits until, with every purchase still flowing, the registered → customer ratio is
/// above its floor and above half of last week's, the onboarding completion ratio above
/// half of last week's, and none of the drop alerts is pending or firing for them.
/// Returns the two ratios at that moment.
async fn conversion_is_healthy_before_the_drop(prometheus: &Prometheus, traffic: &Traffic) -> (f64, f64) {
    let pair = format!("{{model=\"{MODEL}\", from_stage=\"{FROM_STAGE}\", to_stage=\"{TO_STAGE}\"}}");
    let checks = [
        format!("journey:conversion_ratio1h{pair} >= on (from_stage, to_stage) group_left journey:conversion_floor"),
        format!("journey:conversion_ratio1h{pair} >= 0.5 * (journey:conversion_ratio1h{pair} offset 1w)"),
        format!("journey:funnel_completion_ratio1h{{funnel=\"{FUNNEL}\"}} >= 0.5 * (journey:funnel_completion_ratio1h{{funnel=\"{FUNNEL}\"}} offset 1w)"),
    ];
    let deadline = tokio::time::Instant::now() + BEFORE_DROP_DEADLINE;
    loop {
        traffic.assert_flowing();
        let mut unhealthy = Vec::new();
        for check in &checks {
            if !prometheus.numbers(check).await.is_ok_and(|v| !v.is_empty()) {
                unhealthy.push(format!("not true yet: {check}"));
            }
        }
        let active = prometheus.alerts().await.unwrap_or_default();
        for (name, labels) in drop_alerts() {
            if let Some(alert) = active.iter().find(|a| alert_matches(a, name, &labels)) {
                unhealthy.push(format!("already {}: {alert}", alert["state"]));
            }
        }
        if unhealthy.is_empty() {
            let conversion = prometheus.numbers(&format!("journey:conversion_ratio1h{pair}")).await;
            let completion = prometheus.numbers(&format!("journey:funnel_completion_ratio1h{{funnel=\"{FUNNEL}\"}}")).await;
            return (
                conversion.ok().and_then(|v| v.first().copied()).unwrap_or(f64::NAN),
                completion.ok().and_then(|v| v.first().copied()).unwrap_or(f64::NAN),
            );
        }
        if tokio::time::Instant::now() + QUERY_POLL >= deadline {
            panic!("conversion never looked healthy before the drop ({BEFORE_DROP_DEADLINE:?}):\n  {}", unhealthy.join("\n  "));
        }
        tokio::time::sleep(QUERY_POLL).await;
    }
}

/// Waits until every drop alert is firing; returns their values.
async fn conversion_drop_alerts_fire(prometheus: &Prometheus, traffic: &Traffic) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + ALERT_DEADLINE;
    loop {
        traffic.assert_flowing();
        let active = prometheus.alerts().await.unwrap_or_default();
        let mut firing = Vec::new();
        let mut waiting = Vec::new();
        for (name, labels) in drop_alerts() {
            match active.iter().find(|a| alert_matches(a, name, &labels)) {
                Some(a) if a["state"] == "firing" => firing.push(format!("{name} = {}", a["value"].as_str().unwrap_or("?"))),
                Some(a) => waiting.push(format!("{name} is {}", a["state"])),
                None => waiting.push(format!("{name} is inactive")),
            }
        }
        if waiting.is_empty() {
            return firing;
        }
        if tokio::time::Instant::now() + QUERY_POLL >= deadline {
            let ratios = prometheus
                .query("{__name__=~\"journey:(conversion_ratio1h|conversion_base_rate1h|funnel_completion_ratio1h)\"}")
                .await
                .map(|d| d.to_string())
                .unwrap_or_default();
            panic!(
                "after purchases stopped, not every conversion-drop alert fired within {ALERT_DEADLINE:?}:\n  {}\nactive alerts: {}\nrecorded ratios: {ratios}",
                waiting.join("\n  "),
                Value::Array(active)
            );
        }
        tokio::time::sleep(QUERY_POLL).await;
    }
}

fn alert_matches(alert: &Value, name: &str, labels: &[(&str, &str)]) -> bool {
    alert["labels"]["alertname"] == name && labels.iter().all(|(k, v)| alert["labels"][*k] == *v)
}

// ---------------------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------------------

/// The simulated events published at a steady rate in a background task. Setting
/// `drop_purchases` makes the simulated customers stop buying: every later purchase
/// event is left out, everything else (sign-ups included) still goes out.
struct Traffic {
    /// How far into the stream the publisher is (dropped purchases included).
    position: Arc<AtomicUsize>,
    total: usize,
    drop_purchases: Arc<AtomicBool>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<usize>,
}

impl Traffic {
    fn start(client: async_nats::Client, events: Vec<SimEvent>, rate: f64) -> Traffic {
        let (position, drop_purchases, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)), CancellationToken::new());
        let total = events.len();
        let task = {
            let (position, drop_purchases, stop) = (position.clone(), drop_purchases.clone(), stop.clone());
            tokio::spawn(async move {
                const TICK: Duration = Duration::from_millis(20);
                let per_tick = (rate * TICK.as_secs_f64()).ceil() as usize;
                let mut tick = tokio::time::interval(TICK);
                let mut published = 0;
                for chunk in events.chunks(per_tick) {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    for event in chunk {
                        if drop_purchases.load(Ordering::Acquire) && event.subject.rsplit('.').next() == Some("purchase") {
                            continue;
                        }
                        client.publish(event.subject.clone(), event.payload.clone().into()).await.expect("publish a simulated event");
                        published += 1;
                    }
                    position.fetch_add(chunk.len(), Ordering::Release);
                }
                client.flush().await.expect("flush the simulated events");
                published
            })
        };
        Traffic { position, total, drop_purchases, stop, task }
    }

    /// Panics when the whole stream has gone out: the checks rely on traffic flowing.
    fn assert_flowing(&self) {
        assert!(
            self.position.load(Ordering::Acquire) < self.total,
            "the {} simulated events ran out before the checks finished: raise PEOPLE or lower EVENTS_PER_SECOND",
            self.total
        );
    }

    /// Stops publishing; returns how many events were published.
    async fn stop(self) -> usize {
        self.stop.cancel();
        self.task.await.expect("the publisher task")
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------------------------

/// The test copy of the rules: every `for:` shortened to [`RULE_FOR`] and the one-hour
/// windows to [`RULE_WINDOW`] (see there). Nothing else changes: the expressions, the
/// floors and the volume guards (≥ 50 transitions or entries per hour, i.e. a per-second
/// rate × 3600, which the traffic exceeds many times over) are the production ones.
fn rules_for_test(original: &str) -> String {
    let mut fors = 0;
    let mut out = String::with_capacity(original.len());
    for line in original.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("for:") {
            fors += 1;
            out.push_str(&line[..line.len() - trimmed.len()]);
            out.push_str("for: ");
            out.push_str(RULE_FOR);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    let (long, short) = RULE_WINDOW;
    let windows = out.matches(long).count();
    assert!(fors > 0 && windows > 0, "the rules file changed shape: {fors} `for:` lines, {windows} {long} windows to shorten");
    out.replace(long, short)
}

/// OpenMetrics samples of the recorded series one week before `now_ms` (from 10 minutes
/// before to 5 minutes after): the registered → customer ratio and its base rate, and
/// the onboarding completion ratio and entry rate, as the recording rules would have
/// stored them a week ago. They give the `offset 1w` queries (a dashboard panel and the
/// week-over-week alerts) something to compare with in a Prometheus started seconds ago.
fn last_week_openmetrics(now_ms: i64) -> String {
    let week_ago = now_ms / 1000 - 7 * 24 * 3600;
    let pair = format!("model=\"{MODEL}\",from_stage=\"{FROM_STAGE}\",to_stage=\"{TO_STAGE}\"");
    let funnel = format!("funnel=\"{FUNNEL}\"");
    let series = [
        ("journey:conversion_ratio1h", &pair, LAST_WEEK_CONVERSION),
        ("journey:conversion_base_rate1h", &pair, LAST_WEEK_BASE_RATE),
        ("journey:funnel_completion_ratio1h", &funnel, LAST_WEEK_FUNNEL_COMPLETION),
        ("journey:funnel_entered_rate1h", &funnel, LAST_WEEK_BASE_RATE),
    ];
    let mut text = String::new();
    for (name, labels, value) in series {
        let _ = writeln!(text, "# TYPE {name} gauge");
        for ts in (week_ago - 600..=week_ago + 300).step_by(10) {
            let _ = writeln!(text, "{name}{{{labels}}} {value} {ts}");
        }
    }
    text.push_str("# EOF\n");
    text
}

#[test]
fn substitution_fills_every_form_of_variable_and_refuses_unknown_ones() {
    let values: BTreeMap<String, String> =
        [("model", "lifecycle"), ("to_stage", ".*"), ("to", "x"), ("__rate_interval", "1m")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(
        substitute("rate(m{model=\"$model\", to=~\"${to_stage}\", a=\"${to:regex}\", b=\"[[to]]\"}[$__rate_interval])", &values).unwrap(),
        "rate(m{model=\"lifecycle\", to=~\".*\", a=\"x\", b=\"x\"}[1m])"
    );
    assert_eq!(substitute("m[5m] offset 1w", &values).unwrap(), "m[5m] offset 1w");
    assert!(substitute("m{a=\"$nope\"}", &values).is_err());
}

#[test]
fn the_test_rules_shorten_every_for_and_the_hour_windows_only() {
    let original = "      - alert: A\n        expr: rate(x[1h]) > rate(y[5m])\n        for: 30m\n";
    assert_eq!(rules_for_test(original), "      - alert: A\n        expr: rate(x[10s]) > rate(y[5m])\n        for: 1s\n");
}
