//! CreateVolume parameters (StorageClass parameters), parsed once into typed values.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use driver_contract::export::{BadExport, Export};
use driver_contract::mount_options::{mount_option_allowed, mount_option_list};

/// Added by the external provisioner with --extra-create-metadata: the claim's name.
pub const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
/// The claim's namespace (as above).
pub const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
/// The PersistentVolume's name (as above).
pub const PV_NAME: &str = "csi.storage.k8s.io/pv/name";

const LOCAL_KEYS: &[&str] = &["type", "capacityEnforcement"];
const NFS_KEYS: &[&str] = &[
    "type",
    "server",
    "share",
    "subDir",
    "onDelete",
    "mountOptions",
    "mountPermissions",
];
const CO_KEYS: &[&str] = &[PVC_NAME, PVC_NAMESPACE, PV_NAME];

/// A StorageClass parameter CreateVolume cannot use; InvalidArgument on `parameters`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// `type` names no backend.
    #[error("type {0:?} is not one of local, nfs")]
    UnknownType(String),
    /// Keys the class's type does not take (sorted).
    #[error("unknown keys for type {kind}: {}", keys.join(", "))]
    UnknownKeys {
        /// The class's type.
        kind: &'static str,
        /// The keys, sorted.
        keys: Vec<String>,
    },
    /// `capacityEnforcement` names no enforcement.
    #[error("capacityEnforcement {0:?} is not one of none, image, quota, auto")]
    UnknownEnforcement(String),
    /// A key type nfs needs is missing or empty.
    #[error("{0} is required for type nfs")]
    Required(&'static str),
    /// `server` or `share` is not an export address.
    #[error(transparent)]
    Export(#[from] BadExport),
    /// `onDelete` names no policy.
    #[error("onDelete {0:?} is not one of delete, retain, archive")]
    UnknownOnDelete(String),
    /// `mountPermissions` is not an octal mode up to 7777.
    #[error("mountPermissions {0:?} is not an octal mode")]
    MountPermissions(String),
    /// `mountOptions` holds a newline or NUL.
    #[error("mountOptions must be a single line")]
    MountOptionsLines,
    /// A mount option the node plugin refuses.
    #[error("mountOptions {0:?} is not allowed")]
    MountOptionRefused(String),
    /// The subDir template expands past [`MAX_SUB_DIR_LEN`].
    #[error("subDir {0:?} expands to more than {MAX_SUB_DIR_LEN} bytes")]
    SubDirTooLong(String),
    /// The subDir template opens a `${` it never closes.
    #[error("subDir {0:?} has an unclosed ${{")]
    SubDirUnclosed(String),
    /// The subDir template names a variable there is none of.
    #[error("subDir variable ${{{0}}} is unknown")]
    SubDirVariable(String),
    /// The subDir template names claim metadata the request does not carry.
    #[error("subDir {0:?} needs PVC metadata the request does not carry")]
    SubDirNeedsClaim(String),
    /// The expanded subDir is not a directory below the share.
    #[error("subDir {path:?} {problem}")]
    SubDir {
        /// The expanded subDir.
        path: String,
        /// What is wrong with it.
        problem: SubDirProblem,
    },
}

/// Why an expanded subDir cannot be a volume's directory below the share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubDirProblem {
    /// It starts with `/`.
    #[error("must be relative to the share")]
    Absolute,
    /// It holds a NUL byte.
    #[error("must not contain NUL")]
    Nul,
    /// It has no component.
    #[error("must name a directory")]
    Empty,
    /// A component is `.`, `..` or longer than NAME_MAX.
    #[error("must not contain '.', '..' or overlong components")]
    BadComponent,
    /// It starts with the driver's [`METADATA_DIR`](driver_contract::export::METADATA_DIR).
    #[error("must not point into the driver's metadata directory")]
    MetadataDir,
}

/// A mutable parameter (a VolumeAttributesClass's) a volume cannot take;
/// InvalidArgument on `mutable_parameters`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MutableParamError {
    /// A key not in [`MUTABLE_KEYS`].
    #[error("{0:?} is not a mutable parameter (one of {MUTABLE_KEYS:?})")]
    NotMutable(String),
    /// An onDelete value the volume's backend does not offer.
    #[error("onDelete {value:?} is not one of {allowed:?} for this volume")]
    OnDelete {
        /// The value given.
        value: String,
        /// The values the backend offers.
        allowed: &'static [&'static str],
    },
}

