//! Secrets a StorageClass names for the driver, resolved as external-provisioner does:
//! `csi.storage.k8s.io/<purpose>-secret-name` and `-namespace`, given together, with
//! the templates `${pv.name}`, `${pvc.namespace}` and, in names, `${pvc.name}` and
//! `${pvc.annotations['<key>']}`. The provisioner secret goes with CreateVolume and,
//! recorded on the PV, with DeleteVolume; the others are references on the PV.
//! Secret values are never logged or put in a message; only names are.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, SecretReference};
use kube::{Api, Client, ResourceExt};

use super::request::Unprovisionable;

const PREFIX: &str = "csi.storage.k8s.io/";
pub const DELETION_SECRET_NAME: &str = "volume.kubernetes.io/provisioner-deletion-secret-name";
pub const DELETION_SECRET_NAMESPACE: &str =
    "volume.kubernetes.io/provisioner-deletion-secret-namespace";

/// The secret references a class asks for, resolved for one claim.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretRefs {
    pub provisioner: Option<SecretReference>,
    pub controller_publish: Option<SecretReference>,
    pub node_stage: Option<SecretReference>,
    pub node_publish: Option<SecretReference>,
    pub controller_expand: Option<SecretReference>,
}

impl SecretRefs {
    /// Resolves every `<purpose>-secret-*` pair of the class parameters for `pvc`,
    /// whose volume will be called `pv_name`.
    pub fn resolve(
        parameters: &BTreeMap<String, String>,
        pvc: &PersistentVolumeClaim,
        pv_name: &str,
    ) -> Result<Self, Unprovisionable> {
        let one = |purpose| reference(parameters, purpose, pvc, pv_name);
        Ok(Self {
            provisioner: one("provisioner")?,
            controller_publish: one("controller-publish")?,
            node_stage: one("node-stage")?,
            node_publish: one("node-publish")?,
            controller_expand: one("controller-expand")?,
        })
    }
}

fn reference(
    parameters: &BTreeMap<String, String>,
    purpose: &str,
    pvc: &PersistentVolumeClaim,
    pv_name: &str,
) -> Result<Option<SecretReference>, Unprovisionable> {
    let name_key = format!("{PREFIX}{purpose}-secret-name");
    let namespace_key = format!("{PREFIX}{purpose}-secret-namespace");
    let (name, namespace) = match (parameters.get(&name_key), parameters.get(&namespace_key)) {
        (None, None) => return Ok(None),
        (Some(name), Some(namespace)) => (name, namespace),
        _ => {
            return Err(Unprovisionable(format!(
                "{name_key} and {namespace_key} must be given together"
            )));
        }
    };
    let namespace = expand(namespace, &namespace_key, pvc, pv_name, false)?;
    let name = expand(name, &name_key, pvc, pv_name, true)?;
    if name.is_empty() || namespace.is_empty() {
        return Err(Unprovisionable(format!(
            "{name_key} and {namespace_key} resolve to an empty name or namespace"
        )));
    }
    Ok(Some(SecretReference {
        name: Some(name),
        namespace: Some(namespace),
    }))
}

/// Fills in `${...}` templates; claim fields only where `claim_fields` allows them.
fn expand(
    template: &str,
    key: &str,
    pvc: &PersistentVolumeClaim,
    pv_name: &str,
    claim_fields: bool,
) -> Result<String, Unprovisionable> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| Unprovisionable(format!("{key}: unclosed ${{ in {template:?}")))?;
        let field = &after[..end];
        let annotation = field
            .strip_prefix("pvc.annotations['")
            .and_then(|f| f.strip_suffix("']"));
        let value = match (field, annotation) {
            ("pv.name", _) => pv_name.to_string(),
            ("pvc.namespace", _) => pvc.namespace().unwrap_or_default(),
            ("pvc.name", _) if claim_fields => pvc.name_any(),
            (_, Some(annotation)) if claim_fields => {
                pvc.annotations().get(annotation).cloned().ok_or_else(|| {
                    Unprovisionable(format!("{key}: the claim has no annotation {annotation:?}"))
                })?
            }
            _ => {
                return Err(Unprovisionable(format!(
                    "{key}: ${{{field}}} is not a template this key accepts"
                )));
            }
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The secret's data as CSI carries it: string keys to string values.
pub async fn fetch(
    client: &Client,
    reference: &SecretReference,
) -> Result<HashMap<String, String>, String> {
    let namespace = reference.namespace.clone().unwrap_or_default();
    let name = reference.name.clone().unwrap_or_default();
    let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get(&name)
        .await
        .map_err(|e| format!("getting secret {namespace}/{name}: {e}"))?;
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| {
            String::from_utf8(value.0)
                .map(|text| (key.clone(), text))
                .map_err(|_| format!("secret {namespace}/{name}: the value of {key} is not UTF-8"))
        })
        .collect()
}

