//! The daemon's configuration and its history: every change is a new version kept in
//! `<state-dir>/config.json`, and a rollback is a new version equal to an old one.
//!
//! A version holds every [`Options`] key as JSON (durations written as `1m 30s`). A patch is
//! checked as a start-up config is: each key on its own (an unknown key, a value of the
//! wrong type), then the whole with [`Options::validate`]; the error names the key.
//! [`History`] is a plain struct, the time given to it; [`Daemon`]'s methods below keep it
//! in the state directory and hand the current options to the session.
//!
//! What applies when: torrents added or resumed after a change run with the new options;
//! running torrents get them too ([`crate::torrent::TorrentHandle::set_options`]): pool
//! limits, unchoke slots and intervals at once, per-peer bounds for peers that connect from
//! then on, the tick and queue sizes at their next start; rate limits apply at once. The
//! session-wide settings (the network keys `listen`, `kad`, `kad_listen`, `bootstrap`,
//! `external_addrs`, `mdns`, `diag`, the `kad_max_*`, `autonat_*` and `relay*` keys, inbound
//! handshake bounds, send budget, DHT, the key-peer monitor (but for its `key_peers`, which
//! change at once), tracker announces) follow the flags and config file of the daemon's start.
use super::state::{write_atomic, StateError};
use super::{Daemon, DaemonError};
use crate::config::{ConfigError, Options};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Versions kept; the oldest are forgotten past it.
pub const MAX_VERSIONS: usize = 100;

/// One configuration, as it was set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: u32,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// What made it: `start`, `patch: KEY, ...` or `rollback to V`.
    pub note: String,
    pub options: Map<String, Value>,
}

/// Why a patch or a rollback was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigChangeError {
    #[error("config key `{key}`: {why}")]
    Key { key: String, why: String },
    #[error("no config version {0}")]
    NoVersion(u32),
}

/// Every kept version, the last one current.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    versions: Vec<Version>,
}

impl History {
    /// Version 1: the options the daemon started with.
    pub fn start(options: &Options, now: u64) -> History {
        let options = to_map(options);
        History { versions: vec![Version { version: 1, at: now, note: "start".into(), options }] }
    }

    pub fn current(&self) -> &Version {
        self.versions.last().expect("a history has at least one version")
    }

    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// A new version with the keys of `patch` changed, if the result is valid.
    pub fn patch(&mut self, patch: &Map<String, Value>, now: u64) -> Result<Options, ConfigChangeError> {
        let mut merged = self.current().options.clone();
        let known = to_map(&Options::default());
        for (key, value) in patch {
            // A key added in a later release is known though older versions lack it.
            if !known.contains_key(key) {
                return Err(ConfigChangeError::Key { key: key.clone(), why: "no such key".into() });
            }
            let mut one = self.current().options.clone();
            one.insert(key.clone(), value.clone());
            parse(&one).map_err(|e| match e {
                ConfigChangeError::Key { why, .. } => ConfigChangeError::Key { key: key.clone(), why },
                other => other,
            })?;
            merged.insert(key.clone(), value.clone());
        }
        let options = parse(&merged)?;
        let keys: Vec<&str> = patch.keys().map(String::as_str).collect();
        self.push(format!("patch: {}", keys.join(", ")), merged, now);
        Ok(options)
    }

    /// A new version equal to version `v`.
    pub fn rollback(&mut self, v: u32, now: u64) -> Result<Options, ConfigChangeError> {
        let old = self.versions.iter().find(|x| x.version == v).ok_or(ConfigChangeError::NoVersion(v))?;
        let map = old.options.clone();
        let options = parse(&map)?;
        self.push(format!("rollback to {v}"), map, now);
        Ok(options)
    }

    /// The keys whose values differ from version `from` to version `to`, each with both values
    /// (`null` where a version lacks the key).
    pub fn diff(&self, from: u32, to: u32) -> Result<Map<String, Value>, ConfigChangeError> {
        let find = |v: u32| self.versions.iter().find(|x| x.version == v).ok_or(ConfigChangeError::NoVersion(v));
        let (a, b) = (&find(from)?.options, &find(to)?.options);
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        let changed = keys.into_iter().filter_map(|k| {
            let (x, y) = (a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null));
            (x != y).then(|| (k.clone(), serde_json::json!({ "from": x, "to": y })))
        });
        Ok(changed.collect())
    }

    /// The current options, parsed and validated (after loading a history from disk).
    pub fn current_options(&self) -> Result<Options, ConfigChangeError> {
        parse(&self.current().options)
    }

    fn push(&mut self, note: String, options: Map<String, Value>, now: u64) {
        let version = self.current().version + 1;
        self.versions.push(Version { version, at: now, note, options });
        if self.versions.len() > MAX_VERSIONS {
            self.versions.remove(0);
        }
    }
}

fn to_map(options: &Options) -> Map<String, Value> {
    match serde_json::to_value(options) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("Options serializes to an object"),
    }
}

