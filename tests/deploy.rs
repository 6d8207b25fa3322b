//! The deployment files hold together: docker/compose.yaml (no Docker
//! engine here, so its structure is checked) and the Kubernetes manifests
//! in docker/k8s/ (each router.toml they carry is loaded by pgrouter's own
//! config loader, ports and probes match it).

use pgrouter::config::Config;
use serde_yaml::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let mut v = Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            v.apply_merge()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            v
        })
        .collect()
}

use serde::Deserialize;

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for k in path {
        cur = &cur[*k];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string in {v:?}"))
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

#[test]
fn compose_file_is_complete() {
    let docker = root().join("docker");
    let compose = yaml_docs(&docker.join("compose.yaml")).remove(0);
    let services = compose["services"]
        .as_mapping()
        .unwrap_or_else(|| panic!("no services"));
    let names: Vec<&str> = services.keys().filter_map(Value::as_str).collect();
    for want in [
        "primary",
        "replica1",
        "replica2",
        "pgrouter",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(&want), "service {want} missing: {names:?}");
    }
    for (name, s) in services {
        let name = name.as_str().unwrap_or_default();
        assert!(
            s.get("image").is_some() || s.get("build").is_some(),
            "{name}: no image or build"
        );
        // Every file mounted from the repository exists.
        for v in s["volumes"].as_sequence().into_iter().flatten() {
            let spec = v.as_str().unwrap_or_else(|| panic!("{name}: volume {v:?}"));
            let src = spec.split(':').next().unwrap_or_default();
            if src.starts_with('.') {
                assert!(docker.join(src).exists(), "{name}: {src} does not exist");
            }
        }
    }
    for r in ["replica1", "replica2"] {
        assert_eq!(
            str_at(
                &compose,
                &["services", r, "depends_on", "primary", "condition"]
            ),
            "service_healthy"
        );
    }
    let build = &compose["services"]["pgrouter"]["build"];
    assert!(docker
        .join(str_at(build, &["context"]))
        .join(str_at(build, &["dockerfile"]))
        .exists());
    // The router's config loads, and names the compose services.
    let config =
        Config::load(&docker.join("compose/router.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(names.contains(&config.primary.host.as_str()));
    assert_eq!(config.replicas.len(), 2);
    for r in &config.replicas {
        assert!(names.contains(&r.host.as_str()), "replica host {}", r.host);
    }
    let ports: Vec<&str> = compose["services"]["pgrouter"]["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for addr in [&config.server.listen, &config.server.http_listen] {
        let p = port_of(addr).to_string();
        assert!(
            ports.iter().any(|m| m.ends_with(&format!(":{p}"))),
            "port {p} not published"
        );
    }
    // Prometheus scrapes pgrouter's HTTP port and loads the alert rules.
    let prom = yaml_docs(&docker.join("compose/prometheus.yml")).remove(0);
    let targets = prom["scrape_configs"][0]["static_configs"][0]["targets"][0].as_str();
    assert_eq!(
        targets,
        Some(format!("pgrouter:{}", port_of(&config.server.http_listen)).as_str())
    );
    // Grafana loads the dashboard from where it is mounted.
    let provider = yaml_docs(&docker.join("compose/grafana-dashboards.yaml")).remove(0);
    let dir = str_at(&provider["providers"][0]["options"], &["path"]);
    let mounted = compose["services"]["grafana"]["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|v| v.contains("pgrouter.json:") && v.contains(dir));
    assert!(mounted, "the dashboard is not mounted under {dir}");
}

#[test]
fn kubernetes_manifests_fit_together() {
    let dir = root().join("docker/k8s");
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.extension().is_some_and(|e| e == "yaml") {
            docs.extend(yaml_docs(&path));
        }
    }
    let find = |kind: &str| -> &Value {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    for d in &docs {
        for key in ["apiVersion", "kind"] {
            assert!(d[key].as_str().is_some(), "{key} missing in {d:?}");
        }
        assert!(d["metadata"]["name"].as_str().is_some());
    }
    let deploy = find("Deployment");
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deploy["spec"]["selector"]["matchLabels"], labels);
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        str_at(container, &["readinessProbe", "httpGet", "path"]),
        "/health/ready"
    );
    assert_eq!(
        str_at(container, &["livenessProbe", "httpGet", "path"]),
        "/health/live"
    );
    let port = |name: &str| -> u64 {
        container["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    for probe in ["readinessProbe", "livenessProbe"] {
        port(str_at(container, &[probe, "httpGet", "port"]));
    }
    // The config the pods run: from the ConfigMap, mounted where --config
    // points.
    let cm = find("ConfigMap");
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .unwrap_or_else(|| panic!("no --config in {args:?}"));
    let mount = container["volumeMounts"][0].clone();
    let (dir, file) = config_path.rsplit_once('/').unwrap_or_default();
    assert_eq!(mount["mountPath"].as_str(), Some(dir));
    let volume = &deploy["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(volume["name"], mount["name"]);
    assert_eq!(volume["configMap"]["name"], cm["metadata"]["name"]);
    let text = cm["data"][file]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap has no {file}"));
    let config = Config::parse(text, "docker/k8s/configmap.yaml").unwrap_or_else(|e| panic!("{e}"));
    config.validate().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(port_of(&config.server.listen), port("postgres"));
    assert_eq!(port_of(&config.server.http_listen), port("http"));
    assert!(
        config.server.listen.starts_with("0.0.0.0:"),
        "pods must listen on all interfaces"
    );
    // SIGTERM drains within shutdown_timeout, before Kubernetes kills.
    let grace = deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    assert!(config.server.shutdown_timeout.get().as_secs() < grace);
    // The Service, autoscaler and disruption budget select these pods.
    let svc = find("Service");
    assert_eq!(&svc["spec"]["selector"], labels);
    for p in svc["spec"]["ports"].as_sequence().into_iter().flatten() {
        port(p["targetPort"].as_str().unwrap_or_default());
    }
    let hpa = find("HorizontalPodAutoscaler");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deploy["metadata"]["name"]
    );
    assert_eq!(
        str_at(&hpa["spec"]["metrics"][0], &["resource", "name"]),
        "cpu"
    );
    assert_eq!(
        &find("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        labels
    );
}
