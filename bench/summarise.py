#!/usr/bin/env python3
"""Turns store.sh's raw rows and facts into the Markdown results page (on stdout).

    summarise.py RAW.tsv FACTS.txt

RAW rows: section, implementation, wall s, user s, sys s, max RSS KiB (tab-separated).
FACTS rows: key, value (tab-separated).
"""

import datetime
import json
import statistics
import sys
from collections import defaultdict

raw_file, facts_file = sys.argv[1:3]
rows = defaultdict(list)  # (section, impl) -> [(wall, user, sys, rss)]
order = []
for line in open(raw_file):
    sec, impl, wall, user, sys_, rss = line.rstrip("\n").split("\t")
    if (sec, impl) not in rows:
        order.append((sec, impl))
    rows[(sec, impl)].append((float(wall), float(user), float(sys_), int(rss)))
facts = {}
for line in open(facts_file):
    k, _, v = line.rstrip("\n").partition("\t")
    facts[k] = facts[k] + " | " + v if k in facts and k in ("fail", "warning") else v


def stat(sec, impl, f=lambda r: r[0]):
    v = [f(r) for r in rows.get((sec, impl), [])]
    if not v:
        return None
    return statistics.median(v), min(v), max(v), len(v)


def fmt(s, unit="s", digits=2):
    if s is None:
        return "–"
    med, lo, hi, n = s
    if n == 1:
        return f"{med:.{digits}f} {unit}"
    return f"{med:.{digits}f} {unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def goal_check(ratio, goal, higher_is_better=False):
    if ratio is None or goal is None:
        return ""
    ok = ratio >= goal if higher_is_better else ratio <= goal
    return "met" if ok else "**missed**"


mib = 1 << 20
tree_bytes = int(facts.get("tree_bytes", "0"))
out = []
p = out.append
p(f"# Store benchmark: pkgchain vs Nix, {datetime.date.today().isoformat()}")
p("")
p("Produced by `bench/store.sh` (see `bench/README.md`). Times are medians of the runs with")
p("(min–max) in brackets; ratios are pkgchain's median over Nix 2.34's median in the same run.")
p("")
p("| | |")
p("|---|---|")
for k, label in [
    ("params", "parameters"),
    ("pkgchain_commit", "pkgchain commit"),
    ("pkgchain_binary", "pkgchain binary built"),
    ("nix34_version", "Nix (chroot)"),
    ("nix28_version", "Nix (host, extra column)"),
    ("kernel", "kernel"),
    ("cpus", "CPUs"),
    ("mem", "memory"),
    ("fs", "file system of the trees and stores"),
    ("tree_a", "tree-a"),
    ("tree_entries", "tree-a entries (`find \\| wc -l`)"),
    ("load_start", "load average at start"),
    ("others_start", "other processes ≥5% CPU at start"),
    ("load_end", "load average at end"),
    ("cpu_during", "whole machine's CPU use during the run (this benchmark included)"),
    ("others_cpu", "CPU seconds used by other commands during the run (top, 5 s samples)"),
    ("others_end", "other processes ≥5% CPU at end"),
]:
    if k in facts:
        p(f"| {label} | {facts[k].strip() or 'none'} |")
loads = [f"{k[5:]} {facts[k]}" for k in facts if k.startswith("load_") and k not in ("load_start", "load_end")]
if loads:
    p(f"| load average at each section's start | {'; '.join(loads)} |")
p("")
for k in ("fail", "warning"):
    if k in facts:
        p(f"**{k.upper()}**: {facts[k]}")
        p("")

has28 = any(impl == "nix28" for (_, impl) in rows)
p("## Summary")
p("")
head = "| # | measurement | pkgchain | Nix 2.34 | ratio | goal | |"
if has28:
    head += " Nix 2.8 |"
p(head)
p("|---" * (head.count("|") - 1) + "|")


def line(num, what, ours, nix, ratio, goal, check, n28=None):
    r = "–" if ratio is None else f"{ratio:.2f}x"
    s = f"| {num} | {what} | {ours} | {nix} | {r} | {goal} | {check} |"
    if has28:
        s += f" {n28 or '–'} |"
    p(s)


