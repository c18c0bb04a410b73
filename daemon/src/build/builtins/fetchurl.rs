//! `builtin:fetchurl`: downloads `url` into the output `out`, as Nix's builder of that name.
//!
//! Semantics followed (Nix's `src/libstore/builtins/fetchurl.cc`):
//! - `url` is the address (`http`, `https` or `file`); `urls` (whitespace-separated, tried in
//!   order until one succeeds) is accepted too, when `url` is absent.
//! - For a flat fixed-output hash, each of `hashed-mirrors` is tried first as
//!   `<mirror>/<algo>/<base16 digest>`; their failures are silent.
//! - `unpack = "1"`: the download is a NAR (xz-compressed when the main URL ends in `.xz`),
//!   restored as the output tree.
//! - `executable = "1"`: the output file gets mode 0755 (the store makes it 0555).
//!
//! The body is streamed to disk chunk by chunk; redirects are bounded (10, as curl in Nix);
//! a download with no data for [`STALL_TIMEOUT`] fails like Nix's `stalled-download-timeout`.
//! The hash is not checked here: the scheduler checks fixed-output hashes after ingesting.
//! Proxies come only from the builder's environment (`http_proxy`, `https_proxy`,
//! `all_proxy`, `no_proxy`, as `impureEnvVars` pass them), never from the daemon's.
//!
//! As Nix hands its builder the daemon's `netrc-file` and `ssl-cert-file`: the login the
//! netrc file gives a URL's host is sent (unless the URL has its own), and HTTPS trusts only
//! the authorities of `ssl-cert-file` when it is set. A netrc file that cannot be parsed fails
//! the download, naming the file and the line; an unusable `ssl-cert-file` fails only HTTPS
//! downloads (as curl's, with an empty bundle), naming the file and why.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pkgchain_store_model::hash::{Hash, HashAlgo, HashEncoding};
use pkgchain_store_model::nar::{NarEvent, NarReader};
use pkgchain_substitute::netrc::Netrc;
use tokio::io::AsyncWriteExt;

use super::BuiltinRequest;

/// Most redirects followed (curl's `CURLOPT_MAXREDIRS` in Nix).
const MAX_REDIRECTS: usize = 10;

/// A download that receives nothing for this long fails (Nix's `stalled-download-timeout`).
const STALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Time allowed to connect (curl's default, which Nix's `connect-timeout = 0` keeps).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the builder.
pub(super) async fn run(
    req: &BuiltinRequest<'_>,
    log: &mut (dyn FnMut(String) + Send),
) -> Result<(), String> {
    let out = req.output_dir("out")?;
    let urls = main_urls(req)?;
    let unpack = req.var("unpack").as_deref() == Some("1");
    let executable = req.var("executable").as_deref() == Some("1");
    // Nix picks the xz decompressor from the main URL, whichever URL is then fetched.
    let xz = unpack && urls.first().is_some_and(|u| u.ends_with(".xz"));
    let netrc = match &req.downloads.netrc_file {
        Some(path) => pkgchain_substitute::read_netrc(path).map_err(|e| e.to_string())?,
        None => None,
    };
    let roots = req
        .downloads
        .ca_file
        .as_deref()
        .map(pkgchain_substitute::trusted_certificates);
    let ca_problem = match &roots {
        Some(Err(e)) => Some(e.to_string()),
        _ => None,
    };
    let client = http_client(req, roots.and_then(Result::ok))?;
    let fetch = Fetch {
        client: &client,
        netrc: netrc.as_ref(),
        ca_problem: ca_problem.as_deref(),
        store_dir: Path::new(req.store_dir),
        out: &out,
        unpack,
        xz,
        executable,
    };

    for mirror_url in mirror_urls(req) {
        match fetch.fetch(&mirror_url).await {
            Ok(()) => return Ok(()),
            // Nix reports these only at debug level; the main URL comes next.
            Err(e) => tracing::debug!(url = %mirror_url, error = %e, "hashed mirror failed"),
        }
    }

    let mut last = None;
    for url in &urls {
        match fetch.fetch(url).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if urls.len() > 1 {
                    log(format!("warning: {e}"));
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| "attribute 'url' missing".to_owned()))
}

