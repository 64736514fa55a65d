#!/usr/bin/env python3
"""Run one command and report its wall time, CPU time and peak memory as one JSON line.

Peak memory comes two ways. `max_rss_mb` is the kernel's high-water mark of resident pages, which
counts the pages of memory-mapped files a process has touched: a reader of memory-mapped shards
(cxr-train) shows the shards it read there, though they are page cache the kernel reclaims at will
and never more than the machine has. `peak_heap_mb` is the largest anonymous resident memory
(RssAnon: heap, stacks, buffers; what would run a machine out of memory), sampled every 50 ms.

Usage: measure.py OUT.json -- COMMAND [ARG...]   (the command's own output passes through)
"""
import json
import os
import resource
import subprocess
import sys
import time


def rss_anon_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    out, cmd = sys.argv[1], sys.argv[3:]
    start = time.monotonic()
    child = subprocess.Popen(cmd)
    peak_anon = 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        peak_anon = max(peak_anon, rss_anon_kb(child.pid))
        time.sleep(0.05)
    wall = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    record = {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "peak_heap_mb": round(peak_anon / 1024, 1),
        "exit": code,
    }
    with open(out, "w") as f:
        json.dump(record, f)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
