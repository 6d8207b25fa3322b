//! Wiring: shared state, listeners, background tasks and graceful drain.

use crate::auth::passthrough::KeySlot;
use crate::auth::scram::Verifier;
use crate::backend::connect::Login;
use crate::backend::tls::{ServerTls, ServerTlsError};
use crate::backend::{Role, Target};
use crate::config::{Config, ConfigError, UserConfig};
use crate::frontend::cancel::CancelRegistry;
use crate::lag::elect::Writer;
use crate::lag::health::{State, Thresholds};
use crate::lag::probe::ProbeLogin;
use crate::lag::{Monitor, Node, NodeStatus};
use crate::metrics::Metrics;
use crate::pool::breaker::Breaker;
use crate::pool::budget::ServerCap;
use crate::pool::capacity::Capacity;
use crate::pool::{Pool, PoolSettings, Pools};
use crate::router::classify::FunctionRules;
use crate::router::consistency::UserPositions;
use crate::router::replicas::{Replica, Replicas};
use crate::shutdown::Shutdown;
use crate::tenant::{Tenant, Tenants};
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start worker threads: {0}")]
    Workers(std::io::Error),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    ServerTls(#[from] ServerTlsError),
}

/// A configured user, with what login and server connections need precomputed.
pub struct UserEntry {
    pub cfg: UserConfig,
    /// SCRAM verifier for client logins (from the plaintext or given as one).
    pub verifier: Option<Verifier>,
    /// How the router logs into servers for this user.
    pub server_user: String,
    pub server_password: Option<String>,
    /// An "md5..." stored hash of the server role, for md5 pass-through.
    pub server_md5: Option<String>,
}

impl UserEntry {
    fn new(cfg: &UserConfig) -> Self {
        let password = cfg.password.as_deref();
        let is_verifier = |p: &str| p.starts_with("SCRAM-SHA-256$");
        let is_md5 = crate::auth::md5::is_stored_hash;
        let verifier = match password {
            Some(p) if is_verifier(p) => Verifier::parse(p).ok(),
            Some(p) if is_md5(p) => None,
            Some(p) => Some(Verifier::from_password(p)),
            None => None,
        };
        let plaintext = password.filter(|p| !is_verifier(p) && !is_md5(p));
        let server_user = cfg.server_user.clone().unwrap_or_else(|| cfg.name.clone());
        // An md5 hash is salted with the role name: only good for that role.
        let server_md5 = password
            .filter(|p| is_md5(p) && server_user == cfg.name)
            .map(str::to_string);
        Self {
            verifier,
            server_md5,
            server_user,
            server_password: cfg
                .server_password
                .clone()
                .or(plaintext.map(str::to_string)),
            cfg: cfg.clone(),
        }
    }
}

/// State shared by every task.
pub struct Shared {
    /// The running configuration; [`reload`] swaps it.
    config: ArcSwap<Config>,
    pub primary: Arc<Target>,
    /// Append-only, indexed like `monitor.nodes()[1..]` (a removed replica
    /// stays, never usable).
    replicas: ArcSwap<Replicas>,
    /// Where to ask for a probe task for a server added by a reload.
    probes: Mutex<Option<tokio::sync::mpsc::UnboundedSender<usize>>>,
    /// Health, lag and roles of every server (docs/lag.md).
    pub monitor: Monitor,
    /// Which functions make a statement a write: built-ins, configured, and
    /// the primary's user-defined volatile functions. Swapped on refresh.
    pub function_rules: ArcSwap<FunctionRules>,
    /// Volatile functions found per database.
    catalog: Mutex<HashMap<String, HashSet<String>>>,
    /// Read-your-writes positions per user (`consistency_scope = "user"`).
    pub user_positions: UserPositions,
    pub route_stats: crate::router::RouteStats,
    users: ArcSwap<HashMap<String, Arc<UserEntry>>>,
    tenants: ArcSwap<Tenants>,
    /// Server-wide pool timeouts (every pool reads them live).
    pool_settings: crate::pool::SharedSettings,
    pub pools: Pools,
    pub cancels: Arc<CancelRegistry>,
    /// Client parameter sets, shared between the clients that want the same.
    pub param_sets: crate::frontend::params::Interner,
    pub shutdown: Shutdown,
    /// One permit per connected client (max_client_conn).
    pub client_slots: Capacity,
    /// Tasks that tell over-limit clients why they are refused.
    pub overflow_slots: Arc<Semaphore>,
    client_ids: AtomicU64,
    /// Failed logins per client address (`[auth]`).
    pub logins: crate::auth::throttle::LoginThrottle,
    /// `[auth] query`: users looked up on the writer, with their cache.
    pub lookup: crate::auth::lookup::UserLookup,
    /// SCRAM keys learned from client logins, by user (pass-through).
    key_slots: Mutex<HashMap<String, Arc<KeySlot>>>,
    /// Client TLS (`[tls]`); rebuilt by each reload, so renewed certificate
    /// files are picked up.
    tls: arc_swap::ArcSwapOption<crate::tls::ClientTls>,
    pub metrics: Arc<Metrics>,
    /// Start time, seconds since the Unix epoch (a metric).
    pub started_unix: f64,
}

