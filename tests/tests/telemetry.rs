//! Every component serves /metrics, /healthz and /readyz on --metrics-address, and
//! counts its RPCs by method and code.

use stowage_tests::csi::create_request;
use stowage_tests::driver::Launch;
use stowage_tests::http::{free_port, get, sample};
use tempfile::TempDir;

#[tokio::test]
async fn the_controller_serves_health_and_counts_rpcs_by_code() {
    let address = free_port();
    let mut controller = Launch::controller()
        .local("n1")
        .flags(&["--metrics-address", &address.to_string()])
        .start()
        .await;
    let csi = controller.csi.clone();
    assert_eq!(get(address, "/healthz").await.0, 200);
    assert_eq!(get(address, "/readyz").await.0, 200);

    csi.create(create_request("good", 1 << 20, &[]))
        .await
        .expect("CreateVolume");
    for _ in 0..2 {
        let refused = csi.create(create_request("", 1 << 20, &[])).await;
        assert_eq!(
            refused.expect_err("no name").code(),
            tonic::Code::InvalidArgument
        );
    }
    let (status, body) = get(address, "/metrics").await;
    assert_eq!(status, 200);
    for wanted in [
        r#"stowage_grpc_requests_total{method="CreateVolume",code="Ok"} 1"#,
        r#"stowage_grpc_requests_total{method="CreateVolume",code="InvalidArgument"} 2"#,
        r#"stowage_grpc_request_duration_seconds_count{method="CreateVolume"} 3"#,
    ] {
        assert!(body.contains(wanted), "{wanted} missing from:\n{body}");
    }
    assert_eq!(get(address, "/nothing").await.0, 404);
    assert!(
        controller.terminate().await.success(),
        "SIGTERM is a clean exit"
    );
}

#[tokio::test]
async fn the_api_server_counts_requests_by_verb_and_code() {
    let dir = TempDir::new().expect("tempdir");
    let address = free_port();
    let (_server, client) = stowage_tests::api::ApiProcess::start(
        dir.path(),
        &["--metrics-address", &address.to_string()],
    )
    .await;
    assert_eq!(get(address, "/readyz").await.0, 200);
    let volumes: kube::Api<k8s_openapi::api::core::v1::PersistentVolume> =
        kube::Api::all(client.clone());
    volumes.list(&Default::default()).await.expect("list");
    assert!(volumes.get_opt("missing").await.expect("get").is_none());

    let (status, body) = get(address, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        sample(
            &body,
            r#"stowage_apiserver_requests_total{verb="GET",code="200"}"#
        ) >= 1.0,
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"stowage_apiserver_requests_total{verb="GET",code="404"}"#
        ),
        1.0,
        "{body}"
    );
    assert!(body.contains("stowage_apiserver_request_duration_seconds_bucket"));
}
