//! The memory functions compiled code calls (`compiler_builtins` does not export them
//! for the linux-gnu target, and there is no libc). Copies and fills use `rep movsb` /
//! `rep stosb`, fast on current CPUs, and which LLVM cannot turn back into calls to
//! these very functions.

/// # Safety
/// `dest` and `src` are valid for `n` bytes and do not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; `rep movsb` copies n bytes forwards.
    unsafe {
        core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _,
            inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// `dest` and `src` are valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // SAFETY: a forward copy is correct when dest does not start inside src.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: the caller's contract; with the direction flag set, `rep movsb` copies
    // backwards from the last byte, correct when dest starts inside src. The flag is
    // cleared again, as the ABI requires.
    unsafe {
        core::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _,
            inout("rdi") dest.add(n.wrapping_sub(1)) => _,
            inout("rsi") src.add(n.wrapping_sub(1)) => _, options(nostack));
    }
    dest
}

/// # Safety
/// `dest` is valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; `rep stosb` fills n bytes.
    unsafe {
        core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _,
            in("al") value as u8, options(nostack, preserves_flags));
    }
    dest
}

/// Where `a` and `b` (valid for `n` bytes) first differ: the offset of the first
/// differing 8-byte word (or byte, in the tail) and the two words, read in memory
/// order (big-endian, so that comparing them as numbers orders them as bytes).
/// Word by word: keys and headers compared here are tens of bytes, where a byte loop
/// showed in the kernel's profile (4% of a loaded store node's time).
///
/// # Safety
/// `a` and `b` are valid for `n` bytes.
unsafe fn first_difference(a: *const u8, b: *const u8, n: usize) -> Option<(u64, u64)> {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, and both are valid for n bytes; unaligned reads.
        let (x, y) = unsafe {
            (
                a.add(i).cast::<u64>().read_unaligned(),
                b.add(i).cast::<u64>().read_unaligned(),
            )
        };
        if x != y {
            return Some((u64::from_be(x), u64::from_be(y)));
        }
        i += 8;
    }
    while i < n {
        // SAFETY: i < n, and both are valid for n bytes.
        let (x, y) = unsafe { (a.add(i).read(), b.add(i).read()) };
        if x != y {
            return Some((u64::from(x), u64::from(y)));
        }
        i += 1;
    }
    None
}

/// # Safety
/// `a` and `b` are valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    match unsafe { first_difference(a, b, n) } {
        None => 0,
        Some((x, y)) if x < y => -1,
        Some(_) => 1,
    }
}

/// # Safety
/// `a` and `b` are valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    i32::from(unsafe { first_difference(a, b, n) }.is_some())
}

/// The prebuilt `core` (built to unwind) names this symbol; with `panic = "abort"` it is
/// never called.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Named by the landing pads of the prebuilt `alloc` (built to unwind). Nothing unwinds
/// in this kernel (`panic = "abort"`, and the panic handler never returns), so no landing
/// pad runs and this is never reached; if it were, the CPU stops.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    super::halt()
}
