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
