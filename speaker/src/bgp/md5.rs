//! TCP-MD5 signatures (RFC 2385) on a BGP connection: one `setsockopt` with a
//! hand-declared `struct tcp_md5sig`, since no crate offers it. This is the
//! speaker's only `unsafe` outside the packet socket; keep it this small.

#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::SockAddr;

/// The longest key Linux accepts.
pub const MAX_KEY: usize = 80;

/// `struct tcp_md5sig` from `<linux/tcp.h>`.
#[repr(C)]
struct TcpMd5Sig {
    /// The peer's address (a `sockaddr_storage`).
    addr: libc::sockaddr_storage,
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_KEY],
}

/// Signs every segment to and from `peer` on `socket` with `key`. Set it before
/// connecting (a peer that requires a signature never answers an unsigned SYN).
/// An empty key removes the signature.
pub fn set_key(socket: &impl AsRawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a TCP-MD5 password is at most {MAX_KEY} bytes"),
        ));
    }
    let address = SockAddr::from(SocketAddr::new(peer, 0));
    let mut sig = TcpMd5Sig {
        // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
        addr: unsafe { std::mem::zeroed() },
        flags: 0,
        prefix_len: 0,
        key_len: key.len() as u16,
        ifindex: 0,
        key: [0; MAX_KEY],
    };
    sig.key[..key.len()].copy_from_slice(key);
    let length = (address.len() as usize).min(size_of::<libc::sockaddr_storage>());
    // SAFETY: both pointers are valid for `length` bytes and do not overlap;
    // SockAddr holds an initialised sockaddr of at least that length.
    unsafe {
        std::ptr::copy_nonoverlapping(
            address.as_ptr().cast::<u8>(),
            (&raw mut sig.addr).cast::<u8>(),
            length,
        );
    }
    // SAFETY: the fd is open for the duration of the call; the option value is
    // a fully initialised `tcp_md5sig` and its size is passed with it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&raw const sig).cast(),
            size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_struct_has_the_kernel_layout() {
        // 128 (address) + 1 + 1 + 2 + 4 + 80.
        assert_eq!(size_of::<TcpMd5Sig>(), 216);
    }

    #[test]
    fn a_key_is_accepted_on_a_tcp_socket_for_either_family() {
        let v4 = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        set_key(&v4, "192.0.2.1".parse().unwrap(), b"secret").unwrap();
        let v6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        set_key(&v6, "2001:db8::1".parse().unwrap(), b"secret").unwrap();
    }

    #[test]
    fn a_too_long_key_is_refused_before_the_kernel_sees_it() {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let error = set_key(&socket, "192.0.2.1".parse().unwrap(), &[b'x'; 81]).unwrap_err();
        assert!(error.to_string().contains("at most 80"));
    }
}
