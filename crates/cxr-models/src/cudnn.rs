//! Convolutions on cuDNN, forward and backward (cargo feature `cudnn`).
//!
//! With candle's own `cudnn` feature, `Tensor::conv2d` runs its forward on cuDNN, but not its
//! backward: the input gradient goes through candle's `conv_transpose2d` kernel (one thread per
//! output value, summing over every kernel tap and channel) and the weight gradient through a
//! `conv2d` of transposed copies of the input and the output gradient. [`conv2d`] runs all three
//! on cuDNN (`cudnnConvolutionForward`, `BackwardData`, `BackwardFilter`), with the algorithm
//! its heuristics pick for each shape, as PyTorch does with `torch.backends.cudnn.benchmark` off.
//!
//! Precision: like PyTorch's default (`torch.backends.cudnn.allow_tf32 = True`), cuDNN may use
//! TF32 tensor cores for these f32 convolutions on Ampere and later, which rounds the products'
//! inputs to 10 bits of mantissa. [`set_tf32`] turns that off (the golden tests' tolerances
//! need it off).
//!
//! Not run on a GPU yet: no GPU was lent to the sessions that wrote it. The golden tests are
//! what checks it: `CXR_TEST_DEVICE=cuda cargo test -p cxr-models --features cudnn`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::cuda_backend::cudarc::cudnn::sys::{
    cudnnConvolutionMode_t, cudnnMathType_t, cudnnTensorFormat_t,
};
use candle_core::cuda_backend::cudarc::cudnn::{
    ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, FilterDescriptor,
    TensorDescriptor,
};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView};
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, Shape, Tensor};

static TF32: AtomicBool = AtomicBool::new(true);

/// Whether cuDNN may use TF32 tensor cores for f32 convolutions (the default, as in PyTorch).
pub fn set_tf32(allowed: bool) {
    TF32.store(allowed, Ordering::Relaxed);
}

/// `[N, c_in, H, W]` convolved with `[c_out, c_in, k, k]`, without bias or dilation, on cuDNN
/// forward and backward. Both must be f32 tensors on a CUDA device.
pub(crate) fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    let op = Conv {
        geometry: Geometry { stride, padding },
        pass: Pass::Forward,
    };
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

#[derive(Clone, Copy, Debug)]
struct Geometry {
    stride: usize,
    padding: usize,
}

type Dims = [usize; 4];

impl Geometry {
    fn output(&self, x: Dims, w: Dims) -> candle_core::Result<Dims> {
        let out = |size: usize| match (size + 2 * self.padding).checked_sub(w[2]) {
            Some(room) => Ok(room / self.stride + 1),
            None => candle_core::bail!("a {}x{} kernel does not fit input {x:?}", w[2], w[3]),
        };
        Ok([x[0], w[0], out(x[2])?, out(x[3])?])
    }
}

/// One cuDNN convolution pass, as a candle op on two tensors.
struct Conv {
    geometry: Geometry,
    pass: Pass,
}

#[derive(Clone, Copy)]
enum Pass {
    /// `y` from `(x, w)`; differentiable.
    Forward,
    /// `dx` from `(dy, w)`, for an input of these dimensions.
    Data(Dims),
    /// `dw` from `(x, dy)`, for a weight of these dimensions.
    Filter(Dims),
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        match self.pass {
            Pass::Forward => "cudnn-conv2d",
            Pass::Data(_) => "cudnn-conv2d-backward-data",
            Pass::Filter(_) => "cudnn-conv2d-backward-filter",
        }
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Fwd<CpuStorage> {
        candle_core::bail!("{} runs on CUDA only", self.name())
    }

