//! `stowage status`: volumes, claims and mounts of the single machine, as tables.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::error::{self, Error};
use super::record;
use crate::kubeconfig;
use crate::layout::{DEFAULT_DATA, Layout};

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The data directory `stowage up` runs with.
    #[arg(long, default_value = DEFAULT_DATA)]
    data: PathBuf,
}

pub async fn status(args: StatusArgs) -> Result<(), Error> {
    let layout = Layout::new(&args.data);
    let client = kubeconfig::client(&layout.kubeconfig()).await?;
    let volumes = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::ApiDown)?;
    let claims = Api::<PersistentVolumeClaim>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(error::api("list claims"))?;
    let mut out = String::from("VOLUMES\n");
    out.push_str(&table(
        &["NAME", "CAPACITY", "RECLAIM", "STATUS", "CLAIM", "CLASS"],
        volumes.items.iter().map(volume_row).collect(),
    ));
    out.push_str("\nCLAIMS\n");
    out.push_str(&table(
        &["NAMESPACE", "NAME", "STATUS", "VOLUME", "CAPACITY", "CLASS"],
        claims.items.iter().map(claim_row).collect(),
    ));
    out.push_str("\nMOUNTS\n");
    out.push_str(&table(
        &["TARGET", "CLAIM", "VOLUME"],
        record::all(&layout.mounts())
            .into_iter()
            .map(|m| {
                vec![
                    m.target.display().to_string(),
                    format!("{}/{}", m.namespace, m.claim),
                    m.volume,
                ]
            })
            .collect(),
    ));
    print!("{out}");
    Ok(())
}

fn volume_row(pv: &PersistentVolume) -> Vec<String> {
    let spec = pv.spec.clone().unwrap_or_default();
    let claim = spec
        .claim_ref
        .map(|c| {
            format!(
                "{}/{}",
                c.namespace.unwrap_or_default(),
                c.name.unwrap_or_default()
            )
        })
        .unwrap_or_default();
    vec![
        pv.name_any(),
        spec.capacity
            .and_then(|c| c.get("storage").map(|q| q.0.clone()))
            .unwrap_or_default(),
        spec.persistent_volume_reclaim_policy.unwrap_or_default(),
        pv.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default(),
        claim,
        spec.storage_class_name.unwrap_or_default(),
    ]
}

fn claim_row(pvc: &PersistentVolumeClaim) -> Vec<String> {
    let spec = pvc.spec.clone().unwrap_or_default();
    let status = pvc.status.clone().unwrap_or_default();
    vec![
        pvc.namespace().unwrap_or_default(),
        pvc.name_any(),
        status.phase.unwrap_or_default(),
        spec.volume_name.unwrap_or_default(),
        status
            .capacity
            .and_then(|c| c.get("storage").map(|q| q.0.clone()))
            .unwrap_or_default(),
        spec.storage_class_name.unwrap_or_default(),
    ]
}

/// Left-aligned columns as kubectl prints them; `(none)` for an empty table.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    if rows.is_empty() {
        return "(none)\n".into();
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("   ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}
