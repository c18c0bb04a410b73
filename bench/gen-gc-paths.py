#!/usr/bin/env python3
"""Input of daemon.sh's gc section: `nix-store --export` streams of N small distinct paths.

    gen-gc-paths.py EXPORT N [EXPORT N]...

Writes to each EXPORT the export of the paths gc-00000001 ... gc-N, path i a regular file holding
"gc bench path i\n", each named as `nix-store --add` of such a file would name it (the recursive
sha256 "source" path, /nix/store/HASH-gc-0000000i), no references, no deriver, no signature; so
`nix-store --import < EXPORT` makes the same paths, NAR hashes and sizes as `nix-store --add`.
"""

import hashlib
import struct
import sys

STORE = "/nix/store"
B32 = "0123456789abcdfghijklmnpqrsvwxyz"
EXPORT_MAGIC = 0x4558494E


def nix_str(b):
    return struct.pack("<Q", len(b)) + b + b"\0" * (-len(b) % 8)


def nar_regular(contents):
    return b"".join(nix_str(s) for s in (b"nix-archive-1", b"(", b"type", b"regular", b"contents")) + \
        nix_str(contents) + nix_str(b")")


def base32(h):
    n = (len(h) * 8 - 1) // 5 + 1
    out = []
    for i in range(n - 1, -1, -1):
        b = i * 5
        j, k = divmod(b, 8)
        c = h[j] >> k
        if j + 1 < len(h):
            c |= h[j + 1] << (8 - k)
        out.append(B32[c & 0x1F])
    return "".join(out)


def source_path(nar_sha256, name):
    # makeFixedOutputPath(NixArchive, sha256, no references) = makeStorePath("source", ...)
    fp = f"source:sha256:{nar_sha256.hex()}:{STORE}:{name}".encode()
    h = hashlib.sha256(fp).digest()
    c = bytearray(20)
    for i, x in enumerate(h):
        c[i % 20] ^= x
    return f"{STORE}/{base32(bytes(c))}-{name}"


def main():
    exports = [(sys.argv[i], int(sys.argv[i + 1])) for i in range(1, len(sys.argv) - 1, 2)]
    if not exports or len(sys.argv) % 2 != 1:
        sys.exit("usage: gen-gc-paths.py EXPORT N [EXPORT N]...")
    outs = [(open(e, "wb"), n) for e, n in exports]
    for i in range(1, max(n for _, n in exports) + 1):
        name = f"gc-{i:08d}"
        nar = nar_regular(f"gc bench path {i}\n".encode())
        path = source_path(hashlib.sha256(nar).digest(), name)
        entry = struct.pack("<Q", 1) + nar + struct.pack("<Q", EXPORT_MAGIC) + nix_str(path.encode()) + \
            struct.pack("<Q", 0) + nix_str(b"") + struct.pack("<Q", 0)
        for out, n in outs:
            if i <= n:
                out.write(entry)
    for out, _ in outs:
        out.write(struct.pack("<Q", 0))
        out.close()


if __name__ == "__main__":
    main()
