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
//! ([`cache`]) and the runtime (`work`) are behind the `llm` cargo feature, and the factory
//! says so when it is left out. The settings ([`config`]) and prompts ([`prompt`]) compile in
//! every build.

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

pub use config::{Config, group_sizes};

use config::validate;
use vidflow_engine::{BatchConfig, NodeError, NodeKind, ParamSpec, ParamType, PortType, Runtime};

const DOC: &str = "Analyses frames with a vision LLM (OpenAI-compatible chat completions): batches of frames per request, concurrency and rate limits, retries, a response cache; one JSON record per frame.\n\nmode multi_image (default): one request per batch with all its images and a JSON answer with one entry per frame; frames whose batch fails are retried one by one. mode per_frame: one request per frame, with the batch's frame list as context.\n\nPrompt placeholders: {frames} (the frame list), {count}, {indices}, {timestamps}, {start}, {end}, {batch}, {index} and {pts} (the frame asked about). The node appends the answer format it needs.\n\nRecord fields: index, pts (timestamp, seconds), batch, analysis, model, tokens, latency_ms, attempts, cached, fallback, error (null on success).";

const EXAMPLE: &str = "- id: analyze\n  kind: llm-analyze\n  batch: { max: 3, wait_ms: 1000 }\n  params:\n    base_url: http://127.0.0.1:8080/v1\n    model: gpt-4o-mini\n    api_key_env: OPENAI_API_KEY\n    prompt: \"What is on screen in each frame?\\n{frames}\"\n    concurrency: 5\n    requests_per_minute: 60\n  inputs: { frames: decode.frames }\n";

pub fn kind() -> NodeKind {
    let int = |min: i64, max: i64| ParamType::Int {
        min: Some(min),
        max: Some(max),
    };
    NodeKind::new("llm-analyze", DOC, |ctx| {
        let cfg = Config::from_params(ctx.node_id, ctx.params)?;
        if ctx.workers > 1 {
            // Each replica would have its own pool and its own rate limits.
            return Err(NodeError::input(format!(
                "node `{}`: `workers: {}` would multiply the rate limits; remove it and set `concurrency` (requests in flight) instead",
                ctx.node_id, ctx.workers
            )));
        }
        start(cfg)
    })
    .input("frames", PortType::FRAMES, "frames to analyse")
    .output("records", PortType::RECORDS, "one JSON record per frame, in frame order")
    .batched("frames", Some(BatchConfig { max: 3, wait_ms: 1000 }))
    .param(ParamSpec::with_default("base_url", ParamType::Str, "http://127.0.0.1:8080/v1", "the server's OpenAI-compatible API root (requests go to {base_url}/chat/completions)"))
    .param(ParamSpec::required("model", ParamType::Str, "model name sent with every request"))
    .param(ParamSpec::optional("api_key_env", ParamType::Str, "name of the environment variable holding the API key (sent as a Bearer token; never logged or written); none or empty: no Authorization header"))
    .param(ParamSpec::with_default("prompt", ParamType::Str, prompt::DEFAULT_PROMPT, "what to ask: a template with {frames}, {count}, {indices}, {timestamps}, {start}, {end}, {batch}, {index}, {pts}; the answer format is appended"))
    .param(ParamSpec::optional("system", ParamType::Str, "a system message (same placeholders)"))
    .param(ParamSpec::with_default("mode", ParamType::Enum(vec!["multi_image", "per_frame"]), "multi_image", "one request per batch with all its images, or one request per frame"))
    .param(ParamSpec::with_default("send_images", ParamType::Bool, true, "attach the frames as images; false sends only the frame list (text-only models)"))
    .param(ParamSpec::with_default("json_mode", ParamType::Bool, true, "ask for `response_format: json_object` (dropped automatically if the server rejects it)"))
    .param(ParamSpec::with_default("concurrency", int(1, 256), 5, "requests in flight at most"))
    .param(ParamSpec::optional("requests_per_minute", ParamType::Float { min: Some(0.01), max: None }, "request rate limit (token bucket); none: unlimited"))
    .param(ParamSpec::optional("tokens_per_minute", ParamType::Float { min: Some(1.0), max: None }, "token rate limit (token bucket, estimated before and corrected after each request); none: unlimited"))
    .param(ParamSpec::with_default("max_retries", int(0, 100), 4, "retries per request on 429, 408, 5xx, timeouts and broken connections"))
    .param(ParamSpec::with_default("backoff_ms", int(0, 600_000), 500, "first retry delay; doubles each retry, with jitter, never below Retry-After"))
    .param(ParamSpec::with_default("max_backoff_ms", int(0, 3_600_000), 30_000, "longest computed retry delay"))
    .param(ParamSpec::with_default("timeout_s", ParamType::Float { min: Some(0.01), max: Some(86_400.0) }, 120.0, "time limit for one request, answer included"))
    .param(ParamSpec::with_default("max_images", int(1, 256), 5, "images per request at most (a larger batch is split)"))
    .param(ParamSpec::with_default("max_side", int(16, 16384), 768, "images are downscaled so their longer side is at most this many pixels"))
    .param(ParamSpec::with_default("jpeg_quality", int(1, 100), 85, "JPEG quality of the images sent"))
    .param(ParamSpec::with_default("max_tokens", int(1, 1_000_000), 1024, "answer length limit sent with each request (`max_tokens`)"))
    .param(ParamSpec::with_default("temperature", ParamType::Float { min: Some(0.0), max: Some(2.0) }, 0.0, "sampling temperature"))
    .param(ParamSpec::with_default("tokens_per_image", int(0, 100_000), 765, "estimated prompt tokens per image, for `tokens_per_minute`"))
    .param(ParamSpec::with_default("cache", ParamType::Bool, true, "reuse answers from the on-disk cache (keyed by model, request text and image bytes)"))
    .param(ParamSpec::with_default("cache_dir", ParamType::Path, ".vidflow-cache/llm", "folder of the response cache"))
    .example(EXAMPLE)
    .validate(validate)
}

