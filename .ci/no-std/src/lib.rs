//! Links `netabase-core` without the standard library (see `Cargo.toml`).

#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::panic::PanicInfo;

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    loop {}
}

/// An allocator that never allocates: the check needs the `alloc` crate linked, not run.
struct NoAlloc;

// SAFETY: `alloc` returns null, which `GlobalAlloc` allows (allocation failure), and
// `dealloc` is never given a pointer this allocator did not return.
unsafe impl GlobalAlloc for NoAlloc {
    unsafe fn alloc(&self, _: Layout) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

#[global_allocator]
static ALLOCATOR: NoAlloc = NoAlloc;

/// Uses the core (a node, the codecs, the envelope format) so that its code is linked.
#[unsafe(no_mangle)]
pub extern "C" fn netabase_core_no_std_check() -> usize {
    let local = netabase_core::PeerId::from_seed(1);
    let store = netabase_core::MemoryStore::new(local);
    let node = netabase_core::Node::new(
        netabase_core::Config::default(),
        local,
        store,
        1,
        netabase_core::Instant::ZERO,
    );
    node.map_or(0, |n| n.query_count())
}
