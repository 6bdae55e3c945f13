//! NFS volumes on the node: the kernel mount at the staging path, built from the
//! volume context that the controller returned.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Component, PathBuf};

use driver_contract::export::{DEFAULT_PORTMAP_PORT, Export};
use driver_contract::mount_options::{mount_option_allowed, mount_option_list};
use nix::mount::MsFlags;

use crate::beneath::Handle;
use crate::host::Mounts;

use crate::error::{Error, Result};

/// What to mount for an NFS volume, and which subdirectory the pod gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsVolume {
    /// The server and share.
    pub export: Export,
    /// The volume's directory in the share (empty: the share itself).
    pub sub_dir: PathBuf,
    /// The mount options asked for, allowed ones only, without duplicates.
    pub options: Vec<String>,
}

impl NfsVolume {
    /// Reads `server`, `share`, `subDir` and `mountOptions` from the context, and adds
    /// the capability's mount flags.
    pub fn from_context(context: &HashMap<String, String>, mount_flags: &[String]) -> Result<Self> {
        let field = |key: &'static str| {
            context.get(key).filter(|v| !v.is_empty()).ok_or_else(|| {
                Error::invalid(
                    "volume_context",
                    format!("{key} is required for an NFS volume"),
                )
            })
        };
        let export = Export::parse(field("server")?, field("share")?)
            .map_err(|e| Error::invalid("volume_context", e.to_string()))?;
        let sub_dir = PathBuf::from(context.get("subDir").map(String::as_str).unwrap_or(""));
        if sub_dir
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(Error::invalid(
                "volume_context.subDir",
                format!("{} must be a relative path without '..'", sub_dir.display()),
            ));
        }
        let mut options: Vec<String> = Vec::new();
        let listed = context
            .get("mountOptions")
            .map(String::as_str)
            .unwrap_or("");
        for option in
            mount_option_list(listed).chain(mount_flags.iter().flat_map(|f| mount_option_list(f)))
        {
            if !mount_option_allowed(option) {
                return Err(Error::invalid(
                    "mount options",
                    format!("{option:?} is not allowed"),
                ));
            }
            if !options.iter().any(|o| o == option) {
                options.push(option.to_string());
            }
        }
        Ok(Self {
            export,
            sub_dir,
            options,
        })
    }

    /// `host:/share`, as the kernel and mountinfo name it.
    pub fn source(&self) -> String {
        let host = if self.export.host.contains(':') {
            format!("[{}]", self.export.host)
        } else {
            self.export.host.clone()
        };
        format!("{host}:{}", self.export.share)
    }

    /// The kernel's option string: the caller's options, NFSv3 over TCP unless they say
    /// otherwise, the server address, and for a server given with a port (a userspace
    /// server answering MOUNT and NFS on it) that port for both.
    pub fn mount_data(&self, addr: IpAddr, read_only: bool) -> String {
        let has = |prefixes: &[&str]| {
            self.options.iter().any(|o| {
                prefixes
                    .iter()
                    .any(|p| o == p || o.starts_with(&format!("{p}=")))
            })
        };
        let mut data = self.options.clone();
        if !has(&["vers", "nfsvers"]) {
            data.push("vers=3".into());
        }
        if !has(&["proto", "tcp", "udp"]) {
            data.push("proto=tcp".into());
        }
        if self.export.port != DEFAULT_PORTMAP_PORT {
            for key in ["port", "mountport"] {
                if !has(&[key]) {
                    data.push(format!("{key}={}", self.export.port));
                }
            }
        }
        if read_only && !has(&["ro"]) {
            data.push("ro".into());
        }
        data.push(format!("addr={addr}"));
        data.join(",")
    }

    /// Mounts the export at the `staging` directory (blocking: name lookup and mount).
    pub fn mount(&self, mounts: &dyn Mounts, staging: &Handle, read_only: bool) -> Result<()> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(self.export.host.as_str(), 0))
            .ok()
            .and_then(|mut addrs| addrs.next())
            .map(|a| a.ip())
            .ok_or_else(|| Error::NfsServerUnresolved {
                host: self.export.host.clone(),
            })?;
        let data = self.mount_data(addr, read_only);
        let flags = if read_only {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
        mounts
            .mount(&self.source(), staging, "nfs", flags, Some(data.as_str()))
            .map_err(|e| match e {
                nix::errno::Errno::ENODEV => Error::NoNfsClient,
                nix::errno::Errno::EACCES | nix::errno::Errno::EPERM => Error::NfsRefused {
                    export: self.source(),
                    errno: e,
                },
                nix::errno::Errno::ETIMEDOUT
                | nix::errno::Errno::ECONNREFUSED
                | nix::errno::Errno::EHOSTUNREACH
                | nix::errno::Errno::ENETUNREACH => Error::NfsUnreachable {
                    export: self.source(),
                    errno: e,
                },
                other => Error::mount(
                    format!("mount {} on {}", self.source(), staging.path().display()),
                    other,
                ),
            })
    }
}

/// Does this kernel have an NFS client at all?
pub fn kernel_supports_nfs() -> bool {
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some("nfs"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn context(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_to_nfsv3_over_tcp_with_the_server_address() {
        let v = NfsVolume::from_context(
            &context(&[
                ("server", "nfs.example"),
                ("share", "/exports"),
                ("subDir", "a/b"),
            ]),
            &[],
        )
        .expect("valid");
        assert_eq!(v.source(), "nfs.example:/exports");
        assert_eq!(v.sub_dir, PathBuf::from("a/b"));
        assert_eq!(
            v.mount_data(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)), false),
            "vers=3,proto=tcp,addr=10.0.0.5"
        );
    }

    #[test]
    fn class_options_and_capability_flags_win_and_merge() {
        let ctx = context(&[
            ("server", "[fd00::1]:2049"),
            ("share", "/e"),
            ("mountOptions", "nfsvers=4.1,hard"),
        ]);
        let v = NfsVolume::from_context(&ctx, &["noatime".into(), "hard".into()]).expect("valid");
        assert_eq!(v.source(), "[fd00::1]:/e");
        let data = v.mount_data("fd00::1".parse().expect("ip"), true);
        assert_eq!(
            data,
            "nfsvers=4.1,hard,noatime,proto=tcp,port=2049,mountport=2049,ro,addr=fd00::1"
        );
    }

    #[test]
    fn bad_contexts_are_refused() {
        assert!(
            NfsVolume::from_context(&context(&[("server", "h"), ("share", "/e")]), &[]).is_ok()
        );
        for ctx in [
            context(&[("share", "/e")]),
            context(&[("server", "h"), ("share", "relative")]),
            context(&[("server", "h"), ("share", "/e"), ("subDir", "../up")]),
            context(&[("server", "h"), ("share", "/e"), ("subDir", "/abs")]),
            context(&[
                ("server", "h"),
                ("share", "/e"),
                ("mountOptions", "addr=1.2.3.4"),
            ]),
        ] {
            assert!(NfsVolume::from_context(&ctx, &[]).is_err(), "{ctx:?}");
        }
    }
}
