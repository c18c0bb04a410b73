//! One binary cache: where it is (`http://`, `https://` or `file://`), its `nix-cache-info`,
//! its narinfo files and its NARs, decompressed as they stream in.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use pkgchain_store_model::cache_info::{CacheInfo, MAX_CACHE_INFO_BYTES};
use pkgchain_store_model::narinfo::NarInfo;
use pkgchain_store_model::store_path::{StoreDir, StorePath};
use tokio::io::{AsyncReadExt, BufReader};
use tokio::sync::OnceCell;

use crate::SubstituteError;

/// The largest narinfo fetched (Nix's limits are in the parser; this bounds the download).
const MAX_NARINFO_BYTES: usize = 4 * 1024 * 1024;
/// Memory an xz stream may make its decoder use (its dictionary, mostly): `xz -9` needs
/// 65 MiB. A stream asking for more fails with liblzma's "memory usage limit reached".
const XZ_MEMORY_LIMIT: u64 = 256 * 1024 * 1024;
/// How long a narinfo or `nix-cache-info` request may take, all of it.
const SMALL_FILE_TIMEOUT: Duration = Duration::from_secs(30);

/// Wraps a compressed stream in its (blocking) decoder.
type MakeDecoder = fn(Box<dyn std::io::BufRead>) -> std::io::Result<Box<dyn std::io::Read>>;

/// A NAR on its way from a cache: the transfer under way and how to decompress it.
pub struct NarSource {
    raw: Pin<Box<dyn tokio::io::AsyncBufRead + Send>>,
    decoder: Option<MakeDecoder>,
}

impl NarSource {
    /// The decompressed NAR as a blocking reader, decompressing on the thread that reads it.
    /// Blocking (the transfer is waited for on the tokio runtime of the caller, which must be
    /// a blocking thread of it, as in `spawn_blocking`).
    pub fn into_blocking_reader(self) -> std::io::Result<Box<dyn std::io::Read>> {
        // Already buffered (the transfer's own chunks): the decoder reads them in place.
        let raw = tokio_util::io::SyncIoBridge::new(self.raw);
        match self.decoder {
            Some(decoder) => decoder(Box::new(raw)),
            None => Ok(Box::new(raw)),
        }
    }
}

/// Where a cache is.
#[derive(Debug, Clone)]
enum Location {
    Http(reqwest::Url),
    File(PathBuf),
}

/// One binary cache, as named in `substituters`.
#[derive(Debug)]
pub struct BinaryCache {
    /// The URL as configured, without a trailing slash or parameters.
    url: String,
    location: Location,
    /// `?priority=N` in the URL, which overrides the cache's own.
    priority_param: Option<i32>,
    /// `nix-cache-info`, fetched once.
    info: OnceCell<CacheInfo>,
    /// The last failure to fetch it, and when: the cache is skipped for [`RETRY_AFTER`].
    failed: std::sync::Mutex<Option<(Instant, String)>>,
}

/// How long a cache whose `nix-cache-info` could not be fetched is left alone.
const RETRY_AFTER: Duration = Duration::from_secs(30);

