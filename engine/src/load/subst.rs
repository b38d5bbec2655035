//! Graph params: `params:` defaults, `--set name=value` overrides, and `${name}` references in
//! node params replaced by their values. A string that is exactly `${name}` takes the param's
//! value with its type; inside a longer string the value is spliced in as text; `$${` writes a
//! literal `${`.

use super::yaml::{self, Yv, YvKind};
use super::{GraphParam, Mode};
use crate::diag::{Diagnostic, Span, suggest};
use std::collections::BTreeMap;

/// A node param's value after substitution.
#[derive(Clone, Debug)]
pub enum Resolved {
    Value(Yv),
    /// References a param that has no value yet (only in `Mode::Check`).
    Unresolved,
    /// A reference could not be replaced; these diagnostics say why (reported by the checker
    /// for params the node kind has, so an unknown param is reported once, as unknown).
    Invalid(Vec<Diagnostic>),
}

/// The graph's param values after overrides (`None`: declared without default and not set).
pub(crate) struct Values<'a> {
    text: &'a str,
    mode: Mode,
    values: BTreeMap<String, Option<Yv>>,
}

/// Subst's internal outcome.
enum Subst {
    Value(Yv),
    Unresolved,
    Error,
}

impl<'a> Values<'a> {
    /// The values of `params` with `overrides` applied; problems go to `diags`.
    pub fn new(
        text: &'a str,
        params: &[GraphParam],
        overrides: &[(String, Yv)],
        mode: Mode,
        diags: &mut Vec<Diagnostic>,
    ) -> Values<'a> {
        let mut v = Values {
            text,
            mode,
            values: BTreeMap::new(),
        };
        v.graph_params(params, overrides, diags);
        v
    }

    /// Replaces the references in one node param's value.
    pub fn resolve(&self, v: &Yv) -> Resolved {
        let mut diags = vec![];
        match self.substitute(v, &mut diags) {
            Subst::Value(x) => Resolved::Value(x),
            Subst::Unresolved => Resolved::Unresolved,
            Subst::Error => Resolved::Invalid(diags),
        }
    }

    fn graph_params(
        &mut self,
        params: &[GraphParam],
        overrides: &[(String, Yv)],
        diags: &mut Vec<Diagnostic>,
    ) {
        for p in params {
            if self
                .values
                .insert(p.name.clone(), p.default.clone())
                .is_some()
            {
                diags.push(
                    Diagnostic::error(
                        "duplicate-param",
                        format!("graph param `{}` is declared twice", p.name),
                    )
                    .at(p.span, "declared again here"),
                );
            }
        }
        for (name, value) in overrides {
            match self.values.get_mut(name) {
                Some(slot) => *slot = Some(value.clone()),
                None => {
                    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
                    diags.push(
                        Diagnostic::error(
                            "unknown-param",
                            format!("`--set {name}=…` names no param of this graph"),
                        )
                        .help(suggest(
                            name,
                            names.iter().copied(),
                            "the graph's params",
                        )),
                    );
                }
            }
        }
    }

    /// Replaces `${name}` references inside a value. A string that is exactly `${name}` takes
    /// the param's value with its type; inside a longer string the value is spliced in as text.
    /// `$${` writes a literal `${`.
    fn substitute(&self, v: &Yv, diags: &mut Vec<Diagnostic>) -> Subst {
        match &v.v {
            YvKind::Str(s) if s.contains("${") => self.substitute_str(s, v, diags),
            YvKind::Seq(items) => {
                let mut out = vec![];
                for item in items {
                    match self.substitute(item, diags) {
                        Subst::Value(x) => out.push(x),
                        other => return other,
                    }
                }
                Subst::Value(Yv::new(v.span, YvKind::Seq(out)))
            }
            YvKind::Map(entries) => {
                let mut out = vec![];
                for (k, item) in entries {
                    match self.substitute(item, diags) {
                        Subst::Value(x) => out.push((k.clone(), x)),
                        other => return other,
                    }
                }
                Subst::Value(Yv::new(v.span, YvKind::Map(out)))
            }
            _ => Subst::Value(v.clone()),
        }
    }

    /// The span of the `${` at byte `at` of string value `v`'s text `s`, up to the closing `}`
    /// when `closed`; found in the source, so that quotes, escapes and block scalars do not
    /// shift it. The whole value when it cannot be found.
    fn reference_span(&self, v: &Yv, s: &str, at: usize, closed: bool) -> Span {
        let n = s[..at].matches("${").count();
        match yaml::locate_nth(self.text, v.span, "${", n) {
            Some((line, col, text)) => {
                let len = if closed {
                    text.chars()
                        .skip(col as usize - 1)
                        .position(|c| c == '}')
                        .map_or(2, |p| p + 1)
                } else {
                    2
                };
                Span::new(line, col, len as u32)
            }
            None => v.span,
        }
    }

    fn substitute_str(&self, s: &str, v: &Yv, diags: &mut Vec<Diagnostic>) -> Subst {
        let mut out = String::new();
        // Byte offset in `s` of the text not yet copied.
        let mut pos = 0;
        let mut whole: Option<Yv> = None;
        while let Some(found) = s[pos..].find("${") {
            let start = pos + found;
            if s[pos..start].ends_with('$') {
                // `$${`: a literal `${`.
                out.push_str(&s[pos..start - 1]);
                out.push_str("${");
                pos = start + 2;
                continue;
            }
            out.push_str(&s[pos..start]);
            let Some(end) = s[start..].find('}').map(|e| start + e) else {
                diags.push(
                    Diagnostic::error("bad-reference", "unclosed `${` in a param value")
                        .at(self.reference_span(v, s, start, false), "no closing `}`")
                        .help("write `${name}`, or `$${` for a literal `${`"),
                );
                return Subst::Error;
            };
            let name = &s[start + 2..end];
            let ref_span = self.reference_span(v, s, start, true);
            let value = match self.values.get(name) {
                None => {
                    let names: Vec<&str> = self.values.keys().map(String::as_str).collect();
                    let help = match crate::diag::did_you_mean(name, names.iter().copied()) {
                        Some(best) => format!("did you mean `${{{best}}}`?"),
                        None if names.is_empty() => format!(
                            "the graph declares no params; add `{name}: <default>` under a top-level `params:`"
                        ),
                        None => format!(
                            "declare `{name}` under the graph's `params:` (declared: {})",
                            names
                                .iter()
                                .map(|n| format!("`{n}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    diags.push(
                        Diagnostic::error(
                            "unknown-reference",
                            format!("`${{{name}}}` refers to no graph param"),
                        )
                        .at(ref_span, "unknown param")
                        .help(help),
                    );
                    return Subst::Error;
                }
                Some(None) if self.mode == Mode::Check => return Subst::Unresolved,
                Some(None) => {
                    diags.push(
                        Diagnostic::error(
                            "missing-value",
                            format!("graph param `{name}` has no value"),
                        )
                        .at(ref_span, "used here")
                        .help(format!(
                            "pass `--set {name}=…`, or give it a default under `params:`"
                        )),
                    );
                    return Subst::Error;
                }
                Some(Some(value)) => value.clone(),
            };
            if start == 0 && end + 1 == s.len() {
                whole = Some(Yv::new(ref_span, value.v));
            } else if matches!(value.v, YvKind::Seq(_) | YvKind::Map(_)) {
                diags.push(
                    Diagnostic::error(
                        "bad-reference",
                        format!(
                            "`${{{name}}}` is a list or mapping and cannot be spliced into text"
                        ),
                    )
                    .at(ref_span, "not a plain value")
                    .help(format!("use `${{{name}}}` as the whole value")),
                );
                return Subst::Error;
            } else {
                out.push_str(&value.to_string());
            }
            pos = end + 1;
        }
        out.push_str(&s[pos..]);
        Subst::Value(whole.unwrap_or_else(|| Yv::new(v.span, YvKind::Str(out))))
    }
}
