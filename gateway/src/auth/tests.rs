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
        uri: "sip:127.0.0.1",
        nonce: &nonce,
        nc: &nc,
        cnonce: "abc",
        qop: "auth",
    });
    format!(
        "Digest username=\"{user}\", realm=\"office\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", \
         response=\"{response}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"abc\"",
        algorithm.token()
    )
}

fn passwords(user: &str) -> Option<String> {
    (user == "201").then(|| "pw201".to_string())
}

const BOTH: [DigestAlgorithm; 2] = [DigestAlgorithm::Sha256, DigestAlgorithm::Md5];

#[test]
fn sha256_is_offered_before_md5_with_one_nonce() {
    let mut auth = DigestAuthenticator::new("office".into(), Duration::from_secs(60), [1; 32]);
    let challenges = auth.challenge(Instant::now(), &BOTH, false);
    assert_eq!(challenges.len(), 2);
    assert!(challenges[0].contains("algorithm=SHA-256"));
    assert!(challenges[1].contains("algorithm=MD5"));
    assert!(challenges
        .iter()
        .all(|c| c.contains("qop=\"auth\"") && !c.contains("stale")));
    assert_eq!(nonce_of(&challenges[0]), nonce_of(&challenges[1]));
}

#[test]
fn good_credentials_for_either_algorithm() {
    let now = Instant::now();
    let mut auth = DigestAuthenticator::new("office".into(), Duration::from_secs(60), [1; 32]);
    for algorithm in BOTH {
        let challenge = auth.challenge(now, &BOTH, false).remove(0);
        let outcome = auth.verify(
            now,
            "REGISTER",
            &answer(&challenge, algorithm, "201", "pw201", 1),
            &BOTH,
            passwords,
        );
        assert_eq!(outcome, AuthOutcome::Authenticated { user: "201".into() });
    }
}

#[test]
fn wrong_password_and_unknown_user_are_indistinguishable() {
    let now = Instant::now();
    let mut auth = DigestAuthenticator::new("office".into(), Duration::from_secs(60), [1; 32]);
    let challenge = auth.challenge(now, &BOTH, false).remove(0);
    let wrong = auth.verify(
        now,
        "REGISTER",
        &answer(&challenge, DigestAlgorithm::Md5, "201", "nope", 1),
        &BOTH,
        passwords,
    );
    let unknown = auth.verify(
        now,
        "REGISTER",
        &answer(&challenge, DigestAlgorithm::Md5, "299", "nope", 1),
        &BOTH,
        passwords,
    );
    assert_eq!(wrong, AuthOutcome::Rejected(RejectReason::BadCredentials));
    assert_eq!(wrong, unknown);
}

#[test]
fn expired_and_foreign_nonces_are_stale() {
    let now = Instant::now();
    let mut auth = DigestAuthenticator::new("office".into(), Duration::from_secs(60), [1; 32]);
    let challenge = auth.challenge(now, &BOTH, false).remove(0);
    let late = now + Duration::from_secs(61);
    let outcome = auth.verify(
        late,
        "REGISTER",
        &answer(&challenge, DigestAlgorithm::Md5, "201", "pw201", 1),
        &BOTH,
        passwords,
    );
    assert_eq!(outcome, AuthOutcome::Stale);
    let mut other = DigestAuthenticator::new("office".into(), Duration::from_secs(60), [2; 32]);
    let foreign = other.challenge(now, &BOTH, false).remove(0);
    let outcome = auth.verify(
        now,
        "REGISTER",
        &answer(&foreign, DigestAlgorithm::Md5, "201", "pw201", 1),
        &BOTH,
        passwords,
    );
    assert_eq!(outcome, AuthOutcome::Stale);
    assert!(auth.challenge(now, &BOTH, true)[0].ends_with("stale=true"));
}

