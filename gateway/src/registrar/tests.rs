//! REGISTER semantics: several contacts, expiry, unregistration, ordering, limits.

use super::*;
use crate::transport::Protocol;

fn config() -> RegistrarConfig {
    RegistrarConfig {
        min_expires_secs: 60,
        max_expires_secs: 3600,
        default_expires_secs: 1800,
        max_contacts: 3,
    }
}

/// The gateway's SIP address.
fn own() -> SocketAddr {
    "127.0.0.1:5060".parse().unwrap()
}

fn source() -> Peer {
    Peer {
        protocol: Protocol::Udp,
        addr: "127.0.0.1:5071".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
    }
}

fn register(contacts: &str, expires: Option<u32>, call_id: &str, cseq: u32) -> SipMessage {
    let expires = expires
        .map(|e| format!("Expires: {e}\r\n"))
        .unwrap_or_default();
    let contact = if contacts.is_empty() {
        String::new()
    } else {
        format!("Contact: {contacts}\r\n")
    };
    let text = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK{cseq}\r\n\
From: <sip:201@127.0.0.1>;tag=1\r\nTo: <sip:201@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n\
{contact}{expires}Content-Length: 0\r\n\r\n"
    );
    SipMessage::parse_datagram(text.as_bytes()).unwrap()
}

#[test]
fn several_contacts_with_their_own_expiry() {
    let mut r = Registrar::new(config(), own());
    let msg = register(
        "<sip:201@a:1>;expires=120, <sip:201@b:2>",
        Some(600),
        "c1",
        1,
    );
    let outcome = r.register(1000, "201", &msg, source()).unwrap();
    assert!(outcome.changed);
    assert_eq!(
        outcome.contacts,
        [
            ("sip:201@a:1".to_string(), 120),
            ("sip:201@b:2".to_string(), 600)
        ]
    );
    assert_eq!(r.lookup(1000, "201").len(), 2);
    assert_eq!(r.expire(1121), ["201"]);
    assert_eq!(r.lookup(1121, "201").len(), 1);
}

#[test]
fn default_and_maximum_expiry() {
    let mut r = Registrar::new(config(), own());
    let outcome = r
        .register(
            0,
            "201",
            &register("<sip:201@a:1>", None, "c1", 1),
            source(),
        )
        .unwrap();
    assert_eq!(outcome.contacts[0].1, 1800);
    let outcome = r
        .register(
            0,
            "201",
            &register("<sip:201@a:1>", Some(99999), "c1", 2),
            source(),
        )
        .unwrap();
    assert_eq!(outcome.contacts[0].1, 3600);
}

#[test]
fn too_brief_is_423_with_the_minimum() {
    let mut r = Registrar::new(config(), own());
    let err = r
        .register(
            0,
            "201",
            &register("<sip:201@a:1>", Some(10), "c1", 1),
            source(),
        )
        .unwrap_err();
    assert_eq!(err, RegisterError::IntervalTooBrief { min: 60 });
    assert_eq!(err.status().0, 423);
}

#[test]
fn expires_zero_removes_one_and_star_removes_all() {
    let mut r = Registrar::new(config(), own());
    r.register(
        0,
        "201",
        &register("<sip:201@a:1>, <sip:201@b:2>", Some(600), "c1", 1),
        source(),
    )
    .unwrap();
    let outcome = r
        .register(
            0,
            "201",
            &register("<sip:201@a:1>", Some(0), "c1", 2),
            source(),
        )
        .unwrap();
    assert_eq!(outcome.contacts.len(), 1);
    let outcome = r
        .register(0, "201", &register("*", Some(0), "c1", 3), source())
        .unwrap();
    assert!(outcome.contacts.is_empty() && outcome.changed);
    assert!(r.lookup(0, "201").is_empty());
    let err = r
        .register(0, "201", &register("*", Some(60), "c1", 4), source())
        .unwrap_err();
    assert!(matches!(err, RegisterError::InvalidRequest(_)));
}

