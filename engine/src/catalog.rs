//! The node catalogue as `vidflow nodes` prints it: every kind with its ports, params (type,
//! default, doc) and an example.

use crate::node::NodeKind;
use crate::registry::Registry;
use std::fmt::Write as _;

/// One line per kind.
pub fn list(registry: &Registry) -> String {
    let width = registry.names().map(str::len).max().unwrap_or(0);
    let mut s = String::new();
    for k in registry.kinds() {
        let first = k.doc.lines().next().unwrap_or("");
        let missing = match (k.feature, k.available()) {
            (Some(f), false) => format!(" (not built: needs feature `{f}`)"),
            _ => String::new(),
        };
        let _ = writeln!(s, "{:width$}  {first}{missing}", k.name);
    }
    s.push_str("\n`vidflow nodes KIND` shows a kind's ports, params and an example.\n");
    s
}

/// The full page for one kind.
pub fn describe(k: &NodeKind) -> String {
    let mut s = format!("{}\n\n{}\n", k.name, k.doc);
    match (k.feature, k.available()) {
        (Some(f), true) => {
            let _ = writeln!(s, "\nneeds cargo feature `{f}` (built in)");
        }
        (Some(f), false) => {
            let _ = writeln!(
                s,
                "\nneeds cargo feature `{f}`, which this vidflow was built without; rebuild with `--features {f}`"
            );
        }
        (None, _) => {}
    }
    let ports = |s: &mut String, title: &str, ports: &[crate::node::PortSpec], inputs: bool| {
        let _ = writeln!(s, "\n{title}:");
        if ports.is_empty() {
            s.push_str("  (none)\n");
        }
        for (i, p) in ports.iter().enumerate() {
            let mut flags = vec![];
            if inputs && !p.required {
                flags.push("optional".to_string());
            }
            if inputs && k.batch_port == Some(i) {
                flags.push(match k.default_batch {
                    Some(b) => format!("batched, default max {} wait {} ms", b.max, b.wait_ms),
                    None => "batched".into(),
                });
            }
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!(" ({})", flags.join(", "))
            };
            let _ = writeln!(s, "  {:<10} {:<8} {}{flags}", p.name, p.ty, p.doc);
        }
    };
    ports(&mut s, "inputs", &k.inputs, true);
    ports(&mut s, "outputs", &k.outputs, false);
    s.push_str("\nparams:\n");
    if k.params.is_empty() {
        s.push_str("  (none)\n");
    }
    for p in &k.params {
        let default = match (&p.default, p.required) {
            (_, true) => "required".to_string(),
            (Some(d), _) => format!("default {d}"),
            (None, _) => "optional".to_string(),
        };
        let _ = writeln!(
            s,
            "  {:<16} {} ({default})\n  {:<16} {}",
            p.name, p.ty, "", p.doc
        );
    }
    if !k.example.is_empty() {
        let _ = write!(s, "\nexample:\n{}", indent(k.example.trim_end(), "  "));
        s.push('\n');
    }
    s
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}
