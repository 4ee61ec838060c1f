//! The files operators deploy with: the systemd units, the container
//! configuration, the Kubernetes example and the Prometheus alert rules,
//! each checked by the tool that will read it.
//!
//! The tools (promtool, systemd-analyze, kubernetes-validate) are installed
//! by `.ci/run`, which sets `LEDGERTAIL_CI=1`: there, a missing tool fails
//! the test. Elsewhere the check is skipped with a note.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ledgertail::config::{FileConfig, Overrides, Settings};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("LEDGERTAIL_CI").is_none(),
            "{name} is required in CI but not installed (.ci/run installs it)"
        );
        eprintln!("{name} not installed: check skipped");
    }
    found
}

fn succeeds(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = root().join("packaging/prometheus");
    succeeds(Command::new(&promtool).current_dir(&dir).args([
        "check",
        "rules",
        "ledgertail-alerts.yml",
    ]));
    succeeds(Command::new(&promtool).current_dir(&dir).args([
        "test",
        "rules",
        "ledgertail-alerts.test.yml",
    ]));
}

#[test]
fn systemd_units_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    // The units name /usr/local/bin/ledgertail; verify them against the
    // binary just built (systemd-analyze checks that it exists).
    let tmp = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for name in [
        "ledgertail.service",
        "ledgertail-replay.service",
        "ledgertail-replay.timer",
    ] {
        let text = std::fs::read_to_string(root().join("packaging").join(name)).unwrap();
        let text = text.replace(
            "/usr/local/bin/ledgertail",
            env!("CARGO_BIN_EXE_ledgertail"),
        );
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    succeeds(Command::new(analyze).arg("verify").args(&units));
}

/// The text of `key: |` block scalar in a YAML file (indented lines after it).
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines.next().expect("key present");
    let indent = header.len() - header.trim_start().len() + 2;
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or("").to_owned() + "\n")
        .collect()
}

fn resolves(text: &str, origin: &Path) -> Settings {
    let file = FileConfig::parse(text, origin).unwrap_or_else(|e| panic!("{e}"));
    let over = Overrides {
        config: Some(origin.to_path_buf()),
        ..Overrides::default()
    };
    Settings::resolve(&file, &over, Path::new("/")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_container_and_kubernetes_configs_load_and_listen_beyond_loopback() {
    let container = root().join("packaging/container.toml");
    let s = resolves(&std::fs::read_to_string(&container).unwrap(), &container);
    assert!(s.listen.ip().is_unspecified(), "{}", s.listen);
    assert_eq!(s.db, Path::new("/data/ledgertail.db"));

    let manifest = root().join("packaging/kubernetes/sidecar.yaml");
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    let config = block_scalar(&yaml, "ledgertail.toml");
    let s = resolves(&config, Path::new("/etc/ledgertail/ledgertail.toml"));
    assert!(s.listen.ip().is_unspecified(), "{}", s.listen);
    assert_eq!(s.ledgers[0].path, Path::new("/var/lib/ledger/app.jsonl"));
    // The probes and the scrape annotations point at what `run` serves.
    for needle in [
        "path: /healthz",
        "path: /readyz",
        "prometheus.io/port: \"9898\"",
        "containerPort: 9898",
    ] {
        assert!(yaml.contains(needle), "{needle} missing from the manifest");
    }
    // The grace periods nest: ledgertail's within the pod's.
    assert!(s.run.shutdown_grace.as_secs() < 45);

    // Every file the Dockerfile copies exists.
    let dockerfile = std::fs::read_to_string(root().join("packaging/Dockerfile")).unwrap();
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(root().join(src).exists(), "Dockerfile copies missing {src}");
        }
    }
}

#[test]
fn the_kubernetes_example_validates_against_the_api_schema() {
    let Some(validate) = tool("kubernetes-validate") else {
        return;
    };
    succeeds(
        Command::new(validate)
            .args(["--strict", "-k", "1.30.0"])
            .arg(root().join("packaging/kubernetes/sidecar.yaml")),
    );
}

