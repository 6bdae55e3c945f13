//! What a node request is about, decided once from its volume ID, context and capability.

use std::collections::HashMap;
use std::path::PathBuf;

use csi_proto::v1::VolumeCapability;
use csi_proto::v1::volume_capability::AccessType;
use driver_contract::ids::{Location, VolumeId, validate_name};
use driver_contract::local_layout::{LAYOUT_KEY, LocalLayout, volume_data_path};

use crate::NodeConfig;
use crate::error::{Error, Result};
use crate::hostpath::{self, HostPathType};
use crate::nfsmount::NfsVolume;
use stowage_common::quantity;

const EPHEMERAL_KEY: &str = "csi.storage.k8s.io/ephemeral";
/// kubelet adds pod information under this prefix (podInfoOnMount).
const KUBELET_PREFIX: &str = "csi.storage.k8s.io/";

/// What a publish request asks for, decided from its volume context.
pub(crate) enum Kind {
    Ephemeral {
        memory: bool,
        size_limit: u64,
    },
    HostPath(hostpath::HostPath),
    LocalDirectory(PathBuf),
    /// An ext4 image file: staged through a loop device, published by binding the staging mount.
    LocalImage(PathBuf),
    /// A raw file: staged as a loop device, published by binding the device node.
    LocalBlock(PathBuf),
    /// An NFS export mounted once per node at the staging path; pods get its subdirectory.
    Nfs(NfsVolume),
}

pub(crate) fn classify(
    config: &NodeConfig,
    volume_id: &str,
    context: &HashMap<String, String>,
    capability: &VolumeCapability,
) -> Result<Kind> {
    let block = check_capability(capability)?;
    if context.get(EPHEMERAL_KEY).is_some_and(|v| v == "true") {
        return ephemeral_kind(volume_id, context, block);
    }
    if context.contains_key("path") || context.contains_key("hostPathType") {
        if block {
            return Err(Error::invalid(
                "volume_capability",
                "hostPath volumes are published as filesystems, not block devices",
            ));
        }
        let kind = HostPathType::parse(
            context
                .get("hostPathType")
                .map(String::as_str)
                .unwrap_or(""),
        )?;
        let path = context.get("path").ok_or_else(|| {
            Error::invalid("volume_context.path", "is required for a hostPath volume")
        })?;
        return Ok(Kind::HostPath(hostpath::resolve(
            path,
            kind,
            &config.host_path_allow,
        )?));
    }
    // A static NFS PV written the upstream way names only server and share.
    let static_nfs = context.contains_key("server") && context.contains_key("share");
    let kind = context
        .get("type")
        .map(String::as_str)
        .or(static_nfs.then_some("nfs"));
    match kind {
        Some("local") => local_kind(config, volume_id, context, block),
        Some("nfs") => match &capability.access_type {
            Some(AccessType::Mount(m)) => {
                Ok(Kind::Nfs(NfsVolume::from_context(context, &m.mount_flags)?))
            }
            _ => Err(Error::invalid(
                "volume_capability",
                "NFS volumes are filesystems, not block devices",
            )),
        },
        Some(other) => Err(Error::invalid(
            "volume_context.type",
            format!("{other:?} is not a Stowage volume type"),
        )),
        None => Err(Error::invalid(
            "volume_context",
            "names no volume type (ephemeral, hostPath path, or type)",
        )),
    }
}

fn ephemeral_kind(volume_id: &str, context: &HashMap<String, String>, block: bool) -> Result<Kind> {
    if block {
        return Err(Error::invalid(
            "volume_capability",
            "ephemeral volumes are filesystems, not block devices",
        ));
    }
    validate_name("volume_id", volume_id).map_err(Error::from)?;
    if let Some(key) = context
        .keys()
        .find(|k| !k.starts_with(KUBELET_PREFIX) && !matches!(k.as_str(), "medium" | "sizeLimit"))
    {
        return Err(Error::invalid(
            "volume_context",
            format!("unknown key {key:?} for an ephemeral volume"),
        ));
    }
    let memory = match context.get("medium").map(String::as_str) {
        None | Some("") => false,
        Some("Memory") => true,
        Some(other) => {
            return Err(Error::invalid(
                "volume_context.medium",
                format!("{other:?} is not \"\" or Memory"),
            ));
        }
    };
    let size_limit = match context.get("sizeLimit") {
        None => 0,
        Some(q) => quantity::parse_bytes(q)
            .and_then(|b| u64::try_from(b).ok())
            .ok_or_else(|| {
                Error::invalid(
                    "volume_context.sizeLimit",
                    format!("{q:?} is not a quantity"),
                )
            })?,
    };
    Ok(Kind::Ephemeral { memory, size_limit })
}

fn local_kind(
    config: &NodeConfig,
    volume_id: &str,
    context: &HashMap<String, String>,
    block: bool,
) -> Result<Kind> {
    let id = VolumeId::parse(volume_id).ok_or_else(|| Error::NotAStowageVolume {
        volume_id: volume_id.into(),
    })?;
    match &id.location {
        Location::Local { node } if *node == config.node_id => {}
        _ => {
            return Err(Error::VolumeNotOnNode {
                volume_id: volume_id.into(),
                node: config.node_id.clone(),
            });
        }
    }
    let named = context.get(LAYOUT_KEY).map(String::as_str);
    let layout = LocalLayout::from_name(named).ok_or_else(|| {
        Error::invalid(
            "volume_context.layout",
            format!("{:?} is not a local layout", named.unwrap_or_default()),
        )
    })?;
    let kind: fn(PathBuf) -> Kind = match (layout, block) {
        // A quota volume is a directory; its limit is the controller's business.
        (LocalLayout::Directory | LocalLayout::Quota, false) => Kind::LocalDirectory,
        (LocalLayout::Image, false) => Kind::LocalImage,
        (LocalLayout::Block, true) => Kind::LocalBlock,
        (LocalLayout::Block, false) => {
            return Err(Error::invalid(
                "volume_capability",
                "a block volume must be published as a block device",
            ));
        }
        (_, true) => {
            return Err(Error::invalid(
                "volume_capability",
                "only block-mode volumes can be published as block devices",
            ));
        }
    };
    let source = volume_data_path(&config.local_root, id.key.as_str(), layout);
    if !source.exists() {
        return Err(Error::VolumeDataMissing {
            volume_id: volume_id.into(),
        });
    }
    Ok(kind(source))
}

/// Checks the capability is complete; returns whether it asks for a block device.
pub(crate) fn check_capability(capability: &VolumeCapability) -> Result<bool> {
    driver_contract::request::parse_capability("volume_capability", capability)
        .map_err(Error::from)?;
    Ok(matches!(capability.access_type, Some(AccessType::Block(_))))
}
