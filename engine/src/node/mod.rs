//! The node API, everything a node kind is written against: a [`NodeKind`] descriptor (name,
//! doc, typed ports, typed params with defaults, the cargo feature it needs, an example, its
//! own validation rules) plus a factory that builds the runtime node ([`Source`] or
//! [`Process`]) from checked params, and the [`Emitter`] it hands its outputs to. Everything
//! the checker needs is in the descriptor, so config-time checks never load a model or open a
//! file. This module is a leaf: it knows the payload types and the graph config types, never
//! the loader, checker or executor.

pub mod chunk;
pub mod emit;
pub mod params;
pub mod session;

pub use crate::config::BatchConfig;
pub use crate::error::NodeError;
pub use chunk::{ChunkPiece, ChunkSink, ChunkSource, Temporal, TemporalFn, Timeline, WholeInput};
pub use emit::{Emitter, End, Input, Items, WorkMeter};
pub use params::{NodeParams, ParamSpec, ParamType, Params};
pub use session::{SessionId, SessionState, SessionStore, SessionTags, SessionUse};

use crate::payload::{PixelFormat, PortType};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A declared input or output port.
#[derive(Clone, Debug)]
pub struct PortSpec {
    pub name: &'static str,
    pub ty: PortType,
    pub doc: &'static str,
    /// Inputs only: the graph is invalid when it is left unconnected.
    pub required: bool,
    /// Frame ports: the pixel formats an input accepts, or an output can produce in its order
    /// of preference; RGB24 is always among them (see [`PixelFormat`]).
    pub formats: &'static [PixelFormat],
}

/// What a port takes or makes unless its kind says otherwise.
const RGB_ONLY: &[PixelFormat] = &[PixelFormat::Rgb24];

/// Everything a factory gets to build a runtime node.
pub struct BuildCtx<'a> {
    pub node_id: &'a str,
    pub params: &'a Params,
    /// For each declared input port, whether the graph connects it.
    pub connected_inputs: Vec<bool>,
    /// For each declared output port, how many consumers it has.
    pub output_consumers: Vec<usize>,
    /// For each declared output port, the pixel format the plan negotiated for its frames
    /// (RGB24 unless the port offers others and every consumer accepts one of them).
    pub output_formats: Vec<PixelFormat>,
    /// Which replica this is (0-based) when the node has `workers: N`.
    pub replica: usize,
    /// The batching of the node's batched input, as the graph sets it (or the kind's
    /// default): a node that forms batches of its own (across sessions) uses the same limits.
    pub batch: Option<crate::config::BatchConfig>,
    pub workers: usize,
    /// Run-wide shared objects (the compute device, caches…), created once per run.
    pub shared: &'a Shared,
}

impl BuildCtx<'_> {
    /// The node's typed params (see [`params!`](crate::params)).
    pub fn params<P: NodeParams>(&self) -> Result<P, NodeError> {
        P::from_params(self.params)
    }
    /// The pixel format to emit frames in on output `port`.
    pub fn output_format(&self, port: usize) -> PixelFormat {
        self.output_formats
            .get(port)
            .copied()
            .unwrap_or(PixelFormat::Rgb24)
    }
}

/// A run-wide map of shared objects keyed by type, so that every neural node of a run uses the
/// same device context.
#[derive(Default)]
pub struct Shared {
    map: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    keyed: Mutex<HashMap<(TypeId, String), Arc<Slot>>>,
}

/// One entry of [`Shared::keyed`]: the version it was made for and the value; its own lock, so
/// loading one model does not hold up nodes that load another.
type Slot = Mutex<Option<(String, Arc<dyn Any + Send + Sync>)>>;

impl Shared {
    /// The instance of `T` stored under `key` (e.g. a network under its weights file and
    /// options) for `version` (e.g. the file's size and modification time), made with `init`
    /// when there is none for that version, and whether it was already there. A `Shared` lives
    /// as long as a run, a job (all its chunks) or a worker (all the chunks it takes), so a
    /// model is loaded once for all of them, and replicas of a node share one copy; a new
    /// version replaces the old one, so a long-lived worker holds one copy per key. A failed
    /// `init` stores nothing.
    pub fn keyed<T: Any + Send + Sync, E>(
        &self,
        key: &str,
        version: &str,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<(Arc<T>, bool), E> {
        let slot = self
            .keyed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((TypeId::of::<T>(), key.to_string()))
            .or_default()
            .clone();
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, value)) = slot.as_ref()
            && v == version
        {
            return Ok((
                value.clone().downcast::<T>().expect("keyed by TypeId"),
                true,
            ));
        }
        let value = Arc::new(init()?);
        *slot = Some((version.to_string(), value.clone()));
        Ok((value, false))
    }

    /// Returns the run's instance of `T`, creating it with `init` on first use.
    pub fn get_or_try_init<T: Any + Send + Sync, E>(
        &self,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = map.get(&TypeId::of::<T>()) {
            return Ok(existing.clone().downcast::<T>().expect("keyed by TypeId"));
        }
        let value = Arc::new(init()?);
        map.insert(TypeId::of::<T>(), value.clone());
        Ok(value)
    }
    pub fn insert<T: Any + Send + Sync>(&self, value: T) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(TypeId::of::<T>(), Arc::new(value));
    }
}

