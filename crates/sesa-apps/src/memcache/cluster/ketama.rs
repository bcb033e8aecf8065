//! Ketama placement: consistent hashing exactly as libmemcached computes it for a
//! client in ketama mode, so a client that knows the store's server list sends each key
//! straight to the node that owns it.
//!
//! The mode is libmemcached's `MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED` (pylibmc:
//! `behaviors={"ketama_weighted": True}`), the original ketama algorithm, every server
//! of weight 1: each server of the list puts `4 x h` points on a ring of `u32` values,
//! where `h = floor(1/n x 160 / 4 x n)` in single precision (40 for most `n`), the
//! `i`-th four being the four little-endian words of `md5("<host>:<port>-<i>")`
//! (`"<host>-<i>"` when the port is memcached's 11211); the points are sorted by value,
//! then by the server's place in the list. A key's server is the one of the first point
//! at or after the first little-endian word of `md5(key)`, wrapping to the first point.
//! The test `ketama_matches_libmemcached` (crates/sesa) compares this with libmemcached's
//! own answer for every key of several lists.
//!
//! The store wants `R` owners per key: the ketama server is the primary, and the
//! replicas are the next distinct servers met walking the ring on from the primary's
//! point (libmemcached itself has no such notion: a client in ketama mode only ever
//! needs the primary).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use md5::{Digest, Md5};

/// libmemcached's `MEMCACHED_POINTS_PER_SERVER_KETAMA`.
const POINTS_PER_SERVER: f32 = 160.0;

/// memcached's port: libmemcached leaves it out of a server's point names.
const DEFAULT_PORT: u16 = 11211;

/// A ketama ring over a list of servers.
#[derive(Clone, Debug)]
pub struct Ring {
    /// (value, server's place in the list), sorted.
    points: Vec<(u32, u32)>,
    servers: usize,
}

/// The `word`-th little-endian `u32` of `md5(bytes)`.
fn md5_words(bytes: &[u8]) -> [u32; 4] {
    let digest = Md5::digest(bytes);
    core::array::from_fn(|w| {
        u32::from_le_bytes([
            digest[4 * w],
            digest[4 * w + 1],
            digest[4 * w + 2],
            digest[4 * w + 3],
        ])
    })
}

/// A key's place on the ring: the first word of its md5 (libmemcached's `hashkit_md5`).
pub fn key_hash(key: &[u8]) -> u32 {
    md5_words(key)[0]
}

