#!/usr/bin/env python3
"""Mutation campaign against remjit's linker.

Builds real objects (gcc C objects in several code models, C++ with exceptions and COMDAT
groups, members of Debian's libsqlite3.a, small archives with and without a symbol index),
mutates them (ELF header, section headers, symbols, relocations, group words, section bytes,
archive headers and symbol index; fields set to boundary values 0, -1, 2^63, size+1, ...) and
runs `remjit --noexec` on each mutant in process and out of process (the default mode), with a
timeout. Every outcome is classified:

  ok       exit 0
  error    exit 1 with `remjit: error:` on stderr
  panic    "panicked" on stderr or exit 101
  signal   killed by a signal
  timeout  still running after --timeout seconds
  silent   exit 0 although a relocation was moved outside its section (a silent wrong link)
  other    anything else (exit 1 without the error line, other codes)

Mutants of the last four kinds are saved in WORK/findings. Exit status 1 when any was found.

  python3 fuzz/mutate.py --count 10000                  # 10,000 mutants, each in both modes
  python3 fuzz/mutate.py --export-corpus fuzz/corpus/link   # seeds for `cargo fuzz run link`
"""

import argparse
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQLITE = "/usr/lib/x86_64-linux-gnu/libsqlite3.a"
SQLITE_MEMBERS = ["hash.o", "utf.o", "random.o", "bitvec.o", "malloc.o", "printf.o", "json.o"]

C_SOURCES = {
    "hello.c": '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n',
    "data.c": r"""
#include <stdio.h>
#include <string.h>
static int table[64] = {1, 2, 3};
int counter;
__thread int per_thread = 7;
static __thread char tbuf[32];
const char *names[] = {"alpha", "beta", "gamma"};
static int add(int a, int b) { return a + b; }
int (*op)(int, int) = add;
__attribute__((constructor)) static void init(void) { counter = 3; }
__attribute__((weak)) int maybe(void) { return 1; }
int main(int argc, char **argv) {
    strcpy(tbuf, names[argc % 3]);
    printf("%s %d %d %d\n", tbuf, op(table[1], counter), per_thread, maybe());
    return 0;
}
""",
    "ifunc.c": r"""
static int impl(void) { return 42; }
static void *resolve_get(void) { return (void *)impl; }
int get(void) __attribute__((ifunc("resolve_get")));
int main(void) { return get() != 42; }
""",
    "lib_f.c": "int g(int);\nint f(int x) { return g(x) + 1; }\n",
    "lib_g.c": "static int k = 5;\nint g(int x) { return x * k; }\nint helper(void) { return 2; }\n",
    "use_f.c": "#include <stdio.h>\nint f(int);\nint main(void) { printf(\"%d\\n\", f(2)); return 0; }\n",
}

CXX_SOURCE = r"""
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>
template <typename T> struct Box { T v; T get() const { return v; } };
struct Global { Global() { std::puts("ctor"); } ~Global() { std::puts("dtor"); } } global;
static int thrower(int x) {
    if (x > 2) throw std::runtime_error("too big: " + std::to_string(x));
    return x;
}
int main() {
    std::vector<Box<int>> v{{1}, {2}, {3}};
    int sum = 0;
    for (auto &b : v) {
        try { sum += thrower(b.get() + 1); } catch (const std::exception &e) { std::puts(e.what()); }
    }
    std::printf("%d\n", sum);
    return 0;
}
"""

C_VARIANTS = [
    ("O2", ["-O2"]),
    ("O0", ["-O0"]),
    ("pic", ["-O2", "-fPIC"]),
    ("nopie", ["-O2", "-fno-pie"]),
    ("large", ["-O2", "-mcmodel=large", "-fno-pie"]),
    ("common", ["-O1", "-fcommon", "-fno-pie"]),
]


class Seed:
    """Inputs of one link; `target` is the index of the input that gets mutated."""

    def __init__(self, name, inputs, target, extra=()):
        self.name, self.inputs, self.target, self.extra = name, inputs, target, list(extra)
        self.data = open(inputs[target], "rb").read()
        self.fields = fields_of(self.data)


