//! Embedded Kubernetes-compatible API server for Stowage's single-machine mode.
//!
//! It serves the kinds Stowage and the CSI sidecars work with (PersistentVolume,
//! PersistentVolumeClaim, StorageClass, CSIDriver, CSINode, VolumeAttachment,
//! CSIStorageCapacity, VolumeAttributesClass, Event, Node, Namespace, Pod, Secret, Lease,
//! RBAC, the snapshot CRDs) with upstream REST semantics on a redb file, in JSON and, for
//! built-in kinds, protobuf, so kube-rs, client-go and kubectl use it unchanged.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admission;
pub mod auth;
pub mod error;
mod http;
pub mod kubeconfig;
pub mod meta;
pub mod metrics;
pub mod objects;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod resources;
pub mod selectors;
pub mod store;
pub mod table;
mod tls;
pub mod validation;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

pub use error::ApiError;
pub use metrics::ApiMetrics;
pub use store::Store;

/// The token file's name under the data directory, unless given elsewhere.
pub const TOKEN_FILE: &str = "tokens.csv";

/// The namespaces every cluster starts with.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How the server is started.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Where the store, the token file, the TLS keys and the kubeconfig live.
    pub data_dir: PathBuf,
    /// Changes kept in memory for watches; a watch from further back gets 410 Gone.
    pub watch_history: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// The largest request body accepted; a larger one gets 413.
    pub max_body_bytes: usize,
    /// The identities and their tokens (`token,user,uid,"groups"` lines); `DIR/tokens.csv`
    /// when unset. An admin in `system:masters` is added when the file has none.
    pub token_file: Option<PathBuf>,
    /// Watches one identity may hold at once; one more gets 429.
    pub max_watches_per_user: usize,
    /// Where request counts and latencies go (registered by the caller to export them).
    pub metrics: ApiMetrics,
    /// The StorageObjectInUseProtection admission: `kubernetes.io/pvc-protection` on new
    /// claims, `kubernetes.io/pv-protection` on new volumes. Off unless asked for, since a
    /// deleted claim or volume then waits for the protection controllers
    /// (`stowage provisioner`'s `pvc-protection` and `pv-protection`).
    pub storage_object_in_use_protection: bool,
}

impl Config {
    /// The defaults, listening on `listen` with its files under `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            watch_history: 100_000,
            bookmark_interval: Duration::from_secs(30),
            max_body_bytes: 3 << 20,
            token_file: None,
            max_watches_per_user: 100,
            metrics: ApiMetrics::default(),
            storage_object_in_use_protection: false,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// The store could not be opened or seeded.
    #[error("opening the store: {0}")]
    Store(#[from] ApiError),
    /// The token file could not be read or written.
    #[error("the token file: {0}")]
    Tokens(#[from] auth::authn::TokenFileError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let context = context.into();
    move |source| StartError::Io { context, source }
}

/// A bound, ready server; `run` serves it.
pub struct ApiServer {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    kubeconfig: PathBuf,
    store: Store,
    state: Arc<http::AppState>,
    tls: Arc<rustls::ServerConfig>,
}

impl ApiServer {
    /// Opens the store under the data directory, seeds the system namespaces,
    /// binds the listener, reads the token file and writes the admin's `kubeconfig`.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(io(format!("creating {}", config.data_dir.display())))?;
        let store = Store::open(&config.data_dir.join("store.redb"), config.watch_history)?;
        seed_namespaces(&store).await?;
        auth::bootstrap::seed(&store).await?;
        let authorizer = auth::Authorizer::open(store.clone()).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(io(format!("binding {}", config.listen)))?;
        let address = listener
            .local_addr()
            .map_err(io("reading the bound address"))?;
        let token_file = config
            .token_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join(TOKEN_FILE));
        let tokens = auth::authn::load_with_admin(&token_file, &config.data_dir.join("token"))?;
        let admin_token = tokens.admin().map(|e| e.token.clone()).unwrap_or_default();
        let tls = tls::load_or_create(&config.data_dir, address).map_err(io("setting up TLS"))?;
        let kubeconfig =
            kubeconfig::write_admin(&config.data_dir, address, &admin_token, &tls.ca_pem)
                .map_err(io("writing the kubeconfig"))?;
        let state = Arc::new(http::AppState {
            store: store.clone(),
            authenticator: auth::authn::Authenticator::new(&tokens),
            authorizer,
            watchers: http::Watchers::new(config.max_watches_per_user),
            bookmark_interval: config.bookmark_interval,
            max_body: config.max_body_bytes,
            metrics: config.metrics,
            storage_object_in_use_protection: config.storage_object_in_use_protection,
        });
        Ok(Self {
            listener,
            address,
            kubeconfig,
            store,
            state,
            tls: tls.config,
        })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `DIR/kubeconfig`, readable by kubectl and kube-rs as it is.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The server's store, for in-process readers.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves HTTPS until `shutdown` completes; each connection on its own task.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(address = %self.address, kubeconfig = %self.kubeconfig.display(), "API server listening");
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        let router = http::router(self.state);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(connection) => connection,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                },
                () = &mut shutdown => return Ok(()),
            };
            tokio::spawn(http::serve_connection(
                acceptor.clone(),
                stream,
                peer,
                router.clone(),
            ));
        }
    }
}

async fn seed_namespaces(store: &Store) -> Result<(), ApiError> {
    let namespaces = registry::namespaces();
    for name in SYSTEM_NAMESPACES {
        let key = namespaces.key("", name);
        let exists = store
            .read(move |reader| Ok(reader.get(&key)?.is_some()))
            .await?;
        if !exists {
            let object = json!({"metadata": {"name": name}});
            store
                .write(Box::new(move |reader| {
                    objects::create(
                        namespaces,
                        "",
                        object,
                        objects::FieldValidation::Strict,
                        reader,
                    )
                }))
                .await?;
        }
    }
    Ok(())
}
