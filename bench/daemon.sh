#!/usr/bin/env bash
# Daemon benchmark: pkgchain-daemon against the real nix-daemon of Nix 2.34, in the same run,
# each in its own private mount namespace with a private /nix on disk; the clients are Nix 2.34
# (from the Debian sid chroot, NIX_REMOTE=daemon) and pkgchain-loadgen. See bench/README.md.
#
#   sudo bench/daemon.sh [--runs 3] [--quick] [options]
#
# The machine's /nix is never touched: every daemon sees a bind of a temporary directory under
# /var/tmp (ext4, not tmpfs) at /nix, inside a mount namespace that ends with it.
set -euo pipefail

RUNS=3
TREE_MB=1024
TREE_FILES=20000
DRVS=2000
TRIVIAL=200
HELLO_TARBALL=
CLIENTS=16
REQUESTS=5000
GC_PRINT=100000
GC_DEAD=50000
SECTIONS=instantiate,query,add
WORK_BASE=/var/tmp
OUT=
KEEP=0
QUICK=0
ARGS=("$@")

usage() {
    cat <<'EOF'
Usage: bench/daemon.sh [options]   (as root)

  --runs N          runs per measurement (default 3; median, min and max are reported)
  --quick           trial sizes: --tree-mb 64 --tree-files 2000 --drvs 200 --requests 500
                    --gc-print-paths 2000 --gc-dead-paths 1000 --runs 1 (options after
                    --quick override these)
  --tree-mb N       size of the tree for `nix-store --add` in MiB (default 1024)
  --tree-files N    regular files in that tree (default 20000)
  --drvs N          derivations in the nix-instantiate expression (default 2000)
  --clients N       concurrent QueryPathInfo clients (default 16)
  --requests N      QueryPathInfo requests per client (default 5000)
  --sections LIST   comma-separated subset of instantiate,query,add,builds,hello,gc (default
                    instantiate,query,add; query includes the memory measurements and needs the
                    instantiate's paths, which are made untimed when instantiate is not asked
                    for; builds: sandboxed builds, see --trivial; hello: GNU hello from
                    source with tests-nixpkgs/pkgs, needs --hello-tarball; gc: garbage
                    collection, see --gc-print-paths and --gc-dead-paths)
  --trivial N       independent trivial derivations built by the builds section (default 200)
  --hello-tarball F hello-2.10.tar.gz for the hello section (GNU's release; `apt-get source
                    hello` or ftp.gnu.org; sha256 31e06613...516b)
  --gc-print-paths N paths, none rooted, in the store of the gc section's `nix-store --gc
                    --print-dead` (default 100000)
  --gc-dead-paths N dead paths deleted by the gc section's `nix-store --gc` (default 50000)
  --work-dir DIR    parent of the temporary directory (default /var/tmp; must not be tmpfs)
  --out FILE        results file (default bench/results/daemon-<date>.md)
  --keep            keep the temporary directory for inspection

Needs: pkgchain-daemon and pkgchain-loadgen built in release mode
  cargo build --release -p pkgchain-daemon -p pkgchain-tests-nixpkgs --bins
(found in ${CARGO_TARGET_DIR:-target}/release; override with PKGCHAIN_DAEMON and LOADGEN), and
the Debian sid chroot with Nix 2.34 at /var/cache/pkgchain/sid-chroot (override with SID_CHROOT).
EOF
}

die() {
    echo "daemon.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
    --runs) RUNS=${2:?}; shift 2 ;;
    --quick) QUICK=1; TREE_MB=64; TREE_FILES=2000; DRVS=200; REQUESTS=500; GC_PRINT=2000; GC_DEAD=1000; RUNS=1; shift ;;
    --tree-mb) TREE_MB=${2:?}; shift 2 ;;
    --tree-files) TREE_FILES=${2:?}; shift 2 ;;
    --drvs) DRVS=${2:?}; shift 2 ;;
    --trivial) TRIVIAL=${2:?}; shift 2 ;;
    --hello-tarball) HELLO_TARBALL=${2:?}; shift 2 ;;
    --clients) CLIENTS=${2:?}; shift 2 ;;
    --requests) REQUESTS=${2:?}; shift 2 ;;
    --gc-print-paths) GC_PRINT=${2:?}; shift 2 ;;
    --gc-dead-paths) GC_DEAD=${2:?}; shift 2 ;;
    --sections) SECTIONS=${2:?}; shift 2 ;;
    --work-dir) WORK_BASE=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
    esac
done
for v in RUNS TREE_MB DRVS CLIENTS REQUESTS; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "--${v,,} wants a positive integer"
done
[[ $GC_PRINT =~ ^[0-9]+$ && $GC_PRINT -ge 1 && $GC_PRINT -le 99999999 ]] || die "--gc-print-paths wants an integer from 1 to 99999999"
[[ $GC_DEAD =~ ^[0-9]+$ && $GC_DEAD -ge 1 && $GC_DEAD -le 99999999 ]] || die "--gc-dead-paths wants an integer from 1 to 99999999"
[[ $TREE_FILES =~ ^[0-9]+$ && $TREE_FILES -ge 10 ]] || die "--tree-files wants an integer >= 10"
for s in ${SECTIONS//,/ }; do
    [[ $s == instantiate || $s == query || $s == add || $s == builds || $s == hello || $s == gc ]] || die "unknown section '$s'"
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${CARGO_TARGET_DIR:-$REPO/target}/release
DAEMON=${PKGCHAIN_DAEMON:-$BIN_DIR/pkgchain-daemon}
LOADGEN=${LOADGEN:-$BIN_DIR/pkgchain-loadgen}
CHROOT=${SID_CHROOT:-/var/cache/pkgchain/sid-chroot}
GEN=$REPO/bench/gen-tree.py
[ -n "$OUT" ] || OUT=$REPO/bench/results/daemon-$(date +%Y-%m-%d).md

# ---- refuse to run without what it needs ------------------------------------------------------
[ "$(id -u)" = 0 ] || die "must run as root (mount namespaces, chroot, FUSE, drop_caches)"
[ -x "$DAEMON" ] || die "$DAEMON is missing: cargo build --release -p pkgchain-daemon"
[ -x "$LOADGEN" ] || die "$LOADGEN is missing: cargo build --release -p pkgchain-tests-nixpkgs --bins"
[ -x "$CHROOT/usr/bin/nix-daemon" ] || die "no Nix 2.34 chroot at $CHROOT; create it with:
    debootstrap --variant=minbase --include=nix-bin,libdbi-perl sid $CHROOT"
for tool in python3 unshare chroot findmnt mountpoint timeout top flock; do
    command -v "$tool" > /dev/null || die "'$tool' is missing"
done
[ -e /dev/fuse ] || die "/dev/fuse is missing (our daemon serves its store as a FUSE view)"
[ -d /nix ] || die "/nix does not exist: it is needed as a mount point (it is never written to)"
[ -w /proc/sys/vm/drop_caches ] || die "cannot write /proc/sys/vm/drop_caches"
[ -d "$WORK_BASE" ] || die "work dir parent $WORK_BASE does not exist"
[ "$(stat -f -c %T "$WORK_BASE")" != tmpfs ] ||
    die "$WORK_BASE is tmpfs: use a directory on a real disk (--work-dir)"

# ---- into a private mount namespace -----------------------------------------------------------
if [ "${PKGCHAIN_BENCH_IN_NS:-}" != 1 ]; then
    export PKGCHAIN_BENCH_IN_NS=1
    exec unshare --mount --propagation private -- bash "${BASH_SOURCE[0]}" "${ARGS[@]}"
fi
[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] ||
    die "not in a private mount namespace (refusing to mount anything)"

LOCK=/run/lock/pkgchain-daemon-bench.lock
exec 9> "$LOCK"
flock -n 9 || die "another daemon benchmark is running (lock $LOCK)"

has_section() { [[ ,$SECTIONS, == *,$1,* ]]; }

WORK=$(mktemp -d "$WORK_BASE/pkgchain-daemon-bench.XXXXXX")
TREES=$WORK/trees # the tree and the expression, bound at $CHROOT/mnt
RAW=$WORK/raw.tsv # section impl value
FACTS=$WORK/facts.txt
TOP_PID=
mkdir -p "$TREES" "$WORK/bin" "$WORK/nix"
# Private copies: other people's cargo builds must not swap the binaries during the run.
cp "$DAEMON" "$WORK/bin/pkgchain-daemon"
cp "$LOADGEN" "$WORK/bin/pkgchain-loadgen"
DAEMON_SRC=$DAEMON
DAEMON=$WORK/bin/pkgchain-daemon
LOADGEN=$WORK/bin/pkgchain-loadgen
: > "$RAW"
: > "$FACTS"

cleanup() {
    local rc=$?
    set +e
    [ -z "$TOP_PID" ] || kill "$TOP_PID" 2> /dev/null
    umount -l "$CHROOT/mnt" 2> /dev/null
    umount -l "$CHROOT/dev" 2> /dev/null
    umount -l "$CHROOT/proc" 2> /dev/null
    if [ "$KEEP" = 1 ]; then
        echo "kept $WORK" >&2
    elif findmnt -rn -o TARGET | grep -q "^$WORK"; then
        echo "daemon.sh: something is still mounted under $WORK; not deleting it" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
row() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$RAW"; }
now_ns() { date +%s%N; }
secs_since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
json_field() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v = v[k]
print(v)' "$1" "$2"; }

NIX_CONF=$'build-users-group =\nsandbox = false\nsubstituters =\nrequire-sigs = false\nfsync-metadata = true'
# A Nix 2.34 client of the daemon serving this namespace's /nix (an hour at most: a stuck
# daemon must not hang the benchmark).
nix34() {
    timeout 3600 env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 NIX_REMOTE=daemon \
        XDG_CACHE_HOME=/nix/client-cache "NIX_CONFIG=$NIX_CONF" chroot "$CHROOT" "$@"
}

# The sum of VmRSS (statm) and of Pss (smaps_rollup), in KiB, over a process and all its
# descendants, every INTERVAL seconds until SIGTERM; then prints "peak_rss peak_pss max_procs
# samples"; creates the file READY (third argument) once it handles SIGTERM. nix-daemon forks
# one process per connection: summing over the tree counts them all.
RSS_SAMPLER='
import os, signal, sys, time
root, interval = int(sys.argv[1]), float(sys.argv[2])
page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
def children_of(p):
    # /proc/P/task/T/children: the children each thread forked; no scan of all of /proc,
    # which at 20 samples a second took a tenth of the CPU from the daemons measured.
    kids = []
    try:
        tasks = os.listdir(f"/proc/{p}/task")
    except OSError:
        return kids  # gone meanwhile
    for t in tasks:
        try:
            with open(f"/proc/{p}/task/{t}/children") as f:
                kids.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            pass
    return kids
def tree():
    todo, seen = [root], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(children_of(p))
    return seen
def sample():
    rss = pss = n = 0
    for p in tree():
        try:
            with open(f"/proc/{p}/statm") as f:
                rss += int(f.read().split()[1]) * page_kb
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        break
            n += 1
        except (OSError, ValueError, IndexError):
            pass
    return rss, pss, n
if len(sys.argv) > 3 and sys.argv[3] == "once":
    print(*sample())
    sys.exit(0)
peak = [0, 0, 0]
samples = 0
if len(sys.argv) > 3:
    open(sys.argv[3], "w").close()  # ready: SIGTERM is handled from here on
while not stop:
    for i, v in enumerate(sample()):
        peak[i] = max(peak[i], v)
    samples += 1
    time.sleep(interval)
print(*peak, samples)
'

# ---- sessions: one daemon in its own mount namespace --------------------------------------------
# session IMPL NIXDIR FUNCTION [ARGS...]: runs FUNCTION in a new private mount namespace where
# NIXDIR is bound at /nix (and at the chroot's /nix) and IMPL's daemon (ours or nix) serves
# /nix/var/nix/daemon-socket/socket; the daemon is stopped when FUNCTION returns.
session() {
    unshare --mount --propagation private -- bash -c 'set -euo pipefail; in_session "$@"' session "$@"
}
in_session() {
    IMPL=$1
    local nixdir=$2
    shift 2
    mount --bind "$nixdir" /nix
    # The hello section's nix-daemon 2.34 builds with the host's toolchain, which the chroot
    # lacks: bound on the chroot's empty /opt, and named /usr=/opt in its sandbox paths.
    [ -z "${BIND_HOST_USR:-}" ] || mount --bind /usr "$CHROOT/opt"
    mkdir -p /nix/store /nix/var/nix /nix/ipfs /nix/client-cache
    mount --rbind /nix "$CHROOT/nix"
    # A store used again (the gc section's) has the last daemon's socket file: not a sign of
    # this one being ready.
    rm -f /nix/var/nix/daemon-socket/socket
    case $IMPL in
    ours)
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PKGCHAIN_IPFS_DIR=/nix/ipfs "NIX_CONFIG=$NIX_CONF" \
            "$DAEMON" --view fuse > /nix/daemon.log 2>&1 &
        ;;
    nix)
        # Not NIX_REMOTE=daemon: the daemon would connect to its own socket. Not chroot: a
        # chrooted process may not create user namespaces, and Nix's sandbox would silently
        # fall back to none; the daemon gets a mount namespace whose root is the chroot's.
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "NIX_CONFIG=$NIX_CONF" \
            unshare --mount --propagation private bash -c 'mount --rbind "$1" "$1" && cd "$1" &&
                mkdir -p .old-root && pivot_root . .old-root && umount -l /.old-root &&
                exec /usr/bin/nix-daemon' pivot "$CHROOT" > /nix/daemon.log 2>&1 &
        ;;
    esac
    DPID=$!
    trap stop_daemon EXIT
    local i
    for ((i = 0; i < 300; i++)); do
        [ -S /nix/var/nix/daemon-socket/socket ] && break
        kill -0 "$DPID" 2> /dev/null || { cat /nix/daemon.log >&2; die "the $IMPL daemon exited"; }
        sleep 0.1
    done
    [ -S /nix/var/nix/daemon-socket/socket ] || { cat /nix/daemon.log >&2; die "no socket from the $IMPL daemon"; }
    if [ "$IMPL" = ours ]; then
        # Our daemon mounts its FUSE view on /nix/store: show it in the chroot too.
        for ((i = 0; i < 300; i++)); do
            grep -q ' /nix/store fuse' /proc/mounts && break
            sleep 0.1
        done
        grep -q ' /nix/store fuse' /proc/mounts || die "our daemon's FUSE view is not mounted"
        mount --bind /nix/store "$CHROOT/nix/store"
    fi
    "$@"
}
stop_daemon() {
    local rc=$?
    set +e
    # The chroot's bind of the FUSE view goes first: a FUSE session ends with its last mount.
    [ "$IMPL" = ours ] && umount -l "$CHROOT/nix/store" 2> /dev/null
    kill -TERM "$DPID" 2> /dev/null
    wait "$DPID" 2> /dev/null
    exit "$rc"
}
# Waits (at most 30 s) until the daemon has no connections left: nix-daemon no per-connection
# child processes, ours no more sockets than IDLE_SOCKETS (its children are fusermount3).
settle() {
    local i
    for ((i = 0; i < 300; i++)); do
        case $IMPL in
        nix) [ -z "$(pgrep -P "$DPID")" ] && return 0 ;;
        ours) [ "$(find "/proc/$DPID/fd" -lname 'socket:*' 2> /dev/null | wc -l)" -le "$IDLE_SOCKETS" ] && return 0 ;;
        esac
        sleep 0.1
    done
    log "   warning: the $IMPL daemon still had connections 30 s after its clients exited"
}
rss_once() { python3 -c "$RSS_SAMPLER" "$DPID" 0 once; }

# ---- what each session measures -----------------------------------------------------------------
# instantiate_and_query RUN: nix-instantiate twice (timed if asked), then the QueryPathInfo load
# with memory sampling.
instantiate_and_query() {
    local r=$1 t drv i
    fact "load_run${r}_${IMPL}_instantiate" "$(load)"
    IDLE_SOCKETS=$(find "/proc/$DPID/fd" -lname 'socket:*' | wc -l)
    read -r rss pss _ < <(rss_once)
    row rss-idle-start "$IMPL" "$rss"
    row pss-idle-start "$IMPL" "$pss"
    t=$(now_ns)
    drv=$(nix34 nix-instantiate /mnt/drvs.nix 2> /nix/instantiate.log) ||
        { cat /nix/instantiate.log >&2; die "nix-instantiate ($IMPL) failed"; }
    local w1
    w1=$(secs_since "$t")
    t=$(now_ns)
    drv2=$(nix34 nix-instantiate /mnt/drvs.nix 2>> /nix/instantiate.log) ||
        { cat /nix/instantiate.log >&2; die "nix-instantiate ($IMPL, second run) failed"; }
    local w2
    w2=$(secs_since "$t")
    [ "$drv" = "$drv2" ] || fact fail "$IMPL: the two nix-instantiate runs gave $drv and $drv2"
    if has_section instantiate; then
        row instantiate-empty "$IMPL" "$w1"
        row instantiate-again "$IMPL" "$w2"
    fi
    log "   run $r $IMPL: nix-instantiate ${w1}s on the empty store, ${w2}s again -> $drv"
    fact "drv_$IMPL" "$drv"
    nix34 nix-store -q --requisites "$drv" > /nix/paths.txt
    fact "drv_closure_$IMPL" "$(wc -l < /nix/paths.txt) paths"
    has_section query || return 0

    fact "load_run${r}_${IMPL}_query" "$(load)"
    settle
    read -r rss pss _ < <(rss_once)
    row rss-idle "$IMPL" "$rss"
    row pss-idle "$IMPL" "$pss"
    rm -f /nix/sampler.ready
    python3 -c "$RSS_SAMPLER" "$DPID" 0.05 /nix/sampler.ready > /nix/sampler.out 2> /nix/sampler.err &
    local sampler=$!
    for ((i = 0; i < 300; i++)); do
        [ -e /nix/sampler.ready ] && break
        sleep 0.1
    done
    if ! timeout 3600 "$LOADGEN" query-path-info --clients "$CLIENTS" --requests "$REQUESTS" \
        --paths /nix/paths.txt > /nix/qpi.json 2> /nix/qpi.err; then
        fact fail "query-path-info against $IMPL failed: $(head -c 600 /nix/qpi.json /nix/qpi.err | tr '\n' ' ')"
    fi
    kill -TERM "$sampler"
    wait "$sampler" || true
    local rps p50 p99
    rps=$(json_field /nix/qpi.json requests_per_second)
    p50=$(json_field /nix/qpi.json latency_us.p50)
    p99=$(json_field /nix/qpi.json latency_us.p99)
    row query-rps "$IMPL" "$rps"
    row query-p50-us "$IMPL" "$p50"
    row query-p99-us "$IMPL" "$p99"
    fact "protocol_$IMPL" "$(json_field /nix/qpi.json protocol), daemon says Nix $(json_field /nix/qpi.json daemon_nix_version)"
    read -r peak_rss peak_pss procs samples < /nix/sampler.out ||
        die "the memory sampler failed: $(cat /nix/sampler.err)"
    row rss-peak "$IMPL" "$peak_rss"
    row pss-peak "$IMPL" "$peak_pss"
    fact "sampler_run${r}_$IMPL" "$samples samples, up to $procs processes"
    settle
    read -r rss pss _ < <(rss_once)
    row rss-after "$IMPL" "$rss"
    log "   run $r $IMPL: QueryPathInfo $(printf '%.0f' "$rps") req/s (p50 ${p50} µs, p99 ${p99} µs); RSS idle ${rss} KiB after, peak ${peak_rss} KiB (${procs} processes)"
}

# add_tree RUN: nix-store --add of the generated tree into the empty store.
add_tree() {
    local r=$1 t w s p
    drop_caches
    warm "$TREES/tree-a"
    fact "load_run${r}_${IMPL}_add" "$(load)"
    t=$(now_ns)
    p=$(nix34 nix-store --add /mnt/tree-a 2> /nix/add.log) ||
        { cat /nix/add.log >&2; die "nix-store --add ($IMPL) failed"; }
    w=$(secs_since "$t")
    t=$(now_ns)
    sync
    s=$(secs_since "$t")
    row add "$IMPL" "$w"
    row add+sync "$IMPL" "$(awk -v a="$w" -v b="$s" 'BEGIN { printf "%.3f", a + b }')"
    fact "add_path_$IMPL" "$p"
    fact "add_hash_$IMPL" "$(nix34 nix-store -q --hash "$p") $(nix34 nix-store -q --size "$p") bytes"
    log "   run $r $IMPL: nix-store --add ${w}s (+ sync ${s}s) -> $p"
}

# build_trivial RUN JOBS: nix-build of TRIVIAL independent trivial derivations, sandboxed, with
# max-jobs JOBS, into an empty store.
build_trivial() {
    local r=$1 jobs=$2 t w out perf_pid=
    fact "load_run${r}_${IMPL}_build_j${jobs}" "$(load)"
    if [ "$jobs" = 1 ] && command -v perf > /dev/null; then
        # The kernel's fork, exec and exit events time both daemons' sandboxes alike (see
        # bench/sched-builds.py); cheap enough not to disturb the wall time.
        perf record -q -e sched:sched_process_fork,sched:sched_process_exec,sched:sched_process_exit \
            -a -o /nix/sched.data > /dev/null 2>&1 &
        perf_pid=$!
        sleep 1
    fi
    t=$(now_ns)
    out=$(nix34 nix-build /mnt/trivial.nix --no-out-link --max-jobs "$jobs" 2> /nix/build.log) ||
        { tail -n 20 /nix/build.log >&2; die "nix-build of the trivial derivations ($IMPL) failed"; }
    w=$(secs_since "$t")
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
        perf script -F comm,pid,tid,time,event,trace -i /nix/sched.data 2> /dev/null |
            python3 "$REPO/bench/sched-builds.py" "$DPID" /usr/bin/sh > /nix/sched.txt ||
            log "   no sandbox times from the scheduler events ($IMPL)"
        awk -v impl="$IMPL" '$1 == "setup_ms" { print "sched-setup-ms-j1\t" impl "\t" $2 }
            $1 == "after_ms" { print "sched-after-ms-j1\t" impl "\t" $2 }' /nix/sched.txt >> "$RAW"
        rm -f /nix/sched.data
    fi
    row "build-trivial-j$jobs" "$IMPL" "$w"
    row "per-build-ms-j$jobs" "$IMPL" "$(awk -v w="$w" -v n="$TRIVIAL" 'BEGIN { printf "%.1f", w * 1000 / n }')"
    fact "trivial_outputs_$IMPL" "$(echo "$out" | wc -l) paths, sha256 of the list $(echo "$out" | sha256sum | cut -c1-16)"
    if [ "$IMPL" = ours ]; then
        # The daemon logs each build's sandbox set-up and tear-down.
        python3 - /nix/daemon.log "$jobs" >> "$RAW" << 'PY'
import re, sys
setup, teardown = [], []
for line in open(sys.argv[1], errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)  # the log is coloured
    m = re.search(r"setup_ms=([0-9.]+).*teardown_ms=([0-9.]+)", line)
    if m:
        setup.append(float(m.group(1)))
        teardown.append(float(m.group(2)))
if setup:
    j = sys.argv[2]
    print(f"sandbox-setup-ms-j{j}\tours\t{sum(setup) / len(setup):.2f}")
    print(f"sandbox-teardown-ms-j{j}\tours\t{sum(teardown) / len(teardown):.2f}")
PY
    fi
    log "   run $r $IMPL: $TRIVIAL trivial builds with max-jobs $jobs in ${w}s"
}

# build_hello RUN: nix-build of GNU hello from source (tests-nixpkgs/pkgs), the tarball served
# on loopback, into an empty store.
build_hello() {
    local r=$1 t w out port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 -m http.server "$port" --bind 127.0.0.1 --directory "$TREES/www" > /dev/null 2>&1 &
    local web=$!
    for ((i = 0; i < 100; i++)); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2> /dev/null && break
        sleep 0.1
    done
    fact "load_run${r}_${IMPL}_hello" "$(load)"
    t=$(now_ns)
    out=$(nix34 nix-build /mnt/pkgs -A hello --no-out-link \
        --argstr helloUrl "http://127.0.0.1:$port/hello-2.10.tar.gz" 2> /nix/hello.log) ||
        { kill "$web"; tail -n 30 /nix/hello.log >&2; die "nix-build of hello ($IMPL) failed"; }
    w=$(secs_since "$t")
    kill "$web" 2> /dev/null || true
    row hello "$IMPL" "$w"
    fact "hello_out_$IMPL" "$out $(nix34 nix-store -q --hash "$out")"
    log "   run $r $IMPL: GNU hello built in ${w}s -> $out"
}

# gc_populate N WHAT: makes the N paths of the export gc-N.export (gen-gc-paths.py: small distinct
# regular files, no references) valid in the empty store, all unrooted: one `nix-store --import`,
# the same stream for both daemons. Untimed as a measurement (its wall time is an aside, row
# gc-populate-WHAT); a sync follows, so that none of its writeback lands in the timed command.
# Why --import: it was the faster of the two ways with the real nix-daemon. Measured here
# (10,000 paths, nix-daemon 2.34, 3 runs each, alternated, on this noisy 2-vCPU VM):
# `nix-store --import` 11.0 s median (8.2-19.7), `nix-store --add f1 f2 ...` (10,000 files in
# one invocation) 18.8 s (17.0-21.5); both are one connection with one request per path, and
# nix-daemon does one SQLite transaction per path either way, but for --add it first dumps each
# file into a temporary path and hashes it before moving it into place. Our daemon was about the
# same with both (26 s vs 27 s).
gc_populate() {
    local n=$1 what=$2 t w got
    t=$(now_ns)
    nix34 nix-store --import < "$TREES/gc-$n.export" > /nix/gc-added.txt 2> /nix/gc-populate.log ||
        { tail -n 20 /nix/gc-populate.log >&2; die "nix-store --import of $n paths ($IMPL) failed"; }
    w=$(secs_since "$t")
    got=$(grep -c '^/nix/store/' /nix/gc-added.txt || true)
    [ "$got" = "$n" ] || die "populating the $IMPL store: $got paths imported, not $n"
    row "gc-populate-$what" "$IMPL" "$w"
    fact "gc_added_${what}_$IMPL" "$n paths, sha256 of the sorted list $(sort /nix/gc-added.txt | sha256sum | cut -c1-16)"
    sync
    log "   $IMPL: $n paths imported in ${w}s"
}

# gc_print_dead RUN: nix-store --gc --print-dead on the store gc_populate filled with GC_PRINT
# paths (the daemon restarted on it for each run).
gc_print_dead() {
    local r=$1 t w c n
    fact "load_run${r}_${IMPL}_gc_print" "$(load)"
    c=$(cpu_ticks)
    t=$(now_ns)
    nix34 nix-store --gc --print-dead > /nix/gc-dead.txt 2> /nix/gc-print.log ||
        { tail -n 20 /nix/gc-print.log >&2; die "nix-store --gc --print-dead ($IMPL) failed"; }
    w=$(secs_since "$t")
    fact "cpu_run${r}_${IMPL}_gc_print" "$(cpu_use "$c" "$(cpu_ticks)")"
    row gc-print-dead "$IMPL" "$w"
    n=$(grep -c '^/nix/store/' /nix/gc-dead.txt || true)
    [ "$n" = "$GC_PRINT" ] || fact fail "$IMPL: nix-store --gc --print-dead listed $n paths, not $GC_PRINT"
    fact "gc_dead_list_$IMPL" "$n paths, sha256 of the sorted list $(sort /nix/gc-dead.txt | sha256sum | cut -c1-16)"
    log "   run $r $IMPL: nix-store --gc --print-dead ${w}s, $n dead paths"
}

# gc_collect RUN: nix-store --gc of GC_DEAD dead paths, the store populated first (untimed).
gc_collect() {
    local r=$1 t w c deleted left
    gc_populate "$GC_DEAD" dead
    fact "load_run${r}_${IMPL}_gc_collect" "$(load)"
    c=$(cpu_ticks)
    t=$(now_ns)
    nix34 nix-store --gc > /nix/gc-collect.out 2> /nix/gc-collect.log ||
        { tail -n 20 /nix/gc-collect.log >&2; die "nix-store --gc ($IMPL) failed"; }
    w=$(secs_since "$t")
    fact "cpu_run${r}_${IMPL}_gc_collect" "$(cpu_use "$c" "$(cpu_ticks)")"
    row gc-collect "$IMPL" "$w"
    # nix-store prints "N store paths deleted, X freed".
    deleted=$(sed -n 's/^\([0-9]*\) store paths deleted.*/\1/p' /nix/gc-collect.out)
    left=$(find /nix/store/ -mindepth 1 -maxdepth 1 -name '*-gc-*' | wc -l)
    [ "$deleted" = "$GC_DEAD" ] || fact fail "$IMPL: nix-store --gc says '$(head -c 200 /nix/gc-collect.out)', not $GC_DEAD paths deleted"
    [ "$left" = 0 ] || fact fail "$IMPL: $left of the dead paths still in /nix/store after nix-store --gc"
    fact "gc_deleted_$IMPL" "${deleted:-?} paths deleted, $left left"
    fact "gc_collect_out_run${r}_$IMPL" "$(tr '\n' ' ' < /nix/gc-collect.out) ($(grep -c "^deleting '" /nix/gc-collect.log || true) 'deleting' lines on stderr)"
    log "   run $r $IMPL: nix-store --gc ${w}s: $(tr '\n' ' ' < /nix/gc-collect.out)"
}

# daemon_log_errors KEY NIXDIR: a fact daemon_log_KEY with the panics and errors in the log of
# the daemon that served NIXDIR; not our daemon's "unmount failed ... error=Invalid argument"
# warnings, which it logs at every stop here (the session has unmounted the view's bind first).
daemon_log_errors() {
    local errs
    errs=$(grep -iE 'panic|error' "$2/daemon.log" | grep -v 'WARN pkgchain_store_view: unmount failed' || true)
    [ -z "$errs" ] || fact "daemon_log_$1" "$(echo "$errs" | sort | uniq -c | head -5 | tr '\n' ' ')"
}

reset_nix() { # reset_nix IMPL: an empty /nix for IMPL's next session
    local d=$WORK/nix/$1
    if [ -d "$d" ] && findmnt -rn -o TARGET | grep -q "^$d"; then
        die "something is still mounted under $d"
    fi
    rm -rf "$d"
    mkdir -p "$d"
}

export -f $(compgen -A function)
export CHROOT DAEMON LOADGEN NIX_CONF RSS_SAMPLER RAW FACTS TREES SECTIONS CLIENTS REQUESTS WORK TRIVIAL REPO GC_PRINT GC_DEAD

# ---- machine and inputs -------------------------------------------------------------------------
mount --bind /proc "$CHROOT/proc"
mount --rbind /dev "$CHROOT/dev"
mount --bind "$TREES" "$CHROOT/mnt"
v34=$(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "NIX_CONFIG=$NIX_CONF" chroot "$CHROOT" nix-store --version)
[[ $v34 == *" 2.34."* ]] || die "the chroot's Nix is '$v34', not 2.34.x"
fact nix34_version "$v34"
fact pkgchain_commit "$(git -C "$REPO" rev-parse --short HEAD 2> /dev/null || echo unknown)$(git -C "$REPO" diff --quiet HEAD -- . ':!bench' 2> /dev/null || echo ' (+uncommitted changes)')"
fact pkgchain_binary "$DAEMON_SRC, modified $(stat -c '%y' "$DAEMON_SRC" | cut -d. -f1), sha256 $(sha256sum "$DAEMON" | cut -c1-16)…"
fact kernel "$(uname -r)"
fact cpus "$(nproc)"
fact mem "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
fact fs "$(findmnt -n -o SOURCE,FSTYPE,OPTIONS --target "$WORK" | cut -c1-100)"
fact params "--runs $RUNS --tree-mb $TREE_MB --tree-files $TREE_FILES --drvs $DRVS --clients $CLIENTS --requests $REQUESTS --gc-print-paths $GC_PRINT --gc-dead-paths $GC_DEAD --sections $SECTIONS$([ "$QUICK" = 1 ] && echo ' (--quick)')"
fact drvs "$DRVS"
fact clients "$CLIENTS"
fact requests "$REQUESTS"
fact tree_mb "$TREE_MB"
fact load_start "$(load)"
CPU_START=$(cpu_ticks)
top -b -d 5 -w 250 > "$WORK/top.log" 2> /dev/null &
TOP_PID=$!
fact others_start "$(busy)"
if pgrep -x rustc > /dev/null || pgrep -f 'cargo fuzz|fuzz/target' > /dev/null; then
    log "WARNING: compilers or fuzzers are running: timings will be noisy"
    fact warning "compilers or fuzzers were running when the benchmark started"
fi

# The expression: DRVS derivations in layers of 50, each depending on up to three of the
# previous layer, plus one on top depending on all of them (DRVS + 1 .drv files).
cat > "$TREES/drvs.nix" << EOF
let
  n = $DRVS;
  width = 50;
  mk = i: deps: derivation {
    name = "bench-node-\${toString i}";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" "echo \${toString i} > \$out" ];
    inherit deps;
  };
  mod = a: b: a - (a / b) * b;
  dep = i: k: let layer = i / width; prev = (layer - 1) * width + mod (i * 7 + k * 13) width; in
    if layer == 0 then [ ] else [ (builtins.elemAt nodes prev) ];
  nodes = builtins.genList (i: mk i (dep i 0 ++ dep i 1 ++ dep i 2)) n;
in mk "top" nodes
EOF
fact expression "$DRVS derivations in layers of 50, each depending on 3 of the previous layer, and one depending on all"
cat > "$TREES/trivial.nix" << EOF
builtins.genList (i: derivation {
  name = "trivial-\${toString i}";
  system = "x86_64-linux";
  builder = "/usr/bin/sh";
  args = [ "-c" "echo \${toString i} > \$out" ];
}) $TRIVIAL
EOF
# Sandboxed builds: the sandbox on for both daemons, the host's /usr (the builders' shell)
# made visible to the builds.
NIX_CONF_BUILDS=$'build-users-group =\nsandbox = true\nextra-sandbox-paths = /usr /lib /lib64\nsubstituters =\nrequire-sigs = false\nfsync-metadata = true'
if has_section hello; then
    [ -n "$HELLO_TARBALL" ] && [ -f "$HELLO_TARBALL" ] || die "the hello section needs --hello-tarball FILE"
    echo "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b  $HELLO_TARBALL" | sha256sum -c --quiet ||
        die "$HELLO_TARBALL is not GNU's hello-2.10.tar.gz"
    mkdir -p "$TREES/www"
    cp "$HELLO_TARBALL" "$TREES/www/hello-2.10.tar.gz"
    cp -r "$REPO/tests-nixpkgs/pkgs" "$TREES/pkgs"
    fact hello "GNU hello 2.10 from source: tests-nixpkgs/pkgs (stdenv phases, make check), the host's toolchain via sandbox paths, sandbox on for both"
fi
if has_section gc; then
    log "generating the gc section's exports ($GC_PRINT and $GC_DEAD paths)"
    python3 "$REPO/bench/gen-gc-paths.py" "$TREES/gc-$GC_PRINT.export" "$GC_PRINT" \
        "$TREES/gc-$GC_DEAD.export" "$GC_DEAD"
    fact gc "$GC_PRINT paths for --print-dead, $GC_DEAD for the collection: small distinct regular files without references ('gc bench path i', under 30 bytes), put in with one nix-store --import of an export made once"
    fact gc_print "$GC_PRINT"
    fact gc_dead "$GC_DEAD"
fi
has_section builds && fact builds "$TRIVIAL independent trivial derivations (sh -c 'echo i > out'), nix-build, sandbox on for both, max-jobs 1 and 2"

if has_section add; then
    need=$((TREE_MB * 6 * 1048576))
    avail=$(($(df --output=avail -B1 "$WORK" | tail -n1)))
    [ "$avail" -gt "$need" ] || die "need about $((need >> 30)) GiB free under $WORK_BASE, have $((avail >> 30)) GiB"
    log "generating tree-a ($TREE_MB MiB, $TREE_FILES files)"
    python3 "$GEN" 1 "$TREE_MB" "$TREE_FILES" "$TREES/tree-a" 2> "$WORK/gen.log"
    fact tree_a "$(sed 's|^.*tree-a: ||' "$WORK/gen.log")"
    sync
fi

# ---- the runs -----------------------------------------------------------------------------------
if has_section gc; then
    # nix-store --gc --print-dead deletes nothing: each daemon's store is filled once, and each
    # run starts the daemon afresh on it.
    for impl in ours nix; do
        log "$impl: $GC_PRINT paths for nix-store --gc --print-dead (fresh store)"
        reset_nix "gc-print-$impl"
        session "$impl" "$WORK/nix/gc-print-$impl" gc_populate "$GC_PRINT" print
        daemon_log_errors "gc_populate_$impl" "$WORK/nix/gc-print-$impl"
    done
fi
for ((r = 1; r <= RUNS; r++)); do
    for impl in ours nix; do
        if has_section instantiate || has_section query; then
            log "run $r/$RUNS, $impl: instantiate and query (fresh store)"
            reset_nix "$impl"
            session "$impl" "$WORK/nix/$impl" instantiate_and_query "$r"
            grep -qiE 'panic|error' "$WORK/nix/$impl/daemon.log" &&
                fact "daemon_log_$impl" "$(grep -iE 'panic|error' "$WORK/nix/$impl/daemon.log" | sort | uniq -c | head -5 | tr '\n' ' ')"
        fi
        if has_section builds; then
            for jobs in 2 1; do
                log "run $r/$RUNS, $impl: $TRIVIAL trivial builds, max-jobs $jobs (fresh store)"
                reset_nix "$impl"
                NIX_CONF=$NIX_CONF_BUILDS session "$impl" "$WORK/nix/$impl" build_trivial "$r" "$jobs"
            done
        fi
        if has_section hello; then
            log "run $r/$RUNS, $impl: GNU hello from source (fresh store)"
            reset_nix "$impl"
            if [ "$impl" = nix ]; then
                BIND_HOST_USR=1 NIX_CONF=${NIX_CONF_BUILDS/\/usr \/lib/\/usr=\/opt \/lib} \
                    session "$impl" "$WORK/nix/$impl" build_hello "$r"
            else
                NIX_CONF=$NIX_CONF_BUILDS session "$impl" "$WORK/nix/$impl" build_hello "$r"
            fi
        fi
        if has_section add; then
            log "run $r/$RUNS, $impl: nix-store --add of tree-a (fresh store)"
            reset_nix "$impl"
            session "$impl" "$WORK/nix/$impl" add_tree "$r"
        fi
        if has_section gc; then
            log "run $r/$RUNS, $impl: nix-store --gc --print-dead, $GC_PRINT paths"
            session "$impl" "$WORK/nix/gc-print-$impl" gc_print_dead "$r"
            daemon_log_errors "gc_print_run${r}_$impl" "$WORK/nix/gc-print-$impl"
            log "run $r/$RUNS, $impl: nix-store --gc of $GC_DEAD dead paths (fresh store)"
            reset_nix "$impl"
            session "$impl" "$WORK/nix/$impl" gc_collect "$r"
            daemon_log_errors "gc_collect_run${r}_$impl" "$WORK/nix/$impl"
        fi
    done
done
for k in drv add_path add_hash trivial_outputs hello_out gc_added_print gc_added_dead gc_dead_list gc_deleted; do
    o=$(grep "^${k}_ours" "$FACTS" | cut -f2 | sort -u || true)
    n=$(grep "^${k}_nix" "$FACTS" | cut -f2 | sort -u || true)
    [ "$o" = "$n" ] || fact fail "$k differs: ours '$o', nix-daemon '$n'"
done

fact load_end "$(load)"
fact cpu_during "$(cpu_use "$CPU_START" "$(cpu_ticks)")"
kill "$TOP_PID" 2> /dev/null || true
wait "$TOP_PID" 2> /dev/null || true
TOP_PID=
fact others_cpu "$(awk '
    $1 ~ /^[0-9]+$/ && $9 + 0 > 0 {
        c = $12
        if (c ~ /^(pkgchain-daemon|pkgchain-loadgen|pkgchain-loa.*|nix-daemon|nix-store|nix-instantiate|tokio-.*|python3|tar|cat|bash|sh|env|chroot|top|awk|sync|timeout|rm|find|kworker.*|ksoftirqd.*|kswapd.*|jbd2.*|kdamond.*|rcu_.*|migration.*)$/) next
        s[c] += $9 * 5 / 100
    }
    END { for (c in s) if (s[c] >= 1) printf "%s %.0f s; ", c, s[c] }' "$WORK/top.log")"
fact others_end "$(busy)"

# ---- summary ------------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
python3 "$REPO/bench/summarise-daemon.py" "$RAW" "$FACTS" > "$WORK/summary.md"
cp "$WORK/summary.md" "$OUT"
cat "$WORK/summary.md"
log "results written to $OUT"
