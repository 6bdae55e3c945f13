//! A unix-socket relay between a client and a server that can hold the server's
//! answers: the request reaches the server and takes effect, the client never hears.
//! That is how a test stops a process exactly between a call's effect and its reply.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

pub struct Relay {
    pub socket: PathBuf,
    hold: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on `socket` and forwards every connection to `upstream`.
    pub fn start(socket: &Path, upstream: &Path) -> Self {
        let listener = UnixListener::bind(socket).expect("bind relay");
        let hold = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_path_buf();
        let held = hold.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = UnixStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(forward(client, server, held.clone()));
            }
        });
        Self {
            socket: socket.to_path_buf(),
            hold,
            task,
        }
    }

    /// From now on, what the server sends waits in the relay.
    pub fn hold_replies(&self) {
        self.hold.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(client: UnixStream, server: UnixStream, hold: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let replies = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let Ok(n @ 1..) = server_read.read(&mut buffer).await else {
                return;
            };
            while hold.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(requests, replies);
}
