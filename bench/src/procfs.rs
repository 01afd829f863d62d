//! What the kernel says a process and the machine spent: CPU time and resident memory from
//! `/proc`, so benchmarks can report CPU per call or packet and memory per registration;
//! datagrams dropped at full UDP sockets, so they can say where packets were lost.

use std::collections::HashSet;

/// Clock ticks per second of `/proc` CPU counters (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of a `/proc/.../stat` line, in seconds.
pub fn stat_cpu_seconds(stat: &str) -> f64 {
    let after_name = stat.rsplit_once(')').map_or(stat, |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / TICKS_PER_SECOND
}

/// The parent pid field of a `/proc/.../stat` line.
fn stat_parent(stat: &str) -> Option<u32> {
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Process `pid` and its live children, each with its `/proc/.../stat` line.
fn process_tree(pid: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|candidate| {
            let stat = std::fs::read_to_string(format!("/proc/{candidate}/stat")).ok()?;
            (candidate == pid || stat_parent(&stat) == Some(pid)).then_some((candidate, stat))
        })
        .collect()
}

/// CPU time (user + system, all threads) of process `pid` and of its live children, seconds.
/// Kamailio works in forked children, the gateway in threads; this counts both the same way.
pub fn process_tree_cpu_seconds(pid: u32) -> f64 {
    process_tree(pid)
        .iter()
        .map(|(_, stat)| stat_cpu_seconds(stat))
        .sum()
}

/// Proportional set size of process `pid` and its live children, KiB: memory shared
/// between them (Kamailio's shared memory segment, libraries) counted once in all, so a
/// forking server and a threaded one are measured alike.
pub fn process_tree_pss_kib(pid: u32) -> u64 {
    process_tree(pid)
        .iter()
        .filter_map(|(process, _)| {
            let rollup = std::fs::read_to_string(format!("/proc/{process}/smaps_rollup")).ok()?;
            rollup
                .lines()
                .find_map(|line| line.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// Busy CPU time of the whole machine so far (all cores, everything but idle and iowait),
/// seconds. Loopback charges receive work to the sender's core, so per-packet and per-call
/// costs are fairest measured here as well as per process.
pub fn system_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse::<u64>().ok())
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy as f64 / TICKS_PER_SECOND
}

/// Resident memory of process `pid` (`VmRSS`), KiB; 0 when it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// What the kernel holds for a set of IPv4 UDP sockets: from `/proc/net/udp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    /// Datagrams dropped so far at a full receive queue (the `drops` column).
    pub drops: u64,
    /// Bytes waiting in the receive queues now (`rx_queue`, kernel buffer accounting).
    pub queued_bytes: u64,
}

/// The sockets bound to these local ports, summed: what tells a relay that could not keep
/// up from a benchmark sink that could not.
pub fn udp_counters(ports: &HashSet<u16>) -> UdpCounters {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    udp_table_counters(&table, ports)
}

fn udp_table_counters(table: &str, ports: &HashSet<u16>) -> UdpCounters {
    let mut sum = UdpCounters::default();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = fields
            .get(1)
            .and_then(|local| local.rsplit_once(':'))
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok());
        if !port.is_some_and(|port| ports.contains(&port)) {
            continue;
        }
        let queued = fields
            .get(4)
            .and_then(|queues| queues.split_once(':'))
            .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok());
        let drops = fields.last().and_then(|d| d.parse::<u64>().ok());
        sum.queued_bytes += queued.unwrap_or(0);
        sum.drops += drops.unwrap_or(0);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_parent_come_from_the_fields_after_the_name() {
        // A process name with spaces and a parenthesis, as comm may hold.
        let stat = "42 (a (b) c) S 7 42 42 0 -1 4194304 1 0 0 0 250 150 0 0 20 0 3 0";
        assert_eq!(stat_parent(stat), Some(7));
        assert!((stat_cpu_seconds(stat) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn this_process_has_resident_memory_and_the_machine_has_been_busy() {
        assert!(rss_kib(std::process::id()) > 0);
        assert!(process_tree_pss_kib(std::process::id()) > 0);
        assert!(system_busy_seconds() > 0.0);
        assert_eq!(rss_kib(u32::MAX), 0);
    }

    #[test]
    fn drops_and_queues_are_summed_over_the_sockets_of_the_ports_asked_for() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
   1: 0100007F:C350 00000000:0000 07 00000000:00000400 00:00000000 00000000     0        0 11 2 0000000000000000 5\n\
   2: 0100007F:C351 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 12 2 0000000000000000 7\n\
   3: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 13 2 0000000000000000 100\n";
        let ports = HashSet::from([50_000, 50_001, 9]);
        let counters = udp_table_counters(table, &ports);
        assert_eq!((counters.drops, counters.queued_bytes), (12, 1024));
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = socket.local_addr().expect("address").port();
        assert_eq!(udp_counters(&HashSet::from([port])), UdpCounters::default());
    }
}
