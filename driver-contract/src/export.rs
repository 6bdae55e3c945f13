//! Where an NFS export is: the server (with its portmapper port) and the shared path,
//! in the forms the driver's parameters and volume IDs carry.

use std::fmt;

/// The directory at the root of each share where the driver keeps its records and
/// snapshots: never a volume's subdirectory, never scrubbed by Recycle.
pub const METADATA_DIR: &str = ".stowage";

/// Portmapper port used when the server string names none.
pub const DEFAULT_PORTMAP_PORT: u16 = 111;

/// An export address that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadExport {
    /// The `server` parameter.
    #[error("server {0:?} must be host, host:port, [ipv6] or [ipv6]:port")]
    Server(String),
    /// The `share` parameter.
    #[error("share {0:?} must be an absolute path without '..'")]
    Share(String),
    /// The compact `server/share` form, as IDs carry it.
    #[error("{0:?} has no share path")]
    NoShare(String),
}

/// An NFS export: the server (and portmapper port) plus the exported path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Export {
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// The server's portmapper port.
    pub port: u16,
    /// The exported path: absolute, no trailing `/` but for the root.
    pub share: String,
}

impl Export {
    /// Parses the `server` parameter (`host`, `host:port`, `[v6]` or `[v6]:port`,
    /// the port being the portmapper's) and the `share` parameter (absolute path).
    pub fn parse(server: &str, share: &str) -> Result<Self, BadExport> {
        let (host, port) = split_host_port(server)?;
        if !share.starts_with('/') || share.contains('\0') || share.len() > 1024 {
            return Err(BadExport::Share(share.to_string()));
        }
        if share.split('/').any(|c| c == "..") {
            return Err(BadExport::Share(share.to_string()));
        }
        let share = match share.trim_end_matches('/') {
            "" => "/".to_string(),
            trimmed => trimmed.to_string(),
        };
        Ok(Self { host, port, share })
    }

    /// The `host[:port]` form accepted by [`Export::parse`].
    pub fn server(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == DEFAULT_PORTMAP_PORT {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// Parses the `server/share` form that [`fmt::Display`] writes.
    pub fn parse_compact(s: &str) -> Result<Self, BadExport> {
        // The share starts at the first `/` after the host, which an IPv6 host brackets.
        let host_end = if s.starts_with('[') {
            s.find(']').unwrap_or(0)
        } else {
            0
        };
        let slash = s[host_end..]
            .find('/')
            .map(|i| i + host_end)
            .ok_or_else(|| BadExport::NoShare(s.to_string()))?;
        Self::parse(&s[..slash], &s[slash..])
    }
}

impl fmt::Display for Export {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.server(), self.share)
    }
}

fn split_host_port(server: &str) -> Result<(String, u16), BadExport> {
    let bad = || BadExport::Server(server.to_string());
    if server.is_empty() || server.len() > 255 || server.contains(['/', '\0', ' ']) {
        return Err(bad());
    }
    let (host, port) = if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (host, port)
    } else {
        match server.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            Some(_) => return Err(bad()),
            None => (server, None),
        }
    };
    let port = match port {
        None => DEFAULT_PORTMAP_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    // No host name or address holds a bracket; one left inside (`[[x]`) would be read
    // back from an ID as the start of an IPv6 host (a fuzzer found it).
    if host.is_empty() || host.contains(['[', ']']) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_round_trips_through_its_compact_form() {
        for (server, share) in [
            ("10.0.0.1", "/srv"),
            ("nfs.local:2049", "/a/b"),
            ("[::1]:111", "/"),
            ("[fd00::2]:4000", "/x"),
            // A `]` in the share was taken for the end of an IPv6 host (a fuzzer found it).
            ("server", "/share/with]bracket"),
            ("[::1]", "/a]b/c"),
        ] {
            let export = Export::parse(server, share).expect("valid");
            assert_eq!(Export::parse_compact(&export.to_string()), Ok(export));
        }
    }

    #[test]
    fn export_rejects_bad_servers_and_shares() {
        for (server, share) in [
            ("", "/x"),
            ("a:b:c", "/x"),
            ("h:0", "/x"),
            ("h", "rel"),
            ("h", "/a/../b"),
            ("h/x", "/x"),
            ("[[::1]", "/x"),
            ("[a]]:1", "/x"),
        ] {
            assert!(Export::parse(server, share).is_err(), "{server} {share}");
        }
    }
}
