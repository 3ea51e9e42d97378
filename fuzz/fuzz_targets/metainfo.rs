//! `Metainfo::from_bytes` over arbitrary bytes: no panic, and an accepted torrent is
//! internally consistent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal::metainfo::Metainfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Metainfo::from_bytes(data) {
        let sum: u64 = m.files.iter().map(|f| f.length).sum();
        assert_eq!(sum, m.total_length);
        assert!(m.piece_length > 0);
    }
});