impl BinaryCache {
    /// A cache from its URL (`http://`, `https://` or `file://`, with optional `?priority=N`).
    pub fn new(url: &str) -> Result<BinaryCache, SubstituteError> {
        let bad = |why: &str| SubstituteError::BadUrl {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let (base, params) = match url.split_once('?') {
            Some((b, p)) => (b, p),
            None => (url, ""),
        };
        let base = base.trim_end_matches('/');
        let mut priority_param = None;
        for param in params.split('&').filter(|p| !p.is_empty()) {
            if let Some(v) = param.strip_prefix("priority=") {
                priority_param = Some(v.parse().map_err(|_| bad("priority is not an integer"))?);
            }
        }
        let location = if let Some(dir) = base.strip_prefix("file://") {
            if !dir.starts_with('/') {
                return Err(bad("a file:// cache needs an absolute path"));
            }
            Location::File(PathBuf::from(dir))
        } else if base.starts_with("http://") || base.starts_with("https://") {
            let with_slash = format!("{base}/");
            Location::Http(reqwest::Url::parse(&with_slash).map_err(|e| bad(&e.to_string()))?)
        } else {
            return Err(bad(
                "only http://, https:// and file:// caches are supported",
            ));
        };
        Ok(BinaryCache {
            url: base.to_owned(),
            location,
            priority_param,
            info: OnceCell::new(),
            failed: std::sync::Mutex::new(None),
        })
    }

    /// Whether the cache is reached over HTTP(S) (not `file://`).
    pub fn is_http(&self) -> bool {
        matches!(self.location, Location::Http(_))
    }

    /// The URL, as Nix prints it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cache's `nix-cache-info`, fetched on first use and checked against `store_dir`.
    /// A cache that could not be used is not asked again for a while; the error comes with
    /// `true` the first time it is returned (for one warning per failure, as Nix gives).
    pub async fn info(
        &self,
        http: &crate::Http,
        store_dir: &StoreDir,
    ) -> Result<&CacheInfo, (SubstituteError, bool)> {
        if let Some(info) = self.info.get() {
            return Ok(info);
        }
        if let Some((when, why)) = &*self.failed.lock().unwrap_or_else(|e| e.into_inner())
            && when.elapsed() < RETRY_AFTER
        {
            return Err((SubstituteError::CacheUnusable(why.clone()), false));
        }
        let fetched = self
            .info
            .get_or_try_init(|| async {
                let bytes = match self.get(http, "nix-cache-info", MAX_CACHE_INFO_BYTES).await {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        return Err(format!(
                            "'{}' does not appear to be a binary cache",
                            self.url
                        ));
                    }
                    Err(e) => return Err(e.to_string()),
                };
                let info = CacheInfo::parse(&bytes)
                    .map_err(|e| format!("binary cache '{}': {e}", self.url))?;
                if let Some(dir) = &info.store_dir
                    && dir != store_dir.as_str()
                {
                    return Err(format!(
                        "binary cache '{}' is for Nix stores with prefix '{dir}', not '{}'",
                        self.url,
                        store_dir.as_str()
                    ));
                }
                Ok(info)
            })
            .await;
        fetched.map_err(|why| {
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            // Another request may have recorded the same failure meanwhile: warn once.
            let first = failed
                .as_ref()
                .is_none_or(|(when, _)| when.elapsed() >= RETRY_AFTER);
            if first {
                *failed = Some((Instant::now(), why.clone()));
            }
            (SubstituteError::CacheUnusable(why), first)
        })
    }

    /// The priority: the URL's `priority=`, else the cache's, else 0 (Nix's default).
    pub fn priority(&self, info: &CacheInfo) -> i32 {
        self.priority_param.or(info.priority).unwrap_or(0)
    }

    /// The narinfo of `path`, or `None` when the cache does not have it.
    pub async fn narinfo(
        &self,
        http: &crate::Http,
        store_dir: &StoreDir,
        path: &StorePath,
    ) -> Result<Option<NarInfo>, SubstituteError> {
        let name = format!("{}.narinfo", path.hash_part());
        let Some(bytes) = self.get(http, &name, MAX_NARINFO_BYTES).await? else {
            return Ok(None);
        };
        let info =
            NarInfo::parse_bytes(&bytes, store_dir).map_err(|e| SubstituteError::BadNarInfo {
                cache: self.url.clone(),
                path: store_dir.display(path),
                why: e.to_string(),
            })?;
        if info.store_path != *path {
            return Err(SubstituteError::BadNarInfo {
                cache: self.url.clone(),
                path: store_dir.display(path),
                why: format!(
                    "it describes '{}' instead",
                    store_dir.display(&info.store_path)
                ),
            });
        }
        Ok(Some(info))
    }