impl Shared {
    pub fn new(config: Config) -> Result<Self, AppError> {
        let metrics = Arc::new(Metrics::new()?);
        let primary = Arc::new(Target {
            name: "primary".into(),
            role: Role::Primary,
            host: config.primary.host.clone(),
            port: config.primary.port,
            tls: ServerTls::new(config.primary.tls, config.primary.ca.as_deref(), "primary")?,
        });
        let monitored = config.lag.enabled && config.routing.enabled;
        let initial = if monitored {
            State::Starting
        } else {
            State::Healthy
        };
        let mut nodes = vec![Node {
            target: primary.clone(),
            status: node_status(&config, initial),
            cap: ServerCap::new(config.server.max_server_conn_per_backend),
        }];
        let mut replicas = Vec::new();
        for (i, r) in config.replicas.iter().enumerate() {
            let (node, replica) = replica_node(&config, i, r, initial)?;
            replicas.push(replica);
            nodes.push(node);
        }
        let replicas = Replicas::new(replicas, config.routing.load_balance);
        let monitor = Monitor::new(
            nodes,
            thresholds_of(&config),
            config.routing.discover_roles,
            monitored,
        );
        let function_rules = ArcSwap::from_pointee(rules_from(&config, &HashMap::new()));
        let users = ArcSwap::from_pointee(users_of(&config));
        let tls = crate::tls::acceptor(&config.tls)?.map(Arc::new);
        Ok(Self {
            tls: arc_swap::ArcSwapOption::new(tls),
            tenants: ArcSwap::from_pointee(Tenants::new(&config, &metrics)),
            pool_settings: Arc::new(ArcSwap::from_pointee(pool_settings_of(&config))),
            metrics,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            primary,
            replicas: ArcSwap::from_pointee(replicas),
            probes: Mutex::new(None),
            monitor,
            function_rules,
            catalog: Mutex::new(HashMap::new()),
            user_positions: UserPositions::default(),
            route_stats: Default::default(),
            users,
            pools: Pools::default(),
            cancels: Arc::new(CancelRegistry::default()),
            param_sets: Default::default(),
            shutdown: Shutdown::new(),
            client_slots: Capacity::new(config.server.max_client_conn),
            overflow_slots: Arc::new(Semaphore::new(128)),
            client_ids: AtomicU64::new(1),
            logins: Default::default(),
            key_slots: Default::default(),
            lookup: Default::default(),
            config: ArcSwap::from_pointee(config),
        })
    }

    /// The replicas (cheap; do not hold it across an await).
    pub fn replicas(&self) -> arc_swap::Guard<Arc<Replicas>> {
        self.replicas.load()
    }

