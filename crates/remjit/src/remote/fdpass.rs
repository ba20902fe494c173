//! Reading a unix socket with `recvmsg`, keeping the descriptors that arrive with the bytes
//! (SCM_RIGHTS): how our executor hands over the memfd behind shared JIT memory.

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Descriptors received so far, oldest first.
#[derive(Default)]
pub struct ReceivedFds {
    queue: Mutex<VecDeque<OwnedFd>>,
    arrived: Condvar,
    /// See [`ReceivedFds::exclusive`].
    calls: Mutex<()>,
}

impl ReceivedFds {
    /// Held from a call whose reply brings a descriptor until that descriptor is taken: two
    /// threads' calls then cannot take each other's descriptors.
    pub fn exclusive(&self) -> std::sync::MutexGuard<'_, ()> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the oldest received descriptor, waiting a little for it (it arrives with the reply
    /// that announces it, which the reader thread may still be handing over).
    pub fn take(&self) -> Option<OwnedFd> {
        let mut q = self.queue.lock().ok()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(fd) = q.pop_front() {
                return Some(fd);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return None;
            }
            q = self.arrived.wait_timeout(q, deadline - now).ok()?.0;
        }
    }
}

/// A reader over a unix socket that collects passed descriptors.
pub struct FdReader {
    sock: UnixStream,
    fds: Arc<ReceivedFds>,
}

impl FdReader {
    /// Wraps `sock` (a clone of the connection's socket).
    pub fn new(sock: UnixStream, fds: Arc<ReceivedFds>) -> Self {
        FdReader { sock, fds }
    }
}

impl Read for FdReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        const MAX_FDS: usize = 8;
        // SAFETY: recvmsg into `buf` and a local control buffer; received descriptors are
        // taken into OwnedFd at once (MSG_CMSG_CLOEXEC so they do not leak into children).
        unsafe {
            let space = libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<i32>()) as u32) as usize;
            let mut cbuf = vec![0u8; space];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space;
            let n = loop {
                let n = libc::recvmsg(self.sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                break n as usize;
            };
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            let mut got = Vec::new();
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c) as *const i32;
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..len / std::mem::size_of::<i32>() {
                        got.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            if !got.is_empty() {
                if let Ok(mut q) = self.fds.queue.lock() {
                    q.extend(got);
                }
                self.fds.arrived.notify_all();
            }
            Ok(n)
        }
    }
}
