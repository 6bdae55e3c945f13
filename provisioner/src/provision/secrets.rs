//! Secrets a StorageClass names for the driver, resolved as external-provisioner does:
//! `csi.storage.k8s.io/<purpose>-secret-name` and `-namespace`, given together, with
//! the templates `${pv.name}`, `${pvc.namespace}` and, in names, `${pvc.name}` and
//! `${pvc.annotations['<key>']}`. The provisioner secret goes with CreateVolume and,
//! recorded on the PV, with DeleteVolume; the others are references on the PV.
//! Secret values are never logged or put in a message; only names are.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, SecretReference};
use kube::{Api, Client, ResourceExt};

const PREFIX: &str = "csi.storage.k8s.io/";
/// The PV annotation that records the name of the secret DeleteVolume gets.
pub const DELETION_SECRET_NAME: &str = "volume.kubernetes.io/provisioner-deletion-secret-name";
/// The PV annotation that records the namespace of the secret DeleteVolume gets.
pub const DELETION_SECRET_NAMESPACE: &str =
    "volume.kubernetes.io/provisioner-deletion-secret-namespace";

/// Why a class's secret parameters do not resolve for a claim: the same claim and
/// class fail the same way, so it is final until either changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Only one of a purpose's name and namespace keys is given.
    #[error("{name_key} and {namespace_key} must be given together")]
    HalfGiven {
        /// The `<purpose>-secret-name` key.
        name_key: String,
        /// The `<purpose>-secret-namespace` key.
        namespace_key: String,
    },
    /// A name or namespace comes out empty.
    #[error("{name_key} and {namespace_key} resolve to an empty name or namespace")]
    Empty {
        /// The `<purpose>-secret-name` key.
        name_key: String,
        /// The `<purpose>-secret-namespace` key.
        namespace_key: String,
    },
    /// A `${` has no `}`.
    #[error("{key}: unclosed ${{ in {template:?}")]
    Unclosed {
        /// The parameter.
        key: String,
        /// Its value.
        template: String,
    },
    /// The claim lacks the annotation a template names.
    #[error("{key}: the claim has no annotation {annotation:?}")]
    NoAnnotation {
        /// The parameter.
        key: String,
        /// The annotation the template names.
        annotation: String,
    },
    /// A template this key does not accept (claim fields in a namespace, or unknown).
    #[error("{key}: ${{{field}}} is not a template this key accepts")]
    NotAccepted {
        /// The parameter.
        key: String,
        /// What the template names.
        field: String,
    },
}

/// Why a secret's data could not be had; retried, as the secret may yet appear.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Reading the secret failed (it may not exist).
    #[error("getting secret {namespace}/{name}: {error}")]
    Get {
        /// The secret's namespace.
        namespace: String,
        /// The secret's name.
        name: String,
        /// The API's answer.
        error: kube::Error,
    },
    /// A value CSI cannot carry, which takes strings.
    #[error("secret {namespace}/{name}: the value of {key} is not UTF-8")]
    NotUtf8 {
        /// The secret's namespace.
        namespace: String,
        /// The secret's name.
        name: String,
        /// The key whose value is not text.
        key: String,
    },
}

/// The secret references a class asks for, resolved for one claim.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretRefs {
    /// Given to CreateVolume and, recorded on the PV, to DeleteVolume.
    pub provisioner: Option<SecretReference>,
    /// The PV's `controllerPublishSecretRef`.
    pub controller_publish: Option<SecretReference>,
    /// The PV's `nodeStageSecretRef`.
    pub node_stage: Option<SecretReference>,
    /// The PV's `nodePublishSecretRef`.
    pub node_publish: Option<SecretReference>,
    /// The PV's `controllerExpandSecretRef`, given to ControllerExpandVolume.
    pub controller_expand: Option<SecretReference>,
}

