//! Typed remote services: requests, replies and errors as types, method ids explicit.
//!
//! A [`Service`] names its request type (usually an enum with a variant per method), its
//! reply type and its error type, and gives each request its **stable method id** in
//! one place, [`Service::method`] (a `match`: ids are never renumbered, and a request
//! whose id and body disagree is refused, which catches a peer built from another
//! version). On the wire a call is the messenger's: the method id, then the request
//! encoded with postcard; the reply is `Result<Reply, Error>`, encoded the same way, so
//! the service's own failures reach the caller as its error type, not as strings.
//!
//! The server side is [`serve`] (an async handler, on the service EBB's home core) or,
//! for a rep served with [`Messenger::serve`](crate::Messenger), [`handle`] inside its
//! [`RemoteRep::handle`](crate::RemoteRep::handle). The client side is [`Client`].
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use sesa_exec::service::Service;
//!
//! /// A counter served on one node.
//! struct Tally;
//!
//! #[derive(Serialize, Deserialize)]
//! enum TallyRequest {
//!     Add(u64),
//!     Read,
//! }
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! enum TallyReply {
//!     Added,
//!     Total(u64),
//! }
//!
//! #[derive(Serialize, Deserialize, Debug, thiserror::Error)]
//! enum TallyError {
//!     #[error("the tally would overflow")]
//!     Overflow,
//! }
//!
//! impl Service for Tally {
//!     const NAME: &'static str = "tally";
//!     type Request = TallyRequest;
//!     type Reply = TallyReply;
//!     type Error = TallyError;
//!
//!     fn method(request: &TallyRequest) -> u16 {
//!         match request {
//!             TallyRequest::Add(_) => 1,
//!             TallyRequest::Read => 2,
//!         }
//!     }
//! }
//! ```

use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sesa_ebb::{CoreId, EbbId, NodeId};
use sesa_event::EventError;

use crate::{CallError, Identity, MessengerRef, RemoteError, Request};

/// A remote service's types and method ids.
pub trait Service: 'static {
    /// Its name, for errors and logs.
    const NAME: &'static str;
    /// What a caller asks (usually an enum, a variant per method).
    type Request: Serialize + DeserializeOwned + 'static;
    /// What it answers.
    type Reply: Serialize + DeserializeOwned + 'static;
    /// Its own failures (a typed enum).
    type Error: Serialize + DeserializeOwned + fmt::Display + fmt::Debug + 'static;

    /// The request's stable method id. Never renumber one: peers of other versions
    /// rely on it.
    fn method(request: &Self::Request) -> u16;
}

/// Why a call to a [`Service`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError<E: fmt::Display + fmt::Debug> {
    /// The call did not complete: not connected, the peer lost, refused by the
    /// messenger, or the service is not served there.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The service answered with its own error.
    #[error("{0}")]
    Failed(E),
    /// The request could not be encoded, or the reply did not decode as the service's
    /// (a peer of another version).
    #[error("service {service}: {what}")]
    Codec {
        /// [`Service::NAME`].
        service: &'static str,
        /// What did not encode or decode.
        what: &'static str,
    },
}

/// A typed client of service `S` at one EBB on one node. `Copy`; usable from any core.
pub struct Client<S> {
    messenger: MessengerRef,
    node: NodeId,
    core: CoreId,
    ebb: EbbId,
    service: PhantomData<fn() -> S>,
}

impl<S> Clone for Client<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Client<S> {}

impl<S> fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("node", &self.node)
            .field("core", &self.core)
            .field("ebb", &self.ebb)
            .finish()
    }
}

impl<S: Service> Client<S> {
    /// The service served at EBB `ebb` of node `node`, called on its `core`.
    pub fn new(messenger: MessengerRef, node: NodeId, core: CoreId, ebb: EbbId) -> Self {
        Client {
            messenger,
            node,
            core,
            ebb,
            service: PhantomData,
        }
    }

    /// Calls the service.
    ///
    /// # Errors
    /// The call failed ([`ServiceError::Call`]), the service failed
    /// ([`ServiceError::Failed`]), or the request or reply did not encode or decode.
    pub async fn call(self, request: S::Request) -> Result<S::Reply, ServiceError<S::Error>> {
        self.call_ref(&request).await
    }

    /// Calls the service with a request the caller keeps (to send it again, or to take
    /// back what it holds, without a copy).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn call_ref(self, request: &S::Request) -> Result<S::Reply, ServiceError<S::Error>> {
        let method = S::method(request);
        let payload = postcard::to_allocvec(request).map_err(|_| ServiceError::Codec {
            service: S::NAME,
            what: "the request does not encode",
        })?;
        let reply = self
            .messenger
            .call(self.node, self.core, self.ebb, method, payload)
            .await?;
        match postcard::from_bytes::<Result<S::Reply, S::Error>>(&reply) {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(ServiceError::Failed(e)),
            Err(_) => Err(ServiceError::Codec {
                service: S::NAME,
                what: "the reply does not decode",
            }),
        }
    }
}

