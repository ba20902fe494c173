//! Calling a JIT'd function with integer, pointer and floating-point arguments (System V
//! x86-64, no variadics, no aggregates), as the outermost frame the unwinder sees.
//!
//! The arguments are placed by class, in order: the first six integers in rdi, rsi, rdx, rcx,
//! r8, r9, the first eight floating-point values in xmm0-xmm7, and the rest on the stack in
//! argument order, as the ABI says. The result comes back as the raw `rax` and low 64 bits of
//! `xmm0`; the caller picks what the function's return type means.

/// Most arguments a call may have.
pub const MAX_ARGS: usize = 16;

/// An argument's class on the wire: an integer or pointer, in a general register.
pub const CLASS_INT: u8 = 0;
/// An argument's class on the wire: a `double` (or a `float` in the low 32 bits), in an SSE
/// register.
pub const CLASS_FLOAT: u8 = 1;

/// What the trampoline reads (the argument registers and the stack arguments) and writes (the
/// result registers). Its layout is the trampoline's: keep the offsets in step.
#[repr(C)]
#[derive(Debug, Default)]
struct CallFrame {
    ints: [u64; 6],
    floats: [u64; 8],
    nstack: u64,
    stack: u64,
    rax: u64,
    xmm0: u64,
}

// `remjit_call_sysv(f, frame)`: loads the argument registers from `frame`, pushes its stack
// arguments (last first, the stack kept 16-byte aligned at the call), calls `f` and stores rax
// and xmm0 back. JIT'd code is always entered through this frame, which tells the unwinder that
// the stack ends here (rip undefined), as a native `_start` does: an exception nothing catches
// reaches the end of the stack and the C++ runtime calls std::terminate as in a native program,
// instead of unwinding into the host's Rust frames.
std::arch::global_asm!(
    ".text",
    ".p2align 4",
    ".globl remjit_call_sysv",
    ".type remjit_call_sysv, @function",
    "remjit_call_sysv:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    ".cfi_undefined rip",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "push rbx",
    ".cfi_offset rbx, -24",
    "push r12",
    ".cfi_offset r12, -32",
    "mov r12, rsi",
    "mov r11, rdi",
    "mov rcx, [r12 + 112]",
    "mov rdx, [r12 + 120]",
    // Three pushes since entry leave rsp 16-byte aligned; an odd count of stack arguments
    // needs one more word of padding.
    "test rcx, 1",
    "jz 2f",
    "sub rsp, 8",
    "2:",
    "test rcx, rcx",
    "jz 3f",
    "sub rcx, 1",
    "push qword ptr [rdx + rcx * 8]",
    "jmp 2b",
    "3:",
    "mov rdi, [r12]",
    "mov rsi, [r12 + 8]",
    "mov rdx, [r12 + 16]",
    "mov rcx, [r12 + 24]",
    "mov r8, [r12 + 32]",
    "mov r9, [r12 + 40]",
    "movq xmm0, qword ptr [r12 + 48]",
    "movq xmm1, qword ptr [r12 + 56]",
    "movq xmm2, qword ptr [r12 + 64]",
    "movq xmm3, qword ptr [r12 + 72]",
    "movq xmm4, qword ptr [r12 + 80]",
    "movq xmm5, qword ptr [r12 + 88]",
    "movq xmm6, qword ptr [r12 + 96]",
    "movq xmm7, qword ptr [r12 + 104]",
    // An upper bound on the vector registers used, should the callee be variadic after all.
    "mov eax, 8",
    "call r11",
    "mov [r12 + 128], rax",
    "movq qword ptr [r12 + 136], xmm0",
    "lea rsp, [rbp - 16]",
    "pop r12",
    "pop rbx",
    "pop rbp",
    ".cfi_def_cfa rsp, 8",
    "ret",
    ".cfi_endproc",
    ".size remjit_call_sysv, . - remjit_call_sysv",
);

extern "C" {
    fn remjit_call_sysv(f: u64, frame: *mut CallFrame);
}

/// The result registers of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Registers {
    /// `rax`: an integer or pointer result.
    pub rax: u64,
    /// The low 64 bits of `xmm0`: a `double` (or, in its low 32 bits, a `float`) result.
    pub xmm0: u64,
}

