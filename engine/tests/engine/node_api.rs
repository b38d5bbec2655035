//! The node API as a kind author uses it: params declared once as a typed struct, rules that see
//! the wiring reported by `vidflow check` at the right place, and kinds whose cargo feature is
//! missing.

use crate::common::{graph, run};
use vidflow_engine::node::ParamType;
use vidflow_engine::{
    LoadError, Mode, NodeError, NodeKind, Payload, PortType, Problem, Registry, Runtime, Source,
    SourceFile, catalog, check_source, params,
};

params! {
    /// A counting source's params.
    struct CountParams {
        /// how many items
        count: u64 = default(ParamType::int_in(0, 1000), 3),
        /// a label put on every item
        label: Option<String> = optional(ParamType::Str),
        /// the first value
        start: i64 = required(ParamType::int()),
    }
}

struct Count(CountParams);
impl Source for Count {
    fn run(&mut self, out: &mut vidflow_engine::Emitter<'_>) -> Result<(), NodeError> {
        for i in 0..self.0.count {
            let label = self.0.label.clone().unwrap_or_default();
            out.emit(
                0,
                Payload::record(serde_json::json!({"n": self.0.start + i as i64, "label": label})),
            )?;
        }
        Ok(())
    }
}

fn count_kind() -> NodeKind {
    NodeKind::new("count", "counts", |ctx| {
        Ok(Runtime::Source(Box::new(Count(ctx.params()?))))
    })
    .output("items", PortType::RECORDS, "numbers")
    .params::<CountParams>()
}

/// A two-input kind whose rule forbids connecting both inputs.
fn either_kind() -> NodeKind {
    NodeKind::new("either", "takes `a` or `b`, not both", |_| {
        Err(NodeError::runtime("never built in these tests"))
    })
    .optional_input("a", PortType::ANY, "one")
    .optional_input("b", PortType::ANY, "the other")
    .check(|cx| {
        if cx.connected_inputs.iter().all(|&c| c) {
            vec![Problem::input("b", "connect `a` or `b`, not both").help("remove one input")]
        } else {
            vec![]
        }
    })
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(crate::common::Collector::default().kind("collect"));
    r.register(count_kind());
    r.register(either_kind());
    r.register(
        NodeKind::gated(
            "needs-gpu",
            "a kind whose feature is not built",
            "neural",
            None::<fn(&vidflow_engine::BuildCtx<'_>) -> Result<Runtime, NodeError>>,
        )
        .output("items", PortType::ANY, "nothing"),
    );
    r
}

fn errors(yaml: &str) -> String {
    match check_source(SourceFile::new("t.yaml", yaml), &registry(), &[], Mode::Run) {
        Ok(_) => panic!("the graph should be invalid"),
        Err(e @ LoadError::Invalid { .. }) => e.render(),
        Err(e) => panic!("{}", e.render()),
    }
}

#[test]
fn typed_params_come_from_one_struct_with_defaults_and_docs() {
    let kind = count_kind();
    let names: Vec<&str> = kind.params.iter().map(|p| p.name).collect();
    assert_eq!(names, ["count", "label", "start"]);
    assert_eq!(kind.params[0].doc, "how many items");
    assert_eq!(kind.params[0].default, Some(serde_json::json!(3)));
    assert!(kind.params[2].required);
    let page = catalog::describe(&kind);
    assert!(
        page.contains("count") && page.contains("default 3"),
        "{page}"
    );

    let g = graph(
        &registry(),
        "nodes:\n  - id: c\n    kind: count\n    params: { start: 10, label: x }\n  - id: sink\n    kind: collect\n    inputs: { in: c }\n",
    );
    let report = run(&g);
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.node("c").unwrap().items_out, 3);
}

#[test]
fn a_typed_param_out_of_range_is_a_located_check_error() {
    let out = errors("nodes:\n  - id: c\n    kind: count\n    params: { start: 1, count: 5000 }\n");
    assert!(out.contains("t.yaml:4:"), "{out}");
    assert!(out.contains("5000 is out of range 0..=1000"), "{out}");
}

#[test]
fn a_rule_on_the_wiring_points_at_the_input_that_breaks_it() {
    let out = errors(
        "nodes:\n  - id: c\n    kind: count\n    params: { start: 1 }\n  - id: e\n    kind: either\n    inputs: { a: c, b: c }\n",
    );
    assert!(out.contains("error[invalid-input]"), "{out}");
    assert!(
        out.contains("node `e`: connect `a` or `b`, not both"),
        "{out}"
    );
    // Line 7, at the reference of `b` (`c` after `b: `).
    assert!(out.contains("t.yaml:7:24"), "{out}");
    assert!(out.contains("help: remove one input"), "{out}");
    // One input alone is fine.
    let ok = check_source(
        SourceFile::new(
            "t.yaml",
            "nodes:\n  - id: c\n    kind: count\n    params: { start: 1 }\n  - id: e\n    kind: either\n    inputs: { a: c }\n",
        ),
        &registry(),
        &[],
        Mode::Run,
    );
    assert!(ok.is_ok());
}

