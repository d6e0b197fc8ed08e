//! Compute backends.
//!
//! burn 0.22 dispatches backends at run time through [`Device`], so there is no backend type
//! parameter to alias: the cargo feature picks the device, and autodiff is a property of the
//! device ([`training_device`]). Features: `flex` (default, pure-Rust CPU with burn's `rayon` and
//! `simd`) and `wgpu` (GPU through Vulkan / Metal / DX12, preferred when both are enabled).

use burn::tensor::Device;

#[cfg(not(any(feature = "flex", feature = "wgpu")))]
compile_error!("factrl needs a backend: enable the `flex` or the `wgpu` feature");

/// The device inference runs on (no autodiff): wgpu when that feature is on, else Flex.
pub fn inference_device() -> Device {
    #[cfg(feature = "wgpu")]
    return Device::wgpu(Default::default());
    #[cfg(not(feature = "wgpu"))]
    Device::flex()
}

/// The training device: [`inference_device`] with autodiff, for modules trained with burn's
/// optimisers.
pub fn training_device() -> Device {
    inference_device().autodiff()
}

/// Keeps large tensors' memory on the heap for reuse (glibc only; elsewhere nothing to do). Flex
/// allocates every intermediate tensor afresh, and glibc serves each one above 32 MB (a reward
/// model's attention scores are 59 MB per layer) with a new `mmap` whose pages the kernel faults
/// in and zeroes: a fifth of a reward-model step. Measured on the demo's reward model: 30 steps in
/// 94-100 s instead of 124-129 s, the same peak memory (BENCHMARKS.md).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