/// The image's entrypoint as `packaging/container/build.sh` sets it; the
/// Dockerfile's must be the same.
fn image_entrypoint() -> Vec<String> {
    let script = std::fs::read_to_string(root().join("packaging/container/build.sh")).unwrap();
    let json = script
        .split("--entrypoint '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("build.sh sets --entrypoint '[...]'");
    let entrypoint: Vec<String> = serde_json::from_str(json).unwrap();
    let dockerfile = std::fs::read_to_string(root().join("packaging/Dockerfile")).unwrap();
    let docker_json = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("the Dockerfile has an ENTRYPOINT");
    let docker: Vec<String> = serde_json::from_str(docker_json).unwrap();
    assert_eq!(entrypoint, docker, "build.sh and the Dockerfile disagree");
    entrypoint
}

/// `key: value` of the first line under the sidecar's container in the
/// manifest, or `None` when it has no such key.
fn sidecar_container_field(yaml: &str, key: &str) -> Option<String> {
    let block: Vec<&str> = yaml
        .lines()
        .skip_while(|l| l.trim() != "- name: ledgertail")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("- name:") && l.trim() != "containers:")
        .collect();
    block.iter().find_map(|l| {
        l.trim()
            .strip_prefix(&format!("{key}:"))
            .map(|v| v.trim().to_owned())
    })
}

#[test]
fn the_kubernetes_sidecar_runs_the_images_command_line_on_the_manifests_config() {
    let manifest =
        std::fs::read_to_string(root().join("packaging/kubernetes/sidecar.yaml")).unwrap();
    // The tag build.sh makes, not one nothing builds.
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sidecar_container_field(&manifest, "image").as_deref(),
        Some(format!("ledgertail:{version}").as_str())
    );
    // What the kubelet runs: `command` replaces the entrypoint, `args`
    // are appended to it.
    let mut argv = match sidecar_container_field(&manifest, "command") {
        Some(json) => serde_json::from_str::<Vec<String>>(&json).unwrap(),
        None => image_entrypoint(),
    };
    if let Some(json) = sidecar_container_field(&manifest, "args") {
        argv.extend(serde_json::from_str::<Vec<String>>(&json).unwrap());
    }
    assert_eq!(argv[0], "/usr/local/bin/ledgertail");

    // Its paths moved into a scratch folder; the command line unchanged.
    let dir = tempfile::tempdir().unwrap();
    let (ledger_dir, mirror_dir) = (dir.path().join("ledger"), dir.path().join("mirror"));
    std::fs::create_dir(&ledger_dir).unwrap();
    std::fs::create_dir(&mirror_dir).unwrap();
    let config = block_scalar(&manifest, "ledgertail.toml")
        .replace(
            "/var/lib/ledgertail/",
            &format!("{}/", mirror_dir.display()),
        )
        .replace("/var/lib/ledger/", &format!("{}/", ledger_dir.display()))
        .replace("0.0.0.0:9898", "127.0.0.1:0");
    let config_path = dir.path().join("ledgertail.toml");
    std::fs::write(&config_path, config).unwrap();
    let args: Vec<String> = argv[1..]
        .iter()
        .map(|a| {
            if a == "/etc/ledgertail/ledgertail.toml" {
                config_path.display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    common::append(
        &mut ledgertail::producer::Writer::new(ledger_dir.join("app.jsonl")),
        0,
        3,
    );
    let mut child = Command::new(common::bin_path())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let db = mirror_dir.join("ledgertail.db");
    common::eventually("the sidecar mirrors the ledger (or exits)", || {
        if let Ok(Some(_)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("{argv:?} exited: {err}");
        }
        db.exists() && common::mirrored_seqs(&db).len() == 3
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(common::wait_exit(&mut child).success());
}
