//! Prompt templates and answers: what the node asks, and how an answer is split back into one
//! analysis per frame. Pure functions, no I/O, so they are unit-tested on their own.
//!
//! # Placeholders
//!
//! A `prompt` (and `system`) template may contain:
//!
//! | placeholder | replaced by |
//! |---|---|
//! | `{frames}` | the frame list of the batch, one line per frame: `- frame 12 at 0.480 s` |
//! | `{count}` | the number of frames in that list |
//! | `{indices}` | the frame indices, comma-separated: `12, 13, 14` |
//! | `{timestamps}` | their timestamps in seconds: `0.480, 0.520, 0.560` |
//! | `{start}`, `{end}` | the first and last timestamp (seconds) |
//! | `{batch}` | the batch id (also in every output record) |
//! | `{index}`, `{pts}` | the frame asked about in a one-frame request (`per_frame`, or the fallback of a failed batch); in a multi-image request, the batch's first frame |
//!
//! Anything else between braces is left as written (JSON examples in a prompt are safe); the
//! checker flags `{name}` words that look like a misspelt placeholder. The node appends the
//! answer format it needs (a JSON object with one entry per frame) after the prompt, so a
//! prompt only says *what* to look for.

use serde_json::{Map, Value};

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "frames",
    "count",
    "indices",
    "timestamps",
    "start",
    "end",
    "batch",
    "index",
    "pts",
];

/// The default `prompt`.
pub const DEFAULT_PROMPT: &str = "These are frames sampled from one video, in order. For each frame, describe the scene, the people and objects in it, any text on screen, and what changed since the previous frame.\n\nFrames:\n{frames}";

/// A frame as the prompt sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameRef {
    pub index: u64,
    pub pts: f64,
}

/// Everything a template can refer to.
#[derive(Clone, Debug)]
pub struct PromptCtx<'a> {
    /// The frames of the batch (the context).
    pub frames: &'a [FrameRef],
    /// The frame asked about, in a one-frame request.
    pub target: Option<FrameRef>,
    pub batch: u64,
}

/// One line per frame: `- frame 12 at 0.480 s`.
pub fn frame_list(frames: &[FrameRef]) -> String {
    frames
        .iter()
        .map(|f| format!("- frame {} at {:.3} s", f.index, f.pts))
        .collect::<Vec<_>>()
        .join("\n")
}

