//! Headless Chromium for page tests, driven through the W3C WebDriver HTTP protocol: Debian's
//! `chromedriver` as a child process on 127.0.0.1 and a tiny client of small JSON requests
//! (new session, navigate, find by CSS, click, send keys, text, attribute, property, accept a
//! dialog, script, delete session) over the plain HTTP of [`super::daemon::request_within`].
//!
//! Chromium runs with what phones home switched off and every host name resolving to nothing,
//! so its traffic stays on 127.0.0.1. Dropping a [`Browser`] ends the session (chromedriver
//! quits Chromium), kills by PID what is left of the Chromium processes it saw running, then
//! chromedriver (a [`Proc`]).
use super::clients::require;
use super::daemon::{request_within, Answer, DEADLINE};
use super::ports::free_port;
use super::process::{Proc, STARTUP};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Bound on one WebDriver request: a new session answers once Chromium has started.
const WD_IO: Duration = Duration::from_secs(120);
/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Fails the test unless Chromium and chromedriver run (`SHOAL_SKIP_INTEROP=1` skips).
pub fn require_chromium() {
    let install = "apt-get install -y chromium chromium-driver";
    require(CHROMIUM, &["--version"], install);
    require(CHROMEDRIVER, &["--version"], install);
}

/// The flags of the headless browser: no sandbox (tests may run as root), no GPU, nothing
/// fetched in the background, every host name unresolvable (IP literals still connect).
fn chromium_args(profile: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-dev-shm-usage",
        "--no-pings",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--user-data-dir={}", profile.display()));
    args
}

/// One WebDriver session in headless Chromium, with the chromedriver serving it.
pub struct Browser {
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
    driver: Proc,
}

impl Browser {
    /// Starts chromedriver on a free 127.0.0.1 port (its log in `logs`) and a new session.
    pub fn start(logs: &Path) -> Browser {
        require_chromium();
        let port = free_port();
        let profile = tempfile::tempdir().expect("profile dir");
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"));
        // Chromium keeps crash reports and caches below these, not in the profile.
        cmd.env("XDG_CONFIG_HOME", profile.path().join("config")).env("XDG_CACHE_HOME", profile.path().join("cache"));
        let mut driver = Proc::start("chromedriver", cmd, logs);
        driver.wait_line_containing("started successfully", STARTUP);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let options = json!({ "binary": CHROMIUM, "args": chromium_args(&profile.path().join("profile")) });
        let caps = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": options } } });
        let a = send(addr, "POST", "/session", Some(&caps));
        let session = match (a.status, a.json["value"]["sessionId"].as_str()) {
            (200, Some(id)) => id.to_string(),
            _ => driver.fail(&format!("new session: {} {}", a.status, a.json)),
        };
        Browser { addr, session, _profile: profile, driver }
    }

