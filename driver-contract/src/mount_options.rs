//! The `mountOptions` parameter of NFS volumes: checked by the controller when a
//! volume is created, applied by the node plugin when it is mounted.

/// The options of a comma-separated `mountOptions` string, trimmed, empty ones skipped.
pub fn mount_option_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|o| !o.is_empty())
}

/// Whether the node plugin passes this option to the kernel: `addr=` is the plugin's to
/// set (it resolves the server itself), and the option string is one line.
pub fn mount_option_allowed(option: &str) -> bool {
    !option.contains(['\0', '\n']) && !option.starts_with("addr=")
}