/// Options from a JSON map, validated; the error names the key at fault when it can.
fn parse(map: &Map<String, Value>) -> Result<Options, ConfigChangeError> {
    let options: Options = serde_json::from_value(Value::Object(map.clone()))
        .map_err(|e| ConfigChangeError::Key { key: "?".into(), why: e.to_string() })?;
    options.validate().map_err(|e| match e {
        ConfigError::Invalid { key, why } => ConfigChangeError::Key { key: key.into(), why },
        ConfigError::Parse { msg, .. } => ConfigChangeError::Key { key: "?".into(), why: msg },
    })?;
    Ok(options)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The history kept in `dir/config.json`, or a new one from the start options.
pub(super) fn load(dir: &std::path::Path, start: &Options) -> Result<History, StateError> {
    let path = dir.join("config.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let corrupt = |why: String| StateError::Corrupt { path: path.clone(), why };
            let history: History = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
            if history.versions.is_empty() {
                return Err(corrupt("no versions".into()));
            }
            history.current_options().map_err(|e| corrupt(e.to_string()))?;
            Ok(history)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(History::start(start, now_secs())),
        Err(e) => Err(StateError::Io { path, source: e }),
    }
}

fn save(dir: &std::path::Path, history: &History) -> Result<(), StateError> {
    write_atomic(&dir.join("config.json"), &serde_json::to_vec_pretty(history).expect("history serializes"))
}

impl From<ConfigChangeError> for DaemonError {
    fn from(e: ConfigChangeError) -> DaemonError {
        DaemonError::BadRequest(e.to_string())
    }
}

impl Daemon {
    /// `{"version": V, "options": {...}}` of the current configuration.
    pub fn config(&self) -> Value {
        let history = self.config.lock().expect("config lock");
        let v = history.current();
        json!({ "version": v.version, "options": v.options })
    }

    /// Every kept version without its options: version, time, what made it.
    pub fn config_versions(&self) -> Value {
        let history = self.config.lock().expect("config lock");
        let list: Vec<Value> =
            history.versions().iter().map(|v| json!({ "version": v.version, "at": v.at, "note": v.note })).collect();
        Value::Array(list)
    }

    /// `{"from": V, "to": W, "changed": {KEY: {"from": a, "to": b}}}`; 400 for a version not kept.
    pub fn config_diff(&self, from: u32, to: u32) -> Result<Value, DaemonError> {
        let changed = self.config.lock().expect("config lock").diff(from, to)?;
        Ok(json!({ "from": from, "to": to, "changed": changed }))
    }

    /// Applies a patch as a new version (recorded before it is applied).
    pub fn patch_config(&self, patch: &Map<String, Value>) -> Result<Value, DaemonError> {
        self.change_config(|h| h.patch(patch, now_secs()))
    }

    /// Makes version `v` current again, as a new version.
    pub fn rollback_config(&self, v: u32) -> Result<Value, DaemonError> {
        self.change_config(|h| h.rollback(v, now_secs()))
    }

    fn change_config(
        &self,
        change: impl FnOnce(&mut History) -> Result<Options, ConfigChangeError>,
    ) -> Result<Value, DaemonError> {
        let mut history = self.config.lock().expect("config lock");
        let mut next = history.clone();
        let options = change(&mut next)?;
        save(self.state.path(), &next)?;
        *history = next;
        self.session.set_torrent_options(Arc::new(options));
        let v = history.current();
        Ok(json!({ "version": v.version, "options": v.options }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_patch_is_a_new_version_and_a_bad_one_names_its_key() {
        let mut h = History::start(&Options::default(), 10);
        let opts = h.patch(&patch(r#"{"max_connections": 80, "request_timeout": "45s"}"#), 11).unwrap();
        assert_eq!(opts.max_connections, 80);
        assert_eq!(opts.request_timeout, std::time::Duration::from_secs(45));
        assert_eq!(h.current().version, 2);
        for (bad, key) in [
            (r#"{"max_connections": "many"}"#, "max_connections"),
            (r#"{"max_connections": 0}"#, "max_connections"),
            (r#"{"request_timeout": "soon"}"#, "request_timeout"),
            (r#"{"no_such": 1}"#, "no_such"),
            (r#"{"max_connecting": 500}"#, "max_connecting"),
        ] {
            let err = h.patch(&patch(bad), 12).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{bad}: {err}");
        }
        assert_eq!(h.current().version, 2, "refused patches make no version");
    }

    #[test]
    fn a_rollback_is_a_new_version_equal_to_the_old_one() {
        let mut h = History::start(&Options::default(), 10);
        h.patch(&patch(r#"{"unchoke_slots": 9}"#), 11).unwrap();
        let opts = h.rollback(1, 12).unwrap();
        assert_eq!(opts.unchoke_slots, Options::default().unchoke_slots);
        assert_eq!(h.current().version, 3);
        assert_eq!(h.current().options, h.versions()[0].options);
        assert!(matches!(h.rollback(7, 13), Err(ConfigChangeError::NoVersion(7))));
    }

    #[test]
    fn a_diff_names_each_changed_key_with_both_values() {
        let mut h = History::start(&Options::default(), 10);
        h.patch(&patch(r#"{"unchoke_slots": 9, "download_rate_limit": 1000}"#), 11).unwrap();
        h.patch(&patch(r#"{"unchoke_slots": 5}"#), 12).unwrap();
        let d = h.diff(1, 3).unwrap();
        let default_slots = Options::default().unchoke_slots;
        assert_eq!(
            Value::Object(d),
            json!({
                "download_rate_limit": { "from": 0, "to": 1000 },
                "unchoke_slots": { "from": default_slots, "to": 5 },
            })
        );
        assert!(h.diff(2, 2).unwrap().is_empty());
        assert!(matches!(h.diff(1, 9), Err(ConfigChangeError::NoVersion(9))));
    }

    #[test]
    fn a_key_older_versions_lack_can_still_be_patched() {
        let mut h = History::start(&Options::default(), 10);
        h.versions[0].options.remove("upload_rate_limit");
        assert_eq!(h.patch(&patch(r#"{"upload_rate_limit": 7}"#), 11).unwrap().upload_rate_limit, 7);
    }

    #[test]
    fn durations_read_back_as_written() {
        let h = History::start(&Options::default(), 10);
        assert_eq!(h.current().options["reconnect_delay"], "1m");
        assert_eq!(h.current_options().unwrap().reconnect_delay, Options::default().reconnect_delay);
    }
}
