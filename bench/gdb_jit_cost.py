#!/usr/bin/env python3
"""What a debugger adds to GDB JIT registration, in one command:

  bench/gdb_jit_cost.py [--counts 10,100,1000] [--links 10,100,1000]
                        [--shape grouped|merged|copy|old] [--runs 1]

1. Per registration (the jit_debug bench's plain mode, REMJIT_BENCH_STEPS): with N modules
   already registered, the median time (of REMJIT_BENCH_PROBES, default 9) of registering /
   deregistering one more module, the amortized time per module of the modules added since the
   previous count and the slowest of them, and the debugger's CPU time per module over those
   (all its threads, from /proc: steadier than wall times on a busy machine); without a
   debugger, under `gdb -batch -ex run`, and with gdb attached to the waiting bench (`gdb -p`). The modules are C++ -g objects in memory
   windows laid end to end, whose inline function's COMDAT copy only the first one loaded, as
   modules sharing COMDATs are. --shape: grouped (default) registers them as sessions do, in
   groups merged like a binary counter (the amortized column then includes the re-merged
   groups' registrations and their members' deregistrations); merged is one object per module
   (as before grouping); copy is the input object with its load addresses and the sections not
   loaded dropped; old is that copy with the sections not loaded left at address 0, as remjit
   registered objects at first. --runs K runs each K times and prints the median of each cell
   (a busy machine's noise).
2. End to end (--links): `remjit --in-process` (one module), `remjit --in-process --link-each`
   (one module per object, grouped) and `llvm-jitlink-19 --debugger-support` each link main.o
   plus N one-function -g objects, with and without gdb (llvm-jitlink registers one object per
   input); prints the wall times and what gdb adds per object between consecutive counts:
   ((gdb - plain at N2) - (gdb - plain at N1)) / (N2 - N1).

gdb's own cost grows with the number of objfiles it holds (see README, Debugging): expect the
gdb columns of the ungrouped shapes to grow while the plain column stays flat.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def bench_binary():
    out = subprocess.run(
        ["cargo", "bench", "-p", "remjit", "--bench", "jit_debug", "--no-run",
         "--message-format=json"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "jit_debug" \
                and msg.get("executable"):
            return msg["executable"]
    sys.exit("gdb_jit_cost: the jit_debug bench was not built")


def median_table(outs):
    """The bench's tables (from "resident" on) of several runs, each cell their median."""
    tables = [out[out.index("resident"):].split("[Inferior")[0].strip().splitlines()
              for out in outs]
    lines = [tables[0][0]]
    for rows in zip(*(t[1:] for t in tables)):
        cells = [r.split() for r in rows]
        med = [sorted(float(c[i]) for c in cells)[len(cells) // 2] for i in range(len(cells[0]))]
        lines.append(f"{int(med[0]):8}  {med[1]:11.2f}  {med[2]:13.2f}  {med[3]:12.2f}  "
                     f"{med[4]:10.2f}  {med[5]:6.1f}  {int(med[6]):7}  {med[7]:14.0f}")
    return "\n".join(lines)


def per_registration(counts, shape, runs):
    exe = bench_binary()
    env = dict(os.environ, REMJIT_BENCH_STEPS=counts)
    env.setdefault("REMJIT_BENCH_PROBES", "9")
    env["REMJIT_BENCH_SHAPE"] = shape
    modes = [("no debugger", lambda: subprocess.run([exe, "--bench"], env=env,
                                                     capture_output=True, text=True,
                                                     check=True).stdout),
             ("under gdb", lambda: subprocess.run(["gdb", "-batch", "-nx", "-ex", "run",
                                                   "--args", exe, "--bench"], env=env,
                                                  capture_output=True, text=True,
                                                  check=True).stdout),
             ("gdb attached (gdb -p)", lambda: attached(exe, env))]
    for label, run in modes:
        outs = [run() for _ in range(runs)]
        print(f"## per registration ({shape} objects), {label}, median of {runs} runs")
        print(median_table(outs))
        print()


def attached(exe, env):
    """The bench waiting for a debugger (REMJIT_BENCH_WAIT), with gdb attached by pid."""
    bench = subprocess.Popen([exe, "--bench"], env=dict(env, REMJIT_BENCH_WAIT="1"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = bench.stderr.readline()
        if "gdb -p " not in line:
            sys.exit(f"gdb_jit_cost: the bench did not wait for a debugger: {line!r}")
        pid = line.split("gdb -p ")[1].split()[0]
        subprocess.run(["gdb", "-batch", "-nx", "-p", pid, "-ex", "continue"],
                       capture_output=True, check=True)
        return bench.communicate(timeout=3600)[0]
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()


def timed(cmd, cwd):
    t = time.monotonic()
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        sys.exit(f"gdb_jit_cost: {' '.join(cmd[:4])} ... failed ({r.returncode})")
    return time.monotonic() - t


def end_to_end(counts):
    remjit = os.path.join(ROOT, "target", "release", "remjit")
    subprocess.run(["cargo", "build", "--release", "-p", "remjit"], cwd=ROOT, check=True,
                   capture_output=True)
    top = max(counts)
    with tempfile.TemporaryDirectory() as d:
        for i in range(1, top + 1):
            with open(os.path.join(d, f"f_{i}.c"), "w") as f:
                f.write(f"int f_{i}(int x) {{ int y = x * 2; return y + {i}; }}\n")
        for n in counts:
            with open(os.path.join(d, f"main{n}.c"), "w") as f:
                f.write("".join(f"int f_{i}(int);\n" for i in range(1, n + 1)))
                f.write("int main(void) { int s = 0;\n")
                f.write("".join(f"s += f_{i}(1);\n" for i in range(1, n + 1)))
                f.write("return s == 0; }\n")
        sources = sorted(x for x in os.listdir(d) if x.endswith(".c"))
        for k in range(0, len(sources), 200):
            subprocess.run(["gcc", "-g", "-O0", "-c"] + sources[k:k + 200], cwd=d, check=True)
        print("## end to end: main.o + N -g objects, wall seconds")
        print("N      tool          plain    gdb      gdb's cost per object (ms)")
        prev = {}
        for n in counts:
            objs = [f"main{n}.o"] + [f"f_{i}.o" for i in range(1, n + 1)]
            for tool, cmd in [("remjit", [remjit, "--in-process"] + objs),
                              ("remjit each", [remjit, "--in-process", "--link-each"]
                               + objs[1:] + objs[:1]),
                              ("llvm-jitlink", ["llvm-jitlink-19", "--debugger-support"] + objs)]:
                plain = timed(cmd, d)
                under = timed(["gdb", "-batch", "-nx", "-ex", "run", "--args"] + cmd, d)
                extra = under - plain
                per = ""
                if tool in prev:
                    pn, pextra = prev[tool]
                    per = f"{(extra - pextra) / (n - pn) * 1e3:.2f} (N {pn}..{n})"
                prev[tool] = (n, extra)
                print(f"{n:<6} {tool:<13} {plain:<8.3f} {under:<8.3f} {per}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", default="10,100,1000",
                    help="registered objects at which to time one more (default 10,100,1000)")
    ap.add_argument("--links", default="10,100,1000",
                    help="objects per end-to-end link; empty: skip (default 10,100,1000)")
    ap.add_argument("--runs", type=int, default=1,
                    help="runs of each per-registration measurement; cells are medians")
    ap.add_argument("--shape", default="grouped", choices=["grouped", "merged", "copy", "old"],
                    help="the debug objects' shape (default grouped: what sessions register)")
    args = ap.parse_args()
    per_registration(args.counts, args.shape, max(args.runs, 1))
    if args.links:
        end_to_end([int(n) for n in args.links.split(",")])


if __name__ == "__main__":
    main()
