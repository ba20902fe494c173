//! Modules' debug objects registered in groups: gdb's work per registration grows with the
//! objfiles it holds (README, Debugging), so older modules share objects. Groups are kept
//! like a binary counter: a new module's object absorbs the newest group while that is no
//! bigger (in powers of two) than what is being merged (1, 1 → 2; 4, 2, 1, 1 → 8; ...), so N
//! modules make about log2 N objects and each module's DWARF is merged again about log2 N times
//! in all (one registration and, on average, one deregistration per link). A group that lost
//! members (removed modules) merges sooner. A group is built from its
//! members' inputs, as one module's inputs are ([`super::merge::group_debug_object`]); the
//! object the executing process holds is the only copy of the merged data.
//!
//! Removing a module rebuilds its group without it. A group stops growing at
//! [`MAX_GROUP_BYTES`] of input objects (re-merging more would cost a link more than gdb's
//! per-object work saves), and a group whose merge with others fails (too many sections, say)
//! is left as it is.

use std::collections::{BTreeMap, HashMap};

use super::merge::group_debug_object;
use super::DebugInput;
use crate::error::Result;
use crate::executor::Executor;

/// Groups merge in powers of this many.
pub const BASE: usize = 2;

/// Largest group, in bytes of its members' input objects.
pub const MAX_GROUP_BYTES: u64 = 4 << 20;

/// The inputs with DWARF of a live module, by its key (empty for none).
pub type InputsOf<'a> = dyn Fn(u64) -> &'a [DebugInput] + 'a;

#[derive(Debug, Clone, Copy)]
struct Member {
    key: u64,
    /// The module's memory, `(base, size)`.
    memory: (u64, u64),
    /// Its input objects' bytes.
    bytes: u64,
}

#[derive(Debug)]
struct Group {
    /// Oldest first.
    members: Vec<Member>,
    /// Its registration (none: the executing process has no GDB JIT interface, or it failed).
    handle: Option<u64>,
    bytes: u64,
    /// Merged with no other group again.
    sealed: bool,
}

/// The debug objects of a session's modules, registered in groups.
#[derive(Debug, Default)]
pub struct GdbGroups {
    /// By age (the key grows with each group made).
    groups: BTreeMap<u64, Group>,
    /// The group of each registered module.
    group_of: HashMap<u64, u64>,
    next: u64,
    /// The executing process has no GDB JIT interface: nothing to merge.
    no_interface: bool,
}

fn build(members: &[Member], inputs_of: &InputsOf<'_>) -> Result<Vec<u8>> {
    let modules: Vec<(&[DebugInput], (u64, u64))> = members
        .iter()
        .map(|m| (inputs_of(m.key), m.memory))
        .collect();
    group_debug_object(&modules)
}

impl GdbGroups {
    /// No module registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many objects are registered (or meant to be), and how many modules they hold.
    pub fn counts(&self) -> (usize, usize) {
        (self.groups.len(), self.group_of.len())
    }

    /// The newest groups (oldest first) that a new module's object of `bytes` absorbs: while
    /// the newest groups not taken yet that are no bigger than what is being merged (in powers
    /// of [`BASE`]) are at least `BASE - 1`, they are taken too.
    fn absorbed(&self, bytes: u64) -> Vec<u64> {
        let class = |n: usize| n.max(1).ilog(BASE);
        let (mut count, mut total, mut taken) = (1usize, bytes, Vec::new());
        let mut rest = self.groups.iter().rev();
        loop {
            let c = class(count);
            let run = rest
                .clone()
                .take_while(|(_, g)| !g.sealed && class(g.members.len()) <= c);
            let (n, more, sum) = run.fold((0, 0, total), |(n, m, b), (_, g)| {
                (n + 1, m + g.members.len(), b.saturating_add(g.bytes))
            });
            if n + 1 < BASE || sum > MAX_GROUP_BYTES {
                break;
            }
            taken.extend(rest.by_ref().take(n).map(|(&id, _)| id));
            (count, total) = (count + more, sum);
        }
        taken.reverse();
        taken
    }

    /// Registers the debug data of the module `key`, just linked at `memory` (`(base, size)`),
    /// whose inputs `inputs_of(key)` gives (nothing to do when it has none with DWARF).
    pub fn add(
        &mut self,
        exec: &dyn Executor,
        key: u64,
        memory: (u64, u64),
        inputs_of: &InputsOf<'_>,
    ) -> Result<()> {
        let inputs = inputs_of(key);
        if inputs.is_empty() || self.no_interface || self.group_of.contains_key(&key) {
            return Ok(());
        }
        let bytes = inputs.iter().map(|i| i.bytes.len() as u64).sum();
        let new = Member { key, memory, bytes };
        let mut taken = self.absorbed(bytes);
        let mut members: Vec<Member> = (taken.iter())
            .flat_map(|id| self.groups[id].members.iter().copied())
            .collect();
        members.push(new);
        let object = match build(&members, inputs_of) {
            Ok(o) => o,
            Err(_) if !taken.is_empty() => {
                // These groups stay as they are; the new module starts a group of its own.
                for id in taken.drain(..) {
                    self.groups.entry(id).and_modify(|g| g.sealed = true);
                }
                members = vec![new];
                build(&members, inputs_of)?
            }
            Err(e) => return Err(e),
        };
        // The members' old objects go first: gdb never sees the same code twice.
        let mut first_error = None;
        for id in &taken {
            if let Some(h) = self.groups.remove(id).and_then(|g| g.handle) {
                if let Err(e) = exec.deregister_debug_object(h) {
                    first_error.get_or_insert(e);
                }
            }
        }
        let registered = exec.register_debug_object(object);
        let id = self.next;
        self.next += 1;
        for m in &members {
            self.group_of.insert(m.key, id);
        }
        let handle = match registered {
            Ok(None) => {
                self.no_interface = true;
                None
            }
            Ok(h) => h,
            Err(e) => {
                first_error.get_or_insert(e);
                None
            }
        };
        let bytes = members.iter().map(|m| m.bytes).sum();
        let group = Group {
            members,
            handle,
            bytes,
            sealed: false,
        };
        self.groups.insert(id, group);
        first_error.map_or(Ok(()), Err)
    }

    /// Takes the module `key` out of what gdb sees (before its memory is freed): its group's
    /// object is replaced by one of the other members (`inputs_of` no longer needs to know
    /// `key`).
    pub fn remove(
        &mut self,
        exec: &dyn Executor,
        key: u64,
        inputs_of: &InputsOf<'_>,
    ) -> Result<()> {
        let Some(id) = self.group_of.remove(&key) else {
            return Ok(());
        };
        let Some(g) = self.groups.get_mut(&id) else {
            return Ok(());
        };
        if let Some(i) = g.members.iter().position(|m| m.key == key) {
            let m = g.members.remove(i);
            g.bytes = g.bytes.saturating_sub(m.bytes);
        }
        let deregistered = g.handle.take().map(|h| exec.deregister_debug_object(h));
        if g.members.is_empty() {
            self.groups.remove(&id);
        } else {
            // A subset of what was merged before merges again.
            let object = build(&g.members, inputs_of)?;
            g.handle = exec.register_debug_object(object)?;
        }
        deregistered.unwrap_or(Ok(()))
    }
}
