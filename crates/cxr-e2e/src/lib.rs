//! End-to-end tests of the study's chain across the tools (`tests/study.rs`): bundled NIH images
//! indexed by cxr-index's library, preprocessed by cxr-preprocess's, pretrained and fine-tuned
//! by cxr-train's. They live in this crate of their own because a tool crate never depends on
//! another tool crate, not even for its tests. The crate has no code.
