//! The deployment's RBAC applied to the embedded API server at every start, so the
//! components run with exactly the permissions a cluster gives them. The file is the
//! source of truth: its roles and bindings are created or replaced to match, and
//! those an earlier start applied that it no longer holds are deleted.
//! ServiceAccounts are skipped: the identities are the token file's.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// deploy/rbac.yaml as built in; `stowage up --rbac FILE` applies another.
pub const DEPLOYED: &str = include_str!("../../../deploy/rbac.yaml");

/// Marks what `up` applied, so what the file drops can be found and removed.
const APPLIED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "stowage-up");

/// The roles and bindings of one RBAC file.
#[derive(Default)]
pub struct RbacFile {
    cluster_roles: Vec<ClusterRole>,
    cluster_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
}

/// An RBAC file up cannot read or the server would not take.
#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    #[error("{file}: {error}")]
    Yaml {
        file: String,
        error: Box<serde_saphyr::Error>,
    },
    #[error("{file}: {kind} {error}")]
    Decode {
        file: String,
        kind: String,
        error: serde_json::Error,
    },
    #[error("{file}: {kind:?} is not an RBAC kind up can apply")]
    Kind { file: String, kind: String },
    #[error("create namespace {name}: {error}")]
    Namespace {
        name: String,
        error: Box<kube::Error>,
    },
    #[error("apply {kind} {name}: {error}")]
    Apply {
        kind: String,
        name: String,
        error: Box<kube::Error>,
    },
}

impl RbacFile {
    /// Parses `text` (several YAML documents); `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, RbacError> {
        let documents: Vec<Value> =
            serde_saphyr::from_multiple(text).map_err(|error| RbacError::Yaml {
                file: source.to_string(),
                error: Box::new(error),
            })?;
        let mut file = Self::default();
        for document in documents.into_iter().filter(|d| !d.is_null()) {
            let kind = document["kind"].as_str().unwrap_or_default().to_string();
            let decode = |error| RbacError::Decode {
                file: source.to_string(),
                kind: kind.clone(),
                error,
            };
            match kind.as_str() {
                "ClusterRole" => file.cluster_roles.push(typed(document).map_err(decode)?),
                "ClusterRoleBinding" => {
                    file.cluster_bindings.push(typed(document).map_err(decode)?)
                }
                "Role" => file.roles.push(typed(document).map_err(decode)?),
                "RoleBinding" => file.bindings.push(typed(document).map_err(decode)?),
                "ServiceAccount" => {}
                _ => {
                    return Err(RbacError::Kind {
                        file: source.to_string(),
                        kind,
                    });
                }
            }
        }
        Ok(file)
    }

    /// Creates, replaces and prunes until the server holds what the file says.
    pub async fn apply(self, client: &Client) -> Result<(), RbacError> {
        let namespaces = namespaces_of(&self.roles, &self.bindings);
        for namespace in &namespaces {
            ensure_namespace(client, namespace).await?;
        }
        let cluster_roles = Api::<ClusterRole>::all(client.clone());
        sync(&cluster_roles, self.cluster_roles, |_, _| true).await?;
        let cluster_bindings = Api::<ClusterRoleBinding>::all(client.clone());
        sync(&cluster_bindings, self.cluster_bindings, |a, b| {
            a.role_ref == b.role_ref
        })
        .await?;
        for namespace in &namespaces {
            let in_namespace = |m: &ObjectMeta| m.namespace.as_deref() == Some(namespace.as_str());
            let roles: Vec<Role> = self
                .roles
                .iter()
                .filter(|r| in_namespace(&r.metadata))
                .cloned()
                .collect();
            sync(
                &Api::namespaced(client.clone(), namespace),
                roles,
                |_, _| true,
            )
            .await?;
            let bindings: Vec<RoleBinding> = self
                .bindings
                .iter()
                .filter(|b| in_namespace(&b.metadata))
                .cloned()
                .collect();
            sync(
                &Api::namespaced(client.clone(), namespace),
                bindings,
                |a: &RoleBinding, b| a.role_ref == b.role_ref,
            )
            .await?;
        }
        Ok(())
    }
}

