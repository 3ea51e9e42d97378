//! `bencode::decode` over arbitrary bytes: no panic, no stack overflow on deep nesting,
//! and whatever it accepts re-encodes to a value that decodes to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal::bencode;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = bencode::decode(data) {
        let again = bencode::encode(&value);
        assert_eq!(bencode::decode(&again).ok(), Some(value));
    }
});
