//! Generating travel frames without an engine: the runner over guide batches with the `blend`
//! generator. The stitched stream has exactly T frames, in order, each keyframe's frame is
//! exactly its image, continuation frames repeat the previous call, and a consolidated batch
//! that fails falls back to its segments without redoing other batches.

use proptest::prelude::*;
use std::sync::Arc;
use vidflow_engine::{Frame, NodeError, Rate};
use vidflow_nodes::kinds::blend::{Blend, cross_fade};
use vidflow_nodes::travel::generate::{Generator, ModelCall, Runner};
use vidflow_nodes::travel::guides::GuideBatch;
use vidflow_nodes::travel::plan::{Plan, PlanSpec, Quantize, Role};

const W: u32 = 4;
const H: u32 = 2;

/// Keyframe `k` as a solid colour distinct from every other keyframe's.
fn image(k: usize) -> Vec<u8> {
    let c = [
        (k * 53 % 200) as u8 + 20,
        (k * 97 % 200) as u8 + 30,
        (k * 29 % 200) as u8 + 40,
    ];
    c.iter()
        .copied()
        .cycle()
        .take((W * H * 3) as usize)
        .collect()
}

fn guide_batches(plan: &Plan) -> Vec<GuideBatch> {
    (0..plan.batches.len())
        .map(|b| {
            let record = plan.batch_record(b);
            let images = record
                .keyframes
                .iter()
                .map(|kf| (kf.index, Arc::new(image(kf.index))))
                .collect();
            GuideBatch::new(record, W, H, Rate::new(16, 1), images)
        })
        .collect()
}

/// Runs every batch; returns the stitched frames, or the first error.
fn run<G: Generator>(runner: &mut Runner<G>, plan: &Plan) -> Result<Vec<Frame>, NodeError> {
    let mut frames = vec![];
    for gb in guide_batches(plan) {
        frames.extend(runner.run_batch(&gb)?.frames);
    }
    runner.finish()?;
    Ok(frames)
}

fn meta_bool(f: &Frame, key: &str) -> bool {
    f.meta
        .as_ref()
        .and_then(|m| m[key].as_bool())
        .unwrap_or(false)
}

fn check_video(plan: &Plan, frames: &[Frame]) -> Result<(), TestCaseError> {
    prop_assert_eq!(frames.len() as u64, plan.total_frames);
    for (t, f) in frames.iter().enumerate() {
        prop_assert_eq!(f.index, t as u64);
        prop_assert_eq!(f.data.len(), (W * H * 3) as usize);
    }
    for kf in &plan.keyframes {
        let want = image(kf.index);
        prop_assert_eq!(
            frames[kf.frame as usize].data.as_slice(),
            want.as_slice(),
            "keyframe {} at frame {}",
            kf.index,
            kf.frame
        );
    }
    Ok(())
}

#[test]
fn blend_makes_the_whole_video_with_keyframes_exact() {
    let spec = PlanSpec::counts(&[25, 29, 25], &[4, 4]).with_prompts(&["A", "A", "B"]);
    let plan = Plan::new(spec).unwrap();
    let mut runner = Runner::new("gen", Blend::default(), 0);
    let frames = run(&mut runner, &plan).unwrap();
    check_video(&plan, &frames).unwrap();
    // Midway between keyframes 0 (frame 0) and 1 (frame 21), away from the transitions, the
    // frame is the linear cross-fade of the two images.
    let (a, b) = (image(0), image(1));
    let t = 10u64;
    let w = ((t * 256 + 21 / 2) / 21) as u32;
    let want: Vec<u8> = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| ((x as u32 * (256 - w) + y as u32 * w + 128) >> 8) as u8)
        .collect();
    assert_eq!(frames[10].data.as_slice(), want.as_slice());
    assert!(runner.outcomes.iter().all(|o| o.fell_back.is_none()));
    let summary = runner.finish().unwrap();
    assert_eq!(summary["model_calls"], 2);
    assert_eq!(summary["fell_back"], serde_json::json!([]));
}

#[test]
fn a_failed_consolidated_batch_falls_back_to_its_segments() {
    // Three batches: segments 0-2 (A), 3 (B), 4-5 (C); the C batch fails.
    let spec = PlanSpec::counts(&[20, 20, 20, 20, 20, 20], &[4, 4, 4, 4, 4])
        .with_prompts(&["A", "A", "A", "B", "C", "C"]);
    let plan = Plan::new(spec).unwrap();
    assert_eq!(plan.batches.len(), 3);
    let blend = Blend {
        fail_batches: vec![2],
        fail_segments: vec![],
    };
    let mut runner = Runner::new("gen", blend, 2);
    let frames = run(&mut runner, &plan).unwrap();
    check_video(&plan, &frames).unwrap();
    // Batches 0 and 1 ran once each; batch 2 tried 3 times, then its 2 segments ran.
    let calls: Vec<(usize, usize, bool)> = runner
        .outcomes
        .iter()
        .map(|o| (o.model_calls, o.attempts, o.fell_back.is_some()))
        .collect();
    assert_eq!(calls, [(1, 1, false), (1, 1, false), (3, 5, true)]);
    let start = plan.batches[2].call.start as usize;
    let continues = plan.batches[2].call.continues as usize;
    assert!(
        frames[..start + continues]
            .iter()
            .all(|f| !meta_bool(f, "fallback"))
    );
    assert!(
        frames[start + continues..]
            .iter()
            .all(|f| meta_bool(f, "fallback"))
    );
    let summary = runner.finish().unwrap();
    assert_eq!(summary["fell_back"], serde_json::json!([2]));
    assert_eq!(summary["model_calls"], 5);
    let lines = runner.fallback_lines();
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].contains("batch 2 (segments 4–5) fell back"),
        "{}",
        lines[0]
    );
}

