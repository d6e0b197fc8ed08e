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