impl SecretRefs {
    /// Resolves every `<purpose>-secret-*` pair of the class parameters for `pvc`,
    /// whose volume will be called `pv_name`.
    pub fn resolve(
        parameters: &BTreeMap<String, String>,
        pvc: &PersistentVolumeClaim,
        pv_name: &str,
    ) -> Result<Self, TemplateError> {
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
) -> Result<Option<SecretReference>, TemplateError> {
    let name_key = format!("{PREFIX}{purpose}-secret-name");
    let namespace_key = format!("{PREFIX}{purpose}-secret-namespace");
    let (name, namespace) = match (parameters.get(&name_key), parameters.get(&namespace_key)) {
        (None, None) => return Ok(None),
        (Some(name), Some(namespace)) => (name, namespace),
        _ => {
            return Err(TemplateError::HalfGiven {
                name_key,
                namespace_key,
            });
        }
    };
    let namespace = expand(namespace, &namespace_key, pvc, pv_name, false)?;
    let name = expand(name, &name_key, pvc, pv_name, true)?;
    if name.is_empty() || namespace.is_empty() {
        return Err(TemplateError::Empty {
            name_key,
            namespace_key,
        });
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
) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| TemplateError::Unclosed {
            key: key.to_string(),
            template: template.to_string(),
        })?;
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
                    TemplateError::NoAnnotation {
                        key: key.to_string(),
                        annotation: annotation.to_string(),
                    }
                })?
            }
            _ => {
                return Err(TemplateError::NotAccepted {
                    key: key.to_string(),
                    field: field.to_string(),
                });
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
) -> Result<HashMap<String, String>, SecretError> {
    let namespace = reference.namespace.clone().unwrap_or_default();
    let name = reference.name.clone().unwrap_or_default();
    let secret = match Api::<Secret>::namespaced(client.clone(), &namespace)
        .get(&name)
        .await
    {
        Ok(secret) => secret,
        Err(error) => {
            return Err(SecretError::Get {
                namespace,
                name,
                error,
            });
        }
    };
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| match String::from_utf8(value.0) {
            Ok(text) => Ok((key, text)),
            Err(_) => Err(SecretError::NotUtf8 {
                namespace: namespace.clone(),
                name: name.clone(),
                key,
            }),
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
                         "annotations": {"team": "blue", "empty": ""}},
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
        let cases = [
            (
                vec![("provisioner-secret-name", "s")],
                "csi.storage.k8s.io/provisioner-secret-name and \
                 csi.storage.k8s.io/provisioner-secret-namespace must be given together",
            ),
            (
                vec![
                    ("node-stage-secret-name", "s"),
                    ("node-stage-secret-namespace", "${pvc.name}"),
                ],
                "csi.storage.k8s.io/node-stage-secret-namespace: ${pvc.name} is not a template \
                 this key accepts",
            ),
            (
                vec![
                    ("node-stage-secret-name", "${pvc.annotations['missing']}"),
                    ("node-stage-secret-namespace", "ns"),
                ],
                "csi.storage.k8s.io/node-stage-secret-name: the claim has no annotation \"missing\"",
            ),
            (
                vec![
                    ("node-stage-secret-name", "${pv.name"),
                    ("node-stage-secret-namespace", "ns"),
                ],
                "csi.storage.k8s.io/node-stage-secret-name: unclosed ${ in \"${pv.name\"",
            ),
            (
                vec![
                    ("node-stage-secret-name", "${pvc.annotations['empty']}"),
                    ("node-stage-secret-namespace", "ns"),
                ],
                "csi.storage.k8s.io/node-stage-secret-name and \
                 csi.storage.k8s.io/node-stage-secret-namespace resolve to an empty name or namespace",
            ),
        ];
        for (pairs, message) in cases {
            let error = SecretRefs::resolve(&params(&pairs), &claim(), "pvc-1").expect_err(message);
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn a_secret_s_failure_names_the_secret_and_key_not_the_value() {
        let status = json!({"code": 404, "reason": "NotFound",
                            "message": "secrets \"creds-locked\" not found"});
        let missing = SecretError::Get {
            namespace: "default".into(),
            name: "creds-locked".into(),
            error: kube::Error::Api(Box::new(serde_json::from_value(status).expect("status"))),
        };
        let message = missing.to_string();
        assert!(
            message.starts_with("getting secret default/creds-locked: "),
            "{message}"
        );
        let binary = SecretError::NotUtf8 {
            namespace: "default".into(),
            name: "creds".into(),
            key: "password".into(),
        };
        assert_eq!(
            binary.to_string(),
            "secret default/creds: the value of password is not UTF-8"
        );
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
