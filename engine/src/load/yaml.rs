//! The YAML layer: parses a graph file into a small tree where every value keeps its source
//! span, so that every later diagnostic can point at the exact text. Also converts values to
//! JSON for node factories and renders them back for messages.

use crate::diag::{Diagnostic, Span, source_line, source_lines};
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
    /// A JSON value as YAML (at `span`), for params given as JSON rather than written in a file.
    pub fn from_json(span: Span, v: &serde_json::Value) -> Yv {
        use serde_json::Value as J;
        let kind = match v {
            J::Null => YvKind::Null,
            J::Bool(b) => YvKind::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => YvKind::Int(i),
                None => YvKind::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => YvKind::Str(s.clone()),
            J::Array(items) => YvKind::Seq(items.iter().map(|i| Yv::from_json(span, i)).collect()),
            J::Object(entries) => YvKind::Map(
                entries
                    .iter()
                    .map(|(k, v)| {
                        (
                            Yv::new(span, YvKind::Str(k.clone())),
                            Yv::from_json(span, v),
                        )
                    })
                    .collect(),
            ),
        };
        Yv::new(span, kind)
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
        let mut span = Span::new(m.line().max(1) as u32, m.col() as u32 + 1, 1);
        // At the end of a file without a final line break, saphyr reports the line after the
        // last one: point just past the end of the last line instead.
        let lines = source_lines(text).count().max(1) as u32;
        if span.line > lines {
            let last = source_line(text, lines).unwrap_or("");
            span = Span::new(lines, last.chars().count() as u32 + 1, 1);
        }
        let info = e.info();
        let help = if info.contains("flow mapping") {
            "a `{ … }` mapping before this point is not closed, or misses a `,` between its entries"
        } else if info.contains("flow sequence") {
            "a `[ … ]` list before this point is not closed, or misses a `,` between its items"
        } else if info.contains("tab") {
            "indent with spaces; YAML does not allow tabs for indentation"
        } else {
            "fix the YAML syntax: indent with spaces, write `key: value`, start list items with `- `"
        };
        Diagnostic::error("yaml-syntax", format!("invalid YAML: {info}"))
            .at(span, "here")
            .help(help)
    })?;
    match docs.len() {
        0 => Ok(Yv::new(Span::new(1, 1, 1), YvKind::Map(vec![]))),
        1 => convert(
            docs.into_iter().next().expect("one document"),
            &Lines::new(text),
        ),
        _ => {
            // Point at the `---` that starts the second document.
            let second = docs[1].span.start.line().max(1) as u32;
            let span = (1..=second)
                .rev()
                .find(|&l| {
                    source_line(text, l).is_some_and(|t| {
                        t.starts_with("---")
                            && t[3..].chars().next().is_none_or(char::is_whitespace)
                    })
                })
                .filter(|&l| l > docs[0].span.start.line() as u32)
                .map_or(Span::new(second, 1, 1), |l| Span::new(l, 1, 3));
            Err(Diagnostic::error(
                "yaml-syntax",
                "a graph file holds one YAML document, this one holds several",
            )
            .at(span, "a second document starts here")
            .help("remove the extra `---` separators and what follows, or merge the documents"))
        }
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

/// The file's lines, split once. saphyr gives positions as a line and a character column, and
/// a graph may hold one very long line (a list of 20,000 values): each lookup is O(1) on an
/// ASCII line instead of a rescan of the file, which made loading quadratic.
struct Lines<'t> {
    /// Each line, and whether it is ASCII (then character columns are byte offsets).
    lines: Vec<(&'t str, bool)>,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Lines<'t> {
        Lines {
            lines: source_lines(text).map(|l| (l, l.is_ascii())).collect(),
        }
    }

    /// Line `n` (1-based).
    fn get(&self, n: u32) -> Option<(&'t str, bool)> {
        self.lines.get(n.checked_sub(1)? as usize).copied()
    }

    fn count(&self) -> usize {
        self.lines.len()
    }
}

/// What follows the first `col` characters of `line`.
fn after_chars(line: (&str, bool), col: usize) -> &str {
    match line {
        (l, true) => l.get(col..).unwrap_or(""),
        (l, false) => l.char_indices().nth(col).map_or("", |(i, _)| &l[i..]),
    }
}

/// The span of a node. saphyr marks where a node starts and ends; a flow collection ends at its
/// closing bracket (which the span then includes), and a node over several lines is underlined to
/// the end of its first line.
fn span_of(node: &MarkedYamlOwned, lines: &Lines) -> Span {
    let (s, e) = (node.span.start, node.span.end);
    let line = s.line().max(1);
    let Some(first) = lines.get(line as u32) else {
        // An empty node at the very end of a file without a final line break: saphyr puts it
        // on the line after the last one; point just past the end of the last line instead.
        let n = lines.count().max(1) as u32;
        let last = lines.get(n).map_or("", |l| l.0);
        return Span::new(n, last.chars().count() as u32 + 1, 1);
    };
    let from_start = after_chars(first, s.col());
    let quote = match from_start.chars().next() {
        Some(q @ ('"' | '\'')) if matches!(node.data, YamlDataOwned::Value(_)) => Some(q),
        _ => None,
    };
    // saphyr's end of a quoted scalar includes the blanks (and a comment) after it: the span
    // ends at the closing quote instead.
    let closing_quote = quote.and_then(|q| {
        let mut chars = from_start.chars().skip(1).enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' if q == '"' => {
                    chars.next();
                }
                '\'' if q == '\'' && chars.peek().is_some_and(|(_, n)| *n == '\'') => {
                    chars.next();
                }
                c if c == q => return Some(i + 2),
                _ => {}
            }
        }
        None
    });
    let len = if let Some(len) = closing_quote {
        len
    } else if e.line() == s.line() && e.col() > s.col() {
        let closing = match node.data {
            YamlDataOwned::Mapping(_) => Some('}'),
            YamlDataOwned::Sequence(_) => Some(']'),
            _ => None,
        };
        let closes = closing.is_some() && after_chars(first, e.col()).chars().next() == closing;
        e.col() - s.col() + usize::from(closes)
    } else if e.line() > s.line() && matches!(node.data, YamlDataOwned::Value(_)) {
        // A scalar over several lines (quoted, plain or a block scalar): its first line.
        from_start.trim_end().chars().count().max(1)
    } else if matches!(&node.data, YamlDataOwned::Mapping(m) if m.is_empty())
        || matches!(&node.data, YamlDataOwned::Sequence(q) if q.is_empty())
    {
        // `{}` and `[]`: saphyr's span ends where it starts.
        if from_start.starts_with("{}") || from_start.starts_with("[]") {
            2
        } else {
            1
        }
    } else {
        1
    };
    Span::new(line as u32, s.col() as u32 + 1, len as u32)
}

