//! A small static file server over loopback: whole files or one byte range,
//! with Content-Length, a strong ETag and `Accept-Ranges: bytes`. A value
//! that reports the port it bound (pass port 0) and stops when dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Clone)]
struct File {
    bytes: Bytes,
    etag: String,
}

/// A running file server; stops when dropped.
pub struct FileServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FileServer {
    /// Serves `files` (name → content) on 127.0.0.1:`port` (0 for any).
    pub async fn start(files: HashMap<String, Bytes>, port: u16) -> std::io::Result<FileServer> {
        let files: HashMap<String, File> = files
            .into_iter()
            .map(|(name, bytes)| {
                let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&bytes)[..12]));
                (name, File { bytes, etag })
            })
            .collect();
        let app = Router::new()
            .route("/{*path}", axum::routing::get(serve))
            .with_state(Arc::new(files));
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "file server stopped");
            }
        });
        Ok(FileServer { addr, task })
    }

    /// `http://127.0.0.1:PORT/name`
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}", self.addr, name)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn response(status: StatusCode, headers: &[(header::HeaderName, String)], body: Bytes) -> Response {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .unwrap_or_default()
}

async fn serve(
    State(files): State<Arc<HashMap<String, File>>>,
    Path(path): Path<String>,
    request_headers: HeaderMap,
) -> Response {
    let Some(file) = files.get(&path) else {
        return response(StatusCode::NOT_FOUND, &[], Bytes::from_static(b"not found"));
    };
    let total = file.bytes.len() as u64;
    let common = vec![
        (header::ETAG, file.etag.clone()),
        (header::ACCEPT_RANGES, "bytes".to_string()),
        (header::CONTENT_TYPE, "application/zip".to_string()),
    ];
    if request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == file.etag)
    {
        return response(StatusCode::NOT_MODIFIED, &common[..2], Bytes::new());
    }
    let if_range_ok = request_headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v == file.etag);
    // `bytes=START-` or `bytes=START-END` (one range; END clamped to the
    // file's last byte).
    let range = request_headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(start, end)| {
            let start = start.parse::<u64>().ok()?;
            let end = match end {
                "" => total.saturating_sub(1),
                e => e.parse::<u64>().ok()?.min(total.saturating_sub(1)),
            };
            (start <= end).then_some((start, end))
        });
    match range {
        Some((start, end)) if if_range_ok && start < total => {
            let mut headers = common;
            headers.push((
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{total}"),
            ));
            response(
                StatusCode::PARTIAL_CONTENT,
                &headers,
                file.bytes.slice(start as usize..=end as usize),
            )
        }
        _ => response(StatusCode::OK, &common, file.bytes.clone()),
    }
}
