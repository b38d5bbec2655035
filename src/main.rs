//! The `vidflow` command line: a thin layer over vidflow-engine and vidflow-nodes.
//! Exit codes: 0 ok, 1 invalid graph or input, 2 runtime failure (or interrupted).

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;
use vidflow_engine::{Mode, NodeError, Registry, exec, progress};

#[derive(Parser)]
#[command(name = "vidflow", version, about = "Declarative dataflow engine for video and AI pipelines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a graph and run it.
    Run {
        file: String,
        /// Override a graph param: `--set name=value` (the value is YAML: `--set sizes=[1,2]`).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Progress display: bars on a terminal, plain lines otherwise, JSON events, or none.
        #[arg(long, default_value = "auto")]
        progress: progress::Mode,
    },
    /// Check graphs and print every problem found, like a compiler.
    Check {
        #[arg(required = true)]
        files: Vec<String>,
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
    },
    /// Print a graph as Graphviz DOT or Mermaid.
    Graph {
        file: String,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
    },
    /// List node kinds, or describe one: ports, params, an example.
    Nodes { kind: Option<String> },
    /// Print the JSON Schema of graph files (for editor completion and checking).
    Schema,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let registry = vidflow_nodes::registry();
    match dispatch(cli.command, &registry) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn overrides(set: &[String]) -> anyhow::Result<Vec<(String, vidflow_engine::yaml::Yv)>> {
    vidflow_engine::parse_overrides(set).map_err(anyhow::Error::msg)
}

fn dispatch(command: Command, registry: &Registry) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { files, set } => {
            let set = overrides(&set)?;
            let mut ok = true;
            for f in &files {
                match vidflow_engine::load_and_check(f, registry, &set, Mode::Check) {
                    Ok(_) => eprintln!("{f}: ok"),
                    Err(e) => {
                        ok = false;
                        eprint!("{}", e.render());
                    }
                }
            }
            Ok(ExitCode::from(if ok { 0 } else { 1 }))
        }
        Command::Graph { file, format, set } => {
            let graph = match vidflow_engine::load_and_check(&file, registry, &overrides(&set)?, Mode::Check) {
                Ok(g) => g,
                Err(e) => {
                    eprint!("{}", e.render());
                    return Ok(ExitCode::from(1));
                }
            };
            print!(
                "{}",
                match format {
                    GraphFormat::Dot => vidflow_engine::compile::to_dot(&graph),
                    GraphFormat::Mermaid => vidflow_engine::compile::to_mermaid(&graph),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Nodes { kind: None } => {
            print!("{}", vidflow_engine::catalog::list(registry));
            Ok(ExitCode::SUCCESS)
        }
        Command::Nodes { kind: Some(k) } => match registry.get(&k) {
            Some(kind) => {
                print!("{}", vidflow_engine::catalog::describe(kind));
                Ok(ExitCode::SUCCESS)
            }
            None => {
                let hint = vidflow_engine::diag::suggest(&k, registry.names(), "kinds");
                anyhow::bail!("no node kind `{k}`; {hint}")
            }
        },
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&vidflow_engine::schema::json_schema(registry))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { file, set, progress } => run(&file, &set, progress, registry),
    }
}

fn run(file: &str, set: &[String], progress: progress::Mode, registry: &Registry) -> anyhow::Result<ExitCode> {
    let graph = match vidflow_engine::load_and_check(file, registry, &overrides(set)?, Mode::Run) {
        Ok(g) => g,
        Err(e) => {
            eprint!("{}", e.render());
            return Ok(ExitCode::from(1));
        }
    };
    let stop = exec::StopFlag::new();
    let handler_stop = stop.clone();
    ctrlc::set_handler(move || {
        if handler_stop.is_set() {
            eprintln!("\nvidflow: aborted");
            std::process::exit(130);
        }
        eprintln!("\nvidflow: stopping (press Ctrl-C again to abort at once)…");
        handler_stop.stop();
    })
    .context("cannot install the Ctrl-C handler")?;
    let opts = exec::RunOptions { stop, progress: progress::sink(progress), ..Default::default() };
    let report = exec::run(&graph, opts);
    if progress != progress::Mode::Json && progress != progress::Mode::None {
        eprint!("{}", progress::summary(&report));
    }
    if let Some(f) = &report.failure {
        eprintln!("error: {f}");
        return Ok(ExitCode::from(match f.error {
            NodeError::Input(_) if !f.panicked => 1,
            _ => 2,
        }));
    }
    if report.interrupted {
        eprintln!("error: interrupted; outputs were not finished");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
