//! Progress while a graph runs, and the summary after it: indicatif bars (one per node, with
//! items, rate and ETA when the total is known), plain periodic lines when stderr is not a
//! terminal, JSON events (one per line) for other programs, or nothing. The summary table puts
//! busy time next to time blocked on input and on output, so the bottleneck can be read off.

use crate::exec::{NodeReport, ProgressSink, RunReport};
use crate::plan::Plan;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

/// Whether stderr carries JSON events only (`--progress json`): then every line there,
/// including what nodes say and the errors at the end, is one JSON object.
static JSON_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every later [`say`] (and the CLI's own messages) a JSON event; set once, before a run.
pub fn set_json_stderr(on: bool) {
    JSON_STDERR.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub fn json_stderr() -> bool {
    JSON_STDERR.load(std::sync::atomic::Ordering::Relaxed)
}

/// A line for the person running vidflow (a node's summary, a warning, the device it opened):
/// printed on stderr as it is, or as `{"event": "message", "text": …}` when stderr carries
/// JSON events (with `"level": "warning"` for a line that starts with `warning: `).
pub fn say(line: impl std::fmt::Display) {
    let line = line.to_string();
    if json_stderr() {
        match line.strip_prefix("warning: ") {
            Some(text) => emit(json!({"event": "message", "level": "warning", "text": text})),
            None => emit(json!({"event": "message", "level": "info", "text": line})),
        }
    } else {
        eprintln!("{line}");
    }
}

/// An error that ends the run, as the last line on stderr: `error: …`, or
/// `{"event": "error", "message": …}` when stderr carries JSON events.
pub fn say_error(message: impl std::fmt::Display) {
    if json_stderr() {
        emit(json!({"event": "error", "message": message.to_string()}));
    } else {
        eprintln!("error: {message}");
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    Bars,
    Plain,
    Json,
    None,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "bars" => Ok(Mode::Bars),
            "plain" => Ok(Mode::Plain),
            "json" => Ok(Mode::Json),
            "none" => Ok(Mode::None),
            _ => Err(format!(
                "unknown progress mode `{s}` (auto, bars, plain, json, none)"
            )),
        }
    }
}

/// The progress sink for a mode; `Auto` picks bars when stderr is a terminal.
pub fn sink(mode: Mode) -> Box<dyn ProgressSink> {
    use std::io::IsTerminal;
    match mode {
        Mode::Auto if std::io::stderr().is_terminal() => Box::new(Bars::default()),
        Mode::Auto | Mode::Plain => Box::new(Plain::new(Duration::from_secs(2))),
        Mode::Bars => Box::new(Bars::default()),
        Mode::Json => Box::new(Json::default()),
        Mode::None => Box::new(crate::exec::NoProgress),
    }
}

/// Items a node has handled: what it emitted, or for a sink what it consumed.
fn done_items(n: &NodeReport, is_sink: bool) -> u64 {
    if is_sink { n.items_in } else { n.items_out }
}

/// Each node's expected total: its own if it declared one; else, for a sink (whose progress
/// is what it consumed), the sum over all its inputs, and for another node what the input it
/// [counts like](crate::node::NodeKind::counts_like) brings (by default its first). An input brings what its upstream announced for that port, else the
/// upstream's total.
fn totals(graph: &Plan, nodes: &[NodeReport]) -> Vec<Option<u64>> {
    let mut totals: Vec<Option<u64>> = nodes.iter().map(|n| n.total).collect();
    for &i in &graph.order {
        if totals[i].is_some() {
            continue;
        }
        let brings = |e: &crate::plan::PlanEdge, totals: &[Option<u64>]| {
            let (from, port) = e.from;
            nodes[from]
                .port_totals
                .iter()
                .find(|&&(p, _)| p == port)
                .map(|&(_, n)| n)
                .or(totals[from])
        };
        let mut inputs = graph.edges.iter().filter(|e| e.to.0 == i).peekable();
        if inputs.peek().is_none() {
            continue;
        }
        let kind = &graph.nodes[i].kind;
        totals[i] = if kind.outputs.is_empty() {
            inputs.map(|e| brings(e, &totals)).sum()
        } else if let Some(port) = kind.counts_like {
            let port = kind.inputs.iter().position(|p| p.name == port);
            inputs
                .find(|e| Some(e.to.1) == port)
                .and_then(|e| brings(e, &totals))
        } else {
            inputs.next().and_then(|e| brings(e, &totals))
        };
    }
    totals
}

struct Layout {
    graph: Plan,
    sinks: Vec<bool>,
}

impl Layout {
    fn new(graph: &Plan) -> Layout {
        Layout {
            sinks: graph
                .nodes
                .iter()
                .map(|n| n.kind.outputs.is_empty())
                .collect(),
            graph: graph.clone(),
        }
    }
}

/// One indicatif bar per node.
#[derive(Default)]
pub struct Bars {
    multi: Option<MultiProgress>,
    bars: Vec<ProgressBar>,
    layout: Option<Layout>,
}

impl ProgressSink for Bars {
    fn start(&mut self, graph: &Plan) {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let width = graph.nodes.iter().map(|n| n.id.len()).max().unwrap_or(4);
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:>{width}}} [{{bar:30.cyan/blue}}] {{pos:>7}}/{{len:7}} {{rate:>10}} eta {{eta:>4}} {{msg}}"
        ))
        .expect("valid template")
        .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1}/s", state.per_sec());
        })
        .progress_chars("=> ");
        self.bars = graph
            .nodes
            .iter()
            .map(|n| {
                let bar = multi.add(ProgressBar::new(0).with_style(style.clone()));
                bar.set_prefix(n.id.clone());
                bar
            })
            .collect();
        self.multi = Some(multi);
        self.layout = Some(Layout::new(graph));
    }
    fn tick(&mut self, nodes: &[NodeReport], _elapsed: Duration) {
        let Some(layout) = &self.layout else { return };
        let totals = totals(&layout.graph, nodes);
        for (i, (bar, n)) in self.bars.iter().zip(nodes).enumerate() {
            let pos = done_items(n, layout.sinks[i]);
            bar.set_length(totals[i].unwrap_or(pos).max(pos));
            bar.set_position(pos);
            let mut msg = vec![];
            if let Some((done, total)) = n.work {
                msg.push(format!("call {done}/{total}"));
            }
            if n.skipped > 0 {
                msg.push(format!("{} skipped", n.skipped));
            }
            bar.set_message(msg.join(", "));
        }
    }
    fn finish(&mut self, report: &RunReport) {
        self.tick(&report.nodes, report.elapsed);
        for bar in &self.bars {
            bar.abandon();
        }
    }
}

