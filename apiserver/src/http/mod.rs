//! The HTTP face: admission (who is asking, and whether RBAC lets them), request bodies,
//! routing, and one handler per verb family.

mod body;
mod discovery;
mod list_stream;
mod openapi;
mod resources;
mod route;
mod watch;
mod watchers;

pub use watchers::Watchers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::Authorizer;
use crate::auth::attributes::Attributes;
use crate::auth::authn::Authenticator;
use crate::error::ApiError;
use crate::metrics::{self, ApiMetrics};
use crate::store::Store;

/// What every handler shares.
pub struct AppState {
    pub store: Store,
    pub authenticator: Authenticator,
    pub authorizer: Authorizer,
    /// Open watches per identity, bounded.
    pub watchers: Arc<Watchers>,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Bodies larger than this are refused with 413.
    pub max_body: usize,
    pub metrics: ApiMetrics,
    /// Whether new claims and volumes get their protection finalizers.
    pub storage_object_in_use_protection: bool,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthy))
        .route("/readyz", get(healthy))
        .route("/livez", get(healthy))
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::core_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route("/openapi/v2", get(openapi::document_v2))
        .route("/openapi/v3", get(openapi::index))
        .route("/openapi/v3/{*path}", get(openapi::document))
        .fallback(resources::handle)
        .layer(middleware::from_fn_with_state(state.clone(), admit))
        .layer(middleware::from_fn(body::read_to_end))
        .layer(middleware::from_fn_with_state(state.clone(), measure))
        .with_state(state)
}

async fn healthy() -> &'static str {
    "ok"
}

/// Counts every answered request, refused ones included.
async fn measure(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let verb = metrics::verb(request.method(), request.uri().query());
    let response = next.run(request).await;
    state
        .metrics
        .record(verb, response.status().as_u16(), started);
    response
}

const UNAUTHENTICATED_PATHS: &[&str] = &["/healthz", "/readyz", "/livez"];

/// Every request but the health probes must carry a known bearer token and be
/// allowed by RBAC; the handlers see who it comes from as an `Arc<Identity>` extension.
async fn admit(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    if UNAUTHENTICATED_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some(identity) = state.authenticator.authenticate(presented.trim()) else {
        return ApiError::Unauthorized.into_response();
    };
    let attributes = attributes(&request);
    if let Err(error) = state.authorizer.authorize(&identity, &attributes).await {
        tracing::debug!(user = %identity.user, verb = %attributes.verb, path = request.uri().path(), "refused");
        return error.into_response();
    }
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// What the request asks, reading its query as the handlers will.
fn attributes(request: &Request) -> Attributes {
    let params: resources::Params = Query::try_from_uri(request.uri())
        .map(|Query(p)| p)
        .unwrap_or_default();
    Attributes::of(
        request.method(),
        request.uri().path(),
        resources::flag(&params.watch),
        params.field_selector.as_deref(),
    )
}

/// Completes the TLS handshake and serves HTTP/1.1 or HTTP/2 on one connection.
pub async fn serve_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    router: Router,
) {
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let service = hyper_util::service::TowerToHyperService::new(router);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Err(error) = builder
        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// A client that does not finish its handshake in this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
