//! URI equivalence (RFC 3261 §19.1.4), for checks that must not be fooled by spelling:
//! a digest response's `uri` must name the request's own Request-URI (RFC 3261 §22.4,
//! RFC 7616 §3.4.6), or credentials computed for one target could place a call to another.

use super::message::RequestUri;
use ezk_sip_types::host::Host;
use ezk_sip_types::uri::SipUri;

/// URI parameters that, when present in either URI, must be present and equal in both.
const SIGNIFICANT_PARAMS: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];

/// True when `a` and `b` are the same URI by the rules of RFC 3261 §19.1.4: SIP URIs by
/// their components (scheme, user and password case-sensitively, host case-insensitively,
/// port, parameters and headers); other schemes as case-insensitive text.
pub fn equivalent(a: &RequestUri, b: &RequestUri) -> bool {
    match (a, b) {
        (RequestUri::Sip(a), RequestUri::Sip(b)) => sip_equivalent(a.uri(), b.uri()),
        (
            RequestUri::Other {
                scheme: scheme_a,
                text: text_a,
            },
            RequestUri::Other {
                scheme: scheme_b,
                text: text_b,
            },
        ) => scheme_a == scheme_b && text_a.eq_ignore_ascii_case(text_b),
        _ => false,
    }
}

fn sip_equivalent(a: &SipUri, b: &SipUri) -> bool {
    a.sips == b.sips
        && a.user_part == b.user_part
        && hosts_equal(&a.host_port.host, &b.host_port.host)
        && a.host_port.port == b.host_port.port
        && params_equivalent(&a.uri_params.to_string(), &b.uri_params.to_string())
        && headers_equal(&a.header_params.to_string(), &b.header_params.to_string())
}

fn hosts_equal(a: &Host, b: &Host) -> bool {
    match (a, b) {
        (Host::Name(a), Host::Name(b)) => a.eq_ignore_ascii_case(b),
        (a, b) => a == b,
    }
}

/// `;name=value` pairs of a printed parameter list, names lower-cased.
fn params(printed: &str) -> Vec<(String, Option<&str>)> {
    printed
        .split(';')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((name, value)) => (name.to_ascii_lowercase(), Some(value)),
            None => (p.to_ascii_lowercase(), None),
        })
        .collect()
}

/// §19.1.4: a parameter in both URIs must match (case-insensitively); user, ttl, method,
/// maddr and transport must also not appear in one URI only; other parameters that
/// appear in one only are ignored.
fn params_equivalent(a: &str, b: &str) -> bool {
    let (a, b) = (params(a), params(b));
    let value_in = |list: &[(String, Option<&str>)], name: &str| {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.map(str::to_ascii_lowercase))
    };
    let names = a.iter().chain(&b).map(|(name, _)| name.as_str());
    names
        .into_iter()
        .all(|name| match (value_in(&a, name), value_in(&b, name)) {
            (Some(x), Some(y)) => x == y,
            _ => !SIGNIFICANT_PARAMS.contains(&name),
        })
}

/// §19.1.4: header components must be present in both, and equal (as sets).
fn headers_equal(a: &str, b: &str) -> bool {
    let set = |printed: &str| {
        let mut items: Vec<String> = printed
            .trim_start_matches('?')
            .split('&')
            .filter(|h| !h.is_empty())
            .map(|h| match h.split_once('=') {
                Some((name, value)) => format!("{}={value}", name.to_ascii_lowercase()),
                None => h.to_ascii_lowercase(),
            })
            .collect();
        items.sort();
        items
    };
    set(a) == set(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &str, b: &str) -> bool {
        equivalent(
            &RequestUri::parse(a).unwrap(),
            &RequestUri::parse(b).unwrap(),
        )
    }

    #[test]
    fn rfc3261_equivalent_examples() {
        assert!(same(
            "sip:%61lice@atlanta.com;transport=TCP",
            "sip:alice@AtLanTa.CoM;Transport=tcp"
        ));
        assert!(same(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com;newparam=5"
        ));
        assert!(same(
            "sip:carol@chicago.com;security=on",
            "sip:carol@chicago.com;newparam=5"
        ));
        assert!(same(
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"
        ));
        assert!(same("sip:201@127.0.0.1:5060", "sip:201@127.0.0.1:5060"));
    }

    #[test]
    fn rfc3261_not_equivalent_examples() {
        assert!(!same(
            "SIP:ALICE@AtLanTa.CoM;Transport=udp",
            "sip:alice@AtLanTa.CoM;Transport=UDP"
        ));
        assert!(!same("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"));
        assert!(!same(
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com;transport=udp"
        ));
        assert!(!same(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com?Subject=next%20meeting"
        ));
        assert!(!same("sip:203@10.0.0.1", "sip:9555123@10.0.0.1"));
        assert!(!same("sip:203@10.0.0.1", "sips:203@10.0.0.1"));
        assert!(!same("sip:203@10.0.0.1", "tel:203"));
    }
}
