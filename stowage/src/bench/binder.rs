//! Binding time of the binder's matching for N volumes and M claims.

use std::time::Instant;

use provisioner::binder::{
    AccessModes, Claim, ClaimRef, Volume, VolumeIndex, VolumeMode, VolumePhase,
};
use stowage_common::quantity::Quantity;

use super::error::Error;
use super::plot::{self, Chart, Series};

#[derive(clap::Args)]
pub struct BinderBench {
    /// Available PersistentVolumes.
    #[arg(long, default_value_t = 100_000)]
    volumes: usize,
    /// Pending claims to bind.
    #[arg(long, default_value_t = 100_000)]
    claims: usize,
    /// Also time ten sizes up to the given ones and draw the curve as a PNG here.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
}

const CLASSES: [&str; 4] = ["", "fast", "slow", "archive"];

/// A deterministic spread of shapes: a few classes and access-mode sets, sizes 1..1024 Gi.
fn shape(i: usize) -> (&'static str, AccessModes, Quantity) {
    let mixed = i.wrapping_mul(2_654_435_761) >> 7;
    let class = CLASSES[mixed % CLASSES.len()];
    let modes = match (mixed / 4) % 4 {
        0 => AccessModes::RWO,
        1 => AccessModes::parse(["ReadWriteOnce", "ReadOnlyMany"]),
        2 => AccessModes::RWX,
        _ => AccessModes::parse(["ReadWriteOnce", "ReadWriteMany"]),
    };
    let gib = 1 + (mixed / 16) % 1024;
    (class, modes, gibibytes(gib as u128))
}

fn gibibytes(gib: u128) -> Quantity {
    // 1024 GiB in nano-units is far inside 128 bits.
    Quantity::from_bytes(gib << 30).unwrap_or_default()
}

fn volumes(count: usize) -> Vec<Volume> {
    (0..count)
        .map(|i| {
            let (class, access, capacity) = shape(i);
            Volume {
                name: format!("pv-{i:07}"),
                class: class.to_string(),
                mode: VolumeMode::Filesystem,
                access,
                capacity: Some(capacity),
                labels: Default::default(),
                claim_ref: None,
                deleting: false,
                phase: VolumePhase::Available,
                reclaim_policy: Default::default(),
                bound_by_controller: false,
                dynamically_provisioned: false,
            }
        })
        .collect()
}

fn claims(count: usize) -> Vec<Claim> {
    (0..count)
        .map(|i| {
            let (class, access, request) = shape(i.wrapping_mul(7) + 3);
            let access = if access.contains(AccessModes::RWO) {
                AccessModes::RWO
            } else {
                access
            };
            Claim {
                namespace: "default".into(),
                name: format!("claim-{i:07}"),
                uid: format!("uid-{i}"),
                class: class.to_string(),
                has_class: true,
                mode: VolumeMode::Filesystem,
                access,
                request: Some(request),
                selector: None,
                volume_name: String::new(),
                phase: Default::default(),
                bind_completed: false,
                selected_node: None,
            }
        })
        .collect()
}

struct Timing {
    indexed: std::time::Duration,
    binding: std::time::Duration,
    bound: usize,
}

fn measure(volume_count: usize, claim_count: usize) -> Timing {
    let volumes = volumes(volume_count);
    let claims = claims(claim_count);
    let started = Instant::now();
    let mut index = VolumeIndex::new();
    for volume in volumes {
        index.upsert(volume);
    }
    let indexed = started.elapsed();
    let mut bound = 0usize;
    for claim in &claims {
        let Some(volume) = index.find_match(claim, false).cloned() else {
            continue;
        };
        bound += 1;
        index.upsert(Volume {
            claim_ref: Some(ClaimRef {
                namespace: claim.namespace.clone(),
                name: claim.name.clone(),
                uid: claim.uid.clone(),
            }),
            phase: VolumePhase::Bound,
            ..volume
        });
    }
    Timing {
        indexed,
        binding: started.elapsed() - indexed,
        bound,
    }
}

pub fn run(args: BinderBench) -> Result<(), Error> {
    let Timing {
        indexed,
        binding,
        bound,
    } = measure(args.volumes, args.claims);
    let total = indexed + binding;
    println!("binder: {} volumes, {} claims", args.volumes, args.claims);
    println!("  index built in {:.1} ms", indexed.as_secs_f64() * 1000.0);
    println!(
        "  binding computed in {:.1} ms ({} claims bound, {} left pending), {:.2} µs per claim",
        binding.as_secs_f64() * 1000.0,
        bound,
        args.claims - bound,
        binding.as_secs_f64() * 1e6 / args.claims.max(1) as f64
    );
    println!("  total {:.1} ms", total.as_secs_f64() * 1000.0);
    match args.plot {
        Some(path) => plot_curve(&path, args.volumes, args.claims),
        None => Ok(()),
    }
}

/// Index build and binding time at a tenth, two tenths ... of the given sizes.
fn plot_curve(path: &std::path::Path, volumes: usize, claims: usize) -> Result<(), Error> {
    let mut index_points = Vec::new();
    let mut binding_points = Vec::new();
    for tenth in 1..=10 {
        let timing = measure(volumes * tenth / 10, claims * tenth / 10);
        let x = (volumes * tenth / 10) as f64;
        index_points.push((x, super::millis(timing.indexed)));
        binding_points.push((x, super::millis(timing.binding)));
    }
    let series = [
        Series::new("index build", index_points),
        Series::new("binding (claims = volumes)", binding_points),
    ];
    let chart = Chart {
        title: "binder: time against volumes and claims",
        x_label: "volumes (and as many claims)",
        y_label: "ms",
        series: &series,
    };
    plot::draw(path, &chart)?;
    println!("  curve drawn to {}", path.display());
    Ok(())
}
