//! A blocking client for the OpenAI-compatible chat completions API (OpenAI, vLLM, llama.cpp
//! server, Ollama, LM Studio, OpenRouter…): one POST to `{base_url}/chat/completions`, with a
//! global timeout, and every outcome sorted into what the caller should do about it: use the
//! reply, retry, give up on this request, or stop the run. The API key is only ever put in the
//! `Authorization` header; every message that leaves this module has it masked.

use super::limits::parse_retry_after;
use serde_json::{Value, json};
use std::time::Duration;

/// Tokens a request used, as the server reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
}

impl Usage {
    pub fn from_json(v: &Value) -> Option<Usage> {
        let get = |k: &str| v.get(k).and_then(Value::as_u64);
        let prompt = get("prompt_tokens").unwrap_or(0);
        let completion = get("completion_tokens").unwrap_or(0);
        let total = get("total_tokens").unwrap_or(prompt + completion);
        (v.is_object() && (total > 0 || prompt > 0 || completion > 0)).then_some(Usage {
            prompt,
            completion,
            total,
        })
    }
    pub fn to_json(self) -> Value {
        json!({"prompt_tokens": self.prompt, "completion_tokens": self.completion, "total_tokens": self.total})
    }
}

/// A successful answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub content: String,
    pub usage: Option<Usage>,
}

/// Why a request did not give an answer, sorted by what to do next.
#[derive(Clone, Debug)]
pub enum Failure {
    /// Worth retrying: 429, 408, 5xx, timeouts, broken connections, a malformed response.
    Retry {
        message: String,
        retry_after: Option<Duration>,
        /// The server could not be reached at all (refused, no such host).
        unreachable: bool,
        rate_limited: bool,
    },
    /// The server refused this request (another 4xx); sending it unchanged will not help.
    Refused {
        status: u16,
        message: String,
        /// The error mentions `response_format` (the server does not do JSON mode).
        response_format: bool,
    },
    /// No request can succeed: a wrong key, URL or model. `input` errors are the user's
    /// configuration.
    Fatal { message: String },
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Retry { message, .. }
            | Failure::Refused { message, .. }
            | Failure::Fatal { message } => message,
        }
    }
}

pub struct Client {
    agent: ureq::Agent,
    url: String,
    /// The secret; kept only to send it and to mask it in messages.
    api_key: Option<String>,
    timeout: Duration,
}

impl Client {
    pub fn new(base_url: &str, api_key: Option<String>, timeout: Duration, pool: usize) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
            .http_status_as_error(false)
            .max_idle_connections_per_host(pool.max(1))
            .user_agent(concat!("vidflow/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: config.into(),
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key: api_key.filter(|k| !k.is_empty()),
            timeout,
        }
    }

    /// The endpoint, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Masks the API key wherever it appears.
    pub fn redact(&self, s: &str) -> String {
        match &self.api_key {
            Some(k) if k.len() >= 4 => s.replace(k.as_str(), "***"),
            _ => s.to_string(),
        }
    }

    /// Sends one chat completion request (`body` is its JSON).
    pub fn send(&self, body: &str) -> Result<Reply, Failure> {
        self.send_inner(body).map_err(|f| match f {
            Failure::Retry {
                message,
                retry_after,
                unreachable,
                rate_limited,
            } => Failure::Retry {
                message: self.redact(&message),
                retry_after,
                unreachable,
                rate_limited,
            },
            Failure::Refused {
                status,
                message,
                response_format,
            } => Failure::Refused {
                status,
                message: self.redact(&message),
                response_format,
            },
            Failure::Fatal { message } => Failure::Fatal {
                message: self.redact(&message),
            },
        })
    }

