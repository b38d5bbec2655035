//! vidflow-engine: the graph model, checker, compiler and pipelined executor of vidflow.
//!
//! A graph file is loaded into a [`spec::GraphSpec`] (raw, with source spans), checked against a
//! [`Registry`] of node kinds into a [`check::CheckedGraph`], and run by [`exec::run`]. This crate
//! has no codec or GPU dependency, so graph tests build and run in seconds; node kinds that
//! need FFmpeg or Burn live in `vidflow-nodes`.
//!
//! ```no_run
//! use vidflow_engine::{Registry, load_and_check, check::Mode, exec};
//! let registry = Registry::new(); // register node kinds here
//! let graph = load_and_check("graph.yaml", &registry, &[], Mode::Run).expect("valid graph");
//! let report = exec::run(&graph, exec::RunOptions::default());
//! assert!(report.ok());
//! ```

pub mod catalog;
pub mod check;
pub mod compile;
pub mod diag;
pub mod exec;
pub mod node;
pub mod payload;
pub mod progress;
pub mod registry;
pub mod schema;
pub mod spec;
pub mod yaml;

pub use check::{CheckedGraph, Mode};
pub use diag::{Diagnostic, SourceFile, Span};
pub use node::{
    BatchConfig, BuildCtx, End, Input, Items, NodeError, NodeKind, ParamSpec, ParamType, Params,
    Process, Runtime, Source,
};
pub use payload::{AudioChunk, Frame, Payload, PortType, Rate};
pub use registry::Registry;

use yaml::Yv;

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
}

/// Parses `--set name=value` arguments; values are YAML (`--set overlaps=[4,4]`).
pub fn parse_overrides(args: &[String]) -> Result<Vec<(String, Yv)>, String> {
    args.iter()
        .map(|a| {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| format!("`--set {a}`: expected `name=value`"))?;
            let mut value =
                yaml::parse_value(v).map_err(|d| format!("`--set {a}`: {}", d.message))?;
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
    let (spec, mut diags) = spec::load(file.clone());
    if diags.iter().any(|d| matches!(d.code, "yaml-syntax")) {
        return Err(LoadError::Invalid {
            file,
            diagnostics: diags,
        });
    }
    match check::check(&spec, registry, overrides, mode) {
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
