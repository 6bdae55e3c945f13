//! Who may do what on the embedded API server, through the real kube-rs client: a
//! token per identity from the token file, RBAC enforced on every request with
//! upstream's 403s, and the bound on one identity's watches.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, PostParams, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use stowage_tests::api::{InProcessApi, client_from};
use tempfile::TempDir;

const ALICE: &str = "alice-token-0123456789abcdef0123456789abcdef";
const ROBOT: &str = "robot-token-0123456789abcdef0123456789abcdef";

/// A server whose token file names alice (no groups) and a service account.
async fn started() -> (TempDir, InProcessApi) {
    let dir = TempDir::new().expect("tempdir");
    std::fs::write(
        dir.path().join("tokens.csv"),
        format!(
            "{ALICE},alice,u-alice\n{ROBOT},system:serviceaccount:robots:r2,u-r2,\"builders\"\n"
        ),
    )
    .expect("token file");
    let api = InProcessApi::start(dir.path()).await;
    (dir, api)
}

/// A client that presents `token`, through a kubeconfig the server's own writer made.
async fn client_with(dir: &Path, api: &InProcessApi, token: &str) -> Client {
    client_from(&kubeconfig_for(dir, api, token)).await
}

fn kubeconfig_for(dir: &Path, api: &InProcessApi, token: &str) -> PathBuf {
    let path = dir.join(format!("{}.kubeconfig", &token[..5]));
    let ca = apiserver::kubeconfig::ca_certificate(dir).expect("CA");
    apiserver::kubeconfig::write(&path, api.address, token, &ca).expect("kubeconfig");
    path
}

/// [`client_with`], without kube-rs's own retries of 429s, to see the first answer.
async fn unretried_client_with(dir: &Path, api: &InProcessApi, token: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_for(dir, api, token)).expect("read");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("config");
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

fn object<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("object")
}