/// A node with no inputs: produces items until done. `out.emit` returns `NodeError::Stopped`
/// when the run is stopping, so `?` ends the loop.
pub trait Source: Send {
    fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError>;
}

/// A node with inputs. `process` is called once per item, or once per batch on a batched input.
/// Outputs emitted during a call are delivered only when it succeeds, so a retried call never
/// duplicates output.
pub trait Process: Send {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError>;
    fn finish(&mut self, _out: &mut Emitter<'_>, _end: End) -> Result<(), NodeError> {
        Ok(())
    }
    /// The node's per-session state, for kinds declared [`SessionUse::PerSession`]: the
    /// executor opens a session's state at its start and drops it at its end (see
    /// [`session`]). `None` (the default): the node keeps no per-session state.
    fn session_state(&mut self) -> Option<&mut dyn SessionStore> {
        None
    }
    /// Called once after the last item of `session` (in a serve graph), before its state is
    /// dropped: emit what the node still holds for it. Outputs default to that session.
    fn end_session(
        &mut self,
        _session: SessionId,
        _out: &mut Emitter<'_>,
    ) -> Result<(), NodeError> {
        Ok(())
    }
}

pub enum Runtime {
    Source(Box<dyn Source>),
    Process(Box<dyn Process>),
}

pub type Factory = Arc<dyn Fn(&BuildCtx<'_>) -> Result<Runtime, NodeError> + Send + Sync>;

/// Parses checked params into a kind's typed params, keeping only whether that worked.
pub type TypedCheck = fn(&Params) -> Result<(), NodeError>;

/// A kind's own config-time rules (beyond param types and ranges), given everything the
/// checker knows about one node: each problem becomes a located `vidflow check` diagnostic.
pub type Validator = Arc<dyn Fn(&ValidateCtx<'_>) -> Vec<Problem> + Send + Sync>;

/// What a kind's validator sees of one node.
pub struct ValidateCtx<'a> {
    pub node_id: &'a str,
    pub params: &'a Params,
    /// For each declared input port, whether the graph connects it.
    pub connected_inputs: &'a [bool],
    /// For each declared output port, how many consumers it has.
    pub output_consumers: &'a [usize],
}

impl ValidateCtx<'_> {
    /// The typed params (`None` if they do not parse; the checker reports that itself).
    pub fn params<P: NodeParams>(&self) -> Option<P> {
        P::from_params(self.params).ok()
    }
}

/// One problem a validator found, located at a param's value (or a position inside it) or at
/// an input's connection.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub at: ProblemAt,
    pub message: String,
    pub help: Option<String>,
}

/// Where a [`Problem`] points.
#[derive(Clone, Debug, PartialEq)]
pub enum ProblemAt {
    /// A param's value; with a 1-based (line, column) inside its text (e.g. a shader error).
    Param {
        name: String,
        pos: Option<(u32, u32)>,
    },
    /// The connection of an input port.
    Input(String),
}

impl Problem {
    /// A problem with param `name`'s value.
    pub fn param(name: &str, message: impl Into<String>) -> Problem {
        Problem {
            at: ProblemAt::Param {
                name: name.to_string(),
                pos: None,
            },
            message: message.into(),
            help: None,
        }
    }
    /// A problem with the connection of input `port`.
    pub fn input(port: &str, message: impl Into<String>) -> Problem {
        Problem {
            at: ProblemAt::Input(port.to_string()),
            message: message.into(),
            help: None,
        }
    }
    pub fn help(mut self, help: impl Into<String>) -> Problem {
        self.help = Some(help.into());
        self
    }
    /// Points at a 1-based (line, column) inside the param's text.
    pub fn at_position(mut self, line: u32, col: u32) -> Problem {
        if let ProblemAt::Param { pos, .. } = &mut self.at {
            *pos = Some((line, col));
        }
        self
    }
}

