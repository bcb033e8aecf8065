//! libmemcached itself (`libmemcached.so.11`, which `scripts/test.sh` installs with
//! libmemcached-tools), loaded at run time: a ketama client exactly as C programs and
//! pylibmc use it, to check sesa's ketama placement against the real one.

use std::ffi::{CString, c_char, c_int, c_void};

type Create = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type Free = unsafe extern "C" fn(*mut c_void);
type BehaviorSet = unsafe extern "C" fn(*mut c_void, c_int, u64) -> c_int;
type ServerAdd = unsafe extern "C" fn(*mut c_void, *const c_char, u16) -> c_int;
type GenerateHash = unsafe extern "C" fn(*const c_void, *const c_char, usize) -> u32;
type Set = unsafe extern "C" fn(
    *mut c_void,
    *const c_char,
    usize,
    *const c_char,
    usize,
    i64,
    u32,
) -> c_int;

/// `MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED` (libmemcached-1.0/types/behavior.h).
const KETAMA_WEIGHTED: c_int = 16;
/// `MEMCACHED_SUCCESS`.
const SUCCESS: c_int = 0;

/// A `memcached_st` in ketama mode over a list of servers.
pub struct Ketama {
    memc: *mut c_void,
    free: Free,
    generate_hash: GenerateHash,
    set: Set,
}

/// The address of symbol `name` in `lib`.
fn symbol(lib: *mut c_void, name: &str) -> *mut c_void {
    let c = CString::new(name).unwrap();
    // SAFETY: `lib` is a handle dlopen returned, never closed; `c` is a C string.
    let f = unsafe { libc::dlsym(lib, c.as_ptr()) };
    assert!(!f.is_null(), "libmemcached has no {name}");
    f
}

impl Ketama {
    /// A client of `servers` (host, port), in this order, in ketama mode.
    ///
    /// # Panics
    /// Without libmemcached.so.11 (install libmemcached-tools: `scripts/test.sh` does).
    pub fn new(servers: &[(String, u16)]) -> Ketama {
        // SAFETY: a NUL-terminated name; the library stays loaded for the process.
        let lib = unsafe { libc::dlopen(c"libmemcached.so.11".as_ptr(), libc::RTLD_NOW) };
        assert!(
            !lib.is_null(),
            "libmemcached.so.11 cannot be loaded: install libmemcached-tools (scripts/test.sh does)"
        );
        let (create, behavior_set, server_add): (Create, BehaviorSet, ServerAdd) =
        // SAFETY: each symbol is libmemcached's function of that name, whose C
        // signature (libmemcached-1.0 headers) the type spells out.
        unsafe {
            (
                std::mem::transmute::<*mut c_void, Create>(symbol(lib, "memcached_create")),
                std::mem::transmute::<*mut c_void, BehaviorSet>(symbol(
                    lib,
                    "memcached_behavior_set",
                )),
                std::mem::transmute::<*mut c_void, ServerAdd>(symbol(lib, "memcached_server_add")),
            )
        };
        // SAFETY: as above.
        let client = unsafe {
            Ketama {
                memc: create(std::ptr::null_mut()),
                free: std::mem::transmute::<*mut c_void, Free>(symbol(lib, "memcached_free")),
                generate_hash: std::mem::transmute::<*mut c_void, GenerateHash>(symbol(
                    lib,
                    "memcached_generate_hash",
                )),
                set: std::mem::transmute::<*mut c_void, Set>(symbol(lib, "memcached_set")),
            }
        };
        assert!(!client.memc.is_null());
        // SAFETY: `memc` is the live handle made above.
        let rc = unsafe { behavior_set(client.memc, KETAMA_WEIGHTED, 1) };
        assert_eq!(rc, SUCCESS);
        for (host, port) in servers {
            let host = CString::new(host.as_str()).unwrap();
            // SAFETY: the live handle and a C string libmemcached copies.
            let rc = unsafe { server_add(client.memc, host.as_ptr(), *port) };
            assert_eq!(rc, SUCCESS, "adding {host:?}:{port}");
        }
        client
    }

    /// The place in the list of the server libmemcached sends `key` to.
    pub fn server_of(&self, key: &[u8]) -> usize {
        // SAFETY: the live handle and `key`'s bytes, which libmemcached only reads.
        unsafe { (self.generate_hash)(self.memc, key.as_ptr().cast(), key.len()) as usize }
    }

    /// `set key value` through libmemcached (to the server it picks); whether stored.
    pub fn set(&self, key: &[u8], value: &[u8]) -> bool {
        // SAFETY: the live handle and byte slices libmemcached only reads.
        let rc = unsafe {
            (self.set)(
                self.memc,
                key.as_ptr().cast(),
                key.len(),
                value.as_ptr().cast(),
                value.len(),
                0,
                0,
            )
        };
        rc == SUCCESS
    }
}

impl Drop for Ketama {
    fn drop(&mut self) {
        // SAFETY: the handle made in `new`, freed once.
        unsafe { (self.free)(self.memc) }
    }
}