#[test]
fn the_fallback_is_the_segments_generated_one_by_one() {
    // What the fallback makes equals what an unconsolidated plan (different prompts) makes.
    let counts = [20u64, 17, 23];
    let overlaps = [3u64, 5];
    let together = Plan::new(PlanSpec::counts(&counts, &overlaps)).unwrap();
    let apart =
        Plan::new(PlanSpec::counts(&counts, &overlaps).with_prompts(&["A", "B", "C"])).unwrap();
    let failing = Blend {
        fail_batches: vec![0],
        fail_segments: vec![],
    };
    let fell_back = run(&mut Runner::new("gen", failing, 0), &together).unwrap();
    let separate = run(&mut Runner::new("gen", Blend::default(), 0), &apart).unwrap();
    assert_eq!(fell_back.len(), separate.len());
    for (a, b) in fell_back.iter().zip(&separate) {
        assert_eq!(a.data, b.data, "frame {}", a.index);
    }
}

#[test]
fn a_failing_single_segment_or_fallback_segment_is_an_error() {
    let spec = PlanSpec::counts(&[20, 20, 20], &[4, 4]).with_prompts(&["A", "A", "B"]);
    let plan = Plan::new(spec).unwrap();
    let blend = Blend {
        fail_batches: vec![1],
        fail_segments: vec![],
    };
    let err = run(&mut Runner::new("gen", blend, 1), &plan).unwrap_err();
    assert!(
        err.to_string()
            .contains("node `gen`: batch 1 (segment 2) failed after 2 attempts"),
        "{err}"
    );
    let blend = Blend {
        fail_batches: vec![0],
        fail_segments: vec![1],
    };
    let err = run(&mut Runner::new("gen", blend, 0), &plan).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("batch 0 (segments 0–1) failed after 1 attempt"),
        "{msg}"
    );
    assert!(
        msg.contains("and so did its fallback segment 1 after 1 attempt"),
        "{msg}"
    );
}

/// Fails the first `n` calls it gets, then blends.
struct Flaky {
    left: usize,
    calls: usize,
}

impl Generator for Flaky {
    fn generate(&mut self, call: &ModelCall<'_>) -> Result<Vec<Arc<Vec<u8>>>, NodeError> {
        self.calls += 1;
        if self.left > 0 {
            self.left -= 1;
            return Err(NodeError::runtime("flaky"));
        }
        Ok(cross_fade(call))
    }
}

#[test]
fn retries_come_before_the_fallback() {
    let plan = Plan::new(PlanSpec::counts(&[20, 20], &[2])).unwrap();
    let mut runner = Runner::new("gen", Flaky { left: 1, calls: 0 }, 1);
    let frames = run(&mut runner, &plan).unwrap();
    check_video(&plan, &frames).unwrap();
    assert_eq!(runner.outcomes[0].attempts, 2);
    assert_eq!(runner.outcomes[0].fell_back, None);
    assert_eq!(runner.generator().calls, 2);
}

#[test]
fn a_failed_batch_changes_nothing_and_can_be_given_again() {
    let spec = PlanSpec::counts(&[20, 20, 20], &[4, 4]).with_prompts(&["A", "B", "C"]);
    let plan = Plan::new(spec).unwrap();
    let batches = guide_batches(&plan);
    let mut runner = Runner::new("gen", Flaky { left: 0, calls: 0 }, 0);
    let mut frames = runner.run_batch(&batches[0]).unwrap().frames;
    runner.generator_mut().left = 1;
    assert!(runner.run_batch(&batches[1]).is_err());
    frames.extend(runner.run_batch(&batches[1]).unwrap().frames);
    frames.extend(runner.run_batch(&batches[2]).unwrap().frames);
    check_video(&plan, &frames).unwrap();
    runner.finish().unwrap();
    assert_eq!(runner.outcomes.len(), 3);
}

#[test]
fn batches_must_come_in_order() {
    let plan = Plan::new(PlanSpec::counts(&[20, 20], &[0]).with_prompts(&["A", "B"])).unwrap();
    let batches = guide_batches(&plan);
    let mut runner = Runner::new("gen", Blend::default(), 0);
    let err = runner.run_batch(&batches[1]).unwrap_err();
    assert!(
        err.to_string().contains("expected batch 0 but got batch 1"),
        "{err}"
    );
    runner.run_batch(&batches[0]).unwrap();
    let err = runner.finish().unwrap_err();
    assert!(
        err.to_string()
            .contains("the video is incomplete: 20 of 40 frames"),
        "{err}"
    );
}

