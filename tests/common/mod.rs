//! What the integration tests share, one file a concern:
//! - [`process`]: child processes ([`process::Proc`], killed by PID on drop, stdout lines
//!   awaited under a deadline, stderr logged to a file shown on failure), running `shoal` to
//!   its end, and the lock that makes process-heavy tests take turns;
//! - [`torrent`]: generated data, `.torrent` files (through `shoal create` or in process),
//!   byte comparisons;
//! - [`ports`]: a free loopback port for clients that cannot report the one they bound;
//! - [`http`]: GETs against a diagnostics server (blocking for processes, async in process);
//! - [`logs`]: reading what a `shoal` process logged;
//! - [`clients`]: the real clients (opentracker, python3-libtorrent, aria2c) and `shoal`
//!   beside them;
//! - [`daemon`]: a `shoal daemon` process and requests to its HTTP API;
//! - [`webdriver`]: headless Chromium through chromedriver, for the daemon's web page;
//! - [`netns`]: network namespaces a test makes (root), with 198.18.0.0/15 addresses;
//! - [`session`]: in-process sessions and libp2p nodes on 127.0.0.1, and a throttled link;
//! - [`stock`]: stock rust-libp2p parts for a stranger's node (a loopback listener, varints);
//! - [`wire`]: BitTorrent bytes for fake peers (handshakes, messages, bitfields).
//!
//! A test file takes it with `mod common;`. The fault-injection kit (`tests/hostile/`) is
//! built on it. Every wait here has a deadline: a hang fails its test, never the suite.

// Each tests/*.rs is a crate of its own that compiles this module whole and uses a part of it.
#![allow(dead_code)]

pub mod clients;
pub mod daemon;
pub mod http;
pub mod logs;
pub mod netns;
pub mod ports;
pub mod process;
pub mod session;
pub mod stock;
pub mod torrent;
pub mod webdriver;
pub mod wire;
