//! Loopback services that speak a real provider's protocol.

use std::sync::Arc;

/// How the loopback Solr core misbehaves, if it does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SolrFault {
    None,
    /// numFound grows by one from the second page on.
    TotalChanges,
    /// The second request gets the first page again (labelled as asked).
    RepeatsAPage,
    /// The second request is refused: 429 with `Retry-After: 7`.
    RateLimited,
    /// Every request after the first is read and never answered.
    Stalls,
}

/// A loopback Solr core as SAGI's services answer (`../shared/SOURCES.md`
/// (a), (b)): `start`/`rows` from the query, the `response` envelope,
/// documents in the order given, at `path_and_query`. Records every
/// request's query.
pub async fn solr(
    path_and_query: &str,
    docs: Vec<serde_json::Value>,
    fault: SolrFault,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}{path_and_query}",
        listener.local_addr().expect("addr")
    );
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let docs = Arc::new(docs);
    tokio::spawn(async move {
        let mut served = 0usize;
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(&buf[..k]),
                }
            }
            let line = String::from_utf8_lossy(&request)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let query = line
                .split_whitespace()
                .nth(1)
                .and_then(|target| target.split_once('?'))
                .map(|(_, q)| q.to_string())
                .unwrap_or_default();
            log.lock().expect("log").push(query.clone());
            let param = |name: &str| {
                query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .filter(|(k, _)| *k == name)
                    .map(|(_, v)| v.parse::<usize>().unwrap_or(0))
                    .next_back()
                    .unwrap_or(0)
            };
            let (asked, rows) = (param("start"), param("rows"));
            // Serves the first page again while saying it is the one asked
            // for: only the documents' order can tell.
            let start = if fault == SolrFault::RepeatsAPage && served == 1 {
                0
            } else {
                asked
            };
            let mut found = docs.len();
            if fault == SolrFault::TotalChanges && served >= 1 {
                found += 1;
            }
            served += 1;
            if fault == SolrFault::Stalls && served >= 2 {
                // Held open, never answered, until the test ends.
                tokio::spawn(async move {
                    let _socket = socket;
                    std::future::pending::<()>().await;
                });
                continue;
            }
            if fault == SolrFault::RateLimited && served == 2 {
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                let _ = socket.shutdown().await;
                continue;
            }
            let page: Vec<serde_json::Value> =
                docs.iter().skip(start).take(rows).cloned().collect();
            let body = serde_json::json!({
                "responseHeader": {"status": 0, "QTime": 1},
                "response": {"numFound": found, "start": asked, "docs": page},
            })
            .to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (url, seen)
}
