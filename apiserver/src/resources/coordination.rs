//! coordination.k8s.io/v1: Lease, for the provisioner's leader election.

use serde_json::{Value, json};

use k8s_openapi::api::coordination::v1::Lease;

use super::{PLAIN, roundtrip};
use crate::meta;
use crate::registry::{Behaviour, Resource};
use crate::table::{self, Column, text};

/// The Lease kind.
pub const LEASE: Resource = Resource {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    short_names: &[],
    namespaced: true,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<Lease>,
        columns: &[
            Column::name(),
            Column::new(
                "Holder",
                "string",
                "holderIdentity contains the identity of the holder of a current lease.",
            ),
            Column::age(),
        ],
        cells: lease_cells,
        ..PLAIN
    },
};

fn lease_cells(object: &Value) -> Vec<Value> {
    vec![
        json!(meta::name(object)),
        json!(text(object, "/spec/holderIdentity")),
        table::age(object),
    ]
}