/// A node kind: the descriptor and its factory.
#[derive(Clone)]
pub struct NodeKind {
    pub name: &'static str,
    pub doc: &'static str,
    pub inputs: Vec<PortSpec>,
    pub outputs: Vec<PortSpec>,
    pub params: Vec<ParamSpec>,
    /// A YAML snippet showing the node in a graph.
    pub example: &'static str,
    /// The input port that `batch:` applies to, and the batching used when the graph gives none.
    pub batch_port: Option<usize>,
    pub default_batch: Option<BatchConfig>,
    /// The cargo feature the kind's runtime needs (`media`, `neural`, `llm`), if any.
    pub feature: Option<&'static str>,
    pub validator: Option<Validator>,
    /// Parses checked params into the kind's typed params (kinds declared with `params!`),
    /// so a type that does not fit is a check-time error, not a run-time one.
    pub typed: Option<TypedCheck>,
    /// `None`: the kind's feature was not built in (see [`NodeKind::not_built`]).
    pub factory: Option<Factory>,
    /// Its temporal context, for jobs (`None`: undeclared, so a job will not cut it).
    pub temporal: Option<TemporalFn>,
    /// How a job restricts it to one chunk (sources whose timeline can be cut).
    pub chunk_source: Option<Arc<dyn ChunkSource>>,
    /// How a job writes its chunks and joins them (sinks).
    pub chunk_sink: Option<Arc<dyn ChunkSink>>,
    /// The input whose item count is this node's expected output count, for progress totals
    /// (`None`: the first input). audio-window makes one window per frame, whatever the
    /// audio brings.
    pub counts_like: Option<&'static str>,
    /// The `Path` params that name files the node writes; every other `Path` param names a
    /// file it reads. The checker refuses a graph that would write a file it reads.
    pub writes: Vec<&'static str>,
    /// How the kind treats sessions in a serve graph (`None`: undeclared; see
    /// [`NodeKind::session_use`]).
    pub sessions: Option<SessionUse>,
    /// (input, output) pairs the node forwards frames along unchanged, whatever their pixel
    /// format: the plan negotiates through them.
    pub passes: Vec<(usize, usize)>,
}

