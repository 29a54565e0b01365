//! `journeyd demo --duration 20s`: the showcase runs by itself end to end — it
//! starts its own nats-server and journeyd, publishes simulated traffic, shows the
//! live view, and stops after the duration with exit status 0 and a final screen
//! that holds the lifecycle stages, the top transitions and the channel effect.

mod common;

use common::{describe_status, free_addr, nats_server_bin, tail, POLL_INTERVAL};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `--duration 20s`, plus building the traffic, starting nats-server and draining.
const DEADLINE: Duration = Duration::from_secs(90);

#[test]
fn demo_with_a_duration_ends_by_itself_and_shows_stages_transitions_and_channel_effect() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::Builder::new().prefix("journeyd-demo-").tempdir().expect("a temporary directory");
    let (stdout_path, stderr_path) = (out.path().join("stdout"), out.path().join("stderr"));
    let stdout = std::fs::File::create(&stdout_path).expect("create the stdout file");
    let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
    let listen = free_addr();

    // The default config is examples/retail.toml, relative to the crate root.
    let mut demo = Command::new(env!("CARGO_BIN_EXE_journeyd"))
        .args(["demo", "--duration", "20s", "--customers", "3000", "--listen", &listen])
        .current_dir(root)
        .env("NATS_SERVER_BIN", nats_server_bin())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn journeyd demo");

    let started = Instant::now();
    let status = loop {
        if let Some(status) = demo.try_wait().expect("try_wait on journeyd demo") {
            break Some(status);
        }
        if started.elapsed() >= DEADLINE {
            let _ = demo.kill();
            let _ = demo.wait();
            break None;
        }
        std::thread::sleep(POLL_INTERVAL * 10);
    };
    let stdout = std::fs::read_to_string(&stdout_path).expect("read the demo's stdout");
    let stderr = std::fs::read_to_string(&stderr_path).expect("read the demo's stderr");
    let shown = format!("--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}", tail(&stdout, 60), tail(&stderr, 30));
    let status = status.unwrap_or_else(|| panic!("journeyd demo --duration 20s still ran after {DEADLINE:?}\n{shown}"));
    assert!(status.success(), "journeyd demo exited with {}\n{shown}", describe_status(status));
    eprintln!("journeyd demo --duration 20s finished in {:.1}s", started.elapsed().as_secs_f64());

    // The final screen comes after the last live one: check that one.
    let last_screen = stdout.rfind("journeyd demo ").map_or(stdout.as_str(), |i| &stdout[i..]);
    let config = journeyd::config::load(&root.join("examples/retail.toml")).unwrap_or_else(|e| panic!("{e}")).config;
    let lifecycle = config.models.iter().find(|m| m.name == "lifecycle").expect("examples/retail.toml has the lifecycle model");
    let table = stage_table(last_screen, "lifecycle").unwrap_or_else(|| panic!("no lifecycle stage table in the final screen\n{shown}"));
    for stage in &lifecycle.stages {
        assert!(table.iter().any(|(s, _)| s == stage), "stage {stage} missing from the lifecycle table {table:?}\n{shown}");
    }
    assert!(table.iter().map(|(_, n)| n).sum::<i64>() > 0, "no customers in the lifecycle table {table:?}\n{shown}");
    for heading in ["top transitions", "channel effect", "triggers"] {
        assert!(last_screen.contains(heading), "no {heading:?} in the final screen\n{shown}");
    }

    let events_in_all = number_before(last_screen, "events in all").unwrap_or_else(|| panic!("no \"events in all\" count in the final screen\n{shown}"));
    assert!(events_in_all > 0.0, "the final screen counts no events\n{shown}");
    let finished = stdout.lines().find(|l| l.starts_with("demo finished")).unwrap_or_else(|| panic!("no \"demo finished\" line\n{shown}"));
    let published = finished.split_whitespace().find_map(|w| w.parse::<u64>().ok()).unwrap_or_else(|| panic!("no event count in {finished:?}"));
    assert!(published > 0, "{finished:?}\n{shown}");
}

/// The rows `  <stage> <customers> ...` under the line naming `model`, up to the
/// next blank line.
fn stage_table(screen: &str, model: &str) -> Option<Vec<(String, i64)>> {
    let mut lines = screen.lines().skip_while(|l| l.trim() != model);
    lines.next()?;
    let rows: Vec<(String, i64)> = lines
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.parse().ok()?))
        })
        .collect();
    (!rows.is_empty()).then_some(rows)
}

/// The number just before `label` on the first line that has it.
fn number_before(screen: &str, label: &str) -> Option<f64> {
    let line = screen.lines().find(|l| l.contains(label))?;
    line[..line.find(label)?].split_whitespace().last()?.parse().ok()
}