    /// A command of this session: `path` below `/session/{id}`.
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        send(self.addr, method, &format!("/session/{}{path}", self.session), body.as_ref())
    }

    /// The answer's `value`; `None` when the element is gone or not there (a list redrawn
    /// meanwhile); any other error fails the test.
    fn value(&self, what: &str, a: Answer) -> Option<Value> {
        match (a.status, a.json["value"]["error"].as_str()) {
            (200, _) => Some(a.json["value"].clone()),
            (_, Some("no such element" | "stale element reference")) => None,
            _ => self.driver.fail(&format!("{what}: {} {}", a.status, a.json)),
        }
    }

    pub fn navigate(&self, url: &str) {
        let a = self.cmd("POST", "/url", Some(json!({ "url": url })));
        self.value(&format!("navigate to {url}"), a);
    }

    /// The first element matching the CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let a = self.cmd("POST", "/element", Some(json!({ "using": "css selector", "value": css })));
        self.value(&format!("find {css}"), a).and_then(|v| v[ELEMENT].as_str().map(String::from))
    }

    /// Every element matching the CSS selector.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let a = self.cmd("POST", "/elements", Some(json!({ "using": "css selector", "value": css })));
        let list = self.value(&format!("find all {css}"), a).unwrap_or_default();
        list.as_array().into_iter().flatten().filter_map(|v| v[ELEMENT].as_str().map(String::from)).collect()
    }

    /// Clicks the element; `None` when it is gone.
    pub fn click(&self, element: &str) -> Option<()> {
        let a = self.cmd("POST", &format!("/element/{element}/click"), Some(json!({})));
        self.value("click", a).map(|_| ())
    }

    /// Types `text` into the element; `None` when it is gone.
    pub fn send_keys(&self, element: &str, text: &str) -> Option<()> {
        let a = self.cmd("POST", &format!("/element/{element}/value"), Some(json!({ "text": text })));
        self.value("send keys", a).map(|_| ())
    }

    /// The element's rendered text; `None` when it is gone.
    pub fn text(&self, element: &str) -> Option<String> {
        let a = self.cmd("GET", &format!("/element/{element}/text"), None);
        self.value("text", a).map(|v| v.as_str().unwrap_or_default().to_string())
    }

    /// An attribute of the element (`Some(None)` when it has none); `None` when it is gone.
    pub fn attribute(&self, element: &str, name: &str) -> Option<Option<String>> {
        let a = self.cmd("GET", &format!("/element/{element}/attribute/{name}"), None);
        self.value(&format!("attribute {name}"), a).map(|v| v.as_str().map(String::from))
    }

    /// A DOM property of the element (`value`...); `None` when it is gone.
    pub fn property(&self, element: &str, name: &str) -> Option<Value> {
        let a = self.cmd("GET", &format!("/element/{element}/property/{name}"), None);
        self.value(&format!("property {name}"), a)
    }

    /// The text of the first element matching `css`, if there is one.
    pub fn text_of(&self, css: &str) -> Option<String> {
        self.find(css).and_then(|e| self.text(&e))
    }

    /// Accepts the open `confirm()`/`alert()`; `None` while there is none.
    pub fn accept_alert(&self) -> Option<()> {
        let a = self.cmd("POST", "/alert/accept", Some(json!({})));
        match a.json["value"]["error"].as_str() {
            Some("no such alert") => None,
            _ => self.value("accept alert", a).map(|_| ()),
        }
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub fn script(&self, script: &str) -> Value {
        let a = self.cmd("POST", "/execute/sync", Some(json!({ "script": script, "args": [] })));
        self.value("script", a).unwrap_or_default()
    }

    /// What the page shows, for failure messages.
    pub fn page_text(&self) -> String {
        self.text_of("body").unwrap_or_else(|| "(no body)".into())
    }

    /// Polls `check` until it gives a value; fails past [`DEADLINE`] naming `what` and
    /// showing the page.
    pub fn wait_until<T>(&self, what: &str, mut check: impl FnMut(&Browser) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.page_text();
                self.driver.fail(&format!("the page did not show {what} within {DEADLINE:?}; it showed:\n{page}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Taken while the tree still hangs below chromedriver: once Chromium quits, what is
        // left of it is reparented out of reach.
        let chromium = descendants(self.driver.pid() as i32);
        if !send_quietly(self.addr, &format!("/session/{}", self.session)) {
            eprintln!("chromedriver did not end the session; killing Chromium by PID");
        }
        for &(pid, started) in &chromium {
            // Only a process that is still the one seen (same start time), never a reused PID.
            if start_time(pid) == Some(started) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// One WebDriver request with a JSON body.
fn send(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Answer {
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
    request_within(addr, method, path, None, bytes.as_deref().map(|b| ("application/json", b)), None, WD_IO)
}

/// `DELETE path`, true on 200; never panics (it runs while a failed test unwinds).
fn send_quietly(addr: SocketAddr, path: &str) -> bool {
    let path = path.to_string();
    std::thread::spawn(move || send(addr, "DELETE", &path, None).status == 200).join().unwrap_or(false)
}

/// Every process below `pid` (children, their children...) with its start time.
fn descendants(pid: i32) -> Vec<(i32, u64)> {
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten();
        for task in tasks {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                if let Some(started) = start_time(child) {
                    found.push((child, started));
                    todo.push(child);
                }
            }
        }
    }
    found
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}