/// The URLs to try, in order: `url`, or else the words of `urls`.
fn main_urls(req: &BuiltinRequest<'_>) -> Result<Vec<String>, String> {
    if let Some(url) = req.var("url") {
        return Ok(vec![url]);
    }
    let urls: Vec<String> = req
        .var("urls")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err("attribute 'url' missing".to_owned());
    }
    Ok(urls)
}

/// `<mirror>/<algo>/<base16>` for each hashed mirror, when the output hash is flat and known.
fn mirror_urls(req: &BuiltinRequest<'_>) -> Vec<String> {
    if req.hashed_mirrors.is_empty() {
        return Vec::new();
    }
    let mode = req
        .var("outputHashMode")
        .unwrap_or_else(|| "flat".to_owned());
    if mode != "flat" {
        return Vec::new();
    }
    let Some(hash) = output_hash(req) else {
        return Vec::new();
    };
    req.hashed_mirrors
        .iter()
        .map(|m| {
            let sep = if m.ends_with('/') { "" } else { "/" };
            format!(
                "{m}{sep}{}/{}",
                hash.algo(),
                hash.encode(HashEncoding::Base16)
            )
        })
        .collect()
}

/// The fixed output hash from `outputHash` (and `outputHashAlgo` when the hash has no prefix).
fn output_hash(req: &BuiltinRequest<'_>) -> Option<Hash> {
    let text = req.var("outputHash")?;
    let algo = req
        .var("outputHashAlgo")
        .filter(|a| !a.is_empty())
        .and_then(|a| HashAlgo::from_name(&a).ok());
    Hash::parse_any(&text, algo).ok()
}

/// Makes a proxy setting from its URL.
type MakeProxy = fn(&str) -> reqwest::Result<reqwest::Proxy>;

/// The HTTP client: bounded redirects, proxies only from the builder's environment, and
/// for HTTPS the authorities of `ssl-cert-file` when it is set (`roots`: its certificates,
/// `None` when it is unset or unusable; unusable, nothing is trusted).
fn http_client(
    req: &BuiltinRequest<'_>,
    roots: Option<Vec<reqwest::Certificate>>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("pkgchain/", env!("CARGO_PKG_VERSION")))
        .no_proxy();
    if req.downloads.ca_file.is_some() {
        builder = builder.tls_built_in_root_certs(false);
        for cert in roots.into_iter().flatten() {
            builder = builder.add_root_certificate(cert);
        }
    }
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| req.var(n))
            .filter(|v| !v.is_empty())
    };
    let no_proxy = var(&["no_proxy", "NO_PROXY"]).and_then(|v| reqwest::NoProxy::from_string(&v));
    let proxies: [(Option<String>, MakeProxy); 3] = [
        (var(&["http_proxy"]), |u| reqwest::Proxy::http(u)),
        (var(&["https_proxy", "HTTPS_PROXY"]), |u| {
            reqwest::Proxy::https(u)
        }),
        (var(&["all_proxy", "ALL_PROXY"]), |u| reqwest::Proxy::all(u)),
    ];
    for (url, make) in proxies {
        if let Some(url) = url {
            let proxy = make(&url).map_err(|e| format!("invalid proxy '{url}': {e}"))?;
            builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the download client: {e}"))
}

/// One download into the output.
struct Fetch<'a> {
    client: &'a reqwest::Client,
    /// `netrc-file`'s entries, read once per build as Nix reads them.
    netrc: Option<&'a Netrc>,
    /// Why `ssl-cert-file` cannot be used, when it cannot.
    ca_problem: Option<&'a str>,
    /// `file://` URLs must name files in here.
    store_dir: &'a Path,
    out: &'a Path,
    unpack: bool,
    xz: bool,
    executable: bool,
}

