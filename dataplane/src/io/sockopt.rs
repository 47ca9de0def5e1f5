//! Socket options the standard library and tokio do not offer, behind safe functions. Used by
//! the control daemon's BGP speaker (this module needs no DPDK).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `struct tcp_md5sig` from `<linux/tcp.h>`: 216 bytes.
#[repr(C)]
struct TcpMd5Sig {
    /// `struct __kernel_sockaddr_storage`: the peer's address.
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; libc::TCP_MD5SIG_MAXKEYLEN],
}

const _: () = assert!(size_of::<TcpMd5Sig>() == 216);

/// The longest key the kernel accepts (80 bytes).
pub const TCP_MD5_MAX_KEY: usize = libc::TCP_MD5SIG_MAXKEYLEN;

/// Installs (or, with an empty `key`, removes) the TCP MD5 signature key (RFC 2385) for
/// segments to and from `peer` on `socket` — before `connect` on an active socket, on the
/// listening socket for a passive one.
///
/// # Errors
///
/// `InvalidInput` for a key longer than [`TCP_MD5_MAX_KEY`]; otherwise the kernel's error
/// (`ENOENT` when removing a key that is not set).
pub fn set_tcp_md5sig(socket: BorrowedFd<'_>, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > TCP_MD5_MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a TCP MD5 key is at most {TCP_MD5_MAX_KEY} bytes, this one has {}",
                key.len()
            ),
        ));
    }
    // SAFETY: `sockaddr_storage` and the rest of `TcpMd5Sig` are plain integers and byte
    // arrays, for which all-zero is a valid value.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    match peer {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or_default(),
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than and aligned for `sockaddr_in`; the
            // write stays inside `sig.addr`.
            unsafe {
                std::ptr::write(
                    std::ptr::addr_of_mut!(sig.addr).cast::<libc::sockaddr_in>(),
                    sin,
                );
            }
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::sa_family_t::try_from(libc::AF_INET6).unwrap_or_default(),
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for `sockaddr_in6`.
            unsafe {
                std::ptr::write(
                    std::ptr::addr_of_mut!(sig.addr).cast::<libc::sockaddr_in6>(),
                    sin6,
                );
            }
        }
    }
    sig.keylen = u16::try_from(key.len()).unwrap_or(0);
    if let Some(dst) = sig.key.get_mut(..key.len()) {
        dst.copy_from_slice(key);
    }
    let len = libc::socklen_t::try_from(size_of::<TcpMd5Sig>()).unwrap_or(0);
    // SAFETY: `socket` is an open descriptor for the duration of the borrow; the option value
    // points at a live, initialised `TcpMd5Sig` of `len` bytes, which the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            std::ptr::addr_of!(sig).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn keys_are_set_and_removed_and_long_keys_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let peer: IpAddr = "127.0.0.2".parse().expect("ip");
        set_tcp_md5sig(l.as_fd(), peer, b"secret").expect("set");
        set_tcp_md5sig(l.as_fd(), peer, b"").expect("remove");
        let v6 = std::net::TcpListener::bind("[::1]:0");
        if let Ok(v6) = v6 {
            set_tcp_md5sig(v6.as_fd(), "::2".parse().expect("ip"), b"secret").expect("set v6");
        }
        let e = set_tcp_md5sig(l.as_fd(), peer, &[b'x'; 81]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_signed_listener_refuses_an_unsigned_client() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let addr = l.local_addr().expect("addr");
        set_tcp_md5sig(l.as_fd(), "127.0.0.1".parse().expect("ip"), b"secret").expect("set");
        // The kernel drops the unsigned SYN: the connect times out instead of succeeding.
        let r = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300));
        assert!(r.is_err(), "an unsigned connection got through");
    }
}