/// How a local volume's capacity is held to its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// A plain directory: capacity is bookkeeping only.
    None,
    /// A sparse file with its own filesystem, mounted through a loop device.
    Image,
    /// A directory with its own XFS project and a hard limit of the capacity; only
    /// where the local root is on XFS mounted with `prjquota`.
    Quota,
    /// `quota` where the local root supports it, else `image`.
    Auto,
}

/// What happens to an NFS subdirectory when its volume is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// Remove the data.
    Delete,
    /// Leave the data where it is.
    Retain,
    /// Rename the data to `archived-<name>-<time>` beside it.
    Archive,
}

/// A local class's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalParams {
    /// capacityEnforcement.
    pub enforcement: Enforcement,
}

/// An NFS class's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsParams {
    /// server and share.
    pub export: Export,
    /// The volume's directory below the share, as validated path components.
    pub sub_dir: Vec<String>,
    /// onDelete.
    pub on_delete: OnDelete,
    /// mountOptions, as given (checked against the allow-list).
    pub mount_options: String,
    /// mountPermissions: the mode of the volume's directory.
    pub mount_permissions: u32,
}

/// A class's parameters, by its `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeParams {
    /// type local.
    Local(LocalParams),
    /// type nfs.
    Nfs(NfsParams),
}

/// The parameters ControllerModifyVolume may change (a VolumeAttributesClass's), per
/// backend: `onDelete` decides what DeleteVolume does with the data later.
pub const MUTABLE_KEYS: &[&str] = &["onDelete"];

/// Which backend a volume lives on, for the mutable parameters it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// A node's local root.
    Local,
    /// An NFS export.
    Nfs,
}