impl Fetch<'_> {
    /// Downloads `url` into the output; on failure nothing is left at the output.
    async fn fetch(&self, url: &str) -> Result<(), String> {
        remove_any(self.out).await?;
        let result = self.fetch_inner(url).await;
        if result.is_err() {
            // Best effort: a later URL starts from an empty place again anyway.
            let _ = remove_any(self.out).await;
        }
        result
    }

    async fn fetch_inner(&self, url: &str) -> Result<(), String> {
        if !self.unpack {
            let mut file = create_file(self.out).await?;
            self.download(url, &mut file).await?;
            file.flush()
                .await
                .map_err(|e| format!("writing '{}': {e}", self.out.display()))?;
            drop(file);
            if self.executable {
                set_mode(self.out, 0o755).await?;
            }
            return Ok(());
        }
        // A NAR: downloaded to a temporary file next to the output, then restored from it, so
        // that memory stays bounded whatever the size.
        let parent = self.out.parent().unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(".fetchurl-")
            .tempfile_in(parent)
            .map_err(|e| format!("creating a temporary file in '{}': {e}", parent.display()))?;
        let (std_file, tmp_path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        self.download(url, &mut file).await?;
        file.flush()
            .await
            .map_err(|e| format!("writing '{}': {e}", tmp_path.display()))?;
        let mut std_file = file.into_std().await;
        let out = self.out.to_path_buf();
        let xz = self.xz;
        let url = url.to_owned();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            use std::io::Seek;
            std_file
                .seek(std::io::SeekFrom::Start(0))
                .map_err(|e| format!("reading '{}': {e}", tmp_path.display()))?;
            let input: Box<dyn Read> = if xz {
                Box::new(liblzma::read::XzDecoder::new_multi_decoder(BufReader::new(
                    std_file,
                )))
            } else {
                Box::new(std_file)
            };
            let restored = restore_nar(BufReader::new(input), &out)
                .map_err(|e| format!("unpacking the NAR downloaded from '{url}': {e}"));
            drop(tmp_path);
            restored
        })
        .await
        .map_err(|e| format!("unpacking task failed: {e}"))?
    }

    /// Streams the body of `url` into `file`.
    async fn download(&self, url: &str, file: &mut tokio::fs::File) -> Result<(), String> {
        let fail = |what: String| format!("unable to download '{url}': {what}");
        if let Some(rest) = url.strip_prefix("file://") {
            return copy_local(rest, self.store_dir, file).await.map_err(fail);
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| fail(format!("invalid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(fail(format!(
                "Unsupported protocol '{}' (1)",
                parsed.scheme()
            )));
        }
        if let (Some(problem), "https") = (self.ca_problem, parsed.scheme()) {
            // curl's error with the empty bundle Nix hands its builder in this case.
            return Err(fail(format!(
                "Problem with the SSL CA cert (path? access rights?) (77): {problem}"
            )));
        }
        let login = match (self.netrc, parsed.host_str()) {
            (Some(netrc), Some(host)) if parsed.username().is_empty() => netrc
                .credentials(host)
                .map(|(user, password)| (user.to_owned(), password.map(str::to_owned))),
            _ => None,
        };
        let mut request = self.client.get(parsed);
        if let Some((user, password)) = login {
            request = request.basic_auth(user, password);
        }
        let mut response = request.send().await.map_err(|e| fail(describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP error {}", status.as_u16())));
        }
        loop {
            let chunk = tokio::time::timeout(STALL_TIMEOUT, response.chunk())
                .await
                .map_err(|_| fail("Timeout was reached (28)".to_owned()))?
                .map_err(|e| fail(describe(&e)))?;
            let Some(chunk) = chunk else { break };
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("writing the download of '{url}': {e}"))?;
        }
        Ok(())
    }
}

/// What went wrong with a request, in curl's words where Nix would print them.
fn describe(e: &reqwest::Error) -> String {
    if e.is_redirect() {
        "Number of redirects hit maximum amount (47)".to_owned()
    } else if e.is_timeout() {
        "Timeout was reached (28)".to_owned()
    } else {
        // The chain of causes says more than the top-level message.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        if text.contains("invalid peer certificate") {
            // rustls refused the server's certificate: curl's words first, then why.
            format!("SSL peer certificate or SSH remote key was not OK (60): {text}")
        } else if e.is_connect() {
            "Couldn't connect to server (7)".to_owned()
        } else {
            text
        }
    }
}

