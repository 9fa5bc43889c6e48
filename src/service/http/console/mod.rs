//! The operator console, server-rendered from the binary: datasets with
//! their month grid and trends, jobs with live progress, one load's ledger
//! entry. It reads through the same read models as the JSON API
//! (`freshness`, `queue`, `load::ledger`) and changes things only through
//! `queue/`. Signing in takes the operator token once, through a form, and
//! sets a random session cookie (`cookies.rs`) whose session lives in the
//! database (`crate::service::sessions`: signing out or rotating the token ends it
//! on every process); every state-changing form carries the session's CSRF
//! token. Works without JavaScript except
//! for the live progress (`assets/console.js` polls `/console/jobs/live`).

mod cookies;
mod views;

use axum::Form;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::throttle::{Verdict, retry_after_secs};
use crate::dataset::Period;
use crate::service::queue::{self, ListFilter, NewJob, Priority, Trigger};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// Fills `out` from the operating system's random source (getrandom(2),
/// through ring). There is no weaker fallback: a session value that could
/// be guessed is worse than refusing to sign anyone in.
pub(crate) fn random_bytes(out: &mut [u8]) -> Result<(), RandomUnavailable> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(out)
        .map_err(|_| RandomUnavailable)
}

/// The operating system's random source failed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the operating system's random source is unavailable")]
pub(crate) struct RandomUnavailable;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(datasets))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/jobs", get(jobs))
        .route("/console/jobs/live", get(live))
        .route("/console/jobs/{id}/{action}", post(job_action))
        .route("/console/datasets/{dataset}/loads", post(enqueue))
        .route("/console/loads/{id}", get(load))
        .route("/console/assets/{file}", get(asset))
}

/// Why a console request was refused.
#[derive(Debug, Clone, Copy)]
enum Refused {
    /// A page asked for without a session: to the sign-in form.
    SignIn,
    Unauthorized,
    Csrf,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::SignIn => Redirect::to("/console/login").into_response(),
            Refused::Unauthorized => StatusCode::UNAUTHORIZED.into_response(),
            Refused::Csrf => (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response(),
        }
    }
}

/// What a page or form acts for: a live session and a connection.
struct SignedIn {
    client: deadpool_postgres::Object,
    session: String,
}

impl SignedIn {
    fn csrf(&self) -> String {
        cookies::csrf(&self.session)
    }
}

/// The signed-in session (checked in the database), or why the request is
/// refused: a page goes to the sign-in form, anything else gets 401.
async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    page: bool,
) -> Result<SignedIn, Response> {
    let refused = if page {
        Refused::SignIn
    } else {
        Refused::Unauthorized
    };
    let Some(session) = cookies::value(headers) else {
        return Err(refused.into_response());
    };
    let client = state.ctx.pool.get().await.map_err(pool_failed)?;
    match crate::service::sessions::valid(&**client, &session, &state.settings.http.operator_token)
        .await
    {
        Ok(true) => Ok(SignedIn { client, session }),
        Ok(false) => Err(refused.into_response()),
        Err(e) => Err(db_failed(e)),
    }
}

/// A state-changing form: signed in, and carrying this session's CSRF token.
async fn checked(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<SignedIn, Response> {
    let signed_in = signed_in(state, headers, false).await?;
    if super::api::constant_time_eq(signed_in.csrf().as_bytes(), csrf.as_bytes()) {
        Ok(signed_in)
    } else {
        Err(Refused::Csrf.into_response())
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error (see the server's log)",
    )
        .into_response()
}

/// The database cannot be reached: a readable 503 page with `Retry-After`;
/// the detail goes to the log.
fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "console request refused: the database is unavailable");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::RETRY_AFTER, super::RETRY_AFTER_S.to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Html(views::unavailable(super::RETRY_AFTER_S).into_string()),
    )
        .into_response()
}

