//! The documentation as users read it: every link leads somewhere, the
//! configuration reference is the sample file, and the command blocks
//! marked runnable run as written, in a scratch folder, against this
//! build (put on PATH as an installed `ledgertail` would be).
//!
//! A fenced block preceded by `<!-- runnable: SESSION -->` is run; the
//! blocks of one session run in order in one `bash` (so `cd`, variables
//! and background jobs carry over), under `set -euo pipefail`. A comment
//! `<!-- hidden: SESSION` … `-->` adds lines users do not see: waits for
//! what a person would simply see happen, and checks of the output.
//! `<!-- runnable: SESSION file=PATH -->` writes its block to PATH (a
//! program in another language that the next blocks run).

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every Markdown file users read.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![
        root().join("README.md"),
        root().join("producers/python/README.md"),
        root().join("producers/node/README.md"),
    ];
    let mut in_docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    in_docs.sort();
    docs.extend(in_docs);
    docs
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap().display().to_string()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    prose(text)
        .into_iter()
        .filter_map(|l| {
            let hashes = l.chars().take_while(|c| *c == '#').count();
            (1..=6)
                .contains(&hashes)
                .then(|| l[hashes..].strip_prefix(' ').map(slug))
                .flatten()
        })
        .collect()
}

/// The targets of the inline links `[text](target)` outside code.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            if let Some(end) = rest.find(')') {
                found.push(rest[..end].to_owned());
            }
        }
    }
    found
}

