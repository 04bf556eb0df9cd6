//! core's modules form layers: each imports only from its own layer and those below, and no two
//! modules import each other, directly or round a circle. Checked over every `crate::` and
//! `super::` path in `core/src` (use lines, groups included, and paths written inline; test
//! code too; comments left out).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// core's top-level modules from the lowest layer up; those on one line share a layer.
/// vcoord-api's re-exports (`cpuset`, `params`, `placement`, `stats`, `units`, `vcoord_api`)
/// are below them all.
const LAYERS: &[&[&str]] = &[
    &[
        "cpuset",
        "params",
        "placement",
        "stats",
        "units",
        "vcoord_api",
    ],
    &["show", "source", "trust", "limits"],
    &["vmcontrol"],
    &["model"],
    &["policy"],
    &["plugin"],
    &["backend"],
    &["config"],
    &["runtime"],
    &["service"],
    &["tools"],
];

fn layer_of(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| panic!("module `{top}` is in no layer: add it to LAYERS"))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file is: `runtime/guard.rs` is `["runtime", "guard"]`, `runtime/mod.rs` is
/// `["runtime"]`, `lib.rs` is `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The text of a file without its comments (doc links name modules without importing them).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string (a URL) is rare in core; a line is cut at its first.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a use tree names, each as its segments: `a::{b, c::d}` is `a::b` and `a::c::d`.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree
            .split(" as ")
            .next()
            .unwrap()
            .split("::")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()];
    };
    let prefix: Vec<String> = tree[..open]
        .split("::")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(expand)
        .map(|rest| {
            let mut p = prefix.clone();
            p.extend(rest.into_iter().filter(|s| s != "self"));
            p
        })
        .collect()
}

/// The modules (as paths from the crate root) that `code`, the code of module `me`, refers to.
fn references(code: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // Use statements, whole (they may span lines and hold groups).
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let line_start = rest[..at].rfind('\n').map_or(0, |i| i + 1);
        let lead = rest[line_start..at].trim();
        let after = &rest[at + 4..];
        let end = after.find(';').unwrap_or(after.len());
        rest = &after[end.min(after.len())..];
        if !(lead.is_empty() || lead.starts_with("pub")) {
            continue; // `use` inside a word or a sentence, not a statement
        }
        for path in expand(&after[..end]) {
            match path.first().map(String::as_str) {
                Some("crate") => out.push(path[1..].to_vec()),
                Some("super") => {
                    let mut p = me[..me.len().saturating_sub(1)].to_vec();
                    p.extend(path[1..].iter().cloned());
                    out.push(p);
                }
                _ => {}
            }
        }
    }
    // Paths written inline.
    for (i, _) in code.match_indices("crate::") {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `vcoord_crate::`, not ours
        }
        let path: Vec<String> = code[i + 7..]
            .split("::")
            .map(|s| {
                s.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|s| !s.is_empty())
            .collect();
        out.push(path);
    }
    out
}

#[test]
fn core_imports_only_downward_and_in_no_circle() {
    let src = common::root().join("core/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    // The module a path lands in: its longest prefix that is a file's module, cut to two
    // segments (`runtime::guard`, not the types inside it).
    let landing = |path: &[String]| -> Option<Vec<String>> {
        (1..=path.len().min(2))
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains(p) || LAYERS[0].contains(&p[0].as_str()))
    };
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut upward = Vec::new();
    let mut checked = 0;
    for file in &files {
        let me = module_of(&src, file);
        if me.is_empty() {
            continue; // lib.rs declares and re-exports
        }
        let from: Vec<String> = me.iter().take(2).cloned().collect();
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for path in references(&code, &me) {
            let Some(to) = landing(&path) else { continue };
            checked += 1;
            // A module and its own parent or children are one unit.
            if to[0] == from[0] && (to.len() == 1 || from.len() == 1 || to == from) {
                continue;
            }
            if layer_of(&to[0]) > layer_of(&from[0]) {
                upward.push(format!(
                    "{} imports {} (layer {} from layer {})",
                    file.strip_prefix(&src).unwrap().display(),
                    path.join("::"),
                    layer_of(&to[0]),
                    layer_of(&from[0])
                ));
            }
            edges.entry(from.clone()).or_default().insert(to);
        }
    }
    assert!(
        checked > 200,
        "only {checked} paths found: the parser is broken"
    );
    assert!(
        upward.is_empty(),
        "imports from a lower layer up:\n{}",
        upward.join("\n")
    );
    // No circle: a depth-first walk finds no edge back to a module still on its path.
    fn walk(
        at: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        path: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<String> {
        if let Some(i) = path.iter().position(|p| p == at) {
            let mut circle: Vec<String> = path[i..].iter().map(|p| p.join("::")).collect();
            circle.push(at.join("::"));
            return Some(circle.join(" -> "));
        }
        if !done.insert(at.clone()) {
            return None;
        }
        path.push(at.clone());
        for next in edges.get(at).into_iter().flatten() {
            if let Some(circle) = walk(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for start in edges.keys() {
        if let Some(circle) = walk(start, &edges, &mut Vec::new(), &mut done) {
            panic!("core's modules import each other in a circle: {circle}");
        }
    }
}

/// The checker itself finds what it must: groups, `super::`, inline paths, and not comments.
#[test]
fn the_import_reader_reads_groups_super_and_inline_paths() {
    let me = vec!["runtime".to_owned(), "guard".to_owned()];
    let code = code_of(
        "use crate::{config::{A, B}, model};\nuse super::snapshot::Snapshot;\n\
         // crate::tools::bench in a comment\nfn f() { crate::backend::open(); }\n",
    );
    let found: BTreeSet<String> = references(&code, &me)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    for want in [
        "config::A",
        "config::B",
        "model",
        "runtime::snapshot::Snapshot",
        "backend::open",
    ] {
        assert!(found.contains(want), "{want} not in {found:?}");
    }
    assert!(!found.iter().any(|p| p.starts_with("tools")), "{found:?}");
}
