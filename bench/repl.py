#!/usr/bin/env python3
"""Benchmark of `remjit repl` against clang-repl-19 on the same sessions.

  bench/repl.py [--runs N] [--long N] [--recovery N]

Rows:
- a 30-cell C session (includes, globals, a struct, functions, printf) and a 30-cell C++
  session (<iostream>, <vector>, <string>, a class), end to end through a pipe, median of --runs,
  remjit repl (gcc/g++, default executor; from a pipe the cells that arrived compile ahead, in
  units of several cells where they can, while the current one runs; and once with
  --no-compile-ahead) vs clang-repl-19; both must print the same output;
- remjit's own share per cell (everything but the compiler processes: split, generate, link,
  finalize, run, value read-back) at cell 10 and at cell --long of a long C session, from
  `%time on`;
- recovery: a segfault after --recovery earlier cells, the time remjit reports for the restart
  (fresh executor, every cell relinked, statements replayed).
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REMJIT = os.path.join(ROOT, "target", "release", "remjit")

C_SESSION = r"""#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int counter = 0;
int squares[10] = {0};
struct point { int x, y; };
struct point origin = {1, 2};
int add(int a, int b) { return a + b; }
int square(int v) { return v * v; }
for (int i = 0; i < 10; i++) squares[i] = square(i);
printf("%d\n", squares[9]);
counter = add(counter, 5);
printf("counter %d\n", counter);
char buf[64] = "";
snprintf(buf, sizeof buf, "point %d,%d", origin.x, origin.y);
printf("%s\n", buf);
double avg(int *a, int n) { double s = 0; for (int i = 0; i < n; i++) s += a[i]; return s / n; }
printf("%.2f\n", avg(squares, 10));
origin.x += 10;
printf("%d\n", origin.x);
long fact(int n) { return n < 2 ? 1 : n * fact(n - 1); }
printf("%ld\n", fact(10));
char *copy = 0;
copy = strdup("hello");
printf("%zu\n", strlen(copy));
int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
printf("%d\n", fib(20));
counter += fib(10);
printf("%d\n", counter);
printf("done\n");
"""

CXX_SESSION = r"""#include <iostream>
#include <vector>
#include <string>
std::vector<int> v;
std::string name = "remjit";
class Counter { public: int next() { return ++n; } int n = 0; };
Counter c;
for (int i = 0; i < 10; i++) v.push_back(i * i);
std::cout << v.size() << std::endl;
c.next();
std::cout << c.next() << std::endl;
name += " repl";
std::cout << name << std::endl;
int total = 0;
for (int x : v) total += x;
std::cout << total << std::endl;
std::string upper(std::string s) { for (auto &ch : s) ch = toupper(ch); return s; }
std::cout << upper(name) << std::endl;
v.pop_back();
std::cout << v.back() << std::endl;
int twice(int x) { return 2 * x; }
std::cout << twice(21) << std::endl;
std::vector<std::string> words{"a", "b", "c"};
std::cout << words.size() << std::endl;
words.push_back(name);
std::cout << words.back() << std::endl;
c.n = 100;
std::cout << c.next() << std::endl;
total = twice(total);
std::cout << total << std::endl;
"""


def lines(s):
    return [l for l in s.decode(errors="replace").splitlines() if l.strip()]


def run(cmd, text):
    """Runs cmd with text on stdin; (seconds, stdout, stderr)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, input=text.encode(), capture_output=True, timeout=600)
    return time.perf_counter() - t0, p.stdout, p.stderr


def session_row(name, text, remjit_args, clang_args, runs):
    cells = len([l for l in text.splitlines() if l.strip()])
    ours, theirs = [], []
    ref = None
    for _ in range(runs):
        dt, out, err = run([REMJIT, "repl"] + remjit_args, text)
        if ref is None:
            ref = lines(out)
        ours.append(dt)
        if shutil.which("clang-repl-19"):
            dt2, out2, _ = run(["clang-repl-19"] + clang_args, text)
            if lines(out2) != ref:
                print(f"  {name}: clang-repl-19 printed {lines(out2)[:4]}... not {ref[:4]}...",
                      file=sys.stderr)
            theirs.append(dt2)
    a = statistics.median(ours)
    row = f"| {name} ({cells} cells) | {a * 1e3:.0f} ms |"
    if theirs:
        b = statistics.median(theirs)
        row += f" {b * 1e3:.0f} ms | {a / b:.1f}x |"
    else:
        row += " n/a | |"
    return row


TIME = re.compile(r"compile ([\d.]+) ms \(compiler ([\d.]+) ms\), link ([\d.]+) ms, "
                  r"run ([\d.]+) ms; remjit's own ([\d.]+) ms")


