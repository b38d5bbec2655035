//! Frames to image parts: downscaled so the longer side is at most `max_side` (area average,
//! so text and edges stay legible), JPEG-encoded, and wrapped as base64 `data:` URIs the way
//! the OpenAI chat API takes images.

use base64::Engine as _;
use vidflow_engine::Frame;

/// The size a `width`x`height` image gets when its longer side is brought down to `max_side`
/// (never up), keeping the aspect ratio; each side at least 1.
pub fn fitted_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= max_side || long == 0 {
        return (width.max(1), height.max(1));
    }
    let s = max_side as f64 / long as f64;
    let w = ((width as f64 * s).round() as u32).clamp(1, max_side);
    let h = ((height as f64 * s).round() as u32).clamp(1, max_side);
    (w, h)
}

/// Downscales packed RGB24 by averaging the source pixels each target pixel covers.
pub fn downscale(rgb: &[u8], width: u32, height: u32, tw: u32, th: u32) -> Vec<u8> {
    let (w, h, tw, th) = (width as usize, height as usize, tw as usize, th as usize);
    if (w, h) == (tw, th) {
        return rgb.to_vec();
    }
    // Source column ranges of each target column, computed once.
    let span = |i: usize, n: usize, tn: usize| {
        let a = i * n / tn;
        let b = ((i + 1) * n / tn).max(a + 1).min(n);
        (a, b)
    };
    let cols: Vec<(usize, usize)> = (0..tw).map(|x| span(x, w, tw)).collect();
    let mut out = vec![0u8; tw * th * 3];
    let mut acc = vec![0u32; tw * 3];
    for ty in 0..th {
        let (y0, y1) = span(ty, h, th);
        acc.iter_mut().for_each(|a| *a = 0);
        for y in y0..y1 {
            let row = &rgb[y * w * 3..(y + 1) * w * 3];
            for (tx, &(x0, x1)) in cols.iter().enumerate() {
                let a = &mut acc[tx * 3..tx * 3 + 3];
                for px in row[x0 * 3..x1 * 3].chunks_exact(3) {
                    a[0] += px[0] as u32;
                    a[1] += px[1] as u32;
                    a[2] += px[2] as u32;
                }
            }
        }
        let rows = (y1 - y0) as u32;
        for (tx, &(x0, x1)) in cols.iter().enumerate() {
            let n = rows * (x1 - x0) as u32;
            for c in 0..3 {
                out[(ty * tw + tx) * 3 + c] = ((acc[tx * 3 + c] + n / 2) / n) as u8;
            }
        }
    }
    out
}

/// The JPEG bytes sent for a frame, and their size.
pub fn frame_jpeg(
    frame: &Frame,
    max_side: u32,
    quality: u8,
) -> Result<(Vec<u8>, u32, u32), String> {
    let need = Frame::byte_len(frame.width, frame.height);
    if frame.data.len() < need || frame.width == 0 || frame.height == 0 {
        return Err(format!(
            "frame {} has {} bytes of pixels, not the {need} of {}x{} RGB",
            frame.index,
            frame.data.len(),
            frame.width,
            frame.height
        ));
    }
    let (tw, th) = fitted_size(frame.width, frame.height, max_side.min(u16::MAX as u32));
    let pixels = downscale(&frame.data[..need], frame.width, frame.height, tw, th);
    let mut jpeg = Vec::with_capacity(pixels.len() / 8);
    jpeg_encoder::Encoder::new(&mut jpeg, quality.clamp(1, 100))
        .encode(&pixels, tw as u16, th as u16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| format!("cannot encode frame {} as JPEG: {e}", frame.index))?;
    Ok((jpeg, tw, th))
}

/// `data:image/jpeg;base64,...`
pub fn data_uri(jpeg: &[u8]) -> String {
    let mut s = String::from("data:image/jpeg;base64,");
    base64::engine::general_purpose::STANDARD.encode_string(jpeg, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use vidflow_engine::Rate;

    #[test]
    fn fits_the_longer_side() {
        assert_eq!(fitted_size(1920, 1080, 768), (768, 432));
        assert_eq!(fitted_size(1080, 1920, 768), (432, 768));
        assert_eq!(fitted_size(320, 180, 768), (320, 180));
        assert_eq!(fitted_size(4000, 2, 100), (100, 1));
    }

    #[test]
    fn averages_areas() {
        // 4x2: left half white, right half black → 2x1: one white, one black pixel.
        let mut rgb = vec![0u8; 4 * 2 * 3];
        for y in 0..2 {
            for x in 0..2 {
                let o = (y * 4 + x) * 3;
                rgb[o..o + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        assert_eq!(downscale(&rgb, 4, 2, 2, 1), vec![255, 255, 255, 0, 0, 0]);
        // Uneven ratios keep every target pixel covered.
        let grey = vec![100u8; 7 * 5 * 3];
        assert!(downscale(&grey, 7, 5, 3, 2).iter().all(|&v| v == 100));
    }

    #[test]
    fn encodes_a_frame_as_a_jpeg_data_uri() {
        let data = crate::kinds::testsrc::pattern(320, 180, 3, 25.0);
        let f = Frame::new(3, 0.12, Rate::new(25, 1), 320, 180, data);
        let (jpeg, w, h) = frame_jpeg(&f, 128, 80).unwrap();
        assert_eq!((w, h), (128, 72));
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        assert_eq!(&jpeg[jpeg.len() - 2..], &[0xFF, 0xD9]);
        let uri = data_uri(&jpeg);
        assert!(uri.starts_with("data:image/jpeg;base64,/9j/"));
        // Deterministic: the cache relies on it.
        assert_eq!(frame_jpeg(&f, 128, 80).unwrap().0, jpeg);
        let mut bad = f.clone();
        bad.data = std::sync::Arc::new(vec![0; 10]);
        assert!(
            frame_jpeg(&bad, 128, 80)
                .unwrap_err()
                .contains("bytes of pixels")
        );
    }
}
