//! Golden tests of graph diagnostics, and the check of every example graph.
//!
//! Each `tests/golden/NN-name.yaml` is an invalid graph; `NN-name.expected` holds exactly what
//! `vidflow check` prints for it (`LoadError::render`). The test renders every file and compares
//! byte for byte. After a deliberate change to a message, regenerate with
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p vidflow-nodes --test check_golden
//! ```
//!
//! and read every changed `.expected` file before committing it.
//!
//! A golden file whose first line is `# set: name=value other=[1,2]` is checked with those
//! `--set` overrides (whitespace-separated, each parsed by `vidflow_engine::parse_overrides`).
//!
//! The registry is `vidflow_nodes::registry()` plus test-only kinds: `golden-mux`, whose inputs
//! are typed (`video: frames`, `audio: audio`), so that port type mismatches can be shown with
//! the built-in kinds (whose inputs take `any`); `golden-merge`, with two inputs, for graphs
//! where cycles share nodes; and `golden-code`, whose validator reports a (line, column) inside
//! its `code` param, to check how such positions map to the file.

use std::path::{Path, PathBuf};
use vidflow_engine::Problem;
use vidflow_engine::check::Mode;
use vidflow_engine::{
    LoadError, NodeError, NodeKind, ParamSpec, ParamType, PortType, Process, Registry, Runtime,
    SourceFile, check_source, parse_overrides,
};

fn registry() -> Registry {
    struct Nothing;
    impl Process for Nothing {
        fn process(
            &mut self,
            _input: vidflow_engine::Input,
            _out: &mut vidflow_engine::Emitter<'_>,
        ) -> Result<(), NodeError> {
            Ok(())
        }
    }
    let mut r = vidflow_nodes::registry();
    r.register(
        NodeKind::new(
            "golden-mux",
            "Test-only: takes frames and audio (typed inputs, for type mismatches).",
            |_| Ok(Runtime::Process(Box::new(Nothing))),
        )
        .input("video", PortType::FRAMES, "frames to mux")
        .optional_input("audio", PortType::AUDIO, "audio to mux"),
    );
    r.register(
        NodeKind::new(
            "golden-merge",
            "Test-only: two inputs of any type, for graphs with several cycles through a node.",
            |_| Ok(Runtime::Process(Box::new(Nothing))),
        )
        .input("a", PortType::ANY, "anything")
        .optional_input("b", PortType::ANY, "anything")
        .output("out", PortType::FRAMES, "frames"),
    );
    r.register(
        NodeKind::new(
            "golden-code",
            "Test-only: a source whose validator points at each `bad` in its `code` param.",
            |_| Err(NodeError::runtime("golden-code does not run")),
        )
        .output("frames", PortType::FRAMES, "nothing")
        .param(ParamSpec::required("code", ParamType::Str, "some code"))
        .check(|cx| {
            let code = cx.params.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let mut problems = vec![];
            for (i, line) in code.split('\n').enumerate() {
                for (byte, _) in line.match_indices("bad") {
                    let col = line[..byte].chars().count() + 1;
                    problems.push(
                        Problem::param(
                            "code",
                            format!("`bad` on line {} of the code, column {col}", i + 1),
                        )
                        .help("the validator's (line, column) is mapped to the file")
                        .at_position(i as u32 + 1, col as u32),
                    );
                }
            }
            problems
        }),
    );
    r
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Files in `dir` with extension `ext`, sorted by name.
fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// The `--set` overrides named on a golden file's first line, if any.
fn overrides_of(text: &str) -> Vec<String> {
    text.lines()
        .next()
        .and_then(|l| l.trim().strip_prefix("# set:"))
        .map(|rest| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// What `vidflow check` prints for a golden file.
fn render_golden(path: &Path, registry: &Registry) -> String {
    let text = std::fs::read_to_string(path).expect("golden file is readable");
    let name = format!(
        "golden/{}",
        path.file_name().expect("file name").to_string_lossy()
    );
    let sets = overrides_of(&text);
    let overrides = parse_overrides(&sets)
        .unwrap_or_else(|e| panic!("{}: bad `# set:` line: {e}", path.display()));
    match check_source(
        SourceFile::new(name, text),
        registry,
        &overrides,
        Mode::Check,
    ) {
        Ok(_) => panic!(
            "{} is a golden file of diagnostics, but the graph is valid",
            path.display()
        ),
        Err(e @ LoadError::Invalid { .. }) => e.render(),
        Err(e) => panic!("{}: unexpected error {e:?}", path.display()),
    }
}

#[test]
fn golden_diagnostics() {
    let dir = golden_dir();
    let registry = registry();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let graphs = files_with_ext(&dir, "yaml");
    assert!(
        graphs.len() >= 24,
        "expected at least 24 golden graphs in {}, found {}",
        dir.display(),
        graphs.len()
    );
    let mut failures = vec![];
    for path in &graphs {
        let actual = render_golden(path, &registry);
        let expected_path = path.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &actual).expect("write .expected");
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "== {} differs\n-- expected:\n{expected}-- actual:\n{actual}",
                path.display()
            )),
            Err(e) => failures.push(format!(
                "== {}: cannot read {}: {e} (generate it with UPDATE_GOLDEN=1)",
                path.display(),
                expected_path.display()
            )),
        }
    }
    // An `.expected` file without its graph is a leftover.
    for expected in files_with_ext(&dir, "expected") {
        if !expected.with_extension("yaml").exists() {
            failures.push(format!(
                "== {} has no matching .yaml file",
                expected.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden file(s) failed (UPDATE_GOLDEN=1 rewrites them; then read the diff):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Golden output lists diagnostics sorted by position: line, then column.
#[test]
fn golden_diagnostics_are_sorted_by_position() {
    let registry = registry();
    for path in files_with_ext(&golden_dir(), "yaml") {
        let out = render_golden(&path, &registry);
        let positions: Vec<(u32, u32)> = out
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("--> golden/"))
            .filter_map(|rest| {
                let mut parts = rest.rsplitn(3, ':');
                let col = parts.next()?.parse().ok()?;
                let line = parts.next()?.parse().ok()?;
                Some((line, col))
            })
            .collect();
        let mut sorted = positions.clone();
        sorted.sort();
        assert_eq!(
            positions,
            sorted,
            "{}: not sorted by position",
            path.display()
        );
    }
}

#[test]
fn set_line_is_parsed() {
    assert_eq!(
        overrides_of("# set: a=1 b=[1,2]\nnodes: []\n"),
        vec!["a=1".to_string(), "b=[1,2]".to_string()]
    );
    assert!(overrides_of("nodes: []\n# set: a=1\n").is_empty());
}
