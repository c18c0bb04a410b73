#!/usr/bin/env bash
# Store-layer benchmark: package chain's block store against the real Nix 2.34 (and the host's
# Nix 2.8 as an extra column), in the same run, on the same disk. See bench/README.md.
#
#   sudo bench/store.sh [--size-mb 1024] [--files 20000] [--runs 3] [options]
#
# Everything happens in a private mount namespace and a temporary directory (under /var/tmp,
# ext4, not tmpfs); the machine's /nix and /ipfs are never touched.
set -euo pipefail

SIZE_MB=1024
FILES=20000
RUNS=3
NIX28=1
KEEP=0
WORK_BASE=/var/tmp
OUT=
SECTIONS=ingest,dump,read,find,dedup

usage() {
    cat <<'EOF'
Usage: bench/store.sh [options]   (as root)

  --size-mb N       size of the generated tree in MiB (default 1024)
  --files N         regular files in the tree (default 20000)
  --runs N          timed runs per measurement (default 3; median, min and max are reported)
  --sections LIST   comma-separated subset of ingest,dump,read,find,dedup (default all; ingest
                    always runs at least once because the others need its stores)
  --no-nix28        skip the extra Nix 2.8 (host /usr/bin/nix-store) column
  --work-dir DIR    parent of the temporary directory (default /var/tmp; must not be tmpfs)
  --out FILE        results file (default bench/results/store-<date>.md)
  --keep            keep the temporary directory (trees, stores) for inspection

Needs: target/release/pkgchain (cargo build --release -p pkgchain-daemon) and the Debian sid
chroot with Nix 2.34 at /var/cache/pkgchain/sid-chroot (override with SID_CHROOT).
EOF
}

die() {
    echo "store.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
    --size-mb) SIZE_MB=${2:?}; shift 2 ;;
    --files) FILES=${2:?}; shift 2 ;;
    --runs) RUNS=${2:?}; shift 2 ;;
    --sections) SECTIONS=${2:?}; shift 2 ;;
    --no-nix28) NIX28=0; shift ;;
    --work-dir) WORK_BASE=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
    esac
done
[[ $SIZE_MB =~ ^[0-9]+$ && $SIZE_MB -ge 1 ]] || die "--size-mb wants a positive integer"
[[ $FILES =~ ^[0-9]+$ && $FILES -ge 10 ]] || die "--files wants an integer >= 10"
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 1 ]] || die "--runs wants a positive integer"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PKGCHAIN=${PKGCHAIN:-$REPO/target/release/pkgchain}
CHROOT=${SID_CHROOT:-/var/cache/pkgchain/sid-chroot}
GEN=$REPO/bench/gen-tree.py
[ -n "$OUT" ] || OUT=$REPO/bench/results/store-$(date +%Y-%m-%d).md

# ---- refuse to run without what it needs ------------------------------------------------------
[ "$(id -u)" = 0 ] || die "must run as root (private mount namespace, chroot, FUSE, drop_caches)"
[ -x "$PKGCHAIN" ] || die "$PKGCHAIN is missing: build it with 'cargo build --release -p pkgchain-daemon'"
if [ ! -x "$CHROOT/usr/bin/nix-store" ]; then
    die "no Nix 2.34 chroot at $CHROOT; create it with:
    debootstrap --variant=minbase --include=nix-bin,libdbi-perl sid $CHROOT"
fi
if [ "$NIX28" = 1 ] && [ ! -x /usr/bin/nix-store ]; then
    die "/usr/bin/nix-store (Nix 2.8) is missing: install nix-bin or pass --no-nix28"
fi
for tool in python3 unshare chroot findmnt mountpoint du tar; do
    command -v "$tool" > /dev/null || die "'$tool' is missing"
done
[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) is missing: apt-get install time"
[ -e /dev/fuse ] || die "/dev/fuse is missing (the FUSE read benchmarks need it)"
[ -w /proc/sys/vm/drop_caches ] || die "cannot write /proc/sys/vm/drop_caches (cold-cache runs)"
[ -d "$WORK_BASE" ] || die "work dir parent $WORK_BASE does not exist"
[ "$(stat -f -c %T "$WORK_BASE")" != tmpfs ] ||
    die "$WORK_BASE is tmpfs: use a directory on a real disk (--work-dir)"

