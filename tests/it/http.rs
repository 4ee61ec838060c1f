//! The HTTP endpoints under hostile clients: slow and idle connections never
//! lock out a new one, and `/readyz` details stay on loopback.

use crate::common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::lines::*;
use common::*;
use ledgertail::producer::Writer;

#[test]
fn slow_and_idle_clients_never_lock_out_a_new_one() {
    use std::net::TcpStream;
    let s = setup("");
    append(&mut Writer::new(&s.ledger), 0, 3);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("3 events", || mirrored_seqs(&s.db).len() == 3);
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let before = rss(sidecar.child.id());
    let mut clients = Vec::new();
    for i in 0..1000 {
        let mut c = TcpStream::connect(&sidecar.addr).unwrap();
        match i % 3 {
            // Says nothing at all.
            0 => {}
            // Half a request, never finished.
            1 => c
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap(),
            // One request, then idles on its keep-alive connection.
            _ => {
                c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
            }
        }
        clients.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    for path in ["/healthz", "/metrics", "/readyz"] {
        let began = Instant::now();
        let (status, _) = timed_get(&sidecar.addr, path, Duration::from_secs(1));
        assert_eq!(status, 200, "{path} answered a new client");
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "{path} took {:?}",
            began.elapsed()
        );
    }
    let grown = rss(sidecar.child.id()).saturating_sub(before);
    assert!(grown < 64 * 1024, "1000 clients took {grown} kB");
    // An oversized request is still answered, with 431.
    let mut big = TcpStream::connect(&sidecar.addr).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let header = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = big.write_all(header.as_bytes());
    let mut answer = [0u8; 12];
    let n = std::io::Read::read(&mut big, &mut answer).unwrap_or(0);
    assert!(
        text(&answer[..n]).starts_with("HTTP/1.1 431"),
        "{:?}",
        text(&answer[..n])
    );
    drop(clients);
    assert!(sidecar.stop().success());
}

/// GET with a deadline: (status, body), status 0 when no answer came.
fn timed_get(addr: &str, path: &str, limit: Duration) -> (u16, String) {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    stream.set_read_timeout(Some(limit)).unwrap();
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[test]
fn readyz_details_are_for_loopback_clients_only() {
    let s = setup("");
    let lines = chain(6);
    write_lines(&s.ledger, &lines[..2]);
    append_lines(&s.ledger, &lines[4..]);
    // Listening on every interface, as in a container.
    let sidecar = Sidecar::start_on(&s.config, "0.0.0.0:0", |_| {});
    sidecar.eventually("halted", || {
        sidecar.metric("ledgertail_halted{ledger=\"app\"}") == Some(1.0)
    });
    let port = sidecar.addr.rsplit(':').next().unwrap().to_owned();
    let (status, body) = timed_get(
        &format!("127.0.0.1:{port}"),
        "/readyz",
        Duration::from_secs(5),
    );
    assert_eq!(status, 503);
    assert!(
        body.contains(&s.ledger.display().to_string()),
        "loopback gets the details: {body}"
    );
    match non_loopback_address() {
        Some(ip) => {
            let (status, body) = timed_get(&format!("{ip}:{port}"), "/readyz", Duration::from_secs(5));
            assert_eq!(status, 503, "{body}");
            assert!(body.contains("ledger app halted (seq_gap)"), "{body}");
            assert!(!body.contains(&s.dir.display().to_string()), "no paths for {ip}: {body}");
        }
        None => eprintln!("no non-loopback address on this machine: the remote view is covered by the unit test of telemetry::readiness"),
    }
    assert!(sidecar.stop().success());
}

/// An IPv4 address of this machine that is not loopback, if it has one.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}