def run(cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def build_seeds(work):
    src = os.path.join(work, "src")
    os.makedirs(src, exist_ok=True)
    for name, text in C_SOURCES.items():
        with open(os.path.join(src, name), "w") as f:
            f.write(text)
    with open(os.path.join(src, "exc.cc"), "w") as f:
        f.write(CXX_SOURCE)
    seeds = []
    obj = lambda n: os.path.join(src, n)
    for tag, flags in C_VARIANTS:
        for base in ["hello", "data", "ifunc"]:
            o = obj(f"{base}-{tag}.o")
            run(["gcc", *flags, "-c", obj(base + ".c"), "-o", o])
            seeds.append(Seed(f"{base}-{tag}", [o], 0))
    for tag, flags in [("O1", ["-O1"]), ("pic", ["-O2", "-fPIC"])]:
        o = obj(f"exc-{tag}.o")
        run(["g++", *flags, "-c", obj("exc.cc"), "-o", o])
        seeds.append(Seed(f"exc-{tag}", [o], 0, ["-lstdc++"]))
    # Archives: with a symbol index and without one (`ar S`), used by an object needing `f`.
    for n in ["lib_f", "lib_g", "use_f"]:
        run(["gcc", "-O2", "-c", obj(n + ".c"), "-o", obj(n + ".o")])
    for tag, mode in [("index", "rcs"), ("noindex", "rcS")]:
        a = obj(f"lib-{tag}.a")
        if os.path.exists(a):
            os.unlink(a)
        run(["ar", mode, a, obj("lib_f.o"), obj("lib_g.o")])
        seeds.append(Seed(f"archive-{tag}", [obj("use_f.o"), a], 1))
    # Debian's sqlite objects, linked alone (undefined names resolve to 0).
    if os.path.exists(SQLITE):
        sq = os.path.join(work, "sqlite")
        os.makedirs(sq, exist_ok=True)
        run(["ar", "x", SQLITE, *SQLITE_MEMBERS], cwd=sq)
        for m in SQLITE_MEMBERS:
            seeds.append(Seed(f"sqlite-{m[:-2]}", [os.path.join(sq, m)], 0, ["--phony-externals"]))
    else:
        print(f"warning: {SQLITE} missing (apt-get install libsqlite3-dev)", file=sys.stderr)
    return seeds


# --- Where the fields are -------------------------------------------------------------------

def elf_fields(data, base=0):
    """(offset, width, kind, related size) of every interesting field of an ELF64 object at
    `base` in `data`."""
    out = []
    if len(data) < base + 64 or data[base:base + 4] != b"\x7fELF":
        return out
    for off, w in [(4, 1), (5, 1), (16, 2), (18, 2), (20, 4), (24, 8), (32, 8), (40, 8),
                   (48, 4), (52, 2), (54, 2), (56, 2), (58, 2), (60, 2), (62, 2)]:
        out.append((base + off, w, "ehdr", 0))
    shoff, = struct.unpack_from("<Q", data, base + 40)
    shnum, = struct.unpack_from("<H", data, base + 60)
    if base + shoff + shnum * 64 > len(data):
        return out
    for i in range(shnum):
        sh = base + shoff + i * 64
        sh_type, = struct.unpack_from("<I", data, sh + 4)
        off, size = struct.unpack_from("<QQ", data, sh + 24)
        for o, w in [(0, 4), (4, 4), (8, 8), (24, 8), (32, 8), (40, 4), (44, 4), (48, 8), (56, 8)]:
            out.append((sh + o, w, "shdr", size))
        if base + off + size > len(data) or sh_type == 8:
            continue
        start = base + off
        if sh_type == 2:  # SHT_SYMTAB
            for s in range(start, start + size - 23, 24):
                for o, w in [(0, 4), (4, 1), (5, 1), (6, 2), (8, 8), (16, 8)]:
                    out.append((s + o, w, "sym", 0))
        elif sh_type == 4:  # SHT_RELA: the target section's size is the interesting bound
            target, = struct.unpack_from("<I", data, sh + 44)
            tsh = base + shoff + target * 64
            tflags, = struct.unpack_from("<Q", data, tsh + 8) if target < shnum else (0,)
            tsize, = struct.unpack_from("<Q", data, tsh + 32) if target < shnum else (0,)
            # r_offset of a relocation applied to a loaded section: "roff", with an oracle.
            roff = "roff" if tflags & 2 else "rela"
            for r in range(start, start + size - 23, 24):
                for o, w, k in [(0, 8, roff), (8, 4, "rtype"), (12, 4, "rela"), (16, 8, "rela")]:
                    out.append((r + o, w, k, tsize))
        elif sh_type == 17:  # SHT_GROUP
            for g in range(start, start + size - 3, 4):
                out.append((g, 4, "group", 0))
        elif size:
            out.append((start, size, "bytes", size))
    return out


def archive_fields(data):
    """Fields of a System V archive: member headers, the symbol index, and every field of
    every member object."""
    out = []
    pos = 8
    while pos + 60 <= len(data):
        hdr = data[pos:pos + 60]
        out.append((pos + 48, 10, "arsize", 0))
        out.append((pos, 16, "arname", 0))
        try:
            size = int(hdr[48:58].decode().strip())
        except ValueError:
            break
        body = pos + 60
        if hdr[:16].rstrip() == b"/":
            count, = struct.unpack_from(">I", data, body)
            out.append((body, 4, "arcount", 0))
            for k in range(min(count, 64)):
                out.append((body + 4 + 4 * k, 4, "aroff", 0))
        else:
            out.extend(elf_fields(data, body))
        pos = body + size + (size & 1)
    return out


def fields_of(data):
    return archive_fields(data) if data.startswith(b"!<arch>\n") else elf_fields(data)


# --- Mutations ------------------------------------------------------------------------------

def boundary_values(width, orig, size, flen):
    top = (1 << (8 * width)) - 1
    vals = [0, top, 1 << (8 * width - 1), orig + 1, orig - 1, size + 1, size, flen, flen + 1,
            1, 2, 3, 4, 7, 8, 16, 0x7fffffff, 0x80000000, 0xffffffff, 1 << 32, 0xfff1, 0xfff2,
            0xffff, 0xff00, 10, 0x1000, 1 << 20, (1 << 64) - 4, (1 << 64) - 2]
    return [v & top for v in vals]


def mutate_field(data, rnd, field):
    """Mutates one field; returns a note and whether the mutant must fail to link (a
    relocation moved outside its loaded section)."""
    off, width, kind, size = field
    if kind == "bytes":
        # A few random bytes of the section's contents.
        for _ in range(rnd.randint(1, 4)):
            i = off + rnd.randrange(width)
            data[i] = rnd.choice([0, 0xff, 0x80, rnd.randrange(256), data[i] ^ (1 << rnd.randrange(8))])
        return f"bytes@{off:#x}", False
    if kind == "arsize":
        text = rnd.choice([b"0", b"1", b"-1", b"9999999999", b"abc", str(rnd.randrange(1 << 20)).encode()])
        data[off:off + 10] = text.ljust(10)
        return f"arsize@{off:#x}={text!r}", False
    if kind == "arname":
        text = rnd.choice([b"/", b"//", b"/999999", b"/0", b"#1/99999", b"x.o/"])
        data[off:off + 16] = text.ljust(16)
        return f"arname@{off:#x}={text!r}", False
    fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[width]
    endian = ">" if kind in ("arcount", "aroff") else "<"
    orig, = struct.unpack_from(endian + fmt, data, off)
    if kind == "rtype" and rnd.random() < 0.5:
        value = rnd.randrange(0, 46)  # another relocation type
    elif kind == "sym" and width == 1 and rnd.random() < 0.5:
        value = (rnd.randrange(3) << 4) | rnd.choice([0, 1, 2, 3, 4, 6, 10])  # bind/type
    else:
        value = rnd.choice(boundary_values(width, orig, size, len(data)))
    struct.pack_into(endian + fmt, data, off, value)
    return f"{kind}@{off:#x}:{width}={value:#x}", kind == "roff" and value > size


def mutate(seed, rnd):
    data = bytearray(seed.data)
    notes, must_fail = [], []
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        if seed.fields and rnd.random() < 0.9:
            note, fail = mutate_field(data, rnd, rnd.choice(seed.fields))
            notes.append(note)
            must_fail.append(fail)
        else:
            i = rnd.randrange(len(data))
            data[i] = rnd.randrange(256)
            notes.append(f"byte@{i:#x}")
    # Only a lone mutation has a known outcome.
    return bytes(data), notes, must_fail == [True]


# --- Running --------------------------------------------------------------------------------

MODES = {"inproc": ["--in-process"], "oop": []}


def classify(code, stderr):
    if code is None:
        return "timeout"
    if "panicked" in stderr or code == 101:
        return "panic"
    if code < 0:
        return "signal"
    if code == 0:
        return "ok"
    if code == 1 and "remjit: error:" in stderr:
        return "error"
    return "other"


def run_remjit(remjit, mode, inputs, extra, timeout):
    cmd = [remjit, *MODES[mode], "--noexec", *inputs, *extra]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        _, err = p.communicate(timeout=timeout)
        return p.returncode, err.decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return None, ""


def one(args, seeds, mdir, index):
    rnd = random.Random(args.seed * 1_000_003 + index)
    seed = rnd.choice(seeds)
    data, notes, must_fail = mutate(seed, rnd)
    ext = ".a" if data.startswith(b"!<arch>\n") else ".o"
    path = os.path.join(mdir, f"m{index}{ext}")
    with open(path, "wb") as f:
        f.write(data)
    inputs = list(seed.inputs)
    inputs[seed.target] = path
    results, errors = {}, {}
    for mode in args.modes:
        code, err = run_remjit(args.remjit, mode, inputs, seed.extra, args.timeout)
        kind = classify(code, err)
        if kind == "ok" and must_fail:
            kind = "silent"  # a relocation outside its section linked without an error
        results[mode] = kind
        errors[mode] = err.strip()[-300:]
        if kind not in ("ok", "error"):
            fdir = os.path.join(args.work, "findings")
            os.makedirs(fdir, exist_ok=True)
            keep = os.path.join(fdir, f"{kind}-{mode}-m{index}{ext}")
            shutil.copy(path, keep)
            with open(keep + ".txt", "w") as f:
                f.write(f"seed {seed.name}\nmutations {notes}\ninputs {inputs}\n"
                        f"extra {seed.extra}\nexit {code}\n{err}")
    if len(set(results.values())) > 1:
        # Not a failure (a mode may know more symbols), but worth a look.
        with open(os.path.join(args.work, "mismatches.txt"), "a") as f:
            f.write(f"m{index} seed {seed.name} {notes} {results} {errors}\n")
    os.unlink(path)
    return seed.name, results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000, help="mutants (each run in every mode)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="first mutant index")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--remjit", default=os.path.join(ROOT, "target/release/remjit"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target/mutate"))
    ap.add_argument("--export-corpus", metavar="DIR", help="write the seeds to DIR and stop")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    seeds = build_seeds(args.work)
    if args.export_corpus:
        os.makedirs(args.export_corpus, exist_ok=True)
        for s in seeds:
            ext = ".a" if s.data.startswith(b"!<arch>\n") else ".o"
            with open(os.path.join(args.export_corpus, s.name + ext), "wb") as f:
                f.write(s.data)
        print(f"{len(seeds)} seeds written to {args.export_corpus}")
        return 0
    mdir = os.path.join(args.work, "mutants")
    os.makedirs(mdir, exist_ok=True)
    counts = {m: {} for m in args.modes}
    started = time.time()
    done = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(one, args, seeds, mdir, i)
                   for i in range(args.start, args.start + args.count)]
        for fut in futures:
            _, results = fut.result()
            for mode, kind in results.items():
                counts[mode][kind] = counts[mode].get(kind, 0) + 1
            done += 1
            if done % 500 == 0:
                print(f"{done}/{args.count} {time.time() - started:.0f}s {json.dumps(counts)}",
                      flush=True)
    summary = {"mutants": args.count, "seeds": len(seeds), "seconds": round(time.time() - started),
               "outcomes": counts}
    print(json.dumps(summary, indent=1))
    with open(os.path.join(args.work, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    bad = sum(n for c in counts.values() for k, n in c.items() if k not in ("ok", "error"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