# ---- into a private mount namespace -----------------------------------------------------------
if [ "${PKGCHAIN_BENCH_IN_NS:-}" != 1 ]; then
    export PKGCHAIN_BENCH_IN_NS=1
    exec unshare --mount --propagation private -- bash "${BASH_SOURCE[0]}" \
        --size-mb "$SIZE_MB" --files "$FILES" --runs "$RUNS" --sections "$SECTIONS" \
        --work-dir "$WORK_BASE" --out "$OUT" $([ "$NIX28" = 1 ] || echo --no-nix28) \
        $([ "$KEEP" = 0 ] || echo --keep)
fi
[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] ||
    die "not in a private mount namespace (refusing to mount anything)"

LOCK=/run/lock/pkgchain-store-bench.lock
exec 9> "$LOCK"
flock -n 9 || die "another store benchmark is running (lock $LOCK)"

has_section() { [[ ,$SECTIONS, == *,$1,* ]]; }

WORK=$(mktemp -d "$WORK_BASE/pkgchain-store-bench.XXXXXX")
TREES=$WORK/trees       # generated trees, bound at $CHROOT/mnt
O=$WORK/ours            # our store: store dir, state dir, ipfs dir
O_STORE=$O/store
O_STATE=$O/state
O_IPFS=$O/ipfs
N34=$WORK/nix34         # Nix 2.34's /nix (bound at $CHROOT/nix)
N28=$WORK/nix28         # Nix 2.8's /nix (bound at /nix in this namespace only)
RAW=$WORK/raw.tsv       # section impl wall user sys maxrss_kb
FACTS=$WORK/facts.txt   # key<TAB>value
MOUNTS=()               # our mounts, unmounted in reverse order
FUSE_PID=
TOP_PID=
mkdir -p "$TREES" "$N34" "$N28" "$WORK/bin"
# A private copy: other people's cargo builds must not swap the binary in the middle of the run.
cp "$PKGCHAIN" "$WORK/bin/pkgchain"
PKGCHAIN_SRC=$PKGCHAIN
PKGCHAIN=$WORK/bin/pkgchain
: > "$RAW"
: > "$FACTS"

