//! The deployment as kubectl renders it (`kubectl kustomize deploy/`): every flag a
//! Stowage container passes is one its subcommand accepts, and the ports the flags
//! name are the ports the probes use.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use stowage_tests::process::{stowage_bin, stowage_node_bin};

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn render(dir: &std::path::Path) -> Vec<Value> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl is installed (the test machine has it)");
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf8");
    serde_saphyr::from_multiple(&text).expect("rendered YAML")
}

/// The long flags `<program> --help` lists, where program is `stowage <subcommand>`
/// or `stowage-node`.
fn accepted_flags(program: &[&str]) -> BTreeSet<String> {
    let binary = match program[0] {
        "stowage-node" => stowage_node_bin(),
        _ => stowage_bin(),
    };
    let output = Command::new(binary)
        .args(&program[1..])
        .arg("--help")
        .output()
        .expect("run stowage");
    assert!(output.status.success(), "{program:?} --help");
    String::from_utf8_lossy(&output.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter_map(|word| word.strip_prefix("--"))
        .map(|flag| {
            flag.split(['=', '<'])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .filter(|flag| !flag.is_empty())
        .collect()
}

/// What a container runs, split into the program (`stowage <subcommand>`, or the
/// binary its `command` names) and the flags after it.
fn invocation(container: &Value) -> (Vec<&str>, Vec<&str>) {
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match container["command"][0].as_str() {
        Some(command) => {
            let binary = command.rsplit('/').next().unwrap_or(command);
            (vec![binary], args)
        }
        None => (vec!["stowage", args[0]], args[1..].to_vec()),
    }
}

/// Every container of every workload, with its workload's name.
fn containers(objects: &[Value]) -> Vec<(String, Value)> {
    objects
        .iter()
        .flat_map(|object| {
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            object["spec"]["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |c| (name.clone(), c))
        })
        .collect()
}

#[test]
fn every_stowage_container_passes_flags_its_subcommand_accepts() {
    let objects = render(&deploy_dir());
    let ours: Vec<(String, Value)> = containers(&objects)
        .into_iter()
        .filter(|(_, c)| {
            c["image"]
                .as_str()
                .is_some_and(|i| i.contains("stowage/stowage"))
        })
        .collect();
    let programs: BTreeSet<String> = ours
        .iter()
        .map(|(_, c)| invocation(c).0.join(" "))
        .collect();
    assert_eq!(
        programs,
        BTreeSet::from([
            "stowage controller".to_string(),
            "stowage provisioner".to_string(),
            "stowage-node".to_string(),
        ]),
        "the StatefulSet and the DaemonSet run these"
    );
    for (workload, container) in &ours {
        let what = format!("{workload}/{}", container["name"]);
        let (program, args) = invocation(container);
        let accepted = accepted_flags(&program);
        let env: BTreeSet<&str> = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .collect();
        for arg in &args {
            let flag = arg
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("{what}: {arg:?} is not a --flag"));
            let name = flag.split('=').next().unwrap_or_default();
            assert!(
                accepted.contains(name),
                "{what}: {} does not accept --{name} (accepts {accepted:?})",
                program.join(" ")
            );
            // $(VAR) expands only from the container's own env.
            if let Some(start) = arg.find("$(") {
                let var = &arg[start + 2..arg[start..].find(')').map_or(arg.len(), |e| start + e)];
                assert!(env.contains(var), "{what}: {arg} uses ${var}, not in env");
            }
        }
        let metrics_port = args
            .iter()
            .find_map(|a| a.strip_prefix("--metrics-address="))
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{what} serves metrics"));
        let declared: Vec<(&str, u64)> = container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["name"].as_str()?, p["containerPort"].as_u64()?)))
            .collect();
        let readiness_port = &container["readinessProbe"]["httpGet"]["port"];
        let readiness_port = readiness_port.as_u64().or_else(|| {
            let name = readiness_port.as_str()?;
            declared.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
        });
        assert_eq!(
            readiness_port,
            Some(metrics_port),
            "{what}: readiness asks /readyz where --metrics-address serves it"
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{what}"
        );
    }
}

#[test]
fn the_node_plugin_socket_is_where_the_kubelet_is_told_it_is() {
    let objects = render(&deploy_dir());
    let node = objects
        .iter()
        .find(|o| o["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let spec = &node["spec"]["template"]["spec"];
    let socket_dir = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "socket-dir")
        .and_then(|v| v["hostPath"]["path"].as_str())
        .expect("socket-dir is a hostPath");
    let registrar = spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "node-driver-registrar")
        .expect("registrar");
    let registration = registrar["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("--kubelet-registration-path="))
        .expect("registration path");
    assert_eq!(registration, format!("{socket_dir}/csi.sock"));
    let kubelet_mount = spec["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/kubelet")
        .expect("the kubelet dir is mounted");
    assert_eq!(kubelet_mount["mountPropagation"], "Bidirectional");
}

#[test]
fn the_examples_render() {
    let objects = render(&deploy_dir().join("examples"));
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in ["PersistentVolume", "PersistentVolumeClaim", "Pod"] {
        assert!(kinds.contains(kind), "{kind} in {kinds:?}");
    }
}