    /// Adds and removes replicas to match `new` (by name, host, port and
    /// weight: a changed one is removed and added anew). Returns
    /// (added, removed) names.
    fn apply_replicas(&self, new: &Config) -> (Vec<String>, Vec<String>) {
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        let nodes = self.monitor.nodes();
        let replicas = self.replicas();
        let same = |r: &crate::config::ReplicaConfig, rep: &Replica| {
            rep.target.name == r.name
                && rep.target.host == r.host
                && rep.target.port == r.port
                && rep.weight == r.weight.max(1)
                && rep.target.tls.mode == r.tls
                && rep.target.tls.ca == r.ca
        };
        for (i, rep) in replicas.list.iter().enumerate() {
            let live = nodes
                .get(i + 1)
                .is_some_and(|n| n.status.state() != State::Removed);
            if live && !new.replicas.iter().any(|r| same(r, rep)) {
                self.monitor.remove(i + 1);
                self.pools.close_idle_for(&rep.target);
                removed.push(rep.target.name.clone());
            }
        }
        let live = |r: &crate::config::ReplicaConfig| {
            replicas.list.iter().enumerate().any(|(i, rep)| {
                same(r, rep)
                    && nodes
                        .get(i + 1)
                        .is_some_and(|n| n.status.state() != State::Removed)
            })
        };
        let monitored = new.lag.enabled && new.routing.enabled;
        let initial = if monitored {
            State::Starting
        } else {
            State::Healthy
        };
        for (i, r) in new.replicas.iter().enumerate().filter(|(_, r)| !live(r)) {
            // reload() loaded the CA files before applying; one that broke
            // since then leaves this replica out, loudly.
            let (node, replica) = match replica_node(new, i, r, initial) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(replica = %r.name, error = %e, "replica not added");
                    continue;
                }
            };
            let idx = self.monitor.add(node);
            self.replicas.store(Arc::new(self.replicas().with(replica)));
            if monitored {
                if let Some(tx) = self.probes.lock().ok().and_then(|p| p.clone()) {
                    let _ = tx.send(idx);
                }
            }
            added.push(r.name.clone());
        }
        (added, removed)
    }

    /// The running configuration (cheap; do not hold it across an await).
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// Makes `new` the running configuration: users, tenants, pool
    /// timeouts, client limit, lag thresholds, function rules
    /// ([`crate::reload`] decides what may change).
    pub fn apply(&self, new: Config) {
        let (added, removed) = self.apply_replicas(&new);
        if !added.is_empty() || !removed.is_empty() {
            tracing::info!(?added, ?removed, "replicas changed by reload");
        }
        self.users.store(Arc::new(users_of(&new)));
        if new.auth.query != self.config().auth.query
            || new.auth.query_user != self.config().auth.query_user
        {
            self.lookup.clear();
        }
        let tenants = self.tenants().reconfigure(&new, &self.metrics);
        self.tenants.store(Arc::new(tenants));
        self.pool_settings.store(Arc::new(pool_settings_of(&new)));
        self.client_slots.resize(new.server.max_client_conn);
        self.monitor.set_thresholds(thresholds_of(&new));
        if let Ok(catalog) = self.catalog.lock() {
            self.function_rules
                .store(Arc::new(rules_from(&new, &catalog)));
        }
        self.config.store(Arc::new(new));
    }

    /// A configured user (as of the running configuration).
    pub fn user(&self, name: &str) -> Option<Arc<UserEntry>> {
        self.users.load().get(name).cloned()
    }

    /// A [[users]] entry, or else what `[auth] query` says about `name`
    /// (None: no such user).
    pub async fn find_user(
        &self,
        name: &str,
    ) -> Result<Option<Arc<UserEntry>>, crate::auth::lookup::LookupError> {
        if let Some(u) = self.user(name) {
            return Ok(Some(u));
        }
        let (auth, timeout) = {
            let config = self.config();
            if config.auth.query.is_none() {
                return Ok(None);
            }
            (
                config.auth.clone(),
                config.server.server_connect_timeout.get(),
            )
        };
        let writer = match &**self.monitor.writer() {
            Writer::Node(i) => self
                .monitor
                .nodes()
                .get(*i)
                .map(|n| n.target.clone())
                .unwrap_or_else(|| self.primary.clone()),
            Writer::Refused(_) => self.primary.clone(),
        };
        let found = self.lookup.find(&auth, &writer, name, timeout).await?;
        Ok(found.map(|cfg| Arc::new(UserEntry::new(&cfg))))
    }

    /// Where the SCRAM keys of `user`'s client logins are kept for its
    /// server logins (SCRAM pass-through).
    pub fn key_slot(&self, user: &str) -> Arc<KeySlot> {
        let mut slots = self.key_slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(user.to_string()).or_default().clone()
    }

    /// Every tenant of the running configuration.
    pub fn tenants(&self) -> Arc<Tenants> {
        self.tenants.load_full()
    }

    /// The client TLS acceptor, when `[tls] mode` is not "disable".
    pub fn tls(&self) -> Option<Arc<crate::tls::ClientTls>> {
        self.tls.load_full()
    }

    pub fn set_tls(&self, tls: Option<crate::tls::ClientTls>) {
        self.tls.store(tls.map(Arc::new));
    }

    pub fn next_client_id(&self) -> u64 {
        self.client_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The primary's pool for this user and database.
    pub fn primary_pool(&self, user: &UserEntry, database: &str) -> Arc<Pool> {
        self.pool_for(&self.primary, user, database)
    }

    /// The tenant a client of this user and database belongs to.
    pub fn tenant_of(&self, user: &UserEntry, database: &str) -> Arc<Tenant> {
        self.tenants
            .load()
            .resolve(&user.cfg.name, database)
            .clone()
    }

    /// The pool of `target` for this user and database (in their tenant).
    pub fn pool_for(&self, target: &Arc<Target>, user: &UserEntry, database: &str) -> Arc<Pool> {
        let tenant = self.tenant_of(user, database);
        // Without a server password, log in with what the client proved.
        let passthrough = user.server_password.is_none();
        let login = Login {
            user: user.server_user.clone(),
            password: user.server_password.clone(),
            md5_hash: user.server_md5.clone().filter(|_| passthrough),
            scram_keys: passthrough.then(|| self.key_slot(&user.cfg.name)),
            database: database.to_string(),
            options: tenant.server_options(),
        };
        let nodes = self.monitor.nodes();
        let node = nodes.iter().find(|n| Arc::ptr_eq(&n.target, target));
        let make = || {
            let (breaker, cap) = match node {
                Some(n) => (n.status.breaker.clone(), n.cap.clone()),
                None => (
                    Arc::new(Breaker::new(0, Duration::from_secs(1))),
                    ServerCap::new(0),
                ),
            };
            let budget = tenant.budget(target, &cap);
            Pool::new(
                target.clone(),
                login.clone(),
                self.pool_settings.clone(),
                breaker,
                budget,
            )
        };
        self.pools.get_or_create(&tenant.name, target, &login, make)
    }

    /// The pool of the server that takes writes now, or why there is none.
    pub fn writer_pool(&self, user: &UserEntry, database: &str) -> Result<Arc<Pool>, String> {
        match &**self.monitor.writer() {
            Writer::Node(i) => Ok(match self.monitor.nodes().get(*i) {
                Some(n) if *i > 0 => self.pool_for(&n.target.clone(), user, database),
                _ => self.primary_pool(user, database),
            }),
            Writer::Refused(reason) => Err(reason.clone()),
        }
    }

    /// How the monitor logs in: `[lag] monitor_user` or the first user's
    /// server login.
    fn probe_login(&self) -> ProbeLogin {
        let config = self.config();
        let l = &config.lag;
        let first = config.users.first().and_then(|u| self.user(&u.name));
        let (user, password) = match (&l.monitor_user, first) {
            (Some(u), _) => (u.clone(), l.monitor_password.clone()),
            (None, Some(e)) => (
                e.server_user.clone(),
                l.monitor_password.clone().or(e.server_password.clone()),
            ),
            // Only looked-up users: the auth query's role.
            (None, None) => match &config.auth.query_user {
                Some(u) => (
                    u.clone(),
                    l.monitor_password
                        .clone()
                        .or(config.auth.query_password.clone()),
                ),
                None => ("postgres".into(), l.monitor_password.clone()),
            },
        };
        ProbeLogin {
            user,
            password,
            database: l.monitor_database.clone(),
            timeout: l.probe_timeout.get(),
        }
    }

    /// Loads `database`'s volatile functions on `conn` (a primary
    /// connection) and makes them part of the routing rules.
    pub async fn load_catalog(&self, database: &str, conn: &mut crate::backend::ServerConn) {
        let timeout = self.config().server.server_reset_timeout.get();
        match crate::router::catalog::volatile_functions(conn, timeout).await {
            Ok(names) => {
                let Ok(mut catalog) = self.catalog.lock() else {
                    return;
                };
                if catalog.get(database) != Some(&names) {
                    catalog.insert(database.to_string(), names);
                    self.function_rules
                        .store(Arc::new(rules_from(&self.config(), &catalog)));
                }
            }
            Err(e) => {
                tracing::warn!(%database, error = %e, "cannot read volatile functions from the catalog")
            }
        }
    }

    /// Whether routing needs `database`'s catalog loaded before its reads.
    pub fn needs_catalog(&self, database: &str) -> bool {
        self.config().routing.enabled
            && !self.replicas().list.is_empty()
            && self
                .catalog
                .lock()
                .map(|c| !c.contains_key(database))
                .unwrap_or(true)
    }

    /// Reloads every known database's volatile functions.
    async fn refresh_catalogs(&self) {
        let mut seen = HashSet::new();
        for pool in self.pools.all() {
            if pool.target.role != Role::Primary
                || !pool.is_proven()
                || !seen.insert(pool.login.database.clone())
            {
                continue;
            }
            if let Ok(mut conn) = pool.acquire(Duration::from_secs(1)).await {
                self.load_catalog(&pool.login.database, &mut conn).await;
                conn.release();
            }
        }
    }

    /// Clients connected right now.
    pub fn client_count(&self) -> usize {
        self.client_slots.in_use()
    }
}

