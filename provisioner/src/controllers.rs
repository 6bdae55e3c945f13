//! Which controllers an instance runs: `--controllers` in kube-controller-manager's
//! syntax. `*` turns on every controller, `name` one, `-name` turns one off; the
//! first entry that names a controller decides for it, and a controller no entry
//! names is on only if the list has `*`. A new controller is one more variant of
//! [`Controller`] with its name.

use std::fmt;

/// The controllers of `stowage provisioner`, by the names `--controllers` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Controller {
    /// Binds claims to volumes and drives their phases (kube-controller-manager's
    /// PV controller does this in a cluster).
    Binder,
    /// Makes volumes for claims (external-provisioner's part).
    Provisioner,
    /// Deletes and recycles released volumes.
    Reclaimer,
    /// Grows volumes whose claims ask for more (external-resizer's part).
    Resizer,
    /// Takes and deletes VolumeSnapshots of the driver's classes (snapshot-controller
    /// and csi-snapshotter).
    Snapshotter,
    /// Applies a claim's VolumeAttributesClass to its volume (external-resizer's
    /// ControllerModifyVolume part).
    Modifier,
    /// Takes and deletes VolumeGroupSnapshots (snapshot-controller's and
    /// csi-snapshotter's group parts, which upstream enables on their own).
    GroupSnapshotter,
    /// Removes `kubernetes.io/pvc-protection` from a deleted claim no Pod uses
    /// (kube-controller-manager's pvc-protection controller).
    PvcProtection,
    /// Removes `kubernetes.io/pv-protection` from a deleted volume that is not Bound
    /// (kube-controller-manager's pv-protection controller).
    PvProtection,
}

impl Controller {
    /// Every controller, in the order `--controllers` lists them in its errors.
    pub const ALL: [Self; 9] = [
        Self::Binder,
        Self::Provisioner,
        Self::Reclaimer,
        Self::Resizer,
        Self::Snapshotter,
        Self::Modifier,
        Self::GroupSnapshotter,
        Self::PvcProtection,
        Self::PvProtection,
    ];

    /// The controller's name in `--controllers`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Binder => "binder",
            Self::Provisioner => "provisioner",
            Self::Reclaimer => "reclaimer",
            Self::Resizer => "resizer",
            Self::Snapshotter => "snapshotter",
            Self::Modifier => "modifier",
            Self::GroupSnapshotter => "groupsnapshotter",
            Self::PvcProtection => "pvc-protection",
            Self::PvProtection => "pv-protection",
        }
    }

    fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--controllers` entry that names no controller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--controllers: {entry:?} is not \"*\", a controller or -controller (controllers: {known})"
)]
pub struct UnknownController {
    entry: String,
    known: String,
}

/// A parsed `--controllers` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controllers {
    /// (controller, on) in list order; `None` stands for `*`.
    entries: Vec<Option<(Controller, bool)>>,
}

impl Default for Controllers {
    /// `*`: everything on.
    fn default() -> Self {
        Self {
            entries: vec![None],
        }
    }
}

impl Controllers {
    /// Parses the entries of a list (already split at commas); blanks are ignored.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, UnknownController> {
        let parsed = entries
            .iter()
            .map(|entry| entry.as_ref().trim())
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                if entry == "*" {
                    return Ok(None);
                }
                let (name, on) = match entry.strip_prefix('-') {
                    Some(name) => (name, false),
                    None => (entry, true),
                };
                Controller::named(name)
                    .map(|c| Some((c, on)))
                    .ok_or_else(|| UnknownController {
                        entry: entry.to_string(),
                        known: Controller::ALL.map(Controller::name).join(", "),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { entries: parsed })
    }

    /// Whether `controller` runs: the first entry naming it decides, else `*`.
    pub fn enabled(&self, controller: Controller) -> bool {
        self.entries
            .iter()
            .flatten()
            .find(|(c, _)| *c == controller)
            .map_or_else(|| self.entries.contains(&None), |(_, on)| *on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_enable_as_kube_controller_manager_does() {
        use Controller::{Binder, Reclaimer, Resizer};
        let all_but_the_binder = &Controller::ALL[1..];
        assert!(!all_but_the_binder.contains(&Binder));
        let cases: [(&str, &[&str], &[Controller]); 7] = [
            ("the default", &["*"], &Controller::ALL),
            ("all but the binder", &["*", "-binder"], all_but_the_binder),
            (
                "the minus may come first",
                &["-binder", "*"],
                all_but_the_binder,
            ),
            (
                "only those named",
                &["binder", "resizer"],
                &[Binder, Resizer],
            ),
            ("the first mention wins", &["binder", "-binder"], &[Binder]),
            ("nothing", &[], &[]),
            (
                "blanks and spaces are ignored",
                &[" reclaimer ", ""],
                &[Reclaimer],
            ),
        ];
        for (what, list, on) in cases {
            let controllers = Controllers::parse(list).expect(what);
            let enabled: Vec<Controller> = Controller::ALL
                .into_iter()
                .filter(|c| controllers.enabled(*c))
                .collect();
            assert_eq!(enabled, on, "{what}");
        }
        assert!(Controllers::default().enabled(Binder));
    }

    #[test]
    fn an_unknown_name_is_refused_naming_the_known_ones() {
        for entry in ["snapshots", "-attacher", "**", "Binder"] {
            let error = Controllers::parse(&["*", entry]).expect_err(entry);
            assert_eq!(
                error.to_string(),
                format!(
                    "--controllers: {entry:?} is not \"*\", a controller or -controller (controllers: binder, provisioner, reclaimer, resizer, snapshotter, modifier, groupsnapshotter, pvc-protection, pv-protection)"
                )
            );
        }
    }
}