    fn cuda_fwd(&self, a: &CudaStorage, al: &Layout, b: &CudaStorage, bl: &Layout) -> Fwd {
        let (x, w, y) = match self.pass {
            Pass::Forward => {
                let (x, w) = (dims(al)?, dims(bl)?);
                (x, w, self.geometry.output(x, w)?)
            }
            Pass::Data(x) => (x, dims(bl)?, dims(al)?),
            Pass::Filter(w) => (dims(al)?, w, dims(bl)?),
        };
        let c = Convolution::new(&a.device, self.geometry, x, w, y)?;
        let (a, b) = (view(a, al)?, view(b, bl)?);
        let one_zero = (1f32, 0f32);
        // SAFETY (each launch): the descriptors were made from these contiguous f32 tensors'
        // dimensions, and the output is allocated at its descriptor's size.
        match self.pass {
            Pass::Forward => {
                let op = ConvForward {
                    conv: &c.conv,
                    x: &c.x,
                    w: &c.w,
                    y: &c.y,
                };
                let algo = op.pick_algorithm()?;
                let mut workspace = c.workspace(op.get_workspace_size(algo)?)?;
                let mut out = c.output(y)?;
                unsafe { op.launch(algo, Some(&mut workspace), one_zero, &a, &b, &mut out)? };
                c.storage(out, y)
            }
            Pass::Data(_) => {
                let op = ConvBackwardData {
                    conv: &c.conv,
                    dx: &c.x,
                    w: &c.w,
                    dy: &c.y,
                };
                let algo = op.pick_algorithm()?;
                let mut workspace = c.workspace(op.get_workspace_size(algo)?)?;
                let mut out = c.output(x)?;
                unsafe { op.launch(algo, Some(&mut workspace), one_zero, &mut out, &b, &a)? };
                c.storage(out, x)
            }
            Pass::Filter(_) => {
                let op = ConvBackwardFilter {
                    conv: &c.conv,
                    x: &c.x,
                    dw: &c.w,
                    dy: &c.y,
                };
                let algo = op.pick_algorithm()?;
                let mut workspace = c.workspace(op.get_workspace_size(algo)?)?;
                let mut out = c.output(w)?;
                unsafe { op.launch(algo, Some(&mut workspace), one_zero, &a, &mut out, &b)? };
                c.storage(out, w)
            }
        }
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _: &Tensor, dy: &Tensor) -> Grads {
        let dy = dy.contiguous()?;
        let pass = |pass| Conv {
            geometry: self.geometry,
            pass,
        };
        let dx = dy.apply_op2_no_bwd(w, &pass(Pass::Data(dims4(x)?)))?;
        let dw = x.apply_op2_no_bwd(&dy, &pass(Pass::Filter(dims4(w)?)))?;
        Ok((Some(dx), Some(dw)))
    }
}

type Fwd<S = CudaStorage> = candle_core::Result<(S, Shape)>;
type Grads = candle_core::Result<(Option<Tensor>, Option<Tensor>)>;

/// The descriptors of one convolution: input, weight, output, geometry.
struct Convolution {
    device: CudaDevice,
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    y: TensorDescriptor<f32>,
}

impl Convolution {
    fn new(
        device: &CudaDevice,
        g: Geometry,
        x: Dims,
        w: Dims,
        y: Dims,
    ) -> candle_core::Result<Self> {
        let cudnn = handle(device)?;
        let (pad, stride) = ([g.padding as i32; 2], [g.stride as i32; 2]);
        let mode = cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
        let mut conv = cudnn.create_conv2d::<f32>(pad, stride, [1, 1], mode)?;
        if !TF32.load(Ordering::Relaxed) {
            conv.set_math_type(cudnnMathType_t::CUDNN_FMA_MATH)?;
        }
        let nchw = cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        Ok(Self {
            device: device.clone(),
            conv,
            x: cudnn.create_4d_tensor::<f32>(nchw, ints(x))?,
            w: cudnn.create_4d_filter::<f32>(nchw, ints(w))?,
            y: cudnn.create_4d_tensor::<f32>(nchw, ints(y))?,
        })
    }

    fn workspace(&self, bytes: usize) -> candle_core::Result<CudaSlice<u8>> {
        // SAFETY: cuDNN's scratch space, never read before cuDNN writes it.
        unsafe { self.device.alloc::<u8>(bytes.max(1)) }
    }

    fn output(&self, dims: Dims) -> candle_core::Result<CudaSlice<f32>> {
        // SAFETY: every launch above writes its whole output (beta = 0).
        unsafe { self.device.alloc::<f32>(dims.iter().product()) }
    }

    fn storage(&self, values: CudaSlice<f32>, dims: Dims) -> Fwd {
        let storage = CudaStorage::wrap_cuda_slice(values, self.device.clone());
        Ok((storage, Shape::from(dims.to_vec())))
    }
}

thread_local! {
    /// cuDNN handles are neither Send nor Sync: one per thread and device, as candle keeps them.
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
}

fn handle(device: &CudaDevice) -> candle_core::Result<Arc<Cudnn>> {
    HANDLES.with_borrow_mut(|handles| {
        if let Some(handle) = handles.get(&device.id()) {
            return Ok(handle.clone());
        }
        let handle = Cudnn::new(device.cuda_stream()).map_err(candle_core::Error::wrap)?;
        handles.insert(device.id(), handle.clone());
        Ok(handle)
    })
}

fn dims(layout: &Layout) -> candle_core::Result<Dims> {
    if !layout.is_contiguous() {
        candle_core::bail!("cuDNN convolutions take contiguous tensors, got {layout:?}");
    }
    let (n, c, h, w) = layout.shape().dims4()?;
    Ok([n, c, h, w])
}

fn dims4(t: &Tensor) -> candle_core::Result<Dims> {
    let (n, c, h, w) = t.dims4()?;
    Ok([n, c, h, w])
}

fn ints(dims: Dims) -> [i32; 4] {
    dims.map(|d| d as i32)
}

/// The f32 values of a contiguous storage, from the layout's offset on.
fn view<'a>(storage: &'a CudaStorage, layout: &Layout) -> candle_core::Result<CudaView<'a, f32>> {
    let slice = storage.as_cuda_slice::<f32>()?;
    Ok(slice.slice(layout.start_offset()..))
}
