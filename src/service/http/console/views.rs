//! Page rendering, as pure functions of read-model data (tested on their
//! HTML). Compile-time-checked templates (maud). No personal data reaches
//! these types: jobs, ledger entries, aggregates and redacted reject lines.

pub(crate) mod datasets;
pub(crate) mod jobs;
pub(crate) mod load;
pub(crate) mod login;

use maud::{DOCTYPE, Markup, html};

pub(crate) use crate::money::brl;

/// A number with Brazilian thousands dots.
pub(crate) fn count(n: i64) -> String {
    let grouped = crate::money::group_thousands(n.unsigned_abs());
    if n < 0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// Which page a layout is for (highlighted in the header).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    Datasets,
    Jobs,
    Other,
}

/// The shell of every signed-in page; `csrf` goes into the logout form.
pub(crate) fn layout(title: &str, page: Page, csrf: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · carga" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                header {
                    strong { "carga" }
                    a href="/console" class=[(page == Page::Datasets).then_some("here")] { "Datasets" }
                    a href="/console/jobs" class=[(page == Page::Jobs).then_some("here")] { "Jobs" }
                    form method="post" action="/console/logout" {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main { (body) }
                script src="/console/assets/console.js" defer {}
            }
        }
    }
}

/// A page for a request the console cannot answer now (the database is
/// away): what happened and what to do, without detail from the error.
pub(crate) fn unavailable(retry_after_s: u64) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(retry_after_s);
                title { "Unavailable · carga" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                main {
                    h1 { "The database is unavailable" }
                    p { "carga cannot reach its database right now, so this page cannot be shown. Nothing was changed." }
                    p.muted { "This page reloads itself in " (retry_after_s) " seconds. If it persists, check " code { "/ready" } " and the server's log." }
                }
            }
        }
    }
}
