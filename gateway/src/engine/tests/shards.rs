//! Engine shards in virtual time: several engines of one gateway, each datagram handed to
//! the shard its Call-ID hashes to, each notice to every other shard, each store answer
//! to the shard it names — what the runtime's shards and their queues do.

use super::*;
use crate::auth::guard::SharedGuard;
use crate::engine::shard::{ResultFor, ShardId, ShardOutput};
use ezk_sip_types::Method;

/// A gateway of `count` shards on one store.
struct Shards {
    engines: Vec<Engine>,
    /// Call-IDs routed away from their hash's shard (what the runtime's routes hold).
    routes: std::collections::HashMap<String, usize>,
    now: Now,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Shards {
    fn new(count: usize) -> Shards {
        Shards::with_config(CONFIG, count)
    }

    /// The quick-start office (201-203 in `sales`, 204 in no group) on `count` shards.
    fn office(count: usize) -> Shards {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/office.toml");
        Shards::with_config(&std::fs::read_to_string(path).unwrap(), count)
    }

    fn with_config(text: &str, count: usize) -> Shards {
        let config = Config::from_toml(text, Path::new("test.toml")).unwrap();
        let now = Now {
            mono: Instant::now(),
            unix_ms: 1_700_000_000_000,
        };
        let guard = SharedGuard::new(config.auth.guard());
        let engines = (0..count)
            .map(|index| {
                let shard = ShardId::new(index, count).unwrap();
                Engine::new_shard(
                    config.clone(),
                    Default::default(),
                    [7; 32],
                    now,
                    shard,
                    guard.clone(),
                )
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        Shards {
            engines,
            routes: Default::default(),
            now,
            store: Store::open(&dir.path().join("gw.db")).unwrap(),
            _dir: dir,
        }
    }

    fn shard_of(&self, call_id: &str) -> usize {
        self.routes
            .get(call_id)
            .copied()
            .unwrap_or_else(|| self.engines[0].shard().of_call_id(call_id))
    }

    /// Hands `text` to the shard its Call-ID names, then lets everything settle.
    fn send(&mut self, from: Peer, text: &str) -> usize {
        let msg = SipMessage::parse_datagram(text.as_bytes()).unwrap();
        let shard = self.shard_of(msg.call_id().unwrap());
        self.engines[shard].handle_datagram(self.now, from, text.as_bytes());
        self.settle();
        shard
    }

    /// Delivers notices and store answers until none is left.
    fn settle(&mut self) {
        loop {
            let mut quiet = true;
            for from in 0..self.engines.len() {
                while let Some(output) = self.engines[from].poll_shard_output() {
                    quiet = false;
                    match output {
                        ShardOutput::Notice(notice) => {
                            for (to, engine) in self.engines.iter_mut().enumerate() {
                                if to != from {
                                    engine.handle_shard_notice(self.now, notice.clone());
                                }
                            }
                        }
                        ShardOutput::To(to, message) => {
                            self.engines[to].handle_shard_message(self.now, message)
                        }
                        ShardOutput::Route { call_id, shard } => match shard {
                            Some(shard) => {
                                self.routes.insert(call_id, shard);
                            }
                            None => {
                                self.routes.remove(&call_id);
                            }
                        },
                    }
                }
                while let Some(command) = self.engines[from].poll_store_command() {
                    quiet = false;
                    if let Some(result) = execute(&mut self.store, command) {
                        self.deliver(result);
                    }
                }
            }
            if quiet {
                return;
            }
        }
    }

    /// Hands a store answer to its shard, or a copy to every shard, as the runtime does.
    pub(super) fn deliver(&mut self, result: crate::store::StoreResult) {
        match self.engines[0].shard().of_result(&result) {
            ResultFor::Shard(to) => self.engines[to].handle_store_result(self.now, result),
            ResultFor::Every => {
                for engine in &mut self.engines {
                    engine.handle_store_result(self.now, result.clone());
                }
            }
        }
    }

    /// Runs every shard's timers due within `by`, in time order.
    fn advance(&mut self, by: Duration) {
        let (start, start_unix_ms) = (self.now.mono, self.now.unix_ms);
        let end = start + by;
        loop {
            let due = (0..self.engines.len())
                .filter_map(|at| Some((self.engines[at].poll_timeout()?, at)))
                .filter(|(when, _)| *when <= end)
                .min();
            let Some((when, at)) = due else { break };
            let mono = when.max(self.now.mono);
            self.now = Now {
                mono,
                unix_ms: start_unix_ms + u64::try_from((mono - start).as_millis()).unwrap(),
            };
            self.engines[at].handle_timeout(self.now);
            self.settle();
        }
        self.now = Now {
            mono: end,
            unix_ms: start_unix_ms + u64::try_from(by.as_millis()).unwrap(),
        };
    }

    /// What every shard sent, with the shard that sent it.
    fn sent(&mut self) -> Vec<(usize, Peer, SipMessage)> {
        let mut sent = Vec::new();
        for (shard, engine) in self.engines.iter_mut().enumerate() {
            while let Some(out) = engine.poll_transmit() {
                sent.push((
                    shard,
                    out.peer,
                    SipMessage::parse_datagram(&out.bytes).unwrap(),
                ));
            }
        }
        sent
    }

    /// A Call-ID, numbered from `seed` on, that lands on `shard`.
    fn call_id_on(&self, shard: usize, seed: &str) -> String {
        (0..)
            .map(|n| format!("{seed}-{n}"))
            .find(|call_id| self.shard_of(call_id) == shard)
            .unwrap()
    }

    /// Sends `text` (whose Call-ID is `call_id`), answers the challenge with credentials
    /// of `user` on a request whose Call-ID is `retry_call_id`; what followed.
    fn with_auth(
        &mut self,
        from: Peer,
        text: &str,
        (user, password): (&str, &str),
        retry_call_id: &str,
    ) -> Vec<(usize, Peer, SipMessage)> {
        self.send(from, text);
        let replies = self.sent();
        let (_, _, challenge) = replies
            .iter()
            .find(|(_, _, m)| matches!(m.status(), Some(401 | 407)))
            .expect("a challenge");
        let request = SipMessage::parse_datagram(text.as_bytes()).unwrap();
        let text = text.replace(request.call_id().unwrap(), retry_call_id);
        let retry = answering(&text, challenge, user, password);
        self.send(from, &retry);
        self.sent()
    }

    /// `caller` (port `port`) calls 201 (registered at 5071) with a Call-ID of `shard`,
    /// and 201 rings: the caller's INVITE, 201's, and what followed its 180.
    fn ringing_201(
        &mut self,
        caller: &str,
        port: u16,
        shard: usize,
    ) -> (String, SipMessage, Vec<(usize, Peer, SipMessage)>) {
        let call_id = self.call_id_on(shard, "call");
        let text = invite(caller, "201", port, &call_id);
        let password = format!("pw{caller}");
        let replies = self.with_auth(udp(port), &text, (caller, &password), &call_id);
        let (_, _, b_invite) = replies
            .iter()
            .find(|(_, peer, m)| m.method() == Some(&Method::INVITE) && peer.addr.port() == 5071)
            .expect("201 rings")
            .clone();
        self.send(
            udp(5071),
            &answer(&b_invite, 180, "Ringing", "b1", 5071, ""),
        );
        let out = self.sent();
        (text, b_invite, out)
    }

    fn register(&mut self, ext: &str, password: &str, port: u16, call_id: &str) -> Vec<u16> {
        let text = register_text(ext, port, call_id);
        let replies = self.with_auth(udp(port), &text, (ext, password), call_id);
        replies.iter().filter_map(|(_, _, m)| m.status()).collect()
    }
}

fn register_text(ext: &str, port: u16, call_id: &str) -> String {
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKreg{port};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{ext}@127.0.0.1>;tag=r{port}\r\nTo: <sip:{ext}@127.0.0.1>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{ext}@127.0.0.1:{port}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_phone_registered_through_one_shard_is_called_from_every_shard() {
    let mut shards = Shards::new(3);
    let registered_on = shards.call_id_on(1, "reg-201");
    assert_eq!(shards.register("201", "pw201", 5071, &registered_on), [200]);
    for shard in 0..3 {
        let call_id = shards.call_id_on(shard, "call");
        let text = invite("202", "201", 5072, &call_id);
        let replies = shards.with_auth(udp(5072), &text, ("202", "pw202"), &call_id);
        let forks: Vec<_> = replies
            .iter()
            .filter(|(_, peer, m)| m.method() == Some(&Method::INVITE) && peer.addr.port() == 5071)
            .collect();
        assert_eq!(
            forks.len(),
            1,
            "the call on shard {shard} rings 201: {replies:?}"
        );
        let (from, _, fork) = forks[0];
        assert_eq!(*from, shard, "the call's own shard rings the callee");
        let b_leg = fork.call_id().unwrap();
        assert_eq!(
            shards.shard_of(b_leg),
            shard,
            "the B leg's Call-ID ({b_leg}) brings its responses back to the call's shard"
        );
    }
    // Unregistering through another shard reaches every shard too.
    let elsewhere = shards.call_id_on(2, "reg-201");
    let text = register_text("201", 5071, &elsewhere).replace("Expires: 600", "Expires: 0");
    let replies = shards.with_auth(udp(5071), &text, ("201", "pw201"), &elsewhere);
    assert!(replies.iter().any(|(_, _, m)| m.status() == Some(200)));
    let call_id = shards.call_id_on(1, "after");
    let text = invite("202", "201", 5072, &call_id);
    let replies = shards.with_auth(udp(5072), &text, ("202", "pw202"), &call_id);
    assert!(
        replies.iter().any(|(_, _, m)| m.status() == Some(480)),
        "201 is unregistered on shard 1 too: {replies:?}"
    );
}

#[test]
fn a_nonce_counts_on_the_shard_that_issued_it_only() {
    let mut shards = Shards::new(2);
    let first = shards.call_id_on(0, "reg");
    let second = shards.call_id_on(1, "reg");
    // Challenged on shard 0, answered with a Call-ID of shard 1: shard 1 never saw the
    // nonce used and cannot tell a replay, so it is stale there.
    let text = register_text("201", 5071, &first);
    let replies = shards.with_auth(udp(5071), &text, ("201", "pw201"), &second);
    let (shard, _, stale) = &replies[0];
    assert_eq!((*shard, stale.status()), (1, Some(401)));
    let www = stale.header(&Name::WWW_AUTHENTICATE).unwrap();
    assert!(www.contains("stale=true"), "{www}");
    // On its own shard the same answer is good.
    let replies = shards.with_auth(udp(5071), &text, ("201", "pw201"), &first);
    assert_eq!(replies[0].2.status(), Some(200));
}

#[test]
fn failed_authentications_count_across_shards() {
    let mut shards = Shards::new(2);
    let guard = shards.engines[0].guard_stats();
    assert_eq!(guard.failures, 0);
    for (n, shard) in [0, 1, 0, 1].into_iter().enumerate() {
        let call_id = shards.call_id_on(shard, &format!("bad{n}"));
        let text = register_text("201", 5071, &call_id);
        shards.with_auth(udp(5071), &text, ("201", "wrong"), &call_id);
    }
    for engine in &shards.engines {
        assert_eq!(engine.guard_stats().failures, 4, "one count for all shards");
    }
}

/// The NOTIFYs in `sent` to `port`, with the shard that sent each.
fn notifies_to(sent: &[(usize, Peer, SipMessage)], port: u16) -> Vec<(usize, SipMessage)> {
    sent.iter()
        .filter(|(_, peer, m)| m.method() == Some(&Method::NOTIFY) && peer.addr.port() == port)
        .map(|(shard, _, m)| (*shard, m.clone()))
        .collect()
}

/// `port` answers 200 to `request`; what followed.
fn answer_200(
    shards: &mut Shards,
    request: &SipMessage,
    port: u16,
) -> Vec<(usize, Peer, SipMessage)> {
    let response = request.response(200, "OK", None);
    shards.send(
        udp(port),
        std::str::from_utf8(&response.to_bytes()).unwrap(),
    );
    shards.sent()
}

#[test]
fn a_key_on_one_shard_shows_the_calls_of_another() {
    let mut shards = Shards::office(2);
    let registered = shards.call_id_on(1, "reg-201");
    assert_eq!(shards.register("201", "pw201", 5071, &registered), [200]);
    // 203's key subscribes through shard 0.
    let subscription = shards.call_id_on(0, "sub-203");
    let text = super::blf::subscribe_text("203", 5073, "201", super::blf::DIALOG)
        .replace("sub-203-201", &subscription);
    let replies = shards.with_auth(udp(5073), &text, ("203", "pw203"), &subscription);
    let first = notifies_to(&replies, 5073);
    assert_eq!(first.len(), 1, "{replies:?}");
    let xml = super::blf::body(&first[0].1);
    assert!(!xml.contains("<state>trying"), "nothing rings yet: {xml}");
    answer_200(&mut shards, &first[0].1, 5073);
    // 202 calls 201 through shard 1: the key, watched on shard 0, lights up.
    let (text, _, out) = shards.ringing_201("202", 5072, 1);
    let lit = notifies_to(&out, 5073);
    assert_eq!(lit.len(), 1, "{out:?}");
    assert_eq!(lit[0].0, 0, "the subscription's shard notifies");
    let xml = super::blf::body(&lit[0].1);
    assert!(xml.contains("<state>early</state>"), "{xml}");
    super::blf::assert_valid(&lit[0].1);
    answer_200(&mut shards, &lit[0].1, 5073);
    // The caller gives up: the key goes dark.
    let cancel = text
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replacen("branch=z9hG4bK", "branch=z9hG4bKretry", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 2 CANCEL");
    shards.send(udp(5072), &cancel);
    let out = shards.sent();
    let dark = notifies_to(&out, 5073);
    assert_eq!(dark.len(), 1, "{out:?}");
    assert!(super::blf::body(&dark[0].1).contains("terminated"));
}

/// The office on 2 shards: 201 rings for 204 through shard 1; what 201 was sent.
fn ringing_on_shard_1(shards: &mut Shards) -> SipMessage {
    let registered = shards.call_id_on(0, "reg-201");
    assert_eq!(shards.register("201", "pw201", 5071, &registered), [200]);
    shards.ringing_201("204", 5074, 1).1
}

/// 202 (port 5072) dials `*8` with a Call-ID of shard 0; `replaces` adds
/// `Supported: replaces`. The Call-ID and what followed.
fn pick_on_shard_0(
    shards: &mut Shards,
    replaces: bool,
) -> (String, Vec<(usize, Peer, SipMessage)>) {
    let call_id = shards.call_id_on(0, "pick");
    let mut text = invite("202", "*8", 5072, &call_id);
    if replaces {
        text = text.replacen("Content-Type", "Supported: replaces\r\nContent-Type", 1);
    }
    let out = shards.with_auth(udp(5072), &text, ("202", "pw202"), &call_id);
    (call_id, out)
}

fn to_port(sent: &[(usize, Peer, SipMessage)], port: u16) -> Vec<(usize, SipMessage)> {
    sent.iter()
        .filter(|(_, peer, _)| peer.addr.port() == port)
        .map(|(shard, _, m)| (*shard, m.clone()))
        .collect()
}

#[test]
fn a_picker_on_one_shard_takes_a_call_ringing_on_another_with_replaces() {
    let mut shards = Shards::office(2);
    let b_invite = ringing_on_shard_1(&mut shards);
    let (pick_call_id, out) = pick_on_shard_0(&mut shards, true);
    let picker = to_port(&out, 5072);
    let progress = picker
        .iter()
        .find(|(_, m)| m.status() == Some(183))
        .expect("the dummy early dialog");
    assert_eq!(progress.0, 1, "the call's shard holds the picker");
    let dummy_tag = progress.1.to_header().unwrap().tag().unwrap().to_string();
    let (from, replaces_invite) = picker
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::INVITE))
        .expect("an INVITE with Replaces")
        .clone();
    assert_eq!(from, 1);
    assert_eq!(
        replaces_invite.header(&Name::REPLACES),
        Some(format!("{pick_call_id};to-tag=a5072;from-tag={dummy_tag};early-only").as_str())
    );
    assert_eq!(
        shards.shard_of(replaces_invite.call_id().unwrap()),
        1,
        "the INVITE with Replaces is a dialog of the call's shard"
    );
    assert!(to_port(&out, 5071)
        .iter()
        .any(|(_, m)| m.method() == Some(&Method::CANCEL)));
    // The picker CANCELs the dummy (its Call-ID hashes to shard 0, routed to shard 1).
    let cancel = invite("202", "*8", 5072, &pick_call_id)
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replacen("branch=z9hG4bK", "branch=z9hG4bKretry", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 2 CANCEL");
    assert_eq!(shards.send(udp(5072), &cancel), 1);
    let mut codes: Vec<u16> = to_port(&shards.sent(), 5072)
        .iter()
        .filter_map(|(_, m)| m.status())
        .collect();
    codes.sort();
    assert_eq!(codes, [200, 487]);
    shards.send(
        udp(5071),
        &answer(&b_invite, 487, "Request Terminated", "b1", 5071, ""),
    );
    shards.sent();
    shards.send(
        udp(5072),
        &answer(
            &replaces_invite,
            200,
            "OK",
            "pk",
            5072,
            "v=0\r\ns=picker\r\n",
        ),
    );
    let out = shards.sent();
    let caller = to_port(&out, 5074);
    assert!(
        caller.iter().any(|(_, m)| m.status() == Some(200)),
        "the caller is connected to the picker: {out:?}"
    );
    // The CDR bills the picker, one for the call.
    shards.advance(Duration::from_secs(1));
    let connected = caller
        .iter()
        .find(|(_, m)| m.status() == Some(200))
        .unwrap()
        .1
        .clone();
    let a_tag = connected.to_header().unwrap().tag().unwrap().to_string();
    let caller_call_id = connected.call_id().unwrap().to_string();
    let bye = format!(
        "BYE sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5074;branch=z9hG4bKbye\r\n\
From: <sip:204@127.0.0.1>;tag=a5074\r\nTo: <sip:201@127.0.0.1>;tag={a_tag}\r\nCall-ID: {caller_call_id}\r\n\
Max-Forwards: 70\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    shards.send(udp(5074), &bye);
    shards.sent();
    use crate::store::CallStore;
    let cdrs = shards.store.recent_cdrs(5).unwrap();
    assert_eq!(cdrs.len(), 1);
    assert_eq!(cdrs[0].billed.as_deref(), Some("202"));
    assert_eq!(cdrs[0].pickup_method, "group");
    // Once the pickup is long over, the picker's Call-ID goes home again.
    assert_eq!(shards.shard_of(&pick_call_id), 1);
    shards.advance(Duration::from_secs(40));
    assert_eq!(shards.shard_of(&pick_call_id), 0, "the route was dropped");
}

#[test]
fn a_picker_without_replaces_is_bridged_on_the_calls_shard_and_its_dialog_follows() {
    let mut shards = Shards::office(2);
    ringing_on_shard_1(&mut shards);
    let (pick_call_id, out) = pick_on_shard_0(&mut shards, false);
    let answered = to_port(&out, 5072)
        .into_iter()
        .find(|(_, m)| m.status() == Some(200))
        .expect("the picker is answered");
    assert_eq!(answered.0, 1);
    assert!(to_port(&out, 5074)
        .iter()
        .any(|(_, m)| m.status() == Some(200)));
    let tag = answered.1.to_header().unwrap().tag().unwrap().to_string();
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            "{method} sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK{method}\r\n\
From: <sip:202@127.0.0.1>;tag=a5072\r\nTo: <sip:*8@127.0.0.1>;tag={tag}\r\nCall-ID: {pick_call_id}\r\n\
Max-Forwards: 70\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    assert_eq!(shards.send(udp(5072), &in_dialog("ACK", 2)), 1);
    assert_eq!(
        shards.send(udp(5072), &in_dialog("BYE", 3)),
        1,
        "routed to the call"
    );
    let out = shards.sent();
    assert!(
        to_port(&out, 5072)
            .iter()
            .any(|(_, m)| m.status() == Some(200)),
        "the picker's BYE is answered: {out:?}"
    );
    assert!(
        to_port(&out, 5074)
            .iter()
            .any(|(_, m)| m.method() == Some(&Method::BYE)),
        "and the caller hung up"
    );
}

#[test]
fn a_key_subscribing_while_a_call_of_another_shard_rings_sees_it_in_its_first_notify() {
    for (call_shard, key_shard) in [(1, 0), (0, 1)] {
        let mut shards = Shards::office(2);
        let registered = shards.call_id_on(key_shard, "reg-201");
        assert_eq!(shards.register("201", "pw201", 5071, &registered), [200]);
        shards.ringing_201("204", 5074, call_shard);
        let subscription = shards.call_id_on(key_shard, "sub-203");
        let text = super::blf::subscribe_text("203", 5073, "201", super::blf::DIALOG)
            .replace("sub-203-201", &subscription);
        let replies = shards.with_auth(udp(5073), &text, ("203", "pw203"), &subscription);
        let mut seen = Vec::new();
        let mut pending = notifies_to(&replies, 5073);
        while let Some((_, notify)) = pending.pop() {
            seen.push(super::blf::body(&notify));
            pending.extend(notifies_to(&answer_200(&mut shards, &notify, 5073), 5073));
        }
        assert!(
            seen.first()
                .is_some_and(|xml| xml.contains("<state>early</state>")),
            "call on {call_shard}, key on {key_shard}: the first NOTIFY already shows the \
             call (it waited for the other shard's dialogs): {seen:?}"
        );
    }
}
