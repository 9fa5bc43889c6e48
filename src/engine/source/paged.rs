//! Paged JSON services as a byte stream: a Solr core (`start`/`rows`, the
//! `{"response":{"numFound":N,"start":S,"docs":[…]}}` envelope) or an
//! OData service (`$skip`/`$top`, `{"value":[…]}`, ending at an empty page;
//! or, when the service pages itself, following `@odata.nextLink` on the
//! query's own server until a page has none, a link seen twice failing)
//! read page by page, each page's documents written as CSV rows (a header
//! of the spec's field names first). The rest of the pipeline sees a plain CSV
//! file: the same parser, types, rejects, digests and publish, with memory
//! bounded by one page.
//!
//! Every page goes through [`super::open_guarded`] (timeouts, retries, the
//! allow-list and redirect checks, `Retry-After`). The result must hold
//! still while it is read: a `numFound` that changes between pages, a page
//! that is empty before `numFound` documents arrived, a page larger than
//! asked for, or documents that do not follow each other in the key's
//! order (a page served twice) fail the stream, and with it the load: the
//! period is never published from half or doubled pages.

use std::io;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;

use super::{OpenOutcome, Opened, Origin, RedirectGuard, SourceError, SourceMeta, redact_source};
use crate::config::HttpSettings;

/// Which paged protocol a service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Solr: `start`/`rows`, `{"response":{"numFound":N,"start":S,"docs":[…]}}`.
    Solr,
    /// OData: `$skip`/`$top`, `{"value":[…]}` (with `@odata.count` when the
    /// service gives one); the result ends at a page shorter than asked.
    Odata,
}

/// The most documents a paged result may have: beyond it the pagination
/// does not end (a service that ignores the offset and keeps answering).
const MAX_DOCUMENTS: u64 = 20_000_000;

/// How to page a service for one dataset.
#[derive(Debug, Clone)]
pub(crate) struct SolrPaging {
    pub(crate) dialect: Dialect,
    /// Documents per page (`rows`).
    pub(crate) rows: u64,
    /// The fields written as CSV columns, in order (the spec's headers).
    pub(crate) fields: Vec<String>,
    /// The field the query sorts by (ascending): consecutive documents
    /// must not go back in it, across pages too.
    pub(crate) key: String,
    /// The largest page body read, in bytes.
    pub(crate) max_page_bytes: u64,
}

/// The largest page (or SIDRA answer) read, whatever the download limit:
/// a page is held whole while it is turned into rows.
pub(crate) const MAX_PAGE_BYTES: u64 = 64 << 20;

/// What a page said.
struct Page {
    /// The result's size, when the service says it (Solr always).
    found: Option<u64>,
    docs: Vec<serde_json::Map<String, Value>>,
    /// OData's `@odata.nextLink`: the service pages itself; follow it.
    next: Option<String>,
}

/// The most pages one result may take when a service links them itself.
const MAX_LINKED_PAGES: u64 = 100_000;

fn page_url(location: &str, dialect: Dialect, start: u64, rows: u64) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    match dialect {
        Dialect::Solr => format!("{location}{separator}start={start}&rows={rows}"),
        Dialect::Odata => format!("{location}{separator}$skip={start}&$top={rows}"),
    }
}

fn protocol_error(redacted: &str, message: String) -> SourceError {
    SourceError::Protocol {
        url: redacted.to_string(),
        message,
    }
}

