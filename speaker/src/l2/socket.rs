//! The one place of the speaker's layer 2 with `unsafe`: an AF_PACKET socket on
//! one interface, with a kernel socket filter that lets through only ARP
//! requests and ICMPv6 Neighbor Solicitations, and that ignores what this host
//! sends. Behind it a safe, async API: receive a frame, send a frame.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// A classic BPF program: ARP with opcode 1 (request), or IPv6 carrying ICMPv6
/// type 135 (Neighbor Solicitation) right after a 40-byte header. Everything
/// else stays in the kernel.
const FILTER: [libc::sock_filter; 11] = [
    op(0x28, 0, 0, 12),     // 0: A = ethertype
    op(0x15, 0, 2, 0x0806), // 1: ARP? → 2, else → 4
    op(0x28, 0, 0, 20),     // 2: A = ARP opcode
    op(0x15, 5, 6, 1),      // 3: request? → 9 accept, else → 10 drop
    op(0x15, 0, 5, 0x86dd), // 4: IPv6? → 5, else → 10 drop
    op(0x30, 0, 0, 20),     // 5: A = next header
    op(0x15, 0, 3, 58),     // 6: ICMPv6? → 7, else → 10 drop
    op(0x30, 0, 0, 54),     // 7: A = ICMPv6 type
    op(0x15, 0, 1, 135),    // 8: Neighbor Solicitation? → 9, else → 10
    op(0x06, 0, 0, 0xffff), // 9: accept (up to 64 KiB)
    op(0x06, 0, 0, 0),      // 10: drop
];

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// A filtered AF_PACKET socket bound to one interface.
pub struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
}

impl PacketSocket {
    /// Opens the socket on the interface with index `ifindex`, in the network
    /// namespace of the calling thread.
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        PacketSocket::register(PacketSocket::open_fd(ifindex)?)
    }

    /// Makes an open descriptor (from [`open_fd`](Self::open_fd)) async; needs
    /// the tokio runtime.
    pub fn register(fd: OwnedFd) -> io::Result<PacketSocket> {
        // SAFETY: we own the descriptor and hand it over whole; nothing else
        // reads or closes it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(PacketSocket { fd })
    }

    /// Opens the filtered, bound descriptor; works on any thread, so it can be
    /// done inside another network namespace.
    pub fn open_fd(ifindex: u32) -> io::Result<OwnedFd> {
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let program = libc::sock_fprog {
            len: FILTER.len() as u16,
            filter: FILTER.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the program outlives the call; the kernel copies it.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&program as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        })?;
        let one: libc::c_int = 1;
        // SAFETY: an int option, passed by pointer and size.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
        // Bound only now, so no frame arrives before the filter is in place.
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = all;
        address.sll_ifindex = ifindex as i32;
        // SAFETY: the address is a valid sockaddr_ll of the size given.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(fd)
    }

    /// Waits for the next frame and copies it into `buffer`; returns its length.
    pub async fn receive(&self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|fd| {
                // SAFETY: the buffer is valid for its length.
                let n = unsafe {
                    libc::recv(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0)
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one complete Ethernet frame out of the interface.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            let result = guard.try_io(|fd| {
                // SAFETY: the frame is valid for its length.
                let n =
                    unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match result {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_jump_lands_inside_the_program() {
        for (i, instruction) in FILTER.iter().enumerate() {
            if instruction.code == 0x15 {
                assert!(i + 1 + usize::from(instruction.jt) < FILTER.len());
                assert!(i + 1 + usize::from(instruction.jf) < FILTER.len());
            }
        }
        assert_eq!(FILTER[9].k, 0xffff);
        assert_eq!(FILTER[10].k, 0);
    }
}
