#!/usr/bin/env python3
"""Side-by-side benchmark of remjit and llvm-jitlink-19 on the same inputs.

  bench/compare.py [--runs N] [--corpus DIR] [--only NAMES] [--readme]

Builds the workloads with bench/corpus/build.sh (hello, sqlite, zlib, the 1000-module chain,
64 MiB of initialised data), then runs every (workload, tool, mode) row interleaved A/B for
--runs rounds and prints a markdown table of median wall time, peak RSS (the process and its
waited-for children, so the executor counts) and the ratio ours/theirs for each pair.
A run that exits non-zero or prints the wrong output shows as FAILED, never as fast.
With --readme the table replaces the one between the benchmark markers in README.md.
"""
import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LIB = "/usr/lib/x86_64-linux-gnu"


def run_once(cmd, cwd, expect):
    """Runs cmd; returns (seconds, peak RSS in KiB, ok, note)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=300)
    dt = time.perf_counter() - t0
    # Peak RSS of the child and the descendants it waited for (the executor).
    ru = None
    try:
        _, _, ru = os.wait4(p.pid, 0)
    except ChildProcessError:
        pass
    rss = ru.ru_maxrss if ru else 0
    if p.returncode != 0:
        return dt, rss, False, f"exit {p.returncode}: {err.decode(errors='replace').strip()[-160:]}"
    if expect is not None and out != expect:
        return dt, rss, False, "wrong output"
    return dt, rss, True, ""


def peak_rss(cmd, cwd):
    """Peak RSS (KiB) of cmd and its waited-for children, measured in a fresh process."""
    code = ("import os,resource,subprocess,sys;"
            "r=subprocess.run(sys.argv[2:],cwd=sys.argv[1],stdout=subprocess.DEVNULL,"
            "stderr=subprocess.DEVNULL);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r.returncode==0 else -1)")
    r = subprocess.run([sys.executable, "-c", code, cwd] + cmd, capture_output=True, text=True)
    try:
        return int(r.stdout.strip())
    except ValueError:
        return -1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--corpus", default=os.path.join(ROOT, "target", "bench-corpus"))
    ap.add_argument("--only", default="")
    ap.add_argument("--readme", action="store_true")
    args = ap.parse_args()

    remjit = os.path.join(ROOT, "target", "release", "remjit")
    executor = os.path.join(ROOT, "target", "release", "remjit-executor")
    if not os.path.exists(remjit):
        sys.exit("build first: cargo build --release")
    if not os.path.exists(os.path.join(args.corpus, "cases.tsv")):
        subprocess.run([os.path.join(HERE, "corpus", "build.sh"), args.corpus], check=True,
                       stdout=subprocess.DEVNULL)
    cases = {}
    for line in open(os.path.join(args.corpus, "cases.tsv")):
        name, inputs, expect = line.rstrip("\n").split("\t")
        cases[name] = (inputs.split(), open(os.path.join(args.corpus, expect), "rb").read())

    llvm = shutil.which("llvm-jitlink-19")
    llvm_exec = shutil.which("llvm-jitlink-executor-19")

    # (row name, workload, our flags, their flags, compare output?)
    rows = [
        ("hello, out of process, shared memory", "hello-pie", [],
         ["--oop-executor=" + str(llvm_exec), "--use-shared-memory"], True),
        ("hello, out of process, copying", "hello-pie", ["--oop-executor", "--no-shared-memory"],
         ["--oop-executor=" + str(llvm_exec)], True),
        ("hello, in process", "hello-pie", ["--in-process"], [], True),
        ("sqlite, link only (--noexec), in process", "sqlite-pie", ["--in-process", "--noexec"],
         ["--noexec"], False),
        ("sqlite, run, out of process, shared memory", "sqlite-pie", [],
         ["--oop-executor=" + str(llvm_exec), "--use-shared-memory"], True),
        ("zlib, run, out of process, shared memory", "zlib-pie", [],
         ["--oop-executor=" + str(llvm_exec), "--use-shared-memory"], True),
        ("64 MiB data, out of process, shared memory", "bigdata", [],
         ["--oop-executor=" + str(llvm_exec), "--use-shared-memory"], True),
        ("64 MiB data, in process", "bigdata", ["--in-process"], [], True),
        ("1000-module chain, ours out of process shm vs theirs in process", "chain", [], [], True),
    ]
    if args.only:
        keep = args.only.split(",")
        rows = [r for r in rows if any(k in r[0] or k == r[1] for k in keep)]

    results = []
    for title, case, ours, theirs, check in rows:
        inputs, expect = cases[case]
        ours_cmd = [remjit] + ours + inputs
        # llvm-jitlink passes argc = 0 to main, so hello's first line differs: compare exit only.
        theirs_cmd = [llvm] + theirs + inputs if llvm else None
        theirs_expect = expect if (check and not case.startswith("hello")) else None
        a, b = [], []
        a_fail = b_fail = ""
        for _ in range(args.runs):
            for who in ("ours", "theirs"):
                if who == "ours":
                    dt, _, ok, note = run_once(ours_cmd, args.corpus, expect if check else None)
                    (a.append(dt) if ok else None)
                    a_fail = a_fail or ("" if ok else note)
                elif theirs_cmd:
                    dt, _, ok, note = run_once(theirs_cmd, args.corpus, theirs_expect)
                    (b.append(dt) if ok else None)
                    b_fail = b_fail or ("" if ok else note)
        ra = peak_rss(ours_cmd, args.corpus)
        rb = peak_rss(theirs_cmd, args.corpus) if theirs_cmd else -1
        results.append((title, a, b, a_fail, b_fail, ra, rb))
        fmt = lambda xs, f: f"{statistics.median(xs)*1e3:.1f} ms" if xs and not f else "FAILED"
        print(f"{title}: ours {fmt(a, a_fail)}  theirs {fmt(b, b_fail)}", file=sys.stderr)

    lines = [
        f"Measured {datetime.date.today()} on {platform.node()} ({os.cpu_count()} cores, "
        f"{platform.release()}), median of {args.runs} interleaved runs each; "
        f"theirs = llvm-jitlink-19 in the matching mode.",
        "",
        "| workload | remjit | llvm-jitlink-19 | time ratio | peak RSS ours / theirs |",
        "|---|---|---|---|---|",
    ]
    for title, a, b, a_fail, b_fail, ra, rb in results:
        def cell(xs, fail):
            if fail or not xs:
                why = " ".join(fail.split())[-70:].replace("|", "/")
                return "FAILED" + (f" ({why})" if why else "")
            return f"{statistics.median(xs)*1e3:.1f} ms"
        ratio = (f"{statistics.median(a)/statistics.median(b):.2f}"
                 if a and b and not a_fail and not b_fail else "n/a")
        rss = (f"{ra/1024:.0f} MB / {rb/1024:.0f} MB = {ra/rb:.2f}" if ra > 0 and rb > 0 else
               (f"{ra/1024:.0f} MB / -" if ra > 0 else "-"))
        lines.append(f"| {title} | {cell(a, a_fail)} | {cell(b, b_fail)} | {ratio} | {rss} |")
    table = "\n".join(lines)
    print(table)
    if args.readme:
        path = os.path.join(ROOT, "README.md")
        text = open(path).read()
        start, end = "<!-- bench:start -->", "<!-- bench:end -->"
        if start in text and end in text:
            pre, rest = text.split(start, 1)
            _, post = rest.split(end, 1)
            open(path, "w").write(pre + start + "\n" + table + "\n" + end + post)
        else:
            print("README.md has no benchmark markers; not updated", file=sys.stderr)


if __name__ == "__main__":
    main()
