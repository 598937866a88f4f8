//! Objects on object storage — `s3://bucket/prefix`, `gs://…`, `az://…` and
//! `file:///…` — through the `object_store` crate (cargo feature
//! `object-store`, on by default; the wheel is built without it).
//!
//! This module moves whole files between a local folder and a prefix and
//! knows nothing of data sets (that is `prepare::remote`):
//! - [`Store::list`]: the objects directly under the prefix;
//! - [`Store::upload`]: one local file to one object, whole and atomically —
//!   a file up to [`part_size`] in one PUT, a larger one as a multipart upload
//!   that becomes visible only when completed and is aborted on any error, so
//!   an object with a final name is always a whole file;
//! - [`Store::download`]: one object to a local file, through a hidden
//!   temporary name renamed when whole ([`crate::atomic`]).
//!
//! Credentials and endpoints come from the usual environment variables, read
//! by `object_store`'s builders: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL` (an S3-compatible
//! server), `AWS_ALLOW_HTTP`; `GOOGLE_SERVICE_ACCOUNT`/`GOOGLE_APPLICATION_CREDENTIALS`;
//! `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, …. Requests are
//! retried by `object_store` (`HISTOSHARD_STORE_RETRIES` times, default 10).
//!
//! Every error is one line naming the URL and the cause: a bucket that does
//! not exist, credentials refused, the server unreachable or the connection
//! cut (`Error::Remote`).

use std::path::{Path, PathBuf};

use crate::error::Error;

/// Whether `arg` is a URL (`scheme://…`) rather than a local path: a scheme of
/// ASCII letters, digits, `+`, `-` or `.` before `://`.
pub fn is_url(arg: &Path) -> bool {
    let Some(s) = arg.to_str() else {
        return false;
    };
    match s.split_once("://") {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// Where histoshard keeps fetched data sets and staged uploads:
/// `HISTOSHARD_CACHE`, else `$XDG_CACHE_HOME/histoshard`, else
/// `~/.cache/histoshard`, else the temporary folder's `histoshard/`.
pub fn cache_root() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = var("HISTOSHARD_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("histoshard");
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home).join(".cache/histoshard");
    }
    std::env::temp_dir().join("histoshard")
}

/// `cache_root()/kind/<16 hex digits of sha256(key)>`: one folder per URL (and
/// whatever else `key` holds).
pub fn cache_dir(kind: &str, key: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    cache_root().join(kind).join(&digest[..16])
}

/// The refusal for a URL in a build without object storage (the wheel).
pub fn unsupported(url: &Path) -> Error {
    Error::Remote {
        url: url.display().to_string(),
        message: "this histoshard was built without object storage (cargo feature `object-store`); use a local path, or a build with the feature".into(),
    }
}

/// Size of a multipart upload's parts (and the largest file sent in one PUT):
/// `HISTOSHARD_UPLOAD_PART_MB` (at least 5, S3's minimum), default 8 MiB.
pub fn part_size() -> usize {
    let mb = std::env::var("HISTOSHARD_UPLOAD_PART_MB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(8)
        .clamp(5, 4096);
    mb << 20
}

/// An object under the prefix: its name relative to the prefix, size and entity tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub name: String,
    pub size: u64,
    pub e_tag: Option<String>,
}

#[cfg(feature = "object-store")]
pub use self::imp::Store;

#[cfg(feature = "object-store")]
mod imp {
    use std::{io::Read as _, io::Write as _, path::Path, sync::Arc, time::Duration};

    use futures_util::{StreamExt as _, TryStreamExt as _};
    use std::{collections::BTreeMap, path::PathBuf, sync::Mutex};

    use object_store::{
        ObjectStore, ObjectStoreExt as _, ObjectStoreScheme, RetryConfig, WriteMultipart,
        multipart::{MultipartStore, PartId},
        path::Path as ObjectPath,
    };
    use tracing::{info, warn};

    use super::{Object, part_size};
    use crate::{
        atomic,
        error::{Error, IoContext as _, Result},
        fsutil,
    };

