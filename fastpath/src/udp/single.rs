//! One datagram at a time, for code outside a worker (the gateway's tokio transport):
//! binding a socket (dual stack on `[::]`), receiving with the destination address and
//! sending with a chosen source address, through the same control messages as the workers,
//! and with IPv4 addresses plain IPv4 on a dual-stack socket, as workers show them.
#![allow(unsafe_code)]

use super::cmsg::{self, ControlBuffer};
use super::sockaddr::{self, RawAddr};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};

/// Binds a UDP socket to `addr`. On the IPv6 unspecified address (`[::]`) the socket is
/// dual stack (`IPV6_V6ONLY` off, whatever `net.ipv6.bindv6only` says): IPv4 peers reach it
/// too and appear as v4-mapped addresses. On an unspecified address the socket reports
/// each datagram's destination ([`recv_from_to`], and workers do the same).
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    bind_with(addr, false)
}

/// `count` sockets bound to the same address with `SO_REUSEPORT`, as [`bind`] binds one:
/// the kernel spreads the datagrams of different peers over them (by address and port), so
/// that each of `count` workers receives on its own. On port 0 the first socket's port is
/// taken by the others. Other users cannot join: the kernel admits to a reuse-port group
/// only sockets of the same user.
pub fn bind_shared(addr: SocketAddr, count: usize) -> std::io::Result<Vec<UdpSocket>> {
    if count <= 1 {
        return Ok(vec![bind(addr)?]);
    }
    let first = bind_with(addr, true)?;
    let bound = SocketAddr::new(addr.ip(), first.local_addr()?.port());
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(bind_with(bound, true)?);
    }
    Ok(sockets)
}

fn bind_with(addr: SocketAddr, reuse_port: bool) -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{bind, setsockopt, socket, sockopt, AddressFamily, SockFlag};
    use nix::sys::socket::{SockType, SockaddrStorage};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    }
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    let socket = UdpSocket::from(fd);
    if addr.ip().is_unspecified() {
        cmsg::report_destinations(&socket, addr.ip())?;
    }
    Ok(socket)
}

/// Receives one datagram into `buffer` (non-blocking when the socket is): its length
/// (truncated to the buffer), source, and destination when the socket reports it (IPv4
/// ones plain IPv4 on a dual-stack socket).
pub fn recv_from_to(
    socket: &impl AsFd,
    buffer: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    let mut name = [0u8; 128];
    let mut control = ControlBuffer::default();
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = name.as_mut_ptr().cast();
    msg.msg_namelen = name.len() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg::SPACE;
    // SAFETY: the header points at `name`, `control` and `iov` (into `buffer`), all live
    // for the call, with their true lengths.
    let received = unsafe { libc::recvmsg(socket.as_fd().as_raw_fd(), &mut msg, 0) };
    let len = usize::try_from(received).map_err(|_| std::io::Error::last_os_error())?;
    let name_len = (msg.msg_namelen as usize).min(name.len());
    let from = sockaddr::parse(&name[..name_len])
        .ok_or_else(|| std::io::Error::other("datagram from an address of another family"))?;
    let to = match msg.msg_flags & libc::MSG_CTRUNC {
        0 => cmsg::arrival(&control.0[..msg.msg_controllen.min(cmsg::SPACE)]).to,
        _ => None,
    };
    Ok((
        len.min(buffer.len()),
        sockaddr::canonical(from),
        to.map(|ip| ip.to_canonical()),
    ))
}

/// Sends `bytes` to `to` from source address `from` (None: the kernel chooses; see
/// [`super::Io::send_from`]); IPv4 addresses go v4-mapped on an IPv6 socket.
pub fn send_from_to(
    socket: &impl AsFd,
    from: Option<IpAddr>,
    to: SocketAddr,
    bytes: &[u8],
) -> std::io::Result<usize> {
    use nix::sys::socket::{getsockname, SockaddrLike, SockaddrStorage};
    let bound = getsockname::<SockaddrStorage>(socket.as_fd().as_raw_fd())?;
    let v6 = bound.family() == Some(nix::sys::socket::AddressFamily::Inet6);
    let to = SocketAddr::new(sockaddr::in_family(v6, to.ip()), to.port());
    let from = from.map(|ip| sockaddr::in_family(v6, ip));
    let mut addr = RawAddr::new(to);
    let mut control = ControlBuffer::default();
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr();
    msg.msg_namelen = addr.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(from) = from {
        msg.msg_controllen = cmsg::source(from, &mut control);
        msg.msg_control = control.0.as_mut_ptr().cast();
    }
    // SAFETY: the header points at `addr`, `control` and `iov` (into `bytes`, which the
    // kernel only reads), all live for the call, with their true lengths.
    let sent = unsafe { libc::sendmsg(socket.as_fd().as_raw_fd(), &msg, 0) };
    usize::try_from(sent).map_err(|_| std::io::Error::last_os_error())
}
