//! The batch-planner's planning: the exact cases of the issue, the reasons, the `--json`
//! object, validation, and properties over random travels (every batch within max_frames and
//! the quantize rule, every keyframe on its position, the video T frames long, never more
//! model calls than segments).

use proptest::prelude::*;
use vidflow_nodes::travel::plan::{Plan, PlanSpec, Quantize, Role, validate};

fn lengths(spec: PlanSpec) -> Vec<u64> {
    let plan = Plan::new(spec).expect("a valid spec");
    plan.batches.iter().map(|b| b.call.model_frames).collect()
}

#[test]
fn three_segments_with_overlaps_become_one_call() {
    assert_eq!(lengths(PlanSpec::counts(&[25, 29, 25], &[4, 4])), [71]);
}

#[test]
fn five_segments_of_17_with_overlaps_of_2() {
    assert_eq!(lengths(PlanSpec::counts(&[17; 5], &[2; 4])), [77]);
}

#[test]
fn eight_segments_of_9_with_overlaps_of_1() {
    assert_eq!(lengths(PlanSpec::counts(&[9; 8], &[1; 7])), [65]);
}

#[test]
fn four_segments_of_20_without_overlap() {
    assert_eq!(lengths(PlanSpec::counts(&[20; 4], &[0; 3])), [80]);
}

#[test]
fn greedy_packing_under_65() {
    let spec = PlanSpec::counts(&[24, 41, 17], &[0, 0]).with_max_frames(65);
    assert_eq!(lengths(spec), [65, 17]);
}

#[test]
fn two_segments_too_long_together_stay_apart() {
    let spec = PlanSpec::counts(&[54, 37], &[0]).with_max_frames(65);
    let plan = Plan::new(spec).unwrap();
    assert_eq!(
        plan.batches
            .iter()
            .map(|b| b.call.model_frames)
            .collect::<Vec<_>>(),
        [54, 37]
    );
    assert!(!plan.groups[0].consolidated);
    assert!(
        plan.groups[0].reason.contains("no two neighbours fit"),
        "{}",
        plan.groups[0].reason
    );
}

#[test]
fn a_single_segment_is_as_it_is() {
    let plan = Plan::new(PlanSpec::counts(&[33], &[])).unwrap();
    assert_eq!(plan.batches.len(), 1);
    assert_eq!(plan.batches[0].call.frames, 33);
    assert_eq!(plan.batches[0].call.model_frames, 33);
    assert_eq!(plan.total_frames, 33);
    assert_eq!(
        (plan.model_calls_before(), plan.model_calls_after()),
        (1, 1)
    );
}

#[test]
fn only_runs_of_identical_prompts_are_consolidated() {
    let spec =
        PlanSpec::counts(&[10; 7], &[0; 6]).with_prompts(&["A", "A", "A", "B", "C", "C", "D"]);
    let plan = Plan::new(spec).unwrap();
    let segs: Vec<Vec<usize>> = plan
        .batches
        .iter()
        .map(|b| b.call.segments.clone())
        .collect();
    assert_eq!(segs, vec![vec![0, 1, 2], vec![3], vec![4, 5], vec![6]]);
    let consolidated: Vec<bool> = plan.groups.iter().map(|g| g.consolidated).collect();
    assert_eq!(consolidated, [true, false, true, false]);
    assert_eq!(
        (plan.model_calls_before(), plan.model_calls_after()),
        (7, 4)
    );
    assert!(plan.groups[1].reason.contains("segment 2 (prompt)"));
    assert!(plan.groups[1].reason.contains("segment 4 (prompt)"));
    assert!(plan.groups[0].reason.contains("consolidated into 1 call"));
}

