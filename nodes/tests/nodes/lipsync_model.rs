//! Wav2Lip in Burn against the PyTorch reference outputs, from the fp16 fixture checkpoint in
//! the official layout (`{'state_dict': {'module.<key>': …}}`).

use crate::common::{fixture, max_abs_diff, read_npy};
use burn::tensor::Device;
use vidflow_nodes::models::wav2lip::Wav2Lip;
use vidflow_nodes::weights;

fn parity(device: &Device, what: &str) {
    let ck = weights::load(&fixture("wav2lip-random-seed0.fp16.pth")).expect("checkpoint loads");
    let model = Wav2Lip::load(&ck, device).expect("Wav2Lip keys");
    let (ms, mel) = read_npy("wav2lip_mel_in_4x1x80x16.npy");
    let (fs, face) = read_npy("wav2lip_face_in_4x6x96x96.npy");
    let (os, want) = read_npy("wav2lip_out_4x3x96x96.npy");
    assert_eq!(
        (ms, fs, os.clone()),
        (vec![4, 1, 80, 16], vec![4, 6, 96, 96], vec![4, 3, 96, 96])
    );
    let got = model.run(4, &mel, &face).unwrap();
    let d = max_abs_diff(&got, &want);
    eprintln!("wav2lip {what}: max abs diff {d:e}");
    assert!(d <= 1e-4, "{what}: max abs diff {d}");
    // Batch 1 gives the same as the item of a batch of 4.
    let one = model
        .run(1, &mel[1280..2560], &face[6 * 9216..12 * 9216])
        .unwrap();
    let d1 = max_abs_diff(&one, &got[3 * 9216..6 * 9216]);
    assert!(d1 <= 1e-5, "{what}: batch 1 vs batch 4 differ by {d1}");
}

#[test]
fn wav2lip_matches_reference_on_cpu() {
    parity(&Device::flex(), "cpu (flex)");
}

#[test]
fn wav2lip_matches_reference_on_wgpu() {
    // wgpu on whatever adapter there is: lavapipe (software Vulkan) without a GPU.
    parity(&Device::wgpu(burn::tensor::DeviceKind::Cpu), "wgpu");
}

#[test]
fn not_a_wav2lip_checkpoint_is_named() {
    let ck = weights::load(&fixture("realesr-animevideov3-x4.pth")).unwrap();
    let e = Wav2Lip::load(&ck, &Device::flex()).unwrap_err();
    assert!(
        e.contains("not a Wav2Lip checkpoint") && e.contains("realesr"),
        "{e}"
    );
}
