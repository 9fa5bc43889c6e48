//! Loopback services that speak a real provider's protocol.

use std::sync::Arc;

use tokio::io::AsyncReadExt;

/// A request's head (request line and headers), read from `socket`.
pub async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => request.extend_from_slice(&buf[..k]),
        }
    }
    String::from_utf8_lossy(&request).into_owned()
}

/// The query of a request head's target (`start=0&rows=2`).
pub fn query_of(head: &str) -> String {
    head.split_whitespace()
        .nth(1)
        .and_then(|target| target.split_once('?'))
        .map(|(_, q)| q.to_string())
        .unwrap_or_default()
}

/// The last value of `name` in `query`, as a number (0 when absent).
pub fn param(query: &str, name: &str) -> usize {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.parse::<usize>().unwrap_or(0))
        .next_back()
        .unwrap_or(0)
}

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
    use tokio::io::AsyncWriteExt;
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
            let query = query_of(&read_head(&mut socket).await);
            log.lock().expect("log").push(query.clone());
            let (asked, rows) = (param(&query, "start"), param(&query, "rows"));
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

/// How the loopback ranged file server misbehaves, if it does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RangeFault {
    None,
    /// Earlier ranges are answered later and slower than later ones: they
    /// complete out of order, at different speeds.
    OutOfOrder,
    /// The first request for the range starting at this offset is cut after
    /// a few bytes (the connection closes mid-body).
    CutOnce(u64),
    /// After this many range requests the file is replaced (new bytes, new
    /// ETag).
    ReplacedAfter(usize),
    /// Answers every request 200 with the whole file (ignores `Range`).
    IgnoresRange,
    /// Serves this many range requests, then ignores `Range` (200).
    IgnoresRangeAfter(usize),
    /// The first request for the range starting at this offset is answered
    /// 503 with `Retry-After: 1`.
    BusyOnce(u64),
    /// The range starting at this offset is answered with a Content-Range
    /// one byte off.
    WrongContentRange(u64),
    /// Range answers send their headers and half their body, then hang
    /// until the client goes away.
    Hangs,
    /// The whole-file answer (no `Range`) is cut after 200 000 bytes.
    CutWhole,
}

/// A loopback file server with `Accept-Ranges: bytes`, a strong ETag,
/// `Range` and `If-Range`, one request per connection. Counts the
/// connections it holds open and the range requests it served.
pub struct RangeServer {
    pub url: String,
    pub open: Arc<std::sync::atomic::AtomicUsize>,
    pub ranges: Arc<std::sync::atomic::AtomicUsize>,
}

impl RangeServer {
    pub async fn start(file: Vec<u8>, fault: RangeFault) -> RangeServer {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/202412_NovoBolsaFamilia.zip",
            listener.local_addr().expect("addr")
        );
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ranges = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let original = Arc::new(file);
        let replaced: Arc<Vec<u8>> = Arc::new(original.iter().map(|b| b ^ 0x5a).collect());
        let (open_c, ranges_c) = (open.clone(), ranges.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                open_c.fetch_add(1, Ordering::SeqCst);
                let (open, ranges, cut) = (open_c.clone(), ranges_c.clone(), cut.clone());
                let (original, replaced) = (original.clone(), replaced.clone());
                tokio::spawn(async move {
                    let text = read_head(&mut socket).await.to_ascii_lowercase();
                    let header = |name: &str| {
                        text.lines()
                            .find_map(|l| l.strip_prefix(&format!("{name}:")))
                            .map(|v| v.trim().to_string())
                    };
                    let range = header("range").and_then(|r| {
                        let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
                        Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
                    });
                    let served = if range.is_some() {
                        ranges.fetch_add(1, Ordering::SeqCst) + 1
                    } else {
                        0
                    };
                    let new = matches!(fault, RangeFault::ReplacedAfter(n) if served > n);
                    let file = if new { &replaced } else { &original };
                    let etag = if new { "\"v2\"" } else { "\"v1\"" };
                    let if_range_ok = header("if-range").is_none_or(|v| v == etag);
                    let len = file.len() as u64;
                    let ignores = fault == RangeFault::IgnoresRange
                        || matches!(fault, RangeFault::IgnoresRangeAfter(n) if served > n);
                    if matches!(fault, RangeFault::BusyOnce(at) if range.is_some_and(|r| r.0 == at))
                        && !cut.swap(true, Ordering::SeqCst)
                    {
                        let _ = socket
                            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                        let _ = socket.shutdown().await;
                        open.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                    let (status, start, end) = match range {
                        Some((a, b)) if !ignores && if_range_ok => {
                            ("206 Partial Content", a, b.min(len - 1))
                        }
                        _ => ("200 OK", 0, len - 1),
                    };
                    let shown_start = match fault {
                        RangeFault::WrongContentRange(at) if at == start && range.is_some() => {
                            start + 1
                        }
                        _ => start,
                    };
                    let mut head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
                        end - start + 1
                    );
                    if status.starts_with("206") {
                        head.push_str(&format!(
                            "Content-Range: bytes {shown_start}-{end}/{len}\r\n"
                        ));
                    }
                    head.push_str("\r\n");
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        open.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                    let body = &file[start as usize..=end as usize];
                    if fault == RangeFault::OutOfOrder && range.is_some() {
                        // The earlier the range, the later and slower it comes.
                        let delay = 40u64.saturating_sub(start / 65_536 * 5);
                        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                    }
                    let cut_here = matches!(fault, RangeFault::CutOnce(at) if at == start && range.is_some())
                        && !cut.swap(true, Ordering::SeqCst);
                    let hang = fault == RangeFault::Hangs && range.is_some();
                    let sent = if fault == RangeFault::CutWhole && range.is_none() {
                        body.len().min(200_000)
                    } else if cut_here {
                        body.len().min(100)
                    } else if hang {
                        body.len() / 2
                    } else {
                        body.len()
                    };
                    let _ = socket.write_all(&body[..sent]).await;
                    if hang {
                        // Until the client closes its end.
                        let mut sink = [0u8; 64];
                        while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                    }
                    let _ = socket.shutdown().await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        RangeServer { url, open, ranges }
    }
}
