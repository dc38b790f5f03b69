//! API key text from a request header: parsing must reject or accept, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| {
    let _ = keygate_core::apikey::ParsedKey::parse(text);
});