    /// A prefix on an object store, with the runtime its requests run on.
    pub struct Store {
        url: String,
        store: Arc<dyn ObjectStore>,
        /// The same store's multipart API (S3, GCS, Azure; not `file://`):
        /// its upload ids can be recorded, and aborted by a later run.
        multipart: Option<Arc<dyn MultipartStore>>,
        /// Where the multipart uploads begun and not yet completed or
        /// aborted are recorded (upload id → object name), once
        /// [`Store::record_uploads`] is called.
        record: Mutex<Option<(PathBuf, BTreeMap<String, String>)>>,
        prefix: ObjectPath,
        rt: tokio::runtime::Runtime,
    }

    impl std::fmt::Debug for Store {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Store").field("url", &self.url).finish()
        }
    }

    impl Store {
        /// The store and prefix `url` names, configured from the environment.
        /// Nothing is sent yet: a missing bucket or refused credentials show
        /// at the first request ([`Store::list`]).
        pub fn open(url: &str) -> Result<Self> {
            let err = |m: String| Error::Remote {
                url: url.to_string(),
                message: m,
            };
            let parsed = url::Url::parse(url).map_err(|e| err(format!("not a URL: {e}")))?;
            let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|_| {
                err(format!(
                    "unsupported scheme {:?} (s3://, gs://, az:// and file:/// are)",
                    parsed.scheme()
                ))
            })?;
            let mut retry = RetryConfig::default();
            if let Some(n) = std::env::var("HISTOSHARD_STORE_RETRIES")
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                retry.max_retries = n;
                retry.retry_timeout = Duration::from_secs(60);
            }
            fn both<S: ObjectStore + MultipartStore>(
                s: S,
            ) -> (Arc<dyn ObjectStore>, Option<Arc<dyn MultipartStore>>) {
                let s = Arc::new(s);
                (s.clone() as _, Some(s as _))
            }
            let built = match scheme {
                ObjectStoreScheme::Local => Ok((
                    Arc::new(
                        object_store::local::LocalFileSystem::new().with_automatic_cleanup(true),
                    ) as Arc<dyn ObjectStore>,
                    None,
                )),
                ObjectStoreScheme::AmazonS3 => object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_retry(retry)
                    .build()
                    .map(both),
                ObjectStoreScheme::GoogleCloudStorage => {
                    object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_url(url)
                        .with_retry(retry)
                        .build()
                        .map(both)
                }
                ObjectStoreScheme::MicrosoftAzure => {
                    object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_url(url)
                        .with_retry(retry)
                        .build()
                        .map(both)
                }
                other => {
                    return Err(err(format!(
                        "unsupported store {other:?} (s3://, gs://, az:// and file:/// are)"
                    )));
                }
            };
            let (store, multipart) = built.map_err(|e| err(one_line(&e)))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| err(format!("cannot start the I/O runtime: {e}")))?;
            Ok(Self {
                url: url.trim_end_matches('/').to_string(),
                store,
                multipart,
                record: Mutex::new(None),
                prefix,
                rt,
            })
        }

        /// The URL, without a trailing `/`.
        pub fn url(&self) -> &str {
            &self.url
        }

        /// `URL/name`, for messages.
        pub fn url_of(&self, name: &str) -> String {
            format!("{}/{name}", self.url)
        }

        /// The object `name` (`a/b.png`: parts joined) under the prefix.
        fn path_of(&self, name: &str) -> ObjectPath {
            name.split('/')
                .filter(|p| !p.is_empty())
                .fold(self.prefix.clone(), |path, part| path.join(part))
        }

        /// The error for `e`, met while doing `what` to `name` (or the prefix).
        fn fail(&self, name: Option<&str>, what: &str, e: &object_store::Error) -> Error {
            let bucket = url::Url::parse(&self.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            Error::Remote {
                url: name.map_or_else(|| self.url.clone(), |n| self.url_of(n)),
                message: format!("{what}: {}", classify(e, &bucket)),
            }
        }

        /// The objects directly under the prefix (not in sub-prefixes), by name.
        /// The first request of every command: a bucket that does not exist,
        /// refused credentials or an unreachable server fail here.
        pub fn list(&self) -> Result<Vec<Object>> {
            let listed = self
                .rt
                .block_on(self.store.list_with_delimiter(Some(&self.prefix)))
                .map_err(|e| self.fail(None, "cannot list", &e))?;
            let mut objects: Vec<Object> = listed
                .objects
                .into_iter()
                .filter_map(|m| {
                    let name = m.location.filename()?.to_string();
                    Some(Object {
                        name,
                        size: m.size,
                        e_tag: m.e_tag,
                    })
                })
                .collect();
            objects.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(objects)
        }

        /// Every object under the prefix, sub-prefixes included, with names
        /// relative to the prefix (`a/b.png`).
        pub fn list_all(&self) -> Result<Vec<Object>> {
            self.list_under("")
        }

        /// Every object under `sub` (`a/b`: parts joined; `""`: the prefix
        /// itself), sub-prefixes included, with names relative to the
        /// prefix (`a/b/c.png`).
        pub fn list_under(&self, sub: &str) -> Result<Vec<Object>> {
            let under = self.path_of(sub);
            let metas: Vec<object_store::ObjectMeta> = self
                .rt
                .block_on(self.store.list(Some(&under)).try_collect())
                .map_err(|e| self.fail(None, "cannot list", &e))?;
            let base: Vec<_> = self.prefix.parts().collect();
            let mut objects: Vec<Object> = metas
                .into_iter()
                .filter_map(|m| {
                    let parts: Vec<_> = m.location.parts().collect();
                    let rel = parts.get(base.len()..)?;
                    if rel.is_empty() || parts[..base.len()] != base[..] {
                        return None;
                    }
                    let name: Vec<&str> = rel.iter().map(|p| p.as_ref()).collect();
                    Some(Object {
                        name: name.join("/"),
                        size: m.size,
                        e_tag: m.e_tag,
                    })
                })
                .collect();
            objects.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(objects)
        }

        /// Copies objects `(from, to)` (names under the prefix) inside the
        /// store, server-side (S3 `CopyObject`, GCS rewrite, Azure copy
        /// blob: the bytes do not pass through this machine), up to
        /// `concurrency` at once. A copy is atomic: the target appears
        /// whole or not at all.
        pub fn copy_all(&self, pairs: &[(String, String)], concurrency: usize) -> Result<()> {
            self.rt.block_on(async {
                futures_util::stream::iter(pairs.iter().map(|(from, to)| async move {
                    self.store
                        .copy(&self.path_of(from), &self.path_of(to))
                        .await
                        .map_err(|e| self.fail(Some(to), &format!("cannot copy {from} to it"), &e))
                }))
                .buffer_unordered(concurrency.max(1))
                .try_collect::<Vec<()>>()
                .await
                .map(|_| ())
            })
        }

        /// Downloads object `name` to `local`, written under a hidden
        /// temporary name and renamed when whole.
        pub fn download(&self, name: &str, local: &Path) -> Result<u64> {
            let path = self.path_of(name);
            let (mut file, tmp) = atomic::create_tmp(local)?;
            let got = self.rt.block_on(async {
                let mut stream = self
                    .store
                    .get(&path)
                    .await
                    .map_err(|e| self.fail(Some(name), "cannot read", &e))?
                    .into_stream();
                let mut bytes = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| self.fail(Some(name), "cannot read", &e))?;
                    file.write_all(&chunk).at(&tmp)?;
                    bytes += chunk.len() as u64;
                }
                Ok::<_, Error>(bytes)
            });
            drop(file);
            match got {
                Ok(bytes) => atomic::commit(&tmp, local).map(|()| bytes),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(e)
                }
            }
        }

        /// Uploads `local` as object `name`, whole or not at all: one PUT up
        /// to [`part_size`], else a multipart upload (visible only once
        /// completed; aborted on any error).
        pub fn upload(&self, local: &Path, name: &str) -> Result<u64> {
            self.rt.block_on(self.upload_async(local, name))
        }

        /// [`Store::upload`] of several files, up to `concurrency` at once;
        /// the first error stops the rest (an upload cut short is never completed).
        pub fn upload_all(&self, files: &[(&Path, &str)], concurrency: usize) -> Result<u64> {
            self.rt.block_on(async {
                futures_util::stream::iter(files.iter().map(|(l, n)| self.upload_async(l, n)))
                    .buffer_unordered(concurrency.max(1))
                    .try_fold(0u64, |sum, b| async move { Ok(sum + b) })
                    .await
            })
        }

        async fn upload_async(&self, local: &Path, name: &str) -> Result<u64> {
            let part = part_size();
            let path = self.path_of(name);
            let mut file = fsutil::open_regular(local)?;
            let len = file.metadata().at(local)?.len();
            if len <= part as u64 {
                let mut bytes = Vec::with_capacity(len as usize);
                file.read_to_end(&mut bytes).at(local)?;
                let n = bytes.len() as u64;
                self.store
                    .put(&path, bytes.into())
                    .await
                    .map_err(|e| self.fail(Some(name), "upload failed", &e))?;
                return Ok(n);
            }
            if let Some(mp) = &self.multipart {
                return self.upload_parts(mp, file, local, name).await;
            }
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|e| self.fail(Some(name), "upload failed", &e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
            let mut buf = vec![0u8; part];
            let mut sent = 0u64;
            let result: Result<()> = async {
                loop {
                    let n = read_full(&mut file, &mut buf).at(local)?;
                    if n == 0 {
                        return Ok(());
                    }
                    writer
                        .wait_for_capacity(2)
                        .await
                        .map_err(|e| self.fail(Some(name), "upload failed", &e))?;
                    writer.write(&buf[..n]);
                    sent += n as u64;
                }
            }
            .await;
            match result {
                Ok(()) => {
                    crate::failpoint::reached("before-upload-complete", 1);
                    writer
                        .finish()
                        .await
                        .map_err(|e| self.fail(Some(name), "upload failed", &e))?;
                    Ok(sent)
                }
                Err(e) => {
                    // Best effort: a multipart upload never completed stays
                    // invisible either way (a bucket lifecycle rule reaps it).
                    let _ = writer.abort().await;
                    Err(e)
                }
            }
        }

        /// From here on, records every multipart upload this store begins
        /// in the file `cache/uploads/<hash of key>.json` (upload id and
        /// object) until it is completed or aborted, so that an upload whose
        /// abort could not be sent (the connection was cut, the process
        /// killed) is aborted by the next run with the same `key`; first
        /// aborts those an earlier run left recorded there, and returns how
        /// many it aborted. Stores without a multipart API (`file://`)
        /// record nothing.
        pub fn record_uploads(&self, key: &str) -> Result<usize> {
            if self.multipart.is_none() {
                return Ok(0);
            }
            let file = super::cache_dir("uploads", key).with_extension("json");
            let left: BTreeMap<String, String> =
                fsutil::read_limited(&file, 1 << 20, "an upload record")
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
            *self.lock_record() = Some((file, left.clone()));
            let mut aborted = 0;
            for (id, name) in &left {
                let gone = match self.rt.block_on(self.abort(name, id)) {
                    Ok(()) => {
                        aborted += 1;
                        true
                    }
                    Err(object_store::Error::NotFound { .. }) => true,
                    Err(e) => {
                        warn!(
                            "{}: cannot abort the multipart upload {id} an earlier run left: {}",
                            self.url_of(name),
                            one_line(&e)
                        );
                        false
                    }
                };
                if gone {
                    self.note(id, None)?;
                }
            }
            if aborted > 0 {
                info!(
                    "{}: aborted {aborted} multipart upload(s) an earlier run left unfinished",
                    self.url
                );
            }
            Ok(aborted)
        }

        async fn abort(&self, name: &str, id: &str) -> object_store::Result<()> {
            match &self.multipart {
                Some(mp) => {
                    mp.abort_multipart(&self.path_of(name), &id.to_string())
                        .await
                }
                None => Ok(()),
            }
        }

        fn lock_record(
            &self,
        ) -> std::sync::MutexGuard<'_, Option<(PathBuf, BTreeMap<String, String>)>> {
            self.record.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Records upload `id` of object `name` (`Some`), or forgets it (`None`).
        fn note(&self, id: &str, name: Option<&str>) -> Result<()> {
            let mut record = self.lock_record();
            let Some((file, ids)) = record.as_mut() else {
                return Ok(());
            };
            match name {
                Some(n) => ids.insert(id.to_string(), n.to_string()),
                None => ids.remove(id),
            };
            if ids.is_empty() {
                return match std::fs::remove_file(&*file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&*file, e)),
                    _ => Ok(()),
                };
            }
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir).at(dir)?;
            }
            let text = serde_json::to_vec_pretty(&*ids)
                .map_err(|e| Error::Config(format!("upload record: {e}")))?;
            atomic::write(file, &text)
        }

        /// A multipart upload through the store's multipart API: its id
        /// recorded (see [`Store::record_uploads`]) before any part is sent,
        /// parts of [`part_size`] two at a time, completed (then visible) or
        /// aborted on any error; an abort that fails leaves it recorded.
        async fn upload_parts(
            &self,
            mp: &Arc<dyn MultipartStore>,
            mut file: std::fs::File,
            local: &Path,
            name: &str,
        ) -> Result<u64> {
            let part = part_size();
            let path = self.path_of(name);
            let failed = |e: &object_store::Error| self.fail(Some(name), "upload failed", e);
            let id = mp.create_multipart(&path).await.map_err(|e| failed(&e))?;
            self.note(&id, Some(name))?;
            let mut sent = 0u64;
            let parts: Result<Vec<PartId>> = async {
                let mut inflight = futures_util::stream::FuturesOrdered::new();
                let mut done = Vec::new();
                for idx in 0.. {
                    let mut buf = vec![0u8; part];
                    let n = read_full(&mut file, &mut buf).at(local)?;
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    sent += n as u64;
                    let (mp, path, id) = (mp.clone(), path.clone(), id.clone());
                    inflight
                        .push_back(async move { mp.put_part(&path, &id, idx, buf.into()).await });
                    if inflight.len() >= 2
                        && let Some(r) = inflight.next().await
                    {
                        done.push(r.map_err(|e| failed(&e))?);
                    }
                }
                while let Some(r) = inflight.next().await {
                    done.push(r.map_err(|e| failed(&e))?);
                }
                Ok(done)
            }
            .await;
            let completed = match parts {
                Ok(parts) => {
                    crate::failpoint::reached("before-upload-complete", 1);
                    mp.complete_multipart(&path, &id, parts)
                        .await
                        .map(|_| ())
                        .map_err(|e| failed(&e))
                }
                Err(e) => Err(e),
            };
            match completed {
                Ok(()) => {
                    self.note(&id, None)?;
                    Ok(sent)
                }
                Err(e) => {
                    // Best effort: one that cannot be aborted now stays recorded for the next run.
                    if mp.abort_multipart(&path, &id).await.is_ok() {
                        let _ = self.note(&id, None);
                    }
                    Err(e)
                }
            }
        }

        /// Deletes object `name`; one already gone is no error.
        pub fn delete(&self, name: &str) -> Result<()> {
            match self.rt.block_on(self.store.delete(&self.path_of(name))) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.fail(Some(name), "cannot delete", &e)),
            }
        }
    }

    /// Reads until `buf` is full or the file ends.
    fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// `e` and its sources on one line, whitespace collapsed, at most 400 characters.
    fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let t = s.to_string();
            if !text.contains(&t) {
                text.push_str(": ");
                text.push_str(&t);
            }
            source = s.source();
        }
        let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.chars().count() > 400 {
            line = line.chars().take(400).collect::<String>() + "…";
        }
        line
    }

    /// The text between `<tag>` and `</tag>` in an S3/Azure/GCS XML error body.
    fn xml_field<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
        let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
        let end = start + text[start..].find(&format!("</{tag}>"))?;
        Some(text[start..end].trim())
    }

    /// What went wrong, in words a user can act on, then the store's own text.
    fn classify(e: &object_store::Error, bucket: &str) -> String {
        let detail = one_line(e);
        let code = xml_field(&detail, "Code").unwrap_or("");
        let reason = match code {
            "NoSuchBucket" | "ContainerNotFound" => {
                format!("the bucket {bucket:?} does not exist")
            }
            "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied"
            | "AuthenticationFailed" | "AuthorizationFailure" | "InvalidSecurity" | "ExpiredToken" => {
                format!("credentials refused ({code}): check the access key and secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, …) and the bucket's permissions")
            }
            _ => match e {
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => "credentials refused: check the access key and secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, …) and the bucket's permissions".into(),
                object_store::Error::NotFound { .. } => "not found".into(),
                _ if ["error sending request", "connection", "Connection", "timed out", "dns error", "broken pipe", "reset by peer"]
                    .iter()
                    .any(|k| detail.contains(k)) =>
                {
                    "network error (the server is unreachable or cut the connection; nothing at the prefix looks complete: run the same command again)".into()
                }
                _ => String::new(),
            },
        };
        let message = xml_field(&detail, "Message").map(str::to_string);
        match (reason.is_empty(), message) {
            (true, _) => detail,
            (false, Some(m)) if !m.is_empty() => format!("{reason} ({m})"),
            (false, _) => {
                let short: String = detail.chars().take(200).collect();
                format!("{reason} ({short})")
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn xml_fields_and_one_line() {
            let body = "Error performing GET http://x 404 Not Found: <?xml version=\"1.0\"?>\n<Error>\n <Code>NoSuchBucket</Code>\n <Message>The specified bucket does not exist</Message></Error>";
            assert_eq!(xml_field(body, "Code"), Some("NoSuchBucket"));
            assert_eq!(
                xml_field(body, "Message"),
                Some("The specified bucket does not exist")
            );
            let e = std::io::Error::other(body);
            let line = one_line(&e);
            assert!(!line.contains('\n'), "{line}");
        }

        #[test]
        fn files_go_up_and_down_whole_through_file_urls() {
            let dir = tempfile::tempdir().unwrap();
            let bucket = dir.path().join("bucket");
            std::fs::create_dir(&bucket).unwrap();
            let url = format!("file://{}/pre", bucket.display());
            let store = Store::open(&url).unwrap();
            assert!(store.list().unwrap().is_empty());
            let small = dir.path().join("small.bin");
            std::fs::write(&small, b"hello").unwrap();
            // Larger than a part: a multipart upload.
            let big = dir.path().join("big.bin");
            let bytes: Vec<u8> = (0..(part_size() * 2 + 123))
                .map(|i| (i % 251) as u8)
                .collect();
            std::fs::write(&big, &bytes).unwrap();
            store
                .upload_all(&[(small.as_path(), "a.bin"), (big.as_path(), "b.bin")], 2)
                .unwrap();
            let names: Vec<String> = store.list().unwrap().into_iter().map(|o| o.name).collect();
            assert_eq!(names, ["a.bin", "b.bin"]);
            let back = dir.path().join("back.bin");
            store.download("b.bin", &back).unwrap();
            assert_eq!(std::fs::read(&back).unwrap(), bytes);
            let err = store.download("nope.bin", &back).unwrap_err().to_string();
            assert!(
                err.contains("nope.bin") && err.contains("not found"),
                "{err}"
            );
            store.delete("a.bin").unwrap();
            store.delete("a.bin").unwrap();
            assert_eq!(store.list().unwrap().len(), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        for u in [
            "s3://b/p",
            "gs://b",
            "az://c/p",
            "file:///tmp/x",
            "s3a://b/",
        ] {
            assert!(is_url(Path::new(u)), "{u}");
        }
        for p in ["out", "/tmp/out", "./s3:/x", "a://", "://x", "1s://x"] {
            let want = p == "a://";
            assert_eq!(is_url(Path::new(p)), want, "{p}");
        }
    }
}
