//! Link real gcc output in process and check the relocated instruction bytes.

use std::path::{Path, PathBuf};

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};

use crate::{Error, Session, SessionOptions};

/// A compiled object in its own temporary directory, removed when dropped.
struct Compiled {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl std::ops::Deref for Compiled {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

fn compile(name: &str, src: &str, flags: &[&str]) -> Compiled {
    let dir = tempfile::Builder::new()
        .prefix("remjit-link-tests-")
        .tempdir()
        .unwrap();
    let c = dir.path().join(format!("{name}.c"));
    let o = dir.path().join(format!("{name}.o"));
    std::fs::write(&c, src).unwrap();
    let st = std::process::Command::new("gcc")
        .args(flags)
        .arg("-c")
        .arg(&c)
        .arg("-o")
        .arg(&o)
        .status()
        .expect("gcc runs");
    assert!(st.success());
    Compiled { _dir: dir, path: o }
}

fn first_instructions(addr: u64, n: usize) -> Vec<Instruction> {
    // SAFETY: `addr` is finalized JIT'd code of this process, readable.
    let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, 64) };
    let mut d = Decoder::with_ip(64, bytes, addr, DecoderOptions::NONE);
    (0..n).map(|_| d.decode()).collect()
}

#[test]
fn gotpcrelx_load_of_jit_data_is_relaxed_to_lea() {
    let user = compile(
        "relax_user",
        "extern int shared_value; int read_it(void) { return shared_value; }",
        &["-O2", "-fPIC"],
    );
    let def = compile("relax_def", "int shared_value = 42;", &["-O2", "-fPIC"]);
    let mut s = Session::in_process(SessionOptions::default()).unwrap();
    s.add_file(&user).unwrap();
    s.add_file(&def).unwrap();
    s.link().unwrap();
    let f = s.lookup("read_it").unwrap();
    let x = s.lookup("shared_value").unwrap();
    let ins = first_instructions(f, 2);
    assert_eq!(
        ins[0].mnemonic(),
        Mnemonic::Lea,
        "mov from the GOT became lea"
    );
    assert_eq!(
        ins[0].memory_displacement64(),
        x,
        "lea points at the definition"
    );
    // SAFETY: a function of the module just linked: int(void).
    let read: extern "C" fn() -> i32 = unsafe { std::mem::transmute(f as usize) };
    assert_eq!(read(), 42);
}

#[test]
fn call_to_far_libc_function_goes_through_stub() {
    let o = compile(
        "stub_user",
        "#include <string.h>\nunsigned long len(const char *s) { return strlen(s) + 1; }",
        &["-O2", "-fno-builtin"],
    );
    let mut s = Session::in_process(SessionOptions::default()).unwrap();
    s.add_file(&o).unwrap();
    s.link().unwrap();
    let f = s.lookup("len").unwrap();
    let ins = first_instructions(f, 8);
    let call = ins
        .iter()
        .find(|i| matches!(i.mnemonic(), Mnemonic::Call | Mnemonic::Jmp))
        .expect("a call or tail jump to strlen");
    assert_eq!(call.op0_kind(), OpKind::NearBranch64);
    let stub = first_instructions(call.near_branch_target(), 1);
    assert_eq!(stub[0].mnemonic(), Mnemonic::Jmp, "the target is a stub");
    assert!(stub[0].is_ip_rel_memory_operand());
    let slot = stub[0].ip_rel_memory_address();
    // SAFETY: the stub's GOT slot is finalized JIT'd data.
    let target = unsafe { (slot as *const u64).read() };
    // SAFETY: dlsym of a libc function.
    let strlen = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"strlen".as_ptr()) } as u64;
    assert_eq!(target, strlen, "the stub's slot holds libc's strlen");
    // SAFETY: size_t len(const char *).
    let len: extern "C" fn(*const std::ffi::c_char) -> u64 =
        unsafe { std::mem::transmute(f as usize) };
    assert_eq!(len(c"four".as_ptr()), 5);
}

