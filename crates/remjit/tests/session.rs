//! The session model through the library API, in process and out of process: COMDAT groups
//! shared between modules (hidden inline members included), definition shadowing and its
//! undoing, refusal to remove a module others use, and symbol kinds and sizes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{compile, remjit};
use object::{Object, ObjectSymbol, SymbolScope};
use remjit::remote::{MemoryMode, RemoteExecutor};
use remjit::{ModuleId, Session, SessionOptions, SymbolKind};

/// An in-process session and one over a spawned executor.
fn sessions() -> Vec<(&'static str, Session)> {
    let exec = remjit().with_file_name("remjit-executor");
    let remote = RemoteExecutor::spawn(&exec, MemoryMode::Shared).expect("executor starts");
    vec![
        (
            "in-process",
            Session::in_process(SessionOptions::default()).unwrap(),
        ),
        (
            "out-of-process",
            Session::with_executor(Arc::new(remote), SessionOptions::default()).unwrap(),
        ),
    ]
}

/// Writes `files` (name, text) into a fresh directory for test `name`.
fn sources(name: &str, files: &[(&str, &str)]) -> PathBuf {
    common::sources(&format!("session-{name}"), files)
}

/// Links `obj` alone as a new module.
fn link_one(s: &mut Session, obj: &Path) -> ModuleId {
    s.add_file(obj).unwrap();
    s.link().unwrap()
}

/// Calls `int name()` (run as `main`, which ignores its arguments).
fn call(s: &Session, name: &str) -> i32 {
    s.run_main(name, &[name.to_string()]).unwrap()
}

/// The error refusing to remove `module` (of one object) that `user` uses.
fn refusal(module: (ModuleId, &Path), user: (ModuleId, &Path)) -> String {
    format!(
        "cannot remove module {} ({}): used by module {} ({}); remove those first",
        module.0,
        module.1.display(),
        user.0,
        user.1.display()
    )
}

const SCALER_H: &str =
    "struct Scaler {\n  int k;\n  int apply(int x) const { return k * x + 1; }\n};\n";
const USE_A: &str =
    "#include \"scaler.h\"\nextern \"C\" int use_a() { Scaler s{3}; return s.apply(10); }\n";
const USE_B: &str =
    "#include \"scaler.h\"\nextern \"C\" int use_b() { Scaler s{5}; return s.apply(7); }\n";
const APPLY: &str = "_ZNK6Scaler5applyEi";

/// a.o and b.o, each with its own COMDAT copy of the hidden inline `Scaler::apply`.
fn scaler_objects(name: &str) -> (PathBuf, PathBuf) {
    let dir = sources(
        name,
        &[("scaler.h", SCALER_H), ("a.cc", USE_A), ("b.cc", USE_B)],
    );
    let flags = ["-O0", "-fPIC", "-fvisibility-inlines-hidden"];
    let a = compile(&dir, &dir.join("a.cc"), "a.o", &flags);
    let b = compile(&dir, &dir.join("b.cc"), "b.o", &flags);
    // The premise: the inline member is a hidden definition in each object.
    for o in [&a, &b] {
        let bytes = std::fs::read(o).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let sym = file
            .symbol_by_name(APPLY)
            .expect("the inline member is emitted");
        assert!(sym.is_definition() && sym.scope() == SymbolScope::Linkage);
    }
    (a, b)
}

#[test]
fn dropped_hidden_comdat_copy_binds_to_the_kept_one() {
    let (a, b) = scaler_objects("comdat-hidden");
    for (mode, mut s) in sessions() {
        let ma = link_one(&mut s, &a);
        let mb = link_one(&mut s, &b);
        assert_eq!(call(&s, "use_a"), 31, "{mode}");
        // Before the fix, b's call went to address 0.
        assert_eq!(call(&s, "use_b"), 36, "{mode}");
        assert_eq!(s.module_dependencies(mb), vec![ma], "{mode}");
        // The hidden member is no export of either module.
        assert_eq!(s.lookup(APPLY), None, "{mode}");
    }
}