/// Fetches and parses one page.
async fn fetch(
    location: &str,
    redacted: &str,
    settings: &HttpSettings,
    guard: Option<RedirectGuard>,
    start: u64,
    paging: &SolrPaging,
    next: Option<&str>,
) -> Result<Page, SourceError> {
    let url = next.map_or_else(
        || page_url(location, paging.dialect, start, paging.rows),
        str::to_string,
    );
    let opened = match super::open_guarded(&url, settings, None, guard).await? {
        OpenOutcome::Body(opened) => opened,
        OpenOutcome::NotModified(_) => {
            return Err(protocol_error(
                redacted,
                "304 to an unconditional request".into(),
            ));
        }
    };
    let bytes = read_whole(opened.body, redacted, paging.max_page_bytes).await?;
    let at = format!("the page at start={start}");
    let json: Value = serde_json::from_slice(&bytes)
        .map_err(|e| protocol_error(redacted, format!("{at} is not JSON: {e}")))?;
    let mut json = json;
    let mut next = None;
    let (found, docs) = match paging.dialect {
        Dialect::Solr => {
            let response = json.get("response").ok_or_else(|| {
                protocol_error(redacted, format!("{at} has no \"response\" object"))
            })?;
            let found = response
                .get("numFound")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    protocol_error(redacted, format!("{at} has no response.numFound"))
                })?;
            if let Some(served) = response.get("start").and_then(Value::as_u64) {
                if served != start {
                    return Err(protocol_error(
                        redacted,
                        format!("{at} says it starts at {served}"),
                    ));
                }
            }
            let docs = json
                .get_mut("response")
                .and_then(|r| r.get_mut("docs"))
                .map(Value::take);
            (Some(found), docs)
        }
        Dialect::Odata => {
            let found = json.get("@odata.count").and_then(Value::as_u64);
            next = match json.get("@odata.nextLink") {
                None | Some(Value::Null) => None,
                Some(Value::String(link)) => Some(link.clone()),
                Some(_) => {
                    return Err(protocol_error(
                        redacted,
                        format!("{at} has an @odata.nextLink that is not a string"),
                    ));
                }
            };
            (found, json.get_mut("value").map(Value::take))
        }
    };
    let Some(Value::Array(docs)) = docs else {
        let field = match paging.dialect {
            Dialect::Solr => "response.docs",
            Dialect::Odata => "value",
        };
        return Err(protocol_error(
            redacted,
            format!("{at} has no {field} array"),
        ));
    };
    let docs = docs
        .into_iter()
        .map(|d| match d {
            Value::Object(map) => Ok(map),
            _ => Err(protocol_error(
                redacted,
                format!("{at} has a document that is not an object"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page { found, docs, next })
}

/// A value as CSV field text: strings as they are, numbers as JSON writes
/// them, absent or null as empty; anything else as its JSON (which no
/// column type accepts: a reject naming the column).
fn field_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn csv_line(out: &mut Vec<u8>, fields: impl Iterator<Item = String>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    }
    out.push(b'\n');
}

/// Whether `key` repeats `last` or comes before it in both a numeric and
/// a text order (see the check in [`State::rows`]).
fn goes_back(last: &str, key: &str) -> bool {
    let as_text = last >= key;
    match (last.parse::<u64>(), key.parse::<u64>()) {
        (Ok(a), Ok(b)) => a == b || (a > b && as_text),
        _ => as_text,
    }
}

/// Where the pager is.
struct State {
    location: String,
    redacted: String,
    settings: HttpSettings,
    guard: Option<RedirectGuard>,
    paging: SolrPaging,
    /// The result's size from the first page, when the service says it.
    found: Option<u64>,
    /// Documents read so far.
    read: u64,
    /// The key of the last document read, to check the order.
    last_key: Option<String>,
    /// The first page, already fetched (to learn `numFound` before the
    /// stream starts).
    first: Option<Page>,
    /// The next page's URL, when the service links its pages.
    next: Option<String>,
    /// Every link followed: one seen twice is a loop.
    links: std::collections::HashSet<String>,
    done: bool,
}

impl State {
    /// Takes `link` (absolute, or relative to the query) as the next
    /// page's URL: on the query's own scheme, host and port, never one
    /// followed before (a loop), and not beyond [`MAX_LINKED_PAGES`].
    fn follow(&mut self, link: &str, start: u64) -> Result<(), SourceError> {
        let refuse = |why: String| protocol_error(&self.redacted, why);
        let base = url::Url::parse(&self.location)
            .map_err(|e| refuse(format!("the query is not a URL: {e}")))?;
        let next = base.join(link).map_err(|_| {
            refuse(format!(
                "the page at start={start} links to something that is not a URL"
            ))
        })?;
        let origin = |u: &url::Url| {
            (
                u.scheme().to_string(),
                u.host_str().map(str::to_string),
                u.port_or_known_default(),
            )
        };
        if origin(&next) != origin(&base) {
            return Err(refuse(format!(
                "the page at start={start} links to another server ({}); pages are read from the query's own",
                redact_source(next.as_str())
            )));
        }
        let next = next.to_string();
        if !self.links.insert(next.clone()) {
            return Err(refuse(format!(
                "the page at start={start} links to a page already read: the pagination does not end"
            )));
        }
        if self.links.len() as u64 > MAX_LINKED_PAGES {
            return Err(refuse(format!(
                "more than {MAX_LINKED_PAGES} linked pages: the pagination does not end"
            )));
        }
        self.next = Some(next);
        Ok(())
    }

    /// The CSV rows of one page, after its checks.
    fn rows(&mut self, page: Page, start: u64) -> Result<Bytes, SourceError> {
        let redacted = self.redacted.clone();
        if let (Some(first), Some(now)) = (self.found, page.found) {
            if first != now {
                return Err(protocol_error(
                    &redacted,
                    format!(
                        "numFound changed from {first} to {now} at start={start}: the result changed while it was read"
                    ),
                ));
            }
        }
        let link = page.next.clone();
        if let Some(link) = &link {
            self.follow(link, start)?;
        }
        if page.docs.is_empty() {
            if link.is_some() {
                return Err(protocol_error(
                    &redacted,
                    format!("the page at start={start} is empty but links to another"),
                ));
            }
            return match (self.paging.dialect, self.found) {
                // OData without links or a count: an empty page is the end.
                (Dialect::Odata, None) => {
                    self.done = true;
                    Ok(Bytes::new())
                }
                (_, found) => Err(protocol_error(
                    &redacted,
                    format!(
                        "the page at start={start} is empty, but the result has {} documents: pagination ended early",
                        found.unwrap_or(0)
                    ),
                )),
            };
        }
        if page.docs.len() as u64 > self.paging.rows {
            return Err(protocol_error(
                &redacted,
                format!(
                    "the page at start={start} holds {} documents, more than the {} asked for",
                    page.docs.len(),
                    self.paging.rows
                ),
            ));
        }
        // When the service links its pages, OData ends at the first page
        // without a link. Otherwise at an empty page: a page shorter than
        // asked may be the service's own cap on `$top`, not the end, so one
        // more page is asked for (the documents already read, skipped).
        if self.paging.dialect == Dialect::Odata && link.is_none() && !self.links.is_empty() {
            self.done = true;
        }
        // A field the spec reads that no document of the first page has
        // was renamed or left out of `fl`: a month of NULLs would follow.
        if start == 0 {
            if let Some(missing) = self
                .paging
                .fields
                .iter()
                .find(|f| page.docs.iter().all(|d| !d.contains_key(f.as_str())))
            {
                return Err(protocol_error(
                    &redacted,
                    format!(
                        "no document of the first page has the field {missing:?} (renamed, or missing from fl?)"
                    ),
                ));
            }
        }
        let mut out = Vec::with_capacity(page.docs.len() * 64);
        for doc in &page.docs {
            let key = field_text(doc.get(&self.paging.key));
            if let Some(last) = &self.last_key {
                // The service sorts a numeric field by value and a text one
                // as text, and which the key is may not be known: a key
                // repeats, or goes back in both orders. (One ascending
                // in the other order, "10000" after "9999" sorted as text,
                // passes; a page served twice then repeats its keys, which
                // the load refuses as a repeated row.)
                if goes_back(last, &key) {
                    return Err(protocol_error(
                        &redacted,
                        format!(
                            "document {} (start={start}) repeats or goes back in {}: {key:?} after {last:?} (a page served twice, or an unsorted query)",
                            self.read + 1,
                            self.paging.key
                        ),
                    ));
                }
            }
            self.last_key = Some(key);
            csv_line(
                &mut out,
                self.paging.fields.iter().map(|f| field_text(doc.get(f))),
            );
            self.read += 1;
        }
        if let Some(found) = self.found.filter(|f| self.read > *f) {
            return Err(protocol_error(
                &redacted,
                format!(
                    "{} documents read, more than the result's {found}",
                    self.read
                ),
            ));
        }
        if self.read > MAX_DOCUMENTS {
            return Err(protocol_error(
                &redacted,
                format!("more than {MAX_DOCUMENTS} documents: the pagination does not end"),
            ));
        }
        Ok(Bytes::from(out))
    }
}

/// Opens a paged query (Solr or OData) as a CSV byte stream (see the
/// module's doc). The first page is fetched here, so an HTTP failure is
/// the open's, as for a file; the others as the stream is read.
pub(crate) async fn open_paged(
    location: &str,
    settings: &HttpSettings,
    guard: Option<RedirectGuard>,
    paging: SolrPaging,
) -> Result<OpenOutcome, SourceError> {
    let redacted = redact_source(location);
    let first = fetch(
        location,
        &redacted,
        settings,
        guard.clone(),
        0,
        &paging,
        None,
    )
    .await?;
    if first.found == Some(0) || first.docs.is_empty() {
        return Err(SourceError::NoDocuments { url: redacted });
    }
    let mut header = Vec::new();
    csv_line(&mut header, paging.fields.iter().cloned());
    let state = State {
        location: location.to_string(),
        redacted: redacted.clone(),
        settings: settings.clone(),
        guard,
        paging,
        found: first.found,
        read: 0,
        last_key: None,
        first: Some(first),
        next: None,
        links: std::collections::HashSet::new(),
        done: false,
    };
    let pages = futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let start = state.read;
        let next = state.next.take();
        let page = match state.first.take() {
            Some(first) => Ok(first),
            None if next.is_none() && state.found.is_some_and(|f| start >= f) => return None,
            None => {
                fetch(
                    &state.location,
                    &state.redacted,
                    &state.settings,
                    state.guard.clone(),
                    start,
                    &state.paging,
                    next.as_deref(),
                )
                .await
            }
        };
        let chunk = page.and_then(|page| state.rows(page, start));
        if chunk.is_err() {
            state.done = true;
        }
        Some((chunk.map_err(io::Error::other), state))
    });
    let body: BoxStream<'static, io::Result<Bytes>> =
        futures::stream::once(async move { Ok(Bytes::from(header)) })
            .chain(pages)
            .boxed();
    Ok(OpenOutcome::Body(Opened {
        meta: SourceMeta {
            url: redacted,
            file_name: "paged query (as CSV)".into(),
            content_length: None,
            ..SourceMeta::default()
        },
        origin: Origin::File,
        body,
        accept_ranges: false,
        fetched: None,
    }))
}

