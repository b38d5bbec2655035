//! The `llm-analyze` settings: its params ([`LlmAnalyzeParams`]) checked ([`validate`], the
//! descriptor's validation) and read into a [`Config`], and how a batch is split into requests
//! ([`group_sizes`]). Used by the descriptor (`mod.rs`) and the runtime (`work.rs`), and
//! importing neither, so imports flow one way: descriptor → runtime → config.

use super::prompt;
use std::path::PathBuf;
use std::time::Duration;
use vidflow_engine::node::{ParamType, ProblemAt};
use vidflow_engine::{NodeError, Problem, params};

params! {
    /// The params of `llm-analyze`.
    pub struct LlmAnalyzeParams {
        /// the server's OpenAI-compatible API root (requests go to
        /// {base_url}/chat/completions)
        base_url: String = default(ParamType::Str, "http://127.0.0.1:8080/v1"),
        /// model name sent with every request
        model: String = required(ParamType::Str),
        /// name of the environment variable holding the API key (sent as a Bearer token; never
        /// logged or written); none or empty: no Authorization header
        api_key_env: Option<String> = optional(ParamType::Str),
        /// what to ask: a template with {frames}, {count}, {indices}, {timestamps}, {start},
        /// {end}, {batch}, {index}, {pts}; the answer format is appended
        prompt: String = default(ParamType::Str, prompt::DEFAULT_PROMPT),
        /// a system message (same placeholders)
        system: Option<String> = optional(ParamType::Str),
        /// one request per batch with all its images, or one request per frame
        mode: String = default(ParamType::one_of(&["multi_image", "per_frame"]), "multi_image"),
        /// attach the frames as images; false sends only the frame list (text-only models)
        send_images: bool = default(ParamType::Bool, true),
        /// ask for `response_format: json_object` (dropped automatically if the server rejects
        /// it)
        json_mode: bool = default(ParamType::Bool, true),
        /// requests in flight at most
        concurrency: u64 = default(ParamType::int_in(1, 256), 5),
        /// request rate limit (token bucket); none: unlimited
        requests_per_minute: Option<f64> = optional(ParamType::float_from(0.01)),
        /// token rate limit (token bucket, estimated before and corrected after each request);
        /// none: unlimited
        tokens_per_minute: Option<f64> = optional(ParamType::float_from(1.0)),
        /// retries per request on 429, 408, 5xx, timeouts and broken connections
        max_retries: u64 = default(ParamType::int_in(0, 100), 4),
        /// first retry delay; doubles each retry, with jitter, never below Retry-After
        backoff_ms: u64 = default(ParamType::int_in(0, 600_000), 500),
        /// longest computed retry delay
        max_backoff_ms: u64 = default(ParamType::int_in(0, 3_600_000), 30_000),
        /// time limit for one request, answer included
        timeout_s: f64 = default(ParamType::float_in(0.01, 86_400.0), 120.0),
        /// images per request at most (a larger batch is split)
        max_images: u64 = default(ParamType::int_in(1, 256), 5),
        /// images are downscaled so their longer side is at most this many pixels
        max_side: u64 = default(ParamType::int_in(16, 16384), 768),
        /// JPEG quality of the images sent
        jpeg_quality: u64 = default(ParamType::int_in(1, 100), 85),
        /// answer length limit sent with each request (`max_tokens`)
        max_tokens: u64 = default(ParamType::int_in(1, 1_000_000), 1024),
        /// sampling temperature
        temperature: f64 = default(ParamType::float_in(0.0, 2.0), 0.0),
        /// estimated prompt tokens per image, for `tokens_per_minute`
        tokens_per_image: u64 = default(ParamType::int_in(0, 100_000), 765),
        /// reuse answers from the on-disk cache (keyed by model, request text and image bytes)
        cache: bool = default(ParamType::Bool, true),
        /// folder of the response cache
        cache_dir: String = default(ParamType::Path, ".vidflow-cache/llm"),
    }
}

fn problem(param: &str, message: String, help: Option<String>) -> Problem {
    let p = Problem::param(param, message);
    match help {
        Some(h) => p.help(h),
        None => p,
    }
}