/// How a string value is written in the source, to map a position in its text back to a line
/// and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarStyle {
    /// Quoted (`"…"` or `'…'`) on one line, or plain.
    Inline { quoted: bool },
    /// A literal block scalar (`|`): each line of the text is a line of the file.
    Literal,
    /// Anything else (folded `>`, a quoted or plain scalar over several lines).
    Other,
}

/// The style of the string value at `span` in `text`.
pub fn scalar_style(text: &str, span: Span) -> ScalarStyle {
    let Some(line) = source_line(text, span.line) else {
        return ScalarStyle::Other;
    };
    let first = line.chars().nth(span.col.saturating_sub(1) as usize);
    let quoted = matches!(first, Some('"' | '\''));
    if quoted {
        // A closed quote on the same line: the span covers it.
        let end = line
            .chars()
            .nth((span.col + span.len).saturating_sub(2) as usize);
        return if span.len >= 2 && end == first {
            ScalarStyle::Inline { quoted: true }
        } else {
            ScalarStyle::Other
        };
    }
    // A block scalar's text starts below its indicator (`|`, `|-`, `>2`…), which ends the
    // closest non-blank line above it (before any comment).
    let prefix: String = line
        .chars()
        .take(span.col.saturating_sub(1) as usize)
        .collect();
    if prefix.trim().is_empty() {
        let indicator = (1..span.line)
            .rev()
            .filter_map(|l| source_line(text, l))
            .map(|l| match l.find(" #") {
                Some(i) => &l[..i],
                None => l,
            })
            .map(str::trim_end)
            .find(|l| !l.is_empty() && !l.trim_start().starts_with('#'))
            .and_then(|l| l.split_whitespace().last())
            .filter(|tok| {
                let mut c = tok.chars();
                matches!(c.next(), Some('|' | '>'))
                    && c.all(|c| c.is_ascii_digit() || c == '+' || c == '-')
            })
            .map(|tok| tok.starts_with('|'));
        match indicator {
            Some(true) => return ScalarStyle::Literal,
            Some(false) => return ScalarStyle::Other,
            None => {}
        }
    }
    // A plain scalar: its span covers its text on its first line (`position_in_str` checks
    // that the text is that long, which a plain scalar folded over several lines is not).
    ScalarStyle::Inline { quoted: false }
}

