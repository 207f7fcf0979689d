//! Shared-memory segments, futex wake-ups, simulated device memory and the file-I/O hints
//! checkpoints use (`sync_file_range`, `posix_fadvise`): the only place in the crate with
//! `unsafe`.
//!
//! A `ShmRegion` is a file in `/dev/shm` mapped `MAP_SHARED`; every access goes through
//! bounds-checked methods, so callers never touch raw pointers. The peer on the other side may
//! write anything at any time: readers copy bytes out and validate them, never trust them.
//! It must not interpret the bytes it moves; protocols live in `channel` and `collective`.

use crate::error::{NodeError, Result};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Directory holding shared-memory files.
pub const SHM_DIR: &str = "/dev/shm";

/// One mapped shared-memory file.
pub struct ShmRegion {
    ptr: *mut u8,
    len_bytes: usize,
    path: PathBuf,
}

// SAFETY: the mapping is plain shared memory; all access goes through atomics or bounds-checked
// byte copies, and the pointer stays valid until `Drop` unmaps it.
unsafe impl Send for ShmRegion {}
// SAFETY: as above; concurrent byte copies race only with the peer process, whose writes the
// protocols order with the atomic sequence words.
unsafe impl Sync for ShmRegion {}

impl ShmRegion {
    /// Creates (or opens, when `create` is false) the file at `path` with `len_bytes` and maps it.
    /// Opening with `create` and an existing file of the same size is allowed (collectives).
    pub fn open(path: &Path, len_bytes: usize, create: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .open(path)
            .map_err(|e| NodeError::io(format!("opening shared memory {}", path.display()), e))?;
        let current = file
            .metadata()
            .map_err(|e| NodeError::io(format!("stat {}", path.display()), e))?
            .len();
        if current != len_bytes as u64 {
            if !create {
                return Err(NodeError::Proxy(format!(
                    "shared memory {} has {current} bytes, expected {len_bytes}",
                    path.display()
                )));
            }
            file.set_len(len_bytes as u64)
                .map_err(|e| NodeError::io(format!("sizing {}", path.display()), e))?;
        }
        Self::map(&file, len_bytes, path)
    }

    fn map(file: &File, len_bytes: usize, path: &Path) -> Result<Self> {
        use std::os::fd::AsRawFd;
        if len_bytes == 0 {
            return Err(NodeError::Proxy("empty shared memory segment".into()));
        }
        // SAFETY: mapping a regular file we hold open, with a length it has; the result is
        // checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(NodeError::io(
                format!("mmap {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(ShmRegion {
            ptr: ptr.cast::<u8>(),
            len_bytes,
            path: path.to_path_buf(),
        })
    }

    /// The file this region maps.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the mapping in bytes.
    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }

    fn check(&self, offset: usize, len: usize, align: usize) -> Result<()> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| NodeError::BadRequest("offset overflow".into()))?;
        if end > self.len_bytes || offset % align != 0 {
            return Err(NodeError::BadRequest(format!(
                "shared memory access {offset}+{len} outside {} bytes",
                self.len_bytes
            )));
        }
        Ok(())
    }

    /// The 32-bit atomic word at `offset` (4-byte aligned).
    pub fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32> {
        self.check(offset, 4, 4)?;
        // SAFETY: in bounds and aligned (checked above; the mapping is page aligned); the memory
        // lives as long as `self`, and AtomicU32 has the layout of u32.
        Ok(unsafe { &*(self.ptr.add(offset) as *const AtomicU32) })
    }

    /// Copies `src` into the region at `offset`.
    pub fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.check(offset, src.len(), 1)?;
        // SAFETY: destination range is inside the mapping (checked); the source is a distinct
        // local slice, so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(offset), src.len()) };
        Ok(())
    }

    /// Copies bytes at `offset` into `dst`.
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.check(offset, dst.len(), 1)?;
        // SAFETY: source range is inside the mapping (checked); `dst` is a distinct local slice.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Writes floats at `offset` (native byte order; both peers run on this machine).
    pub fn write_f32s(&self, offset: usize, src: &[f32]) -> Result<()> {
        self.write_bytes(offset, f32s_as_bytes(src))
    }

    /// Reads floats at `offset` into `dst`.
    pub fn read_f32s(&self, offset: usize, dst: &mut [f32]) -> Result<()> {
        self.read_bytes(offset, f32s_as_bytes_mut(dst))
    }

    /// Adds the floats at `offset` into `acc` element by element, in index order.
    pub fn add_f32s_into(&self, offset: usize, acc: &mut [f32]) -> Result<()> {
        self.check(offset, acc.len() * 4, 4)?;
        // SAFETY: the range of `acc.len()` floats at `offset` is inside the mapping and 4-byte
        // aligned (checked); f32 accepts any bit pattern; the peer only writes this slot before
        // the barrier that precedes this read.
        let src =
            unsafe { std::slice::from_raw_parts(self.ptr.add(offset) as *const f32, acc.len()) };
        for (a, s) in acc.iter_mut().zip(src) {
            *a += *s;
        }
        Ok(())
    }

    /// Reads a little u64 at `offset`.
    pub fn read_u64(&self, offset: usize) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_bytes(offset, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }

    /// Writes a u64 at `offset`.
    pub fn write_u64(&self, offset: usize, value: u64) -> Result<()> {
        self.write_bytes(offset, &value.to_ne_bytes())
    }
}

