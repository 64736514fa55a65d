//! Broken JPEGs never crash the reduced-size decoder.
//!
//! `jpeg.rs` reads untrusted bytes with hand-written table and bit handling, so it is fed
//! thousands of deterministic mutations of real files (bit flips, bytes overwritten, cut out or
//! inserted, stray markers, extreme 16-bit fields, truncations) at every scale. Each must come
//! back as decoded, unsupported or broken: never a panic. Cutting the entropy-coded data short
//! must always be reported, never filled in.

use cxr_core::hash::SplitMix64;
use cxr_image::jpeg::{decode, Outcome};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Small real radiographs as JPEG: grey and colour (the `image` crate writes baseline files),
/// sizes that are not whole blocks, plus the restart-marker fixture.
fn inputs() -> Vec<(String, Vec<u8>)> {
    // The shared NIH images (`cxr_core::testdata`); a missing copy fails loudly.
    let png = cxr_core::testdata::shared_path("data/nih/images-full/00000442_000.png");
    let png = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    let crop = png.crop_imm(300, 280, 123, 101);
    let mut grey = Vec::new();
    crop.to_luma8()
        .write_to(
            &mut std::io::Cursor::new(&mut grey),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let mut colour = Vec::new();
    let mut rgb = crop.to_rgb8();
    for p in rgb.pixels_mut() {
        p.0 = [
            p.0[0],
            (p.0[1] as f32 * 0.8) as u8,
            (p.0[2] as f32 * 0.6) as u8,
        ];
    }
    rgb.write_to(
        &mut std::io::Cursor::new(&mut colour),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    let restarts = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nih-00001511-colour-restarts.jpg"),
    )
    .unwrap();
    vec![
        ("grey 123x101".into(), grey),
        ("colour 123x101".into(), colour),
        ("colour restarts 600x520".into(), restarts),
    ]
}

/// Decode at `eighths / 8`, turning a panic into a test failure that names the mutation.
fn try_decode(bytes: &[u8], eighths: usize, what: &dyn Fn() -> String) -> Outcome {
    let outcome = catch_unwind(AssertUnwindSafe(|| decode(bytes, |_, _| Some(eighths))))
        .unwrap_or_else(|_| panic!("decoder panicked on {}", what()));
    if let Outcome::Decoded(grey) = &outcome {
        assert_eq!(grey.pixels.len(), grey.width * grey.height, "{}", what());
    }
    outcome
}

/// Offset of the entropy-coded data: just after the start-of-scan segment.
fn scan_start(bytes: &[u8]) -> usize {
    let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    sos + 2 + usize::from(u16::from_be_bytes([bytes[sos + 2], bytes[sos + 3]]))
}

#[test]
fn the_unmutated_inputs_decode_at_every_scale() {
    for (name, bytes) in inputs() {
        for eighths in [1, 2, 4] {
            let outcome = try_decode(&bytes, eighths, &|| name.clone());
            assert!(
                matches!(outcome, Outcome::Decoded(_)),
                "{name}: {outcome:?}"
            );
        }
    }
}

#[test]
fn truncated_entropy_data_is_always_an_error() {
    for (name, bytes) in inputs() {
        let start = scan_start(&bytes);
        // Every cut from the first entropy byte to the last one before the end-of-image marker.
        let end = bytes.len() - 2;
        let step = ((end - start) / 150).max(1);
        for cut in (start..end).step_by(step).chain([end - 1]) {
            let eighths = [1, 2, 4][cut % 3];
            let what = || format!("{name} cut at {cut} of {}", bytes.len());
            match try_decode(&bytes[..cut], eighths, &what) {
                Outcome::Broken(_) => {}
                other => panic!("{}: expected an error, got {other:?}", what()),
            }
        }
    }
}

#[test]
fn mutated_files_decode_or_fail_but_never_panic() {
    let mut rng = SplitMix64::new(2024);
    let mut seen = [0usize; 3];
    for (name, original) in inputs() {
        let start = scan_start(&original);
        for i in 0..700 {
            let mut bytes = original.clone();
            // Half the mutations hit the headers, where one byte changes the whole structure.
            let pos = if i % 2 == 0 {
                rng.below(start)
            } else {
                rng.below(bytes.len())
            };
            let kind = rng.below(7);
            match kind {
                0 => bytes[pos] ^= 1 << rng.below(8),
                1 => bytes[pos] = rng.next_u64() as u8,
                2 => bytes[pos] = 0xFF,
                3 => {
                    let len = 1 + rng.below(16);
                    bytes.drain(pos..(pos + len).min(bytes.len()));
                }
                4 => {
                    let len = 1 + rng.below(16);
                    let junk: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                    bytes.splice(pos..pos, junk);
                }
                5 => bytes.truncate(pos),
                _ => {
                    // Lengths, sizes and counts are 16-bit big-endian fields.
                    let value: u16 = [0, 1, 2, 0x7FFF, 0xFFFF][rng.below(5)];
                    let end = (pos + 2).min(bytes.len());
                    bytes[pos..end].copy_from_slice(&value.to_be_bytes()[..end - pos]);
                }
            }
            let eighths = [1, 2, 4][i % 3];
            let what = || format!("{name}, mutation {i} (kind {kind} at byte {pos})");
            let outcome = try_decode(&bytes, eighths, &what);
            seen[match outcome {
                Outcome::Decoded(_) => 0,
                Outcome::Unsupported => 1,
                Outcome::Broken(_) => 2,
            }] += 1;
        }
    }
    // The mutations reach every outcome, so they exercise more than the first header check.
    assert!(
        seen.iter().all(|&n| n > 20),
        "decoded, unsupported, broken: {seen:?}"
    );
}
