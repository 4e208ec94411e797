//! docker-compose.yml (checked by docker-compose itself) and the files its services
//! mount: deploy/prometheus.yml (by promtool), deploy/alertmanager.yml (by amtool), the
//! Grafana provisioning, and the pipeline spanline runs there: two instances in one
//! consumer group, both scraped by Prometheus, wired to Alertmanager.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::support::{find_program, repo_root, require_or_skip, run_with_timeout};
use super::{
    read, yaml, ALERTMANAGER_CONFIG, COMPOSE_PIPELINE, DASHBOARD, DASHBOARD_PROVIDERS, DATASOURCES,
    DEFAULT_PIPELINE,
};
#[test]
fn grafana_provisioning_matches_compose_and_dashboard() {
    let compose = yaml("docker-compose.yml");
    let grafana = &compose["services"]["grafana"];
    assert_eq!(grafana["image"].as_str(), Some("grafana/grafana:11.3.0"));
    let volumes: Vec<&str> = grafana["volumes"]
        .as_sequence()
        .expect("grafana volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    // host path -> container path, and every host path exists
    let mounts: BTreeMap<&str, &str> = volumes
        .iter()
        .map(|v| {
            let mut parts = v.split(':');
            let (host, container) = (parts.next().unwrap(), parts.next().expect("container path"));
            assert!(repo_root().join(host).exists(), "{host} does not exist");
            (host, container)
        })
        .collect();

    let datasources = yaml(DATASOURCES);
    let prometheus = &datasources["datasources"][0];
    assert_eq!(prometheus["type"].as_str(), Some("prometheus"));
    assert_eq!(prometheus["uid"].as_str(), Some("prometheus"));
    assert_eq!(prometheus["url"].as_str(), Some("http://prometheus:9090"));
    assert_eq!(prometheus["isDefault"].as_bool(), Some(true));
    assert!(compose["services"]["prometheus"].is_mapping());

    let providers = yaml(DASHBOARD_PROVIDERS);
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"].as_str(), Some("file"));
    let path = provider["options"]["path"].as_str().expect("provider path");
    assert_eq!(mounts.get("./deploy/grafana/dashboards"), Some(&path));
    assert_eq!(
        mounts.get("./deploy/grafana/provisioning/datasources"),
        Some(&"/etc/grafana/provisioning/datasources")
    );
    assert_eq!(
        mounts.get("./deploy/grafana/provisioning/dashboards"),
        Some(&"/etc/grafana/provisioning/dashboards")
    );
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].as_str();
    assert_eq!(home, Some(format!("{path}/spanline.json").as_str()));
    assert!(Path::new(&repo_root().join(DASHBOARD)).is_file());
}

#[test]
fn compose_file_is_valid() {
    let found = find_program("docker-compose");
    if !require_or_skip(
        "docker-compose (apt-get install docker-compose)",
        found.is_some(),
    ) {
        return;
    }
    let mut cmd = Command::new(found.unwrap());
    cmd.current_dir(repo_root())
        .args(["-f", "docker-compose.yml", "config", "-q"]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "docker-compose config: {}\n{}",
        out.status,
        out.output()
    );
}

#[test]
fn prometheus_config_is_valid() {
    let found = find_program("promtool");
    if !require_or_skip("promtool (apt-get install prometheus)", found.is_some()) {
        return;
    }
    let mut cmd = Command::new(found.unwrap());
    cmd.current_dir(repo_root())
        .args(["check", "config", "deploy/prometheus.yml"]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "promtool check config: {}\n{}",
        out.status,
        out.output()
    );
}

#[test]
fn alertmanager_config_is_valid() {
    let found = find_program("amtool");
    if !require_or_skip(
        "amtool (apt-get install prometheus-alertmanager)",
        found.is_some(),
    ) {
        return;
    }
    let mut cmd = Command::new(found.unwrap());
    cmd.current_dir(repo_root())
        .args(["check-config", ALERTMANAGER_CONFIG]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "amtool check-config: {}\n{}",
        out.status,
        out.output()
    );
}

/// A compose service's `environment` as a map (compose allows a map or `K=V` items).
fn compose_environment(service: &serde_yaml::Value) -> BTreeMap<String, String> {
    let env = &service["environment"];
    if let Some(map) = env.as_mapping() {
        return map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_yaml::Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap().trim().to_string(),
                };
                (k.as_str().expect("variable name").to_string(), v)
            })
            .collect();
    }
    env.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|item| item.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A compose service's `volumes` as host path -> container path.
fn compose_mounts(service: &serde_yaml::Value) -> BTreeMap<String, String> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .map(|v| {
            let mut parts = v.split(':');
            let host = parts.next().unwrap().to_string();
            (host, parts.next().expect("container path").to_string())
        })
        .collect()
}