/// A pool error: 503 when the database is away, else 500.
fn pool_failed(e: deadpool_postgres::PoolError) -> Response {
    if super::pool_unavailable(&e) {
        unavailable(e)
    } else {
        internal(e)
    }
}

/// A database error: 503 when the database is away, else 500.
fn db_failed(e: tokio_postgres::Error) -> Response {
    let text = crate::db::describe_db(&e);
    if super::database_unavailable(&e) {
        unavailable(text)
    } else {
        internal(text)
    }
}

/// A queue error outside the expected ones: 503 or 500.
fn queue_failed(e: queue::QueueError) -> Response {
    match e {
        queue::QueueError::Db(e) => db_failed(e),
        e => internal(e),
    }
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if signed_in(&state, &headers, false).await.is_ok() {
        return Redirect::to("/console").into_response();
    }
    Html(views::login::page(None).into_string()).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Signs in with the operator token. An address with too many failed
/// sign-ins waits before its token is even compared (429, `Retry-After`,
/// the sign-in page saying how long; `throttle.rs`).
async fn login(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = state
        .settings
        .http
        .operator_token
        .expose_secret()
        .as_bytes();
    let client = super::client_address(&extensions);
    let verdict = state
        .throttle
        .attempt(client, std::time::Instant::now(), || {
            !expected.is_empty() && super::api::constant_time_eq(expected, form.token.as_bytes())
        });
    match verdict {
        Verdict::Granted => {}
        Verdict::Denied => {
            tracing::warn!("console sign-in refused");
            return (
                StatusCode::UNAUTHORIZED,
                Html(views::login::page(Some("That is not the operator token.")).into_string()),
            )
                .into_response();
        }
        Verdict::TooSoon(wait) => {
            let seconds = retry_after_secs(wait);
            tracing::warn!(retry_after_s = seconds, "console sign-in throttled");
            let message =
                format!("Too many failed sign-ins from this address: try again in {seconds} s.");
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, seconds.to_string())],
                Html(views::login::page(Some(&message)).into_string()),
            )
                .into_response();
        }
    }
    let session = match cookies::new_value() {
        Ok(session) => session,
        Err(e) => return internal(e),
    };
    let client = match state.ctx.pool.get().await {
        Ok(c) => c,
        Err(e) => return pool_failed(e),
    };
    if let Err(e) =
        crate::service::sessions::create(&**client, &session, &state.settings.http.operator_token)
            .await
    {
        return db_failed(e);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookies::set(&session, &headers)),
            (header::LOCATION, "/console".to_string()),
        ],
    )
        .into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let signed_in = match checked(&state, &headers, &form.csrf).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    if let Err(e) = crate::service::sessions::end(&**signed_in.client, &signed_in.session).await {
        return db_failed(e);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookies::clear(&headers)),
            (header::LOCATION, "/console/login".to_string()),
        ],
    )
        .into_response()
}

#[derive(Deserialize)]
struct Message {
    m: Option<String>,
}

async fn datasets(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Message>,
) -> Response {
    let signed_in = match signed_in(&state, &headers, true).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let csrf = signed_in.csrf();
    let client = signed_in.client;
    match crate::service::freshness::boards(&**client, &state.specs, 24).await {
        Ok(boards) => (
            [super::no_store()],
            Html(views::datasets::page(&boards, &csrf, q.m.as_deref()).into_string()),
        )
            .into_response(),
        Err(e) => db_failed(e),
    }
}

async fn jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Message>,
) -> Response {
    let signed_in = match signed_in(&state, &headers, true).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let csrf = signed_in.csrf();
    let client = signed_in.client;
    let filter = ListFilter {
        state: None,
        dataset: None,
        limit: 100,
    };
    match queue::list(&**client, &filter).await {
        Ok(list) => (
            [super::no_store()],
            Html(views::jobs::page(&list, &csrf, q.m.as_deref()).into_string()),
        )
            .into_response(),
        Err(e) => queue_failed(e),
    }
}

#[derive(Serialize)]
struct LiveJob {
    id: i64,
    state: String,
    stage: String,
    percent: f64,
    figures: String,
}

