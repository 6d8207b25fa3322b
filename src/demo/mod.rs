//! `pgrouter demo`: a throwaway primary and streaming replicas from the
//! machine's PostgreSQL, the router in front, and the psql line to connect.
//! [`cluster`] is also the fixture the integration tests use.

pub mod cluster;

use crate::app::Router;
use crate::config::Config;
use cluster::{ClusterError, PgCluster};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    App(#[from] crate::app::AppError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// The demo's config: the given ports, user "app" / password "app", who
/// may also open the admin console.
pub fn demo_config(listen: &str, http: &str, cluster: &PgCluster) -> Result<Config, DemoError> {
    let text = format!(
        "[server]\nlisten = \"{listen}\"\nhttp_listen = \"{http}\"\n\n\
         [[users]]\nname = \"app\"\npassword = \"app\"\n\n[admin]\nusers = [\"app\"]\n\n{}",
        cluster.backends_toml()
    );
    Ok(Config::parse(&text, "demo")?)
}

/// Runs the demo until Ctrl-C, then tears everything down.
pub async fn run(replicas: usize) -> Result<(), DemoError> {
    println!("pgrouter demo: starting a primary and {replicas} streaming replicas...");
    let cluster = tokio::task::spawn_blocking(move || -> Result<PgCluster, ClusterError> {
        let c = PgCluster::start(replicas)?;
        c.create_user("app", "app")?;
        c.create_database("app", "app")?;
        Ok(c)
    })
    .await
    .map_err(|e| ClusterError::Setup(e.to_string()))??;
    let mut config = demo_config("127.0.0.1:6432", "127.0.0.1:9930", &cluster)?;
    let router = match Router::start(config.clone()).await {
        Ok(r) => r,
        Err(_) => {
            // 6432/9930 taken (a PgBouncer, another demo): any free ports.
            config.server.listen = "127.0.0.1:0".into();
            config.server.http_listen = "127.0.0.1:0".into();
            Router::start(config.clone()).await?
        }
    };
    // The config as a file the router reloads from (edit it, then RELOAD
    // in the admin console). Its only password is the demo's "app".
    let toml_path = cluster.dir.join("router.toml");
    config.server.listen = router.addr.to_string();
    config.server.http_listen = router.http_addr.to_string();
    if let Ok(text) = toml::to_string_pretty(&config) {
        if std::fs::write(&toml_path, text).is_ok() {
            if let Ok(loaded) = Config::load(&toml_path) {
                router.shared.apply(loaded);
            }
        }
    }
    println!("primary   127.0.0.1:{}", cluster.primary.port);
    for r in &cluster.replicas {
        println!("{:<9} 127.0.0.1:{} (streaming replica)", r.name, r.port);
    }
    println!(
        "pgrouter  {}   health: http://{}/health/ready   servers and lag: http://{}/status",
        router.addr, router.http_addr, router.http_addr
    );
    println!(
        "          metrics: http://{}/metrics   dashboard: http://{}/dashboard",
        router.http_addr, router.http_addr
    );
    println!("config    {}", toml_path.display());
    println!();
    println!("Connect with:");
    println!(
        "  psql \"postgres://app:app@127.0.0.1:{}/app\"",
        router.addr.port()
    );
    println!("Try: SELECT inet_server_port(), pg_is_in_recovery();");
    println!(
        "Admin console: psql \"postgres://app:app@127.0.0.1:{}/pgrouter\"  (SHOW POOLS; SHOW REPLICAS; RELOAD after editing the config)",
        router.addr.port()
    );
    println!();
    println!("Press Ctrl-C to stop and remove everything.");
    crate::shutdown::signalled().await;
    println!("\nstopping...");
    router.shutdown();
    router.drain(std::time::Duration::from_secs(5)).await;
    drop(cluster);
    println!("done: the demo cluster is removed.");
    Ok(())
}
