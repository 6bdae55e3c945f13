//! Validation of the request shapes shared by several RPCs: capabilities and capacity.

use csi_proto::v1::volume_capability::{AccessType as CsiAccessType, access_mode::Mode};
use csi_proto::v1::{CapacityRange, VolumeCapability};
use serde::{Deserialize, Serialize};

use crate::error::{RequestError, Result};

/// How a volume is consumed: as a filesystem or as a raw block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessType {
    /// A filesystem, mounted.
    Mount,
    /// A raw block device.
    Block,
}

/// What a list of capabilities asks of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityNeeds {
    /// Filesystem or block device (all capabilities agree).
    pub access_type: AccessType,
    /// Whether any capability lets more than one node use the volume.
    pub multi_node: bool,
    /// The first filesystem type named, empty for none.
    pub fs_type: String,
}

/// Checks that every capability names an access type and mode, and that they agree
/// on the access type; the field name goes into the error.
pub fn parse_capabilities(
    field: &'static str,
    caps: &[VolumeCapability],
) -> Result<CapabilityNeeds> {
    if caps.is_empty() {
        return Err(RequestError::invalid(
            field,
            "at least one volume capability is required",
        ));
    }
    let mut needs: Option<CapabilityNeeds> = None;
    for cap in caps {
        let one = parse_capability(field, cap)?;
        needs = Some(match needs {
            None => one,
            Some(prev) if prev.access_type != one.access_type => {
                return Err(RequestError::invalid(
                    field,
                    "mixes block and mount access types",
                ));
            }
            Some(prev) => CapabilityNeeds {
                multi_node: prev.multi_node || one.multi_node,
                fs_type: if prev.fs_type.is_empty() {
                    one.fs_type
                } else {
                    prev.fs_type
                },
                ..prev
            },
        });
    }
    needs.ok_or_else(|| RequestError::invalid(field, "at least one volume capability is required"))
}

/// Checks one capability names an access type and mode.
pub fn parse_capability(field: &'static str, cap: &VolumeCapability) -> Result<CapabilityNeeds> {
    let (access_type, fs_type) = match &cap.access_type {
        Some(CsiAccessType::Mount(m)) => (AccessType::Mount, m.fs_type.clone()),
        Some(CsiAccessType::Block(_)) => (AccessType::Block, String::new()),
        None => {
            return Err(RequestError::invalid(
                field,
                "access_type (mount or block) is required",
            ));
        }
    };
    let mode = cap
        .access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok())
        .filter(|m| *m != Mode::Unknown)
        .ok_or_else(|| RequestError::invalid(field, "access_mode is required"))?;
    let multi_node = matches!(
        mode,
        Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter
    );
    Ok(CapabilityNeeds {
        access_type,
        multi_node,
        fs_type,
    })
}

/// True for access modes that allow only one node at a time.
pub fn is_single_node(cap: &VolumeCapability) -> bool {
    cap.access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok())
        .is_some_and(|m| {
            matches!(
                m,
                Mode::SingleNodeWriter
                    | Mode::SingleNodeReaderOnly
                    | Mode::SingleNodeSingleWriter
                    | Mode::SingleNodeMultiWriter
            )
        })
}

/// A validated capacity range; zero means "unset", as in CSI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    /// At least this many bytes (0: unset).
    pub required: i64,
    /// At most this many bytes (0: unset).
    pub limit: i64,
}

impl Capacity {
    /// Checks a request's range; none means any size.
    pub fn parse(field: &'static str, range: Option<&CapacityRange>) -> Result<Self> {
        let Some(range) = range else {
            return Ok(Self::default());
        };
        if range.required_bytes < 0 || range.limit_bytes < 0 {
            return Err(RequestError::invalid(field, "bytes must not be negative"));
        }
        if range.limit_bytes != 0 && range.limit_bytes < range.required_bytes {
            return Err(RequestError::invalid(
                field,
                format!(
                    "limit_bytes {} is below required_bytes {}",
                    range.limit_bytes, range.required_bytes
                ),
            ));
        }
        Ok(Self {
            required: range.required_bytes,
            limit: range.limit_bytes,
        })
    }

    /// Does a volume of `size` bytes satisfy this range?
    pub fn admits(&self, size: i64) -> bool {
        size >= self.required && (self.limit == 0 || size <= self.limit)
    }

    /// The size to give a new volume: the request rounded up to `granule`, at least
    /// `minimum`, `default` when nothing was asked; OutOfRange when the limit forbids it.
    pub fn choose(&self, default: i64, minimum: i64, granule: i64) -> Result<i64> {
        let wanted = if self.required > 0 {
            self.required
        } else if self.limit > 0 {
            self.limit.min(default)
        } else {
            default
        };
        let rounded = round_up(wanted.max(minimum), granule);
        let size = if self.limit > 0 && rounded > self.limit {
            round_down(self.limit, granule)
        } else {
            rounded
        };
        if !self.admits(size) || size < minimum {
            return Err(RequestError::CapacityUnmet {
                required: self.required,
                limit: self.limit,
                minimum,
                granule,
            });
        }
        Ok(size)
    }
}

fn round_up(n: i64, granule: i64) -> i64 {
    n.saturating_add(granule - 1) / granule * granule
}

fn round_down(n: i64, granule: i64) -> i64 {
    n / granule * granule
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_proto::v1::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn cap(block: bool, mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(if block {
                CsiAccessType::Block(BlockVolume {})
            } else {
                CsiAccessType::Mount(MountVolume::default())
            }),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    #[test]
    fn capabilities_must_be_complete_and_consistent() {
        assert!(parse_capabilities("c", &[]).is_err());
        assert!(parse_capabilities("c", &[cap(false, Mode::Unknown)]).is_err());
        assert!(
            parse_capabilities(
                "c",
                &[VolumeCapability {
                    access_type: None,
                    ..cap(false, Mode::SingleNodeWriter)
                }]
            )
            .is_err()
        );
        assert!(
            parse_capabilities(
                "c",
                &[
                    cap(false, Mode::SingleNodeWriter),
                    cap(true, Mode::SingleNodeWriter)
                ]
            )
            .is_err()
        );
        let needs = parse_capabilities(
            "c",
            &[
                cap(false, Mode::SingleNodeWriter),
                cap(false, Mode::MultiNodeReaderOnly),
            ],
        )
        .expect("valid");
        assert!(needs.multi_node);
        assert_eq!(needs.access_type, AccessType::Mount);
    }

    #[test]
    fn capacity_range_is_validated_and_chosen() {
        let range = |r, l| CapacityRange {
            required_bytes: r,
            limit_bytes: l,
        };
        assert!(Capacity::parse("c", Some(&range(10, 5))).is_err());
        assert!(Capacity::parse("c", Some(&range(-1, 0))).is_err());
        let c = Capacity::parse("c", Some(&range(1000, 0))).expect("valid");
        assert_eq!(c.choose(1 << 30, 0, 4096).expect("fits"), 4096);
        let c = Capacity::parse("c", Some(&range(0, 0))).expect("valid");
        assert_eq!(c.choose(1 << 30, 0, 1).expect("fits"), 1 << 30);
        let c = Capacity::parse("c", Some(&range(1, 1 << 20))).expect("valid");
        assert!(
            c.choose(1 << 30, 16 << 20, 4096).is_err(),
            "limit below the minimum"
        );
        let c = Capacity::parse("c", Some(&range(5000, 6000))).expect("valid");
        assert!(
            c.choose(1 << 30, 0, 4096).is_err(),
            "no multiple of 4096 in range"
        );
    }
}
