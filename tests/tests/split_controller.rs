//! The node plugin and the Controller service of its local volumes in two processes on
//! one local root (`stowage node --without-controller` beside `stowage controller
//! --local-root`), as csi-sanity's controller mode runs them: only the controller opens
//! the root's record log, the node socket serves no Controller calls (though its
//! Identity names the plugin's services as a whole), and a volume made by one process
//! is staged, published and written through the other.

use csi_proto::v1;
use stowage_tests::csi::{create_request, mount_rwo, publish_staged_request};
use stowage_tests::driver::Launch;

#[tokio::test]
async fn a_controller_process_and_a_node_process_share_one_local_root() {
    let split = Launch::node("split-node").kubelet_dir().start_split().await;
    let (node, controller) = (&split.node.csi, &split.controller.csi);
    let kubelet = split.node.kubelet("");

    let capabilities = node.plugin_capabilities().await.expect("capabilities");
    let controller_service = v1::plugin_capability::service::Type::ControllerService as i32;
    let advertised = capabilities.capabilities.iter().any(|c| {
        matches!(&c.r#type, Some(v1::plugin_capability::Type::Service(s)) if s.r#type == controller_service)
    });
    assert!(
        advertised,
        "the plugin's capabilities as a whole, from every instance (CSI spec)"
    );
    let refused = node
        .create(create_request("on-node", 1 << 20, &[("type", "local")]))
        .await
        .expect_err("no Controller on the node socket");
    assert_eq!(refused.code(), tonic::Code::Unimplemented);

    let volume = controller
        .create(create_request("split", 1 << 20, &[("type", "local")]))
        .await
        .expect("CreateVolume on the controller");
    let staging = kubelet.join("staging");
    let target = kubelet.join("target");
    std::fs::create_dir_all(&staging).expect("staging dir, as kubelet makes it");
    node.node_stage(&volume, &staging, mount_rwo())
        .await
        .expect("stage");
    node.node_publish(publish_staged_request(&volume, &staging, &target))
        .await
        .expect("publish");
    std::fs::write(target.join("file"), b"through the node").expect("write");
    node.node_unpublish(&volume.volume_id, &target)
        .await
        .expect("unpublish");
    node.node_unstage(&volume.volume_id, &staging)
        .await
        .expect("unstage");
    let listed = controller.list_all(10).await.expect("ListVolumes");
    assert_eq!(listed.len(), 1, "{listed:?}");
    controller.delete(&volume.volume_id).await.expect("delete");
    assert!(controller.list_all(10).await.expect("list").is_empty());
}
