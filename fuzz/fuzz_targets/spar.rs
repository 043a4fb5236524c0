//! Any text as a SPAR PersonSök answer: mapped or refused, never a panic.
#![no_main]

use connector_spar::mapping::{Asked, map_answer};

libfuzzer_sys::fuzz_target!(|text: &str| {
    let mut warnings = Vec::new();
    let asked = Asked {
        relations: true,
        citizenship: true,
    };
    let _ = map_answer(text, "", asked, &mut warnings);
});
