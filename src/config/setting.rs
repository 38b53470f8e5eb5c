//! `--set section.key=value`: one key of the configuration given on the command line.

use super::ConfigError;

/// Why a `--set` flag is not `section.key=value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// No `=` in the flag.
    #[error("{flag:?} is not section.key=value (e.g. limits.max_line_bytes=4096)")]
    NotKeyValue {
        /// The flag as it may be shown (a Redis URL's password hidden).
        flag: String,
    },
    /// No `.` between a section and a key before the `=`.
    #[error("{path:?} is not section.key (e.g. admin.listen)")]
    NotSectionKey {
        /// What came before the `=`.
        path: String,
    },
}

/// One `--set section.key=value` of the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub section: String,
    pub key: String,
    /// The value as TOML (`1024`, `"10s"`, `["a", "b"]`); a bare word that is not TOML is
    /// taken as a string, so `--set log.level=debug` works without quotes.
    pub value: toml::Value,
    /// The flag as given, for error messages.
    pub flag: String,
}

impl Setting {
    /// Parses `section.key=value` (clap's value parser for `--set`).
    pub fn parse(flag: &str) -> Result<Setting, SettingError> {
        let (path, value) = flag
            .split_once('=')
            .ok_or_else(|| SettingError::NotKeyValue {
                flag: super::redact_url(flag),
            })?;
        let (section, key) =
            path.trim()
                .split_once('.')
                .ok_or_else(|| SettingError::NotSectionKey {
                    path: path.to_owned(),
                })?;
        let value = value.trim();
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        Ok(Setting {
            section: section.trim().to_owned(),
            key: key.trim().to_owned(),
            value: parsed,
            flag: flag.to_owned(),
        })
    }

    pub(super) fn dotted(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }

    /// The flag as it may be shown: the value of a key that may hold a password is not.
    pub(super) fn shown(&self) -> String {
        match self.dotted().as_str() {
            "cluster.redis" => format!("{}=***", self.dotted()),
            _ => self.flag.clone(),
        }
    }

    pub(super) fn error(&self, message: String) -> ConfigError {
        ConfigError {
            file: Some(format!("--set {}", self.shown())),
            line: None,
            key: Some(self.dotted()),
            message,
        }
    }
}
