//! The benchmark's SIP load generator (bench::sipload) against the real gateway, checked
//! against SIPp at a low rate: both complete every call, and the gateway's CDRs count them.

use bench::sipload::{run, LoadConfig};
use e2e_tests::{sipp_calls, Gateway, GatewayOptions};
use std::time::Duration;

fn extensions(first: u32, count: u32) -> Vec<(String, String)> {
    (first..first + count)
        .map(|n| (n.to_string(), format!("pw{n}")))
        .collect()
}

fn config_for(extensions: &[(String, String)]) -> String {
    extensions
        .iter()
        .map(|(n, pw)| format!("[[extension]]\nnumber = \"{n}\"\npassword = \"{pw}\"\n"))
        .collect()
}

#[test]
fn the_load_generator_completes_calls_like_sipp_does() {
    let (callers, callees) = (extensions(2000, 5), extensions(3000, 5));
    let gateway = Gateway::start(GatewayOptions {
        extra: format!("{}{}", config_for(&callers), config_for(&callees)),
        ..GatewayOptions::default()
    });
    // SIPp at 20 calls/s: 201 answers, 202 calls.
    sipp_calls(&gateway, 40, 20);
    // The generator at the same rate.
    let report = run(&LoadConfig {
        server: gateway.addr(),
        callers,
        callees,
        rate: 20.0,
        calls: 40,
        hold: Duration::from_millis(300),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    assert_eq!((report.completed, report.failed), (40, 0), "{report:?}");
    assert!(report.setup_us.len() == 40 && report.setup_us.value_at_quantile(0.5) > 0);
    let answered = || gateway.recent_cdrs(200).matches(" answered ").count();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while answered() < 80 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            gateway.recent_cdrs(200)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
