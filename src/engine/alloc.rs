//! The process's heap policy (glibc malloc), for work that allocates and frees the same large
//! buffers over and over (training steps, embedding batches): keep freed memory for reuse while
//! such work runs, and hand it back to the system when it ends.

/// Hands the heap's free memory back to the system: after loading (whose temporaries, the read
/// bytes and f32 copies of each tensor, would otherwise stay resident through the run) and after
/// a run (the workstation stays open).
pub fn release_free_memory() {
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Training allocates and frees the same large buffers every step. glibc serves large blocks
/// with fresh mmaps (above its adaptive mmap threshold) and trims freed heap, so every step pays
/// page faults to zero the same memory again; keeping freed memory in the heap lets the next step
/// reuse it (`lathe bench train`: +26% tokens/s at TinyLlama shapes, same peak RSS;
/// `lathe bench embed`: twice the texts/s).
pub fn keep_freed_memory() {
    // SAFETY: mallopt only tunes the allocator; called before the training allocations.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