/// The compose services that run a pipeline (`spanline run …`), by name.
fn spanline_instances(compose: &serde_yaml::Value) -> BTreeMap<String, serde_yaml::Value> {
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .filter(|(_, service)| service["command"][0].as_str() == Some("run"))
        .map(|(name, service)| {
            let name = name.as_str().expect("service name").to_string();
            (name, service.clone())
        })
        .collect()
}

/// The compose pipeline loaded with a service's environment.
fn instance_config(service: &serde_yaml::Value) -> spanline::config::PipelineConfig {
    let env = compose_environment(service);
    spanline::config::load_str(&read(COMPOSE_PIPELINE), |k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("{COMPOSE_PIPELINE} with the compose environment:\n{e}"))
}

#[test]
fn compose_wires_spanline_to_alertmanager_and_the_webhook() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    let instances = spanline_instances(&compose);
    assert!(!instances.is_empty(), "no service runs `spanline run`");

    // every instance runs the notifying pipeline, with its Alertmanager's address
    let file_name = Path::new(COMPOSE_PIPELINE)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let mut config = None;
    for (name, spanline) in &instances {
        let mounts = compose_mounts(spanline);
        let pipelines_dir = mounts
            .get("./pipelines")
            .unwrap_or_else(|| panic!("./pipelines not mounted into {name}"));
        let command: Vec<&str> = spanline["command"]
            .as_sequence()
            .expect("spanline command")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(
            command,
            ["run", format!("{pipelines_dir}/{file_name}").as_str()],
            "{name}"
        );
        assert!(
            spanline["depends_on"]["alertmanager"].is_mapping(),
            "{name} should start after alertmanager"
        );
        let loaded = instance_config(spanline);
        let notify = loaded.outputs.notify.as_ref().expect("outputs.notify");
        let url = &notify
            .alertmanager
            .as_ref()
            .expect("notify.alertmanager")
            .url;
        assert_eq!(url, "http://alertmanager:9093", "{name}");
        config = Some(loaded);
    }
    let config = config.expect("a spanline instance");

    // Alertmanager reads deploy/alertmanager.yml and is reachable on the host
    let alertmanager = &services["alertmanager"];
    assert_eq!(
        alertmanager["image"].as_str(),
        Some("prom/alertmanager:v0.27.0")
    );
    assert_eq!(
        compose_mounts(alertmanager)
            .get(&format!("./{ALERTMANAGER_CONFIG}"))
            .map(String::as_str),
        Some("/etc/alertmanager/alertmanager.yml"),
        "the image's default --config.file"
    );
    assert!(
        alertmanager["command"].is_null(),
        "keep the image's default command"
    );
    let ports: Vec<&str> = alertmanager["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .collect();
    assert_eq!(ports, ["9093:9093"]);

    // its route groups by incident (one notification per fault), and every receiver it
    // names exists; the example webhook is a compose service
    let am = yaml(ALERTMANAGER_CONFIG);
    let group_by: Vec<&str> = am["route"]["group_by"]
        .as_sequence()
        .expect("route.group_by")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(group_by, ["incident"]);
    let receivers: BTreeMap<&str, &serde_yaml::Value> = am["receivers"]
        .as_sequence()
        .expect("receivers")
        .iter()
        .map(|r| (r["name"].as_str().expect("receiver name"), r))
        .collect();
    assert_eq!(am["route"]["receiver"].as_str(), Some("webhook"));
    let webhook = receivers.get("webhook").expect("receiver webhook");
    let hook_url = webhook["webhook_configs"][0]["url"]
        .as_str()
        .expect("webhook url");
    let hook_url = reqwest::Url::parse(hook_url).unwrap();
    let host = hook_url.host_str().unwrap();
    assert!(
        services[host].is_mapping(),
        "the webhook {hook_url} is no compose service"
    );
    assert_eq!(
        alertmanager["depends_on"][host]["condition"].as_str(),
        Some("service_started")
    );
    let hook_env = compose_environment(&services[host]);
    assert_eq!(
        hook_env.get("HTTP_PORT").map(String::as_str),
        hook_url.port().map(|p| p.to_string()).as_deref(),
        "the echo service listens on HTTP_PORT"
    );

    // the topics service creates every topic the pipeline reads and writes
    let create = services["topics"]["command"][0]
        .as_str()
        .expect("topics command");
    let created: BTreeSet<&str> = create
        .strip_prefix("for t in ")
        .and_then(|rest| rest.split(';').next())
        .expect("`for t in …;` in the topics command")
        .split_whitespace()
        .collect();
    let mut needed: BTreeSet<String> = BTreeSet::new();
    for source in &config.sources {
        needed.extend(source.topics.iter().cloned());
        needed.extend(source.dead_letter_topic.iter().cloned());
    }
    let outputs = &config.outputs;
    needed.insert(outputs.traces.topic.clone());
    for output in [&outputs.late, &outputs.aggregates, &outputs.alerts]
        .into_iter()
        .flatten()
    {
        needed.insert(output.topic.clone());
    }
    let missing: Vec<&String> = needed
        .iter()
        .filter(|t| !created.contains(t.as_str()))
        .collect();
    assert!(missing.is_empty(), "topics not created: {missing:?}");
}