#[test]
fn query_without_contact_lists_bindings() {
    let mut r = Registrar::new(config(), own());
    r.register(
        0,
        "201",
        &register("<sip:201@a:1>", Some(600), "c1", 1),
        source(),
    )
    .unwrap();
    let outcome = r
        .register(100, "201", &register("", None, "c2", 1), source())
        .unwrap();
    assert!(!outcome.changed);
    assert_eq!(outcome.contacts, [("sip:201@a:1".to_string(), 500)]);
}

#[test]
fn out_of_order_and_too_many() {
    let mut r = Registrar::new(config(), own());
    r.register(
        0,
        "201",
        &register("<sip:201@a:1>", Some(600), "c1", 5),
        source(),
    )
    .unwrap();
    let err = r
        .register(
            0,
            "201",
            &register("<sip:201@a:1>", Some(600), "c1", 5),
            source(),
        )
        .unwrap_err();
    assert_eq!(err, RegisterError::OutOfOrder);
    let many = "<sip:201@b:1>, <sip:201@c:1>, <sip:201@d:1>";
    let err = r
        .register(0, "201", &register(many, Some(600), "c2", 1), source())
        .unwrap_err();
    assert_eq!(err, RegisterError::TooManyContacts);
}

#[test]
fn restored_bindings_are_served() {
    let binding = Binding {
        contact: "sip:201@a:1".into(),
        expires_at: 500,
        call_id: "c".into(),
        cseq: 1,
        source: source(),
        q: None,
        user_agent: None,
    };
    let r = Registrar::from_bindings(
        config(),
        own(),
        RestoredBindings::new(vec![("201".into(), binding.clone())]),
    );
    assert_eq!(r.lookup(100, "201"), [binding]);
    assert!(r.lookup(500, "201").is_empty());
}

/// A TCP or TLS source is reported once when it gains its first binding (of any
/// extension) and once when it loses its last (by unregistration or expiry); UDP sources
/// are not.
#[test]
fn tcp_sources_are_reported_when_they_gain_and_lose_bindings() {
    let tcp = Peer {
        protocol: Protocol::Tcp,
        addr: "127.0.0.1:40000".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
    };
    let mut r = Registrar::new(config(), own());
    let changes =
        |r: &mut Registrar| std::iter::from_fn(|| r.poll_source_change()).collect::<Vec<_>>();
    r.register(
        1000,
        "201",
        &register("<sip:201@a:1>", Some(600), "u", 1),
        source(),
    )
    .unwrap();
    assert_eq!(changes(&mut r), []);
    r.register(
        1000,
        "201",
        &register("<sip:201@t:1>", Some(600), "t", 1),
        tcp,
    )
    .unwrap();
    r.register(
        1000,
        "202",
        &register("<sip:202@t:1>", Some(120), "t2", 1),
        tcp,
    )
    .unwrap();
    r.register(
        1000,
        "201",
        &register("<sip:201@t:1>", Some(600), "t", 2),
        tcp,
    )
    .unwrap();
    assert_eq!(
        changes(&mut r),
        [SourceChange {
            peer: tcp,
            registered: true
        }]
    );
    r.register(
        1000,
        "201",
        &register("<sip:201@t:1>", Some(0), "t", 3),
        tcp,
    )
    .unwrap();
    assert_eq!(changes(&mut r), [], "202 is still registered from there");
    r.expire(1121);
    assert_eq!(
        changes(&mut r),
        [SourceChange {
            peer: tcp,
            registered: false
        }]
    );
    let restored = Registrar::from_bindings(
        config(),
        own(),
        RestoredBindings::new(vec![(
            "203".into(),
            Binding {
                contact: "sip:203@t:1".into(),
                expires_at: 2000,
                call_id: "r".into(),
                cseq: 1,
                source: tcp,
                q: None,
                user_agent: None,
            },
        )]),
    );
    let mut restored = restored;
    assert_eq!(changes(&mut restored).len(), 1);
    // TLS connections are kept open for their registrations the same way.
    let tls = Peer {
        protocol: Protocol::Tls,
        ..tcp
    };
    r.register(
        1200,
        "204",
        &register("<sips:204@t>", Some(600), "s", 1),
        tls,
    )
    .unwrap();
    assert_eq!(
        changes(&mut r),
        [SourceChange {
            peer: tls,
            registered: true
        }]
    );
}

