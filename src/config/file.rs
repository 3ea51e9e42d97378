//! Reading [`Options`] from TOML, with errors that name the file, the line and the key.
use super::{ConfigError, Options};
use std::path::Path;

impl Options {
    /// Reads a TOML file over the defaults. The error names the file, the line and the key.
    pub fn from_toml_file(path: &Path) -> Result<Options, ConfigError> {
        let file = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Parse { file: file.clone(), msg: e.to_string() })?;
        Options::from_toml_str(&text).map_err(|msg| ConfigError::Parse { file, msg })
    }

    pub fn from_toml_str(text: &str) -> Result<Options, String> {
        toml::from_str(text).map_err(|e| {
            // toml names unknown keys itself; for a bad value it only points at the line, so
            // the key is read off that line.
            let key = e.span().and_then(|span| {
                let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
                let line = &text[line_start..];
                let key = line.split('=').next()?.trim();
                (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
            });
            let line = e.span().map(|span| text[..span.start].matches('\n').count() + 1);
            let msg = e.message().to_string();
            match (key, line) {
                (Some(k), Some(n)) if !msg.contains(&k) => format!("line {n}: config key `{k}`: {msg}"),
                (_, Some(n)) => format!("line {n}: {msg}"),
                _ => msg,
            }
        })
    }
}