/// Reason, code and message of a refused call.
fn refusal<T: std::fmt::Debug>(result: kube::Result<T>) -> (String, u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.reason, status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn forbidden<T: std::fmt::Debug>(result: kube::Result<T>) -> String {
    let (reason, code, message) = refusal(result);
    assert_eq!((reason.as_str(), code), ("Forbidden", 403), "{message}");
    message
}

#[tokio::test]
async fn each_token_is_its_own_identity_and_the_file_gains_an_admin() {
    let (dir, api) = started().await;
    let tokens = std::fs::read_to_string(dir.path().join("tokens.csv")).expect("read");
    let admin = tokens
        .lines()
        .find(|l| l.ends_with(",system:masters"))
        .expect("an admin line was added");
    let mode = std::fs::metadata(dir.path().join("tokens.csv"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is the owner's only");
    let kubeconfig = std::fs::read_to_string(&api.kubeconfig).expect("kubeconfig");
    let admin_token = admin.split(',').next().unwrap_or_default();
    assert!(
        kubeconfig.contains(&format!("token: {admin_token}")),
        "the kubeconfig is the admin's"
    );
    assert!(tokens.contains(ALICE) && tokens.contains(ROBOT), "kept");

    let alice = client_with(dir.path(), &api, ALICE).await;
    let message = forbidden(
        Api::<PersistentVolume>::all(alice.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(
        message,
        "persistentvolumes is forbidden: User \"alice\" cannot list resource \"persistentvolumes\" in API group \"\" at the cluster scope"
    );
    alice
        .apiserver_version()
        .await
        .expect("everyone signed in may read /version");
    alice.list_api_groups().await.expect("and discovery");

    let robot = client_with(dir.path(), &api, ROBOT).await;
    let message = forbidden(Api::<Namespace>::all(robot).get("default").await);
    assert_eq!(
        message,
        "namespaces \"default\" is forbidden: User \"system:serviceaccount:robots:r2\" cannot get resource \"namespaces\" in API group \"\" in the namespace \"default\""
    );

    let stranger = client_with(dir.path(), &api, "stranger-token-0123456789abcdef0123").await;
    let (reason, code, _) = refusal(stranger.apiserver_version().await);
    assert_eq!((reason.as_str(), code), ("Unauthorized", 401));
    Api::<PersistentVolume>::all(api.client.clone())
        .list(&ListParams::default())
        .await
        .expect("system:masters may do anything");
}

async fn create<K>(api: &Api<K>, value: Value) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &object(value))
        .await
        .expect("create")
}

#[tokio::test]
async fn a_role_bound_in_a_namespace_grants_there_only_and_watches_need_watch() {
    let (dir, api) = started().await;
    let admin = api.client.clone();
    for name in ["team-a", "team-b"] {
        create(
            &Api::<Namespace>::all(admin.clone()),
            json!({"metadata": {"name": name}}),
        )
        .await;
    }
    let roles = Api::<Role>::namespaced(admin.clone(), "team-a");
    create(
        &roles,
        json!({"metadata": {"name": "claims"}, "rules": [
            {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list"]}
        ]}),
    )
    .await;
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), "team-a");
    create(
        &bindings,
        json!({"metadata": {"name": "claims"},
        "roleRef": {"kind": "Role", "name": "claims"},
        "subjects": [{"kind": "User", "name": "alice"}]}),
    )
    .await;

    let alice = client_with(dir.path(), &api, ALICE).await;
    let team_a = Api::<PersistentVolumeClaim>::namespaced(alice.clone(), "team-a");
    team_a
        .list(&ListParams::default())
        .await
        .expect("the Role grants list in team-a");
    let message = forbidden(
        Api::<PersistentVolumeClaim>::namespaced(alice.clone(), "team-b")
            .list(&ListParams::default())
            .await,
    );
    assert!(
        message.ends_with("cannot list resource \"persistentvolumeclaims\" in API group \"\" in the namespace \"team-b\""),
        "{message}"
    );
    forbidden(
        Api::<PersistentVolumeClaim>::all(alice.clone())
            .list(&ListParams::default())
            .await,
    );

    let message = forbidden(team_a.watch(&WatchParams::default(), "0").await.map(|_| ()));
    assert!(
        message.contains("cannot watch resource \"persistentvolumeclaims\""),
        "a watch is its own verb: {message}"
    );
    let mut role = roles.get("claims").await.expect("role");
    if let Some(rules) = role.rules.as_mut() {
        rules[0].verbs.push("watch".into());
    }
    roles
        .replace("claims", &PostParams::default(), &role)
        .await
        .expect("add watch");
    let mut events = team_a
        .watch(&WatchParams::default().timeout(2), "0")
        .await
        .expect("the new rule holds from the next request on")
        .boxed();
    assert!(events.next().await.is_none_or(|e| e.is_ok()));

    let mut binding = bindings.get("claims").await.expect("binding");
    binding.role_ref.name = "other".into();
    let (reason, code, message) = refusal(
        bindings
            .replace("claims", &PostParams::default(), &binding)
            .await,
    );
    assert_eq!((reason.as_str(), code), ("Invalid", 422), "{message}");
    assert!(message.contains("cannot change roleRef"), "{message}");
}

#[tokio::test]
async fn resource_names_narrow_a_rule_to_the_named_objects() {
    let (dir, api) = started().await;
    let admin = api.client.clone();
    let classes = Api::<StorageClass>::all(admin.clone());
    for name in ["fast", "slow"] {
        create(
            &classes,
            json!({"metadata": {"name": name}, "provisioner": "csi.stowage.io"}),
        )
        .await;
    }
    create(&Api::<ClusterRole>::all(admin.clone()), json!({"metadata": {"name": "fast-only"}, "rules": [
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "resourceNames": ["fast"], "verbs": ["get", "list", "delete"]}
    ]}))
    .await;
    create(
        &Api::<ClusterRoleBinding>::all(admin.clone()),
        json!({"metadata": {"name": "fast-only"},
        "roleRef": {"kind": "ClusterRole", "name": "fast-only"},
        "subjects": [{"kind": "Group", "name": "builders"}]}),
    )
    .await;

    let robot = Api::<StorageClass>::all(client_with(dir.path(), &api, ROBOT).await);
    robot.get("fast").await.expect("the named class");
    let message = forbidden(robot.get("slow").await);
    assert_eq!(
        message,
        "storageclasses.storage.k8s.io \"slow\" is forbidden: User \"system:serviceaccount:robots:r2\" cannot get resource \"storageclasses\" in API group \"storage.k8s.io\" at the cluster scope"
    );
    forbidden(robot.list(&ListParams::default()).await);
    let pinned = robot
        .list(&ListParams::default().fields("metadata.name=fast"))
        .await
        .expect("a list pinned to the name is a request for that name");
    assert_eq!(pinned.items.len(), 1);
    robot
        .delete("fast", &DeleteParams::default())
        .await
        .expect("delete the named class");
    forbidden(robot.delete("slow", &DeleteParams::default()).await);
    assert!(classes.get_opt("slow").await.expect("get").is_some());
}

#[tokio::test]
async fn one_identity_holds_a_bounded_number_of_watches() {
    let dir = TempDir::new().expect("tempdir");
    std::fs::write(
        dir.path().join("tokens.csv"),
        format!("{ALICE},alice,u-alice\n"),
    )
    .expect("token file");
    let api = InProcessApi::start_with(dir.path(), |config| config.max_watches_per_user = 2).await;
    create(
        &Api::<ClusterRole>::all(api.client.clone()),
        json!({"metadata": {"name": "watch-pvs"}, "rules": [
            {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["watch"]}
        ]}),
    )
    .await;
    create(
        &Api::<ClusterRoleBinding>::all(api.client.clone()),
        json!({"metadata": {"name": "watch-pvs"},
        "roleRef": {"kind": "ClusterRole", "name": "watch-pvs"},
        "subjects": [{"kind": "User", "name": "alice"}]}),
    )
    .await;
    let alice = client_with(dir.path(), &api, ALICE).await;
    let pvs = Api::<PersistentVolume>::all(alice.clone());
    let first = pvs
        .watch(&WatchParams::default(), "0")
        .await
        .expect("first watch");
    let _second = pvs
        .watch(&WatchParams::default(), "0")
        .await
        .expect("second watch");

    let request = http::Request::get("/api/v1/persistentvolumes?watch=true&resourceVersion=0")
        .body(Vec::<u8>::new().into())
        .expect("request");
    let unretried = unretried_client_with(dir.path(), &api, ALICE).await;
    let response = unretried.send(request).await.expect("an answer");
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body = response.into_body().collect_bytes().await.expect("body");
    let status: Value = serde_json::from_slice(&body).expect("a Status");
    assert_eq!(
        (&status["kind"], &status["reason"], &status["code"]),
        (&json!("Status"), &json!("TooManyRequests"), &json!(429)),
        "{status}"
    );
    assert_eq!(status["details"]["retryAfterSeconds"], 1, "{status}");

    let _admins = Api::<PersistentVolume>::all(api.client.clone())
        .watch(&WatchParams::default(), "0")
        .await
        .expect("another identity has its own count");
    // kube-rs waits as told and asks again; the place frees when a watch ends.
    let retried =
        tokio::spawn(async move { pvs.watch(&WatchParams::default(), "0").await.map(drop) });
    stowage_tests::holds_for(
        "no place yet: the retried watch waits",
        std::time::Duration::from_millis(500),
        async || !retried.is_finished(),
    )
    .await;
    drop(first);
    tokio::time::timeout(std::time::Duration::from_secs(30), retried)
        .await
        .expect("the retried watch gets the freed place")
        .expect("task")
        .expect("watch");
}
