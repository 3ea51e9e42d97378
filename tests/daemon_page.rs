//! `shoal daemon`'s web page (`GET /`) in headless Chromium (Debian's, through chromedriver),
//! against a daemon fed by `shoal seed` processes on 127.0.0.1:
//! - opened as `/?token=T`, it lists a torrent added over the API by name with its progress:
//!   exactly the share a seeder holding half the pieces could give (the API's progress), then
//!   100 % and `seeding` once a full seeder joins;
//! - a magnet pasted into its form (with the `x.pe` of a second seeder) is added: the API lists
//!   it, it completes byte-identical, and the page lists it under its real name;
//! - its pause button pauses a torrent (the API says `paused`, the row shows it and offers
//!   resume), and resume resumes it;
//! - a `.torrent` chosen in its file form is added and listed, and its remove button (once
//!   confirmed) removes it;
//! - opened without a token, it says how to open it, lists nothing and calls no API.
mod common;

use common::clients::{shoal_seeder, skip_on_purpose};
use common::daemon::Daemon;
use common::process::{serial, Proc};
use common::torrent::{assert_same_bytes, copy_into, create_torrent, make_file};
use common::webdriver::Browser;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The first torrent: 49 pieces of 64 KiB (the last of 17 bytes), of which the first seeder
/// holds the first 24.
const PIECE: usize = 64 * 1024;
const SIZE: usize = 48 * PIECE + 17;
const HALF: usize = 24;

/// `size` bytes in `dir/seed/NAME`, its torrent and a `shoal seed` of it: (data, hash, seeder,
/// its port).
fn seeded(dir: &Path, name: &str, size: usize, seed: u64) -> (PathBuf, String, Proc, u16) {
    let data = make_file(&dir.join("seed"), name, size, seed);
    let torrent = dir.join(format!("{name}.torrent"));
    let hash = create_torrent(&data, &torrent, "64KiB", None);
    let (proc, port) = shoal_seeder(&data, &torrent, &[], dir);
    (data, hash, proc, port)
}

/// One torrent's row as the page shows it.
#[derive(Debug)]
struct Row {
    name: String,
    state: String,
    /// The progress cell's text (`42.0%`, `-` when unknown).
    percent: String,
    /// The progress cell's `data-progress`: the API's `progress`, empty when unknown.
    progress: String,
}

/// The row of torrent `id`, if the page shows it (`None` too while it is being redrawn).
fn row(b: &Browser, id: &str) -> Option<Row> {
    let cell = |field: &str| b.find(&format!("tr[data-id='{id}'] td[data-field='{field}']"));
    let progress = cell("progress")?;
    Some(Row {
        name: b.text(&cell("name")?)?,
        state: b.text(&cell("state")?)?,
        percent: b.text(&progress)?,
        progress: b.attribute(&progress, "data-progress")?.unwrap_or_default(),
    })
}

/// Waits until the page's row of `id` satisfies `pred`.
fn wait_row(b: &Browser, id: &str, what: &str, pred: impl Fn(&Row) -> bool) -> Row {
    b.wait_until(&format!("torrent {id} {what}"), |b| row(b, id).filter(|r| pred(r)))
}

/// Clicks the row's button for `action` (`pause`, `resume`, `remove`) once the page offers it.
fn click_action(b: &Browser, id: &str, action: &str) {
    let css = format!("tr[data-id='{id}'] button[data-action='{action}']");
    b.wait_until(&format!("a {action} button for {id}"), |b| b.find(&css).and_then(|e| b.click(&e)));
}

#[test]
fn the_page_lists_adds_pauses_and_resumes_torrents() {
    if skip_on_purpose() {
        return;
    }
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (data_m, id_m, _seed_m, port_m) = seeded(&dir.join("m"), "magnet.bin", 1024 * 1024 + 3, 42);
    let out = dir.join("out");
    let mut daemon = Daemon::start(dir, "daemon");
    let browser = Browser::start(dir);
    browser.navigate(&format!("http://{}/?token={}", daemon.api, daemon.token));
    let id_a = progress_shows_on_the_page(&browser, &mut daemon, dir, &out);

    add_magnet_through_the_form(&browser, &format!("magnet:?xt=urn:btih:{id_m}&x.pe=127.0.0.1:{port_m}"), &out);
    daemon.wait_for(&id_m, "listed", |_| true);
    daemon.wait_state(&id_m, "seeding");
    assert_same_bytes(&data_m, &out.join("magnet.bin"));
    wait_row(&browser, &id_m, "listed complete", |r| r.name == "magnet.bin" && r.percent == "100.0%");
    let cleared = browser.find("#magnet").and_then(|e| browser.property(&e, "value"));
    assert_eq!(cleared, Some(serde_json::json!("")), "the form is cleared once the magnet is added");

    click_action(&browser, &id_a, "pause");
    daemon.wait_state(&id_a, "paused");
    wait_row(&browser, &id_a, "paused", |r| r.state == "paused");
    click_action(&browser, &id_a, "resume");
    daemon.wait_state(&id_a, "seeding");
    wait_row(&browser, &id_a, "seeding again", |r| r.state == "seeding");
    add_a_file_then_remove_it(&browser, &daemon, dir, &out);
    assert_eq!(browser.find_all("tr[data-id]").len(), 2, "{}", browser.page_text());

    without_a_token(&browser, &daemon);
    drop(browser);
    daemon.stop();
}

