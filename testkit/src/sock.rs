//! Client TCP sockets with what std cannot set before `connect`: a chosen source address (all
//! of 127.0.0.0/8 is local on Linux, so one test can be many clients), a small receive buffer
//! (`SO_RCVBUF`) and a small maximum segment size (`TCP_MAXSEG`), like a slow, small-MTU link.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;

/// What to set on the socket before the handshake; `Default` sets nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Opts {
    /// Source address (any port).
    pub from: Option<Ipv4Addr>,
    /// `SO_RCVBUF` in bytes (the kernel raises tiny values to its minimum).
    pub rcvbuf: Option<libc::c_int>,
    /// `TCP_MAXSEG` in bytes.
    pub mss: Option<libc::c_int>,
}

/// A TCP connection to `to` (IPv4) with `opts` applied before `connect`; panics naming both
/// ends on failure.
pub fn connect(to: SocketAddr, opts: Opts) -> TcpStream {
    try_connect(to, opts).unwrap_or_else(|e| panic!("connect {opts:?} -> {to}: {e}"))
}

/// Like [`connect`], returning the error (e.g. refused while the listener is full).
pub fn try_connect(to: SocketAddr, opts: Opts) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only: {to}")
    };
    let remote = sockaddr(*to.ip(), to.port());
    let local = opts.from.map(|ip| sockaddr(ip, 0));
    let addr_len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let int_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: plain socket syscalls on a descriptor owned here until handed to `TcpStream` (or
    // closed on error); every pointer refers to a live local of the stated length.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let set = |level, name, value: Option<libc::c_int>| match value {
            Some(v) => libc::setsockopt(fd, level, name, (&raw const v).cast(), int_len) == 0,
            None => true,
        };
        let ok = set(libc::SOL_SOCKET, libc::SO_RCVBUF, opts.rcvbuf)
            && set(libc::IPPROTO_TCP, libc::TCP_MAXSEG, opts.mss)
            && local.is_none_or(|l| libc::bind(fd, (&raw const l).cast(), addr_len) == 0)
            && libc::connect(fd, (&raw const remote).cast(), addr_len) == 0;
        if !ok {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}
