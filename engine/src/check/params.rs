//! Pass: a node's params against its kind's declared params: known names, types and ranges
//! (after `${param}` substitution), required ones given, defaults filled in, and, for kinds
//! with typed params, that the values parse into the kind's struct.

use super::Checker;
use crate::diag::Diagnostic;
use crate::load::yaml::{Yv, YvKind};
use crate::load::{NodeSpec, Resolved};
use crate::node::{NodeKind, ParamType, Params};

/// A node's params after this pass.
pub(super) struct CheckedParams {
    pub params: Params,
    /// No error in any param, and every value known: the kind's own rules can run.
    pub complete: bool,
}

impl Checker<'_> {
    pub(super) fn params(&mut self, n: &NodeSpec, kind: &NodeKind) -> CheckedParams {
        let errors_before = self.error_count();
        let mut params = Params {
            node: n.id.clone(),
            values: serde_json::Map::new(),
        };
        let mut unresolved = false;
        for entry in &n.params {
            let name = entry.name();
            let Some(pspec) = kind.param_spec(&name) else {
                self.diags.push(
                    Diagnostic::error(
                        "unknown-param",
                        format!("node kind `{}` has no param `{name}`", kind.name),
                    )
                    .at(entry.key.span, "unknown param")
                    .help(crate::diag::suggest(
                        &name,
                        kind.params.iter().map(|p| p.name),
                        "its params",
                    )),
                );
                continue;
            };
            let v = match &entry.value {
                Resolved::Value(v) => v,
                Resolved::Unresolved => {
                    unresolved = true;
                    continue;
                }
                Resolved::Invalid(diags) => {
                    self.diags.extend(diags.iter().cloned());
                    continue;
                }
            };
            // An optional param given as null (often a graph param whose default is null, so
            // that `--set` may give it or not) is not given: the node's own default applies.
            if matches!(v.v, YvKind::Null) && !pspec.required && pspec.default.is_none() {
                continue;
            }
            if let Some(bad) = non_finite(v) {
                self.diags.push(
                    Diagnostic::error(
                        "param-type",
                        format!(
                            "param `{name}` of node `{}`: `{}` is not a finite number",
                            n.id, bad
                        ),
                    )
                    .at(bad.span, "not a finite number")
                    .help(format!("{}: {} ({})", pspec.name, pspec.doc, pspec.ty)),
                );
            } else if let Err(msg) = check_type(&pspec.ty, v) {
                // In a list, point at the first item that is wrong.
                let (at, expected) = failing_item(&pspec.ty, v).unwrap_or((v, &pspec.ty));
                let from = match entry.raw.as_str() {
                    Some(s) if s.contains("${") => format!(" (from `{s}`)"),
                    _ => String::new(),
                };
                let hint = match (&pspec.ty, v.as_str()) {
                    (ParamType::Enum(options), Some(s)) => {
                        crate::diag::did_you_mean(s, options.iter().copied())
                            .map(|best| format!("; did you mean `{best}`?"))
                            .unwrap_or_default()
                    }
                    _ => String::new(),
                };
                self.diags.push(
                    Diagnostic::error(
                        "param-type",
                        format!("param `{name}` of node `{}`: {msg}{from}", n.id),
                    )
                    .at(at.span, format!("expected {expected}"))
                    .help(format!("{}: {}{hint}", pspec.name, pspec.doc)),
                );
            }
            params.values.insert(name, v.to_json());
        }
        for p in &kind.params {
            if params.values.contains_key(p.name)
                || n.params.iter().any(|e| e.key.as_str() == Some(p.name))
            {
                continue;
            }
            if p.required {
                self.diags.push(
                    Diagnostic::error(
                        "missing-param",
                        format!("node `{}` ({}) needs param `{}`", n.id, kind.name, p.name),
                    )
                    .at(n.id_span, format!("no `{}` given", p.name))
                    .help(format!(
                        "add `{}: <{}>` under the node's `params:`; {}: {}",
                        p.name, p.ty, p.name, p.doc
                    )),
                );
            } else if let Some(d) = &p.default {
                params.values.insert(p.name.to_string(), d.clone());
            }
        }
        let mut complete = self.error_count() == errors_before && !unresolved;
        // Typed params: a value that passed the declared type but does not fit the struct's
        // field (a declaration that disagrees with its field) is said here, not at run time.
        if let (true, Some(typed)) = (complete, kind.typed)
            && let Err(e) = typed(&params)
        {
            self.diags.push(
                Diagnostic::error("invalid-param", e.to_string())
                    .at(n.id_span, "params of this node")
                    .help(format!("`vidflow nodes {}` shows its params", kind.name)),
            );
            complete = false;
        }
        CheckedParams { params, complete }
    }
}

/// Checks a value against a param type; the error says what was expected and what was found.
pub(crate) fn check_type(ty: &ParamType, v: &Yv) -> Result<(), String> {
    let mismatch = || Err(format!("expected {ty}, found {} `{v}`", v.type_name()));
    match (ty, &v.v) {
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
                check_type(of, item)
                    .map_err(|e| format!("item {} (of {}): {e}", i + 1, items.len()))?;
            }
            Ok(())
        }
        (ParamType::OneOrList(of), _) => check_type(of, v).or_else(|_| mismatch()),
        _ => mismatch(),
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

/// The first number in a value that JSON cannot carry (`.inf`, `.nan`), if any.
fn non_finite(v: &Yv) -> Option<&Yv> {
    match &v.v {
        YvKind::Float(f) if !f.is_finite() => Some(v),
        YvKind::Seq(items) => items.iter().find_map(non_finite),
        YvKind::Map(entries) => entries.iter().find_map(|(_, x)| non_finite(x)),
        _ => None,
    }
}

/// The first item of a list value that its list type rejects, with the type it should have.
fn failing_item<'v, 't>(ty: &'t ParamType, v: &'v Yv) -> Option<(&'v Yv, &'t ParamType)> {
    match (ty, &v.v) {
        (ParamType::List(of) | ParamType::OneOrList(of), YvKind::Seq(items)) => {
            let item = items.iter().find(|i| check_type(of, i).is_err())?;
            Some(failing_item(of, item).unwrap_or((item, of)))
        }
        _ => None,
    }
}
