//! What an operator installs: the man pages and shell completions (made
//! from the clap definitions), the Debian package (built, checked by
//! lintian, installed with dpkg, used, removed and purged) and the
//! container image (built with buildah and run).
//!
//! Installing a package changes the machine, so that test runs only under
//! CI (`LEDGERTAIL_CI=1`, set by `.ci/run`) or when asked for with
//! `LEDGERTAIL_INSTALL_TESTS=1`, and only as root; the image test needs
//! buildah. Under CI a missing tool fails the test; elsewhere it is
//! skipped with a note saying why.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn under_ci() -> bool {
    std::env::var_os("LEDGERTAIL_CI").is_some()
}

/// Whether a test that needs `what` may run: it is there, or the test is
/// skipped with the reason (and fails instead under CI).
fn available(what: &str, present: bool) -> bool {
    if !present {
        assert!(
            !under_ci(),
            "{what} is required in CI (.ci/run provides it)"
        );
        eprintln!("skipped: {what} is not available");
    }
    present
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `cmd`; the test fails unless it succeeds.
fn succeed(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(succeed(cmd).stdout).unwrap()
}

/// What a command printed on both streams (ledgertail's summaries go to
/// stderr, its reports to stdout).
fn all_output(cmd: &mut Command) -> String {
    let out = succeed(cmd);
    let mut text = String::from_utf8(out.stdout).unwrap();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

/// Every visible subcommand of ledgertail, with the long flags it takes
/// (its own and the global ones).
fn subcommands_and_flags() -> Vec<(String, Vec<String>)> {
    let mut cli = ledgertail::cli::Cli::command();
    cli.build();
    let global: Vec<String> = cli
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.is_global_set())
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let subs: Vec<_> = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| {
            let mut flags: Vec<String> = s
                .get_arguments()
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| a.get_long().map(str::to_owned))
                .collect();
            flags.extend(global.iter().cloned());
            flags.sort();
            flags.dedup();
            (s.get_name().to_owned(), flags)
        })
        .collect();
    assert!(subs.len() >= 6, "ledgertail has lost subcommands: {subs:?}");
    subs
}

fn generate_docs(out: &Path) {
    succeed(
        Command::new(env!("CARGO_BIN_EXE_ledgertail-docs"))
            .arg("--out")
            .arg(out),
    );
}

