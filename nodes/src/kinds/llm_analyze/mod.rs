//! `llm-analyze`: frames to a vision LLM over the OpenAI-compatible chat completions API, in
//! batches, under concurrency and rate limits, with one JSON record per input frame whatever
//! goes wrong.
//!
//! # What it does
//!
//! Frames arrive in batches (by default up to 3, or what arrived within 1 s: `batch: {max,
//! wait_ms}` on the node). A batch larger than `max_images` is split into balanced requests of
//! at most `max_images` frames. With `mode: multi_image` (the default) each batch is one
//! request carrying all its images (downscaled to `max_side`, JPEG, base64 `data:` URIs), the
//! prompt with the frame list, and an instruction to answer with a JSON object holding one
//! entry per frame (`response_format: json_object` unless `json_mode: false`; a server that
//! rejects it gets requests without it for the rest of the run). If the request fails after
//! its retries, is refused, or its answer cannot be split into exactly one entry per frame, its
//! frames are asked about one by one. With `mode: per_frame` each frame is its own request,
//! with the batch's frame list in the prompt for context. `send_images: false` sends only the
//! text (for text-only models).
//!
//! `process` hands requests to a pool of `concurrency` worker threads and returns; records are
//! emitted in frame order as they complete (a reorder buffer), at each call and at the end of
//! the stream. Limits: at most `concurrency` requests in flight; `requests_per_minute` and
//! `tokens_per_minute` token buckets (see [`limits`]); retries with exponential backoff
//! and jitter on 429, 408, 5xx, timeouts, broken connections and malformed responses,
//! honouring `Retry-After` (a 429 pauses every worker); at most `max_retries` retries per
//! request. Answers are cached on disk by request (see [`cache`]).
//!
//! # Records
//!
//! One per input frame, in frame order:
//!
//! ```json
//! {"index": 12, "pts": 0.48, "batch": 4, "analysis": "...", "model": "gpt-4o-mini",
//!  "tokens": 231, "latency_ms": 812, "attempts": 1, "cached": false, "fallback": null,
//!  "error": null}
//! ```
//!
//! `analysis` is the frame's entry (parsed JSON, or text when the model did not answer in
//! JSON); `tokens` is this frame's share of the tokens the server reported for the requests
//! that produced it (shares add up to the total; null when the server reports no usage);
//! `latency_ms` the time from the first attempt to the answer; `attempts` the HTTP requests
//! made for it (0 when answered from the cache); `fallback` why its batch's answer was not
//! used, if it was asked alone after that; `error` null on success, else why it has no
//! analysis after every retry.
//!
//! A wrong API key (401/403), a wrong URL or model (404), or a server that cannot be reached
//! before any request has succeeded stops the run with one message naming the URL, rather
//! than writing an error record per frame.
//!
//! # This folder
//!
//! The descriptor is always compiled, so `vidflow check` knows the kind in every build; the
//! HTTP client ([`client`]), image encoding ([`images`]), limits ([`limits`]), the cache
//! ([`cache`]) and the runtime (`work`) are behind the `llm` cargo feature (the kind is
//! declared with `NodeKind::gated`, so without it the engine says how to rebuild). The settings
//! and params ([`config`]) and prompts ([`prompt`]) compile in every build.

#[cfg(feature = "llm")]
pub mod cache;
#[cfg(feature = "llm")]
pub mod client;
pub mod config;
#[cfg(feature = "llm")]
pub mod images;
#[cfg(feature = "llm")]
pub mod limits;
#[cfg_attr(not(feature = "llm"), allow(dead_code))]
pub mod prompt;
#[cfg(feature = "llm")]
mod work;

pub use config::{Config, LlmAnalyzeParams, group_sizes};

use config::validate;
use vidflow_engine::{BatchConfig, NodeKind, PortType, Temporal};
#[cfg(feature = "llm")]
use vidflow_engine::{BuildCtx, NodeError, Runtime};

const DOC: &str = "Analyses frames with a vision LLM (OpenAI-compatible chat completions): batches of frames per request, concurrency and rate limits, retries, a response cache; one JSON record per frame.\n\nmode multi_image (default): one request per batch with all its images and a JSON answer with one entry per frame; frames whose batch fails are retried one by one. mode per_frame: one request per frame, with the batch's frame list as context.\n\nPrompt placeholders: {frames} (the frame list), {count}, {indices}, {timestamps}, {start}, {end}, {batch}, {index} and {pts} (the frame asked about). The node appends the answer format it needs.\n\nRecord fields: index, pts (timestamp, seconds), batch, analysis, model, tokens, latency_ms, attempts, cached, fallback, error (null on success).";

