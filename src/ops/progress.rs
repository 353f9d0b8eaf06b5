//! Progress output: a spinner with elapsed time per step on a terminal (indicatif), plain lines
//! otherwise, nothing but the final JSON document with `--output json`.

use std::fmt::Display;
use std::future::Future;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::aws::Change;

/// One step as reported: the resource, what was (or would be) done, and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Kind of resource, e.g. `S3 bucket`.
    pub resource: String,
    /// Its name or ID.
    pub name: String,
    /// What was done (or, in a dry run, would be done).
    #[serde(flatten)]
    pub change: Change,
    /// Wall-clock time of the step.
    pub seconds: f64,
}

/// Reports steps as they run and keeps them for the summary.
pub struct Reporter {
    lines: bool,
    spinner: bool,
    /// The spinner of the running step and its label.
    current: Mutex<Option<(ProgressBar, String)>>,
    steps: Mutex<Vec<StepReport>>,
}

impl Reporter {
    /// Prints lines unless `json`; a spinner too when stderr is a terminal.
    pub fn new(json: bool) -> Reporter {
        Reporter {
            lines: !json,
            spinner: !json && std::io::stderr().is_terminal(),
            current: Mutex::new(None),
            steps: Mutex::new(Vec::new()),
        }
    }

    /// A reporter that prints nothing (for `status`, which shows its own table).
    pub fn silent() -> Reporter {
        Reporter { lines: false, spinner: false, current: Mutex::new(None), steps: Mutex::new(Vec::new()) }
    }

    /// Prints a line of text output (nothing in JSON mode).
    pub fn say(&self, line: impl Display) {
        if self.lines {
            match self.current.lock().ok().and_then(|c| c.clone()) {
                Some((bar, _)) => bar.println(line.to_string()),
                None => println!("{line}"),
            }
        }
    }

    /// Shows a note about the running step (e.g. a retry): in the spinner on a terminal, as
    /// an indented line otherwise.
    pub fn note(&self, note: impl Display) {
        if !self.lines {
            return;
        }
        match self.current.lock().ok().and_then(|c| c.clone()) {
            Some((bar, label)) => bar.set_message(format!("{label} ({note})")),
            None => println!("  {note}"),
        }
    }

    /// Runs one step: `work` observes, plans and (unless a dry run) applies, and returns the
    /// change it made or would make. The outcome is printed and recorded.
    pub async fn step<T>(
        &self,
        resource: &str,
        name: &str,
        dry_run: bool,
        work: impl Future<Output = anyhow::Result<(Change, T)>>,
    ) -> anyhow::Result<T> {
        let (seconds, result) = self.timed(resource, name, work).await;
        match result {
            Ok((change, value)) => {
                if self.lines {
                    println!("{resource} {name}: {} ({seconds:.1}s)", describe(&change, dry_run));
                }
                if let Ok(mut steps) = self.steps.lock() {
                    steps.push(StepReport { resource: resource.into(), name: name.into(), change, seconds });
                }
                Ok(value)
            }
            Err(e) => {
                if self.lines {
                    println!("{resource} {name}: FAILED ({seconds:.1}s)");
                }
                Err(e)
            }
        }
    }

    /// Runs `work` under a spinner (on a terminal) and prints `resource name: outcome (time)`
    /// with the outcome it returns; an error is printed as its message and returned.
    pub async fn task<T>(
        &self,
        resource: &str,
        name: &str,
        work: impl Future<Output = anyhow::Result<(String, T)>>,
    ) -> (f64, anyhow::Result<T>) {
        let (seconds, result) = self.timed(resource, name, work).await;
        if self.lines {
            match &result {
                Ok((outcome, _)) => println!("{resource} {name}: {outcome} ({seconds:.1}s)"),
                Err(e) => println!("{resource} {name}: FAILED ({seconds:.1}s): {e:#}"),
            }
        }
        (seconds, result.map(|(_, v)| v))
    }

    async fn timed<T>(&self, resource: &str, name: &str, work: impl Future<Output = T>) -> (f64, T) {
        let start = Instant::now();
        if self.spinner {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
                bar.set_style(style);
            }
            let label = format!("{resource} {name}");
            bar.set_message(label.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            if let Ok(mut c) = self.current.lock() {
                *c = Some((bar, label));
            }
        }
        let result = work.await;
        if let Some((bar, _)) = self.current.lock().ok().and_then(|mut c| c.take()) {
            bar.finish_and_clear();
        }
        (start.elapsed().as_secs_f64(), result)
    }

    /// The steps reported so far.
    pub fn steps(&self) -> Vec<StepReport> {
        self.steps.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The outcome of a change in words.
pub fn describe(change: &Change, dry_run: bool) -> String {
    match (change, dry_run) {
        (Change::Create, false) => "created".into(),
        (Change::Create, true) => "would create".into(),
        (Change::Update(c), false) => format!("updated: {}", c.join("; ")),
        (Change::Update(c), true) => format!("would update: {}", c.join("; ")),
        (Change::Delete, false) => "removed".into(),
        (Change::Delete, true) => "would remove".into(),
        (Change::Unchanged, _) => "up to date".into(),
    }
}
