#!/usr/bin/env python3
"""Per-build sandbox set-up and what follows the builder, measured the same way for both daemons
from the kernel's scheduler events (`perf record -e sched:sched_process_fork,
sched:sched_process_exec,sched:sched_process_exit -a`), read as `perf script` text on stdin.

    perf script -F comm,pid,tid,time,event,trace -i FILE | sched-builds.py DAEMON_PID BUILDER

For every exec of BUILDER (e.g. /usr/bin/sh) by a process descending from DAEMON_PID:

- the build's start is the fork, by the process that serves the client's connection, of the
  child whose descendants become the builder (nix-daemon: the connection's worker process
  forks it; ours: a daemon thread starts its helper). The connection's process is the deepest
  ancestor that every builder has in common;
- set-up is the time from that start to the builder's exec: namespaces, the root, mounts and
  the second walls, whatever each daemon does before the builder runs;
- "after" is the time from the builder's exit to the next build's start. With max-jobs 1 it
  holds the tear-down, the outputs' registration and the scheduling of the next build.

Prints `setup_ms MEDIAN`, `after_ms MEDIAN` and `builds N` lines. No third-party modules.
"""

import re
import statistics
import sys

EVENT = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s+(?P<time>\d+\.\d+):\s+"
                   r"sched:(?P<event>sched_process_\w+):\s+(?P<trace>.*)$")
FIELD = re.compile(r"(\w+)=(\S+)")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    daemon, builder = int(sys.argv[1]), sys.argv[2]
    # Thread or process id -> (its process id, the parent's thread id, fork time).
    born = {}
    tgid = {}
    execs = []  # (time, pid)
    exits = {}  # pid -> time
    for line in sys.stdin:
        m = EVENT.match(line)
        if not m:
            continue
        time = float(m["time"])
        fields = dict(FIELD.findall(m["trace"]))
        tgid[int(m["tid"])] = int(m["pid"])
        if m["event"] == "sched_process_fork":
            child = int(fields["child_pid"])
            born[child] = (int(m["tid"]), time)
        elif m["event"] == "sched_process_exec":
            if fields.get("filename") == builder:
                execs.append((time, int(fields["pid"])))
        elif m["event"] == "sched_process_exit":
            exits.setdefault(int(fields["pid"]), time)

    def process_of(tid):
        return tgid.get(tid, tid)

    def chain(pid):
        """The builder's ancestors, nearest first, up to the daemon (None if not below it)."""
        out = [pid]
        seen = {pid}
        while True:
            parent = born.get(out[-1])
            if parent is None:
                return None
            up = parent[0]
            if process_of(up) == daemon:
                out.append(daemon)
                return out
            if up in seen:
                return None
            seen.add(up)
            out.append(up)

    builds = []
    for time, pid in sorted(execs):
        c = chain(pid)
        if c is not None:
            builds.append((time, pid, c))
    if not builds:
        sys.exit("no builder exec below the daemon in the events")
    # The connection's process: the deepest ancestor all chains share (by process).
    shared = None
    for _, _, c in builds:
        procs = [process_of(p) for p in reversed(c)]  # daemon first
        if shared is None:
            shared = procs
        else:
            n = 0
            while n < min(len(shared), len(procs)) and shared[n] == procs[n]:
                n += 1
            shared = shared[:n]
    server = shared[-1]
    setups, starts, ends = [], [], []
    for time, pid, c in builds:
        procs = [process_of(p) for p in c]
        # The ancestor just below the connection's process.
        top = c[procs.index(server) - 1]
        start = born[top][1]
        setups.append((time - start) * 1000)
        starts.append(start)
        ends.append(exits.get(pid))
    after = [
        (starts[i + 1] - ends[i]) * 1000
        for i in range(len(builds) - 1)
        if ends[i] is not None and starts[i + 1] > ends[i]
    ]
    print(f"builds {len(builds)}")
    print(f"setup_ms {statistics.median(setups):.2f}")
    if after:
        print(f"after_ms {statistics.median(after):.2f}")


if __name__ == "__main__":
    main()
