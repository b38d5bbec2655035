//! The `vidflow` command line: a thin layer over vidflow-engine and vidflow-nodes.
//! Exit codes: 0 ok, 1 invalid graph, input or command line, 2 runtime failure (or
//! interrupted).

use anyhow::Context as _;
use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal as _;
use std::process::ExitCode;
use vidflow_engine::{Mode, NodeError, Plan, Registry, exec, progress};
use vidflow_nodes::gpu::device::{DevicePreference, list_devices};

mod farm;
mod serve;

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 invalid graph or input, 2 runtime failure or interrupted. A mistake on the command line is invalid input (1).";
const SET_HELP: &str =
    "Override a graph param; the value is YAML (`--set count=7`, `--set sizes=[1,2]`). Repeatable.";

#[derive(Parser)]
#[command(
    name = "vidflow",
    version,
    about = "Declarative dataflow engine for video and AI pipelines",
    long_about = "Declarative dataflow engine for video and AI pipelines.\n\nA graph is a YAML file of nodes and their connections: `vidflow check` finds every problem in it, `vidflow run` runs it with progress and a per-node summary, `vidflow nodes` lists the node kinds that can be used.",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a graph and run it; Ctrl-C stops it cleanly (twice: at once).
    #[command(after_help = EXIT_CODES)]
    Run {
        /// The graph file (YAML).
        file: String,
        #[arg(long = "set", value_name = "NAME=VALUE", help = SET_HELP)]
        set: Vec<String>,
        /// Progress display on stderr: `auto` (bars on a terminal, plain lines otherwise),
        /// `bars`, `plain`, `json` (one event per line, for programs) or `none` (no progress
        /// and no summary).
        #[arg(
            long,
            value_name = "MODE",
            default_value = "auto",
            value_parser = PossibleValuesParser::new(["auto", "bars", "plain", "json", "none"])
                .map(|s| s.parse::<progress::Mode>().expect("a listed mode"))
        )]
        progress: progress::Mode,
        /// Where neural nodes run: `auto` (a hardware GPU through wgpu if there is one, else
        /// the CPU), `gpu` (wgpu, a software adapter if there is no GPU) or `cpu` (Burn's CPU
        /// backend). Default: `VIDFLOW_DEVICE` if set, else `auto`. The choice and why are
        /// printed when the first neural node starts.
        #[arg(
            long,
            value_name = "DEVICE",
            value_parser = PossibleValuesParser::new(["auto", "gpu", "cpu"])
                .map(|s| s.parse::<DevicePreference>().expect("a listed device"))
        )]
        device: Option<DevicePreference>,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Check graphs and print every problem found, like a compiler (file:line:col).
    #[command(after_help = EXIT_CODES)]
    Check {
        /// Graph files (YAML).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
        #[arg(long = "set", value_name = "NAME=VALUE", help = SET_HELP)]
        set: Vec<String>,
        /// Also check that the graph can run as a job (`run --job`): cut into chunks.
        #[arg(long)]
        job: bool,
    },
    /// Inspect a job directory (`vidflow run GRAPH --job DIR`).
    #[command(subcommand)]
    Job(JobCommand),
    /// Serve a graph to live sessions over gRPC (`proto/vidflow/serve/v1/serve.proto`): each
    /// session streams frames in and gets its results back, in order, while the nodes between
    /// `session-in` and `session-out` are shared (batched across sessions). Ctrl-C or SIGTERM:
    /// stop admitting, finish the sessions in flight, exit.
    #[command(after_help = EXIT_CODES)]
    Serve(serve::ServeArgs),
    /// Load a `vidflow serve` server with K synthetic sessions played in real time (lip sync:
    /// a face and audio; or frames) and report per-session fps, latency p50/p99, late frames
    /// and, with `--metrics`, the server's mean batch size.
    ServeBench(serve::bench::BenchArgs),
    /// Run chunks of jobs for coordinators (`vidflow run GRAPH --job DIR --nats URL`), taken
    /// from a NATS JetStream server; the job folders must be on storage this machine sees at
    /// the same path. SIGTERM or Ctrl-C: finish the chunks in hand and exit (twice: give them
    /// back at once).
    Worker {
        #[command(flatten)]
        nats: farm::NatsArgs,
        /// Chunks run at once.
        #[arg(long, value_name = "N", default_value_t = 1)]
        slots: usize,
        /// The worker's name in `job status` and events (default: host name and process id).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Where neural nodes run (as for `run`).
        #[arg(
            long,
            value_name = "DEVICE",
            value_parser = PossibleValuesParser::new(["auto", "gpu", "cpu"])
                .map(|s| s.parse::<DevicePreference>().expect("a listed device"))
        )]
        device: Option<DevicePreference>,
    },
    /// A worker process of `vidflow run --job DIR --workers N`: chunk tasks on stdin, events on
    /// stdout (started by the coordinator, not by hand).
    #[command(hide = true)]
    LocalWorker {
        #[arg(long)]
        name: String,
        #[arg(
            long,
            value_parser = PossibleValuesParser::new(["auto", "gpu", "cpu"])
                .map(|s| s.parse::<DevicePreference>().expect("a listed device"))
        )]
        device: Option<DevicePreference>,
    },
    /// Print a checked graph as Graphviz DOT or a Mermaid flowchart.
    Graph {
        /// The graph file (YAML).
        file: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
        #[arg(long = "set", value_name = "NAME=VALUE", help = SET_HELP)]
        set: Vec<String>,
    },
    /// List node kinds, or describe one: ports, params (types, defaults), an example.
    Nodes {
        /// A node kind to describe, e.g. `testsrc`.
        kind: Option<String>,
    },
    /// Print what each batch-planner will do: segments, batches, model calls before and after,
    /// why each group was or was not consolidated, and the masks. Never opens the keyframes
    /// (except to draw `--png`).
    Plan {
        /// The graph file (YAML).
        file: String,
        #[arg(long = "set", value_name = "NAME=VALUE", help = SET_HELP)]
        set: Vec<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also draw the plan into this PNG file: a strip per batch with each frame's mask
        /// value and the keyframe thumbnails at their anchors.
        #[arg(long, value_name = "FILE")]
        png: Option<std::path::PathBuf>,
    },
    /// Print the JSON Schema of graph files (for editor completion and checking).
    Schema,
    /// List the compute devices this machine offers and what `--device auto` picks.
    Devices,
}

