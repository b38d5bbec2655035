//! Prometheus text at `GET /metrics` (exposition format 0.0.4, written by hand): the sessions
//! (holding a slot, admitted, refused, failed), frames out in all and per live session, and
//! the latency of frames through the server and the late ones ([`Latency`]), and per node the
//! batch-size histogram, batches that mixed sessions, items in and out and busy time. Node
//! counters are the executor's, at most a progress tick (0.1 s) old. `GET /live` answers 200
//! while the process runs, `GET /ready` 200 once the warm-up frame has gone through the graph
//! (503 before). With a token (`--token-file`) every path needs `Authorization: Bearer`.

use super::LiveNodes;
use super::access::Gate;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vidflow_engine::exec::stats::BATCH_BUCKETS;
use vidflow_engine::session::SessionHub;

/// Upper bounds of the frame latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 1.0, 2.5, 5.0,
];

/// The server's latency of each frame it sends back: from the moment the last input it needs
/// arrived (a frames session: the frame; lip sync: the audio that completes its mel window) to
/// the moment it leaves for its client; a frame later than `late_after` is counted as late.
pub struct Latency {
    /// Per bucket (and one past the last for +Inf), not cumulative.
    buckets: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
    late: AtomicU64,
    late_after: Duration,
}

impl Latency {
    pub fn new(late_after: Duration) -> Latency {
        Latency {
            buckets: (0..=LATENCY_BUCKETS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
            late: AtomicU64::new(0),
            late_after,
        }
    }
    pub fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        if d > self.late_after {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    hub: Arc<SessionHub>,
    live: LiveNodes,
    latency: Arc<Latency>,
    ready: Arc<AtomicBool>,
    gate: Gate,
) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let (hub, live, ready, gate) = (hub.clone(), live.clone(), ready.clone(), gate.clone());
        let latency = latency.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // The request line and headers (a GET has no body).
            while n < buf.len() {
                match conn.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let authorization = head.lines().skip(1).find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("authorization")
                    .then(|| value.trim().as_bytes())
            });
            let (status, body) = match path {
                _ if !gate.allows(authorization) => (
                    "401 Unauthorized",
                    "send the header `Authorization: Bearer <token>`\n".to_string(),
                ),
                "/metrics" => ("200 OK", render(&hub, &live, &latency)),
                "/live" => ("200 OK", "ok\n".to_string()),
                "/ready" if ready.load(Ordering::SeqCst) => ("200 OK", "ready\n".to_string()),
                "/ready" => (
                    "503 Service Unavailable",
                    "warming up: the models load and run one frame first\n".to_string(),
                ),
                _ => (
                    "404 Not Found",
                    "try /metrics, /live or /ready\n".to_string(),
                ),
            };
            let auth = if status.starts_with("401") {
                "WWW-Authenticate: Bearer\r\n"
            } else {
                ""
            };
            let response = format!(
                "HTTP/1.1 {status}\r\n{auth}Content-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
        });
    }
}

/// A histogram's lines after its name: cumulative `_bucket`s for the upper `bounds` (and
/// +Inf, the count past the last) from per-bucket `counts`, then `_sum` and `_count`, each with
/// `labels` (`node="sr"`, or none).
fn histogram<B: ToString>(
    labels: &str,
    bounds: &[B],
    counts: &[u64],
    sum: String,
    count: u64,
) -> Vec<(String, String)> {
    let with = |extra: &str| match (labels.is_empty(), extra.is_empty()) {
        (true, true) => String::new(),
        (true, false) => format!("{{{extra}}}"),
        (false, true) => format!("{{{labels}}}"),
        (false, false) => format!("{{{labels},{extra}}}"),
    };
    let mut lines = vec![];
    let mut cumulative = 0;
    for (i, c) in counts.iter().enumerate() {
        cumulative += c;
        let le = bounds.get(i).map_or("+Inf".to_string(), |b| b.to_string());
        lines.push((
            format!("_bucket{}", with(&format!("le=\"{le}\""))),
            cumulative.to_string(),
        ));
    }
    lines.push((format!("_sum{}", with("")), sum));
    lines.push((format!("_count{}", with("")), count.to_string()));
    lines
}

