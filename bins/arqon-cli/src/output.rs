//! How results are written: aligned tables and plain lines for a person
//! at a terminal (colour only on a terminal, and not under `NO_COLOR`),
//! one JSON object per line otherwise.

use std::io::{self, IsTerminal, Write};

use serde_json::Value;

/// Human-readable or JSON lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

/// Where results go: stdout, in one format.
#[derive(Debug)]
pub struct Output {
    pub format: Format,
    color: bool,
}

impl Output {
    /// `--json` or `--human` when given, else human on a terminal and JSON
    /// lines otherwise.
    pub fn new(json: bool, human: bool) -> Self {
        let terminal = io::stdout().is_terminal();
        let format = if json {
            Format::Json
        } else if human || terminal {
            Format::Human
        } else {
            Format::Json
        };
        let color = format == Format::Human
            && terminal
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Self { format, color }
    }

    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// One JSON object on one line.
    pub fn json(&self, value: &Value) -> io::Result<()> {
        let mut out = io::stdout().lock();
        serde_json::to_writer(&mut out, value)?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// One line of text.
    pub fn line(&self, text: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        writeln!(out, "{text}")?;
        out.flush()
    }

    /// `text` in bold (headers), when colour is on.
    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    /// `text` dimmed (secondary details), when colour is on.
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    /// `text` in red, when colour is on.
    pub fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }

    /// `text` in green, when colour is on.
    pub fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// An aligned table: a header row, then `rows`. Columns listed in
    /// `right` are right-aligned (numbers).
    pub fn table(&self, header: &[&str], rows: &[Vec<String>], right: &[usize]) -> io::Result<()> {
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let render = |cells: Vec<String>| {
            let last = cells.len().saturating_sub(1);
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                if right.contains(&i) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i != last {
                        line.push_str(&" ".repeat(pad));
                    }
                }
                if i != last {
                    line.push_str("  ");
                }
            }
            line
        };
        let mut out = io::stdout().lock();
        let head = render(header.iter().map(|h| (*h).to_owned()).collect());
        writeln!(out, "{}", self.bold(&head))?;
        for row in rows {
            writeln!(out, "{}", render(row.clone()))?;
        }
        out.flush()
    }

    /// Aligned `key  value` lines.
    pub fn pairs(&self, pairs: &[(&str, String)]) -> io::Result<()> {
        let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = io::stdout().lock();
        for (key, value) in pairs {
            let padded = format!("{key:width$}");
            writeln!(out, "{}  {value}", self.dim(&padded))?;
        }
        out.flush()
    }
}

/// A JSON value for a human: strings without quotes, the rest compact.
pub fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}
