//! Terminal conventions: when to colour (`--color`, `NO_COLOR`) and how wide a table may be.

use std::io::IsTerminal;
use std::sync::OnceLock;

/// `--color`: when to colour the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// When stdout is a terminal, `NO_COLOR` is unset or empty and `TERM` is not `dumb`.
    Auto,
    /// Always (also into pipes, e.g. `| less -R`).
    Always,
    /// Never.
    Never,
}

static COLOR: OnceLock<bool> = OnceLock::new();

/// Decides once, from the flag and the environment, whether stdout is coloured.
pub fn init(choice: ColorChoice) {
    let on = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
                && std::io::stdout().is_terminal()
        }
    };
    let _ = COLOR.set(on);
}

/// Whether stdout is coloured.
pub fn enabled() -> bool {
    COLOR.get().copied().unwrap_or(false)
}

/// A style of the table (ANSI SGR codes, as ripgrep colours paths, line numbers and matches).
#[derive(Debug, Clone, Copy)]
pub enum Paint {
    /// Column headers.
    Header,
    /// Paths and ids.
    Path,
    /// Line ranges.
    Lines,
    /// A score at or above the default cut (probably relevant).
    Good,
    /// A score below it.
    Weak,
    /// Secondary text (snippets, attributes).
    Dim,
}

impl Paint {
    fn code(self) -> &'static str {
        match self {
            Paint::Header => "1",
            Paint::Path => "35",
            Paint::Lines => "32",
            Paint::Good => "1;32",
            Paint::Weak => "33",
            Paint::Dim => "2",
        }
    }

    /// `s` in this style when colour is on (`s` is already padded: escapes add no width).
    pub fn paint(self, s: &str) -> String {
        if enabled() && !s.is_empty() {
            format!("\x1b[{}m{s}\x1b[0m", self.code())
        } else {
            s.to_string()
        }
    }
}

/// Width of a table row in characters: `$COLUMNS` when set, else the terminal's width when
/// stdout is one, else `None` (no limit: pipes get whole titles).
pub fn width() -> Option<usize> {
    if let Some(c) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c > 0)
    {
        return Some(c.max(40));
    }
    if std::io::stdout().is_terminal() {
        return console::Term::stdout()
            .size_checked()
            .map(|(_, w)| usize::from(w).max(40));
    }
    None
}
