# Builds that attack the sandbox (tests/sandbox_security.rs). Each records what happened in
# its output: "blocked: ..." lines where the attack failed, "ESCAPED: ..." where it worked.
# Builders are the host's shells and tools, made visible with `extra-sandbox-paths = /usr /lib /lib64`.
{ hostIp ? "127.0.0.1", port ? "8000", outside ? "", socketName ? "pkgchain-attack" }:
let
  system = builtins.currentSystem;
  attack = name: script: extra: derivation ({
    inherit system name;
    builder = "/usr/bin/bash";
    PATH = "/usr/bin";
    args = [ "-c" ''
      blocked() { echo "blocked: $*"; }
      escaped() { echo "ESCAPED: $*"; }
      try() { what=$1; shift; if "$@" > /dev/null 2>&1; then escaped "$what"; else blocked "$what"; fi; }
      ${script}
    '' ];
  } // extra);
  simple = derivation { inherit system; name = "victim"; builder = "/usr/bin/sh"; args = [ "-c" "echo secret > $out" ]; };
in rec {
  inherit simple;
  network = attack "network" ''
    { try "tcp to the host at ${hostIp}:${port}" bash -c 'exec 3<>/dev/tcp/${hostIp}/${port}'
      try "tcp to 1.1.1.1:53" bash -c 'exec 3<>/dev/tcp/1.1.1.1/53'
      try "loopback of the host at 127.0.0.1:${port}" bash -c 'exec 3<>/dev/tcp/127.0.0.1/${port}'
    } > $out
  '' { };
  reading = attack "reading" ''
    { try "read /etc/shadow" cat /etc/shadow
      try "list /root" ls /root/.
      try "list /home" ls /home/.
      try "see the daemon socket" test -e /nix/var/nix/daemon-socket/socket
      try "read a store path outside the closure" cat ${builtins.unsafeDiscardStringContext outside}
      try "list the store" bash -c '[ "$(ls /nix/store | wc -l)" -gt 1 ]'
    } > $out
  '' { };
  writing = attack "writing" ''
    { try "write /etc/passwd" bash -c 'echo x >> /etc/passwd'
      try "create /etc/new" touch /etc/new
      try "write into /usr (a host path)" touch /usr/pkgchain-attack
      try "create a file in /" touch /pkgchain-attack
      try "create a file in /dev" touch /dev/pkgchain-attack
      try "write /proc/sys" bash -c 'echo 1 > /proc/sys/kernel/sysrq'
    } > $out
  '' { };
  setuid = attack "setuid" ''
    mkdir $out
    touch $out/f
    { try "chmod u+s" chmod u+s $out/f
      try "chmod g+s" chmod g+s $out/f
      try "chmod 6755" chmod 6755 $out/f
      try "setgid directory" bash -c "mkdir $out/d && chmod g+s $out/d"
    } > $out/result
    test -u $out/f && escaped "setuid bit set" >> $out/result || true
  '' { };
  devices = attack "devices" ''
    { try "mknod a character device" mknod $TMPDIR/null c 1 3
      try "mknod a block device" mknod $TMPDIR/sda b 8 0
      try "open /dev/mem" bash -c 'exec 3< /dev/mem'
      try "open /dev/kmsg" bash -c 'exec 3< /dev/kmsg'
    } > $out
  '' { };
  # CVE-2024-27297: two builds share a file descriptor over an abstract unix socket. Here the
  # listener is outside any build (the test), and a fixed-output build (host network
  # namespace) tries to connect: Landlock's scoping refuses it.
  abstractSocket = attack "abstract-socket" ''
    if python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect("\0${socketName}")' 2>/dev/null; then
      echo ESCAPED > $out
    else
      echo blocked > $out
    fi
  '' {
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    # sha256 of "blocked\n"
    outputHash = "sha256-TNxFIx6BGuFtxsqPv3ZdvrZicghfI/1o3hYOVyiNvJc=";
  };
  # CVE-2026-39860: a fixed-output build whose output is a symlink to a file outside the store.
  symlinkOut = attack "symlink-out" ''
    ln -s /etc/shadow $out
  '' {
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
    outputHash = "sha256-+g6dZr2KAYYXD/7QAcJH7fCFEMQfhRxiban0t8ZS+p4=";
  };
  # CVE-2025-46415: a process left behind swaps the build directory for a symlink after the
  # builder exits, hoping the daemon's clean-up follows it.
  swapBuildDir = attack "swap-build-dir" ''
    mkdir -p $TMPDIR/work
    (sleep 1; rm -rf $TMPDIR/work; ln -s / $TMPDIR/work; echo swapped) &
    echo started > $out
  '' { };
  # Another build's processes: in its own pid namespace nothing else is visible to trace.
  ptrace = attack "ptrace" ''
    { try "see processes outside the build" bash -c 'grep -l -a -e "http[.]server" -e "pkgchain-daemo[n]" -e "nix-buil[d]" /proc/[0-9]*/cmdline'
      try "signal pid 2 (none exists)" kill -0 2
      try "read the mem of pid 1 (itself: its parent outside is not visible)" bash -c 'cat /proc/1/status | grep -q "^PPid:[[:space:]]*[1-9]"'
    } > $out
  '' { };
  forkBomb = attack "fork-bomb" ''
    n=0
    for i in $(seq 1 6000); do
      if sleep 100 2>/dev/null & then n=$((n+1)); else break; fi
    done
    forked=$(ls /proc | grep -c '^[0-9]*$')
    if [ "$forked" -ge 6000 ]; then escaped "6000 processes" > $out; else blocked "stopped at $forked processes" > $out; fi
  '' { };
  deepNesting = attack "deep-nesting" ''
    python3 -c '
import os
os.mkdir(os.environ["out"])
os.chdir(os.environ["out"])
for _ in range(10000):
    os.mkdir("d")
    os.chdir("d")
open("f", "w").write("bottom\n")
' 
  '' { };
}
