//! Exactly once into the fleet store whatever breaks: many sidecars at
//! once, shippers SIGKILLed at random moments, PostgreSQL crashed
//! (`pg_ctl stop -m immediate`) and restarted, the connection cut right
//! after COMMIT is sent, PostgreSQL down for a while under a steady
//! producer. Each ends with every central ledger equal to its file.

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg::*;
use common::*;
use ledgertail::producer::Writer;

/// A folder with a config for `ledgers` ledgers (`l0`, `l1`, …) shipping
/// as `source` to the PostgreSQL at `port`.
fn fleet_setup(port: u16, source: &str, ledgers: usize, extra: &str) -> Setup {
    let s = setup("");
    let mut config = format!(
        "db = \"mirror.db\"\npoll_interval_millis = 100\nshutdown_grace_secs = 10\n[postgres]\nurl = \"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres?sslmode=disable\"\nsource = \"{source}\"\nconnect_timeout_secs = 3\nlease_secs = 10\n{extra}\n"
    );
    for i in 0..ledgers {
        config.push_str(&format!(
            "[[ledger]]\nname = \"l{i}\"\npath = \"l{i}.jsonl\"\n"
        ));
    }
    std::fs::write(&s.config, config).unwrap();
    s
}

fn ledger_file(s: &Setup, i: usize) -> std::path::PathBuf {
    s.dir.join(format!("l{i}.jsonl"))
}

#[test]
fn eight_sidecars_with_three_ledgers_each_ship_into_one_database_at_once() {
    let Some(pg) = Pg::start_or_skip("eight sidecars") else {
        return;
    };
    let setups: Vec<Setup> = (0..8)
        .map(|i| fleet_setup(pg.port, &format!("host-{i}"), 3, ""))
        .collect();
    let sidecars: Vec<Sidecar> = setups.iter().map(|s| start(s, &pg)).collect();
    // Every ledger written at once, in bursts.
    std::thread::scope(|scope| {
        for s in &setups {
            for l in 0..3 {
                let path = ledger_file(s, l);
                scope.spawn(move || {
                    let mut w = Writer::new(&path);
                    for burst in 0..20 {
                        append(&mut w, burst * 15, 15);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                });
            }
        }
    });
    for (i, (s, sidecar)) in setups.iter().zip(&sidecars).enumerate() {
        for l in 0..3 {
            sidecar.eventually("every event central", || {
                central_count(&pg, &format!("host-{i}"), &format!("l{l}")) == 300
            });
            assert_central_equals_file(
                &pg,
                &format!("host-{i}"),
                &format!("l{l}"),
                &ledger_file(s, l),
            );
        }
    }
    for sidecar in sidecars {
        assert!(sidecar.stop().success());
    }
    assert_eq!(
        pg.number("SELECT count(*) FROM ledgertail.events"),
        8 * 3 * 300
    );
    assert_eq!(pg.number("SELECT count(*) FROM ledgertail.ledgers"), 24);
}

/// A steady producer on each ledger of `s` until `stop`.
fn produce(s: &Setup, ledgers: usize, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..ledgers)
        .map(|l| {
            let path = ledger_file(s, l);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut w = Writer::new(&path);
                let mut next = 0;
                while !stop.load(Ordering::Relaxed) {
                    append(&mut w, next, 5);
                    next += 5;
                    std::thread::sleep(Duration::from_millis(4));
                }
            })
        })
        .collect()
}

fn assert_all_central(pg: &Pg, s: &Setup, source: &str, ledgers: usize, sidecar: &Sidecar) {
    for l in 0..ledgers {
        let want = file_chain(&ledger_file(s, l)).len() as i64;
        sidecar.eventually("the backlog shipped", || {
            central_count(pg, source, &format!("l{l}")) == want
        });
        assert_central_equals_file(pg, source, &format!("l{l}"), &ledger_file(s, l));
    }
}

/// A small xorshift: random moments without a dependency.
fn random_millis(state: &mut u64, lo: u64, hi: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    lo + *state % (hi - lo)
}