/// Decodes a call to `S` as its server does: the request, if its body decodes and
/// agrees with `method` (else the refusal the caller gets). Public for the fuzz targets.
///
/// # Errors
/// The body does not decode as a request of `S`, or names another method.
pub fn decode_request<S: Service>(method: u16, payload: &[u8]) -> Result<S::Request, RemoteError> {
    let request: S::Request = postcard::from_bytes(payload).map_err(|_| {
        RemoteError::Refused(alloc::format!(
            "a malformed {} request (method {method})",
            S::NAME
        ))
    })?;
    if S::method(&request) != method {
        return Err(RemoteError::Refused(alloc::format!(
            "a {} request whose method id {method} does not match its body",
            S::NAME
        )));
    }
    Ok(request)
}

/// Encodes a handler's result as the reply.
fn encode<S: Service>(result: &Result<S::Reply, S::Error>) -> Result<Vec<u8>, RemoteError> {
    postcard::to_allocvec(result)
        .map_err(|_| RemoteError::Refused(alloc::format!("{}: the reply does not encode", S::NAME)))
}

/// Handles one call to `S` with `f`: for a rep's [`RemoteRep::handle`](crate::RemoteRep).
///
/// # Errors
/// The request is malformed, or the reply does not encode.
pub fn handle<S: Service>(
    request: Request<'_>,
    f: impl FnOnce(Identity, S::Request) -> Result<S::Reply, S::Error>,
) -> Result<Vec<u8>, RemoteError> {
    let decoded = decode_request::<S>(request.method, request.payload)?;
    encode::<S>(&f(request.from, decoded))
}

/// Serves `S` at EBB `ebb` on this node with the async `handler` (run on the messenger's
/// home core, one call at a time per task, many at once).
///
/// # Errors
/// The messenger cannot be reached.
pub async fn serve<S, F, Fut>(
    messenger: MessengerRef,
    ebb: EbbId,
    handler: F,
) -> Result<(), EventError>
where
    S: Service,
    F: Fn(Identity, S::Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S::Reply, S::Error>> + 'static,
{
    let handler = alloc::sync::Arc::new(handler);
    messenger
        .serve_async(ebb, move |from, method, payload| {
            let handler = handler.clone();
            async move {
                let request = decode_request::<S>(method, &payload)?;
                encode::<S>(&handler(from, request).await)
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    struct Echo;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum EchoRequest {
        Say(u32),
        Fail,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, thiserror::Error)]
    #[error("echo failed")]
    struct EchoError;

    impl Service for Echo {
        const NAME: &'static str = "echo";
        type Request = EchoRequest;
        type Reply = u32;
        type Error = EchoError;

        fn method(request: &EchoRequest) -> u16 {
            match request {
                EchoRequest::Say(_) => 1,
                EchoRequest::Fail => 2,
            }
        }
    }

    fn call(method: u16, payload: &[u8]) -> Result<Vec<u8>, RemoteError> {
        let from = Identity {
            node: NodeId::new(1),
            generation: 1,
        };
        handle::<Echo>(
            Request {
                from,
                method,
                payload,
            },
            |_, request| match request {
                EchoRequest::Say(n) => Ok(n + 1),
                EchoRequest::Fail => Err(EchoError),
            },
        )
    }

    #[test]
    fn replies_and_typed_errors_round_trip() {
        let say = postcard::to_allocvec(&EchoRequest::Say(41)).unwrap();
        let reply = call(1, &say).unwrap();
        assert_eq!(
            postcard::from_bytes::<Result<u32, EchoError>>(&reply).unwrap(),
            Ok(42)
        );
        let fail = postcard::to_allocvec(&EchoRequest::Fail).unwrap();
        let reply = call(2, &fail).unwrap();
        assert_eq!(
            postcard::from_bytes::<Result<u32, EchoError>>(&reply).unwrap(),
            Err(EchoError)
        );
    }

    #[test]
    fn an_ebb_id_travels_as_its_raw_value_and_a_value_no_id_has_is_refused() {
        let id = EbbId::from_raw((7 << 32) | 3).unwrap();
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&id.raw()).unwrap());
        assert_eq!(postcard::from_bytes::<EbbId>(&bytes).unwrap(), id);
        // Generation 0: no EBB has it.
        let bad = postcard::to_allocvec(&3u64).unwrap();
        assert!(postcard::from_bytes::<EbbId>(&bad).is_err());
    }

    #[test]
    fn a_method_id_that_disagrees_with_the_body_is_refused() {
        let say = postcard::to_allocvec(&EchoRequest::Say(1)).unwrap();
        assert!(matches!(call(2, &say), Err(RemoteError::Refused(_))));
        assert!(matches!(
            call(1, &[0xff, 0xff, 0xff]),
            Err(RemoteError::Refused(_))
        ));
    }
}
