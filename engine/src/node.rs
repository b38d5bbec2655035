//! The node API: a node kind is a [`NodeKind`] descriptor (name, doc, typed ports, typed params
//! with defaults, an example) plus a factory that builds the runtime node from checked params.
//! Everything the checker needs is in the descriptor, so config-time checks never load a model
//! or open a file.

use crate::exec::Emitter;
use crate::payload::{Payload, PortType};
use crate::yaml::{Yv, YvKind};
use serde_json::Value;
use smallvec::SmallVec;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A failure inside a node. `Input` is the user's input being wrong (missing file, unreadable
/// video, bad weights: exit code 1); `Runtime` is everything else (exit code 2).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Runtime(String),
    /// The run is stopping (Ctrl-C, another node failed, or every consumer is gone).
    #[error("stopped")]
    Stopped,
}

impl NodeError {
    pub fn input(msg: impl Into<String>) -> NodeError {
        NodeError::Input(msg.into())
    }
    pub fn runtime(msg: impl Into<String>) -> NodeError {
        NodeError::Runtime(msg.into())
    }
}

/// The type of a param, checked against the YAML value before anything runs.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamType {
    Bool,
    Int {
        min: Option<i64>,
        max: Option<i64>,
    },
    Float {
        min: Option<f64>,
        max: Option<f64>,
    },
    Str,
    /// A file or folder path (a string; existence is checked when the node starts).
    Path,
    Enum(Vec<&'static str>),
    List(Box<ParamType>),
    /// A single value (meaning "the same for all") or a list of values.
    OneOrList(Box<ParamType>),
    /// Anything; the node validates it itself.
    Json,
}

impl ParamType {
    pub fn int() -> ParamType {
        ParamType::Int {
            min: None,
            max: None,
        }
    }
    pub fn float() -> ParamType {
        ParamType::Float {
            min: None,
            max: None,
        }
    }
    pub fn list(of: ParamType) -> ParamType {
        ParamType::List(Box::new(of))
    }
    pub fn one_or_list(of: ParamType) -> ParamType {
        ParamType::OneOrList(Box::new(of))
    }

    /// Checks a value; the error says what was expected and what was found.
    pub fn check(&self, v: &Yv) -> Result<(), String> {
        let mismatch = || Err(format!("expected {self}, found {} `{v}`", v.type_name()));
        match (self, &v.v) {
            (ParamType::Json, _) => Ok(()),
            (ParamType::Bool, YvKind::Bool(_)) => Ok(()),
            (ParamType::Int { min, max }, YvKind::Int(i)) => range_check(
                *i as f64,
                min.map(|m| m as f64),
                max.map(|m| m as f64),
                &i.to_string(),
            ),
            (ParamType::Float { min, max }, YvKind::Int(i)) => {
                range_check(*i as f64, *min, *max, &i.to_string())
            }
            (ParamType::Float { min, max }, YvKind::Float(f)) => {
                range_check(*f, *min, *max, &f.to_string())
            }
            (ParamType::Str | ParamType::Path, YvKind::Str(_)) => Ok(()),
            (ParamType::Enum(options), YvKind::Str(s)) => {
                if options.contains(&s.as_str()) {
                    Ok(())
                } else {
                    Err(format!("`{s}` is not one of {}", join_ticks(options)))
                }
            }
            (ParamType::List(of) | ParamType::OneOrList(of), YvKind::Seq(items)) => {
                for (i, item) in items.iter().enumerate() {
                    of.check(item)
                        .map_err(|e| format!("item {} (of {}): {e}", i + 1, items.len()))?;
                }
                Ok(())
            }
            (ParamType::OneOrList(of), _) => of.check(v).or_else(|_| mismatch()),
            _ => mismatch(),
        }
    }

    /// A JSON Schema fragment for `vidflow schema`.
    pub fn json_schema(&self) -> Value {
        use serde_json::json;
        match self {
            ParamType::Bool => json!({"type": "boolean"}),
            ParamType::Int { min, max } => {
                let mut s = json!({"type": "integer"});
                if let Some(m) = min {
                    s["minimum"] = json!(m);
                }
                if let Some(m) = max {
                    s["maximum"] = json!(m);
                }
                s
            }
            ParamType::Float { min, max } => {
                let mut s = json!({"type": "number"});
                if let Some(m) = min {
                    s["minimum"] = json!(m);
                }
                if let Some(m) = max {
                    s["maximum"] = json!(m);
                }
                s
            }
            ParamType::Str | ParamType::Path => json!({"type": "string"}),
            ParamType::Enum(options) => json!({"enum": options}),
            ParamType::List(of) => json!({"type": "array", "items": of.json_schema()}),
            ParamType::OneOrList(of) => {
                json!({"anyOf": [of.json_schema(), {"type": "array", "items": of.json_schema()}]})
            }
            ParamType::Json => json!({}),
        }
    }
}

