#!/usr/bin/env python3
"""Deterministic test tree for the store benchmarks.

    gen-tree.py SEED SIZE_MB FILES OUT [--share BASE_SEED:FRACTION]

Writes a directory OUT (which must not exist) holding FILES regular files whose sizes add up to
about SIZE_MB MiB, plus symlinks (about 3% of FILES, some dangling, some to directories), empty
files (2%), executables (8%), empty directories and one 40-level deep directory chain.

File sizes are log-normally distributed (median a few KiB, a long tail; with the default
20,000 files about 1% are larger than 1 MiB, the largest is capped at 64 MiB), then scaled so the
total is SIZE_MB. Contents are pseudo-random, about half "text" (a 32-letter alphabet, so it
compresses like source code) and half binary; about 4% of the non-empty files repeat the
contents of another file of the tree (whole-file duplicates). No two other files share any
64-byte run, so any deduplication a store finds beyond those is real.

--share BASE_SEED:FRACTION makes about FRACTION of the files carry exactly the contents, size
and executable bit of the file with the same index in the tree `gen-tree.py BASE_SEED SIZE_MB
FILES` would make (at different paths), for cross-tree deduplication benchmarks.

The same arguments always give the same tree, byte for byte (Python's `random.Random` is
specified to be reproducible across versions for the calls used here).
"""

import argparse
import math
import os
import random
import sys

MAX_FILE = 64 << 20
CHUNK = 4 << 20
WORDS = [
    "lib", "share", "doc", "bin", "include", "etc", "man", "locale", "python3", "site",
    "packages", "data", "icons", "hicolor", "scalable", "apps", "src", "test", "util",
    "core", "net", "io", "fs", "sync", "proto", "gen", "x86_64", "linux", "gnu", "pkgconfig",
    "cmake", "examples", "plugins", "modules", "themes", "fonts", "static", "tools",
]
EXTS = [".so", ".a", ".h", ".py", ".txt", ".json", ".png", ".html", ".gz", "", ".c", ".md"]
TEXT = bytes.maketrans(bytes(range(256)), (b"etaoinshrdlucmfw ypvbgkqjxz\n_.,;" * 8))


def spec(seed, size_mb, files):
    """[(size, key, text, exec)] for every file index: the tree's contents, layout aside."""
    r = random.Random(f"sizes-{seed}")
    raw = []
    for _ in range(files):
        if r.random() < 0.02:
            raw.append(0.0)
        else:
            raw.append(r.lognormvariate(8.0, 2.6))
    target = size_mb * (1 << 20)
    sizes = raw
    scale = 1.0
    for _ in range(8):  # scale, cap, rescale: converges in a few rounds
        sizes = [min(MAX_FILE, int(x * scale)) if x else 0 for x in raw]
        total = sum(sizes)
        if total == 0 or abs(total - target) < target * 0.001:
            break
        scale *= target / total
    out = []
    for i, size in enumerate(sizes):
        text = r.random() < 0.5
        exe = r.random() < 0.08
        out.append([size, f"{seed}-{i}", text, exe])
    # Whole-file duplicates: copy size and contents of an earlier non-empty file.
    for i in range(1, files):
        if out[i][0] and r.random() < 0.04:
            j = r.randrange(i)
            if out[j][0]:
                out[i][0], out[i][1], out[i][2] = out[j][0], out[j][1], out[j][2]
    return out


def write_file(path, size, key, text, exe):
    r = random.Random(key)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(CHUNK, left)
            data = r.randbytes(n)
            if text:
                data = data.translate(TEXT)
            f.write(data)
            left -= n
    os.chmod(path, 0o755 if exe else 0o644)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("seed", type=int)
    ap.add_argument("size_mb", type=float)
    ap.add_argument("files", type=int)
    ap.add_argument("out")
    ap.add_argument("--share", metavar="BASE_SEED:FRACTION")
    a = ap.parse_args()
    if a.files < 1:
        sys.exit("FILES must be at least 1")
    if os.path.lexists(a.out):
        sys.exit(f"{a.out} exists")

    files = spec(a.seed, a.size_mb, a.files)
    if a.share:
        base_seed, frac = a.share.split(":")
        base = spec(int(base_seed), a.size_mb, a.files)
        rs = random.Random(f"share-{a.seed}-{base_seed}")
        for i in range(a.files):
            if rs.random() < float(frac):
                files[i] = base[i]

    r = random.Random(f"layout-{a.seed}")
    os.mkdir(a.out)
    # Directories: each new one under a random earlier one, so depth grows like log(n).
    ndirs = max(1, a.files // 25)
    dirs = [""]
    for d in range(1, ndirs):
        parent = dirs[r.randrange(len(dirs))]
        name = f"{r.choice(WORDS)}-{d}"
        dirs.append(os.path.join(parent, name) if parent else name)
    deep = "deep"
    for level in range(1, 41):
        deep = os.path.join(deep, f"level{level:02d}")
    dirs.append(deep)
    full = list(dirs)
    # Empty directories (about 1% more), leaves that get no files.
    empty = []
    for k in range(max(1, ndirs // 100)):
        parent = r.choice(dirs)
        empty.append(os.path.join(parent, f"empty-{k}") if parent else f"empty-{k}")
    for d in dirs[1:] + empty:
        os.makedirs(os.path.join(a.out, d), exist_ok=True)
    placed = []
    for i, (size, key, text, exe) in enumerate(files):
        d = deep if i == 0 else r.choice(full)
        ext = ".txt" if text else r.choice(EXTS)
        rel = os.path.join(d, f"{r.choice(WORDS)}{i}{ext}")
        write_file(os.path.join(a.out, rel), size, key, text, exe)
        placed.append(rel)
    # Symlinks: relative to a file, relative to a directory, dangling, absolute.
    for k in range(max(1, a.files * 3 // 100)):
        d = r.choice(full)
        link = os.path.join(a.out, d, f"link{k}")
        kind = r.random()
        if kind < 0.6:
            target = os.path.relpath(r.choice(placed), d or ".")
        elif kind < 0.8:
            target = os.path.relpath(r.choice(dirs) or ".", d or ".")
        elif kind < 0.9:
            target = f"missing-{k}"
        else:
            target = f"/nix/store/{'0' * 32}-absent-{k}/bin/tool"
        os.symlink(target, link)
    total = sum(f[0] for f in files)
    print(f"{a.out}: {a.files} files, {total} bytes ({total / (1 << 20):.1f} MiB), "
          f"{len(dirs) + len(empty)} directories ({len(empty)} empty), "
          f"{max(1, a.files * 3 // 100)} symlinks, largest file {max(f[0] for f in files)} bytes, "
          f"{sum(1 for f in files if f[0] > 1 << 20)} files > 1 MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
