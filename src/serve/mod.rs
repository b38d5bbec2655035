//! `vidflow serve GRAPH --listen ADDR`: runs a serve graph (one with `session-in` and
//! `session-out` nodes) once, for as long as the server lives, and offers it over gRPC
//! (`proto/vidflow/serve/v1/serve.proto`): every `Stream` call is a session whose frames enter
//! the graph at `session-in` and come back from `session-out`, in order. The engine does the
//! sessions (ids on every item, batches across sessions, per-session state, see
//! `vidflow_engine::node::session`); this module is the network side, and the only async code
//! besides the farm: [`grpc`] (the service, admission, decoding and encoding frames),
//! [`metrics`] (Prometheus text at `/metrics`), and here the command itself (the graph on its
//! own threads, the tokio runtime, health and reflection, shutdown).
//!
//! Who may connect ([`access`]): `--listen` defaults to loopback; any other address needs TLS
//! (`--tls-cert`, `--tls-key`) and a bearer token (`--token-file`), or `--insecure`, which
//! says that plaintext without a token is intended and prints a warning. A token, once given,
//! is required on every call and on `/metrics` and `/ready`, loopback or not.
//!
//! Readiness: the health service says NOT_SERVING, and `/ready` 503, until the models are
//! loaded and one warm-up frame (mid-gray, `serve.warmup_size` pixels square) has gone through the whole
//! graph; then SERVING and 200. A warm-up that fails ends the server with the node's error.

pub mod access;
pub mod avatar;
pub mod bench;
pub mod frames;
pub mod grpc;
pub mod metrics;

/// The generated gRPC code.
pub mod pb {
    tonic::include_proto!("vidflow.serve.v1");
    /// The `.proto`'s descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("serve_descriptor");
}

use anyhow::Context as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vidflow_engine::exec::{self, NodeReport, ProgressSink, RunOptions, StopFlag};
use vidflow_engine::session::SessionHub;
use vidflow_engine::{Mode, Plan, Registry};

/// The default `--listen` address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The serve graph (YAML), with `session-in` and `session-out` nodes.
    pub file: String,
    #[arg(long = "set", value_name = "NAME=VALUE", help = crate::SET_HELP)]
    pub set: Vec<String>,
    /// The gRPC address. Anything but a loopback address needs `--insecure`.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Serve Prometheus text at http://ADDR/metrics (off by default).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// TLS certificate chain (PEM) for the gRPC port; with `--tls-key`.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// TLS private key (PEM) for the gRPC port; with `--tls-cert`.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<String>,
    /// A file holding the bearer token clients must send (`authorization: Bearer TOKEN`);
    /// required on every call and on /metrics and /ready once given.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<String>,
    /// Allow a non-loopback `--listen` (or `--metrics`) without TLS and a token: anyone who
    /// can reach the port can use the server.
    #[arg(long)]
    pub insecure: bool,
    /// A frame whose latency through the server exceeds this many milliseconds is counted as
    /// late in `/metrics`.
    #[arg(long, value_name = "MS", default_value_t = 250.0, value_parser = late_ms)]
    pub late_ms: f64,
    /// Where neural nodes run (as for `run`).
    #[arg(
        long,
        value_name = "DEVICE",
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(["auto", "gpu", "cpu"]),
            |s| s.parse::<vidflow_nodes::gpu::device::DevicePreference>().expect("a listed device")
        )
    )]
    pub device: Option<vidflow_nodes::gpu::device::DevicePreference>,
}

fn late_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a number of milliseconds above 0")),
    }
}

/// The latest counters of every node, kept for `/metrics`.
#[derive(Clone, Default)]
pub struct LiveNodes(pub Arc<Mutex<Vec<NodeReport>>>);

impl ProgressSink for LiveNodes {
    fn tick(&mut self, nodes: &[NodeReport], _elapsed: Duration) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = nodes.to_vec();
    }
    fn finish(&mut self, report: &exec::RunReport) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = report.nodes.clone();
    }
}

