//! TCP keepalive and TCP_USER_TIMEOUT on the router's sockets, so a peer that
//! vanished without a FIN or RST (a host that died, a network black hole)
//! is noticed in bounded time instead of the OS default of two hours.
//!
//! Keepalive covers a connection waiting with nothing unacknowledged (a
//! server running a long statement, an idle pooled connection);
//! TCP_USER_TIMEOUT covers one whose sent data is never acknowledged.

use std::time::Duration;

/// `[server] tcp_*` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpSettings {
    pub keepalive: bool,
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
    /// Zero: the kernel default (off).
    pub user_timeout: Duration,
}

impl Default for TcpSettings {
    fn default() -> Self {
        Self {
            keepalive: true,
            idle: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            count: 3,
            user_timeout: Duration::ZERO,
        }
    }
}

impl TcpSettings {
    /// Applies the settings; a socket that refuses an option keeps working
    /// with the system's defaults.
    pub fn apply(&self, socket: socket2::SockRef<'_>) {
        if self.keepalive {
            let ka = socket2::TcpKeepalive::new()
                .with_time(self.idle)
                .with_interval(self.interval)
                .with_retries(self.count);
            if let Err(e) = socket.set_tcp_keepalive(&ka) {
                tracing::debug!(error = %e, "cannot set TCP keepalive");
            }
        }
        if !self.user_timeout.is_zero() {
            if let Err(e) = socket.set_tcp_user_timeout(Some(self.user_timeout)) {
                tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_reach_the_socket() -> std::io::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let s = std::net::TcpStream::connect(listener.local_addr()?)?;
        let t = TcpSettings {
            keepalive: true,
            idle: Duration::from_secs(7),
            interval: Duration::from_secs(3),
            count: 4,
            user_timeout: Duration::from_millis(9000),
        };
        t.apply(socket2::SockRef::from(&s));
        let r = socket2::SockRef::from(&s);
        assert!(r.keepalive()?);
        assert_eq!(r.tcp_keepalive_time()?, Duration::from_secs(7));
        assert_eq!(r.tcp_keepalive_interval()?, Duration::from_secs(3));
        assert_eq!(r.tcp_keepalive_retries()?, 4);
        assert_eq!(r.tcp_user_timeout()?, Some(Duration::from_millis(9000)));
        Ok(())
    }
}
