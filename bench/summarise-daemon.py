#!/usr/bin/env python3
"""Turns daemon.sh's raw rows and facts into the Markdown results page (on stdout).

    summarise-daemon.py RAW.tsv FACTS.txt

RAW rows: measurement, implementation (ours or nix), value (tab-separated).
FACTS rows: key, value (tab-separated).
"""

import datetime
import statistics
import sys
from collections import defaultdict

raw_file, facts_file = sys.argv[1:3]
rows = defaultdict(list)  # (measurement, impl) -> [value]
order = []
for line in open(raw_file):
    what, impl, value = line.rstrip("\n").split("\t")
    if (what, impl) not in rows:
        order.append((what, impl))
    rows[(what, impl)].append(float(value))
facts = {}
for line in open(facts_file):
    k, _, v = line.rstrip("\n").partition("\t")
    facts[k] = facts[k] + " | " + v if k in facts and k in ("fail", "warning") else v


def stat(what, impl):
    v = rows.get((what, impl), [])
    if not v:
        return None
    return statistics.median(v), min(v), max(v), len(v)


def fmt(s, unit, digits):
    if s is None:
        return "–"
    med, lo, hi, n = s
    if n == 1:
        return f"{med:,.{digits}f} {unit}"
    return f"{med:,.{digits}f} {unit} ({lo:,.{digits}f}–{hi:,.{digits}f})"


drvs = int(facts.get("drvs", "0"))
clients = int(facts.get("clients", "0"))
requests = int(facts.get("requests", "0"))
tree_mb = int(facts.get("tree_mb", "0"))

out = []
p = out.append
p(f"# Daemon benchmark: pkgchain-daemon vs nix-daemon 2.34, {datetime.date.today().isoformat()}")
p("")
p("Produced by `bench/daemon.sh` (see `bench/README.md`). Values are medians of the runs with")
p("(min–max) in brackets; ratios are pkgchain's median over nix-daemon's median in the same run.")
p("Both daemons ran in their own mount namespace with a private `/nix` on the same disk; the")
p("clients were Nix 2.34 (`NIX_REMOTE=daemon`) and `pkgchain-loadgen`.")
p("")
p("| | |")
p("|---|---|")
for k, label in [
    ("params", "parameters"),
    ("pkgchain_commit", "pkgchain commit"),
    ("pkgchain_binary", "pkgchain-daemon binary"),
    ("nix34_version", "Nix (chroot: nix-daemon and clients)"),
    ("protocol_ours", "protocol negotiated by pkgchain-loadgen with pkgchain-daemon"),
    ("protocol_nix", "protocol negotiated by pkgchain-loadgen with nix-daemon"),
    ("kernel", "kernel"),
    ("cpus", "CPUs"),
    ("mem", "memory"),
    ("fs", "file system of the stores"),
    ("expression", "nix-instantiate expression"),
    ("tree_a", "tree for `nix-store --add`"),
    ("gc", "paths of the gc section"),
    ("load_start", "load average at start"),
    ("others_start", "other processes ≥5% CPU at start"),
    ("load_end", "load average at end"),
    ("cpu_during", "whole machine's CPU use during the run (this benchmark included)"),
    ("others_cpu", "CPU seconds used by other commands during the run (top, 5 s samples)"),
    ("others_end", "other processes ≥5% CPU at end"),
]:
    if k in facts:
        p(f"| {label} | {facts[k].strip() or 'none'} |")
loads = [f"{k[5:]} {facts[k]}" for k in facts if k.startswith("load_run")]
if loads:
    p(f"| load average at each step's start | {'; '.join(loads)} |")
cpus = [f"{k[4:]} {facts[k]}" for k in facts if k.startswith("cpu_run")]
if cpus:
    p(f"| whole machine's CPU use during each timed gc command | {'; '.join(cpus)} |")
p("")
for k in ("fail", "warning"):
    if k in facts:
        p(f"**{k.upper()}**: {facts[k]}")
        p("")

p("## Summary")
p("")
p("| # | measurement | pkgchain-daemon | nix-daemon 2.34 | ratio | goal | |")
p("|---|---|---|---|---|---|---|")


