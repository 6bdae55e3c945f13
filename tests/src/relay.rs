//! A unix-socket relay between a client and a server that can hold the server's
//! answers: the request reaches the server and takes effect, the client never hears.
//! That is how a test stops a process exactly between a call's effect and its reply.
//! It also keeps what clients sent, so a test can see what crossed the wire.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

pub struct Relay {
    pub socket: PathBuf,
    hold: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on `socket` and forwards every connection to `upstream`.
    pub fn start(socket: &Path, upstream: &Path) -> Self {
        let listener = UnixListener::bind(socket).expect("bind relay");
        let hold = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_path_buf();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (held, kept) = (hold.clone(), sent.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = UnixStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(forward(client, server, held.clone(), kept.clone()));
            }
        });
        Self {
            socket: socket.to_path_buf(),
            hold,
            sent,
            task,
        }
    }

    /// From now on, what the server sends waits in the relay.
    pub fn hold_replies(&self) {
        self.hold.store(true, Ordering::SeqCst);
    }

    /// How many times `needle` occurs in everything clients have sent so far
    /// (gRPC messages travel uncompressed, so a string field appears verbatim).
    pub fn sent_count(&self, needle: &[u8]) -> usize {
        let sent = self.sent.lock().expect("relay buffer");
        sent.windows(needle.len()).filter(|w| *w == needle).count()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    client: UnixStream,
    server: UnixStream,
    hold: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<u8>>>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let Ok(n @ 1..) = client_read.read(&mut buffer).await else {
                return;
            };
            sent.lock()
                .expect("relay buffer")
                .extend_from_slice(&buffer[..n]);
            if server_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
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
