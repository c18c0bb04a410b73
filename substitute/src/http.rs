//! The HTTP client of the caches: HTTPS trusting the certificates of Nix's `ssl-cert-file`, and
//! the login of Nix's `netrc-file` sent to the hosts it names (the file is read again when it
//! changes, as curl reads it for every transfer of nix-daemon).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::netrc::{MAX_NETRC_BYTES, Netrc};
use crate::{SubstituteError, SubstituterSettings};

/// The largest `ssl-cert-file` read (Debian's bundle of every CA is about 220 KiB).
const MAX_CA_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One HTTP client for all the caches of a set of settings.
#[derive(Debug)]
pub struct Http {
    /// The client, or why there is none (an unusable `ssl-cert-file`: every request fails
    /// with it, so the caches are skipped with a warning, as curl fails each of nix-daemon's
    /// transfers, and builds go on).
    client: Result<reqwest::Client, SubstituteError>,
    netrc: Option<NetrcFile>,
}

/// `netrc-file`, with what it said when last read.
#[derive(Debug)]
struct NetrcFile {
    path: PathBuf,
    last: Mutex<Option<(Stamp, Option<Arc<Netrc>>)>>,
}

/// What tells that a file changed: its size, modification time and inode.
type Stamp = (u64, Option<SystemTime>, u64);

impl Http {
    /// The client for `settings`: at most `connections` idle connections kept per host.
    pub fn new(settings: &SubstituterSettings, connections: usize) -> Http {
        let netrc = settings.netrc_file.as_ref().map(|path| NetrcFile {
            path: path.clone(),
            last: Mutex::new(None),
        });
        Http {
            client: client(settings, connections),
            netrc,
        }
    }

    /// A GET of `url`, with the login `netrc-file` gives its host (unless the URL has one).
    pub fn get(&self, url: reqwest::Url) -> Result<reqwest::RequestBuilder, SubstituteError> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let login = match (&self.netrc, url.host_str()) {
            (Some(netrc), Some(host)) if url.username().is_empty() => netrc.read()?.and_then(|n| {
                n.credentials(host)
                    .map(|(user, password)| (user.to_owned(), password.map(str::to_owned)))
            }),
            _ => None,
        };
        let request = client.get(url);
        Ok(match login {
            Some((user, password)) => request.basic_auth(user, password),
            None => request,
        })
    }
}

/// The HTTP client of `settings`.
fn client(
    settings: &SubstituterSettings,
    connections: usize,
) -> Result<reqwest::Client, SubstituteError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(settings.stalled_timeout)
        .pool_max_idle_per_host(connections)
        .user_agent(concat!("pkgchain/", env!("CARGO_PKG_VERSION")))
        .no_proxy();
    if let Some(path) = &settings.ca_file {
        // Only these authorities, as curl trusts only its CAINFO.
        builder = builder.tls_built_in_root_certs(false);
        for cert in trusted_certificates(path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| SubstituteError::CacheUnusable(format!("no HTTP client: {e}")))
}

impl NetrcFile {
    /// The file's entries (`None` when there is no such file, which is no error: Nix's
    /// default `/etc/nix/netrc` rarely exists).
    fn read(&self) -> Result<Option<Arc<Netrc>>, SubstituteError> {
        let bad = |why: String| SubstituteError::Setting {
            name: "netrc-file",
            value: self.path.display().to_string(),
            why,
        };
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(e.to_string())),
        };
        let stamp: Stamp = (
            meta.len(),
            meta.modified().ok(),
            std::os::unix::fs::MetadataExt::ino(&meta),
        );
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, netrc)) = last.as_ref()
            && *seen == stamp
        {
            return Ok(netrc.clone());
        }
        let netrc = parse_netrc(&self.path)?;
        let netrc = Some(Arc::new(netrc));
        *last = Some((stamp, netrc.clone()));
        Ok(netrc)
    }
}

/// The entries of a netrc file (`netrc-file`), or `None` when there is no such file (which is
/// no error: Nix's default `/etc/nix/netrc` rarely exists). Read up to
/// [`MAX_NETRC_BYTES`](crate::netrc::MAX_NETRC_BYTES); errors name the setting, the file and
/// the line.
pub fn read_netrc(path: &Path) -> Result<Option<Netrc>, SubstituteError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => parse_netrc(path).map(Some),
    }
}

/// Reads and parses the netrc file at `path`.
fn parse_netrc(path: &Path) -> Result<Netrc, SubstituteError> {
    let bad = |why: String| SubstituteError::Setting {
        name: "netrc-file",
        value: path.display().to_string(),
        why,
    };
    let text = read_bounded(path, MAX_NETRC_BYTES as u64).map_err(bad)?;
    let text = String::from_utf8(text).map_err(|_| bad("not UTF-8 text".to_owned()))?;
    Netrc::parse(&text).map_err(|e| bad(e.to_string()))
}

