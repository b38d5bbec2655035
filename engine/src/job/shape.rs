//! Whether a checked graph can be cut into chunks of its source's timeline, and how: the one
//! source that is cut, the frames of context a chunk must read on each side (from the kinds'
//! declared [`Temporal`] contexts, added up along the graph), the sources that only feed
//! audio (to nodes that read audio around each frame, or to sinks' whole inputs), and every
//! sink with the file it writes and the inputs it gets once at assembly. A graph that cannot
//! be cut gets one located diagnostic per reason, naming the node.
//!
//! Audio with context (lip sync's mel windows) comes from a source of its own, never from the
//! cut one: a chunk restricts that source to the chunk's time widened by the context, while
//! the cut source's frames stay the chunk's own. A node fed audio with context by the cut
//! source itself would see its audio end with the chunk's frames, so that is refused, with
//! the remedy (a second `decode` of the file).

use crate::check::CheckedGraph;
use crate::diag::Diagnostic;
use crate::node::{Temporal, ValidateCtx};
use crate::payload::PortType;
use std::path::PathBuf;

/// How a job cuts a graph.
#[derive(Clone, Debug)]
pub struct Shape {
    /// The node whose timeline is cut.
    pub source: usize,
    /// Frames of context each chunk reads before its first and after its last frame.
    pub before: u32,
    pub after: u32,
    pub sinks: Vec<SinkShape>,
    /// Sources that only feed audio, each restricted per chunk to the chunk's time plus its
    /// context (a source that only feeds sinks' whole inputs has none and is not read by
    /// chunks at all: its edges are dropped from them).
    pub audio: Vec<AudioSource>,
}

#[derive(Clone, Debug)]
pub struct SinkShape {
    pub node: usize,
    /// The file it writes (`None`: it writes none).
    pub output: Option<PathBuf>,
    /// Edges (indices into the graph's edges) that the assembly feeds once instead of each
    /// chunk.
    pub whole_edges: Vec<usize>,
}

/// A source that only feeds audio, and the most audio context its consumers read around a
/// frame (the largest of their [`Temporal::AudioMs`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AudioSource {
    pub node: usize,
    /// Milliseconds before and after.
    pub ms: (u32, u32),
    /// Frame durations before and after.
    pub frames: (u32, u32),
}

const CODE: &str = "not-chunkable";
const HELP: &str = "run the graph without `--job`, or change the node as said";

/// How much audio a node reads around each frame, for messages: "320 ms", "8 frames + 1 ms".
fn audio_context(ms: u32, frames: u32) -> String {
    match (frames, ms) {
        (0, ms) => format!("{ms} ms"),
        (f, 0) => format!("{f} frames"),
        (f, ms) => format!("{f} frames + {ms} ms"),
    }
}

