//! DICOM decoding checked against pydicom, file by file, on pydicom's own test files (every
//! transfer syntax hospitals send), on synthetic files for the LUT rules no test file exercises
//! (`tests/data/dicom/`) and on a real chest film (`$CXR_SHARED/data/dicom`).
//!
//! `tests/data/pydicom_golden.json` holds what `tests/reference/dicom_check.py` recorded with
//! pydicom 3.0.2 and the pylibjpeg plugins: per file, the transfer syntax, whether pydicom decodes
//! it, SHA-256 digests of frame 0's modality values and of the 8-bit images of both
//! [`DicomIntensity`] rules, computed with numpy. [`EXPECTED`] says, for every file, whether
//! cxr-image must match that exactly, within some grey levels (lossy JPEG: libjpeg and the Rust
//! `jpeg-decoder` round their inverse DCTs differently; the images are then compared pixel by pixel
//! with pydicom's, run live), or refuse it, and why; a file moving either way fails the test.
//!
//! pydicom's files are found through `CXR_PYDICOM_DATA` (its `data/test_files` folder) or by
//! asking `python3`; without pydicom the test fails and says what to install.

use cxr_core::hash::sha256_hex;
use cxr_core::testdata::shared_path;
use cxr_image::dicom::{self, Values};
use cxr_image::{Decoding, DicomIntensity, Target};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What cxr-image must make of a file.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Modality values and both 8-bit images identical to pydicom's.
    Exact,
    /// A lossy JPEG: both decoders are right, and the 8-bit image is within this many grey
    /// levels of pydicom's at every pixel (the largest difference measured).
    Within(u8),
    /// Decoded, but not as pydicom does, for the reason given; the 8-bit image is within this
    /// many levels of pydicom's.
    Differs(u8, &'static str),
    /// Refused with an error holding this text (and the transfer syntax, where the file has one).
    Refused(&'static str),
}

use Expect::{Differs, Exact, Refused, Within};

const NOT_BUILT: &str = "is not decoded by this build";

/// Every pydicom test file with Pixel Data, in the golden file's order.
const EXPECTED: &[(&str, Expect)] = &[
    ("693_J2KI.dcm", Exact),
    ("CT_small.dcm", Exact),
    ("ExplVR_BigEnd.dcm", Exact),
    ("GDCMJ2K_TextGBR.dcm", Exact),
    ("J2K_pixelrep_mismatch.dcm", Exact),
    ("JPEG-lossy.dcm", Refused("SamplePrecision(12)")),
    (
        "JPEG2000-embedded-sequence-delimiter.dcm",
        Refused("jpeg2k decoder failure"),
    ),
    ("JPEG2000.dcm", Exact),
    ("JPEGLSNearLossless_08.dcm", Refused(NOT_BUILT)),
    ("JPEGLSNearLossless_16.dcm", Refused(NOT_BUILT)),
    ("JPGExtended.dcm", Refused("SamplePrecision(12)")),
    ("MR_small.dcm", Exact),
    ("MR_small_RLE.dcm", Exact),
    ("MR_small_bigendian.dcm", Exact),
    ("MR_small_expb.dcm", Exact),
    ("MR_small_implicit.dcm", Exact),
    ("MR_small_jp2klossless.dcm", Exact),
    ("MR_small_jpeg_ls_lossless.dcm", Refused(NOT_BUILT)),
    ("MR_small_padded.dcm", Exact),
    (
        "MR_truncated.dcm",
        Refused("Could not read 8192 value bytes"),
    ),
    (
        "SC_jpeg_no_color_transform.dcm",
        Differs(
            77,
            "an RGB JPEG without JFIF or Adobe marker: jpeg-decoder takes it for YCbCr, pydicom \
             follows the DICOM header's RGB",
        ),
    ),
    ("SC_jpeg_no_color_transform_2.dcm", Within(1)),
    ("SC_rgb_dcmtk_+eb+cr.dcm", Within(0)),
    ("SC_rgb_dcmtk_+eb+cy+n1.dcm", Within(1)),
    ("SC_rgb_dcmtk_+eb+cy+n2.dcm", Within(1)),
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", Within(1)),
    ("SC_rgb_dcmtk_+eb+cy+s2.dcm", Within(1)),
    ("SC_rgb_dcmtk_+eb+cy+s4.dcm", Within(1)),
    ("SC_rgb_gdcm_KY.dcm", Exact),
    ("SC_rgb_jls_lossy_line.dcm", Refused(NOT_BUILT)),
    ("SC_rgb_jls_lossy_sample.dcm", Refused(NOT_BUILT)),
    ("SC_rgb_jpeg.dcm", Refused("unreadable data set")),
    ("SC_rgb_jpeg_app14_dcmd.dcm", Within(1)),
    ("SC_rgb_jpeg_dcmd.dcm", Exact),
    ("SC_rgb_jpeg_dcmtk.dcm", Within(1)),
    ("SC_rgb_jpeg_gdcm.dcm", Exact),
    ("SC_rgb_jpeg_lossy_gdcm.dcm", Within(0)),
    ("SC_rgb_rle.dcm", Exact),
    ("SC_rgb_rle_16bit.dcm", Exact),
    ("SC_rgb_rle_16bit_2frame.dcm", Exact),
    ("SC_rgb_rle_2frame.dcm", Exact),
    (
        "SC_rgb_rle_32bit.dcm",
        Refused("BitsAllocated other than 8 or 16"),
    ),
    (
        "SC_rgb_rle_32bit_2frame.dcm",
        Refused("BitsAllocated other than 8 or 16"),
    ),
    ("SC_rgb_small_odd.dcm", Exact),
    ("SC_rgb_small_odd_big_endian.dcm", Exact),
    ("SC_rgb_small_odd_jpeg.dcm", Exact),
    ("SC_ybr_full_422_uncompressed.dcm", Exact),
    ("badVR.dcm", Refused("NumberOfFrames")),
    ("dicomdirtests/77654033/CR1/6154", Exact),
    ("dicomdirtests/77654033/CR2/6247", Exact),
    ("dicomdirtests/77654033/CR3/6278", Exact),
    ("dicomdirtests/77654033/CT2/17106", Exact),
    ("dicomdirtests/77654033/CT2/17136", Exact),
    ("dicomdirtests/77654033/CT2/17166", Exact),
    ("dicomdirtests/77654033/CT2/17196", Exact),
    ("dicomdirtests/98892001/CT2N/6293", Exact),
    ("dicomdirtests/98892001/CT2N/6924", Exact),
    ("dicomdirtests/98892001/CT5N/2062", Exact),
    ("dicomdirtests/98892001/CT5N/2392", Exact),
    ("dicomdirtests/98892001/CT5N/2693", Exact),
    ("dicomdirtests/98892001/CT5N/3023", Exact),
    ("dicomdirtests/98892001/CT5N/3353", Exact),
    ("dicomdirtests/98892003/MR1/15820", Exact),
    ("dicomdirtests/98892003/MR1/4919", Exact),
    ("dicomdirtests/98892003/MR1/5641", Exact),
    ("dicomdirtests/98892003/MR2/15970", Exact),
    ("dicomdirtests/98892003/MR2/4950", Exact),
    ("dicomdirtests/98892003/MR2/4981", Exact),
    ("dicomdirtests/98892003/MR2/5011", Exact),
    ("dicomdirtests/98892003/MR2/6273", Exact),
    ("dicomdirtests/98892003/MR2/6605", Exact),
    ("dicomdirtests/98892003/MR2/6935", Exact),
    ("dicomdirtests/98892003/MR700/4467", Exact),
    ("dicomdirtests/98892003/MR700/4528", Exact),
    ("dicomdirtests/98892003/MR700/4558", Exact),
    ("dicomdirtests/98892003/MR700/4588", Exact),
    ("dicomdirtests/98892003/MR700/4618", Exact),
    ("dicomdirtests/98892003/MR700/4648", Exact),
    ("dicomdirtests/98892003/MR700/4678", Exact),
    ("examples_jpeg2k.dcm", Exact),
    ("examples_overlay.dcm", Exact),
    ("examples_palette.dcm", Refused("\"PALETTE COLOR\"")),
    ("examples_rgb_color.dcm", Exact),
    ("examples_ybr_color.dcm", Within(2)),
    ("image_dfl.dcm", Exact),
    ("liver_1frame.dcm", Exact),
    ("liver_expb_1frame.dcm", Exact),
    (
        "meta_missing_tsyntax.dcm",
        Refused("Missing data element `TransferSyntax`"),
    ),
    (
        "nested_priv_SQ.dcm",
        Refused("Missing required attribute `Columns`"),
    ),
    ("rtdose.dcm", Exact),
    ("rtdose_1frame.dcm", Exact),
    ("rtdose_expb.dcm", Exact),
    ("rtdose_expb_1frame.dcm", Exact),
    (
        "rtdose_rle.dcm",
        Refused("BitsAllocated other than 8 or 16"),
    ),
    (
        "rtdose_rle_1frame.dcm",
        Refused("BitsAllocated other than 8 or 16"),
    ),
];

/// The pydicom release the golden file was made with: its test files are the inputs.
const PYDICOM: &str = "3.0.2";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn golden() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pydicom_golden.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// pydicom's `data/test_files` folder, checked to be the release the golden file was made with.
fn pydicom_files() -> PathBuf {
    let install = format!(
        "these tests read pydicom's bundled DICOM test files and compare with pydicom: \
         `python3 -m pip install pydicom=={PYDICOM} pylibjpeg pylibjpeg-libjpeg \
         pylibjpeg-openjpeg pylibjpeg-rle numpy` (.ci/run does), or set CXR_PYDICOM_DATA to \
         pydicom {PYDICOM}'s data/test_files folder"
    );
    if let Some(dir) = std::env::var_os("CXR_PYDICOM_DATA") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("CT_small.dcm").is_file(),
            "CXR_PYDICOM_DATA={}: no CT_small.dcm there; {install}",
            dir.display()
        );
        return dir;
    }
    let script = "import os, pydicom, pydicom.data; \
                  print(pydicom.__version__); \
                  print(os.path.join(os.path.dirname(pydicom.data.__file__), 'test_files'))";
    let output = Command::new("python3").args(["-c", script]).output();
    let output = match output {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap(),
        Ok(o) => panic!(
            "pydicom not found ({}); {install}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("python3 not found ({e}); {install}"),
    };
    let mut lines = output.lines();
    let version = lines.next().unwrap_or_default();
    assert_eq!(
        version, PYDICOM,
        "pydicom {version} is installed; {install}"
    );
    PathBuf::from(lines.next().expect("test_files folder"))
}

