//! Imports point one way (cli → pipelines → formats and image work →
//! utilities): for every module, the graph of which of its child modules
//! name which — through `use crate::…`, `use super::…` (trees included),
//! `crate::x::…` or `super::x::…` in code, and `histoshard::x` in the
//! binary — has no cycle. Built from the source text of `src/**/*.rs`;
//! comments, string literals and test-only code (`#[cfg(test)]` items and
//! the files they declare) are left out, since tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// child module → the child modules it names → where it first does.
type Siblings = BTreeMap<String, BTreeMap<String, String>>;

/// For every module (by path, `[]` for the crate root), the graph of its children.
fn import_graphs(src: &Path) -> BTreeMap<Vec<String>, Siblings> {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    let mut modules = BTreeSet::new();
    let mut parsed = Vec::new();
    let mut test_only = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(src).unwrap_or(file);
        let module = module_of(rel);
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let (code, test_children) = code_of(&text);
        for child in test_children {
            test_only.insert([module.clone(), vec![child]].concat());
        }
        modules.insert(module.clone());
        parsed.push((rel.display().to_string(), module, code));
    }
    let mut graphs: BTreeMap<Vec<String>, Siblings> = BTreeMap::new();
    for (name, module, code) in parsed {
        let is_test = (1..=module.len()).any(|n| test_only.contains(&module[..n]))
            || module.iter().any(|m| m == "tests");
        if is_test {
            continue;
        }
        for path in paths_in(&code) {
            let Some(target) = resolve(&module, &path) else {
                continue;
            };
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common < module.len()
                && common < target.len()
                && modules.contains(&target[..=common])
            {
                graphs
                    .entry(module[..common].to_vec())
                    .or_default()
                    .entry(module[common].clone())
                    .or_default()
                    .entry(target[common].clone())
                    .or_insert_with(|| format!("{name}: {path}"));
            }
        }
    }
    graphs
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `train/models/mod.rs` → `[train, models]`; `lib.rs` and `main.rs` → `[]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| ["mod", "lib", "main"].contains(&p.as_str()))
    {
        parts.pop();
    }
    parts
}

/// The text with comments and string and character literals blanked and
/// `#[cfg(test)]` items cut out; and the names of the child modules
/// declared test-only (`#[cfg(test)] mod tests;`).
fn code_of(text: &str) -> (String, Vec<String>) {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        let skip_to = if rest.starts_with("//") {
            rest.find('\n').map_or(b.len(), |n| i + n)
        } else if rest.starts_with("/*") {
            rest.find("*/").map_or(b.len(), |n| i + n + 2)
        } else if let Some(hashes) = raw_string_start(rest) {
            let close = format!("\"{}", "#".repeat(hashes));
            let open = 2 + hashes;
            rest[open..]
                .find(&close)
                .map_or(b.len(), |n| i + open + n + close.len())
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            rest.get(3..)
                .and_then(|r| r.find('\''))
                .map_or(b.len(), |n| i + n + 4)
        } else if b[i] == b'\'' && rest.chars().nth(2) == Some('\'') {
            i + 1 + rest[1..].chars().next().map_or(0, char::len_utf8) + 1
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
            continue;
        };
        out.push(' ');
        i = skip_to.min(b.len());
    }
    let mut test_children = Vec::new();
    while let Some(at) = out.find("#[cfg(test)]") {
        let after = at + "#[cfg(test)]".len();
        let (semi, brace) = (out[after..].find(';'), out[after..].find('{'));
        let end = match (semi, brace) {
            (Some(s), b) if b.is_none_or(|b| s < b) => {
                let item: Vec<&str> = out[after..after + s].split_whitespace().collect();
                if let ["mod", name] | ["pub", "mod", name] = item.as_slice() {
                    test_children.push(name.to_string());
                }
                after + s + 1
            }
            (_, Some(b)) => matching_brace(&out, after + b),
            _ => out.len(),
        };
        out.replace_range(at..end, "");
    }
    (out, test_children)
}

/// `r"`, `r#"`, … at the start of `s`: the number of `#`s.
fn raw_string_start(s: &str) -> Option<usize> {
    let hashes = s
        .strip_prefix('r')?
        .bytes()
        .take_while(|&c| c == b'#')
        .count();
    (s.as_bytes().get(1 + hashes) == Some(&b'"')).then_some(hashes)
}

/// The index after the `}` that closes the `{` at `open`.
fn matching_brace(s: &str, open: usize) -> usize {
    let mut depth = 0usize;
    for (i, c) in s[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + i + 1;
                }
            }
            _ => {}
        }
    }
    s.len()
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path the code names from a crate or module root: each path of
/// every `use` tree, and `crate::`, `super::`, `self::`, `histoshard::`
/// paths elsewhere.
fn paths_in(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = String::with_capacity(code.len());
    let mut i = 0;
    while let Some(n) = code[i..].find("use ") {
        let at = i + n;
        let word_start = code[..at].chars().next_back().is_none_or(|c| !is_ident(c));
        let end = code[at..].find(';').map_or(code.len(), |e| at + e);
        if word_start {
            rest.push_str(&code[i..at]);
            expand_use(&code[at + 4..end], "", &mut out);
            i = end;
        } else {
            rest.push_str(&code[i..at + 4]);
            i = at + 4;
        }
    }
    rest.push_str(&code[i..]);
    for root in ["crate", "super", "self", "histoshard"] {
        let mut from = 0;
        while let Some(n) = rest[from..].find(root) {
            let at = from + n;
            from = at + root.len();
            if rest[..at].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            let mut end = from;
            while rest[end..].starts_with("::") {
                let seg = rest[end + 2..]
                    .find(|c: char| !is_ident(c))
                    .map_or(rest.len() - end - 2, |s| s);
                if seg == 0 {
                    break;
                }
                end += 2 + seg;
            }
            if end > from {
                out.push(rest[at..end].to_string());
            }
        }
    }
    out
}

