//! SIP call rate of the gateway, as RFC 7501/7502 define it: the highest rate of full calls
//! (INVITE with digest, 180, 200, ACK, hold, BYE) with zero failed calls, by binary search,
//! driven by the load generator in `bench::sipload` through the real gateway binary. Prints
//! each step and a table, writes `target/bench-results/sip-load.{md,svg}`.
//!
//! Run: `cargo run --release -p bench --bin sip-load -- [--quick]` (needs `cargo build
//! --release -p gateway` first; `scripts/bench.sh` does both). Kamailio side by side: next.

use bench::report::{self, BarChart, Table};
use bench::sipload::{run, LoadConfig};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Extensions on each side.
const PHONES: u32 = 100;

fn extensions(first: u32) -> Vec<(String, String)> {
    (first..first + PHONES)
        .map(|n| (n.to_string(), format!("pw{n}")))
        .collect()
}

struct Gateway {
    child: Child,
    addr: SocketAddr,
    _dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_gateway(callers: &[(String, String)], callees: &[(String, String)]) -> Gateway {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = root.join("target/release/gateway");
    assert!(
        binary.exists(),
        "{} missing: cargo build --release -p gateway",
        binary.display()
    );
    let dir = std::env::temp_dir().join(format!("sip-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let port = free_port();
    let mut config = format!(
        "[sip]\nlisten = \"127.0.0.1:{port}\"\ntransports = [\"udp\"]\n[auth]\nrealm = \"load\"\nalgorithms = [\"MD5\"]\n\
[calls]\nring_timeout_secs = 30\n[database]\npath = \"{}\"\n[media]\nanchor = \"never\"\n",
        dir.join("gateway.db").display()
    );
    for (number, password) in callers.iter().chain(callees) {
        config.push_str(&format!(
            "[[extension]]\nnumber = \"{number}\"\npassword = \"{password}\"\n"
        ));
    }
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, config).expect("write the config");
    let child = Command::new(binary)
        .arg("--config")
        .arg(&config_path)
        .arg("--log")
        .arg("warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway");
    std::thread::sleep(Duration::from_millis(500));
    Gateway {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _dir: dir,
    }
}

/// One trial: `rate` calls/s for `seconds`; true when no call failed.
fn trial(gateway: &Gateway, rate: f64, seconds: f64) -> (bool, bench::sipload::LoadReport) {
    let report = run(&LoadConfig {
        server: gateway.addr,
        callers: extensions(20_000),
        callees: extensions(30_000),
        rate,
        calls: (rate * seconds).max(1.0) as u64,
        hold: Duration::from_millis(500),
        timeout: Duration::from_secs(5),
    })
    .expect("the load generator runs");
    (report.failed == 0, report)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (runs, seconds, steps) = if quick { (1, 2.0, 5) } else { (3, 5.0, 7) };
    let mut results = Vec::new();
    let mut table = Table::new(&[
        "run",
        "zero-failure calls/s",
        "setup p50 ms",
        "setup p99 ms",
    ]);
    for run_number in 1..=runs {
        let (mut low, mut high) = (20.0f64, 4000.0f64);
        let mut best = None;
        for step in 1..=steps {
            // A fresh gateway per step: no leftover dialogs skew the next rate.
            let gateway = start_gateway(&extensions(20_000), &extensions(30_000));
            let rate = (low + high) / 2.0;
            let started = Instant::now();
            let (ok, report) = trial(&gateway, rate, seconds);
            eprintln!(
                "[run {run_number}/{runs}, step {step}/{steps}] {rate:.0} calls/s: {} completed, {} failed ({:.1} s) -> {}",
                report.completed,
                report.failed,
                started.elapsed().as_secs_f64(),
                if ok { "ok" } else { "failures" }
            );
            if ok {
                low = rate;
                best = Some(report);
            } else {
                high = rate;
            }
        }
        let (p50, p99) = best.as_ref().map_or((0.0, 0.0), |r| {
            (
                r.setup_us.value_at_quantile(0.5) as f64 / 1000.0,
                r.setup_us.value_at_quantile(0.99) as f64 / 1000.0,
            )
        });
        table.row(vec![
            run_number.to_string(),
            format!("{low:.0}"),
            format!("{p50:.2}"),
            format!("{p99:.2}"),
        ]);
        results.push(low);
    }
    results.sort_by(f64::total_cmp);
    let median = results[results.len() / 2];
    table.row(vec![
        "median".into(),
        format!("{median:.0}"),
        String::new(),
        String::new(),
    ]);
    let chart = BarChart {
        title: "Zero-failure call rate (RFC 7501), full calls through the B2BUA".into(),
        unit: "calls per second".into(),
        categories: vec!["gateway (ours)".into()],
        series: vec![("median of runs".into(), vec![median])],
    };
    print!("{}", table.render());
    match report::write("sip-load", &table, &chart) {
        Ok((md, svg)) => eprintln!("written: {} {}", md.display(), svg.display()),
        Err(e) => eprintln!("could not write results: {e}"),
    }
}
