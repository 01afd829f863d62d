//! RTP relay benchmark, side by side in one run: our relay on io_uring, our relay on epoll,
//! and rtpengine 10.5 in userspace mode (driven through its ng control protocol), each
//! forwarding 1,000 streams offered at 50k, 100k and 150k packets/s; then the highest
//! zero-loss rate of each by binary search. Reports CPU per forwarded packet (system-wide
//! and the relay's own), loss and added latency (p50/p99/p99.9), prints a table with the
//! ratios and writes `target/bench-results/rtp-relay.{md,svg}`.
//!
//! Run: `scripts/bench.sh` (installs rtpengine-daemon), or
//! `cargo run --release -p bench --bin rtp-relay -- [--quick]`.

use bench::procfs::{stat_cpu_seconds, system_busy_seconds};
use bench::report::{self, BarChart, Table};
use fastpath::relay::{LegSockets, RelayCommand, RelayConfig, RelayHandler};
use fastpath::udp::{BackendChoice, Handler, Io, Worker, WorkerConfig};
use hdrhistogram::Histogram;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Streams (calls) relayed at once.
const STREAMS: usize = 1000;
/// Bytes of one packet: RTP header + 20 ms of G.711.
const PACKET: usize = 172;
/// The core the relay under test runs on; the generator and the sink share the other.
const RELAY_CORE: usize = 1;
const LOAD_CORE: usize = 0;

/// The receiving end of every stream: counts packets and records their latency.
struct Sink {
    start: Instant,
    received: u64,
    latency: Histogram<u64>,
}

enum SinkCommand {
    Reset,
    Report(crossbeam_channel::Sender<(u64, Histogram<u64>)>),
}

impl Handler for Sink {
    type Command = SinkCommand;

    fn datagram(&mut self, _io: &mut Io, _socket: usize, _from: SocketAddr, bytes: &[u8]) {
        if bytes.len() < 20 {
            return;
        }
        self.received += 1;
        let sent = u64::from_be_bytes(bytes[12..20].try_into().unwrap_or_default());
        let now = self.start.elapsed().as_nanos() as u64;
        let _ = self.latency.record(now.saturating_sub(sent).max(1));
    }

    fn command(&mut self, _io: &mut Io, command: SinkCommand) {
        match command {
            SinkCommand::Reset => {
                self.received = 0;
                self.latency.reset();
            }
            SinkCommand::Report(reply) => {
                let _ = reply.send((self.received, self.latency.clone()));
            }
        }
    }
}

/// The relay under test.
enum Relay {
    Ours(Worker<RelayCommand>),
    Rtpengine(Child),
}

impl Relay {
    fn name(&self) -> String {
        match self {
            Relay::Ours(worker) => format!("ours ({})", worker.backend()),
            Relay::Rtpengine(_) => "rtpengine 10.5".into(),
        }
    }

    /// The relay's own CPU time so far (user + system), seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = match self {
            Relay::Ours(_) => thread_stat("rtp-relay-bench"),
            Relay::Rtpengine(child) => {
                std::fs::read_to_string(format!("/proc/{}/stat", child.id())).ok()
            }
        };
        stat.map_or(0.0, |s| stat_cpu_seconds(&s))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Relay::Rtpengine(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The /proc stat line of this process's thread named `name`.
fn thread_stat(name: &str) -> Option<String> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .flatten()
        .find_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            (comm.trim() == name)
                .then(|| std::fs::read_to_string(task.path().join("stat")).ok())
                .flatten()
        })
}

fn pin(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(core).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

fn loopback() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket")
}

/// Our relay, with one relay per stream from `senders[i]` to `receivers[i]`.
fn start_ours(
    backend: BackendChoice,
    senders: &[SocketAddr],
    receivers: &[SocketAddr],
) -> (Relay, Vec<SocketAddr>) {
    let (events, _ignored) = crossbeam_channel::unbounded();
    let config = WorkerConfig {
        name: "rtp-relay-bench".into(),
        backend,
        core: Some(RELAY_CORE),
        buffer_size: 2048,
        buffers: 4096,
        tick: None,
    };
    let worker = Worker::spawn(
        config,
        Vec::new(),
        RelayHandler::new(RelayConfig::default(), events),
    )
    .expect("start our relay");
    let control = worker.sender();
    let mut targets = Vec::with_capacity(senders.len());
    for (i, (&from, &to)) in senders.iter().zip(receivers).enumerate() {
        let (a_rtp, a_rtcp, b_rtp, b_rtcp) = (loopback(), loopback(), loopback(), loopback());
        targets.push(a_rtp.local_addr().expect("address"));
        control.command(RelayCommand::Install {
            id: i as u64,
            legs: [
                LegSockets {
                    rtp: a_rtp,
                    rtcp: a_rtcp,
                    peer: Some(from),
                },
                LegSockets {
                    rtp: b_rtp,
                    rtcp: b_rtcp,
                    peer: Some(to),
                },
            ],
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    (Relay::Ours(worker), targets)
}

#[derive(serde::Serialize)]
struct NgRequest<'a> {
    command: &'a str,
    #[serde(rename = "call-id")]
    call_id: &'a str,
    #[serde(rename = "from-tag")]
    from_tag: &'a str,
    #[serde(rename = "to-tag", skip_serializing_if = "Option::is_none")]
    to_tag: Option<&'a str>,
    sdp: &'a str,
}

#[derive(serde::Deserialize)]
struct NgResponse {
    result: String,
    sdp: Option<String>,
    #[serde(rename = "error-reason")]
    error_reason: Option<String>,
}

fn sdp_for(addr: SocketAddr) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\n",
        addr.port()
    )
}

