//! One Options: the network settings are config keys too, and the layers stack as the README
//! says: defaults, the file (`--config`), `SHOAL_<KEY>` variables, then flags.
//!
//! - A file setting `listen`, `diag` and `kad = false` gives a seeder on that address with
//!   diagnostics and no libp2p node (no `listening kad` line).
//! - `SHOAL_LISTEN` overrides the file's `listen`, and `--listen` overrides both.
//! - A bad network value exits 2 naming the key (from the file) or the flag.
mod common;

use common::process::{run_env, Proc, STARTUP};
use common::torrent::data_and_torrent;
use std::ffi::OsString;
use std::path::Path;

/// `shoal seed` of `dir`'s data with `extra` flags and `env`; its stdout lines up to
/// `listening bt`, which is printed last, once the data is checked.
fn seed_lines(dir: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> (Proc, Vec<String>) {
    let (data, torrent) = (dir.join("seed/data.bin"), dir.join("data.torrent"));
    let mut args = args!["seed", &data, "--torrent", &torrent];
    args.extend(extra.iter().map(OsString::from));
    let mut p = Proc::spawn(name, dir, &args, env);
    p.bt_addr();
    let lines = p.stdout.clone();
    (p, lines)
}

fn line_starting<'a>(lines: &'a [String], prefix: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| l.strip_prefix(prefix))
}

#[test]
fn network_keys_come_from_the_file_the_environment_and_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    data_and_torrent(dir.path(), 64 * 1024, 51, "16KiB");
    let config = dir.path().join("shoal.toml");
    std::fs::write(&config, "listen = \"127.0.0.2:0\"\ndiag = \"127.0.0.1:0\"\nkad = false\n").unwrap();
    let cfg = config.to_str().unwrap();

    let (_p, lines) = seed_lines(dir.path(), "from-file", &["--config", cfg], &[]);
    assert!(line_starting(&lines, "listening bt ").unwrap().starts_with("127.0.0.2:"), "{lines:?}");
    assert!(line_starting(&lines, "listening diag ").unwrap().starts_with("127.0.0.1:"), "{lines:?}");
    assert!(line_starting(&lines, "listening kad ").is_none(), "kad = false, yet: {lines:?}");

    let env = [("SHOAL_LISTEN", "127.0.0.3:0")];
    let (_p, lines) = seed_lines(dir.path(), "from-env", &["--config", cfg], &env);
    assert!(line_starting(&lines, "listening bt ").unwrap().starts_with("127.0.0.3:"), "{lines:?}");

    let flags = ["--config", cfg, "--listen", "127.0.0.1:0"];
    let (_p, lines) = seed_lines(dir.path(), "from-flag", &flags, &env);
    assert!(line_starting(&lines, "listening bt ").unwrap().starts_with("127.0.0.1:"), "{lines:?}");
}

#[test]
fn a_bad_network_value_exits_2_naming_the_key_or_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent) = data_and_torrent(dir.path(), 16 * 1024, 52, "16KiB");
    let config = dir.path().join("shoal.toml");
    let base = args!["seed", &data, "--torrent", &torrent, "--listen", "127.0.0.1:0"];
    let cases: [(&str, &[&str], &str); 4] = [
        ("bootstrap = [\"/ip4/127.0.0.1/tcp/9\"]", &[], "`bootstrap`"),
        ("tick = \"1h\"", &[], "`tick`"),
        ("", &["--bootstrap", "/ip4/127.0.0.1/tcp/9"], "--bootstrap"),
        ("", &["--kad-listen", "tcp/9"], "--kad-listen"),
    ];
    for (file, flags, named) in cases {
        std::fs::write(&config, file).unwrap();
        let mut args = base.clone();
        args.extend(args!["--config", &config]);
        args.extend(flags.iter().map(OsString::from));
        let (status, _, err) = run_env(&args, &[], STARTUP);
        assert_eq!(status.code(), Some(2), "{file} {flags:?}: {status}\n{err}");
        let line = err.lines().find(|l| l.starts_with("shoal: ")).unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains(named), "{file} {flags:?}: the error does not name {named}: {line}");
    }
}
