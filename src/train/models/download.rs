//! `--weights https://…/resnet18-f37072fd.pth`: a user with internet names
//! torchvision's file by its URL; it is downloaded once into the weights cache
//! and read from there afterwards. Nothing else in histoshard downloads, and
//! no test or default job reaches the network (the tests serve a file from
//! localhost).

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext};

/// Whether a `--weights` value is a URL rather than a file.
pub fn is_url(value: &Path) -> bool {
    value
        .to_str()
        .is_some_and(|s| s.starts_with("https://") || s.starts_with("http://"))
}

/// `given` as a local file: a URL is fetched into `cache` (once), a path is
/// returned as it is.
pub fn local_weights(given: Option<&Path>, cache: &Path) -> Result<Option<PathBuf>, Error> {
    match given {
        Some(url) if is_url(url) => fetch(url.to_string_lossy().as_ref(), cache).map(Some),
        other => Ok(other.map(Path::to_path_buf)),
    }
}

/// The cache's file name for `url`: its last path segment, which must look
/// like a weights file name (no query, no folder tricks).
fn file_name(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next()?;
    let name = path.rsplit('/').next()?;
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    ok.then_some(name)
}

/// torch.hub's convention: `name-<hex>.ext` carries the first hex digits of
/// the file's sha256 (`resnet18-f37072fd.pth`), which the download must match.
fn hash_prefix(name: &str) -> Option<&str> {
    let stem = name.split('.').next()?;
    let (_, prefix) = stem.rsplit_once('-')?;
    (prefix.len() >= 8 && prefix.chars().all(|c| c.is_ascii_hexdigit())).then_some(prefix)
}

/// Downloads `url` into `cache` unless already there; verifies torch.hub's
/// hash prefix when the name carries one. Written under a temporary name, so
/// an interrupted or refused download leaves nothing that looks complete.
pub fn fetch(url: &str, cache: &Path) -> Result<PathBuf, Error> {
    let bad_url = |why: &str| Error::input(url, why.to_string());
    let name = file_name(url)
        .ok_or_else(|| bad_url("the URL must end in a file name such as resnet18-f37072fd.pth"))?;
    let target = cache.join(name);
    if target.is_file() {
        tracing::info!("weights: using {} (cached from {url})", target.display());
        return Ok(target);
    }
    std::fs::create_dir_all(cache).at(cache)?;
    let (file, tmp) = crate::atomic::create_tmp(&target)?;
    let result = download(url, file, &tmp).and_then(|sha256| {
        match hash_prefix(name) {
            Some(prefix) if !sha256.starts_with(&prefix.to_ascii_lowercase()) => {
                Err(bad_url(&format!(
                    "downloaded file's sha256 is {sha256}, the name says it starts with {prefix}"
                )))
            }
            _ => Ok(()),
        }
        .and_then(|()| crate::atomic::commit(&tmp, &target))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    tracing::info!("weights: downloaded {url} → {}", target.display());
    Ok(target)
}

/// Streams `url` into `path`; returns the sha256 (hex) of what was written.
fn download(url: &str, mut file: std::fs::File, path: &Path) -> Result<String, Error> {
    let fail = |why: String| Error::input(url, format!("download failed: {why}"));
    let mut response = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
    let total = response.body().content_length();
    let bar = crate::progress::Progress::new(true).bar("download", total.unwrap_or(0), "bytes");
    let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).at(path)?;
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hash_prefixes() {
        let u = "https://download.pytorch.org/models/resnet18-f37072fd.pth";
        assert_eq!(file_name(u), Some("resnet18-f37072fd.pth"));
        assert_eq!(hash_prefix("resnet18-f37072fd.pth"), Some("f37072fd"));
        assert_eq!(hash_prefix("mobilenet_v2-b0353104.pth"), Some("b0353104"));
        assert_eq!(hash_prefix("my-weights.pth"), None);
        assert_eq!(file_name("https://x.org/w.pth?token=1"), Some("w.pth"));
        assert_eq!(file_name("https://x.org/"), None);
        assert_eq!(file_name("https://x.org/.."), None);
        assert!(is_url(Path::new("http://127.0.0.1:1/a.pth")));
        assert!(!is_url(Path::new("/tmp/a.pth")));
    }
}
