//! `vidflow serve-bench --target ADDR --sessions K --fps F --seconds S`: a load generator for
//! `vidflow serve`. It plays K synthetic sessions at once, each in real time: a lip-sync
//! session (`--kind lipsync`, the default) configures a face and sends one chunk of speech-like
//! audio per frame's duration; a frames session (`--kind frames`) sends one raw RGB frame per
//! frame's duration. It reports per session the frames received and the fps achieved, the
//! latency of every frame (p50, p99, max) and how many were late, and, with `--metrics`, the
//! server's mean batch size per batched node over the run (from its Prometheus counters).
//!
//! A frame's latency runs from the moment the last input it depends on was sent to the moment
//! the frame arrived: for a frames session its own frame; for lip sync the audio chunk that
//! completes its mel window (the frame's own 40 ms and the 200 ms window after its start, plus
//! the STFT's reach of 25 ms). A frame is late when that exceeds `--late-ms`.

use super::pb::{self, Encoding, serve_client::ServeClient, stream_reply, stream_request};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The server's gRPC address.
    #[arg(long, value_name = "ADDR", default_value = super::DEFAULT_LISTEN)]
    pub target: String,
    /// Sessions played at once.
    #[arg(long, value_name = "K", default_value_t = 2)]
    pub sessions: usize,
    /// Frames per second of each session (lip sync: audio chunks of 1/F s).
    #[arg(long, value_name = "F", default_value_t = 25.0)]
    pub fps: f64,
    /// How long each session sends, in seconds.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub seconds: f64,
    /// What the sessions send: `lipsync` (a face, then audio) or `frames` (raw RGB frames).
    #[arg(long, value_parser = ["lipsync", "frames"], default_value = "lipsync")]
    pub kind: String,
    /// The face's (or frame's) size in pixels.
    #[arg(long, value_name = "WxH", default_value = "128x128")]
    pub size: String,
    /// The server's `--metrics` address, for its batch sizes.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// A file holding the server's bearer token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<String>,
    /// A frame is late when its latency exceeds this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 250.0)]
    pub late_ms: f64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What one session saw.
#[derive(Debug, Default, serde::Serialize)]
struct SessionResult {
    session: usize,
    sent: u64,
    frames: u64,
    fps: f64,
    /// Latencies in milliseconds, in frame order.
    #[serde(skip)]
    latencies: Vec<f64>,
    late: u64,
    error: Option<String>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let (w, h) = args
        .size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|&(w, h)| (16..=4096).contains(&w) && (16..=4096).contains(&h))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "`--size {}`: expected WxH from 16 to 4096, e.g. 128x128",
                args.size
            )
        })?;
    let valid = args.fps > 0.0 && args.fps <= 1000.0 && args.seconds > 0.0;
    if !valid || args.sessions == 0 {
        anyhow::bail!(
            "`--fps` must be from 0 to 1000, `--seconds` above 0, `--sessions` at least 1"
        );
    }
    let chunk = 16_000.0 / args.fps;
    if args.kind == "lipsync" && chunk.fract() != 0.0 {
        anyhow::bail!(
            "`--fps {}`: a lip-sync chunk is 16000 / fps samples, which must be whole (25, 20, 12.5, 10, 5…)",
            args.fps
        );
    }
    let token = args
        .token_file
        .as_deref()
        .map(super::access::read_token)
        .transpose()?
        .map(|t| format!("Bearer {}", String::from_utf8_lossy(&t)));
    let url = if args.target.contains("://") {
        args.target.clone()
    } else {
        format!("http://{}", args.target)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())?
            .connect()
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot reach `{url}`: {e}; is `vidflow serve` running there?")
            })?;
        let before = match &args.metrics {
            Some(m) => Some(scrape(m).await?),
            None => None,
        };
        let started = Instant::now();
        let mut tasks = vec![];
        for k in 0..args.sessions {
            let client = ServeClient::new(channel.clone());
            let token = token.clone();
            let (kind, fps, secs) = (args.kind.clone(), args.fps, args.seconds);
            tasks.push(tokio::spawn(async move {
                play(k, client, token, &kind, (w, h), fps, secs).await
            }));
        }
        let mut results = vec![];
        for t in tasks {
            results.push(t.await?);
        }
        let wall = started.elapsed().as_secs_f64();
        let batches = match (&args.metrics, before) {
            (Some(m), Some(before)) => {
                // The server's node counters are up to one progress tick (0.1 s) old.
                tokio::time::sleep(Duration::from_millis(300)).await;
                mean_batches(&before, &scrape(m).await?)
            }
            _ => vec![],
        };
        report(&args, &mut results, wall, &batches);
        let failed = results.iter().any(|r| r.error.is_some());
        anyhow::Ok(if failed {
            std::process::ExitCode::from(2)
        } else {
            std::process::ExitCode::SUCCESS
        })
    })
}