/// The position of character `col` (1-based) of line `line` (1-based) of `s`, the decoded text of
/// the string value written at `span`, as a span of `len` characters in the file; `None` when
/// the value's style does not allow an exact answer (escapes, folded lines).
pub fn position_in_str(
    text: &str,
    span: Span,
    s: &str,
    line: u32,
    col: u32,
    len: u32,
) -> Option<Span> {
    let (line, col) = (line.max(1), col.max(1));
    // The position must be inside the text (or just past the end of one of its lines).
    let text_line = s.split('\n').nth(line as usize - 1)?;
    let line_len = text_line.chars().count() as u32;
    if col > line_len + 1 {
        return None;
    }
    let len = len.min((line_len + 1).saturating_sub(col)).max(1);
    match scalar_style(text, span) {
        ScalarStyle::Inline { quoted } => {
            let raw_len = span.len.saturating_sub(2 * u32::from(quoted));
            // Escapes (`\t`, `''`) make the source longer than the text: no exact answer.
            (line == 1 && raw_len == line_len && !s.contains('\n'))
                .then(|| Span::new(span.line, span.col + u32::from(quoted) + col - 1, len))
        }
        ScalarStyle::Literal => {
            // The span starts at the first non-blank line; blank lines before it are `\n`s.
            // Line `line` of the text is line `indicator + line` of the file.
            let blank = s.chars().take_while(|c| *c == '\n').count() as u32;
            let target = (span.line + line - 1).checked_sub(blank)?;
            Some(Span::new(target, span.col - 1 + col, len))
        }
        ScalarStyle::Other => None,
    }
}

fn convert(node: MarkedYamlOwned, lines: &Lines) -> Result<Yv, Diagnostic> {
    let span = span_of(&node, lines);
    let v = match node.data {
        YamlDataOwned::Value(s) => match s {
            ScalarOwned::Null => YvKind::Null,
            ScalarOwned::Boolean(b) => YvKind::Bool(b),
            ScalarOwned::Integer(i) => YvKind::Int(i),
            ScalarOwned::FloatingPoint(f) => YvKind::Float(f.into_inner()),
            ScalarOwned::String(s) => YvKind::Str(s),
        },
        YamlDataOwned::Representation(s, _, _) => YvKind::Str(s),
        YamlDataOwned::Sequence(items) => YvKind::Seq(
            items
                .into_iter()
                .map(|i| convert(i, lines))
                .collect::<Result<_, _>>()?,
        ),
        YamlDataOwned::Mapping(map) => YvKind::Map(
            map.into_iter()
                .map(|(k, v)| Ok((convert(k, lines)?, convert(v, lines)?)))
                .collect::<Result<_, Diagnostic>>()?,
        ),
        YamlDataOwned::Tagged(_, inner) => return convert(*inner, lines),
        YamlDataOwned::Alias(_) => {
            return Err(Diagnostic::error(
                "yaml-syntax",
                "YAML aliases (`*name`) are not supported in graphs",
            )
            .at(span, "alias")
            .help("write the value out, or use a graph param and `${name}`"));
        }
        YamlDataOwned::BadValue => {
            return Err(Diagnostic::error("yaml-syntax", "invalid YAML value")
                .at(span, "cannot be read")
                .help("graphs use plain YAML values: strings, numbers, booleans, lists, mappings (no `!!binary` or other tags)"));
        }
    };
    Ok(Yv::new(span, v))
}

