//! No crate's modules import each other in a loop: for each crate, the file-level graph whose
//! edges are the `crate::module` and `super::module` paths a file names (outside `//` comments)
//! has no cycle. A loop means neither module can be read or changed without the other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`linear::matvec`, "" for lib.rs) → source, for every `.rs` file under `src`.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
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
                let code: String = std::fs::read_to_string(&path)
                    .unwrap()
                    .lines()
                    .map(|l| l.split("//").next().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("\n");
                out.insert(parts.join("::"), code);
            }
        }
    }
    out
}

/// The longest known module that `path` (`a::b::Item`) starts with.
fn resolve(mods: &BTreeMap<String, String>, path: &[&str]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|i| path[..i].join("::"))
        .find(|m| mods.contains_key(m))
}

/// The modules each module names, by `crate::` paths (with `{a, b::c}` groups) and `super::`.
fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = BTreeMap::new();
    for (m, code) in mods {
        let mut to = BTreeSet::new();
        for (prefix, base) in [
            ("crate::", Vec::new()),
            ("super::", {
                let mut p: Vec<&str> = m.split("::").collect();
                p.pop();
                p
            }),
        ] {
            for (at, _) in code.match_indices(prefix) {
                let rest = &code[at + prefix.len()..];
                let head: String = rest.chars().take_while(|&c| ident(c) || c == ':').collect();
                let mut path: Vec<&str> = base.clone();
                path.extend(head.split("::").filter(|s| !s.is_empty()));
                let mut targets = vec![path.clone()];
                if rest[head.len()..].starts_with('{') {
                    let group = &rest[head.len() + 1..rest.find('}').unwrap_or(rest.len())];
                    for item in group.split(',') {
                        let mut p = path.clone();
                        p.extend(
                            item.trim()
                                .split("::")
                                .filter(|s| !s.is_empty() && s.chars().all(ident)),
                        );
                        targets.push(p);
                    }
                }
                for t in targets {
                    if let Some(t) = resolve(mods, &t) {
                        if !t.is_empty() && t != *m && !m.starts_with(&format!("{t}::")) {
                            to.insert(t);
                        }
                    }
                }
            }
        }
        out.insert(m.clone(), to);
    }
    out
}

/// A cycle of the graph, if any (depth-first search, grey nodes on the stack).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in &graph[node] {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == next).unwrap();
                    let mut c = stack[from..].to_vec();
                    c.push(next.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(graph, next, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(graph, node, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_crate_imports_its_own_modules_in_a_loop() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for krate in ["kernels", "model", "runtime", "benches"] {
        let mods = modules(&root.join(krate).join("src"));
        assert!(mods.len() > 3, "{krate}: no modules found");
        let graph = edges(&mods);
        assert!(
            graph.values().map(BTreeSet::len).sum::<usize>() > mods.len() / 2,
            "{krate}: too few imports found; the scan is broken"
        );
        if let Some(c) = cycle(&graph) {
            panic!("{krate}/src imports in a loop: {}", c.join(" -> "));
        }
    }
}

/// The scan finds a planted loop (so the test above can fail).
#[test]
fn a_planted_loop_is_found() {
    let mods: BTreeMap<String, String> = [
        ("".into(), "mod a; mod b;".into()),
        ("a".into(), "use crate::b::Thing;".into()),
        ("b".into(), "use crate::{a::Other, c};".into()),
        ("c".into(), "use super::a;".into()),
    ]
    .into_iter()
    .collect();
    let c = cycle(&edges(&mods)).expect("a loop");
    assert!(
        c.contains(&"a".to_string()) && c.contains(&"b".to_string()),
        "{c:?}"
    );
}
