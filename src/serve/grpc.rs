//! The `vidflow.serve.v1.Serve` service: one `Stream` call per session, and the unary
//! `GenerateBatchWithAudio` as a short session of its own. Admission happens before the first
//! message is read (RESOURCE_EXHAUSTED past `serve.max_sessions`); the first message must
//! configure the session; each frame ([`super::frames`]) or audio chunk ([`super::avatar`]) is
//! checked and decoded before it reaches the shared graph, so a malformed one ends only its own
//! session (INVALID_ARGUMENT). A
//! session keeps at most [`WINDOW`] frames in the graph at once (it reads its client's next
//! frame only when a result has come back), so a fast client cannot crowd the others out. A
//! dropped call cancels its session at once, freeing its slot; one whose client sends nothing
//! for `serve.idle_timeout_s` is ended with DEADLINE_EXCEEDED.

use super::avatar::Avatar;
use super::frames::{decode, encode};
use super::metrics::Latency;
use super::pb::{self, Encoding, stream_reply, stream_request};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use vidflow_engine::session::{AdmitError, Reply, ReplyFn, SessionHub};
use vidflow_engine::{Frame, Payload, Rate, ServeConfig, SessionId};

/// Frames of one session in the graph at once.
pub const WINDOW: usize = 16;
/// The most frames one `GenerateBatchWithAudio` call may ask for.
const MAX_BATCH_FRAMES: u32 = 4096;
/// Audio chunks a lip-sync frame reads before its own, and after.
const CHUNKS_BEFORE: u64 = 8;
const CHUNKS_AFTER: u64 = 7;

pub struct Service {
    hub: Arc<SessionHub>,
    graph: String,
    config: ServeConfig,
    /// The graph takes audio (its `session-in` node's `audio` output is connected): sessions
    /// are lip-sync sessions, configured with a face and fed audio.
    takes_audio: bool,
    latency: Arc<Latency>,
}

