//! Unit tests for parsing and validation: one test per fault, built from a valid base torrent.
use super::*;
use crate::bencode::{encode, Value};
use proptest::prelude::*;

const PL: i64 = 16 << 10;

fn file(path: &[&str], length: i64) -> Value {
    let path: Vec<Value> = path.iter().map(|c| Value::from(*c)).collect();
    Value::dict().with("length", length).with("path", path).build()
}

fn pieces_for(total: i64) -> Vec<u8> {
    vec![7u8; 20 * (total as usize).div_ceil(PL as usize)]
}

fn multi(files: Vec<Value>, total: i64) -> Value {
    Value::dict()
        .with("files", files)
        .with("name", "root")
        .with("piece length", PL)
        .with("pieces", pieces_for(total))
        .build()
}

fn single(length: i64) -> Value {
    Value::dict()
        .with("length", length)
        .with("name", "one.bin")
        .with("piece length", PL)
        .with("pieces", pieces_for(length))
        .build()
}

fn torrent(info: Value) -> Vec<u8> {
    encode(&Value::dict().with("announce", "http://t.example/announce").with("info", info).build())
}

/// Replaces one key of the info dict.
fn with_info_key(info: Value, key: &str, v: Value) -> Value {
    let Value::Dict(mut d) = info else { unreachable!() };
    d.insert(key.as_bytes().to_vec(), v);
    Value::Dict(d)
}

fn parse_err(info: Value) -> MetainfoError {
    Metainfo::from_bytes(&torrent(info)).expect_err("should be rejected")
}

#[test]
fn parses_single_file() {
    let info = single(40_000);
    let bytes = torrent(info.clone());
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.info_hash, InfoHash::of_info(&encode(&info)));
    assert_eq!(&m.info_bytes[..], &encode(&info)[..]);
    assert_eq!(m.name, "one.bin");
    assert!(!m.multi_file);
    assert_eq!(m.piece_count(), 3);
    assert_eq!(m.piece_size(0), Some(16384));
    assert_eq!(m.piece_size(2), Some(40_000 - 2 * 16384));
    assert_eq!(m.piece_size(3), None);
    assert_eq!(m.trackers, vec![vec!["http://t.example/announce".to_string()]]);
    assert_eq!(m.relative_path(&m.files[0]), PathBuf::from("one.bin"));
}

#[test]
fn parses_multi_file_with_padding_and_offsets() {
    let mut pad = file(&[".pad", "16379"], 16379);
    if let Value::Dict(d) = &mut pad {
        d.insert(b"attr".to_vec(), "p".into());
    }
    let files =
        vec![file(&["a", "x.bin"], 5), pad, file(&["b"], 100), file(&["_____padding_file_0_"], 16284), file(&["c"], 0)];
    let m = Metainfo::from_bytes(&torrent(multi(files, 32768))).unwrap();
    let offsets: Vec<u64> = m.files.iter().map(|f| f.offset).collect();
    assert_eq!(offsets, [0, 5, 16384, 16484, 32768]);
    let padding: Vec<bool> = m.files.iter().map(|f| f.padding).collect();
    assert_eq!(padding, [false, true, false, true, false]);
    assert_eq!(m.total_length, 32768);
    assert_eq!(m.relative_path(&m.files[0]), PathBuf::from("root/a/x.bin"));
}

#[test]
fn prefers_utf8_keys_and_reads_optional_fields() {
    let info = with_info_key(single(10), "name.utf-8", "nämé".into());
    let top = Value::dict()
        .with("announce", "http://ignored/")
        .with(
            "announce-list",
            vec![
                Value::List(vec!["http://a/".into(), "http://b/".into()]),
                Value::List(vec![]),
                Value::List(vec!["udp://c:1".into()]),
            ],
        )
        .with("comment", "c")
        .with("created by", "tool")
        .with("creation date", 1234i64)
        .with("info", with_info_key(info, "private", 1i64.into()))
        .with("url-list", "http://seed/")
        .build();
    let m = Metainfo::from_bytes(&encode(&top)).unwrap();
    assert_eq!(m.name, "nämé");
    assert_eq!(m.trackers.len(), 2);
    assert_eq!(m.trackers[0], ["http://a/", "http://b/"]);
    assert!(m.private);
    assert_eq!(m.comment.as_deref(), Some("c"));
    assert_eq!(m.created_by.as_deref(), Some("tool"));
    assert_eq!(m.creation_date, Some(1234));
    assert_eq!(m.url_list, ["http://seed/"]);
    assert_eq!(m.magnet().info_hash, m.info_hash);
}

