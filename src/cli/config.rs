//! `--config FILE.toml`: the same keys as the flags (`patch-size = 224`).
//! Unknown keys are rejected by name, so a typo never silently does nothing.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

/// Reads a TOML file into `T`, naming the file, line and key on error.
pub fn load<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read config", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        anyhow::anyhow!("{}: {}{at}", path.display(), e.message().trim())
    })
}
