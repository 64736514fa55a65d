#!/usr/bin/env python3
"""pydicom's reading of DICOM files, for cxr-image's DICOM tests (crates/cxr-image/tests/dicom.rs).

For every file with Pixel Data among pydicom's bundled test files (pydicom/data/test_files, in
pydicom's wheel), the synthetic files in crates/cxr-image/tests/data/dicom/ (written by this
script, see `synthetic`) and the real chest film $CXR_SHARED/data/dicom/siim_sample_pa.dcm, it
records:

- the transfer syntax, image attributes, and whether pydicom (with pylibjpeg, pylibjpeg-libjpeg,
  -openjpeg and -rle) decodes the file, or its error;
- frame 0's values as cxr-image defines them (crates/cxr-image/src/dicom.rs): for monochrome
  images pydicom's `apply_modality_lut` of its decoded array; for colour, the RGB samples
  (pydicom's conversion of YBR to RGB for files a JPEG/JPEG 2000 decoder converts), or the Y
  samples of native/RLE YBR data: a SHA-256 of the values as little-endian float64 (-0.0 as 0.0),
  with their count, minimum, maximum and sum;
- the 8-bit grey image of cxr-image's documented rules, computed here with numpy from those
  values: the file's VOI LUT, else first window (PS3.3 C.11.2.1.2/C.11.2.1.3), else the full
  range (`window`); the full range always (`full_range`); MONOCHROME1 inverted; colour as BT.601
  luma with Pillow's integer weights; SHA-256 and sum of the bytes.

Run (pydicom 3.0.2, pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle, numpy):
    python3 tests/reference/dicom_check.py > crates/cxr-image/tests/data/pydicom_golden.json
    python3 tests/reference/dicom_check.py --pixels FILE   # the 8-bit window image, raw bytes
"""
import hashlib
import json
import os
import sys
import warnings

import numpy as np
import pydicom
import pydicom.data
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import UID

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYNTHETIC = os.path.join(ROOT, "crates", "cxr-image", "tests", "data", "dicom")
PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
SHARED = os.environ.get("CXR_SHARED", os.path.join(ROOT, "..", "shared"))
FILM = os.path.join(SHARED, "data", "dicom", "siim_sample_pa.dcm")

# Transfer syntaxes whose decoders hand back RGB whatever the stored colour space (JPEG, JPEG-LS,
# JPEG 2000, HTJ2K); native, deflated and RLE data keep it.
CONVERTING = ("1.2.840.10008.1.2.4.",)


def digest(values):
    values = np.ascontiguousarray(values, dtype="<f8").ravel() + 0.0
    return {
        "sha256": hashlib.sha256(values.tobytes()).hexdigest(),
        "count": int(values.size),
        "min": float(values.min()),
        "max": float(values.max()),
        "sum": float(values.sum()),
    }


def grey_digest(grey):
    grey = np.ascontiguousarray(grey, dtype=np.uint8).ravel()
    return {"sha256": hashlib.sha256(grey.tobytes()).hexdigest(), "sum": int(grey.sum(dtype=np.int64))}


def level(y):
    """Round to nearest, halves up (y >= 0 here), and clamp to 0..=255, as Rust's f64::round."""
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


