// BatchNorm2d (+ ReLU) on CUDA, NCHW f32: one block per channel, whose threads stride over the
// channel's N * H * W values. See src/batchnorm_cuda.rs for the layouts of `out` and `p`.
//
// Forward (train mode): the mean, then the biased variance around it (two passes, as exact as a
// two-pass CPU computation), then y = x * scale + shift with scale = w / sqrt(var + eps) and
// shift = b - mean * scale, and max(y, 0) when `relu`. Backward: with g = dy masked by y > 0
// (the same fmaf as the forward, so the same decisions), db = sum(g), dw = sum(g * xhat),
// dx = scale * (g - db / M - xhat * dw / M).

#define THREADS 512

// The block-wide sum of v (every thread gets it). `shared` holds THREADS / 32 floats.
__device__ float block_sum(float v, float* shared) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // shared may still be read by a previous call
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < blockDim.x / 32 ? shared[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// Index of value i (0 <= i < n * hw) of channel ch.
__device__ __forceinline__ long long at(long long i, int ch, int c, int hw) {
    long long img = i / hw;
    return (img * c + ch) * hw + (i - img * hw);
}

// The upstream gradient g, or 0 where the fused ReLU's output was not positive (recomputed with
// the forward's very fmaf, so the decisions are the forward's).
__device__ __forceinline__ float masked(float g, float xv, float scale, float shift, int relu) {
    return relu && fmaf(xv, scale, shift) <= 0.0f ? 0.0f : g;
}

// out: y (n * c * hw), then the batch mean (c), then the biased batch variance (c).
extern "C" __global__ void bn_train_forward(const float* x, const float* w, const float* b,
                                            float* out, int n, int c, int hw, float eps,
                                            int relu) {
    __shared__ float shared[THREADS / 32];
    const int ch = blockIdx.x;
    const long long m = (long long)n * hw, total = m * c;
    float s = 0.0f;
    for (long long i = threadIdx.x; i < m; i += blockDim.x) s += x[at(i, ch, c, hw)];
    const float mean = block_sum(s, shared) / (float)m;
    float q = 0.0f;
    for (long long i = threadIdx.x; i < m; i += blockDim.x) {
        const float d = x[at(i, ch, c, hw)] - mean;
        q = fmaf(d, d, q);
    }
    const float var = block_sum(q, shared) / (float)m;
    const float scale = w[ch] * rsqrtf(var + eps), shift = b[ch] - mean * scale;
    for (long long i = threadIdx.x; i < m; i += blockDim.x) {
        const long long k = at(i, ch, c, hw);
        const float y = fmaf(x[k], scale, shift);
        out[k] = relu && y < 0.0f ? 0.0f : y;
    }
    if (threadIdx.x == 0) {
        out[total + ch] = mean;
        out[total + c + ch] = var;
    }
}

// p: w, b, mean, biased variance (c each). out: dx (n * c * hw), then dw (c), then db (c).
extern "C" __global__ void bn_train_backward(const float* x, const float* dy, const float* p,
                                             float* out, int n, int c, int hw, float eps,
                                             int relu) {
    __shared__ float shared[THREADS / 32];
    const int ch = blockIdx.x;
    const long long m = (long long)n * hw, total = m * c;
    const float mean = p[2 * c + ch], invstd = rsqrtf(p[3 * c + ch] + eps);
    const float scale = p[ch] * invstd, shift = p[c + ch] - mean * scale;
    float sg = 0.0f, sgx = 0.0f;
    for (long long i = threadIdx.x; i < m; i += blockDim.x) {
        const long long k = at(i, ch, c, hw);
        const float xv = x[k], g = masked(dy[k], xv, scale, shift, relu);
        sg += g;
        sgx = fmaf(g, (xv - mean) * invstd, sgx);
    }
    const float db = block_sum(sg, shared), dw = block_sum(sgx, shared);
    const float mean_g = db / (float)m, mean_gx = dw / (float)m;
    for (long long i = threadIdx.x; i < m; i += blockDim.x) {
        const long long k = at(i, ch, c, hw);
        const float xv = x[k], g = masked(dy[k], xv, scale, shift, relu);
        out[k] = scale * (g - mean_g - (xv - mean) * invstd * mean_gx);
    }
    if (threadIdx.x == 0) {
        out[total + ch] = dw;
        out[total + c + ch] = db;
    }
}

// Eval mode without a backward (inference): y = x * alpha + beta per channel, then the ReLU.
extern "C" __global__ void bn_eval_forward(const float* x, const float* alpha, const float* beta,
                                           float* y, int c, int hw, long long total, int relu) {
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const int ch = (int)((k / hw) % c);
        const float v = fmaf(x[k], alpha[ch], beta[ch]);
        y[k] = relu && v < 0.0f ? 0.0f : v;
    }
}