/// Plays one session: its sender paces the inputs in real time while the replies are read.
async fn play(
    k: usize,
    mut client: ServeClient<tonic::transport::Channel>,
    token: Option<String>,
    kind: &str,
    (w, h): (u32, u32),
    fps: f64,
    secs: f64,
) -> SessionResult {
    let mut result = SessionResult {
        session: k,
        ..Default::default()
    };
    let lipsync = kind == "lipsync";
    let n = (secs * fps).round().max(1.0) as u64;
    let face = image(w, h, k as u8);
    let config = pb::SessionConfig {
        output_encoding: Encoding::RawRgb as i32,
        fps,
        name: format!("bench-{k}"),
        face: lipsync.then(|| raw(0, w, h, face.clone())),
        face_box: lipsync.then(|| pb::FaceBox {
            x: w / 8,
            y: h / 8,
            width: w * 3 / 4,
            height: h * 3 / 4,
        }),
        audio: lipsync.then_some(pb::AudioFormat {
            sample_rate: 16_000,
            channels: 1,
            encoding: pb::AudioEncoding::PcmS16le as i32,
        }),
        face_clip: vec![],
    };
    let (tx, rx) = mpsc::channel::<pb::StreamRequest>(4);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(t) = &token
        && let Ok(v) = t.parse()
    {
        request.metadata_mut().insert("authorization", v);
    }
    let _ = tx
        .send(pb::StreamRequest {
            msg: Some(stream_request::Msg::Config(config)),
        })
        .await;
    let mut replies = match client.stream(request).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            result.error = Some(format!("{}: {}", e.code(), e.message()));
            return result;
        }
    };
    // The sender: input `i` at `t0 + i / fps`; the times it went out.
    let t0 = Instant::now();
    let sent_at = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let sender = {
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let samples = (16_000.0 / fps) as usize;
            for i in 0..n {
                tokio::time::sleep_until((t0 + Duration::from_secs_f64(i as f64 / fps)).into())
                    .await;
                let msg = if lipsync {
                    stream_request::Msg::Audio(pb::AudioChunk {
                        chunk_id: i,
                        data: speech(i, samples),
                    })
                } else {
                    stream_request::Msg::Frame(raw(i, w, h, face.clone()))
                };
                if tx.send(pb::StreamRequest { msg: Some(msg) }).await.is_err() {
                    break;
                }
                sent_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Instant::now());
            }
            // Dropping `tx` ends the session's input.
        })
    };
    let (mut first, mut last) = (None, None);
    loop {
        match replies.message().await {
            Ok(Some(pb::StreamReply {
                msg: Some(stream_reply::Msg::Frame(f)),
            })) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = Some(now);
                result.frames += 1;
                let dep = if lipsync {
                    mel_dependency(f.frame_id, fps)
                } else {
                    f.frame_id
                };
                let sent = sent_at.lock().unwrap_or_else(|e| e.into_inner()).clone();
                // Frames at the end of the audio depend on its last chunk.
                if let Some(at) = sent.get(dep as usize).or(sent.last()) {
                    result
                        .latencies
                        .push(now.saturating_duration_since(*at).as_secs_f64() * 1000.0);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                result.error = Some(format!("{}: {}", e.code(), e.message()));
                break;
            }
        }
    }
    let _ = sender.await;
    result.sent = sent_at.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
    if let (Some(_), Some(last)) = (first, last) {
        result.fps = result.frames as f64 / last.duration_since(t0).as_secs_f64().max(1e-9);
    }
    result
}

/// The audio chunk (of 1/fps s) that completes lip-sync frame `i`'s mel window.
fn mel_dependency(i: u64, fps: f64) -> u64 {
    ((super::avatar::mel_window_end(i, fps) * fps - 1e-9).ceil() as u64).saturating_sub(1)
}

/// A face-like test image: a gradient with the session's number in it.
fn image(w: u32, h: u32, seed: u8) -> Vec<u8> {
    (0..h)
        .flat_map(|y| {
            (0..w).flat_map(move |x| {
                [
                    (x * 255 / w) as u8,
                    (y * 255 / h) as u8,
                    seed.wrapping_mul(37).wrapping_add(90),
                ]
            })
        })
        .collect()
}

