#!/usr/bin/env python3
"""Side-by-side benchmark of remjit and llvm-jitlink-19 on the same inputs.

  bench/compare.py [--runs N] [--corpus DIR] [--only NAMES] [--readme]

Builds the workloads with bench/corpus/build.sh (hello, sqlite, zlib, the 1000-module chain,
64 MiB of initialised data), then runs every (workload, tool, mode) row interleaved A/B for
--runs rounds and prints a markdown table of median wall time, peak RSS (the sum of the
processes' own peaks, controller + executor, each reported at exit by bench/hwm.c preloaded)
and the ratio ours/theirs for each pair (one row's theirs is mold: the system linker line of
gcc -static run as mold alone, when the Debian package mold is installed); then the Session
API benchmarks (cargo bench --bench incremental: per-module latency to 10,000 modules, a
REPL loop) unless --no-incremental.
A run of remjit that exits non-zero or prints the wrong output makes its row FAILED, never
fast; llvm-jitlink-19's failed runs are counted in its cell and its passing runs timed.
With --readme the table replaces the one between the benchmark markers in README.md.
"""
import argparse
import datetime
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LIB = "/usr/lib/x86_64-linux-gnu"


def run_once(cmd, cwd, expect):
    """Runs cmd; returns (seconds, ok, note)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=300)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        return dt, False, f"exit {p.returncode}: {err.decode(errors='replace').strip()[-160:]}"
    if expect is not None and out != expect:
        return dt, False, "wrong output"
    return dt, True, ""


def hwm_library():
    """Builds bench/hwm.c: a preloaded destructor that reports each process's VmHWM."""
    out = os.path.join(ROOT, "target", "bench-hwm", "libhwm.so")
    src = os.path.join(HERE, "hwm.c")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", src, "-o", out], check=True)
    return out


def peak_rss(cmd, cwd, procs, tries=3):
    """Peak RSS (KiB) of cmd: the SUM of each process's own peak (controller + executor).

    Every process of the run (the controller and the executor it starts, inherited through
    LD_PRELOAD) reports its VmHWM from a destructor as it exits (bench/hwm.c). A process that
    dies of a signal reports nothing (llvm-jitlink-executor-19 sometimes crashes as it shuts
    down): up to `tries` runs, then the best partial sum. Returns (KiB, processes reported), or
    (-1, 0) when the run fails."""
    best = (-1, 0)
    for _ in range(tries):
        fd, path = tempfile.mkstemp(prefix="remjit-hwm-")
        os.close(fd)
        try:
            env = dict(os.environ, LD_PRELOAD=hwm_library(), REMJIT_HWM_FILE=path)
            r = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            # An executor may end just after its controller: give it up to two seconds.
            deadline = time.monotonic() + 2
            while True:
                reports = [int(line.split()[1]) for line in open(path) if line.strip()]
                if len(reports) >= procs or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        finally:
            os.unlink(path)
        if r.returncode == 0 and len(reports) >= best[1]:
            best = (sum(reports), len(reports))
        if r.returncode == 0 and len(reports) == procs:
            break
    if best[1] != procs:
        print(f"peak RSS of {cmd[0]}: {best[1]} of {procs} processes reported", file=sys.stderr)
    return best


def rss_cell(kib, reported, procs):
    """"12 MB", or "≥ 12 MB (1 of 2 processes)" when a process did not report."""
    if kib < 0:
        return "-"
    text = f"{kib/1024:.0f} MB"
    return text if reported == procs else f"≥ {text} ({reported} of {procs} processes)"


