//! sesa's ketama placement against libmemcached's own: for server lists of 1 to 12
//! servers (on memcached's port 11211, which libmemcached leaves out of the points'
//! names, and on others), every key's server is the one libmemcached picks.

mod common;

use sesa_apps::memcache::cluster::ketama::Ring;

#[test]
fn ketama_matches_libmemcached() {
    for n in 1..=12u16 {
        for (host, port) in [("10.0.0.", 11211u16), ("127.0.0.1", 40_000)] {
            let servers: Vec<(String, u16)> = (0..n)
                .map(|i| match port {
                    11211 => (format!("{host}{}", i + 1), port),
                    _ => (host.to_owned(), port + i),
                })
                .collect();
            let theirs = common::libmemcached::Ketama::new(&servers);
            let ours = Ring::new(servers.iter().map(|(h, p)| (h.as_str(), *p)));
            for i in 0..5_000 {
                let key = format!("key:{i}:{}", i * 7919);
                assert_eq!(
                    ours.primary(key.as_bytes()),
                    Some(theirs.server_of(key.as_bytes())),
                    "{key} over {servers:?}"
                );
            }
        }
    }
}
