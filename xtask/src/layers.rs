//! The tree's shape, checked: which files import which (every `crate::`, `super::` and `self::`
//! path, in `use` lines or inline, outside `#[cfg(test)] mod tests`), that no import goes up the
//! core's layers, that no files import each other in a circle, and that no source file passes
//! 600 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The most lines a Rust source file may have.
pub const MAX_LINES: usize = 600;

/// The core's layers, bottom first: a module may import only from its own layer or below.
pub const CORE_LAYERS: &[(&str, usize)] = &[
    ("error", 0),
    ("config", 0),
    ("backend", 0),
    ("counters", 0),
    ("tokenizer", 0),
    ("formats", 1),
    ("kernels", 2),
    ("probe", 2),
    ("model", 3),
    ("runtime", 4),
    ("eval", 5),
];

/// A crate's files by module path (`model::routing`), with their source.
pub type Files = BTreeMap<String, String>;

/// Reads every `.rs` file under `src` (a crate's `src/`), keyed by module path; `lib.rs` and
/// `main.rs` are the root (`""`), `a/mod.rs` is `a`.
pub fn read_crate(src: &Path) -> std::io::Result<Files> {
    let mut files = Files::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.insert(module_of(src, &path), std::fs::read_to_string(&path)?);
            }
        }
    }
    Ok(files)
}