/// Places `args` (`(class, bits)`) in registers and stack words; refuses too many arguments
/// and unknown classes.
fn place(args: &[(u8, u64)]) -> Result<(CallFrame, Vec<u64>), String> {
    if args.len() > MAX_ARGS {
        return Err(format!(
            "{} arguments refused: at most {MAX_ARGS}",
            args.len()
        ));
    }
    let mut frame = CallFrame::default();
    let (mut ni, mut nf) = (0, 0);
    let mut stack = Vec::new();
    for (i, &(class, bits)) in args.iter().enumerate() {
        match class {
            CLASS_INT if ni < frame.ints.len() => {
                frame.ints[ni] = bits;
                ni += 1;
            }
            CLASS_FLOAT if nf < frame.floats.len() => {
                frame.floats[nf] = bits;
                nf += 1;
            }
            CLASS_INT | CLASS_FLOAT => stack.push(bits),
            other => {
                return Err(format!(
                    "argument {}: unknown class {other} (0: integer or pointer, 1: floating point)",
                    i + 1
                ))
            }
        }
    }
    Ok((frame, stack))
}

/// Checks `args` as [`call`] would, without calling anything.
pub fn check_args(args: &[(u8, u64)]) -> Result<(), String> {
    place(args).map(|_| ())
}

/// Calls `f` with `args` (`(class, bits)`, see [`CLASS_INT`] and [`CLASS_FLOAT`]).
///
/// # Safety
/// `f` must be a function whose parameters match the classes of `args`, in order (integers
/// and pointers as [`CLASS_INT`], `double`/`float` as [`CLASS_FLOAT`]).
pub unsafe fn call(f: u64, args: &[(u8, u64)]) -> Result<Registers, String> {
    let (mut frame, stack) = place(args)?;
    frame.nstack = stack.len() as u64;
    frame.stack = stack.as_ptr() as u64;
    // SAFETY: the trampoline reads `frame` and `stack` (alive until it returns) and loads the
    // registers as the ABI wants; the caller vouches that `f` takes these arguments.
    remjit_call_sysv(f, &mut frame);
    Ok(Registers {
        rax: frame.rax,
        xmm0: frame.xmm0,
    })
}

/// Calls `f` with three integer arguments; returns `rax`.
///
/// # Safety
/// `f` must be a function taking (at most) three integer or pointer arguments.
pub unsafe fn call_ints(f: u64, args: [u64; 3]) -> u64 {
    let mut frame = CallFrame::default();
    frame.ints[..3].copy_from_slice(&args);
    // SAFETY: no stack arguments; the caller vouches for `f`.
    remjit_call_sysv(f, &mut frame);
    frame.rax
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn mixed(a: i64, x: f64, b: i32, y: f64, p: *const i64) -> f64 {
        // SAFETY: the test passes a valid pointer.
        a as f64 * x + f64::from(b) * y + unsafe { *p } as f64
    }

    #[allow(clippy::too_many_arguments)]
    extern "C" fn many(
        a: i64,
        b: i64,
        c: i64,
        d: i64,
        e: i64,
        f: i64,
        g: i64,
        h: f64,
        i: i64,
    ) -> i64 {
        a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * (h as i64) + 9 * i
    }

    fn int(v: i64) -> (u8, u64) {
        (CLASS_INT, v as u64)
    }

    fn float(v: f64) -> (u8, u64) {
        (CLASS_FLOAT, v.to_bits())
    }

    #[test]
    fn arguments_reach_their_registers_and_the_stack() {
        let seven = 7i64;
        let args = [
            int(3),
            float(1.5),
            int(-4),
            float(0.25),
            int(&seven as *const i64 as i64),
        ];
        // SAFETY: `mixed` takes exactly these classes.
        let r = unsafe { call(mixed as *const () as u64, &args) }.unwrap();
        assert_eq!(f64::from_bits(r.xmm0), mixed(3, 1.5, -4, 0.25, &seven));
        // Seven integers: the seventh and ninth go on the stack, the double in xmm0.
        let args: Vec<_> = (1..=7).map(int).chain([float(8.0), int(9)]).collect();
        // SAFETY: `many` takes exactly these classes.
        let r = unsafe { call(many as *const () as u64, &args) }.unwrap();
        assert_eq!(r.rax as i64, many(1, 2, 3, 4, 5, 6, 7, 8.0, 9));
    }

    #[test]
    fn too_many_arguments_and_unknown_classes_are_refused() {
        let args = vec![int(0); MAX_ARGS + 1];
        assert_eq!(
            check_args(&args).unwrap_err(),
            "17 arguments refused: at most 16"
        );
        assert_eq!(
            check_args(&[int(1), (9, 0)]).unwrap_err(),
            "argument 2: unknown class 9 (0: integer or pointer, 1: floating point)"
        );
    }
}