fn join_ticks(options: &[&str]) -> String {
    options
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn range_check(x: f64, min: Option<f64>, max: Option<f64>, shown: &str) -> Result<(), String> {
    match (min, max) {
        (Some(lo), Some(hi)) if x < lo || x > hi => {
            Err(format!("{shown} is out of range {lo}..={hi}"))
        }
        (Some(lo), None) if x < lo => Err(format!("{shown} is below the minimum {lo}")),
        (None, Some(hi)) if x > hi => Err(format!("{shown} is above the maximum {hi}")),
        _ => Ok(()),
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Bool => write!(f, "bool"),
            ParamType::Int {
                min: Some(lo),
                max: Some(hi),
            } => write!(f, "int in {lo}..={hi}"),
            ParamType::Int {
                min: Some(lo),
                max: None,
            } => write!(f, "int >= {lo}"),
            ParamType::Int { .. } => write!(f, "int"),
            ParamType::Float {
                min: Some(lo),
                max: Some(hi),
            } => write!(f, "number in {lo}..={hi}"),
            ParamType::Float {
                min: Some(lo),
                max: None,
            } => write!(f, "number >= {lo}"),
            ParamType::Float { .. } => write!(f, "number"),
            ParamType::Str => write!(f, "string"),
            ParamType::Path => write!(f, "path"),
            ParamType::Enum(options) => write!(f, "one of {}", options.join(" | ")),
            ParamType::List(of) => write!(f, "list of {of}"),
            ParamType::OneOrList(of) => write!(f, "{of} or list of {of}"),
            ParamType::Json => write!(f, "any value"),
        }
    }
}

/// A declared param of a node kind.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub doc: &'static str,
    /// `None` with `required: false` means the param is optional and absent by default.
    pub default: Option<Value>,
    pub required: bool,
}

impl ParamSpec {
    /// A required param (no default).
    pub fn required(name: &'static str, ty: ParamType, doc: &'static str) -> ParamSpec {
        ParamSpec {
            name,
            ty,
            doc,
            default: None,
            required: true,
        }
    }
    /// An optional param with a default value.
    pub fn with_default(
        name: &'static str,
        ty: ParamType,
        default: impl Into<Value>,
        doc: &'static str,
    ) -> ParamSpec {
        ParamSpec {
            name,
            ty,
            doc,
            default: Some(default.into()),
            required: false,
        }
    }
    /// An optional param without a default.
    pub fn optional(name: &'static str, ty: ParamType, doc: &'static str) -> ParamSpec {
        ParamSpec {
            name,
            ty,
            doc,
            default: None,
            required: false,
        }
    }
}

/// A declared input or output port.
#[derive(Clone, Debug)]
pub struct PortSpec {
    pub name: &'static str,
    pub ty: PortType,
    pub doc: &'static str,
    /// Inputs only: the graph is invalid when it is left unconnected.
    pub required: bool,
}

/// Dynamic batching of one input: up to `max` items, or whatever arrived within `wait_ms` of
/// the first one (the Triton dynamic batcher's contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    pub max: usize,
    pub wait_ms: u64,
}

/// Everything a factory gets to build a runtime node.
pub struct BuildCtx<'a> {
    pub node_id: &'a str,
    pub params: &'a Params,
    /// For each declared input port, whether the graph connects it.
    pub connected_inputs: Vec<bool>,
    /// For each declared output port, how many consumers it has.
    pub output_consumers: Vec<usize>,
    /// Which replica this is (0-based) when the node has `workers: N`.
    pub replica: usize,
    pub workers: usize,
    /// Run-wide shared objects (the compute device, caches…), created once per run.
    pub shared: &'a Shared,
}

