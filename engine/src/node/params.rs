//! A node kind's params: their declared types ([`ParamType`], [`ParamSpec`]), the checked
//! values a node is built from ([`Params`]), and the typed form a kind declares once as a Rust
//! struct with the [`params!`](crate::params) macro ([`NodeParams`]). From that one struct come
//! the checker's specs, `vidflow nodes`, the JSON Schema and the typed value the factory gets,
//! so a param's name is written once.

use super::NodeError;
use serde_json::Value;
use std::fmt;

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
    /// An integer in `min..=max`.
    pub fn int_in(min: i64, max: i64) -> ParamType {
        ParamType::Int {
            min: Some(min),
            max: Some(max),
        }
    }
    /// An integer of at least `min`.
    pub fn int_from(min: i64) -> ParamType {
        ParamType::Int {
            min: Some(min),
            max: None,
        }
    }
    pub fn float() -> ParamType {
        ParamType::Float {
            min: None,
            max: None,
        }
    }
    /// A number in `min..=max`.
    pub fn float_in(min: f64, max: f64) -> ParamType {
        ParamType::Float {
            min: Some(min),
            max: Some(max),
        }
    }
    /// A number of at least `min`.
    pub fn float_from(min: f64) -> ParamType {
        ParamType::Float {
            min: Some(min),
            max: None,
        }
    }
    pub fn one_of(options: &[&'static str]) -> ParamType {
        ParamType::Enum(options.to_vec())
    }
    pub fn list(of: ParamType) -> ParamType {
        ParamType::List(Box::new(of))
    }
    pub fn one_or_list(of: ParamType) -> ParamType {
        ParamType::OneOrList(Box::new(of))
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
            // A list's elements may be `${name}` references too (`values: ['${gain}', 1.0]`).
            ParamType::List(of) => {
                json!({"type": "array", "items": substitutable(of.json_schema())})
            }
            ParamType::OneOrList(of) => json!({"anyOf": [
                of.json_schema(),
                {"type": "array", "items": substitutable(of.json_schema())}
            ]}),
            ParamType::Json => json!({}),
        }
    }
}

/// `schema` or a string holding a `${name}` reference, which the loader substitutes before
/// the value is checked against its type.
pub(crate) fn substitutable(schema: Value) -> Value {
    serde_json::json!({"anyOf": [schema, {"type": "string", "pattern": "\\$\\{"}]})
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

/// The constructors the [`params!`](crate::params) macro calls for each field, by the word
/// written after `=`: `required(type)`, `optional(type)` or `default(type, value)`.
#[doc(hidden)]
pub mod declare {
    use super::{ParamSpec, ParamType};
    use serde_json::Value;

    pub fn required(name: &'static str, doc: &'static str, ty: ParamType) -> ParamSpec {
        ParamSpec::required(name, ty, doc)
    }
    pub fn optional(name: &'static str, doc: &'static str, ty: ParamType) -> ParamSpec {
        ParamSpec::optional(name, ty, doc)
    }
    pub fn default(
        name: &'static str,
        doc: &'static str,
        ty: ParamType,
        value: impl Into<Value>,
    ) -> ParamSpec {
        ParamSpec::with_default(name, ty, value, doc)
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
    /// Deserialises a param into any serde type (an absent param is `null`, so `Option`s
    /// read as `None`).
    pub fn parse<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, NodeError> {
        let v = self.values.get(name).cloned().unwrap_or(Value::Null);
        serde_json::from_value(v)
            .map_err(|e| NodeError::input(format!("node `{}`: param `{name}`: {e}", self.node)))
    }
}

/// A kind's params as one typed Rust struct. Written with the [`params!`](crate::params)
/// macro, which derives the specs from the struct's fields and doc comments.
pub trait NodeParams: Sized + Send + Sync + 'static {
    /// The declared params, in field order.
    fn specs() -> Vec<ParamSpec>;
    /// The typed value of checked params.
    fn from_params(params: &Params) -> Result<Self, NodeError>;
}

/// No params.
impl NodeParams for () {
    fn specs() -> Vec<ParamSpec> {
        vec![]
    }
    fn from_params(_: &Params) -> Result<(), NodeError> {
        Ok(())
    }
}

/// Declares a kind's params once, as a struct: each field's doc comment is the param's doc,
/// its Rust type the typed value's, and the word after `=` says whether it is `required(type)`,
/// `optional(type)` (an `Option` field, absent by default) or has a `default(type, value)`.
///
/// ```
/// use vidflow_engine::{params, node::ParamType};
/// params! {
///     /// The params of a `brightness` node.
///     pub struct BrightnessParams {
///         /// Added to every channel, -255..=255.
///         delta: i64 = default(ParamType::int_in(-255, 255), 40),
///         /// Written into the frame's metadata when given.
///         label: Option<String> = optional(ParamType::Str),
///     }
/// }
/// use vidflow_engine::node::NodeParams;
/// assert_eq!(BrightnessParams::specs()[0].name, "delta");
/// assert_eq!(BrightnessParams::specs()[0].doc, "Added to every channel, -255..=255.");
/// ```
#[macro_export]
macro_rules! params {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $how:ident ( $($arg:expr),* $(,)? )
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        $vis struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }
        impl $crate::node::NodeParams for $name {
            fn specs() -> Vec<$crate::node::ParamSpec> {
                vec![$(
                    $crate::node::params::declare::$how(
                        stringify!($field),
                        concat!("" $(, $doc)*).trim(),
                        $($arg),*
                    )
                ),*]
            }
            fn from_params(
                params: &$crate::node::Params,
            ) -> Result<Self, $crate::node::NodeError> {
                Ok($name { $( $field: params.parse(stringify!($field))?, )* })
            }
        }
    };
}
