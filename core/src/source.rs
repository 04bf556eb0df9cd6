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

    /// Wraps a TOML parse or type error.
    pub fn from_toml(path: &Path, text: &str, err: &toml::de::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            line_col: err.span().map(|s| line_col(text, s.start)),
            key: String::new(),
            message: err.message().trim().to_string(),
        }
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
        write!(f, ": {}", self.message)
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
