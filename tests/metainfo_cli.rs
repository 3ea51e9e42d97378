//! `shoal info` and `shoal create` through the built binary, against real torrents made by other
//! tools (fixtures/) and against the tools themselves (transmission-show, python3-libtorrent).
//!
//! Tests that need an external tool fail when it is missing, unless `SHOAL_SKIP_INTEROP=1`.
mod common;

use common::clients::{require_libtorrent, require_transmission, skip_on_purpose, LT_PYTHON};
use serde_json::Value as Json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn shoal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal")).args(args).env("RUST_BACKTRACE", "1").output().expect("run shoal")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn info_json(path: &Path) -> Json {
    let out = shoal(&["info", "--json", path.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
    serde_json::from_slice(&out.stdout).expect("shoal info --json prints JSON")
}

/// Whether interop checks run; panics when a needed tool is missing and skipping is not allowed.
fn interop(require: fn()) -> bool {
    if skip_on_purpose() {
        return false;
    }
    require();
    true
}

fn have_transmission() -> bool {
    interop(require_transmission)
}

fn have_libtorrent() -> bool {
    interop(require_libtorrent)
}

/// What transmission-show reports: the info-hash and the file paths below the torrent root.
fn transmission_view(torrent: &Path) -> (String, BTreeSet<(String, bool)>) {
    let out = Command::new("transmission-show").arg(torrent).output().expect("run transmission-show");
    assert!(out.status.success(), "transmission-show: {}", stderr(&out));
    let text = stdout(&out);
    let hash = text.lines().find_map(|l| l.trim().strip_prefix("Hash: ")).expect("a Hash: line").to_string();
    let name = text.lines().find_map(|l| l.strip_prefix("Name: ")).expect("a Name: line").to_string();
    let files = text
        .split("\nFILES\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.trim().rsplit_once(" ("))
        .map(|(path, _size)| {
            let rel = path.strip_prefix(&format!("{name}/")).unwrap_or(path);
            (rel.to_string(), false)
        })
        .collect();
    (hash, files)
}

/// What libtorrent reports: the v1 info-hash and (path below the root, length, is padding).
fn libtorrent_view(torrent: &Path) -> (String, Vec<(String, u64, bool)>) {
    const SCRIPT: &str = r#"
import json, sys
import libtorrent as lt
ti = lt.torrent_info(sys.argv[1])
fs = ti.files()
root = fs.name() + "/"
files = []
for i in range(fs.num_files()):
    p = fs.file_path(i)
    if fs.num_files() > 1 or p.startswith(root):
        p = p[len(root):] if p.startswith(root) else p
    files.append([p, fs.file_size(i), bool(fs.file_flags(i) & fs.flag_pad_file)])
print(json.dumps({"hash": str(ti.info_hashes().v1), "files": files}))
"#;
    let out = Command::new(LT_PYTHON).args(["-c", SCRIPT]).arg(torrent).output().expect("run python3-libtorrent");
    assert!(out.status.success(), "libtorrent: {}", stderr(&out));
    let v: Json = serde_json::from_slice(&out.stdout).expect("json from libtorrent");
    let files = v["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| (f[0].as_str().expect("path").to_string(), f[1].as_u64().expect("size"), f[2].as_bool().expect("pad")))
        .collect();
    (v["hash"].as_str().expect("hash").to_string(), files)
}

/// shoal's file list as (path below the root, length, padding), checking that each file's
/// `index` (what `download --only` takes) is its position in libtorrent's order.
fn shoal_files(info: &Json) -> Vec<(String, u64, bool)> {
    info["files"]
        .as_array()
        .expect("files")
        .iter()
        .enumerate()
        .map(|(i, f)| {
            assert_eq!(f["index"].as_u64(), Some(i as u64), "file index");
            (
                f["path"].as_str().expect("path").to_string(),
                f["length"].as_u64().expect("length"),
                f["padding"].as_bool().expect("padding"),
            )
        })
        .collect()
}

fn expected_hashes() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(fixtures().join("expected-hashes.txt")).expect("read");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace().map(str::to_string);
            let mut next = || parts.next().expect("3 columns");
            (next(), next(), next())
        })
        .collect()
}

#[test]
fn good_fixtures_give_the_info_hash_their_tool_reported() {
    let expected = expected_hashes();
    assert_eq!(expected.len(), 5, "every good fixture listed");
    for (file, hash, tool) in expected {
        let path = fixtures().join(&file);
        let info = info_json(&path);
        assert_eq!(info["info_hash"], hash.as_str(), "{file}");
        let live = match tool.as_str() {
            "transmission-show" if have_transmission() => Some(transmission_view(&path).0),
            "libtorrent" if have_libtorrent() => Some(libtorrent_view(&path).0),
            _ => None,
        };
        if let Some(live) = live {
            assert_eq!(live, hash, "{file}: {tool} now reports another hash");
        }
    }
}

#[test]
fn fixture_details() {
    let single = info_json(&fixtures().join("single-mktorrent.torrent"));
    assert_eq!(single["total_size"], 100_000);
    assert_eq!(single["piece_length"], 32768);
    assert_eq!(single["piece_count"], 4);
    assert_eq!(single["multi_file"], false);

    let private = info_json(&fixtures().join("private-tiers-mktorrent.torrent"));
    assert_eq!(private["private"], true);
    let tiers: Json = serde_json::json!([
        ["http://a.example/announce", "http://b.example/announce"],
        ["udp://c.example:6969/announce"]
    ]);
    assert_eq!(private["trackers"], tiers);
    assert_eq!(private["url_list"], serde_json::json!(["http://seed.example/data/"]));
    assert!(shoal_files(&private).contains(&("b/zero-length".into(), 0, false)));

    let padded = info_json(&fixtures().join("padded-libtorrent.torrent"));
    let files = shoal_files(&padded);
    assert!(files.iter().any(|f| f.2 && f.0.starts_with(".pad/")));
    assert!(files.contains(&("données/ファイル.txt".into(), 3000, false)));
    assert!(files.contains(&("empty.dat".into(), 0, false)));
}

#[test]
fn fixture_file_lists_match_the_tools() {
    for file in ["padded-libtorrent.torrent", "hybrid-libtorrent.torrent"] {
        let path = fixtures().join(file);
        if have_libtorrent() {
            assert_eq!(shoal_files(&info_json(&path)), libtorrent_view(&path).1, "{file}");
        }
    }
    for file in ["multi-transmission.torrent", "private-tiers-mktorrent.torrent"] {
        let path = fixtures().join(file);
        if have_transmission() {
            let ours: BTreeSet<(String, bool)> =
                shoal_files(&info_json(&path)).into_iter().map(|f| (f.0, false)).collect();
            assert_eq!(ours, transmission_view(&path).1, "{file}");
        }
    }
}

const BAD: &[(&str, &str)] = &[
    ("truncated.torrent", "exceeds the"),
    ("deep-nesting.torrent", "nesting deeper than 64"),
    ("huge-string-length.torrent", "string length 999999999999 exceeds"),
    ("path-traversal.torrent", "\"..\": relative component"),
    ("absolute-path.torrent", "contains a path separator"),
    ("windows-reserved-name.torrent", "windows reserved name"),
    ("wrong-pieces-length.torrent", "info.pieces: length 39 is not a multiple of 20"),
    ("piece-length-not-power-of-two.torrent", "info.piece length: 1000 is not a power of two"),
    ("negative-length.torrent", "info.length: negative length -1"),
    ("trailing-garbage.torrent", "trailing bytes"),
    ("unsorted-keys.torrent", "dict keys not sorted"),
    ("piece-count-mismatch.torrent", "3 hashes, but"),
    ("duplicate-path.torrent", "duplicate path"),
    ("leading-zero-int.torrent", "non-canonical integer"),
];

fn assert_bad_input(out: &Output, fragment: &str, what: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(err.contains(fragment), "{what}: {err:?} lacks {fragment:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err:?}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(err.starts_with("shoal: "), "{what}: {err}");
}

#[test]
fn bad_fixtures_exit_2_naming_the_fault() {
    let dir = fixtures().join("bad");
    let on_disk = std::fs::read_dir(&dir)
        .expect("bad/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "torrent"))
        .count();
    assert_eq!(on_disk, BAD.len(), "every bad fixture has a row");
    for (file, fragment) in BAD {
        let path = dir.join(file);
        let out = shoal(&["info", path.to_str().expect("utf-8")]);
        assert_bad_input(&out, fragment, file);
        assert!(stderr(&out).contains(file), "{file}: names the file");
    }
}

#[test]
fn missing_file_and_bad_magnet_are_bad_input() {
    assert_bad_input(&shoal(&["info", "/nonexistent.torrent"]), "cannot read", "missing");
    assert_bad_input(&shoal(&["info", "magnet:?dn=x"]), "xt=urn:btih", "magnet");
    assert_bad_input(&shoal(&["info", "magnet:?xt=urn:btih:1234"]), "40 hex or 32 base32", "short hash");
}

#[test]
fn info_on_a_magnet() {
    let uri = "magnet:?xt=urn:btih:YNCKHTQCWBTRNJIV4WNAE52SJUQCZO5C&dn=a+b&tr=http%3A%2F%2Ft%2Fa&so=0,2-3";
    let out = shoal(&["info", "--json", uri]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Json = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], "magnet");
    assert_eq!(v["info_hash"], "c344a3ce02b06716a515e59a0277524d202cbba2");
    assert_eq!(v["name"], "a b");
    assert_eq!(v["trackers"], serde_json::json!([["http://t/a"]]));
    assert_eq!(v["select_only"], "0,2-3");
}

/// A source tree with nested folders, an odd last piece, a 0-byte file and non-ASCII names.
fn make_source(root: &Path) {
    let files: &[(&str, usize)] = &[
        ("top.txt", 1234),
        ("empty.bin", 0),
        ("nested/deeper/still/data.bin", 70_001),
        ("nested/ünïcödé ファイル.txt", 5000),
        (".hidden", 17),
    ];
    for (i, (rel, len)) in files.iter().enumerate() {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let data: Vec<u8> = (0..*len).map(|j| (j * 7 + i * 13) as u8).collect();
        std::fs::write(p, data).expect("write");
    }
}

#[test]
fn created_torrents_are_read_alike_by_libtorrent_and_transmission() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("Sample Set é");
    make_source(&src);
    let out_file = tmp.path().join("made.torrent");
    let out = shoal(&[
        "create",
        src.to_str().expect("utf-8"),
        "-o",
        out_file.to_str().expect("utf-8"),
        "--piece-size",
        "16KiB",
        "--tracker",
        "http://a.example/announce,http://b.example/announce",
        "--tracker",
        "udp://c.example:6969",
        "--private",
        "--comment",
        "made in a test",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info = info_json(&out_file);
    let hash = info["info_hash"].as_str().expect("hash").to_string();
    assert!(stdout(&out).contains(&format!("info-hash: {hash}")));
    assert!(stdout(&out).contains(&format!("magnet:?xt=urn:btih:{hash}")));
    assert_eq!(info["total_size"], 1234 + 70_001 + 5000 + 17);
    assert_eq!(info["piece_count"], 76_252u64.div_ceil(16384));
    assert_eq!(info["private"], true);
    let ours = shoal_files(&info);
    assert_eq!(ours.len(), 5);

    if have_libtorrent() {
        let (lt_hash, lt_files) = libtorrent_view(&out_file);
        assert_eq!(lt_hash, hash);
        assert_eq!(lt_files, ours);
    }
    if have_transmission() {
        let (tr_hash, tr_files) = transmission_view(&out_file);
        assert_eq!(tr_hash, hash);
        let ours: BTreeSet<(String, bool)> = ours.into_iter().map(|f| (f.0, false)).collect();
        assert_eq!(tr_files, ours);
    }
}

#[test]
fn create_single_file_with_default_piece_size() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("one.bin");
    std::fs::write(&src, vec![5u8; 50_000]).expect("write");
    let out_file = tmp.path().join("one.torrent");
    let out = shoal(&["create", src.to_str().expect("utf-8"), "-o", out_file.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info = info_json(&out_file);
    assert_eq!(info["name"], "one.bin");
    assert_eq!(info["multi_file"], false);
    assert_eq!(info["piece_length"], 16384);
    if have_libtorrent() {
        assert_eq!(libtorrent_view(&out_file).0, info["info_hash"].as_str().expect("hash"));
    }
}

#[test]
fn create_rejects_bad_usage() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = tmp.path().join("x.torrent");
    let o = o.to_str().expect("utf-8");
    let out = shoal(&["create", "/nonexistent/dir", "-o", o]);
    assert_bad_input(&out, "/nonexistent/dir", "missing source");
    std::fs::write(tmp.path().join("f"), b"x").expect("write");
    let f = tmp.path().join("f");
    let out = shoal(&["create", f.to_str().expect("utf-8"), "-o", o, "--piece-size", "1000"]);
    assert_bad_input(&out, "--piece-size", "bad piece size");
    let out = shoal(&["create", f.to_str().expect("utf-8"), "-o", o, "--piece-size", "lots"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A torrent's bytes built with shoal's own encoder: one piece, `files` (path, length) under
/// `name`, and the given extra top-level text fields.
fn build_torrent(name: &str, files: &[(Vec<&str>, i64)], top: &[(&str, &str)]) -> Vec<u8> {
    use shoal::bencode::{encode, Value};
    let list: Vec<Value> = files
        .iter()
        .map(|(path, len)| {
            let path: Vec<Value> = path.iter().map(|c| Value::from(*c)).collect();
            Value::dict().with("length", *len).with("path", path).build()
        })
        .collect();
    let info = Value::dict()
        .with("files", list)
        .with("name", name)
        .with("piece length", 16384i64)
        .with("pieces", vec![7u8; 20])
        .build();
    let mut t = Value::dict().with("info", info);
    for (k, v) in top {
        t = t.with(k, *v);
    }
    encode(&t.build())
}

/// Fault 4: a ~180 KB torrent with one path 60,000 components deep needed gigabytes for the
/// duplicate-path check. Now the depth is checked first: exit 2 with one line naming the limit.
#[test]
fn a_path_60000_deep_fails_fast_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.torrent");
    let bytes = build_torrent("deep", &[(vec!["a"; 60_000], 1)], &[]);
    assert!((180_000..200_000).contains(&bytes.len()), "{}", bytes.len());
    std::fs::write(&path, bytes).unwrap();
    let out = shoal(&["info", path.to_str().unwrap()]);
    assert_bad_input(&out, "info.files[0].path: 60000 path components, more than the limit of 100", "deep path");
}

/// Bytes that must never reach a terminal from torrent data: ESC (CSI and OSC 8 sequences),
/// BEL, CR, the C1 CSI (UTF-8 C2 9B), U+202E RLO and U+2066 LRI (UTF-8 E2 80 AE, E2 81 A6).
fn assert_no_raw_controls(out: &[u8], what: &str) {
    let text = String::from_utf8_lossy(out);
    for bad in [&b"\x1b"[..], b"\x07", b"\r", b"\xc2\x9b", b"\xe2\x80\xae", b"\xe2\x81\xa6"] {
        assert!(!out.windows(bad.len()).any(|w| w == bad), "{what}: raw {bad:?} in {text}");
    }
}

const EVIL: &str =
    "evil\u{1b}[31mred\u{1b}]8;;mailto:x@y.example\u{7}click\u{1b}]8;;\u{7}\nfake: line\r\u{202e}gpj.exe";

/// Fault 5: control, newline and bidi characters in the name, paths, comment, creator and
/// tracker URL are never printed raw, in text or JSON, and the names used on disk have none.
#[test]
fn hostile_names_are_never_printed_raw() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.torrent");
    let files = [(vec!["dir\u{2066}", EVIL], 1), (vec!["x\u{9b}2J"], 1)];
    let top = [("announce", "http://t.example/a\u{1b}[2J"), ("comment", EVIL), ("created by", "\u{202e}tool")];
    std::fs::write(&path, build_torrent(EVIL, &files, &top)).unwrap();
    let clean = build_torrent("clean", &[(vec!["dir", "f"], 1), (vec!["g"], 1)], &[]);
    let clean_path = dir.path().join("clean.torrent");
    std::fs::write(&clean_path, clean).unwrap();

    let text = shoal(&["info", path.to_str().unwrap()]);
    assert!(text.status.success(), "{}", stderr(&text));
    assert_no_raw_controls(&text.stdout, "text");
    let clean_text = shoal(&["info", clean_path.to_str().unwrap()]);
    assert_eq!(
        stdout(&text).lines().count(),
        stdout(&clean_text).lines().count() + 1,
        "no line breaks from torrent data (the torrents differ by one tracker line): {}",
        stdout(&text)
    );
    assert!(
        stdout(&text).contains("name:          evil_[31mred_]8;;mailto:x@y.example_click_]8;;__fake: line__gpj.exe")
    );
    assert!(stdout(&text).contains("comment:       evil\\u{1b}[31mred"), "{}", stdout(&text));

    let json = shoal(&["info", "--json", path.to_str().unwrap()]);
    assert!(json.status.success(), "{}", stderr(&json));
    assert_no_raw_controls(&json.stdout, "json");
    let v: Json = serde_json::from_slice(&json.stdout).expect("json");
    let name = v["name"].as_str().unwrap();
    assert!(!name.chars().any(shoal::metainfo::names::is_unsafe), "{name:?}");
    assert_eq!(v["comment"], EVIL, "JSON escapes are lossless for text that is not a name");
    assert_eq!(v["trackers"], serde_json::json!([["http://t.example/a%1B[2J"]]), "URLs percent-encoded");
    for f in v["files"].as_array().unwrap() {
        let p = f["path"].as_str().unwrap();
        assert!(!p.chars().any(shoal::metainfo::names::is_unsafe), "{p:?}");
    }
}

/// Fault 5 for magnets: a `dn` (and a `tr`) with the same characters is not printed raw.
#[test]
fn hostile_magnet_names_are_never_printed_raw() {
    let uri = "magnet:?xt=urn:btih:c344a3ce02b06716a515e59a0277524d202cbba2\
               &dn=evil%1B%5B31mred%1B%5D8%3B%3Bmailto%3Ax%07click%0Afake%3A+line%0D%E2%80%AEgpj.exe%C2%9B\
               &tr=http%3A%2F%2Ft.example%2F%1B%5B2J";
    let text = shoal(&["info", uri]);
    assert!(text.status.success(), "{}", stderr(&text));
    assert_no_raw_controls(&text.stdout, "magnet text");
    assert!(!stdout(&text).contains("\nfake: line"), "{}", stdout(&text));
    let json = shoal(&["info", "--json", uri]);
    assert_no_raw_controls(&json.stdout, "magnet json");
    let v: Json = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v["name"], "evil_[31mred_]8;;mailto:x_click_fake: line__gpj.exe_");
    assert_eq!(v["trackers"], serde_json::json!([["http://t.example/%1B[2J"]]));
}