    fn send_inner(&self, body: &str) -> Result<Reply, Failure> {
        let mut req = self
            .agent
            .post(&self.url)
            .header("content-type", "application/json");
        if let Some(k) = &self.api_key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let mut resp = req.send(body).map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = parse_retry_after(
            header("retry-after").as_deref(),
            header("retry-after-ms").as_deref(),
        );
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport(e))?;
        let url = &self.url;
        match status {
            200..=299 => parse_reply(&text).map_err(|why| Failure::Retry {
                message: format!("malformed response from {url}: {why}"),
                retry_after: None,
                unreachable: false,
                rate_limited: false,
            }),
            429 => Err(Failure::Retry {
                message: format!("HTTP 429 (rate limited) from {url}: {}", error_text(&text)),
                retry_after,
                unreachable: false,
                rate_limited: true,
            }),
            408 | 500..=599 => Err(Failure::Retry {
                message: format!("HTTP {status} from {url}: {}", error_text(&text)),
                retry_after,
                unreachable: false,
                rate_limited: false,
            }),
            401 | 403 => Err(Failure::Fatal {
                message: format!(
                    "HTTP {status} from {url}: {}; the server refused the credentials: check the API key in the environment variable named by `api_key_env`",
                    error_text(&text)
                ),
            }),
            404 => Err(Failure::Fatal {
                message: format!(
                    "HTTP 404 from {url}: {}; check `base_url` (it usually ends in `/v1`) and `model`",
                    error_text(&text)
                ),
            }),
            _ => Err(Failure::Refused {
                status,
                message: format!("HTTP {status} from {url}: {}", error_text(&text)),
                response_format: text.contains("response_format"),
            }),
        }
    }

    fn transport(&self, e: ureq::Error) -> Failure {
        let url = &self.url;
        let retry = |message: String, unreachable: bool| Failure::Retry {
            message,
            retry_after: None,
            unreachable,
            rate_limited: false,
        };
        match e {
            ureq::Error::Timeout(_) => retry(
                format!(
                    "no answer from {url} within {:.1} s (raise `timeout_s` if the model is just slow)",
                    self.timeout.as_secs_f64()
                ),
                false,
            ),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => retry(
                format!(
                    "no answer from {url} within {:.1} s (raise `timeout_s` if the model is just slow)",
                    self.timeout.as_secs_f64()
                ),
                false,
            ),
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::AddrNotAvailable
                        | std::io::ErrorKind::HostUnreachable
                        | std::io::ErrorKind::NetworkUnreachable
                ) =>
            {
                retry(format!("cannot connect to {url}: {io}"), true)
            }
            ureq::Error::ConnectionFailed => retry(format!("cannot connect to {url}"), true),
            ureq::Error::HostNotFound => retry(
                format!("cannot connect to {url}: the host name does not resolve"),
                true,
            ),
            ureq::Error::BadUri(u) => Failure::Fatal {
                message: format!("`{u}` is not a valid URL; check `base_url`"),
            },
            ureq::Error::Io(io) => retry(format!("connection to {url} broken: {io}"), false),
            other => retry(format!("request to {url} failed: {other}"), false),
        }
    }
}

/// The answer text and usage of a chat completion response.
pub fn parse_reply(text: &str) -> Result<Reply, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "not JSON ({e}): {}",
            text.chars().take(120).collect::<String>()
        )
    })?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        return Err(format!("the server reported an error: {}", short(err)));
    }
    let message = v
        .pointer("/choices/0/message")
        .ok_or("no `choices[0].message` in the response")?;
    let content = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        // Some servers answer with content parts.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => return Err("`choices[0].message.content` is missing or not text".into()),
    };
    Ok(Reply {
        content,
        usage: v.get("usage").and_then(Usage::from_json),
    })
}

/// The useful part of an error body: `error.message` when it is JSON, else its start.
fn error_text(text: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        if let Some(m) = v.pointer("/error/message").and_then(Value::as_str) {
            return m.chars().take(300).collect();
        }
        if let Some(e) = v.get("error") {
            return short(e);
        }
    }
    let t = text.trim();
    if t.is_empty() {
        "(empty body)".into()
    } else {
        t.chars().take(300).collect()
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.chars().take(300).collect(),
        other => other.to_string().chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        let r = parse_reply(r#"{"choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#).unwrap();
        assert_eq!(r.content, "hi");
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt: 3,
                completion: 1,
                total: 4
            })
        );
        let r = parse_reply(
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}"#,
        )
        .unwrap();
        assert_eq!((r.content.as_str(), r.usage), ("ab", None));
        assert!(parse_reply("{oops").unwrap_err().contains("not JSON"));
        assert!(
            parse_reply(r#"{"choices":[]}"#)
                .unwrap_err()
                .contains("choices")
        );
        assert!(
            parse_reply(r#"{"error":{"message":"overloaded"}}"#)
                .unwrap_err()
                .contains("overloaded")
        );
    }

    #[test]
    fn error_bodies_are_shortened() {
        assert_eq!(
            error_text(r#"{"error":{"message":"slow down"}}"#),
            "slow down"
        );
        assert_eq!(error_text(""), "(empty body)");
        assert_eq!(error_text(&"x".repeat(1000)).len(), 300);
    }

    #[test]
    fn the_key_is_masked() {
        let c = Client::new(
            "http://127.0.0.1:9/v1/",
            Some("sk-secret-123".into()),
            Duration::from_secs(1),
            1,
        );
        assert_eq!(c.url(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(c.redact("bad key sk-secret-123!"), "bad key ***!");
    }

    #[test]
    fn a_closed_port_is_unreachable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = Client::new(
            &format!("http://127.0.0.1:{port}/v1"),
            None,
            Duration::from_secs(2),
            1,
        );
        match c.send("{}") {
            Err(Failure::Retry {
                unreachable: true, ..
            }) => {}
            other => panic!("expected an unreachable server, got {other:?}"),
        }
    }
}
