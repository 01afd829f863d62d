//! A private network namespace for one test thread, with random UDP loss from nft.
//!
//! [`LossyLoopback::enter`] moves the calling thread into a new network namespace (the
//! processes and threads it starts afterwards, the gateway and the load generators, inherit
//! it) whose loopback is up.
//! [`LossyLoopback::drop_udp`] then installs an nft rule that drops the given share of UDP
//! datagrams at random (`numgen random`) in the input hook: on loopback every datagram
//! crosses it once, so each direction of every exchange loses that share, and the sender
//! never learns of it (a drop in the output hook would fail its `sendmsg` with EPERM,
//! which is not what a lossy network does).

use std::io::Write;
use std::process::{Command, Stdio};

/// The calling thread's private network namespace (needs CAP_SYS_ADMIN, `ip` and `nft`).
#[derive(Debug)]
pub struct LossyLoopback {
    _private: (),
}

impl LossyLoopback {
    /// Unshares the network namespace of the calling thread and brings its loopback up.
    pub fn enter() -> LossyLoopback {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| {
            panic!("unshare(CLONE_NEWNET) failed ({e}): the loss tests must run as root")
        });
        run("ip", &["link", "set", "lo", "up"], None);
        LossyLoopback { _private: () }
    }

    /// Drops `per_mille`/1000 of the UDP datagrams sent in this namespace, at random.
    pub fn drop_udp(&self, per_mille: u32) {
        let rules = format!(
            "table inet loss {{\n  chain input {{\n    type filter hook input priority 0;\n    \
             meta l4proto udp numgen random mod 1000 < {per_mille} counter drop\n  }}\n}}\n"
        );
        run("nft", &["-f", "-"], Some(&rules));
    }

    /// Adds `address` (CIDR, e.g. `10.1.0.1/24` or `fd00:1::1/64`) to the loopback, so
    /// that tests can play hosts on several networks.
    pub fn add_address(&self, address: &str) {
        let mut args = vec!["addr", "add", address, "dev", "lo"];
        if address.contains(':') {
            args.push("nodad"); // usable at once, no duplicate address detection
        }
        run("ip", &args, None);
    }

    /// How many datagrams the loss rule dropped so far.
    pub fn dropped(&self) -> u64 {
        let output = Command::new("nft")
            .args(["list", "table", "inet", "loss"])
            .output()
            .expect("run nft");
        let text = String::from_utf8_lossy(&output.stdout);
        text.split_once("counter packets ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

fn run(program: &str, args: &[&str], input: Option<&str>) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{program} not found ({e}): install iproute2 and nftables (scripts/test.sh does)"
            )
        });
    if let Some(text) = input {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write to nft");
    }
    let output = child.wait_with_output().expect("wait");
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
