//! The YAML layer: parses a graph file into a small tree where every value keeps its source
//! span, so that every later diagnostic can point at the exact text. Also converts values to
//! JSON for node factories and renders them back for messages.

use crate::diag::{Diagnostic, Span};
use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};

/// A YAML value with the span of its text.
#[derive(Clone, Debug, PartialEq)]
pub struct Yv {
    pub span: Span,
    pub v: YvKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum YvKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Yv>),
    Map(Vec<(Yv, Yv)>),
}

impl Yv {
    pub fn new(span: Span, v: YvKind) -> Yv {
        Yv { span, v }
    }
    pub fn as_str(&self) -> Option<&str> {
        match &self.v {
            YvKind::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_map(&self) -> Option<&[(Yv, Yv)]> {
        match &self.v {
            YvKind::Map(m) => Some(m),
            _ => None,
        }
    }
    /// The name of the value's YAML type, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self.v {
            YvKind::Null => "null",
            YvKind::Bool(_) => "a boolean",
            YvKind::Int(_) => "an integer",
            YvKind::Float(_) => "a number",
            YvKind::Str(_) => "a string",
            YvKind::Seq(_) => "a list",
            YvKind::Map(_) => "a mapping",
        }
    }
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.v {
            YvKind::Null => J::Null,
            YvKind::Bool(b) => J::Bool(*b),
            YvKind::Int(i) => J::from(*i),
            YvKind::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            YvKind::Str(s) => J::String(s.clone()),
            YvKind::Seq(items) => J::Array(items.iter().map(Yv::to_json).collect()),
            YvKind::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.to_json()))
                    .collect(),
            ),
        }
    }
    /// A mapping key as text (non-string keys are rendered).
    pub fn key_text(&self) -> String {
        match &self.v {
            YvKind::Str(s) => s.clone(),
            _ => self.to_string(),
        }
    }
}

impl std::fmt::Display for Yv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.v {
            YvKind::Null => write!(f, "null"),
            YvKind::Bool(b) => write!(f, "{b}"),
            YvKind::Int(i) => write!(f, "{i}"),
            YvKind::Float(x) => write!(f, "{x}"),
            YvKind::Str(s) => write!(f, "{s}"),
            _ => write!(f, "{}", self.to_json()),
        }
    }
}

/// Parses YAML text into a spanned tree. An empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Yv, Diagnostic> {
    let docs = MarkedYamlOwned::load_from_str(text).map_err(|e| {
        let m = e.marker();
        // saphyr's lines are 1-based and columns 0-based.
        let span = Span::new(m.line().max(1) as u32, m.col() as u32 + 1, 1);
        Diagnostic::error("yaml-syntax", format!("invalid YAML: {}", e.info()))
            .at(span, "here")
            .help("fix the YAML syntax; indentation with spaces, `key: value`, lists with `- `")
    })?;
    match docs.len() {
        0 => Ok(Yv::new(Span::new(1, 1, 1), YvKind::Map(vec![]))),
        1 => convert(docs.into_iter().next().expect("one document")),
        _ => Err(Diagnostic::error(
            "yaml-syntax",
            "a graph file holds one YAML document, this one holds several",
        )
        .at(Span::new(1, 1, 1), "")
        .help("remove the extra `---` separators")),
    }
}

/// Parses a single value, as given on the command line with `--set key=value`.
pub fn parse_value(text: &str) -> Result<Yv, Diagnostic> {
    let v = parse(text)?;
    // An empty string is an empty string, not an empty mapping.
    if text.trim().is_empty() {
        return Ok(Yv::new(v.span, YvKind::Str(String::new())));
    }
    Ok(v)
}

fn span_of(node: &MarkedYamlOwned) -> Span {
    let (s, e) = (node.span.start, node.span.end);
    let len = if e.line() == s.line() && e.col() > s.col() {
        e.col() - s.col()
    } else {
        1
    };
    Span::new(s.line().max(1) as u32, s.col() as u32 + 1, len as u32)
}

fn convert(node: MarkedYamlOwned) -> Result<Yv, Diagnostic> {
    let span = span_of(&node);
    let v = match node.data {
        YamlDataOwned::Value(s) => match s {
            ScalarOwned::Null => YvKind::Null,
            ScalarOwned::Boolean(b) => YvKind::Bool(b),
            ScalarOwned::Integer(i) => YvKind::Int(i),
            ScalarOwned::FloatingPoint(f) => YvKind::Float(f.into_inner()),
            ScalarOwned::String(s) => YvKind::Str(s),
        },
        YamlDataOwned::Representation(s, _, _) => YvKind::Str(s),
        YamlDataOwned::Sequence(items) => {
            YvKind::Seq(items.into_iter().map(convert).collect::<Result<_, _>>()?)
        }
        YamlDataOwned::Mapping(map) => YvKind::Map(
            map.into_iter()
                .map(|(k, v)| Ok((convert(k)?, convert(v)?)))
                .collect::<Result<_, Diagnostic>>()?,
        ),
        YamlDataOwned::Tagged(_, inner) => return convert(*inner),
        YamlDataOwned::Alias(_) => {
            return Err(Diagnostic::error(
                "yaml-syntax",
                "YAML aliases (`*name`) are not supported in graphs",
            )
            .at(span, "alias")
            .help("write the value out, or use a graph param and `${name}`"));
        }
        YamlDataOwned::BadValue => {
            return Err(Diagnostic::error("yaml-syntax", "invalid YAML value").at(span, "here"));
        }
    };
    Ok(Yv::new(span, v))
}
