//! The vector instruction sets the hand-written kernels come in, chosen at run time.
//!
//! Release binaries are built for any x86-64 (SSE2), and a kernel's variants are compiled with
//! `#[target_feature]` for each width, so one binary runs AVX2 on an AVX2 machine and AVX-512
//! on an AVX-512 one (most current servers: Intel since Skylake-SP, AMD since Zen 4). The
//! widest the CPU has is used, unless `CXR_SIMD` asks for a narrower one: `CXR_SIMD=avx2` on an
//! AVX-512 machine measures what AVX-512 brings, with everything else equal, and is what to set
//! if a machine slows down under 512-bit vectors. Tests run each variant the machine supports.
//!
//! Two kinds of kernels use them: hand-written assembly per width (`super::direct`), and plain
//! Rust loops that the compiler vectorises, compiled once per width by [`vectorized!`]
//! (BatchNorm's passes and sums, the max pool). Built for the baseline x86-64, those loops get
//! 128-bit SSE2 without FMA: BatchNorm's gradient sums ran at 0.87 ns per value on one core, 0.42
//! with AVX2 or AVX-512.

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

    /// The variant [`vectorized!`] functions run: [`Simd::best`], or in tests the one
    /// [`forcing`] names on this thread.
    pub(crate) fn current() -> Option<Simd> {
        #[cfg(test)]
        if let Some(forced) = FORCED.get() {
            return forced;
        }
        Simd::best()
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
thread_local! {
    static FORCED: std::cell::Cell<Option<Option<Simd>>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with [`vectorized!`] functions called on this thread running `simd`'s variant
/// (`None`: the baseline x86-64 one).
#[cfg(test)]
pub(crate) fn forcing<R>(simd: Option<Simd>, f: impl FnOnce() -> R) -> R {
    assert!(
        simd.is_none_or(Simd::available),
        "{simd:?} does not run here"
    );
    let before = FORCED.replace(Some(simd));
    let out = f();
    FORCED.set(before);
    out
}

/// Asserts that `f`, which calls [`vectorized!`] functions on this thread, gives the same result
/// in every variant this CPU runs as in the baseline one (bit for bit: Rust never fuses or
/// reorders floating-point operations, so vector widths change the speed only).
#[cfg(test)]
pub(crate) fn assert_same_in_every_variant<R: PartialEq + std::fmt::Debug>(
    what: &str,
    f: impl Fn() -> R,
) {
    let baseline = forcing(None, &f);
    for simd in Simd::supported() {
        assert_eq!(
            forcing(Some(simd), &f),
            baseline,
            "{what}: {simd:?} variant"
        );
    }
}

/// Three different planes of 1000 values in [-2, 2] (a length that leaves a tail after the
/// lanes of every width), for the variant tests of the kernels.
#[cfg(test)]
pub(crate) fn test_planes() -> [Vec<f32>; 3] {
    let value = |i: usize| ((i * 7919) % 201) as f32 / 50.0 - 2.0;
    [0, 1, 2].map(|k| (0..1000).map(|i| value(i + 37 * k)).collect())
}

/// The bits of `values`, to compare variants exactly.
#[cfg(test)]
pub(crate) fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Defines a function whose body is compiled three times, for AVX-512, for AVX2 with FMA and for
/// any x86-64, and runs the variant [`Simd::current`] names. Whatever the body calls inside its
/// loops must be inlined into it (`#[inline(always)]`, or small enough), or it keeps the
/// baseline instructions; closures passed in are, when small.
macro_rules! vectorized {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi1,bmi2,lzcnt")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? $body
            #[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? $body
            fn baseline($($arg: $ty),*) $(-> $ret)? $body
            use $crate::kernels::simd::Simd;
            let simd = Simd::current();
            // SAFETY: `current` names only variants this CPU runs.
            unsafe {
                match simd {
                    Some(Simd::Avx512) => avx512($($arg),*),
                    Some(Simd::Avx2) => avx2($($arg),*),
                    None => baseline($($arg),*),
                }
            }
        }
    };
}
pub(crate) use vectorized;

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

    /// What the variant tests rest on: inside `forcing`, `current` names the forced variant,
    /// and after it the one before.
    #[test]
    fn forcing_picks_the_variant_vectorized_functions_run() {
        let before = Simd::current();
        for simd in std::iter::once(None).chain(Simd::supported().iter().copied().map(Some)) {
            assert_eq!(forcing(simd, Simd::current), simd);
            assert_eq!(Simd::current(), before);
        }
    }
}
