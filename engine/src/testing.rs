//! A harness to unit-test a node kind without a graph file or a run (cargo feature
//! `testing`): give it the kind and some params, and it checks them as `vidflow check` would
//! (types and ranges, required params, the kind's typed params and its own rules), builds the
//! node, and lets a test call `process`, `finish` or a source's `run` directly and look at what
//! came out on which port.
//!
//! ```
//! use vidflow_engine::testing::NodeTest;
//! use vidflow_engine::{NodeKind, Payload, PortType, Process, Runtime, Input, Emitter, NodeError};
//! use std::sync::Arc;
//!
//! struct Echo;
//! impl Process for Echo {
//!     fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
//!         for item in input.items {
//!             out.emit(0, item)?;
//!         }
//!         Ok(())
//!     }
//! }
//! let kind = NodeKind::new("echo", "Passes items on.", |_| Ok(Runtime::Process(Box::new(Echo))))
//!     .input("items", PortType::ANY, "anything")
//!     .output("items", PortType::ANY, "the same");
//! let mut node = NodeTest::new(&kind).build().unwrap();
//! let out = node.process("items", vec![Payload::Record(Arc::new(serde_json::json!({"n": 1})))]).unwrap();
//! assert_eq!(out.on("items").len(), 1);
//! ```

use crate::check::params::check_type;
use crate::diag::Span;
use crate::load::yaml::Yv;
use crate::node::emit::{Io, Outbox};
use crate::node::session::Msg;
use crate::node::{
    BuildCtx, Emitter, End, Input, NodeError, NodeKind, Params, Problem, ProblemAt, Runtime,
    Shared, ValidateCtx,
};
use crate::payload::{Payload, PixelFormat};
use serde_json::Value;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// A node kind with params and wiring, ready to be checked and built.
pub struct NodeTest {
    kind: NodeKind,
    params: Params,
    connected_inputs: Vec<bool>,
    output_consumers: Vec<usize>,
    output_formats: Vec<PixelFormat>,
    replica: usize,
    workers: usize,
    shared: Shared,
}

impl NodeTest {
    /// The kind with its default params, every input connected and one consumer per output.
    pub fn new(kind: &NodeKind) -> NodeTest {
        let mut values = serde_json::Map::new();
        for p in &kind.params {
            if let Some(d) = &p.default {
                values.insert(p.name.to_string(), d.clone());
            }
        }
        NodeTest {
            kind: kind.clone(),
            params: Params {
                node: "test".into(),
                values,
            },
            connected_inputs: vec![true; kind.inputs.len()],
            output_consumers: vec![1; kind.outputs.len()],
            output_formats: vec![PixelFormat::Rgb24; kind.outputs.len()],
            replica: 0,
            workers: 1,
            shared: Shared::default(),
        }
    }
    /// Sets a param (as a graph file's `params:` would).
    pub fn param(mut self, name: &str, value: impl Into<Value>) -> NodeTest {
        self.params.values.insert(name.to_string(), value.into());
        self
    }
    /// Leaves input `port` unconnected (or connects it again).
    pub fn connected(mut self, port: &str, connected: bool) -> NodeTest {
        let i = self.input(port);
        self.connected_inputs[i] = connected;
        self
    }
    /// Makes output `port` emit frames in `format`, as a plan would where every consumer
    /// accepts it.
    pub fn output_format(mut self, port: &str, format: PixelFormat) -> NodeTest {
        let i = self.kind.output_index(port).expect("no such output");
        self.output_formats[i] = format;
        self
    }
    /// Builds it as replica `replica` of `workers`.
    pub fn replica(mut self, replica: usize, workers: usize) -> NodeTest {
        self.replica = replica;
        self.workers = workers;
        self
    }
    /// The run-wide shared objects the node will see (e.g. a compute device put there first).
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Everything `vidflow check` would say about the node's params and wiring.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = vec![];
        for (name, value) in &self.params.values {
            match self.kind.param_spec(name) {
                None => problems.push(Problem::param(
                    name,
                    format!("node kind `{}` has no param `{name}`", self.kind.name),
                )),
                Some(spec) => {
                    if let Err(msg) = check_type(&spec.ty, &Yv::from_json(Span::default(), value)) {
                        problems.push(Problem::param(name, msg));
                    }
                }
            }
        }
        for p in self.kind.params.iter().filter(|p| p.required) {
            if !self.params.values.contains_key(p.name) {
                problems.push(Problem::param(p.name, format!("needs param `{}`", p.name)));
            }
        }
        if !problems.is_empty() {
            return problems;
        }
        if let Some(Err(e)) = self.kind.typed.map(|t| t(&self.params)) {
            return vec![Problem::param("", e.to_string())];
        }
        match &self.kind.validator {
            Some(validate) => validate(&ValidateCtx {
                node_id: &self.params.node,
                params: &self.params,
                connected_inputs: &self.connected_inputs,
                output_consumers: &self.output_consumers,
            }),
            None => vec![],
        }
    }

    /// Checks, then builds the node as a run would (setup included: weights load here).
    pub fn build(&self) -> Result<TestNode, NodeError> {
        if let Some(p) = self.check().into_iter().next() {
            let at = match &p.at {
                ProblemAt::Param { name, .. } => format!("param `{name}`"),
                ProblemAt::Input(port) => format!("input `{port}`"),
            };
            return Err(NodeError::input(format!("{at}: {}", p.message)));
        }
        let Some(factory) = &self.kind.factory else {
            return Err(self.kind.not_built(&self.params.node));
        };
        let runtime = factory(&BuildCtx {
            node_id: &self.params.node,
            params: &self.params,
            connected_inputs: self.connected_inputs.clone(),
            output_consumers: self.output_consumers.clone(),
            output_formats: self.output_formats.clone(),
            replica: self.replica,
            batch: self.kind.default_batch,
            workers: self.workers,
            shared: &self.shared,
        })?;
        Ok(TestNode {
            kind: self.kind.clone(),
            node: self.params.node.clone(),
            runtime,
            io: TestIo::default(),
        })
    }

    fn input(&self, port: &str) -> usize {
        self.kind
            .input_index(port)
            .unwrap_or_else(|| panic!("node kind `{}` has no input `{port}`", self.kind.name))
    }
}