#[test]
fn removing_a_comdat_owner_is_refused_while_a_user_lives() {
    let (a, b) = scaler_objects("comdat-remove");
    for (mode, mut s) in sessions() {
        let ma = link_one(&mut s, &a);
        let mb = link_one(&mut s, &b);
        let err = s.remove_module(ma).unwrap_err().to_string();
        assert_eq!(err, refusal((ma, &a), (mb, &b)), "{mode}");
        // Refused means untouched: both still run.
        assert_eq!(call(&s, "use_a") + call(&s, "use_b"), 67, "{mode}");
        s.remove_module(mb).unwrap();
        s.remove_module(ma).unwrap();
        // The group left with its owner: b keeps its own copy now, and a shares it.
        let mb = link_one(&mut s, &b);
        let ma = link_one(&mut s, &a);
        assert_eq!(call(&s, "use_b"), 36, "{mode}");
        assert_eq!(call(&s, "use_a"), 31, "{mode}");
        assert_eq!(s.module_users(mb), vec![ma], "{mode}");
    }
}

/// The C sources `files` (name, text) compiled, each into NAME.o, for test `name`.
fn objects<const N: usize>(name: &str, files: [(&str, &str); N]) -> [PathBuf; N] {
    let dir = sources(name, &files);
    files.map(|(f, _)| {
        let stem = f.strip_suffix(".c").unwrap_or(f);
        compile(&dir, &dir.join(f), &format!("{stem}.o"), &[])
    })
}

/// f1.o and f2.o define `int f()` returning 1 and 2; g.o calls it.
fn definitions(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let [f1, f2, g] = objects(
        name,
        [
            ("f1.c", "int f(void) { return 1; }\n"),
            ("f2.c", "int f(void) { return 2; }\n"),
            ("g.c", "int f(void);\nint g(void) { return f() + 10; }\n"),
        ],
    );
    (f1, f2, g)
}

#[test]
fn a_redefinition_shadows_and_removal_restores() {
    let (f1, f2, _) = definitions("shadow");
    for (mode, mut s) in sessions() {
        let m1 = link_one(&mut s, &f1);
        let m2 = link_one(&mut s, &f2);
        assert_eq!(s.lookup_symbol("f").unwrap().module, m2, "{mode}");
        assert_eq!(call(&s, "f"), 2, "{mode}");
        // The newest removed: the first definition comes back.
        s.remove_module(m2).unwrap();
        assert_eq!(s.lookup_symbol("f").unwrap().module, m1, "{mode}");
        assert_eq!(call(&s, "f"), 1, "{mode}");
        // The first definer removed while the redefinition lives: the redefinition stays.
        let m3 = link_one(&mut s, &f2);
        s.remove_module(m1).unwrap();
        let info = s.lookup_symbol("f").unwrap();
        assert_eq!(
            (info.module, Some(info.addr)),
            (m3, s.lookup("f")),
            "{mode}"
        );
        assert_eq!(call(&s, "f"), 2, "{mode}");
        s.remove_module(m3).unwrap();
        assert_eq!(s.lookup("f"), None, "{mode}");
        assert!(s.lookup_symbol("f").is_none(), "{mode}");
    }
}

#[test]
fn removing_a_used_module_is_refused_naming_its_users() {
    let (f1, f2, g) = definitions("used");
    for (mode, mut s) in sessions() {
        let m1 = link_one(&mut s, &f1);
        let m2 = link_one(&mut s, &f2);
        let mg = link_one(&mut s, &g);
        assert_eq!(call(&s, "g"), 12, "{mode}");
        // g calls the visible definition, m2's, through the session's stub for `f`.
        assert_eq!(s.module_dependencies(mg), vec![m2], "{mode}");
        assert_eq!(s.module_users(m1), Vec::<ModuleId>::new(), "{mode}");
        // m2 redefined `f`: removing it re-points g's calls to the definition below.
        assert_eq!(s.module_users(m2), Vec::<ModuleId>::new(), "{mode}");
        s.remove_module(m2).unwrap();
        assert_eq!(call(&s, "g"), 11, "{mode}");
        assert_eq!(s.module_dependencies(mg), vec![m1], "{mode}");
        // m1 is now the only definer g can call: refused, and nothing changes.
        let err = s.remove_module(m1).unwrap_err().to_string();
        assert_eq!(err, refusal((m1, &f1), (mg, &g)), "{mode}");
        assert_eq!(call(&s, "g"), 11, "{mode}");
        s.remove_module(mg).unwrap();
        s.remove_module(m1).unwrap();
        assert_eq!(s.modules(), Vec::<ModuleId>::new(), "{mode}");
    }
}