impl fmt::Debug for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKind")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NodeKind {
    pub fn new(
        name: &'static str,
        doc: &'static str,
        factory: impl Fn(&BuildCtx<'_>) -> Result<Runtime, NodeError> + Send + Sync + 'static,
    ) -> NodeKind {
        NodeKind {
            factory: Some(Arc::new(factory)),
            ..NodeKind::descriptor(name, doc)
        }
    }
    /// A kind whose runtime needs cargo feature `feature`: `factory` is `Some` when the
    /// feature was built in, else `None` and the node fails to start with one message that
    /// says how to rebuild.
    pub fn gated<F>(
        name: &'static str,
        doc: &'static str,
        feature: &'static str,
        factory: Option<F>,
    ) -> NodeKind
    where
        F: Fn(&BuildCtx<'_>) -> Result<Runtime, NodeError> + Send + Sync + 'static,
    {
        NodeKind {
            feature: Some(feature),
            factory: factory.map(|f| Arc::new(f) as Factory),
            ..NodeKind::descriptor(name, doc)
        }
    }
    fn descriptor(name: &'static str, doc: &'static str) -> NodeKind {
        NodeKind {
            name,
            doc,
            inputs: vec![],
            outputs: vec![],
            params: vec![],
            example: "",
            batch_port: None,
            default_batch: None,
            feature: None,
            validator: None,
            typed: None,
            factory: None,
            temporal: None,
            chunk_source: None,
            chunk_sink: None,
            counts_like: None,
            writes: vec![],
            sessions: None,
            passes: vec![],
        }
    }
    /// Whether this build can run the kind (its feature, if any, was built in).
    pub fn available(&self) -> bool {
        self.factory.is_some()
    }
    /// The error of a node whose kind's feature was not built in.
    pub fn not_built(&self, node_id: &str) -> NodeError {
        let feature = self.feature.unwrap_or("?");
        NodeError::input(format!(
            "node `{node_id}`: this vidflow was built without the `{feature}` feature, so `{}` cannot run; rebuild with `--features {feature}`",
            self.name
        ))
    }
    pub fn input(mut self, name: &'static str, ty: PortType, doc: &'static str) -> Self {
        self.inputs.push(PortSpec {
            name,
            ty,
            doc,
            required: true,
            formats: RGB_ONLY,
        });
        self
    }
    pub fn optional_input(mut self, name: &'static str, ty: PortType, doc: &'static str) -> Self {
        self.inputs.push(PortSpec {
            name,
            ty,
            doc,
            required: false,
            formats: RGB_ONLY,
        });
        self
    }
    pub fn output(mut self, name: &'static str, ty: PortType, doc: &'static str) -> Self {
        self.outputs.push(PortSpec {
            name,
            ty,
            doc,
            required: false,
            formats: RGB_ONLY,
        });
        self
    }
    /// Says that input `port` also accepts frames in `formats` (RGB24 always included): the
    /// node must then handle each of them.
    pub fn accepts(mut self, port: &str, formats: &'static [PixelFormat]) -> Self {
        let i = self.input_index(port);
        let p = &mut self.inputs[i.unwrap_or_else(|| panic!("{}: no input `{port}`", self.name))];
        assert!(
            formats.contains(&PixelFormat::Rgb24),
            "{}: every input takes RGB24",
            self.name
        );
        p.formats = formats;
        self
    }
    /// Says that output `port` can emit frames in `formats`, best first (RGB24 always
    /// included); the node emits the one [`BuildCtx::output_format`] names, or RGB24 (which
    /// every input takes) where that one would lose what its source has.
    pub fn offers(mut self, port: &str, formats: &'static [PixelFormat]) -> Self {
        let i = self.output_index(port);
        let p = &mut self.outputs[i.unwrap_or_else(|| panic!("{}: no output `{port}`", self.name))];
        assert!(
            formats.contains(&PixelFormat::Rgb24),
            "{}: every output can make RGB24",
            self.name
        );
        p.formats = formats;
        self
    }
    /// Says that the node forwards the frames of input `input` to output `output` as they
    /// are: the plan gives the input a format it takes (see [`NodeKind::accepts`]) that the
    /// output's consumers accept too.
    pub fn passes(mut self, input: &str, output: &str) -> Self {
        let pair = self.input_index(input).zip(self.output_index(output));
        let pair = pair.unwrap_or_else(|| panic!("{}: no port `{input}` or `{output}`", self.name));
        self.passes.push(pair);
        self
    }
    pub fn param(mut self, p: ParamSpec) -> Self {
        self.params.push(p);
        self
    }
    /// Declares the kind's params as the typed struct `P` (see [`params!`](crate::params)).
    pub fn params<P: NodeParams>(mut self) -> Self {
        self.params.extend(P::specs());
        self.typed = Some(|p| P::from_params(p).map(drop));
        self
    }
    pub fn example(mut self, yaml: &'static str) -> Self {
        self.example = yaml;
        self
    }
    /// Makes input `port` batchable; `default` is used when the graph sets no `batch:`.
    pub fn batched(mut self, port: &str, default: Option<BatchConfig>) -> Self {
        self.batch_port = self.inputs.iter().position(|p| p.name == port);
        assert!(
            self.batch_port.is_some(),
            "{}: batched port `{port}` is not declared",
            self.name
        );
        self.default_batch = default;
        self
    }
    /// The kind's own rules, checked by `vidflow check` with the node's params and wiring.
    pub fn check(
        mut self,
        f: impl Fn(&ValidateCtx<'_>) -> Vec<Problem> + Send + Sync + 'static,
    ) -> Self {
        self.validator = Some(Arc::new(f));
        self
    }
    /// Says that the `Path` param `param` names a file the node writes (not one it reads).
    pub fn writes(mut self, param: &'static str) -> Self {
        self.writes.push(param);
        self
    }
    /// Says that the node emits as many items as arrive on input `port` (progress totals).
    pub fn counts_like(mut self, port: &'static str) -> Self {
        self.counts_like = Some(port);
        self
    }
    /// Declares the kind's temporal context (what its output at time t depends on), so jobs
    /// know whether and how to cut it into chunks.
    pub fn temporal(self, t: Temporal) -> Self {
        self.temporal_with(move |_| t.clone())
    }
    /// The temporal context, decided by the node's params and wiring.
    pub fn temporal_with(
        mut self,
        f: impl Fn(&ValidateCtx<'_>) -> Temporal + Send + Sync + 'static,
    ) -> Self {
        self.temporal = Some(Arc::new(f));
        self
    }
    /// Makes the kind a source a job can cut (see [`ChunkSource`]).
    pub fn chunk_source(mut self, s: impl ChunkSource + 'static) -> Self {
        self.chunk_source = Some(Arc::new(s));
        self
    }
    /// Makes the kind a sink a job can cut (see [`ChunkSink`]).
    pub fn chunk_sink(mut self, s: impl ChunkSink + 'static) -> Self {
        self.chunk_sink = Some(Arc::new(s));
        self
    }
    /// Declares how the kind treats sessions in a serve graph (see [`session`]): stateless,
    /// or keeping one state per session through [`Process::session_state`].
    pub fn sessions(mut self, s: SessionUse) -> Self {
        self.sessions = Some(s);
        self
    }
    /// How a node of this kind treats sessions: as declared, else stateless when each output
    /// depends on one input item ([`Temporal::PerItem`]), else `None` (it may keep state
    /// across items that would mix sessions).
    pub fn session_use(&self, cx: &ValidateCtx<'_>) -> Option<SessionUse> {
        self.sessions.or_else(|| {
            let t = self.temporal.as_ref()?;
            (t(cx) == Temporal::PerItem).then_some(SessionUse::Stateless)
        })
    }
    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|p| p.name == name)
    }
    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|p| p.name == name)
    }
    pub fn param_spec(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
    pub fn is_source(&self) -> bool {
        self.inputs.is_empty()
    }
}