/// A run-wide map of shared objects keyed by type, so that every neural node of a run uses the
/// same device context.
#[derive(Default)]
pub struct Shared {
    map: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Shared {
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

/// The items of one [`Input`]: a vector that holds one item inline. Most calls carry a single
/// un-batched item, and a `Vec` would cost a heap allocation (and a free) per item per node;
/// batches live on the heap as in a `Vec`. It reads like a `Vec<Payload>`: it derefs to
/// `[Payload]` (`len`, `iter`, `first`, indexing…), iterates by value or by reference, and
/// has `push`, `pop`, `drain`…; `Items::from_vec(v)` or `v.into()` makes one from a `Vec`,
/// `items.into_vec()` turns it back.
pub type Items = SmallVec<[Payload; 1]>;

/// A batch (or a single item) arriving on one input port.
#[derive(Debug)]
pub struct Input {
    /// Index of the port in the kind's declared inputs.
    pub port: usize,
    pub items: Items,
}

impl Input {
    /// One un-batched item (stored inline: no allocation).
    pub fn one(port: usize, item: Payload) -> Input {
        Input {
            port,
            items: Items::from_buf([item]),
        }
    }
    /// A batch (of more than one item, the `Vec`'s buffer is kept, not copied).
    pub fn batch(port: usize, items: Vec<Payload>) -> Input {
        Input {
            port,
            items: Items::from_vec(items),
        }
    }
}

/// How the stream ended, given to `finish`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Every input reached its end normally: flush and finalise outputs.
    Complete,
    /// The run is stopping early (Ctrl-C or a failure elsewhere): close files so they are valid,
    /// but do not present them as finished.
    Stopped,
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
}

pub enum Runtime {
    Source(Box<dyn Source>),
    Process(Box<dyn Process>),
}

pub type Factory = Arc<dyn Fn(&BuildCtx<'_>) -> Result<Runtime, NodeError> + Send + Sync>;
/// Extra config-time validation of a kind's params (beyond types and ranges): returns
/// (param name, message, help) for each problem.
pub type Validator = Arc<dyn Fn(&Params) -> Vec<ParamProblem> + Send + Sync>;

#[derive(Clone, Debug)]
pub struct ParamProblem {
    pub param: String,
    pub message: String,
    pub help: Option<String>,
    /// Optional line/column offset inside the param's value (e.g. a shader error), 1-based.
    pub at: Option<(u32, u32)>,
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
    pub validator: Option<Validator>,
    pub factory: Factory,
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
            name,
            doc,
            inputs: vec![],
            outputs: vec![],
            params: vec![],
            example: "",
            batch_port: None,
            default_batch: None,
            validator: None,
            factory: Arc::new(factory),
        }
    }
    pub fn input(mut self, name: &'static str, ty: PortType, doc: &'static str) -> Self {
        self.inputs.push(PortSpec {
            name,
            ty,
            doc,
            required: true,
        });
        self
    }
    pub fn optional_input(mut self, name: &'static str, ty: PortType, doc: &'static str) -> Self {
        self.inputs.push(PortSpec {
            name,
            ty,
            doc,
            required: false,
        });
        self
    }
    pub fn output(mut self, name: &'static str, ty: PortType, doc: &'static str) -> Self {
        self.outputs.push(PortSpec {
            name,
            ty,
            doc,
            required: false,
        });
        self
    }
    pub fn param(mut self, p: ParamSpec) -> Self {
        self.params.push(p);
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
    pub fn validate(
        mut self,
        f: impl Fn(&Params) -> Vec<ParamProblem> + Send + Sync + 'static,
    ) -> Self {
        self.validator = Some(Arc::new(f));
        self
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

/// A node's checked params with defaults filled in, as JSON values.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pub node: String,
    pub values: serde_json::Map<String, Value>,
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name).filter(|v| !v.is_null())
    }
    fn missing(&self, name: &str, what: &str) -> NodeError {
        NodeError::input(format!(
            "node `{}`: param `{name}` must be {what}",
            self.node
        ))
    }
    pub fn str(&self, name: &str) -> Result<&str, NodeError> {
        self.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| self.missing(name, "a string"))
    }
    pub fn opt_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }
    pub fn i64(&self, name: &str) -> Result<i64, NodeError> {
        self.get(name)
            .and_then(Value::as_i64)
            .ok_or_else(|| self.missing(name, "an integer"))
    }
    pub fn u64(&self, name: &str) -> Result<u64, NodeError> {
        self.get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| self.missing(name, "a non-negative integer"))
    }
    pub fn opt_u64(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(Value::as_u64)
    }
    pub fn f64(&self, name: &str) -> Result<f64, NodeError> {
        self.get(name)
            .and_then(Value::as_f64)
            .ok_or_else(|| self.missing(name, "a number"))
    }
    pub fn opt_f64(&self, name: &str) -> Option<f64> {
        self.get(name).and_then(Value::as_f64)
    }
    pub fn bool(&self, name: &str) -> Result<bool, NodeError> {
        self.get(name)
            .and_then(Value::as_bool)
            .ok_or_else(|| self.missing(name, "true or false"))
    }
    /// Deserialises a param into any serde type.
    pub fn parse<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, NodeError> {
        let v = self.values.get(name).cloned().unwrap_or(Value::Null);
        serde_json::from_value(v)
            .map_err(|e| NodeError::input(format!("node `{}`: param `{name}`: {e}", self.node)))
    }
}