#[test]
fn rejects_piece_length_faults() {
    assert_eq!(
        parse_err(with_info_key(single(10), "piece length", 1000i64.into())),
        MetainfoError::PieceLengthNotPowerOfTwo(1000)
    );
    assert_eq!(
        parse_err(with_info_key(single(10), "piece length", 8192i64.into())),
        MetainfoError::PieceLengthOutOfRange(8192)
    );
    assert_eq!(
        parse_err(with_info_key(single(10), "piece length", (128i64 << 20).into())),
        MetainfoError::PieceLengthOutOfRange(128 << 20)
    );
    assert_eq!(
        parse_err(with_info_key(single(10), "piece length", 0i64.into())),
        MetainfoError::PieceLengthNotPowerOfTwo(0)
    );
    let msg = MetainfoError::PieceLengthNotPowerOfTwo(1000).to_string();
    assert_eq!(msg, "info.piece length: 1000 is not a power of two");
}

#[test]
fn rejects_pieces_faults() {
    assert_eq!(
        parse_err(with_info_key(single(10), "pieces", vec![0u8; 19].into())),
        MetainfoError::PiecesNotMultipleOf20(19)
    );
    assert!(matches!(
        parse_err(with_info_key(single(100_000), "pieces", vec![0u8; 20].into())),
        MetainfoError::PieceCountMismatch { got: 1, expected: 7, .. }
    ));
}

#[test]
fn rejects_length_faults() {
    assert_eq!(
        parse_err(with_info_key(single(10), "length", (-1i64).into())),
        MetainfoError::NegativeLength { field: "info.length".into(), value: -1 }
    );
    let files = vec![file(&["a"], i64::MAX), file(&["b"], i64::MAX), file(&["c"], 4)];
    assert_eq!(parse_err(multi(files, 0)), MetainfoError::TotalLengthOverflow);
    assert_eq!(parse_err(multi(vec![], 0)), MetainfoError::EmptyFileList);
    let e = parse_err(multi(vec![file(&["a"], -5)], 0));
    assert_eq!(e.to_string(), "info.files[0].length: negative length -5");
}

#[test]
fn rejects_path_faults() {
    let cases: Vec<(Vec<Value>, &str)> = vec![
        (vec![file(&[], 1)], "info.files[0].path: empty path"),
        (vec![file(&["..", "x"], 1)], "relative component"),
        (vec![file(&["/etc", "passwd"], 1)], "contains a path separator"),
        (vec![file(&["C:", "x"], 1)], "windows drive letter"),
        (vec![file(&["ok", "aux.txt"], 1)], "windows reserved name"),
        (vec![file(&["a"], 1), file(&["a"], 1)], "duplicate path \"a\""),
        (vec![file(&["a"], 1), file(&["a", "b"], 1)], "is a file but also the directory"),
    ];
    for (files, want) in cases {
        let msg = parse_err(multi(files, 2)).to_string();
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
    let e = parse_err(with_info_key(single(10), "name", "..".into()));
    assert!(e.to_string().starts_with("info.name: bad path component"), "{e}");
}

#[test]
fn rejects_structure_faults() {
    assert!(matches!(Metainfo::from_bytes(b"d4:infoi1ee"), Err(MetainfoError::WrongType { .. })));
    assert_eq!(Metainfo::from_bytes(b"de"), Err(MetainfoError::Missing("info".into())));
    let bad = Metainfo::from_bytes(b"d4:info").unwrap_err();
    assert!(bad.to_string().starts_with("bencode at byte 7"), "{bad}");
    let no_name = Value::dict().with("length", 1i64).with("piece length", PL).with("pieces", vec![0u8; 20]).build();
    assert_eq!(parse_err(no_name), MetainfoError::Missing("info.name".into()));
}

#[test]
fn info_hash_text_forms() {
    let h = InfoHash::from_hex("0123456789ABCDEFabcdef0123456789abcdef01").unwrap();
    assert_eq!(h.to_hex(), "0123456789abcdefabcdef0123456789abcdef01");
    assert_eq!(format!("{h:?}"), h.to_hex());
    assert_eq!(InfoHash::from_base32(&h.to_base32()), Ok(h));
    // RFC 4648 test vector shape: 20 zero bytes are 32 'A's.
    assert_eq!(InfoHash([0; 20]).to_base32(), "A".repeat(32));
    assert_eq!(InfoHash::from_hex("xyz"), Err(InfoHashError::BadLength(3)));
}

proptest! {
    #[test]
    fn prop_from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Metainfo::from_bytes(&bytes);
    }

    #[test]
    fn prop_mutated_torrent_never_panics(pos in 0usize..200, byte in any::<u8>()) {
        let mut bytes = torrent(multi(vec![file(&["a"], 5), file(&["b", "c"], 20_000)], 20_005));
        let at = pos % bytes.len();
        bytes[at] = byte;
        let _ = Metainfo::from_bytes(&bytes);
    }
}

