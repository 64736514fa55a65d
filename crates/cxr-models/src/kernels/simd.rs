//! The vector instruction sets the hand-written kernels come in, chosen at run time.
//!
//! Release binaries are built for any x86-64 (SSE2), and a kernel's variants are compiled with
//! `#[target_feature]` for each width, so one binary runs AVX2 on an AVX2 machine and AVX-512
//! on an AVX-512 one (most current servers: Intel since Skylake-SP, AMD since Zen 4). The
//! widest the CPU has is used, unless `CXR_SIMD` asks for a narrower one: `CXR_SIMD=avx2` on an
//! AVX-512 machine measures what AVX-512 brings, with everything else equal, and is what to set
//! if a machine slows down under 512-bit vectors. Tests run each variant the machine supports.

use std::sync::OnceLock;

/// A vector instruction set with its own variant of the kernels, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Simd {
    /// 256-bit vectors, with FMA.
    Avx2,
    /// 512-bit vectors (AVX-512F).
    Avx512,
}

impl Simd {
    const ALL: [Simd; 2] = [Simd::Avx2, Simd::Avx512];

    /// f32 lanes per vector.
    pub(crate) fn lanes(self) -> usize {
        match self {
            Simd::Avx2 => 8,
            Simd::Avx512 => 16,
        }
    }

    /// Whether this CPU runs this variant.
    pub(crate) fn available(self) -> bool {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        match self {
            Simd::Avx2 => avx2,
            Simd::Avx512 => avx2 && std::is_x86_feature_detected!("avx512f"),
        }
    }

    /// Every variant this CPU runs (for tests, which check each).
    #[cfg(test)]
    pub(crate) fn supported() -> Vec<Simd> {
        Simd::ALL.into_iter().filter(|s| s.available()).collect()
    }

    /// The variant kernels run on: the widest available, at most `CXR_SIMD`'s; `None` on CPUs
    /// without AVX2 (or with `CXR_SIMD=none`), where the portable paths run.
    pub(crate) fn best() -> Option<Simd> {
        static BEST: OnceLock<Option<Simd>> = OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = std::env::var("CXR_SIMD").ok();
            Simd::choose(cap.as_deref()).unwrap_or_else(|e| panic!("{e}"))
        })
    }

    /// The widest available variant allowed by `cap` (`CXR_SIMD`'s value).
    fn choose(cap: Option<&str>) -> Result<Option<Simd>, String> {
        let cap = match cap.map(str::trim) {
            None | Some("") => Some(Simd::Avx512),
            Some("none") => None,
            Some("avx2") => Some(Simd::Avx2),
            Some("avx512") => Some(Simd::Avx512),
            Some(other) => {
                return Err(format!(
                    "CXR_SIMD={other:?}: expected avx512, avx2 or none (the widest vector \
                     instructions the CPU kernels may use)"
                ))
            }
        };
        Ok(Simd::ALL
            .into_iter()
            .rev()
            .find(|s| Some(*s) <= cap && s.available()))
    }

    /// `avx2` or `avx512`: the variant of a kernel for this instruction set.
    pub(crate) fn pick<F>(self, avx2: F, avx512: F) -> F {
        match self {
            Simd::Avx2 => avx2,
            Simd::Avx512 => avx512,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cxr_simd_caps_the_width_and_bad_values_are_refused() {
        assert_eq!(Simd::choose(Some("none")).unwrap(), None);
        let widest = Simd::supported().last().copied();
        assert_eq!(Simd::choose(None).unwrap(), widest);
        assert_eq!(Simd::choose(Some("avx512")).unwrap(), widest);
        if Simd::Avx2.available() {
            assert_eq!(Simd::choose(Some("avx2")).unwrap(), Some(Simd::Avx2));
        }
        let err = Simd::choose(Some("sse9")).unwrap_err();
        assert!(
            err.contains("CXR_SIMD=\"sse9\"") && err.contains("avx2"),
            "{err}"
        );
    }
}
