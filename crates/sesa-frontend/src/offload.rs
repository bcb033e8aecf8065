//! Offload EBBs: the legacy functions nodes hand to the frontend (the paper's LibOS
//! model, section 4.3). Console output goes to the frontend's terminal. Files are the
//! frontend's, confined to the directories the user granted (`--grant DIR`). Environment
//! variables are the frontend's. To the user, the application behaves like one local
//! process.
//!
//! The service runs on the frontend; [`OffloadClient`] (in `sesa-node`, which every node
//! runs) is how a node's code reaches it.
//!
//! # Limits and confinement
//! A path is resolved against the frontend's working directory and canonicalised
//! (symlinks and `..` resolved). It is used only if the result lies inside a granted
//! directory, so nothing outside them can be named, not even through a symlink. Reads
//! and writes move at most [`FILE_MAX`] bytes per call. With no `--grant`, every file
//! operation is refused.

use std::path::{Path, PathBuf};

use sesa_exec::RemoteError;

use sesa_node::offload::{ENV, LIST, PRINT, READ, STAT, WRITE};
pub use sesa_node::offload::{FILE_MAX, OffloadClient, Stat, Stream};

/// The frontend's side: what nodes may touch.
pub struct Grants {
    dirs: Vec<PathBuf>,
    cwd: PathBuf,
}

impl Grants {
    /// Grants `dirs` (each must exist).
    ///
    /// # Errors
    /// A directory that does not exist or cannot be resolved.
    pub fn new(dirs: &[PathBuf]) -> anyhow::Result<Self> {
        let dirs = dirs
            .iter()
            .map(|d| {
                let c = d
                    .canonicalize()
                    .map_err(|e| anyhow::anyhow!("--grant {}: {e}", d.display()))?;
                anyhow::ensure!(c.is_dir(), "--grant {}: not a directory", d.display());
                Ok(c)
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Grants {
            dirs,
            cwd: std::env::current_dir()?,
        })
    }

    /// The real path for `path`, if it lies inside a grant. For a file about to be
    /// created, its directory must exist and lie inside a grant.
    fn confine(&self, path: &str, creating: bool) -> Result<PathBuf, RemoteError> {
        let refuse = |why: &str| RemoteError::Refused(format!("{path}: {why}"));
        if self.dirs.is_empty() {
            return Err(refuse(
                "no directory was granted to the application (--grant DIR)",
            ));
        }
        let wanted = self.cwd.join(Path::new(path));
        let real = match wanted.canonicalize() {
            Ok(real) => real,
            Err(_) if creating => {
                let (Some(dir), Some(name)) = (wanted.parent(), wanted.file_name()) else {
                    return Err(refuse("not a file path"));
                };
                dir.canonicalize()
                    .map_err(|e| refuse(&e.to_string()))?
                    .join(name)
            }
            Err(e) => return Err(refuse(&e.to_string())),
        };
        if self.dirs.iter().any(|d| real.starts_with(d)) {
            Ok(real)
        } else {
            Err(refuse("outside the granted directories"))
        }
    }

    /// Serves one offload call.
    pub fn serve(&self, method: u16, payload: &[u8]) -> Result<Vec<u8>, RemoteError> {
        let bad = || RemoteError::Refused("malformed offload request".into());
        let io = |e: std::io::Error| RemoteError::Refused(e.to_string());
        match method {
            PRINT => {
                let (stream, text): (Stream, String) =
                    postcard::from_bytes(payload).map_err(|_| bad())?;
                match stream {
                    Stream::Out => print!("{text}"),
                    Stream::Err => eprint!("{text}"),
                }
                Ok(Vec::new())
            }
            READ => {
                let path: String = postcard::from_bytes(payload).map_err(|_| bad())?;
                let real = self.confine(&path, false)?;
                let len = std::fs::metadata(&real).map_err(io)?.len();
                if len > FILE_MAX as u64 {
                    return Err(RemoteError::Refused(format!(
                        "{path}: {len} bytes is over the {FILE_MAX}-byte offload limit"
                    )));
                }
                sesa_node::encode_reply(&std::fs::read(&real).map_err(io)?)
            }
            WRITE => {
                let (path, data): (String, Vec<u8>) =
                    postcard::from_bytes(payload).map_err(|_| bad())?;
                if data.len() > FILE_MAX {
                    return Err(RemoteError::Refused(format!(
                        "{path}: over the offload limit"
                    )));
                }
                let real = self.confine(&path, true)?;
                std::fs::write(real, data).map_err(io)?;
                Ok(Vec::new())
            }
            STAT => {
                let path: String = postcard::from_bytes(payload).map_err(|_| bad())?;
                let m = std::fs::metadata(self.confine(&path, false)?).map_err(io)?;
                sesa_node::encode_reply(&Stat {
                    len: m.len(),
                    is_dir: m.is_dir(),
                })
            }
            LIST => {
                let path: String = postcard::from_bytes(payload).map_err(|_| bad())?;
                let mut names: Vec<String> = std::fs::read_dir(self.confine(&path, false)?)
                    .map_err(io)?
                    .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect();
                names.sort();
                sesa_node::encode_reply(&names)
            }
            ENV => {
                let name: String = postcard::from_bytes(payload).map_err(|_| bad())?;
                sesa_node::encode_reply(&std::env::var(name).ok())
            }
            _ => Err(RemoteError::NoHandler),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_confined_like_reads() {
        let root = std::env::temp_dir().join(format!("sesa-grants-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("g/sub")).unwrap();
        std::fs::create_dir_all(root.join("other")).unwrap();
        let grants = Grants {
            dirs: vec![root.join("g").canonicalize().unwrap()],
            cwd: root.clone(),
        };
        let ok = |p: &str| grants.confine(p, true).is_ok();
        assert!(ok("g/new.txt"), "a new file in a grant");
        assert!(ok("g/sub/new.txt"));
        assert!(!ok("other/new.txt"), "outside");
        assert!(!ok("g/../other/new.txt"), "escaping with ..");
        assert!(!ok("g/missing-dir/new.txt"), "its directory must exist");
        assert!(
            !ok(root.join("other/x").to_str().unwrap()),
            "absolute, outside"
        );
        let write = postcard::to_allocvec(&("g/out.txt", b"data".to_vec())).unwrap();
        assert!(grants.serve(WRITE, &write).is_ok());
        assert_eq!(std::fs::read(root.join("g/out.txt")).unwrap(), b"data");
        let stat = grants
            .serve(STAT, &postcard::to_allocvec(&"g/out.txt").unwrap())
            .unwrap();
        assert_eq!(
            postcard::from_bytes::<Stat>(&stat).unwrap(),
            Stat {
                len: 4,
                is_dir: false
            }
        );
        let list = grants
            .serve(LIST, &postcard::to_allocvec(&"g").unwrap())
            .unwrap();
        assert_eq!(
            postcard::from_bytes::<Vec<String>>(&list).unwrap(),
            ["out.txt", "sub"]
        );
        assert!(grants.serve(99, &[]).is_err());
        assert!(
            grants.serve(READ, &[0xff, 0xff]).is_err(),
            "malformed request"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
