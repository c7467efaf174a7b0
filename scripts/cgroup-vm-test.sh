#!/usr/bin/env bash
# Run the cgroup v2 memory.max tests where they can really run (`just cgroup-test`; not in
# `just test`: it needs root, /dev/kvm and qemu). The development machine's cgroups are
# v1 (hybrid): the memory controller is bound to v1, so no v2 subtree can get memory.max.
# So: boot Debian's kernel in a small KVM guest whose root file system is this machine's
# own, shared read-only over 9p (same Python, venv, FFmpeg, bubblewrap, worktree); its
# init mounts cgroup2 alone at /sys/fs/cgroup, makes a delegated subtree with the memory
# and pids controllers, moves itself there and runs pytest on the cgroup tests.
#
# Needs: qemu-system-x86 (apt), root; Debian's kernel package and busybox-static
# are fetched with `apt-get download` into $CACHE (nothing is installed for them).
# Usage: scripts/cgroup-vm-test.sh [pytest arguments]. Exit status: pytest's, in the guest.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${CACHE:-/var/tmp/ffserve-cgroup-vm}
KERNEL_PKG=${KERNEL_PKG:-$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')}
PYTHON=${PYTHON:-$(command -v python)}
# pytest's arguments: the script's, else the cgroup tests.
# (quoted for the guest's shell: `-k "a and b"` stays one argument)
TESTS=$(printf '%q ' "${@:-tests/ffmpeg/test_cgroup.py}")
MEMORY_MB=${MEMORY_MB:-2048}
# KVM (ACCEL="kvm -cpu host,-arch-capabilities") is faster where it works; nested under
# the development machine's own hypervisor the guest kernel hangs before its first line,
# while TCG (emulation) boots it in 2 s.
ACCEL=${ACCEL:-"tcg -cpu max"}

command -v qemu-system-x86_64 >/dev/null || { echo "needs qemu-system-x86 (apt)" >&2; exit 2; }

mkdir -p "$CACHE"
(
    cd "$CACHE"
    [ -d kernel/boot ] || { apt-get download "$KERNEL_PKG" && dpkg -x "$KERNEL_PKG"_*.deb kernel; }
    [ -x bb/bin/busybox ] || { apt-get download busybox-static && dpkg -x busybox-static_*.deb bb; }
) >&2
vmlinuz=$(ls "$CACHE"/kernel/boot/vmlinuz-*)
modules=$(ls -d "$CACHE"/kernel/lib/modules/*)

# The initramfs: busybox, the modules a 9p root needs (in load order: no depmod here),
# and /init.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/root/{bin,mod,proc,sys,dev,host}
cp "$CACHE"/bb/bin/busybox "$work"/root/bin/busybox
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
         netfs fscache 9pnet 9pnet_virtio 9p; do
    cp "$(find "$modules" -name "$m.ko" | head -1)" "$work"/root/mod/
done
cat >"$work"/root/init <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
         netfs fscache 9pnet 9pnet_virtio 9p; do insmod /mod/\$m.ko || echo "insmod \$m failed"; done
# cache=loose: the guest keeps what it read (FFmpeg's hundred libraries) in its page cache.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 host /host || dmesg | tail -20
mount -t proc proc /host/proc; mount -t sysfs sys /host/sys; mount -t devtmpfs dev /host/dev
mount -t tmpfs tmp /host/tmp; mount -t tmpfs run /host/run
# cgroup v2 alone: every controller is free for it.
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup
ip link set lo up 2>/dev/null
# switch_root, not chroot: the kernel refuses new user namespaces (bwrap's) to a chrooted
# process. It execs the shell as PID 1, which powers the guest off when done.
exec switch_root /host /bin/sh -c '
    set -e
    cd /sys/fs/cgroup
    echo "+memory +pids" > cgroup.subtree_control
    mkdir delegated && echo \$\$ > delegated/cgroup.procs
    echo "== guest: kernel \$(uname -r), cgroup \$(cat /proc/self/cgroup)"
    # Emulated, a first FFmpeg start reads every library over 9p: more than the 10 s the
    # server allows its start-up check. Read them once before.
    for i in 1 2; do
        start=\$(date +%s.%N); ffmpeg -version >/dev/null; end=\$(date +%s.%N)
        echo "== guest: ffmpeg -version \$start -> \$end"
    done
    cd "$PWD"
    export PYTHONPATH="$PWD" HOME=/tmp PYTHONDONTWRITEBYTECODE=1
    set +e
    "$PYTHON" -m pytest -p no:cacheprovider -v -rs $TESTS
    echo "== guest: pytest exit \$?"
    echo o > /proc/sysrq-trigger; sleep 10  # (PID 1 must not exit first: a panic)
'
poweroff -f
EOF
chmod +x "$work"/root/init
(cd "$work"/root && find . | "$CACHE"/bb/bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$work"/initrd.gz

log="$work"/console.log
timeout 1800 qemu-system-x86_64 -accel $ACCEL -smp 2 -m "$MEMORY_MB" -nographic \
    -no-reboot -kernel "$vmlinuz" -initrd "$work"/initrd.gz \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
    -virtfs local,path=/,mount_tag=host,security_model=passthrough,readonly=on,multidevs=remap \
    -nic none | tee "$log"
status=$(sed -n 's/^== guest: pytest exit \([0-9]*\).*/\1/p' "$log" | tail -1)
exit "${status:-3}"