/// Copies the file named by the rest of a `file://` URL, which must be in `store_dir`: this
/// builder runs as root outside any sandbox, where Nix's would see only the build's inputs.
async fn copy_local(
    rest: &str,
    store_dir: &Path,
    file: &mut tokio::fs::File,
) -> Result<(), String> {
    // `file://host/path` is accepted by curl only for `localhost` or an empty host.
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return Err("Couldn't read a file:// file (37)".to_owned());
    }
    let path = percent_decode(path);
    let real = tokio::fs::canonicalize(&path)
        .await
        .map_err(|_| "Couldn't read a file:// file (37)".to_owned())?;
    let store = tokio::fs::canonicalize(store_dir)
        .await
        .unwrap_or_else(|_| store_dir.to_path_buf());
    if !real.starts_with(&store) {
        return Err(format!(
            "Couldn't read a file:// file (37): only files in the store directory '{}' can be fetched",
            store_dir.display()
        ));
    }
    let mut src = tokio::fs::File::open(&real)
        .await
        .map_err(|_| "Couldn't read a file:// file (37)".to_owned())?;
    let meta = src
        .metadata()
        .await
        .map_err(|_| "Couldn't read a file:// file (37)".to_owned())?;
    if !meta.is_file() {
        return Err("Couldn't read a file:// file (37)".to_owned());
    }
    tokio::io::copy(&mut src, file)
        .await
        .map_err(|e| format!("Couldn't read a file:// file (37): {e}"))?;
    Ok(())
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
fn percent_decode(text: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(s) = std::str::from_utf8(hex)
            && let Ok(v) = u8::from_str_radix(s, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(byte);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Creates the output file; it must not exist (a symlink there is not followed).
async fn create_file(path: &Path) -> Result<tokio::fs::File, String> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(|e| format!("creating '{}': {e}", path.display()))
}

async fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(|e| format!("making '{}' executable: {e}", path.display()))
}

/// Removes whatever is at `path` (file, symlink or tree); nothing there is fine.
async fn remove_any(path: &Path) -> Result<(), String> {
    match tokio::fs::symlink_metadata(path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("getting status of '{}': {e}", path.display())),
        Ok(meta) if meta.is_dir() => tokio::fs::remove_dir_all(path)
            .await
            .map_err(|e| format!("removing '{}': {e}", path.display())),
        Ok(_) => tokio::fs::remove_file(path)
            .await
            .map_err(|e| format!("removing '{}': {e}", path.display())),
    }
}

