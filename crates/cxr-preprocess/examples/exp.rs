use std::time::Instant;
fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let data: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    for scale in [8u16, 4, 2, 1] {
        let t = Instant::now();
        let mut sum = 0usize;
        for d in &data {
            let mut dec = jpeg_decoder::Decoder::new(&d[..]);
            dec.read_info().unwrap();
            let info = dec.info().unwrap();
            let (w, h) = (info.width.div_ceil(8) * scale, info.height.div_ceil(8) * scale);
            dec.scale(w, h).unwrap();
            let px = dec.decode().unwrap();
            sum += px.len();
        }
        println!("jpeg-decoder scale {scale}/8: {:.1} ms/img ({sum})", t.elapsed().as_secs_f64() * 1e3 / data.len() as f64);
    }
    let t = Instant::now();
    let mut sum = 0usize;
    for d in &data {
        let opts = zune_jpeg::zune_core::options::DecoderOptions::default()
            .jpeg_set_out_colorspace(zune_jpeg::zune_core::colorspace::ColorSpace::Luma);
        let mut dec = zune_jpeg::JpegDecoder::new_with_options(&d[..], opts);
        let px = dec.decode().unwrap();
        sum += px.len();
    }
    println!("zune full: {:.1} ms/img ({sum})", t.elapsed().as_secs_f64() * 1e3 / data.len() as f64);
}