/// `vidflow run --job`: the run becomes a resumable job.
#[derive(clap::Args)]
struct JobArgs {
    /// Run as a job in this folder: the source's timeline is cut into chunks at keyframes,
    /// each chunk is recorded when done, and the same command resumes after a crash or
    /// Ctrl-C without redoing recorded chunks.
    #[arg(long, value_name = "DIR")]
    job: Option<std::path::PathBuf>,
    /// Length of a chunk in seconds (cut at the first keyframe after it).
    #[arg(long, value_name = "S", default_value_t = vidflow_engine::job::DEFAULT_CHUNK_SECONDS, requires = "job")]
    chunk_seconds: f64,
    /// Chunks run at once (default: 1 for graphs with a neural node, else a quarter of the
    /// cores).
    #[arg(long, value_name = "N", requires = "job")]
    parallel: Option<usize>,
    /// Discard what the job folder holds and start the job over.
    #[arg(long, requires = "job")]
    restart: bool,
    /// Spread the chunks over `vidflow worker`s through this NATS server (the job folder must
    /// be on storage every worker sees).
    #[command(flatten)]
    nats: farm::NatsArgs,
    /// With `--nats`: a worker that sends no heartbeat for this long has its chunk given to
    /// another.
    #[arg(long, value_name = "S", default_value_t = 30.0, requires = "nats")]
    ack_wait: f64,
    /// With `--nats` or `--workers`: deliveries of a chunk before it is recorded as failed.
    #[arg(long, value_name = "N", default_value_t = 3)]
    max_deliver: i64,
    /// Run the chunks on N worker processes on this machine, with the farm's rules and no
    /// server: a chunk whose worker dies goes to another, a failed one is tried again up to
    /// `--max-deliver` times, and each worker keeps its models loaded across chunks.
    #[arg(long, value_name = "N", requires = "job", conflicts_with_all = ["nats", "parallel"])]
    workers: Option<usize>,
}