/// pydicom's 8-bit window image of `path` (frame 0), computed now by the reference script.
fn pydicom_window_image(path: &Path) -> Vec<u8> {
    let script = repo_root().join("tests/reference/dicom_check.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg("--pixels")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} --pixels {}: {}",
        script.display(),
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn values_digest(values: &Values) -> String {
    let values: Vec<f64> = match values {
        Values::Grey { values, .. } => values.clone(),
        Values::Rgb { samples, .. } | Values::Luma { samples, .. } => {
            samples.iter().map(|&v| f64::from(v)).collect()
        }
    };
    // -0.0 as 0.0, as the script writes it.
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|v| (v + 0.0).to_le_bytes())
        .collect();
    sha256_hex(&bytes)
}

fn text<'a>(entry: &'a Value, key: &str) -> &'a str {
    entry[key].as_str().unwrap_or("")
}

/// Check one file against its golden entry; a line for the table.
fn check(path: &Path, entry: &Value, expect: Expect) -> String {
    let name = text(entry, "file");
    let syntax = text(entry, "transfer_syntax");
    let pydicom = text(entry, "pydicom");
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let outcome = dicom::read(&bytes);
    let ours = match (expect, outcome) {
        (Refused(why), Err(error)) => {
            assert!(
                error.contains(why),
                "{name}: refused, but not for `{why}`: {error}"
            );
            assert!(
                syntax.is_empty() || error.contains(syntax),
                "{name}: the error does not name the transfer syntax {syntax}: {error}"
            );
            format!("refused: {error}")
        }
        (Refused(_), Ok(_)) => panic!("{name}: expected to be refused, but it decodes"),
        (_, Err(error)) => panic!("{name}: expected to decode ({expect:?}), but: {error}"),
        (_, Ok(frame)) => {
            assert_eq!(pydicom, "decoded", "{name}: we decode what pydicom cannot");
            let window = frame.to_grey(DicomIntensity::Window).pixels;
            let full = frame.to_grey(DicomIntensity::FullRange).pixels;
            let exact = [
                values_digest(&frame.values) == text(&entry["values"], "sha256"),
                sha256_hex(&window) == text(&entry["window"], "sha256"),
                sha256_hex(&full) == text(&entry["full_range"], "sha256"),
            ];
            match expect {
                Exact => {
                    assert_eq!(
                        exact, [true; 3],
                        "{name}: values, window, full range differ from pydicom's"
                    );
                    "decoded, identical to pydicom".to_string()
                }
                Within(levels) | Differs(levels, _) => {
                    let reference = pydicom_window_image(path);
                    assert_eq!(
                        sha256_hex(&reference),
                        text(&entry["window"], "sha256"),
                        "{name}: the installed pydicom no longer gives the golden image"
                    );
                    assert_eq!(reference.len(), window.len(), "{name}: image size");
                    let worst = window
                        .iter()
                        .zip(&reference)
                        .map(|(a, b)| a.abs_diff(*b))
                        .max()
                        .unwrap_or(0);
                    let differing = window
                        .iter()
                        .zip(&reference)
                        .filter(|(a, b)| a != b)
                        .count();
                    assert_eq!(
                        worst, levels,
                        "{name}: largest difference from pydicom {worst} levels, {levels} expected"
                    );
                    let how = match expect {
                        Differs(_, why) => format!("decoded, differs: {why}"),
                        _ => "decoded, lossy JPEG".to_string(),
                    };
                    format!(
                        "{how}; max |diff| {worst}, {differing} of {} pixels",
                        window.len()
                    )
                }
                Refused(_) => unreachable!(),
            }
        }
    };
    let pydicom = if pydicom == "decoded" {
        "decodes"
    } else {
        pydicom
    };
    format!(
        "| {name} | {} | {pydicom} | {ours} |",
        text(entry, "transfer_syntax_name")
    )
}