cleanup() {
    local rc=$?
    set +e
    [ -z "$TOP_PID" ] || kill "$TOP_PID" 2> /dev/null
    if [ -n "$FUSE_PID" ]; then
        kill -TERM "$FUSE_PID" 2> /dev/null
        wait "$FUSE_PID" 2> /dev/null
    fi
    mountpoint -q "$O_STORE" 2> /dev/null && umount -l "$O_STORE"
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount -l "${MOUNTS[i]}" 2> /dev/null
    done
    if [ "$KEEP" = 1 ]; then
        echo "kept $WORK" >&2
    elif findmnt -rn -o TARGET | grep -q "^$WORK"; then
        echo "store.sh: something is still mounted under $WORK; not deleting it" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

bind() { # bind SRC DST
    mount --bind "$1" "$2"
    MOUNTS+=("$2")
}

# ---- the three implementations ------------------------------------------------------------------
OURS=(env NIX_STORE_DIR="$O_STORE" NIX_STATE_DIR="$O_STATE" PKGCHAIN_IPFS_DIR="$O_IPFS" "$PKGCHAIN")
NIX_CONF=$'build-users-group =\nsandbox = false\nauto-optimise-store = false\nfsync-metadata = true'
NIX_CONF_OPT=$'build-users-group =\nsandbox = false\nauto-optimise-store = true\nfsync-metadata = true'
CLEAN_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
NIX34=("${CLEAN_ENV[@]}" "NIX_CONFIG=$NIX_CONF" chroot "$CHROOT")
NIX34_OPT=("${CLEAN_ENV[@]}" "NIX_CONFIG=$NIX_CONF_OPT" chroot "$CHROOT")
NIX28_CMD=("${CLEAN_ENV[@]}" "NIX_CONFIG=$NIX_CONF")

bind /proc "$CHROOT/proc"
mount --rbind /dev "$CHROOT/dev"
MOUNTS+=("$CHROOT/dev")
bind "$N34" "$CHROOT/nix"
bind "$TREES" "$CHROOT/mnt"
v34=$("${NIX34[@]}" nix-store --version)
[[ $v34 == *" 2.34."* ]] || die "the chroot's Nix is '$v34', not 2.34.x"
fact nix34_version "$v34"
if [ "$NIX28" = 1 ]; then
    bind "$N28" /nix
    v28=$("${NIX28_CMD[@]}" /usr/bin/nix-store --version)
    fact nix28_version "$v28"
fi
fact pkgchain_commit "$(git -C "$REPO" rev-parse --short HEAD 2> /dev/null || echo unknown)$(git -C "$REPO" diff --quiet HEAD -- . ':!bench' 2> /dev/null || echo ' (+uncommitted changes)')"
fact pkgchain_binary "$PKGCHAIN_SRC, modified $(stat -c '%y' "$PKGCHAIN_SRC" | cut -d. -f1), sha256 $(sha256sum "$PKGCHAIN" | cut -c1-16)…"
fact kernel "$(uname -r)"
fact cpus "$(nproc)"
fact mem "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
fact fs "$(findmnt -n -o SOURCE,FSTYPE,OPTIONS --target "$WORK" | cut -c1-100)"
fact params "--size-mb $SIZE_MB --files $FILES --runs $RUNS --sections $SECTIONS$([ "$NIX28" = 1 ] || echo ' --no-nix28')"
fact load_start "$(load)"
CPU_START=$(cpu_ticks)
# Everyone else's CPU use during the run: top every 5 s, summed per command at the end.
top -b -d 5 -w 250 > "$WORK/top.log" 2> /dev/null &
TOP_PID=$!
fact others_start "$(busy)"
if pgrep -f 'cargo fuzz|fuzz/target' > /dev/null || pgrep -x rustc > /dev/null; then
    log "WARNING: fuzzers or compilers are running: timings will be noisy"
    fact warning "fuzzers or compilers were running when the benchmark started"
fi

# ---- measuring ----------------------------------------------------------------------------------
# timed SECTION IMPL CMD...: runs CMD under GNU time, appends wall/user/sys/maxrss to $RAW.
timed() {
    local section=$1 impl=$2 t0 t1 u s m
    shift 2
    t0=$(date +%s%N)
    if ! /usr/bin/time -f '%U %S %M' -o "$WORK/time.out" "$@"; then
        cat "$WORK/time.out" >&2
        die "$section/$impl failed: $*"
    fi
    t1=$(date +%s%N)
    read -r u s m < <(tail -n1 "$WORK/time.out")
    LAST_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$section" "$impl" "$LAST_WALL" "$u" "$s" "$m" >> "$RAW"
}
# row SECTION IMPL WALL: a row with only a wall time.
row() { printf '%s\t%s\t%s\t0\t0\t0\n' "$1" "$2" "$3" >> "$RAW"; }
walltime() { # walltime CMD...: wall seconds of CMD on stdout
    local t0 t1
    t0=$(date +%s%N)
    "$@"
    t1=$(date +%s%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'
}
empty_dir() { find "$1" -mindepth 1 -maxdepth 1 -exec rm -rf {} +; }
reset_ours() {
    rm -rf "$O"
    mkdir -p "$O_STORE" "$O_STATE" "$O_IPFS"
}
impls=(ours nix34)
[ "$NIX28" = 1 ] && impls+=(nix28)
# add IMPL TREE-NAME [SECTION]: adds $TREES/NAME (timed as SECTION if given); sets ADDED to the
# store path it printed.
add() {
    local impl=$1 name=$2 section=${3:-}
    local out=$WORK/add.out
    case $impl in
    ours) set -- "${OURS[@]}" store add "$TREES/$name" ;;
    nix34) set -- "${NIX34[@]}" nix-store --add "/mnt/$name" ;;
    nix34opt) set -- "${NIX34_OPT[@]}" nix-store --add "/mnt/$name" ;;
    nix28) set -- "${NIX28_CMD[@]}" /usr/bin/nix-store --add "$TREES/$name" ;;
    esac
    if [ -n "$section" ]; then
        timed "$section" "$impl" sh -c 'exec "$@" > "$0"' "$out" "$@"
    else
        "$@" > "$out"
    fi
    ADDED=$(tail -n1 "$out")
}
reset_store() {
    case $1 in
    ours) reset_ours ;;
    nix34 | nix34opt) empty_dir "$N34" ;;
    nix28) empty_dir "$N28" ;;
    esac
}
# dump_cmd IMPL PATH: the command that writes PATH's NAR to stdout.
dump_cmd() {
    case $1 in
    ours) echo "${OURS[@]@Q} store dump ${2@Q}" ;;
    nix34) echo "${NIX34[@]@Q} nix-store --dump ${2@Q}" ;;
    nix28) echo "${NIX28_CMD[@]@Q} /usr/bin/nix-store --dump ${2@Q}" ;;
    esac
}

