//! The standard `process_*` series, read from `/proc/self` at each scrape.
//!
//! Written here rather than taken from the prometheus crate's collector,
//! which counts CPU time in whole seconds: an idle sidecar uses a few
//! hundredths of a second per minute, so `rate(process_cpu_seconds_total)`
//! read 0 and the idle cost could not be observed.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, Opts};

/// CPU time, memory, file descriptors and start time of this process.
pub struct ProcessMetrics {
    cpu: Counter,
    resident: Gauge,
    virtual_memory: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge,
    descs: Vec<Desc>,
}

fn gauge(name: &str, help: &str) -> Gauge {
    Gauge::with_opts(Opts::new(name, help)).expect("valid metric definition")
}

impl ProcessMetrics {
    pub fn new() -> ProcessMetrics {
        let cpu = Counter::with_opts(Opts::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        ))
        .expect("valid metric definition");
        let resident = gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        );
        let virtual_memory = gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        );
        let open_fds = gauge("process_open_fds", "Number of open file descriptors.");
        let max_fds = gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        );
        let start_time = gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        );
        let descs = [&resident, &virtual_memory, &open_fds, &max_fds, &start_time]
            .iter()
            .flat_map(|g| g.desc().into_iter().cloned())
            .chain(cpu.desc().into_iter().cloned())
            .collect();
        let metrics = ProcessMetrics {
            cpu,
            resident,
            virtual_memory,
            open_fds,
            max_fds,
            start_time,
            descs,
        };
        if let Some(stat) = Stat::read() {
            metrics.start_time.set(stat.start_time_seconds());
        }
        metrics
    }
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        ProcessMetrics::new()
    }
}

/// The fields of `/proc/self/stat` these series need.
struct Stat {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    start_ticks: u64,
    vsize_bytes: u64,
    rss_pages: u64,
}

fn sysconf(name: libc::c_int) -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 {
        v as f64
    } else {
        1.0
    }
}

impl Stat {
    fn read() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name is in parentheses and may hold spaces: the
        // fields proper start after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Field numbers of proc(5), counted from `state` (field 3).
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        Some(Stat {
            cpu_ticks: field(14)? + field(15)?,
            start_ticks: field(22)?,
            vsize_bytes: field(23)?,
            rss_pages: field(24)?,
        })
    }

    fn start_time_seconds(&self) -> f64 {
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        boot + self.start_ticks as f64 / sysconf(libc::_SC_CLK_TCK)
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(stat) = Stat::read() {
            let seconds = stat.cpu_ticks as f64 / sysconf(libc::_SC_CLK_TCK);
            let past = self.cpu.get();
            if seconds > past {
                self.cpu.inc_by(seconds - past);
            }
            self.virtual_memory.set(stat.vsize_bytes as f64);
            self.resident
                .set(stat.rss_pages as f64 * sysconf(libc::_SC_PAGESIZE));
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as f64);
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct passed.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            self.max_fds.set(limit.rlim_cur as f64);
        }
        let mut out = self.cpu.collect();
        for g in [
            &self.resident,
            &self.virtual_memory,
            &self.open_fds,
            &self.max_fds,
            &self.start_time,
        ] {
            out.extend(g.collect());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_has_fractions_of_a_second() {
        let m = ProcessMetrics::new();
        // Burn a little CPU: well under a second.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let families = m.collect();
        let cpu = families
            .iter()
            .find(|f| f.name() == "process_cpu_seconds_total")
            .unwrap();
        let seconds = cpu.get_metric()[0].get_counter().get_value();
        assert!(seconds > 0.0, "{seconds}");
        assert!(seconds.fract() != 0.0, "whole seconds only: {seconds}");
        let rss = families
            .iter()
            .find(|f| f.name() == "process_resident_memory_bytes")
            .unwrap();
        assert!(rss.get_metric()[0].get_gauge().get_value() > 1e6);
        assert!(families
            .iter()
            .any(|f| f.name() == "process_start_time_seconds"));
    }
}
