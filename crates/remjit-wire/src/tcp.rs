//! TCP sessions: a peer whose host vanishes (power loss, a cut network) sends no FIN, so a
//! read waiting for its next frame would wait for ever. Keepalive probes bound that wait.

use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// Idle seconds before the first probe.
pub const KEEPALIVE_IDLE: i32 = 10;
/// Seconds between probes.
pub const KEEPALIVE_INTERVAL: i32 = 5;
/// Unanswered probes after which the connection fails (reads end with `ETIMEDOUT`).
pub const KEEPALIVE_PROBES: i32 = 3;

fn set(s: &TcpStream, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: setsockopt reads an int from a local for the length given; the descriptor
    // belongs to `s`, alive for the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Turns on keepalive probes on `s`: a silent, vanished peer is noticed within about
/// `KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES` seconds (25).
pub fn keep_alive(s: &TcpStream) -> std::io::Result<()> {
    set(s, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(s, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE)?;
    set(
        s,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        KEEPALIVE_INTERVAL,
    )?;
    set(s, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(s: &TcpStream, level: i32, name: i32) -> i32 {
        let mut v: i32 = -1;
        let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into a local int.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                level,
                name,
                (&mut v as *mut i32).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        v
    }

    #[test]
    fn probes_are_on_with_our_timings() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert_eq!(get(&s, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
        keep_alive(&s).unwrap();
        assert_ne!(get(&s, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
        assert_eq!(get(&s, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 10);
        assert_eq!(get(&s, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 5);
        assert_eq!(get(&s, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 3);
    }
}