# ---- the trees ----------------------------------------------------------------------------------
need=$((SIZE_MB * 12 * 1048576))
avail=$(($(df --output=avail -B1 "$WORK" | tail -n1)))
[ "$avail" -gt "$need" ] || die "need about $((need >> 30)) GiB free under $WORK_BASE, have $((avail >> 30)) GiB"

log "generating tree-a ($SIZE_MB MiB, $FILES files) in $WORK"
python3 "$GEN" 1 "$SIZE_MB" "$FILES" "$TREES/tree-a" 2> "$WORK/gen.log"
cat "$WORK/gen.log" >&2
fact tree_a "$(sed 's|^.*tree-a: ||' "$WORK/gen.log")"
TREE_BYTES=$(find "$TREES/tree-a" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s }')
fact tree_bytes "$TREE_BYTES"
fact tree_entries "$(find "$TREES/tree-a" | wc -l)"
fact tree_du "$(du -s --block-size=1 "$TREES/tree-a" | cut -f1)"
sync

# ---- 1. ingest (and peak RSS) -------------------------------------------------------------------
log "1. ingest: $RUNS runs each of ${impls[*]} (input tree warm in the page cache)"
fact load_ingest "$(load)"
ingest_runs=$RUNS
has_section ingest || ingest_runs=1
for ((r = 1; r <= ingest_runs; r++)); do
    for impl in "${impls[@]}"; do
        reset_store "$impl"
        # Same memory state for every run: without this, the page cache filling up with earlier
        # runs' stores made each round slower (sys time 6 s -> 12 s) for all implementations.
        drop_caches
        warm "$TREES/tree-a"
        add "$impl" tree-a ingest
        p=$ADDED
        w=$LAST_WALL
        s=$(walltime sync)
        row ingest+sync "$impl" "$(awk -v a="$w" -v b="$s" 'BEGIN { printf "%.3f", a + b }')"
        log "   run $r $impl: ${w}s (+ sync ${s}s) -> $p"
        case $impl in
        ours) P_OURS=$p ;;
        nix34) P_NIX34=$p ;;
        nix28) P_NIX28=$p ;;
        esac
    done
done
fact ours_store_du "$(du -s --block-size=1 "$O" | cut -f1)"
fact ours_db_bytes "$(du -s --block-size=1 "$O_STATE" | cut -f1)"
fact nix34_store_du "$(du -s --block-size=1 "$N34/store" | cut -f1)"
fact nix34_nar_size "$("${NIX34[@]}" nix-store -q --size "$P_NIX34")"
fact ours_stats "$("${OURS[@]}" store stats --json)"

# Correctness: all of them must produce the same NAR, and our store must verify.
log "   checking that every store gives the same NAR (this also warms the caches)"
for impl in "${impls[@]}"; do
    var=P_${impl^^}
    h=$(bash -c "$(dump_cmd "$impl" "${!var}")" | sha256sum | cut -d' ' -f1)
    fact "nar_sha256_$impl" "$h"
done
fact nix34_path "$P_NIX34"
fact ours_path "$P_OURS"
if [ "$(grep "^nar_sha256_" "$FACTS" | cut -f2 | sort -u | wc -l)" != 1 ]; then
    log "FAIL: the stores' NARs differ"
    fact fail "NAR of tree-a differs between stores: $(grep '^nar_sha256_' "$FACTS" | tr '\n\t' '; ')"
fi
if "${OURS[@]}" store verify 2> "$WORK/verify.log"; then
    fact ours_verify "ok: $(tail -n1 "$WORK/verify.log")"