def own_share(n, extra):
    """remjit's own ms per cell in a session of n C cells: (median of cells 5..15, of the last
    10 cells, median link, median run)."""
    text = "%time on\n#include <stdio.h>\n"
    for i in range(n):
        text += f"int v{i} = {i};\n" if i % 2 == 0 else f"v{i - 1} += 1;\n"
    # One cell at a time: with compiling ahead, a cell's compile overlaps the one before.
    _, _, err = run([REMJIT, "repl", "--no-compile-ahead"] + extra, text)
    t = [tuple(map(float, m.groups())) for m in TIME.finditer(err.decode())]
    if len(t) < 20:
        raise SystemExit(f"no %time lines: {err.decode()[-400:]}")
    early = statistics.median(x[4] for x in t[5:15])
    late = statistics.median(x[4] for x in t[-10:])
    link = statistics.median(x[2] for x in t)
    runt = statistics.median([x[3] for x in t if x[3] > 0] or [0])
    compiler = statistics.median(x[1] for x in t[-10:])
    return early, late, link, runt, compiler


def recovery(n, extra):
    """The restart remjit reports after a segfault with n earlier cells (ms)."""
    text = "#include <stdio.h>\n"
    for i in range(n - 1):
        text += f"int v{i} = {i};\n" if i % 2 == 0 else f"v{i - 1} += 1;\n"
    text += "*(volatile int *)0 = 1;\nv0\n"
    _, out, err = run([REMJIT, "repl"] + extra, text)
    m = re.search(r"executor restarted; (\d+) cells relinked, (\d+) replayed in (\d+) ms",
                  err.decode())
    if not m or lines(out) != ["(int) 1"]:
        raise SystemExit(f"recovery failed: {out!r} {err.decode()[-400:]}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def main():
    # LLVM's tools that crash (llvm-jitlink-19 fails some runs) do not symbolize their stack,
    # which leaves symbolizer-* files in /tmp; the runs that pass are unaffected.
    os.environ["LLVM_DISABLE_SYMBOLIZATION"] = "1"
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--long", type=int, default=1000)
    ap.add_argument("--recovery", type=int, default=100)
    ap.add_argument("--readme", action="store_true",
                    help="write the tables between the repl-bench markers of README.md")
    args = ap.parse_args()
    if not os.path.exists(REMJIT):
        raise SystemExit("build first: cargo build --release")
    out = []
    say = out.append
    say(f"Measured {time.strftime('%Y-%m-%d')} on {os.uname().nodename} "
        f"({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start), "
        f"median of {args.runs} runs, gcc/g++, default executor (out of process, shared "
        "memory).")
    say("")
    say("| session | remjit repl | clang-repl-19 | ratio |")
    say("| --- | --- | --- | --- |")
    say(session_row("C", C_SESSION, [], ["--Xcc=-xc"], args.runs))
    say(session_row("C, one cell at a time (--no-compile-ahead)", C_SESSION,
                    ["--no-compile-ahead"], ["--Xcc=-xc"], args.runs))
    say(session_row("C++", CXX_SESSION, ["--lang", "c++"], [], args.runs))
    say(session_row("C++, one cell at a time", CXX_SESSION,
                    ["--lang", "c++", "--no-compile-ahead"], [], args.runs))
    say("")
    say("| remjit's own share per cell (all but the compiler) | shared memory | copies |")
    say("| --- | --- | --- |")
    shm = own_share(args.long, [])
    cp = own_share(args.long, ["--no-shared-memory"])
    say(f"| cells 5-15 | {shm[0]:.3f} ms | {cp[0]:.3f} ms |")
    say(f"| last 10 of {args.long} cells | {shm[1]:.3f} ms | {cp[1]:.3f} ms |")
    say(f"| of which link (median) | {shm[2]:.3f} ms | {cp[2]:.3f} ms |")
    say(f"| of which run + value read (median of cells that run) | {shm[3]:.3f} ms | "
        f"{cp[3]:.3f} ms |")
    say(f"| the compiler (gcc), last 10 cells | {shm[4]:.1f} ms | {cp[4]:.1f} ms |")
    say("")
    cells, replayed, ms = recovery(args.recovery, [])
    say(f"Recovery after a segfault with {args.recovery} earlier cells: fresh executor, "
        f"{cells} cells relinked, {replayed} replayed in {ms} ms.")
    text = "\n".join(out)
    print(text)
    if args.readme:
        path = os.path.join(ROOT, "README.md")
        readme = open(path).read()
        a = readme.index("<!-- repl-bench:start -->")
        b = readme.index("<!-- repl-bench:end -->")
        readme = readme[:a] + "<!-- repl-bench:start -->\n" + text + "\n" + readme[b:]
        open(path, "w").write(readme)


if __name__ == "__main__":
    main()
