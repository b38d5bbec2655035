//! The lipsync node's image side: the 6-channel Wav2Lip input (lower half masked) and the
//! feathered paste, which never touches pixels outside the face box.

use vidflow_engine::{Frame, Rate};
use vidflow_nodes::kinds::lipsync::{FACE, FaceBox, face_crop, face_input, paste};

fn frame() -> Frame {
    let (w, h) = (64u32, 48u32);
    let data = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
    Frame::new(0, 0.0, Rate::new(25, 1), w, h, data)
}

#[test]
fn face_input_masks_the_lower_half_and_keeps_the_reference() {
    let f = frame();
    let b = FaceBox {
        x: 10,
        y: 5,
        w: 30,
        h: 30,
    };
    let crop = face_crop(&f, b);
    assert_eq!(crop.len(), FACE * FACE * 3);
    let mut input = vec![];
    face_input(&crop, &mut input);
    let plane = FACE * FACE;
    assert_eq!(input.len(), 6 * plane);
    for c in 0..3 {
        for y in 0..FACE {
            for x in 0..FACE {
                let v = crop[(y * FACE + x) * 3 + c];
                let masked = input[c * plane + y * FACE + x];
                assert_eq!(masked, if y < FACE / 2 { v } else { 0.0 });
                assert_eq!(input[(3 + c) * plane + y * FACE + x], v);
            }
        }
    }
}

#[test]
fn paste_changes_only_the_box() {
    let f = frame();
    let b = FaceBox {
        x: 20,
        y: 10,
        w: 24,
        h: 20,
    };
    let generated = vec![1.0f32; 3 * FACE * FACE]; // white
    let out = paste(&f, b, &generated, 0.1);
    let mut changed_inside = 0;
    for y in 0..f.height {
        for x in 0..f.width {
            let o = ((y * f.width + x) * 3) as usize;
            let inside = x >= b.x && x < b.x + b.w && y >= b.y && y < b.y + b.h;
            if !inside {
                assert_eq!(&out[o..o + 3], &f.data[o..o + 3], "pixel ({x}, {y})");
            } else if out[o..o + 3] != f.data[o..o + 3] {
                changed_inside += 1;
            }
        }
    }
    assert!(changed_inside > (b.w * b.h / 2) as usize);
    // The centre is fully replaced; the edge is blended (feathered).
    let c = (((b.y + 10) * f.width + b.x + 12) * 3) as usize;
    assert_eq!(&out[c..c + 3], &[255, 255, 255]);
    let e = ((b.y * f.width + b.x) * 3) as usize;
    assert!(out[e] < 255 || f.data[e] == 255);
}
