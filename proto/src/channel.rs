//! gRPC channels over a unix socket, the transport every CSI endpoint uses.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// A channel that connects (and reconnects) to `socket` when first used, so a
/// client may be made before its server is listening.
pub fn lazy(socket: &Path) -> Channel {
    endpoint().connect_with_connector_lazy(connector(socket.to_path_buf()))
}

/// A channel connected to `socket` now.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    endpoint()
        .connect_with_connector(connector(socket.to_path_buf()))
        .await
}

fn endpoint() -> Endpoint {
    // The authority is never resolved: the connector below dials the socket.
    Endpoint::from_static("http://csi.invalid")
}

fn connector(
    socket: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<TokioIo<tokio::net::UnixStream>>> + Send,
> + Send
+ Clone
+ 'static {
    tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
    })
}