#[test]
fn shippers_killed_at_twenty_random_moments_ship_everything_exactly_once() {
    let Some(pg) = Pg::start_or_skip("SIGKILL shippers") else {
        return;
    };
    let s = fleet_setup(pg.port, "host-k", 2, "batch_max_events = 50");
    let stop = Arc::new(AtomicBool::new(false));
    let producers = produce(&s, 2, stop.clone());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20 {
        let sidecar = start(&s, &pg);
        std::thread::sleep(Duration::from_millis(random_millis(&mut seed, 80, 600)));
        sidecar.kill();
    }
    stop.store(true, Ordering::Relaxed);
    producers.into_iter().for_each(|p| p.join().unwrap());
    let sidecar = start(&s, &pg);
    assert_all_central(&pg, &s, "host-k", 2, &sidecar);
    assert!(sidecar.stop().success());
}

#[test]
fn postgres_crashed_and_restarted_during_shipping_loses_and_duplicates_nothing() {
    let Some(pg) = Pg::start_or_skip("PostgreSQL crash") else {
        return;
    };
    let s = fleet_setup(pg.port, "host-c", 2, "batch_max_events = 100");
    let stop = Arc::new(AtomicBool::new(false));
    let producers = produce(&s, 2, stop.clone());
    let sidecar = start(&s, &pg);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(random_millis(&mut seed, 200, 700)));
        pg.stop_immediate();
        std::thread::sleep(Duration::from_millis(random_millis(&mut seed, 100, 1500)));
        pg.start();
    }
    stop.store(true, Ordering::Relaxed);
    producers.into_iter().for_each(|p| p.join().unwrap());
    assert_all_central(&pg, &s, "host-c", 2, &sidecar);
    assert!(sidecar.stop().success());
}

#[test]
fn postgres_down_for_a_while_local_mirroring_goes_on_and_the_lag_falls_back_to_zero() {
    let Some(pg) = Pg::start_or_skip("PostgreSQL down") else {
        return;
    };
    let s = fleet_setup(pg.port, "host-d", 1, "");
    let stop = Arc::new(AtomicBool::new(false));
    let producers = produce(&s, 1, stop.clone());
    let sidecar = start(&s, &pg);
    sidecar.eventually("shipping", || central_count(&pg, "host-d", "l0") > 50);
    pg.stop_immediate();
    let lag = "ledgertail_postgres_lag_events{ledger=\"l0\"}";
    sidecar.eventually("the lag rises", || {
        sidecar.metric(lag).unwrap_or(0.0) > 200.0
    });
    sidecar.eventually("up falls to 0", || {
        sidecar.metric("ledgertail_postgres_up{ledger=\"l0\"}") == Some(0.0)
    });
    // Local mirroring never waits: the mirror keeps up with the file.
    let mirrored = |s: &Setup| count(&s.db, "SELECT count(*) FROM events WHERE ledger = 'l0'");
    let before = mirrored(&s);
    sidecar.eventually("local mirroring goes on", || mirrored(&s) > before + 200);
    assert_eq!(
        sidecar.get("/readyz").0,
        200,
        "PostgreSQL down does not make the sidecar unready"
    );
    assert!(
        sidecar
            .metric("ledgertail_postgres_errors_total{ledger=\"l0\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
    pg.start();
    stop.store(true, Ordering::Relaxed);
    producers.into_iter().for_each(|p| p.join().unwrap());
    sidecar.eventually("the lag falls back to 0", || {
        sidecar.metric(lag) == Some(0.0)
    });
    sidecar.eventually("up again", || {
        sidecar.metric("ledgertail_postgres_up{ledger=\"l0\"}") == Some(1.0)
    });
    assert_all_central(&pg, &s, "host-d", 1, &sidecar);
    assert!(sidecar.stop().success());
}

/// A loopback TCP proxy to `upstream` that, while `cuts` is above zero,
/// drops the connection right after forwarding a client message that
/// ends a transaction (`COMMIT`): the server may have committed, the
/// client never hears.
struct CuttingProxy {
    port: u16,
    cuts: Arc<AtomicUsize>,
    made: Arc<AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: u16, cuts: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicUsize::new(cuts));
        let made = Arc::new(AtomicUsize::new(0));
        let (c, m) = (cuts.clone(), made.clone());
        let seen = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c, m, seen) = (c.clone(), m.clone(), seen.clone());
                let (mut client_r, mut server_w) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut server_r, mut client_w) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = client_r.read(&mut buf) {
                        if n == 0 || server_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        // A COMMIT query message (the text ends in NUL).
                        let commits = buf[..n].windows(7).any(|w| w == b"COMMIT\0");
                        // Every other COMMIT: shipping makes progress in
                        // between, as it would on a flaky network.
                        if commits
                            && seen.fetch_add(1, Ordering::SeqCst) % 2 == 0
                            && c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                                v.checked_sub(1)
                            })
                            .is_ok()
                        {
                            m.fetch_add(1, Ordering::SeqCst);
                            // The client hears nothing more (the server's
                            // answer is not forwarded); the server still
                            // reads all it was sent before the FIN.
                            let _ = client_r.shutdown(std::net::Shutdown::Both);
                            let _ = server_w.shutdown(std::net::Shutdown::Write);
                            break;
                        }
                    }
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server_r, &mut client_w);
                    let _ = client_w.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy { port, cuts, made }
    }
}

