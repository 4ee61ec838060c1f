//! The core stays pure: nothing under `src/ledger/` may touch files,
//! SQLite, the clock, async runtimes, logs or metrics. This keeps every rule
//! of the format testable with byte literals. The other invariants of
//! docs/ARCHITECTURE.md that a reading of the sources can check are here
//! too, with one more: the map names every module.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::net",
    "File::",
    "rusqlite",
    "tokio",
    "inotify",
    "prometheus",
    "tracing",
    "SystemTime",
    "Instant::now",
    "std::env",
    "std::process",
];

#[test]
fn the_ledger_core_does_no_io() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ledger");
    let mut offences = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // Unit tests may use anything.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for word in FORBIDDEN {
                if line.contains(word) {
                    offences.push(format!("{}:{}: {word}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "I/O in the pure core:\n{}",
        offences.join("\n")
    );
}

/// Every file under src/, but not in folders named in `skip`.
fn sources_outside(skip: &[&str]) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !skip.iter().any(|s| path.ends_with(s)) {
                    stack.push(path);
                }
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// The product code of a source file: the text before its first
/// `#[cfg(test)]`, and nothing for a file that is a test-only module
/// (`#[cfg(test)] mod NAME;` in its parent).
fn product_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let stem = path.file_stem().unwrap().to_string_lossy();
    let dir = path.parent().unwrap();
    let parent = ["mod.rs", "lib.rs"]
        .iter()
        .map(|p| dir.join(p))
        .find(|p| p.exists() && p != path);
    if let Some(parent) = parent {
        let parent = std::fs::read_to_string(parent).unwrap();
        if parent.contains(&format!("#[cfg(test)]\nmod {stem};")) {
            return String::new();
        }
    }
    text.split("#[cfg(test)]").next().unwrap_or("").to_owned()
}

#[test]
fn only_the_mirror_speaks_sql() {
    // src/bin/ holds the benchmark, whose insert floor is bare SQLite by
    // definition; it is a tool, not the product.
    let offences: Vec<String> = sources_outside(&["mirror", "bin"])
        .into_iter()
        .filter(|p| std::fs::read_to_string(p).unwrap().contains("rusqlite"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(offences.is_empty(), "SQL outside src/mirror/: {offences:?}");
}

#[test]
fn the_library_never_reaches_into_the_command_line_layer() {
    // `commands` runs each subcommand (and `main.rs` dispatches to it);
    // nothing else may use it: the daemon, the shipper, the mirror and the
    // rest are driven by it, never the other way round.
    let offences: Vec<String> = sources_outside(&["commands", "bin"])
        .into_iter()
        .filter(|p| !p.ends_with("main.rs"))
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.contains("crate::commands") || text.contains("commands::")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        offences.is_empty(),
        "the library uses the command-line layer: {offences:?}"
    );
}

#[test]
fn only_the_postgres_module_speaks_postgresql() {
    // The fleet shipper holds a connection (`crate::postgres::Client`)
    // but sends nothing on it itself: statements, the client library and
    // SQL text live in src/postgres/ (and the benchmark's bare COPY floor).
    let speech = [
        "tokio_postgres",
        " ::postgres",
        "(::postgres",
        "use postgres",
        "extern crate postgres",
        "simple_query",
        "batch_execute",
        "copy_in",
        "INSERT INTO",
        "SELECT ",
    ];
    let offences: Vec<String> = sources_outside(&["postgres", "mirror", "bin"])
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            speech.iter().any(|s| text.contains(s))
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        offences.is_empty(),
        "PostgreSQL outside src/postgres/: {offences:?}"
    );
}

#[test]
fn nothing_downstream_of_the_mirror_reads_ledger_files() {
    // The fleet store, the verifiable log, the metrics and the HTTP
    // server take their events from SQLite: the mirror is their outbox.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let downstream = ["fleet", "tlog", "postgres", "telemetry", "serve.rs"];
    let reads_ledgers = ["crate::tail", "Tailer", "parity::scan", "producer::Writer"];
    let mut offences = Vec::new();
    for path in sources_outside(&["bin"]) {
        let rel = path.strip_prefix(&root).unwrap();
        if !downstream.iter().any(|d| rel.starts_with(d)) {
            continue;
        }
        let code = product_code(&path);
        for word in reads_ledgers {
            if code.contains(word) {
                offences.push(format!("{}: {word}", rel.display()));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "a reader of ledger files downstream of the mirror: {offences:?}"
    );
}

#[test]
fn the_architecture_map_names_every_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("src")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let (in_map, module) = if path.is_dir() {
            (format!("`src/{name}/"), name.clone())
        } else {
            (
                format!("`src/{name}"),
                name.trim_end_matches(".rs").to_owned(),
            )
        };
        if !map.contains(&in_map) {
            missing.push(format!("docs/ARCHITECTURE.md lacks {in_map}`"));
        }
        let declared = lib.contains(&format!("pub mod {module};"));
        if declared && !lib.contains(&format!("[`{module}`]")) {
            missing.push(format!("src/lib.rs's map lacks [`{module}`]"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The modules under src/ each file of `module` names with `crate::X`.
fn uses_of(module: &Path) -> std::collections::BTreeSet<String> {
    let files = if module.is_dir() {
        let mut stack = vec![module.to_path_buf()];
        let mut found = Vec::new();
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    found.push(p);
                }
            }
        }
        found
    } else {
        vec![module.to_path_buf()]
    };
    let mut uses = std::collections::BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            uses.insert(name);
        }
    }
    uses
}