fn node_status(config: &Config, initial: State) -> Arc<NodeStatus> {
    Arc::new(NodeStatus::new(
        initial,
        Arc::new(Breaker::new(
            config.lag.breaker_failures,
            config.lag.breaker_cooldown.get(),
        )),
    ))
}

/// A configured replica as a monitor node and a routing replica (sharing
/// their status).
fn replica_node(
    config: &Config,
    i: usize,
    r: &crate::config::ReplicaConfig,
    initial: State,
) -> Result<(Node, Arc<Replica>), ServerTlsError> {
    let node = Node {
        target: Arc::new(Target {
            name: r.name.clone(),
            role: Role::Replica,
            host: r.host.clone(),
            port: r.port,
            tls: replica_tls(i, r)?,
        }),
        status: node_status(config, initial),
        cap: ServerCap::new(config.server.max_server_conn_per_backend),
    };
    let replica = Arc::new(Replica::with_status(
        node.target.clone(),
        r.weight,
        node.status.clone(),
    ));
    Ok((node, replica))
}

/// The TLS settings of `[[replicas]]` entry `i` (loads its CA file).
pub fn replica_tls(
    i: usize,
    r: &crate::config::ReplicaConfig,
) -> Result<ServerTls, ServerTlsError> {
    ServerTls::new(r.tls, r.ca.as_deref(), &format!("replicas[{i}]"))
}

