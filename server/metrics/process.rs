//! The standard Prometheus process metrics, read from the kernel at each
//! scrape, written straight into the exposition text.
//!
//! Written here rather than taken from a collector crate because
//! `process_cpu_seconds_total` must be exact: the `metrics` crate's
//! counters are integers, so a collector built on it reports whole
//! seconds, and `rate()` over a scrape interval then jumps between 0 and
//! whole cores. CPU time comes from `getrusage` (microseconds); the rest
//! from `/proc/self` (Linux; elsewhere those lines are left out).

use std::fmt::Write;

/// A metric's name, type, help text and value.
struct Sample {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: f64,
}

/// Appends every process metric that can be read to `out`.
pub(super) fn render(out: &mut String) {
    for s in samples() {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n",
            name = s.name,
            help = s.help,
            kind = s.kind,
            value = s.value,
        );
    }
}

/// Names of the process metrics, for the tests and dashboards.
#[cfg(test)]
pub(super) const NAMES: &[&str] = &[
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_threads",
    "process_start_time_seconds",
];

fn samples() -> Vec<Sample> {
    let mut out = Vec::with_capacity(8);
    let mut push = |name, kind, help, value: Option<f64>| {
        if let Some(value) = value {
            out.push(Sample {
                name,
                kind,
                help,
                value,
            });
        }
    };
    push(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        cpu_seconds(),
    );
    let stat = Stat::read();
    let page = sysconf(libc::_SC_PAGESIZE);
    push(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        stat.as_ref().zip(page).map(|(s, page)| s.rss_pages * page),
    );
    push(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        stat.as_ref().map(|s| s.vsize),
    );
    push(
        "process_virtual_memory_max_bytes",
        "gauge",
        "Maximum amount of virtual memory available in bytes (0: no limit).",
        limit(libc::RLIMIT_AS),
    );
    push(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as f64),
    );
    push(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        limit(libc::RLIMIT_NOFILE),
    );
    push(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        stat.as_ref().map(|s| s.threads),
    );
    push(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        stat.as_ref()
            .zip(boot_time())
            .zip(sysconf(libc::_SC_CLK_TCK))
            .map(|((s, boot), ticks)| boot + s.start_ticks / ticks),
    );
    out
}

/// User plus system CPU time of the whole process, to the microsecond.
fn cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is
    // given, which points to space for one; it is read only on success.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

fn sysconf(name: libc::c_int) -> Option<f64> {
    // SAFETY: sysconf only reads a configuration value; any name is safe
    // to ask for (an unknown one returns -1).
    let value = unsafe { libc::sysconf(name) };
    (value > 0).then_some(value as f64)
}

/// A resource's soft limit; 0 when unlimited.
fn limit(resource: libc::__rlimit_resource_t) -> Option<f64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct it points to.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return None;
    }
    Some(if limit.rlim_cur == libc::RLIM_INFINITY {
        0.0
    } else {
        limit.rlim_cur as f64
    })
}

/// When the machine booted, in seconds since the epoch.
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, PartialEq)]
struct Stat {
    threads: f64,
    start_ticks: f64,
    vsize: f64,
    rss_pages: f64,
}

impl Stat {
    fn read() -> Option<Stat> {
        Stat::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// Fields are counted after the command name, which is in parentheses
    /// and may itself hold spaces and parentheses.
    fn parse(text: &str) -> Option<Stat> {
        let after = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // `fields[0]` is field 3 (state) of proc(5).
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        Some(Stat {
            threads: field(20)?,
            start_ticks: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parses_around_odd_command_names() {
        let line = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 25 0 0 20 0 7 0 12345 1000000 250 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                threads: 7.0,
                start_ticks: 12345.0,
                vsize: 1_000_000.0,
                rss_pages: 250.0,
            })
        );
        assert_eq!(Stat::parse("no parenthesis"), None);
    }

    #[test]
    fn cpu_time_is_not_whole_seconds() {
        // Burn a little CPU: the counter moves by less than a second.
        let before = cpu_seconds().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = cpu_seconds().unwrap();
        assert!(after > before, "{before} -> {after}");
        assert!(after.fract() != 0.0 || before.fract() != 0.0);
    }

    #[test]
    fn every_metric_is_rendered_on_linux() {
        let mut text = String::new();
        render(&mut text);
        for name in NAMES {
            assert!(text.contains(&format!("\n{name} ")), "{name} in {text}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    }
}