#[test]
fn path_depth_is_limited_before_components_are_decoded() {
    let ok: Vec<String> = (0..validate::MAX_PATH_DEPTH).map(|i| format!("d{i}")).collect();
    let ok: Vec<&str> = ok.iter().map(String::as_str).collect();
    Metainfo::from_bytes(&torrent(multi(vec![file(&ok, 1)], 1))).expect("100 components are fine");
    let deep = vec!["a"; 60_000];
    let bytes = torrent(multi(vec![file(&deep, 1)], 1));
    assert!(bytes.len() > 180_000);
    let e = Metainfo::from_bytes(&bytes).unwrap_err();
    assert_eq!(e, MetainfoError::PathTooDeep { field: "info.files[0].path".into(), depth: 60_000, limit: 100 });
}

#[test]
fn component_and_path_lengths_are_limited() {
    let long = "x".repeat(validate::MAX_COMPONENT_BYTES + 1);
    let e = parse_err(multi(vec![file(&["a", &long], 1)], 1));
    assert_eq!(e.to_string(), "info.files[0].path: a path component of 256 bytes, longer than the limit of 255");
    let e = parse_err(with_info_key(single(10), "name", long.as_str().into()));
    assert!(matches!(e, MetainfoError::ComponentTooLong { .. }), "{e}");
    let fits = "y".repeat(validate::MAX_COMPONENT_BYTES);
    Metainfo::from_bytes(&torrent(with_info_key(single(10), "name", fits.as_str().into()))).unwrap();
    let wide: Vec<String> = (0..20).map(|i| format!("{i:0>250}")).collect();
    let wide: Vec<&str> = wide.iter().map(String::as_str).collect();
    let e = parse_err(multi(vec![file(&wide, 1)], 1));
    assert!(matches!(e, MetainfoError::PathTooLong { limit: 4096, .. }), "{e}");
}

const HOSTILE_NAME: &str = "evil\u{1b}[31mred\u{1b}]8;;mailto:x@y.example\u{7}click\u{1b}]8;;\u{7}\n\r\u{202e}gpj.exe";

#[test]
fn control_and_bidi_characters_are_replaced_in_names_and_paths() {
    let info = with_info_key(
        multi(vec![file(&["dir\u{2066}x", HOSTILE_NAME], 1), file(&["plain\u{9b}2J"], 1)], 2),
        "name",
        HOSTILE_NAME.into(),
    );
    let m = Metainfo::from_bytes(&torrent(info)).unwrap();
    let clean = |s: &str| !s.chars().any(names::is_unsafe);
    assert!(clean(&m.name), "{:?}", m.name);
    assert_eq!(m.name, "evil_[31mred_]8;;mailto:x@y.example_click_]8;;____gpj.exe");
    for f in &m.files {
        assert!(f.path.iter().all(|c| clean(c)), "{:?}", f.path);
        let on_disk = m.relative_path(f);
        assert!(clean(on_disk.to_str().unwrap()), "{on_disk:?}");
    }
    assert_eq!(m.files[0].path, ["dir_x", m.name.as_str()]);
    assert_eq!(m.files[1].path, ["plain_2J"]);
}

#[test]
fn names_that_collide_after_replacement_are_duplicates() {
    let e = parse_err(multi(vec![file(&["a\u{1b}"], 1), file(&["a\n"], 1)], 2));
    assert_eq!(e, MetainfoError::DuplicatePath("a_".into()));
    // Replacement never produces a relative component: "\u{202e}.." is "_..", a fine name.
    let m = Metainfo::from_bytes(&torrent(multi(vec![file(&["\u{202e}.."], 1)], 1))).unwrap();
    assert_eq!(m.files[0].path, ["_.."]);
}
