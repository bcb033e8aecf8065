//! The platform seam's network, on tokio's sockets (each core's tokio runtime drives
//! the sockets its events created).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use sesa_event::net::{Accepted, Connecting, Net, NetError, TcpListener, TcpStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(crate) struct HostedNet;

fn net_error(e: io::Error) -> NetError {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => NetError::Refused,
        ConnectionReset | ConnectionAborted => NetError::Reset,
        BrokenPipe => NetError::BrokenPipe,
        AddrInUse => NetError::AddrInUse,
        AddrNotAvailable => NetError::AddrNotAvailable,
        TimedOut => NetError::TimedOut,
        UnexpectedEof => NetError::UnexpectedEof,
        _ => NetError::Other(e.to_string()),
    }
}

impl Net for HostedNet {
    fn listen(&self, addr: SocketAddr) -> Result<Box<dyn TcpListener>, NetError> {
        let std = std::net::TcpListener::bind(addr).map_err(net_error)?;
        std.set_nonblocking(true).map_err(net_error)?;
        let listener = tokio::net::TcpListener::from_std(std).map_err(net_error)?;
        Ok(Box::new(HostedListener(listener)))
    }

    fn listen_shared(&self, addr: SocketAddr) -> Result<Box<dyn TcpListener>, NetError> {
        // SO_REUSEPORT: the kernel spreads incoming connections over every socket
        // bound to the address by the same user, by a hash of the connection's
        // addresses. The cores then accept independently: no core hands connections
        // out, and a connection lives on the core whose loop accepted it.
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(net_error)?;
        socket.set_reuseaddr(true).map_err(net_error)?;
        socket.set_reuseport(true).map_err(net_error)?;
        socket.bind(addr).map_err(net_error)?;
        let listener = socket.listen(1024).map_err(net_error)?;
        Ok(Box::new(HostedListener(listener)))
    }

    fn connect(&self, addr: SocketAddr) -> Connecting {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(net_error)?;
            Ok(Box::new(HostedStream(stream)) as Box<dyn TcpStream>)
        })
    }
}

struct HostedListener(tokio::net::TcpListener);

impl TcpListener for HostedListener {
    fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.0.local_addr().map_err(net_error)
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<Accepted, NetError>> {
        self.0.poll_accept(cx).map(|r| {
            r.map(|(s, peer)| (Box::new(HostedStream(s)) as Box<dyn TcpStream>, peer))
                .map_err(net_error)
        })
    }
}

struct HostedStream(tokio::net::TcpStream);

impl TcpStream for HostedStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, NetError>> {
        let mut buf = ReadBuf::new(buf);
        Pin::new(&mut self.0)
            .poll_read(cx, &mut buf)
            .map(|r| r.map(|()| buf.filled().len()).map_err(net_error))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, NetError>> {
        Pin::new(&mut self.0).poll_write(cx, buf).map_err(net_error)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(net_error)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        Pin::new(&mut self.0).poll_shutdown(cx).map_err(net_error)
    }

    fn peer_addr(&self) -> Result<SocketAddr, NetError> {
        self.0.peer_addr().map_err(net_error)
    }

    fn set_nodelay(&self, nodelay: bool) -> Result<(), NetError> {
        self.0.set_nodelay(nodelay).map_err(net_error)
    }
}