fn thresholds_of(config: &Config) -> Thresholds {
    let l = &config.lag;
    Thresholds {
        max_lag: l.max_lag.get(),
        max_lag_bytes: l.max_lag_bytes,
        readmit_lag: l.readmit_lag(),
        readmit_lag_bytes: l.max_lag_bytes / 2,
        readmit_probes: l.readmit_probes,
    }
}

fn users_of(config: &Config) -> HashMap<String, Arc<UserEntry>> {
    config
        .users
        .iter()
        .map(|u| (u.name.clone(), Arc::new(UserEntry::new(u))))
        .collect()
}

fn pool_settings_of(config: &Config) -> PoolSettings {
    let s = &config.server;
    PoolSettings {
        connect_timeout: s.server_connect_timeout.get(),
        idle_timeout: s.server_idle_timeout.get(),
        lifetime: s.server_lifetime.get(),
        max_message: crate::protocol::framing::PG_MAX_MESSAGE_LEN,
        tcp: config.server.tcp_settings(),
    }
}

/// A running router.
pub struct Router {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub shared: Arc<Shared>,
}

impl Router {
    /// Binds the listeners and starts serving.
    pub async fn start(config: Config) -> Result<Router, AppError> {
        config.validate()?;
        for w in config.warnings() {
            tracing::warn!("{w}");
        }
        let listen = config.listen_addr()?;
        let http_listen = config.http_addr()?;
        let listener = bind(listen, "server.listen", config.server.reuse_port)?;
        let http = TcpListener::bind(http_listen)
            .await
            .map_err(|source| AppError::Bind {
                key: "server.http_listen",
                addr: http_listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| AppError::Bind {
            key: "server.listen",
            addr: listen,
            source,
        })?;
        let http_addr = http.local_addr().map_err(|source| AppError::Bind {
            key: "server.http_listen",
            addr: http_listen,
            source,
        })?;
        let shared = Arc::new(Shared::new(config)?);
        let workers = crate::frontend::workers::Workers::start(
            shared.config().server.worker_threads,
            shared.clone(),
        )
        .map_err(AppError::Workers)?;
        tokio::spawn(crate::frontend::listener::serve(
            listener,
            shared.clone(),
            workers,
        ));
        tokio::spawn(crate::http::serve(http, shared.clone()));
        tokio::spawn(reaper(shared.clone()));
        if shared.config().routing.enabled {
            // Cheap without replicas; a reload may add some.
            tokio::spawn(catalog_refresher(shared.clone()));
        }
        if shared.config().lag.enabled && shared.config().routing.enabled {
            let login = shared.probe_login();
            for idx in 0..shared.monitor.nodes().len() {
                tokio::spawn(crate::lag::monitor::run(shared.clone(), idx, login.clone()));
            }
            // Replicas added by a reload get their probe task here.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            if let Ok(mut p) = shared.probes.lock() {
                *p = Some(tx);
            }
            let s = shared.clone();
            tokio::spawn(async move {
                while let Some(idx) = rx.recv().await {
                    tokio::spawn(crate::lag::monitor::run(s.clone(), idx, login.clone()));
                }
            });
            // Replicas take reads only once probed: give the first round a
            // moment so a fresh router does not start on the primary alone.
            let limit = shared.config().lag.probe_timeout.get() + Duration::from_millis(250);
            crate::lag::monitor::first_round(&shared, limit).await;
        }
        info!(%addr, %http_addr, mode = ?shared.config().server.pool_mode, "pgrouter listening");
        Ok(Router {
            addr,
            http_addr,
            shared,
        })
    }

