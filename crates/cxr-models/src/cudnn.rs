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
//! Each convolution's descriptors and each pass's algorithm and workspace size are worked out
//! once per shape and kept ([`Plan`], one cache per thread as the cuDNN handles are): asking the
//! heuristics and building descriptors on every call cost about 360 queries per DenseNet121
//! training step. [`plans_made`] counts the plans, for the tests and `gpu-check`.
//!
//! bf16: with both operands in bf16 the products run on bf16 tensor cores and accumulate in f32
//! (the convolution descriptor's compute type), the output rounded to bf16 (see
//! `crate::precision`).
//!
//! Checked on an H200 by `cxr-train gpu-check` (tools/gpu-check.sh); the golden tests run on a GPU
//! with `CXR_TEST_DEVICE=cuda cargo test -p cxr-models --features cudnn`.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::sys::{
    cudnnConvolutionBwdDataAlgo_t, cudnnConvolutionBwdFilterAlgo_t, cudnnConvolutionFwdAlgo_t,
    cudnnConvolutionMode_t, cudnnMathType_t, cudnnTensorFormat_t,
};
use candle_core::cuda_backend::cudarc::cudnn::{
    ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, CudnnDataType,
    FilterDescriptor, TensorDescriptor,
};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaDevice, DeviceId};
use candle_core::{CpuStorage, CudaStorage, CustomOp2, DType, Layout, Shape, Tensor, WithDType};
use half::bf16;

static TF32: AtomicBool = AtomicBool::new(true);
static PLANS_MADE: AtomicUsize = AtomicUsize::new(0);

/// Whether cuDNN may use TF32 tensor cores for f32 convolutions (the default, as in PyTorch).
pub fn set_tf32(allowed: bool) {
    TF32.store(allowed, Ordering::Relaxed);
}

/// How many convolution plans (descriptors of one shape, dtype and TF32 setting) this process
/// has made: after the first training step of a model it stops growing.
pub fn plans_made() -> usize {
    PLANS_MADE.load(Ordering::Relaxed)
}

