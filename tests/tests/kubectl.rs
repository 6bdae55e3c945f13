//! The real kubectl, the oldest and newest versions the API server must serve (1.27
//! and 1.33), against `stowage apiserver` with the kubeconfig it generates.

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

/// The minor versions whose `kubectl.1.NN` sit beside the real kubectl on this kind of
/// machine and in CI: the API server is checked against the oldest and the newest.
const MINORS: std::ops::RangeInclusive<u32> = 27..=33;

/// `kubectl.1.27` and `kubectl.1.33`, from beside the real kubectl on PATH; a missing
/// kubectl or versioned kubectl fails the test, naming what is missing.
fn versioned_kubectls() -> [PathBuf; 2] {
    let kubectl = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("kubectl"))
                .find(|path| path.exists())
        })
        .expect("kubectl on PATH: this test runs the versioned kubectls installed beside it");
    let dir = std::fs::canonicalize(&kubectl)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| panic!("the directory of {}", kubectl.display()));
    let path = |minor: u32| dir.join(format!("kubectl.1.{minor}"));
    let missing: Vec<String> = MINORS
        .filter(|minor| !path(*minor).is_file())
        .map(|minor| path(minor).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "versioned kubectls missing beside {} (machines of this kind and CI have \
         kubectl.1.{}...kubectl.1.{}): {missing:?}",
        kubectl.display(),
        MINORS.start(),
        MINORS.end()
    );
    [path(*MINORS.start()), path(*MINORS.end())]
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
