//! Configuration errors written for the operator who reads them: the file, the line and
//! the key, and serde's type names said in words.

use std::fmt;

/// A configuration error, written for the operator who reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when the configuration came from one.
    pub file: Option<String>,
    /// 1-based line of the offending key, when known.
    pub line: Option<usize>,
    /// Dotted path of the key, e.g. `limits.max_line_bytes`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration")?;
        if let Some(file) = &self.file {
            write!(f, " in {file}")?;
        }
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Turns a TOML or schema error into one line naming the key and, where known, the line.
pub(crate) fn toml_error(text: &str, e: &toml::de::Error, key: Option<String>) -> ConfigError {
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
        .or_else(|| key.as_deref().and_then(|k| locate_key(text, k)));
    ConfigError {
        file: None,
        line,
        key,
        message: plain_types(e.message().trim()),
    }
}

/// Says the expected types of serde's messages in words: `expected usize` means nothing
/// to the person who edits the file.
fn plain_types(message: &str) -> String {
    const TYPES: [(&str, &str); 6] = [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected u16", "expected a whole number (0 or more)"),
        ("expected a string", "expected a string in double quotes"),
        ("expected a boolean", "expected true or false"),
    ];
    let mut message = message.to_owned();
    for (serde, plain) in TYPES {
        message = message.replace(serde, plain);
    }
    message
        .replace("floating point `", "the number `")
        .replace("invalid value: integer `", "invalid value: `")
}

/// Finds the line of `section.key` in the text, for errors found after parsing.
pub(crate) fn locate_key(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.split_once('.')?;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header.trim_end_matches(']').trim().to_owned();
        } else if current == section {
            if let Some((k, _)) = line.split_once('=') {
                if k.trim().trim_matches('"') == key {
                    return Some(i + 1);
                }
            }
        }
    }
    None
}
