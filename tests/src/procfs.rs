//! What a process costs, read from `/proc`: resident memory and CPU time (for benchmarks and
//! resource bounds).

use std::time::Duration;

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory `pid` has had so far (its high-water mark), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("a {field} line in /proc/{pid}/status"))
}

/// User plus system CPU time `pid` has used so far (all its threads).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis are
    // space-separated, utime and stime being the 12th and 13th of them.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / per_second)
}

/// RSS once it stops moving (bounded to five seconds).
pub async fn settled_rss_kib(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rss_kib(pid);
        if now.abs_diff(last) * 1000 <= last {
            return now;
        }
        last = now;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let rss = rss_kib(me);
        assert!(rss > 0);
        assert!(peak_rss_kib(me) >= rss);
        let before = cpu_time(me);
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(cpu_time(me) >= before, "{x}");
    }
}
