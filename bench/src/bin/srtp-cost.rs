//! CPU cost of SRTP per packet where the gateway terminates it (the analog ports): protect
//! and unprotect of a 20 ms G.711 packet (12-byte header, 160-byte payload) for each suite
//! the ports speak, next to what the port's media session itself spends per packet
//! (jitter buffer in, packetising out), measured in the same run. The media relay passes
//! SRTP through unchanged (it reads only the clear RTP header), so it adds nothing there.
//! Writes `target/bench-results/srtp-cost.{md,svg}`.
//!
//! Run: `cargo run --release -p bench --bin srtp-cost`.

use bench::report::{self, BarChart, Table};
use gateway::srtp::sdes::{KeyMaterial, Suite};
use gateway::srtp::session::SrtpSession;
use std::hint::black_box;
use std::time::Instant;
use telephony_hw::dahdi::channel::BLOCK_SIZE;
use telephony_hw::dsp::g711::Law;
use telephony_hw::line::driver::CallAudio;
use telephony_hw::media::rtp_out::MAX_PACKET;
use telephony_hw::media::session::{MediaFormat, MediaSession, StreamStart};

/// Packets per measurement (about 5.5 hours of one call's audio).
const PACKETS: u32 = 1_000_000;

fn packet(sequence: u16) -> Vec<u8> {
    let mut rtp = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
    rtp[2..4].copy_from_slice(&sequence.to_be_bytes());
    rtp[4..8].copy_from_slice(&(u32::from(sequence) * 160).to_be_bytes());
    rtp.extend_from_slice(&[0xd5; 160]);
    rtp
}

/// Nanoseconds per packet of `work` over [`PACKETS`] packets.
fn per_packet(mut work: impl FnMut(u32)) -> f64 {
    let started = Instant::now();
    for n in 0..PACKETS {
        work(n);
    }
    started.elapsed().as_nanos() as f64 / f64::from(PACKETS)
}

/// (protect ns, unprotect ns) per packet for `suite`.
fn srtp_costs(suite: Suite) -> (f64, f64) {
    let (ours, theirs) = (KeyMaterial::generate(suite), KeyMaterial::generate(suite));
    let mut sender = SrtpSession::new(suite, &ours, &theirs).expect("context");
    let mut receiver = SrtpSession::new(suite, &theirs, &ours).expect("context");
    let plain: Vec<Vec<u8>> = (0..1024u16).map(packet).collect();
    let protect = per_packet(|n| {
        black_box(
            sender
                .protect(&plain[n as usize % plain.len()])
                .expect("protect"),
        );
    });
    // Fresh packets in order, so none is a replay.
    let mut sequence = 0u16;
    let mut protected = Vec::with_capacity(PACKETS as usize);
    for _ in 0..PACKETS {
        sequence = sequence.wrapping_add(1);
        protected.push(receiver_side(&mut sender, sequence));
    }
    let unprotect = per_packet(|n| {
        black_box(
            receiver
                .unprotect(&protected[n as usize])
                .expect("unprotect"),
        );
    });
    (protect, unprotect)
}

fn receiver_side(sender: &mut SrtpSession, sequence: u16) -> Vec<u8> {
    sender.protect(&packet(sequence)).expect("protect")
}

/// What an analog port's media session spends per packet without SRTP: one packet in
/// (jitter buffer), 20 ms played to the line from it, 20 ms of line audio out as a packet.
fn media_session_cost() -> f64 {
    let format = MediaFormat {
        law: Law::Ulaw,
        payload_type: 0,
        event_payload_type: Some(101),
    };
    let start = StreamStart {
        ssrc: 1,
        sequence: 0,
        timestamp: 0,
    };
    let mut session = MediaSession::new(format, start);
    let packets: Vec<Vec<u8>> = (0..=u16::MAX).map(packet).collect();
    let (line, mut played) = ([0i16; BLOCK_SIZE], [0i16; BLOCK_SIZE]);
    let mut out = [0u8; MAX_PACKET];
    per_packet(|n| {
        session.set_now(u64::from(n) * 20);
        session.receive(&packets[n as usize % packets.len()]);
        session.play_to_line(&mut played);
        session.heard_on_line(&line);
        while let Some(len) = session.pop_packet(&mut out) {
            black_box(len);
        }
    })
}

fn main() {
    let media = media_session_cost();
    let mut table = Table::new(&[
        "per 20 ms G.711 packet",
        "protect ns",
        "unprotect ns",
        "both / media session",
    ]);
    table.row(vec![
        "analog port media session (no SRTP)".into(),
        String::new(),
        format!("{media:.0} (in, play, out)"),
        "1.00".into(),
    ]);
    let mut series = Vec::new();
    for suite in Suite::ALL {
        let (protect, unprotect) = srtp_costs(suite);
        eprintln!(
            "  {}: protect {protect:.0} ns, unprotect {unprotect:.0} ns",
            suite.name()
        );
        table.row(vec![
            suite.name().into(),
            format!("{protect:.0}"),
            format!("{unprotect:.0}"),
            format!("{:.2}", (protect + unprotect) / media),
        ]);
        series.push((suite.name().to_string(), vec![protect, unprotect]));
    }
    print!("{}", table.render());
    let chart = BarChart {
        title: "SRTP cost per packet at an analog port".into(),
        unit: "ns".into(),
        categories: vec!["protect".into(), "unprotect".into()],
        series,
    };
    match report::write("srtp-cost", &table, &chart) {
        Ok((md, svg)) => eprintln!("wrote {} and {}", md.display(), svg.display()),
        Err(e) => eprintln!("could not write the results: {e}"),
    }
}
