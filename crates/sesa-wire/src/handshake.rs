//! Mutual authentication of two nodes that share the cluster secret.

use core::fmt;

use hmac::{KeyInit, Mac};

use crate::{Auth, Hello};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Domain separation: a MAC made for this purpose is useless for any other.
const LABEL: &[u8] = b"sesa-auth-v1";

/// The cluster secret: 32 bytes every node of an application holds.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    /// A secret from its bytes (draw them from a CSPRNG).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Secret(bytes)
    }

    /// A secret from 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Some(Secret(out))
    }

    /// The secret as 64 hex digits (to hand to a node being launched).
    pub fn to_hex(&self) -> alloc::string::String {
        use core::fmt::Write;
        let mut s = alloc::string::String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Who a node is: its id and generation (a restarted node comes back with a higher
/// generation, so the cluster can tell it from its previous life).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The node id.
    pub node: u32,
    /// The generation.
    pub generation: u64,
}

/// Why a handshake failed. The connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The peer claims our own node id.
    #[error("the peer claims this node's own id {0}")]
    SameNode(u32),
    /// The peer's MAC is wrong: it does not know the cluster secret.
    #[error("the peer failed to prove it knows the cluster secret")]
    BadMac,
    /// A message arrived out of order.
    #[error("handshake message out of order: {0}")]
    OutOfOrder(&'static str),
}

/// One end of the handshake (sans-IO): call [`hello`](Handshake::hello) and send it,
/// pass the peer's `Hello` to [`on_hello`](Handshake::on_hello) and send the `Auth` it
/// returns, pass the peer's `Auth` to [`on_auth`](Handshake::on_auth).
pub struct Handshake {
    me: Identity,
    nonce: [u8; 32],
    secret: Secret,
    peer: Option<Identity>,
}

impl Handshake {
    /// Starts a handshake for `me`, with a fresh random `nonce` (never reuse one).
    pub fn new(me: Identity, nonce: [u8; 32], secret: Secret) -> Self {
        Handshake {
            me,
            nonce,
            secret,
            peer: None,
        }
    }

    /// The `Hello` to send.
    pub fn hello(&self) -> Hello {
        Hello {
            node: self.me.node,
            generation: self.me.generation,
            nonce: self.nonce,
        }
    }

    /// Takes the peer's `Hello`; returns the `Auth` to send it.
    ///
    /// # Errors
    /// [`AuthError::SameNode`] if the peer claims our id; [`AuthError::OutOfOrder`] on a
    /// second `Hello`.
    pub fn on_hello(&mut self, hello: &Hello) -> Result<Auth, AuthError> {
        if self.peer.is_some() {
            return Err(AuthError::OutOfOrder("a second Hello"));
        }
        if hello.node == self.me.node {
            return Err(AuthError::SameNode(hello.node));
        }
        let peer = Identity {
            node: hello.node,
            generation: hello.generation,
        };
        self.peer = Some(peer);
        let mac = self
            .mac(&hello.nonce, self.me, peer)
            .finalize()
            .into_bytes();
        let mut out = [0u8; 32];
        out.copy_from_slice(&mac);
        Ok(Auth { mac: out })
    }

    /// Takes the peer's `Auth`; on success the peer is authenticated.
    ///
    /// # Errors
    /// [`AuthError::BadMac`] if the peer does not know the secret;
    /// [`AuthError::OutOfOrder`] if no `Hello` came first.
    pub fn on_auth(&self, auth: &Auth) -> Result<Identity, AuthError> {
        let peer = self
            .peer
            .ok_or(AuthError::OutOfOrder("Auth before Hello"))?;
        // The peer MACed *our* nonce with itself as the sender.
        self.mac(&self.nonce, peer, self.me)
            .verify_slice(&auth.mac)
            .map_err(|_| AuthError::BadMac)?;
        Ok(peer)
    }

    fn mac(&self, nonce: &[u8; 32], sender: Identity, receiver: Identity) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.secret.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(LABEL);
        mac.update(nonce);
        for id in [sender, receiver] {
            mac.update(&id.node.to_le_bytes());
            mac.update(&id.generation.to_le_bytes());
        }
        mac
    }
}