fn raw(id: u64, w: u32, h: u32, data: Vec<u8>) -> pb::Frame {
    pb::Frame {
        frame_id: id,
        timestamp: 0.0,
        encoding: Encoding::RawRgb as i32,
        width: w,
        height: h,
        data,
    }
}

/// Chunk `c` of a rising tone with a syllable-like envelope, as 16 kHz s16le.
fn speech(c: u64, samples: usize) -> Vec<u8> {
    (0..samples)
        .flat_map(|k| {
            let t = (c as usize * samples + k) as f32 / 16_000.0;
            let envelope = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
            let v = 0.3 * envelope * (2.0 * std::f32::consts::PI * (150.0 + 50.0 * t) * t).sin();
            ((v * 32767.0) as i16).to_le_bytes()
        })
        .collect()
}

/// The server's Prometheus text at `addr/metrics`.
async fn scrape(addr: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the metrics at `{addr}`: {e}"))?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// (node, batches, mean batch size) for each node whose batch-size counters moved.
fn mean_batches(before: &str, after: &str) -> Vec<(String, f64, f64)> {
    let read = |text: &str, what: &str| -> Vec<(String, f64)> {
        let prefix = format!("vidflow_batch_size_{what}{{node=\"");
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (node, value) = rest.split_once("\"} ")?;
                Some((node.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    };
    let delta = |what: &str, node: &str| {
        let get = |text: &str| {
            read(text, what)
                .into_iter()
                .find(|(n, _)| n == node)
                .map_or(0.0, |(_, v)| v)
        };
        get(after) - get(before)
    };
    read(after, "count")
        .into_iter()
        .filter_map(|(node, _)| {
            let (count, sum) = (delta("count", &node), delta("sum", &node));
            (count > 0.0).then(|| (node, count, sum / count))
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(
    args: &BenchArgs,
    results: &mut [SessionResult],
    wall: f64,
    batches: &[(String, f64, f64)],
) {
    for r in results.iter_mut() {
        r.late = r.latencies.iter().filter(|&&l| l > args.late_ms).count() as u64;
    }
    let mut all: Vec<f64> = results
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    all.sort_by(f64::total_cmp);
    let frames: u64 = results.iter().map(|r| r.frames).sum();
    let (p50, p99) = (percentile(&all, 50.0), percentile(&all, 99.0));
    let max = all.last().copied().unwrap_or(f64::NAN);
    let late: u64 = results.iter().map(|r| r.late).sum();
    let min_fps = results.iter().map(|r| r.fps).fold(f64::INFINITY, f64::min);
    if args.json {
        let v = serde_json::json!({
            "target": args.target, "kind": args.kind, "sessions": args.sessions, "fps": args.fps,
            "seconds": args.seconds, "frames": frames, "wall_s": wall,
            "total_fps": frames as f64 / wall, "min_session_fps": min_fps,
            "latency_ms": {"p50": p50, "p99": p99, "max": max}, "late": late, "late_ms": args.late_ms,
            "per_session": results,
            "batches": batches.iter().map(|(n, c, m)| serde_json::json!({"node": n, "batches": c, "mean": m})).collect::<Vec<_>>(),
        });
        println!("{v}");
        return;
    }
    println!(
        "{} {} session(s) at {} fps for {} s on {}",
        args.sessions, args.kind, args.fps, args.seconds, args.target
    );
    println!("session  sent  frames  fps     p50 ms  p99 ms  late  error");
    for r in results.iter() {
        let mut l = r.latencies.clone();
        l.sort_by(f64::total_cmp);
        println!(
            "{:<7}  {:<4}  {:<6}  {:<6.2}  {:<6.0}  {:<6.0}  {:<4}  {}",
            r.session,
            r.sent,
            r.frames,
            r.fps,
            percentile(&l, 50.0),
            percentile(&l, 99.0),
            r.late,
            r.error.as_deref().unwrap_or("")
        );
    }
    println!(
        "all: {frames} frames in {wall:.2} s = {:.2} fps; slowest session {min_fps:.2} fps; latency p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms; {late} late (> {} ms)",
        frames as f64 / wall,
        args.late_ms
    );
    for (node, count, mean) in batches {
        println!("server: node `{node}`: {count:.0} batches, mean batch size {mean:.2}");
    }
}