/// Parses `--listen`/`--metrics` and refuses a non-loopback address unless it is protected
/// (`protected`: TLS and a token for `--listen`, a token for `--metrics`) or `--insecure`.
fn address(flag: &str, value: &str, protected: bool, insecure: bool) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = value.parse().with_context(|| {
        format!("`{flag} {value}`: expected IP:PORT, e.g. `{flag} {DEFAULT_LISTEN}`")
    })?;
    if !addr.ip().is_loopback() && !protected {
        if !insecure {
            anyhow::bail!(
                "refusing `{flag} {value}`: it is not a loopback address, so it needs TLS (`--tls-cert`, `--tls-key`) and a bearer token (`--token-file`); or listen on 127.0.0.1 (and reach it through an SSH tunnel), or pass `--insecure` to serve plaintext without authentication anyway"
            );
        }
        eprintln!(
            "vidflow serve: warning: {flag} {value} is not loopback and `--insecure` is set: no TLS or no token, anyone who reaches the port can use it"
        );
    }
    Ok(addr)
}

pub fn run(args: ServeArgs, registry: &Registry) -> anyhow::Result<ExitCode> {
    let token = args
        .token_file
        .as_deref()
        .map(access::read_token)
        .transpose()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(access::tls_identity(cert, key)?),
        _ => None,
    };
    let listen = address(
        "--listen",
        &args.listen,
        tls.is_some() && token.is_some(),
        args.insecure,
    )?;
    let metrics_addr = args
        .metrics
        .as_deref()
        .map(|m| address("--metrics", m, token.is_some(), args.insecure))
        .transpose()?;
    let gate = access::Gate::new(token);
    let set = vidflow_engine::parse_overrides(&args.set).map_err(anyhow::Error::msg)?;
    let graph = match vidflow_engine::load_and_check(&args.file, registry, &set, Mode::Run) {
        Ok(g) => g,
        Err(e) => {
            eprint!("{}", e.render());
            return Ok(ExitCode::from(1));
        }
    };
    let Some(serve) = graph.serve else {
        anyhow::bail!(
            "`{}` is not a serve graph: it has no `session-in` node; feed it from `session-in`, end it in `session-out` (see graphs/serve-upscale.yaml), or run it with `vidflow run`",
            args.file
        );
    };
    let shared = Arc::new(vidflow_engine::node::Shared::default());
    if let Some(device) = args.device {
        shared.insert(device);
    }
    let hub = shared
        .get_or_try_init::<SessionHub, std::convert::Infallible>(|| {
            Ok(SessionHub::new(serve.max_sessions))
        })
        .unwrap_or_else(|never| match never {});
    // Bind before starting the graph, so a port in use is a clear error at once.
    let grpc_listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    let metrics_listener = metrics_addr
        .map(|a| std::net::TcpListener::bind(a).with_context(|| format!("cannot listen on {a}")))
        .transpose()?;
    for l in std::iter::once(&grpc_listener).chain(metrics_listener.as_ref()) {
        l.set_nonblocking(true)?;
    }

    // The graph runs on its own threads for the server's whole life.
    let live = LiveNodes::default();
    let stop = StopFlag::new();
    let plan = Plan::new(&graph);
    // A graph whose `session-in` feeds its `audio` output somewhere takes lip-sync sessions.
    let takes_audio = plan
        .edges
        .iter()
        .any(|e| plan.nodes[e.from.0].kind.name == "session-in" && e.from.1 == 1);
    let faults_hub = hub.clone();
    let opts = RunOptions {
        stop: stop.clone(),
        progress: Box::new(live.clone()),
        shared: shared.clone(),
        session_faults: Some(Arc::new(move |s, message: &str| {
            faults_hub.fail(s, message)
        })),
        ..Default::default()
    };
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let graph_hub = hub.clone();
    let runner = std::thread::Builder::new()
        .name("serve-graph".into())
        .spawn(move || {
            let report = exec::run(&plan, opts);
            let why = match &report.failure {
                Some(f) => format!("the graph stopped: {f}"),
                None => "the server is shutting down".into(),
            };
            graph_hub.abort_all(&why);
            let _ = ended_tx.send(());
            report
        })?;

    eprintln!(
        "vidflow serve: {} on {} (max {} sessions, idle timeout {} s){}",
        graph.name,
        listen,
        serve.max_sessions,
        serve.idle_timeout_s,
        metrics_addr.map_or(String::new(), |m| format!(
            ", metrics on http://{m}/metrics"
        ))
    );
    let warmup = serve.warmup_size;
    let latency = Arc::new(metrics::Latency::new(Duration::from_secs_f64(
        args.late_ms / 1000.0,
    )));
    let service = grpc::Service::new(
        hub.clone(),
        graph.name.clone(),
        serve,
        takes_audio,
        latency.clone(),
    );
    let shutdown_hub = hub.clone();
    let metrics_hub = hub.clone();
    let warm_hub = hub.clone();
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let metrics_ready = ready.clone();
    let metrics_gate = gate.clone();
    let served = crate::farm::runtime()?.block_on(async move {
        let (reporter, health) = tonic_health::server::health_reporter();
        // NOT_SERVING until the warm-up frame has gone through the graph.
        reporter
            .set_not_serving::<pb::serve_server::ServeServer<grpc::Service>>()
            .await;
        let warm_reporter = reporter.clone();
        let (warm_failed_tx, warm_failed) = tokio::sync::oneshot::channel::<String>();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match tokio::task::spawn_blocking(move || grpc::warm_up(&warm_hub, warmup, takes_audio)).await {
                Ok(Ok(())) => {
                    ready.store(true, std::sync::atomic::Ordering::SeqCst);
                    warm_reporter
                        .set_serving::<pb::serve_server::ServeServer<grpc::Service>>()
                        .await;
                    eprintln!(
                        "vidflow serve: ready (warm-up frame through the graph in {:.1} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
                Ok(Err(e)) => {
                    let _ = warm_failed_tx.send(e);
                }
                Err(e) => {
                    let _ = warm_failed_tx.send(format!("the warm-up panicked: {e}"));
                }
            }
        });
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("server reflection")?;
        if let Some(l) = metrics_listener {
            let l = tokio::net::TcpListener::from_std(l)?;
            tokio::spawn(metrics::serve(
                l,
                metrics_hub,
                live.clone(),
                latency.clone(),
                metrics_ready,
                metrics_gate,
            ));
        }
        let warm_error = Arc::new(Mutex::new(None::<String>));
        let warm_error_set = warm_error.clone();
        let incoming =
            tokio_stream::wrappers::TcpListenerStream::new(tokio::net::TcpListener::from_std(
                grpc_listener,
            )?);
        let shutdown = async move {
            tokio::select! {
                _ = signal() => eprintln!("vidflow serve: stopping: no new sessions; finishing the sessions in flight"),
                _ = ended_rx => {}
                Ok(e) = warm_failed => {
                    *warm_error_set.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
            reporter
                .set_not_serving::<pb::serve_server::ServeServer<grpc::Service>>()
                .await;
            shutdown_hub.shutdown();
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some(identity) = tls {
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .context("the TLS certificate and key")?;
        }
        let check = |g: access::Gate| move |r| g.check(r);
        builder
            .add_service(tonic::service::interceptor::InterceptedService::new(
                health,
                check(gate.clone()),
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                reflection,
                check(gate.clone()),
            ))
            .add_service(pb::serve_server::ServeServer::with_interceptor(
                service,
                check(gate.clone()),
            ))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .context("the gRPC server failed")?;
        let e = warm_error.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok::<_, anyhow::Error>(e)
    });
    hub.shutdown();
    let report = runner
        .join()
        .map_err(|_| anyhow::anyhow!("the graph thread panicked"))?;
    if let Some(e) = served? {
        eprintln!("vidflow serve: error: the warm-up frame failed, so the graph cannot serve: {e}");
        return Ok(ExitCode::from(2));
    }
    match report.failure {
        Some(f) => {
            eprintln!("vidflow serve: error: {f}");
            Ok(ExitCode::from(2))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Ctrl-C or SIGTERM.
async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