    /// Stops accepting and asks idle clients to leave; clients inside a
    /// transaction finish it first.
    pub fn shutdown(&self) {
        self.shared.shutdown.trigger();
        self.shared.cancels.shutdown_all();
    }

    /// Waits until every client has left, up to `timeout`. Returns whether all did.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let all = self.shared.config().server.max_client_conn as u32;
        let slots = self.shared.client_slots.semaphore();
        let done = tokio::time::timeout(timeout, slots.acquire_many(all)).await;
        for p in self.shared.pools.all() {
            p.close_idle();
        }
        matches!(done, Ok(Ok(_)))
    }
}

fn rules_from(config: &Config, catalog: &HashMap<String, HashSet<String>>) -> FunctionRules {
    let lower = |v: &Vec<String>| {
        v.iter()
            .map(|f| f.to_ascii_lowercase())
            .collect::<HashSet<_>>()
    };
    let mut write = lower(&config.routing.write_functions);
    for names in catalog.values() {
        write.extend(names.iter().cloned());
    }
    FunctionRules {
        write,
        read_only: lower(&config.routing.read_only_functions),
    }
}

/// Reloads the volatile-function catalog every `catalog_refresh`.
async fn catalog_refresher(shared: Arc<Shared>) {
    let period = shared
        .config()
        .routing
        .catalog_refresh
        .get()
        .max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => shared.refresh_catalogs().await,
            _ = shared.shutdown.wait() => return,
        }
    }
}

/// SO_REUSEADDR lets a restarted router bind at once despite TIME_WAIT;
/// SO_REUSEPORT (`reuse_port`) lets an old and a new process share the port.
fn bind(addr: SocketAddr, key: &'static str, reuse_port: bool) -> Result<TcpListener, AppError> {
    let err = |source| AppError::Bind { key, addr, source };
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    if reuse_port {
        socket.set_reuseport(true).map_err(err)?;
    }
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)
}

/// Closes expired idle server connections and tops pools up to
/// `min_pool_size`, once a second.
async fn reaper(shared: Arc<Shared>) {
    let period = Duration::from_secs(1);
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                shared.pools.reap(Instant::now(), period);
                for p in shared.pools.to_warm() {
                    tokio::spawn(p.warm());
                }
            }
            _ = shared.shutdown.wait() => return,
        }
    }
}
