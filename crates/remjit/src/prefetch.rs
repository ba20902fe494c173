//! The command line's input files, read ahead: while the executor starts (a few inputs are
//! read at once, before waiting for its Setup) or, for many inputs, on a thread of their own
//! that stays ahead of the links (`--link-each` over a thousand objects reads the next files
//! while the current one links).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use remjit::input::{self, InputFile};

/// From this many inputs on, a thread reads them.
const THREAD_FROM: usize = 8;

/// The reading thread hands over batches of up to this many inputs (one wake-up per batch,
/// not per input), the first ones smaller so that the first link need not wait long.
const BATCH: usize = 32;

/// How many batches the reading thread may get ahead of the links (small files are read
/// into memory).
const BATCHES_AHEAD: usize = 2;

/// One input as read: `None` for a source file (the session compiles it).
type Read = Option<remjit::Result<InputFile>>;

/// The inputs, read or being read, taken in command-line order.
pub enum Inputs {
    /// Read already.
    Done(VecDeque<Read>),
    /// Being read by a thread: the batch being taken, and the next ones.
    Reading(VecDeque<Read>, mpsc::Receiver<VecDeque<Read>>),
}

fn read(path: &Path) -> Read {
    input::source_language(path)
        .is_none()
        .then(|| input::map_file(path))
}

/// `paths` in batches of 1, 2, 4... up to [`BATCH`] inputs.
fn batches(paths: &[PathBuf]) -> impl Iterator<Item = &[PathBuf]> {
    let (mut rest, mut size) = (paths, 1);
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (now, later) = rest.split_at(size.min(rest.len()));
        rest = later;
        size = (size * 2).min(BATCH);
        Some(now)
    })
}

impl Inputs {
    /// Starts reading `paths`.
    pub fn read(paths: &[PathBuf]) -> Inputs {
        if paths.len() < THREAD_FROM {
            return Inputs::Done(paths.iter().map(|p| read(p)).collect());
        }
        let (tx, rx) = mpsc::sync_channel(BATCHES_AHEAD);
        let paths = paths.to_vec();
        let reader = std::thread::Builder::new()
            .name("remjit-read".into())
            .spawn(move || {
                for chunk in batches(&paths) {
                    // The links stopped (an error): read no further.
                    if tx.send(chunk.iter().map(|p| read(p)).collect()).is_err() {
                        break;
                    }
                }
            });
        match reader {
            Ok(_) => Inputs::Reading(VecDeque::new(), rx),
            // No thread: everything is read when asked for.
            Err(_) => Inputs::Done(VecDeque::new()),
        }
    }

    /// The next input as read; `None` when it is a source, or was not read ahead (the
    /// session then reads it itself).
    fn next(&mut self) -> Read {
        match self {
            Inputs::Done(q) => q.pop_front().flatten(),
            Inputs::Reading(batch, rx) => {
                if batch.is_empty() {
                    *batch = rx.recv().unwrap_or_default();
                }
                batch.pop_front().flatten()
            }
        }
    }

    /// Adds the next input, `path`, to the session.
    pub fn add_next(&mut self, session: &mut remjit::Session, path: &Path) -> remjit::Result<()> {
        match self.next() {
            Some(f) => session.add_read_file(path, f?),
            None => session.add_file(path),
        }
    }
}