/// A torrent added over the API is first served by a seeder holding only its first [`HALF`]
/// pieces: the page lists it by name and shows exactly that share, the API's progress (the
/// daemon can get no more). Then a full seeder dials the daemon: the page shows 100 % and
/// `seeding`. Returns the torrent's id.
fn progress_shows_on_the_page(b: &Browser, daemon: &mut Daemon, dir: &Path, out: &Path) -> String {
    let data = make_file(&dir.join("a/seed"), "album.bin", SIZE, 41);
    let torrent = dir.join("album.torrent");
    let id = create_torrent(&data, &torrent, "64KiB", None);
    let partial = copy_into(&data, &dir.join("partial"));
    let mut file = std::fs::OpenOptions::new().write(true).open(&partial).unwrap();
    file.seek(SeekFrom::Start((HALF * PIECE) as u64)).unwrap();
    file.write_all(&vec![0; SIZE - HALF * PIECE]).unwrap();
    let (_half, port) = shoal_seeder(&partial, &torrent, &[], &dir.join("partial"));
    let path = format!("/api/torrents?output={}&peer=127.0.0.1:{port}", out.display());
    let added = daemon.call("POST", &path, Some(("application/x-bittorrent", &std::fs::read(&torrent).unwrap())));
    assert_eq!(added.status, 201, "{}", added.json);

    let share = (HALF * PIECE) as f64 / SIZE as f64;
    let what = format!("listed at {share}");
    let half = wait_row(b, &id, &what, |r| r.name == "album.bin" && r.progress.parse() == Ok(share));
    assert_eq!(
        (half.percent.as_str(), half.state.as_str()),
        (format!("{:.1}%", share * 100.0).as_str(), "downloading")
    );
    let api = daemon.call("GET", &format!("/api/torrents/{id}"), None).json;
    assert_eq!(api["progress"].as_f64(), Some(share), "the API says {api}");

    let bt = daemon.proc.bt_addr().to_string();
    let (_full, _) = shoal_seeder(&data, &torrent, &[bt], &dir.join("a"));
    let done = wait_row(b, &id, "at 100 % and seeding", |r| r.percent == "100.0%" && r.state == "seeding");
    let api = daemon.wait_state(&id, "seeding");
    assert_eq!(done.progress.parse::<f64>().ok(), api["progress"].as_f64(), "page {done:?}, API {api}");
    assert_same_bytes(&data, &out.join("album.bin"));
    id
}

/// The element `css` names; fails, showing the page, when there is none.
fn element(b: &Browser, css: &str) -> String {
    b.find(css).unwrap_or_else(|| panic!("no {css} on the page:\n{}", b.page_text()))
}

/// Types the magnet and the output directory into the page's form and submits it.
fn add_magnet_through_the_form(b: &Browser, magnet: &str, out: &Path) {
    b.send_keys(&element(b, "#magnet"), magnet).expect("type the magnet");
    b.send_keys(&element(b, "#magnet-output"), out.to_str().unwrap()).expect("type the output dir");
    b.click(&element(b, "#add-magnet-submit")).expect("submit the magnet");
}

/// A `.torrent` chosen in the page's file form is added and listed (nobody serves it: the
/// listing is the point); its remove button, once the confirmation is accepted, removes it
/// from the daemon and from the page.
fn add_a_file_then_remove_it(b: &Browser, daemon: &Daemon, dir: &Path, out: &Path) {
    let data = make_file(&dir.join("f"), "file.bin", 100 * 1024, 43);
    let torrent = dir.join("file.torrent");
    let id = create_torrent(&data, &torrent, "16KiB", None);
    b.send_keys(&element(b, "#file"), torrent.to_str().unwrap()).expect("choose the .torrent");
    b.send_keys(&element(b, "#file-output"), out.to_str().unwrap()).expect("type the output dir");
    b.click(&element(b, "#add-file-submit")).expect("submit the .torrent");
    daemon.wait_for(&id, "listed", |_| true);
    wait_row(b, &id, "listed", |r| r.name == "file.bin");

    click_action(b, &id, "remove");
    b.wait_until("the removal's confirmation", |b| b.accept_alert());
    b.wait_until("the removed torrent gone", |b| b.find(&format!("tr[data-id='{id}']")).is_none().then_some(()));
    assert_eq!(daemon.call("GET", &format!("/api/torrents/{id}"), None).status, 404, "the daemon still has it");
}

/// The page opened without a token says how to open it and never calls the API. Without a
/// token it starts no request at all, so nothing can appear later; the 3 s (three event
/// periods) only give a regression that does call the chance to show its 401 or its rows.
fn without_a_token(b: &Browser, daemon: &Daemon) {
    b.navigate(&format!("http://{}/", daemon.api));
    let hint = b.wait_until("the token hint", |b| b.text_of("#error").filter(|t| t.contains("token=")));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.text_of("#error"), Some(hint), "{}", b.page_text());
    assert!(b.find_all("tr[data-id]").is_empty(), "torrents listed without a token:\n{}", b.page_text());
    let calls = b.script("return performance.getEntriesByType('resource').map((e) => e.name)");
    let api: Vec<_> =
        calls.as_array().into_iter().flatten().filter(|u| u.as_str().is_some_and(|u| u.contains("/api/"))).collect();
    assert!(api.is_empty(), "API calls without a token: {api:?}");
}
