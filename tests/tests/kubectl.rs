//! The real kubectl, oldest and newest of those installed, against `stowage apiserver`
//! with the kubeconfig it generates.

use std::path::{Path, PathBuf};
use std::process::Command;

use stowage_tests::api::ApiProcess;
use tempfile::TempDir;

const MANIFESTS: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: csi.stowage.io
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-small
spec:
  capacity:
    storage: 5Gi
  accessModes: [ReadWriteOnce, ReadOnlyMany]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: local
  hostPath:
    path: /srv/pv-small
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: default
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
"#;

/// `kubectl.1.27` ... `kubectl.1.33`, which sit beside the real kubectl.
fn versioned_kubectls() -> Vec<PathBuf> {
    let Some(kubectl) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("kubectl"))
            .find(|path| path.exists())
    }) else {
        return Vec::new();
    };
    let Some(dir) = std::fs::canonicalize(&kubectl)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let minor = name.strip_prefix("kubectl.1.")?.parse().ok()?;
            Some((minor, entry.path()))
        })
        .collect();
    found.sort();
    match (found.first(), found.last()) {
        (Some(oldest), Some(newest)) if oldest.0 != newest.0 => {
            vec![oldest.1.clone(), newest.1.clone()]
        }
        (Some(only), _) => vec![only.1.clone()],
        _ => Vec::new(),
    }
}

struct Kubectl<'a> {
    binary: &'a Path,
    kubeconfig: &'a Path,
    home: &'a Path,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new(self.binary)
            .arg("--kubeconfig")
            .arg(self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.join("cache"))
            .args(args)
            .env("HOME", self.home)
            .output()
            .expect("run kubectl");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(
            output.status.success(),
            "{} {args:?} failed:\n{stdout}\n{stderr}",
            self.binary.display()
        );
        stdout
    }
}

/// Columns as kubectl prints them, with runs of spaces collapsed.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn kubectl_applies_lists_describes_and_deletes() {
    let kubectls = versioned_kubectls();
    assert!(
        kubectls.len() == 2,
        "this test needs the oldest and newest kubectl.1.NN beside the real kubectl on PATH \
         (machines of this kind have kubectl.1.27 ... kubectl.1.33); found {kubectls:?}"
    );
    let dir = TempDir::new().expect("tempdir");
    let (_server, _client) = ApiProcess::start(&dir.path().join("api"), &[]).await;
    let manifests = dir.path().join("manifests.yaml");
    std::fs::write(&manifests, MANIFESTS).expect("manifests");
    let manifests = manifests.to_string_lossy().to_string();

    for binary in &kubectls {
        println!("running {}", binary.display());
        let home = TempDir::new().expect("home");
        let kubectl = Kubectl {
            binary,
            kubeconfig: &dir.path().join("api/kubeconfig"),
            home: home.path(),
        };
        let applied = kubectl.run(&["apply", "-f", &manifests]);
        for line in [
            "storageclass.storage.k8s.io/local created",
            "persistentvolume/pv-small created",
            "persistentvolumeclaim/data created",
        ] {
            assert!(applied.contains(line), "{line} in {applied}");
        }
        let again = kubectl.run(&["apply", "-f", &manifests]);
        assert!(
            again.contains("persistentvolume/pv-small unchanged"),
            "{again}"
        );

        let listed = squeeze(&kubectl.run(&["get", "pv,pvc,sc"]));
        for expected in [
            "NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS REASON AGE",
            "persistentvolume/pv-small 5Gi RWO,ROX Delete Pending local",
            "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS AGE",
            "persistentvolumeclaim/data Pending local",
            "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE",
            "storageclass.storage.k8s.io/local (default) csi.stowage.io Delete WaitForFirstConsumer false",
        ] {
            assert!(listed.contains(expected), "{expected:?} in {listed}");
        }
        let short = squeeze(&kubectl.run(&["get", "pvc", "-o", "wide"]));
        assert!(
            short.contains("VOLUMEMODE") && short.contains("Filesystem"),
            "{short}"
        );

        let described = kubectl.run(&["describe", "pvc", "data"]);
        for expected in [
            "Name:",
            "data",
            "Namespace:",
            "default",
            "StorageClass:",
            "local",
            "Status:",
            "Pending",
        ] {
            assert!(described.contains(expected), "{expected} in {described}");
        }

        let deleted = kubectl.run(&["delete", "-f", &manifests]);
        assert!(
            deleted.contains("persistentvolumeclaim \"data\" deleted"),
            "{deleted}"
        );
        let after = kubectl.run(&["get", "pv,pvc,sc", "-o", "name"]);
        assert!(after.trim().is_empty(), "everything is gone: {after}");
    }
}