#[test]
fn no_two_modules_use_each_other_even_through_others() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if ["bin", "main", "lib"].contains(&name.as_str()) {
            continue;
        }
        graph.insert(name, uses_of(&path));
    }
    let names: Vec<String> = graph.keys().cloned().collect();
    for name in &names {
        graph
            .get_mut(name)
            .unwrap()
            .retain(|u| u != name && names.contains(u));
    }
    // A walk from each module: reaching itself again is a cycle.
    let mut cycles = Vec::new();
    for start in &names {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for next in &graph[&at] {
                if next == start {
                    cycles.push(format!("{} -> {start}", path.join(" -> ")));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules that use each other:\n{}",
        cycles.join("\n")
    );
}

/// The column names declared by the `CREATE TABLE …events (` block of
/// `text`.
fn events_table_columns(text: &str) -> Vec<String> {
    let start = text.find("events (").expect("an events table");
    let body = &text[start + "events (".len()..];
    let body = &body[..body.find("\n)").expect("the table's end")];
    body.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| !w.starts_with("--") && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn one_column_list_names_the_event_row_in_both_schemas_and_every_reader() {
    use ledgertail::ledger::columns::EVENT_COLUMNS;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    for (schema, text) in [
        ("the mirror's", read("mirror/schema.sql")),
        ("the fleet store's", read("postgres/schema.rs")),
    ] {
        let declared = events_table_columns(&text);
        for column in EVENT_COLUMNS {
            assert!(
                declared.iter().any(|d| d == column),
                "{schema} events table has no column {column}: {declared:?}"
            );
        }
    }
    // The readers take the columns by position, in this order.
    let list = EVENT_COLUMNS.join(", ");
    for reader in ["mirror/query.rs", "postgres/rows.rs"] {
        assert!(
            read(reader).contains(&format!("SELECT {list}")),
            "{reader} does not select the event columns as EVENT_COLUMNS lists them"
        );
    }
    // The mirror's writer adds its own column after them (line_sha256).
    assert!(read("mirror/write.rs").contains(&format!("INSERT INTO events (ledger, {list}")));
}

/// Every `file.rs: name` stop of the journey in docs/ARCHITECTURE.md
/// names a file that exists and an item that file defines, so that the
/// journey cannot drift from the code unnoticed. (A file named without
/// its folder is looked for under `src/` by its ending.)
#[test]
fn every_stop_of_the_journey_names_an_item_of_its_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let journey = doc
        .split("## The journey of one line")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/ARCHITECTURE.md has a journey section");
    let files = sources_outside(&[]);
    let mut stops = 0;
    let mut wrong = Vec::new();
    for quoted in journey.split('`').skip(1).step_by(2) {
        let quoted = quoted.split_whitespace().collect::<Vec<_>>().join(" ");
        let Some((file, item)) = quoted.split_once(".rs: ") else {
            continue;
        };
        stops += 1;
        let want = format!("{file}.rs");
        let Some(path) = files.iter().find(|p| p.ends_with(&want)) else {
            wrong.push(format!("{quoted}: no file src/**/{want}"));
            continue;
        };
        let name = item.rsplit("::").next().unwrap_or(item);
        let text = std::fs::read_to_string(path).unwrap();
        let defined = ["fn", "struct", "enum", "trait", "type"]
            .iter()
            .any(|kind| {
                text.contains(&format!("{kind} {name}("))
                    || text.contains(&format!("{kind} {name} "))
                    || text.contains(&format!("{kind} {name}<"))
                    || text.contains(&format!("{kind} {name};"))
            });
        if !defined {
            wrong.push(format!("{quoted}: {} defines no {name}", path.display()));
        }
    }
    assert!(
        stops >= 20,
        "only {stops} stops found: is the journey still written as `file.rs: item`?"
    );
    assert!(
        wrong.is_empty(),
        "stale stops in the journey:\n{}",
        wrong.join("\n")
    );
}