const EXAMPLE: &str = "- id: analyze\n  kind: llm-analyze\n  batch: { max: 3, wait_ms: 1000 }\n  params:\n    base_url: http://127.0.0.1:8080/v1\n    model: gpt-4o-mini\n    api_key_env: OPENAI_API_KEY\n    prompt: \"What is on screen in each frame?\\n{frames}\"\n    concurrency: 5\n    requests_per_minute: 60\n  inputs: { frames: decode.frames }\n";

pub fn kind() -> NodeKind {
    NodeKind::gated(
        "llm-analyze",
        DOC,
        "llm",
        crate::gated_factory!("llm", build),
    )
    .input("frames", PortType::FRAMES, "frames to analyse")
    .output(
        "records",
        PortType::RECORDS,
        "one JSON record per frame, in frame order",
    )
    .batched(
        "frames",
        Some(BatchConfig {
            max: 3,
            wait_ms: 1000,
        }),
    )
    .params::<LlmAnalyzeParams>()
    .temporal(Temporal::PerItem)
    .example(EXAMPLE)
    .check(|cx| match cx.params::<LlmAnalyzeParams>() {
        Some(p) => validate(&p),
        None => vec![],
    })
}

#[cfg(feature = "llm")]
fn build(ctx: &BuildCtx<'_>) -> Result<Runtime, NodeError> {
    let cfg = Config::new(ctx.node_id, &ctx.params()?)?;
    if ctx.workers > 1 {
        // Each replica would have its own pool and its own rate limits.
        return Err(NodeError::input(format!(
            "node `{}`: `workers: {}` would multiply the rate limits; remove it and set `concurrency` (requests in flight) instead",
            ctx.node_id, ctx.workers
        )));
    }
    work::Analyze::start(cfg).map(|a| Runtime::Process(Box::new(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::path::PathBuf;
    use vidflow_engine::Params;
    use vidflow_engine::node::{NodeParams, ProblemAt};

    #[test]
    fn groups_are_balanced() {
        assert_eq!(group_sizes(0, 5), Vec::<usize>::new());
        assert_eq!(group_sizes(3, 5), vec![3]);
        assert_eq!(group_sizes(5, 5), vec![5]);
        assert_eq!(group_sizes(7, 5), vec![4, 3]);
        assert_eq!(group_sizes(11, 5), vec![4, 4, 3]);
        assert_eq!(group_sizes(4, 1), vec![1, 1, 1, 1]);
    }

    fn params(extra: &[(&str, Value)]) -> LlmAnalyzeParams {
        let mut values = serde_json::Map::new();
        for p in kind().params {
            if let Some(d) = p.default {
                values.insert(p.name.to_string(), d);
            }
        }
        values.insert("model".into(), "m".into());
        for (k, v) in extra {
            values.insert(k.to_string(), v.clone());
        }
        LlmAnalyzeParams::from_params(&Params {
            node: "a".into(),
            values,
        })
        .unwrap()
    }

    #[test]
    fn config_from_defaults() {
        let c = Config::new("a", &params(&[])).unwrap();
        assert!(c.multi && c.send_images && c.json_mode);
        assert_eq!((c.concurrency, c.max_images, c.max_retries), (5, 5, 4));
        assert_eq!(c.cache_dir, Some(PathBuf::from(".vidflow-cache/llm")));
        let k = kind();
        assert_eq!(
            k.default_batch,
            Some(BatchConfig {
                max: 3,
                wait_ms: 1000
            })
        );
    }

    #[test]
    fn validation_catches_mistakes() {
        let p = params(&[
            ("base_url", "localhost:8080".into()),
            ("prompt", "{frame} please".into()),
            ("api_key_env", "sk-abc def".into()),
        ]);
        let problems = validate(&p);
        let names: Vec<&str> = problems
            .iter()
            .map(|p| match &p.at {
                ProblemAt::Param { name, .. } => name.as_str(),
                ProblemAt::Input(port) => port.as_str(),
            })
            .collect();
        assert_eq!(names, vec!["base_url", "prompt", "api_key_env"]);
        assert!(problems[1].message.contains("`{frame}`"));
        assert!(Config::new("a", &p).is_err());
        assert!(validate(&params(&[])).is_empty());
    }
}
