//! The store served as a Nix HTTP binary cache (`pkgchain serve-cache`): `nix-cache-info`,
//! `<hash>.narinfo` signed with the keys of `secret-key-files`, and `nar/<hash>.nar.zst`, each
//! NAR rebuilt from blocks and compressed with zstd as it is sent (a narinfo therefore has no
//! `FileHash`/`FileSize`, which Nix does not need).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use pkgchain_store::Store;
use pkgchain_store_model::narinfo::NarInfo;
use pkgchain_store_model::signature::SecretKey;
use pkgchain_store_model::store_path::HASH_PART_LEN;
use tokio::net::TcpListener;
use tracing::{Instrument, info, info_span, warn};

use crate::channel_writer::ChannelWriter;

/// What a served cache says in `nix-cache-info`.
const PRIORITY: u32 = 40;
/// zstd level of the NARs (fast; Nix's own default for zstd is 3 too).
const ZSTD_LEVEL: i32 = 3;

type Body = BoxBody<Bytes, std::io::Error>;

/// The cache's state: the store and the signing keys.
struct Served {
    store: Store,
    keys: Vec<SecretKey>,
}

/// Serves `store` on `listener` until the process ends, signing narinfos with `keys`.
pub async fn serve(
    store: Store,
    listener: TcpListener,
    keys: Vec<SecretKey>,
) -> std::io::Result<()> {
    let served = Arc::new(Served { store, keys });
    loop {
        let (stream, peer) = listener.accept().await?;
        let served = served.clone();
        tokio::spawn(
            async move {
                let service = hyper::service::service_fn(move |req| {
                    let served = served.clone();
                    async move { Ok::<_, Infallible>(answer(&served, req).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await
                {
                    warn!(error = %e, "cache connection ended with an error");
                }
            }
            .instrument(info_span!("cache_client", %peer)),
        );
    }
}

/// One request.
async fn answer(served: &Served, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    }
    let path = req.uri().path().trim_start_matches('/').to_owned();
    let response = if path == "nix-cache-info" {
        let text = format!(
            "StoreDir: {}\nWantMassQuery: 1\nPriority: {PRIORITY}\n",
            served.store.store_dir().as_str()
        );
        plain(StatusCode::OK, text)
    } else if let Some(hash) = path.strip_suffix(".narinfo") {
        narinfo(served, hash).await
    } else if let Some(hash) = path
        .strip_prefix("nar/")
        .and_then(|rest| rest.strip_suffix(".nar.zst"))
    {
        nar(served, hash).await
    } else {
        plain(StatusCode::NOT_FOUND, "no such file\n".into())
    };
    info!(path, status = response.status().as_u16(), "cache request");
    if head {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, empty());
    }
    response
}

/// `<hash>.narinfo`.
async fn narinfo(served: &Served, hash: &str) -> Response<Body> {
    let Some(path) = valid_hash_part(served, hash).await else {
        return plain(StatusCode::NOT_FOUND, "no such path\n".into());
    };
    let store = &served.store;
    let info = match store.query_path_info(&path).await {
        Ok(Some(info)) => info,
        Ok(None) => return plain(StatusCode::NOT_FOUND, "no such path\n".into()),
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let valid = match info.to_valid_path_info(store.store_dir()) {
        Ok(v) => v,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let mut narinfo =
        NarInfo::describing(&valid, format!("nar/{}.nar.zst", path.hash_part()), "zstd");
    for key in &served.keys {
        if let Err(e) = narinfo.sign(key) {
            return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("signing: {e}\n"));
        }
    }
    let mut response = plain(StatusCode::OK, narinfo.to_text());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/x-nix-narinfo"),
    );
    response
}

/// `nar/<hash>.nar.zst`: the NAR, compressed as it streams out.
async fn nar(served: &Served, hash: &str) -> Response<Body> {
    let Some(path) = valid_hash_part(served, hash).await else {
        return plain(StatusCode::NOT_FOUND, "no such path\n".into());
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let store = served.store.clone();
    let sink = ChannelWriter(tx.clone(), |buf| Ok(Bytes::copy_from_slice(buf)));
    tokio::spawn(async move {
        let encoder = match zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL) {
            Ok(e) => e.auto_finish(),
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if let Err(e) = store.dump(&path, encoder).await {
            // The client sees the body end early: the NAR hash check fails there.
            warn!(path = %path, error = %e, "serving a NAR failed");
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk.map(Frame::data), rx))
    });
    let body = StreamBody::new(frames);
    let mut response = Response::new(BodyExt::boxed(body));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-nix-nar"),
    );
    response
}

/// The valid path of a requested hash part (`None` for anything else).
async fn valid_hash_part(
    served: &Served,
    hash: &str,
) -> Option<pkgchain_store_model::store_path::StorePath> {
    if hash.len() != HASH_PART_LEN {
        return None;
    }
    served
        .store
        .query_path_from_hash_part(hash)
        .await
        .ok()
        .flatten()
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never: Infallible| match never {})
        .boxed()
}