#[test]
fn undefined_and_duplicate_symbols_are_listed() {
    let a = compile(
        "undef_a",
        "extern int missing_one(void); extern int missing_two(void);\n\
         int a(void) { return missing_one() + missing_two(); }",
        &["-O2"],
    );
    let b = compile(
        "undef_b",
        "extern int missing_one(void); int b(void) { return missing_one(); }",
        &["-O2"],
    );
    let mut s = Session::in_process(SessionOptions::default()).unwrap();
    s.add_file(&a).unwrap();
    s.add_file(&b).unwrap();
    match s.link() {
        Err(Error::Undefined(list)) => {
            let names: Vec<&str> = list.iter().map(|u| u.name.as_str()).collect();
            assert_eq!(names, vec!["missing_one", "missing_two"]);
            assert_eq!(list[0].referenced_by.len(), 2);
            assert!(list[0].referenced_by[1].ends_with("undef_b.o"));
        }
        other => panic!("expected undefined symbols, got {other:?}"),
    }
    let d1 = compile("dup1", "int twice(void) { return 1; }", &["-O2"]);
    let d2 = compile("dup2", "int twice(void) { return 2; }", &["-O2"]);
    s.add_file(&d1).unwrap();
    s.add_file(&d2).unwrap();
    match s.link() {
        Err(Error::Duplicate(list)) => {
            assert_eq!(list.len(), 1);
            assert!(list[0].first.ends_with("dup1.o") && list[0].second.ends_with("dup2.o"));
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
}

#[test]
fn commons_merge_and_weak_yields_to_strong() {
    let a = compile(
        "common_a",
        "int shared_buf[4]; __attribute__((weak)) int pick(void) { return 1; }\n\
         int size_a(void) { return sizeof shared_buf; }",
        &["-O2", "-fcommon"],
    );
    let b = compile(
        "common_b",
        "int shared_buf[64]; int pick(void) { return 2; }\n\
         long addr_b(void) { return (long)&shared_buf; }",
        &["-O2", "-fcommon"],
    );
    let mut s = Session::in_process(SessionOptions::default()).unwrap();
    s.add_file(&a).unwrap();
    s.add_file(&b).unwrap();
    s.link().unwrap();
    let buf = s.lookup("shared_buf").unwrap();
    // SAFETY: functions of the module just linked.
    let pick: extern "C" fn() -> i32 = unsafe { std::mem::transmute(s.lookup("pick").unwrap()) };
    let addr_b: extern "C" fn() -> i64 =
        unsafe { std::mem::transmute(s.lookup("addr_b").unwrap()) };
    assert_eq!(pick(), 2, "the strong definition wins");
    assert_eq!(addr_b() as u64, buf, "one merged common");
    // The merged common is 256 bytes of zeroes that all belong to the module.
    // SAFETY: JIT'd data.
    let bytes = unsafe { std::slice::from_raw_parts(buf as *const u8, 256) };
    assert!(bytes.iter().all(|&b| b == 0));
}

#[test]
fn removed_module_memory_is_reused() {
    let o = compile("reuse", "int seven(void) { return 7; }", &["-O2"]);
    let mut s = Session::in_process(SessionOptions::default()).unwrap();
    s.add_file(&o).unwrap();
    let m = s.link().unwrap();
    let first = s.lookup("seven").unwrap();
    s.remove_module(m).unwrap();
    assert_eq!(s.lookup("seven"), None);
    s.add_file(&o).unwrap();
    s.link().unwrap();
    assert_eq!(s.lookup("seven"), Some(first), "the freed range was reused");
}

#[test]
fn static_tls_models_ask_for_fpic() {
    let o = compile(
        "tls_le",
        "_Thread_local int counter; int bump(void) { return ++counter; }",
        &["-O2", "-fno-pic"],
    );
    let mut s = Session::in_process(SessionOptions::default()).unwrap();
    s.add_file(&o).unwrap();
    let e = s.link().unwrap_err().to_string();
    assert!(e.contains("R_X86_64_TPOFF32"), "{e}");
    assert!(e.contains("-fPIC"), "{e}");
    assert!(e.contains("tls_le.o"), "{e}");
}