#[test]
fn a_connection_cut_right_after_commit_is_settled_by_the_central_head() {
    let Some(pg) = Pg::start_or_skip("cut after COMMIT") else {
        return;
    };
    let proxy = CuttingProxy::start(pg.port, 8);
    let s = fleet_setup(proxy.port, "host-p", 2, "batch_max_events = 40");
    let stop = Arc::new(AtomicBool::new(false));
    let producers = produce(&s, 2, stop.clone());
    let sidecar = start(&s, &pg);
    let deadline = Instant::now() + PATIENCE;
    while proxy.cuts.load(Ordering::SeqCst) > 0 {
        assert!(
            Instant::now() < deadline,
            "the proxy cut only {} times",
            proxy.made.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    producers.into_iter().for_each(|p| p.join().unwrap());
    assert_eq!(proxy.made.load(Ordering::SeqCst), 8);
    assert_all_central(&pg, &s, "host-p", 2, &sidecar);
    assert!(
        sidecar
            .log_text()
            .contains("the central head will tell whether it committed"),
        "{}",
        sidecar.log_text()
    );
    assert!(sidecar.stop().success());
}

/// The value of `series` in a scrape's `body`.
fn scraped(body: &str, series: &str) -> Option<i64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_lag_gauge_is_the_mirror_head_minus_the_central_head_at_every_scrape_under_load() {
    let Some(pg) = Pg::start_or_skip("the lag under load") else {
        return;
    };
    let s = fleet_setup(pg.port, "host-l", 6, "batch_max_events = 25");
    let stop = Arc::new(AtomicBool::new(false));
    let producers = produce(&s, 6, stop.clone());
    let sidecar = start(&s, &pg);
    let mut seen_backlog = false;
    for _ in 0..60 {
        let (_, body) = sidecar.get("/metrics");
        for l in 0..6 {
            let label = format!("{{ledger=\"l{l}\"}}");
            let series = |name: &str| scraped(&body, &format!("{name}{label}"));
            let (Some(mirror), Some(central), Some(lag)) = (
                series("ledgertail_mirror_head_seq"),
                series("ledgertail_postgres_head_seq"),
                series("ledgertail_postgres_lag_events"),
            ) else {
                continue; // the sidecar is still starting
            };
            if central >= 0 {
                assert_eq!(lag, (mirror - central).max(0), "l{l} in:\n{body}");
            }
            seen_backlog |= lag > 0;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    producers.into_iter().for_each(|p| p.join().unwrap());
    assert!(seen_backlog, "no scrape saw rows waiting to ship");
    assert_all_central(&pg, &s, "host-l", 6, &sidecar);
    sidecar.eventually("the lag falls to 0", || {
        (0..6).all(|l| {
            sidecar.metric(&format!(
                "ledgertail_postgres_lag_events{{ledger=\"l{l}\"}}"
            )) == Some(0.0)
        })
    });
    assert!(sidecar.stop().success());
}
