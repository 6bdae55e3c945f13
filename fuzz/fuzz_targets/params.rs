//! StorageClass parameters (`csi_controller::params`) and the node's reading of the
//! volume context the controller returns for them (`csi_node::nfsmount`).
//!
//! Input: a header line, the CO's volume name, then the parameters as a JSON object
//! of strings (as CreateVolume carries them). Checks: no panic; memory and output
//! proportional to the input; a subDir is plain path components that stay inside the
//! share; the export round-trips through its compact form; the context the controller
//! would return is accepted by the node plugin and describes the same export and
//! directory.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use csi_controller::params::{MAX_SUB_DIR_LEN, NfsParams, VolumeParams};
use csi_node::nfsmount::NfsVolume;
use driver_contract::export::Export;
use driver_contract::export::METADATA_DIR;
use libfuzzer_sys::fuzz_target;
use stowage_fuzz::{assert_bounded, header, peak_allocation};

fuzz_target!(|data: &[u8]| {
    let (name, body) = header(data);
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    let Ok(params) = serde_json::from_slice::<HashMap<String, String>>(body) else {
        return;
    };
    let (parsed, peak) = peak_allocation(|| VolumeParams::parse(&params, name));
    // A subDir may expand to MAX_SUB_DIR_LEN bytes whatever the size of the input.
    assert_bounded(peak, data.len(), 16, 4 * MAX_SUB_DIR_LEN + 4096);
    if let Ok(VolumeParams::Nfs(nfs)) = parsed {
        check_nfs(&nfs);
    }
});

fn check_nfs(nfs: &NfsParams) {
    let sub_dir_len: usize = nfs.sub_dir.iter().map(|c| c.len() + 1).sum();
    assert!(
        sub_dir_len <= MAX_SUB_DIR_LEN + 1,
        "subDir of {sub_dir_len} bytes"
    );
    assert!(!nfs.sub_dir.is_empty());
    assert_ne!(nfs.sub_dir[0], METADATA_DIR);
    for component in &nfs.sub_dir {
        let parts: Vec<Component> = Path::new(component).components().collect();
        assert!(
            matches!(parts.as_slice(), [Component::Normal(c)] if *c == component.as_str()),
            "subDir component {component:?}"
        );
        assert!(component.len() <= 255 && !component.contains('\0'));
    }
    assert!(!nfs.mount_options.contains(['\0', '\n']));
    assert!(nfs.mount_permissions <= 0o7777);
    assert!(nfs.export.share.starts_with('/'));
    assert_eq!(
        Export::parse_compact(&nfs.export.to_string()),
        Ok(nfs.export.clone())
    );

    // What CreateVolume returns as the volume context (controller/volumes.rs).
    let mut context = BTreeMap::from([
        ("type".to_string(), "nfs".to_string()),
        ("server".to_string(), nfs.export.server()),
        ("share".to_string(), nfs.export.share.clone()),
        ("subDir".to_string(), nfs.sub_dir.join("/")),
    ]);
    if !nfs.mount_options.is_empty() {
        context.insert("mountOptions".to_string(), nfs.mount_options.clone());
    }
    let context: HashMap<String, String> = context.into_iter().collect();
    let volume = NfsVolume::from_context(&context, &[])
        .unwrap_or_else(|e| panic!("the node refuses {context:?}: {e}"));
    assert_eq!(volume.export, nfs.export);
    assert_eq!(volume.sub_dir, PathBuf::from(nfs.sub_dir.join("/")));
}
