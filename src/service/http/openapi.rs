//! `GET /openapi.json`: the API as OpenAPI 3, generated from the handlers'
//! and wire types' annotations (utoipa), so it cannot drift from the code.
//! The values only known at run time are filled in when the document is
//! served: the loaded datasets and the job states, as enums.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "carga", description = "Batch loads of the Portal da Transparência's payment files: signed webhooks, jobs, datasets, health and metrics."),
    paths(
        super::webhook::receive,
        super::api::get_job,
        super::api::list_jobs,
        super::api::cancel_job,
        super::api::retry_job,
        super::api::list_datasets,
        super::api::trigger_load,
        super::health::live,
        super::health::ready,
        super::metrics::render,
    ),
    modifiers(&Bearer),
    tags(
        (name = "webhooks", description = "Standard Webhooks 1.0 (HMAC-SHA256, `whsec_` secrets)"),
        (name = "jobs", description = "Operator endpoints (bearer token)"),
        (name = "datasets", description = "Operator endpoints (bearer token)"),
        (name = "health"),
    )
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "this document")))]
pub(crate) async fn document(State(state): State<super::AppState>) -> Json<Value> {
    Json(document_for(&state.specs))
}

/// The document for these loaded specs: `dataset` parameters and body
/// fields are enums of the datasets (every dataset where a load is asked
/// for or jobs are listed; datasets with periods where a webhook names
/// one), `state` an enum of the job states.
fn document_for(specs: &[crate::dataset::Spec]) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    let all: Vec<&str> = specs.iter().map(|s| s.dataset.as_str()).collect();
    let periodic: Vec<&str> = specs
        .iter()
        .filter(|s| !s.kind.is_snapshot())
        .map(|s| s.dataset.as_str())
        .collect();
    let string_enum = |values: &[&str]| json!({"type": "string", "enum": values});
    let parameters = [
        ("/v1/jobs", "get", "dataset", string_enum(&all)),
        (
            "/v1/jobs",
            "get",
            "state",
            string_enum(&crate::service::queue::STATES),
        ),
        (
            "/v1/datasets/{dataset}/loads",
            "post",
            "dataset",
            string_enum(&all),
        ),
    ];
    for (path, method, name, schema) in parameters {
        if let Some(list) = doc
            .pointer_mut(&format!(
                "/paths/{}/{method}/parameters",
                pointer_escape(path)
            ))
            .and_then(Value::as_array_mut)
        {
            for p in list.iter_mut().filter(|p| p["name"] == name) {
                p["schema"] = schema.clone();
            }
        }
    }
    if let Some(field) = doc.pointer_mut("/components/schemas/WebhookBody/properties/dataset") {
        *field = json!({
            "type": "string",
            "enum": periodic,
            "description": "A dataset with periods on the sender's allow-list."
        });
    }
    doc
}

/// A JSON pointer segment (`~` and `/` escaped).
fn pointer_escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}