def mold_command(inputs, out):
    """mold's command line that links `inputs` (and libm) into the static executable `out`:
    the system linker line gcc -static would run, given to mold itself (no gcc driver or
    collect2 in the time). None when mold or the gcc line is not there."""
    mold = shutil.which("mold")
    if not mold:
        return None
    r = subprocess.run(["gcc", "-static", "-fuse-ld=mold", "-###"] + inputs + ["-lm", "-o", out],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = next((l for l in r.stderr.splitlines() if "collect2" in l), None)
    if line is None:
        return None
    args = shlex.split(line)[1:]
    skip = False
    kept = []
    for a in args:
        if skip:
            skip = False
        elif a == "-plugin":
            skip = True
        elif not (a.startswith("-plugin-opt") or a.startswith("-fuse-ld")):
            kept.append(a)
    return [mold] + kept


def incremental_table():
    """The Session API benchmarks (crates/remjit/benches/incremental.rs) as markdown."""
    r = subprocess.run(["nice", "cargo", "bench", "-q", "-p", "remjit", "--bench", "incremental",
                        "--", "--markdown"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        return "Incremental linking benchmark FAILED (cargo bench -p remjit --bench incremental)."
    return r.stdout.strip()


def main():
    # LLVM's tools that crash (llvm-jitlink-19 fails some runs) do not symbolize their stack,
    # which leaves symbolizer-* files in /tmp; the runs that pass are unaffected.
    os.environ["LLVM_DISABLE_SYMBOLIZATION"] = "1"
    # Killed by timeout or kill (SIGTERM, SIGHUP), still run the `finally` blocks and the
    # temporary directories' cleanup: no remjit-hwm-* or remjit-compare-* left in /tmp.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--corpus", default=os.path.join(ROOT, "target", "bench-corpus"))
    ap.add_argument("--only", default="")
    ap.add_argument("--readme", action="store_true")
    ap.add_argument("--no-incremental", action="store_true",
                    help="skip the Session API benchmarks (cargo bench --bench incremental)")
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

    # (row name, workload, our flags, their flags, compare output?); processes are counted from
    # the flags: in process 1, else 2 (controller + executor).
    rows = [
        ("hello, out of process, shared memory", "hello-pie", [],
         ["--oop-executor=" + str(llvm_exec), "--use-shared-memory"], True),
        ("hello, out of process, copying", "hello-pie", ["--oop-executor", "--no-shared-memory"],
         ["--oop-executor=" + str(llvm_exec)], True),
        ("hello, in process", "hello-pie", ["--in-process"], [], True),
        ("sqlite, link only (--noexec), in process", "sqlite-pie", ["--in-process", "--noexec"],
         ["--noexec"], False),
        ("sqlite, link only: ours --noexec in process vs theirs = mold linking the same objects "
         "into a static executable", "sqlite-pie", ["--in-process", "--noexec"], "mold", False),
        ("sqlite, run, out of process, shared memory", "sqlite-pie", [],
         ["--oop-executor=" + str(llvm_exec), "--use-shared-memory"], True),
        ("zlib, run, out of process, shared memory", "zlib-pie", [],
         ["--oop-executor=" + str(llvm_exec), "--use-shared-memory"], True),
        ("64 MiB data, out of process, shared memory", "bigdata", [],
         ["--oop-executor=" + str(llvm_exec), "--use-shared-memory"], True),
        ("64 MiB data, in process", "bigdata", ["--in-process"], [], True),
        ("1000-object chain, one link, ours out of process shm vs theirs in process (one graph "
         "per object)", "chain", [], [], True),
        ("1000-object chain, one module per object (--link-each), in process", "chain",
         ["--in-process", "--link-each"], [], True),
        # llvm-jitlink-19 out of process fails on this chain (FD-transport disconnected).
        ("1000-object chain, one module per object (--link-each), ours out of process shm vs "
         "theirs in process", "chain", ["--link-each"], [], True),
    ]
    if args.only:
        keep = args.only.split(",")
        rows = [r for r in rows if any(k in r[0] or k == r[1] for k in keep)]

    load_before = os.getloadavg()[0]
    results = []
    scratch = tempfile.TemporaryDirectory(prefix="remjit-compare-")
    for title, case, ours, theirs, check in rows:
        inputs, expect = cases[case]
        ours_cmd = [remjit] + ours + inputs
        # llvm-jitlink passes argc = 0 to main, so hello's first line differs: compare exit only.
        theirs_cmd = [llvm] + theirs + inputs if llvm and theirs != "mold" else None
        theirs_expect = expect if (check and not case.startswith("hello")) else None
        if theirs == "mold":
            exe = os.path.join(scratch.name, case)
            theirs_cmd = mold_command(inputs, exe)
            theirs = []
        a, b = [], []
        a_fail = b_fail = ""
        b_failed = 0
        for _ in range(args.runs):
            for who in ("ours", "theirs"):
                if who == "ours":
                    dt, ok, note = run_once(ours_cmd, args.corpus, expect if check else None)
                    (a.append(dt) if ok else None)
                    a_fail = a_fail or ("" if ok else note)
                elif theirs_cmd:
                    dt, ok, note = run_once(theirs_cmd, args.corpus, theirs_expect)
                    (b.append(dt) if ok else None)
                    b_fail = b_fail or ("" if ok else note)
                    b_failed += 0 if ok else 1
        pa = 1 if "--in-process" in ours else 2
        pb = 2 if any(f.startswith("--oop-executor") for f in theirs) else 1
        ra = peak_rss(ours_cmd, args.corpus, pa) + (pa,)
        # mold ends without running destructors: bench/hwm.c cannot report its peak.
        measurable = theirs_cmd and theirs_cmd[0] == llvm
        rb = peak_rss(theirs_cmd, args.corpus, pb) + (pb,) if measurable else (-1, 0, pb)
        # llvm-jitlink-19 with its own executor fails some runs of a case (its executor dies
        # as the session ends) and passes others: the passing runs are its time, and the
        # failures are counted in the table. Ours fails the row on any failure.
        if b and b_fail:
            b_fail = ""
            b_note = f" ({b_failed} of {args.runs} runs failed)"
        else:
            b_note = ""
        results.append((title, a, b, a_fail, b_fail, ra, rb, b_note))
        fmt = lambda xs, f: f"{statistics.median(xs)*1e3:.1f} ms" if xs and not f else "FAILED"
        print(f"{title}: ours {fmt(a, a_fail)}  theirs {fmt(b, b_fail)}", file=sys.stderr)

    lines = [
        f"Measured {datetime.date.today()} on {platform.node()} ({os.cpu_count()} cores, "
        f"{platform.release()}, load average {load_before:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end of these rows), median of {args.runs} "
        f"interleaved runs each; "
        f"theirs = llvm-jitlink-19 in the matching mode (or mold where named). Peak RSS: the sum of each process's "
        f"own peak (VmHWM at exit, controller + executor; bench/hwm.c).",
        "",
        "| workload | remjit | llvm-jitlink-19 | time ratio | peak RSS ours / theirs |",
        "|---|---|---|---|---|",
    ]
    for title, a, b, a_fail, b_fail, ra, rb, b_note in results:
        def cell(xs, fail):
            if fail or not xs:
                why = " ".join(fail.split())[-70:].replace("|", "/")
                return "FAILED" + (f" ({why})" if why else "")
            return f"{statistics.median(xs)*1e3:.1f} ms"
        ratio = (f"{statistics.median(a)/statistics.median(b):.2f}"
                 if a and b and not a_fail and not b_fail else "n/a")
        rss = f"{rss_cell(*ra)} / {rss_cell(*rb)}"
        if ra[0] > 0 and rb[0] > 0 and ra[1] == ra[2] and rb[1] == rb[2]:
            rss += f" = {ra[0]/rb[0]:.2f}"
        lines.append(
            f"| {title} | {cell(a, a_fail)} | {cell(b, b_fail)}{b_note} | {ratio} | {rss} |")
    if not args.no_incremental:
        lines += ["", incremental_table()]
    scratch.cleanup()
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