/// A line on stderr every `every`, for logs and CI.
pub struct Plain {
    every: Duration,
    last: Instant,
    layout: Option<Layout>,
}

impl Plain {
    pub fn new(every: Duration) -> Plain {
        Plain {
            every,
            last: Instant::now(),
            layout: None,
        }
    }
}

impl ProgressSink for Plain {
    fn start(&mut self, graph: &Plan) {
        self.layout = Some(Layout::new(graph));
        self.last = Instant::now();
    }
    fn tick(&mut self, nodes: &[NodeReport], elapsed: Duration) {
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let Some(layout) = &self.layout else { return };
        let totals = totals(&layout.graph, nodes);
        let parts: Vec<String> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let pos = done_items(n, layout.sinks[i]);
                let rate = pos as f64 / elapsed.as_secs_f64().max(1e-9);
                let work = n
                    .work
                    .map(|(d, t)| format!(" [call {d}/{t}]"))
                    .unwrap_or_default();
                match totals[i] {
                    Some(t) => format!("{} {pos}/{t} ({rate:.1}/s){work}", n.id),
                    None => format!("{} {pos} ({rate:.1}/s){work}", n.id),
                }
            })
            .collect();
        eprintln!("[{:>7.1}s] {}", elapsed.as_secs_f64(), parts.join(" | "));
    }
}

/// One JSON object per line on stderr: `start`, `progress` (every half second, and once more
/// with the final counts), `end`.
#[derive(Default)]
pub struct Json {
    last: Option<Instant>,
    layout: Option<Layout>,
}

fn emit(v: serde_json::Value) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{v}");
}

