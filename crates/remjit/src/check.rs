//! The `-check` rules of LLVM's RuntimeDyld/JITLink checker: lines `# jitlink-check: LHS = RHS`
//! in a file, each side an expression over the linked memory, compared as unsigned 64-bit values.
//!
//! Expressions: decimal and `0x` literals; symbols; binary `+ - & | << >>` applied strictly
//! left to right (no precedence); parentheses; bit slices `EXPR[hi:lo]`; loads `*{N}ADDR`
//! (N = 1, 2, 4, 8); and the functions `decode_operand(label[+off], N)`, `next_pc(label[+off])`,
//! `got_addr(file, sym)`, `stub_addr(file, sym)` and `section_addr(file, section)`.
//!
//! Parsing gives an [`Expr`]; evaluation asks a [`CheckEnv`] for addresses and memory.

use iced_x86::{Decoder, DecoderOptions, Instruction, InstructionInfoFactory, OpAccess, OpKind};

/// The prefix of a rule line.
pub const RULE_PREFIX: &str = "# jitlink-check:";

/// What the checker needs from a link.
pub trait CheckEnv {
    /// The address of a symbol of the inputs (locals too), an absolute symbol, or
    /// `_GLOBAL_OFFSET_TABLE_`.
    fn symbol(&self, name: &str) -> Result<u64, String>;
    /// The GOT entry used by `file` for `sym`.
    fn got_addr(&self, file: &str, sym: &str) -> Result<u64, String>;
    /// The stub used by `file` for `sym`.
    fn stub_addr(&self, file: &str, sym: &str) -> Result<u64, String>;
    /// Where section `section` of `file` was placed.
    fn section_addr(&self, file: &str, section: &str) -> Result<u64, String>;
    /// Up to `len` bytes of linked memory at `addr` (fewer at the end of the memory); `None`
    /// when `addr` is not in it.
    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>>;
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `&`
    And,
    /// `|`
    Or,
    /// `<<`
    Shl,
    /// `>>`
    Shr,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A literal.
    Num(u64),
    /// A symbol's address.
    Symbol(String),
    /// `L op R`.
    Binary(Box<Expr>, Op, Box<Expr>),
    /// `E[hi:lo]`.
    Slice(Box<Expr>, u32, u32),
    /// `*{size}E`.
    Load(u8, Box<Expr>),
    /// `decode_operand(label + offset, index)`.
    DecodeOperand(String, i64, usize),
    /// `next_pc(label + offset)`.
    NextPc(String, i64),
    /// `got_addr(file, sym)`.
    Got(String, String),
    /// `stub_addr(file, sym)`.
    Stub(String, String),
    /// `section_addr(file, section)`.
    Section(String, String),
}

/// A rule: `lhs = rhs`, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Line of the rule's first line (1-based).
    pub line: usize,
    /// The rule's text, continuation lines joined.
    pub text: String,
    /// Left side.
    pub lhs: Expr,
    /// Right side.
    pub rhs: Expr,
}

/// Extracts the rules of a check file: lines starting with `# jitlink-check:` (after leading
/// blanks), a trailing `\` continuing the rule on the next rule line. Returns (line, text).
pub fn rule_texts(file: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in file.lines().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix(RULE_PREFIX) else {
            continue;
        };
        let (start, mut text) = pending.take().unwrap_or((i + 1, String::new()));
        let rest = rest.trim_end();
        match rest.strip_suffix('\\') {
            Some(part) => {
                text.push_str(part);
                text.push(' ');
                pending = Some((start, text));
            }
            None => {
                text.push_str(rest);
                out.push((start, text.trim().to_string()));
            }
        }
    }
    if let Some((start, text)) = pending {
        out.push((start, text.trim().to_string()));
    }
    out
}

