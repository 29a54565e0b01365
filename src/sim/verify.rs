//! `--verify`: reads a live journeyd's Prometheus text over plain HTTP and
//! compares `journey_customers{model,stage}` with the reference's answer at
//! journeyd's own watermark (`journey_watermark_seconds`), polling until they
//! agree or the deadline passes; prints expected against actual.

use super::reference::{End, Reference, Truth};
use crate::config::Config;
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POLL: Duration = Duration::from_millis(250);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a journeyd can be verified against.
pub(crate) enum Fresh {
    Yes,
    No(String),
}

/// What `/metrics` says about the journeys.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Scraped {
    /// model → stage → customers.
    pub stages: BTreeMap<String, BTreeMap<String, i64>>,
    /// The watermark in epoch ms, if journeyd has one.
    pub watermark: Option<i64>,
    pub late: f64,
    pub duplicates: f64,
    pub dlq: f64,
}

/// Waits (up to `timeout`) until journeyd is ready, then checks it has no
/// watermark and no customers yet: simulated history would otherwise be late,
/// or mixed with customers the truth knows nothing of.
pub(crate) async fn before_publishing(base: &str, timeout: Duration) -> anyhow::Result<Fresh> {
    let deadline = Instant::now() + timeout;
    loop {
        match get(base, "/readyz").await {
            Ok((200, _)) => break,
            Ok(_) | Err(_) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
            Ok((status, body)) => bail!("journeyd at {base} is not ready after {timeout:?}: HTTP {status}: {}", body.trim()),
            Err(e) => return Err(e.context(format!("journeyd at {base} did not answer within {timeout:?}"))),
        }
    }
    let s = scrape(base).await?;
    let customers: i64 = s.stages.values().flat_map(|m| m.values()).sum();
    Ok(match s.watermark {
        Some(w) => Fresh::No(format!(
            "journeyd already has a watermark ({}): it has seen traffic, so the simulated history would be late or mixed \
             with it. Start sim against a fresh journeyd.",
            chrono::DateTime::from_timestamp_millis(w).map_or_else(|| w.to_string(), |t| t.to_rfc3339())
        )),
        None if customers > 0 => Fresh::No(format!("journeyd already has {customers} customers; verification needs a fresh one")),
        None => Fresh::Yes,
    })
}

/// Polls until journeyd's stage gauges equal the reference's answer at
/// journeyd's watermark; prints the comparison. Returns the exit code.
pub(crate) async fn until_equal(base: &str, cfg: &Config, reference: &Reference, timeout: Duration) -> anyhow::Result<i32> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    let mut last = None;
    loop {
        match scrape(base).await {
            Ok(s) => {
                let expected = reference.truth(s.watermark.map_or(End::Replay, End::Watermark));
                let equal = mismatches(&expected, &s) == 0;
                last = Some((expected, s));
                if equal {
                    break;
                }
            }
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let Some((expected, actual)) = last else {
        return Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no answer")).context(format!("scraping {base}/metrics")));
    };
    print!("{}", table(cfg, &expected, &actual));
    let bad = mismatches(&expected, &actual);
    if bad == 0 {
        println!("verify: journeyd agrees with the reference on every stage of every model");
        return Ok(0);
    }
    println!("verify: {bad} stage count(s) differ after {timeout:?}");
    if actual.late > expected.late as f64 {
        println!(
            "verify: journeyd counted {} late events, the reference {}: journeyd's watermark moved past the simulated history \
             (idle for time.idle_timeout = {} before or while sim published?)",
            actual.late, expected.late, cfg.time.idle_timeout
        );
    }
    Ok(1)
}

fn mismatches(expected: &Truth, actual: &Scraped) -> usize {
    let mut bad = 0;
    for (model, stages) in &expected.stages {
        for (stage, n) in stages {
            let got = actual.stages.get(model).and_then(|m| m.get(stage)).copied().unwrap_or(0);
            if got != *n as i64 {
                bad += 1;
            }
        }
    }
    bad
}

/// (model, stage) in config order.
fn stages_in_order(cfg: &Config) -> impl Iterator<Item = (&str, &str)> {
    cfg.models.iter().flat_map(|m| m.stages.iter().map(move |s| (m.name.as_str(), s.as_str())))
}

fn count(t: &Truth, model: &str, stage: &str) -> u64 {
    t.stages.get(model).and_then(|m| m.get(stage)).copied().unwrap_or(0)
}

fn table(cfg: &Config, expected: &Truth, actual: &Scraped) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<16} {:<16} {:>10} {:>10}", "model", "stage", "expected", "journeyd");
    for (model, stage) in stages_in_order(cfg) {
        let n = count(expected, model, stage);
        let got = actual.stages.get(model).and_then(|m| m.get(stage)).copied().unwrap_or(0);
        let mark = if got == n as i64 { "" } else { "  <-- differs" };
        let _ = writeln!(s, "{model:<16} {stage:<16} {n:>10} {got:>10}{mark}");
    }
    let _ = writeln!(s, "{:<33} {:>10} {:>10}", "late events", expected.late, actual.late);
    let _ = writeln!(s, "{:<33} {:>10} {:>10}", "duplicates", expected.duplicates, actual.duplicates);
    let _ = writeln!(s, "{:<33} {:>10} {:>10}", "refused (dlq)", expected.dlq, actual.dlq);
    s
}