fn audio_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One ng exchange with rtpengine; returns the SDP it answers with.
fn ng(control: &UdpSocket, cookie: usize, request: &NgRequest<'_>) -> String {
    let mut datagram = format!("{cookie} ").into_bytes();
    datagram.extend(serde_bencode::to_bytes(request).expect("bencode"));
    control.send(&datagram).expect("ng send");
    let mut buffer = vec![0u8; 65_536];
    let n = control.recv(&mut buffer).expect("ng answer within 5 s");
    let body = buffer[..n]
        .splitn(2, |&b| b == b' ')
        .nth(1)
        .expect("ng cookie");
    let response: NgResponse = serde_bencode::from_bytes(body).expect("ng answer decodes");
    assert_eq!(
        response.result, "ok",
        "rtpengine: {:?}",
        response.error_reason
    );
    response.sdp.expect("an SDP")
}

/// rtpengine in userspace mode on the relay core, one call per stream via offer/answer.
fn start_rtpengine(senders: &[SocketAddr], receivers: &[SocketAddr]) -> (Relay, Vec<SocketAddr>) {
    let child = Command::new("taskset")
        .args(["-c", &RELAY_CORE.to_string(), "rtpengine"])
        .args([
            "--config-file=none",
            "--table=-1",
            "--interface=127.0.0.1",
            "--listen-ng=127.0.0.1:2223",
            "--num-threads=1",
            "--foreground",
            "--port-min=50000",
            "--port-max=59999",
            "--log-level=3",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rtpengine (package rtpengine-daemon; scripts/bench.sh installs it)");
    let relay = Relay::Rtpengine(child);
    let control = loopback();
    control
        .connect("127.0.0.1:2223")
        .expect("ng control address");
    control
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    std::thread::sleep(Duration::from_millis(500));
    let mut targets = Vec::with_capacity(senders.len());
    for (i, (&from, &to)) in senders.iter().zip(receivers).enumerate() {
        let call_id = format!("bench-{i}");
        let offer_sdp = sdp_for(from);
        ng(
            &control,
            2 * i,
            &NgRequest {
                command: "offer",
                call_id: &call_id,
                from_tag: "a",
                to_tag: None,
                sdp: &offer_sdp,
            },
        );
        let answer_sdp = sdp_for(to);
        let to_caller = ng(
            &control,
            2 * i + 1,
            &NgRequest {
                command: "answer",
                call_id: &call_id,
                from_tag: "a",
                to_tag: Some("b"),
                sdp: &answer_sdp,
            },
        );
        let port = audio_port(&to_caller).expect("rtpengine's port for the caller");
        targets.push(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    (relay, targets)
}

/// One measured run.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    offered: f64,
    forwarded: f64,
    loss: f64,
    system_us: f64,
    relay_us: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

struct Bench {
    start: Instant,
    /// Every stream's packets leave from this one socket (sendmmsg batches).
    sender: UdpSocket,
    sink: Worker<SinkCommand>,
}

/// Packets per sendmmsg call of the generator.
const BATCH: usize = 64;

impl Bench {
    fn new() -> Bench {
        let start = Instant::now();
        let sender = loopback();
        let _ =
            nix::sys::socket::setsockopt(&sender, nix::sys::socket::sockopt::SndBuf, &(4 << 20));
        let receivers: Vec<UdpSocket> = (0..STREAMS).map(|_| loopback()).collect();
        let sink = Worker::spawn(
            WorkerConfig {
                name: "bench-sink".into(),
                backend: BackendChoice::Epoll,
                core: Some(LOAD_CORE),
                buffer_size: 2048,
                buffers: 1024,
                tick: None,
            },
            receivers,
            Sink {
                start,
                received: 0,
                latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram"),
            },
        )
        .expect("start the sink");
        Bench {
            start,
            sender,
            sink,
        }
    }

    fn sender_addrs(&self) -> Vec<SocketAddr> {
        vec![self.sender.local_addr().expect("address"); STREAMS]
    }

    fn receiver_addrs(&self) -> Vec<SocketAddr> {
        self.sink.local_addrs().to_vec()
    }

    /// Offers `rate` packets/s across all streams for `seconds` through `targets`.
    fn run(&self, relay: &Relay, targets: &[SocketAddr], rate: u64, seconds: f64) -> Run {
        let control = self.sink.sender();
        control.command(SinkCommand::Reset);
        std::thread::sleep(Duration::from_millis(50));
        let (busy0, relay0) = (system_busy_seconds(), relay.cpu_seconds());
        let began = Instant::now();
        let sent = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    pin(LOAD_CORE);
                    self.offer(targets, rate, seconds)
                })
                .join()
                .expect("generator")
        });
        std::thread::sleep(Duration::from_millis(200)); // in flight
        let elapsed = began.elapsed().as_secs_f64() - 0.2;
        let (busy1, relay1) = (system_busy_seconds(), relay.cpu_seconds());
        let (reply, answer) = crossbeam_channel::bounded(1);
        control.command(SinkCommand::Report(reply));
        let (received, latency) = answer
            .recv_timeout(Duration::from_secs(5))
            .expect("sink report");
        let forwarded = received.max(1) as f64;
        Run {
            offered: sent as f64 / elapsed,
            forwarded: received as f64 / elapsed,
            loss: 1.0 - received as f64 / sent.max(1) as f64,
            system_us: (busy1 - busy0) * 1e6 / forwarded,
            relay_us: (relay1 - relay0) * 1e6 / forwarded,
            p50_us: latency.value_at_quantile(0.5) as f64 / 1000.0,
            p99_us: latency.value_at_quantile(0.99) as f64 / 1000.0,
            p999_us: latency.value_at_quantile(0.999) as f64 / 1000.0,
        }
    }

    /// The generator: paced by the clock, round robin over the streams, BATCH packets per
    /// sendmmsg call.
    fn offer(&self, targets: &[SocketAddr], rate: u64, seconds: f64) -> u64 {
        use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn};
        use std::io::IoSlice;
        use std::os::fd::AsRawFd;
        let addrs: Vec<SockaddrIn> = targets
            .iter()
            .map(|t| match t {
                SocketAddr::V4(v4) => SockaddrIn::from(*v4),
                SocketAddr::V6(_) => unreachable!("the benchmark runs on 127.0.0.1"),
            })
            .collect();
        let mut packets = vec![[0u8; PACKET]; BATCH];
        let mut sequence = vec![0u16; STREAMS];
        let began = Instant::now();
        let total = (rate as f64 * seconds) as u64;
        let (mut sent, mut stream) = (0u64, 0usize);
        while sent < total {
            let due = ((began.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
            if sent >= due {
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            let batch = ((due - sent) as usize).min(BATCH);
            let mut destinations = Vec::with_capacity(batch);
            let now = self.start.elapsed().as_nanos() as u64;
            for packet in packets.iter_mut().take(batch) {
                packet[0] = 0x80;
                packet[2..4].copy_from_slice(&sequence[stream].to_be_bytes());
                packet[4..8].copy_from_slice(&(u32::from(sequence[stream]) * 160).to_be_bytes());
                packet[8..12].copy_from_slice(&(stream as u32).to_be_bytes());
                packet[12..20].copy_from_slice(&now.to_be_bytes());
                destinations.push(Some(addrs[stream]));
                sequence[stream] = sequence[stream].wrapping_add(1);
                stream = (stream + 1) % STREAMS;
            }
            let slices: Vec<[IoSlice<'_>; 1]> =
                packets[..batch].iter().map(|p| [IoSlice::new(p)]).collect();
            let mut headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
            let no_cmsgs: [ControlMessage<'_>; 0] = [];
            // A full socket buffer drops the rest of the batch: it counts as offered and lost.
            let _ = sendmmsg(
                self.sender.as_raw_fd(),
                &mut headers,
                &slices,
                &destinations,
                no_cmsgs,
                MsgFlags::empty(),
            );
            sent += batch as u64;
        }
        sent
    }
}

fn raise_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(65_536), hard);
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rates, seconds, search_seconds, steps): (&[u64], f64, f64, u32) = if quick {
        (&[50_000, 100_000], 1.5, 1.0, 4)
    } else {
        (&[50_000, 100_000, 150_000], 4.0, 2.0, 8)
    };
    raise_file_limit();
    let bench = Bench::new();
    let (senders, receivers) = (bench.sender_addrs(), bench.receiver_addrs());
    let kinds = ["io_uring", "epoll", "rtpengine"];
    let mut results: Vec<(String, Vec<Run>, f64)> = Vec::new();
    let total_steps = kinds.len() * (rates.len() + steps as usize);
    let mut step = 0;
    for kind in kinds {
        let start = || match kind {
            "io_uring" => start_ours(BackendChoice::IoUring, &senders, &receivers),
            "epoll" => start_ours(BackendChoice::Epoll, &senders, &receivers),
            _ => start_rtpengine(&senders, &receivers),
        };
        let (mut relay, mut targets) = start();
        let name = relay.name();
        // Warm up (rtpengine learns addresses, caches fill).
        bench.run(&relay, &targets, 20_000, 0.5);
        let mut runs = Vec::new();
        for &rate in rates {
            step += 1;
            let run = bench.run(&relay, &targets, rate, seconds);
            eprintln!(
                "[{step}/{total_steps}] {name} @ {}pps: forwarded {}pps, loss {:.3}%, {:.2} us/packet system, p99 {:.0} us",
                report::short(rate as f64),
                report::short(run.forwarded),
                run.loss * 100.0,
                run.system_us,
                run.p99_us
            );
            runs.push(run);
        }
        // Upward from the highest loss-free rate measured; an overloaded relay is started
        // afresh before the next step (rtpengine may not recover from an overload).
        let mut low = rates
            .iter()
            .zip(&runs)
            .filter(|(_, run)| run.loss <= 0.0)
            .map(|(&rate, _)| rate)
            .max()
            .unwrap_or(10_000);
        let mut high = 1_000_000u64;
        for _ in 0..steps {
            step += 1;
            let mid = (low + high) / 2;
            let run = bench.run(&relay, &targets, mid, search_seconds);
            // A rate the generator could not offer is not a rate the relay sustained.
            let ok = run.loss <= 0.0 && run.offered >= mid as f64 * 0.97;
            eprintln!(
                "[{step}/{total_steps}] {name} zero-loss search @ {}pps (offered {}): loss {:.3}% -> {}",
                report::short(mid as f64),
                report::short(run.offered),
                run.loss * 100.0,
                if ok { "ok" } else { "loss" }
            );
            if ok {
                low = mid;
            } else {
                high = mid;
                drop(relay);
                std::thread::sleep(Duration::from_millis(300));
                (relay, targets) = start();
                bench.run(&relay, &targets, 20_000, 0.5);
            }
        }
        results.push((name, runs, low as f64));
        drop(relay);
        std::thread::sleep(Duration::from_millis(300));
    }

    let mut table = Table::new(&[
        "relay",
        "offered pps",
        "forwarded pps",
        "loss",
        "CPU us/packet (system)",
        "CPU us/packet (relay)",
        "p50 us",
        "p99 us",
        "p99.9 us",
    ]);
    for (name, runs, _) in &results {
        for run in runs {
            table.row(vec![
                name.clone(),
                report::short(run.offered),
                report::short(run.forwarded),
                format!("{:.3}%", run.loss * 100.0),
                format!("{:.2}", run.system_us),
                format!("{:.2}", run.relay_us),
                format!("{:.0}", run.p50_us),
                format!("{:.0}", run.p99_us),
                format!("{:.0}", run.p999_us),
            ]);
        }
    }
    let reference = results.last().map(|(_, runs, zero)| (runs.clone(), *zero));
    let mut ratios = Table::new(&[
        "relay",
        "zero-loss pps",
        "zero-loss vs rtpengine",
        "system CPU/packet vs rtpengine (per rate)",
    ]);
    for (name, runs, zero) in &results {
        let (reference_runs, reference_zero) = reference.clone().unwrap_or_default();
        let cpu: Vec<String> = runs
            .iter()
            .zip(&reference_runs)
            .map(|(r, base)| {
                format!(
                    "{:.2}x",
                    r.system_us / base.system_us.max(f64::MIN_POSITIVE)
                )
            })
            .collect();
        ratios.row(vec![
            name.clone(),
            report::short(*zero),
            format!("{:.2}x", zero / reference_zero.max(1.0)),
            cpu.join(" / "),
        ]);
    }
    let chart = BarChart {
        title: format!("RTP relay, {STREAMS} streams: system CPU per forwarded packet"),
        unit: "microseconds per packet".into(),
        categories: rates
            .iter()
            .map(|r| format!("{} pps", report::short(*r as f64)))
            .collect(),
        series: results
            .iter()
            .map(|(name, runs, _)| (name.clone(), runs.iter().map(|r| r.system_us).collect()))
            .collect(),
    };
    let text = format!("{}\n{}", table.render(), ratios.render());
    print!("{text}");
    match std::fs::write(report::results_dir().join("rtp-relay.md"), &text)
        .and_then(|()| std::fs::write(report::results_dir().join("rtp-relay.svg"), chart.svg()))
    {
        Ok(()) => eprintln!("written: target/bench-results/rtp-relay.md and rtp-relay.svg"),
        Err(e) => eprintln!("could not write results: {e}"),
    }
}