#[test]
fn lookup_symbol_gives_kind_and_size() {
    let dir = sources(
        "kinds",
        &[(
            "k.c",
            "int table[5] = {1, 2, 3, 4, 5};\n__thread long counter;\n\
             int sum(void) { int t = 0; for (int i = 0; i < 5; i++) t += table[i]; return t; }\n",
        )],
    );
    let obj = compile(&dir, &dir.join("k.c"), "k.o", &["-O1"]);
    let bytes = std::fs::read(&obj).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let sum_size = file.symbol_by_name("sum").unwrap().size();
    assert!(sum_size > 0);
    for (mode, mut s) in sessions() {
        let m = link_one(&mut s, &obj);
        let table = s.lookup_symbol("table").unwrap();
        assert_eq!(
            (table.kind, table.size, table.module),
            (SymbolKind::Data, 20, m)
        );
        assert_eq!(Some(table.addr), s.lookup("table"), "{mode}");
        let sum = s.lookup_symbol("sum").unwrap();
        assert_eq!(
            (sum.kind, sum.size),
            (SymbolKind::Function, sum_size),
            "{mode}"
        );
        assert_eq!(call(&s, "sum"), 15, "{mode}");
        let counter = s.lookup_symbol("counter").unwrap();
        assert!(
            matches!(counter.kind, SymbolKind::ThreadLocal { .. }),
            "{mode}"
        );
        assert_eq!((counter.addr, counter.size), (0, 8), "{mode}");
        assert!(s.lookup_symbol("nothing").is_none(), "{mode}");
    }
}

#[test]
fn a_dropped_comdat_definition_without_a_kept_copy_is_an_error_not_address_0() {
    let group = ".section .text.grp,\"axG\",@progbits,grp,comdat\n";
    let dir = sources(
        "comdat-missing",
        &[
            (
                "keeps.s",
                &format!("{group}.globl foo_a\n.type foo_a,@function\nfoo_a: mov $1, %eax\nret\n"),
            ),
            (
                "drops.s",
                &format!(
                    "{group}.weak foo_b\n.hidden foo_b\n.type foo_b,@function\n\
                     foo_b: mov $2, %eax\nret\n.text\n.globl use_b\nuse_b: call foo_b\nret\n"
                ),
            ),
        ],
    );
    let keeps = compile(&dir, &dir.join("keeps.s"), "keeps.o", &[]);
    let drops = compile(&dir, &dir.join("drops.s"), "drops.o", &[]);
    for (mode, mut s) in sessions() {
        let kept = link_one(&mut s, &keeps);
        s.add_file(&drops).unwrap();
        let err = s.link().unwrap_err().to_string();
        let want = format!(
            "1 undefined symbol(s):\n  foo_b (referenced by {})",
            drops.display()
        );
        assert_eq!(err, want, "{mode}");
        // Alone, the object keeps its own copy of the group.
        s.remove_module(kept).unwrap();
        link_one(&mut s, &drops);
        assert_eq!(call(&s, "use_b"), 2, "{mode}");
    }
}

const PACKED_A: &str =
    "int da[8] = {1, 2, 3, 4, 5, 6, 7, 8};\nint fa(void) { return da[0] + da[7]; }\n";
const PACKED_B: &str = "int fb(void) { return 2; }\n";
const PACKED_C: &str = "int zc[8];\nint fc(void) { return zc[4] + 3; }\n";

/// Small modules share pages (packs, in process and with shared memory): two modules' code on
/// one page; removing one keeps the other working; the next module gets the freed pieces, and
/// its zero-initialised data there reads as zeroes although the removed module's data was not.
#[test]
fn small_modules_share_pages_and_reuse_freed_pieces() {
    let dir = sources(
        "packs",
        &[("a.c", PACKED_A), ("b.c", PACKED_B), ("c.c", PACKED_C)],
    );
    let [a, b, c] = ["a", "b", "c"].map(|n| {
        compile(
            &dir,
            &dir.join(format!("{n}.c")),
            &format!("{n}.o"),
            &["-O2"],
        )
    });
    for (what, mut s) in sessions() {
        let module_a = link_one(&mut s, &a);
        link_one(&mut s, &b);
        let (fa, fb) = (s.lookup("fa").unwrap(), s.lookup("fb").unwrap());
        assert_eq!(fa / 4096, fb / 4096, "{what}: fa and fb share a code page");
        assert_eq!(call(&s, "fa"), 9, "{what}");
        s.remove_module(module_a).unwrap();
        assert_eq!(call(&s, "fb"), 2, "{what}: b works after a's removal");
        link_one(&mut s, &c);
        assert_eq!(s.lookup("fc"), Some(fa), "{what}: c's code where a's was");
        assert_eq!(call(&s, "fc"), 3, "{what}: c's zeroed data");
        assert_eq!(call(&s, "fb"), 2, "{what}");
    }
}

