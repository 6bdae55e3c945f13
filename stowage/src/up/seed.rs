//! The objects a fresh single machine needs: this node, the CSIDriver and the StorageClasses of
//! deploy/ (the NFS class only when an NFS export is configured). Existing objects
//! are left as they are, so a user's edits survive a restart.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

const CLASSES: &str = include_str!("../../../deploy/storageclasses.yaml");
const DRIVER: &str = include_str!("../../../deploy/csidriver.yaml");
const NFS_CLASS: &str = "stowage-nfs";

/// Where NFS volumes go, when the machine has an export for them.
pub struct NfsExport {
    pub server: String,
    pub share: String,
}

/// The seed objects could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("{file}: {error}")]
    Manifest {
        file: &'static str,
        error: Box<serde_saphyr::Error>,
    },
    #[error("create {kind} {name}: {error}")]
    Create {
        kind: String,
        name: String,
        error: Box<kube::Error>,
    },
}

pub async fn seed(client: &Client, node: &str, nfs: Option<&NfsExport>) -> Result<(), SeedError> {
    create_if_absent(&Api::<Node>::all(client.clone()), this_node(node)).await?;
    let driver: CSIDriver =
        serde_saphyr::from_str(DRIVER).map_err(|error| SeedError::Manifest {
            file: "deploy/csidriver",
            error: Box::new(error),
        })?;
    create_if_absent(&Api::<CSIDriver>::all(client.clone()), driver).await?;
    let classes: Vec<StorageClass> =
        serde_saphyr::from_multiple(CLASSES).map_err(|error| SeedError::Manifest {
            file: "deploy/storageclasses",
            error: Box::new(error),
        })?;
    let api = Api::<StorageClass>::all(client.clone());
    for mut class in classes {
        if class.metadata.name.as_deref() == Some(NFS_CLASS) {
            let Some(export) = nfs else { continue };
            let parameters = class.parameters.get_or_insert_with(BTreeMap::new);
            parameters.insert("server".into(), export.server.clone());
            parameters.insert("share".into(), export.share.clone());
        }
        create_if_absent(&api, class).await?;
    }
    Ok(())
}

fn this_node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".into(), name.into()),
                (driver_contract::TOPOLOGY_NODE_KEY.into(), name.into()),
            ])),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

async fn create_if_absent<K>(api: &Api<K>, object: K) -> Result<(), SeedError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {
            tracing::info!(kind = %K::kind(&()), %name, "created");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(SeedError::Create {
            kind: K::kind(&()).to_string(),
            name: name.to_string(),
            error: Box::new(error),
        }),
    }
}
