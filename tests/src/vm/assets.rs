//! What a guest boots from, built once from Debian's packages and cached under the
//! target directory: qemu and its libraries unpacked (not installed: installing
//! qemu-system-x86 would replace the machine's newer qemu-utils), the kernel's
//! uncompressed image (TCG boots it in seconds, where decompressing a bzImage takes
//! many more), and an initramfs of busybox and the modules the tests need.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cpio::Archive;

/// Debian packages unpacked for qemu: the emulator, its firmware and the libraries
/// the machine does not have.
const QEMU_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
    "libcapstone4",
    "libfdt1",
    "libpmem1",
    "librdmacm1",
    "libibverbs1",
    "libslirp0",
    "libvdeplug2",
    "libndctl6",
    "libdaxctl1",
    "libnl-3-200",
    "libnl-route-3-200",
];

/// Modules loaded at boot, each after what it depends on (depmod's order): virtio
/// devices, 9p for the shares, the NFS client, ext4 and XFS images on loop devices.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "9pnet_virtio",
    "9p",
    "nfsv3",
    "ext4",
    "loop",
    "xfs",
];

/// Paths of a ready set of assets.
#[derive(Debug, Clone)]
pub struct Assets {
    pub qemu: PathBuf,
    pub library_path: String,
    /// Debian builds qemu's accelerators and devices as loadable modules.
    pub module_dir: PathBuf,
    pub firmware_dirs: Vec<PathBuf>,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub kernel_release: String,
}

impl Assets {
    /// The assets under `target/vm-assets`, made on first use. Concurrent tests wait
    /// for one another on a lock file.
    pub fn get() -> Self {
        let dir = cache_dir();
        fs::create_dir_all(&dir).expect("create the VM asset cache");
        let lock = File::create(dir.join(".lock")).expect("VM asset lock file");
        lock.lock().expect("lock the VM asset cache");
        if !dir.join("ready").exists() {
            build(&dir);
            fs::write(dir.join("ready"), b"").expect("mark VM assets ready");
        }
        let release = fs::read_to_string(dir.join("kernel-release"))
            .expect("kernel-release")
            .trim()
            .to_string();
        let root = dir.join("root");
        Self {
            qemu: root.join("usr/bin/qemu-system-x86_64"),
            library_path: format!(
                "{}:{}",
                root.join("usr/lib/x86_64-linux-gnu").display(),
                root.join("lib/x86_64-linux-gnu").display()
            ),
            module_dir: root.join("usr/lib/x86_64-linux-gnu/qemu"),
            firmware_dirs: vec![root.join("usr/share/qemu"), root.join("usr/share/seabios")],
            kernel: dir.join("vmlinux"),
            initramfs: dir.join("initramfs.cpio"),
            kernel_release: release,
        }
    }
}

/// `target/vm-assets`, beside the profile directory of the running test.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STOWAGE_VM_ASSETS") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(|target| target.join("vm-assets"))
        .expect("the test runs from a target directory")
}

fn build(dir: &Path) {
    let debs = dir.join("debs");
    let root = dir.join("root");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&debs).expect("mkdir debs");
    let kernel_package = kernel_package();
    let mut packages: Vec<&str> = QEMU_PACKAGES.to_vec();
    packages.push(&kernel_package);
    packages.push("busybox-static");
    download(&debs, &packages);
    for entry in fs::read_dir(&debs).expect("read debs") {
        let deb = entry.expect("deb entry").path();
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    }
    let release = kernel_package
        .strip_prefix("linux-image-")
        .expect("a linux-image package")
        .to_string();
    fs::write(dir.join("kernel-release"), &release).expect("write kernel-release");
    extract_vmlinux(
        &root.join(format!("boot/vmlinuz-{release}")),
        &dir.join("vmlinux"),
    );
    write_initramfs(&root, &release, &dir.join("initramfs.cpio"));
}

/// The versioned kernel package that `linux-image-amd64` depends on.
fn kernel_package() -> String {
    let out = apt(&["apt-cache", "depends", "linux-image-amd64"]);
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no kernel in `apt-cache depends linux-image-amd64`: {out}"))
}

fn download(debs: &Path, packages: &[&str]) {
    let mut command = Command::new("apt-get");
    command
        .args(["-o", "APT::Sandbox::User=root", "download"])
        .args(packages)
        .current_dir(debs);
    if !command.status().is_ok_and(|s| s.success()) {
        // A fresh machine may not have read its package lists yet.
        run(Command::new("apt-get").args(["update", "-qq"]));
        run(&mut command);
    }
}

/// Runs an apt query, reading the package lists first if it finds nothing.
fn apt(args: &[&str]) -> String {
    let query = || {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect("run apt-cache");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = query();
    if out.contains("Depends:") {
        return out;
    }
    run(Command::new("apt-get").args(["update", "-qq"]));
    query()
}

/// The ELF kernel inside a bzImage: the xz stream after the real-mode setup code.
fn extract_vmlinux(bzimage: &Path, out: &Path) {
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
    let image = fs::read(bzimage).expect("read the kernel image");
    let start = image
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .expect("an xz-compressed kernel (Debian's CONFIG_KERNEL_XZ)");
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(File::create(out).expect("create vmlinux"))
        .spawn()
        .expect("run xz");
    // xz reads one stream and stops; the bytes after it are the image's trailer.
    let _ = child
        .stdin
        .take()
        .expect("xz stdin")
        .write_all(&image[start..]);
    let status = child.wait().expect("wait for xz");
    assert!(
        status.success(),
        "xz could not unpack {}",
        bzimage.display()
    );
}

fn write_initramfs(root: &Path, release: &str, out: &Path) {
    let modules_dir = root.join("lib/modules").join(release);
    run(Command::new("depmod").arg("-b").arg(root).arg(release));
    let mut order: Vec<String> = Vec::new();
    for module in MODULES {
        let out = Command::new("modprobe")
            .arg("-d")
            .arg(root)
            .args(["-S", release, "--show-depends", module])
            .output()
            .expect("modprobe --show-depends");
        assert!(out.status.success(), "modprobe cannot resolve {module}");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(path) = line.trim().strip_prefix("insmod ") {
                let relative = Path::new(path.trim())
                    .strip_prefix(&modules_dir)
                    .expect("a module below the release's directory")
                    .display()
                    .to_string();
                if !order.contains(&relative) {
                    order.push(relative);
                }
            }
        }
    }
    let mut archive = Archive::new();
    for dir in ["bin", "dev", "proc", "sys", "host", "modules"] {
        archive.dir(dir);
    }
    archive.char_device("dev/console", 5, 1);
    archive.file(
        "bin/busybox",
        0o755,
        &fs::read(root.join("bin/busybox")).expect("busybox-static"),
    );
    archive.file("init", 0o755, include_bytes!("init.sh"));
    let mut list = String::new();
    for (i, module) in order.iter().enumerate() {
        let name = format!("modules/{i:02}.ko");
        archive.file(
            &name,
            0o644,
            &fs::read(modules_dir.join(module)).expect("read a module"),
        );
        list.push_str(&format!("/{name} {module}\n"));
    }
    archive.file("modules.list", 0o644, list.as_bytes());
    fs::write(out, archive.finish()).expect("write the initramfs");
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}
