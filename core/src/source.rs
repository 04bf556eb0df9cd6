//! Errors that point into a TOML file: `file:line:col: key: message`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// An error located in a text file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The file.
    pub path: PathBuf,
    /// 1-based line and column, when known.
    pub line_col: Option<(usize, usize)>,
    /// Dotted key at fault, when known.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl Located {
    /// An error about `key`, at `span` of `text` when known.
    pub fn new(
        path: &Path,
        text: &str,
        span: Option<Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            line_col: span.map(|s| line_col(text, s.start)),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Wraps a TOML parse or type error, naming the key written where it points (its table
    /// and its name: `host.cpu_policy.decide_budget_ms`) when there is one.
    pub fn from_toml(path: &Path, text: &str, err: &toml::de::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            line_col: err.span().map(|s| line_col(text, s.start)),
            key: err
                .span()
                .and_then(|s| key_at(text, s.start))
                .unwrap_or_default(),
            message: err.message().trim().to_string(),
        }
    }
}

/// The longest message shown; past it, the middle is cut (a bad value can be megabytes).
pub const MAX_MESSAGE_CHARS: usize = 300;

/// `text` cut to [`MAX_MESSAGE_CHARS`], saying how much was left out.
pub fn shorten(text: &str) -> String {
    let n = text.chars().count();
    if n <= MAX_MESSAGE_CHARS {
        return text.to_owned();
    }
    let keep = MAX_MESSAGE_CHARS / 2;
    let head: String = text.chars().take(keep).collect();
    let tail: String = text.chars().skip(n - keep).collect();
    format!("{head}... ({} characters left out) ...{tail}", n - 2 * keep)
}

/// The dotted key whose `key = value` line holds byte `offset` of `text`, with the table
/// header above it (`[[host]]` and `[host.cpu_policy]` give `host.cpu_policy.key`).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let (name, _) = line.split_once('=')?;
    let name = name.trim().trim_matches('"');
    if name.is_empty() || name.starts_with('[') || line_start + line.find('=')? > offset {
        return None;
    }
    let table = text[..line_start].lines().rev().find_map(|l| {
        let t = l.trim();
        t.starts_with('[').then(|| {
            t.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{name}"),
        _ => name.to_owned(),
    })
}

/// Where `key` (a dotted path such as `duration_s`, `host.memory_mib` or `vm[2].cpu`, as
/// validation names it) is written in TOML `text`: the key of its line in its table, else the
/// table's header. `None` when neither is found (the key was left to its default).
pub fn find_key(text: &str, key: &str) -> Option<Range<usize>> {
    let (table, index, field) = split_key(key);
    // Lines with their byte offsets.
    let mut offset = 0;
    let lines: Vec<(usize, &str)> = text
        .split_inclusive('\n')
        .map(|l| {
            let at = offset;
            offset += l.len();
            (at, l)
        })
        .collect();
    let header = |l: &str| l.trim_start().starts_with('[');
    // The lines of the table: after its header (the index-th for arrays of tables) up to the
    // next header; the top level runs up to the first header.
    let (start, header_span) = match table {
        None => (0, None),
        Some(name) => {
            let single = format!("[{name}]");
            let array = format!("[[{name}]]");
            let mut seen = 0;
            let mut found = None;
            for (i, (at, l)) in lines.iter().enumerate() {
                let t = l.trim();
                let matches = match index {
                    Some(_) => t.starts_with(&array),
                    None => t.starts_with(&single),
                };
                if matches {
                    if index.is_none_or(|n| n == seen) {
                        let col = l.len() - l.trim_start().len();
                        found = Some((i + 1, Some(at + col..at + col + t.len())));
                        break;
                    }
                    seen += 1;
                }
            }
            found?
        }
    };
    for (at, l) in lines.iter().skip(start) {
        if header(l) {
            break;
        }
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix(field) {
            if rest.trim_start().starts_with('=') {
                let col = l.len() - t.len();
                return Some(at + col..at + col + field.len());
            }
        }
    }
    header_span
}

/// `vm[2].cpu` -> (Some("vm"), Some(2), "cpu"); `host.pcpus` -> (Some("host"), None, "pcpus");
/// `duration_s` -> (None, None, "duration_s"). Indices on the field (`memory[1]`) are dropped.
fn split_key(key: &str) -> (Option<&str>, Option<usize>, &str) {
    let (table, field) = match key.split_once('.') {
        Some((t, f)) => (Some(t), f),
        None => (None, key),
    };
    let field = field.split(['[', '.']).next().unwrap_or(field);
    match table {
        None => (None, None, field),
        Some(t) => match t.split_once('[') {
            Some((name, rest)) => (Some(name), rest.trim_end_matches(']').parse().ok(), field),
            None => (Some(t), None, field),
        },
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, col)) = self.line_col {
            write!(f, ":{line}:{col}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", shorten(&self.message))
    }
}

impl std::error::Error for Located {}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_in_their_tables() {
        let text = "name = \"x\"\nduration_s = 5\n[host]\npcpus = 2\n[[vm]]\nname = \"a\"\n[[vm]]\nname = \"b\"\ncount = 0\n";
        let line = |key: &str| find_key(text, key).map(|s| line_col(text, s.start));
        assert_eq!(line("duration_s"), Some((2, 1)));
        assert_eq!(line("host.pcpus"), Some((4, 1)));
        assert_eq!(line("vm[1].count"), Some((9, 1)));
        assert_eq!(line("vm[0].name"), Some((6, 1)));
        // Not written (a default): the table's header.
        assert_eq!(line("vm[0].count"), Some((5, 1)));
        assert_eq!(line("host.memory_mib"), Some((3, 1)));
        assert_eq!(line("vm[1].memory[2]"), Some((7, 1)));
        assert_eq!(line("seed"), None);
    }

    #[test]
    fn type_errors_name_their_key_and_long_values_are_cut() {
        let text = "[[host]]\nname = \"a\"\n[host.cpu_policy]\ndecide_budget_ms = \"fast\"\n";
        assert_eq!(
            key_at(text, text.find("\"fast").unwrap()).as_deref(),
            Some("host.cpu_policy.decide_budget_ms")
        );
        assert_eq!(key_at("x = 1\n", 0), None);
        let long = "v".repeat(1 << 20);
        let e = Located::new(Path::new("x.toml"), "", None, "k", format!("bad `{long}`"));
        let shown = e.to_string();
        assert!(
            shown.len() < 400 && shown.contains("characters left out"),
            "{}",
            shown.len()
        );
    }

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 11), (2, 6));
    }

    #[test]
    fn display_has_file_line_col_key() {
        let e = Located::new(Path::new("x.toml"), "a = 1\nb = 2", Some(6..7), "b", "bad");
        assert_eq!(e.to_string(), "x.toml:2:1: `b`: bad");
    }
}