fn join<T>(items: &[FrameRef], f: impl Fn(&FrameRef) -> T) -> String
where
    T: std::fmt::Display,
{
    items
        .iter()
        .map(|x| f(x).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fills a template's placeholders.
pub fn render(template: &str, ctx: &PromptCtx<'_>) -> String {
    let first = ctx.frames.first().copied();
    let last = ctx.frames.last().copied();
    let target = ctx.target.or(first);
    let value = |name: &str| -> Option<String> {
        Some(match name {
            "frames" => frame_list(ctx.frames),
            "count" => ctx.frames.len().to_string(),
            "indices" => join(ctx.frames, |f| f.index),
            "timestamps" => join(ctx.frames, |f| format!("{:.3}", f.pts)),
            "start" => first.map(|f| format!("{:.3}", f.pts)).unwrap_or_default(),
            "end" => last.map(|f| format!("{:.3}", f.pts)).unwrap_or_default(),
            "batch" => ctx.batch.to_string(),
            "index" => target.map(|f| f.index.to_string()).unwrap_or_default(),
            "pts" => target.map(|f| format!("{:.3}", f.pts)).unwrap_or_default(),
            _ => return None,
        })
    };
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if is_word(&after[..close]) => match value(&after[..close]) {
                Some(v) => {
                    out.push_str(&v);
                    rest = &after[close + 1..];
                }
                None => {
                    out.push('{');
                    rest = after;
                }
            },
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `{word}` placeholders in a template that are not known (for the checker).
pub fn unknown_placeholders(template: &str) -> Vec<String> {
    let mut unknown = vec![];
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        if let Some(close) = after.find('}') {
            let word = &after[..close];
            if is_word(word) && !PLACEHOLDERS.contains(&word) && !unknown.iter().any(|u| u == word)
            {
                unknown.push(word.to_string());
            }
        }
        rest = after;
    }
    unknown
}

/// The answer format appended to a multi-image request.
pub fn multi_instructions(frames: &[FrameRef], with_images: bool, list_frames: bool) -> String {
    let n = frames.len();
    let indices = join(frames, |f| f.index);
    let mut s = String::new();
    if list_frames {
        s.push_str("Frames:\n");
        s.push_str(&frame_list(frames));
        s.push_str("\n\n");
    }
    if with_images {
        s.push_str(&format!(
            "The {n} attached images are frames {indices}, in this order; each follows its label.\n"
        ));
    } else {
        s.push_str(&format!(
            "No images are attached: only the list of the {n} frames {indices}.\n"
        ));
    }
    s.push_str(&format!(
        "Answer with one JSON object of the form {{\"frames\": [{{\"index\": <frame index>, \"analysis\": <your analysis of that frame>}}, ...]}} with exactly {n} entries, one per frame, in frame order."
    ));
    s
}

/// The answer format appended to a one-frame request.
pub fn single_instructions(
    target: FrameRef,
    context: &[FrameRef],
    with_images: bool,
    list_frames: bool,
) -> String {
    let mut s = String::new();
    if list_frames && context.len() > 1 {
        s.push_str("Frames of this part of the video (for context):\n");
        s.push_str(&frame_list(context));
        s.push_str("\n\n");
    }
    s.push_str(&format!(
        "Answer about frame {} at {:.3} s only",
        target.index, target.pts
    ));
    if with_images {
        s.push_str(" (the attached image)");
    }
    s.push_str(
        ". Answer with one JSON object of the form {\"analysis\": <your analysis of that frame>}.",
    );
    s
}

/// The label put before each image of a request.
pub fn image_label(f: FrameRef) -> String {
    format!("frame {} at {:.3} s:", f.index, f.pts)
}

/// Parses a model's answer as JSON, leniently: surrounding prose and Markdown code fences are
/// ignored, and the outermost `{...}` or `[...]` is taken.
pub fn parse_lenient(text: &str) -> Option<Value> {
    let t = text.trim();
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        return Some(v);
    }
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .map(|r| r.trim_end().trim_end_matches("```"))
        .unwrap_or(t)
        .trim();
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        return Some(v);
    }
    for (open, close) in [('{', '}'), ('[', ']')] {
        if let (Some(a), Some(b)) = (t.find(open), t.rfind(close))
            && a < b
            && let Ok(v) = serde_json::from_str::<Value>(&t[a..=b])
        {
            return Some(v);
        }
    }
    None
}

/// The analysis of a one-frame answer: the `analysis` field of a JSON object, the JSON value
/// itself, or the text when it is not JSON.
pub fn single_analysis(text: &str) -> Value {
    match parse_lenient(text) {
        Some(Value::Object(mut m)) if m.contains_key("analysis") => {
            m.remove("analysis").unwrap_or(Value::Null)
        }
        Some(v @ (Value::Object(_) | Value::Array(_))) => v,
        _ => Value::String(text.trim().to_string()),
    }
}