/// `[N, c_in, H, W]` convolved with `[c_out, c_in, k, k]`, without bias or dilation, on cuDNN
/// forward and backward. Both must be contiguous-able f32 or both bf16 tensors on a CUDA device.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
        match (a.dtype(), b.dtype()) {
            (DType::F32, DType::F32) => self.run::<f32>(a, al, b, bl),
            (DType::BF16, DType::BF16) => self.run::<bf16>(a, al, b, bl),
            (x, y) => candle_core::bail!(
                "{}: takes f32 or bf16 pairs, got {x:?} and {y:?}",
                self.name()
            ),
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

/// The element types cuDNN convolves here.
trait Element: CudnnDataType + CudaDType + DeviceRepr + WithDType + 'static {}
impl Element for f32 {}
impl Element for bf16 {}

/// `op`'s algorithm and workspace size, searched once per plan and then read from `cell` (a
/// macro: cuDNN's three passes have three operation types with no common trait).
macro_rules! algorithm {
    ($cell:expr, $op:expr) => {
        cached($cell, || {
            let algo = $op.pick_algorithm()?;
            Ok((algo, $op.get_workspace_size(algo)?))
        })
    };
}

impl Conv {
    fn run<T: Element>(&self, a: &CudaStorage, al: &Layout, b: &CudaStorage, bl: &Layout) -> Fwd {
        let (x, w, y) = match self.pass {
            Pass::Forward => {
                let (x, w) = (dims(al)?, dims(bl)?);
                (x, w, self.geometry.output(x, w)?)
            }
            Pass::Data(x) => (x, dims(bl)?, dims(al)?),
            Pass::Filter(w) => (dims(al)?, w, dims(bl)?),
        };
        let plan = Plan::<T>::get(&a.device, self.geometry, x, w, y)?;
        let (a, b) = (view::<T>(a, al)?, view::<T>(b, bl)?);
        let one_zero = (T::from_f64(1.0), T::from_f64(0.0));
        // Each launch is safe for one reason: the plan's descriptors were made from these
        // contiguous tensors' dimensions and dtype, and the output is allocated at its
        // descriptor's size.
        match self.pass {
            Pass::Forward => {
                let op = plan.forward_op();
                let (algo, bytes) = algorithm!(&plan.forward, op)?;
                let (mut workspace, mut out) = (plan.workspace(bytes)?, plan.output(y)?);
                // SAFETY: descriptors and output sizes come from these tensors (above).
                unsafe { op.launch(algo, Some(&mut workspace), one_zero, &a, &b, &mut out)? };
                plan.storage(out, y)
            }
            Pass::Data(_) => {
                let op = plan.data_op();
                let (algo, bytes) = algorithm!(&plan.data, op)?;
                let (mut workspace, mut out) = (plan.workspace(bytes)?, plan.output(x)?);
                // SAFETY: descriptors and output sizes come from these tensors (above).
                unsafe { op.launch(algo, Some(&mut workspace), one_zero, &mut out, &b, &a)? };
                plan.storage(out, x)
            }
            Pass::Filter(_) => {
                let op = plan.filter_op();
                let (algo, bytes) = algorithm!(&plan.filter, op)?;
                let (mut workspace, mut out) = (plan.workspace(bytes)?, plan.output(w)?);
                // SAFETY: descriptors and output sizes come from these tensors (above).
                unsafe { op.launch(algo, Some(&mut workspace), one_zero, &a, &mut out, &b)? };
                plan.storage(out, w)
            }
        }
    }
}

type Fwd<S = CudaStorage> = candle_core::Result<(S, Shape)>;
type Grads = candle_core::Result<(Option<Tensor>, Option<Tensor>)>;

/// The descriptors of one convolution (input, weight, output, geometry; the compute type is
/// f32 whatever `T` is) and, once asked, each pass's algorithm with its workspace size.
struct Plan<T: Element> {
    device: CudaDevice,
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<T>,
    w: FilterDescriptor<T>,
    y: TensorDescriptor<T>,
    forward: Cell<Option<(cudnnConvolutionFwdAlgo_t, usize)>>,
    data: Cell<Option<(cudnnConvolutionBwdDataAlgo_t, usize)>>,
    filter: Cell<Option<(cudnnConvolutionBwdFilterAlgo_t, usize)>>,
}

/// What a plan is kept under: device, geometry, shapes, dtype and whether TF32 was allowed.
type PlanKey = (DeviceId, Geometry, [Dims; 3], DType, bool);

thread_local! {
    /// cuDNN handles are neither Send nor Sync: one per thread and device, as candle keeps them.
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
    /// The plans of this thread (each holds descriptors made on this thread's handle).
    static PLANS: RefCell<HashMap<PlanKey, Rc<dyn Any>>> = RefCell::new(HashMap::new());
}

impl<T: Element> Plan<T> {
    /// The kept plan for this convolution, made on first use.
    fn get(
        device: &CudaDevice,
        g: Geometry,
        x: Dims,
        w: Dims,
        y: Dims,
    ) -> candle_core::Result<Rc<Self>> {
        let tf32 = TF32.load(Ordering::Relaxed);
        let key = (device.id(), g, [x, w, y], T::DTYPE, tf32);
        if let Some(plan) = PLANS.with_borrow(|plans| plans.get(&key).cloned()) {
            return Ok(plan.downcast().expect("plans are keyed by their dtype"));
        }
        let plan = Rc::new(Self::new(device, g, x, w, y, tf32)?);
        PLANS.with_borrow_mut(|plans| plans.insert(key, plan.clone()));
        PLANS_MADE.fetch_add(1, Ordering::Relaxed);
        Ok(plan)
    }

    fn new(
        device: &CudaDevice,
        g: Geometry,
        x: Dims,
        w: Dims,
        y: Dims,
        tf32: bool,
    ) -> candle_core::Result<Self> {
        let cudnn = handle(device)?;
        let (pad, stride) = ([g.padding as i32; 2], [g.stride as i32; 2]);
        let mode = cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
        let mut conv = cudnn.create_conv2d::<f32>(pad, stride, [1, 1], mode)?;
        // bf16 always runs on tensor cores; f32 may use them through TF32 unless told not to.
        if T::DTYPE == DType::BF16 {
            conv.set_math_type(cudnnMathType_t::CUDNN_TENSOR_OP_MATH)?;
        } else if !tf32 {
            conv.set_math_type(cudnnMathType_t::CUDNN_FMA_MATH)?;
        }
        let nchw = cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        Ok(Self {
            device: device.clone(),
            conv,
            x: cudnn.create_4d_tensor::<T>(nchw, ints(x))?,
            w: cudnn.create_4d_filter::<T>(nchw, ints(w))?,
            y: cudnn.create_4d_tensor::<T>(nchw, ints(y))?,
            forward: Cell::new(None),
            data: Cell::new(None),
            filter: Cell::new(None),
        })
    }

    fn forward_op(&self) -> ConvForward<'_, T, f32, T> {
        ConvForward {
            conv: &self.conv,
            x: &self.x,
            w: &self.w,
            y: &self.y,
        }
    }

    fn data_op(&self) -> ConvBackwardData<'_, T, f32, T> {
        ConvBackwardData {
            conv: &self.conv,
            dx: &self.x,
            w: &self.w,
            dy: &self.y,
        }
    }

    fn filter_op(&self) -> ConvBackwardFilter<'_, T, f32, T> {
        ConvBackwardFilter {
            conv: &self.conv,
            x: &self.x,
            dw: &self.w,
            dy: &self.y,
        }
    }

    fn workspace(&self, bytes: usize) -> candle_core::Result<CudaSlice<u8>> {
        // SAFETY: cuDNN's scratch space, never read before cuDNN writes it.
        unsafe { self.device.alloc::<u8>(bytes.max(1)) }
    }

    fn output(&self, dims: Dims) -> candle_core::Result<CudaSlice<T>> {
        // SAFETY: every launch above writes its whole output (beta = 0).
        unsafe { self.device.alloc::<T>(dims.iter().product()) }
    }

    fn storage(&self, values: CudaSlice<T>, dims: Dims) -> Fwd {
        let storage = CudaStorage::wrap_cuda_slice(values, self.device.clone());
        Ok((storage, Shape::from(dims.to_vec())))
    }
}

/// The value in `cell`, computed by `make` the first time.
fn cached<V: Copy>(
    cell: &Cell<Option<V>>,
    make: impl FnOnce() -> candle_core::Result<V>,
) -> candle_core::Result<V> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = make()?;
    cell.set(Some(v));
    Ok(v)
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

/// The values of a contiguous storage, from the layout's offset on.
fn view<'a, T: Element>(
    storage: &'a CudaStorage,
    layout: &Layout,
) -> candle_core::Result<CudaView<'a, T>> {
    let slice = storage.as_cuda_slice::<T>()?;
    Ok(slice.slice(layout.start_offset()..))
}