/// Parses every rule of a check file. A file without rules is an error.
pub fn parse_file(file: &str) -> Result<Vec<Rule>, String> {
    let texts = rule_texts(file);
    if texts.is_empty() {
        return Err(format!("no `{RULE_PREFIX}` rules in the check file"));
    }
    texts
        .into_iter()
        .map(|(line, text)| {
            let (lhs, rhs) = parse_rule(&text).map_err(|e| format!("line {line}: {e}"))?;
            Ok(Rule {
                line,
                text,
                lhs,
                rhs,
            })
        })
        .collect()
}

/// Parses `LHS = RHS`.
pub fn parse_rule(text: &str) -> Result<(Expr, Expr), String> {
    let mut p = Parser {
        s: text,
        pos: 0,
        depth: 0,
    };
    let lhs = p.expr()?;
    p.expect("=")?;
    let rhs = p.expr()?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(p.error("unexpected text after the right-hand side"));
    }
    Ok((lhs, rhs))
}

/// Deepest nesting of parentheses and loads a rule may have.
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }

    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    fn error(&self, what: &str) -> String {
        format!("in `{}`: {what} at `{}`", self.s, self.rest())
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &str) -> Result<(), String> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{tok}`")))
        }
    }

    fn binary_op(&mut self) -> Option<Op> {
        const OPS: [(&str, Op); 6] = [
            ("<<", Op::Shl),
            (">>", Op::Shr),
            ("+", Op::Add),
            ("-", Op::Sub),
            ("&", Op::And),
            ("|", Op::Or),
        ];
        OPS.iter().find(|(t, _)| self.eat(t)).map(|&(_, op)| op)
    }

    /// `simple (op simple)*`, left to right.
    fn expr(&mut self) -> Result<Expr, String> {
        let mut e = self.simple()?;
        while let Some(op) = self.binary_op() {
            let r = self.simple()?;
            e = Expr::Binary(Box::new(e), op, Box::new(r));
        }
        Ok(e)
    }

    /// A literal, symbol, call, load or parenthesized expression, with an optional slice.
    fn simple(&mut self) -> Result<Expr, String> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error("expression nested too deeply"));
        }
        self.depth += 1;
        let e = self.simple_inner();
        self.depth -= 1;
        e
    }

    fn simple_inner(&mut self) -> Result<Expr, String> {
        self.skip_ws();
        let e = if self.eat("(") {
            let e = self.expr()?;
            self.expect(")")?;
            e
        } else if self.eat("*") {
            self.expect("{")?;
            let n = self.number()?;
            self.expect("}")?;
            let size = match n {
                1 | 2 | 4 | 8 => n as u8,
                _ => return Err(self.error("load size must be 1, 2, 4 or 8")),
            };
            // As in LLVM, the address is the rest of the chain: `*{1}f+1` loads from f+1.
            Expr::Load(size, Box::new(self.expr()?))
        } else if self.rest().starts_with(|c: char| c.is_ascii_digit()) {
            Expr::Num(self.number()?)
        } else {
            let name = self.ident()?;
            self.call_or_symbol(name)?
        };
        if self.eat("[") {
            let hi = self.number()?;
            self.expect(":")?;
            let lo = self.number()?;
            self.expect("]")?;
            if hi > 63 || lo > hi {
                return Err(self.error("bad bit slice (need 63 >= hi >= lo)"));
            }
            return Ok(Expr::Slice(Box::new(e), hi as u32, lo as u32));
        }
        Ok(e)
    }

    fn call_or_symbol(&mut self, name: String) -> Result<Expr, String> {
        let builtin = matches!(
            name.as_str(),
            "decode_operand" | "next_pc" | "got_addr" | "stub_addr" | "section_addr"
        );
        if !builtin || !self.eat("(") {
            return Ok(Expr::Symbol(name));
        }
        let e = match name.as_str() {
            "decode_operand" => {
                let (label, off) = self.label()?;
                self.expect(",")?;
                let n = self.number()?;
                let n = usize::try_from(n).map_err(|_| self.error("operand index too large"))?;
                Expr::DecodeOperand(label, off, n)
            }
            "next_pc" => {
                let (label, off) = self.label()?;
                Expr::NextPc(label, off)
            }
            _ => {
                let file = self.arg(',')?;
                self.expect(",")?;
                let second = self.arg(')')?;
                match name.as_str() {
                    "got_addr" => Expr::Got(file, second),
                    "stub_addr" => Expr::Stub(file, second),
                    _ => Expr::Section(file, second),
                }
            }
        };
        self.expect(")")?;
        Ok(e)
    }

    /// `label`, `label + N` or `label - N`.
    fn label(&mut self) -> Result<(String, i64), String> {
        let name = self.ident()?;
        let neg = if self.eat("+") {
            false
        } else if self.eat("-") {
            true
        } else {
            return Ok((name, 0));
        };
        let n = i64::try_from(self.number()?).map_err(|_| self.error("offset too large"))?;
        Ok((name, if neg { -n } else { n }))
    }

    /// A file or section argument: everything up to `end`, trimmed.
    fn arg(&mut self, end: char) -> Result<String, String> {
        self.skip_ws();
        let len = self.rest().find(end).unwrap_or(self.rest().len());
        let a = self.rest()[..len].trim().to_string();
        if a.is_empty() {
            return Err(self.error("expected an argument"));
        }
        self.pos += len;
        Ok(a)
    }

    fn ident(&mut self) -> Result<String, String> {
        self.skip_ws();
        let r = self.rest();
        let ok = |c: char| c.is_ascii_alphanumeric() || "_.$@".contains(c);
        let len = r.find(|c: char| !ok(c)).unwrap_or(r.len());
        if len == 0 || r.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(self.error("expected a symbol, number or expression"));
        }
        let name = r[..len].to_string();
        self.pos += len;
        Ok(name)
    }

    fn number(&mut self) -> Result<u64, String> {
        self.skip_ws();
        let r = self.rest();
        let (digits, radix, skip) = match r.strip_prefix("0x").or_else(|| r.strip_prefix("0X")) {
            Some(h) => (h, 16, 2),
            None => (r, 10, 0),
        };
        let len = digits
            .find(|c: char| !c.is_digit(radix))
            .unwrap_or(digits.len());
        let v = u64::from_str_radix(&digits[..len], radix)
            .map_err(|_| self.error("expected a number that fits in 64 bits"))?;
        self.pos += skip + len;
        Ok(v)
    }
}

/// Evaluates an expression.
pub fn eval(e: &Expr, env: &dyn CheckEnv) -> Result<u64, String> {
    Ok(match e {
        Expr::Num(n) => *n,
        Expr::Symbol(s) => env.symbol(s)?,
        Expr::Binary(l, op, r) => {
            let (l, r) = (eval(l, env)?, eval(r, env)?);
            match op {
                Op::Add => l.wrapping_add(r),
                Op::Sub => l.wrapping_sub(r),
                Op::And => l & r,
                Op::Or => l | r,
                Op::Shl => l.checked_shl(r as u32).filter(|_| r < 64).unwrap_or(0),
                Op::Shr => l.checked_shr(r as u32).filter(|_| r < 64).unwrap_or(0),
            }
        }
        Expr::Slice(inner, hi, lo) => {
            let v = eval(inner, env)? >> lo;
            let bits = hi - lo + 1;
            if bits == 64 {
                v
            } else {
                v & ((1u64 << bits) - 1)
            }
        }
        Expr::Load(size, addr) => {
            let a = eval(addr, env)?;
            let n = usize::from(*size);
            let bytes = env
                .read(a, n)
                .filter(|b| b.len() == n)
                .ok_or_else(|| format!("*{{{n}}}{a:#x} reads outside the linked memory"))?;
            let mut w = [0u8; 8];
            w[..n].copy_from_slice(&bytes);
            u64::from_le_bytes(w)
        }
        Expr::DecodeOperand(label, off, n) => {
            let (ins, _) = decode_at(env, label, *off)?;
            operand(&ins, *n).map_err(|m| format!("decode_operand({label}, {n}): {m}"))?
        }
        Expr::NextPc(label, off) => {
            let (ins, _) = decode_at(env, label, *off)?;
            ins.next_ip()
        }
        Expr::Got(f, s) => env.got_addr(f, s)?,
        Expr::Stub(f, s) => env.stub_addr(f, s)?,
        Expr::Section(f, s) => env.section_addr(f, s)?,
    })
}

/// Decodes the instruction at `label + off`.
fn decode_at(env: &dyn CheckEnv, label: &str, off: i64) -> Result<(Instruction, u64), String> {
    let addr = env.symbol(label)?.wrapping_add(off as u64);
    let bytes = env
        .read(addr, 15)
        .ok_or_else(|| format!("{label}: {addr:#x} is outside the linked memory"))?;
    let mut d = Decoder::with_ip(64, &bytes, addr, DecoderOptions::NONE);
    let ins = d.decode();
    if ins.is_invalid() {
        return Err(format!("no valid instruction at {label} ({addr:#x})"));
    }
    Ok((ins, addr))
}

/// An operand as LLVM's MC layer numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum McOperand {
    Reg,
    Imm(u64),
}

/// Operand `n` of `ins`, numbered as in LLVM's MCInst: a memory operand is five (base, scale,
/// index, displacement, segment), a read-write register destination appears twice (tied), a
/// branch target is its displacement, immediates are sign-extended.
fn operand(ins: &Instruction, n: usize) -> Result<u64, String> {
    let mut ops = Vec::new();
    let mut info = InstructionInfoFactory::new();
    let tied = matches!(
        info.info(ins).op0_access(),
        OpAccess::ReadWrite | OpAccess::ReadCondWrite
    );
    for i in 0..ins.op_count() {
        match ins.op_kind(i) {
            OpKind::Register => {
                ops.push(McOperand::Reg);
                if i == 0 && tied {
                    ops.push(McOperand::Reg);
                }
            }
            OpKind::Memory => {
                let disp = if ins.is_ip_rel_memory_operand() {
                    ins.ip_rel_memory_address().wrapping_sub(ins.next_ip())
                } else {
                    ins.memory_displacement64()
                };
                ops.extend([
                    McOperand::Reg,
                    McOperand::Imm(u64::from(ins.memory_index_scale())),
                    McOperand::Reg,
                    McOperand::Imm(disp),
                    McOperand::Reg,
                ]);
            }
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                ops.push(McOperand::Imm(
                    ins.near_branch_target().wrapping_sub(ins.next_ip()),
                ));
            }
            kind @ (OpKind::Immediate8 | OpKind::Immediate16 | OpKind::Immediate32) => {
                let v = ins.immediate(i);
                ops.push(McOperand::Imm(match kind {
                    OpKind::Immediate8 => v as u8 as i8 as i64 as u64,
                    OpKind::Immediate16 => v as u16 as i16 as i64 as u64,
                    _ => v as u32 as i32 as i64 as u64,
                }));
            }
            OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => ops.push(McOperand::Imm(ins.immediate(i))),
            _ => ops.push(McOperand::Reg),
        }
    }
    match ops.get(n) {
        Some(McOperand::Imm(v)) => Ok(*v),
        Some(McOperand::Reg) => Err(format!("operand {n} of `{ins}` is not an immediate")),
        None => Err(format!("`{ins}` has {} operands", ops.len())),
    }
}

/// The outcome of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Both sides equal.
    Pass,
    /// Different values.
    Fail {
        /// Left value.
        lhs: u64,
        /// Right value.
        rhs: u64,
    },
    /// A side could not be evaluated.
    Error(String),
}

/// Checks one rule.
pub fn check(rule: &Rule, env: &dyn CheckEnv) -> Outcome {
    match (eval(&rule.lhs, env), eval(&rule.rhs, env)) {
        (Ok(l), Ok(r)) if l == r => Outcome::Pass,
        (Ok(lhs), Ok(rhs)) => Outcome::Fail { lhs, rhs },
        (Err(e), _) | (_, Err(e)) => Outcome::Error(e),
    }
}

/// Checks every rule of a check file's text; returns the number of rules and one message per
/// failed rule (`line N: rule: values`).
pub fn check_text(text: &str, env: &dyn CheckEnv) -> Result<(usize, Vec<String>), String> {
    let rules = parse_file(text)?;
    let failures = rules
        .iter()
        .filter_map(|r| {
            let why = match check(r, env) {
                Outcome::Pass => return None,
                Outcome::Fail { lhs, rhs } => format!("{lhs:#x} != {rhs:#x}"),
                Outcome::Error(e) => e,
            };
            Some(format!("line {}: `{}`: {why}", r.line, r.text))
        })
        .collect();
    Ok((rules.len(), failures))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Env {
        syms: HashMap<&'static str, u64>,
        base: u64,
        mem: Vec<u8>,
    }

    impl CheckEnv for Env {
        fn symbol(&self, name: &str) -> Result<u64, String> {
            self.syms
                .get(name)
                .copied()
                .ok_or_else(|| format!("no symbol {name}"))
        }
        fn got_addr(&self, file: &str, sym: &str) -> Result<u64, String> {
            Ok(if file == "a.o" && sym == "x" {
                0x100
            } else {
                1
            })
        }
        fn stub_addr(&self, _: &str, _: &str) -> Result<u64, String> {
            Ok(0x200)
        }
        fn section_addr(&self, f: &str, s: &str) -> Result<u64, String> {
            match (f, s) {
                ("a.o", ".text") => Ok(0x300),
                _ => Err("no section".into()),
            }
        }
        fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
            let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
            let end = (off + len).min(self.mem.len());
            (off < self.mem.len()).then(|| self.mem[off..end].to_vec())
        }
    }

    fn env() -> Env {
        // call rel32 (-5), mov rax,[rip+0x10], movabs rax,imm64, add rax,[rip-8], jmp rel8
        let mut mem = vec![0xe8, 0xfb, 0xff, 0xff, 0xff];
        mem.extend([0x48, 0x8b, 0x05, 0x10, 0, 0, 0]);
        mem.extend([0x48, 0xb8, 8, 7, 6, 5, 4, 3, 2, 1]);
        mem.extend([0x48, 0x03, 0x05, 0xf8, 0xff, 0xff, 0xff]);
        mem.extend([0xeb, 0x02]);
        let syms = HashMap::from([
            ("call", 0x1000),
            ("load", 0x1005),
            ("movabs", 0x100c),
            ("add", 0x1016),
            ("jmp", 0x101d),
        ]);
        Env {
            syms,
            base: 0x1000,
            mem,
        }
    }

    fn value(s: &str) -> Result<u64, String> {
        let (l, r) = parse_rule(&format!("{s} = 0"))?;
        assert_eq!(r, Expr::Num(0));
        eval(&l, &env())
    }

    proptest::proptest! {
        #[test]
        fn hostile_rules_give_errors_not_panics(text in "[ -~]{0,60}") {
            if let Ok((l, r)) = parse_rule(&text) {
                let _ = (eval(&l, &env()), eval(&r, &env()));
            }
        }

        #[test]
        fn rule_like_text_gives_errors_not_panics(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "*{8}", "*{3}", "(", ")", "[63:0]", "[1:2]", "[99:0]", " + ", " << ", " >> ",
                    " - ", "call", "0x", "0xffffffffffffffffff", "7", "decode_operand(call, 9)",
                    "next_pc(jmp)", "got_addr(a.o, x)", " = ", ",",
                ]),
                0..12,
            )
        ) {
            let text = parts.concat();
            if let Ok((l, r)) = parse_rule(&text) {
                let _ = (eval(&l, &env()), eval(&r, &env()));
            }
        }
    }

    #[test]
    fn strictly_left_to_right() {
        assert_eq!(value("1 + 2 << 3"), Ok(24));
        assert_eq!(value("1 + (2 << 3)"), Ok(17));
        assert_eq!(value("0xff & 0xf0 | 1 - 1"), Ok(0xf0));
        assert_eq!(value("0 - 1"), Ok(u64::MAX));
        assert_eq!(value("0x10 >> 4"), Ok(1));
    }

    #[test]
    fn slices_and_loads() {
        assert_eq!(value("0x12345678[15:8]"), Ok(0x56));
        assert_eq!(value("(0 - 1)[63:0]"), Ok(u64::MAX));
        assert_eq!(value("*{4}call"), Ok(0xfffffbe8));
        assert_eq!(value("*{1}(call + 1)"), Ok(0xfb));
        assert_eq!(value("(*{8}movabs)[63:16]"), Ok(0x0304_0506_0708));
        // As in LLVM, a load's address is the rest of the chain, slices included.
        assert_eq!(value("*{1}(call + 0x10001)[15:0]"), Ok(0xfb));
        assert_eq!(value("*{1}call+1"), Ok(0xfb));
        assert_eq!(value("(*{1}call)+1"), Ok(0xe9));
        assert!(value("*{8}(jmp + 1)").unwrap_err().contains("outside"));
        assert!(parse_rule("*{3}call = 0")
            .unwrap_err()
            .contains("load size"));
    }

    #[test]
    fn decode_operands_as_llvm_numbers_them() {
        assert_eq!(value("decode_operand(call, 0)"), Ok((-5i64) as u64));
        assert_eq!(value("next_pc(call)"), Ok(0x1005));
        assert_eq!(value("decode_operand(load, 4)"), Ok(0x10));
        assert_eq!(
            value("decode_operand(movabs, 1)"),
            Ok(0x0102_0304_0506_0708)
        );
        // add: tied destination, then the memory operand.
        assert_eq!(value("decode_operand(add, 5)"), Ok((-8i64) as u64));
        assert_eq!(value("decode_operand(jmp, 0)"), Ok(2));
        assert_eq!(value("next_pc(load + 7)"), Ok(0x1016));
        assert_eq!(value("decode_operand(movabs - 7, 4)"), Ok(0x10));
        assert!(value("decode_operand(load, 0)")
            .unwrap_err()
            .contains("not an immediate"));
    }

    #[test]
    fn functions_and_symbols() {
        assert_eq!(value("got_addr(a.o, x) + stub_addr(a.o, y)"), Ok(0x300));
        assert_eq!(value("section_addr(a.o, .text)"), Ok(0x300));
        assert_eq!(value("call"), Ok(0x1000));
        assert_eq!(value("nope"), Err("no symbol nope".into()));
    }

    #[test]
    fn rules_continue_and_files_need_rules() {
        let f = "foo:\n  # jitlink-check: 1 + \\\n  # jitlink-check:   2 = 3\n# other\n\
                 # jitlink-check: call = 0x1000\n";
        let rules = parse_file(f).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!((rules[0].line, rules[1].line), (2, 5));
        assert!(rules.iter().all(|r| check(r, &env()) == Outcome::Pass));
        let bad = parse_rule("call = 0x1001").unwrap();
        let rule = Rule {
            line: 1,
            text: String::new(),
            lhs: bad.0,
            rhs: bad.1,
        };
        assert_eq!(
            check(&rule, &env()),
            Outcome::Fail {
                lhs: 0x1000,
                rhs: 0x1001
            }
        );
        assert!(parse_file("# nothing\n").unwrap_err().contains("no `"));
        assert!(parse_rule("1 = 2 3").unwrap_err().contains("unexpected"));
        assert!(parse_rule("1 + = 2").is_err());
        let deep = format!("{}1{} = 1", "(".repeat(100_000), ")".repeat(100_000));
        assert!(parse_rule(&deep).unwrap_err().contains("nested too deeply"));
        assert_eq!(
            value(&format!("{}1{}", "(".repeat(60), ")".repeat(60))),
            Ok(1)
        );
    }
}