impl Drop for ShmRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len_bytes` are exactly what mmap returned; nothing borrows the region
        // once it is dropped (borrows are tied to `&self`).
        unsafe { libc::munmap(self.ptr.cast(), self.len_bytes) };
    }
}

/// Views floats as bytes (for copies and checksums).
pub fn f32s_as_bytes(src: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and u8 has alignment 1; the length covers the same memory and
    // the lifetime is tied to `src`.
    unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<u8>(), std::mem::size_of_val(src)) }
}

/// Views floats as mutable bytes (every bit pattern is a valid f32).
pub fn f32s_as_bytes_mut(dst: &mut [f32]) -> &mut [u8] {
    let len = std::mem::size_of_val(dst);
    // SAFETY: as in `f32s_as_bytes`; any byte pattern written through the view is a valid f32,
    // and the exclusive borrow of `dst` is carried by the result.
    unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), len) }
}

/// Sleeps until `word` is no longer `expected`, a wake-up arrives, or `timeout` passes.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 in shared memory (no PRIVATE flag, so it works
    // across processes); the timespec outlives the call; spurious returns are handled by callers.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Wakes every waiter on `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32; it only reads the address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Spins, then sleeps on `word` until `done()` is true; `before_sleep()` runs once before the
/// first sleep (the word is re-checked after it), `alive()` is polled between sleeps, and the
/// wait ends with an error after `timeout`.
pub fn wait_for(
    word: &AtomicU32,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(u32) -> bool,
    mut alive: impl FnMut() -> bool,
    mut before_sleep: impl FnMut(),
) -> Result<()> {
    for _ in 0..crate::limits::SPIN_ITERATIONS {
        if done(word.load(Ordering::Acquire)) {
            return Ok(());
        }
        std::hint::spin_loop();
    }
    for _ in 0..crate::limits::YIELD_ITERATIONS {
        if done(word.load(Ordering::Acquire)) {
            return Ok(());
        }
        std::thread::yield_now();
    }
    let start = std::time::Instant::now();
    let slice = Duration::from_millis(crate::limits::FUTEX_SLICE_MS);
    let mut announced = false;
    loop {
        let seen = word.load(Ordering::SeqCst);
        if done(seen) {
            return Ok(());
        }
        if !announced {
            announced = true;
            before_sleep();
            continue;
        }
        if !alive() {
            return Err(NodeError::Disconnected(what.to_string()));
        }
        if start.elapsed() >= timeout {
            return Err(NodeError::Timeout {
                what: what.to_string(),
                timeout_ms: timeout.as_millis() as u64,
            });
        }
        futex_wait(word, seen, slice);
    }
}

/// Removes a shared-memory file, ignoring one that is already gone.
pub fn unlink(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Buffers at least this large are backed by transparent huge pages where the kernel allows.
pub const HUGE_PAGE_MIN_BYTES: usize = 2 << 20;

/// A zeroed float vector for simulated device memory: large ones ask for transparent huge pages
/// (`MADV_HUGEPAGE`), which makes creating device buffers (allocation, restore) several times
/// cheaper than faulting in 4 KiB pages. The zeroes come from `alloc_zeroed` (fresh pages from
/// the kernel for large sizes), so nothing touches the memory here: a restore that reads a
/// checkpoint into the buffer faults each page in once, on the write that fills it.
pub fn device_vec(len: usize) -> Vec<f32> {
    let mut v: Vec<f32> = vec![0.0; len];
    let bytes = len.saturating_mul(4);
    if bytes >= HUGE_PAGE_MIN_BYTES {
        const PAGE: usize = 4096;
        let start = (v.as_mut_ptr() as usize).div_ceil(PAGE) * PAGE;
        let end = (v.as_mut_ptr() as usize + bytes) / PAGE * PAGE;
        if end > start {
            // SAFETY: the page-aligned range lies inside the vector's own allocation, which no
            // one reads yet; MADV_HUGEPAGE is only advice and changes no contents (the range
            // stays zero whether or not the kernel backs it with huge pages).
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    v
}

/// Where a byte slice lives: its address and length, for `populate_write` from another thread
/// while the slice itself stays borrowed where it is used.
pub fn memory_range(bytes: &[u8]) -> (usize, usize) {
    (bytes.as_ptr() as usize, bytes.len())
}

/// Makes the pages of the `len_bytes` at address `addr` (a `memory_range` of this process)
/// present and writable now (`MADV_POPULATE_WRITE`), as a first write to each would, without
/// reading or writing the memory: contents never change (fresh pages are zero either way).
/// Run on a second thread ahead of a writer that fills fresh device memory, it takes the page
/// faults (and the zeroing of new pages) off the writer's path. Only a hint for speed: a kernel
/// without it, or a range it refuses, changes nothing.
pub fn populate_write(addr: usize, len_bytes: usize) {
    const PAGE: usize = 4096;
    let start = addr / PAGE * PAGE;
    let end = addr.saturating_add(len_bytes).div_ceil(PAGE) * PAGE;
    if end <= start {
        return;
    }
    // SAFETY: madvise only changes page-table state; MADV_POPULATE_WRITE faults pages in as a
    // write would but does not access them, so no memory is read or written through this call
    // and no Rust reference is created; an unmapped range only makes it fail.
    unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            end - start,
            libc::MADV_POPULATE_WRITE,
        )
    };
}

/// Asks the kernel to start writing back `len_bytes` of `file` at `offset` now, without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so the disk works while the writer copies the
/// next bytes into the page cache. Only a hint for speed: it gives no durability (the caller
/// still fsyncs), and a file system that refuses it changes nothing.
pub fn start_writeback(file: &File, offset: u64, len_bytes: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len_bytes)) else {
        return;
    };
    // SAFETY: a plain syscall on a descriptor we hold open; it reads no user memory.
    unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Tells the kernel `file` will be read sequentially from start to end (a larger readahead
/// window). Only advice: a file system that ignores it reads the same bytes.
pub fn advise_sequential(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor we hold open; it reads no user memory.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
}
