//! The `llm-analyze` settings: its params checked ([`validate`], the descriptor's validation)
//! and read into a [`Config`], and how a batch is split into requests ([`group_sizes`]). Used
//! by the descriptor (`mod.rs`) and the runtime (`work.rs`), and importing neither, so
//! imports flow one way: descriptor → runtime → config.

use super::prompt;
use std::path::PathBuf;
use std::time::Duration;
use vidflow_engine::node::ParamProblem;
use vidflow_engine::{NodeError, Params};

fn problem(param: &str, message: String, help: Option<String>) -> ParamProblem {
    ParamProblem {
        param: param.into(),
        message,
        help,
        at: None,
    }
}

pub fn validate(p: &Params) -> Vec<ParamProblem> {
    let mut out = vec![];
    if let Some(url) = p.opt_str("base_url")
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        out.push(problem(
            "base_url",
            format!("`{url}` is not an http:// or https:// URL"),
            Some("write the API root, e.g. `http://127.0.0.1:8080/v1` or `https://api.openai.com/v1`".into()),
        ));
    }
    for name in ["prompt", "system"] {
        if let Some(t) = p.opt_str(name) {
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
    if let Some(env) = p.opt_str("api_key_env")
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

impl Config {
    pub fn from_params(node: &str, p: &Params) -> Result<Config, NodeError> {
        let problems = validate(p);
        if let Some(first) = problems.first() {
            return Err(NodeError::input(format!(
                "node `{node}`: param `{}`: {}",
                first.param, first.message
            )));
        }
        let ms = |name: &str| p.u64(name).map(Duration::from_millis);
        Ok(Config {
            node: node.to_string(),
            base_url: p.str("base_url")?.to_string(),
            model: p.str("model")?.to_string(),
            api_key_env: p
                .opt_str("api_key_env")
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            prompt: p.str("prompt")?.to_string(),
            system: p.opt_str("system").map(str::to_string),
            multi: p.str("mode")? == "multi_image",
            send_images: p.bool("send_images")?,
            json_mode: p.bool("json_mode")?,
            concurrency: p.u64("concurrency")?.max(1) as usize,
            requests_per_minute: p.opt_f64("requests_per_minute"),
            tokens_per_minute: p.opt_f64("tokens_per_minute"),
            max_retries: p.u64("max_retries")?.min(u32::MAX as u64) as u32,
            backoff: ms("backoff_ms")?,
            max_backoff: ms("max_backoff_ms")?,
            timeout: Duration::from_secs_f64(p.f64("timeout_s")?),
            max_images: p.u64("max_images")?.max(1) as usize,
            max_side: p.u64("max_side")? as u32,
            jpeg_quality: p.u64("jpeg_quality")?.clamp(1, 100) as u8,
            max_tokens: p.u64("max_tokens")?,
            temperature: p.f64("temperature")?,
            tokens_per_image: p.u64("tokens_per_image")?,
            cache_dir: if p.bool("cache")? {
                Some(PathBuf::from(p.str("cache_dir")?))
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