/// A fresh session over a fresh executor takes an earlier session's addresses (its memory,
/// call stubs and modules: `adopt_layout`, then `link_at` each old base), as the REPL does
/// after a crash; where the new executor has them taken already (here by another session),
/// the modules go elsewhere, still work, and `adopt_layout` says so.
#[test]
fn a_fresh_session_takes_the_old_addresses_or_says_it_could_not() {
    let (f1, _, g) = definitions("layout");
    let path = remjit().with_file_name("remjit-executor");
    for memory in [MemoryMode::Shared, MemoryMode::Copy] {
        let spawn = || Arc::new(RemoteExecutor::spawn(&path, memory).unwrap());
        let session = |e: &Arc<RemoteExecutor>| {
            let options = SessionOptions {
                share_pages: false,
                ..SessionOptions::default()
            };
            Session::with_executor(e.clone(), options).unwrap()
        };
        let mut old = session(&spawn());
        let (m1, m2) = (link_one(&mut old, &f1), link_one(&mut old, &g));
        let bases = [old.module_base(m1).unwrap(), old.module_base(m2).unwrap()];
        let layout = old.layout();
        let relink = |s: &mut Session| {
            [&f1, &g]
                .iter()
                .zip(bases)
                .map(|(obj, base)| {
                    s.add_file(obj).unwrap();
                    let m = s.link_at(base).unwrap();
                    s.module_base(m).unwrap()
                })
                .collect::<Vec<u64>>()
        };
        let fresh = spawn();
        let mut s = session(&fresh);
        if s.adopt_layout(&layout).unwrap() {
            assert_eq!(relink(&mut s), bases, "{memory:?}");
            assert_eq!(s.lookup("f"), old.lookup("f"), "{memory:?}: the same stub");
            assert_eq!(s.lookup("g"), old.lookup("g"), "{memory:?}");
            assert_eq!(call(&s, "g"), 11, "{memory:?}");
        } else {
            // Only when the fresh executor's own heap lies there: the kernel places a
            // program's heap at random up to 1 GiB above it, where low reservations go too.
            let maps =
                std::fs::read_to_string(format!("/proc/{}/maps", fresh.pid().unwrap())).unwrap();
            let heap_in_the_way = maps.lines().filter(|l| l.ends_with("[heap]")).any(|l| {
                let (a, b) = l.split(' ').next().unwrap().split_once('-').unwrap();
                let (a, b) = (
                    u64::from_str_radix(a, 16).unwrap(),
                    u64::from_str_radix(b, 16).unwrap(),
                );
                layout
                    .reservations()
                    .iter()
                    .any(|&(s, n)| a < s + n && s < b)
            });
            assert!(
                heap_in_the_way,
                "{memory:?}: the old addresses were free:\n{maps}"
            );
        }
        // Another session of the new executor took those addresses first.
        let exec = spawn();
        let mut other = session(&exec);
        link_one(&mut other, &f1);
        let mut s = session(&exec);
        assert!(!s.adopt_layout(&layout).unwrap(), "{memory:?}");
        let moved = relink(&mut s);
        assert_ne!(moved[0], bases[0], "{memory:?}");
        assert_eq!(call(&s, "g"), 11, "{memory:?}");
    }
}

