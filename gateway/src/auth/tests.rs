//! Digest authentication: RFC 7616 vectors and the whole challenge/verify flow.

use super::*;

const RFC7616: DigestInput<'static> = DigestInput {
    algorithm: DigestAlgorithm::Sha256,
    username: "Mufasa",
    realm: "http-auth@example.org",
    password: "Circle of Life",
    method: "GET",
    uri: "/dir/index.html",
    nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    nc: "00000001",
    cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    qop: "auth",
};

#[test]
fn rfc7616_example_vectors() {
    assert_eq!(
        digest_response(&RFC7616),
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
    let md5 = DigestInput {
        algorithm: DigestAlgorithm::Md5,
        ..RFC7616
    };
    assert_eq!(digest_response(&md5), "8ca523f5e9506fed4657c9700eebdbec");
}

fn nonce_of(challenge: &str) -> String {
    let start = challenge.find("nonce=\"").unwrap() + 7;
    challenge[start..start + challenge[start..].find('"').unwrap()].to_string()
}

fn answer(
    challenge: &str,
    algorithm: DigestAlgorithm,
    user: &str,
    password: &str,
    nc: u32,
) -> String {
    let nonce = nonce_of(challenge);
    let nc = format!("{nc:08x}");
    let response = digest_response(&DigestInput {
        algorithm,
        username: user,
        realm: "office",
        password,
        method: "REGISTER",
        uri: REGISTER_URI,
        nonce: &nonce,
        nc: &nc,
        cnonce: "abc",
        qop: "auth",
    });
    format!(
        "Digest username=\"{user}\", realm=\"office\", nonce=\"{nonce}\", uri=\"{REGISTER_URI}\", \
         response=\"{response}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"abc\"",
        algorithm.token()
    )
}

fn passwords(user: &str) -> Option<String> {
    (user == "201").then(|| "pw201".to_string())
}

const BOTH: [DigestAlgorithm; 2] = [DigestAlgorithm::Sha256, DigestAlgorithm::Md5];

/// The Request-URI every test REGISTER goes to (and the answers' digest uri).
const REGISTER_URI: &str = "sip:127.0.0.1";

fn authenticator(lifetime_secs: u64, secret: u8, now: Instant) -> DigestAuthenticator {
    DigestAuthenticator::new(
        "office".into(),
        Duration::from_secs(lifetime_secs),
        [secret; 32],
        now,
    )
}

/// Verifies credentials on a REGISTER to `uri`.
fn verify_for(
    auth: &mut DigestAuthenticator,
    now: Instant,
    uri: &str,
    value: &str,
    allowed: &[DigestAlgorithm],
) -> AuthOutcome {
    let uri = RequestUri::parse(uri).unwrap();
    auth.verify(now, ("REGISTER", &uri), value, allowed, passwords)
}

fn verify(auth: &mut DigestAuthenticator, now: Instant, value: &str) -> AuthOutcome {
    verify_for(auth, now, REGISTER_URI, value, &BOTH)
}

fn rejected(reason: RejectReason, username: &str) -> AuthOutcome {
    AuthOutcome::Rejected {
        reason,
        username: Some(username.into()),
    }
}

#[test]
fn sha256_is_offered_before_md5_with_one_nonce_and_no_opaque() {
    let secret = [0xa5; 32];
    let now = Instant::now();
    let mut auth = DigestAuthenticator::new("office".into(), Duration::from_secs(60), secret, now);
    let challenges = auth.challenge(now, &BOTH, false);
    assert_eq!(challenges.len(), 2);
    assert!(challenges[0].contains("algorithm=SHA-256"));
    assert!(challenges[1].contains("algorithm=MD5"));
    assert!(challenges
        .iter()
        .all(|c| c.contains("qop=\"auth\"") && !c.contains("stale")));
    assert_eq!(nonce_of(&challenges[0]), nonce_of(&challenges[1]));
    // Nothing of the secret goes on the wire: no opaque at all (it used to be 8 bytes
    // of the nonce key), and no run of its bytes in the nonce.
    let secret_hex = hex::encode(secret);
    for challenge in &challenges {
        assert!(!challenge.contains("opaque"), "{challenge}");
        assert!(!challenge.contains(&secret_hex[..8]), "{challenge}");
    }
}

#[test]
fn good_credentials_for_either_algorithm() {
    let now = Instant::now();
    let mut auth = authenticator(60, 1, now);
    for algorithm in BOTH {
        let challenge = auth.challenge(now, &BOTH, false).remove(0);
        let outcome = verify(
            &mut auth,
            now,
            &answer(&challenge, algorithm, "201", "pw201", 1),
        );
        assert_eq!(outcome, AuthOutcome::Authenticated { user: "201".into() });
    }
}

/// Finding 1 of the security issue: credentials computed for `INVITE sip:203@...` were
/// accepted on `INVITE sip:9555123@...` (a PSTN number), first use of their nc.
#[test]
fn credentials_for_one_request_uri_are_refused_on_another() {
    let now = Instant::now();
    let mut auth = authenticator(60, 1, now);
    let challenge = auth.challenge(now, &BOTH, false).remove(0);
    let for_203 = answer(&challenge, DigestAlgorithm::Md5, "201", "pw201", 1)
        .replace(REGISTER_URI, "sip:203@127.0.0.1");
    let retargeted = verify_for(&mut auth, now, "sip:9555123@127.0.0.1", &for_203, &BOTH);
    assert_eq!(
        retargeted,
        rejected(
            RejectReason::UriMismatch {
                digest_uri: "sip:203@127.0.0.1".into()
            },
            "201"
        )
    );
    assert_eq!(retargeted_status(&retargeted), 400);
    // Same URI spelled differently (RFC 3261 §19.1.4: host case) is the same target,
    // but the digest is over the uri as the phone wrote it.
    let challenge = auth.challenge(now, &BOTH, false).remove(0);
    let nonce = nonce_of(&challenge);
    let response = digest_response(&DigestInput {
        algorithm: DigestAlgorithm::Md5,
        username: "201",
        realm: "office",
        password: "pw201",
        method: "REGISTER",
        uri: "sip:OFFICE.example",
        nonce: &nonce,
        nc: "00000001",
        cnonce: "abc",
        qop: "auth",
    });
    let value = format!(
        "Digest username=\"201\", realm=\"office\", nonce=\"{nonce}\", uri=\"sip:OFFICE.example\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abc\""
    );
    assert_eq!(
        verify_for(&mut auth, now, "sip:office.example", &value, &BOTH),
        AuthOutcome::Authenticated { user: "201".into() }
    );
}

fn retargeted_status(outcome: &AuthOutcome) -> u16 {
    match outcome {
        AuthOutcome::Rejected { reason, .. } => reason.status().0,
        other => panic!("not rejected: {other:?}"),
    }
}

#[test]
fn wrong_password_and_unknown_user_are_indistinguishable() {
    let now = Instant::now();
    let mut auth = authenticator(60, 1, now);
    let challenge = auth.challenge(now, &BOTH, false).remove(0);
    let wrong = verify(
        &mut auth,
        now,
        &answer(&challenge, DigestAlgorithm::Md5, "201", "nope", 1),
    );
    let unknown = verify(
        &mut auth,
        now,
        &answer(&challenge, DigestAlgorithm::Md5, "299", "nope", 1),
    );
    assert_eq!(wrong, rejected(RejectReason::BadCredentials, "201"));
    assert_eq!(unknown, rejected(RejectReason::BadCredentials, "299"));
}

#[test]
fn expired_forged_and_foreign_nonces_are_stale() {
    let now = Instant::now();
    let mut auth = authenticator(60, 1, now);
    let challenge = auth.challenge(now, &BOTH, false).remove(0);
    let late = now + Duration::from_secs(61);
    let outcome = verify(
        &mut auth,
        late,
        &answer(&challenge, DigestAlgorithm::Md5, "201", "pw201", 1),
    );
    assert_eq!(outcome, AuthOutcome::Stale);
    let mut other = authenticator(60, 2, now);
    let foreign = other.challenge(now, &BOTH, false).remove(0);
    let outcome = verify(
        &mut auth,
        now,
        &answer(&foreign, DigestAlgorithm::Md5, "201", "pw201", 1),
    );
    assert_eq!(outcome, AuthOutcome::Stale);
    // A nonce whose time was pushed forward by the client has a wrong tag.
    let nonce = nonce_of(&challenge);
    let forged = format!("ffffffff{}", &nonce[8..]);
    let outcome = verify(
        &mut auth,
        now,
        &answer(
            &challenge.replace(&nonce, &forged),
            DigestAlgorithm::Md5,
            "201",
            "pw201",
            1,
        ),
    );
    assert_eq!(outcome, AuthOutcome::Stale);
    assert!(auth.challenge(now, &BOTH, true)[0].ends_with("stale=true"));
}

#[test]
fn nonce_count_must_increase() {
    let now = Instant::now();
    let mut auth = authenticator(60, 1, now);
    let challenge = auth.challenge(now, &BOTH, false).remove(0);
    let first = answer(&challenge, DigestAlgorithm::Md5, "201", "pw201", 1);
    assert!(matches!(
        verify(&mut auth, now, &first),
        AuthOutcome::Authenticated { .. }
    ));
    assert_eq!(
        verify(&mut auth, now, &first),
        rejected(RejectReason::Replay, "201")
    );
    let second = answer(&challenge, DigestAlgorithm::Md5, "201", "pw201", 2);
    assert!(matches!(
        verify(&mut auth, now, &second),
        AuthOutcome::Authenticated { .. }
    ));
}

#[test]
fn algorithm_not_offered_and_wrong_realm_are_refused() {
    let now = Instant::now();
    let mut auth = authenticator(60, 1, now);
    let challenge = auth.challenge(now, &BOTH, false).remove(0);
    let md5 = answer(&challenge, DigestAlgorithm::Md5, "201", "pw201", 1);
    assert!(matches!(
        verify_for(
            &mut auth,
            now,
            REGISTER_URI,
            &md5,
            &[DigestAlgorithm::Sha256]
        ),
        AuthOutcome::Rejected {
            reason: RejectReason::AlgorithmNotOffered(_),
            ..
        }
    ));
    let other_realm = md5.replace("realm=\"office\"", "realm=\"elsewhere\"");
    assert_eq!(
        verify(&mut auth, now, &other_realm),
        rejected(RejectReason::WrongRealm, "201")
    );
    let no_qop = md5.replace(", qop=auth", "");
    assert_eq!(
        verify(&mut auth, now, &no_qop),
        rejected(RejectReason::QopRequired, "201")
    );
}

#[test]
fn garbage_never_panics() {
    let now = Instant::now();
    let mut auth = authenticator(60, 1, now);
    let challenge = auth.challenge(now, &BOTH, false).remove(0);
    let good = answer(&challenge, DigestAlgorithm::Md5, "201", "pw201", 1);
    for end in 0..good.len() {
        if good.is_char_boundary(end) {
            let outcome = verify(&mut auth, now, &good[..end]);
            assert!(!matches!(outcome, AuthOutcome::Authenticated { .. }));
        }
    }
    for junk in [
        "",
        "Basic abc",
        "Digest",
        "Digest ,,,",
        "Digest a=\"unterminated",
        "Digest nc=zz, username=1",
    ] {
        assert!(matches!(
            verify(&mut auth, now, junk),
            AuthOutcome::Rejected { .. }
        ));
    }
}

/// Finding 3 of the security issue: every challenge used to hold state, and 55,000
/// unauthenticated REGISTERs pushed a legitimate phone's pending nonce out.
#[test]
fn challenges_cost_no_memory_and_a_flood_cannot_push_a_phones_nonce_out() {
    let now = Instant::now();
    let mut auth = authenticator(300, 1, now);
    let phones = auth.challenge(now, &BOTH, false).remove(0);
    for _ in 0..200_000 {
        auth.challenge(now, &BOTH, false);
    }
    assert_eq!(auth.nonce_count(), 0, "no state per challenge");
    assert_eq!(
        verify(
            &mut auth,
            now + Duration::from_secs(1),
            &answer(&phones, DigestAlgorithm::Md5, "201", "pw201", 1)
        ),
        AuthOutcome::Authenticated { user: "201".into() }
    );
    assert_eq!(auth.nonce_count(), 1, "a nonce in use is remembered");
}

#[test]
fn nonces_in_use_expire_and_are_purged() {
    let now = Instant::now();
    let mut auth = authenticator(60, 1, now);
    for _ in 0..10 {
        let challenge = auth.challenge(now, &BOTH, false).remove(0);
        let good = answer(&challenge, DigestAlgorithm::Md5, "201", "pw201", 1);
        assert!(matches!(
            verify(&mut auth, now, &good),
            AuthOutcome::Authenticated { .. }
        ));
    }
    assert_eq!(auth.nonce_count(), 10);
    auth.purge(now + Duration::from_secs(30));
    assert_eq!(auth.nonce_count(), 10);
    auth.purge(now + Duration::from_secs(61));
    assert_eq!(auth.nonce_count(), 0);
}

/// When the table of nonces in use is full, the oldest is forgotten, and it (and every
/// nonce issued before it) becomes stale: a forgotten nonce never gets a second first
/// use, so a captured request cannot be replayed after its nonce was forgotten.
#[test]
fn a_forgotten_nonce_is_stale_not_reusable() {
    let now = Instant::now();
    let mut auth = authenticator(300, 1, now);
    let use_one = |auth: &mut DigestAuthenticator| {
        let challenge = auth.challenge(now, &BOTH, false).remove(0);
        let good = answer(&challenge, DigestAlgorithm::Md5, "201", "pw201", 1);
        assert!(matches!(
            verify(auth, now, &good),
            AuthOutcome::Authenticated { .. }
        ));
        good
    };
    let unused_early = auth.challenge(now, &BOTH, false).remove(0);
    let oldest = use_one(&mut auth);
    for _ in 1..nonce::MAX_NONCES_IN_USE {
        use_one(&mut auth);
    }
    assert_eq!(auth.nonce_count(), nonce::MAX_NONCES_IN_USE);
    let newest = use_one(&mut auth);
    assert_eq!(auth.nonce_count(), nonce::MAX_NONCES_IN_USE);
    assert_eq!(verify(&mut auth, now, &oldest), AuthOutcome::Stale);
    assert_eq!(
        verify(
            &mut auth,
            now,
            &answer(&unused_early, DigestAlgorithm::Md5, "201", "pw201", 1)
        ),
        AuthOutcome::Stale
    );
    assert_eq!(
        verify(&mut auth, now, &newest),
        rejected(RejectReason::Replay, "201")
    );
}