def line(num, what, key, unit, digits, goal=None, higher_is_better=False, scale=1.0):
    o, n = stat(key, "ours"), stat(key, "nix")
    if o is None and n is None:
        return
    sc = lambda s: None if s is None else (s[0] * scale, s[1] * scale, s[2] * scale, s[3])
    ratio = o[0] / n[0] if o and n and n[0] else None
    r = "–" if ratio is None else f"{ratio:.2f}x"
    if goal is None or ratio is None:
        goal_txt, check = ("" if goal is None else f"{'≥' if higher_is_better else '≤'}{goal}x"), ""
    else:
        ok = ratio >= goal if higher_is_better else ratio <= goal
        goal_txt = f"{'≥' if higher_is_better else '≤'}{goal}x"
        check = "met" if ok else "**missed**"
    p(f"| {num} | {what} | {fmt(sc(o), unit, digits)} | {fmt(sc(n), unit, digits)} | {r} | {goal_txt} | {check} |")


line("a", f"`nix-instantiate`, {drvs:,} derivations, empty store, wall", "instantiate-empty", "s", 2, 0.8)
line("a", "`nix-instantiate` again (every .drv already valid), wall", "instantiate-again", "s", 2)
line("b", f"QueryPathInfo, {clients} clients × {requests:,}, throughput", "query-rps", "req/s", 0, 3.0, True)
line("b", "QueryPathInfo latency, median", "query-p50-us", "µs", 0)
line("b", "QueryPathInfo latency, 99th percentile", "query-p99-us", "µs", 0)
line("c", f"`nix-store --add` of a {tree_mb} MiB tree, wall", "add", "s", 2, 1.0)
line("c", "`nix-store --add`, wall + the `sync` after it", "add+sync", "s", 2)
line("d", "RSS idle, fresh daemon", "rss-idle-start", "MiB", 1, 1.0, scale=1 / 1024)
line("d", f"RSS idle, after the instantiate ({drvs + 1:,} paths)", "rss-idle", "MiB", 1, 1.0, scale=1 / 1024)
line("d", f"RSS peak under the {clients}-client load (sum over processes)", "rss-peak", "MiB", 1, 1.0, scale=1 / 1024)
line("d", "PSS peak under the same load (sum over processes)", "pss-peak", "MiB", 1, scale=1 / 1024)
line("d", "RSS idle after the load (clients gone)", "rss-after", "MiB", 1, scale=1 / 1024)
trivial = int(facts.get("builds", "200").split()[0]) if "builds" in facts else 200
line("e", f"`nix-build` of {trivial} independent trivial derivations, max-jobs 2, wall", "build-trivial-j2", "s", 2, 0.3)
line("e", f"the same with max-jobs 1, wall", "build-trivial-j1", "s", 2)
line("e", "per build with max-jobs 1 (set-up, builder, tear-down, registration)", "per-build-ms-j1", "ms", 1)
line("e", "sandbox set-up per build (helper start to the builder's exec), max-jobs 1", "sandbox-setup-ms-j1", "ms", 2)
line("e", "sandbox tear-down per build (removing the build root), max-jobs 1", "sandbox-teardown-ms-j1", "ms", 2)
line("e", "sandbox set-up, from the kernel's events: the fork that starts a build to the builder's exec, max-jobs 1, median", "sched-setup-ms-j1", "ms", 2)
line("e", "after the builder, from the kernel's events: its exit to the next build's fork (tear-down, registration, scheduling), max-jobs 1, median", "sched-after-ms-j1", "ms", 2)
line("f", "GNU hello 2.10 from source (fetch, configure, make, make check, install), wall", "hello", "s", 2, 1.05)
gc_print = int(facts.get("gc_print", "0"))
gc_dead = int(facts.get("gc_dead", "0"))
line("g", f"`nix-store --gc --print-dead`, {gc_print:,} paths, none rooted, wall", "gc-print-dead", "s", 3, 0.1)
line("g", f"`nix-store --gc` deleting {gc_dead:,} dead paths (all the store holds), wall", "gc-collect", "s", 2, 0.2)
line("g", f"(untimed set-up) `nix-store --import` of the {gc_print:,} paths, once per daemon", "gc-populate-print", "s", 2)
line("g", f"(untimed set-up) `nix-store --import` of the {gc_dead:,} paths before each collection", "gc-populate-dead", "s", 2)
p("")
p("- (a) runs on an empty store: the first run adds the .drv files (the daemon answers the")
p("  client's `AddToStore`/`AddTextToStore` and `IsValidPath` calls), the second finds them valid.")
p("- (b) `pkgchain-loadgen query-path-info`: the connections are opened first, then each sends")
p("  its requests one after the other over the instantiated closure's paths; throughput is all")
p("  requests over the wall time of that phase. nix-daemon serves each connection in a forked")
p("  process; ours in one process.")
p("- (c) on an empty store, the tree warm in the page cache (caches dropped, then the tree read")
p("  once). Both daemons run with `fsync-store-paths = false` (Nix's default): nix-daemon leaves")
p("  its store files to writeback, ours its blocks (it syncs every 5 s, and a crash cannot leave a")
p("  damaged path valid); the row with the `sync` after it counts the writeback too.")
p("- (d) memory: RSS summed over each daemon's process tree: ours and its two `fusermount3`")
p("  children; nix-daemon's main process and its per-connection children, which share pages after")
p("  `fork`, so their RSS sum counts shared pages once per process (the PSS row divides them")
p("  fairly). The peak is sampled every 50 ms during (b).")
p("- (e) sandboxed builds, the sandbox on for both daemons (user, mount, pid, net, ipc and uts")
p("  namespaces each); the builders are the host's `/usr/bin/sh` (`extra-sandbox-paths`).")
p("  The set-up and tear-down rows are ours alone, from the daemon's log. The two rows from the")
p("  kernel's events time both daemons alike (`perf record` of fork, exec and exit events,")
p("  `bench/sched-builds.py`, when `perf` is installed): a build starts when the process")
p("  serving the client forks the child that becomes the builder, set-up ends at the builder's")
p("  exec, and what follows the builder runs from its exit to the next build's start.")
p("- (f) `nix-build -A hello` of `tests-nixpkgs/pkgs` into an empty store: the tarball from a")
p("  local HTTP server (`builtin:fetchurl`), then the stdenv phases with the host's toolchain")
p("  (`extra-sandbox-paths`); inputs read through our FUSE view, Nix's from its store files.")
p("- (g) garbage collection of small distinct paths without references, none rooted (no profiles,")
p("  no indirect roots), put in with one `nix-store --import` of an export made once (the same")
p("  stream for both daemons), then `sync`. `--print-dead` runs on one store per daemon, filled")
p("  once and served by a freshly started daemon in each run; each collection runs on a fresh")
p("  store filled just before it. Page cache warm, nothing else in the store. The checks below")
p("  compare the dead lists and the number of paths each daemon says it deleted.")
p("")
p("## Checks")
p("")
for k, label in [
    ("drv_ours", "derivation, pkgchain-daemon"),
    ("drv_nix", "derivation, nix-daemon"),
    ("drv_closure_ours", "closure of the derivation, pkgchain-daemon"),
    ("drv_closure_nix", "closure of the derivation, nix-daemon"),
    ("add_path_ours", "added tree, pkgchain-daemon"),
    ("add_path_nix", "added tree, nix-daemon"),
    ("add_hash_ours", "its NAR hash and size, pkgchain-daemon"),
    ("add_hash_nix", "its NAR hash and size, nix-daemon"),
    ("trivial_outputs_ours", "trivial builds' outputs, pkgchain-daemon"),
    ("trivial_outputs_nix", "trivial builds' outputs, nix-daemon"),
    ("hello_out_ours", "GNU hello, pkgchain-daemon"),
    ("hello_out_nix", "GNU hello, nix-daemon"),
    ("gc_added_print_ours", "paths imported for `--print-dead`, pkgchain-daemon"),
    ("gc_added_print_nix", "paths imported for `--print-dead`, nix-daemon"),
    ("gc_dead_list_ours", "`nix-store --gc --print-dead`, pkgchain-daemon"),
    ("gc_dead_list_nix", "`nix-store --gc --print-dead`, nix-daemon"),
    ("gc_added_dead_ours", "paths imported for the collection, pkgchain-daemon"),
    ("gc_added_dead_nix", "paths imported for the collection, nix-daemon"),
    ("gc_deleted_ours", "`nix-store --gc`, pkgchain-daemon"),
    ("gc_deleted_nix", "`nix-store --gc`, nix-daemon"),
]:
    if k in facts:
        p(f"- {label}: `{facts[k]}`")
for k in sorted(facts):
    if k.startswith("sampler_run") or k.startswith("daemon_log_") or k.startswith("gc_collect_out_"):
        p(f"- {k}: {facts[k]}")
p("")
p("## All runs")
p("")
p("| measurement | impl | values in run order |")
p("|---|---|---|")
for key in order:
    p(f"| {key[0]} | {key[1]} | {', '.join(f'{v:g}' for v in rows[key])} |")
print("\n".join(out))