/// Where the `n`-th (0-based) occurrence of `needle` in a string value's source text is: line
/// and column (1-based), and that line. The search starts at the value's span and may run past
/// it; the value's own text comes first, so the `n`-th occurrence in its decoded text is the
/// `n`-th in the source whatever its style (quoted, plain, block, over several lines), as long
/// as escapes do not spell the needle.
pub fn locate_nth<'t>(
    text: &'t str,
    span: Span,
    needle: &str,
    n: usize,
) -> Option<(u32, u32, &'t str)> {
    let mut seen = 0;
    let skip = span.line.checked_sub(1)? as usize;
    for (i, line) in source_lines(text).enumerate().skip(skip) {
        let line_no = i as u32 + 1;
        let from_col = if line_no == span.line { span.col } else { 1 };
        for (c, (byte, _)) in line
            .char_indices()
            .enumerate()
            .skip(from_col.saturating_sub(1) as usize)
        {
            if line[byte..].starts_with(needle) {
                if seen == n {
                    return Some((line_no, c as u32 + 1, line));
                }
                seen += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text under a span, as the renderer underlines it.
    fn under(text: &str, span: Span) -> String {
        source_line(text, span.line)
            .unwrap_or("")
            .chars()
            .skip(span.col as usize - 1)
            .take(span.len as usize)
            .collect()
    }

    fn value<'a>(root: &'a Yv, key: &str) -> &'a Yv {
        &root
            .as_map()
            .expect("a mapping")
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .expect("the key")
            .1
    }

    #[test]
    fn spans_cover_exactly_the_written_value() {
        let text = "a: \"q\"   # comment\nb: { x: 'it''s' , y: \"a\\\"b\" }\nc: [1, 2]\nd: {}\ne: plain text  \n\"f\": 1\n";
        let root = parse(text).expect("valid YAML");
        assert_eq!(under(text, value(&root, "a").span), "\"q\"");
        let b = value(&root, "b");
        assert_eq!(under(text, b.span), "{ x: 'it''s' , y: \"a\\\"b\" }");
        assert_eq!(under(text, value(b, "x").span), "'it''s'");
        assert_eq!(under(text, value(b, "y").span), "\"a\\\"b\"");
        assert_eq!(under(text, value(&root, "c").span), "[1, 2]");
        assert_eq!(under(text, value(&root, "d").span), "{}");
        assert_eq!(under(text, value(&root, "e").span), "plain text");
        let keys: Vec<String> = root
            .as_map()
            .expect("a mapping")
            .iter()
            .map(|(k, _)| under(text, k.span))
            .collect();
        assert_eq!(keys, ["a", "b", "c", "d", "e", "\"f\""]);
    }

    #[test]
    fn block_scalars_start_at_their_text() {
        let text = "code: |\n\n  first\n    second\nnext: 1\n";
        let root = parse(text).expect("valid YAML");
        let code = value(&root, "code");
        assert_eq!(code.as_str(), Some("\nfirst\n  second\n"));
        assert_eq!((code.span.line, code.span.col), (3, 3));
        assert_eq!(under(text, code.span), "first");
        assert_eq!(scalar_style(text, code.span), ScalarStyle::Literal);
        // Line 3 of the text, column 3: the `s` of `second`, line 4 column 5 of the file.
        let s = code.as_str().expect("a string");
        assert_eq!(
            position_in_str(text, code.span, s, 3, 3, 6),
            Some(Span::new(4, 5, 6))
        );
        assert_eq!(position_in_str(text, code.span, s, 9, 1, 1), None);
        assert_eq!(position_in_str(text, code.span, s, 2, 40, 1), None);
    }

    #[test]
    fn positions_in_inline_strings() {
        let text = "a: \"x bad\"\nb: x bad\nc: \"\\tbad\"\nd: >\n  folded bad\n";
        let root = parse(text).expect("valid YAML");
        let at = |key: &str, col| {
            let v = value(&root, key);
            position_in_str(text, v.span, v.as_str().expect("a string"), 1, col, 3)
        };
        assert_eq!(at("a", 3), Some(Span::new(1, 7, 3)));
        assert_eq!(at("b", 3), Some(Span::new(2, 6, 3)));
        // Escapes and folding: no exact answer.
        assert_eq!(at("c", 2), None);
        assert_eq!(at("d", 8), None);
    }

    #[test]
    fn locate_nth_finds_references_whatever_the_quoting() {
        let text = "a: 'it''s ${x} ${y}'\nb: \"\\t${z}\"\nc: |\n  ${w}\n  $${v} ${u}\n";
        let root = parse(text).expect("valid YAML");
        let find = |key: &str, n| {
            locate_nth(text, value(&root, key).span, "${", n).map(|(l, c, _)| (l, c))
        };
        assert_eq!(find("a", 0), Some((1, 11)));
        assert_eq!(find("a", 1), Some((1, 16)));
        assert_eq!(find("b", 0), Some((2, 7)));
        assert_eq!(find("c", 0), Some((4, 3)));
        assert_eq!(find("c", 1), Some((5, 4)));
        assert_eq!(find("c", 2), Some((5, 9)));
        assert_eq!(find("c", 3), None);
    }

    #[test]
    fn errors_at_the_end_of_the_file_point_into_it() {
        for text in ["a: [1, 2", "a: {", "%x", ": \n\u{1}"] {
            let d = parse(text).expect_err("invalid YAML");
            let span = d.span.expect("a position");
            let lines = source_lines(text).count() as u32;
            assert!(span.line <= lines, "{text:?}: {span:?}");
            let line = source_line(text, span.line).expect("a line");
            assert!(
                span.col as usize <= line.chars().count() + 1,
                "{text:?}: {span:?}"
            );
        }
    }

    #[test]
    fn several_documents_point_at_the_separator() {
        let d = parse("---\na: 1\n---\nb: 2\n").expect_err("two documents");
        assert_eq!(d.span, Some(Span::new(3, 1, 3)));
        let d = parse("a: 1\n--- \nb: 2\n").expect_err("two documents");
        assert_eq!(d.span, Some(Span::new(2, 1, 3)));
    }

    #[test]
    fn source_lines_count_like_yaml() {
        let lines: Vec<&str> = source_lines("a\r\nb\rc\n\nd").collect();
        assert_eq!(lines, ["a", "b", "c", "", "d"]);
        assert_eq!(source_lines("").collect::<Vec<_>>(), [""]);
        assert_eq!(source_lines("x\n").collect::<Vec<_>>(), ["x", ""]);
        assert_eq!(source_line("a\nb", 0), None);
        assert_eq!(source_line("a\nb", 3), None);
    }

    #[test]
    fn span_sub_never_overflows() {
        let s = Span::new(1, 5, 10);
        assert_eq!(s.sub(2, 3), Span::new(1, 7, 3));
        assert_eq!(s.sub(9, 2), s);
        assert_eq!(s.sub(u32::MAX, 2), s);
    }
}
