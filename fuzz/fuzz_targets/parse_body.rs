//! Fuzz target: the payload parser alone (envelope, each record, the form decoder).
//!
//! Raw bytes as the body of `POST /job/{service}`; also fed to the object-key decoder directly,
//! since most inputs never reach it through valid JSON. Must never panic.

#![no_main]

use dedup_gateway::pipeline::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = parse::envelope(data) {
        for raw in &env.records {
            let _ = parse::record(raw);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse::decode_form_component(text);
    }
});