impl Service {
    pub fn new(
        hub: Arc<SessionHub>,
        graph: String,
        config: ServeConfig,
        takes_audio: bool,
        latency: Arc<Latency>,
    ) -> Service {
        Service {
            hub,
            graph,
            config,
            takes_audio,
            latency,
        }
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<pb::StreamReply, Status>> + Send>>;

#[tonic::async_trait]
impl pb::serve_server::Serve for Service {
    type StreamStream = ReplyStream;

    async fn generate_batch_with_audio(
        &self,
        request: Request<pb::GenerateBatchRequest>,
    ) -> Result<Response<pb::GenerateBatchReply>, Status> {
        self.generate_batch(request).await
    }

    async fn stream(
        &self,
        request: Request<Streaming<pb::StreamRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let (guard, replies) = self.admit()?;
        let (out, out_rx) = mpsc::channel(WINDOW * 2);
        let session = Session {
            guard,
            graph: self.graph.clone(),
            takes_audio: self.takes_audio,
            latency: self.latency.clone(),
            idle: match self.config.idle_timeout_s {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
            out,
        };
        tokio::spawn(session.run(request.into_inner(), replies));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }
}

impl Service {
    /// Admits a session (RESOURCE_EXHAUSTED past `max_sessions`): the guard that cancels it
    /// when dropped, and where its replies arrive.
    fn admit(&self) -> Result<(Guard, mpsc::UnboundedReceiver<Reply>), Status> {
        let (reply_tx, replies) = mpsc::unbounded_channel::<Reply>();
        let reply: ReplyFn = Arc::new(move |r| {
            let _ = reply_tx.send(r);
        });
        let id = self.hub.open(reply).map_err(|e| match e {
            AdmitError::Full(_) => Status::resource_exhausted(e.to_string()),
            AdmitError::ShuttingDown => Status::unavailable(e.to_string()),
        })?;
        let guard = Guard {
            hub: self.hub.clone(),
            id,
        };
        Ok((guard, replies))
    }

    /// `GenerateBatchWithAudio`: one short session of `frame_count` frames from the request's
    /// audio chunks, answered at once.
    async fn generate_batch(
        &self,
        request: Request<pb::GenerateBatchRequest>,
    ) -> Result<Response<pb::GenerateBatchReply>, Status> {
        let deadline = deadline(request.metadata());
        let req = request.into_inner();
        if !self.takes_audio {
            return Err(Status::invalid_argument(
                "GenerateBatchWithAudio needs a graph that takes audio (lip sync); this one takes frames: use Stream",
            ));
        }
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("`config` is missing"))?;
        // The cheap checks first, before the face image is decoded.
        let n = req.frame_count;
        if n == 0 || n > MAX_BATCH_FRAMES {
            return Err(Status::invalid_argument(format!(
                "frame_count {n} is not from 1 to {MAX_BATCH_FRAMES}"
            )));
        }
        let need = n as usize + (CHUNKS_BEFORE + CHUNKS_AFTER) as usize;
        if req.audio_chunks.len() < need {
            return Err(Status::invalid_argument(format!(
                "{n} frames need {need} audio chunks ({CHUNKS_BEFORE} before the first frame, {n}, {CHUNKS_AFTER} after), got {}",
                req.audio_chunks.len()
            )));
        }
        let rate = Rate::from_fps(if config.fps > 0.0 { config.fps } else { 25.0 });
        let encoding = output_encoding(&config).map_err(Status::invalid_argument)?;
        let mut avatar = Avatar::new(&config, rate).map_err(Status::invalid_argument)?;
        if let Some(want) = avatar.chunk_bytes()
            && let Some((k, c)) = req
                .audio_chunks
                .iter()
                .enumerate()
                .find(|(_, c)| c.len() != want)
        {
            return Err(Status::invalid_argument(format!(
                "audio chunk {k} is {} bytes; a chunk is one frame's audio, {want} bytes",
                c.len()
            )));
        }
        let audio = avatar
            .audio(&req.audio_chunks.concat())
            .map_err(Status::invalid_argument)?;

        // Dropped with the call (a deadline, a client gone): the session is cancelled.
        let (guard, mut replies) = self.admit()?;
        let id = guard.id;
        // Chunk 0 is the audio of frame `start - 8`: in the session's own count, the first
        // frame asked for is frame 8.
        let first = CHUNKS_BEFORE;
        let mut items = vec![audio];
        items.extend((first..first + n as u64).map(|i| Payload::Frame(avatar.frame(i))));
        for item in items {
            if !self.hub.push(id, item) {
                return Err(Status::unavailable("the session was ended by the server"));
            }
        }
        self.hub.finish_input(id);
        let fps = rate.fps();
        let collect = async {
            let mut frames = Vec::with_capacity(n as usize);
            loop {
                match replies.recv().await {
                    Some(Reply::Item(item)) => {
                        let mut f = encode(&item, encoding).map_err(Status::internal)?;
                        f.frame_id = req.start_frame_id + f.frame_id - first;
                        f.timestamp = f.frame_id as f64 / fps;
                        frames.push(f);
                    }
                    Some(Reply::End) => return Ok(frames),
                    Some(Reply::Failed(why)) => return Err(Status::invalid_argument(why)),
                    None => return Err(Status::unavailable("the graph stopped")),
                }
            }
        };
        let frames = match deadline {
            // A little before the deadline, so that the answer is this DEADLINE_EXCEEDED and
            // not the transport's own cut at the deadline (which says CANCELLED).
            Some(d) => tokio::time::timeout(d.saturating_sub(Duration::from_millis(10)), collect)
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "the call's deadline ({:.3} s) passed before its {n} frames were made",
                        d.as_secs_f64()
                    ))
                })??,
            None => collect.await?,
        };
        Ok(Response::new(pb::GenerateBatchReply { frames }))
    }
}

/// The call's deadline from its `grpc-timeout` header (`<digits><unit>`, units H M S m u n).
fn deadline(meta: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The session's output encoding (RAW_RGB when unspecified).
fn output_encoding(config: &pb::SessionConfig) -> Result<Encoding, String> {
    match Encoding::try_from(config.output_encoding) {
        Ok(Encoding::Unspecified) | Ok(Encoding::RawRgb) => Ok(Encoding::RawRgb),
        Ok(e) => Ok(e),
        Err(_) => Err(format!(
            "config: unknown output_encoding {}",
            config.output_encoding
        )),
    }
}

/// Cancels its session when dropped (the call ended in any way); a session whose results
/// were all delivered is already gone from the hub, so that is a no-op.
struct Guard {
    hub: Arc<SessionHub>,
    id: SessionId,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.hub.cancel(self.id);
    }
}

struct Session {
    guard: Guard,
    graph: String,
    takes_audio: bool,
    latency: Arc<Latency>,
    idle: Option<Duration>,
    out: mpsc::Sender<Result<pb::StreamReply, Status>>,
}

/// How a session task ends: quietly (the client went away or all was sent), or with a status.
enum End {
    Done,
    Status(Status),
}

