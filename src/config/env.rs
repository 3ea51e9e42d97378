//! The environment layer of the settings, between the TOML file and the flags: `SHOAL_<KEY>`
//! (the key in capitals) sets `<key>`, its value written as in the file (`max_connections=80`
//! is `SHOAL_MAX_CONNECTIONS=80`; durations and words may go unquoted: `SHOAL_IDLE_TIMEOUT=5m`).
//! Variables naming no key (`SHOAL_SKIP_INTEROP`, a typo) are left alone.
use super::{ConfigError, Options};

/// Where the layer's errors say they come from.
const SOURCE: &str = "environment";

impl Options {
    /// These options with every `SHOAL_<KEY>` among `vars` applied; a value that does not fit
    /// its key is an error naming the variable.
    pub fn with_env(self, vars: impl IntoIterator<Item = (String, String)>) -> Result<Options, ConfigError> {
        let bad = |msg: String| ConfigError::Parse { file: SOURCE.into(), msg };
        let mut table = toml::Table::try_from(&self).map_err(|e| bad(e.to_string()))?;
        let mut changed = false;
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("SHOAL_").map(str::to_ascii_lowercase) else { continue };
            // The file's one alias, `max_peers`, is a name of `max_connections` here too.
            let key = if key == "max_peers" { "max_connections".to_string() } else { key };
            if !table.contains_key(&key) {
                continue;
            }
            table.insert(key, parse_value(&value));
            changed = true;
            // One key at a time, so the error names the variable at fault.
            Options::deserialize_table(&table).map_err(|e| bad(format!("{name}={value:?}: {}", one_line(&e))))?;
        }
        if !changed {
            return Ok(self);
        }
        Options::deserialize_table(&table).map_err(|e| bad(one_line(&e)))
    }

    fn deserialize_table(table: &toml::Table) -> Result<Options, toml::de::Error> {
        toml::Value::Table(table.clone()).try_into()
    }
}

/// toml's message on one line (it puts the key on a second one).
fn one_line(e: &toml::de::Error) -> String {
    e.to_string().trim().replace('\n', " ")
}

/// A value as the TOML file would hold it; anything that is not TOML is a string.
fn parse_value(text: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(text.into())),
        Err(_) => toml::Value::String(text.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn variables_set_their_keys_and_others_are_left_alone() {
        let o = Options::default()
            .with_env(vars(&[
                ("SHOAL_MAX_CONNECTIONS", "80"),
                ("SHOAL_IDLE_TIMEOUT", "5m"),
                ("SHOAL_DHT_MODE", "client"),
                ("SHOAL_KEY_PEERS", r#"["12D3KooWabc"]"#),
                ("SHOAL_SKIP_INTEROP", "1"),
                ("PATH", "/bin"),
            ]))
            .unwrap();
        assert_eq!(o.max_connections, 80);
        assert_eq!(o.idle_timeout, Duration::from_secs(300));
        assert_eq!(o.dht_mode, "client");
        assert_eq!(o.key_peers, ["12D3KooWabc"]);
        assert_eq!(o.unchoke_slots, Options::default().unchoke_slots);
    }

    #[test]
    fn a_value_that_does_not_fit_names_its_variable() {
        for (name, value) in [("SHOAL_MAX_CONNECTIONS", "many"), ("SHOAL_IDLE_TIMEOUT", "soon")] {
            let err = Options::default().with_env(vars(&[(name, value)])).unwrap_err().to_string();
            assert!(err.contains(name) && err.starts_with("environment"), "{err}");
        }
    }
}