/// With `call_stubs` (the default) an exported function gets a call stub that later links
/// bind to; without (a session that links once, as `remjit` without `--link-each`), none is
/// made and the name is the function itself. Either way the function runs.
#[test]
fn call_stubs_only_when_asked_for() {
    let dir = sources("stubs", &[("f.c", "int f(void) { return 7; }\n")]);
    let obj = compile(&dir, &dir.join("f.c"), "f.o", &["-O2"]);
    for call_stubs in [true, false] {
        let options = SessionOptions {
            call_stubs,
            ..SessionOptions::default()
        };
        let mut s = Session::in_process(options).unwrap();
        let m = link_one(&mut s, &obj);
        let info = s.lookup_symbol("f").unwrap();
        assert_eq!(info.module, m);
        assert_eq!(info.stub.is_some(), call_stubs, "call_stubs {call_stubs}");
        if let Some(stub) = info.stub {
            assert_ne!(stub, info.addr, "the stub is not the body");
        }
        assert_eq!(call(&s, "f"), 7, "call_stubs {call_stubs}");
    }
}

/// f1.o and f2x.o define `int f()` returning 1 and 2, f2x.o also `int k` and `int kf()`;
/// g.o calls `f`.
fn retractable(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let [f1, f2x, g] = objects(
        name,
        [
            ("f1.c", "int f(void) { return 1; }\n"),
            (
                "f2x.c",
                "int f(void) { return 2; }\nint k = 3;\nint kf(void) { return 7; }\n",
            ),
            ("g.c", "int f(void);\nint g(void) { return f() + 10; }\n"),
        ],
    );
    (f1, f2x, g)
}

/// `retract` withdraws some of a module's names: a redefinition withdrawn uncovers the
/// definition below (callers through the stub reach it again), a name defined nowhere else
/// leaves the session; the module stays until removed.
#[test]
fn retracting_names_uncovers_the_earlier_definition() {
    let (f1, f2x, g) = retractable("retract");
    for (mode, mut s) in sessions() {
        let m1 = link_one(&mut s, &f1);
        let mg = link_one(&mut s, &g);
        let m2 = link_one(&mut s, &f2x);
        assert_eq!(call(&s, "g"), 12, "{mode}");
        s.retract(m2, &["f"]).unwrap();
        assert_eq!(s.lookup_symbol("f").unwrap().module, m1, "{mode}");
        assert_eq!((call(&s, "g"), call(&s, "f")), (11, 1), "{mode}");
        assert_eq!(s.module_dependencies(mg), vec![m1], "{mode}");
        let mut left = s.module_exports(m2);
        left.sort();
        assert_eq!(left, ["k", "kf"], "{mode}");
        s.retract(m2, &["kf", "k"]).unwrap();
        assert_eq!((s.lookup("k"), s.lookup("kf")), (None, None), "{mode}");
        let err = s.retract(m2, &["f"]).unwrap_err().to_string();
        let expected = format!(
            "cannot retract `f` from module {m2} ({}): the module does not define it",
            f2x.display()
        );
        assert_eq!(err, expected, "{mode}");
        assert_eq!(s.modules(), vec![m1, mg, m2], "{mode}");
        s.remove_module(m2).unwrap();
        assert_eq!(call(&s, "g"), 11, "{mode}");
    }
}

/// A name another module bound to directly (data), or calls through its stub with no other
/// definition below, is not retracted: the error names the user, nothing changes.
#[test]
fn retracting_a_used_name_is_refused() {
    let [d, u] = objects(
        "retract-used",
        [
            ("d.c", "int d = 4;\nint only(void) { return 5; }\n"),
            (
                "u.c",
                "extern int d;\nint only(void);\nint use(void) { return only() + d; }\n",
            ),
        ],
    );
    for (mode, mut s) in sessions() {
        let md = link_one(&mut s, &d);
        let mu = link_one(&mut s, &u);
        for name in ["d", "only"] {
            let err = s.retract(md, &[name]).unwrap_err().to_string();
            let expected = format!(
                "cannot retract `{name}` from module {md} ({}): used by module {mu} ({}); \
                 remove those first",
                d.display(),
                u.display()
            );
            assert_eq!(err, expected, "{mode}");
        }
        assert_eq!(call(&s, "use"), 9, "{mode}");
        s.remove_module(mu).unwrap();
        s.retract(md, &["d", "only"]).unwrap();
        s.add_file(&u).unwrap();
        let err = s.link().unwrap_err().to_string();
        assert!(err.contains("undefined symbol"), "{mode}: {err}");
        assert!(err.contains("only") && err.contains(" d "), "{mode}: {err}");
    }
}