/// A built node: call it as the executor would.
pub struct TestNode {
    kind: NodeKind,
    node: String,
    runtime: Runtime,
    io: TestIo,
}

impl TestNode {
    /// One `process` call with `items` on input `port` (a batch when more than one).
    pub fn process(&mut self, port: &str, items: Vec<Payload>) -> Result<Outputs, NodeError> {
        let index = self
            .kind
            .input_index(port)
            .unwrap_or_else(|| panic!("node kind `{}` has no input `{port}`", self.kind.name));
        let Runtime::Process(proc) = &mut self.runtime else {
            panic!("`{}` is a source; use `run`", self.kind.name);
        };
        let input = match items.len() {
            1 => Input::one(index, items.into_iter().next().expect("one item")),
            _ => Input::batch(index, items),
        };
        let mut buf = Outbox::default();
        let n = self.kind.outputs.len();
        proc.process(
            input,
            &mut Emitter::buffer(&mut buf, &self.io, n, &self.node),
        )?;
        let mut out = vec![];
        buf.deliver(|port, msg| {
            if let Msg::Item(item, _) = msg {
                out.push((port, item));
            }
        });
        Ok(Outputs::new(&self.kind, out))
    }

    /// `finish` after a complete stream (`End::Complete`) or a stopped one.
    pub fn finish(&mut self, end: End) -> Result<Outputs, NodeError> {
        let Runtime::Process(proc) = &mut self.runtime else {
            panic!("`{}` is a source; use `run`", self.kind.name);
        };
        let n = self.kind.outputs.len();
        proc.finish(&mut Emitter::direct(&self.io, n, &self.node), end)?;
        Ok(self.io.take(&self.kind))
    }

    /// A source's whole run.
    pub fn run(&mut self) -> Result<Outputs, NodeError> {
        let Runtime::Source(src) = &mut self.runtime else {
            panic!("`{}` takes inputs; use `process`", self.kind.name);
        };
        let n = self.kind.outputs.len();
        src.run(&mut Emitter::direct(&self.io, n, &self.node))?;
        Ok(self.io.take(&self.kind))
    }

    /// Makes the next emits return `NodeError::Stopped`, as when a run is stopping.
    pub fn stop(&self) {
        self.io.stopping.store(true, Relaxed);
    }

    /// The total the node announced for progress, if any.
    pub fn total(&self) -> Option<u64> {
        Some(self.io.total.load(Relaxed)).filter(|&n| n > 0)
    }
}

/// What a call emitted, in order, with the output port of each item.
#[derive(Debug)]
pub struct Outputs {
    names: Vec<&'static str>,
    pub items: Vec<(usize, Payload)>,
}

impl Outputs {
    fn new(kind: &NodeKind, items: Vec<(usize, Payload)>) -> Outputs {
        Outputs {
            names: kind.outputs.iter().map(|p| p.name).collect(),
            items,
        }
    }
    /// The items emitted on output `port`.
    pub fn on(&self, port: &str) -> Vec<&Payload> {
        let i = self
            .names
            .iter()
            .position(|n| *n == port)
            .unwrap_or_else(|| panic!("no output `{port}` (outputs: {:?})", self.names));
        self.items
            .iter()
            .filter(|(p, _)| *p == i)
            .map(|(_, item)| item)
            .collect()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The harness's side of the emitter: everything sent is kept.
#[derive(Default)]
struct TestIo {
    sent: Mutex<Vec<(usize, Payload)>>,
    stopping: AtomicBool,
    total: AtomicU64,
}

impl TestIo {
    fn take(&self, kind: &NodeKind) -> Outputs {
        let items = std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()));
        Outputs::new(kind, items)
    }
}

impl Io for TestIo {
    fn stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }
    fn send(&self, port: usize, msg: Msg) -> bool {
        if let Msg::Item(item, _) = msg {
            self.sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((port, item));
        }
        true
    }
    fn broadcast(&self, _msg: Msg) -> bool {
        true
    }
    fn set_total(&self, n: u64) {
        self.total.store(n, Relaxed);
    }
    fn set_port_total(&self, _port: usize, _n: u64) {}
    fn set_work(&self, _done: u64, _total: u64) {}
}