/// The truth as a small human-readable table, stages in config order.
pub(crate) fn truth_text(cfg: &Config, t: &Truth) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "customers {}, applied {}, refused {}, duplicates {}, late {}", t.customers, t.events, t.dlq, t.duplicates, t.late);
    let mut current = "";
    for (model, stage) in stages_in_order(cfg) {
        if model != current {
            let _ = writeln!(s, "{model}:");
            current = model;
        }
        let _ = writeln!(s, "  {stage:<16} {:>10}", count(t, model, stage));
    }
    s
}

pub(crate) async fn scrape(base: &str) -> anyhow::Result<Scraped> {
    match get(base, "/metrics").await? {
        (200, body) => Ok(parse_metrics(&body)),
        (status, body) => bail!("{base}/metrics answered HTTP {status}: {}", body.trim()),
    }
}

/// Reads the samples `verify` needs from Prometheus text format.
pub(crate) fn parse_metrics(text: &str) -> Scraped {
    let mut s = Scraped::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, labels, rest) = match line.find('{') {
            Some(open) => match line[open..].find('}') {
                Some(close) => (&line[..open], labels(&line[open + 1..open + close]), &line[open + close + 1..]),
                None => continue,
            },
            None => match line.split_once(' ') {
                Some((n, r)) => (n, Vec::new(), r),
                None => continue,
            },
        };
        let Some(value) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match name {
            "journey_customers" => {
                if let (Some(m), Some(st)) = (label("model"), label("stage")) {
                    s.stages.entry(m).or_default().insert(st, value as i64);
                }
            }
            // journeyd leaves the gauge at 0 until it has a watermark.
            "journey_watermark_seconds" if value > 0.0 => s.watermark = Some((value * 1000.0).round() as i64),
            "journey_late_events_total" => s.late += value,
            "journey_duplicates_total" => s.duplicates += value,
            "journey_dlq_total" => s.dlq += value,
            _ => {}
        }
    }
    s
}

/// `k="v",k2="v2"` with Prometheus escapes.
fn labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().skip_while(|c| *c == ',' || c.is_whitespace()).take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                c => value.push(c),
            }
        }
        out.push((key.trim().to_string(), value));
    }
}

/// A minimal HTTP/1.1 GET (journeyd's own endpoints only): status and body.
async fn get(base: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let rest = base.strip_prefix("http://").with_context(|| format!("`{base}`: only http:// URLs are supported"))?;
    let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let prefix = prefix.trim_end_matches('/');
    let target = if prefix.is_empty() { path.to_string() } else { format!("/{prefix}{path}") };
    let addr = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.with_context(|| format!("connecting to {addr}"))?;
        let request = format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.with_context(|| format!("GET {base}{path} timed out"))??;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = &raw[split + 4..];
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).context("malformed HTTP status line")?;
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked"));
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n").context("malformed chunk")?;
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).context("malformed chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(body.get(..size).context("truncated chunk")?);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stage_gauges_watermark_and_counters() {
        let text = "# HELP journey_customers x\n# TYPE journey_customers gauge\n\
            journey_customers{model=\"lifecycle\",stage=\"visitor\"} 12\n\
            journey_customers{model=\"lifecycle\",stage=\"loyal\"} 3\n\
            journey_watermark_seconds 1732233600.123\n\
            journey_late_events_total 2\n\
            journey_dlq_total{reason=\"not_json\"} 1\njourney_dlq_total{reason=\"oversized\"} 2\n";
        let s = parse_metrics(text);
        assert_eq!(s.stages["lifecycle"]["visitor"], 12);
        assert_eq!(s.stages["lifecycle"]["loyal"], 3);
        assert_eq!(s.watermark, Some(1_732_233_600_123));
        assert_eq!((s.late, s.dlq), (2.0, 3.0));
    }

    #[test]
    fn a_zero_watermark_gauge_means_none_yet() {
        assert_eq!(parse_metrics("journey_watermark_seconds 0\n").watermark, None);
    }

    #[test]
    fn label_values_unescape() {
        assert_eq!(labels(r#"a="x\"y",b="1\\2""#), vec![("a".into(), "x\"y".into()), ("b".into(), "1\\2".into())]);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(), b"abcde");
    }
}
