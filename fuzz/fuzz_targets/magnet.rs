//! `Magnet::parse` and `parse_select_only` over arbitrary UTF-8: no panic; an accepted magnet
//! formats to a URI that parses back to itself (the module's promise), its name, trackers and
//! peers carry no unsafe character, and it has no more trackers and peers than the URI has
//! `&`-separated pairs; an accepted `so` has one ordered range per comma-separated part and
//! formats back to the same ranges.
#![no_main]
use std::ops::RangeInclusive;

use libfuzzer_sys::fuzz_target;
use shoal::metainfo::magnet::{parse_select_only, Magnet};
use shoal::metainfo::names::is_unsafe;

fn check_select_only(s: &str) {
    let Ok(ranges) = parse_select_only(s) else {
        return;
    };
    assert_eq!(ranges.len(), s.split(',').count());
    assert!(ranges.iter().all(|r| r.start() <= r.end()));
    let formatted: Vec<String> = ranges.iter().map(|r| format!("{}-{}", r.start(), r.end())).collect();
    let again: Vec<RangeInclusive<u32>> = parse_select_only(&formatted.join(",")).unwrap();
    assert_eq!(again, ranges);
}

fn check_magnet(uri: &str) {
    let Ok(m) = Magnet::parse(uri) else {
        return;
    };
    let text = m.to_string();
    assert_eq!(Magnet::parse(&text).as_ref(), Ok(&m), "{text}");
    let clean = |s: &str| !s.chars().any(is_unsafe);
    assert!(m.name.as_deref().is_none_or(clean));
    assert!(m.trackers.iter().all(|t| clean(t)));
    assert!(m.peers.iter().all(|p| clean(p)));
    assert!(m.select_only.iter().all(|r| r.start() <= r.end()));
    assert!(m.trackers.len() + m.peers.len() <= uri.split('&').count());
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    check_select_only(s);
    check_magnet(s);
    // Most inputs lack the scheme; the prefixed copy reaches the parameters every time.
    check_magnet(&format!("magnet:?xt=urn:btih:{}&{s}", "0".repeat(40)));
});
