//! `MATRIXON_*` environment overrides, mapped onto the keys the template documents.

use super::{ConfigError, TEMPLATE};

const PREFIX: &str = "MATRIXON_";

/// Variables that start with the prefix but are not configuration keys.
const NOT_KEYS: &[&str] = &[
    "MATRIXON_CONFIG",
    "MATRIXON_TEST_POSTGRES_URL",
    "MATRIXON_TEST_REDIS_URL",
];

/// Every dotted key path in the template, commented-out ones included, with whether it is a list.
fn known_keys() -> Vec<(String, bool)> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in TEMPLATE.lines() {
        let line = line.trim();
        let uncommented = line.strip_prefix("# ").unwrap_or(line);
        if let Some(header) = uncommented
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
        {
            section = header.to_owned();
            continue;
        }
        // Tables keyed by data (`[chains."eip155:1"]`) have no fixed keys to override.
        if section.contains('"') {
            continue;
        }
        let candidate = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, value)) = candidate.split_once(" = ") else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let path = if section.is_empty() {
            key.to_owned()
        } else {
            format!("{section}.{key}")
        };
        keys.push((path, value.trim_start().starts_with('[')));
    }
    keys
}

/// Writes each `MATRIXON_*` variable into `table` at the key it names.
pub(super) fn apply_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let keys = known_keys();
    for (name, raw) in env {
        let Some(suffix) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if NOT_KEYS.contains(&name.as_str()) {
            continue;
        }
        let Some((path, is_list)) = keys
            .iter()
            .find(|(path, _)| path.replace('.', "_").to_ascii_uppercase() == suffix)
        else {
            return Err(ConfigError::Invalid(format!(
                "environment variable {name} does not name a configuration key"
            )));
        };
        let value = parse_value(&raw, *is_list);
        set_path(table, path, value)
            .map_err(|why| ConfigError::Invalid(format!("{name}: {why}")))?;
    }
    Ok(())
}

fn parse_value(raw: &str, is_list: bool) -> toml::Value {
    if let Ok(mut doc) = format!("v = {raw}").parse::<toml::Table>()
        && let Some(value) = doc.remove("v")
        && (!is_list || value.is_array())
    {
        return value;
    }
    if is_list {
        toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        )
    } else {
        toml::Value::String(raw.to_owned())
    }
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else {
        return Err("empty key".to_owned());
    };
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` in the file is not a table"))?;
    }
    current.insert(last.to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::known_keys;

    #[test]
    fn every_key_is_documented() {
        let reference = include_str!("../../../docs/configuration.md");
        let keys = known_keys();
        assert!(keys.len() >= 20, "template parsing found only {keys:?}");
        for (key, _) in keys {
            assert!(
                reference.contains(&format!("`{key}`")),
                "docs/configuration.md does not document `{key}`"
            );
        }
    }
}
