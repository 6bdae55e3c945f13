#!/bin/busybox sh
# The guest's first process: load the modules, bring up the network of qemu's user
# mode (10.0.2.15, the host's loopback as the gateway 10.0.2.2), mount the host's root
# read-only and the test's work directory read-write at the same path, run the test's
# vm-<hostname>/guest.sh there in a chroot, and power off with its exit status in the work directory.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

while read -r file name; do
  insmod "$file" || echo "stowage-vm: insmod $name failed"
done < /modules.list

work=
hostname=guest
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    stowage.work=*) work="${arg#stowage.work=}" ;;
    stowage.hostname=*) hostname="${arg#stowage.hostname=}" ;;
  esac
done
hostname "$hostname"

ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

opts=trans=virtio,version=9p2000.L,msize=262144
# cache=mmap, not loose: loose revalidates the host's directories, and a directory
# that changed on the host (its /proc, /tmp) would lose the mount on top of it.
mount -t 9p -o "$opts,ro,cache=mmap" hostroot /host
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts
mount -t devpts devpts /host/dev/pts
for dir in /run /tmp /var/tmp /var/lib /root; do
  mount -t tmpfs -o mode=0755 tmpfs "/host$dir"
done
chmod 1777 /host/tmp /host/var/tmp
mkdir -p "/host$work"
mount -t 9p -o "$opts,cache=none" work "/host$work"
mount --make-rshared /host

own="$work/vm-$hostname"
echo "stowage-vm: running $own/guest.sh"
chroot /host /bin/sh -c "cd '$own' && exec /bin/sh ./guest.sh" > "/host$own/guest.log" 2>&1
echo $? > "/host$own/exit-code"
echo "stowage-vm: guest.sh exited $(cat "/host$own/exit-code")"
sync
umount "/host$work"
poweroff -f