pub fn validate(p: &LlmAnalyzeParams) -> Vec<Problem> {
    let mut out = vec![];
    let url = &p.base_url;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        out.push(problem(
            "base_url",
            format!("`{url}` is not an http:// or https:// URL"),
            Some("write the API root, e.g. `http://127.0.0.1:8080/v1` or `https://api.openai.com/v1`".into()),
        ));
    }
    for (name, text) in [("prompt", Some(&p.prompt)), ("system", p.system.as_ref())] {
        if let Some(t) = text {
            let unknown = prompt::unknown_placeholders(t);
            if !unknown.is_empty() {
                out.push(problem(
                    name,
                    format!(
                        "unknown placeholder{} {}",
                        if unknown.len() > 1 { "s" } else { "" },
                        unknown
                            .iter()
                            .map(|u| format!("`{{{u}}}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some(format!(
                        "known placeholders: {}",
                        prompt::PLACEHOLDERS
                            .iter()
                            .map(|u| format!("{{{u}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                ));
            }
        }
    }
    if let Some(env) = &p.api_key_env
        && (env.contains('=') || env.contains(char::is_whitespace))
    {
        out.push(problem(
            "api_key_env",
            format!("`{env}` is not an environment variable name"),
            Some("give the variable's name (e.g. `OPENAI_API_KEY`), never the key itself".into()),
        ));
    }
    out
}

/// The node's settings, from its checked params.
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "llm"), allow(dead_code))]
pub struct Config {
    pub node: String,
    pub base_url: String,
    pub model: String,
    pub api_key_env: Option<String>,
    pub prompt: String,
    pub system: Option<String>,
    pub multi: bool,
    pub send_images: bool,
    pub json_mode: bool,
    pub concurrency: usize,
    pub requests_per_minute: Option<f64>,
    pub tokens_per_minute: Option<f64>,
    pub max_retries: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
    pub max_images: usize,
    pub max_side: u32,
    pub jpeg_quality: u8,
    pub max_tokens: u64,
    pub temperature: f64,
    pub tokens_per_image: u64,
    pub cache_dir: Option<PathBuf>,
}

#[cfg_attr(not(feature = "llm"), allow(dead_code))]
impl Config {
    /// The settings of node `node`; its params' first problem (see [`validate`]), if any, is
    /// an error.
    pub fn new(node: &str, p: &LlmAnalyzeParams) -> Result<Config, NodeError> {
        let problems = validate(p);
        if let Some(first) = problems.first() {
            let param = match &first.at {
                ProblemAt::Param { name, .. } => name.as_str(),
                ProblemAt::Input(port) => port.as_str(),
            };
            return Err(NodeError::input(format!(
                "node `{node}`: param `{param}`: {}",
                first.message
            )));
        }
        let ms = Duration::from_millis;
        Ok(Config {
            node: node.to_string(),
            base_url: p.base_url.clone(),
            model: p.model.clone(),
            api_key_env: p.api_key_env.clone().filter(|v| !v.is_empty()),
            prompt: p.prompt.clone(),
            system: p.system.clone(),
            multi: p.mode == "multi_image",
            send_images: p.send_images,
            json_mode: p.json_mode,
            concurrency: p.concurrency.max(1) as usize,
            requests_per_minute: p.requests_per_minute,
            tokens_per_minute: p.tokens_per_minute,
            max_retries: p.max_retries.min(u32::MAX as u64) as u32,
            backoff: ms(p.backoff_ms),
            max_backoff: ms(p.max_backoff_ms),
            timeout: Duration::from_secs_f64(p.timeout_s),
            max_images: p.max_images.max(1) as usize,
            max_side: p.max_side as u32,
            jpeg_quality: p.jpeg_quality.clamp(1, 100) as u8,
            max_tokens: p.max_tokens,
            temperature: p.temperature,
            tokens_per_image: p.tokens_per_image,
            cache_dir: if p.cache {
                Some(PathBuf::from(&p.cache_dir))
            } else {
                None
            },
        })
    }
}

/// Splits `n` frames into as few groups of at most `max` as possible, of balanced sizes
/// (7 with max 5 → 4 + 3).
pub fn group_sizes(n: usize, max: usize) -> Vec<usize> {
    if n == 0 {
        return vec![];
    }
    let groups = n.div_ceil(max.max(1));
    (0..groups)
        .map(|g| n / groups + usize::from(g < n % groups))
        .collect()
}