impl Ring {
    /// The ring of `servers`, each a (host, port) as a client names it (the host as
    /// written: an IP address in text, or a name), in the client's list order.
    pub fn new<'a>(servers: impl ExactSizeIterator<Item = (&'a str, u16)>) -> Ring {
        let n = servers.len();
        // libmemcached computes this in `float`, every server of weight 1 out of `n`:
        // `floor(pct * 160 / 4 * n + 1e-10) * 4`. Kept in f32 and in its order, as the
        // rounding of `1/n` can make it 39 for some `n`.
        let per_server = if n == 0 {
            0
        } else {
            let pct = 1.0f32 / n as f32;
            let hashes = pct * POINTS_PER_SERVER / 4.0 * n as f32 + 0.000_000_000_1f32;
            hashes as u32 // floor: it is positive
        };
        let mut points = Vec::with_capacity(n * per_server as usize * 4);
        let mut name = String::new();
        for (index, (host, port)) in servers.enumerate() {
            for i in 0..per_server {
                name.clear();
                use core::fmt::Write;
                // Writing to a String cannot fail.
                let _ = if port == DEFAULT_PORT {
                    write!(name, "{host}-{i}")
                } else {
                    write!(name, "{host}:{port}-{i}")
                };
                for word in md5_words(name.as_bytes()) {
                    points.push((word, index as u32));
                }
            }
        }
        points.sort_unstable();
        Ring { points, servers: n }
    }

    /// The ring of servers named by their addresses (the host an IP address in text),
    /// in the client's list order: what a client of `config get cluster`'s list makes.
    pub fn of_addrs(addrs: &[core::net::SocketAddr]) -> Ring {
        let names: Vec<(String, u16)> = addrs
            .iter()
            .map(|a| (a.ip().to_string(), a.port()))
            .collect();
        Ring::new(names.iter().map(|(h, p)| (h.as_str(), *p)))
    }

    /// The place in the list of the server that owns `key` (`None` on an empty ring).
    pub fn primary(&self, key: &[u8]) -> Option<usize> {
        self.owners(key).next()
    }

    /// The servers that own `key`, as places in the list: the ketama server first, then
    /// every other server in the order the ring meets them from there.
    pub fn owners(&self, key: &[u8]) -> impl Iterator<Item = usize> + '_ {
        self.owners_of_hash(key_hash(key))
    }

    /// [`Ring::owners`] of a key whose [`key_hash`] is `hash` (a key looked up on two
    /// rings, as a move does, is hashed once).
    pub fn owners_of_hash(&self, hash: u32) -> impl Iterator<Item = usize> + '_ {
        let start = if self.points.is_empty() {
            0
        } else {
            // The first point at or after the key's value, wrapping to the first.
            self.points.partition_point(|p| p.0 < hash) % self.points.len()
        };
        let mut seen: u64 = 0;
        let mut extra: Vec<usize> = Vec::new();
        let (before, after) = self.points.split_at(start);
        after
            .iter()
            .chain(before)
            .map(|p| p.1 as usize)
            .filter(move |&s| {
                // Most lists are under 64 servers: a bit set; beyond, a list.
                if s < 64 {
                    let bit = 1u64 << s;
                    let new = seen & bit == 0;
                    seen |= bit;
                    new
                } else if extra.contains(&s) {
                    false
                } else {
                    extra.push(s);
                    true
                }
            })
            .take(self.servers)
    }

    /// The number of servers.
    pub fn servers(&self) -> usize {
        self.servers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;

    fn ring(ports: &[u16]) -> Ring {
        Ring::new(ports.iter().map(|&p| ("127.0.0.1", p)))
    }

    #[test]
    fn every_server_gets_its_points_and_keys_spread() {
        for n in 1..12u16 {
            let ports: Vec<u16> = (0..n).map(|i| 20000 + i).collect();
            let r = ring(&ports);
            // 160 points a server, or 156 where `1/n` rounds down in single precision.
            assert!(
                r.points.len() == 160 * n as usize || r.points.len() == 156 * n as usize,
                "{n}: {}",
                r.points.len()
            );
            let mut counts = vec![0u32; n as usize];
            for i in 0..20_000 {
                counts[r.primary(format!("key:{i}").as_bytes()).unwrap()] += 1;
            }
            let fair = 20_000 / u32::from(n);
            for c in counts {
                assert!(
                    c > fair / 2 && c < fair * 2,
                    "{n} servers: {c} keys of {fair}"
                );
            }
        }
    }

    #[test]
    fn owners_are_distinct_and_start_with_the_primary() {
        let r = ring(&[1, 2, 3, 4, 5]);
        for i in 0..2_000 {
            let key = format!("k{i}");
            let owners: Vec<usize> = r.owners(key.as_bytes()).collect();
            assert_eq!(owners.len(), 5);
            assert_eq!(Some(owners[0]), r.primary(key.as_bytes()));
            let mut sorted = owners.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3, 4]);
        }
        assert_eq!(ring(&[]).primary(b"k"), None);
    }

    #[test]
    fn a_server_added_at_the_end_takes_keys_only_from_the_others() {
        let (three, four) = (ring(&[1, 2, 3]), ring(&[1, 2, 3, 4]));
        let mut moved = 0;
        for i in 0..10_000 {
            let key = format!("k{i}");
            let (a, b) = (three.primary(key.as_bytes()), four.primary(key.as_bytes()));
            if a != b {
                assert_eq!(b, Some(3), "a key moved between old servers");
                moved += 1;
            }
        }
        assert!((1_500..3_500).contains(&moved), "{moved} of 10,000 moved");
    }

    #[test]
    fn the_default_port_is_left_out_of_the_point_names() {
        // Two lists that differ only in whether the port is 11211 give other rings.
        let a = Ring::new([("10.0.0.1", 11211), ("10.0.0.2", 11211)].into_iter());
        let b = Ring::new([("10.0.0.1", 11212), ("10.0.0.2", 11212)].into_iter());
        assert_ne!(a.points, b.points);
        let first = md5_words(b"10.0.0.1-0");
        assert!(a.points.iter().any(|p| p == &(first[0], 0)));
    }
}
