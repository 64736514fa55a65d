//! Seeded random initialisation following torchvision's schemes.
//!
//! Why not candle's RNG: `Device::set_seed` fails on the CPU backend in candle 0.11 (only CUDA
//! and Metal can be seeded), so `Tensor::randn` on the CPU is not reproducible. Values are
//! therefore drawn here, on the host, from a small deterministic generator (SplitMix64 +
//! Box-Muller) and then copied to the device: one seed gives the same weights on every device.
//! They do not reproduce PyTorch's random stream, only its distributions.

use cxr_core::hash::SplitMix64;

/// Deterministic generator for initial weights: the workspace's [`SplitMix64`] with normal deviates on top.
#[derive(Clone, Debug)]
pub(crate) struct InitRng {
    uniform: SplitMix64,
    spare_normal: Option<f64>,
}

impl InitRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            uniform: SplitMix64::new(seed),
            spare_normal: None,
        }
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        self.uniform.uniform()
    }

    /// Standard normal (Box-Muller; both values of each pair are used).
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let radius = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * self.uniform();
        self.spare_normal = Some(radius * angle.sin());
        radius * angle.cos()
    }
}

/// Which fan Kaiming initialisation preserves.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fan {
    /// `mode="fan_in"` (torchvision DenseNet: `kaiming_normal_(w)`).
    In,
    /// `mode="fan_out"` (torchvision ResNet: `kaiming_normal_(w, mode="fan_out", nonlinearity="relu")`).
    Out,
}

/// An initialisation scheme, as in `torch.nn.init`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Init {
    Zeros,
    Ones,
    /// Normal with std = gain / sqrt(fan), gain = sqrt(2) (ReLU, or leaky ReLU with slope 0).
    KaimingNormal(Fan),
    /// Uniform on [-bound, bound]; `nn.Linear`'s default is bound = 1 / sqrt(fan_in) for both
    /// weight (kaiming_uniform with a = sqrt(5)) and bias.
    Uniform {
        bound: f64,
    },
}

impl Init {
    /// Draws the initial values of a tensor of this shape (row-major).
    pub(crate) fn sample(self, shape: &[usize], rng: &mut InitRng) -> Vec<f32> {
        let count: usize = shape.iter().product();
        match self {
            Self::Zeros => vec![0.0; count],
            Self::Ones => vec![1.0; count],
            Self::KaimingNormal(fan) => {
                let receptive: usize = shape.iter().skip(2).product();
                let fan = match fan {
                    Fan::In => shape.get(1).copied().unwrap_or(1) * receptive,
                    Fan::Out => shape.first().copied().unwrap_or(1) * receptive,
                };
                let std = (2.0 / fan.max(1) as f64).sqrt();
                (0..count).map(|_| (rng.normal() * std) as f32).collect()
            }
            Self::Uniform { bound } => (0..count)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_std(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn kaiming_normal_has_torch_std() {
        let mut rng = InitRng::new(7);
        // fan_out = 64 * 3 * 3 = 576 -> std = sqrt(2 / 576)
        let w = Init::KaimingNormal(Fan::Out).sample(&[64, 32, 3, 3], &mut rng);
        let (mean, std) = mean_std(&w);
        assert!(mean.abs() < 3e-3, "{mean}");
        assert!((std / (2.0f64 / 576.0).sqrt() - 1.0).abs() < 0.03, "{std}");
        // fan_in = 32 * 9 = 288
        let w = Init::KaimingNormal(Fan::In).sample(&[64, 32, 3, 3], &mut rng);
        assert!((mean_std(&w).1 / (2.0f64 / 288.0).sqrt() - 1.0).abs() < 0.03);
    }

    #[test]
    fn uniform_stays_in_bounds_and_seed_repeats() {
        let a = Init::Uniform { bound: 0.25 }.sample(&[1000], &mut InitRng::new(3));
        let b = Init::Uniform { bound: 0.25 }.sample(&[1000], &mut InitRng::new(3));
        assert_eq!(a, b);
        assert!(a.iter().all(|x| x.abs() <= 0.25));
        assert!(a.iter().any(|&x| x > 0.2) && a.iter().any(|&x| x < -0.2));
    }
}
