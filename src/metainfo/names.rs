//! Characters in names that come from outside (torrent `name` and paths, magnet `dn`, tracker
//! messages) that must never reach a terminal or a file system as they are.
//!
//! Policy, the same as libtorrent's `sanitize_append_path_element` in spirit
//! (src/torrent_info.cpp, `valid_path_character` and `filter_path_character`):
//! - *unsafe* characters are C0 controls (newlines and ESC included), DEL, C1 controls, the
//!   bidi marks, embeddings, overrides and isolates (U+061C, U+200E/F, U+202A–202E,
//!   U+2066–2069), the zero-width and invisible characters libtorrent also filters (U+200B–200D,
//!   U+2060–2064, U+FEFF) and the Unicode line and paragraph separators (U+2028/2029);
//! - names used on disk get each unsafe character replaced by `_` ([`sanitize`]). libtorrent
//!   drops the invisible ones instead; replacing keeps the name's length and can never turn a
//!   name into `.` or `..`, which [`super::validate`] then still rejects;
//! - tracker and web seed URLs get each unsafe character percent-encoded
//!   ([`percent_encode_unsafe`]), as a URL parser would before sending them;
//! - text shown to a user escapes each unsafe character as `\u{..}` ([`escape`]), so a torrent
//!   cannot move the cursor, recolour the terminal, plant an OSC 8 link or reorder a line.
use std::borrow::Cow;

/// Whether `c` must never be written raw to a terminal or used in a file name.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() // C0, DEL, C1
        || matches!(c,
            '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{2029}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}')
}

/// `s` with every unsafe character replaced by `_`; borrowed when nothing changes.
pub fn sanitize(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(|c| if is_unsafe(c) { '_' } else { c }).collect())
}

/// `s` with every unsafe character percent-encoded (its UTF-8 bytes as `%XX`), for URLs.
pub fn percent_encode_unsafe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) {
            for b in c.encode_utf8(&mut [0; 4]).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` with every unsafe character written as `\u{hex}`, for display; borrowed when clean.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Serialized JSON with every unsafe character that is still raw (serde_json escapes C0 in
/// strings but leaves DEL, C1 and the Unicode format characters as they are) written as a
/// `\uXXXX` escape. C0 is left alone: outside strings it is the pretty-printer's own line
/// breaks. The other unsafe characters can only occur inside strings, so the escape keeps the
/// data exact.
pub fn escape_json(json: &str) -> Cow<'_, str> {
    let raw = |c: char| is_unsafe(c) && c >= ' ';
    if !json.chars().any(raw) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if raw(c) {
            // Every unsafe character is in the Basic Multilingual Plane: one escape each.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str =
        "a\u{1b}[31mred\u{1b}]8;;http://x\u{7}link\u{1b}]8;;\u{7}\n\r\u{202e}gpj.exe\u{2066}\u{9b}\u{7f}";

    #[test]
    fn classifies_controls_and_bidi() {
        for c in ['\0', '\n', '\r', '\t', '\u{1b}', '\u{7f}', '\u{85}', '\u{9b}', '\u{200e}', '\u{202e}', '\u{2069}'] {
            assert!(is_unsafe(c), "{c:?}");
        }
        for c in ['a', ' ', '.', 'é', 'フ', '\u{fffd}', '😀', '\u{a0}'] {
            assert!(!is_unsafe(c), "{c:?}");
        }
    }

    #[test]
    fn sanitize_replaces_one_for_one() {
        let s = sanitize(HOSTILE);
        assert!(!s.chars().any(is_unsafe), "{s:?}");
        assert_eq!(s.chars().count(), HOSTILE.chars().count());
        assert_eq!(sanitize("\u{202e}.."), "_..");
        assert!(matches!(sanitize("plain name.txt"), Cow::Borrowed(_)));
    }

    #[test]
    fn urls_get_percent_encoding() {
        assert_eq!(
            percent_encode_unsafe("http://t.example/a\u{1b}[2J\n\u{202e}"),
            "http://t.example/a%1B[2J%0A%E2%80%AE"
        );
        assert!(matches!(percent_encode_unsafe("udp://t:1/announce"), Cow::Borrowed(_)));
    }

    #[test]
    fn escape_is_printable_and_json_escape_is_lossless() {
        let e = escape(HOSTILE);
        assert!(!e.chars().any(is_unsafe), "{e:?}");
        assert!(e.contains("\\u{1b}[31mred") && e.contains("\\u{202e}gpj.exe"), "{e}");
        let json = serde_json::to_string_pretty(&[HOSTILE]).unwrap();
        let safe = escape_json(&json);
        assert!(!safe.chars().any(|c| is_unsafe(c) && c != '\n'), "{safe}");
        assert_eq!(serde_json::from_str::<Vec<String>>(&safe).unwrap(), [HOSTILE]);
    }
}