impl Session {
    async fn run(
        self,
        mut inbound: Streaming<pb::StreamRequest>,
        mut replies: mpsc::UnboundedReceiver<Reply>,
    ) {
        let out = self.out.clone();
        if let End::Status(status) = self.serve(&mut inbound, &mut replies).await {
            let _ = out.send(Err(status)).await;
        }
        // `self.guard` was dropped with `self` inside `serve`: the slot is free.
    }

    async fn serve(
        self,
        inbound: &mut Streaming<pb::StreamRequest>,
        replies: &mut mpsc::UnboundedReceiver<Reply>,
    ) -> End {
        let id = self.guard.id;
        let hub = self.guard.hub.clone();
        // The first message configures the session.
        let first = match self.read(inbound).await {
            Ok(Some(m)) => m,
            Ok(None) => return End::Done,
            Err(end) => return end,
        };
        let config = match first.msg {
            Some(stream_request::Msg::Config(c)) => c,
            _ => {
                return End::Status(Status::invalid_argument(
                    "the first message of a session must be a `config`",
                ));
            }
        };
        let rate = Rate::from_fps(if config.fps > 0.0 { config.fps } else { 25.0 });
        let encoding = match output_encoding(&config) {
            Ok(e) => e,
            Err(why) => return End::Status(Status::invalid_argument(why)),
        };
        let mut avatar = match self.takes_audio {
            true => match Avatar::new(&config, rate) {
                Ok(a) => Some(a),
                Err(why) => return End::Status(Status::invalid_argument(why)),
            },
            false => None,
        };
        let ready = pb::StreamReply {
            msg: Some(stream_reply::Msg::Ready(pb::Ready {
                session_id: id.0,
                graph: self.graph.clone(),
            })),
        };
        if self.out.send(Ok(ready)).await.is_err() {
            return End::Done;
        }
        let mut in_flight = 0usize;
        let mut input_open = true;
        // The frames in the graph, in order, with the moment their last input arrived (`None`
        // while a lip-sync frame's window still waits for audio).
        let mut waiting: std::collections::VecDeque<Option<Instant>> = Default::default();
        loop {
            let idle = async {
                match self.idle {
                    Some(d) if input_open => tokio::time::sleep(d).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = inbound.message(), if input_open && in_flight < WINDOW => match msg {
                    Ok(Some(req)) => match req.msg {
                        Some(stream_request::Msg::Audio(chunk)) => {
                            let Some(a) = avatar.as_mut() else {
                                return End::Status(Status::invalid_argument(
                                    "this graph takes no audio (its `session-in` node's `audio` output is not connected)",
                                ));
                            };
                            let audio = match a.audio(&chunk.data) {
                                Ok(p) => p,
                                Err(why) => return End::Status(Status::invalid_argument(why)),
                            };
                            let mut items = vec![audio];
                            items.extend(a.due(false).into_iter().map(Payload::Frame));
                            for item in items {
                                let frame = matches!(item, Payload::Frame(_));
                                if !hub.push(id, item) {
                                    return End::Status(Status::unavailable("the session was ended by the server"));
                                }
                                if frame {
                                    in_flight += 1;
                                    waiting.push_back(None);
                                }
                            }
                            // Frames whose windows this audio completed: their clocks start.
                            let now = Instant::now();
                            let complete = a.complete().saturating_sub(a.made() - waiting.len() as u64);
                            for w in waiting.iter_mut().take(complete as usize) {
                                w.get_or_insert(now);
                            }
                        }
                        Some(stream_request::Msg::Frame(_)) if avatar.is_some() => {
                            return End::Status(Status::invalid_argument(
                                "this graph takes audio: a session's frames are made from `config.face`, so send `audio` messages, not frames",
                            ));
                        }
                        Some(stream_request::Msg::Frame(f)) => match decode(&f, rate) {
                            Ok(frame) => {
                                if !hub.push(id, Payload::Frame(frame)) {
                                    return End::Status(Status::unavailable("the session was ended by the server"));
                                }
                                in_flight += 1;
                                waiting.push_back(Some(Instant::now()));
                            }
                            Err(why) => return End::Status(Status::invalid_argument(why)),
                        },
                        Some(stream_request::Msg::Config(_)) => {
                            return End::Status(Status::invalid_argument(
                                "a session is configured once, by its first message",
                            ));
                        }
                        None => return End::Status(Status::invalid_argument("an empty message")),
                    },
                    Ok(None) => {
                        input_open = false;
                        // The frames the last audio reaches into.
                        for f in avatar.as_mut().map(|a| a.due(true)).unwrap_or_default() {
                            if !hub.push(id, Payload::Frame(f)) {
                                return End::Status(Status::unavailable("the session was ended by the server"));
                            }
                            in_flight += 1;
                            waiting.push_back(None);
                        }
                        // The end of the audio completes every window.
                        let now = Instant::now();
                        for w in waiting.iter_mut() {
                            w.get_or_insert(now);
                        }
                        hub.finish_input(id);
                    }
                    // The client went away (or broke the stream): the guard frees the slot.
                    Err(_) => return End::Done,
                },
                r = replies.recv() => match r {
                    Some(Reply::Item(item)) => {
                        in_flight = in_flight.saturating_sub(1);
                        if let Some(Some(t)) = waiting.pop_front() {
                            self.latency.record(t.elapsed());
                        }
                        let frame = match encode(&item, encoding) {
                            Ok(f) => f,
                            Err(why) => return End::Status(Status::internal(why)),
                        };
                        let reply = pb::StreamReply { msg: Some(stream_reply::Msg::Frame(frame)) };
                        if self.out.send(Ok(reply)).await.is_err() {
                            return End::Done;
                        }
                    }
                    Some(Reply::End) => return End::Done,
                    Some(Reply::Failed(why)) => return End::Status(Status::invalid_argument(why)),
                    None => return End::Status(Status::unavailable("the graph stopped")),
                },
                _ = idle => {
                    return End::Status(Status::deadline_exceeded(format!(
                        "no message for {} s: the session was ended (serve.idle_timeout_s)",
                        self.idle.map_or(0, |d| d.as_secs())
                    )));
                }
                _ = self.out.closed() => return End::Done,
            }
        }
    }

    /// The next message, within the idle timeout.
    async fn read(
        &self,
        inbound: &mut Streaming<pb::StreamRequest>,
    ) -> Result<Option<pb::StreamRequest>, End> {
        let next = inbound.message();
        let r = match self.idle {
            Some(d) => tokio::time::timeout(d, next).await.map_err(|_| {
                End::Status(Status::deadline_exceeded(format!(
                    "no `config` within {} s (serve.idle_timeout_s)",
                    d.as_secs()
                )))
            })?,
            None => next.await,
        };
        r.map_err(|_| End::Done)
    }
}

/// Sends one mid-gray `size`x`size` frame through the graph as a session of its own and
/// waits for its end: the models are loaded and have run once when this returns `Ok`; `Err`
/// is the failure of a node on it (or the graph's end).
pub fn warm_up(hub: &SessionHub, size: u32, takes_audio: bool) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let reply: ReplyFn = Arc::new(move |r| {
        let _ = tx.send(r);
    });
    let id = hub.open(reply).map_err(|e| e.to_string())?;
    let pixels = vec![128u8; size as usize * size as usize * 3];
    let items = if takes_audio {
        // A lip-sync graph: the gray square as the face, and 0.4 s of silence (10 frames).
        let config = pb::SessionConfig {
            face: Some(pb::Frame {
                encoding: Encoding::RawRgb as i32,
                width: size,
                height: size,
                data: pixels,
                ..Default::default()
            }),
            face_box: Some(pb::FaceBox {
                x: 0,
                y: 0,
                width: size,
                height: size,
            }),
            audio: Some(pb::AudioFormat {
                sample_rate: 16_000,
                channels: 1,
                encoding: pb::AudioEncoding::PcmS16le as i32,
            }),
            ..Default::default()
        };
        let mut a = Avatar::new(&config, Rate::new(25, 1))?;
        let mut items = vec![a.audio(&vec![0u8; 6400 * 2])?];
        items.extend(a.due(true).into_iter().map(Payload::Frame));
        items
    } else {
        vec![Payload::Frame(Frame::new(
            0,
            0.0,
            Rate::new(25, 1),
            size,
            size,
            pixels,
        ))]
    };
    for item in items {
        if !hub.push(id, item) {
            return Err("the graph ended before the warm-up went in".into());
        }
    }
    hub.finish_input(id);
    loop {
        match rx.recv() {
            Ok(Reply::Item(_)) => {}
            Ok(Reply::End) => return Ok(()),
            Ok(Reply::Failed(message)) => return Err(message),
            Err(_) => return Err("the graph stopped during the warm-up".into()),
        }
    }
}
