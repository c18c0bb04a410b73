#!/bin/bash
# bench/substitute.sh: substitution from a local binary cache over loopback HTTP, pkgchain-daemon
# against nix-daemon 2.34 (the Debian sid chroot's) in the same run, the same cache, the same
# client (Nix 2.34's `nix-store -r`).
#
#   bench/substitute.sh [--paths N] [--mib M] [--runs R] [--compression zstd|xz] [--out FILE]
#   bench/substitute.sh --query-missing [--paths N] [--slow-ms MS] [--runs R] [--out FILE]
#
# --query-missing times `nix-store -r --dry-run` of the N paths instead (the client's
# QueryMissing: what will be fetched, and the sizes) with two caches: first a slow one of better
# priority (a python3 server that answers every request after MS milliseconds: `nix-cache-info`
# with `Priority: 30`, 404 for every narinfo), then the cache of the paths (`?priority=50`), so
# that a daemon asks the slow cache before the other about every path. Defaults there:
# 2,000 paths of 1 KiB on average, 200 ms.
#
# The closure: N paths made with `nix-store --add` by the real Nix 2.34 on a local store of its
# own, M MiB in all (sizes vary from 1/4 to 7/4 of the mean), contents half random bytes and
# half their base64 text (so that compression has work to do), copied into the cache with
# `nix copy --to 'file://DIR?compression=C&secret-key=K'`. The cache is served on 127.0.0.1 by
# nginx when it is installed, else by python3 (see below). Each run starts a daemon on an empty store (on disk under
# /var/tmp, never tmpfs) with the cache as its only substituter and its key trusted, and times
# `nix-store -r` of all N paths; the paths are then checked to be valid and to verify.
# Prints a Markdown table (medians with min-max, ratio ours/nix) and the machine's load; writes
# it to --out too.
set -euo pipefail
PATHS= MIB= RUNS=3 COMP=zstd OUT= QUERY_MISSING= SLOW_MS=200 FRESH_FS=
while [ $# -gt 0 ]; do
    case $1 in
    --query-missing) QUERY_MISSING=1; shift ;;
    --slow-ms) SLOW_MS=$2; shift 2 ;;
    --paths) PATHS=$2; shift 2 ;;
    --mib) MIB=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --compression) COMP=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --fresh-fs) FRESH_FS=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -n "$QUERY_MISSING" ]; then PATHS=${PATHS:-2000} MIB=${MIB:-2}; else PATHS=${PATHS:-300} MIB=${MIB:-500}; fi