/// A contact naming the gateway's own address would make every call to the extension come
/// back to the gateway: refused with 403, nothing stored. Removing such a binding is fine.
#[test]
fn a_contact_naming_the_gateway_itself_is_refused() {
    let mut r = Registrar::new(config(), own());
    for contact in [
        "<sip:201@127.0.0.1:5060>",
        "<sip:201@127.0.0.1>",
        "<sip:201@127.0.0.1:5060;transport=tcp>",
        "<sip:201@0.0.0.0:5060>",
        "<sip:201@192.0.2.9:5070>, <sip:201@127.0.0.1:5060>",
    ] {
        let msg = register(contact, Some(600), "loop", 1);
        let error = r.register(1000, "201", &msg, source()).unwrap_err();
        assert!(matches!(error, RegisterError::OwnAddress(_)), "{contact}");
        assert_eq!(error.status().0, 403);
        assert!(r.lookup(1000, "201").is_empty(), "{contact}");
    }
    for other in [
        "<sip:201@127.0.0.1:5071>",
        "<sip:201@127.0.0.2:5060>",
        "<sips:201@127.0.0.1>",
        "<sip:201@phone.example.com:5060>",
    ] {
        let msg = register(other, Some(600), other, 1);
        let mut fresh = Registrar::new(config(), own());
        assert!(
            fresh.register(1000, "201", &msg, source()).is_ok(),
            "{other}"
        );
    }
    let removal = register("<sip:201@127.0.0.1:5060>", Some(0), "loop", 2);
    assert!(r.register(1000, "201", &removal, source()).is_ok());

    let mut any = Registrar::new(config(), "0.0.0.0:5060".parse().unwrap());
    let msg = register("<sip:201@127.0.0.1:5060>", Some(600), "any", 1);
    assert!(
        any.register(1000, "201", &msg, source()).is_err(),
        "listening on every address: loopback is ours too"
    );
}

#[test]
fn shards_share_an_extensions_list_until_one_changes_it() {
    let mut first = Registrar::new(config(), own());
    let mut second = Registrar::new(config(), own());
    let msg = register("<sip:201@a:1>", Some(600), "c1", 1);
    first.register(1000, "201", &msg, source()).unwrap();
    second.replace("201", first.shared("201"));
    assert!(
        Arc::ptr_eq(&first.shared("201"), &second.shared("201")),
        "told, not copied"
    );
    assert_eq!(second.lookup(1000, "201"), first.lookup(1000, "201"));
    // A change on one shard copies the list there; the other keeps what it was told.
    let msg = register("<sip:201@b:2>", Some(600), "c1", 2);
    second.register(1001, "201", &msg, source()).unwrap();
    assert_eq!(first.lookup(1001, "201").len(), 1);
    assert_eq!(second.lookup(1001, "201").len(), 2);
    // Expiry copies only a list that loses a binding.
    first.replace("201", second.shared("201"));
    assert!(first.expire(1500).is_empty());
    assert!(Arc::ptr_eq(&first.shared("201"), &second.shared("201")));
    assert_eq!(first.expire(1601), ["201"]);
    assert!(first.lookup(1601, "201").is_empty());
    assert_eq!(
        second.shared("201").len(),
        2,
        "the other shard sweeps its own"
    );
}

#[test]
fn restored_bindings_are_shared_by_every_registrar_made_from_them() {
    let binding = |contact: &str| Binding {
        contact: contact.into(),
        expires_at: 2000,
        call_id: "r".into(),
        cseq: 1,
        source: source(),
        q: None,
        user_agent: None,
    };
    let restored = RestoredBindings::new(vec![
        ("201".into(), binding("sip:201@a:1")),
        ("202".into(), binding("sip:202@b:1")),
        ("201".into(), binding("sip:201@c:1")),
    ]);
    let first = Registrar::from_bindings(config(), own(), restored.clone());
    let second = Registrar::from_bindings(config(), own(), restored);
    assert_eq!(first.lookup(1000, "201").len(), 2);
    assert_eq!(first.aors(), ["201", "202"]);
    assert!(Arc::ptr_eq(&first.shared("201"), &second.shared("201")));
}