#[cfg(feature = "llm")]
fn start(cfg: Config) -> Result<Runtime, NodeError> {
    work::Analyze::start(cfg).map(|a| Runtime::Process(Box::new(a)))
}

#[cfg(not(feature = "llm"))]
fn start(cfg: Config) -> Result<Runtime, NodeError> {
    Err(NodeError::input(format!(
        "node `{}`: this vidflow was built without the `llm` feature, so `llm-analyze` cannot run; rebuild with it (`cargo build --features llm`; the `vidflow` binary has it by default)",
        cfg.node
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::path::PathBuf;
    use vidflow_engine::Params;

    #[test]
    fn groups_are_balanced() {
        assert_eq!(group_sizes(0, 5), Vec::<usize>::new());
        assert_eq!(group_sizes(3, 5), vec![3]);
        assert_eq!(group_sizes(5, 5), vec![5]);
        assert_eq!(group_sizes(7, 5), vec![4, 3]);
        assert_eq!(group_sizes(11, 5), vec![4, 4, 3]);
        assert_eq!(group_sizes(4, 1), vec![1, 1, 1, 1]);
    }

    fn params(extra: &[(&str, Value)]) -> Params {
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
        Params {
            node: "a".into(),
            values,
        }
    }

    #[test]
    fn config_from_defaults() {
        let c = Config::from_params("a", &params(&[])).unwrap();
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
        let names: Vec<&str> = problems.iter().map(|p| p.param.as_str()).collect();
        assert_eq!(names, vec!["base_url", "prompt", "api_key_env"]);
        assert!(problems[1].message.contains("`{frame}`"));
        assert!(Config::from_params("a", &p).is_err());
        assert!(validate(&params(&[])).is_empty());
    }
}
