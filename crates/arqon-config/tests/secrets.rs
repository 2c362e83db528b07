//! Secrets never show in `Debug` and are kept byte for byte.

#![allow(clippy::unwrap_used)]

mod support;

use arqon_config::*;
use support::*;

#[test]
fn secrets_never_show_in_debug() {
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret:?}"), "<redacted>");
    assert_eq!(secret.to_string(), "<redacted>");
    assert_eq!(secret.expose(), "hunter2");

    let c = load_env(&[
        ("ARQONBUS_AUTH", "jwt"),
        ("ARQONBUS_JWT_SECRET", "hunter2"),
        ("ARQONBUS_ADMIN_TOKEN", "sesame"),
    ])
    .unwrap();
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("sesame"),
        "{debug}"
    );

    let sources = Sources {
        env: pairs(&[("ARQONBUS_JWT_SECRET", "hunter2"), ("HOME", "/root")]),
        ..Sources::default()
    };
    let debug = format!("{sources:?}");
    assert!(
        debug.contains("ARQONBUS_JWT_SECRET") && !debug.contains("hunter2"),
        "{debug}"
    );
}

#[test]
fn secrets_are_kept_byte_for_byte() {
    let c = load_env(&[("ARQONBUS_ADMIN_TOKEN", " with spaces ")]).unwrap();
    assert_eq!(c.auth.admin_token.unwrap().expose(), " with spaces ");
}
