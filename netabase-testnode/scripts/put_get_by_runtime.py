#!/usr/bin/env python3
"""Put and get latency of the node on each runtime, side by side.

Per runtime and round: three `netabase-test-node` processes on 127.0.0.1 (A; B joined through
A; C joined after the puts), N puts on A (each confirmed by B) and N gets on C (each answered
by a peer, not from C's own store), one request at a time; prints the median latencies and
the total per round. Rounds alternate between the runtimes so that a change in machine load
hits all of them.

    cargo build --release -p netabase-testnode
    python3 netabase-testnode/scripts/put_get_by_runtime.py [N] [ROUNDS]

BIN overrides the test node binary (default: target/release/netabase-test-node).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("BIN", os.path.join(ROOT, "target", "release", "netabase-test-node"))
RUNTIMES = ["tokio", "async-std", "smol"]


class Node:
    def __init__(self, runtime, extra=()):
        self.dir = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(
            [BIN, "--data-dir", self.dir.name, "--runtime", runtime,
             "--lookup-patience-ms", "0", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1)
        self.req = 0
        while True:
            line = json.loads(self.proc.stdout.readline())
            if line.get("type") == "ready":
                self.addr = f"{line['listen_addresses'][0]}/p2p/{line['peer_id']}"
                return

    def call(self, cmd):
        self.req += 1
        self.proc.stdin.write(json.dumps({**cmd, "req": self.req}) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the node exited")
            out = json.loads(line)
            if out.get("type") == "reply" and out.get("req") == self.req:
                if not out["ok"]:
                    raise RuntimeError(out)
                return out["result"]

    def stop(self):
        self.call({"cmd": "shutdown"})
        self.proc.wait()
        self.dir.cleanup()


def timed(node, cmd):
    start = time.perf_counter()
    result = node.call(cmd)
    return time.perf_counter() - start, result


def round_on(runtime, n):
    a = Node(runtime)
    b = Node(runtime, ["--bootstrap", a.addr])
    b.call({"cmd": "bootstrap"})
    puts, gets = [], []
    for i in range(n):
        took, put = timed(a, {"cmd": "put", "message": {"id": i, "author": "a", "text": "x" * 100}})
        assert put["quorum_error"] is None, put
        puts.append(took)
    c = Node(runtime, ["--bootstrap", a.addr])
    c.call({"cmd": "bootstrap"})
    for i in range(n):
        took, found = timed(c, {"cmd": "get", "id": i})
        assert found is not None and found["source"] is not None, found
        gets.append(took)
    for node in (a, b, c):
        node.stop()
    return statistics.median(puts) * 1e3, statistics.median(gets) * 1e3, sum(puts) + sum(gets)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    results = {rt: [] for rt in RUNTIMES}
    for _ in range(rounds):
        for rt in RUNTIMES:
            results[rt].append(round_on(rt, n))
    base_put = statistics.median(r[0] for r in results["tokio"])
    base_get = statistics.median(r[1] for r in results["tokio"])
    print(f"{n} puts and {n} gets per round, {rounds} rounds (medians in ms; ratio to tokio)")
    for rt, rs in results.items():
        put = statistics.median(r[0] for r in rs)
        get = statistics.median(r[1] for r in rs)
        print(f"{rt:10} put {put:6.3f} ({put / base_put:4.2f})  get {get:6.3f} ({get / base_get:4.2f})"
              f"  rounds: " + ", ".join(f"{r[0]:.2f}/{r[1]:.2f}" for r in rs))


if __name__ == "__main__":
    main()
