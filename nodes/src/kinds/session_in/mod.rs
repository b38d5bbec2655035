//! `session-in`: where the items of live sessions enter a serve graph (`vidflow serve`). It
//! takes each session's start, items and end from the server's session hub
//! ([`vidflow_engine::session::SessionHub`]), oldest first across sessions, and passes them on
//! with their session id, so every node after it serves all sessions at once. The server sends
//! frames (RGB; JPEG and PNG are decoded by the server first) and, for graphs that take sound
//! (live lip sync), audio: each item leaves on the port of its type.

use std::time::Duration;
use vidflow_engine::session::{HubEvent, HubNext, SessionHub};
use vidflow_engine::{
    BuildCtx, Emitter, NodeError, NodeKind, Payload, PortType, Runtime, SessionUse, Source,
};

const FRAMES: usize = 0;
const AUDIO: usize = 1;

pub fn kind() -> NodeKind {
    NodeKind::new(
        "session-in",
        "The items of live sessions (`vidflow serve`), oldest first across sessions, each tagged with its session.",
        build,
    )
    .output("frames", PortType::FRAMES, "the sessions' frames, in arrival order")
    .output("audio", PortType::AUDIO, "the sessions' audio (f32 chunks at the session's rate), in arrival order")
    .sessions(SessionUse::Entry)
    .example("- id: in\n  kind: session-in\n")
}

fn build(cx: &BuildCtx<'_>) -> Result<Runtime, NodeError> {
    let hub = SessionHub::of(cx.shared, cx.node_id, "session-in")?;
    Ok(Runtime::Source(Box::new(SessionIn { hub })))
}

struct SessionIn {
    hub: std::sync::Arc<SessionHub>,
}

impl Source for SessionIn {
    fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        loop {
            if out.stopping() {
                return Err(NodeError::Stopped);
            }
            match self.hub.next(Duration::from_millis(100)) {
                HubNext::Event(HubEvent::Open(s)) => out.open_session(s)?,
                HubNext::Event(HubEvent::Item(s, item)) => {
                    let port = match item {
                        Payload::Audio(_) => AUDIO,
                        _ => FRAMES,
                    };
                    out.emit_for(port, s, item)?
                }
                HubNext::Event(HubEvent::Close(s)) => out.close_session(s)?,
                HubNext::Idle => {}
                HubNext::Shutdown => return Ok(()),
            }
        }
    }
}