#[derive(Subcommand)]
enum JobCommand {
    /// Chunks done, pending and failed (with their errors), and the time left.
    Status {
        /// The job folder.
        dir: std::path::PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also list the live workers of this NATS server.
        #[command(flatten)]
        nats: farm::NatsArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    /// Graphviz DOT (`vidflow graph g.yaml | dot -Tsvg > g.svg`).
    Dot,
    /// A Mermaid flowchart (renders in Markdown on GitHub and elsewhere).
    Mermaid,
}

fn main() -> ExitCode {
    // A mistake on the command line is invalid input like any other: exit 1 (clap's own
    // default, 2, is what vidflow reserves for runtime failures). Help and version exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    quiet_headless_vulkan();
    // With `--progress json` every line on stderr is one JSON object, errors included.
    if let Command::Run {
        progress: progress::Mode::Json,
        ..
    } = &cli.command
    {
        progress::set_json_stderr(true);
    }
    let registry = vidflow_nodes::registry();
    match dispatch(cli.command, &registry) {
        Ok(code) => code,
        Err(e) => {
            progress::say_error(format!("{e:#}"));
            ExitCode::from(1)
        }
    }
}

/// Mesa's implicit Vulkan layer `VK_LAYER_MESA_device_select` asks the Wayland compositor which
/// GPU drives the display; without `XDG_RUNTIME_DIR` (headless machines, CI, containers)
/// libwayland then prints "error: XDG_RUNTIME_DIR is invalid or not set" although nothing
/// failed. vidflow computes and never presents, so the layer has nothing to choose for it:
/// turn it off there (its documented switch, `NODEVICE_SELECT=1`), unless the user set it.
fn quiet_headless_vulkan() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none()
        && std::env::var_os("NODEVICE_SELECT").is_none()
    {
        // SAFETY: the first thing `main` does after parsing arguments, before any thread
        // exists, so nothing reads the environment concurrently.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

fn overrides(set: &[String]) -> anyhow::Result<Vec<(String, vidflow_engine::load::yaml::Yv)>> {
    vidflow_engine::parse_overrides(set).map_err(anyhow::Error::msg)
}

fn dispatch(command: Command, registry: &Registry) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { files, set, job } => {
            let set = overrides(&set)?;
            let mut ok = true;
            for f in &files {
                match vidflow_engine::load_and_check(f, registry, &set, Mode::Check) {
                    Ok(g) if job => match vidflow_engine::job::check(&g) {
                        Ok(()) => eprintln!("{f}: ok (can run as a job)"),
                        Err(diags) => {
                            ok = false;
                            eprint!("{}", render_diags(f, &diags));
                        }
                    },
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
            let plan = match vidflow_engine::load_and_check(
                &file,
                registry,
                &overrides(&set)?,
                Mode::Check,
            ) {
                Ok(g) => Plan::new(&g),
                Err(e) => {
                    eprint!("{}", e.render());
                    return Ok(ExitCode::from(1));
                }
            };
            print!(
                "{}",
                match format {
                    GraphFormat::Dot => plan.to_dot(),
                    GraphFormat::Mermaid => plan.to_mermaid(),
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
                let hint = vidflow_engine::diag::suggest(&k, registry.names(), "known kinds");
                anyhow::bail!("unknown node kind `{k}`; {hint}")
            }
        },
        Command::Plan {
            file,
            set,
            json,
            png,
        } => {
            let plan = match vidflow_engine::load_and_check(
                &file,
                registry,
                &overrides(&set)?,
                Mode::Check,
            ) {
                Ok(g) => Plan::new(&g),
                Err(e) => {
                    eprint!("{}", e.render());
                    return Ok(ExitCode::from(1));
                }
            };
            match vidflow_nodes::travel::plan_report(&plan, json, png.as_deref()) {
                Ok(out) => {
                    print!("{out}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&vidflow_engine::schema::json_schema(registry))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Devices => {
            print!("{}", list_devices());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            file,
            set,
            progress,
            device,
            job,
        } => run(&file, &set, progress, device, job, registry),
        Command::Job(JobCommand::Status { dir, json, nats }) => job_status(&dir, json, &nats),
        Command::Serve(args) => serve::run(args, registry),
        Command::ServeBench(args) => serve::bench::run(args),
        Command::LocalWorker { name, device } => {
            let shared = std::sync::Arc::new(vidflow_engine::node::Shared::default());
            if let Some(device) = device {
                shared.insert(device);
            }
            farm::local::worker(name, vidflow_nodes::registry(), shared)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker {
            nats,
            slots,
            name,
            device,
        } => {
            if nats.nats.is_none() {
                anyhow::bail!(
                    "`vidflow worker` needs a NATS server: `--nats nats://host:4222` (or NATS_URL)"
                );
            }
            let shared = std::sync::Arc::new(vidflow_engine::node::Shared::default());
            if let Some(device) = device {
                shared.insert(device);
            }
            let name = name.unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            });
            let registry = vidflow_nodes::registry();
            farm::worker::run(
                farm::worker::Options {
                    nats,
                    slots,
                    name,
                    shared,
                },
                registry,
            )
        }
    }
}

/// Diagnostics of a later stage, rendered against the graph file like the checker's.
fn render_diags(file: &str, diags: &[vidflow_engine::Diagnostic]) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    vidflow_engine::diag::render_all(diags, &vidflow_engine::SourceFile::new(file, text))
}

fn run(
    file: &str,
    set: &[String],
    mode: progress::Mode,
    device: Option<DevicePreference>,
    job: JobArgs,
    registry: &Registry,
) -> anyhow::Result<ExitCode> {
    let graph = match vidflow_engine::load_and_check(file, registry, &overrides(set)?, Mode::Run) {
        Ok(g) => g,
        Err(e) if progress::json_stderr() => {
            eprint!("{}", e.render_json());
            return Ok(ExitCode::from(1));
        }
        Err(e) => {
            eprint!("{}", e.render());
            return Ok(ExitCode::from(1));
        }
    };
    if job.job.is_some() {
        return run_job(file, set, &graph, mode, device, job);
    }
    let plan = Plan::new(&graph);
    let bars = mode == progress::Mode::Bars
        || (mode == progress::Mode::Auto && std::io::stderr().is_terminal());
    let stop = exec::StopFlag::new();
    let handler_stop = stop.clone();
    ctrlc::set_handler(move || {
        if handler_stop.is_set() {
            eprintln!("\nvidflow: aborted; outputs were left unfinished");
            std::process::exit(2);
        }
        handler_stop.stop();
        // Progress bars would draw over a line printed now, and JSON mode keeps stderr to
        // events; both say "interrupted" at the end.
        if !bars && mode != progress::Mode::Json {
            eprintln!("vidflow: stopping (press Ctrl-C again to abort at once)");
        }
    })
    .context("cannot install the Ctrl-C handler")?;
    let opts = exec::RunOptions {
        stop,
        progress: progress::sink(mode),
        ..Default::default()
    };
    // Every neural node of the run opens the device this preference names.
    if let Some(device) = device {
        opts.shared.insert(device);
    }
    let report = exec::run(&plan, opts);
    // A failure before any item moved (a missing folder, program or weight file) needs no table.
    let moved = report.nodes.iter().any(|n| n.items_in + n.items_out > 0);
    if mode != progress::Mode::Json
        && mode != progress::Mode::None
        && (moved || report.failure.is_none())
    {
        if bars {
            // The bars leave the cursor at the end of the last one.
            eprintln!();
        }
        eprint!("{}", progress::summary(&report));
    }
    if let Some(f) = &report.failure {
        progress::say_error(f);
        return Ok(ExitCode::from(match f.error {
            NodeError::Input(_) if !f.panicked => 1,
            _ => 2,
        }));
    }
    if report.interrupted {
        progress::say("vidflow: interrupted; the outputs were not finished");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// `vidflow run GRAPH --job DIR`.
fn run_job(
    file: &str,
    set: &[String],
    graph: &vidflow_engine::CheckedGraph,
    mode: progress::Mode,
    device: Option<DevicePreference>,
    args: JobArgs,
) -> anyhow::Result<ExitCode> {
    use vidflow_engine::job::{self, JobError};
    let dir = args.job.clone().expect("called with --job");
    if args.chunk_seconds.is_nan() || args.chunk_seconds <= 0.0 {
        anyhow::bail!(
            "`--chunk-seconds` must be more than 0 (it is {})",
            args.chunk_seconds
        );
    }
    let stop = exec::StopFlag::new();
    let handler_stop = stop.clone();
    let quiet = matches!(mode, progress::Mode::Json | progress::Mode::None);
    // What the first Ctrl-C does depends on where the chunks run.
    let first = if args.nats.nats.is_some() {
        "vidflow: leaving; the queued chunks stay with the workers and a rerun picks the job up (press Ctrl-C again to leave at once)"
    } else if args.workers.is_some() {
        "vidflow: no new chunks; the workers finish the ones in hand (press Ctrl-C again to abort at once)"
    } else {
        "vidflow: stopping the chunks in flight (press Ctrl-C again to abort at once)"
    };
    ctrlc::set_handler(move || {
        if handler_stop.is_set() {
            eprintln!("\nvidflow: aborted; the chunks in flight were not recorded");
            std::process::exit(2);
        }
        handler_stop.stop();
        if !quiet {
            eprintln!("{first}");
        }
    })
    .context("cannot install the Ctrl-C handler")?;
    let shared = std::sync::Arc::new(vidflow_engine::node::Shared::default());
    if let Some(device) = device {
        shared.insert(device);
    }
    let result = if args.nats.nats.is_some() {
        coordinate(file, set, graph, mode, &args, stop)
    } else if let Some(n) = args.workers {
        local_workers(file, set, graph, mode, &args, n, device, stop)
    } else {
        let opts = job::JobOptions {
            dir: dir.clone(),
            chunk_seconds: args.chunk_seconds,
            parallel: args.parallel,
            restart: args.restart,
            progress: job::progress::JobProgress::new(mode),
            stop,
            shared,
        };
        job::run(graph, opts).map_err(Into::into)
    };
    let report = match result.map_err(|e| e.downcast::<JobError>()) {
        Ok(r) => r,
        Err(Ok(JobError::NotChunkable(diags))) => {
            if progress::json_stderr() {
                for d in &diags {
                    eprintln!("{}", d.to_json(file));
                }
            } else {
                eprint!("{}", render_diags(file, &diags));
            }
            return Ok(ExitCode::from(1));
        }
        Err(Ok(e @ JobError::Io(_))) => {
            progress::say_error(e);
            return Ok(ExitCode::from(2));
        }
        Err(Ok(e)) => {
            progress::say_error(e);
            return Ok(ExitCode::from(1));
        }
        Err(Err(e)) => {
            progress::say_error(format!("{e:#}"));
            return Ok(ExitCode::from(1));
        }
    };
    let d = dir.display();
    for f in &report.failed {
        let range = match f.range.1 {
            Some(e) => format!(
                "{}–{}",
                job::progress::clock(f.range.0),
                job::progress::clock(e)
            ),
            None => format!("{}–end", job::progress::clock(f.range.0)),
        };
        progress::say_error(format!(
            "chunk {} ({range}) failed: {}",
            f.index,
            f.errors.last().map(String::as_str).unwrap_or("?")
        ));
    }
    if !report.failed.is_empty() {
        progress::say(format!(
            "vidflow: {} of {} chunks failed; the others are recorded in `{d}`: rerun the same command to retry only the failed ones",
            report.failed.len(),
            report.chunks
        ));
        return Ok(ExitCode::from(2));
    }
    if report.interrupted {
        progress::say(format!(
            "vidflow: interrupted; {} of {} chunks are recorded in `{d}`: rerun the same command to resume",
            report.reused.len() + report.ran.len(),
            report.chunks
        ));
        return Ok(ExitCode::from(2));
    }
    if !quiet {
        let outputs: Vec<String> = report
            .outputs
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect();
        eprintln!(
            "job `{d}`: {} chunks ({} recorded before, {} run now) in {:.2}s{}",
            report.chunks,
            report.reused.len(),
            report.ran.len(),
            report.elapsed.as_secs_f64(),
            if outputs.is_empty() {
                String::new()
            } else {
                format!("; wrote {}", outputs.join(", "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `vidflow run GRAPH --job DIR --nats URL`: the chunks run on workers.
fn coordinate(
    file: &str,
    set: &[String],
    graph: &vidflow_engine::CheckedGraph,
    mode: progress::Mode,
    args: &JobArgs,
    stop: exec::StopFlag,
) -> anyhow::Result<vidflow_engine::job::JobReport> {
    let dir = args.job.as_ref().expect("called with --job");
    let job = vidflow_engine::job::Job::open(graph, dir, args.chunk_seconds, args.restart)?;
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read `{file}`"))?;
    if args.ack_wait.is_nan() || args.ack_wait <= 0.0 {
        anyhow::bail!("`--ack-wait` must be more than 0 seconds");
    }
    let progress = vidflow_engine::job::progress::JobProgress::new(mode);
    farm::coordinator::run(farm::coordinator::Coordinate {
        job: &job,
        nats: &args.nats,
        queue: farm::Queue {
            ack_wait: std::time::Duration::from_secs_f64(args.ack_wait),
            max_deliver: args.max_deliver,
        },
        file: file.to_string(),
        text,
        set: set.to_vec(),
        progress: &progress,
        stop,
    })
}

/// `vidflow run GRAPH --job DIR --workers N`: the chunks run on worker processes here.
#[allow(clippy::too_many_arguments)]
fn local_workers(
    file: &str,
    set: &[String],
    graph: &vidflow_engine::CheckedGraph,
    mode: progress::Mode,
    args: &JobArgs,
    workers: usize,
    device: Option<DevicePreference>,
    stop: exec::StopFlag,
) -> anyhow::Result<vidflow_engine::job::JobReport> {
    if workers == 0 {
        anyhow::bail!("`--workers` must be at least 1");
    }
    if args.max_deliver < 1 {
        anyhow::bail!("`--max-deliver` must be at least 1");
    }
    let dir = args.job.as_ref().expect("called with --job");
    let job = vidflow_engine::job::Job::open(graph, dir, args.chunk_seconds, args.restart)?;
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read `{file}`"))?;
    let progress = vidflow_engine::job::progress::JobProgress::new(mode);
    farm::local::run(farm::local::Local {
        job: &job,
        workers,
        max_deliver: args.max_deliver,
        file: file.to_string(),
        text,
        set: set.to_vec(),
        device: device.map(|d| d.to_string()),
        progress: &progress,
        stop,
    })
}

/// `vidflow job status DIR`.
fn job_status(
    dir: &std::path::Path,
    json: bool,
    nats: &farm::NatsArgs,
) -> anyhow::Result<ExitCode> {
    use vidflow_engine::job::{self, progress::clock};
    let s = match job::status(dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let workers = match &nats.nats {
        Some(_) => Some(farm::coordinator::workers(nats)?),
        None => None,
    };
    // Why the chunks still pending did not run yet: the last failed delivery each had (a
    // worker that lacks a node kind, a file it cannot find), from the workers' error logs.
    let retried: Vec<(usize, usize, job::journal::ErrorLine)> = s
        .pending
        .iter()
        .filter(|&&i| !s.failed.iter().any(|f| f.index == i))
        .filter_map(|&i| {
            let lines = job::journal::error_lines(dir, i);
            let n = lines.len();
            lines.into_iter().last().map(|l| (i, n, l))
        })
        .collect();
    if json {
        let mut v = serde_json::to_value(&s)?;
        if let Some(w) = &workers {
            v["workers"] = serde_json::to_value(w)?;
        }
        v["retried"] = retried
            .iter()
            .map(|(i, n, l)| {
                serde_json::json!({"chunk": i, "failed_deliveries": n, "last_error": l})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = |v: &[usize]| {
        v.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "job `{}`: {} of {} chunks done ({}/{} frames), {} pending, {} failed{}",
        dir.display(),
        s.done.len(),
        s.chunks,
        s.frames.0,
        s.frames.1,
        s.pending.len(),
        s.failed.len(),
        if s.running { "; running now" } else { "" }
    );
    if let Some(eta) = s.eta_s.filter(|_| !s.pending.is_empty()) {
        println!(
            "time left: about {} at the recorded pace, one chunk at a time",
            clock(eta)
        );
    }
    if !s.pending.is_empty() {
        println!("pending: {}", list(&s.pending));
    }
    for (i, n, l) in &retried {
        println!(
            "pending: chunk {i} after {n} failed deliver{}, the last: {l}",
            if *n == 1 { "y" } else { "ies" }
        );
    }
    if let Some(w) = &workers {
        println!("live workers on {}: {}", nats.shown(), w.len());
        for b in w {
            let running: Vec<String> = b
                .running
                .iter()
                .map(|(job, chunk, frames)| {
                    format!(
                        "chunk {chunk} of {} ({frames} frames)",
                        &job[..job.len().min(12)]
                    )
                })
                .collect();
            println!(
                "  {}: {} slot(s), {} chunk(s) done, {:.1} frames/s, {}",
                b.name,
                b.slots,
                b.chunks_done,
                b.fps,
                if running.is_empty() {
                    "idle".to_string()
                } else {
                    running.join(", ")
                }
            );
        }
    }
    for f in &s.failed {
        let (a, b) = s.ranges[f.index];
        println!(
            "failed: chunk {} ({}–{}) after {} attempt(s): {}",
            f.index,
            clock(a),
            b.map_or("end".to_string(), clock),
            f.errors.len(),
            f.errors.last().map(String::as_str).unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}
