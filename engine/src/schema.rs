//! The graph format as a JSON Schema (draft 2020-12), printed by `vidflow schema` so editors
//! (yaml-language-server and others) can complete and check graph files. Each node kind
//! contributes its own params, selected by `kind`.

use crate::registry::Registry;
use serde_json::{Value, json};

pub fn json_schema(registry: &Registry) -> Value {
    let reference = json!({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_-]*(\\.[A-Za-z_][A-Za-z0-9_-]*)?$",
        "description": "`node.port` (or `node` when it has one output)"});
    let input = json!({"oneOf": [reference, {
        "type": "object", "additionalProperties": false, "required": ["from"],
        "properties": {
            "from": reference,
            "queue": {"type": "integer", "minimum": 1, "maximum": crate::config::MAX_QUEUE, "default": crate::config::DEFAULT_QUEUE},
            "when_full": {"enum": ["block", "drop_oldest"], "default": "block"}
        }
    }]});
    let per_kind: Vec<Value> = registry
        .kinds()
        .map(|k| {
            let props: serde_json::Map<String, Value> = k
                .params
                .iter()
                .map(|p| {
                    let mut s = p.ty.json_schema();
                    s["description"] = json!(p.doc);
                    if let Some(d) = &p.default {
                        s["default"] = d.clone();
                    }
                    // Any param may be a `${name}` reference instead.
                    (p.name.to_string(), crate::node::params::substitutable(s))
                })
                .collect();
            let required: Vec<&str> = k.params.iter().filter(|p| p.required).map(|p| p.name).collect();
            let inputs: serde_json::Map<String, Value> = k.inputs.iter().map(|p| (p.name.to_string(), json!({"$ref": "#/$defs/input", "description": p.doc}))).collect();
            json!({
                "if": {"required": ["kind"], "properties": {"kind": if k.name == "null" { json!({"anyOf": [{"const": k.name}, {"const": null}]}) } else { json!({"const": k.name}) }}},
                "then": {"properties": {
                    "params": {"type": "object", "additionalProperties": false, "properties": props, "required": required},
                    "inputs": {"type": "object", "additionalProperties": false, "properties": inputs}
                }}
            })
        })
        .collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/vidflow/vidflow/graph.schema.json",
        "title": "vidflow graph",
        "type": "object",
        "additionalProperties": false,
        "required": ["nodes"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "params": {"type": "object", "description": "graph params: `name: default` or `name: {default, doc}`; used as `${name}`, set with `--set name=value`",
                "additionalProperties": {"anyOf": [
                    {"type": "object", "additionalProperties": false, "properties": {"default": {}, "doc": {"type": "string"}}},
                    {}
                ]}},
            "nodes": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            "serve": {"type": "object", "additionalProperties": false,
                "description": "a serve graph's admission (`vidflow serve`)",
                "properties": {
                    "max_sessions": {"type": "integer", "minimum": 1, "maximum": crate::config::MAX_SESSIONS, "default": crate::config::DEFAULT_MAX_SESSIONS,
                        "description": "sessions admitted at once; one more is refused with RESOURCE_EXHAUSTED"},
                    "idle_timeout_s": {"type": "integer", "minimum": 0, "maximum": crate::config::MAX_IDLE_TIMEOUT_S, "default": crate::config::DEFAULT_IDLE_TIMEOUT_S,
                        "description": "a session whose client sends nothing for this many seconds is ended (0: never)"},
                    "warmup_size": {"type": "integer", "minimum": crate::config::MIN_WARMUP_SIZE, "maximum": crate::config::MAX_WARMUP_SIZE, "default": crate::config::DEFAULT_WARMUP_SIZE,
                        "description": "side of the mid-gray square frame sent through the graph before the server is ready"}
                }}
        },
        "$defs": {
            "input": input,
            "node": {
                "type": "object",
                "additionalProperties": false,
                "required": ["id", "kind"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_-]*$"},
                    // vidflow reads an unquoted `kind: null` as the `null` kind, as YAML's
                    // null; the schema accepts what the checker accepts.
                    "kind": {"anyOf": [
                        {"enum": registry.names().collect::<Vec<_>>()},
                        {"const": null, "description": "an unquoted `null`: YAML reads it as null, vidflow as the `null` kind"}
                    ]},
                    "params": {"type": "object"},
                    "inputs": {"type": "object"},
                    "workers": {"type": "integer", "minimum": 1, "maximum": crate::config::MAX_WORKERS},
                    "batch": {"type": "object", "additionalProperties": false, "required": ["max"],
                        "properties": {"max": {"type": "integer", "minimum": 1, "maximum": 4096}, "wait_ms": {"type": "integer", "minimum": 0}}},
                    "on_error": {"oneOf": [{"enum": ["fail", "skip"]},
                        {"type": "object", "additionalProperties": false, "required": ["retry"], "properties": {"retry": {"type": "integer", "minimum": 0, "maximum": 100}}}]}
                },
                "allOf": per_kind
            }
        }
    })
}