#[test]
fn pydicom_test_files_decode_as_pydicom_does_or_are_refused_naming_their_syntax() {
    let dir = pydicom_files();
    let golden = golden();
    assert_eq!(text(&golden, "pydicom"), PYDICOM);
    let entries = golden["pydicom_test_files"].as_array().unwrap();
    let listed: Vec<&str> = EXPECTED.iter().map(|(f, _)| *f).collect();
    let recorded: Vec<&str> = entries.iter().map(|e| text(e, "file")).collect();
    assert_eq!(
        listed, recorded,
        "EXPECTED must list every golden file, in order"
    );
    let mut table = Vec::new();
    for (entry, &(name, expect)) in entries.iter().zip(EXPECTED) {
        table.push(check(&dir.join(name), entry, expect));
    }
    let count = |prefix: &str| table.iter().filter(|l| l.contains(prefix)).count();
    println!("| file | transfer syntax | pydicom | cxr-image |\n| --- | --- | --- | --- |");
    println!("{}", table.join("\n"));
    println!(
        "{} files: {} decoded identically, {} lossy within 2 levels, {} decoded differently, {} refused",
        table.len(),
        count("identical"),
        count("lossy JPEG"),
        count("differs:"),
        count("refused")
    );
}

#[test]
fn synthetic_lut_and_monochrome1_files_match_pydicom_exactly() {
    let golden = golden();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dicom");
    let entries = golden["synthetic"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    for entry in entries {
        check(&dir.join(text(entry, "file")), entry, Exact);
    }
}

#[test]
fn the_real_film_matches_pydicom_within_one_grey_level() {
    let path = shared_path("data/dicom/siim_sample_pa.dcm");
    let line = check(&path, &golden()["film"], Within(1));
    println!("{line}");
    let bytes = std::fs::read(&path).unwrap();
    let frame = dicom::read(&bytes).unwrap();
    assert_eq!((frame.width, frame.height), (1024, 1024));
    assert!(
        frame.transfer_syntax.contains("1.2.840.10008.1.2.4.50"),
        "{}",
        frame.transfer_syntax
    );
    // It carries no window: both rules give the same image.
    assert_eq!(
        frame.to_grey(DicomIntensity::Window),
        frame.to_grey(DicomIntensity::FullRange)
    );
    // Through `prepare`, as cxr-preprocess calls it: a film, not a black square.
    let mut square = vec![0; 64 * 64];
    let target = Target::new(64, cxr_core::shard::Resize::Pad);
    cxr_image::prepare(&bytes, &target, Decoding::default(), &mut square).unwrap();
    let mean = square.iter().map(|&v| f64::from(v)).sum::<f64>() / square.len() as f64;
    assert!((60.0..200.0).contains(&mean), "mean grey {mean}");
}

/// MONOCHROME1 CR films (pydicom's dicomdirtests CR1: 12-bit, slope 0.684, window 1600/2800):
/// the darkest value is white after inversion, and the window and the full range differ.
#[test]
fn monochrome1_is_inverted_and_the_full_range_ignores_the_window() {
    let path = pydicom_files().join("dicomdirtests/77654033/CR1/6154");
    let frame = dicom::read(&std::fs::read(path).unwrap()).unwrap();
    let Values::Grey { values, inverted } = &frame.values else {
        panic!("grey expected")
    };
    assert!(inverted);
    let full = frame.to_grey(DicomIntensity::FullRange).pixels;
    let lowest = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let highest = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    for (v, g) in values.iter().zip(&full) {
        if *v == lowest {
            assert_eq!(*g, 255);
        }
        if *v == highest {
            assert_eq!(*g, 0);
        }
    }
    assert_ne!(frame.to_grey(DicomIntensity::Window).pixels, full);
}

#[test]
fn files_that_are_not_dicom_images_are_refused_clearly() {
    // A radiotherapy plan: DICOM, but no Pixel Data.
    let plan = std::fs::read(pydicom_files().join("rtplan.dcm")).unwrap();
    let error = dicom::read(&plan).unwrap_err();
    assert!(error.contains("no Pixel Data"), "{error}");
    assert!(error.contains("1.2.840.10008.1.2"), "{error}");
    // A file that says it holds JPEG-LS: refused before any decoding, naming the syntax.
    let film = std::fs::read(shared_path("data/dicom/siim_sample_pa.dcm")).unwrap();
    let jpeg_ls = relabel(&film, b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.80");
    assert_eq!(
        dicom::read(&jpeg_ls).unwrap_err(),
        "JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80) is not decoded by this build \
         (pure Rust decoders only): convert the file, e.g. `dcmdjpeg`/`gdcmconv --raw`"
    );
    // Cut short inside the pixel data: an error, not a partial image.
    let error = dicom::read(&film[..film.len() / 2]).unwrap_err();
    assert!(
        error.starts_with("JPEG Baseline (Process 1) (1.2.840.10008.1.2.4.50): "),
        "{error}"
    );
    assert!(dicom::read(b"DICM")
        .unwrap_err()
        .starts_with("not a DICOM file"));
}

/// `bytes` with the first `from` (a transfer syntax UID in the file meta) replaced by `to`, of
/// the same length.
fn relabel(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("UID in the file");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}
