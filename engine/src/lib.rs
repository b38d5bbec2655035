//! vidflow-engine: the graph model, checker, planner and pipelined executor of vidflow.
//!
//! A graph file goes through four stages, each a module with one output type: [`load`] (YAML
//! with source spans, graph params substituted) → [`load::GraphSpec`]; [`check`] (every pass,
//! every problem at once) → [`check::CheckedGraph`]; [`plan`] (petgraph, topological order,
//! edge configs, replicas, batching) → [`plan::Plan`]; [`exec`] runs a plan. Node kinds are
//! written against [`node`] alone, the node API, which knows none of the stages. This crate has
//! no codec or GPU dependency, so graph tests build and run in seconds; node kinds that need
//! FFmpeg or Burn live in `vidflow-nodes`.
//!
//! ```no_run
//! use vidflow_engine::{Registry, load_and_check, Mode, exec, plan::Plan};
//! let registry = Registry::new(); // register node kinds here
//! let graph = load_and_check("graph.yaml", &registry, &[], Mode::Run).expect("valid graph");
//! let report = exec::run(&Plan::new(&graph), exec::RunOptions::default());
//! assert!(report.ok());
//! ```

pub mod catalog;
pub mod check;
pub mod config;
pub mod diag;
pub mod error;
pub mod exec;
pub mod job;
pub mod load;
pub mod node;
pub mod payload;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod schema;
pub mod session;
#[cfg(feature = "testing")]
pub mod testing;

pub use check::CheckedGraph;
pub use config::{BatchConfig, OnError, ServeConfig, WhenFull};
pub use diag::{Diagnostic, SourceFile, Span};
pub use load::Mode;
pub use node::{
    BuildCtx, ChunkPiece, ChunkSink, ChunkSource, Emitter, End, Input, Items, NodeError, NodeKind,
    NodeParams, ParamSpec, ParamType, Params, Problem, Process, Runtime, SessionId, SessionState,
    SessionStore, SessionUse, Source, Temporal, Timeline, ValidateCtx, WholeInput,
};
pub use payload::{AudioChunk, Frame, Payload, PixelFormat, Plane, PortType, Rate};
pub use plan::Plan;
pub use registry::Registry;

use load::yaml::{self, Yv};

/// Why a graph could not be loaded: unreadable file, or diagnostics.
#[derive(Debug)]
pub enum LoadError {
    Io {
        path: String,
        error: std::io::Error,
    },
    Invalid {
        file: SourceFile,
        diagnostics: Vec<Diagnostic>,
    },
}

impl LoadError {
    /// The message as the CLI prints it.
    pub fn render(&self) -> String {
        match self {
            LoadError::Io { path, error } => {
                format!("error: cannot read graph file `{path}`: {error}\n")
            }
            LoadError::Invalid { file, diagnostics } => diag::render_all(diagnostics, file),
        }
    }

    /// The message as JSON events, one per line (`--progress json`).
    pub fn render_json(&self) -> String {
        match self {
            LoadError::Io { path, error } => format!(
                "{}\n",
                serde_json::json!({"event": "error", "message": format!("cannot read graph file `{path}`: {error}")})
            ),
            LoadError::Invalid { file, diagnostics } => diagnostics
                .iter()
                .map(|d| format!("{}\n", d.to_json(&file.name)))
                .collect(),
        }
    }
}

/// Parses `--set name=value` arguments; values are YAML (`--set overlaps=[4,4]`).
pub fn parse_overrides(args: &[String]) -> Result<Vec<(String, Yv)>, String> {
    args.iter()
        .map(|a| {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| format!("`--set {a}`: expected `name=value`"))?;
            let mut value =
                load::yaml::parse_value(v).map_err(|d| format!("`--set {a}`: {}", d.message))?;
            // Only flow syntax (`[1, 2]`, `{a: 1}`) makes a list or mapping on the command line;
            // `-` or `key: x` in a value are text (`--set output=-` means standard output).
            let flow = matches!(v.trim_start().chars().next(), Some('[' | '{'));
            if matches!(value.v, yaml::YvKind::Seq(_) | yaml::YvKind::Map(_)) && !flow {
                value = Yv::new(value.span, yaml::YvKind::Str(v.to_string()));
            }
            Ok((k.trim().to_string(), value))
        })
        .collect()
}

/// Loads and checks graph text.
pub fn check_source(
    file: SourceFile,
    registry: &Registry,
    overrides: &[(String, Yv)],
    mode: Mode,
) -> Result<CheckedGraph, LoadError> {
    let (spec, mut diags) = load::load(file.clone(), overrides, mode);
    if diags.iter().any(|d| matches!(d.code, "yaml-syntax")) {
        return Err(LoadError::Invalid {
            file,
            diagnostics: diags,
        });
    }
    match check::check(&spec, registry) {
        Ok(g) if diags.is_empty() => Ok(g),
        Ok(_) => Err(LoadError::Invalid {
            file,
            diagnostics: diags,
        }),
        Err(more) => {
            diags.extend(more);
            diags.sort_by_key(|d| (d.span, d.code));
            Err(LoadError::Invalid {
                file,
                diagnostics: diags,
            })
        }
    }
}

/// Reads a graph file and checks it.
pub fn load_and_check(
    path: &str,
    registry: &Registry,
    overrides: &[(String, Yv)],
    mode: Mode,
) -> Result<CheckedGraph, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Io {
        path: path.to_string(),
        error,
    })?;
    check_source(SourceFile::new(path, text), registry, overrides, mode)
}
