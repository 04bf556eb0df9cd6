//! Names from outside (domain names from libvirt, host names from a configuration) shown to a
//! person: control characters escaped, so a name cannot forge a log line, recolour a terminal
//! or break a table; long names cut to a column.

use std::fmt;

/// `name` with every control character escaped as Rust writes it (`\n`, `\u{1b}`); other
/// characters as they are.
pub fn shown(name: &str) -> Shown<'_> {
    Shown(name)
}

/// See [`shown`].
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(char::is_control) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(f, "{}", c.escape_debug())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
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
        if c.is_control() && c != '\t' && !(keep_escapes && c == '\u{1b}') {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out.push_str(end);
    out
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
}
