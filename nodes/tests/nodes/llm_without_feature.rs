//! Without the `llm` feature, `llm-analyze` is still a known kind (graphs check), and running
//! it fails with a message that says how to get it.

use crate::common::load;
use vidflow_engine::NodeError;
use vidflow_engine::exec::{self, RunOptions};

#[test]
fn the_kind_checks_and_says_how_to_run_it() {
    let yaml = "name: t\nnodes:\n  - id: src\n    kind: testsrc\n    params: { count: 3 }\n  - id: analyze\n    kind: llm-analyze\n    params: { model: m, cache: false }\n    inputs: { frames: src.frames }\n  - id: out\n    kind: null\n    inputs: { items: analyze.records }\n";
    let registry = vidflow_nodes::registry();
    let g = load("t.yaml", yaml, &[], &registry);
    let report = exec::run(&g, RunOptions::default());
    let f = report.failure.expect("cannot run without the feature");
    assert_eq!(f.node, "analyze");
    assert!(matches!(f.error, NodeError::Input(_)));
    assert!(f.error.to_string().contains("`llm` feature"), "{}", f.error);
}
