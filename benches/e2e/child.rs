//! Measurements that need a fresh process: resident memory (a heap that
//! earlier scenarios grew and freed would hide growth) and replays whose peak
//! memory is reported. The bench re-runs its own executable with the task in
//! `JOURNEYD_BENCH_TASK`; the child prints one result line that the parent reads.

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::{Command, Stdio};

const TASK_VAR: &str = "JOURNEYD_BENCH_TASK";
const RESULT_PREFIX: &str = "JOURNEYD_BENCH_RESULT ";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// Customers with `events_per_customer` events each (of `example`'s mix,
    /// under its config) through two shards on two threads.
    ShardMemory {
        customers: u32,
        events_per_customer: u32,
        #[serde(default)]
        example: crate::Example,
    },
    /// Customers with two ids each through the identity resolver.
    ResolverMemory { customers: u32 },
    /// One shard on one thread: warm `customers`, then time random events.
    Engine { customers: u32, seconds: f64 },
    /// `journeyd::replay::replay` of an NDJSON file with `shards` shards.
    Replay { path: PathBuf, shards: usize },
}

/// The task this process was started for, if it is a child.
pub fn task() -> Option<Task> {
    let text = std::env::var(TASK_VAR).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{TASK_VAR} is not a task: {e}")))
}

/// Prints a child's result for the parent.
pub fn reply<R: Serialize>(result: &R) {
    println!("{RESULT_PREFIX}{}", serde_json::to_string(result).expect("a plain struct serializes"));
}

/// Runs `task` in a child process and returns its result.
pub fn run<R: DeserializeOwned>(task: &Task) -> anyhow::Result<R> {
    run_with_env(task, &[])
}

/// Runs `task` in a child process with `env` added to its environment.
pub fn run_with_env<R: DeserializeOwned>(task: &Task, env: &[(&str, &str)]) -> anyhow::Result<R> {
    let exe = std::env::current_exe().context("locating the bench executable")?;
    let out = Command::new(exe)
        .envs(env.iter().copied())
        .env(TASK_VAR, serde_json::to_string(task)?)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running child task {task:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("child task {task:?} failed with {}", out.status);
    }
    let line = stdout.lines().find_map(|l| l.strip_prefix(RESULT_PREFIX)).with_context(|| format!("child task {task:?} printed no result"))?;
    serde_json::from_str(line).with_context(|| format!("reading the result of {task:?}"))
}