fn render(hub: &SessionHub, live: &LiveNodes, latency: &Latency) -> String {
    let s = hub.stats();
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in lines {
            let _ = writeln!(o, "{name}{labels} {value}");
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    metric(
        "vidflow_serve_sessions",
        "gauge",
        "Sessions holding a slot now.",
        &one(s.active.to_string()),
    );
    metric(
        "vidflow_serve_max_sessions",
        "gauge",
        "Sessions admitted at once (serve.max_sessions).",
        &one(s.max_sessions.to_string()),
    );
    metric(
        "vidflow_serve_sessions_admitted_total",
        "counter",
        "Sessions admitted.",
        &one(s.admitted.to_string()),
    );
    metric(
        "vidflow_serve_sessions_rejected_total",
        "counter",
        "Sessions refused with RESOURCE_EXHAUSTED.",
        &one(s.rejected.to_string()),
    );
    metric(
        "vidflow_serve_sessions_failed_total",
        "counter",
        "Sessions ended by a node error on their items.",
        &one(s.failed.to_string()),
    );
    metric(
        "vidflow_serve_frames_out_total",
        "counter",
        "Frames sent back to sessions.",
        &one(s.items_out.to_string()),
    );
    metric(
        "vidflow_serve_session_frames_out",
        "gauge",
        "Frames sent back, per live session.",
        &s.items_out_per_session
            .iter()
            .map(|(id, n)| (format!("{{session=\"{}\"}}", id.0), n.to_string()))
            .collect::<Vec<_>>(),
    );
    let counts: Vec<u64> = latency
        .buckets
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    let lat = histogram(
        "",
        &LATENCY_BUCKETS,
        &counts,
        (latency.sum_us.load(Ordering::Relaxed) as f64 / 1e6).to_string(),
        latency.count.load(Ordering::Relaxed),
    );
    metric(
        "vidflow_serve_frame_latency_seconds",
        "histogram",
        "From a frame's last input arriving (lip sync: the audio completing its window) to the frame leaving the server.",
        &lat,
    );
    metric(
        "vidflow_serve_late_frames_total",
        "counter",
        &format!(
            "Frames whose latency exceeded {} ms (--late-ms).",
            latency.late_after.as_millis()
        ),
        &one(latency.late.load(Ordering::Relaxed).to_string()),
    );
    let nodes = live.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut hist = vec![];
    for n in nodes.iter().filter(|n| n.batches > 0) {
        hist.extend(histogram(
            &format!("node=\"{}\"", n.id),
            &BATCH_BUCKETS,
            &n.batch_sizes,
            n.batch_items.to_string(),
            n.batches,
        ));
    }
    metric(
        "vidflow_batch_size",
        "histogram",
        "Items per batch formed on a node's batched input.",
        &hist,
    );
    let per_node = |f: fn(&vidflow_engine::exec::NodeReport) -> u64| {
        nodes
            .iter()
            .map(|n| (format!("{{node=\"{}\"}}", n.id), f(n).to_string()))
            .collect::<Vec<_>>()
    };
    metric(
        "vidflow_batch_mixed_sessions_total",
        "counter",
        "Batches that held items of more than one session.",
        &per_node(|n| n.mixed_batches),
    );
    metric(
        "vidflow_node_items_in_total",
        "counter",
        "Items a node took in.",
        &per_node(|n| n.items_in),
    );
    metric(
        "vidflow_node_items_out_total",
        "counter",
        "Items a node emitted.",
        &per_node(|n| n.items_out),
    );
    metric(
        "vidflow_node_busy_seconds_total",
        "counter",
        "Time a node spent in its own code (for a model node: model time), all replicas.",
        &nodes
            .iter()
            .map(|n| {
                (
                    format!("{{node=\"{}\"}}", n.id),
                    n.busy.as_secs_f64().to_string(),
                )
            })
            .collect::<Vec<_>>(),
    );
    o
}
