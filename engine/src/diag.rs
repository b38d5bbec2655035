//! Graph diagnostics: one type for every problem the loader and checker find, with the source
//! position, a label under the offending text and a help line, rendered like a compiler does
//! (`file:line:col`, the line, a caret). Rendering is plain text and deterministic so the golden
//! tests can compare it byte for byte.

use std::fmt::Write as _;
use std::sync::Arc;

/// A position in a graph file: 1-based line and column, and the width of the underlined text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub line: u32,
    pub col: u32,
    pub len: u32,
}

impl Span {
    pub fn new(line: u32, col: u32, len: u32) -> Span {
        Span { line, col, len }
    }
    /// A span `offset` characters into this one (for a `${name}` inside a longer string), when
    /// the text is on one line; otherwise the span itself.
    pub fn sub(self, offset: u32, len: u32) -> Span {
        if offset.checked_add(len).is_some_and(|end| end <= self.len) {
            Span::new(self.line, self.col + offset, len)
        } else {
            self
        }
    }
}

/// The text of a graph file, shared by every diagnostic that points into it.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<str>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> SourceFile {
        SourceFile {
            name: name.into(),
            text: text.into(),
        }
    }
    /// Line `line` (1-based) of the file, as YAML counts lines.
    pub fn line(&self, line: u32) -> Option<&str> {
        source_line(&self.text, line)
    }
}

/// The lines of a text as YAML counts them: `\n`, `\r\n` and a lone `\r` each end a line. A
/// text that ends with a line break has an empty last line (where a parser reports "end of
/// file").
pub fn source_lines(text: &str) -> impl Iterator<Item = &str> + '_ {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.find(['\n', '\r']) {
            Some(i) => {
                let skip = if r[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&r[i + skip..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Line `line` (1-based) of a text, as YAML counts lines.
pub fn source_line(text: &str, line: u32) -> Option<&str> {
    source_lines(text).nth(line.checked_sub(1)? as usize)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a graph. `code` is a stable short name (`unknown-kind`, `cycle`…) that tests
/// and tools can match on.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub span: Option<Span>,
    pub label: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span: None,
            label: String::new(),
            help: None,
        }
    }
    pub fn at(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.span = Some(span);
        self.label = label.into();
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic against its file:
    ///
    /// ```text
    /// error[unknown-kind]: unknown node kind `upscal`
    ///  --> graph.yaml:7:11
    ///   |
    /// 7 |     kind: upscal
    ///   |           ^^^^^^ not a registered node kind
    ///   = help: did you mean `upscale`?
    /// ```
    pub fn render(&self, file: &SourceFile) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = format!("{sev}[{}]: {}\n", self.code, self.message);
        let mut gutter = 1;
        match self.span {
            Some(span) => {
                gutter = span.line.to_string().len();
                let pad = " ".repeat(gutter);
                let _ = writeln!(out, "{pad}--> {}:{}:{}", file.name, span.line, span.col);
                if let Some(text) = file.line(span.line) {
                    let _ = writeln!(out, "{pad} |");
                    let _ = writeln!(out, "{} | {}", span.line, text);
                    let indent: String = text
                        .chars()
                        .take(span.col.saturating_sub(1) as usize)
                        .map(|c| if c == '\t' { '\t' } else { ' ' })
                        .collect();
                    let carets = "^".repeat(span.len.max(1) as usize);
                    let label = if self.label.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", self.label)
                    };
                    let _ = writeln!(out, "{pad} | {indent}{carets}{label}");
                }
            }
            None => {
                let _ = writeln!(out, " --> {}", file.name);
            }
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{} = help: {help}", " ".repeat(gutter));
        }
        out
    }
}

impl Diagnostic {
    /// The diagnostic as one JSON event (`--progress json`): file, line, column (1-based) and
    /// length of the text it points at when it has a place, code, message, label, help.
    pub fn to_json(&self, file: &str) -> serde_json::Value {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        serde_json::json!({
            "event": "diagnostic",
            "severity": severity,
            "code": self.code,
            "message": self.message,
            "file": file,
            "line": self.span.map(|s| s.line),
            "column": self.span.map(|s| s.col),
            "length": self.span.map(|s| s.len),
            "label": (!self.label.is_empty()).then_some(&self.label),
            "help": self.help,
        })
    }
}

/// Renders a list of diagnostics and a closing count, as `vidflow check` prints them.
pub fn render_all(diags: &[Diagnostic], file: &SourceFile) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.render(file));
        out.push('\n');
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    if errors > 0 {
        let _ = write!(
            out,
            "{}: {errors} error{}",
            file.name,
            if errors == 1 { "" } else { "s" }
        );
        if warnings > 0 {
            let _ = write!(
                out,
                ", {warnings} warning{}",
                if warnings == 1 { "" } else { "s" }
            );
        }
        out.push('\n');
    }
    out
}

/// "did you mean" for a misspelt name: the closest candidate within a small edit distance.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= (name.len().max(c.len()) / 3).max(1) + 1 && *d < c.len().max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A help line that suggests the closest name or else lists the valid ones.
pub fn suggest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str> + Clone,
    what: &str,
) -> String {
    match did_you_mean(name, candidates.clone()) {
        Some(best) => format!("did you mean `{best}`?"),
        None => {
            let all: Vec<String> = candidates.into_iter().map(|c| format!("`{c}`")).collect();
            if all.is_empty() {
                format!("there are no {what}")
            } else {
                format!("{what}: {}", all.join(", "))
            }
        }
    }
}