/// The deletion secret recorded on a PV at provisioning, if any. csi-provisioner
/// writes both annotations empty for "no secret", so an empty name means none.
pub fn deletion_reference(annotations: &BTreeMap<String, String>) -> Option<SecretReference> {
    let name = annotations
        .get(DELETION_SECRET_NAME)
        .filter(|n| !n.is_empty())?;
    Some(SecretReference {
        name: Some(name.clone()),
        namespace: Some(annotations.get(DELETION_SECRET_NAMESPACE)?.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim() -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "apps",
                         "annotations": {"team": "blue"}},
        }))
        .expect("pvc")
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect()
    }

    fn named(name: &str, namespace: &str) -> Option<SecretReference> {
        Some(SecretReference {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
        })
    }

    #[test]
    fn templates_resolve_per_claim() {
        let refs = SecretRefs::resolve(
            &params(&[
                (
                    "provisioner-secret-name",
                    "creds-${pvc.annotations['team']}",
                ),
                ("provisioner-secret-namespace", "${pvc.namespace}"),
                ("node-publish-secret-name", "${pvc.name}-${pv.name}"),
                ("node-publish-secret-namespace", "vault"),
            ]),
            &claim(),
            "pvc-1",
        )
        .expect("resolved");
        assert_eq!(refs.provisioner, named("creds-blue", "apps"));
        assert_eq!(refs.node_publish, named("data-pvc-1", "vault"));
        assert_eq!(refs.node_stage, None);
    }

    #[test]
    fn bad_templates_are_refused_with_the_key() {
        for (pairs, why) in [
            (vec![("provisioner-secret-name", "s")], "given together"),
            (
                vec![
                    ("node-stage-secret-name", "s"),
                    ("node-stage-secret-namespace", "${pvc.name}"),
                ],
                "not a template this key accepts",
            ),
            (
                vec![
                    ("node-stage-secret-name", "${pvc.annotations['missing']}"),
                    ("node-stage-secret-namespace", "ns"),
                ],
                "no annotation",
            ),
            (
                vec![
                    ("node-stage-secret-name", "${pv.name"),
                    ("node-stage-secret-namespace", "ns"),
                ],
                "unclosed",
            ),
        ] {
            let error = SecretRefs::resolve(&params(&pairs), &claim(), "pvc-1").expect_err(why);
            assert!(error.0.contains(why), "{}", error.0);
            assert!(error.0.contains(PREFIX), "names the key: {}", error.0);
        }
    }

    #[test]
    fn the_deletion_secret_is_read_back_from_the_annotations() {
        let annotations = BTreeMap::from([
            (DELETION_SECRET_NAME.to_string(), "creds".to_string()),
            (DELETION_SECRET_NAMESPACE.to_string(), "apps".to_string()),
        ]);
        assert_eq!(deletion_reference(&annotations), named("creds", "apps"));
        assert_eq!(deletion_reference(&BTreeMap::new()), None);
        let upstream_none = BTreeMap::from([
            (DELETION_SECRET_NAME.to_string(), String::new()),
            (DELETION_SECRET_NAMESPACE.to_string(), String::new()),
        ]);
        assert_eq!(
            deletion_reference(&upstream_none),
            None,
            "csi-provisioner's empty annotations mean no secret"
        );
    }
}
