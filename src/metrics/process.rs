//! The standard `process_*` metrics every Prometheus exporter has (open and maximum
//! descriptors, resident memory, CPU seconds, start time), read from /proc at each scrape.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The standard `process_*` metrics, read from /proc at each scrape.
#[derive(Debug)]
pub struct Process {
    open_fds: Gauge,
    max_fds: Gauge,
    resident_memory_bytes: Gauge,
    /// CPU seconds (user and system) as a counter of f64.
    cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// The CPU time at the last scrape, to move the counter by the difference.
    cpu_seen: std::sync::Mutex<f64>,
    start_time_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Process {
    pub fn register(root: &mut Registry) -> Process {
        let p = Process {
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            resident_memory_bytes: Gauge::default(),
            cpu_seconds: Counter::default(),
            cpu_seen: std::sync::Mutex::new(0.0),
            start_time_seconds: Gauge::default(),
        };
        root.register(
            "process_open_fds",
            "Open file descriptors",
            p.open_fds.clone(),
        );
        root.register(
            "process_max_fds",
            "The open-file limit (RLIMIT_NOFILE)",
            p.max_fds.clone(),
        );
        root.register(
            "process_resident_memory_bytes",
            "Resident memory (VmRSS)",
            p.resident_memory_bytes.clone(),
        );
        root.register(
            "process_cpu_seconds",
            "CPU time used, user and system",
            p.cpu_seconds.clone(),
        );
        root.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch",
            p.start_time_seconds.clone(),
        );
        p.observe();
        p
    }

    pub fn observe(&self) {
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            self.max_fds.set(limit.rlim_cur.min(i64::MAX as u64) as i64);
        }
        if let Some(rss) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| status_kib(&s, "VmRSS:"))
        {
            self.resident_memory_bytes.set((rss * 1024) as i64);
        }
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which may hold spaces) in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            if ticks > 0.0 {
                let cpu = (utime + stime) / ticks;
                let mut seen = self.cpu_seen.lock().unwrap_or_else(|e| e.into_inner());
                if cpu > *seen {
                    self.cpu_seconds.inc_by(cpu - *seen);
                    *seen = cpu;
                }
            }
        }
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        if let (Some(boot), Some(start), true) = (boot, field(22), ticks > 0.0) {
            self.start_time_seconds.set(boot + start / ticks);
        }
    }
}

/// A `Key:   N kB` value of /proc/PID/status, in KiB.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