/// Validates mutable parameters for a volume of `backend`; returns them sorted.
pub fn parse_mutable(
    params: &HashMap<String, String>,
    backend: BackendKind,
) -> Result<BTreeMap<String, String>, MutableParamError> {
    let allowed: &'static [&'static str] = match backend {
        BackendKind::Local => &["delete", "retain"],
        BackendKind::Nfs => &["delete", "retain", "archive"],
    };
    for (key, value) in params {
        if !MUTABLE_KEYS.contains(&key.as_str()) {
            return Err(MutableParamError::NotMutable(key.clone()));
        }
        if !allowed.contains(&value.as_str()) {
            return Err(MutableParamError::OnDelete {
                value: value.clone(),
                allowed,
            });
        }
    }
    Ok(params.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// The onDelete policy a volume's mutable parameters set, if they set one.
pub fn mutable_on_delete(mutable: &BTreeMap<String, String>) -> Option<OnDelete> {
    match mutable.get("onDelete").map(String::as_str) {
        Some("delete") => Some(OnDelete::Delete),
        Some("retain") => Some(OnDelete::Retain),
        Some("archive") => Some(OnDelete::Archive),
        _ => None,
    }
}

impl VolumeParams {
    /// Parses CreateVolume parameters; `volume_name` fills the default subDir.
    pub fn parse(params: &HashMap<String, String>, volume_name: &str) -> Result<Self, ParamError> {
        match params.get("type").map(String::as_str).unwrap_or("local") {
            "local" => {
                check_keys(params, LOCAL_KEYS, "local")?;
                Ok(Self::Local(LocalParams {
                    enforcement: parse_enforcement(params)?,
                }))
            }
            "nfs" => {
                check_keys(params, NFS_KEYS, "nfs")?;
                Ok(Self::Nfs(parse_nfs(params, volume_name)?))
            }
            other => Err(ParamError::UnknownType(other.to_string())),
        }
    }

    /// The parameters as stored with the volume, for idempotency checks.
    pub fn canonical(params: &HashMap<String, String>) -> BTreeMap<String, String> {
        params.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

fn check_keys(
    params: &HashMap<String, String>,
    allowed: &[&str],
    kind: &'static str,
) -> Result<(), ParamError> {
    let mut keys: Vec<String> = params
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()) && !CO_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    keys.sort_unstable();
    Err(ParamError::UnknownKeys { kind, keys })
}

fn parse_enforcement(params: &HashMap<String, String>) -> Result<Enforcement, ParamError> {
    match params.get("capacityEnforcement").map(String::as_str) {
        None | Some("none") => Ok(Enforcement::None),
        Some("image") => Ok(Enforcement::Image),
        Some("quota") => Ok(Enforcement::Quota),
        Some("auto") => Ok(Enforcement::Auto),
        Some(other) => Err(ParamError::UnknownEnforcement(other.to_string())),
    }
}

fn parse_nfs(params: &HashMap<String, String>, volume_name: &str) -> Result<NfsParams, ParamError> {
    let required = |key: &'static str| {
        params
            .get(key)
            .filter(|v| !v.is_empty())
            .ok_or(ParamError::Required(key))
    };
    let export = Export::parse(required("server")?, required("share")?)?;
    let template = params
        .get("subDir")
        .map(String::as_str)
        .unwrap_or("${pv.metadata.name}");
    let sub_dir = split_sub_dir(&expand_sub_dir(template, params, volume_name)?)?;
    let on_delete = match params.get("onDelete").map(String::as_str) {
        None | Some("delete") => OnDelete::Delete,
        Some("retain") => OnDelete::Retain,
        Some("archive") => OnDelete::Archive,
        Some(other) => return Err(ParamError::UnknownOnDelete(other.to_string())),
    };
    let mount_permissions = match params.get("mountPermissions") {
        None => 0o777,
        Some(mode) => u32::from_str_radix(mode, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| ParamError::MountPermissions(mode.clone()))?,
    };
    let mount_options = params.get("mountOptions").cloned().unwrap_or_default();
    if mount_options.contains(['\0', '\n']) {
        return Err(ParamError::MountOptionsLines);
    }
    // Refused here what the node plugin would refuse at stage, so a class that cannot
    // be mounted never gets volumes (a fuzzer found `addr=` accepted here).
    if let Some(option) = mount_option_list(&mount_options).find(|o| !mount_option_allowed(o)) {
        return Err(ParamError::MountOptionRefused(option.to_string()));
    }
    Ok(NfsParams {
        export,
        sub_dir,
        on_delete,
        mount_options,
        mount_permissions,
    })
}

/// The longest subDir a template may expand to: Linux's PATH_MAX. Each variable may
/// expand to a whole parameter, so without a bound the result grows with the square of
/// the parameters' size.
pub const MAX_SUB_DIR_LEN: usize = 4096;

/// Expands `${pvc.metadata.name}`, `${pvc.metadata.namespace}` and `${pv.metadata.name}`.
/// Without the provisioner's values (e.g. a bare CSI client) the PV name is the CO's volume name.
fn expand_sub_dir(
    template: &str,
    params: &HashMap<String, String>,
    volume_name: &str,
) -> Result<String, ParamError> {
    let pv_name = params
        .get(PV_NAME)
        .map(String::as_str)
        .unwrap_or(volume_name);
    // Checked before each piece is added, so the result never outgrows the bound.
    let push = |out: &mut String, piece: &str| {
        if out.len() + piece.len() > MAX_SUB_DIR_LEN {
            return Err(ParamError::SubDirTooLong(template.to_string()));
        }
        out.push_str(piece);
        Ok(())
    };
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        push(&mut out, &rest[..start])?;
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| ParamError::SubDirUnclosed(template.to_string()))?;
        let value = match &rest[start + 2..start + end] {
            "pv.metadata.name" => Some(pv_name),
            "pvc.metadata.name" => params.get(PVC_NAME).map(String::as_str),
            "pvc.metadata.namespace" => params.get(PVC_NAMESPACE).map(String::as_str),
            other => return Err(ParamError::SubDirVariable(other.to_string())),
        };
        let value = value.ok_or_else(|| ParamError::SubDirNeedsClaim(template.to_string()))?;
        push(&mut out, value)?;
        rest = &rest[start + end + 1..];
    }
    push(&mut out, rest)?;
    Ok(out)
}