/// Decides whether `g` can be cut into chunks.
pub fn analyse(g: &CheckedGraph) -> Result<Shape, Vec<Diagnostic>> {
    let mut diags = vec![];
    let not = |i: usize, message: String| {
        let n = &g.nodes[i];
        Diagnostic::error(CODE, message)
            .at(n.span, "a job cannot cut this node into chunks")
            .help(HELP)
    };
    let n = g.nodes.len();
    let mut connected: Vec<Vec<bool>> = g
        .nodes
        .iter()
        .map(|n| vec![false; n.kind.inputs.len()])
        .collect();
    let mut consumers: Vec<Vec<usize>> = g
        .nodes
        .iter()
        .map(|n| vec![0; n.kind.outputs.len()])
        .collect();
    for e in &g.edges {
        connected[e.to.0][e.to.1] = true;
        consumers[e.from.0][e.from.1] += 1;
    }
    let temporal: Vec<Option<Temporal>> = (0..n)
        .map(|i| {
            let node = &g.nodes[i];
            let cx = ValidateCtx {
                node_id: &node.id,
                params: &node.params,
                connected_inputs: &connected[i],
                output_consumers: &consumers[i],
            };
            node.kind.temporal.as_ref().map(|f| f(&cx))
        })
        .collect();
    let is_source = |i: usize| g.nodes[i].kind.is_source();
    let is_sink = |i: usize| !is_source(i) && consumers[i].iter().all(|&c| c == 0);
    // Inputs of a sink that the assembly feeds once.
    let whole_input = |(i, port): (usize, usize)| {
        is_sink(i)
            && g.nodes[i]
                .kind
                .chunk_sink
                .as_ref()
                .is_some_and(|s| s.whole_inputs().contains(&port))
    };
    // Audio read around each frame: an audio input of a node with audio context.
    let audio_input = |(i, port): (usize, usize)| {
        matches!(temporal[i], Some(Temporal::AudioMs { .. }))
            && g.nodes[i].kind.inputs[port].ty == PortType::AUDIO
    };

    // The source: exactly one whose timeline is cut; every other one only feeds audio.
    let all_sources: Vec<usize> = (0..n).filter(|&i| is_source(i)).collect();
    let audio_only = |s: usize| {
        let mut out = g.edges.iter().filter(|e| e.from.0 == s).peekable();
        out.peek().is_some() && out.all(|e| audio_input(e.to) || whole_input(e.to))
    };
    let (audio_sources, mut sources): (Vec<usize>, Vec<usize>) =
        all_sources.iter().partition(|&&s| audio_only(s));
    if sources.is_empty() {
        // No source of frames at all: each of them is said to be one too many below.
        sources = all_sources.clone();
    }
    let source = match sources.as_slice() {
        [s] => Some(*s),
        _ => {
            let names: Vec<String> = sources
                .iter()
                .map(|&i| format!("`{}`", g.nodes[i].id))
                .collect();
            for &s in sources.iter().skip(1) {
                diags.push(not(
                    s,
                    format!(
                        "a job cuts the timeline of one source, and this graph has {} ({})",
                        sources.len(),
                        names.join(", ")
                    ),
                ));
            }
            None
        }
    };
    if let Some(s) = source
        && g.nodes[s].kind.chunk_source.is_none()
    {
        diags.push(not(
            s,
            format!(
                "source `{}` ({}) has no timeline a job can cut; jobs cut a `decode` of a video file",
                g.nodes[s].id, g.nodes[s].kind.name
            ),
        ));
    }
    let mut audio = vec![];
    for &s in audio_sources.iter().filter(|&&s| Some(s) != source) {
        let node = &g.nodes[s];
        if node.kind.chunk_source.is_none() {
            diags.push(not(
                s,
                format!(
                    "source `{}` ({}) feeds audio that a job must restrict to each chunk's time, and it cannot be restricted; use a `decode`",
                    node.id, node.kind.name
                ),
            ));
        }
        let mut a = AudioSource {
            node: s,
            ..Default::default()
        };
        for e in g.edges.iter().filter(|e| e.from.0 == s) {
            if let Some(Temporal::AudioMs {
                before,
                after,
                frames_before,
                frames_after,
            }) = temporal[e.to.0]
            {
                a.ms = (a.ms.0.max(before), a.ms.1.max(after));
                a.frames = (a.frames.0.max(frames_before), a.frames.1.max(frames_after));
            }
        }
        audio.push(a);
    }

    // Context: each node's frames of context, added up along every path from the source.
    let order = topological(g);
    let mut ctx = vec![(0u32, 0u32); n];
    for &i in &order {
        let node = &g.nodes[i];
        let upstream = g
            .edges
            .iter()
            .filter(|e| e.to.0 == i)
            .map(|e| ctx[e.from.0])
            .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
        let own = match &temporal[i] {
            Some(Temporal::PerItem) => (0, 0),
            Some(Temporal::Frames { before, after }) => (*before, *after),
            Some(Temporal::AudioMs {
                before,
                after,
                frames_before,
                frames_after,
            }) => {
                // Its audio must come from a source of its own (see the module doc).
                for e in g.edges.iter().filter(|e| e.to.0 == i && audio_input(e.to)) {
                    let from = &g.nodes[e.from.0];
                    let why = if Some(e.from.0) == source {
                        format!(
                            "`{}`, the source whose frames the job cuts, so a chunk's audio would end with its frames; decode the audio with a second `decode` of the file (as graphs/lipsync.yaml does)",
                            from.id
                        )
                    } else if !audio_sources.contains(&e.from.0) {
                        format!(
                            "`{}`, which is not a source that only feeds audio; a job gives audio with context straight from a `decode`",
                            from.id
                        )
                    } else {
                        continue;
                    };
                    diags.push(not(
                        i,
                        format!(
                            "node `{}` ({}) needs {} of audio before and {} after each frame, and gets its audio from {why}",
                            node.id,
                            node.kind.name,
                            audio_context(*before, *frames_before),
                            audio_context(*after, *frames_after),
                        ),
                    ));
                }
                (0, 0)
            }
            Some(Temporal::Whole(why)) => {
                diags.push(not(
                    i,
                    format!(
                        "node `{}` ({}) needs the whole stream: {why}",
                        node.id, node.kind.name
                    ),
                ));
                (0, 0)
            }
            None => {
                diags.push(not(i, format!(
                    "node `{}` ({}) does not declare its temporal context, so a job cannot tell whether chunk seams would change its output (a kind declares it with `NodeKind::temporal`)",
                    node.id, node.kind.name
                )));
                (0, 0)
            }
        };
        ctx[i] = (upstream.0 + own.0, upstream.1 + own.1);
    }

    // Sinks: every node none of whose outputs is consumed.
    let mut sinks = vec![];
    let (mut before, mut after) = (0, 0);
    for (i, node) in g.nodes.iter().enumerate() {
        if !is_sink(i) {
            continue;
        }
        before = before.max(ctx[i].0);
        after = after.max(ctx[i].1);
        let Some(sink) = &node.kind.chunk_sink else {
            diags.push(not(
                i,
                format!(
                    "node `{}` ({}) ends the graph but cannot write its results chunk by chunk",
                    node.id, node.kind.name
                ),
            ));
            continue;
        };
        let output = match sink.output(&node.params) {
            Ok(o) => o,
            Err(why) => {
                diags.push(not(
                    i,
                    format!("node `{}` ({}) {why}", node.id, node.kind.name),
                ));
                continue;
            }
        };
        let whole = sink.whole_inputs();
        let mut whole_edges = vec![];
        for (k, e) in g.edges.iter().enumerate() {
            if e.to.0 != i || !whole.contains(&e.to.1) {
                continue;
            }
            // The assembly reads it once from the source itself: the cut one, or one that
            // only feeds audio (lip sync's speech: the output's soundtrack).
            if Some(e.from.0) != source && !audio_sources.contains(&e.from.0) {
                diags.push(not(
                    i,
                    format!(
                        "input `{}` of node `{}` must come straight from a source in a job (the assembly copies it once from the source), not from `{}`",
                        node.kind.inputs[e.to.1].name, node.id, g.nodes[e.from.0].id
                    ),
                ));
            }
            whole_edges.push(k);
        }
        sinks.push(SinkShape {
            node: i,
            output,
            whole_edges,
        });
    }
    match source {
        Some(source) if diags.is_empty() => Ok(Shape {
            source,
            before,
            after,
            sinks,
            audio,
        }),
        _ => {
            diags.sort_by_key(|d| d.span);
            Err(diags)
        }
    }
}

/// Node indices with every producer before its consumers (the checker rejected cycles).
fn topological(g: &CheckedGraph) -> Vec<usize> {
    let mut graph = petgraph::graph::DiGraph::<usize, ()>::new();
    let idx: Vec<_> = (0..g.nodes.len()).map(|i| graph.add_node(i)).collect();
    for e in &g.edges {
        graph.add_edge(idx[e.from.0], idx[e.to.0], ());
    }
    petgraph::algo::toposort(&graph, None)
        .map(|o| o.into_iter().map(|i| graph[i]).collect())
        .unwrap_or_else(|_| (0..g.nodes.len()).collect())
}