else
    fact fail "pkgchain store verify failed: $(tail -n3 "$WORK/verify.log" | tr '\n' ' ')"
fi

# ---- 2. export ----------------------------------------------------------------------------------
if has_section dump; then
    log "2. dump, warm"
    fact load_dump "$(load)"
    for ((r = 1; r <= RUNS; r++)); do
        for impl in "${impls[@]}"; do
            var=P_${impl^^}
            timed dump-warm "$impl" bash -c "$(dump_cmd "$impl" "${!var}") > /dev/null"
            log "   run $r $impl: ${LAST_WALL}s"
        done
    done
    log "2. dump, cold (caches dropped before each run)"
    for ((r = 1; r <= RUNS; r++)); do
        for impl in "${impls[@]}"; do
            var=P_${impl^^}
            drop_caches
            timed dump-cold "$impl" bash -c "$(dump_cmd "$impl" "${!var}") > /dev/null"
            log "   run $r $impl: ${LAST_WALL}s"
        done
    done
fi

# ---- 3. and 4. reading through FUSE vs the native file system -----------------------------------
if has_section read || has_section find; then
    log "mounting our store view (FUSE) at $O_STORE"
    "${OURS[@]}" store mount --view fuse --no-ipfs > "$WORK/mount.log" 2>&1 &
    FUSE_PID=$!
    FUSE_DIR=$O_STORE/${P_OURS##*/}
    for ((i = 0; i < 300; i++)); do
        if mountpoint -q "$O_STORE" && [ -d "$FUSE_DIR" ]; then break; fi
        kill -0 "$FUSE_PID" 2> /dev/null || { cat "$WORK/mount.log" >&2; die "pkgchain store mount exited"; }
        sleep 0.1
    done
    [ -d "$FUSE_DIR" ] || { cat "$WORK/mount.log" >&2; die "FUSE view did not show $FUSE_DIR within 30 s"; }
    fact fuse_mount "$(findmnt -n -o FSTYPE,OPTIONS "$O_STORE")"
    # Same tree? Compare the listings (names, sizes, modes of files; targets of symlinks).
    if ! diff <(cd "$FUSE_DIR" && find . -printf '%y %s %l %P\n' | awk '{ if ($1 != "f") $2 = "-"; print }' | sort) \
        <(cd "$TREES/tree-a" && find . -printf '%y %s %l %P\n' | awk '{ if ($1 != "f") $2 = "-"; print }' | sort) \
        > "$WORK/listing.diff"; then
        fact fail "the FUSE view's listing differs from the tree: $(head -c 300 "$WORK/listing.diff" | tr '\n' ' ')"
    fi
    NATIVE_DIR=$TREES/tree-a
    declare -A DIRS=([fuse]=$FUSE_DIR [native]=$NATIVE_DIR)
    # the benchmark commands, given the directory as $1
    READ_CMD='tar -cf - -C "$1" . | cat > /dev/null'
    FIND_CMD='find "$1" -printf "%s %m %p\n" > /dev/null'
    for what in read find; do
        has_section "$what" || continue
        cmd=READ_CMD
        [ "$what" = find ] && cmd=FIND_CMD
        log "$([ "$what" = read ] && echo 3 || echo 4). $what: ${!cmd}"
        fact "load_$what" "$(load)"
        for view in fuse native; do sh -c "${!cmd}" sh "${DIRS[$view]}"; done # warm up
        for ((r = 1; r <= RUNS; r++)); do
            for view in fuse native; do
                timed "$what-warm" "$view" sh -c "${!cmd}" sh "${DIRS[$view]}"
                log "   warm run $r $view: ${LAST_WALL}s"
            done
        done
        for ((r = 1; r <= RUNS; r++)); do
            for view in fuse native; do
                drop_caches
                timed "$what-cold" "$view" sh -c "${!cmd}" sh "${DIRS[$view]}"
                log "   cold run $r $view: ${LAST_WALL}s"
            done
        done
    done
    fact fuse_rss_kb "$(awk '/VmHWM/ {print $2}' "/proc/$FUSE_PID/status" 2> /dev/null || echo '?')"
    kill -TERM "$FUSE_PID"
    wait "$FUSE_PID" || fact fail "pkgchain store mount exited with status $? on SIGTERM"
    FUSE_PID=
    if mountpoint -q "$O_STORE"; then
        fact fail "the FUSE view was still mounted after pkgchain store mount exited"
        umount -l "$O_STORE"
    fi
    if grep -qiE 'warn|error' "$WORK/mount.log"; then
        fact mount_log "$(grep -iE 'warn|error' "$WORK/mount.log" | sort | uniq -c | head -5 | tr '\n' ' ')"
    fi
fi

# ---- 5. deduplication ---------------------------------------------------------------------------
if has_section dedup; then
    log "5. dedup: tree-b (tree-a, one large file changed by 4 bytes), tree-c (seed 2, ~50% of files shared)"
    fact load_dedup "$(load)"
    cp -a "$TREES/tree-a" "$TREES/tree-b"
    read -r big_size big < <(find "$TREES/tree-b" -type f -printf '%s %p\n' | sort -n | tail -n1)
    printf 'XXXX' | dd of="$big" bs=1 seek=$((big_size / 2)) conv=notrunc status=none
    fact tree_b "copy of tree-a; 4 bytes overwritten at offset $((big_size / 2)) of ${big#"$TREES/tree-b/"} ($big_size bytes)"
    python3 "$GEN" 2 "$SIZE_MB" "$FILES" "$TREES/tree-c" --share 1:0.5 2> "$WORK/gen-c.log"
    fact tree_c "$(sed 's|^.*tree-c: ||' "$WORK/gen-c.log"); about half the files share index, size and contents with tree-a (--share 1:0.5)"
    fact trees_du "$(du -s --block-size=1 "$TREES/tree-a" "$TREES/tree-b" "$TREES/tree-c" | awk '{ s += $1 } END { printf "%.0f", s }')"
    sync
    reset_store ours
    reset_store nix34opt
    for t in tree-a tree-b tree-c; do
        for impl in ours nix34opt; do
            warm "$TREES/$t"
            add "$impl" "$t" "dedup-add-$t"
            p=$ADDED
            log "   $impl add $t: ${LAST_WALL}s -> $p"
            [ "$impl" = nix34opt ] && fact "nix34_nar_size_$t" "$("${NIX34[@]}" nix-store -q --size "$p")"
        done
    done
    sync
    fact dedup_ours_stats "$("${OURS[@]}" store stats --json)"
    fact dedup_ours_block_file_bytes "$(find "$O_IPFS/blocks" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s }')"
    fact dedup_ours_blocks_du "$(du -s --block-size=1 "$O_IPFS/blocks" | cut -f1)"
    fact dedup_ours_db_du "$(du -s --block-size=1 "$O_STATE" | cut -f1)"
    fact dedup_nix34_store_du "$(du -s --block-size=1 "$N34/store" | cut -f1)"
    fact dedup_nix34_links_du "$(du -s --block-size=1 "$N34/store/.links" | cut -f1)"
    fact dedup_nix34_db_du "$(du -s --block-size=1 "$N34/var/nix/db" | cut -f1)"
fi
fact load_end "$(load)"
fact cpu_during "$(cpu_use "$CPU_START" "$(cpu_ticks)")"
kill "$TOP_PID" 2> /dev/null || true
wait "$TOP_PID" 2> /dev/null || true
TOP_PID=
# CPU seconds of commands that are not this benchmark's (top's %CPU x 5 s intervals).
fact others_cpu "$(awk '
    $1 ~ /^[0-9]+$/ && $9 + 0 > 0 {
        c = $12
        if (c ~ /^(pkgchain|nix-store|nix|tar|cat|find|python3|sha256sum|du|sync|cp|dd|top|bash|sh|env|chroot|time|awk|sort|diff|kworker.*|ksoftirqd.*|kswapd.*|jbd2.*|kdamond.*|rcu_.*|migration.*)$/) next
        s[c] += $9 * 5 / 100
    }
    END { for (c in s) if (s[c] >= 1) printf "%s %.0f s; ", c, s[c] }' "$WORK/top.log")"
fact others_end "$(busy)"

# ---- summary ------------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
python3 "$REPO/bench/summarise.py" "$RAW" "$FACTS" > "$WORK/summary.md"
cp "$WORK/summary.md" "$OUT"
cat "$WORK/summary.md"
log "results written to $OUT"
