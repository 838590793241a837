//! Progress: a bar with rate and ETA on a terminal, plain log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use jsearch::{IndexEvent, IndexSummary};

/// Renders [`IndexEvent`]s on stderr.
pub struct Reporter {
    quiet: bool,
    bar: Option<ProgressBar>,
    started: Instant,
    last_log: Instant,
}

impl Reporter {
    /// A reporter; `quiet` keeps only problems.
    pub fn new(quiet: bool) -> Self {
        Reporter {
            quiet,
            bar: None,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    fn say(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Handles one event.
    pub fn event(&mut self, ev: IndexEvent) {
        match ev {
            IndexEvent::Planned {
                files,
                units,
                unchanged,
                to_remove,
            } => {
                self.started = Instant::now();
                if self.quiet {
                    return;
                }
                eprintln!(
                    "{files} file(s) to index ({units} item(s)), {unchanged} unchanged, {to_remove} to remove"
                );
                if std::io::stderr().is_terminal() && units > 0 {
                    let bar = ProgressBar::new(units as u64);
                    let style = ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} items {per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                    bar.set_style(style);
                    bar.enable_steady_tick(Duration::from_millis(200));
                    self.bar = Some(bar);
                }
            }
            IndexEvent::Progress { done, total, .. } => {
                if self.quiet {
                    return;
                }
                if let Some(b) = &self.bar {
                    // Items only: vectors (encoded, reused) are counted in the summary.
                    b.set_position(done as u64);
                } else if self.last_log.elapsed() >= Duration::from_secs(2) || done == total {
                    self.last_log = Instant::now();
                    let secs = self.started.elapsed().as_secs_f64().max(1e-3);
                    let rate = done as f64 / secs;
                    let eta = if rate > 0.0 {
                        (total - done) as f64 / rate
                    } else {
                        0.0
                    };
                    eprintln!(
                        "indexed {done}/{total} items ({:.0}%), {rate:.1} items/s, ETA {eta:.0}s",
                        100.0 * done as f64 / total.max(1) as f64
                    );
                }
            }
            IndexEvent::Problem { path, message } => {
                let p = path.display().to_string();
                let line = if message.contains(&p) {
                    format!("skipped: {message}")
                } else {
                    format!("skipped {p}: {message}")
                };
                self.say(&crate::output::printable(&line));
            }
        }
    }

    /// Clears the bar.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// One-line summary of a run.
pub fn summary_line(s: &IndexSummary) -> String {
    format!(
        "done in {:.1}s: {} indexed, {} updated, {} skipped (unchanged), {} removed, {} failed; {} vectors encoded, {} reused",
        s.elapsed, s.indexed, s.updated, s.skipped, s.removed, s.failed, s.encoded, s.reused
    )
}
