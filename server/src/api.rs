//! The HTTP API and the page: routes, their answers, and errors as JSON `{"error": …}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use maskdit_registry::labels::normalise;

use crate::gallery::Gallery;
use crate::jobs::{Jobs, Refused};
use crate::request::{Request, MAX_IMAGES, MAX_STEPS};
use crate::ServedModel;

/// The page: HTML, CSS and JavaScript in one file, embedded in the binary.
const PAGE: &str = include_str!("../page/index.html");
/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 16 << 10;
/// Most classes one search answers.
const MAX_MATCHES: usize = 50;

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    /// The models, the first being the default.
    pub models: Arc<Vec<ServedModel>>,
    /// The queue and the jobs of this run.
    pub jobs: Jobs,
    /// The gallery on disk.
    pub gallery: Gallery,
    /// The port the server listens on (for the `Host` check).
    pub port: u16,
    /// The token the API needs, if any.
    pub token: Option<String>,
}

/// An error answer: `status` with `{"error": message}`.
pub fn refuse(status: StatusCode, message: impl Into<String>) -> (StatusCode, Json<serde_json::Value>) {
    (status, Json(serde_json::json!({ "error": message.into() })))
}

/// The routes, guarded by [`crate::guard::check`].
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/models", get(models))
        .route("/api/classes", get(classes))
        .route("/api/jobs", post(submit).get(list_jobs))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/preview.png", get(preview))
        .route("/api/jobs/{id}/cancel", post(cancel))
        .route("/api/gallery", get(gallery))
        .route("/images/{name}", get(image))
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::middleware::from_fn_with_state(app.clone(), crate::guard::check))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// A served model as `GET /api/models` describes it.
#[derive(Serialize)]
struct ModelView {
    name: String,
    classes: usize,
    named_classes: bool,
    steps: usize,
    guidance: f64,
    image_side: usize,
    max_images: usize,
    max_steps: usize,
}

async fn models(State(app): State<Arc<App>>) -> Json<Vec<ModelView>> {
    let views = app
        .models
        .iter()
        .map(|m| {
            let config = m.loaded.model.config();
            ModelView {
                name: m.name.clone(),
                classes: config.num_classes,
                named_classes: !m.class_names.is_empty(),
                steps: m.loaded.steps,
                guidance: if config.num_classes == 0 { 1.0 } else { m.loaded.guidance },
                image_side: config.input_size * m.decoder.upscale(),
                max_images: MAX_IMAGES,
                max_steps: MAX_STEPS,
            }
        })
        .collect();
    Json(views)
}

/// `GET /api/classes?model=M&q=TEXT`: classes whose name or index contains the text, best
/// first (names starting with it before the rest), at most 50.
async fn classes(State(app): State<Arc<App>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let served = match query.get("model") {
        None => app.models.first(),
        Some(name) => app.models.iter().find(|m| &m.name == name),
    };
    let Some(served) = served else { return refuse(StatusCode::NOT_FOUND, "unknown model").into_response() };
    let wanted = query.get("q").map(|q| normalise(q)).unwrap_or_default();
    let count = served.loaded.model.config().num_classes;
    let name_of = |i: usize| served.class_names.get(i).cloned().unwrap_or_else(|| i.to_string());
    let mut found: Vec<(bool, usize, String)> = (0..count)
        .filter_map(|i| {
            let name = name_of(i);
            let key = normalise(&name);
            let hit = wanted.is_empty() || key.contains(&wanted) || i.to_string() == wanted;
            hit.then(|| (!key.starts_with(&wanted), i, name))
        })
        .collect();
    found.sort();
    let answer: Vec<serde_json::Value> = found
        .into_iter()
        .take(MAX_MATCHES)
        .map(|(_, index, name)| serde_json::json!({ "index": index, "name": name }))
        .collect();
    Json(answer).into_response()
}

async fn submit(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let request: Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return refuse(StatusCode::BAD_REQUEST, format!("the request is not valid JSON for a job: {e}"))
                .into_response()
        }
    };
    let settings = match request.settle(&app.models) {
        Ok(settings) => settings,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message).into_response(),
    };
    let argument = app.models.iter().find(|m| m.name == settings.model).map_or("", |m| m.argument.as_str());
    let command = settings.command(argument);
    match app.jobs.submit(settings, command) {
        Ok(job) => (StatusCode::ACCEPTED, Json(app.jobs.view(&job))).into_response(),
        Err(Refused::Full) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the queue is full ({} requests); try again when some are done", crate::jobs::MAX_QUEUED),
        )
        .into_response(),
        Err(Refused::Stopped) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "the worker has stopped").into_response(),
    }
}

async fn list_jobs(State(app): State<Arc<App>>) -> Response {
    Json(app.jobs.views()).into_response()
}

async fn job(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.jobs.get(&id) {
        Some(job) => Json(app.jobs.view(&job)).into_response(),
        None => refuse(StatusCode::NOT_FOUND, "no such job").into_response(),
    }
}

async fn preview(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let Some(job) = app.jobs.get(&id) else { return refuse(StatusCode::NOT_FOUND, "no such job").into_response() };
    // Encoding reads the estimate back from the device: off the async threads.
    match tokio::task::spawn_blocking(move || job.preview()).await {
        Ok(Some(png)) => png_response(png, None),
        _ => refuse(StatusCode::NOT_FOUND, "no preview yet").into_response(),
    }
}

async fn cancel(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.jobs.get(&id) {
        Some(job) => {
            job.cancel();
            Json(app.jobs.view(&job)).into_response()
        }
        None => refuse(StatusCode::NOT_FOUND, "no such job").into_response(),
    }
}

async fn gallery(State(app): State<Arc<App>>) -> Response {
    Json(app.gallery.records()).into_response()
}

/// `GET /images/NAME[?download=1]`: a gallery image, by a name the server made.
async fn image(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(path) = app.gallery.image(&name) else {
        return refuse(StatusCode::NOT_FOUND, "no such image").into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => png_response(bytes, query.contains_key("download").then_some(name)),
        Err(_) => refuse(StatusCode::NOT_FOUND, "no such image").into_response(),
    }
}

fn png_response(bytes: Vec<u8>, download: Option<String>) -> Response {
    let mut response =
        ([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "no-store")], bytes).into_response();
    if let Some(name) = download {
        // The name is one the server made (letters, digits, `-`, `.png`): safe in the header.
        if let Ok(value) = format!("attachment; filename=\"{name}\"").parse() {
            response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
        }
    }
    response
}
