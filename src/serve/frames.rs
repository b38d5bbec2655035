//! Frames over the wire: an input frame of the protocol (raw RGB, JPEG or PNG) decoded into the
//! graph's RGB frame, checked so that a malformed one fails only its own session, and a result
//! encoded as its client asked (raw RGB, JPEG or PNG).

use super::pb::{self, Encoding};
use vidflow_engine::{Frame, Payload, Rate};

/// The largest frame side accepted.
pub const MAX_SIDE: u32 = 16_384;

/// An input frame as the graph takes it: its id as the frame index, its timestamp as pts.
pub fn decode(f: &pb::Frame, rate: Rate) -> Result<Frame, String> {
    let id = f.frame_id;
    let encoding = Encoding::try_from(f.encoding)
        .map_err(|_| format!("frame {id}: unknown encoding {}", f.encoding))?;
    let raw = match encoding {
        Encoding::RawRgb => true,
        Encoding::Unspecified => f.width > 0 || f.height > 0,
        Encoding::Jpeg | Encoding::Png => false,
    };
    let (width, height, data) = if raw {
        if f.width == 0 || f.height == 0 || f.width > MAX_SIDE || f.height > MAX_SIDE {
            return Err(format!(
                "frame {id}: raw RGB needs a width and height from 1 to {MAX_SIDE}, got {}x{}",
                f.width, f.height
            ));
        }
        let want = Frame::byte_len(f.width, f.height);
        if f.data.len() != want {
            return Err(format!(
                "frame {id}: {}x{} raw RGB is {want} bytes, got {}",
                f.width,
                f.height,
                f.data.len()
            ));
        }
        (f.width, f.height, f.data.clone())
    } else {
        let format = match encoding {
            Encoding::Jpeg => Some(image::ImageFormat::Jpeg),
            Encoding::Png => Some(image::ImageFormat::Png),
            _ => None,
        };
        let img = match format {
            Some(fmt) => image::load_from_memory_with_format(&f.data, fmt),
            None => image::load_from_memory(&f.data),
        }
        .map_err(|e| format!("frame {id}: cannot decode the image: {e}"))?
        .to_rgb8();
        if img.width() > MAX_SIDE || img.height() > MAX_SIDE {
            return Err(format!(
                "frame {id}: {}x{} is larger than {MAX_SIDE} pixels a side",
                img.width(),
                img.height()
            ));
        }
        (img.width(), img.height(), img.into_raw())
    };
    Ok(Frame::new(id, f.timestamp, rate, width, height, data))
}

/// A result as its client gets it.
pub fn encode(item: &Payload, encoding: Encoding) -> Result<pb::Frame, String> {
    let f = item
        .as_frame()
        .ok_or_else(|| format!("the graph gave {}, not a frame", item.describe()))?;
    let data = match encoding {
        Encoding::Jpeg | Encoding::Png => {
            let mut buf = std::io::Cursor::new(Vec::new());
            let img = image::RgbImage::from_raw(f.width, f.height, f.data.to_vec())
                .ok_or("a frame whose size does not match its pixels")?;
            let fmt = if encoding == Encoding::Jpeg {
                image::ImageFormat::Jpeg
            } else {
                image::ImageFormat::Png
            };
            img.write_to(&mut buf, fmt)
                .map_err(|e| format!("cannot encode frame {}: {e}", f.index))?;
            buf.into_inner()
        }
        _ => f.data.to_vec(),
    };
    Ok(pb::Frame {
        frame_id: f.index,
        timestamp: f.pts,
        encoding: encoding as i32,
        width: f.width,
        height: f.height,
        data,
    })
}
