//! The errors of this crate.

use metrics_exporter_prometheus::BuildError;

/// Why a telemetry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The `?events=` filter names an event that does not exist (SPEC §8).
    #[error("unknown telemetry event `{name}` (known: {known})", known = crate::Event::KINDS.join(", "))]
    UnknownEvent { name: String },
    /// The Prometheus recorder could not be built or installed (a global
    /// recorder is already installed, for instance).
    #[error("cannot install the Prometheus metrics recorder")]
    Recorder {
        #[source]
        source: BuildError,
    },
}