/// The certificates of a PEM bundle (`ssl-cert-file`): the only authorities to trust, as curl
/// trusts only its CAINFO. Read up to 16 MiB; errors name the setting, the file and why.
pub fn trusted_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, SubstituteError> {
    let bad = |why: String| SubstituteError::Setting {
        name: "ssl-cert-file",
        value: path.display().to_string(),
        why,
    };
    let bytes = read_bounded(path, MAX_CA_FILE_BYTES).map_err(bad)?;
    let certs = reqwest::Certificate::from_pem_bundle(&bytes).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".to_owned()));
    }
    Ok(certs)
}

/// A file's bytes, refused when longer than `limit`.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ca_file: Option<PathBuf>, netrc_file: Option<PathBuf>) -> SubstituterSettings {
        SubstituterSettings {
            ca_file,
            netrc_file,
            ..SubstituterSettings::default()
        }
    }

    /// The bundle every Debian and NixOS machine has (Nix's default `ssl-cert-file`) makes a
    /// client: no certificate of it is refused.
    #[test]
    fn the_systems_ca_bundle_makes_a_client() {
        let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if !bundle.exists() {
            eprintln!("skipped: no {} on this machine", bundle.display());
            return;
        }
        let certs = trusted_certificates(bundle).expect("bundle");
        assert!(certs.len() > 50, "{} certificates", certs.len());
        let http = Http::new(&settings(Some(bundle.to_owned()), None), 4);
        let request = http
            .get(reqwest::Url::parse("https://cache.nixos.org/").expect("url"))
            .expect("a request")
            .build()
            .expect("a request");
        assert_eq!(request.url().as_str(), "https://cache.nixos.org/");
    }

    /// An unusable `ssl-cert-file` fails each request (so each cache is skipped with a
    /// warning, as with nix-daemon), naming the setting, the file and why; so does a
    /// malformed `netrc-file`, whose logins are sent to the hosts they name.
    #[test]
    fn unusable_settings_are_errors_naming_the_setting_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let missing = dir.path().join("missing.pem");
        // Over the 16 MiB bound: refused before it is parsed.
        let huge = dir.path().join("huge.pem");
        let file = std::fs::File::create(&huge).expect("create");
        file.set_len(MAX_CA_FILE_BYTES + 1).expect("grow");
        let e = trusted_certificates(&huge)
            .expect_err("too large")
            .to_string();
        assert!(e.contains("'ssl-cert-file'"), "{e}");
        assert!(e.contains("larger than 16777216 bytes"), "{e}");
        let url = reqwest::Url::parse("https://cache.example.org/nix-cache-info").expect("url");
        for (path, why) in [(&empty, "no PEM certificate"), (&missing, "No such file")] {
            let e = Http::new(&settings(Some(path.clone()), None), 4)
                .get(url.clone())
                .expect_err("refused")
                .to_string();
            assert!(e.contains("'ssl-cert-file'"), "{e}");
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(why), "{e}");
        }

        let netrc = dir.path().join("netrc");
        let http = Http::new(&settings(None, Some(netrc.clone())), 4);
        // No file: no login, no error.
        let request = http
            .get(url.clone())
            .expect("no file")
            .build()
            .expect("request");
        assert!(request.headers().get("authorization").is_none());
        // The file appears: its login is sent.
        std::fs::write(
            &netrc,
            "machine cache.example.org login alice password s3cret\n",
        )
        .expect("write");
        let request = http
            .get(url.clone())
            .expect("login")
            .build()
            .expect("request");
        let auth = request.headers().get("authorization").expect("auth");
        // base64("alice:s3cret")
        assert_eq!(auth, "Basic YWxpY2U6czNjcmV0");
        // Another host gets nothing; a login in the URL is kept.
        let other = reqwest::Url::parse("http://other.example.org/x").expect("url");
        let request = http.get(other).expect("other").build().expect("request");
        assert!(request.headers().get("authorization").is_none());
        let own = reqwest::Url::parse("http://bob:pw@cache.example.org/x").expect("url");
        let request = http.get(own).expect("own").build().expect("request");
        assert_eq!(
            request.headers().get("authorization").expect("auth"),
            "Basic Ym9iOnB3"
        );
        // The file changes to something malformed: an error naming it and the line.
        std::fs::write(&netrc, "machine cache.example.org\nuser alice\n").expect("write");
        let e = http.get(url).expect_err("malformed").to_string();
        assert!(e.contains("'netrc-file'"), "{e}");
        assert!(e.contains("line 2: unknown keyword 'user'"), "{e}");
    }
}
