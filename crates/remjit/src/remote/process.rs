//! The executor process remjit started, by exec (`std::process::Command`) or by fork: known by
//! its process id, reaped once.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};

/// A child process of ours that runs an executor.
#[derive(Debug)]
pub struct ExecutorProcess {
    pid: libc::pid_t,
    /// How it ended, once reaped (its pid may then belong to another process).
    status: Option<ExitStatus>,
}

impl ExecutorProcess {
    /// The process `child` (std's handle keeps nothing else of it: its standard streams are
    /// inherited, not piped).
    pub fn from_child(child: Child) -> ExecutorProcess {
        ExecutorProcess {
            pid: child.id() as libc::pid_t,
            status: None,
        }
    }

    /// Our forked child `pid`.
    pub(crate) fn forked(pid: libc::pid_t) -> ExecutorProcess {
        ExecutorProcess { pid, status: None }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// How it ended, reaping it if it has; `None` while it runs.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    /// Waits for it to end and reaps it.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(st) = self.reap(0)? {
                return Ok(st);
            }
        }
    }

    /// Kills it (SIGKILL) unless it has been reaped already.
    pub fn kill(&mut self) -> std::io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) of our own unreaped child: its pid cannot have been reused.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn reap(&mut self, flags: libc::c_int) -> std::io::Result<Option<ExitStatus>> {
        if let Some(st) = self.status {
            return Ok(Some(st));
        }
        let mut raw = 0;
        loop {
            // SAFETY: waitpid(2) of our own child into a local.
            let r = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
            if r == self.pid {
                let st = ExitStatus::from_raw(raw);
                self.status = Some(st);
                return Ok(Some(st));
            }
            if r == 0 {
                return Ok(None);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}
