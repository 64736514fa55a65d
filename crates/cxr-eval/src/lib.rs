//! cxr-eval (work in progress).
