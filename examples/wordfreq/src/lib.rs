//! `wordfreq`: how often each word occurs in a set of files, counted by the nodes of a
//! sesa application. A user's application: it uses only sesa's public crates.
//!
//! ```sh
//! cargo run --release -p wordfreq -- --nodes 3 --grant DIR FILE...
//! ```
//!
//! With native nodes (the node side is `no_std`; `native/` is its kernel image):
//!
//! ```sh
//! cargo build --release --manifest-path examples/wordfreq/native/Cargo.toml
//! cargo run --release -p wordfreq -- --nodes 3 --native-nodes 1 \
//!     --kernel examples/wordfreq/native/target/release/wordfreq-kernel --grant DIR FILE...
//! ```
//!
//! prints one line per distinct word, `<count> <word>`, most frequent first and words
//! of equal count in byte order. A word is a maximal run of bytes other than space,
//! tab, CR and LF (so the output equals `tr -s ' \t\r\n' '\n' | sort | uniq -c` sorted
//! by count, in the C locale). The frontend is this process; it launches the nodes from
//! its own binary.
//!
//! How it is built (the paper's pieces):
//! - Node `i` of `n` takes the files at positions `p` with `p % n == i - 1` and reads
//!   each through the frontend's offloaded file system (only under `--grant`
//!   directories).
//! - A node counts into a **per-core EBB** (`Words`): a file is cut at word
//!   boundaries into one slice per core, each slice shipped to its core as an event,
//!   where the first access misses and the template's miss handler builds that core's
//!   rep (an empty table). No core touches another's table while counting.
//! - The node's result is its reps merged (the root enumerates them); the frontend
//!   merges the nodes' results and prints them. The files count as one concatenated
//!   input (as `cat` would make it): a file that does not end with a separator
//!   continues its last word into the next file, which may be another node's, so each
//!   node sends its files' edges apart ([`Edges`]) and the frontend joins them in file
//!   order.
//!
//! Limits: a file is read whole, at most `sesa_node::offload::FILE_MAX` bytes (8 MiB);
//! a node's counts travel as one reply, at most the wire's 16 MiB frame (a node with
//! more distinct words than fit fails with the messenger's error).

#![cfg_attr(not(feature = "frontend"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use sesa_ebb::{EbbRef, PerCore};
use sesa_node::app::{App, AppError, NodeContext};
use sesa_node::offload::Stream;

#[cfg(feature = "frontend")]
mod frontend;
#[cfg(feature = "frontend")]
pub use frontend::Args;

/// A core's counts: written only by its own core while counting (the lock is never
/// contended then), read by the node's core 0 to merge.
type Table = spin::Mutex<BTreeMap<Vec<u8>, u64>>;

/// The word-frequency EBB of one node: a [`Table`] per core, built on each core by its
/// first access.
#[derive(Clone, Copy)]
struct Words {
    ebb: EbbRef<Table>,
}

impl Words {
    fn create() -> Result<(Words, Arc<PerCore<Table>>), AppError> {
        let (ebb, root) = PerCore::create(|_core| Table::default())
            .map_err(|e| AppError::Failed(format!("creating the words EBB: {e}")))?;
        Ok((Words { ebb }, root))
    }

    /// Counts the words of `text` on this core's rep.
    fn count(self, text: &[u8]) {
        self.ebb.with(|table| {
            let mut table = table.lock();
            for word in words(text) {
                match table.get_mut(word) {
                    Some(n) => *n += 1,
                    None => {
                        table.insert(word.to_vec(), 1);
                    }
                }
            }
        });
    }
}

/// Whether `b` separates words.
fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The words of `text`.
fn words(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|b| is_separator(*b)).filter(|w| !w.is_empty())
}

/// Cuts `len` bytes of `text` into `parts` ranges that end at a separator (or the end),
/// so that no word is split between two ranges. Some ranges may be empty.
fn cut(text: &[u8], parts: usize) -> Vec<core::ops::Range<usize>> {
    let mut ranges = Vec::with_capacity(parts);
    let mut start = 0;
    for i in 1..=parts {
        let mut end = (text.len() * i / parts).max(start);
        while end < text.len() && !is_separator(text[end]) {
            end += 1;
        }
        ranges.push(start..end);
        start = end;
    }
    ranges
}

/// The application: node side ([`App`], here) and frontend side
/// (`sesa_frontend::Application`, with feature `frontend`).
pub struct WordFreq;

/// What a node sends back.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct NodeCounts {
    /// Each distinct word inside this node's files, with its count: every word but
    /// those touching a file's start or end (see [`Edges`]).
    words: Vec<(Vec<u8>, u64)>,
    /// The edges of each file the node read, by the file's position.
    edges: Vec<(u32, Edges)>,
    /// Files it could not read (each reported on stderr).
    failed: u32,
}

/// The bytes of a file that may belong to a word continuing in the file before or
/// after it: the files are counted as if concatenated (as `cat FILE... |` would), so a
/// file that does not end with a separator continues its last word into the next.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Eq)]
pub enum Edges {
    /// The file has no separator: all of it is one piece of a word (or nothing).
    Whole(Vec<u8>),
    /// The bytes before the first separator and after the last (either may be empty).
    Split {
        /// Before the first separator.
        head: Vec<u8>,
        /// After the last separator.
        tail: Vec<u8>,
    },
}