async fn live(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let client = match signed_in(&state, &headers, false).await {
        Ok(s) => s.client,
        Err(r) => return r,
    };
    let filter = ListFilter {
        state: Some(queue::JobState::Running.as_str().into()),
        dataset: None,
        limit: 100,
    };
    match queue::list(&**client, &filter).await {
        Ok(list) => {
            let live: Vec<LiveJob> = list
                .iter()
                .map(|j| {
                    let p = j.progress_view();
                    LiveJob {
                        id: j.id,
                        state: j.state.as_str().to_string(),
                        percent: p.percent.unwrap_or(0.0),
                        figures: views::jobs::figures(&p),
                        stage: p.stage,
                    }
                })
                .collect();
            ([super::no_store()], Json(live)).into_response()
        }
        Err(e) => queue_failed(e),
    }
}

/// Cancel or retry a job from the jobs page.
async fn job_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(i64, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let client = match checked(&state, &headers, &form.csrf).await {
        Ok(s) => s.client,
        Err(r) => return r,
    };
    let done = match action.as_str() {
        "cancel" => queue::cancel(&**client, id)
            .await
            .map(|s| format!("job {id}: {s}")),
        "retry" => queue::retry(
            &**client,
            id,
            state.settings.queue.max_attempts,
            &state.clock,
        )
        .await
        .map(|next| format!("job {next} will run")),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let message = match done {
        Ok(message) => message,
        Err(e @ (queue::QueueError::NotFound(_) | queue::QueueError::WrongState { .. })) => {
            e.to_string()
        }
        Err(e) => return queue_failed(e),
    };
    Redirect::to(&format!("/console/jobs?m={}", urlencode(&message))).into_response()
}

#[derive(Deserialize)]
struct LoadForm {
    #[serde(default)]
    csrf: String,
    period: String,
    #[serde(default)]
    force: Option<String>,
}

async fn enqueue(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(dataset): Path<String>,
    Form(form): Form<LoadForm>,
) -> Response {
    let client = match checked(&state, &headers, &form.csrf).await {
        Ok(s) => s.client,
        Err(r) => return r,
    };
    let force = form.force.is_some();
    let back = |m: String| Redirect::to(&format!("/console?m={}", urlencode(&m))).into_response();
    let Some(period) = Period::parse(&form.period) else {
        return back(format!("{:?} is not a month (YYYY-MM)", form.period));
    };
    let Some(spec) = state.specs.iter().find(|s| s.dataset == dataset) else {
        return back(format!("unknown dataset {dataset:?}"));
    };
    if let Err(e) = spec.check_period(period, force) {
        return back(e.to_string());
    }
    let job = NewJob {
        force,
        ..NewJob::for_spec(
            spec,
            period,
            Trigger::Operator {
                name: "console".into(),
            },
            Priority::Fresh,
            &state.settings.queue,
        )
    };
    match queue::enqueue(&**client, &job, &state.clock).await {
        Ok(e) => Redirect::to(&format!(
            "/console/jobs?m={}",
            urlencode(&format!(
                "job {} {} ({} {period})",
                e.id,
                if e.new { "enqueued" } else { "already pending" },
                spec.dataset
            ))
        ))
        .into_response(),
        Err(e @ queue::QueueError::Conflict { .. }) => {
            Redirect::to(&format!("/console/jobs?m={}", urlencode(&e.to_string()))).into_response()
        }
        Err(e) => queue_failed(e),
    }
}

async fn load(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    let signed_in = match signed_in(&state, &headers, true).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let csrf = signed_in.csrf();
    let client = signed_in.client;
    match crate::engine::load::ledger::view(&**client, id, 50).await {
        Ok(Some(view)) => (
            [super::no_store()],
            Html(views::load::page(&view, &csrf).into_string()),
        )
            .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such load").into_response(),
        Err(e) => db_failed(e),
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Percent-encodes a query value.
fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