impl ProgressSink for Json {
    fn start(&mut self, graph: &Plan) {
        self.layout = Some(Layout::new(graph));
        let nodes: Vec<_> = graph
            .nodes
            .iter()
            .map(|n| json!({"id": n.id, "kind": n.kind.name, "workers": n.workers}))
            .collect();
        emit(json!({"event": "start", "graph": graph.name, "nodes": nodes}));
    }
    fn tick(&mut self, nodes: &[NodeReport], elapsed: Duration) {
        if self
            .last
            .is_some_and(|l| l.elapsed() < Duration::from_millis(500))
        {
            return;
        }
        self.last = Some(Instant::now());
        let Some(layout) = &self.layout else { return };
        let totals = totals(&layout.graph, nodes);
        let secs = elapsed.as_secs_f64().max(1e-9);
        let nodes: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let items = done_items(n, layout.sinks[i]);
                let mut v = json!({"id": n.id, "items": items, "total": totals[i], "per_sec": (items as f64 / secs * 10.0).round() / 10.0, "done": n.done});
                if let Some((done, total)) = n.work {
                    v["work"] = json!({"done": done, "total": total});
                }
                v
            })
            .collect();
        emit(
            json!({"event": "progress", "elapsed_s": (secs * 1000.0).round() / 1000.0, "nodes": nodes}),
        );
    }
    fn finish(&mut self, report: &RunReport) {
        // A last `progress` with the final counts and totals, however soon after the previous
        // one: a run shorter than the half-second throttle would otherwise end on a snapshot
        // taken before the source announced its totals.
        self.last = None;
        self.tick(&report.nodes, report.elapsed);
        emit(json!({
            "event": "end",
            "ok": report.ok(),
            "interrupted": report.interrupted,
            "elapsed_s": report.elapsed.as_secs_f64(),
            "failure": report.failure.as_ref().map(|f| f.to_string()),
            "nodes": report.nodes,
        }));
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// The per-node table printed after a run.
pub fn summary(report: &RunReport) -> String {
    let header = [
        "node", "kind", "in", "out", "batches", "mean", "busy", "wait in", "wait out", "skipped",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for n in &report.nodes {
        let id = if n.workers > 1 {
            format!("{} ×{}", n.id, n.workers)
        } else {
            n.id.clone()
        };
        rows.push(vec![
            id,
            n.kind.clone(),
            n.items_in.to_string(),
            n.items_out.to_string(),
            if n.batches > 0 {
                n.batches.to_string()
            } else {
                "-".into()
            },
            n.mean_batch()
                .map(|m| format!("{m:.2}"))
                .unwrap_or_else(|| "-".into()),
            secs(n.busy),
            secs(n.wait_in),
            secs(n.wait_out),
            n.skipped.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c < 2 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        let _ = writeln!(s, "{}", line.join("  ").trim_end());
    }
    for n in &report.nodes {
        if n.skipped > 0 {
            let _ = writeln!(
                s,
                "{}: skipped {} item{}:",
                n.id,
                n.skipped,
                if n.skipped == 1 { "" } else { "s" }
            );
            for item in &n.skipped_items {
                let _ = writeln!(s, "  - {item}");
            }
            if n.skipped as usize > n.skipped_items.len() {
                let _ = writeln!(
                    s,
                    "  … and {} more",
                    n.skipped as usize - n.skipped_items.len()
                );
            }
        }
        if n.retries > 0 {
            let _ = writeln!(
                s,
                "{}: {} retried call{}",
                n.id,
                n.retries,
                if n.retries == 1 { "" } else { "s" }
            );
        }
        if n.dropped > 0 {
            let _ = writeln!(
                s,
                "{}: dropped {} item{} from full `drop_oldest` queues",
                n.id,
                n.dropped,
                if n.dropped == 1 { "" } else { "s" }
            );
        }
        if n.discarded > 0 {
            let _ = writeln!(
                s,
                "{}: {} queued item{} not processed because the run stopped",
                n.id,
                n.discarded,
                if n.discarded == 1 { "" } else { "s" }
            );
        }
    }
    let _ = writeln!(
        s,
        "{} in {:.2}s",
        if report.ok() {
            "finished"
        } else if report.interrupted {
            "interrupted"
        } else {
            "failed"
        },
        report.elapsed.as_secs_f64()
    );
    s
}