/// Splits a subdirectory into components, refusing anything that could leave the share.
fn split_sub_dir(path: &str) -> Result<Vec<String>, ParamError> {
    let bad = |problem| ParamError::SubDir {
        path: path.to_string(),
        problem,
    };
    if path.starts_with('/') {
        return Err(bad(SubDirProblem::Absolute));
    }
    if path.contains('\0') {
        return Err(bad(SubDirProblem::Nul));
    }
    let components: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if components.is_empty() {
        return Err(bad(SubDirProblem::Empty));
    }
    if components
        .iter()
        .any(|c| c == "." || c == ".." || c.len() > 255)
    {
        return Err(bad(SubDirProblem::BadComponent));
    }
    if components[0] == driver_contract::export::METADATA_DIR {
        return Err(bad(SubDirProblem::MetadataDir));
    }
    Ok(components)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_parameters_means_a_plain_local_volume() {
        let parsed = VolumeParams::parse(&HashMap::new(), "vol").expect("valid");
        assert_eq!(
            parsed,
            VolumeParams::Local(LocalParams {
                enforcement: Enforcement::None
            })
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = VolumeParams::parse(&params(&[("type", "local"), ("server", "x")]), "v")
            .expect_err("refused");
        assert!(err.to_string().contains("server"), "{err}");
        let err = VolumeParams::parse(&params(&[("bogus", "1")]), "v").expect_err("refused");
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn nfs_sub_dir_template_is_expanded() {
        let p = params(&[
            ("type", "nfs"),
            ("server", "127.0.0.1:2049"),
            ("share", "/export"),
            (
                "subDir",
                "${pvc.metadata.namespace}/${pvc.metadata.name}-${pv.metadata.name}",
            ),
            (PVC_NAME, "data"),
            (PVC_NAMESPACE, "team-a"),
            (PV_NAME, "pvc-123"),
        ]);
        let VolumeParams::Nfs(nfs) = VolumeParams::parse(&p, "ignored").expect("valid") else {
            panic!("expected nfs");
        };
        assert_eq!(
            nfs.sub_dir,
            vec!["team-a".to_string(), "data-pvc-123".to_string()]
        );
        assert_eq!(nfs.mount_permissions, 0o777);
        assert_eq!(nfs.on_delete, OnDelete::Delete);
    }

    #[test]
    fn nfs_sub_dir_cannot_escape_the_share() {
        for sub in ["../x", "/abs", "a/../../b", ".", ".stowage/x"] {
            let p = params(&[
                ("type", "nfs"),
                ("server", "h"),
                ("share", "/e"),
                ("subDir", sub),
            ]);
            assert!(VolumeParams::parse(&p, "v").is_err(), "{sub}");
        }
        let p = params(&[
            ("type", "nfs"),
            ("server", "h"),
            ("share", "/e"),
            (PV_NAME, ".."),
        ]);
        assert!(VolumeParams::parse(&p, "v").is_err());
    }

    #[test]
    fn nfs_sub_dir_expansion_is_bounded() {
        let template = "${pv.metadata.name}/".repeat(1000);
        let p = params(&[
            ("type", "nfs"),
            ("server", "h"),
            ("share", "/e"),
            ("subDir", &template),
            (PV_NAME, &"x".repeat(200)),
        ]);
        let err = VolumeParams::parse(&p, "v").expect_err("refused");
        assert!(err.to_string().contains("expands to more than"), "{err}");
    }

    #[test]
    fn mount_options_the_node_refuses_are_refused() {
        let p = params(&[
            ("type", "nfs"),
            ("server", "h"),
            ("share", "/e"),
            ("mountOptions", "vers=3, addr=10.0.0.9"),
        ]);
        let err = VolumeParams::parse(&p, "v").expect_err("refused");
        assert!(err.to_string().contains("addr=10.0.0.9"), "{err}");
    }

    #[test]
    fn capacity_enforcement_values() {
        let cases = [
            (None, Enforcement::None),
            (Some("none"), Enforcement::None),
            (Some("image"), Enforcement::Image),
            (Some("quota"), Enforcement::Quota),
            (Some("auto"), Enforcement::Auto),
        ];
        for (value, want) in cases {
            let p = params(
                &value
                    .map(|v| ("capacityEnforcement", v))
                    .into_iter()
                    .collect::<Vec<_>>(),
            );
            assert_eq!(
                VolumeParams::parse(&p, "v").expect("parses"),
                VolumeParams::Local(LocalParams { enforcement: want }),
                "{value:?}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused_by_what_is_wrong() {
        let nfs = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![("type", "nfs"), ("server", "h"), ("share", "/e")];
            pairs.extend_from_slice(extra);
            pairs
        };
        let sub_dir = |path: &str, problem| ParamError::SubDir {
            path: path.to_string(),
            problem,
        };
        let cases: Vec<(Vec<(&str, &str)>, ParamError)> = vec![
            (
                vec![("type", "ceph")],
                ParamError::UnknownType("ceph".into()),
            ),
            (
                vec![("type", "local"), ("server", "x"), ("bogus", "1")],
                ParamError::UnknownKeys {
                    kind: "local",
                    keys: vec!["bogus".into(), "server".into()],
                },
            ),
            (
                vec![("capacityEnforcement", "magic")],
                ParamError::UnknownEnforcement("magic".into()),
            ),
            (
                vec![("type", "nfs"), ("share", "/e")],
                ParamError::Required("server"),
            ),
            (
                vec![("type", "nfs"), ("server", "h"), ("share", "e")],
                ParamError::Export(BadExport::Share("e".into())),
            ),
            (
                nfs(&[("onDelete", "burn")]),
                ParamError::UnknownOnDelete("burn".into()),
            ),
            (
                nfs(&[("mountPermissions", "999")]),
                ParamError::MountPermissions("999".into()),
            ),
            (
                nfs(&[("mountOptions", "vers=3\nro")]),
                ParamError::MountOptionsLines,
            ),
            (
                nfs(&[("mountOptions", "vers=3, addr=10.0.0.9")]),
                ParamError::MountOptionRefused("addr=10.0.0.9".into()),
            ),
            (
                nfs(&[("subDir", "${pv.metadata.name")]),
                ParamError::SubDirUnclosed("${pv.metadata.name".into()),
            ),
            (
                nfs(&[("subDir", "${pod.name}")]),
                ParamError::SubDirVariable("pod.name".into()),
            ),
            (
                nfs(&[("subDir", "${pvc.metadata.name}")]),
                ParamError::SubDirNeedsClaim("${pvc.metadata.name}".into()),
            ),
            (
                nfs(&[("subDir", "/abs")]),
                sub_dir("/abs", SubDirProblem::Absolute),
            ),
            (
                nfs(&[("subDir", "a\0b")]),
                sub_dir("a\0b", SubDirProblem::Nul),
            ),
            (nfs(&[("subDir", "")]), sub_dir("", SubDirProblem::Empty)),
            (
                nfs(&[("subDir", "a/../../b")]),
                sub_dir("a/../../b", SubDirProblem::BadComponent),
            ),
            (
                nfs(&[("subDir", ".stowage/x")]),
                sub_dir(".stowage/x", SubDirProblem::MetadataDir),
            ),
        ];
        for (bad, want) in cases {
            assert_eq!(
                VolumeParams::parse(&params(&bad), "v"),
                Err(want),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mutable_parameters_are_refused_by_what_is_wrong() {
        let cases = [
            (
                BackendKind::Local,
                ("onDelete", "archive"),
                Err(MutableParamError::OnDelete {
                    value: "archive".into(),
                    allowed: &["delete", "retain"],
                }),
            ),
            (
                BackendKind::Nfs,
                ("size", "1Gi"),
                Err(MutableParamError::NotMutable("size".into())),
            ),
            (
                BackendKind::Nfs,
                ("onDelete", "archive"),
                Ok(BTreeMap::from([(
                    "onDelete".to_string(),
                    "archive".to_string(),
                )])),
            ),
        ];
        for (backend, pair, want) in cases {
            assert_eq!(parse_mutable(&params(&[pair]), backend), want, "{pair:?}");
        }
    }
}