#[test]
fn every_link_in_the_documentation_leads_to_a_file_and_heading_that_exist() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap().join(file)
            };
            if !path.exists() {
                broken.push(format!("{}: {target}: no such file", relative(&doc)));
                continue;
            }
            if let Some(anchor) = anchor {
                let there = std::fs::read_to_string(&path).unwrap_or_default();
                if !anchors(&there).iter().any(|a| a == anchor) {
                    broken.push(format!("{}: {target}: no such heading", relative(&doc)));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn user_facing_docs_speak_of_features_not_of_contract_sections_or_issues() {
    let mut found = Vec::new();
    // The maintainers' pages (development, the performance log kept per
    // piece of work) may name the contract.
    let maintainers = ["docs/development.md", "docs/performance.md"];
    for doc in documents()
        .into_iter()
        .chain([root().join("config/ledgertail.toml")])
        .filter(|d| !maintainers.contains(&relative(d).as_str()))
    {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            if ["(v1.", "contract §", "ledger-v1.md"]
                .iter()
                .any(|w| lower.contains(w))
            {
                found.push(format!("{}:{}: {line}", relative(&doc), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// Whether `line` names a numbered issue ("issue 9", "issues 12 and
/// 13", "issue #4"): a tracker a reader of the repository cannot open.
fn names_an_issue(line: &str) -> bool {
    let lower = line.to_lowercase();
    lower.match_indices("issue").any(|(at, word)| {
        let rest = lower[at + word.len()..].trim_start_matches('s');
        rest.strip_prefix(' ')
            .map(|r| r.trim_start_matches('#'))
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// Every file under `dir` with extension `ext`, recursively.
fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn no_doc_comment_or_test_names_an_issue_a_reader_cannot_open() {
    assert!(names_an_issue("the hostile edges (Issue 9)"));
    assert!(names_an_issue("issues 12 and 13"));
    assert!(!names_an_issue("an issue with the disk, 9 times"));
    let mut found = Vec::new();
    let sources = [
        root().join("src"),
        root().join("tests/it"),
        root().join("fuzz"),
    ]
    .into_iter()
    .flat_map(|d| files_under(&d, "rs"));
    // This file names issues on purpose, as examples of what is refused.
    let this = root().join(file!().trim_start_matches("./"));
    for file in documents()
        .into_iter()
        .chain(sources)
        .filter(|f| *f != this)
    {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if names_an_issue(line) {
                found.push(format!("{}:{}: {line}", relative(&file), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_configuration_reference_is_the_sample_file_itself() {
    let sample = std::fs::read_to_string(root().join("config/ledgertail.toml")).unwrap();
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let block = doc
        .split("```toml reference\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("docs/configuration.md holds the sample in a ```toml reference block");
    assert_eq!(
        block.trim_end(),
        sample.trim_end(),
        "docs/configuration.md differs from config/ledgertail.toml: copy the file into it"
    );
}

/// One piece of a session: a block users see, or hidden lines.
struct Step {
    at: String,
    code: String,
}

/// The runnable sessions of every document, by name, in document order.
fn sessions() -> BTreeMap<String, Vec<Step>> {
    let mut sessions: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].trim();
            let at = format!("{}:{}", relative(&doc), i + 1);
            // (session, first line of code, how the line that closes it starts)
            let found = if let Some(name) = line
                .strip_prefix("<!-- runnable:")
                .and_then(|r| r.strip_suffix("-->"))
            {
                assert!(
                    lines.get(i + 1).is_some_and(|l| l.starts_with("```")),
                    "{at}: a runnable marker must be followed by a fenced block"
                );
                Some((name, i + 2, "```"))
            } else {
                line.strip_prefix("<!-- hidden:")
                    .map(|name| (name, i + 1, "-->"))
            };
            let Some((name, first, closes)) = found else {
                i += 1;
                continue;
            };
            let end = first
                + lines[first..]
                    .iter()
                    .position(|l| l.trim_start().starts_with(closes))
                    .unwrap_or_else(|| panic!("{at}: unclosed block"));
            let mut code = lines[first..end].join("\n");
            // `runnable: NAME file=PATH`: the block is a file the next
            // blocks use (a program in another language), written as is.
            let mut words = name.split_whitespace();
            let name = words.next().unwrap_or_default().to_owned();
            if let Some(file) = words.find_map(|w| w.strip_prefix("file=")) {
                code = format!("cat > {file} <<'LEDGERTAIL_DOC_EOF'\n{code}\nLEDGERTAIL_DOC_EOF");
            }
            sessions.entry(name).or_default().push(Step { at, code });
            i = end + 1;
        }
    }
    sessions
}

/// A folder holding this build as `ledgertail`, for PATH.
fn installed_bin(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(common::bin_path(), bin.join("ledgertail")).unwrap();
    bin
}

fn tools_present(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools
        .iter()
        .filter(|t| common::which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("LEDGERTAIL_CI").is_none(),
        "{missing:?} required in CI (.ci/run installs them)"
    );
    eprintln!("skipped: {missing:?} not installed");
    false
}

/// Runs a session's steps in one bash in a scratch folder; any failing
/// command fails it, naming the block it was in.
fn run_session(name: &str, steps: &[Step]) {
    let dir = tempfile::tempdir().unwrap();
    let bin = installed_bin(dir.path());
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut script =
        String::from("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\n");
    for step in steps {
        script.push_str(&format!("echo '--- {}' >&2\n{}\n", step.at, step.code));
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env("PATH", path)
        .env("LEDGERTAIL", root())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::finish_within(child, common::PATIENCE * 3, name);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "session {name} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    if !tools_present(&["sqlite3", "curl"]) {
        return;
    }
    let all = sessions();
    let steps = all.get("quickstart").expect("the README has a quickstart");
    run_session("quickstart", steps);
}

#[test]
fn the_adoption_guide_runs_as_written() {
    if !tools_present(&["sqlite3"]) {
        return;
    }
    let all = sessions();
    for name in ["adopt", "adopt-signed"] {
        let steps = all
            .get(name)
            .unwrap_or_else(|| panic!("docs/adopting.md has the runnable session {name}"));
        run_session(name, steps);
    }
}

#[test]
fn the_producer_libraries_install_and_run_as_their_readmes_say() {
    // They install from the network (PyPI, npm), as a user's would.
    if !tools_present(&["python3", "node", "npm"]) {
        return;
    }
    let all = sessions();
    for name in ["python", "node"] {
        let steps = all
            .get(name)
            .unwrap_or_else(|| panic!("producers/{name}/README.md has a runnable session"));
        run_session(name, steps);
    }
}

#[test]
fn the_bounds_table_of_the_configuration_guide_is_the_one_the_code_checks() {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let table = ledgertail::config::bounds::markdown();
    assert!(
        doc.contains(&table),
        "docs/configuration.md must hold the bounds table as the code has it; paste this:\n\n{table}"
    );
}