[[ $PATHS =~ ^[0-9]+$ && $MIB =~ ^[0-9]+$ && $RUNS =~ ^[0-9]+$ && $SLOW_MS =~ ^[0-9]+$ ]] || { echo "numbers wanted" >&2; exit 2; }
[[ $COMP == zstd || $COMP == xz ]] || { echo "--compression is zstd or xz" >&2; exit 2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
CHROOT=${SID_CHROOT:-/var/cache/pkgchain/sid-chroot}
DAEMON=$REPO/target/release/pkgchain-daemon
[ -x "$DAEMON" ] || { echo "build first: cargo build --release -p pkgchain-daemon" >&2; exit 1; }
[ -x "$CHROOT/usr/bin/nix-daemon" ] || { echo "no Nix 2.34 chroot at $CHROOT" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
WORK=$(mktemp -d /var/tmp/pkgchain-bench-substitute.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
log() { echo "[$(date +%T)] $*" >&2; }
export WORK CHROOT DAEMON PATHS MIB COMP QUERY_MISSING

# Runs "$@" in a private mount namespace with $1 as /nix and the chroot's /proc, /dev, /nix bound.
in_ns() {
    local nixdir=$1; shift
    mkdir -p "$nixdir"
    unshare --mount --propagation private -- bash -euo pipefail -c '
        mount --bind "$1" /nix; mkdir -p /nix/store /nix/var/nix
        mount --rbind /nix "$CHROOT/nix"; mount -t proc proc "$CHROOT/proc"; mount --rbind /dev "$CHROOT/dev"
        mkdir -p "$CHROOT/mnt/work"; mount --bind "$WORK" "$CHROOT/mnt/work"
        shift; "$@"' in_ns "$nixdir" "$@"
}
nix34() { env -i PATH=/usr/bin:/bin HOME=/nix/home LANG=C.UTF-8 NIX_CONFIG="$NIX_CONFIG" ${NIX_REMOTE:+NIX_REMOTE=$NIX_REMOTE} /usr/sbin/chroot "$CHROOT" "$@"; }
export -f nix34

# ---- the cache -----------------------------------------------------------------------------
log "making $PATHS paths, $MIB MiB, and a $COMP cache of them"
python3 - "$WORK/files" "$PATHS" "$MIB" <<'EOF'
import base64, os, random, sys
out, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(out, exist_ok=True)
rng = random.Random(7)
mean = mib * 1048576 // n
for i in range(n):
    size = rng.randint(mean // 4, mean * 7 // 4)
    raw = rng.randbytes(size // 2)
    data = (raw + base64.b64encode(raw))[:size]
    with open(f"{out}/p{i:05}", "wb") as f:
        f.write(data)
EOF
make_cache() {
    export NIX_CONFIG=$'experimental-features = nix-command\nsubstituters =\nbuild-users-group =\nsandbox = false'
    nix34 nix-store --generate-binary-cache-key bench-1 /mnt/work/sk /mnt/work/pk
    nix34 bash -c 'nix-store --add /mnt/work/files/* > /mnt/work/paths'
    nix34 bash -c "nix copy --to 'file:///mnt/work/cache?compression=$COMP&secret-key=/mnt/work/sk' \$(cat /mnt/work/paths)"
}
export -f make_cache
in_ns "$WORK/nix-maker" make_cache
rm -rf "$WORK/nix-maker" "$WORK/files"
CACHE_MIB=$(du -sm "$WORK/cache" | cut -f1)
NAR_MIB=$(cat "$WORK"/cache/*.narinfo | sed -n 's/^NarSize: //p' | awk '{s+=$1} END {printf "%.0f", s/1048576}')
log "cache: $(ls "$WORK"/cache/*.narinfo | wc -l) narinfos, $CACHE_MIB MiB on disk, $NAR_MIB MiB of NARs"
# The decompression floor: every NAR of the cache decoded once on one thread, by the chroot's
# xz (the liblzma 5.8 that nix-daemon 2.34 links) or by zstd. No daemon on C CPUs can
# substitute the closure in less than this CPU time / C.
DECODE_CPU=
if [ -z "$QUERY_MISSING" ]; then
    if [ "$COMP" = xz ]; then
        DECODE=(/usr/sbin/chroot "$CHROOT" xz -dc -T1)
        DECODER="the chroot's $(/usr/sbin/chroot "$CHROOT" xz --version | head -1)"
    else
        DECODE=(zstd -dcq)
        DECODER=$(zstd --version)
    fi
    DECODE_CPU=$(cat "$WORK"/cache/nar/*.nar.* | /usr/bin/time -f '%U %S' "${DECODE[@]}" 2>&1 > /dev/null | awk '{printf "%.2f", $1 + $2}')
    log "decoding every NAR on one thread: $DECODE_CPU CPU seconds"
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The cache's server: nginx (sendfile, keep-alive, a listen backlog of 511) when installed, as a
# real cache is served. `python3 -m http.server` listens with a backlog of 5: a daemon opening
# many connections at once overflows it, the kernel drops the SYNs, and every run then waits
# about a second for TCP to send them again (seen as TcpExtListenOverflows, and as a second of
# idle CPU at the start of both daemons' runs). The fallback is python3 with a larger backlog.
if command -v nginx > /dev/null; then
    mkdir -p "$WORK/nginx"
    cat > "$WORK/nginx/nginx.conf" <<EOF
user root;
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    types { text/x-nix-narinfo narinfo; }
    default_type application/octet-stream;
    server { listen 127.0.0.1:$PORT; root $WORK/cache; }
}
EOF
    nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
    HTTP=$! SERVER="nginx $(nginx -v 2>&1 | sed 's|.*/||')"
else
    python3 - "$PORT" "$WORK/cache" > /dev/null 2>&1 <<'EOF' &
import functools, http.server, sys
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
Server(("127.0.0.1", int(sys.argv[1])), functools.partial(Handler, directory=sys.argv[2])).serve_forever()
EOF
    HTTP=$! SERVER="python3's http.server (listen backlog 1024, HTTP/1.1)"
fi
SUBSTITUTERS=http://127.0.0.1:$PORT SLOW=
if [ -n "$QUERY_MISSING" ]; then
    SLOW_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    python3 - "$SLOW_PORT" "$SLOW_MS" > /dev/null 2>&1 <<'EOF' &
import http.server, sys, time
port, delay = int(sys.argv[1]), int(sys.argv[2]) / 1000
class Slow(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, body):
        time.sleep(delay)
        if self.path.endswith("/nix-cache-info"):
            data = b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"
            self.send_response(200)
        else:
            data = b"404"
            self.send_response(404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)
    def do_GET(self):
        self.answer(True)
    def do_HEAD(self):
        self.answer(False)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
Server(("127.0.0.1", port), Slow).serve_forever()
EOF
    SLOW=$!
    # The cache of the paths has no Priority line (0, the best): it comes after the slow one.
    SUBSTITUTERS="http://127.0.0.1:$SLOW_PORT http://127.0.0.1:$PORT?priority=50"
fi
trap 'kill $HTTP $SLOW 2>/dev/null; umount "$WORK"/nix-ours "$WORK"/nix-nix 2>/dev/null; rm -rf "$WORK"' EXIT
for p in $PORT ${SLOW_PORT:-}; do
    for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done
export SUBSTITUTERS

# ---- the runs ------------------------------------------------------------------------------
# Busy CPU time of the whole machine so far, in clock ticks (user, nice, system, irq, softirq
# and steal; not idle or iowait): its difference over a run is what every process spent then.
busy_cpu() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
export -f busy_cpu
one_run() {
    local impl=$1 t0 t1
    export NIX_CONFIG="$(printf 'build-users-group =\nsandbox = false\nsubstituters = %s\ntrusted-public-keys = %s\nrequire-sigs = true\n%s' "$SUBSTITUTERS" "$(cat "$WORK/pk")" "${BENCH_EXTRA_CONF:-}")"
    rm -f /nix/var/nix/daemon-socket/socket
    if [ "$impl" = ours ]; then
        mkdir -p /nix/ipfs
        env -i PATH=/usr/bin:/bin PKGCHAIN_IPFS_DIR=/nix/ipfs NIX_CONFIG="$NIX_CONFIG" ${RUST_LOG:+RUST_LOG=$RUST_LOG} ${GLIBC_TUNABLES:+GLIBC_TUNABLES=$GLIBC_TUNABLES} "$DAEMON" --view fuse > /nix/daemon.log 2>&1 &
    else
        # Its narinfo cache (~/.cache/nix) starts empty each run, as ours (in memory) does.
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin NIX_CONFIG="$NIX_CONFIG" XDG_CACHE_HOME=/nix/var/xdg-cache unshare --mount --propagation private bash -c \
            "mount --rbind $CHROOT $CHROOT && cd $CHROOT && mkdir -p .old-root && pivot_root . .old-root && umount -l /.old-root && exec /usr/bin/nix-daemon" > /nix/daemon.log 2>&1 &
    fi
    local dpid=$!
    for _ in $(seq 300); do [ -S /nix/var/nix/daemon-socket/socket ] && break; sleep 0.1; done
    if grep -q ' /nix/store fuse' /proc/mounts; then mount --bind /nix/store "$CHROOT/nix/store"; fi
    sync
    local valid
    if [ -n "$QUERY_MISSING" ]; then
        t0=$(date +%s%N)
        NIX_REMOTE=daemon nix34 bash -c 'nix-store -r --dry-run $(cat /mnt/work/paths) > /dev/null 2> /mnt/work/client.log' ||
            { tail -5 "$WORK/client.log" >&2; echo "FAILED"; }
        t1=$(date +%s%N)
        # "these N paths will be fetched": every path found (in the fast cache); the paths
        # not found count as invalid.
        local fetched
        fetched=$(sed -n 's/^these \([0-9]*\) paths will be fetched.*/\1/p' "$WORK/client.log" | head -1)
        valid=$(( PATHS - ${fetched:-0} ))
    else
        # BENCH_PERF=DIR records a system-wide profile of the timed command only.
        local perf=
        if [ -n "${BENCH_PERF:-}" ]; then
            perf record ${BENCH_PERF_ARGS:--F 999 -g} -a -o "$BENCH_PERF/$impl-$(date +%s%N).data" > /dev/null 2>&1 &
            perf=$!
            sleep 0.5
        fi
        c0=$(busy_cpu)
        t0=$(date +%s%N)
        NIX_REMOTE=daemon nix34 bash -c 'nix-store -r $(cat /mnt/work/paths) > /dev/null 2> /mnt/work/client.log' ||
            { tail -5 "$WORK/client.log" >&2; echo "FAILED"; }
        t1=$(date +%s%N)
        c1=$(busy_cpu)
        if [ -n "$perf" ]; then kill -INT "$perf"; wait "$perf" || true; fi
        valid=$(NIX_REMOTE=daemon nix34 bash -c 'nix-store --check-validity --print-invalid $(cat /mnt/work/paths) | wc -l')
        NIX_REMOTE=daemon nix34 bash -c 'nix-store --verify-path $(cat /mnt/work/paths)' || echo "VERIFY-FAILED"
    fi
    umount -l "$CHROOT/nix/store" 2> /dev/null || true
    kill -TERM $dpid; wait $dpid 2> /dev/null || true
    # BENCH_LOGS=DIR keeps each run's daemon log there (RUST_LOG reaches our daemon).
    if [ -n "${BENCH_LOGS:-}" ]; then cp /nix/daemon.log "$BENCH_LOGS/daemon-$impl-$(date +%s%N).log"; fi
    echo "secs=$(awk "BEGIN {printf \"%.3f\", ($t1 - $t0) / 1e9}") cpu=$(awk "BEGIN {printf \"%.2f\", (${c1:-0} - ${c0:-0}) / $(getconf CLK_TCK)}") invalid=$valid"
}
export -f one_run
declare -A TIMES CPUS
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
STEAL0=$(awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
# --fresh-fs: each run's /nix is a new ext4 file system (mkfs.ext4's defaults, so with a
# journal; inode tables written at mkfs, not lazily during the run) on a loop device over a
# sparse file on the same disk. Without it, runs share the disk's file system, whose state
# depends on what ran before: on an ext4 without a journal (this VM's), creating a file skips
# every inode of its group deleted in the last minutes (`recently_deleted` in the kernel), so a
# run right after another run's store was removed spends seconds of CPU finding free inodes.
fresh_fs() {
    truncate -s 8G "$1.img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$1.img"
    mkdir -p "$1"
    mount -o loop "$1.img" "$1"
}
for ((r = 1; r <= RUNS; r++)); do
    for impl in ours nix; do
        rm -rf "$WORK/nix-$impl"
        if [ -n "$FRESH_FS" ]; then fresh_fs "$WORK/nix-$impl"; fi
        out=$(in_ns "$WORK/nix-$impl" one_run "$impl")
        if [ -n "$FRESH_FS" ]; then umount "$WORK/nix-$impl"; rm -f "$WORK/nix-$impl.img"; fi
        echo "$out" | grep -q "FAILED" && { echo "$impl run $r failed: $out" >&2; exit 1; }
        secs=$(echo "$out" | sed -n 's/^secs=\([0-9.]*\) .*/\1/p')
        cpu=$(echo "$out" | sed -n 's/.* cpu=\([0-9.]*\) .*/\1/p')
        CPUS[$impl]+="$cpu "
        invalid=$(echo "$out" | sed -n 's/.*invalid=//p')
        [ "$invalid" = 0 ] || { echo "$impl run $r: $invalid paths not valid after nix-store -r" >&2; exit 1; }
        TIMES[$impl]+="$secs "
        log "run $r $impl: ${secs}s$([ -n "$QUERY_MISSING" ] || echo ", machine CPU ${cpu}s")"
        rm -rf "$WORK/nix-$impl"
    done
done
STEAL1=$(awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
STEAL=$(echo "$STEAL0 $STEAL1" | awk '{printf "%.0f", 100 * ($3 - $1) / ($4 - $2)}')
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {printf "%s (%s-%s)", a[int((NR+1)/2)], a[1], a[NR]}'; }
med() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
O=$(echo "${TIMES[ours]}" | med) N=$(echo "${TIMES[nix]}" | med)
if [ -n "$QUERY_MISSING" ]; then
    COMMAND="bench/substitute.sh --query-missing --paths $PATHS --mib $MIB --slow-ms $SLOW_MS --runs $RUNS"
    SETUP="Two caches: a slow one first (every answer after $SLOW_MS ms, \`Priority: 30\`, no narinfos), then the cache of $PATHS paths ($NAR_MIB MiB of NARs, $COMP) served by $SERVER on loopback; \`nix-store -r --dry-run\` of all paths (Nix 2.34 client, QueryMissing) on a fresh daemon each run with an empty narinfo cache; every run reported all $PATHS paths as to be fetched."
    ROW="QueryMissing of $PATHS paths, one slow cache, wall s"
else
    COMMAND="bench/substitute.sh --paths $PATHS --mib $MIB --runs $RUNS --compression $COMP${FRESH_FS:+ --fresh-fs}"
    SETUP="The cache: $PATHS paths, $NAR_MIB MiB of NARs, $CACHE_MIB MiB as $COMP on disk, served by $SERVER on loopback; \`nix-store -r\` of all paths (Nix 2.34 client) into an empty store, each run on a fresh daemon (nix-daemon with an empty narinfo cache); all paths valid and verified after each run."
    ROW="substitute $PATHS paths ($NAR_MIB MiB, $COMP), wall s"
fi
{
    echo "# Substitution benchmark, $(date +%F)"
    echo
    echo "\`$COMMAND\`; pkgchain $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet || echo ' (+uncommitted changes)'), Nix $(awk '/^Package: nix-bin$/{f=1} f && /^Version:/{print $2; exit}' "$CHROOT/var/lib/dpkg/status") (chroot); $(nproc) CPUs."
    echo "$SETUP"
    echo
    echo "| measurement | pkgchain-daemon | nix-daemon 2.34 | ratio |"
    echo "|---|---|---|---|"
    echo "| $ROW | $(echo "${TIMES[ours]}" | median) | $(echo "${TIMES[nix]}" | median) | $(awk "BEGIN {printf \"%.2fx\", $O / $N}") |"
    if [ -z "$QUERY_MISSING" ]; then
        CO=$(echo "${CPUS[ours]}" | med) CN=$(echo "${CPUS[nix]}" | med)
        echo "| the machine's busy CPU seconds during the same command (both daemons, client, HTTP server) | $(echo "${CPUS[ours]}" | median) | $(echo "${CPUS[nix]}" | median) | $(awk "BEGIN {printf \"%.2fx\", $CO / $CN}") |"
    fi
    echo
    if [ -n "$DECODE_CPU" ]; then
        echo "Decompressing every NAR once, on one thread ($DECODER), takes $DECODE_CPU CPU seconds: on $(nproc) CPUs no daemon can take less than $(awk "BEGIN {printf \"%.2f\", $DECODE_CPU / $(nproc)}") s, $(awk "BEGIN {printf \"%.2fx\", $DECODE_CPU / $(nproc) / $N}") of nix-daemon's median."
        echo
    fi
    echo "Runs in order: ours ${TIMES[ours]}; nix ${TIMES[nix]}. Load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg); CPU steal during the runs $STEAL%."
} | tee ${OUT:+"$OUT"}
