//! Any text for any key, and any small file, gives a config or a one-line
//! error: never a panic.

#![allow(clippy::unwrap_used)]

mod support;

use arqon_config::*;
use proptest::prelude::*;
use support::*;

proptest! {
    #[test]
    fn any_text_for_any_key_never_panics(index in 0..KEYS.len(), value in any::<String>()) {
        let spec = &KEYS[index];
        if let Err(err) = Config::builder().set(spec.env, &value).and_then(ConfigBuilder::build) {
            prop_assert!(!err.to_string().contains('\n'));
        }
        if let Err(err) = load_env(&[(spec.env, &value)]) {
            prop_assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn any_file_never_panics(contents in "[a-z_=\"\\[\\], 0-9.\n#:-]{0,80}") {
        let (_file, result) = load_file(&contents);
        if let Err(err) = result {
            prop_assert!(!err.to_string().contains('\n'), "{}", err);
        }
    }
}
