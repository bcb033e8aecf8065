//! A read answered where it arrives makes no allocation: its command is parsed in
//! place, its owners are checked without a list, and its reply is written into the
//! connection's buffer. Counted by this test binary's allocator, on this thread only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use sesa_apps::memcache::cluster::{Layout as KeyLayout, Member, Placement, View};
use sesa_apps::memcache::protocol::{self, Command, Limits, Parsed, StoreMode};
use sesa_apps::memcache::store::{Partition, Stored};
use sesa_ebb::{EbbId, NodeId};

thread_local! {
    /// Allocations made by this thread so far (a `const` thread-local: reading it does
    /// not allocate, so the allocator may count on it).
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting each thread's allocations.
struct Counting;

// SAFETY: every call goes to the system allocator with the caller's arguments, as the
// `GlobalAlloc` contract asks; the count beside it touches no allocated memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as for this impl.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for this impl.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as for this impl.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What `f` returns, and how many allocations it made.
fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

#[test]
fn parsing_a_retrieval_or_a_store_allocates_nothing() {
    let limits = Limits::default();
    for line in [
        &b"get k\r\n"[..],
        b"gets key:1 key:2 key:3\r\n",
        b"gat 10 a b\r\n",
        b"set key:1 0 0 5\r\nhello\r\n",
        b"delete key:1\r\n",
        b"incr n 5\r\n",
    ] {
        let (keys, allocations) = counted(|| match protocol::parse(line, &limits) {
            Parsed::Command(Command::Get { keys, .. } | Command::Gat { keys, .. }, _) => {
                keys.iter().count()
            }
            Parsed::Command(_, _) => 1,
            _ => 0,
        });
        assert!(
            keys > 0,
            "{:?} did not parse",
            String::from_utf8_lossy(line)
        );
        assert_eq!(allocations, 0, "{}", String::from_utf8_lossy(line));
    }
    // The check is real: a line of more words than are read in place allocates.
    let many = format!("get {}\r\n", vec!["k"; 30].join(" "));
    let (_, allocations) = counted(|| protocol::parse(many.as_bytes(), &limits));
    assert!(allocations > 0);
}

#[test]
fn a_hit_is_written_into_the_reply_without_an_allocation() {
    let mut p = Partition::new(1 << 20);
    let stored = p.store(StoreMode::Set, b"key:1", 7, 0, b"a value", 0);
    assert!(matches!(stored, Stored::Stored), "{stored:?}");
    let mut out = Vec::with_capacity(4096);
    let (hit, allocations) = counted(|| {
        let Some(item) = p.get(b"key:1", 0) else {
            return false;
        };
        protocol::write_value(&mut out, b"key:1", item.flags, &item.value, Some(item.cas));
        true
    });
    assert!(hit);
    assert_eq!(allocations, 0);
    let reply = String::from_utf8(out).unwrap();
    assert!(reply.starts_with("VALUE key:1 7 7 "), "{reply}");
    assert!(reply.ends_with("\r\na value\r\n"), "{reply}");
}

#[test]
fn checking_that_a_node_owns_a_key_allocates_nothing() {
    let members: Vec<Member> = (1..=4u32)
        .map(|node| Member {
            node: NodeId::new(node),
            service: EbbId::static_id(1),
            cores: 1,
            addr: Some(SocketAddr::from(([127, 0, 0, 1], 11_000 + node as u16))),
        })
        .collect();
    for placement in [Placement::Rendezvous, Placement::Ketama] {
        let view = View::new(1, members.clone(), 2, KeyLayout::Partitioned, placement);
        // The ketama ring is made on the view's first use, once.
        let first = view.owned_by(b"warm", NodeId::new(1));
        let ((owned, owners), allocations) = counted(|| {
            let owned = (0..1_000u32)
                .filter(|i| view.owned_by(&i.to_le_bytes(), NodeId::new(1)))
                .count();
            (owned, first)
        });
        assert_eq!(allocations, 0, "{placement:?}");
        // Node 1 owns about half of the keys (2 of 4 nodes own each).
        assert!(
            (300..700).contains(&owned),
            "{placement:?}: {owned} {owners}"
        );
    }
}