#[test]
fn negative_prompts_and_lora_sets_split_groups_too() {
    let mut spec = PlanSpec::counts(&[10; 4], &[0; 3]);
    spec.negative_prompts = vec!["", "", "blur", "blur"]
        .into_iter()
        .map(String::from)
        .collect();
    spec.loras = vec![
        vec!["a".into(), "b".into()],
        vec!["b".into(), "a".into()], // the same set
        vec!["a".into()],
        vec!["a".into()],
    ];
    let plan = Plan::new(spec).unwrap();
    let segs: Vec<Vec<usize>> = plan
        .batches
        .iter()
        .map(|b| b.call.segments.clone())
        .collect();
    assert_eq!(segs, vec![vec![0, 1], vec![2, 3]]);
}

#[test]
fn json_is_exactly_the_issue_format() {
    let plan = Plan::new(PlanSpec::counts(&[25, 29, 25], &[4, 4])).unwrap();
    // Anchors at 0, 21, 46 and 70 (the last keyframe on the last frame); two transition frames
    // on each side of each: 1, 2 | 19, 20, 22, 23 | 44, 45, 47, 48 | 68, 69.
    let expected = serde_json::json!({
        "total_frames": 71,
        "model_calls_before": 3,
        "model_calls_after": 1,
        "batches": [{"start": 0, "frames": 71, "keyframes": [0, 1, 2, 3], "segments": [0, 1, 2]}],
        "mask": {"anchored": 4, "transition": 12, "free": 55},
    });
    assert_eq!(plan.to_json(), expected);
    // Printed with its keys in the documented order.
    let text = serde_json::to_string(&plan.json_report()).unwrap();
    assert!(
        text.starts_with(r#"{"total_frames":71,"model_calls_before":3,"model_calls_after":1,"batches":[{"start":0,"frames":71,"keyframes":[0,1,2,3],"segments":[0,1,2]}],"mask":{"anchored":4,"transition":12,"free":55}}"#),
        "{text}"
    );
}

#[test]
fn a_batch_after_another_continues_it() {
    // A, A, B with overlaps: the A batch covers segments 0 and 1 up to the end of segment 1,
    // and the B segment's first 4 frames continue it.
    let spec = PlanSpec::counts(&[25, 29, 25], &[4, 4]).with_prompts(&["A", "A", "B"]);
    let plan = Plan::new(spec).unwrap();
    let b0 = &plan.batches[0].call;
    let b1 = &plan.batches[1].call;
    assert_eq!((b0.start, b0.frames, b0.continues), (0, 50, 0));
    assert_eq!((b1.start, b1.frames, b1.continues), (46, 25, 4));
    let roles = b1.roles(2);
    // Its first frame is keyframe 2, which the A batch anchored at the same frame.
    assert_eq!(roles[0], Role::Keyframe(2));
    assert!(roles[1..4].iter().all(|r| *r == Role::Continuation));
    assert_eq!(roles[4], Role::Transition);
    assert_eq!(roles[24], Role::Keyframe(3));
    // Keyframe 2 (frame 46) is inside the first batch, anchored there.
    assert_eq!(b0.roles(2)[46], Role::Keyframe(2));
    let m = plan.mask_counts();
    assert_eq!(m.total(), plan.total_frames);
}

#[test]
fn a_keyframe_after_the_window_is_the_target() {
    let spec = PlanSpec::counts(&[24, 41, 17], &[0, 0]).with_max_frames(65);
    let plan = Plan::new(spec).unwrap();
    let first = &plan.batches[0].call;
    assert_eq!(first.target().map(|k| (k.index, k.local)), Some((2, 65)));
    assert_eq!(plan.batches[1].call.target(), None);
    assert_eq!(plan.batches[1].call.roles(0)[16], Role::Keyframe(3));
}

#[test]
fn quantize_pads_calls_to_4n_plus_1() {
    let spec = PlanSpec::counts(&[25, 29, 25], &[4, 4])
        .with_prompts(&["A", "A", "B"])
        .with_quantize(Quantize::FourNPlusOne);
    let plan = Plan::new(spec).unwrap();
    let calls: Vec<(u64, u64)> = plan
        .batches
        .iter()
        .map(|b| (b.call.frames, b.call.model_frames))
        .collect();
    assert_eq!(calls, [(50, 53), (25, 25)]);
    let roles = plan.batches[0].call.roles(2);
    assert!(roles[50..].iter().all(|r| *r == Role::Padding));
    assert_eq!(plan.to_json()["batches"][0]["frames"], 53);
}

#[test]
fn quantize_limits_packing_to_the_largest_4n_plus_1() {
    // max_frames 80 under 4n+1 allows at most 77 frames in a call.
    let spec = PlanSpec::counts(&[20; 4], &[0; 3])
        .with_max_frames(80)
        .with_quantize(Quantize::FourNPlusOne);
    assert_eq!(lengths(spec), [61, 21]);
}

#[test]
fn invalid_specs_name_the_param() {
    let problems = validate(&PlanSpec::counts(&[25, 29], &[4, 4]));
    assert!(
        problems.iter().any(|p| p.param == "overlaps"),
        "{problems:?}"
    );
    let problems = validate(&PlanSpec::counts(&[90], &[]));
    assert!(
        problems
            .iter()
            .any(|p| p.param == "segment_frames" && p.message.contains("max_frames 81")),
        "{problems:?}"
    );
    let problems = validate(&PlanSpec::counts(&[10, 10], &[10]));
    assert!(
        problems
            .iter()
            .any(|p| p.param == "overlaps" && p.message.contains("segment 0")),
        "{problems:?}"
    );
    let mut spec = PlanSpec::counts(&[10, 10], &[0]);
    spec.keyframes.pop();
    assert!(validate(&spec).iter().any(|p| p.param == "segment_frames"));
}

#[test]
fn text_report_explains_the_plan() {
    let spec =
        PlanSpec::counts(&[10; 7], &[0; 6]).with_prompts(&["A", "A", "A", "B", "C", "C", "D"]);
    let plan = Plan::new(spec).unwrap();
    let text = vidflow_nodes::travel::plan::text_report("planner", &plan);
    assert!(text.contains("batch-planner `planner`: 8 keyframes, 7 segments, 70 frames"));
    assert!(
        text.contains("model calls: 7 before, 4 after (1.8× fewer)"),
        "{text}"
    );
    assert!(
        text.contains("segments 0–2: same prompt, negative prompt and LoRAs: consolidated into 1 call of 30 frames (max_frames 81)"),
        "{text}"
    );
    assert!(
        text.contains("segment 3: kept as it is: its parameters differ from segment 2 (prompt) and segment 4 (prompt)"),
        "{text}"
    );
    assert!(text.contains("mask over the 70 frames:"), "{text}");
}

/// A random valid travel: each segment has some frames of its own between its overlaps.
fn travel() -> impl Strategy<Value = PlanSpec> {
    (1usize..10)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(1u64..40, n),
                prop::collection::vec(0u64..8, n.saturating_sub(1)),
                prop::collection::vec(0usize..2, n),
                prop::collection::vec(0usize..3, n),
                prop::sample::select(vec![17u64, 33, 65, 81, 100]),
                any::<bool>(),
                0u64..4,
            )
        })
        .prop_map(|(own, overlaps, prompts, loras, max, q, transition)| {
            let n = own.len();
            let seg: Vec<u64> = (0..n)
                .map(|i| {
                    let before = if i > 0 { overlaps[i - 1] } else { 0 };
                    let after = overlaps.get(i).copied().unwrap_or(0);
                    let own = if i + 1 == n { own[i].max(2) } else { own[i] };
                    before + own + after
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
            spec.loras = loras
                .iter()
                .map(|l| match l {
                    0 => vec![],
                    1 => vec!["x".into(), "y".into()],
                    _ => vec!["y".into(), "x".into()],
                })
                .collect();
            spec.transition = transition;
            spec
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_batch_respects_max_frames_and_quantize(spec in travel()) {
        let plan = Plan::new(spec.clone()).unwrap();
        for b in &plan.batches {
            prop_assert!(b.call.model_frames <= spec.max_frames);
            prop_assert!(spec.quantize.accepts(b.call.model_frames));
            prop_assert!(b.call.model_frames >= b.call.frames);
            prop_assert_eq!(b.call.model_frames, spec.quantize.round_up(b.call.frames));
        }
    }

    #[test]
    fn every_keyframe_lands_on_its_position(spec in travel()) {
        let plan = Plan::new(spec.clone()).unwrap();
        let n = spec.n();
        let t = plan.total_frames;
        let mut p = 0;
        for k in 0..=n {
            let want = if k == n { t - 1 } else { p };
            prop_assert_eq!(plan.keyframes[k].frame, want);
            // Anchored at that frame in the call that makes the frame.
            let owner = plan
                .batches
                .iter()
                .find(|b| b.call.start + b.call.continues <= want && want < b.call.end())
                .expect("every frame is made by some call");
            let roles = owner.call.roles(spec.transition);
            prop_assert_eq!(roles[(want - owner.call.start) as usize], Role::Keyframe(k));
            if k < n {
                p += spec.segment_frames[k] - if k + 1 < n { spec.overlaps[k] } else { 0 };
            }
        }
        prop_assert_eq!(p + 1, t + 1);
    }

    #[test]
    fn the_video_has_sum_of_segments_minus_overlaps_frames(spec in travel()) {
        let plan = Plan::new(spec.clone()).unwrap();
        let t = spec.segment_frames.iter().sum::<u64>() - spec.overlaps.iter().sum::<u64>();
        prop_assert_eq!(plan.total_frames, t);
        // The calls cover 0..T in order; each continues exactly where the last one ended.
        prop_assert_eq!(plan.batches[0].call.start, 0);
        prop_assert_eq!(plan.batches[0].call.continues, 0);
        prop_assert_eq!(plan.batches.last().unwrap().call.end(), t);
        let mut made = 0;
        for w in plan.batches.windows(2) {
            prop_assert_eq!(w[0].call.end() - w[1].call.start, w[1].call.continues);
        }
        for b in &plan.batches {
            made += b.call.frames - b.call.continues;
        }
        prop_assert_eq!(made, t);
        prop_assert_eq!(plan.mask_counts().total(), t);
        // Each segment is in exactly one batch, in order.
        let segs: Vec<usize> = plan.batches.iter().flat_map(|b| b.call.segments.clone()).collect();
        prop_assert_eq!(segs, (0..spec.n()).collect::<Vec<_>>());
    }

    #[test]
    fn consolidation_never_increases_model_calls(spec in travel()) {
        let plan = Plan::new(spec.clone()).unwrap();
        prop_assert!(plan.model_calls_after() <= plan.model_calls_before());
        prop_assert_eq!(plan.model_calls_before(), spec.n());
        for g in &plan.groups {
            prop_assert!(g.batches.len() <= g.segments.len());
            prop_assert_eq!(g.consolidated, g.batches.len() < g.segments.len());
        }
    }

    #[test]
    fn batches_share_parameters_and_are_packed_greedily(spec in travel()) {
        let plan = Plan::new(spec.clone()).unwrap();
        for b in &plan.batches {
            let segs = &plan.segments[b.segments.clone()];
            prop_assert!(segs.windows(2).all(|w| w[0].same_params(&w[1])));
            let group = &plan.groups[b.group];
            // Not the group's last batch: the next segment would not have fitted.
            if b.segments.end < group.segments.end {
                let next = &plan.segments[b.segments.end];
                let longer = next.end() - plan.segments[b.segments.start].start;
                prop_assert!(spec.quantize.round_up(longer) > spec.max_frames);
            }
        }
        // Groups are maximal runs of identical parameters.
        for w in plan.groups.windows(2) {
            let (last, first) = (&plan.segments[w[0].segments.end - 1], &plan.segments[w[1].segments.start]);
            prop_assert!(!last.same_params(first));
        }
    }
}
