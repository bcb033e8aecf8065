//! A node's side of the frontend's offload service: the legacy functions a node hands
//! to the frontend (the paper's LibOS model, section 4.3). Console output goes to the
//! frontend's terminal; files and environment variables are the frontend's, confined
//! to the directories the user granted (the service, in the `sesa` crate, says how).

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use sesa_ebb::{CoreId, EbbId};
use sesa_exec::{CallError, MessengerRef, RemoteError};

/// The service's method: print (`(Stream, &str)`).
pub const PRINT: u16 = 1;
/// The service's method: read a whole file (`&str` -> `Vec<u8>`).
pub const READ: u16 = 2;
/// The service's method: write a whole file (`(&str, Vec<u8>)`).
pub const WRITE: u16 = 3;
/// The service's method: a file's [`Stat`].
pub const STAT: u16 = 4;
/// The service's method: a directory's entries.
pub const LIST: u16 = 5;
/// The service's method: an environment variable.
pub const ENV: u16 = 6;

/// The most bytes one read or write moves.
pub const FILE_MAX: usize = 8 << 20;

/// Which output stream.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

/// A file's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// Size in bytes.
    pub len: u64,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// A node's handle on the frontend's offload service. `Copy`; usable from any core.
#[derive(Clone, Copy)]
pub struct OffloadClient {
    messenger: MessengerRef,
    frontend: u32,
    service: EbbId,
}

impl OffloadClient {
    /// The service `service` on node `frontend`.
    pub fn new(messenger: MessengerRef, frontend: u32, service: EbbId) -> Self {
        OffloadClient {
            messenger,
            frontend,
            service,
        }
    }

    /// The messenger it calls through.
    pub fn messenger(self) -> MessengerRef {
        self.messenger
    }

    async fn call<T: for<'a> Deserialize<'a>>(
        self,
        method: u16,
        arg: &impl Serialize,
    ) -> Result<T, CallError> {
        let arg = postcard::to_allocvec(arg).map_err(|_| CallError::Remote {
            node: self.frontend,
            error: RemoteError::Refused("encoding the request".into()),
        })?;
        let reply = self
            .messenger
            .call(self.frontend, CoreId::new(0), self.service, method, arg)
            .await?;
        postcard::from_bytes(&reply).map_err(|_| CallError::Remote {
            node: self.frontend,
            error: RemoteError::Refused("malformed reply".into()),
        })
    }

    /// Writes `text` to the frontend's stdout or stderr.
    ///
    /// # Errors
    /// The frontend cannot be reached.
    pub async fn print(self, stream: Stream, text: &str) -> Result<(), CallError> {
        self.call(PRINT, &(stream, text)).await
    }

    /// Reads a whole file (at most [`FILE_MAX`] bytes).
    ///
    /// # Errors
    /// Refused outside the grants, missing, or too large.
    pub async fn read(self, path: &str) -> Result<Vec<u8>, CallError> {
        self.call(READ, &path).await
    }

    /// Writes a whole file (at most [`FILE_MAX`] bytes).
    ///
    /// # Errors
    /// Refused outside the grants, or the write failed.
    pub async fn write(self, path: &str, data: Vec<u8>) -> Result<(), CallError> {
        self.call(WRITE, &(path, data)).await
    }

    /// A file's size and kind.
    ///
    /// # Errors
    /// Refused outside the grants, or missing.
    pub async fn stat(self, path: &str) -> Result<Stat, CallError> {
        self.call(STAT, &path).await
    }

    /// A directory's entries, sorted.
    ///
    /// # Errors
    /// Refused outside the grants, or not a directory.
    pub async fn list(self, path: &str) -> Result<Vec<String>, CallError> {
        self.call(LIST, &path).await
    }

    /// The frontend's value of environment variable `name`.
    ///
    /// # Errors
    /// The frontend cannot be reached.
    pub async fn env(self, name: &str) -> Result<Option<String>, CallError> {
        self.call(ENV, &name).await
    }
}
