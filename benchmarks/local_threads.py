"""Threads per local llama.cpp server, quiet and beside CPU hogs, measured side by side.

llama.cpp's threads wait for each other at a spinning barrier after every layer. On a machine
with more runnable threads than cores, a server's second thread burns its time slices waiting
for the first: the reason LocalLM gives each single-slot server only the idle cores
(``policyopt.lm.local.idle_threads``). This prints, for one and for two threads per server,
the process CPU seconds and wall seconds per antonyms-sized call (24 tokens at most), with no
hog and then beside ``--hogs`` busy Python processes, and whether the answers were equal.

Run: ``.venv/bin/python benchmarks/local_threads.py`` (``--calls 10 --hogs 2``). Say what
else ran on the machine beside it: other work counts as hogs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from policyopt import LocalLM

WORDS = ["hot", "big", "fast", "early", "happy", "light", "open", "rich", "young", "strong"]
HOG = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    sum(range(10000))\n"


def measure(threads: int, calls: int) -> tuple[float, float, list[str]]:
    """CPU seconds and wall seconds per call of one single-slot server with ``threads``."""
    with LocalLM(n_parallel=1, n_threads=threads, max_tokens=24) as lm:
        lm("Warm up.")
        cpu, wall = time.process_time(), time.perf_counter()
        answers = [
            lm(f"Give the opposite of the word below.\n\nInput: {w}\nAnswer:")
            for w in (WORDS * (calls // len(WORDS) + 1))[:calls]
        ]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / calls, wall / calls, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--hogs", type=int, default=2)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load at start {os.getloadavg()[0]:.1f}")
    print("| hogs | threads | CPU s / call | wall s / call |")
    print("|---|---|---|---|")
    for hogs in (0, args.hogs):
        started = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
        try:
            answers = {}
            for threads in (1, 2):
                cpu, wall, answers[threads] = measure(threads, args.calls)
                print(f"| {hogs} | {threads} | {cpu:.2f} | {wall:.2f} |", flush=True)
        finally:
            for hog in started:  # only what this script started, by its handle
                hog.kill()
                hog.wait()
        print(f"answers equal with 1 and 2 threads ({hogs} hogs): {answers[1] == answers[2]}")


if __name__ == "__main__":
    main()