/// Opens an IBGE SIDRA values query (`../shared/SOURCES.md` (c)): one JSON
/// array whose first element is a header row naming the columns and whose
/// others are the rows, every value a string. Read whole (the answer is
/// not paged; bounded by `max_bytes`) and handed on as CSV, a header of
/// `fields` first. An array with no row after the header is "not published
/// yet".
pub(crate) async fn open_sidra(
    location: &str,
    settings: &HttpSettings,
    guard: Option<RedirectGuard>,
    fields: Vec<String>,
    max_bytes: u64,
) -> Result<OpenOutcome, SourceError> {
    let redacted = redact_source(location);
    let opened = match super::open_guarded(location, settings, None, guard).await? {
        OpenOutcome::Body(opened) => opened,
        OpenOutcome::NotModified(_) => {
            return Err(protocol_error(
                &redacted,
                "304 to an unconditional request".into(),
            ));
        }
    };
    let bytes = read_whole(opened.body, &redacted, max_bytes).await?;
    let json: Value = serde_json::from_slice(&bytes)
        .map_err(|e| protocol_error(&redacted, format!("the answer is not JSON: {e}")))?;
    let Value::Array(rows) = json else {
        return Err(protocol_error(
            &redacted,
            "the answer is not a JSON array".into(),
        ));
    };
    let mut rows = rows.into_iter();
    match rows.next() {
        Some(Value::Object(header)) => {
            if let Some(missing) = fields.iter().find(|f| !header.contains_key(f.as_str())) {
                return Err(protocol_error(
                    &redacted,
                    format!("the answer's header row has no column {missing:?}"),
                ));
            }
        }
        _ => {
            return Err(protocol_error(
                &redacted,
                "the answer's first element is not a header row".into(),
            ));
        }
    }
    let mut out = Vec::new();
    csv_line(&mut out, fields.iter().cloned());
    let mut count = 0u64;
    for (i, row) in rows.enumerate() {
        let Value::Object(row) = row else {
            return Err(protocol_error(
                &redacted,
                format!("element {} of the answer is not an object", i + 1),
            ));
        };
        csv_line(&mut out, fields.iter().map(|f| field_text(row.get(f))));
        count += 1;
    }
    if count == 0 {
        return Err(SourceError::NoDocuments { url: redacted });
    }
    let body: BoxStream<'static, io::Result<Bytes>> =
        futures::stream::once(async move { Ok(Bytes::from(out)) }).boxed();
    Ok(OpenOutcome::Body(Opened {
        meta: SourceMeta {
            url: redacted,
            file_name: "sidra values (as CSV)".into(),
            content_length: None,
            ..SourceMeta::default()
        },
        origin: Origin::File,
        body,
        accept_ranges: false,
        fetched: None,
    }))
}

