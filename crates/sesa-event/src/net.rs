//! The network part of the platform seam: TCP, as poll-based traits.
//!
//! The hosted platform implements these on tokio; the native kernel on its own stack;
//! the simulator on a simulated network. [`Listener`] and [`Stream`] add the async
//! methods applications use.

use alloc::boxed::Box;
use alloc::string::String;
use core::future::{Future, poll_fn};
use core::net::SocketAddr;
use core::pin::Pin;
use core::task::{Context, Poll};

/// Why a network operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Nobody listens at the address.
    #[error("connection refused")]
    Refused,
    /// The peer reset the connection.
    #[error("connection reset by peer")]
    Reset,
    /// Writing to a connection the peer has closed.
    #[error("broken pipe")]
    BrokenPipe,
    /// The address is already in use.
    #[error("address in use")]
    AddrInUse,
    /// The address is not local, or not valid here.
    #[error("address not available")]
    AddrNotAvailable,
    /// The operation timed out.
    #[error("timed out")]
    TimedOut,
    /// The stream ended before the expected number of bytes.
    #[error("unexpected end of stream")]
    UnexpectedEof,
    /// Anything else, with the platform's description.
    #[error("{0}")]
    Other(String),
}

/// An accepted connection and its peer's address.
pub type Accepted = (Box<dyn TcpStream>, SocketAddr);

/// A connection being established.
pub type Connecting = Pin<Box<dyn Future<Output = Result<Box<dyn TcpStream>, NetError>>>>;

/// A listening TCP socket.
pub trait TcpListener {
    /// The address it listens on (with the port the OS chose, for port 0).
    ///
    /// # Errors
    /// The platform's error.
    fn local_addr(&self) -> Result<SocketAddr, NetError>;
    /// Polls for the next connection.
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<Accepted, NetError>>;
}

/// A connected TCP socket.
pub trait TcpStream {
    /// Reads into `buf`; `Ok(0)` is the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, NetError>>;
    /// Writes some of `buf`.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, NetError>>;
    /// Flushes buffered writes.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), NetError>>;
    /// Shuts the write half down.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), NetError>>;
    /// The peer's address.
    ///
    /// # Errors
    /// The platform's error.
    fn peer_addr(&self) -> Result<SocketAddr, NetError>;
    /// Disables Nagle's algorithm (send small writes at once).
    ///
    /// # Errors
    /// The platform's error.
    fn set_nodelay(&self, nodelay: bool) -> Result<(), NetError>;
}

/// The network of a platform.
pub trait Net {
    /// Binds and listens on `addr`.
    ///
    /// # Errors
    /// The platform's error, e.g. [`NetError::AddrInUse`].
    fn listen(&self, addr: SocketAddr) -> Result<Box<dyn TcpListener>, NetError>;
    /// Binds and listens on `addr` so that every shared listener of this node on the
    /// same address (typically one per core) takes a share of the incoming connections,
    /// spread by the platform. Binding port 0 picks a port; the other cores then bind
    /// the address the first one got.
    ///
    /// # Errors
    /// As [`listen`](Net::listen).
    fn listen_shared(&self, addr: SocketAddr) -> Result<Box<dyn TcpListener>, NetError>;
    /// Connects to `addr`.
    fn connect(&self, addr: SocketAddr) -> Connecting;
}

/// A listening socket with async methods.
pub struct Listener(Box<dyn TcpListener>);

impl Listener {
    /// Wraps a platform listener.
    pub fn new(inner: Box<dyn TcpListener>) -> Self {
        Listener(inner)
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// The platform's error.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.0.local_addr()
    }

    /// The next connection and its peer's address.
    ///
    /// # Errors
    /// The platform's error.
    pub async fn accept(&self) -> Result<(Stream, SocketAddr), NetError> {
        let (stream, peer) = poll_fn(|cx| self.0.poll_accept(cx)).await?;
        Ok((Stream(stream), peer))
    }
}

/// A connected socket with async methods.
pub struct Stream(Box<dyn TcpStream>);

impl Stream {
    /// Wraps a platform stream.
    pub fn new(inner: Box<dyn TcpStream>) -> Self {
        Stream(inner)
    }

    /// Polls a read into `buf`; `Ok(0)` is the end of the stream. For drivers that read
    /// and write one stream from a single task.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, NetError>> {
        self.0.poll_read(cx, buf)
    }

    /// Polls a write of some of `buf`.
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, NetError>> {
        self.0.poll_write(cx, buf)
    }

    /// Reads into `buf`; `Ok(0)` is the end of the stream.
    ///
    /// # Errors
    /// The platform's error.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        poll_fn(|cx| self.0.poll_read(cx, buf)).await
    }

    /// Reads exactly `buf.len()` bytes.
    ///
    /// # Errors
    /// [`NetError::UnexpectedEof`] if the stream ends first; the platform's error.
    pub async fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<(), NetError> {
        while !buf.is_empty() {
            match self.read(buf).await? {
                0 => return Err(NetError::UnexpectedEof),
                n => buf = &mut buf[n..],
            }
        }
        Ok(())
    }

    /// Writes all of `buf`.
    ///
    /// # Errors
    /// The platform's error.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> Result<(), NetError> {
        while !buf.is_empty() {
            let n = poll_fn(|cx| self.0.poll_write(cx, buf)).await?;
            if n == 0 {
                return Err(NetError::BrokenPipe);
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Flushes buffered writes.
    ///
    /// # Errors
    /// The platform's error.
    pub async fn flush(&mut self) -> Result<(), NetError> {
        poll_fn(|cx| self.0.poll_flush(cx)).await
    }

    /// Shuts the write half down.
    ///
    /// # Errors
    /// The platform's error.
    pub async fn shutdown(&mut self) -> Result<(), NetError> {
        poll_fn(|cx| self.0.poll_shutdown(cx)).await
    }

    /// The peer's address.
    ///
    /// # Errors
    /// The platform's error.
    pub fn peer_addr(&self) -> Result<SocketAddr, NetError> {
        self.0.peer_addr()
    }

    /// Disables Nagle's algorithm.
    ///
    /// # Errors
    /// The platform's error.
    pub fn set_nodelay(&self, nodelay: bool) -> Result<(), NetError> {
        self.0.set_nodelay(nodelay)
    }
}
