//! Names from outside (domain names from libvirt, host names from a configuration) shown to a
//! person: control characters and the invisible characters that reorder text (bidirectional
//! overrides such as U+202E) escaped, one way everywhere (`\n`, `\u{202e}`), so a name cannot
//! forge a log line, recolour a terminal, reverse what follows it or break a table; a name
//! longer than [`MAX_SHOWN`] characters is cut (one name never floods a log); long names cut
//! to a column.

use std::fmt;

/// Most characters of a name shown; the rest is said as a count.
pub const MAX_SHOWN: usize = 256;

/// Whether `c` is escaped when shown: control characters, and the format characters that
/// reorder or hide text (bidirectional embeddings, overrides and isolates, the directional
/// marks, zero-width joiners and the byte-order mark).
pub fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `name` with every [`hidden`] character escaped as Rust writes it (`\n`, `\u{202e}`), cut
/// after [`MAX_SHOWN`] characters; other characters as they are.
pub fn shown(name: &str) -> Shown<'_> {
    Shown(name)
}

/// See [`shown`].
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cut = self.0.char_indices().nth(MAX_SHOWN).map(|(i, _)| i);
        let (mut rest, left) = match cut {
            Some(i) => (&self.0[..i], self.0[i..].chars().count()),
            None => (self.0, 0),
        };
        while let Some(at) = rest.find(hidden) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            f.write_str(&escaped(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)?;
        if left > 0 {
            write!(f, "... ({left} more characters)")?;
        }
        Ok(())
    }
}

/// `name`, shown, in at most `width` characters: a longer one keeps its head and tail with `~`
/// between them (VM names often differ only at the end: `web-frontend-prod-07`).
pub fn fit(name: &str, width: usize) -> String {
    let text = shown(name).to_string();
    let n = text.chars().count();
    if n <= width || width < 3 {
        return text;
    }
    let tail = (width - 1) / 2;
    let head = width - 1 - tail;
    let mut out: String = text.chars().take(head).collect();
    out.push('~');
    out.extend(text.chars().skip(n - tail));
    out
}

/// `text` (a whole log line or message) with control characters escaped, except tabs and the
/// one newline that ends it. With `keep_escapes`, ESC is kept too (the log's own colours on a
/// terminal; names in fields are escaped where they are logged).
pub fn one_line(text: &str, keep_escapes: bool) -> String {
    let (body, end) = match text.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (text, ""),
    };
    let mut out = String::with_capacity(text.len());
    for c in body.chars() {
        if hidden(c) && c != '\t' && !(keep_escapes && c == '\u{1b}') {
            out.push_str(&escaped(c));
        } else {
            out.push(c);
        }
    }
    out.push_str(end);
    out
}

/// `c` escaped the one way names and lines are: `\n`, `\t`, `\r` and `\\` as Rust writes
/// them, every other hidden character as `\u{hex}`.
fn escaped(c: char) -> String {
    match c {
        '\n' => "\\n".into(),
        '\t' => "\\t".into(),
        '\r' => "\\r".into(),
        c => format!("\\u{{{:x}}}", c as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(shown("web-01").to_string(), "web-01");
        assert_eq!(
            shown("evil\u{1b}[31mRED\u{7}\nfake").to_string(),
            "evil\\u{1b}[31mRED\\u{7}\\nfake"
        );
        assert_eq!(shown("café\r").to_string(), "café\\r");
    }

    #[test]
    fn long_names_keep_head_and_tail() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("web-frontend-prod-07", 11), "web-f~od-07");
        assert_eq!(fit("web-frontend-prod-07", 11).chars().count(), 11);
        assert_eq!(fit("a\nb", 10), "a\\nb");
    }

    #[test]
    fn a_log_line_stays_one_line() {
        assert_eq!(one_line("vm=a\nb x\n", false), "vm=a\\nb x\n");
        assert_eq!(
            one_line("\u{1b}[1mINFO\u{1b}[0m a\tb\n", true),
            "\u{1b}[1mINFO\u{1b}[0m a\tb\n"
        );
        assert_eq!(one_line("\u{1b}[1m\n", false), "\\u{1b}[1m\n");
    }

    /// Text that reorders what follows it, and a name of a megabyte, are shown harmless.
    #[test]
    fn reordering_characters_are_escaped_and_long_names_cut() {
        assert_eq!(shown("vm\u{202e}gpj.exe").to_string(), "vm\\u{202e}gpj.exe");
        assert_eq!(one_line("a\u{2066}b\n", false), "a\\u{2066}b\n");
        let long = "x".repeat(1 << 20);
        let s = shown(&long).to_string();
        assert!(s.len() < 400, "{} bytes", s.len());
        assert!(s.ends_with(&format!("... ({} more characters)", (1 << 20) - MAX_SHOWN)));
    }
}