fn module_of(src: &Path, file: &Path) -> String {
    let rel: PathBuf = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The source without its `#[cfg(test)] mod tests` block and comment lines.
fn code_of(source: &str) -> String {
    let body = source
        .find("#[cfg(test)]\nmod tests")
        .map_or(source, |i| &source[..i]);
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expands `use` groups: `crate::a::{b, c::{d, e}}` → `crate::a::b`, `crate::a::c::d`, ...
fn expand(path: &str, out: &mut Vec<String>) {
    let Some(open) = path.find('{') else {
        out.push(path.trim().trim_end_matches("::").to_owned());
        return;
    };
    let prefix = &path[..open];
    let inner = &path[open + 1..path.rfind('}').unwrap_or(path.len())];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&format!("{prefix}{}", inner[start..i].trim()), out);
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = inner[start..].trim();
    if !last.is_empty() {
        expand(&format!("{prefix}{last}"), out);
    }
}

/// Every module path `code` (of module `module`) names, as written (`crate::x`, `super::y`,
/// `self::z`, or a `use` of a child module).
fn paths(module: &str, code: &str, files: &Files) -> Vec<String> {
    let mut found = Vec::new();
    // `use` statements (at the start of a line), groups expanded.
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let line = line.trim_start();
        let Some(start) = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|p| line.strip_prefix(p))
        else {
            continue;
        };
        let mut statement = start.to_owned();
        while !statement.contains(';') {
            match lines.next() {
                Some(more) => statement.push_str(more),
                None => break,
            }
        }
        let statement: String = statement
            .split(';')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let mut expanded = Vec::new();
        expand(&statement, &mut expanded);
        for p in expanded {
            let p = p.split(" as ").next().unwrap_or(&p).trim().to_owned();
            let first = p.split("::").next().unwrap_or("");
            let child = if module.is_empty() {
                first.to_owned()
            } else {
                format!("{module}::{first}")
            };
            if matches!(first, "crate" | "super" | "self") {
                found.push(p);
            } else if files.contains_key(&child) {
                found.push(format!("self::{p}"));
            }
        }
    }
    // Inline paths: from the crate, the parent or this module, or into a child module.
    let children: Vec<String> = files
        .keys()
        .filter_map(|m| {
            let rest = if module.is_empty() {
                Some(m.as_str())
            } else {
                m.strip_prefix(module)?.strip_prefix("::")
            };
            rest.filter(|r| !r.is_empty() && !r.contains("::"))
                .map(|r| format!("{r}::"))
        })
        .collect();
    for child in &children {
        let mut from = 0;
        while let Some(i) = code[from..].find(child.as_str()) {
            let at = from + i;
            from = at + child.len();
            if !code[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            {
                found.push(format!("self::{child}"));
            }
        }
    }
    for anchor in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(anchor) {
            let at = from + i;
            from = at + anchor.len();
            if code[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            {
                continue;
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            found.push(path);
        }
    }
    found
}

/// The file (module path) a written path lands in: the longest existing module prefix.
fn resolve(module: &str, path: &str, files: &Files) -> Option<String> {
    let mut parts: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let mut segments = path.split("::").filter(|s| !s.is_empty()).peekable();
    match segments.peek().copied() {
        Some("crate") => {
            parts.clear();
            segments.next();
        }
        Some("self") => {
            segments.next();
        }
        Some("super") => {
            while segments.peek() == Some(&"super") {
                segments.next();
                parts.pop();
            }
        }
        _ => return None,
    }
    let mut best = None;
    let mut current = parts.join("::");
    if files.contains_key(&current) {
        best = Some(current.clone());
    }
    for s in segments {
        current = if current.is_empty() {
            s.to_owned()
        } else {
            format!("{current}::{s}")
        };
        if files.contains_key(&current) {
            best = Some(current.clone());
        } else {
            break;
        }
    }
    best
}

/// Which files each file imports (itself and the crate root left out).
pub fn imports(files: &Files) -> BTreeMap<String, BTreeSet<String>> {
    files
        .iter()
        .map(|(module, source)| {
            let code = code_of(source);
            let targets = paths(module, &code, files)
                .iter()
                .filter_map(|p| resolve(module, p, files))
                .filter(|t| t != module && !t.is_empty())
                .collect();
            (module.clone(), targets)
        })
        .collect()
}

/// Imports that go up `layers` (by a module's first segment), as `from → to`.
pub fn upward(graph: &BTreeMap<String, BTreeSet<String>>, layers: &[(&str, usize)]) -> Vec<String> {
    let layer = |m: &str| {
        let top = m.split("::").next().unwrap_or("");
        layers
            .iter()
            .find(|(name, _)| *name == top)
            .map(|(_, l)| *l)
    };
    let mut bad = Vec::new();
    for (from, targets) in graph {
        for to in targets {
            if let (Some(a), Some(b)) = (layer(from), layer(to))
                && b > a
            {
                bad.push(format!("{from} (layer {a}) imports {to} (layer {b})"));
            }
        }
    }
    bad
}

/// One circle of imports between files, if there is any.
pub fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // 0: unvisited, 1: on the path, 2: done
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut found = path[start..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                0 => {
                    if let Some(found) = visit(next, graph, state, path) {
                        return Some(found);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0
            && let Some(found) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_files(path: &str) -> Files {
        read_crate(&crate::root().join(path)).expect("reading the crate")
    }

    #[test]
    fn the_core_imports_only_downward_and_in_no_circle() {
        let files = crate_files("crates/switchscope-core/src");
        let graph = imports(&files);
        assert!(
            graph["model::routing"].contains("kernels::reference"),
            "the graph sees imports: {:?}",
            graph["model::routing"]
        );
        let bad = upward(&graph, CORE_LAYERS);
        assert!(bad.is_empty(), "imports up the layers:\n{}", bad.join("\n"));
        assert_eq!(circle(&graph), None);
        for module in files.keys().filter(|m| !m.is_empty()) {
            let top = module.split("::").next().unwrap_or("");
            assert!(
                CORE_LAYERS.iter().any(|(name, _)| *name == top),
                "{module} is in no layer"
            );
        }
    }

    #[test]
    fn the_cli_the_wire_types_and_the_web_app_have_no_circle() {
        for path in [
            "crates/switchscope-cli/src",
            "crates/switchscope-wire/src",
            "web/src",
        ] {
            let graph = imports(&crate_files(path));
            assert_eq!(circle(&graph), None, "{path}");
        }
    }

    #[test]
    fn no_source_file_passes_the_line_limit() {
        let mut long = Vec::new();
        for path in [
            "crates/switchscope-core/src",
            "crates/switchscope-cli/src",
            "crates/switchscope-wire/src",
            "web/src",
            "xtask/src",
        ] {
            for (module, source) in crate_files(path) {
                let lines = source.lines().count();
                if lines > MAX_LINES {
                    long.push(format!("{path}: {module} has {lines} lines"));
                }
            }
        }
        assert!(long.is_empty(), "{}", long.join("\n"));
    }

    /// The checks see what they are for: an upward `use`, an inline path, a group, `super`, a
    /// circle through a child module.
    #[test]
    fn the_checks_find_what_they_look_for() {
        let files: Files = [
            ("", "pub mod model;\npub mod formats;"),
            ("formats", "pub mod quant;\nuse crate::model::{self, stack::Stack};"),
            ("formats::quant", "fn f() { super::super::model::run(); }"),
            ("model", "pub mod stack;\nfn h() { stack::g(); }"),
            (
                "model::stack",
                "pub struct Stack;\nfn g() { crate::formats::quant::q(); }\n#[cfg(test)]\nmod tests {\n    use super::*;\n}",
            ),
        ]
        .into_iter()
        .map(|(m, s)| (m.to_owned(), s.to_owned()))
        .collect();
        let graph = imports(&files);
        assert_eq!(
            graph["formats"],
            BTreeSet::from(["model".to_owned(), "model::stack".to_owned()])
        );
        assert_eq!(
            graph["formats::quant"],
            BTreeSet::from(["model".to_owned()])
        );
        assert_eq!(graph["model"], BTreeSet::from(["model::stack".to_owned()]));
        let layers = [("formats", 0), ("model", 1)];
        assert_eq!(upward(&graph, &layers).len(), 3);
        assert!(circle(&graph).is_some());
    }
}
