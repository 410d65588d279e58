//! The documentation that is generated from the code is up to date.
//!
//! `docs/configuration.md` holds the settings reference between two marker
//! lines; it is rendered from the server's settings table. After changing a
//! setting, regenerate it with `OXSERVE_BLESS=1 cargo test --test docs`.

use std::path::Path;

const BEGIN: &str = "<!-- settings:begin -->\n";
const END: &str = "<!-- settings:end -->";

#[test]
fn the_configuration_reference_matches_the_settings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let text = std::fs::read_to_string(&path).expect("docs/configuration.md exists");
    let start = text.find(BEGIN).expect("the begin marker is present") + BEGIN.len();
    let end = text.find(END).expect("the end marker is present");
    assert!(start <= end, "the markers are in order");
    let expected = oxserve::settings_reference();
    if text[start..end] != expected {
        if std::env::var_os("OXSERVE_BLESS").is_some() {
            let updated = format!("{}{expected}{}", &text[..start], &text[end..]);
            std::fs::write(&path, updated).expect("docs/configuration.md is writable");
            return;
        }
        panic!(
            "docs/configuration.md's settings reference is out of date; run \
             `OXSERVE_BLESS=1 cargo test --test docs` to regenerate it"
        );
    }
}

#[test]
fn every_setting_is_documented_with_a_default() {
    for setting in oxserve::SETTINGS {
        assert!(!setting.paragraphs().is_empty(), "{}", setting.key);
        assert!(!setting.default.is_empty(), "{}", setting.key);
    }
}