#[test]
fn continuation_frames_repeat_the_previous_output() {
    let spec = PlanSpec::counts(&[20, 20], &[6]).with_prompts(&["A", "B"]);
    let plan = Plan::new(spec).unwrap();
    let batches = guide_batches(&plan);
    let mut runner = Runner::new("gen", Blend::default(), 0);
    let first = runner.run_batch(&batches[0]).unwrap();
    let second = runner.run_batch(&batches[1]).unwrap();
    // The second call's window starts at 14; its first 6 frames are the first call's 14..20.
    let calls: Vec<&Frame> = second.calls.iter().take(6).collect();
    for (i, f) in calls.iter().enumerate() {
        assert_eq!(f.index, 14 + i as u64);
        assert_eq!(f.data, first.frames[14 + i].data);
    }
    // The stitched stream does not repeat them.
    assert_eq!(first.frames.len() + second.frames.len(), 34);
    assert_eq!(second.frames[0].index, 20);
}

#[test]
fn quantize_padding_is_dropped() {
    let spec = PlanSpec::counts(&[22, 22], &[3])
        .with_prompts(&["A", "B"])
        .with_quantize(Quantize::FourNPlusOne);
    let plan = Plan::new(spec).unwrap();
    assert_eq!(plan.batches[0].call.model_frames, 25);
    let mut runner = Runner::new("gen", Blend::default(), 0);
    let frames = run(&mut runner, &plan).unwrap();
    check_video(&plan, &frames).unwrap();
}

#[test]
fn transition_frames_lean_towards_their_anchor() {
    let plan = Plan::new(PlanSpec::counts(&[30], &[])).unwrap();
    let gb = &guide_batches(&plan)[0];
    assert_eq!(gb.guides.roles[1], Role::Transition);
    let mut runner = Runner::new("gen", Blend::default(), 0);
    let frames = runner.run_batch(gb).unwrap().frames;
    // Frame 1: 70% the guide (keyframe 0), 30% the cross-fade (1/29 of the way to keyframe 1).
    let (a, b) = (image(0), image(1));
    let w = (256 + 29 / 2) / 29;
    let m = (0.3f32 * 256.0).round() as u32;
    for i in 0..a.len() {
        let fade = (a[i] as u32 * (256 - w) + b[i] as u32 * w + 128) >> 8;
        let want = ((a[i] as u32 * (256 - m) + fade * m + 128) >> 8) as u8;
        assert_eq!(frames[1].data[i], want);
    }
}

fn travel() -> impl Strategy<Value = (PlanSpec, Vec<bool>)> {
    (1usize..8)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(1u64..20, n),
                prop::collection::vec(0u64..6, n.saturating_sub(1)),
                prop::collection::vec(0usize..2, n),
                prop::sample::select(vec![17u64, 33, 65]),
                any::<bool>(),
                prop::collection::vec(any::<bool>(), 8),
            )
        })
        .prop_map(|(own, overlaps, prompts, max, q, fail)| {
            let n = own.len();
            let seg: Vec<u64> = (0..n)
                .map(|i| {
                    let before = if i > 0 { overlaps[i - 1] } else { 0 };
                    let after = overlaps.get(i).copied().unwrap_or(0);
                    before + if i + 1 == n { own[i].max(2) } else { own[i] } + after
                })
                .collect();
            let quantize = if q {
                Quantize::FourNPlusOne
            } else {
                Quantize::None
            };
            let needed = seg.iter().map(|&f| quantize.round_up(f)).max().unwrap();
            let mut spec = PlanSpec::counts(&seg, &overlaps)
                .with_max_frames(max.max(needed))
                .with_quantize(quantize);
            spec.prompts = prompts.iter().map(|p| ["A", "B"][*p].to_string()).collect();
            (spec, fail)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_stitched_video_is_complete_even_with_fallbacks((spec, fail) in travel()) {
        let plan = Plan::new(spec).unwrap();
        // Fail some consolidated batches (a single segment has no fallback).
        let fail_batches: Vec<usize> = plan
            .batches
            .iter()
            .filter(|b| b.segments.len() > 1 && fail[b.index % fail.len()])
            .map(|b| b.index)
            .collect();
        let blend = Blend { fail_batches: fail_batches.clone(), fail_segments: vec![] };
        let mut runner = Runner::new("gen", blend, 0);
        let frames = run(&mut runner, &plan).unwrap();
        check_video(&plan, &frames)?;
        let fell_back: Vec<usize> = runner
            .outcomes
            .iter()
            .filter(|o| o.fell_back.is_some())
            .map(|o| o.batch)
            .collect();
        prop_assert_eq!(&fell_back, &fail_batches);
        let calls: usize = runner.outcomes.iter().map(|o| o.model_calls).sum();
        let extra: usize = fail_batches.iter().map(|&b| plan.batches[b].segments.len()).sum();
        prop_assert_eq!(calls, plan.batches.len() + extra);
        // Never more calls than without consolidation, plus the failed attempts themselves.
        prop_assert!(calls - fail_batches.len() <= plan.model_calls_before());
    }
}