def scale_to_u8(v, maximum):
    v = np.minimum(np.asarray(v, dtype=np.int64), maximum)
    return ((v * 255 + maximum // 2) // maximum).astype(np.uint8)


def full_range(x):
    lo, hi = x.min(), x.max()
    if not hi > lo:
        return np.zeros(x.shape, np.uint8)
    return level((x - lo) / (hi - lo) * 255.0)


def window(x, center, width, function):
    """PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3.1 (SIGMOID), C.11.2.1.3.2 (LINEAR_EXACT), to 0..255."""
    c, w = float(center), float(width)
    if function == "LINEAR" and w < 1:
        function, w = "LINEAR_EXACT", max(w, 0.0)
    if function == "SIGMOID":
        return level(255.0 / (1.0 + np.exp(-4.0 * (x - c) / max(w, 1.0))))
    if function == "LINEAR_EXACT":
        lo, hi = c - w / 2.0, c + w / 2.0
        y = ((x - c) / w + 0.5) * 255.0 if w > 0 else np.zeros_like(x)
    else:
        lo, hi = c - 0.5 - (w - 1.0) / 2.0, c - 0.5 + (w - 1.0) / 2.0
        y = ((x - (c - 0.5)) / (w - 1.0) + 0.5) * 255.0
    y = np.where(x <= lo, 0.0, np.where(x > hi, 255.0, y))
    return level(y)


def voi_lut(x, item):
    first = int(item.LUTDescriptor[1])
    entries = np.asarray(item.LUTData, dtype=np.int64).ravel()
    declared = max(int(item.LUTDescriptor[2]), 1)
    used = int(entries.max()).bit_length()
    bits = declared if used == 0 or used > declared else used
    rounded = np.where(x >= 0, np.floor(x + 0.5), np.ceil(x - 0.5)).astype(np.int64)
    index = np.clip(rounded - first, 0, entries.size - 1)
    return scale_to_u8(entries[index], (1 << bits) - 1)


def first(value):
    return value[0] if isinstance(value, pydicom.multival.MultiValue) else value


def windowed(x, ds):
    """The default rule: VOI LUT, else first window, else the full range."""
    if ds.get("VOILUTSequence"):
        return voi_lut(x, ds.VOILUTSequence[0])
    if "WindowCenter" in ds and "WindowWidth" in ds:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip()
        return window(x, first(ds.WindowCenter), first(ds.WindowWidth), function)
    return full_range(x)


def luma(rgb):
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16


def reference(ds):
    """pydicom's frame 0 under cxr-image's rules: (kind, values, window u8, full-range u8)."""
    ts = ds.file_meta.TransferSyntaxUID
    decoder = get_decoder(ts)
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        stored, _ = decoder.as_array(ds, index=0)
        x = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        win, full = windowed(x, ds), full_range(x)
        if photometric == "MONOCHROME1":
            win, full = 255 - win, 255 - full
        return "grey", x, win, full
    if int(ds.SamplesPerPixel) != 3:
        raise NotConverted(f"{photometric} is not converted to grey by cxr-image")
    maximum = (1 << int(ds.BitsStored)) - 1
    if photometric.startswith("YBR_FULL") and not ts.startswith(CONVERTING):
        ybr, _ = decoder.as_array(ds, index=0, as_rgb=False)
        y = ybr[..., 0]
        return "luma", y, scale_to_u8(y, maximum), scale_to_u8(y, maximum)
    if photometric not in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"):
        raise NotConverted(f"{photometric} is not converted to grey by cxr-image")
    rgb, _ = decoder.as_array(ds, index=0)
    grey = scale_to_u8(luma(rgb), maximum)
    return "rgb", rgb, grey, grey


class NotConverted(ValueError):
    """An image cxr-image does not turn into grey (PALETTE COLOR, ...)."""


def one_line(error):
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {text}"[:240]


def record(path, name):
    ds = pydicom.dcmread(path, force=True)
    if "PixelData" not in ds:
        return None
    meta = getattr(ds, "file_meta", None)
    ts = UID(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else None
    entry = {
        "file": name,
        "transfer_syntax": str(ts) if ts else None,
        "transfer_syntax_name": ts.name if ts else None,
    }
    for key, attr in [
        ("rows", "Rows"),
        ("columns", "Columns"),
        ("bits_allocated", "BitsAllocated"),
        ("bits_stored", "BitsStored"),
        ("photometric", "PhotometricInterpretation"),
        ("frames", "NumberOfFrames"),
    ]:
        value = ds.get(attr)
        entry[key] = value if value is None or isinstance(value, (int, str)) else str(value)
    try:
        get_decoder(ts).as_array(ds, index=0)
    except Exception as e:  # noqa: BLE001 - the reason is the record
        entry["pydicom"] = one_line(e)
        return entry
    entry["pydicom"] = "decoded"
    try:
        kind, values, win, full = reference(ds)
    except NotConverted as e:
        entry["kind"] = None
        entry["note"] = str(e)
        return entry
    entry["kind"] = kind
    entry["values"] = digest(values)
    entry["window"] = grey_digest(win)
    entry["full_range"] = grey_digest(full)
    return entry


def synthetic():
    """Small DICOMs for rules no pydicom test file exercises, written to tests/data/dicom/: a
    VOI LUT Sequence, a Modality LUT Sequence, a MONOCHROME1 12-bit signed image with a SIGMOID
    window, and a deflated MONOCHROME1 LINEAR_EXACT one. Pixels are a fixed pattern, so the files
    are the same on every run."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    os.makedirs(SYNTHETIC, exist_ok=True)
    rows, cols = 40, 56
    yy, xx = np.mgrid[0:rows, 0:cols]
    pattern = (xx * 37 + yy * 101 + (xx * yy) % 13) % 4096

    def base(name, ts, photometric, pixels, bits_stored, signed):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray
        meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1." + str(sum(map(ord, name)))
        meta.TransferSyntaxUID = ts
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "DX"
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
        ds.PixelRepresentation = 1 if signed else 0
        dtype = np.int16 if signed else np.uint16
        ds.PixelData = pixels.astype(dtype).tobytes()
        return ds

    files = []
    ds = base("voi_lut", ExplicitVRLittleEndian, "MONOCHROME2", pattern, 12, False)
    item = Dataset()
    item.LUTDescriptor = [3000, 500, 12]
    item.add_new(0x00283006, "US", [int(4095 * (i / 2999) ** 0.5) for i in range(3000)])
    ds.VOILUTSequence = Sequence([item])
    ds.WindowCenter, ds.WindowWidth = 100, 50  # the LUT wins
    files.append(("voi_lut.dcm", ds))

    ds = base("modality_lut", ExplicitVRLittleEndian, "MONOCHROME2", pattern, 12, False)
    item = Dataset()
    item.LUTDescriptor = [2048, 1024, 16]
    # LUT Data as OW (raw little-endian words), the other form the standard allows.
    item.add_new(0x00283006, "OW", np.array([(i * i) % 65536 for i in range(2048)], "<u2").tobytes())
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = Sequence([item])
    files.append(("modality_lut.dcm", ds))

    signed = pattern - 2048
    ds = base("mono1_sigmoid", ExplicitVRLittleEndian, "MONOCHROME1", signed, 12, True)
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-3.25"
    ds.WindowCenter, ds.WindowWidth = ["-100", "0"], ["900", "10"]
    ds.VOILUTFunction = "SIGMOID"
    files.append(("mono1_sigmoid.dcm", ds))

    ds = base("mono1_deflate", DeflatedExplicitVRLittleEndian, "MONOCHROME1", pattern, 12, False)
    ds.WindowCenter, ds.WindowWidth = "2000.5", "0.5"
    ds.VOILUTFunction = "LINEAR_EXACT"
    files.append(("mono1_linear_exact_deflate.dcm", ds))

    for name, ds in files:
        ds.save_as(os.path.join(SYNTHETIC, name), enforce_file_format=True)
    return [name for name, _ in files]


def main():
    warnings.simplefilter("ignore")
    if sys.argv[1:2] == ["--pixels"]:
        ds = pydicom.dcmread(sys.argv[2], force=True)
        sys.stdout.buffer.write(np.ascontiguousarray(reference(ds)[2]).tobytes())
        return
    files = []
    for root, _, names in os.walk(PYDICOM_FILES):
        for name in names:
            path = os.path.join(root, name)
            files.append((os.path.relpath(path, PYDICOM_FILES).replace(os.sep, "/"), path))
    pydicom_entries = []
    for name, path in sorted(files):
        try:
            entry = record(path, name)
        except Exception:  # noqa: BLE001 - not a DICOM file pydicom reads: not in the comparison
            continue
        if entry is not None:
            pydicom_entries.append(entry)
    synthetic_entries = [record(os.path.join(SYNTHETIC, n), n) for n in synthetic()]
    out = {
        "generated_by": "tests/reference/dicom_check.py",
        "pydicom": pydicom.__version__,
        "pydicom_test_files": pydicom_entries,
        "synthetic": synthetic_entries,
        "film": record(FILM, "siim_sample_pa.dcm"),
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
