//! Network namespaces a test makes for itself: addresses from 198.18.0.0/15 (the range set
//! aside for benchmark networks, which libraries treat as public) on the namespace's own
//! loopback, so traffic never leaves the namespace. Needs root (`ip netns`), which CI has;
//! `SHOAL_SKIP_NETNS=1` skips these tests on purpose for users without it.
//!
//! [`NetNs::command`] runs a program inside (`ip netns exec` execs it, so the PID is the
//! program's and [`super::process::Proc`] kills it as usual); [`NetNs::run`] runs a closure
//! on a thread that joined the namespace (an HTTP request to a process inside, say). The
//! namespace is deleted when the value is dropped.
use std::ffi::OsStr;
use std::process::Command;

/// True when the netns tests are skipped on purpose (`SHOAL_SKIP_NETNS=1`), saying so.
pub fn skip_on_purpose() -> bool {
    let skip = std::env::var("SHOAL_SKIP_NETNS").as_deref() == Ok("1");
    if skip {
        eprintln!("skipped on purpose: SHOAL_SKIP_NETNS=1");
    }
    skip
}

pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// A namespace named after `tag` and this process, with loopback up and `addrs` (IPv4,
    /// no prefix) on it.
    pub fn new(tag: &str, addrs: &[&str]) -> NetNs {
        assert_eq!(unsafe { libc::geteuid() }, 0, "network namespaces need root (or SHOAL_SKIP_NETNS=1)");
        super::clients::require("ip", &["-V"], "apt-get install -y iproute2");
        let ns = NetNs { name: format!("shoal-{}-{tag}", std::process::id()) };
        ip(&["netns", "add", &ns.name]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        for a in addrs {
            ip(&["-n", &ns.name, "addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        ns
    }

    /// Runs `ip ARGS` inside the namespace; it must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Runs `program ARGS` inside the namespace; it must succeed. `input` goes to its stdin.
    pub fn exec(&self, program: &str, args: &[&str], input: &str) {
        use std::io::Write;
        let mut child = self
            .command(program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A veth pair between this namespace (`here`, with `here_addr` as IP/PREFIX) and
    /// `other` (`there`, `there_addr`), both ends up.
    pub fn veth(&self, here: &str, here_addr: &str, other: &NetNs, there: &str, there_addr: &str) {
        self.ip(&["link", "add", here, "type", "veth", "peer", "name", there, "netns", &other.name]);
        self.ip(&["addr", "add", here_addr, "dev", here]);
        self.ip(&["link", "set", here, "up"]);
        other.ip(&["addr", "add", there_addr, "dev", there]);
        other.ip(&["link", "set", there, "up"]);
    }

    /// A bridge named `name` in this namespace: a switch that hosts plug into with
    /// [`NetNs::plug`].
    pub fn bridge(&self, name: &str) {
        self.ip(&["link", "add", name, "type", "bridge"]);
        self.ip(&["link", "set", name, "up"]);
    }

    /// Plugs `host` into this namespace's `bridge`: a veth pair whose end here (`port`) is a
    /// port of the bridge and whose end in `host` (`host_if`) has `host_addr` (IP/PREFIX).
    pub fn plug(&self, bridge: &str, port: &str, host: &NetNs, host_if: &str, host_addr: &str) {
        self.ip(&["link", "add", port, "type", "veth", "peer", "name", host_if, "netns", &host.name]);
        self.ip(&["link", "set", port, "master", bridge]);
        self.ip(&["link", "set", port, "up"]);
        host.ip(&["addr", "add", host_addr, "dev", host_if]);
        host.ip(&["link", "set", host_if, "up"]);
    }

    /// `program` to run inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `f` on a thread inside the namespace and returns what it returns.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let joined = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(joined, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread inside the namespace")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Runs `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}
