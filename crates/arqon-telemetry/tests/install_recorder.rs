//! The binary's path: `install_recorder` installs the Prometheus recorder
//! globally, and the very first render already exports every SPEC §12
//! family with `# HELP` and `# TYPE`; the hub created afterwards records
//! route latency into it. Installing twice is an error, not a panic.
//!
//! (Its own test binary: a global recorder can be installed once per
//! process.)

use std::time::Duration;

use arqon_telemetry::metrics::install_recorder;
use arqon_telemetry::{Telemetry, TelemetryConfig, TelemetryError, names};

#[test]
fn install_exports_every_family_from_the_first_scrape() {
    let handle = install_recorder().expect("first install");
    let text = handle.render();
    for name in names::GAUGES
        .iter()
        .chain(&names::COUNTERS)
        .chain(&names::HISTOGRAMS)
    {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "HELP {name}:\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "TYPE {name}:\n{text}"
        );
    }
    assert!(text.contains(&format!("{} 0\n", names::STORAGE_DEGRADED)));

    // A hub built after the install feeds the routing histogram.
    let telemetry = Telemetry::new(&TelemetryConfig::default());
    telemetry.record_route(Duration::from_micros(40));
    let text = handle.render();
    assert!(
        text.contains(&format!("{}_count 1\n", names::MESSAGE_ROUTING_SECONDS)),
        "{text}"
    );

    match install_recorder() {
        Err(TelemetryError::Recorder { .. }) => {}
        other => panic!("a second install must fail: {other:?}"),
    }
}