/// Scale-out in compose: two instances of the pipeline in one consumer group, each with
/// its own instance id, state volume and host port, and Prometheus scraping each of them
/// (one `instance` label per target, so sums over the group are right).
#[test]
fn compose_runs_two_instances_in_one_group_scraped_by_prometheus() {
    let compose = yaml("docker-compose.yml");
    let instances = spanline_instances(&compose);
    assert_eq!(
        instances.len(),
        2,
        "two spanline instances: {:?}",
        instances.keys().collect::<Vec<_>>()
    );
    let (mut groups, mut ids, mut host_ports, mut state) = (
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
    );
    let mut targets = BTreeSet::new();
    for (name, service) in &instances {
        assert!(
            service["deploy"]["replicas"].as_u64().unwrap_or(1) == 1,
            "{name}: replicas would share one instance id"
        );
        let config = instance_config(service);
        groups.insert(config.kafka.group_id.clone());
        let id =
            config.kafka.instance_id.clone().unwrap_or_else(|| {
                panic!("{name}: kafka.instance_id not set (SPANLINE_INSTANCE_ID)")
            });
        assert!(
            ids.insert(id.clone()),
            "{name}: instance id {id} taken twice"
        );
        // one host port each, published onto the port /metrics listens on
        let listen = config.http.listen.port();
        let ports: Vec<&str> = service["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .collect();
        assert_eq!(ports.len(), 1, "{name}: ports {ports:?}");
        let (host, container) = ports[0].split_once(':').expect("host:container");
        assert_eq!(container, listen.to_string(), "{name}: {}", ports[0]);
        assert!(
            host_ports.insert(host.to_string()),
            "{name}: host port {host} taken twice"
        );
        // detector snapshots on a volume of its own
        if let Some(dir) = config.detect().and_then(|d| d.snapshot_dir.as_ref()) {
            let volume = compose_mounts(service)
                .into_iter()
                .find(|(_, container)| Path::new(container) == dir.as_path())
                .map(|(host, _)| host)
                .unwrap_or_else(|| panic!("{name}: {} is on no volume", dir.display()));
            assert!(
                state.insert(volume.clone()),
                "{name}: volume {volume} shared"
            );
        }
        targets.insert(format!("{name}:{listen}"));
    }
    assert_eq!(groups.len(), 1, "one consumer group: {groups:?}");

    // Prometheus scrapes every instance (and nothing else) in the spanline job
    let prometheus = yaml("deploy/prometheus.yml");
    let job = prometheus["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"].as_str() == Some("spanline"))
        .expect("a spanline scrape job");
    let scraped: BTreeSet<String> = job["static_configs"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|c| c["targets"].as_sequence().into_iter().flatten())
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    assert_eq!(scraped, targets);
    assert!(
        compose_mounts(&compose["services"]["prometheus"]).contains_key("./deploy/prometheus.yml")
    );
}

#[test]
fn compose_pipeline_is_the_default_plus_notify() {
    let mut compose: serde_yaml::Value = yaml(COMPOSE_PIPELINE);
    let default: serde_yaml::Value = yaml(DEFAULT_PIPELINE);
    assert!(default["outputs"]["notify"].is_null());
    let notify = compose["outputs"]
        .as_mapping_mut()
        .expect("outputs")
        .remove("notify")
        .expect("outputs.notify");
    assert!(notify["alertmanager"]["url"].is_string());
    assert_eq!(
        compose, default,
        "{COMPOSE_PIPELINE} should differ from {DEFAULT_PIPELINE} only by outputs.notify"
    );
    // and without any variable set it loads, notifying the port compose publishes
    let config = spanline::config::load_str(&read(COMPOSE_PIPELINE), |_| None)
        .unwrap_or_else(|e| panic!("{COMPOSE_PIPELINE}:\n{e}"));
    let am = config.outputs.notify.unwrap().alertmanager.unwrap();
    assert_eq!(am.url, "http://localhost:9093");
}
