//! The GPU our kernels run on: burn's wgpu and WebGPU backends are CubeCL underneath, so a
//! [`Tensor`] on such a device converts to its `CubeTensor` primitive (a buffer handle and a
//! shape), our kernels run on the same client and queue as burn's own, and their output is
//! handed back to burn as a tensor. On any other device (Flex on the CPU) [`Gpu::of`] is `None`
//! and callers keep burn's generic path.

// Buffers are bound to kernels with their lengths (CubeCL's `BufferArg::from_raw_parts`, an
// `unsafe` function: a wrong length could let a kernel read or write out of bounds). Every
// length below is the length of the buffer the handle was created with, and every kernel
// bounds its indices by the sizes it is given.
#![allow(unsafe_code)]

use std::fmt;

use burn::tensor::{DType, Device, Shape, Tensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::client::Client;
use cubecl::features::TypeUsage;
use cubecl::ir::{ElemType, FloatKind};
use cubecl::prelude::*;
use cubecl::server::Handle;

use super::qmatmul::{self, fill_zero_kernel};
use crate::CoreError;

/// The largest storage buffer a kernel binds by default: WebGPU's guaranteed
/// `maxStorageBufferBindingSize` (128 MiB), which some phones do not exceed. Larger matrices
/// are split by rows.
pub const MAX_BINDING_BYTES: usize = 128 << 20;

/// Up to this many tokens per expert, the fused kernel runs on the packed weights; above it
/// (prefill), the expert is dequantized to a transient f32 copy and burn's tiled matmul runs
/// on it, which was faster for many rows (`switchscope bench kernels`, docs/BENCHMARKS.md).
pub const FUSED_MAX_TOKENS: usize = 8;

/// A CubeCL (wgpu / WebGPU) device's compute client, on which our kernels run.
#[derive(Clone)]
pub struct Gpu {
    pub(super) client: Client,
    device: cubecl::Device,
    /// Whether scales may be kept in f16 (the adapter has `shader-f16`).
    pub(super) f16: bool,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("client", &self.client.name())
            .finish()
    }
}

impl Gpu {
    /// The kernels' context on `device`, or `None` when the device is not a CubeCL one (Flex).
    pub fn of(device: &Device) -> Option<Self> {
        let probe = Tensor::<1>::zeros([1], device);
        let t = probe.try_into_primitive::<CubeBackend>().ok()?;
        let gpu = Self {
            client: t.client,
            device: t.device,
            f16: false,
        };
        Some(gpu.with_f16(true))
    }

    /// The kernels' context of the device `t` lives on, or `None` when it is not a CubeCL one;
    /// unlike [`Self::of`], it allocates nothing (the model asks per layer).
    pub fn of_tensor<const D: usize>(t: &Tensor<D>) -> Option<Self> {
        let t = t.clone().try_into_primitive::<CubeBackend>().ok()?;
        let gpu = Self {
            client: t.client,
            device: t.device,
            f16: false,
        };
        Some(gpu.with_f16(true))
    }

    /// Whether this adapter keeps scales in f16 (`shader-f16`; SwiftShader has not).
    pub fn has_f16(&self) -> bool {
        self.f16
    }

    /// The same device with f16 scales allowed or not (to compare the two paths).
    #[must_use]
    pub fn with_f16(mut self, allowed: bool) -> Self {
        self.f16 = allowed && self.has_f16_support();
        self
    }

    pub(super) fn has_f16_support(&self) -> bool {
        self.client
            .properties()
            .type_usage(ElemType::Float(FloatKind::F16))
            .is_superset(TypeUsage::Buffer | TypeUsage::Conversion)
    }

    pub(super) fn upload<T: bytemuck_free::Pod>(&self, values: &[T]) -> Handle {
        crate::counters::upload(values.len() * 4);
        self.client.create_from_slice(&bytemuck_free::bytes(values))
    }

    /// A float tensor's buffer, contiguous, with its element count.
    pub(super) fn buffer(&self, t: Tensor<2>) -> Result<(Handle, usize), CoreError> {
        let t = t
            .try_into_primitive::<CubeBackend>()
            .map_err(|e| CoreError::Execution(format!("not a GPU tensor: {e:?}")))?;
        if t.dtype != DType::F32 {
            return Err(CoreError::Execution(format!(
                "the kernels take f32 activations, got {:?}",
                t.dtype
            )));
        }
        let t = into_contiguous(t);
        let len = t.meta.shape().num_elements();
        Ok((t.handle, len))
    }

    pub(super) fn tensor(&self, handle: Handle, shape: [usize; 2]) -> Tensor<2> {
        let t = CubeTensor::new_contiguous(
            self.client.clone(),
            self.device.clone(),
            Shape::from(shape),
            handle,
            DType::F32,
        );
        Tensor::from_primitive::<CubeBackend>(t)
    }

    pub(super) fn zeros(&self, len: usize) -> Handle {
        let handle = self.client.empty(len * 4);
        let cubes = (len as u32).div_ceil(qmatmul::UNITS);
        if len > 0 {
            fill_zero_kernel::launch(
                &self.client,
                CubeCount::Static(cubes, 1, 1),
                CubeDim::new_1d(qmatmul::UNITS),
                // SAFETY: `len` f32 values, the buffer's size.
                unsafe { BufferArg::from_raw_parts(handle.clone(), len) },
                len as u32,
            );
        }
        handle
    }
}

/// Reinterpreting plain numbers as bytes, without a dependency (and its features).
pub(super) mod bytemuck_free {
    /// Numbers whose little-endian bytes are what a kernel reads.
    pub trait Pod: Copy {
        fn le(self) -> [u8; 4];
    }
    impl Pod for f32 {
        fn le(self) -> [u8; 4] {
            self.to_le_bytes()
        }
    }
    impl Pod for u32 {
        fn le(self) -> [u8; 4] {
            self.to_le_bytes()
        }
    }
    pub fn bytes<T: Pod>(values: &[T]) -> Vec<u8> {
        values.iter().flat_map(|v| v.le()).collect()
    }
}
