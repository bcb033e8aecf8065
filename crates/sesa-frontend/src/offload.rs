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

pub use sesa_node::offload::{
    FILE_MAX, Offload, OffloadClient, OffloadError, OffloadReply, Stat, Stream,
};

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
    fn confine(&self, path: &str, creating: bool) -> Result<PathBuf, OffloadError> {
        let io = |e: std::io::Error| OffloadError::Io {
            path: path.into(),
            error: e.to_string(),
        };
        if self.dirs.is_empty() {
            return Err(OffloadError::NothingGranted { path: path.into() });
        }
        let wanted = self.cwd.join(Path::new(path));
        let real = match wanted.canonicalize() {
            Ok(real) => real,
            Err(_) if creating => {
                let (Some(dir), Some(name)) = (wanted.parent(), wanted.file_name()) else {
                    return Err(OffloadError::Io {
                        path: path.into(),
                        error: "not a file path".into(),
                    });
                };
                dir.canonicalize().map_err(io)?.join(name)
            }
            Err(e) => return Err(io(e)),
        };
        if self.dirs.iter().any(|d| real.starts_with(d)) {
            Ok(real)
        } else {
            Err(OffloadError::OutsideGrants { path: path.into() })
        }
    }

    /// Serves one offload request.
    ///
    /// # Errors
    /// A path outside the grants, a file too large, or the file system's failure.
    pub fn serve(&self, request: Offload) -> Result<OffloadReply, OffloadError> {
        let io = |path: &str| {
            let path = path.to_owned();
            move |e: std::io::Error| OffloadError::Io {
                path,
                error: e.to_string(),
            }
        };
        let too_large = |path: &str, bytes: u64| OffloadError::TooLarge {
            path: path.into(),
            bytes,
        };
        match request {
            Offload::Print(stream, text) => {
                match stream {
                    Stream::Out => print!("{text}"),
                    Stream::Err => eprint!("{text}"),
                }
                Ok(OffloadReply::Printed)
            }
            Offload::Read(path) => {
                let real = self.confine(&path, false)?;
                let len = std::fs::metadata(&real).map_err(io(&path))?.len();
                if len > FILE_MAX as u64 {
                    return Err(too_large(&path, len));
                }
                Ok(OffloadReply::Read(std::fs::read(&real).map_err(io(&path))?))
            }
            Offload::Write(path, data) => {
                if data.len() > FILE_MAX {
                    return Err(too_large(&path, data.len() as u64));
                }
                let real = self.confine(&path, true)?;
                std::fs::write(real, data).map_err(io(&path))?;
                Ok(OffloadReply::Written)
            }
            Offload::Stat(path) => {
                let m = std::fs::metadata(self.confine(&path, false)?).map_err(io(&path))?;
                Ok(OffloadReply::Stat(Stat {
                    len: m.len(),
                    is_dir: m.is_dir(),
                }))
            }
            Offload::List(path) => {
                let mut names: Vec<String> = std::fs::read_dir(self.confine(&path, false)?)
                    .map_err(io(&path))?
                    .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect();
                names.sort();
                Ok(OffloadReply::List(names))
            }
            Offload::Env(name) => Ok(OffloadReply::Env(std::env::var(name).ok())),
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
        let write = Offload::Write("g/out.txt".into(), b"data".to_vec());
        assert_eq!(grants.serve(write), Ok(OffloadReply::Written));
        assert_eq!(std::fs::read(root.join("g/out.txt")).unwrap(), b"data");
        assert_eq!(
            grants.serve(Offload::Stat("g/out.txt".into())),
            Ok(OffloadReply::Stat(Stat {
                len: 4,
                is_dir: false
            }))
        );
        assert_eq!(
            grants.serve(Offload::List("g".into())),
            Ok(OffloadReply::List(vec!["out.txt".into(), "sub".into()]))
        );
        assert_eq!(
            grants.serve(Offload::Read("other/x".into())),
            Err(OffloadError::Io {
                path: "other/x".into(),
                error: "No such file or directory (os error 2)".into()
            })
        );
        std::fs::write(root.join("other/x"), b"x").unwrap();
        assert_eq!(
            grants.serve(Offload::Read("other/x".into())),
            Err(OffloadError::OutsideGrants {
                path: "other/x".into()
            })
        );
        let big = vec![0u8; FILE_MAX + 1];
        assert!(matches!(
            grants.serve(Offload::Write("g/big".into(), big)),
            Err(OffloadError::TooLarge { .. })
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