#[test]
fn nonce_count_must_increase() {
    let now = Instant::now();
    let mut auth = DigestAuthenticator::new("office".into(), Duration::from_secs(60), [1; 32]);
    let challenge = auth.challenge(now, &BOTH, false).remove(0);
    let first = answer(&challenge, DigestAlgorithm::Md5, "201", "pw201", 1);
    assert!(matches!(
        auth.verify(now, "REGISTER", &first, &BOTH, passwords),
        AuthOutcome::Authenticated { .. }
    ));
    assert_eq!(
        auth.verify(now, "REGISTER", &first, &BOTH, passwords),
        AuthOutcome::Rejected(RejectReason::Replay)
    );
    let second = answer(&challenge, DigestAlgorithm::Md5, "201", "pw201", 2);
    assert!(matches!(
        auth.verify(now, "REGISTER", &second, &BOTH, passwords),
        AuthOutcome::Authenticated { .. }
    ));
}

#[test]
fn algorithm_not_offered_and_wrong_realm_are_refused() {
    let now = Instant::now();
    let mut auth = DigestAuthenticator::new("office".into(), Duration::from_secs(60), [1; 32]);
    let challenge = auth.challenge(now, &BOTH, false).remove(0);
    let md5 = answer(&challenge, DigestAlgorithm::Md5, "201", "pw201", 1);
    assert!(matches!(
        auth.verify(now, "REGISTER", &md5, &[DigestAlgorithm::Sha256], passwords),
        AuthOutcome::Rejected(RejectReason::AlgorithmNotOffered(_))
    ));
    let other_realm = md5.replace("realm=\"office\"", "realm=\"elsewhere\"");
    assert_eq!(
        auth.verify(now, "REGISTER", &other_realm, &BOTH, passwords),
        AuthOutcome::Rejected(RejectReason::WrongRealm)
    );
    let no_qop = md5.replace(", qop=auth", "");
    assert_eq!(
        auth.verify(now, "REGISTER", &no_qop, &BOTH, passwords),
        AuthOutcome::Rejected(RejectReason::QopRequired)
    );
}

#[test]
fn garbage_never_panics() {
    let now = Instant::now();
    let mut auth = DigestAuthenticator::new("office".into(), Duration::from_secs(60), [1; 32]);
    let challenge = auth.challenge(now, &BOTH, false).remove(0);
    let good = answer(&challenge, DigestAlgorithm::Md5, "201", "pw201", 1);
    for end in 0..good.len() {
        if good.is_char_boundary(end) {
            let outcome = auth.verify(now, "REGISTER", &good[..end], &BOTH, passwords);
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
            auth.verify(now, "REGISTER", junk, &BOTH, passwords),
            AuthOutcome::Rejected(_)
        ));
    }
}

#[test]
fn expired_nonces_are_purged() {
    let now = Instant::now();
    let mut auth = DigestAuthenticator::new("office".into(), Duration::from_secs(60), [1; 32]);
    for _ in 0..10 {
        auth.challenge(now, &BOTH, false);
    }
    assert_eq!(auth.nonce_count(), 10);
    auth.purge(now + Duration::from_secs(61));
    assert_eq!(auth.nonce_count(), 0);
}

#[test]
fn a_full_nonce_table_forgets_the_oldest_nonce_first() {
    let now = Instant::now();
    let mut auth = DigestAuthenticator::new("office".into(), Duration::from_secs(300), [1; 32]);
    let oldest = auth.challenge(now, &BOTH, false).remove(0);
    let second = auth.challenge(now, &BOTH, false).remove(0);
    for _ in 2..MAX_NONCES {
        auth.challenge(now, &BOTH, false);
    }
    assert_eq!(auth.nonce_count(), MAX_NONCES);
    // One more: the oldest goes, everything else stays.
    let newest = auth.challenge(now, &BOTH, false).remove(0);
    assert_eq!(auth.nonce_count(), MAX_NONCES);
    let verify = |auth: &mut DigestAuthenticator, challenge: &str| {
        auth.verify(
            now,
            "REGISTER",
            &answer(challenge, DigestAlgorithm::Md5, "201", "pw201", 1),
            &BOTH,
            passwords,
        )
    };
    assert_eq!(verify(&mut auth, &oldest), AuthOutcome::Stale);
    for challenge in [&second, &newest] {
        assert!(matches!(
            verify(&mut auth, challenge),
            AuthOutcome::Authenticated { .. }
        ));
    }
}