/// Restores the NAR read from `input` at `dest` (which must not exist). Iterative: the NAR
/// reader bounds the depth and checks every entry name, so nothing lands outside `dest`;
/// files are created with `O_EXCL`, so no symlink written earlier is ever followed.
pub(super) fn restore_nar(input: impl Read, dest: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let mut reader = NarReader::new(input);
    // The directory each open NAR directory stands for; the root's parent first.
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut file: Option<(std::fs::File, PathBuf)> = None;
    let place = |dirs: &Vec<PathBuf>, name: Option<&[u8]>| -> Result<PathBuf, String> {
        match (dirs.last(), name) {
            (None, None) => Ok(dest.to_path_buf()),
            (Some(dir), Some(name)) => Ok(dir.join(std::ffi::OsStr::from_bytes(name))),
            _ => Err("malformed NAR: entry outside a directory".to_owned()),
        }
    };
    while let Some(event) = reader.next_event().map_err(|e| e.to_string())? {
        match event {
            NarEvent::DirectoryStart { name } => {
                let path = place(&dirs, name)?;
                std::fs::create_dir(&path)
                    .map_err(|e| format!("creating directory '{}': {e}", path.display()))?;
                dirs.push(path);
            }
            NarEvent::DirectoryEnd => {
                dirs.pop();
            }
            NarEvent::Symlink { name, target } => {
                let path = place(&dirs, name)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &path)
                    .map_err(|e| format!("creating symlink '{}': {e}", path.display()))?;
            }
            NarEvent::File {
                name, executable, ..
            } => {
                let path = place(&dirs, name)?;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o755 } else { 0o644 })
                    .open(&path)
                    .map_err(|e| format!("creating '{}': {e}", path.display()))?;
                file = Some((f, path));
            }
            NarEvent::FileChunk(data) => {
                if let Some((f, path)) = file.as_mut() {
                    f.write_all(data)
                        .map_err(|e| format!("writing '{}': {e}", path.display()))?;
                }
            }
            NarEvent::FileEnd => {
                file = None;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::path::Path;

    use super::*;

    /// The `Authorization` header `/private` wants: `alice`, `s3cret`.
    const PRIVATE_LOGIN: &str = "Basic YWxpY2U6czNjcmV0";

    /// A real HTTP/1.1 server on loopback, answering a fixed set of paths (others 404),
    /// `/redirect` with a 302 to `/hello`, `/loop` with a redirect to itself, and `/private`
    /// with "secret" given [`PRIVATE_LOGIN`] (else 401). Serves until the test ends (the
    /// thread is detached).
    fn serve(files: Vec<(&'static str, Vec<u8>)>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut authorized = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        authorized |= name.eq_ignore_ascii_case("authorization")
                            && value.trim() == PRIVATE_LOGIN;
                    }
                }
                let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
                let (status, headers, body): (&str, String, Vec<u8>) = if path == "/redirect" {
                    ("302 Found", "Location: /hello\r\n".into(), Vec::new())
                } else if path == "/loop" {
                    ("302 Found", "Location: /loop\r\n".into(), Vec::new())
                } else if path == "/private" && authorized {
                    ("200 OK", String::new(), b"secret".to_vec())
                } else if path == "/private" {
                    ("401 Unauthorized", String::new(), Vec::new())
                } else if let Some((_, body)) = files.iter().find(|(p, _)| *p == path) {
                    ("200 OK", String::new(), body.clone())
                } else {
                    ("404 Not Found", String::new(), b"not found".to_vec())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        port
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<Vec<u8>, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// Runs the builder with `dir` as the store directory and `dir/staging` as the staging
    /// directory; the output is at `dir/staging/OUT`.
    async fn fetch(dir: &Path, pairs: &[(&str, &str)], mirrors: &[String]) -> Result<(), String> {
        fetch_with(dir, pairs, mirrors, &Default::default()).await
    }

    /// [`fetch`] with `ssl-cert-file` and `netrc-file`.
    async fn fetch_with(
        dir: &Path,
        pairs: &[(&str, &str)],
        mirrors: &[String],
        downloads: &crate::build::DownloadSettings,
    ) -> Result<(), String> {
        let store_dir = dir.display().to_string();
        let out = format!("{store_dir}/{OUT}");
        let mut all = vec![("out", out.as_str())];
        all.extend_from_slice(pairs);
        let env = env(&all);
        let staging = dir.join("staging");
        std::fs::create_dir_all(&staging).unwrap();
        let req = BuiltinRequest {
            builder: "builtin:fetchurl",
            env: &env,
            store_dir: &store_dir,
            staging: &staging,
            hashed_mirrors: mirrors,
            downloads,
        };
        let mut lines = Vec::new();
        run(&req, &mut |l| lines.push(l)).await
    }

    const OUT: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x";

    #[tokio::test]
    async fn downloads_over_http_and_follows_redirects() {
        let port = serve(vec![("/hello", b"hello world\n".to_vec())]);
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{port}/hello");
        fetch(dir.path(), &[("url", &url)], &[]).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("staging").join(OUT)).unwrap(),
            b"hello world\n"
        );

        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{port}/redirect");
        fetch(dir.path(), &[("url", &url), ("executable", "1")], &[])
            .await
            .unwrap();
        let out = dir.path().join("staging").join(OUT);
        assert_eq!(std::fs::read(&out).unwrap(), b"hello world\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    #[tokio::test]
    async fn http_errors_are_worded_like_nix() {
        let port = serve(vec![]);
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{port}/missing");
        let err = fetch(dir.path(), &[("url", &url)], &[]).await.unwrap_err();
        assert_eq!(err, format!("unable to download '{url}': HTTP error 404"));
        assert!(!dir.path().join("staging").join(OUT).exists());

        let url = format!("http://127.0.0.1:{port}/loop");
        let err = fetch(dir.path(), &[("url", &url)], &[]).await.unwrap_err();
        assert!(err.contains("redirects"), "{err}");

        // Nothing listens on the port of a listener just closed.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{closed}/x");
        let err = fetch(dir.path(), &[("url", &url)], &[]).await.unwrap_err();
        assert!(err.contains("Couldn't connect to server"), "{err}");

        let err = fetch(dir.path(), &[("url", "gopher://x/y")], &[])
            .await
            .unwrap_err();
        assert!(err.contains("Unsupported protocol"), "{err}");
        let err = fetch(dir.path(), &[], &[]).await.unwrap_err();
        assert_eq!(err, "attribute 'url' missing");
    }

    /// The login of `netrc-file` for the URL's host is sent; without it the server's 401 is
    /// the answer; a malformed netrc file fails naming it and the line. An unusable
    /// `ssl-cert-file` fails HTTPS downloads only, naming the file.
    #[tokio::test]
    async fn netrc_and_ssl_cert_file_are_used() {
        let port = serve(vec![]);
        let files = tempfile::tempdir().unwrap();
        let netrc = files.path().join("netrc");
        std::fs::write(&netrc, "machine 127.0.0.1 login alice password s3cret\n").unwrap();
        let with_netrc = crate::build::DownloadSettings {
            ca_file: None,
            netrc_file: Some(netrc.clone()),
        };
        let url = format!("http://127.0.0.1:{port}/private");
        let dir = tempfile::tempdir().unwrap();
        fetch_with(dir.path(), &[("url", &url)], &[], &with_netrc)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("staging").join(OUT)).unwrap(),
            b"secret"
        );

        let dir = tempfile::tempdir().unwrap();
        let err = fetch(dir.path(), &[("url", &url)], &[]).await.unwrap_err();
        assert_eq!(err, format!("unable to download '{url}': HTTP error 401"));
        // A login in the URL wins over the file's.
        let wrong = format!("http://bob:pw@127.0.0.1:{port}/private");
        let err = fetch_with(dir.path(), &[("url", &wrong)], &[], &with_netrc)
            .await
            .unwrap_err();
        assert!(err.ends_with("HTTP error 401"), "{err}");

        std::fs::write(&netrc, "machine 127.0.0.1\nuser alice\n").unwrap();
        let err = fetch_with(dir.path(), &[("url", &url)], &[], &with_netrc)
            .await
            .unwrap_err();
        assert!(err.contains("'netrc-file'"), "{err}");
        assert!(err.contains(&netrc.display().to_string()), "{err}");
        assert!(err.contains("line 2"), "{err}");

        let bad_ca = files.path().join("ca.pem");
        std::fs::write(&bad_ca, "no certificate here\n").unwrap();
        let with_bad_ca = crate::build::DownloadSettings {
            ca_file: Some(bad_ca.clone()),
            netrc_file: None,
        };
        let https = format!("https://127.0.0.1:{port}/hello");
        let err = fetch_with(dir.path(), &[("url", &https)], &[], &with_bad_ca)
            .await
            .unwrap_err();
        assert!(err.contains("(77)"), "{err}");
        assert!(err.contains("'ssl-cert-file'"), "{err}");
        assert!(err.contains(&bad_ca.display().to_string()), "{err}");
        // Plain HTTP needs no authority.
        let err = fetch_with(dir.path(), &[("url", &url)], &[], &with_bad_ca)
            .await
            .unwrap_err();
        assert!(err.ends_with("HTTP error 401"), "{err}");
    }

    #[tokio::test]
    async fn urls_are_tried_in_order() {
        let port = serve(vec![("/b", b"bee".to_vec())]);
        let dir = tempfile::tempdir().unwrap();
        let urls = format!("http://127.0.0.1:{port}/a http://127.0.0.1:{port}/b");
        fetch(dir.path(), &[("urls", &urls)], &[]).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("staging").join(OUT)).unwrap(),
            b"bee"
        );
    }

    #[tokio::test]
    async fn hashed_mirrors_come_first_for_flat_hashes() {
        let content = b"mirrored\n";
        let hash = Hash::digest(HashAlgo::Sha256, content);
        let hex = hash.encode(HashEncoding::Base16);
        let mirror_path: &'static str = Box::leak(format!("/m/sha256/{hex}").into_boxed_str());
        let port = serve(vec![(mirror_path, content.to_vec())]);
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{port}/nowhere");
        let nix32 = hash.encode(HashEncoding::Nix32);
        let mirrors = vec![
            format!("http://127.0.0.1:{port}/broken"),
            format!("http://127.0.0.1:{port}/m"),
        ];
        fetch(
            dir.path(),
            &[
                ("url", &url),
                ("outputHash", &nix32),
                ("outputHashAlgo", "sha256"),
                ("outputHashMode", "flat"),
            ],
            &mirrors,
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("staging").join(OUT)).unwrap(),
            content
        );

        // Recursive hashes skip the mirrors, so the main URL's 404 is the answer.
        let dir = tempfile::tempdir().unwrap();
        let err = fetch(
            dir.path(),
            &[
                ("url", &url),
                ("outputHash", &nix32),
                ("outputHashAlgo", "sha256"),
                ("outputHashMode", "recursive"),
            ],
            &mirrors,
        )
        .await
        .unwrap_err();
        assert!(err.ends_with("HTTP error 404"), "{err}");
    }

    #[tokio::test]
    async fn file_urls_and_unpacked_nars() {
        let src = tempfile::tempdir().unwrap();
        let plain = src.path().join("a file");
        std::fs::write(&plain, b"local").unwrap();
        // Outside the store directory: refused.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", plain.display()).replace(' ', "%20");
        let err = fetch(dir.path(), &[("url", &url)], &[]).await.unwrap_err();
        assert!(err.contains("only files in the store directory"), "{err}");
        let dir = src.path();
        let url = format!("file://{}", plain.display()).replace(' ', "%20");
        fetch(dir, &[("url", &url)], &[]).await.unwrap();
        assert_eq!(
            std::fs::read(dir.join("staging").join(OUT)).unwrap(),
            b"local"
        );

        let url = format!("file://{}/absent", src.path().display());
        let err = fetch(dir, &[("url", &url)], &[]).await.unwrap_err();
        assert_eq!(
            err,
            format!("unable to download '{url}': Couldn't read a file:// file (37)")
        );

        // A NAR of a directory with a file, an executable and a symlink.
        let mut nar = Vec::new();
        {
            let mut w = pkgchain_store_model::nar::NarWriter::new(&mut nar);
            for ev in [
                NarEvent::DirectoryStart { name: None },
                NarEvent::File {
                    name: Some(b"bin"),
                    executable: true,
                    size: 2,
                },
                NarEvent::FileChunk(b"#!"),
                NarEvent::FileEnd,
                NarEvent::Symlink {
                    name: Some(b"link"),
                    target: b"../../etc/passwd",
                },
                NarEvent::DirectoryEnd,
            ] {
                w.write_event(&ev).unwrap();
            }
            w.finish().unwrap();
        }
        let nar_path = src.path().join("t.nar.xz");
        let mut enc = liblzma::write::XzEncoder::new(std::fs::File::create(&nar_path).unwrap(), 6);
        enc.write_all(&nar).unwrap();
        enc.finish().unwrap();
        let url = format!("file://{}", nar_path.display());
        fetch(dir, &[("url", &url), ("unpack", "1")], &[])
            .await
            .unwrap();
        let out = dir.join("staging").join(OUT);
        assert_eq!(std::fs::read(out.join("bin")).unwrap(), b"#!");
        assert_eq!(
            std::fs::read_link(out.join("link")).unwrap(),
            Path::new("../../etc/passwd")
        );
        // Only the output is left in the staging directory.
        assert_eq!(std::fs::read_dir(dir.join("staging")).unwrap().count(), 1);

        // Garbage is not a NAR.
        let bad = src.path().join("bad.nar");
        std::fs::write(&bad, b"garbage").unwrap();
        let url = format!("file://{}", bad.display());
        let err = fetch(dir, &[("url", &url), ("unpack", "1")], &[])
            .await
            .unwrap_err();
        assert!(err.contains("unpacking the NAR"), "{err}");
    }
}
