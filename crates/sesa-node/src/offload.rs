//! A node's side of the frontend's offload service: the legacy functions a node hands
//! to the frontend (the paper's LibOS model, section 4.3). Console output goes to the
//! frontend's terminal; files and environment variables are the frontend's, confined
//! to the directories the user granted (the service, in the `sesa` crate, says how).

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use sesa_ebb::{CoreId, EbbId, NodeId};
use sesa_exec::{Client, MessengerRef, ServiceError};

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

/// The frontend's offload service ([`Offload`] requests).
pub struct OffloadService;

/// What a node asks of the frontend.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Offload {
    /// Write text to the frontend's stdout or stderr.
    Print(Stream, String),
    /// Read a whole file (at most [`FILE_MAX`] bytes).
    Read(String),
    /// Write a whole file (at most [`FILE_MAX`] bytes).
    Write(String, #[serde(with = "serde_bytes")] Vec<u8>),
    /// A file's [`Stat`].
    Stat(String),
    /// A directory's entries, sorted.
    List(String),
    /// An environment variable of the frontend.
    Env(String),
}

/// The frontend's answers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum OffloadReply {
    /// Printed.
    Printed,
    /// A file's bytes.
    Read(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Written.
    Written,
    /// A file's metadata.
    Stat(Stat),
    /// A directory's entries.
    List(Vec<String>),
    /// A variable's value, if it is set.
    Env(Option<String>),
}

/// Why the frontend refused or failed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum OffloadError {
    /// No directory was granted to the application (`--grant DIR`).
    NothingGranted {
        /// The path asked for.
        path: String,
    },
    /// The path resolves outside every granted directory.
    OutsideGrants {
        /// The path asked for.
        path: String,
    },
    /// More than [`FILE_MAX`] bytes.
    TooLarge {
        /// The path asked for.
        path: String,
        /// Its size, or the size written.
        bytes: u64,
    },
    /// The frontend's file system failed.
    Io {
        /// The path asked for.
        path: String,
        /// The OS's error.
        error: String,
    },
}

impl core::fmt::Display for OffloadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OffloadError::NothingGranted { path } => write!(
                f,
                "{path}: no directory was granted to the application (--grant DIR)"
            ),
            OffloadError::OutsideGrants { path } => {
                write!(f, "{path}: outside the granted directories")
            }
            OffloadError::TooLarge { path, bytes } => write!(
                f,
                "{path}: {bytes} bytes is over the {FILE_MAX}-byte offload limit"
            ),
            OffloadError::Io { path, error } => write!(f, "{path}: {error}"),
        }
    }
}

impl sesa_exec::Service for OffloadService {
    const NAME: &'static str = "offload";
    type Request = Offload;
    type Reply = OffloadReply;
    type Error = OffloadError;

    fn method(request: &Offload) -> u16 {
        match request {
            Offload::Print(..) => 1,
            Offload::Read(_) => 2,
            Offload::Write(..) => 3,
            Offload::Stat(_) => 4,
            Offload::List(_) => 5,
            Offload::Env(_) => 6,
        }
    }
}

/// Why an offloaded call failed.
pub type OffloadCallError = ServiceError<OffloadError>;

/// A node's handle on the frontend's offload service. `Copy`; usable from any core.
#[derive(Clone, Copy)]
pub struct OffloadClient {
    client: Client<OffloadService>,
    messenger: MessengerRef,
}

impl OffloadClient {
    /// The service `service` on node `frontend`.
    pub fn new(messenger: MessengerRef, frontend: NodeId, service: EbbId) -> Self {
        OffloadClient {
            client: Client::new(messenger, frontend, CoreId::new(0), service),
            messenger,
        }
    }

    /// The messenger it calls through.
    pub fn messenger(self) -> MessengerRef {
        self.messenger
    }

    async fn call(self, request: Offload) -> Result<OffloadReply, OffloadCallError> {
        self.client.call(request).await
    }

    /// Writes `text` to the frontend's stdout or stderr.
    ///
    /// # Errors
    /// The frontend cannot be reached.
    pub async fn print(self, stream: Stream, text: &str) -> Result<(), OffloadCallError> {
        self.call(Offload::Print(stream, text.into()))
            .await
            .map(drop)
    }

    /// Reads a whole file (at most [`FILE_MAX`] bytes).
    ///
    /// # Errors
    /// Refused outside the grants, missing, or too large.
    pub async fn read(self, path: &str) -> Result<Vec<u8>, OffloadCallError> {
        match self.call(Offload::Read(path.into())).await? {
            OffloadReply::Read(bytes) => Ok(bytes),
            _ => Err(unexpected()),
        }
    }

    /// Writes a whole file (at most [`FILE_MAX`] bytes).
    ///
    /// # Errors
    /// Refused outside the grants, or the write failed.
    pub async fn write(self, path: &str, data: Vec<u8>) -> Result<(), OffloadCallError> {
        self.call(Offload::Write(path.into(), data)).await.map(drop)
    }

    /// A file's size and kind.
    ///
    /// # Errors
    /// Refused outside the grants, or missing.
    pub async fn stat(self, path: &str) -> Result<Stat, OffloadCallError> {
        match self.call(Offload::Stat(path.into())).await? {
            OffloadReply::Stat(stat) => Ok(stat),
            _ => Err(unexpected()),
        }
    }

    /// A directory's entries, sorted.
    ///
    /// # Errors
    /// Refused outside the grants, or not a directory.
    pub async fn list(self, path: &str) -> Result<Vec<String>, OffloadCallError> {
        match self.call(Offload::List(path.into())).await? {
            OffloadReply::List(names) => Ok(names),
            _ => Err(unexpected()),
        }
    }

    /// The frontend's value of environment variable `name`.
    ///
    /// # Errors
    /// The frontend cannot be reached.
    pub async fn env(self, name: &str) -> Result<Option<String>, OffloadCallError> {
        match self.call(Offload::Env(name.into())).await? {
            OffloadReply::Env(value) => Ok(value),
            _ => Err(unexpected()),
        }
    }
}

/// A reply of the wrong kind for the request (a frontend of another version).
fn unexpected() -> OffloadCallError {
    ServiceError::Codec {
        service: "offload",
        what: "a reply of another kind than the request's",
    }
}