#[test]
fn man_pages_and_completions_name_every_subcommand_and_flag() {
    let tmp = tempfile::tempdir().unwrap();
    generate_docs(tmp.path());
    let read = |rel: &str| {
        std::fs::read_to_string(tmp.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    // roff escapes hyphens; the rendered name of a flag is `\-\-db`.
    let unroff = |text: String| text.replace("\\-", "-");

    let top = unroff(read("man/ledgertail.1"));
    assert!(top.contains("\n.TH ledgertail 1 "), "{top}");
    for section in [
        "SYNOPSIS",
        "OPTIONS",
        "SUBCOMMANDS",
        "EXIT STATUS",
        "SIGNALS",
        "FILES",
    ] {
        assert!(top.contains(section), "ledgertail.1 has no {section}");
    }
    let mut top_flags = ledgertail::cli::Cli::command();
    top_flags.build();
    for flag in top_flags.get_arguments().filter_map(|a| a.get_long()) {
        assert!(
            top.contains(&format!("--{flag}")),
            "ledgertail.1 omits --{flag}"
        );
    }
    let bash = read("completions/ledgertail.bash");
    let zsh = read("completions/_ledgertail");
    let fish = read("completions/ledgertail.fish");

    for (sub, flags) in subcommands_and_flags() {
        let page_name = format!("man/ledgertail-{sub}.1");
        let page = unroff(read(&page_name));
        assert!(
            page.contains(&format!("\n.TH ledgertail-{sub} 1 ")),
            "{page_name}"
        );
        assert!(
            top.contains(&format!("ledgertail-{sub}(1)")),
            "ledgertail.1 omits {sub}"
        );
        assert!(
            bash.contains(&format!("ledgertail,{sub})")),
            "bash completion omits {sub}"
        );
        assert!(
            zsh.contains(&format!("'{sub}:")),
            "zsh completion omits {sub}"
        );
        assert!(
            fish.contains(&format!("-a \"{sub}\"")),
            "fish completion omits {sub}"
        );
        for flag in flags {
            assert!(
                page.contains(&format!("--{flag}")),
                "{page_name} omits --{flag}"
            );
            assert!(
                bash.contains(&format!("--{flag}")),
                "bash completion omits --{flag}"
            );
            assert!(
                zsh.contains(&format!("--{flag}")),
                "zsh completion omits --{flag}"
            );
            // fish names long flags as `-l NAME`, per subcommand.
            let fish_flag = fish.lines().any(|l| {
                l.contains(&format!("__fish_ledgertail_using_subcommand {sub}\""))
                    && l.contains(&format!(" -l {flag}"))
            });
            assert!(fish_flag, "fish completion omits {sub} --{flag}");
        }
    }
}

#[test]
fn man_pages_render_without_warnings() {
    if !available("man (man-db)", on_path("man")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    generate_docs(tmp.path());
    for entry in std::fs::read_dir(tmp.path().join("man")).unwrap() {
        let path = entry.unwrap().path();
        let out = succeed(
            Command::new("man")
                .env("MANWIDTH", "80")
                .arg("--warnings")
                .arg("-l")
                .arg(&path),
        );
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.trim().is_empty(), "{}: {warnings}", path.display());
        assert!(String::from_utf8_lossy(&out.stdout).contains("SYNOPSIS"));
    }
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed"))
}

fn exists(path: &str) -> bool {
    Path::new(path).symlink_metadata().is_ok()
}

fn mode_owner(path: &str) -> (u32, String, String) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    let name = |flag: &str| {
        stdout(Command::new("stat").args([flag, path]))
            .trim()
            .to_owned()
    };
    (meta.mode() & 0o7777, name("-c%U"), name("-c%G"))
}

/// Unit files, enablement links and deb-systemd-helper state naming
/// ledgertail under /etc/systemd and /var/lib/systemd.
fn systemd_leftovers() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![
        PathBuf::from("/etc/systemd/system"),
        PathBuf::from("/var/lib/systemd/deb-systemd-helper-enabled"),
        PathBuf::from("/var/lib/systemd/deb-systemd-helper-masked"),
    ];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().contains("ledgertail") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn debian_package_installs_works_and_purges_clean() {
    let asked = under_ci() || std::env::var_os("LEDGERTAIL_INSTALL_TESTS").is_some();
    if !asked {
        eprintln!(
            "skipped: installs a package on this machine; set LEDGERTAIL_INSTALL_TESTS=1 (as root) to run it"
        );
        return;
    }
    assert!(
        is_root(),
        "the package test runs dpkg and needs root (run .ci/run or the test as root)"
    );
    for tool in ["dpkg", "lintian", "systemd-analyze", "man", "runuser"] {
        assert!(on_path(tool), "{tool} is required (.ci/run installs it)");
    }
    assert!(
        Command::new("cargo")
            .args(["deb", "--version"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "cargo-deb is required (.ci/run installs it: cargo install cargo-deb)"
    );

    // Built the way the README says.
    succeed(
        Command::new("bash")
            .arg(root().join("packaging/deb/build.sh"))
            .current_dir(root()),
    );
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"));
    // In the target dir cargo uses (./target, or CARGO_TARGET_DIR): the
    // one that holds this test's own build of the binary.
    let target_dir = Path::new(env!("CARGO_BIN_EXE_ledgertail"))
        .ancestors()
        .nth(2)
        .unwrap();
    let deb = target_dir.join(format!(
        "debian/ledgertail_{}_{}.deb",
        version(),
        arch.trim()
    ));
    assert!(deb.is_file(), "{} was not built", deb.display());
    succeed(
        Command::new("lintian")
            .args(["--fail-on", "error"])
            .arg(&deb),
    );

    if installed("ledgertail") {
        succeed(Command::new("dpkg").args(["--purge", "ledgertail"]));
    }
    succeed(Command::new("dpkg").arg("-i").arg(&deb));
    let files: Vec<String> = stdout(Command::new("dpkg").args(["-L", "ledgertail"]))
        .lines()
        .map(str::to_owned)
        .collect();

    // The binary, its pages and completions.
    assert_eq!(
        stdout(Command::new("/usr/bin/ledgertail").arg("--version")).trim(),
        format!("ledgertail {}", version())
    );
    let page = stdout(Command::new("man").args(["-w", "ledgertail"]));
    assert_eq!(page.trim(), "/usr/share/man/man1/ledgertail.1.gz");
    for (sub, _) in subcommands_and_flags() {
        succeed(Command::new("man").args(["-w", &format!("ledgertail-{sub}")]));
    }
    for completion in [
        "/usr/share/bash-completion/completions/ledgertail",
        "/usr/share/zsh/vendor-completions/_ledgertail",
        "/usr/share/fish/vendor_completions.d/ledgertail.fish",
    ] {
        let text = std::fs::read_to_string(completion).unwrap();
        assert!(text.contains("replay"), "{completion}");
    }
    for doc in [
        "/usr/share/ledgertail/prometheus/ledgertail-alerts.yml",
        "/usr/share/doc/ledgertail/copyright",
        "/usr/share/doc/ledgertail/changelog.gz",
    ] {
        assert!(exists(doc), "{doc} is missing");
    }

    // The units: valid as installed, the sidecar enabled (not started),
    // the replay timer shipped disabled.
    for unit in [
        "/usr/lib/systemd/system/ledgertail.service",
        "/usr/lib/systemd/system/ledgertail-replay.service",
        "/usr/lib/systemd/system/ledgertail-replay.timer",
    ] {
        succeed(Command::new("systemd-analyze").args(["verify", unit]));
    }
    assert!(exists(
        "/etc/systemd/system/multi-user.target.wants/ledgertail.service"
    ));
    assert!(!exists(
        "/etc/systemd/system/timers.target.wants/ledgertail-replay.timer"
    ));

    // The account, its folder and the conffile it can read.
    succeed(Command::new("getent").args(["passwd", "ledgertail"]));
    assert_eq!(
        mode_owner("/var/lib/ledgertail"),
        (0o750, "ledgertail".into(), "ledgertail".into())
    );
    assert_eq!(
        mode_owner("/etc/ledgertail/ledgertail.toml"),
        (0o640, "root".into(), "ledgertail".into())
    );
    let conffiles =
        stdout(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "ledgertail"]));
    assert!(
        conffiles.contains("/etc/ledgertail/ledgertail.toml"),
        "{conffiles}"
    );

    // The packaged config fits the package: the service's account mirrors
    // a ledger at the configured path into the configured database.
    // The ledger is the application's, outside the sidecar's private
    // folder; the sidecar's account only reads it.
    let ledger = "/srv/app/ledger.jsonl";
    let made_folder = !exists("/srv/app");
    std::fs::create_dir_all("/srv/app").unwrap();
    std::fs::copy(
        root().join("tests/data/vectors/unsigned-100-varied.jsonl"),
        ledger,
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(ledger, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = all_output(Command::new("runuser").args([
        "-u",
        "ledgertail",
        "--",
        "/usr/bin/ledgertail",
        "replay",
        "--config",
        "/etc/ledgertail/ledgertail.toml",
        "--no-progress",
    ]));
    assert!(out.contains("mirrored 100 events"), "{out}");
    let db = "/var/lib/ledgertail/ledgertail.db";
    let conn = rusqlite::Connection::open(db).unwrap();
    let events: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(events, 100);
    drop(conn);
    std::fs::remove_file(ledger).unwrap();
    if made_folder {
        let _ = std::fs::remove_dir("/srv/app");
    }

    // Removing keeps the mirror and the configuration.
    succeed(Command::new("dpkg").args(["-r", "ledgertail"]));
    assert!(!exists("/usr/bin/ledgertail"));
    assert!(exists(db), "remove deleted the mirror");
    assert!(
        exists("/etc/ledgertail/ledgertail.toml"),
        "remove deleted the conffile"
    );

    // Purging removes everything the package made.
    succeed(Command::new("dpkg").args(["--purge", "ledgertail"]));
    assert!(!installed("ledgertail"));
    let left: BTreeSet<&str> = files
        .iter()
        .map(String::as_str)
        .filter(|f| Path::new(f).symlink_metadata().is_ok_and(|m| !m.is_dir()))
        .collect();
    assert!(left.is_empty(), "purge left the package's files: {left:?}");
    for dir in [
        "/etc/ledgertail",
        "/var/lib/ledgertail",
        "/usr/share/ledgertail",
        "/usr/share/doc/ledgertail",
    ] {
        assert!(!exists(dir), "purge left {dir}");
    }
    assert!(
        !Command::new("getent")
            .args(["passwd", "ledgertail"])
            .status()
            .unwrap()
            .success(),
        "purge left the ledgertail account"
    );
    assert!(
        !Command::new("getent")
            .args(["group", "ledgertail"])
            .status()
            .unwrap()
            .success(),
        "purge left the ledgertail group"
    );
    let leftovers = systemd_leftovers();
    assert!(
        leftovers.is_empty(),
        "purge left systemd state: {leftovers:?}"
    );

    // A purge that cannot remove the account (a process still runs as
    // it) finishes, and says so and how to finish by hand.
    succeed(Command::new("dpkg").arg("-i").arg(&deb));
    let mut holder = Command::new("runuser")
        .args(["-u", "ledgertail", "--", "sleep", "60"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let said = all_output(Command::new("dpkg").args(["--purge", "ledgertail"]));
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(!installed("ledgertail"), "{said}");
    assert!(
        said.contains("the system account ledgertail was not removed")
            && said.contains("deluser --system ledgertail"),
        "{said}"
    );
    // (Each may find nothing left to remove.)
    let _ = Command::new("deluser")
        .args(["--quiet", "--system", "ledgertail"])
        .output();
    let _ = Command::new("delgroup")
        .args(["--quiet", "--system", "ledgertail"])
        .output();
}

#[test]
fn container_image_builds_and_runs_replay() {
    if !available("buildah", on_path("buildah")) {
        return;
    }
    let image = format!("localhost/ledgertail-test:{}", std::process::id());
    succeed(
        Command::new("bash")
            .arg(root().join("packaging/container/build.sh"))
            .arg(&image)
            .current_dir(root()),
    );
    struct Cleanup<'a>(&'a str, Option<String>);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            if let Some(ctr) = &self.1 {
                let _ = Command::new("buildah").args(["rm", ctr]).output();
            }
            let _ = Command::new("buildah").args(["rmi", "-f", self.0]).output();
        }
    }
    let mut cleanup = Cleanup(&image, None);

    let inspect = stdout(Command::new("buildah").args(["inspect", "--type", "image", &image]));
    assert!(inspect.contains("\"User\": \"65532:65532\""), "{inspect}");
    assert!(
        inspect.contains("/etc/ledgertail/ledgertail.toml"),
        "{inspect}"
    );

    let ctr = stdout(Command::new("buildah").args(["from", &image]))
        .trim()
        .to_owned();
    cleanup.1 = Some(ctr.clone());
    let in_image = |volume: Option<&Path>, args: &[&str]| {
        let mut cmd = Command::new("buildah");
        cmd.args(["run", "--isolation", "chroot"]);
        if let Some(dir) = volume {
            cmd.arg("-v").arg(format!("{}:/data", dir.display()));
        }
        cmd.arg(&ctr)
            .arg("--")
            .arg("/usr/local/bin/ledgertail")
            .args(args);
        all_output(&mut cmd)
    };
    assert_eq!(
        in_image(None, &["--version"]).trim(),
        format!("ledgertail {}", version())
    );

    // The image's config follows /data/ledger.jsonl into /data; a folder
    // mounted there, writable by the image's user, gets the mirror.
    let data = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("tests/data/vectors/unsigned-100-varied.jsonl"),
        data.path().join("ledger.jsonl"),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let config = ["--config", "/etc/ledgertail/ledgertail.toml"];
    let out = in_image(
        Some(data.path()),
        &["replay", config[0], config[1], "--no-progress"],
    );
    assert!(out.contains("mirrored 100 events"), "{out}");
    let status = in_image(
        Some(data.path()),
        &["status", config[0], config[1], "--json"],
    );
    assert!(status.contains("\"ledger_head_seq\": 99"), "{status}");
    let conn = rusqlite::Connection::open(data.path().join("ledgertail.db")).unwrap();
    let events: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(events, 100);
}