/// `a::{b, c::{d, e as f}}` → `a::b`, `a::c::d`, `a::c::e`, each after `prefix`.
fn expand_use(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let join = |p: &str| match (prefix.is_empty(), p.is_empty()) {
        (true, _) => p.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}::{p}"),
    };
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or("").trim();
        out.push(join(path));
        return;
    };
    let head = join(tree[..open].trim().trim_end_matches("::"));
    let close = tree.rfind('}').unwrap_or(tree.len());
    let inner = &tree[open + 1..close.max(open + 1)];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand_use(&inner[start..i], &head, out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !inner[start..].trim().is_empty() {
        expand_use(&inner[start..], &head, out);
    }
}

/// The absolute path `path` names from `module`; `None` for other crates.
fn resolve(module: &[String], path: &str) -> Option<Vec<String>> {
    let segs: Vec<&str> = path.split("::").map(str::trim).collect();
    let (mut base, rest) = match segs.first()? {
        &"crate" | &"$crate" | &"histoshard" => (Vec::new(), &segs[1..]),
        &"super" | &"self" => (module.to_vec(), &segs[..]),
        _ => return None,
    };
    let mut rest = rest;
    while let Some((first, tail)) = rest.split_first() {
        match *first {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        rest = tail;
    }
    base.extend(rest.iter().map(|s| s.to_string()));
    Some(base)
}

/// A cycle of `graph` as `[a, b, …, a]`, if it has one.
fn find_cycle(graph: &Siblings) -> Option<Vec<String>> {
    fn visit<'a>(
        node: &'a str,
        graph: &'a Siblings,
        done: &mut BTreeSet<&'a str>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|&n| n == node) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|s| s.to_string()).collect();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        stack.push(node);
        for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

/// Each cycle of `graphs`, one line a step: `train: a → b (where)`.
fn cycles(graphs: &BTreeMap<Vec<String>, Siblings>) -> Vec<String> {
    let mut out = Vec::new();
    for (parent, graph) in graphs {
        let Some(cycle) = find_cycle(graph) else {
            continue;
        };
        let module = if parent.is_empty() {
            "crate".to_string()
        } else {
            parent.join("::")
        };
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("  {} → {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
            .collect();
        out.push(format!(
            "in {module}: {}\n{}",
            cycle.join(" → "),
            steps.join("\n")
        ));
    }
    out
}

#[test]
fn sibling_modules_import_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graphs = import_graphs(&src);
    // What the graphs must hold for the test to mean anything.
    let top = &graphs[&Vec::new()];
    assert!(top["cli"].contains_key("train") && top["prepare"].contains_key("shard"));
    let train = &graphs[&vec!["train".to_string()]];
    assert!(train["learner"].contains_key("session") && train["resume"].contains_key("learner"));
    let found = cycles(&graphs);
    assert!(
        found.is_empty(),
        "imports go round in a circle:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_cycle_is_found_and_named_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    let write = |name: &str, text: &str| std::fs::write(src.join(name), text).unwrap();
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n");
    // a → b in a use tree; b → c in code; c → a through a `super` path.
    write(
        "a/mod.rs",
        "//! use crate::c; (a comment)\nuse crate::{error::E, b::{self, x as y}};\n#[cfg(test)]\nmod tests;\nmod inner;\n",
    );
    write("a/tests.rs", "use crate::c::Z;\n");
    write(
        "a/inner.rs",
        "use super::super::b::Q;\nfn f() { let s = \"crate::c::W\"; }\n",
    );
    write(
        "b.rs",
        "fn g() { crate::c::run(); }\n#[cfg(test)]\nmod tests { use crate::a::T; }\n",
    );
    write("c.rs", "pub fn run() { super::a::go() }\n");
    let graphs = import_graphs(src);
    let top = &graphs[&Vec::new()];
    assert_eq!(
        top["a"].keys().collect::<Vec<_>>(),
        ["b"],
        "comments, strings and tests name nothing"
    );
    assert_eq!(top["b"].keys().collect::<Vec<_>>(), ["c"]);
    let found = cycles(&graphs);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("in crate: a → b → c → a"),
        "{}",
        found[0]
    );
    assert!(
        found[0].contains("c → a (c.rs: super::a::go)"),
        "{}",
        found[0]
    );
    // Without the edge back, no cycle.
    write("c.rs", "pub fn run() {}\n");
    assert!(cycles(&import_graphs(src)).is_empty());
}