impl Edges {
    /// `text`'s edges, and the range between them whose words are whole.
    fn of(text: &[u8]) -> (Edges, core::ops::Range<usize>) {
        let Some(first) = text.iter().position(|b| is_separator(*b)) else {
            return (Edges::Whole(text.to_vec()), 0..0);
        };
        // A separator exists, so `rposition` finds one at or after `first`.
        let last = text.iter().rposition(|b| is_separator(*b)).unwrap_or(first);
        let edges = Edges::Split {
            head: text[..first].to_vec(),
            tail: text[last + 1..].to_vec(),
        };
        (edges, first..last + 1)
    }
}

/// The words made of the files' edges, joined in file order (each occurrence once).
pub fn stitch(mut edges: Vec<(u32, Edges)>) -> Vec<Vec<u8>> {
    edges.sort_unstable_by_key(|(position, _)| *position);
    let (mut words, mut pending) = (Vec::new(), Vec::new());
    let mut word_ends = |word: &mut Vec<u8>| {
        if !word.is_empty() {
            words.push(core::mem::take(word));
        }
    };
    for (_, edge) in edges {
        match edge {
            Edges::Whole(bytes) => pending.extend_from_slice(&bytes),
            Edges::Split { head, tail } => {
                pending.extend_from_slice(&head);
                word_ends(&mut pending);
                pending = tail;
            }
        }
    }
    word_ends(&mut pending);
    words
}

impl App for WordFreq {
    const NAME: &'static str = "wordfreq";
    /// The files, as the user named them (relative to the frontend's directory).
    type Settings = Vec<String>;
    type Outcome = NodeCounts;

    async fn run(node: NodeContext, files: Vec<String>) -> Result<NodeCounts, AppError> {
        let offload = node.offload();
        let (counter, root) = Words::create()?;
        let (mut failed, mut edges) = (0, Vec::new());
        for (position, file) in node.share(&files) {
            let text = match offload.read(file).await {
                Ok(text) => Arc::new(text),
                Err(e) => {
                    offload
                        .print(Stream::Err, &format!("wordfreq: {file}: {e}\n"))
                        .await?;
                    failed += 1;
                    continue;
                }
            };
            let (edge, inside) = Edges::of(&text);
            edges.push((position as u32, edge));
            let slices = cut(&text[inside.clone()], sesa_event::cores());
            let counting: Vec<_> = sesa_event::all_cores()
                .zip(slices)
                .filter(|(_, range)| !range.is_empty())
                .map(|(core, range)| {
                    let text = text.clone();
                    let range = inside.start + range.start..inside.start + range.end;
                    sesa_event::spawn_on(core, move || counter.count(&text[range]))
                })
                .collect();
            for done in counting {
                done.await
                    .map_err(|e| AppError::Failed(format!("counting {file}: {e}")))?;
            }
        }
        // The node's result: every core's rep merged.
        let mut merged: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for (_core, table) in root.reps() {
            let table = core::mem::take(&mut *table.lock());
            for (word, n) in table {
                *merged.entry(word).or_default() += n;
            }
        }
        drop(root);
        sesa_event::destroy(counter.ebb)
            .await
            .map_err(|e| AppError::Failed(format!("destroying the words EBB: {e}")))?;
        Ok(NodeCounts {
            words: merged.into_iter().collect(),
            edges,
            failed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_runs_of_non_separators() {
        let text = b"  a\tbb\r\n\nccc  \x0bd ";
        let found: Vec<&[u8]> = words(text).collect();
        assert_eq!(found, [&b"a"[..], b"bb", b"ccc", b"\x0bd"]);
    }

    #[test]
    fn edges_join_words_across_files_in_order() {
        let (edges, inside) = Edges::of(b"ab cd ef");
        assert_eq!(inside, 2..6);
        assert_eq!(
            edges,
            Edges::Split {
                head: b"ab".to_vec(),
                tail: b"ef".to_vec()
            }
        );
        assert_eq!(Edges::of(b"xyz"), (Edges::Whole(b"xyz".to_vec()), 0..0));
        // "ab cd ef" + "gh" + "\nij" + "" + "k l": the words at the seams are "efgh",
        // "ijk", and "ab" and "l" at the ends; "cd" is inside a file.
        let files: [&[u8]; 5] = [b"ab cd ef", b"gh", b"\nij", b"", b"k l"];
        let mut edges: Vec<(u32, Edges)> = files
            .iter()
            .enumerate()
            .map(|(p, text)| (p as u32, Edges::of(text).0))
            .rev()
            .collect();
        edges.swap(0, 2);
        let want: Vec<Vec<u8>> = ["ab", "efgh", "ijk", "l"]
            .iter()
            .map(|w| w.as_bytes().to_vec())
            .collect();
        assert_eq!(stitch(edges), want);
    }

    #[test]
    fn cutting_never_splits_a_word() {
        let text = b"alpha beta gamma delta epsilon zeta eta theta";
        for parts in 1..12 {
            let ranges = cut(text, parts);
            assert_eq!(ranges.len(), parts);
            assert_eq!(ranges.first().map(|r| r.start), Some(0));
            assert_eq!(ranges.last().map(|r| r.end), Some(text.len()));
            let mut all = Vec::new();
            for (i, r) in ranges.iter().enumerate() {
                if i > 0 {
                    assert_eq!(ranges[i - 1].end, r.start, "contiguous");
                }
                all.extend(words(&text[r.clone()]));
            }
            assert_eq!(all, words(text).collect::<Vec<_>>(), "{parts} parts");
        }
    }
}
