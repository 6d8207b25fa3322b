//! A TCP relay that can cut the network: while cut, it forwards nothing in
//! either direction and opens nothing upstream, but keeps every socket open,
//! as a black hole (a dropped route, a firewall that drops packets) looks to
//! both ends. Healing it delivers what was held back, as TCP retransmission
//! would after a short partition.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Relay {
    pub port: u16,
    cut: watch::Sender<bool>,
    /// Connections currently open on the client side.
    open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Listens on a free port of 127.0.0.1 and relays to `upstream`.
    pub async fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("relay bind: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let (cut, rx) = watch::channel(false);
        let open = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, s) = (open.clone(), stop.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let (rx, open) = (rx.clone(), o.clone());
                open.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    relay(client, upstream, rx).await;
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Relay {
            port,
            cut,
            open,
            stop,
        }
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.heal();
    }
}

/// Waits while the network is cut.
async fn passable(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|cut| !*cut).await;
}

async fn relay(client: TcpStream, upstream: u16, mut rx: watch::Receiver<bool>) {
    passable(&mut rx).await;
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, rx.clone());
    let down = pump(sr, cw, rx);
    // Either side closing ends both.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut rx: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        passable(&mut rx).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
