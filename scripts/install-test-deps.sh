#!/usr/bin/env bash
# Installs what the test suite drives, on Debian 12 as root:
#   - the real Nix 2.8 client and daemon (Debian's nix-bin): the reference the suite compares with;
#   - fuse3 (fusermount3: auto-unmount of the FUSE view when the process dies);
#   - tools the end-to-end scripts use (unshare, diff, find, cmp, python3 for the raw-socket clients);
#   - a Debian sid chroot with Nix 2.34 at /var/cache/pkgchain/sid-chroot (made once, reused),
#     the second real client version. Set PKGCHAIN_NO_SID=1 to skip it;
#   - the system user pkgchain-e2e (on this machine and in the chroot), the untrusted user the
#     end-to-end scenarios run as.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "install-test-deps: run as root" >&2
  exit 1
fi

packages=(nix-bin fuse3 util-linux diffutils findutils debootstrap time python3 coreutils passwd gcc make)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-test-deps: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# nix-bin enables a nix-daemon unit; the suite never uses the machine's /nix, and the tests
# start their own daemons in private namespaces.
nix-store --version

sid=/var/cache/pkgchain/sid-chroot
if [ -z "${PKGCHAIN_NO_SID:-}" ] && [ ! -x "$sid/usr/bin/nix-store" ]; then
  echo "install-test-deps: creating the Debian sid chroot with Nix 2.34 at $sid"
  rm -rf "$sid.partial"
  mkdir -p "$(dirname "$sid")"
  debootstrap --variant=minbase --include=nix-bin,libdbi-perl sid "$sid.partial" http://deb.debian.org/debian
  mv "$sid.partial" "$sid"
fi
if [ -x "$sid/usr/bin/nix-store" ]; then
  unshare --mount --propagation private -- bash -c "mount --bind /proc '$sid/proc' && chroot '$sid' nix-store --version"
fi

user=pkgchain-e2e
id -u "$user" > /dev/null 2>&1 || useradd --system --user-group --no-create-home --shell /bin/sh "$user"
if [ -d "$sid/etc" ]; then
  for db in passwd group; do
    grep -q "^$user:" "$sid/etc/$db" || grep "^$user:" "/etc/$db" >> "$sid/etc/$db"
  done
fi
