//! The documents a person reads after cloning name only what exists: every repository path
//! in README.md, SECURITY.md, BENCHMARKS.md, docs/, the systemd units, the Dockerfile and
//! the shipped config (`deploy/...`, `src/...`, `tests/...`,
//! `config/...`, `docs/...`, `benches/...`, `.ci/...`) is a file or folder here, and every
//! `a-chat SUBCOMMAND` in their code is a subcommand the real binary lists in `--help`.
mod common;

use std::path::{Path, PathBuf};

/// Folders whose paths the documents cite, as written in them.
const ROOTS: [&str; 7] = [
    "deploy/", "src/", "tests/", "config/", "docs/", "benches/", ".ci/",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = ["README.md", "SECURITY.md", "BENCHMARKS.md"]
        .iter()
        .map(|d| repo().join(d))
        .collect();
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    docs
}

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_./@%-".contains(c)
}

/// Every repository path in `text`, with the line it is on.
fn paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for root in ROOTS {
            let mut from = 0;
            while let Some(at) = line[from..].find(root).map(|i| i + from) {
                from = at + root.len();
                // Part of a longer path (`/etc/a-chat/...`, `../docs/`) or a word: not ours.
                let before = line[..at].chars().next_back();
                if before.is_some_and(|c| path_char(c) || c == '/') {
                    continue;
                }
                let end = line[at..]
                    .find(|c: char| !path_char(c))
                    .map_or(line.len(), |i| i + at);
                // A pattern (`deploy/cluster/n*.toml`, `{a,b}`) names files, not one.
                if line[end..].starts_with(['*', '{', '<']) {
                    continue;
                }
                let path = line[at..end].trim_end_matches(['.', ',']);
                found.push((n + 1, path.to_owned()));
            }
        }
    }
    found
}

/// The documents, and the deployment files whose comments tell an operator what to run.
fn documents_and_units() -> Vec<PathBuf> {
    let mut all = documents();
    for entry in std::fs::read_dir(repo().join("deploy")).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|e| e == "service" || e == "socket")
        {
            all.push(path);
        }
    }
    all.push(repo().join("Dockerfile"));
    all.push(repo().join("config/a-chat.toml"));
    all
}

#[test]
fn every_path_the_documents_name_exists() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in documents_and_units() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (line, path) in paths(&text) {
            checked += 1;
            // target/ is made by a build; the rest must be in the repository.
            if path.starts_with("target/") || Path::new(&repo()).join(&path).exists() {
                continue;
            }
            missing.push(format!(
                "{}:{line}: {path}",
                doc.strip_prefix(repo()).unwrap().display()
            ));
        }
    }
    assert!(
        checked > 50,
        "only {checked} paths found: is the scan broken?"
    );
    assert!(
        missing.is_empty(),
        "documents name paths that do not exist:\n{}",
        missing.join("\n")
    );
}

/// The subcommands `a-chat --help` lists.
fn subcommands() -> Vec<String> {
    let (status, out, err) = common::run_cli(&["--help"]);
    assert!(status.success(), "{err}");
    out.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The code of a Markdown text: fenced blocks, and inline spans.
fn code(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            // Shell comments are prose.
            let line = line.split(" #").next().unwrap_or(line);
            out.push((n + 1, line.to_owned()));
        } else {
            for (i, span) in line.split('`').enumerate() {
                if i % 2 == 1 {
                    out.push((n + 1, span.to_owned()));
                }
            }
        }
    }
    out
}

#[test]
fn every_subcommand_the_documents_run_exists() {
    let known = subcommands();
    assert!(known.iter().any(|c| c == "server"), "{known:?}");
    let mut unknown = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (line, code) in code(&text) {
            let words: Vec<&str> = code.split_whitespace().collect();
            for pair in words.windows(2) {
                // `a-chat`, or a path to it; not `VAR=path/a-chat` (an argument).
                let program = match pair[0].contains('=') {
                    true => "",
                    false => pair[0].rsplit('/').next().unwrap(),
                };
                let word = pair[1];
                let is_word = word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    && word.starts_with(|c: char| c.is_ascii_lowercase());
                if program == "a-chat"
                    && is_word
                    && word != "a-chat"
                    && !known.contains(&word.to_owned())
                {
                    unknown.push(format!(
                        "{}:{line}: a-chat {word}",
                        doc.strip_prefix(repo()).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "documents run subcommands a-chat does not have ({known:?}):\n{}",
        unknown.join("\n")
    );
}