/// Splits a multi-frame answer into exactly one analysis per frame, in the order of `frames`,
/// or says why it cannot.
///
/// Accepted shapes: `{"frames": [...]}`, any object with exactly one array field, a bare
/// array, or an object keyed by frame index (`{"12": ..., "13": ...}`). Entries that name
/// their frame (`index` or `frame`) are matched by it, and must name each frame exactly once;
/// otherwise they are taken in order. An entry's analysis is its `analysis` field, else the
/// entry without its index, else the entry itself.
pub fn split_answer(text: &str, frames: &[FrameRef]) -> Result<Vec<Value>, String> {
    let n = frames.len();
    let v = parse_lenient(text).ok_or_else(|| {
        format!(
            "the answer is not JSON: {}",
            text.chars().take(120).collect::<String>()
        )
    })?;
    let entries: Vec<Value> = match v {
        Value::Array(a) => a,
        Value::Object(mut m) => {
            if let Some(Value::Array(a)) = m.remove("frames") {
                a
            } else {
                let arrays: Vec<&String> = m
                    .iter()
                    .filter(|(_, v)| v.is_array())
                    .map(|(k, _)| k)
                    .collect();
                if arrays.len() == 1 {
                    let k = arrays[0].clone();
                    match m.remove(&k) {
                        Some(Value::Array(a)) => a,
                        _ => unreachable!("checked to be an array"),
                    }
                } else {
                    return by_keys(m, frames);
                }
            }
        }
        other => {
            return Err(format!(
                "the answer is a JSON {} where an object with one entry per frame was asked for",
                kind_of(&other)
            ));
        }
    };
    if entries.len() != n {
        return Err(format!(
            "the answer has {} entries for {n} frames",
            entries.len()
        ));
    }
    let named: Vec<Option<u64>> = entries.iter().map(entry_index).collect();
    if named.iter().all(Option::is_some) {
        let mut out: Vec<Option<Value>> = vec![None; n];
        for (entry, idx) in entries.into_iter().zip(named) {
            let idx = idx.expect("all named");
            let pos = frames.iter().position(|f| f.index == idx).ok_or_else(|| {
                format!("the answer names frame {idx}, which is not in this batch")
            })?;
            if out[pos].is_some() {
                return Err(format!("the answer names frame {idx} twice"));
            }
            out[pos] = Some(entry_analysis(entry));
        }
        return Ok(out
            .into_iter()
            .map(|v| v.expect("each frame once"))
            .collect());
    }
    Ok(entries.into_iter().map(entry_analysis).collect())
}