/// One JSON document (a GeoJSON FeatureCollection, say) fetched through
/// the guarded open and read whole, at most `max_bytes`.
pub(crate) async fn get_json(
    location: &str,
    settings: &HttpSettings,
    guard: Option<RedirectGuard>,
    max_bytes: u64,
) -> Result<Value, SourceError> {
    let redacted = redact_source(location);
    let opened = match super::open_guarded(location, settings, None, guard).await? {
        OpenOutcome::Body(opened) => opened,
        OpenOutcome::NotModified(_) => {
            return Err(protocol_error(
                &redacted,
                "304 to an unconditional request".into(),
            ));
        }
    };
    let bytes = read_whole(opened.body, &redacted, max_bytes).await?;
    // Tens of megabytes of JSON: parsed off the runtime's threads.
    let parsed = tokio::task::spawn_blocking(move || serde_json::from_slice::<Value>(&bytes))
        .await
        .map_err(|e| protocol_error(&redacted, format!("the JSON parser stopped: {e}")))?;
    parsed.map_err(|e| protocol_error(&redacted, format!("the answer is not JSON: {e}")))
}

/// A response body read whole, refusing one above `max_bytes`.
async fn read_whole(
    mut body: BoxStream<'static, io::Result<Bytes>>,
    redacted: &str,
    max_bytes: u64,
) -> Result<Vec<u8>, SourceError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| SourceError::Body {
            url: redacted.to_string(),
            bytes: bytes.len() as u64,
            message: e.to_string(),
        })?;
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > max_bytes {
            return Err(SourceError::TooLarge {
                url: redacted.to_string(),
                limit: max_bytes,
            });
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::goes_back;

    #[test]
    fn keys_go_back_only_when_no_order_explains_them() {
        // Sorted as numbers, or as text: both pass.
        assert!(!goes_back("9999", "10000"));
        assert!(!goes_back("10000", "9999"));
        assert!(!goes_back("1001", "1002"));
        assert!(!goes_back("abc", "abd"));
        // A repeat, or back in both orders: a page served twice.
        assert!(goes_back("1002", "1002"));
        assert!(goes_back("1002", "1001"));
        assert!(goes_back("abd", "abc"));
        assert!(goes_back("", ""));
    }
}
