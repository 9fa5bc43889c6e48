//! `GET /openapi.json`: the API as OpenAPI 3, generated from the handlers'
//! and wire types' annotations (utoipa), so it cannot drift from the code.

use axum::Json;
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
pub struct ApiDoc;

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
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