#[test]
fn a_kind_without_its_feature_is_listed_and_fails_to_start_with_one_message() {
    let r = registry();
    let kind = r.get("needs-gpu").unwrap();
    assert!(!kind.available());
    assert!(catalog::list(&r).contains("not built: needs feature `neural`"));
    assert!(catalog::describe(kind).contains("rebuild with `--features neural`"));
    let g = graph(
        &r,
        "nodes:\n  - id: g\n    kind: needs-gpu\n  - id: sink\n    kind: collect\n    inputs: { in: g }\n",
    );
    let report = run(&g);
    let failure = report.failure.expect("the node cannot start");
    assert_eq!(failure.node, "g");
    assert!(matches!(failure.error, NodeError::Input(_)));
    assert_eq!(
        failure.error.to_string(),
        "node `g`: this vidflow was built without the `neural` feature, so `needs-gpu` cannot run; rebuild with `--features neural`"
    );
}

/// Kinds for pixel-format negotiation: `cam` offers YUV 4:2:0 first and emits frames in
/// whatever format the plan gave it; `yuv` takes YUV or RGB, `rgb` (the default) RGB only;
/// `relay` forwards frames untouched; sinks record the format of each frame they see.
fn format_registry(
    seen_yuv: &crate::common::Collector,
    seen_rgb: &crate::common::Collector,
) -> Registry {
    use vidflow_engine::{Frame, PixelFormat, Rate};
    let mut r = Registry::new();
    r.register(
        crate::common::source_kind("cam", |ctx| {
            let format = ctx.output_format(0);
            Box::new(move |out| {
                for i in 0..3 {
                    let data = vec![0u8; format.byte_len(4, 2)];
                    let f = Frame::with_format(i, i as f64, Rate::new(1, 1), 4, 2, format, data);
                    out.emit(0, Payload::Frame(f))?;
                }
                Ok(())
            })
        })
        .offers("out", &[PixelFormat::Yuv420p, PixelFormat::Rgb24]),
    );
    r.register(
        seen_yuv
            .kind("yuv")
            .accepts("in", &[PixelFormat::Rgb24, PixelFormat::Yuv420p]),
    );
    r.register(seen_rgb.kind("rgb"));
    r.register(
        crate::common::pass_kind()
            .accepts("in", PixelFormat::ALL)
            .passes("in", "out"),
    );
    // A pass-through node that looks at the pixels itself, so takes only RGB.
    r.register(NodeKind {
        name: "opaque",
        ..crate::common::pass_kind().passes("in", "out")
    });
    r
}

fn formats(c: &crate::common::Collector) -> Vec<&'static str> {
    c.items()
        .iter()
        .map(|p| p.as_frame().expect("a frame").format.name())
        .collect()
}

#[test]
fn frames_travel_in_the_first_format_the_producer_offers_that_all_consumers_accept() {
    use vidflow_engine::Plan;
    let cases = [
        // One consumer that takes YUV: no conversion anywhere.
        (
            "  - id: y\n    kind: yuv\n    inputs: { in: c }\n",
            vec!["yuv420p"; 3],
            vec![],
            "yuv420p",
        ),
        // A consumer that takes only RGB holds the port to RGB for both.
        (
            "  - id: y\n    kind: yuv\n    inputs: { in: c }\n  - id: r\n    kind: rgb\n    inputs: { in: c }\n",
            vec!["rgb24"; 3],
            vec!["rgb24"; 3],
            "",
        ),
        // A pass-through node negotiates for the consumers behind it, either way.
        (
            "  - id: p\n    kind: pass\n    inputs: { in: c }\n  - id: y\n    kind: yuv\n    inputs: { in: p }\n",
            vec!["yuv420p"; 3],
            vec![],
            "yuv420p",
        ),
        (
            "  - id: p\n    kind: pass\n    inputs: { in: c }\n  - id: r\n    kind: rgb\n    inputs: { in: p }\n",
            vec![],
            vec!["rgb24"; 3],
            "",
        ),
        // What a pass-through node takes itself limits what passes.
        (
            "  - id: p\n    kind: opaque\n    inputs: { in: c }\n  - id: y\n    kind: yuv\n    inputs: { in: p }\n",
            vec!["rgb24"; 3],
            vec![],
            "",
        ),
    ];
    for (consumers, want_yuv, want_rgb, label) in cases {
        let (yuv, rgb) = (
            crate::common::Collector::default(),
            crate::common::Collector::default(),
        );
        let yaml = format!("nodes:\n  - id: c\n    kind: cam\n{consumers}");
        let g = graph(&format_registry(&yuv, &rgb), &yaml);
        let report = run(&g);
        assert!(report.ok(), "{:?}", report.failure);
        assert_eq!(formats(&yuv), want_yuv, "{consumers}");
        assert_eq!(formats(&rgb), want_rgb, "{consumers}");
        // `vidflow graph` labels an edge that is not RGB with its format.
        let dot = Plan::new(&g).to_dot();
        assert_eq!(dot.contains("yuv420p"), !label.is_empty(), "{dot}");
    }
}