def cmp_rows(num, what, sec, goal, goal_txt, f=lambda r: r[0], unit="s", digits=2, scale=1.0):
    o, n, n28 = stat(sec, "ours", f), stat(sec, "nix34", f), stat(sec, "nix28", f)
    sc = lambda s: None if s is None else (s[0] * scale, s[1] * scale, s[2] * scale, s[3])
    ratio = o[0] / n[0] if o and n and n[0] else None
    line(num, what, fmt(sc(o), unit, digits), fmt(sc(n), unit, digits), ratio, goal_txt,
         goal_check(ratio, goal), fmt(sc(n28), unit, digits) if n28 else None)


cmp_rows(1, "ingest (`store add` / `nix-store --add`), wall", "ingest", 1.0, "≤1.0 (aim 0.6)")
cmp_rows(1, "ingest, wall + the `sync` after it", "ingest+sync", 1.0, "≤1.0")
cmp_rows(1, "ingest, CPU user+sys", "ingest", None, "", f=lambda r: r[1] + r[2])
cmp_rows(2, "dump to /dev/null, warm", "dump-warm", 1.0, "≤1.0")
cmp_rows(2, "dump to /dev/null, cold", "dump-cold", 1.0, "≤1.0")
o = stat("ingest", "ours", lambda r: r[3] / 1024)
n = stat("ingest", "nix34", lambda r: r[3] / 1024)
n28 = stat("ingest", "nix28", lambda r: r[3] / 1024)
if o:
    line(6, "peak RSS of ingest (GNU time, max of runs)", f"{o[2]:.0f} MiB", f"{n[2]:.0f} MiB" if n else "–",
         o[2] / n[2] if n else None, "≤200 MiB (pkgchain)", "met" if o[2] <= 200 else "**missed**",
         f"{n28[2]:.0f} MiB" if n28 else None)
p("")
p("Reading through our FUSE view vs the native file system:")
p("")
head = "| # | measurement | FUSE (pkgchain) | native ext4 | ratio | goal | |"
p(head)
p("|---" * (head.count("|") - 1) + "|")
has28 = False  # no Nix 2.8 column here
for sec, num, what, goal in [
    ("read-warm", 3, "read tree (`tar -cf - \\| cat`), warm", 0.9),
    ("read-cold", 3, "read tree (`tar -cf - \\| cat`), cold", 0.7),
]:
    f, nt = stat(sec, "fuse"), stat(sec, "native")
    if f and nt:
        thr = lambda s: (tree_bytes / mib / s[0], tree_bytes / mib / s[2], tree_bytes / mib / s[1], s[3])
        ratio = nt[0] / f[0]
        line(num, what + ", throughput; ratio of throughputs", fmt(thr(f), "MiB/s", 0),
             fmt(thr(nt), "MiB/s", 0), ratio, f"≥{goal}", goal_check(ratio, goal, True))
for sec, num, what, goal in [
    ("find-warm", 4, "`find -printf '%s %m %p'`, warm", 1.1),
    ("find-cold", 4, "`find -printf '%s %m %p'`, cold", 1.5),
]:
    f, nt = stat(sec, "fuse"), stat(sec, "native")
    if f and nt:
        ratio = f[0] / nt[0]
        line(num, what + ", time", fmt(f, "s", 3), fmt(nt, "s", 3), ratio,
             f"≤{goal}", goal_check(ratio, goal))
p("")
p(f"Reads: native = the original generated tree on ext4 (same disk as the block store); FUSE = "
  f"`pkgchain store mount --view fuse --no-ipfs`, reading `$NIX_STORE_DIR/<path>`. Throughput is "
  f"the tree's file bytes ({tree_bytes} B = {tree_bytes / mib:.1f} MiB) over the wall time. "
  f"Cold = `sync; echo 3 > /proc/sys/vm/drop_caches` before each run.")
if "fuse_mount" in facts:
    p(f"FUSE mount: `{facts['fuse_mount']}`; FUSE server peak RSS {facts.get('fuse_rss_kb', '?')} KiB.")
if "mount_log" in facts:
    p(f"FUSE server log warnings: `{facts['mount_log']}`")
p("")

