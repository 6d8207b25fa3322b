//! A throwaway PostgreSQL primary with streaming replicas, made with initdb
//! and pg_basebackup in a temp dir on free ports. When run as root the
//! servers run as the `postgres` OS user (PostgreSQL refuses root).
//! Dropping the cluster stops the servers and removes the directory; a
//! watchdog process does the same if this process dies without dropping it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("PostgreSQL server binaries not found (looked for initdb via pg_config --bindir and /usr/lib/postgresql/*/bin); install them with: apt-get install -y postgresql")]
    NoPostgres,
    #[error("`{cmd}` failed ({status}): {output}")]
    Command {
        cmd: String,
        status: String,
        output: String,
    },
    #[error("cluster setup: {0}")]
    Setup(String),
    #[error("cluster I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub struct PgNode {
    pub name: String,
    pub port: u16,
    pub datadir: PathBuf,
}

pub struct PgCluster {
    pub dir: PathBuf,
    pub bindir: PathBuf,
    pub primary: PgNode,
    pub replicas: Vec<PgNode>,
    /// `Some("postgres")` when this process is root.
    run_as: Option<String>,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16, ClusterError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Finds the directory holding initdb, pg_ctl, postgres, pg_basebackup.
pub fn find_bindir() -> Result<PathBuf, ClusterError> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("initdb").exists() {
            return Ok(p);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or(ClusterError::NoPostgres)
}

impl PgCluster {
    /// Starts a primary and `replicas` streaming replicas; returns once every
    /// replica is streaming.
    pub fn start(replicas: usize) -> Result<PgCluster, ClusterError> {
        let bindir = find_bindir()?;
        let run_as = is_root().then(|| "postgres".to_string());
        let dir = std::env::temp_dir().join(format!(
            "pgrouter-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut cluster = PgCluster {
            primary: PgNode {
                name: "primary".into(),
                port: free_port()?,
                datadir: dir.join("primary"),
            },
            replicas: Vec::new(),
            dir,
            bindir,
            run_as,
        };
        if cluster.run_as.is_some() {
            cluster.run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&cluster.dir),
                false,
            )?;
        }
        cluster.spawn_watchdog();
        cluster.init_primary()?;
        for i in 1..=replicas {
            cluster.add_replica(&format!("r{i}"))?;
        }
        cluster.wait_streaming(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn tool(&self, name: &str) -> Command {
        let bin = self.bindir.join(name);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(bin);
                c
            }
            None => Command::new(bin),
        }
    }

    fn run(&self, cmd: &mut Command, _quiet: bool) -> Result<String, ClusterError> {
        let out = cmd.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            return Err(ClusterError::Command {
                cmd: format!("{cmd:?}"),
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn init_primary(&self) -> Result<(), ClusterError> {
        let d = &self.primary.datadir;
        self.run(
            self.tool("initdb").arg("-D").arg(d).args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]),
            true,
        )?;
        std::fs::write(
            d.join("pg_hba.conf"),
            "local all all trust\n\
             host replication all 127.0.0.1/32 trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        self.append_conf(
            d,
            &format!(
                "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 max_connections = 300\nshared_buffers = 32MB\nfsync = off\nfull_page_writes = off\n\
                 wal_level = replica\nmax_wal_senders = 10\nwal_keep_size = '128MB'\nhot_standby = on\n\
                 hot_standby_feedback = on\nlog_min_messages = warning\nlog_line_prefix = '%m [%p] %u@%d '\n",
                self.primary.port,
                self.dir.display()
            ),
        )?;
        self.pg_ctl_start(&self.primary)
    }

    fn append_conf(&self, datadir: &Path, text: &str) -> Result<(), ClusterError> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(datadir.join("postgresql.conf"))?;
        f.write_all(text.as_bytes())?;
        Ok(())
    }

