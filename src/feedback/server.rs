//! `factrl annotate serve`: the annotation web app. A static page (`web/`) signs in with a token
//! and talks to a small JSON API; every API call names its annotator by `Authorization: Bearer
//! TOKEN`, and a missing or unknown token gets a bare 401. Model text reaches the page only as JSON
//! and is put on it as text, never as HTML.
//!
//! API: `GET /api/me`, `GET /api/next` (the next open pair and the progress), `GET /api/item/{pair}`,
//! `GET /api/image/{pair}`, `POST /api/answer` (`{pair, q1, q2, flags_1, flags_2}`), `POST
//! /api/skip` (`{pair}`), `POST /api/undo`. A write is answered only after it is committed to disk.

use super::FeedbackError;
use super::store::{Annotator, Answer, Item, Progress, Store};
use axum::extract::{FromRequestParts, Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/style.css");

/// The page may load only its own script, style and (blob) images, and talk only to its server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The store shared by the handlers; SQLite calls run on the blocking pool.
#[derive(Clone)]
struct AppState {
    store: Arc<Mutex<Store>>,
}

/// An API failure, told to the client without detail beyond what the client sent.
enum ApiError {
    Unauthorized,
    NotFound,
    Invalid(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            // The same bare answer for a missing and a wrong token: nothing to learn from it.
            ApiError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "unauthorized")
                    .into_response()
            }
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not found").into_response(),
            ApiError::Invalid(why) => (StatusCode::UNPROCESSABLE_ENTITY, why).into_response(),
            ApiError::Internal(why) => {
                eprintln!("annotate serve: {why}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }
}

impl From<FeedbackError> for ApiError {
    fn from(e: FeedbackError) -> ApiError {
        match e {
            FeedbackError::Setting(why) => ApiError::Invalid(why),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl AppState {
    /// Runs `f` on the store on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, FeedbackError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = store.lock().map_err(|_| ApiError::Internal("store lock poisoned".into()))?;
            f(&mut guard).map_err(ApiError::from)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    }
}

/// The annotator named by the request's bearer token.
struct Signed(Annotator);

impl FromRequestParts<AppState> for Signed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
            .ok_or(ApiError::Unauthorized)?;
        state.with(move |s| s.authenticate(&token)).await?.map(Signed).ok_or(ApiError::Unauthorized)
    }
}

#[derive(Serialize)]
struct Me {
    name: String,
    progress: Progress,
}

#[derive(Serialize)]
struct Next {
    item: Option<Item>,
    progress: Progress,
}

#[derive(Deserialize)]
struct AnswerBody {
    pair: i64,
    #[serde(flatten)]
    answer: Answer,
}

#[derive(Deserialize)]
struct PairBody {
    pair: i64,
}

#[derive(Serialize)]
struct Undone {
    pair: Option<i64>,
    progress: Progress,
}

async fn me(State(st): State<AppState>, Signed(who): Signed) -> Result<Json<Me>, ApiError> {
    st.with(move |s| Ok(Me { progress: s.progress(&who)?, name: who.name })).await.map(Json)
}

async fn next(State(st): State<AppState>, Signed(who): Signed) -> Result<Json<Next>, ApiError> {
    st.with(move |s| Ok(Next { item: s.next(&who)?, progress: s.progress(&who)? })).await.map(Json)
}

async fn item(
    State(st): State<AppState>,
    Signed(who): Signed,
    UrlPath(pair): UrlPath<i64>,
) -> Result<Json<Item>, ApiError> {
    st.with(move |s| s.item(&who, pair)).await?.map(Json).ok_or(ApiError::NotFound)
}

async fn image(
    State(st): State<AppState>,
    Signed(_): Signed,
    UrlPath(pair): UrlPath<i64>,
) -> Result<Response, ApiError> {
    let path = st.with(move |s| s.image(pair)).await?.ok_or(ApiError::NotFound)?;
    let bytes =
        tokio::fs::read(&path).await.map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    let kind = match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, kind)], bytes).into_response())
}

async fn answer(
    State(st): State<AppState>,
    Signed(who): Signed,
    Json(body): Json<AnswerBody>,
) -> Result<Json<Progress>, ApiError> {
    st.with(move |s| {
        if !s.record(&who, body.pair, Some(&body.answer))? {
            return Ok(None);
        }
        s.progress(&who).map(Some)
    })
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound)
}

async fn skip(
    State(st): State<AppState>,
    Signed(who): Signed,
    Json(body): Json<PairBody>,
) -> Result<Json<Progress>, ApiError> {
    st.with(move |s| if s.record(&who, body.pair, None)? { s.progress(&who).map(Some) } else { Ok(None) })
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

async fn undo(State(st): State<AppState>, Signed(who): Signed) -> Result<Json<Undone>, ApiError> {
    st.with(move |s| Ok(Undone { pair: s.undo(&who)?, progress: s.progress(&who)? })).await.map(Json)
}

fn asset(kind: &'static str, body: &'static str) -> impl Fn() -> std::future::Ready<Response> + Clone {
    move || std::future::ready(([(header::CONTENT_TYPE, kind)], body).into_response())
}

/// Security headers on every response; API answers are never cached.
async fn headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The app's routes over a store.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/", get(asset("text/html; charset=utf-8", INDEX)))
        .route("/app.js", get(asset("text/javascript; charset=utf-8", SCRIPT)))
        .route("/style.css", get(asset("text/css; charset=utf-8", STYLE)))
        .route("/api/me", get(me))
        .route("/api/next", get(next))
        .route("/api/item/{pair}", get(item))
        .route("/api/image/{pair}", get(image))
        .route("/api/answer", post(answer))
        .route("/api/skip", post(skip))
        .route("/api/undo", post(undo))
        .layer(axum::middleware::from_fn(headers))
        .with_state(AppState { store: Arc::new(Mutex::new(store)) })
}

/// Serves the app on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, store: Store) -> std::io::Result<()> {
    axum::serve(listener, router(store)).await
}

/// `factrl annotate serve`: loads the candidates into the store at `db` and serves the app on
/// `bind`; each pair is offered until `per_pair` annotators have answered it.
pub fn run(candidates: &Path, db: &Path, bind: SocketAddr, per_pair: usize) -> Result<(), FeedbackError> {
    if per_pair == 0 {
        return Err(FeedbackError::Setting("--per-pair must be at least 1".into()));
    }
    let mut store = Store::open(db)?;
    store.per_pair = per_pair;
    let pairs = store.load_candidates(candidates)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| FeedbackError::Server(format!("tokio: {e}")))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| FeedbackError::Server(format!("cannot listen on {bind}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| FeedbackError::Server(e.to_string()))?;
        eprintln!("{pairs} pairs from {}; annotate at http://{addr}/ (Ctrl-C stops)", candidates.display());
        serve(listener, store).await.map_err(|e| FeedbackError::Server(e.to_string()))
    })
}