fn by_keys(m: Map<String, Value>, frames: &[FrameRef]) -> Result<Vec<Value>, String> {
    let mut out = vec![];
    for f in frames {
        let key = f.index.to_string();
        let v = m
            .get(&key)
            .or_else(|| m.get(&format!("frame {key}")))
            .or_else(|| m.get(&format!("frame_{key}")))
            .ok_or_else(|| {
                format!(
                    "the answer has no list of entries and no entry for frame {}",
                    f.index
                )
            })?;
        out.push(entry_analysis(v.clone()));
    }
    if m.len() != frames.len() {
        return Err(format!(
            "the answer has {} fields for {} frames",
            m.len(),
            frames.len()
        ));
    }
    Ok(out)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn entry_index(v: &Value) -> Option<u64> {
    let o = v.as_object()?;
    let i = o.get("index").or_else(|| o.get("frame"))?;
    i.as_u64()
        .or_else(|| i.as_str().and_then(|s| s.trim().parse().ok()))
}

fn entry_analysis(v: Value) -> Value {
    match v {
        Value::Object(mut o) => {
            if let Some(a) = o.remove("analysis") {
                return a;
            }
            o.remove("index");
            o.remove("frame");
            Value::Object(o)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frames(ix: &[u64]) -> Vec<FrameRef> {
        ix.iter()
            .map(|&index| FrameRef {
                index,
                pts: index as f64 * 0.04,
            })
            .collect()
    }

    #[test]
    fn renders_every_placeholder() {
        let f = frames(&[12, 13, 14]);
        let ctx = PromptCtx {
            frames: &f,
            target: Some(f[1]),
            batch: 7,
        };
        let out = render(
            "{count} frames ({indices}) at {timestamps}, {start}..{end}, batch {batch}, this {index}@{pts}\n{frames} {\"json\": 1} {unknown} {",
            &ctx,
        );
        assert_eq!(
            out,
            "3 frames (12, 13, 14) at 0.480, 0.520, 0.560, 0.480..0.560, batch 7, this 13@0.520\n- frame 12 at 0.480 s\n- frame 13 at 0.520 s\n- frame 14 at 0.560 s {\"json\": 1} {unknown} {"
        );
    }

    #[test]
    fn flags_unknown_placeholders_only() {
        assert_eq!(
            unknown_placeholders("{frames} {frame} {\"a\": 1} {count} {frame} {x y}"),
            vec!["frame".to_string()]
        );
        assert!(unknown_placeholders(DEFAULT_PROMPT).is_empty());
    }

    #[test]
    fn splits_the_asked_shape_by_index() {
        let f = frames(&[3, 4, 5]);
        let text = r#"{"frames": [{"index": 5, "analysis": "c"}, {"index": 3, "analysis": "a"}, {"index": 4, "analysis": {"x": 1}}]}"#;
        assert_eq!(
            split_answer(text, &f).unwrap(),
            vec![json!("a"), json!({"x": 1}), json!("c")]
        );
    }

    #[test]
    fn splits_other_shapes() {
        let f = frames(&[3, 4]);
        assert_eq!(
            split_answer("```json\n[\"a\", \"b\"]\n```", &f).unwrap(),
            vec![json!("a"), json!("b")]
        );
        assert_eq!(
            split_answer(r#"Sure! {"results": [{"desc": "a"}, {"desc": "b"}]}"#, &f).unwrap(),
            vec![json!({"desc": "a"}), json!({"desc": "b"})]
        );
        assert_eq!(
            split_answer(r#"{"3": "a", "frame 4": "b"}"#, &f).unwrap(),
            vec![json!("a"), json!("b")]
        );
        assert_eq!(
            split_answer(
                r#"{"frames": [{"frame": "4", "analysis": "b"}, {"frame": 3, "analysis": "a"}]}"#,
                &f
            )
            .unwrap(),
            vec![json!("a"), json!("b")]
        );
    }

    #[test]
    fn refuses_answers_that_do_not_split() {
        let f = frames(&[3, 4, 5]);
        let e =
            split_answer(r#"{"frames": [{"analysis": "a"}, {"analysis": "b"}]}"#, &f).unwrap_err();
        assert!(e.contains("2 entries for 3 frames"), "{e}");
        let e = split_answer(
            r#"{"frames": [{"index": 3}, {"index": 3}, {"index": 4}]}"#,
            &f,
        )
        .unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = split_answer(
            r#"{"frames": [{"index": 3}, {"index": 4}, {"index": 9}]}"#,
            &f,
        )
        .unwrap_err();
        assert!(e.contains("frame 9"), "{e}");
        let e = split_answer(r#"{"frames": [{"index": 3"#, &f).unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
        let e = split_answer("42", &f).unwrap_err();
        assert!(e.contains("number"), "{e}");
        let e = split_answer(r#"{"3": "a", "4": "b"}"#, &f).unwrap_err();
        assert!(e.contains("frame 5"), "{e}");
    }

    #[test]
    fn single_answers_never_fail() {
        assert_eq!(single_analysis(r#"{"analysis": "a cat"}"#), json!("a cat"));
        assert_eq!(
            single_analysis(r#"{"objects": ["cat"]}"#),
            json!({"objects": ["cat"]})
        );
        assert_eq!(single_analysis("  just text "), json!("just text"));
        assert_eq!(single_analysis("7"), json!("7"));
    }

    #[test]
    fn instructions_name_the_frames() {
        let f = frames(&[3, 4]);
        let m = multi_instructions(&f, true, true);
        assert!(m.contains("- frame 3 at 0.120 s") && m.contains("exactly 2 entries"));
        let s = single_instructions(f[1], &f, false, true);
        assert!(s.contains("Answer about frame 4 at 0.160 s only."), "{s}");
        assert!(s.contains("- frame 3 at 0.120 s"));
    }
}
