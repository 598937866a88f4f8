//! `--config FILE.toml`: the same keys as the flags (`patch-size = 224`).
//! Unknown keys are rejected by name, so a typo never silently does nothing.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Config files larger than this are refused (one is a few hundred bytes).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a TOML file into `T`, naming the file, line and key on error. The
/// file must be a regular file of at most 1 MiB; the TOML parser bounds
/// nesting itself (80 levels of tables, arrays or dotted keys).
pub fn load<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = histoshard::fsutil::read_text_limited(path, MAX_CONFIG_BYTES, "a config file")?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        anyhow::anyhow!("{}: {}{at}", path.display(), e.message().trim())
    })
}