if "dedup_ours_blocks_du" in facts:
    p("## 5. Deduplication: tree-a, tree-b and tree-c in one store")
    p("")
    p(f"- tree-b: {facts.get('tree_b', '')}")
    p(f"- tree-c: {facts.get('tree_c', '')}")
    p("")
    nar = sum(int(facts.get(f"nix34_nar_size_{t}", "0")) for t in ("tree-a", "tree-b", "tree-c"))
    st = json.loads(facts.get("dedup_ours_stats", "{}"))
    nix_du = int(facts["dedup_nix34_store_du"])
    ours_du = int(facts["dedup_ours_blocks_du"])
    p("| bytes | | of the NARs' sum |")
    p("|---|---:|---:|")
    items = [
        ("sum of the three NAR sizes (`nix-store -q --size`)", nar),
        ("pkgchain `store stats`: NAR bytes", st.get("narBytes")),
        ("the three input trees on ext4 (`du -s --block-size=1`, no dedup)", int(facts.get("trees_du", 0))),
        ("pkgchain: sum of block file sizes", int(facts["dedup_ours_block_file_bytes"])),
        ("pkgchain: `store stats` block bytes", st.get("blockBytes")),
        ("pkgchain: `du -s --block-size=1` of the blocks dir", ours_du),
        ("pkgchain: its SQLite database (du of the state dir)", int(facts["dedup_ours_db_du"])),
        ("Nix 2.34, auto-optimise-store: `du -s --block-size=1` of /nix/store (with .links)", nix_du),
        ("Nix 2.34: of which /nix/store/.links", int(facts["dedup_nix34_links_du"])),
        ("Nix 2.34: its SQLite database (du of /nix/var/nix/db)", int(facts["dedup_nix34_db_du"])),
    ]
    for label, v in items:
        if v is None:
            continue
        p(f"| {label} | {v:,} | {v / nar:.3f} |" if nar else f"| {label} | {v:,} | |")
    p("")
    p(f"On disk, pkgchain's blocks take **{ours_du / nix_du:.2f}x** what Nix 2.34's optimised store "
      f"takes (du, database excluded); with databases "
      f"{(ours_du + int(facts['dedup_ours_db_du'])) / (nix_du + int(facts['dedup_nix34_db_du'])):.2f}x. "
      f"`store stats` dedup ratio: {st.get('dedupRatio', 0):.3f}.")
    p("")
    p("Adding each tree once, in order, into the same store (single runs, wall):")
    p("")
    p("| tree | pkgchain | Nix 2.34 (auto-optimise) | ratio |")
    p("|---|---|---|---|")
    for t in ("tree-a", "tree-b", "tree-c"):
        o, n = stat(f"dedup-add-{t}", "ours"), stat(f"dedup-add-{t}", "nix34opt")
        if o and n:
            p(f"| {t} | {o[0]:.2f} s | {n[0]:.2f} s | {o[0] / n[0]:.2f}x |")
    p("")

p("## Checks")
p("")
for k, label in [
    ("nar_sha256_ours", "NAR sha256 of tree-a, pkgchain"),
    ("nar_sha256_nix34", "NAR sha256 of tree-a, Nix 2.34"),
    ("nar_sha256_nix28", "NAR sha256 of tree-a, Nix 2.8"),
    ("ours_verify", "`pkgchain store verify` after ingest"),
    ("ours_path", "pkgchain store path"),
    ("nix34_path", "Nix store path"),
    ("nix34_nar_size", "NAR size of tree-a"),
    ("ours_store_du", "pkgchain store after one ingest (du of blocks + DB)"),
    ("nix34_store_du", "Nix 2.34 store after one ingest (du)"),
    ("ours_stats", "pkgchain `store stats --json` after one ingest"),
]:
    if k in facts:
        p(f"- {label}: `{facts[k]}`")
p("")
p("## All runs")
p("")
p("| measurement | impl | wall s | user s | sys s | max RSS MiB |")
p("|---|---|---|---|---|---|")
for key in order:
    for wall, user, sys_, rss in rows[key]:
        p(f"| {key[0]} | {key[1]} | {wall:.3f} | {user:.2f} | {sys_:.2f} | {rss / 1024:.0f} |")
print("\n".join(out))