    /// The NAR a narinfo names, to be decompressed as it is read. `broken` is set when the transfer
    /// itself fails (connection, server error, a body cut short), not when the cache lacks the
    /// file or the data is bad, so that the caller knows another try may succeed.
    pub async fn nar(
        &self,
        http: &crate::Http,
        info: &NarInfo,
        broken: Arc<AtomicBool>,
    ) -> Result<NarSource, SubstituteError> {
        let url = &info.url;
        if url.contains("..") || url.starts_with('/') || url.contains("://") {
            return Err(SubstituteError::BadNarInfo {
                cache: self.url.clone(),
                path: info.absolute_path(),
                why: format!("its URL '{url}' leaves the cache"),
            });
        }
        let method = info.compression.as_str();
        // Known before anything is downloaded.
        let decoder: Option<MakeDecoder> = match method {
            "" | "bzip2" => Some(|r| Ok(Box::new(bzip2::bufread::MultiBzDecoder::new(r)))),
            "xz" => Some(|r| {
                // The NAR hash is checked anyway: the stream's own CRC64 would cost a twentieth
                // of the decoding for nothing. Concatenated streams, as Nix's decoder accepts.
                let flags = liblzma::stream::CONCATENATED | liblzma::stream::IGNORE_CHECK;
                let stream = liblzma::stream::Stream::new_stream_decoder(XZ_MEMORY_LIMIT, flags)
                    .map_err(std::io::Error::other)?;
                Ok(Box::new(liblzma::bufread::XzDecoder::new_stream(r, stream)))
            }),
            "zstd" => Some(|r| Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))),
            "none" => None,
            other => {
                return Err(SubstituteError::BadNarInfo {
                    cache: self.url.clone(),
                    path: info.absolute_path(),
                    why: format!("unsupported compression '{other}'"),
                });
            }
        };
        let raw: Pin<Box<dyn tokio::io::AsyncBufRead + Send>> = match &self.location {
            Location::File(dir) => {
                let file = tokio::fs::File::open(dir.join(url)).await.map_err(|e| {
                    SubstituteError::Transfer {
                        url: format!("{}/{url}", self.url),
                        why: e.to_string(),
                    }
                })?;
                Box::pin(BufReader::with_capacity(256 * 1024, file))
            }
            Location::Http(base) => {
                let full = base.join(url).map_err(|e| SubstituteError::Transfer {
                    url: format!("{}/{url}", self.url),
                    why: e.to_string(),
                })?;
                let response = http.get(full.clone())?.send().await.map_err(|e| {
                    // Refused, reset, timed out: worth another try.
                    broken.store(true, Ordering::Relaxed);
                    transfer(&full, &e)
                })?;
                if !response.status().is_success() {
                    if response.status().is_server_error() {
                        broken.store(true, Ordering::Relaxed);
                    }
                    return Err(SubstituteError::Transfer {
                        url: full.to_string(),
                        why: format!("HTTP status {}", response.status()),
                    });
                }
                let flag = broken.clone();
                let body = response.bytes_stream().map_err(move |e| {
                    flag.store(true, Ordering::Relaxed);
                    std::io::Error::other(e)
                });
                Box::pin(tokio_util::io::StreamReader::new(body))
            }
        };
        Ok(NarSource { raw, decoder })
    }

    /// A small file of the cache, or `None` when it has none (HTTP 404 or 403, or no file).
    async fn get(
        &self,
        http: &crate::Http,
        name: &str,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, SubstituteError> {
        match &self.location {
            Location::File(dir) => {
                let path = dir.join(name);
                let file = match tokio::fs::File::open(&path).await {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => {
                        return Err(SubstituteError::Transfer {
                            url: path.display().to_string(),
                            why: e.to_string(),
                        });
                    }
                };
                let mut bytes = Vec::new();
                file.take(limit as u64 + 1)
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(|e| SubstituteError::Transfer {
                        url: path.display().to_string(),
                        why: e.to_string(),
                    })?;
                too_large(&path.display().to_string(), bytes.len(), limit)?;
                Ok(Some(bytes))
            }
            Location::Http(base) => {
                let url = base.join(name).map_err(|e| SubstituteError::Transfer {
                    url: format!("{}/{name}", self.url),
                    why: e.to_string(),
                })?;
                let response = http
                    .get(url.clone())?
                    .timeout(SMALL_FILE_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| transfer(&url, &e))?;
                let status = response.status();
                if status == reqwest::StatusCode::NOT_FOUND
                    || status == reqwest::StatusCode::FORBIDDEN
                {
                    return Ok(None);
                }
                if !status.is_success() {
                    return Err(SubstituteError::Transfer {
                        url: url.to_string(),
                        why: format!("HTTP status {status}"),
                    });
                }
                let mut bytes = Vec::new();
                let mut body = response.bytes_stream();
                while let Some(chunk) = body.try_next().await.map_err(|e| transfer(&url, &e))? {
                    bytes.extend_from_slice(&chunk);
                    too_large(url.as_str(), bytes.len(), limit)?;
                }
                Ok(Some(bytes))
            }
        }
    }
}

fn transfer(url: &reqwest::Url, e: &reqwest::Error) -> SubstituteError {
    // The error's own text, with its causes (connection refused, timed out...).
    let mut why = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        why.push_str(": ");
        why.push_str(&s.to_string());
        source = s.source();
    }
    SubstituteError::Transfer {
        url: url.to_string(),
        why,
    }
}

fn too_large(url: &str, len: usize, limit: usize) -> Result<(), SubstituteError> {
    if len > limit {
        return Err(SubstituteError::Transfer {
            url: url.to_owned(),
            why: format!("more than {limit} bytes"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_as_nix_reads_them() {
        let c = BinaryCache::new("http://127.0.0.1:8080/cache/?priority=10").expect("url");
        assert_eq!(c.url(), "http://127.0.0.1:8080/cache");
        assert_eq!(c.priority(&CacheInfo::default()), 10);
        let c = BinaryCache::new("file:///var/cache/nix").expect("url");
        assert_eq!(c.url(), "file:///var/cache/nix");
        let info = CacheInfo {
            priority: Some(40),
            ..CacheInfo::default()
        };
        assert_eq!(c.priority(&info), 40);
        assert_eq!(c.priority(&CacheInfo::default()), 0);
        for bad in [
            "ssh://host",
            "file://relative",
            "http://x/?priority=high",
            "daemon",
        ] {
            assert!(
                matches!(BinaryCache::new(bad), Err(SubstituteError::BadUrl { .. })),
                "{bad}"
            );
        }
    }
}