fn typed<T: DeserializeOwned>(document: Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(document)
}

fn namespaces_of(roles: &[Role], bindings: &[RoleBinding]) -> Vec<String> {
    let mut namespaces: Vec<String> = roles
        .iter()
        .map(|r| &r.metadata)
        .chain(bindings.iter().map(|b| &b.metadata))
        .map(|m| m.namespace.clone().unwrap_or_else(|| "default".into()))
        .collect();
    namespaces.sort();
    namespaces.dedup();
    namespaces
}

async fn ensure_namespace(client: &Client, name: &str) -> Result<(), RbacError> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(RbacError::Namespace {
            name: name.to_string(),
            error: Box::new(error),
        }),
    }
}

/// Makes `api`'s objects marked as applied by up exactly `wanted`. An object whose
/// identity changed (`same` is false: a binding's roleRef, which the server keeps
/// immutable) is deleted and made again.
async fn sync<K>(api: &Api<K>, wanted: Vec<K>, same: fn(&K, &K) -> bool) -> Result<(), RbacError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let kind = K::kind(&());
    let failed = |name: &str, error: kube::Error| RbacError::Apply {
        kind: kind.to_string(),
        name: name.to_string(),
        error: Box::new(error),
    };
    let mut names = Vec::new();
    for mut object in wanted {
        let name = object.meta().name.clone().unwrap_or_default();
        object.meta_mut().namespace = None;
        object
            .meta_mut()
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(APPLIED_BY.0.into(), APPLIED_BY.1.into());
        match api.get_opt(&name).await.map_err(|e| failed(&name, e))? {
            Some(existing) if same(&existing, &object) => {
                object.meta_mut().resource_version = existing.meta().resource_version.clone();
                api.replace(&name, &PostParams::default(), &object)
                    .await
                    .map_err(|e| failed(&name, e))?;
            }
            Some(_) => {
                api.delete(&name, &DeleteParams::default())
                    .await
                    .map_err(|e| failed(&name, e))?;
                api.create(&PostParams::default(), &object)
                    .await
                    .map_err(|e| failed(&name, e))?;
            }
            None => {
                api.create(&PostParams::default(), &object)
                    .await
                    .map_err(|e| failed(&name, e))?;
            }
        }
        names.push(name);
    }
    let marked = ListParams::default().labels(&format!("{}={}", APPLIED_BY.0, APPLIED_BY.1));
    let applied = api.list(&marked).await.map_err(|e| failed("(list)", e))?;
    for stale in applied.items {
        let name = stale.meta().name.clone().unwrap_or_default();
        if !names.contains(&name) {
            api.delete(&name, &DeleteParams::default())
                .await
                .map_err(|e| failed(&name, e))?;
            tracing::info!(%kind, %name, "deleted: no longer in the RBAC file");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::up::credentials::{CONTROLLER, NAMESPACE, NODE};

    #[test]
    fn the_deployed_file_binds_the_accounts_up_issues_tokens_for() {
        let documents: Vec<Value> = serde_saphyr::from_multiple(DEPLOYED).unwrap_or_default();
        let accounts: Vec<(&str, &str)> = documents
            .iter()
            .filter(|d| d["kind"] == "ServiceAccount")
            .map(|d| {
                (
                    d["metadata"]["namespace"].as_str().unwrap_or_default(),
                    d["metadata"]["name"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(accounts, [(NAMESPACE, CONTROLLER), (NAMESPACE, NODE)]);
        let file = RbacFile::parse(DEPLOYED, "deploy/rbac.yaml");
        let file = file.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (file.cluster_roles.len(), file.cluster_bindings.len()),
            (2, 2)
        );
        assert_eq!((file.roles.len(), file.bindings.len()), (3, 3));
    }

    #[test]
    fn kinds_up_cannot_apply_are_refused_by_name() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n";
        assert_eq!(
            RbacFile::parse(text, "f.yaml").err().map(|e| e.to_string()),
            Some("f.yaml: \"Secret\" is not an RBAC kind up can apply".to_string())
        );
    }
}