    fn pg_ctl_start(&self, node: &PgNode) -> Result<(), ClusterError> {
        let log = self.dir.join(format!("{}.log", node.name));
        self.run(
            self.tool("pg_ctl")
                .arg("-D")
                .arg(&node.datadir)
                .arg("-l")
                .arg(log)
                .args(["-w", "-t", "60", "start"]),
            true,
        )
        .map(|_| ())
    }

    fn add_replica(&mut self, name: &str) -> Result<(), ClusterError> {
        let node = PgNode {
            name: name.into(),
            port: free_port()?,
            datadir: self.dir.join(name),
        };
        self.run(
            self.tool("pg_basebackup")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
                .arg(self.primary.port.to_string())
                .arg("-D")
                .arg(&node.datadir)
                .args(["-R", "-X", "stream", "--no-sync", "-c", "fast"]),
            true,
        )?;
        self.append_conf(&node.datadir, &format!("port = {}\n", node.port))?;
        self.pg_ctl_start(&node)?;
        self.replicas.push(node);
        Ok(())
    }

    fn wait_streaming(&self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            let n: usize = self
                .psql(
                    self.primary.port,
                    "postgres",
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                )?
                .trim()
                .parse()
                .unwrap_or(0);
            if n >= self.replicas.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Setup(format!(
                    "only {n} of {} replicas streaming after {timeout:?}",
                    self.replicas.len()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs SQL as the superuser on the server at `port`; returns unaligned output.
    pub fn psql(&self, port: u16, db: &str, sql: &str) -> Result<String, ClusterError> {
        self.run(
            Command::new(self.bindir.join("psql"))
                .args([
                    "-X",
                    "-A",
                    "-t",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-p",
                ])
                .arg(port.to_string())
                .args(["-d", db, "-c", sql]),
            true,
        )
    }

    /// Creates a login role with a SCRAM password.
    pub fn create_user(&self, name: &str, password: &str) -> Result<(), ClusterError> {
        self.psql(
            self.primary.port,
            "postgres",
            &format!(
                "CREATE ROLE \"{name}\" LOGIN PASSWORD '{}'",
                password.replace('\'', "''")
            ),
        )
        .map(|_| ())
    }

    /// Appends settings to one server's postgresql.conf and reloads it.
    pub fn configure(&self, node: &PgNode, text: &str) -> Result<(), ClusterError> {
        self.append_conf(&node.datadir, &format!("{text}\n"))?;
        self.psql(node.port, "postgres", "SELECT pg_reload_conf()")
            .map(|_| ())
    }

    /// Turns TLS on for one server with the given PEM certificate and key
    /// (written into its data directory, owned like it, key mode 0600).
    pub fn enable_ssl(
        &self,
        node: &PgNode,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<(), ClusterError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let owner = std::fs::metadata(&node.datadir)?;
        for (name, text, mode) in [
            ("server.crt", cert_pem, 0o644),
            ("server.key", key_pem, 0o600),
        ] {
            let path = node.datadir.join(name);
            std::fs::write(&path, text)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()))?;
        }
        self.configure(
            node,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'",
        )
    }

    /// Appends settings to every replica's postgresql.conf and reloads them
    /// (e.g. `recovery_min_apply_delay = '1s'` to make real lag).
    pub fn configure_replicas(&self, text: &str) -> Result<(), ClusterError> {
        for r in &self.replicas {
            self.configure(r, text)?;
        }
        Ok(())
    }

    /// The `[primary]` and `[[replicas]]` sections of a router.toml that
    /// points at this cluster.
    pub fn backends_toml(&self) -> String {
        let mut text = format!(
            "[primary]\nhost = \"127.0.0.1\"\nport = {}\n",
            self.primary.port
        );
        for r in &self.replicas {
            text.push_str(&format!(
                "\n[[replicas]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n",
                r.name, r.port
            ));
        }
        text
    }

    /// Puts `rule` first in the primary's pg_hba.conf and reloads it.
    pub fn prepend_hba_rule(&self, rule: &str) -> Result<(), ClusterError> {
        let path = self.primary.datadir.join("pg_hba.conf");
        let old = std::fs::read_to_string(&path)?;
        std::fs::write(&path, format!("{rule}\n{old}"))?;
        self.psql(self.primary.port, "postgres", "SELECT pg_reload_conf()")
            .map(|_| ())
    }

    /// Creates a database and waits until every replica has it.
    pub fn create_database(&self, name: &str, owner: &str) -> Result<(), ClusterError> {
        self.psql(
            self.primary.port,
            "postgres",
            &format!("CREATE DATABASE \"{name}\" OWNER \"{owner}\""),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for r in &self.replicas {
            let q = format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'");
            while self.psql(r.port, "postgres", &q)?.trim() != "1" {
                if Instant::now() > deadline {
                    return Err(ClusterError::Setup(format!(
                        "replica {} never saw database {name}",
                        r.name
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Stops a server at once (`pg_ctl stop -m immediate`: a crash, for
    /// the fault tests).
    pub fn kill(&self, node: &PgNode) -> Result<(), ClusterError> {
        self.run(
            self.tool("pg_ctl").arg("-D").arg(&node.datadir).args([
                "-m",
                "immediate",
                "-w",
                "stop",
            ]),
            true,
        )
        .map(|_| ())
    }

    /// Starts a stopped server again (a standby resumes streaming).
    pub fn restart(&self, node: &PgNode) -> Result<(), ClusterError> {
        self.pg_ctl_start(node)
    }

    /// Promotes a standby to a primary and waits until it is one.
    pub fn promote(&self, node: &PgNode) -> Result<(), ClusterError> {
        self.run(
            self.tool("pg_ctl")
                .arg("-D")
                .arg(&node.datadir)
                .args(["-w", "-t", "60", "promote"]),
            true,
        )
        .map(|_| ())
    }

    /// Sends `signal` ("STOP", "CONT") to a server's postmaster and all its
    /// processes: SIGSTOP makes a hung server that still accepts TCP.
    pub fn signal(&self, node: &PgNode, signal: &str) -> Result<(), ClusterError> {
        let pidfile = std::fs::read_to_string(node.datadir.join("postmaster.pid"))?;
        let pid: u32 = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| ClusterError::Setup(format!("no postmaster pid for {}", node.name)))?;
        let mut pids = vec![pid];
        pids.extend(children_of(pid));
        let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
        self.run(
            Command::new("sh").args(["-c", &format!("kill -{signal} {}", list.join(" "))]),
            true,
        )
        .map(|_| ())
    }

    fn stop_node(&self, node: &PgNode) {
        let _ = self.run(
            self.tool("pg_ctl").arg("-D").arg(&node.datadir).args([
                "-m",
                "immediate",
                "-w",
                "stop",
            ]),
            true,
        );
    }

    /// A shell loop that outlives us: when this process is gone, it stops the
    /// servers and removes the directory (tests keep the cluster in a static,
    /// which is never dropped).
    fn spawn_watchdog(&self) {
        let runas = match &self.run_as {
            Some(u) => format!("runuser -u {u} -- "),
            None => String::new(),
        };
        let dir = self.dir.display().to_string();
        let pg_ctl = self.bindir.join("pg_ctl").display().to_string();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             for d in '{dir}'/*/; do [ -f \"$d/postmaster.pid\" ] && {runas}'{pg_ctl}' -D \"$d\" -m immediate stop >/dev/null 2>&1; done; \
             rm -rf '{dir}'",
            pid = std::process::id()
        );
        use std::os::unix::process::CommandExt;
        let _ = Command::new("sh")
            .args(["-c", &script])
            // Its own process group: a signal to ours (Ctrl-C, a CI runner
            // killing the group) must not take the watchdog down with us.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        for r in &self.replicas {
            self.stop_node(r);
        }
        self.stop_node(&self.primary);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Direct children of `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    // "pid (comm) state ppid ...": comm may contain spaces.
                    let after = stat.rsplit_once(')')?.1.to_string();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}
