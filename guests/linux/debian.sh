#!/bin/sh
# debian.sh CACHE GEN_INIT_CPIO EPOCH: Debian's stock kernel and an initramfs that loads its
# virtio modules, in CACHE (nothing of it is committed).
#   CACHE/vmlinuz              the kernel of the linux-image-amd64 package (apt-get download,
#                              not installed)
#   CACHE/initramfs.cpio.gz    busybox, the same /init, and the virtio modules (decompressed)
#                              with lib/modules/load.order, dependencies first (modules.dep,
#                              made with depmod; bookworm's modules are plain .ko, later
#                              Debian kernels' .ko.xz are decompressed here, since busybox
#                              insmod may not read them)
set -eu
cache=$1 gen=$2 epoch=$3
here=$(cd "$(dirname "$0")" && pwd)
# The modules a virtio guest needs; their dependencies are added from modules.dep.
want="virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk
      failover net_failover virtio_net virtio_console virtio_rng"

mkdir -p "$cache/dl"
cache=$(cd "$cache" && pwd)
# linux-image-amd64 is a metapackage: download the versioned image package it depends on.
pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
[ -n "$pkg" ] || { echo "debian.sh: cannot resolve linux-image-amd64 (apt-get update?)" >&2; exit 1; }
deb=$(ls "$cache/dl/${pkg}"_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
    (cd "$cache/dl" && apt-get download "$pkg")
    deb=$(ls "$cache/dl/${pkg}"_*.deb | head -n 1)
fi
echo "debian.sh: $deb"
rm -rf "$cache/root" "$cache/stage"
dpkg-deb -x "$deb" "$cache/root"
kver=$(ls "$cache/root/lib/modules" | head -n 1)
moddir=$cache/root/lib/modules/$kver
cp "$cache/root/boot/vmlinuz-$kver" "$cache/vmlinuz"
# The package ships no modules.dep (its postinst runs depmod): make one in the extracted tree.
if [ ! -f "$moddir/modules.dep" ]; then
    if command -v depmod >/dev/null 2>&1 || [ -x /sbin/depmod ]; then
        PATH=$PATH:/sbin:/usr/sbin depmod -b "$cache/root" "$kver"
    else
        busybox depmod -b "$cache/root" "$kver"
    fi
fi
echo "$kver" > "$cache/kernel-release"

# Dependency closure in load order: a depth-first walk of modules.dep, each module after the
# modules it needs. Built-in ones (modules.builtin) need no loading.
order=$(awk -v want="$want" '
    function base(p) { sub(/.*\//, "", p); sub(/\.ko(\.xz|\.zst|\.gz)?$/, "", p); gsub(/-/, "_", p); return p }
    function visit(m,   i, n, d) {
        if (m in done) return
        done[m] = 1
        if (!(m in path)) { if (!(m in builtin)) print "missing " m; return }
        n = split(deps[m], d, " ")
        for (i = 1; i <= n; i++) visit(base(d[i]))
        print path[m]
    }
    FILENAME ~ /modules\.builtin$/ { builtin[base($0)] = 1; next }
    { m = $1; sub(/:$/, "", m); name = base(m); path[name] = m; $1 = ""; deps[name] = $0 }
    END { n = split(want, w, /[ \n\t]+/); for (i = 1; i <= n; i++) if (w[i] != "") visit(w[i]) }
' "$moddir/modules.builtin" "$moddir/modules.dep")
if echo "$order" | grep -q '^missing '; then
    echo "debian.sh: $(echo "$order" | grep '^missing ')" >&2
    exit 1
fi

mkdir -p "$cache/stage/modules"
list=$cache/initramfs.list
cat "$here/initramfs.list" > "$list"
echo "# Debian $kver modules, loaded by /init in this order" >> "$list"
: > "$cache/stage/load.order"
for p in $order; do
    name=$(basename "$p")
    case "$name" in
    *.xz) xz -dc "$moddir/$p" > "$cache/stage/modules/${name%.xz}"; name=${name%.xz} ;;
    *.zst) zstd -qdc "$moddir/$p" > "$cache/stage/modules/${name%.zst}"; name=${name%.zst} ;;
    *) cp "$moddir/$p" "$cache/stage/modules/$name" ;;
    esac
    echo "$name" >> "$cache/stage/load.order"
    echo "file /lib/modules/$name \${STAGE}/modules/$name 0644 0 0" >> "$list"
done
echo "file /lib/modules/load.order \${STAGE}/load.order 0644 0 0" >> "$list"
install -m 0755 "$here/init" "$cache/stage/init"
install -m 0755 /bin/busybox "$cache/stage/busybox"
find "$cache/stage" -exec touch -h -d "@$epoch" {} +
STAGE=$cache/stage "$gen" -t "$epoch" "$list" | gzip -9 -n > "$cache/initramfs.cpio.gz"
echo "debian.sh: $kver, modules: $(tr '\n' ' ' < "$cache/stage/load.order")"
ls -l "$cache/vmlinuz" "$cache/initramfs.cpio.gz"
